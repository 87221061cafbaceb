//! The server's life, from the built stack to a clean exit.
//!
//! Stopping: SIGINT or SIGTERM stop the listeners, let every connection
//! finish its in-flight requests, flush the stack (the cowfile's bitmap
//! and clean header) and return. Signals arrive through signal-hook's
//! self-pipe iterator, which keeps this crate free of `unsafe`.
//!
//! With a kernel device the server also answers on its control socket
//! (`crate::control`, `@cloopbox/nbdN`): a `detach` there takes the same
//! path, except that a failed flush or disconnect leaves the device
//! attached and is reported to the client, and the client's answer waits
//! for the final flush. The socket is bound before the device line is
//! printed, so whoever reads that line can control the server at once.
//!
//! The stop is ordered: flush, then detach (the disconnect makes the
//! kernel drop its queue), then stop the control socket (freeing its name
//! for the next server), then wait for the connections, then flush again.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::{stack, Options, Stack};
use crate::blockdev::BlockDev;
use crate::boot::log::Log;
use crate::control;
use crate::control::proto::KernelDevice;
use crate::cow::overlay::WarnFn;
use crate::nbd::{self, Listener, Server};

const APPLET: &str = "cloopd";
/// How long a stop waits for connections to finish their requests.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

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

fn bind_all(o: &Options) -> Result<(Vec<Listener>, Vec<String>), String> {
    let (mut listeners, mut names) = (Vec::new(), Vec::new());
    for path in &o.unix {
        listeners.push(Listener::Unix(bind_unix(path)?, path.clone()));
        names.push(format!("unix:{}", path.display()));
    }
    for addr in &o.tcp {
        let l = TcpListener::bind(addr).map_err(|e| format!("--tcp {addr}: {e}"))?;
        names.push(format!("tcp:{}", l.local_addr().map_err(|e| format!("--tcp {addr}: {e}"))?));
        listeners.push(Listener::Tcp(l));
    }
    Ok((listeners, names))
}

/// What the main thread waits for.
pub(super) enum Event {
    Signal(i32),
    /// The kernel let go of the device: every NBD connection is closed, or
    /// the ublk device was deleted under us.
    KernelGone,
    /// A transport thread failed (a ublk queue).
    Failed(String),
    /// A `detach` from the control socket; answered once we have stopped.
    Detach(control::Pending),
}

/// Flushes the stack, then asks the kernel to disconnect: the flush
/// first, because the disconnect makes the kernel drop its queue.
fn flush_and_detach(dev: &dyn BlockDev, index: u32) -> Result<(), String> {
    dev.flush().map_err(|e| format!("flush before disconnect failed: {e}"))?;
    nbd::kernel::detach(index).map_err(|e| format!("disconnecting /dev/nbd{index}: {e}"))
}

