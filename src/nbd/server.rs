//! Listeners, connections and shutdown.
//!
//! A [`Server`] owns one [`Export`] and one worker [`Pool`]. Each accepted
//! socket gets one thread that runs the handshake and then the
//! transmission phase; the pool is shared. Three entry points serve a
//! connection:
//!
//! * [`Server::serve_socket`]: handshake, then transmission (listeners);
//! * [`Server::serve_transmission`]: transmission only, for a socket whose
//!   other end was handed to the kernel NBD client, which never negotiates;
//! * [`Server::serve_io`]: any `Read`/`Write` pair (tests and fuzzing).
//!
//! Defences: at most `max_connections` live connections (further ones are
//! closed at once and logged), a total handshake deadline (qemu-nbd's fix
//! for CVE-2024-7409 uses 10 s too), and `MSG_NOSIGNAL` sends. [`Server::stop`]
//! stops the listeners, shuts down the reading side of every connection so
//! each one finishes its in-flight requests and leaves, and waits for them;
//! the caller then flushes the stack.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::sockopt::{set_socket_timeout, Timeout};

use super::export::Export;
use super::handshake::{negotiate, HandshakeError, Negotiated, Outcome};
use super::pool::Pool;
use super::transmission::{self, ConnLog, End, Limits};
use super::wire::{SocketWire, Wire, WriterWire};

/// Server-wide settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Prefix of every log line (the applet name).
    pub name: String,
    /// Worker threads; 0 runs requests on the connection thread.
    pub threads: usize,
    pub max_connections: usize,
    /// The whole handshake must finish within this time.
    pub handshake_timeout: Duration,
    pub limits: Limits,
    /// Log lines per connection before the rest are suppressed (0: none).
    pub log_budget: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "nbd".into(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_connections: 64,
            handshake_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            log_budget: 64,
        }
    }
}

/// A connected stream socket.
pub trait Socket: Read + AsFd + Send + Sync + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
}

impl Socket for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
}

impl Socket for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
}

/// A bound, listening socket.
pub enum Listener {
    /// The path is removed when the server stops.
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

type Closer = Box<dyn Fn() + Send + Sync>;
/// Shuts a connection's socket down: only the reading side (`false`), or
/// both (`true`).
type ConnCloser = Box<dyn Fn(bool) + Send + Sync>;

#[derive(Default)]
struct Registry {
    conns: HashMap<u64, ConnCloser>,
    listeners: Vec<Closer>,
    next_id: u64,
    stopping: bool,
}

pub struct Server {
    export: Arc<Export>,
    pool: Pool,
    cfg: Config,
    registry: Mutex<Registry>,
    changed: Condvar,
}

/// Removes a connection from the registry when its thread is done.
struct Slot<'a> {
    server: &'a Server,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.server.lock().conns.remove(&self.id);
        self.server.changed.notify_all();
    }
}

fn shutdown_read(fd: &impl AsFd) {
    // Failure means the socket is already shut down or dead.
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Read);
}

