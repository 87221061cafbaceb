//! `cloopd IMAGE [--cow COWFILE] --unix PATH | --tcp [ADDR:]PORT ...`:
//! serve a cloop image, a plain file or a block device over NBD.
//!
//! Two stages (ripgrep's low/high args): [`parse_args`] turns the command
//! line into [`Args`] without touching the system; [`build`] opens the
//! image and stacks the layers:
//!
//! ```text
//!   NBD clients ── nbd::Server ── [cow::Overlay] ── [Cache] ── cloop Image | FileDev
//! ```
//!
//! The cache exists only over cloop images (a raw file already has the
//! page cache) and only when `--cache-size` is not 0. A file that is not a
//! cloop image at all is served raw; a cloop image that is damaged is an
//! error, never silently served raw.
//!
//! Stopping: SIGINT or SIGTERM stop the listeners, let every connection
//! finish its in-flight requests, flush the stack (the cowfile's bitmap
//! and clean header) and exit 0. Signals arrive through signal-hook's
//! self-pipe iterator, which keeps this crate free of `unsafe`.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::blockdev::{BlockDev, FileDev, ReadAt};
use crate::cache::Cache;
use crate::cloop::error::Error as CloopError;
use crate::cloop::reader::{Image, Kind};
use crate::cow::overlay::{Overlay, OverlayOptions};
use crate::nbd::{self, BlockSizes, Export, Extent, Hints, Listener, ReadOnly, Server};
use crate::units::{parse_size, Bytes};

const APPLET: &str = "cloopd";

const USAGE: &str = "\
Usage: cloopd [OPTIONS] IMAGE

Serve IMAGE over NBD: a cloop image of any version, a plain file or a block
device. Without --cow the export is read-only.

  --cow COWFILE           write to COWFILE (cowloop format; created when
                          missing, repaired when left dirty by a crash)
  --unix PATH             listen on a unix socket (mode 0600)
  --tcp [ADDR:]PORT       listen on TCP; ADDR defaults to 127.0.0.1
                          (an IP address; [::1]:PORT for IPv6)
  --cache-size SIZE       decompressed-block cache shared by all clients
                          (default 64M; suffixes k K m M g G; 0 disables)
  --max-connections N     at most N clients at once (default 64)
  --threads N             worker threads (default: one per CPU)
  --export-name NAME      the export's name (default: empty; the empty
                          name is always accepted)
  --description TEXT      the export's description
  -q, --quiet             do not print the startup line
  -h, --help              show this help

At least one --unix or --tcp is needed. SIGINT or SIGTERM stop the server
cleanly: in-flight requests finish and the cowfile is flushed.
";

/// Default size of the decompressed-block cache.
const DEFAULT_CACHE: u64 = 64 << 20;
/// How long a stop waits for connections to finish their requests.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the user asked for, validated but not yet acted on.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    image: PathBuf,
    cow: Option<PathBuf>,
    unix: Vec<PathBuf>,
    tcp: Vec<SocketAddr>,
    cache_size: u64,
    max_connections: usize,
    threads: usize,
    export_name: String,
    description: Option<String>,
    quiet: bool,
}

fn parse_count(opt: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("--{opt} needs a positive number, not '{value}'")),
    }
}

/// `PORT`, `ADDR:PORT` or `[V6ADDR]:PORT`; a bare port binds loopback.
/// Host names are refused: resolving them would pull in NSS, which a
/// root-filesystem daemon must not depend on.
pub fn parse_tcp(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    text.parse().map_err(|_| format!("--tcp '{text}': expected PORT, IPADDR:PORT or [IPV6ADDR]:PORT"))
}

/// Parses the command line (without argv[0]); `Ok(None)` means --help.
pub fn parse_args(args: &[OsString]) -> Result<Option<Args>, String> {
    let long = [
        "cow=",
        "unix=",
        "tcp=",
        "cache-size=",
        "max-connections=",
        "threads=",
        "export-name=",
        "description=",
        "quiet",
        "help",
    ];
    let parsed = crate::getopt::parse(args, "qh", &long)?;
    let mut a = Args {
        image: PathBuf::new(),
        cow: None,
        unix: Vec::new(),
        tcp: Vec::new(),
        cache_size: DEFAULT_CACHE,
        max_connections: 64,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        export_name: String::new(),
        description: None,
        quiet: false,
    };
    for opt in parsed.opts {
        let value = opt.value.unwrap_or_default();
        match opt.name.as_str() {
            "cow" => a.cow = Some(value.into()),
            "unix" => a.unix.push(value.into()),
            "tcp" => a.tcp.push(parse_tcp(&value)?),
            "cache-size" => a.cache_size = parse_size(&value).map_err(|e| format!("--cache-size: {e}"))?,
            "max-connections" => a.max_connections = parse_count("max-connections", &value)?,
            "threads" => a.threads = parse_count("threads", &value)?,
            "export-name" if value.len() > nbd::proto::MAX_STRING => {
                return Err(format!("--export-name is longer than {} bytes", nbd::proto::MAX_STRING))
            }
            "export-name" => a.export_name = value,
            "description" => a.description = Some(value),
            "q" | "quiet" => a.quiet = true,
            _ => return Ok(None),
        }
    }
    let [image] =
        <[OsString; 1]>::try_from(parsed.operands).map_err(|_| "expected one IMAGE (try --help)")?;
    a.image = image.into();
    if a.unix.is_empty() && a.tcp.is_empty() {
        return Err("nothing to listen on: give --unix PATH and/or --tcp [ADDR:]PORT".into());
    }
    Ok(Some(a))
}