/// Starts the control socket of `dev`. A server that was just detached
/// from the same device may still hold the name for a moment, so a busy
/// name is retried for a few seconds.
fn start_control(dev: KernelDevice, target: control::Target) -> io::Result<control::ControlServer> {
    let name = control::proto::socket_name(dev);
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

/// Where messages go: stderr in the foreground, the console and kmsg for
/// a daemon.
pub(super) struct Say(Option<Arc<Log>>);

impl Say {
    pub(super) fn info(&self, msg: &str) {
        match &self.0 {
            Some(log) => log.info(msg),
            None => eprintln!("{APPLET}: {msg}"),
        }
    }
    pub(super) fn warn_fn(&self) -> WarnFn {
        match &self.0 {
            Some(log) => {
                let log = log.clone();
                Arc::new(move |msg| log.warn(msg))
            }
            None => Arc::new(|msg| eprintln!("{APPLET}: {msg}")),
        }
    }
}

/// What the control socket reports, taken from the stack.
pub(super) struct Status {
    dev: Arc<dyn BlockDev>,
    meter: Arc<crate::control::meter::Metered>,
    cow: Option<control::target::CowStats>,
    cow_sync: Option<control::target::CowSync>,
    cache: Option<control::target::CacheStats>,
    verity: Option<control::target::VerityStats>,
}

impl Status {
    /// The parts of `stack` the control socket reports.
    pub(super) fn of(stack: &mut Stack) -> Status {
        Status {
            dev: stack.export.dev.clone(),
            meter: stack.meter.clone(),
            cow: stack.cow_stats.take(),
            cow_sync: stack.cow_sync.take(),
            cache: stack.cache_stats.take(),
            verity: stack.verity_stats.take(),
        }
    }
}

/// Starts the control socket of `device`, whose `detach` is sent to the
/// main thread as [`Event::Detach`]; `None` (after saying why) when it
/// could not start: the server still serves.
pub(super) fn start_control_of(
    o: &Options,
    device: KernelDevice,
    status: Status,
    events: &Sender<Event>,
) -> Option<control::ControlServer> {
    let detach_events = events.clone();
    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    let target = control::Target {
        info: control::Info {
            device: device.to_string(),
            pid: std::process::id(),
            image: if o.image.to_str().is_some_and(crate::remote::is_url) {
                o.image.clone()
            } else {
                absolute(&o.image)
            },
            cow: o.cow.as_ref().map(absolute),
        },
        dev: status.dev,
        meter: status.meter,
        cow: status.cow,
        cow_sync: status.cow_sync,
        cache: status.cache,
        verity: status.verity,
        detach: Box::new(move |pending| {
            let _ = detach_events.send(Event::Detach(pending));
        }),
    };
    start_control(device, target)
        .map_err(|e| eprintln!("{APPLET}: {e}; cowdev and cowsync cannot reach this server"))
        .ok()
}

/// The start every transport shares: a new session for `--background`,
/// where messages go, the root daemon's hardening, and the signals
/// (registered before any thread exists, so none is missed).
pub(super) fn start(o: &Options) -> Result<(Say, signal_hook::iterator::Signals), String> {
    let daemon = o.root_daemon || o.background;
    if o.background {
        // Fails only when we already lead a process group (started from
        // a shell with job control); SIGHUP is ignored below then.
        let _ = rustix::process::setsid();
    }
    let say = Say(daemon.then(|| Arc::new(Log::open(APPLET, false))));
    if let (Some(log), true) = (&say.0, o.root_daemon) {
        for missing in crate::sys::daemon::harden() {
            log.warn(&missing);
        }
    }
    let watched: &[i32] = if daemon { &[SIGINT, SIGTERM, SIGHUP] } else { &[SIGINT, SIGTERM] };
    let signals =
        signal_hook::iterator::Signals::new(watched).map_err(|e| format!("signal handlers: {e}"))?;
    Ok((say, signals))
}

/// The device path alone on stdout (scripts and init wait for it), then
/// the background if asked.
pub(super) fn print_device(o: &Options, device: KernelDevice) -> Result<(), String> {
    println!("{device}");
    let _ = io::stdout().flush();
    if o.background {
        to_background().map_err(|e| format!("--background: /dev/null: {e}"))?;
    }
    Ok(())
}

/// `--watch-space DIR`: the thread that says on the console when DIR's
/// filesystem is full (with the root daemon's hint how to get room).
pub(super) fn start_watch(o: &Options, say: &Say) -> Result<(), String> {
    let Some(dir) = &o.watch_space else { return Ok(()) };
    let hint = if o.root_daemon { stack::ROOT_FULL_HINT } else { "" };
    super::watch::spawn(dir.clone(), hint, say.warn_fn()).map_err(|e| format!("--watch-space thread: {e}"))
}

/// Relays the signals to the main thread.
pub(super) fn forward_signals(mut signals: signal_hook::iterator::Signals, events: Sender<Event>) {
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if events.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });
}

/// The kernel device and its control socket, once attached.
struct Attached {
    index: u32,
    control: Option<control::ControlServer>,
}

/// Attaches `server` to the kernel, starts the control socket, prints the
/// device line and goes to the background if asked.
fn attach(
    o: &Options,
    server: &Arc<Server>,
    (index, block_size, image_block): (Option<u32>, u32, u32),
    status: Status,
    events: &Sender<Event>,
) -> Result<Attached, String> {
    let opts = nbd::kernel::AttachOptions {
        index,
        connections: o.connections,
        block_size,
        backend: format!("cloopbox:{}", o.image.display()),
    };
    let attachment = nbd::kernel::attach(server, &opts).map_err(|e| format!("--device: {e}"))?;
    let index = attachment.index;
    let device = KernelDevice::Nbd(index);
    // Before the device line, so the first reads already have this shape;
    // a kernel without these files still serves, with its own shape.
    if let Err(e) = nbd::kernel::tune_queue(Path::new("/sys/block"), &device.name(), &o.queue, image_block) {
        eprintln!("{APPLET}: {device}: request shape: {e}");
    }
    // Before the device line: whoever reads it can control us at once.
    let control = start_control_of(o, device, status, events);
    print_device(o, device)?;
    let events = events.clone();
    std::thread::spawn(move || {
        attachment.wait();
        let _ = events.send(Event::KernelGone);
    });
    Ok(Attached { index, control })
}

/// How a transport flushes and lets go of its kernel device for a
/// control-socket `detach`.
pub(super) type DetachDevice<'a> = (KernelDevice, &'a mut dyn FnMut() -> Result<(), String>);

/// Why a server stopped.
pub(super) const KERNEL_GONE: &str = "the kernel disconnected";

