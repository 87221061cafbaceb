//! `cloopinfo IMAGE [--verify] [--json] [-t N]`: describe a cloop image.
//!
//! Prints the version, where the header sits, block size and count, sizes
//! and ratio, the filesystem inside (the live boot's probe), a histogram
//! of block codecs (plus links and zero-length blocks) and the largest
//! compressed block. `--verify` decodes every block
//! in parallel and lists each bad one; the exit status is then 1 if any
//! block is bad. `--json` prints the same as one JSON object.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;

use crate::applets::json_string;
use std::path::PathBuf;

use crate::boot::probe::FsInfo;
use crate::cloop::extract::{decode_in_order, Flow};
use crate::cloop::reader::{Image, ImageInfo, Kind, Version};

const APPLET: &str = "cloopinfo";

const USAGE: &str = "\
Usage: cloopinfo [--verify [--root-hash HEX]] [--verity-tree FILE] [--json]
                 [-t N] IMAGE

Describe a cloop image of any version: format, header position, block size
and count, sizes, the filesystem inside (as the live boot recognises it),
codecs used, links and the largest block, and whether a
dm-verity hash tree is present (IMAGE.verity) with the root hash it leads to.
IMAGE may be an http:// or https:// URL (also of an ISO holding
KNOPPIX/KNOPPIX, or URL#PATH in one).

  --verify           decode every block; list bad ones, exit 1 if any
  --root-hash HEX    with --verify: also check every 4096-byte block of the
                     uncompressed image against the hash tree and this
                     trusted root hash (as the verity applet does); exit 1
                     if any block does not match
  --verity-tree FILE the hash tree (default IMAGE.verity)
  --json             print a JSON object instead of text
  -t, --threads N    threads for --verify (default: one per CPU)
  --ca-file FILE     trust the PEM certificates in FILE for an https://
                     IMAGE, besides the built-in roots
  -h, --help         show this help
";

