//! `create_compressed_fs [options] INFILE OUTFILE`: compress a filesystem
//! image into a cloop image, command-line compatible with Debian
//! cloop-utils 3.14 (docs/formats.md).
//!
//! Parsing ([`parse_args`]) only turns flags into [`Args`] (what the user
//! typed, with cloop-utils' clamping messages); [`request`] turns that into
//! a [`writer::Request`]; the writer does the rest. Deliberate differences
//! from cloop-utils are listed in the help text and the man page.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::cloop::codec::{
    Codec, EncodeOptions, ZlibEffort, LZ4_DEFAULT_LEVEL, LZ4_LEVELS, ZSTD_DEFAULT_LEVEL, ZSTD_LEVELS,
};
use crate::cloop::writer::{self, BlockDone, Observer, Plan, Start, Strategy, ZOPFLI_ITERATIONS};
use crate::progress::Progress;
use crate::units::{parse_size, Bytes};

const APPLET: &str = "create_compressed_fs";

const USAGE: &str = "\
Usage: create_compressed_fs [options] INFILE OUTFILE

Compress INFILE (a filesystem image or block device; '-' = stdin) into the
cloop image OUTFILE ('-' = stdout). zlib images are cloop V2.0, byte for byte
in Debian cloop-utils' layout (readable by every cloop driver, QEMU and
FreeBSD); --codec other than zlib writes V4.0 (cloop driver 4.x/5.x).