/// The base image, as a cloop image or a raw file.
enum Base {
    Cloop(Arc<Image>),
    Raw(FileDev),
}

fn open_base(path: &Path) -> Result<Base, String> {
    match Image::open(path) {
        Ok(image) => Ok(Base::Cloop(Arc::new(image))),
        // Only "no cloop signature at all" means raw; a damaged image is
        // reported, never served as if it were a plain file.
        Err(CloopError::NotCloop { .. }) => {
            FileDev::open(path).map(Base::Raw).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Blocks whose compressed form is this small (relative to the block size)
/// are likely all zeros and cheap to decode, so status queries probe them.
fn zero_probe(image: Arc<Image>) -> crate::cache::ZeroProbe {
    let limit = (u64::from(image.info().block_size) / 64).max(1024);
    Box::new(move |b| {
        image.block_info(b).is_some_and(|i| {
            matches!(i.kind, Kind::Data(c) if c != crate::cloop::codec::Codec::Stored)
                && u64::from(i.compressed_len) <= limit
        })
    })
}

/// What the stack can tell the transport: cache residency (a read that
/// needs no decompression runs on the connection thread), the cache's zero
/// map as `base:allocation` when nothing sits above the cache (a cowfile
/// changes what is zero), and whether a write is a plain cowfile write.
#[derive(Default)]
struct StackHints {
    cache: Option<Arc<Cache<ReadOnly<Image>>>>,
    allocation: bool,
    /// The cowfile's unit: writes aligned to it need no read of the base.
    cow_unit: Option<u64>,
}

impl Hints for StackHints {
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> io::Result<()> {
        match &self.cache {
            Some(cache) if self.allocation => {
                let zero = nbd::proto::STATE_HOLE | nbd::proto::STATE_ZERO;
                for (n, is_zero) in cache.extents(offset, len)? {
                    out.push(Extent { len: n, flags: if is_zero { zero } else { 0 } });
                }
            }
            _ => out.push(Extent { len, flags: 0 }),
        }
        Ok(())
    }
    fn read_is_fast(&self, offset: u64, len: u32) -> bool {
        self.cache.as_ref().is_some_and(|c| c.is_resident(offset, len.into()))
    }
    fn write_is_fast(&self, offset: u64, len: u32) -> bool {
        self.cow_unit.is_some_and(|u| offset % u == 0 && u64::from(len) % u == 0)
    }
    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        self.cache.as_ref().map(|c| c.prefetch(offset, len))
    }
}

/// The built stack and what to say about it.
struct Stack {
    export: Export,
    summary: String,
}

fn build(a: &Args) -> Result<Stack, String> {
    let base = open_base(&a.image)?;
    let mut hints = StackHints::default();
    let (read, block_size, what): (Arc<dyn ReadAt>, u32, String) = match base {
        Base::Cloop(image) => {
            let info = image.info().clone();
            let what = format!(
                "{} image, {} blocks of {}",
                info.version,
                info.num_blocks,
                Bytes(info.block_size.into())
            );
            if a.cache_size == 0 {
                (image as Arc<dyn ReadAt>, info.block_size, what + ", no cache")
            } else {
                let probe = zero_probe(image.clone());
                let cache = Cache::new(ReadOnly(image), info.block_size, a.cache_size)
                    .map_err(|e| format!("{}: {e}", a.image.display()))?
                    .with_zero_probe(probe);
                let cache = Arc::new(cache);
                let what = format!("{what}, cache {}", Bytes(cache.capacity()));
                hints.cache = Some(cache.clone());
                hints.allocation = true;
                (cache, info.block_size, what)
            }
        }
        Base::Raw(file) => (Arc::new(file), 4096, "raw".to_string()),
    };
    let size = read.size();
    let (mut export, rw) = match &a.cow {
        None => (Export::read_only(read), "read-only".to_string()),
        Some(path) => {
            let opts = OverlayOptions {
                create: true,
                repair: true,
                base_name: a.image.display().to_string(),
                warn: Arc::new(|msg| eprintln!("{APPLET}: cow: {msg}")),
                ..OverlayOptions::default()
            };
            let overlay = Overlay::open(ReadOnly(read), path, &opts).map_err(|e| e.to_string())?;
            if let Some(report) = overlay.repaired() {
                eprintln!("{APPLET}: {}: was not closed cleanly; repaired: {report:?}", path.display());
            }
            let created = if overlay.created() { ", created" } else { "" };
            hints.allocation = false;
            hints.cow_unit = Some(crate::cow::header::MAPUNIT);
            (
                Export::writable(Arc::new(overlay) as Arc<dyn BlockDev>),
                format!("cow {}{created}", path.display()),
            )
        }
    };
    export.name = a.export_name.clone();
    export.description = a.description.clone().unwrap_or_else(|| format!("{} ({what})", a.image.display()));
    export.block_sizes = BlockSizes::for_preferred(block_size);
    export.hints = Some(Arc::new(hints));
    let summary = format!("{} ({what}, {}) {rw}", a.image.display(), Bytes(size));
    Ok(Stack { export, summary })
}

/// Binds a unix socket with mode 0600, replacing a stale socket file (one
/// nobody answers on) but never a live socket or any other file.
fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    let err = |e: io::Error| format!("--unix {}: {e}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("--unix {}: exists and is not a socket", path.display()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!("--unix {}: another server is listening there", path.display()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    // The umask is process-wide, but no other thread exists yet.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    bound.map_err(err)
}

fn bind_all(a: &Args) -> Result<(Vec<Listener>, Vec<String>), String> {
    let (mut listeners, mut names) = (Vec::new(), Vec::new());
    for path in &a.unix {
        listeners.push(Listener::Unix(bind_unix(path)?, path.clone()));
        names.push(format!("unix:{}", path.display()));
    }
    for addr in &a.tcp {
        let l = TcpListener::bind(addr).map_err(|e| format!("--tcp {addr}: {e}"))?;
        names.push(format!("tcp:{}", l.local_addr().map_err(|e| format!("--tcp {addr}: {e}"))?));
        listeners.push(Listener::Tcp(l));
    }
    Ok((listeners, names))
}

fn run(a: Args) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Registered before any thread exists, so no signal is missed.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("signal handlers: {e}"))?;
    let stack = build(&a)?;
    let (listeners, names) = bind_all(&a)?;
    let dev = stack.export.dev.clone();
    let cfg = nbd::Config {
        name: APPLET.into(),
        threads: a.threads,
        max_connections: a.max_connections,
        ..nbd::Config::default()
    };
    let server = Server::new(stack.export, cfg).map_err(|e| format!("worker threads: {e}"))?;
    let mut accepters = Vec::new();
    for l in listeners {
        accepters.push(server.listen(l).map_err(|e| format!("listener thread: {e}"))?);
    }
    if !a.quiet {
        println!("{APPLET}: serving {} on {}", stack.summary, names.join(", "));
        let _ = io::stdout().flush();
    }
    let sig = signals.forever().next().unwrap_or(SIGTERM);
    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
    if !server.stop(STOP_TIMEOUT) {
        eprintln!("{APPLET}: {name}: some connections did not finish within {STOP_TIMEOUT:?}");
    }
    for t in accepters {
        let _ = t.join();
    }
    dev.flush().map_err(|e| format!("{name}: final flush failed: {e}"))?;
    if !a.quiet {
        eprintln!("{APPLET}: {name}: stopped cleanly");
    }
    Ok(())
}