struct Args {
    verify: bool,
    json: bool,
    threads: usize,
    image: PathBuf,
    root_hash: Option<crate::verity::Digest>,
    tree: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

fn parse_args(args: &[OsString]) -> Result<Option<Args>, String> {
    let long = ["verify", "json", "threads=", "root-hash=", "verity-tree=", "ca-file=", "help"];
    let parsed = crate::getopt::parse(args, "t:h", &long)?;
    let (mut verify, mut json, mut threads) = (false, false, 0);
    let (mut root_hash, mut tree, mut ca_file) = (None, None, None);
    for opt in &parsed.opts {
        let value = opt.value.as_deref().unwrap_or_default();
        match opt.name.as_str() {
            "verify" => verify = true,
            "root-hash" => root_hash = Some(crate::verity::format::parse_root_hash(value)?),
            "verity-tree" => tree = Some(PathBuf::from(value)),
            "ca-file" => ca_file = Some(PathBuf::from(value)),
            "json" => json = true,
            "t" | "threads" => {
                let value = opt.value.as_deref().unwrap_or_default();
                threads = value.parse().map_err(|_| format!("bad thread count '{value}'"))?;
            }
            _ => return Ok(None),
        }
    }
    let [image] =
        <[OsString; 1]>::try_from(parsed.operands).map_err(|_| "expected one IMAGE (try --help)")?;
    if threads == 0 {
        threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    if root_hash.is_some() && !verify {
        return Err("--root-hash is checked by --verify: give both".into());
    }
    Ok(Some(Args { verify, json, threads, image: image.into(), root_hash, tree, ca_file }))
}

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match crate::applets::parsed(APPLET, USAGE, parse_args(args.get(1..).unwrap_or_default())) {
        Ok(args) => args,
        Err(status) => return status,
    };
    let image = match crate::remote::open_cloop(&args.image, args.ca_file.as_deref()) {
        Ok(image) => image,
        Err(e) => return crate::applets::fail(APPLET, e),
    };
    let stats = Stats::of(&image);
    let fs = crate::boot::probe::probe(&image);
    let tree_path = args.tree.clone().unwrap_or_else(|| crate::verity::tree_path_for(&args.image));
    let tree = Tree::describe(&tree_path, &image, args.tree.is_some());
    let checked = match (args.verify, args.root_hash) {
        (true, Some(root)) => {
            match crate::verity::check::verify_image(&args.image, &tree_path, root, args.threads, true) {
                Ok(report) => Some((root, report)),
                Err(e) => return crate::applets::fail(APPLET, e),
            }
        }
        _ => None,
    };
    // With a root hash, the verity check decodes every block and reports
    // decoding errors too; no second pass.
    let bad = (args.verify && checked.is_none()).then(|| verify(&image, args.threads));
    let facts = Facts {
        image: &image,
        stats: &stats,
        fs: fs.as_ref(),
        bad: bad.as_deref(),
        tree: &tree,
        checked: checked.as_ref(),
    };
    let report = if args.json { json(&facts) } else { text(&facts) };
    print!("{report}");
    let verity_bad = checked.as_ref().is_some_and(|(_, r)| r.bad_count > 0);
    match bad {
        Some(bad) if !bad.is_empty() => 1,
        _ if verity_bad => 1,
        _ => 0,
    }
}

/// What cloopinfo says about the hash tree.
struct Tree {
    path: PathBuf,
    /// `None`: no tree file; `Some(Err)`: present but unusable.
    state: Option<Result<(u64, String), String>>,
}

impl Tree {
    /// The tree's data blocks and the root hash its top block leads to
    /// (for a one-block image, the digest of that block).
    fn describe(path: &std::path::Path, image: &Image, named: bool) -> Tree {
        use crate::blockdev::ReadAt;
        let state = if !named && !path.exists() {
            None
        } else {
            Some(crate::verity::tree::claimed_root(path).map_err(|e| e.to_string()).and_then(
                |(info, root)| {
                    let root = match root {
                        Some(root) => root,
                        None => {
                            let mut block = vec![0u8; crate::verity::BLOCK];
                            let n = image.size().min(block.len() as u64) as usize;
                            image.read_at(&mut block[..n], 0).map_err(|e| e.to_string())?;
                            crate::verity::format::Salted::new(&info.superblock.salt).hash(&block)
                        }
                    };
                    Ok((info.geometry.data_blocks, crate::verity::format::to_hex(&root)))
                },
            ))
        };
        Tree { path: path.to_path_buf(), state }
    }
}

type Checked = (crate::verity::Digest, crate::verity::check::Report);

/// What the index says, counted over all blocks.
struct Stats {
    /// Blocks per codec name (`unknown(ID)` for unknown ids).
    codecs: BTreeMap<String, u64>,
    links: u64,
    zero_length: u64,
    /// (block, compressed bytes) of the first largest block.
    largest: Option<(u64, u32)>,
}

impl Stats {
    fn of(image: &Image) -> Stats {
        let mut stats = Stats { codecs: BTreeMap::new(), links: 0, zero_length: 0, largest: None };
        for block in 0..image.info().num_blocks {
            let Some(info) = image.block_info(block) else { break };
            let name = match info.kind {
                Kind::Link(_) => {
                    stats.links += 1;
                    continue;
                }
                Kind::Data(codec) => codec.to_string(),
                Kind::Unknown(id) => format!("unknown({id})"),
            };
            *stats.codecs.entry(name).or_default() += 1;
            if info.compressed_len == 0 {
                stats.zero_length += 1;
            }
            if stats.largest.is_none_or(|(_, len)| info.compressed_len > len) {
                stats.largest = Some((block, info.compressed_len));
            }
        }
        stats
    }
}

/// A block that failed to decode.
struct Bad {
    block: u64,
    offset: u64,
    error: String,
}

fn verify(image: &Image, threads: usize) -> Vec<Bad> {
    let mut bad = Vec::new();
    decode_in_order(image, threads, |block, data| {
        if let Err(e) = data {
            let offset = image.block_info(block).map_or(0, |b| b.offset);
            bad.push(Bad { block, offset, error: e.to_string() });
        }
        Flow::Continue
    });
    bad
}

fn header_position(info: &ImageInfo) -> &'static str {
    match (info.version, info.header_at_end) {
        (Version::Dplasa, _) => "none",
        (_, true) => "last",
        (_, false) => "first",
    }
}

