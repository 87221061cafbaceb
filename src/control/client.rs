//! The client side: finding servers and asking them one thing.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use super::proto::{decode_reply, listening_devices, socket_name, Command, KernelDevice, Reply, MAX_REPLY};

/// How long an ordinary request may take (a sync fdatasyncs the cowfile).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A detach waits for in-flight requests (cloopd gives them 30 s) and a
/// final flush.
pub const DETACH_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug)]
pub enum ClientError {
    /// Nobody listens on that name.
    NotRunning(String),
    Io(String, io::Error),
    /// The server answered with an error.
    Refused(String, String),
    Malformed(String, String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotRunning(name) => write!(f, "no server listens on @{name}"),
            ClientError::Io(name, e) => write!(f, "@{name}: {e}"),
            ClientError::Refused(name, msg) => write!(f, "@{name}: {msg}"),
            ClientError::Malformed(name, msg) => write!(f, "@{name}: {msg}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Connects to the abstract socket `name`.
pub fn connect(name: &str) -> Result<UnixStream, ClientError> {
    let addr =
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| ClientError::Io(name.into(), e))?;
    UnixStream::connect_addr(&addr).map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => ClientError::NotRunning(name.into()),
        _ => ClientError::Io(name.into(), e),
    })
}

/// Sends `cmd` to the server on `name` and returns the reply's body.
pub fn request(name: &str, cmd: Command, timeout: Duration) -> Result<String, ClientError> {
    let io_err = |e: io::Error| ClientError::Io(name.into(), e);
    let mut stream = connect(name)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    // A server that refuses us (not root) answers and closes without
    // reading: the write then fails, but the reply is there to read, and
    // the unread request makes the end of it a reset instead of EOF.
    let gone = |e: &io::Error| matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset);
    match stream.write_all(format!("{}\n", cmd.word()).as_bytes()) {
        Err(e) if !gone(&e) => return Err(io_err(e)),
        _ => {}
    }
    let mut reply = Vec::new();
    // One byte more than allowed tells a too-long reply from a full one.
    match (&mut stream).take(MAX_REPLY as u64 + 1).read_to_end(&mut reply) {
        Err(e) if !gone(&e) || reply.is_empty() => return Err(io_err(e)),
        _ => {}
    }
    if reply.len() > MAX_REPLY {
        return Err(ClientError::Malformed(name.into(), format!("reply longer than {MAX_REPLY} bytes")));
    }
    match decode_reply(&reply) {
        Ok(Reply::Ok(body)) => Ok(body),
        Ok(Reply::Error(msg)) => Err(ClientError::Refused(name.into(), msg)),
        Err(msg) => Err(ClientError::Malformed(name.into(), msg)),
    }
}

/// `request` to the server of `dev`.
pub fn request_device(dev: KernelDevice, cmd: Command, timeout: Duration) -> Result<String, ClientError> {
    request(&socket_name(dev), cmd, timeout)
}

/// The devices whose servers listen now, sorted.
pub fn devices() -> io::Result<Vec<KernelDevice>> {
    let text = std::fs::read_to_string("/proc/net/unix")
        .map_err(|e| io::Error::new(e.kind(), format!("/proc/net/unix: {e} (is /proc mounted?)")))?;
    Ok(listening_devices(&text))
}