Options (as Debian cloop-utils 3.14):
  -B N      block size (default 65536; suffixes k K m M g G i). Clamped to
            512..1048576 and rounded down to a multiple of 512.
  -L N      compression level of the chosen codec (default 9):
              1..9  zlib level, written by libdeflate (on filesystems
                    smaller and faster than zlib's own encoder, see
                    --deflate; any zlib reader reads it)
              10..12 libdeflate's slower near-optimal levels
              0     stored deflate blocks, still zlib (as cloop-utils)
              -1    zopfli: the smallest deflate stream we can make
                    (15 iterations; replaces cloop-utils' 7-Zip deflate)
              -2    per block the smaller of zlib 9 and zopfli
            With --codec xz, 0..9 is the xz preset (default 6); with
            --codec zstd, 1..22 is the zstd level (default 19; 20..22 are
            zstd's --ultra levels, no extra memory at cloop block sizes);
            with --codec lz4, 1..12 as the lz4 tool (default 9: 1 and 2
            the fast compressor, 3..12 LZ4_HC); ignored for none.
  -b        same as -L -2
  -t N      compressor threads (default: one per online CPU)
  -a N      blocks in flight (default 2*threads+2); memory is about
            N * 2 * block size
  -s SIZE   expected input size (suffixes as -B): more input is ignored
            (warning, exit status 1, the image of SIZE bytes is written);
            less input is an error
  -m        keep the compressed data in memory until the end
  -f FILE   keep the compressed data in FILE until the end, then remove it
  -r        reuse the output file as temporary storage (this is what we do
            anyway when the input size is unknown; accepted for
            compatibility)
  -S FILE   write header and index to FILE, the data to OUTFILE; the image
            is `cat FILE OUTFILE`. Not with -m, -f or -r.
  -q        quiet: nothing on stderr except warnings and errors
  -v        one line per block instead of the progress line
  -j N      accepted and ignored (cloop-utils ignores it too)
  -p PORT   accepted and ignored (only used with -l or HOSTS)
  -l, HOSTS remote compression (server mode, host list) is NOT supported:
            it is an unauthenticated network service. Compression is local.
Our additions:
  --codec NAME  zlib (default, V2), xz, lz4, zstd or none (V4.0 images). In
                V4 a block that does not get smaller is stored raw.
  --verity[=FILE]  also write a dm-verity hash tree (format 1, sha256, 4 KiB
                blocks) of the uncompressed image to FILE (default
                OUTFILE.verity), computed while compressing, and print
                'root hash: HEX' on stdout (on stderr when the image goes
                to stdout, which needs an explicit FILE)
  --salt HEX    the tree's salt (hex, at most 256 bytes; '-' for none).
                Default: 32 bytes derived from SOURCE_DATE_EPOCH when it is
                set (reproducible builds), else 32 random bytes
  --deflate zlib  write zlib streams with zlib's own algorithm (zlib-rs,
                -L 0..9) instead of libdeflate: the blocks cloop-utils
                writes, byte for byte at -B 4096; slower and larger.
  -h, --help    this help

Old syntax: a pure number as INFILE or OUTFILE (create_compressed_fs image
65536 > out) means -m -B NUMBER and reads stdin, writes stdout, exactly as
cloop-utils does: the file name given is ignored.

Deliberate differences from cloop-utils:
  * inputs under 8000 bytes (even 0 bytes) are accepted;
  * stdin without -s and stdout without -m/-f/-S need no strategy: we use the
    output file (size unknown) or an unlinked spool file in $TMPDIR (stdout);
    -r with stdin works;
  * the output is written as .OUTFILE.tmp.PID and renamed at the end, so an
    interrupted or failed run never leaves a truncated OUTFILE; an output that
    is the input file is refused;
  * -q silences the progress line too; -h exits 0; no \"cores detected\" line.

Exit status: 0 on success, 1 on any error and on input longer than -s.
";

/// What the user typed.
#[derive(Debug, Default, PartialEq)]
struct Args {
    block_size: Option<u32>,
    /// -L; `None` is 9 for zlib, preset 6 for xz.
    level: Option<i32>,
    /// `None` is zlib.
    codec: Option<Codec>,
    /// `--deflate zlib`: zlib's algorithm instead of libdeflate.
    zlib_algorithm: bool,
    threads: Option<usize>,
    in_flight: Option<usize>,
    expected_size: Option<u64>,
    strategy: Strategy,
    header_file: Option<PathBuf>,
    quiet: bool,
    verbose: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    /// cloop-utils' notices about adjusted values, printed unless quiet.
    notices: Vec<String>,
    /// Operand ignored by the old syntax, worth a warning even when quiet.
    ignored: Option<String>,
    /// `--verity[=FILE]`: `Some(None)` is OUTFILE.verity.
    verity: Option<Option<PathBuf>>,
    salt: Option<Vec<u8>>,
}

enum Parsed {
    Run(Box<Args>),
    Help,
}

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("{APPLET}: {e}\nTry '{APPLET} --help'.");
            return 1;
        }
    };
    if !args.quiet {
        for n in &args.notices {
            eprintln!("{n}");
        }
    }
    if let Some(name) = &args.ignored {
        eprintln!(
            "{APPLET}: warning: old syntax: '{name}' is ignored, the image is read from standard input"
        );
    }
    if args.output.is_none() && rustix::termios::isatty(rustix::stdio::stdout()) {
        return crate::applets::fail(APPLET, "refusing to write a binary image to a terminal");
    }
    let quiet = args.quiet;
    let mut report = Report::new(args.verbose, quiet);
    let tree = match verity_tree(&args) {
        Ok(tree) => tree,
        Err(e) => return crate::applets::fail(APPLET, e),
    };
    let image_on_stdout = args.output.is_none();
    report.tree = tree.map(TreeJob::Staged);
    match writer::create(request(*args), &mut report) {
        Ok(summary) => {
            report.done(&summary);
            if let Err(e) = report.finish_tree(image_on_stdout) {
                return crate::applets::fail(APPLET, e);
            }
            if summary.excess_input {
                eprintln!(
                    "WARNING: got more data than expected. Trailing data is ignored, your image may be incomplete."
                );
                return 1;
            }
            0
        }
        Err(e) => {
            report.abort();
            crate::applets::fail(APPLET, e)
        }
    }
}

/// `--verity`: the tree file, staged under a temporary name (renamed into
/// place only when image and tree are complete), and its salt.
fn verity_tree(args: &Args) -> Result<Option<StagedTree>, String> {
    let Some(file) = &args.verity else {
        return match args.salt {
            Some(_) => Err("--salt is the hash tree's salt: it needs --verity".into()),
            None => Ok(None),
        };
    };
    let path = match (file, &args.output) {
        (Some(f), _) => f.clone(),
        (None, Some(out)) => crate::verity::tree_path_for(out),
        (None, None) => {
            return Err("the image goes to standard output: give the tree a name, --verity=FILE".into())
        }
    };
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    };
    let clash = [args.input.as_deref(), args.output.as_deref(), args.header_file.as_deref()];
    if let Some(other) = clash.into_iter().flatten().find(|o| same(o, &path) || *o == path) {
        return Err(format!("--verity {}: that is also {}", path.display(), other.display()));
    }
    let salt = match &args.salt {
        Some(salt) => salt.clone(),
        None => default_salt()?,
    };
    let (staged, file) = writer::Staged::create(&path, "hash tree").map_err(|e| e.to_string())?;
    Ok(Some(StagedTree { staged, file, path, salt }))
}

