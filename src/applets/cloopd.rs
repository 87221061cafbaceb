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
//!
//! With `--device` the server also answers on its control socket
//! (`crate::control`, `@cloopbox/nbdN`): a `detach` there takes the same
//! path, except that a failed flush or disconnect leaves the device
//! attached and is reported to the client, and the client's answer waits
//! for the final flush. The socket is bound before the device line is
//! printed, so whoever reads that line can control the server at once.

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
use crate::control::{self, meter::Metered};
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
  --device /dev/nbdN|auto attach to the kernel's NBD client (generic
                          netlink; auto takes a free device) and print
                          the device; the kernel's disconnect ends us
  --connections N         kernel connections, one per queue (default 1;
                          more need multi-conn: a cow or read-only export)
  --block-size N          the device's logical block size, 512-4096
                          (default: what the filesystem inside needs,
                          2048 for iso9660, at most 4096)
  --background            once the device is attached and printed: a new
                          session, stdin/stdout/stderr on /dev/null and
                          messages to the console and kernel log (cowdev -a
                          starts servers so)
  --root-daemon           serving the root filesystem: argv[0] '@cloopd'
                          (systemd spares it), mlockall, oom_score_adj
                          -1000, PR_SET_IO_FLUSHER, log to /dev/kmsg, and
                          SIGTERM/SIGHUP/SIGINT are ignored; only a kernel
                          disconnect (cowdev -d) ends it
  --export-name NAME      the export's name (default: empty; the empty
                          name is always accepted)
  --description TEXT      the export's description
  -q, --quiet             do not print the startup line
  -h, --help              show this help

