//! Connections and single range requests over HTTP/1.1.
//!
//! [`Pool`] keeps a few kept-alive connections to one server and caps how
//! many are open at once; [`Request`] sends one GET and reads its head.
//! Decisions about what a status means belong to the caller
//! ([`super::file`]); here only the transport and its errors.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::http::{self, Conn, Head};
use super::url::Url;

/// One TCP connection and its receive buffer.
pub struct Connection {
    pub conn: Conn<TcpStream>,
    /// It carried a response before (so a failure at once may only mean
    /// the server closed it while idle).
    pub reused: bool,
}

impl Connection {
    fn buffered_garbage(&self) -> bool {
        self.conn.buffered() > 0
    }
}

pub fn connect(url: &Url, connect_timeout: Duration, io_timeout: Duration) -> Result<Connection, String> {
    // Address literals as they are; host names through our resolver
    // (crate::net::dns: /etc/hosts, then DNS over UDP and TCP), which a
    // static binary in an initramfs can rely on.
    let addrs: Vec<SocketAddr> = match url.host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => crate::net::dns::resolve(&url.host)?
            .into_iter()
            .map(|a| SocketAddr::new(IpAddr::V4(a), url.port))
            .collect(),
    };
    let mut last = format!("{} has no address", url.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, connect_timeout) {
            Ok(s) => {
                let setup = s
                    .set_read_timeout(Some(io_timeout))
                    .and_then(|()| s.set_write_timeout(Some(io_timeout)))
                    .and_then(|()| s.set_nodelay(true));
                setup.map_err(|e| format!("{addr}: {e}"))?;
                return Ok(Connection { conn: Conn::new(s), reused: false });
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// A GET of `url` with the given extra header lines.
pub fn send_get(c: &mut Connection, url: &Url, headers: &[(&str, &str)]) -> std::io::Result<()> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cloopbox/{}\r\nAccept-Encoding: identity\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    c.conn.get_mut().write_all(req.as_bytes())
}

/// Sends the request and reads the response head. A kept-alive connection
/// that turns out to be closed is replaced once, silently: servers close
/// idle connections whenever they like.
pub fn exchange<'p>(
    pool: &'p Pool,
    url: &Url,
    headers: &[(&str, &str)],
) -> Result<(Lease<'p>, Head), http::Error> {
    let mut lease = pool.take(url).map_err(|e| http::Error::Io(std::io::Error::other(e)))?;
    // Bytes left over from an earlier response (a server that sent more
    // than it announced) would be read as this answer's head.
    if lease.get().buffered_garbage() {
        lease.replace(url).map_err(|e| http::Error::Io(std::io::Error::other(e)))?;
    }
    let first = round_trip(lease.get(), url, headers);
    let result = match first {
        // A kept-alive connection may also carry bytes a broken server
        // sent after an earlier body: that is no reason to fail this read.
        Err(e) if lease.get().reused && (is_stale(&e) || matches!(e, http::Error::Protocol(_))) => {
            lease.replace(url).map_err(|e| http::Error::Io(std::io::Error::other(e)))?;
            round_trip(lease.get(), url, headers)
        }
        other => other,
    };
    result.map(|head| (lease, head))
}

fn round_trip(c: &mut Connection, url: &Url, headers: &[(&str, &str)]) -> Result<Head, http::Error> {
    send_get(c, url, headers).map_err(http::Error::Io)?;
    c.conn.read_head()
}

fn is_stale(e: &http::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    match e {
        http::Error::Closed => true,
        http::Error::Io(e) => matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted),
        _ => false,
    }
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
}

/// At most `max` connections to one server, idle ones kept for reuse.
pub struct Pool {
    max: usize,
    connect_timeout: Duration,
    io_timeout: Duration,
    state: Mutex<PoolState>,
    freed: Condvar,
}

impl Pool {
    pub fn new(max: usize, connect_timeout: Duration, io_timeout: Duration) -> Pool {
        Pool {
            max: max.max(1),
            connect_timeout,
            io_timeout,
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, or a new one when fewer than `max` are open;
    /// otherwise waits for one to be returned.
    pub fn take(&self, url: &Url) -> Result<Lease<'_>, String> {
        let mut st = self.lock();
        loop {
            if let Some(mut c) = st.idle.pop() {
                c.reused = true;
                return Ok(Lease { pool: self, conn: Some(c), kept: false });
            }
            if st.open < self.max {
                st.open += 1;
                drop(st);
                let mut lease = Lease { pool: self, conn: None, kept: false };
                lease.conn = Some(connect(url, self.connect_timeout, self.io_timeout)?);
                return Ok(lease);
            }
            st = self.freed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hands over a connection opened elsewhere (the probe's).
    pub fn adopt(&self, conn: Connection) {
        let mut st = self.lock();
        if st.open < self.max {
            st.open += 1;
            st.idle.push(conn);
        }
    }

    /// Connections open now (idle or in use).
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

/// A connection taken from the pool: [`Lease::keep`] returns it for reuse;
/// dropping it closes it.
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
    /// Returned to the idle list: still counted as open.
    kept: bool,
}

impl Lease<'_> {
    pub fn get(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("a lease holds a connection until it is dropped")
    }

    fn replace(&mut self, url: &Url) -> Result<(), String> {
        self.conn = None;
        self.conn = Some(connect(url, self.pool.connect_timeout, self.pool.io_timeout)?);
        Ok(())
    }

    /// The response was read completely and the server keeps the
    /// connection open: keep it for the next request.
    pub fn keep(mut self) {
        if let Some(c) = self.conn.take() {
            let mut st = self.pool.lock();
            st.idle.push(c);
            self.kept = true;
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if !self.kept {
            st.open -= 1;
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}