/// The tree file of `--verity` before the writer starts.
struct StagedTree {
    staged: writer::Staged,
    file: File,
    path: PathBuf,
    salt: Vec<u8>,
}

/// 32 bytes from SOURCE_DATE_EPOCH when it is set (the same input then
/// gives the same tree and root hash), else 32 random bytes as veritysetup
/// makes.
fn default_salt() -> Result<Vec<u8>, String> {
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let epoch = epoch.to_string_lossy();
        let salted = crate::verity::format::Salted::new(b"cloopbox verity salt\0");
        return Ok(salted.hash(epoch.trim().as_bytes()).to_vec());
    }
    let mut salt = vec![0u8; crate::verity::format::DEFAULT_SALT_LEN];
    use std::io::Read;
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| format!("/dev/urandom: {e} (give --salt HEX)"))?;
    Ok(salt)
}

fn request(args: Args) -> writer::Request {
    let threads = args.threads.unwrap_or_else(writer::default_threads);
    let codec = args.codec.unwrap_or(Codec::Zlib);
    let zlib = match args.level.unwrap_or(9) {
        -1 => ZlibEffort::Zopfli { iterations: ZOPFLI_ITERATIONS },
        -2 => ZlibEffort::Best { iterations: ZOPFLI_ITERATIONS },
        level if level <= 0 || args.zlib_algorithm => ZlibEffort::Zlib(level.clamp(0, 9) as u32),
        level => ZlibEffort::Libdeflate(level as u32),
    };
    // -L applies to the chosen codec; the others keep their defaults.
    let level_of = |c: Codec| args.level.filter(|_| codec == c);
    let xz_preset = level_of(Codec::Xz).map_or(6, |level| level.clamp(0, 9) as u32);
    let zstd_level = level_of(Codec::Zstd).unwrap_or(ZSTD_DEFAULT_LEVEL);
    let lz4_level = level_of(Codec::Lz4).unwrap_or(LZ4_DEFAULT_LEVEL);
    writer::Request {
        input: args.input.map_or(writer::Input::Stdin, writer::Input::Path),
        output: args.output,
        expected_size: args.expected_size,
        strategy: args.strategy,
        header_file: args.header_file,
        options: writer::Options {
            block_size: args.block_size.unwrap_or(writer::DEFAULT_BLOCK_SIZE),
            codec,
            encode: EncodeOptions { zlib, xz_preset, zstd_level, lz4_level },
            threads,
            in_flight: args.in_flight,
        },
    }
}

/// `-B` with cloop-utils' clamping and its messages.
fn block_size(text: &str, notices: &mut Vec<String>) -> Result<u32, String> {
    let mut bs = parse_size(text).map_err(|e| format!("invalid block size: {e}"))?;
    if bs > 1 << 20 {
        bs = 1 << 20;
        notices.push("Block size is too big. Adjusting to 1048576".into());
    } else if bs < 512 {
        bs = 512;
        notices.push("Block size is too small. Adjusting to 512".into());
    } else if bs % 512 != 0 {
        bs -= bs % 512;
        notices.push(format!("Block size not multiple of 512. Adjusting to {bs}"));
    }
    Ok(bs as u32)
}

fn number<T: std::str::FromStr>(opt: &str, text: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| format!("invalid number '{text}' for -{opt}"))
}