At least one of --unix, --tcp or --device is needed. SIGINT or SIGTERM
stop the server cleanly (outside --root-daemon): in-flight requests
finish, the cowfile is flushed and a kernel device is disconnected.
With --device, root controls the server through the abstract socket
@cloopbox/nbdN (cowdev -l -v, cowdev -d, cowsync).
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
    device: Option<Option<u32>>,
    connections: usize,
    block_size: Option<u32>,
    root_daemon: bool,
    background: bool,
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
        "device=",
        "connections=",
        "block-size=",
        "root-daemon",
        "background",
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
        device: None,
        connections: 1,
        block_size: None,
        root_daemon: false,
        background: false,
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
            "device" if value == "auto" => a.device = Some(None),
            "device" => match nbd::kernel::parse_device(&value) {
                Some(n) => a.device = Some(Some(n)),
                None => return Err(format!("--device '{value}': expected /dev/nbdN or auto")),
            },
            "connections" => a.connections = parse_count("connections", &value)?,
            "block-size" => match value.parse::<u32>() {
                Ok(n) if n.is_power_of_two() && (512..=4096).contains(&n) => a.block_size = Some(n),
                _ => return Err(format!("--block-size '{value}': a power of two from 512 to 4096")),
            },
            "root-daemon" => a.root_daemon = true,
            "background" => a.background = true,
            "q" | "quiet" => a.quiet = true,
            _ => return Ok(None),
        }
    }
    let [image] =
        <[OsString; 1]>::try_from(parsed.operands).map_err(|_| "expected one IMAGE (try --help)")?;
    a.image = image.into();
    if a.unix.is_empty() && a.tcp.is_empty() && a.device.is_none() {
        return Err("nothing to serve on: give --unix PATH, --tcp [ADDR:]PORT and/or --device".into());
    }
    if a.root_daemon && a.device.is_none() {
        return Err("--root-daemon serves a kernel device: it needs --device".into());
    }
    if a.background && a.device.is_none() {
        return Err("--background detaches once a kernel device is attached: it needs --device".into());
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
/// needs no decompression runs on the connection thread), `base:allocation`
/// (the cowfile's holes for its units, the cache's zero map for the rest),
/// and whether a write is a plain cowfile write.
#[derive(Default)]
struct StackHints {
    cache: Option<Arc<Cache<ReadOnly<Image>>>>,
    cow: Option<Arc<Overlay<ReadOnly<dyn ReadAt>>>>,
    /// The cowfile's unit: writes aligned to it need no read of the base.
    cow_unit: Option<u64>,
}

impl Hints for StackHints {
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> io::Result<()> {
        let base = |offset, len| match &self.cache {
            Some(cache) => cache.extents(offset, len),
            None => Ok(vec![(len, false)]),
        };
        let runs = match &self.cow {
            Some(cow) => cow.extents(offset, len, base)?,
            None => base(offset, len)?,
        };
        let zero = nbd::proto::STATE_HOLE | nbd::proto::STATE_ZERO;
        out.extend(
            runs.into_iter().map(|(n, is_zero)| Extent { len: n, flags: if is_zero { zero } else { 0 } }),
        );
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
    /// The logical block size a kernel device should have.
    device_block: u32,
    /// Handles for the control socket's status.
    meter: Arc<Metered>,
    cow_stats: Option<control::target::CowStats>,
    cow_sync: Option<control::target::CowSync>,
    cache_stats: Option<control::target::CacheStats>,
}

/// `warn` reports the layers' trouble while serving (a cowfile running out
/// of space): on stderr in the foreground, to the console and kmsg for a
/// daemon, whose stderr is gone.
fn build(a: &Args, warn: crate::cow::overlay::WarnFn) -> Result<Stack, String> {
    let base = open_base(&a.image)?;
    let mut hints = StackHints::default();
    let mut cache_stats: Option<control::target::CacheStats> = None;
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
                let counted = cache.clone();
                cache_stats = Some(Box::new(move || counted.stats()));
                (cache, info.block_size, what)
            }
        }
        Base::Raw(file) => (Arc::new(file), 4096, "raw".to_string()),
    };
    let size = read.size();
    // The filesystem inside decides the device's logical block size: an
    // iso9660 does not mount on 4096-byte sectors, an ext4 with 4 KiB
    // blocks is best served with 4096.
    let device_block = a.block_size.unwrap_or_else(|| {
        crate::boot::probe::probe(&*read)
            .map(|fs| crate::boot::probe::min_io_size(&*read, &fs).min(4096))
            .unwrap_or(512)
    });
    let mut cow_stats: Option<control::target::CowStats> = None;
    let mut cow_sync: Option<control::target::CowSync> = None;
    let (mut export, rw) = match &a.cow {
        None => (Export::read_only(read), "read-only".to_string()),
        Some(path) => {
            let opts = OverlayOptions {
                create: true,
                repair: true,
                base_name: a.image.display().to_string(),
                warn: warn.clone(),
                ..OverlayOptions::default()
            };
            let overlay = Overlay::open(ReadOnly(read), path, &opts).map_err(|e| e.to_string())?;
            if let Some(report) = overlay.repaired() {
                warn(&format!("{}: was not closed cleanly; repaired: {report:?}", path.display()));
            }
            let created = if overlay.created() { ", created" } else { "" };
            hints.cow_unit = Some(crate::cow::header::MAPUNIT);
            let overlay = Arc::new(overlay);
            Overlay::spawn_idle_cleaner(&overlay, crate::cow::overlay::IDLE_CLEAN)
                .map_err(|e| e.to_string())?;
            hints.cow = Some(overlay.clone());
            let counted = overlay.clone();
            cow_stats = Some(Box::new(move || counted.stats()));
            let synced = overlay.clone();
            cow_sync = Some(Box::new(move || synced.sync()));
            (Export::writable(overlay as Arc<dyn BlockDev>), format!("cow {}{created}", path.display()))
        }
    };
    export.name = a.export_name.clone();
    export.description = a.description.clone().unwrap_or_else(|| format!("{} ({what})", a.image.display()));
    export.block_sizes = BlockSizes::for_preferred(block_size);
    export.hints = Some(Arc::new(hints));
    // At the top, so it counts what clients were served.
    let meter = Arc::new(Metered::new(export.dev.clone()));
    export.dev = meter.clone();
    let summary = format!("{} ({what}, {}) {rw}", a.image.display(), Bytes(size));
    Ok(Stack { export, summary, device_block, meter, cow_stats, cow_sync, cache_stats })
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

/// What the main thread waits for.
enum Event {
    Signal(i32),
    /// Every kernel connection is closed.
    KernelGone,
    /// A `detach` from the control socket; answered once we have stopped.
    Detach(control::Pending),
}

/// Flushes the stack, then asks the kernel to disconnect: the flush
/// first, because the disconnect makes the kernel drop its queue.
fn flush_and_detach(dev: &dyn BlockDev, index: u32) -> Result<(), String> {
    dev.flush().map_err(|e| format!("flush before disconnect failed: {e}"))?;
    nbd::kernel::detach(index).map_err(|e| format!("disconnecting /dev/nbd{index}: {e}"))
}