fn version_detail(version: Version) -> String {
    match version {
        Version::V3SliTaz { entry_size, compressed_index, truncated } => format!(
            "{entry_size}-byte entries, {} index{}",
            if compressed_index { "compressed" } else { "plain" },
            if truncated { ", truncated by its writer" } else { "" }
        ),
        _ => String::new(),
    }
}

fn ratio(info: &ImageInfo) -> f64 {
    if info.size == 0 {
        0.0
    } else {
        info.file_len as f64 / info.size as f64
    }
}

/// What the report says, gathered once for the text and the JSON.
#[derive(Clone, Copy)]
struct Facts<'a> {
    image: &'a Image,
    stats: &'a Stats,
    fs: Option<&'a FsInfo>,
    bad: Option<&'a [Bad]>,
    tree: &'a Tree,
    checked: Option<&'a Checked>,
}

/// The filesystem inside, as the live boot's probe sees it: its mount
/// type and label.
fn filesystem(fs: Option<&FsInfo>) -> Option<(&'static str, &str)> {
    fs.map(|f| (f.fs.mount_type(), f.label.as_str()))
}

fn text(facts: &Facts) -> String {
    let Facts { image, stats, fs, bad, tree, checked } = *facts;
    let info = image.info();
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{:<20}{value}", format!("{key}:"));
    };
    line("file", image.path().display().to_string());
    let detail = version_detail(info.version);
    line(
        "version",
        if detail.is_empty() { info.version.to_string() } else { format!("{} ({detail})", info.version) },
    );
    line("header", header_position(info).into());
    line("block size", info.block_size.to_string());
    line("blocks", info.num_blocks.to_string());
    line("uncompressed size", format!("{} ({})", info.size, crate::units::Bytes(info.size)));
    line("compressed size", format!("{} ({})", info.file_len, crate::units::Bytes(info.file_len)));
    line("ratio", format!("{:.1}%", ratio(info) * 100.0));
    line(
        "filesystem",
        match filesystem(fs) {
            Some((t, "")) => t.to_string(),
            Some((t, label)) => format!("{t}, label '{label}'"),
            None => "none recognised".into(),
        },
    );
    line("index", format!("{} bytes at offset {}", info.index_len, info.index_offset));
    let codecs: Vec<String> = stats.codecs.iter().map(|(name, count)| format!("{name} {count}")).collect();
    line("codecs", if codecs.is_empty() { "-".into() } else { codecs.join(", ") });
    line("links", stats.links.to_string());
    line("zero-length blocks", stats.zero_length.to_string());
    line(
        "largest block",
        stats.largest.map_or("-".into(), |(block, len)| format!("{len} bytes (block {block})")),
    );
    line(
        "verity tree",
        match &tree.state {
            None => "none".into(),
            Some(Ok((blocks, root))) => {
                format!("{} ({blocks} data blocks), root hash {root}", tree.path.display())
            }
            Some(Err(e)) => format!("unusable: {e}"),
        },
    );
    if let Some((root, report)) = checked {
        let hex = crate::verity::format::to_hex(root);
        if report.bad_count == 0 {
            line("verify", format!("all {} data blocks match root hash {hex}", report.data_blocks));
        } else {
            line("verify", format!("{} of {} data blocks bad", report.bad_count, report.data_blocks));
            for b in &report.bad {
                line("bad data block", format!("{} at offset {}: {}", b.block, b.offset, b.error));
            }
        }
    }
    if let Some(bad) = bad {
        if bad.is_empty() {
            line("verify", format!("all {} blocks OK", info.num_blocks));
        } else {
            line("verify", format!("{} of {} blocks bad", bad.len(), info.num_blocks));
            for b in bad {
                let _ = writeln!(out, "bad block {} at offset {}: {}", b.block, b.offset, b.error);
            }
        }
    }
    out
}

