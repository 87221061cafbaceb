//! `extract_compressed_fs [-q] [-t N] INFILE [OUTFILE]`: decompress a cloop
//! image of any version.
//!
//! Compatible with Debian's `extract_compressed_fs INFILE OUTFILE` (`-` for
//! stdin/stdout) and SliTaz's `extract_compressed_fs INFILE > out`, without
//! their bugs: no SIGFPE on images of fewer than 10 blocks, blocks are read
//! by offset (so gaps between blocks work), an existing output file is
//! truncated, and nothing is `fdatasync`ed per block. Blocks are decoded in
//! parallel ([`crate::cloop::extract`]) and written in order. The output is
//! the exact original length where the format records it (SliTaz V3,
//! dplasa), else `blocks × block_size`.
//!
//! An image on a pipe is spooled to an unnamed temporary file in `$TMPDIR`
//! first, because every cloop version needs random access (the index may
//! be at the end, blocks need not be contiguous).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::cloop::extract::{extract, ExtractError};
use crate::cloop::reader::Image;
use crate::progress::Progress;

const APPLET: &str = "extract_compressed_fs";

const USAGE: &str = "\
Usage: extract_compressed_fs [-q] [-t N] [--ca-file FILE] INFILE [OUTFILE]

Decompress a cloop image (any version: 0.68, 1.0, 2.0, SliTaz 3.0, dplasa
CLOOP3, 4.0, FreeBSD uzip) to OUTFILE, or to stdout when OUTFILE is missing
or '-'. INFILE '-' reads the image from stdin; an http:// or https:// URL
reads it with range requests (an ISO there: its KNOPPIX/KNOPPIX, or the file
URL#PATH).

  -q, --quiet        no progress on stderr
  -t, --threads N    decompression threads (default: one per CPU)
  --ca-file FILE     trust the PEM certificates in FILE for an https://
                     INFILE, besides the built-in roots
  -h, --help         show this help
";

/// Output writes are batched up to this size (blocks can be as small as 512 bytes).
const OUTPUT_BUFFER: usize = 1 << 20;

struct Args {
    quiet: bool,
    threads: usize,
    input: PathBuf,
    output: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// The command line; `Ok(None)` means --help.
fn parse_args(args: &[OsString]) -> Result<Option<Args>, String> {
    let parsed = crate::getopt::parse(args, "qt:h", &["quiet", "threads=", "ca-file=", "help"])?;
    let mut quiet = false;
    let mut ca_file = None;
    let mut threads = 0;
    for opt in &parsed.opts {
        match opt.name.as_str() {
            "q" | "quiet" => quiet = true,
            "ca-file" => ca_file = opt.value.as_deref().map(PathBuf::from),
            "t" | "threads" => {
                let value = opt.value.as_deref().unwrap_or_default();
                threads = value.parse().map_err(|_| format!("bad thread count '{value}'"))?;
            }
            _ => return Ok(None),
        }
    }
    let mut operands = parsed.operands.into_iter().map(PathBuf::from);
    let input = operands.next().ok_or("missing INFILE (try --help)")?;
    let output = operands.next().filter(|o| o.as_os_str() != "-");
    if operands.next().is_some() {
        return Err("too many arguments (try --help)".into());
    }
    if threads == 0 {
        threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    Ok(Some(Args { quiet, threads, input, output, ca_file }))
}

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match crate::applets::parsed(APPLET, USAGE, parse_args(args.get(1..).unwrap_or_default())) {
        Ok(args) => args,
        Err(status) => return status,
    };
    match run(&args) {
        Ok(()) => 0,
        // `extract_compressed_fs img | head` is not an error.
        Err(Failure::Extract(ExtractError::Write(e))) if e.kind() == io::ErrorKind::BrokenPipe => 0,
        Err(e) => crate::applets::fail(APPLET, e),
    }
}

enum Failure {
    Extract(ExtractError),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Extract(e) => e.fmt(f),
            Failure::Other(e) => f.write_str(e),
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let image = open_image(&args.input, args.ca_file.as_deref())?;
    let (out, name) = match &args.output {
        Some(path) => {
            if same_file(&args.input, path) {
                return Err(Failure::Other(format!(
                    "{}: is the input image; refusing to overwrite it",
                    path.display()
                )));
            }
            let file = File::create(path).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
            (file, path.display().to_string())
        }
        None => {
            (dup(io::stdout().as_fd()).map_err(|e| Failure::Other(format!("stdout: {e}")))?, "stdout".into())
        }
    };
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER, out);
    let mut progress = Progress::new(image.path().display().to_string(), Some(image.info().size), args.quiet);
    match extract(&image, &mut out, args.threads, &mut progress) {
        Ok(_) => Ok(()),
        Err(ExtractError::Write(e)) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Failure::Other(format!("{name}: write error: {e}")))
        }
        Err(e) => Err(Failure::Extract(e)),
    }
}