/// Starts the control socket of `/dev/nbdN`. A server that was just
/// detached from the same device may still hold the name for a moment,
/// so a busy name is retried for a few seconds.
fn start_control(index: u32, target: control::Target) -> io::Result<control::ControlServer> {
    let name = control::proto::socket_name(index);
    let target = Arc::new(target);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match control::server::start(&name, target.clone()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// --background: leaves the caller's session and terminal behind once the
/// device line is out.
fn to_background() -> io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    Ok(())
}

fn run(a: Args) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if a.background {
        // Fails only when we already lead a process group (started from
        // a shell with job control); SIGHUP is ignored below then.
        let _ = rustix::process::setsid();
    }
    let log = (a.root_daemon || a.background).then(|| Arc::new(crate::boot::log::Log::open(APPLET, false)));
    if let (Some(log), true) = (&log, a.root_daemon) {
        for missing in crate::sys::daemon::harden() {
            log.warn(&missing);
        }
    }
    // Registered before any thread exists, so no signal is missed.
    let watched: &[i32] =
        if a.root_daemon || a.background { &[SIGINT, SIGTERM, SIGHUP] } else { &[SIGINT, SIGTERM] };
    let mut signals =
        signal_hook::iterator::Signals::new(watched).map_err(|e| format!("signal handlers: {e}"))?;
    let warn: crate::cow::overlay::WarnFn = match &log {
        Some(log) => {
            let log = log.clone();
            Arc::new(move |msg| log.warn(msg))
        }
        None => Arc::new(|msg| eprintln!("{APPLET}: {msg}")),
    };
    let mut stack = build(&a, warn)?;
    let (listeners, names) = bind_all(&a)?;
    let dev = stack.export.dev.clone();
    let (meter, cow_stats, cow_sync, cache_stats) =
        (stack.meter.clone(), stack.cow_stats.take(), stack.cow_sync.take(), stack.cache_stats.take());
    let cfg = nbd::Config {
        name: APPLET.into(),
        threads: a.threads,
        max_connections: a.max_connections.max(a.connections + 1),
        ..nbd::Config::default()
    };
    let server = Server::new(stack.export, cfg).map_err(|e| format!("worker threads: {e}"))?;
    let mut accepters = Vec::new();
    for l in listeners {
        accepters.push(server.listen(l).map_err(|e| format!("listener thread: {e}"))?);
    }
    let (events, event) = std::sync::mpsc::channel::<Event>();
    let mut attached = None;
    let mut control_server = None;
    let say = |msg: &str| match &log {
        Some(log) => log.info(msg),
        None => eprintln!("{APPLET}: {msg}"),
    };
    if let Some(index) = a.device {
        let opts = nbd::kernel::AttachOptions {
            index,
            connections: a.connections,
            block_size: stack.device_block,
            backend: format!("cloopbox:{}", a.image.display()),
        };
        let attachment = nbd::kernel::attach(&server, &opts).map_err(|e| format!("--device: {e}"))?;
        let index = attachment.index;
        let device = attachment.device();
        let detach_events = events.clone();
        let target = control::Target {
            info: control::Info {
                device: device.display().to_string(),
                pid: std::process::id(),
                image: std::path::absolute(&a.image).unwrap_or_else(|_| a.image.clone()),
                cow: a.cow.as_ref().map(|c| std::path::absolute(c).unwrap_or_else(|_| c.clone())),
            },
            dev: dev.clone(),
            meter,
            cow: cow_stats,
            cow_sync,
            cache: cache_stats,
            detach: Box::new(move |pending| {
                let _ = detach_events.send(Event::Detach(pending));
            }),
        };
        // Before the device line: whoever reads it can control us at once.
        match start_control(index, target) {
            Ok(c) => control_server = Some(c),
            Err(e) => eprintln!("{APPLET}: {e}; cowdev and cowsync cannot reach this server"),
        }
        // The device path alone on stdout, for scripts and init.
        println!("{}", device.display());
        let _ = io::stdout().flush();
        if a.background {
            to_background().map_err(|e| format!("--background: /dev/null: {e}"))?;
        }
        let events = events.clone();
        std::thread::spawn(move || {
            attachment.wait();
            let _ = events.send(Event::KernelGone);
        });
        attached = Some(index);
    }
    if !a.quiet {
        let mut places = names.clone();
        if let Some(i) = attached {
            places.push(format!("/dev/nbd{i} ({} byte sectors)", stack.device_block));
        }
        let line = format!("serving {} on {}", stack.summary, places.join(", "));
        match &log {
            Some(_) => say(&line),
            // Scripts and tests wait for this line on stdout.
            None => {
                println!("{APPLET}: {line}");
                let _ = io::stdout().flush();
            }
        }
    }
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if events.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });
    let mut detach_request = None;
    let reason = loop {
        match event.recv() {
            Ok(Event::Signal(sig)) if a.root_daemon => {
                say(&format!(
                    "ignoring signal {sig}: this daemon serves a root filesystem; detach with cowdev -d"
                ));
            }
            // No terminal to hang up on: a leftover of the caller's session.
            Ok(Event::Signal(SIGHUP)) => {}
            Ok(Event::Signal(sig)) => break if sig == SIGINT { "SIGINT" } else { "SIGTERM" },
            Ok(Event::Detach(pending)) => {
                let Some(index) = attached else { continue };
                match flush_and_detach(&*dev, index) {
                    Ok(()) => {
                        detach_request = Some(pending);
                        break "detach requested";
                    }
                    // Still attached and serving: the client decides.
                    Err(e) => {
                        say(&format!("detach requested: {e}; still serving /dev/nbd{index}"));
                        pending.reply(Err(format!("{e}; /dev/nbd{index} is still attached")));
                    }
                }
            }
            Ok(Event::KernelGone) | Err(_) => break "the kernel disconnected",
        }
    };
    if let Some(index) = attached.filter(|_| detach_request.is_none() && reason != "the kernel disconnected")
    {
        if let Err(e) = flush_and_detach(&*dev, index) {
            say(&format!("{reason}: {e}"));
        }
    }
    // The device is gone: free its control name for the next server.
    if let Some(c) = control_server.take() {
        c.stop();
    }
    if !server.stop(STOP_TIMEOUT) {
        say(&format!("{reason}: some connections did not finish within {STOP_TIMEOUT:?}"));
    }
    for t in accepters {
        let _ = t.join();
    }
    let flushed = dev.flush().map_err(|e| format!("{reason}: final flush failed: {e}"));
    if let Some(pending) = detach_request {
        let device = attached.map(|i| format!("/dev/nbd{i}")).unwrap_or_default();
        pending.reply(flushed.clone().map(|()| format!("{device} detached, cowfile flushed\n")));
    }
    flushed?;
    if !a.quiet {
        say(&format!("{reason}: stopped cleanly"));
    }
    Ok(())
}