pub fn main(args: Vec<OsString>) -> i32 {
    match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(Some(a)) => match run(a) {
            Ok(()) => 0,
            Err(e) => crate::applets::fail(APPLET, e),
        },
        Ok(None) => {
            print!("{USAGE}");
            0
        }
        Err(e) => crate::applets::fail(APPLET, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(&v.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn tcp_defaults_to_loopback_and_refuses_names() {
        assert_eq!(parse_tcp("10809").unwrap(), "127.0.0.1:10809".parse().unwrap());
        assert_eq!(parse_tcp("localhost:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(parse_tcp("0.0.0.0:7").unwrap(), "0.0.0.0:7".parse().unwrap());
        assert_eq!(parse_tcp("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        assert!(parse_tcp("example.org:7").is_err());
        assert!(parse_tcp("70000").is_err());
    }

    #[test]
    fn flags_parse_and_combine() {
        let a = args(&["img", "--unix", "/s", "--tcp=9", "--cache-size", "1M", "--threads", "3", "-q"])
            .unwrap()
            .unwrap();
        assert_eq!(a.image, PathBuf::from("img"));
        assert_eq!(a.unix, vec![PathBuf::from("/s")]);
        assert_eq!(a.tcp, vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!((a.cache_size, a.threads, a.quiet), (1 << 20, 3, true));
        assert_eq!(args(&["img", "--unix", "/s", "--cache-size", "0"]).unwrap().unwrap().cache_size, 0);
        assert!(args(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(args(&["img"]).unwrap_err().contains("nothing to listen on"));
        assert!(args(&["--unix", "/s"]).is_err());
        assert!(args(&["a", "b", "--unix", "/s"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--threads", "0"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--max-connections", "x"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--cache-size", "12Q"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--bogus"]).is_err());
    }
}
