//! `verity IMAGE TREE ROOTHASH`: verify every data block of an image
//! offline against a dm-verity hash tree and a trusted root hash.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::verity::check::{verify_image, Report};
use crate::verity::format::{parse_root_hash, to_hex, Digest};

const APPLET: &str = "verity";

const USAGE: &str = "\
Usage: verity [-q] [-t N] IMAGE TREE ROOTHASH

Verify every 4096-byte block of IMAGE (a cloop image of any version,
decoded; any other file as it is) against the dm-verity hash tree TREE
(format 1, sha256, 4096-byte blocks, as create_compressed_fs --verity and
veritysetup format write it) and ROOTHASH (64 hex digits, from a trusted
place). TREE '-' means IMAGE.verity.

  -t, --threads N    decoding threads (default: one per CPU)
  -q, --quiet        no progress line; only errors and bad blocks
  -h, --help         show this help

Exit status 0 when every block matches; 1 when a block does not (each bad
block is listed, the first one first, at most 100), or when the check
cannot start: the tree is malformed, covers another size, or its levels do
not lead to ROOTHASH.
";

struct Args {
    image: PathBuf,
    tree: PathBuf,
    root: Digest,
    threads: usize,
    quiet: bool,
}

fn parse_args(args: &[OsString]) -> Result<Args, i32> {
    let parsed = crate::applets::parse_flags(APPLET, USAGE, args, "t:qh", &["threads=", "quiet", "help"])?;
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut quiet = false;
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "t" | "threads" => {
                let v = opt.value.as_deref().unwrap_or_default();
                threads = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(crate::applets::usage_error(
                            APPLET,
                            USAGE,
                            &format!("bad thread count '{v}'"),
                        ))
                    }
                };
            }
            _ => quiet = true,
        }
    }
    let [image, tree, root] = <[OsString; 3]>::try_from(parsed.operands)
        .map_err(|_| crate::applets::usage_error(APPLET, USAGE, "expected IMAGE TREE ROOTHASH"))?;
    let root = parse_root_hash(&root.to_string_lossy()).map_err(|e| crate::applets::fail(APPLET, e))?;
    let image = PathBuf::from(image);
    let tree = if tree == "-" { crate::verity::tree_path_for(&image) } else { tree.into() };
    Ok(Args { image, tree, root, threads, quiet })
}

/// Prints the bad blocks and the verdict; the exit status.
pub fn print_report(image: &str, tree: &str, root: &Digest, report: &Report) -> i32 {
    for b in &report.bad {
        println!("bad data block {} at offset {}: {}", b.block, b.offset, b.error);
    }
    if report.bad_count == 0 {
        println!("{image}: all {} data blocks match {tree} (root hash {})", report.data_blocks, to_hex(root));
        return 0;
    }
    let first = &report.bad[0];
    eprintln!(
        "{APPLET}: {image}: {} of {} data blocks do not match {tree}; the first is data block {} (offset {})",
        report.bad_count, report.data_blocks, first.block, first.offset
    );
    1
}

pub fn main(args: Vec<OsString>) -> i32 {
    let a = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(status) => return status,
    };
    match verify_image(&a.image, &a.tree, a.root, a.threads, a.quiet) {
        Ok(report) => {
            print_report(&a.image.display().to_string(), &a.tree.display().to_string(), &a.root, &report)
        }
        Err(e) => crate::applets::fail(APPLET, e),
    }
}