fn shutdown_both(fd: &impl AsFd) {
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

impl Server {
    pub fn new(export: Export, cfg: Config) -> io::Result<Arc<Server>> {
        let pool = Pool::new(cfg.threads)?;
        Ok(Arc::new(Server {
            export: Arc::new(export),
            pool,
            cfg,
            registry: Mutex::new(Registry::default()),
            changed: Condvar::new(),
        }))
    }

    pub fn export(&self) -> &Arc<Export> {
        &self.export
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock is never poisoned")
    }

    /// Registers a connection unless the server is stopping or full.
    fn admit<S: Socket>(&self, sock: &S) -> Result<Slot<'_>, String> {
        let closer = sock.try_clone().map_err(|e| format!("cannot duplicate the socket: {e}"))?;
        let mut reg = self.lock();
        if reg.stopping {
            return Err("the server is stopping".into());
        }
        if reg.conns.len() >= self.cfg.max_connections {
            return Err(format!("already {} connections (--max-connections)", reg.conns.len()));
        }
        let id = reg.next_id;
        reg.next_id += 1;
        reg.conns.insert(
            id,
            Box::new(move |both| if both { shutdown_both(&closer) } else { shutdown_read(&closer) }),
        );
        Ok(Slot { server: self, id })
    }

    fn log(&self, what: &str) -> Arc<ConnLog> {
        Arc::new(ConnLog::new(format!("{}: {what}", self.cfg.name), self.cfg.log_budget))
    }

    /// Runs the handshake and then the transmission phase on `sock`;
    /// returns when the client is gone. `peer` names it in log lines.
    pub fn serve_socket<S: Socket>(&self, sock: S, peer: &str) {
        let log = self.log(peer);
        let _slot = match self.admit(&sock) {
            Ok(s) => s,
            Err(why) => return log.line(format_args!("refused: {why}")),
        };
        let mut reader = match sock.try_clone() {
            Ok(r) => r,
            Err(e) => return log.line(format_args!("cannot duplicate the socket: {e}")),
        };
        let wire = SocketWire(sock);
        let deadline = Instant::now() + self.cfg.handshake_timeout;
        // Socket timeouts belong to the socket, so they cover the reader's
        // fd too. The send timeout matters as well: a client that never
        // reads option replies must not hold us in a blocking send.
        let fd = wire.0.as_fd();
        let set_timeouts = |t: Option<Duration>| -> io::Result<()> {
            set_socket_timeout(fd, Timeout::Recv, t)?;
            Ok(set_socket_timeout(fd, Timeout::Send, t)?)
        };
        let mut arm = || match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => set_timeouts(Some(left)),
            _ => Err(io::Error::new(io::ErrorKind::TimedOut, "handshake took too long")),
        };
        let outcome = negotiate(&mut reader, &mut WireWriter(&wire), &self.export, &mut arm);
        match outcome {
            Ok(Outcome::Transmission(neg)) => {
                if let Err(e) = set_timeouts(None) {
                    return log.line(format_args!("cannot clear the handshake timeout: {e}"));
                }
                self.transmission(reader, Arc::new(wire), neg, log);
            }
            Ok(Outcome::Ended) => {}
            Err(HandshakeError::Io(e))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                log.line(format_args!("no complete handshake within {:?}", self.cfg.handshake_timeout))
            }
            Err(e) => log.line(format_args!("{e}")),
        }
    }

    /// Runs the transmission phase only, with the options in `neg`
    /// (`Negotiated::default()` for the kernel client).
    pub fn serve_transmission<S: Socket>(&self, sock: S, neg: Negotiated, peer: &str) -> End {
        let log = self.log(peer);
        let _slot = match self.admit(&sock) {
            Ok(s) => s,
            Err(why) => return End::Closed(why),
        };
        match sock.try_clone() {
            Ok(reader) => self.transmission(reader, Arc::new(SocketWire(sock)), neg, log),
            Err(e) => End::Closed(format!("cannot duplicate the socket: {e}")),
        }
    }

    /// Handshake and transmission over any byte streams, without deadline
    /// or registry (tests and fuzzing).
    pub fn serve_io<R: Read, W: Write + Send + 'static>(&self, mut r: R, w: W) -> Option<End> {
        let wire = Arc::new(WriterWire(Mutex::new(w)));
        let log = self.log("io");
        match negotiate(&mut r, &mut WireWriter(&*wire), &self.export, &mut || Ok(())) {
            Ok(Outcome::Transmission(neg)) => Some(self.transmission(r, wire, neg, log)),
            Ok(Outcome::Ended) => None,
            Err(e) => {
                log.line(format_args!("{e}"));
                None
            }
        }
    }

    fn transmission<R: Read>(&self, r: R, wire: Arc<dyn Wire>, neg: Negotiated, log: Arc<ConnLog>) -> End {
        transmission::serve(r, wire, self.export.clone(), &self.pool, neg, &self.cfg.limits, log)
    }

    /// Accepts connections on `listener` in a new thread, one thread per
    /// connection, until [`Server::stop`].
    pub fn listen(self: &Arc<Self>, listener: Listener) -> io::Result<JoinHandle<()>> {
        let waker = match &listener {
            Listener::Unix(l, path) => {
                let (l, path) = (l.try_clone()?, path.clone());
                Box::new(move || {
                    shutdown_read(&l);
                    let _ = std::fs::remove_file(&path);
                }) as Closer
            }
            Listener::Tcp(l) => {
                let l = l.try_clone()?;
                Box::new(move || shutdown_read(&l)) as Closer
            }
        };
        self.lock().listeners.push(waker);
        let me = self.clone();
        std::thread::Builder::new().name("nbd-accept".into()).spawn(move || me.accept_loop(listener))
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    fn accept_loop(self: Arc<Self>, listener: Listener) {
        loop {
            let accepted = match &listener {
                Listener::Unix(l, _) => l.accept().map(|(s, _)| (Conn::Unix(s), "unix client".to_string())),
                Listener::Tcp(l) => l.accept().map(|(s, a)| {
                    // Replies are whole buffers; Nagle would only add latency.
                    let _ = s.set_nodelay(true);
                    (Conn::Tcp(s), a.to_string())
                }),
            };
            if self.stopping() {
                return;
            }
            match accepted {
                Ok((conn, peer)) => self.spawn_connection(conn, peer),
                Err(e) => {
                    eprintln!("{}: accept: {e}", self.cfg.name);
                    // EMFILE and friends: back off instead of spinning.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn spawn_connection(self: &Arc<Self>, conn: Conn, peer: String) {
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("nbd-conn".into()).spawn(move || match conn {
            Conn::Unix(s) => me.serve_socket(s, &peer),
            Conn::Tcp(s) => me.serve_socket(s, &peer),
        });
        if let Err(e) = spawned {
            eprintln!("{}: cannot start a connection thread: {e}", self.cfg.name);
        }
    }

    /// Stops accepting, makes every connection finish its in-flight
    /// requests and leave, and waits (at most `timeout`) for them.
    /// Returns whether all connections are gone.
    ///
    /// Reading stops first, so that replies to requests in flight still go
    /// out. Connections left after half of `timeout` (a client that does
    /// not read its replies keeps its thread waiting for room) are shut
    /// down both ways.
    pub fn stop(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut reg = self.lock();
        reg.stopping = true;
        for wake in reg.listeners.drain(..) {
            wake();
        }
        for (both, until) in [(false, start + timeout / 2), (true, start + timeout)] {
            for close in reg.conns.values() {
                close(both);
            }
            while !reg.conns.is_empty() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                reg = self.changed.wait_timeout(reg, until - now).expect("registry lock is never poisoned").0;
            }
        }
        reg.conns.is_empty()
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// Blocking `Write` over a [`Wire`], for the handshake.
struct WireWriter<'a, W: ?Sized>(&'a W);

impl<W: Wire + ?Sized> Write for WireWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send_all(buf).map(|_| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