fn json(facts: &Facts) -> String {
    let Facts { image, stats, fs, bad, tree, checked } = *facts;
    let info = image.info();
    let mut fields = vec![
        ("file", json_string(&image.path().display().to_string())),
        ("version", json_string(&info.version.to_string())),
        ("version_detail", json_string(&version_detail(info.version))),
        ("header", json_string(header_position(info))),
        ("block_size", info.block_size.to_string()),
        ("blocks", info.num_blocks.to_string()),
        ("size", info.size.to_string()),
        ("file_size", info.file_len.to_string()),
        ("ratio", format!("{:.6}", ratio(info))),
        ("filesystem", filesystem(fs).map_or("null".into(), |(t, _)| json_string(t))),
        ("filesystem_label", filesystem(fs).map_or("null".into(), |(_, l)| json_string(l))),
        ("index_offset", info.index_offset.to_string()),
        ("index_size", info.index_len.to_string()),
    ];
    let codecs: Vec<String> = stats.codecs.iter().map(|(k, v)| format!("{}: {v}", json_string(k))).collect();
    fields.push(("codecs", format!("{{{}}}", codecs.join(", "))));
    fields.push(("links", stats.links.to_string()));
    fields.push(("zero_length_blocks", stats.zero_length.to_string()));
    fields.push((
        "largest_block",
        stats
            .largest
            .map_or("null".into(), |(block, len)| format!("{{\"block\": {block}, \"size\": {len}}}")),
    ));
    let (tree_path, tree_root, tree_error) = match &tree.state {
        None => ("null".to_string(), "null".to_string(), "null".to_string()),
        Some(Ok((_, root))) => {
            (json_string(&tree.path.display().to_string()), json_string(root), "null".into())
        }
        Some(Err(e)) => (json_string(&tree.path.display().to_string()), "null".into(), json_string(e)),
    };
    fields.push(("verity_tree", tree_path));
    fields.push(("verity_root_hash", tree_root));
    fields.push(("verity_error", tree_error));
    if let Some((_, report)) = checked {
        let list: Vec<String> =
            report.bad.iter().map(|b| bad_block_json(b.block, b.offset, &b.error)).collect();
        fields.push(("verified", (report.bad_count == 0).to_string()));
        fields.push(("verity_data_blocks", report.data_blocks.to_string()));
        fields.push(("verity_bad_count", report.bad_count.to_string()));
        fields.push(("verity_bad_blocks", format!("[{}]", list.join(", "))));
    }
    if let Some(bad) = bad {
        let list: Vec<String> = bad.iter().map(|b| bad_block_json(b.block, b.offset, &b.error)).collect();
        fields.push(("verified", (bad.is_empty()).to_string()));
        fields.push(("bad_blocks", format!("[{}]", list.join(", "))));
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("  \"{k}\": {v}")).collect();
    format!("{{\n{}\n}}\n", body.join(",\n"))
}

/// One entry of a JSON list of bad blocks.
fn bad_block_json(block: u64, offset: u64, error: &str) -> String {
    format!("{{\"block\": {block}, \"offset\": {offset}, \"error\": {}}}", json_string(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_need_exactly_one_image() {
        let a = |l: &[&str]| parse_args(&l.iter().map(OsString::from).collect::<Vec<_>>());
        let Ok(Some(args)) = a(&["--verify", "img", "--json", "-t", "2"]) else { panic!() };
        assert!(args.verify && args.json);
        assert!(a(&["--root-hash", &"00".repeat(32), "img"]).err().unwrap().contains("--verify"));
        assert!(a(&["--verify", "--root-hash", "abc", "img"]).is_err());
        let Ok(Some(args)) = a(&["--verify", "--root-hash", &"0A".repeat(32), "img"]) else { panic!() };
        assert_eq!(args.root_hash, Some([10; 32]));
        assert_eq!(args.threads, 2);
        assert!(a(&[]).is_err());
        assert!(a(&["a", "b"]).is_err());
        assert!(matches!(a(&["-h"]), Ok(None)));
    }
}