/// Waits for a reason to stop; a granted `detach` comes back to be
/// answered after the final flush. `detach` flushes and lets go of the
/// kernel device (`None`: no device, a `detach` is ignored); when it
/// fails the device stays and the client is told.
pub(super) fn wait_for_stop(
    o: &Options,
    event: &Receiver<Event>,
    mut detach: Option<DetachDevice<'_>>,
    say: &Say,
) -> (String, Option<control::Pending>) {
    loop {
        match event.recv() {
            Ok(Event::Signal(sig)) if o.root_daemon => say.info(&format!(
                "ignoring signal {sig}: this daemon serves a root filesystem; detach with cowdev -d"
            )),
            // No terminal to hang up on: a leftover of the caller's session.
            Ok(Event::Signal(SIGHUP)) => {}
            Ok(Event::Signal(sig)) => {
                return ((if sig == SIGINT { "SIGINT" } else { "SIGTERM" }).into(), None)
            }
            Ok(Event::Detach(pending)) => {
                let Some((device, detach)) = detach.as_mut() else { continue };
                match detach() {
                    Ok(()) => return ("detach requested".into(), Some(pending)),
                    // Still attached and serving: the client decides.
                    Err(e) => {
                        say.info(&format!("detach requested: {e}; still serving {device}"));
                        pending.reply(Err(format!("{e}; {device} is still attached")));
                    }
                }
            }
            Ok(Event::Failed(e)) => return (e, None),
            Ok(Event::KernelGone) | Err(_) => return (KERNEL_GONE.into(), None),
        }
    }
}

/// The startup line: on stdout in the foreground (scripts and tests wait
/// for it), to the log for a daemon.
pub(super) fn announce(summary: &str, places: &[String], say: &Say) {
    let line = format!("serving {summary} on {}", places.join(", "));
    if say.0.is_some() {
        say.info(&line);
    } else {
        println!("{APPLET}: {line}");
        let _ = io::stdout().flush();
    }
}

/// Answers a granted `detach` once the final flush is known.
pub(super) fn answer_detach(
    pending: Option<control::Pending>,
    device: Option<KernelDevice>,
    flushed: &Result<(), String>,
) {
    if let Some(pending) = pending {
        let device = device.map(|d| d.to_string()).unwrap_or_default();
        pending.reply(flushed.clone().map(|()| format!("{device} detached, cowfile flushed\n")));
    }
}

/// Serves `o` until a signal, a `detach` or the kernel ends it, then stops
/// in order; `Ok` once the final flush succeeded.
pub fn run(o: Options) -> Result<(), String> {
    let (say, signals) = start(&o)?;
    let mut stack = stack::build(&o, say.warn_fn())?;
    let status = Status::of(&mut stack);
    let Stack { export, summary, device_block, image_block, .. } = stack;
    let (listeners, names) = bind_all(&o)?;
    let dev = export.dev.clone();
    let cfg = nbd::Config {
        name: APPLET.into(),
        threads: o.threads,
        max_connections: o.max_connections.max(o.connections + 1),
        ..nbd::Config::default()
    };
    let server = Server::new(export, cfg).map_err(|e| format!("worker threads: {e}"))?;
    let mut accepters = Vec::new();
    for l in listeners {
        accepters.push(server.listen(l).map_err(|e| format!("listener thread: {e}"))?);
    }
    let (events, event) = std::sync::mpsc::channel::<Event>();
    let mut attached = match o.device {
        Some(index) => Some(attach(&o, &server, (index, device_block, image_block), status, &events)?),
        None => None,
    };
    let index = attached.as_ref().map(|a| a.index);
    let device = index.map(KernelDevice::Nbd);
    start_watch(&o, &say)?;
    if !o.quiet {
        let mut places = names.clone();
        places.extend(device.map(|d| format!("{d} ({device_block} byte sectors)")));
        announce(&summary, &places, &say);
    }
    forward_signals(signals, events);
    let served: &dyn BlockDev = &*dev;
    let mut detach_nbd = index.map(|i| (KernelDevice::Nbd(i), move || flush_and_detach(served, i)));
    let detach: Option<DetachDevice<'_>> = detach_nbd.as_mut().map(|(d, f)| (*d, f as &mut _));
    let (reason, detach_request) = wait_for_stop(&o, &event, detach, &say);
    if let Some(index) = index.filter(|_| detach_request.is_none() && reason != KERNEL_GONE) {
        if let Err(e) = flush_and_detach(&*dev, index) {
            say.info(&format!("{reason}: {e}"));
        }
    }
    // The device is gone: free its control name for the next server.
    if let Some(c) = attached.as_mut().and_then(|a| a.control.take()) {
        c.stop();
    }
    if !server.stop(STOP_TIMEOUT) {
        say.info(&format!("{reason}: some connections did not finish within {STOP_TIMEOUT:?}"));
    }
    for t in accepters {
        let _ = t.join();
    }
    let flushed = dev.flush().map_err(|e| format!("{reason}: final flush failed: {e}"));
    answer_detach(detach_request, device, &flushed);
    flushed?;
    if !o.quiet {
        say.info(&format!("{reason}: stopped cleanly"));
    }
    Ok(())
}

/// A root-storage daemon's argv[0] starts with '@' (systemd's convention
/// for processes to leave alone at shutdown); re-executes ourselves to get
/// it. `None` when the name is already right; an error otherwise (exec
/// returns only on failure).
pub fn ensure_at_name(args: &[OsString]) -> Option<io::Error> {
    use std::os::unix::process::CommandExt;
    let argv0 = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    if argv0.starts_with('@') {
        return None;
    }
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from(&argv0));
    Some(std::process::Command::new(exe).arg0("@cloopd").args(args.get(1..).unwrap_or_default()).exec())
}