fn parse_args(argv: &[OsString]) -> Result<Parsed, String> {
    let parsed = crate::getopt::parse(
        argv,
        "B:L:bmf:rs:S:t:a:j:p:lqvh",
        &["codec=", "deflate=", "verity?", "salt=", "help"],
    )?;
    let mut a = Args::default();
    for opt in &parsed.opts {
        let v = opt.value.as_deref().unwrap_or("");
        match opt.name.as_str() {
            "h" | "help" => return Ok(Parsed::Help),
            "B" => a.block_size = Some(block_size(v, &mut a.notices)?),
            "L" => {
                // The range depends on the codec: checked in `check_level`.
                let level = v.trim().parse().ok().filter(|l| (-2..=*ZSTD_LEVELS.end()).contains(l));
                a.level = Some(level.ok_or(LEVEL_RANGES)?);
            }
            "b" => a.level = Some(-2),
            "t" => {
                let t: usize = number("t", v)?;
                if t == 0 {
                    a.notices
                        .push(format!("Bad thread count, using default ({})", writer::default_threads()));
                }
                a.threads = (t > 0).then_some(t);
            }
            "a" => a.in_flight = Some(number::<usize>("a", v)?.max(1)),
            "s" => a.expected_size = Some(parse_size(v).map_err(|e| format!("invalid size for -s: {e}"))?),
            "m" => a.strategy = Strategy::Memory,
            "f" => a.strategy = Strategy::SpoolFile(v.into()),
            "r" => a.strategy = Strategy::Reuse,
            "S" => a.header_file = Some(v.into()),
            "q" => a.quiet = true,
            "v" => a.verbose = true,
            "j" => {}
            "p" => {
                if number::<u32>("p", v)? > 65535 {
                    return Err("Invalid port".into());
                }
            }
            "l" => return Err(NO_REMOTE.into()),
            "codec" => {
                let codec = Codec::from_name(v).ok_or_else(|| format!("unknown codec '{v}'"))?;
                if codec == Codec::Lzo {
                    return Err("writing lzo blocks is not supported".into());
                }
                a.codec = Some(codec);
            }
            "verity" => a.verity = Some(opt.value.as_ref().map(PathBuf::from)),
            "salt" => a.salt = Some(crate::verity::format::parse_salt(v)?),
            "deflate" => match v {
                "zlib" => a.zlib_algorithm = true,
                "libdeflate" => a.zlib_algorithm = false,
                _ => return Err(format!("unknown deflate encoder '{v}' (zlib or libdeflate)")),
            },
            other => return Err(format!("unhandled option -{other}")),
        }
    }
    if a.header_file.is_some() && a.strategy != Strategy::Auto {
        return Err("ERROR: Separate header file only with pure file output supported.".into());
    }
    check_level(&a)?;
    operands(&mut a, &parsed.operands)?;
    Ok(Parsed::Run(Box::new(a)))
}

const LEVEL_RANGES: &str = "ERROR: Invalid compression method. Exiting... (-L takes -2..12 \
for zlib (0..9 with --deflate zlib), 0..9 for xz, 1..22 for zstd, 1..12 for lz4)";

/// `-L` against the codec it applies to.
fn check_level(a: &Args) -> Result<(), String> {
    let codec = a.codec.unwrap_or(Codec::Zlib);
    let Some(level) = a.level else { return Ok(()) };
    if level < 0 && codec != Codec::Zlib {
        return Err(format!("-L {level} and -b are zlib modes; they do not apply to --codec {codec}"));
    }
    let valid = match codec {
        Codec::Zlib if a.zlib_algorithm => level <= 9,
        Codec::Zlib => level <= 12,
        Codec::Xz => level <= 9,
        Codec::Zstd => ZSTD_LEVELS.contains(&level),
        Codec::Lz4 => LZ4_LEVELS.contains(&level),
        _ => true,
    };
    if valid {
        Ok(())
    } else {
        Err(format!("{LEVEL_RANGES}: -L {level} with --codec {codec}"))
    }
}

const NO_REMOTE: &str = "remote compression (-l, HOSTS) is not supported: it is an \
unauthenticated network service; compression runs locally with -t threads";

