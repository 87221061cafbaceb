//! Connections and single range requests over HTTP/1.1.
//!
//! [`Pool`] keeps a few kept-alive connections to one server and caps how
//! many are open at once; [`Request`] sends one GET and reads its head.
//! Decisions about what a status means belong to the caller
//! ([`super::file`]); here only the connections and their errors. Whether
//! a connection is plain TCP or TLS is [`super::tls`]'s business: the
//! client reads and writes a [`Stream`] either way.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};

use super::http::{self, Conn, Head};
use super::tls::{Stream, Transport};
use super::url::Url;

/// One connection (TCP or TLS) and its receive buffer.
pub struct Connection {
    pub conn: Conn<Stream>,
    /// It carried a response before (so a failure at once may only mean
    /// the server closed it while idle).
    pub reused: bool,
}

impl Connection {
    fn buffered_garbage(&self) -> bool {
        self.conn.buffered() > 0
    }
}

/// A connection to `url`'s server; for `https://` with the TLS handshake
/// done. A certificate that fails verification is [`http::Error::Tls`],
/// as is `https://` in a build without TLS, said before the host name is
/// resolved ([`super::tls::check_scheme`]).
pub fn connect(url: &Url, transport: &Transport) -> Result<Connection, http::Error> {
    super::tls::check_scheme(url)?;
    let net = |msg: String| http::Error::Io(std::io::Error::other(msg));
    // Address literals as they are; host names through our resolver
    // (crate::net::dns: /etc/hosts, then DNS over UDP and TCP), which a
    // static binary in an initramfs can rely on.
    let addrs: Vec<SocketAddr> = match url.host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => crate::net::dns::resolve(&url.host)
            .map_err(net)?
            .into_iter()
            .map(|a| SocketAddr::new(IpAddr::V4(a), url.port))
            .collect(),
    };
    let mut last = format!("{} has no address", url.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, transport.connect_timeout) {
            Ok(s) => {
                let stream = transport.open(url, s).map_err(|e| match e {
                    http::Error::Io(e) => net(format!("{addr}: {e}")),
                    other => other,
                })?;
                return Ok(Connection { conn: Conn::new(stream), reused: false });
            }
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(net(last))
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
    let stream = c.conn.get_mut();
    stream.write_all(req.as_bytes())?;
    // TLS buffers what is written; the request must leave now.
    stream.flush()
}

/// Sends the request and reads the response head. A kept-alive connection
/// that turns out to be closed is replaced once, silently: servers close
/// idle connections whenever they like.
pub fn exchange<'p>(
    pool: &'p Pool,
    url: &Url,
    headers: &[(&str, &str)],
) -> Result<(Lease<'p>, Head), http::Error> {
    let mut lease = pool.take(url)?;
    // Bytes left over from an earlier response (a server that sent more
    // than it announced) would be read as this answer's head.
    if lease.get().buffered_garbage() {
        lease.replace(url)?;
    }
    let first = round_trip(lease.get(), url, headers);
    let result = match first {
        // A kept-alive connection may also carry bytes a broken server
        // sent after an earlier body: that is no reason to fail this read.
        Err(e) if lease.get().reused && (is_stale(&e) || matches!(e, http::Error::Protocol(_))) => {
            lease.replace(url)?;
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
    transport: Transport,
    state: Mutex<PoolState>,
    freed: Condvar,
}

impl Pool {
    pub fn new(max: usize, transport: Transport) -> Pool {
        Pool {
            max: max.max(1),
            transport,
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, or a new one when fewer than `max` are open;
    /// otherwise waits for one to be returned.
    pub fn take(&self, url: &Url) -> Result<Lease<'_>, http::Error> {
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
                lease.conn = Some(connect(url, &self.transport)?);
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

    fn replace(&mut self, url: &Url) -> Result<(), http::Error> {
        self.conn = None;
        self.conn = Some(connect(url, &self.pool.transport)?);
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