/// Both paths name one existing file (creating the output would truncate the image).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn open_image(input: &Path, ca_file: Option<&Path>) -> Result<Image, Failure> {
    if input.as_os_str() != "-" {
        return crate::remote::open_cloop(input, ca_file)
            .map_err(|e| Failure::Extract(ExtractError::Read(e)));
    }
    let name = Path::new("<stdin>");
    let stdin = io::stdin();
    let file = match rustix::fs::fstat(stdin.as_fd()) {
        // A redirected file or device is used in place.
        Ok(st) if is_seekable(st.st_mode) => dup(stdin.as_fd()),
        _ => spool(&mut stdin.lock()),
    }
    .map_err(|e| Failure::Other(format!("{}: {e}", name.display())))?;
    Image::from_file(file, name).map_err(|e| Failure::Extract(ExtractError::Read(e)))
}

fn is_seekable(mode: rustix::fs::RawMode) -> bool {
    use rustix::fs::FileType;
    matches!(FileType::from_raw_mode(mode), FileType::RegularFile | FileType::BlockDevice)
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// Copies `input` into an unnamed temporary file in `$TMPDIR` and returns it.
fn spool(input: &mut dyn io::Read) -> io::Result<File> {
    let mut file = temp_file(&std::env::temp_dir())?;
    io::copy(input, &mut file)?;
    file.flush()?;
    Ok(file)
}

/// An unnamed file: `O_TMPFILE` where the filesystem has it, else a
/// uniquely named file that is unlinked at once.
fn temp_file(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open(dir, flags, Mode::from_raw_mode(0o600)) {
        return Ok(File::from(fd));
    }
    let stamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let path = dir.join(format!(".extract_compressed_fs.{}.{stamp}", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_both_syntaxes_and_options() {
        let Ok(Some(a)) = parse_args(&args(&["-q", "-t", "3", "in.cloop", "-"])) else { panic!() };
        assert!(a.quiet);
        assert_eq!(a.threads, 3);
        assert_eq!(a.input, PathBuf::from("in.cloop"));
        assert_eq!(a.output, None);
        let Ok(Some(a)) = parse_args(&args(&["in", "out"])) else { panic!() };
        assert_eq!(a.output, Some(PathBuf::from("out")));
        assert!(a.threads >= 1);
        assert!(matches!(parse_args(&args(&["--help"])), Ok(None)));
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["a", "b", "c"])).is_err());
        assert!(parse_args(&args(&["-t", "x", "a"])).is_err());
    }

    #[test]
    fn spool_gives_a_readable_unnamed_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut data: &[u8] = b"hello cloop";
        let file = {
            let mut f = temp_file(dir.path()).unwrap();
            io::copy(&mut data, &mut f).unwrap();
            f
        };
        use std::os::unix::fs::FileExt;
        let mut back = [0u8; 11];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"hello cloop");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool file has no name");
    }
}