fn operands(a: &mut Args, ops: &[OsString]) -> Result<(), String> {
    let is_number =
        |s: &OsString| s.to_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    if let Some(pos) = ops.iter().take(2).position(is_number) {
        // cloop-utils' "old syntax": NUMBER is the block size, and input
        // and output become stdin and stdout whatever else was given.
        let n = ops[pos].to_string_lossy().into_owned();
        a.notices.push(format!(
            "Warning, number as file string found. Assuming old command syntax and\n\
             choosing compatible parameters (-m -B {n}). See the usage info (-h)\n\
             for better/correct parameters."
        ));
        a.block_size = Some(block_size(&n, &mut a.notices)?);
        a.strategy = Strategy::Memory;
        a.ignored = ops
            .iter()
            .take(2)
            .find(|o| !is_number(o) && o.as_os_str() != "-")
            .map(|o| o.to_string_lossy().into_owned());
        if ops.len() > 2 {
            return Err(NO_REMOTE.into());
        }
        return Ok(());
    }
    match ops {
        [input, output] => {
            a.input = (input.as_os_str() != "-").then(|| input.into());
            a.output = (output.as_os_str() != "-").then(|| output.into());
            Ok(())
        }
        [_, _, host, ..] => Err(format!("{NO_REMOTE} (got host '{}')", host.to_string_lossy())),
        _ => Err("need INFILE and OUTFILE".into()),
    }
}

/// The hash tree of `--verity`: its file until the writer starts, then
/// the builder fed with every uncompressed block.
enum TreeJob {
    Staged(StagedTree),
    Building(writer::Staged, PathBuf, Box<crate::verity::build::Builder>),
}

/// Progress and messages on stderr.
struct Report {
    progress: Option<Progress>,
    verbose: bool,
    quiet: bool,
    /// Input and output bytes at the last block, for the final progress line.
    last: (u64, u64),
    tree: Option<TreeJob>,
}

impl Report {
    fn new(verbose: bool, quiet: bool) -> Self {
        Self { progress: None, verbose, quiet, last: (0, 0), tree: None }
    }

    /// Completes the tree, renames it into place and prints the root hash.
    fn finish_tree(&mut self, image_on_stdout: bool) -> Result<(), String> {
        let Some(TreeJob::Building(staged, path, builder)) = self.tree.take() else { return Ok(()) };
        let (built, file) = builder.finish().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| format!("{}: {e}", path.display()))?;
        staged.commit().map_err(|e| e.to_string())?;
        let hex = crate::verity::format::to_hex(&built.root);
        if !self.quiet {
            eprintln!(
                "hash tree: {} ({} bytes, {} data blocks of 4096)",
                path.display(),
                built.geometry.file_len(),
                built.geometry.data_blocks
            );
        }
        if image_on_stdout {
            eprintln!("root hash: {hex}");
        } else {
            println!("root hash: {hex}");
        }
        Ok(())
    }

    fn end_progress(&mut self) {
        if let Some(mut p) = self.progress.take() {
            p.finish(self.last.0, Some(self.last.1));
        }
    }

    fn done(&mut self, s: &writer::Summary) {
        self.end_progress();
        if self.quiet {
            return;
        }
        let pct = if s.input_bytes > 0 { s.image_bytes as f64 * 100.0 / s.input_bytes as f64 } else { 0.0 };
        let raw = if s.raw_blocks > 0 { format!(", {} stored raw", s.raw_blocks) } else { String::new() };
        eprintln!(
            "{} blocks of {} bytes{raw}: {} in, {} image ({pct:.1}%), cloop {:?}",
            s.blocks,
            s.block_size,
            Bytes(s.input_bytes),
            Bytes(s.image_bytes),
            s.format
        );
    }

    fn abort(&mut self) {
        // Leave the progress line as it is; the error follows on a new line.
        if self.progress.take().is_some() && !self.quiet {
            eprintln!();
        }
    }
}

