//! The control listener: one thread that accepts on an abstract unix
//! socket and answers each connection in turn.
//!
//! An abstract socket has no file, so it survives switch_root and needs no
//! cleanup: the name is gone when the process is. The kernel fills in the
//! peer's credentials at connect time (`SO_PEERCRED`), and anyone but root
//! (or the server's own user) gets one error line and is closed before a
//! byte of theirs is read.
//!
//! One connection at a time is enough for a handful of admin commands, and
//! keeps the cost of a bad client bounded: it is read for at most
//! [`READ_TIMEOUT`], [`MAX_REQUEST`](super::proto::MAX_REQUEST) bytes, and
//! written to for at most [`WRITE_TIMEOUT`]. `detach` is the exception to
//! "answer, then close": the connection is handed to the
//! [`Handler`] inside a [`Pending`], which answers once the server has
//! really stopped, so the client learns the outcome of the final flush.

use std::io::{self, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::proto::{encode_reply, peer_allowed, read_request, Command, Info};

/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to read its reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server behind the socket does for each command.
pub trait Handler: Send + Sync + 'static {
    /// The status block.
    fn status(&self) -> String;
    fn info(&self) -> Info;
    /// Flushes the stack; `Err` is the message for the client.
    fn sync(&self) -> Result<(), String>;
    /// Starts a detach; `pending` is answered when it is done (or dropped,
    /// which the client sees as a connection closed without a reply).
    fn detach(&self, pending: Pending);
}

/// A connection waiting for the outcome of a `detach`.
pub struct Pending(UnixStream);

impl Pending {
    pub fn reply(mut self, result: Result<String, String>) {
        // The client may be gone: nothing to do about it.
        let _ = self.0.write_all(&encode_reply(&result));
    }
}

/// A running control listener.
pub struct ControlServer {
    name: String,
    listener: UnixListener,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Binds the abstract name `name` (without the leading NUL).
pub fn bind(name: &str) -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    UnixListener::bind_addr(&addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => io::Error::new(
            e.kind(),
            format!("control socket @{name}: another process is already listening there"),
        ),
        _ => io::Error::new(e.kind(), format!("control socket @{name}: {e}")),
    })
}

/// Serves `name` with `handler` in a new thread.
pub fn start(name: &str, handler: Arc<dyn Handler>) -> io::Result<ControlServer> {
    let listener = bind(name)?;
    let accepting = listener.try_clone()?;
    let stopping = Arc::new(AtomicBool::new(false));
    let stop = stopping.clone();
    let thread = std::thread::Builder::new().name("control".into()).spawn(move || {
        for conn in accepting.incoming() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match conn {
                Ok(stream) => serve_one(stream, &*handler),
                // EMFILE and friends: back off instead of spinning.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })?;
    Ok(ControlServer { name: name.to_string(), listener, stopping, thread: Some(thread) })
}

impl ControlServer {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops accepting and waits for the current connection to finish.
    /// The name is free again once this returns.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes a blocked accept (Linux).
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut stream: UnixStream, handler: &dyn Handler) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let reply = |stream: &mut UnixStream, result: Result<String, String>| {
        let _ = stream.write_all(&encode_reply(&result));
    };
    match rustix::net::sockopt::socket_peercred(&stream) {
        Ok(cred) if peer_allowed(cred.uid.as_raw(), rustix::process::geteuid().as_raw()) => {}
        Ok(cred) => {
            let msg = format!("permission denied: uid {} is not root", cred.uid.as_raw());
            return reply(&mut stream, Err(msg));
        }
        Err(e) => return reply(&mut stream, Err(format!("cannot check the peer's credentials: {e}"))),
    }
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let result = match read_request(&mut stream) {
        Err(e) => Err(e.to_string()),
        Ok(Command::Status) => Ok(handler.status()),
        Ok(Command::Info) => Ok(handler.info().encode()),
        Ok(Command::Sync) => handler.sync().map(|()| String::new()),
        Ok(Command::Detach) => {
            let _ = stream.set_read_timeout(None);
            return handler.detach(Pending(stream));
        }
    };
    reply(&mut stream, result);
}