/// A root-storage daemon's argv[0] starts with '@' (systemd's convention
/// for processes to leave alone at shutdown); re-exec ourselves to get it.
fn ensure_at_name(args: &[OsString]) -> Option<io::Error> {
    use std::os::unix::process::CommandExt;
    let argv0 = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    if argv0.starts_with('@') {
        return None;
    }
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from(&argv0));
    Some(std::process::Command::new(exe).arg0("@cloopd").args(&args[1..]).exec())
}

pub fn main(args: Vec<OsString>) -> i32 {
    if args.iter().any(|a| a == "--root-daemon") {
        if let Some(e) = ensure_at_name(&args) {
            return crate::applets::fail(APPLET, format!("--root-daemon: re-executing as @cloopd: {e}"));
        }
    }
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
        assert!(args(&["img"]).unwrap_err().contains("nothing to serve on"));
        assert!(args(&["img", "--root-daemon", "--unix", "/s"]).unwrap_err().contains("needs --device"));
        assert!(args(&["img", "--device", "/dev/sda"]).is_err());
        assert!(args(&["img", "--device", "auto", "--block-size", "8192"]).is_err());
        assert!(args(&["img", "--background", "--unix", "/s"]).unwrap_err().contains("needs --device"));
        assert!(args(&["img", "--device", "auto", "--background"]).unwrap().unwrap().background);
        let d = args(&["img", "--device", "/dev/nbd3", "--block-size", "2048", "--connections", "2"])
            .unwrap()
            .unwrap();
        assert_eq!((d.device, d.block_size, d.connections), (Some(Some(3)), Some(2048), 2));
        assert_eq!(args(&["img", "--device", "auto"]).unwrap().unwrap().device, Some(None));
        assert!(args(&["--unix", "/s"]).is_err());
        assert!(args(&["a", "b", "--unix", "/s"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--threads", "0"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--max-connections", "x"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--cache-size", "12Q"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--bogus"]).is_err());
    }
}