impl Observer for Report {
    fn start(&mut self, s: &Start) {
        if let Some(TreeJob::Staged(StagedTree { staged, file, path, salt })) = self.tree.take() {
            let expected = s.expected_blocks.map(|n| n * u64::from(s.block_size));
            let name = staged.temp_path().display().to_string();
            let builder = crate::verity::build::Builder::new(file, name, &salt, expected);
            self.tree = Some(TreeJob::Building(staged, path, Box::new(builder)));
        }
        if self.quiet {
            return;
        }
        match s.expected_blocks {
            Some(n) => eprintln!("Block size {}, expected number of blocks: {n}", s.block_size),
            None => eprintln!("Block size {}, input size unknown", s.block_size),
        }
        let how = match &s.plan {
            Plan::Direct | Plan::Reuse => String::new(),
            Plan::Memory => ", data kept in memory".into(),
            Plan::Spool(Some(p)) => format!(", data kept in {}", p.display()),
            Plan::Spool(None) => ", data spooled to $TMPDIR".into(),
            Plan::Split(p) => format!(", header to {}", p.display()),
        };
        eprintln!("Writing cloop {:?} with {} thread(s){how}", s.format, s.threads);
        if !self.verbose {
            self.progress = Some(Progress::new(APPLET, s.expected_bytes, false));
        }
    }

    fn block(&mut self, b: &BlockDone) {
        self.last = (b.input_done, b.output_done);
        if let Some(p) = &mut self.progress {
            p.update(b.input_done, Some(b.output_done));
        } else if self.verbose && !self.quiet {
            eprintln!("Blk# {:5}: {} -> {} bytes ({})", b.index, b.input_len, b.compressed_len, b.codec);
        }
    }

    fn uncompressed(&mut self, block: &[u8]) -> std::io::Result<()> {
        match &mut self.tree {
            Some(TreeJob::Building(_, _, builder)) => builder.update(block),
            _ => Ok(()),
        }
    }

    fn step(&mut self, what: &str) {
        if self.quiet {
            return;
        }
        self.end_progress();
        let mut chars = what.chars();
        let first = chars.next().map(|c| c.to_uppercase().to_string()).unwrap_or_default();
        eprintln!("{first}{}...", chars.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(list: &[&str]) -> Result<Args, String> {
        let argv: Vec<OsString> = list.iter().map(OsString::from).collect();
        match parse_args(&argv)? {
            Parsed::Run(a) => Ok(*a),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn block_size_is_clamped_like_cloop_utils() {
        assert_eq!(run(&["-B", "2M", "a", "b"]).unwrap().block_size, Some(1 << 20));
        assert_eq!(run(&["-B", "100", "a", "b"]).unwrap().block_size, Some(512));
        let a = run(&["-B", "4k", "a", "b"]).unwrap();
        assert_eq!(a.block_size, Some(3584));
        assert_eq!(a.notices, vec!["Block size not multiple of 512. Adjusting to 3584".to_string()]);
        assert_eq!(run(&["-B", "64K", "a", "b"]).unwrap().block_size, Some(65536));
        assert_eq!(run(&["-B", "2i", "a", "b"]).unwrap().block_size, Some(4096));
        assert!(run(&["-B", "12x", "a", "b"]).is_err());
    }

    #[test]
    fn levels_and_their_range() {
        assert_eq!(run(&["a", "b"]).unwrap().level, None);
        assert_eq!(run(&["-L", "-1", "a", "b"]).unwrap().level, Some(-1));
        assert_eq!(run(&["-b", "a", "b"]).unwrap().level, Some(-2));
        assert_eq!(run(&["-L", "0", "a", "b"]).unwrap().level, Some(0));
        for bad in [&["-L", "13"][..], &["-L", "-3"], &["-L", "x"], &["-L", "10", "--deflate", "zlib"]] {
            let err = run(&[bad, &["a", "b"]].concat()).unwrap_err();
            assert!(err.contains("Invalid compression method"), "{bad:?}: {err}");
        }
        assert!(run(&["--codec", "xz", "-b", "a", "b"]).is_err());
        assert!(run(&["--codec", "xz", "-L", "10", "a", "b"]).is_err());
        assert!(run(&["--codec", "zstd", "-L", "0", "a", "b"]).is_err());
        assert!(run(&["--codec", "zstd", "-L", "23", "a", "b"]).is_err());
        assert!(run(&["--deflate", "7zip", "a", "b"]).is_err());
        let a = run(&["-L", "22", "--codec", "zstd", "a", "b"]).unwrap();
        assert_eq!(request(a).options.encode.zstd_level, 22);
        let a = run(&["-L", "12", "a", "b"]).unwrap();
        assert_eq!(request(a).options.encode.zlib, ZlibEffort::Libdeflate(12));
        let a = run(&["-L", "9", "--deflate", "zlib", "a", "b"]).unwrap();
        assert_eq!(request(a).options.encode.zlib, ZlibEffort::Zlib(9));
        assert_eq!(request(run(&["-L", "0", "a", "b"]).unwrap()).options.encode.zlib, ZlibEffort::Zlib(0));
        let zstd = request(run(&["--codec", "zstd", "a", "b"]).unwrap()).options.encode.zstd_level;
        assert_eq!(zstd, ZSTD_DEFAULT_LEVEL);
        assert!(run(&["--codec", "lz4", "-L", "0", "a", "b"]).is_err());
        assert!(run(&["--codec", "lz4", "-L", "13", "a", "b"]).is_err());
        assert!(run(&["--codec", "lz4", "-b", "a", "b"]).is_err());
        let a = run(&["--codec", "lz4", "-L", "1", "a", "b"]).unwrap();
        assert_eq!(request(a).options.encode.lz4_level, 1);
        let lz4 = request(run(&["--codec", "lz4", "a", "b"]).unwrap()).options.encode.lz4_level;
        assert_eq!(lz4, LZ4_DEFAULT_LEVEL);
    }

    #[test]
    fn old_number_syntax_reads_stdin_into_memory() {
        let a = run(&["image", "65536"]).unwrap();
        assert_eq!((a.input, a.output), (None, None));
        assert_eq!(a.block_size, Some(65536));
        assert_eq!(a.strategy, Strategy::Memory);
        assert_eq!(a.ignored.as_deref(), Some("image"));
        assert!(run(&["-", "4096"]).unwrap().ignored.is_none());
    }

    #[test]
    fn dashes_are_stdin_and_stdout() {
        let a = run(&["-m", "-", "-"]).unwrap();
        assert_eq!((a.input, a.output, a.strategy), (None, None, Strategy::Memory));
        let a = run(&["in", "out"]).unwrap();
        assert_eq!(a.input, Some("in".into()));
    }

    #[test]
    fn remote_mode_and_hosts_are_refused() {
        assert!(run(&["-l", "a", "b"]).unwrap_err().contains("not supported"));
        assert!(run(&["a", "b", "host:3103"]).unwrap_err().contains("host:3103"));
        assert!(run(&["-p", "70000", "a", "b"]).is_err());
        assert!(run(&["-p", "3103", "-j", "4", "a", "b"]).is_ok());
    }

    #[test]
    fn header_file_excludes_other_strategies() {
        assert!(run(&["-S", "h", "-m", "a", "b"]).is_err());
        assert_eq!(run(&["-S", "h", "a", "-"]).unwrap().header_file, Some("h".into()));
    }

    #[test]
    fn thread_count_zero_means_default_with_a_notice() {
        let a = run(&["-t", "0", "a", "b"]).unwrap();
        assert_eq!(a.threads, None);
        assert!(a.notices[0].starts_with("Bad thread count"));
        assert_eq!(run(&["-t", "3", "a", "b"]).unwrap().threads, Some(3));
    }

    #[test]
    fn verity_and_salt() {
        assert_eq!(run(&["--verity", "a", "b"]).unwrap().verity, Some(None));
        assert_eq!(run(&["--verity=t", "a", "b"]).unwrap().verity, Some(Some("t".into())));
        assert_eq!(run(&["--salt", "00ff", "a", "b"]).unwrap().salt, Some(vec![0, 255]));
        assert!(run(&["--salt", "xyz", "a", "b"]).is_err());
        let a = run(&["--salt", "00", "a", "b"]).unwrap();
        assert!(verity_tree(&a).err().unwrap().contains("needs --verity"));
        let a = run(&["--verity", "-m", "a", "-"]).unwrap();
        assert!(verity_tree(&a).err().unwrap().contains("--verity=FILE"));
        let a = run(&["--verity=a", "a", "b"]).unwrap();
        assert!(verity_tree(&a).err().unwrap().contains("also a"));
    }

    #[test]
    fn help_and_missing_operands() {
        assert_eq!(run(&["-h"]).unwrap_err(), "help");
        assert_eq!(run(&["--help"]).unwrap_err(), "help");
        assert!(run(&["a"]).is_err());
    }
}
