//! NBD protocol conformance over a raw socket.
//!
//! The server core runs in-process on one end of a `UnixStream` pair (or a
//! real listener); this file's tiny client speaks the wire format byte by
//! byte, so every option, command and error path can be driven exactly,
//! including the malformed ones no real client would send.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloopbox::blockdev::{BlockDev, Caps, Extent, MemDev, ReadAt};
use cloopbox::nbd::proto::*;
use cloopbox::nbd::{Config, Export, Listener, Server};
use cloopbox::serve::{self, Options};

const SIZE: usize = 1 << 20;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

fn config(threads: usize) -> Config {
    Config { name: "test".into(), threads, ..Config::default() }
}

fn rw_server(threads: usize) -> (Arc<MemDev>, Arc<Server>) {
    let dev = Arc::new(MemDev::new(pattern(SIZE)));
    let mut export = Export::writable(dev.clone());
    export.name = "disk".into();
    export.description = "a test disk".into();
    (dev, Server::new(export, config(threads)).unwrap())
}

fn ro_server() -> Arc<Server> {
    let export = Export::read_only(Arc::new(MemDev::new(pattern(SIZE))));
    Server::new(export, config(2)).unwrap()
}

// ---- A raw client ------------------------------------------------------

struct Client {
    s: UnixStream,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    /// Connects to `server` over a socket pair, and reads the greeting.
    fn connect(server: &Arc<Server>) -> Client {
        let mut c = Client::raw(server);
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        c
    }

    /// Connected and through the handshake ([`Client::go`]), in transmission.
    fn ready(server: &Arc<Server>, structured: bool, allocation: bool) -> Client {
        let mut c = Client::connect(server);
        c.go(structured, allocation);
        c
    }

    /// Connects to a server listening on a unix socket (the real binary),
    /// and reads the greeting.
    fn unix(path: &std::path::Path) -> Client {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client { s, server: None };
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
        c
    }

    /// Connects without reading anything.
    fn raw(server: &Arc<Server>) -> Client {
        let (a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let srv = server.clone();
        let h = std::thread::spawn(move || srv.serve_socket(a, "test client"));
        Client { s: b, server: Some(h) }
    }

    fn client_flags(&mut self, flags: u32) {
        self.s.write_all(&flags.to_be_bytes()).unwrap();
    }

    fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).unwrap();
    }

    fn reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), OPTION_REPLY_MAGIC);
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        assert!(len < 1 << 16, "option reply of {len} bytes");
        let mut d = vec![0u8; len];
        self.s.read_exact(&mut d).unwrap();
        (opt, kind, d)
    }

    /// Replies until ACK or an error; returns them all.
    fn replies(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut v = Vec::new();
        loop {
            let (_, kind, d) = self.reply();
            let last = kind == REP_ACK || kind & REP_FLAG_ERROR != 0;
            v.push((kind, d));
            if last {
                return v;
            }
        }
    }

    /// Fixed newstyle + NO_ZEROES, optional structured replies and
    /// base:allocation, then GO. Returns (size, flags).
    fn go(&mut self, structured: bool, allocation: bool) -> (u64, u16) {
        self.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        if structured {
            self.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.replies(), vec![(REP_ACK, vec![])]);
        }
        if allocation {
            self.option(OPT_SET_META_CONTEXT, &meta_data(b"", &[b"base:allocation"]));
            let r = self.replies();
            assert_eq!(r.len(), 2);
            assert_eq!(r[0].0, REP_META_CONTEXT);
            assert_eq!(&r[0].1[4..], b"base:allocation");
        }
        self.option(OPT_GO, &info_data(b"", &[]));
        export_info(&self.replies())
    }

    fn send(&mut self, flags: u16, kind: u16, cookie: u64, offset: u64, length: u32, payload: &[u8]) {
        let mut b = Request { flags, kind, cookie, offset, length }.encode().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
    }

    /// A simple reply: (error, cookie), and `data_len` bytes of data when
    /// the error is 0.
    fn simple(&mut self, data_len: usize) -> (u32, u64, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC, "not a simple reply");
        let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..].try_into().unwrap());
        let mut d = vec![0u8; if err == 0 { data_len } else { 0 }];
        self.s.read_exact(&mut d).unwrap();
        (err, cookie, d)
    }

    /// One structured chunk: (flags, type, cookie, payload).
    fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), STRUCTURED_REPLY_MAGIC, "not a chunk");
        let flags = u16::from_be_bytes([h[4], h[5]]);
        let kind = u16::from_be_bytes([h[6], h[7]]);
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let mut d = vec![0u8; len];
        self.s.read_exact(&mut d).unwrap();
        (flags, kind, cookie, d)
    }

    fn read(&mut self, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
        self.send(0, CMD_READ, cookie, offset, len, &[]);
        let (e, c, d) = self.simple(len as usize);
        assert_eq!((e, c), (0, cookie));
        d
    }

    fn write(&mut self, cookie: u64, offset: u64, data: &[u8]) -> u32 {
        self.send(0, CMD_WRITE, cookie, offset, data.len() as u32, data);
        let (e, c, _) = self.simple(0);
        assert_eq!(c, cookie);
        e
    }

    /// True when the server has closed the connection.
    fn closed(&mut self) -> bool {
        // Unread data at close time makes the peer see a reset instead of EOF.
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    /// A READ under structured replies: the data of its chunks.
    fn read_chunks(&mut self, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
        self.send(0, CMD_READ, cookie, offset, len, &[]);
        let mut data = vec![0xeeu8; len as usize];
        loop {
            let (f, kind, c, d) = self.chunk();
            assert_eq!(c, cookie);
            let at = |d: &[u8]| (u64::from_be_bytes(d[..8].try_into().unwrap()) - offset) as usize;
            match kind {
                REPLY_TYPE_OFFSET_DATA => data[at(&d)..at(&d) + d.len() - 8].copy_from_slice(&d[8..]),
                REPLY_TYPE_OFFSET_HOLE => {
                    let n = u32::from_be_bytes(d[8..12].try_into().unwrap()) as usize;
                    data[at(&d)..at(&d) + n].fill(0);
                }
                REPLY_TYPE_NONE => {}
                _ => panic!("READ {offset}+{len} failed: chunk type {kind}, {d:?}"),
            }
            if f & REPLY_FLAG_DONE != 0 {
                return data;
            }
        }
    }

    /// `NBD_CMD_BLOCK_STATUS` for `base:allocation`: the (length, flags)
    /// extents of the one context's chunk.
    fn block_status(&mut self, cookie: u64, flags: u16, offset: u64, len: u32) -> Vec<(u32, u32)> {
        self.send(flags, CMD_BLOCK_STATUS, cookie, offset, len, &[]);
        let (f, kind, c, d) = self.chunk();
        assert_eq!((f, kind, c), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie), "{d:?}");
        assert_eq!((d.len() - 4) % 8, 0);
        d[4..]
            .chunks(8)
            .map(|e| {
                (
                    u32::from_be_bytes(e[..4].try_into().unwrap()),
                    u32::from_be_bytes(e[4..].try_into().unwrap()),
                )
            })
            .collect()
    }

    /// The whole export's `base:allocation` map as (offset, length, zero)
    /// runs, asking again wherever an answer stopped short.
    fn allocation_map(&mut self, size: u64) -> Vec<(u64, u64, bool)> {
        let mut map: Vec<(u64, u64, bool)> = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(u32::MAX as u64 / 2) as u32;
            let extents = self.block_status(pos, 0, pos, len);
            assert!(!extents.is_empty(), "an empty BLOCK_STATUS answer at {pos}");
            for (n, flags) in extents {
                assert!(n > 0, "a zero-length extent at {pos}");
                assert_eq!(flags & !(STATE_HOLE | STATE_ZERO), 0, "unknown flags {flags:#x}");
                let zero = flags & STATE_ZERO != 0;
                match map.last_mut() {
                    Some(last) if last.2 == zero => last.1 += u64::from(n),
                    _ => map.push((pos, u64::from(n), zero)),
                }
                pos += u64::from(n);
            }
            assert!(pos <= size, "extents run past the end of the export");
        }
        map
    }

    fn finish(mut self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.server.take() {
            h.join().unwrap();
        }
    }
}

fn info_data(name: &[u8], infos: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name);
    d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend_from_slice(&i.to_be_bytes());
    }
    d
}

fn meta_data(name: &[u8], queries: &[&[u8]]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name);
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q);
    }
    d
}

/// Extracts (size, flags) from the NBD_INFO_EXPORT reply of an INFO/GO.
fn export_info(replies: &[(u32, Vec<u8>)]) -> (u64, u16) {
    assert_eq!(replies.last().unwrap().0, REP_ACK, "{replies:?}");
    let info = replies.iter().find(|(k, d)| *k == REP_INFO && d[..2] == [0, 0]).expect("NBD_INFO_EXPORT");
    assert_eq!(info.1.len(), 12);
    (u64::from_be_bytes(info.1[2..10].try_into().unwrap()), u16::from_be_bytes([info.1[10], info.1[11]]))
}

fn info_item(replies: &[(u32, Vec<u8>)], kind: u16) -> Option<Vec<u8>> {
    replies.iter().find(|(k, d)| *k == REP_INFO && d[..2] == kind.to_be_bytes()).map(|(_, d)| d[2..].to_vec())
}

// ---- Handshake ---------------------------------------------------------

#[test]
fn export_name_with_and_without_zero_padding() {
    let (_, server) = rw_server(1);
    for no_zeroes in [false, true] {
        let mut c = Client::connect(&server);
        c.client_flags(FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 });
        c.option(OPT_EXPORT_NAME, b"disk");
        let mut b = vec![0u8; if no_zeroes { 10 } else { 134 }];
        c.s.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), SIZE as u64);
        let flags = u16::from_be_bytes([b[8], b[9]]);
        assert_ne!(flags & FLAG_HAS_FLAGS, 0);
        assert_eq!(flags & (FLAG_READ_ONLY | FLAG_SEND_DF), 0);
        assert!(b[10..].iter().all(|&x| x == 0));
        // Transmission works right away.
        assert_eq!(c.read(1, 0, 16), pattern(16));
        c.send(0, CMD_DISC, 2, 0, 0, &[]);
        assert!(c.closed());
        c.finish();
    }
}

#[test]
fn export_name_for_an_unknown_export_hangs_up() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_EXPORT_NAME, b"nope");
    assert!(c.closed());
    c.finish();
}

#[test]
fn unknown_client_flags_hang_up() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | 1 << 7);
    assert!(c.closed());
    c.finish();
}

#[test]
fn unsupported_options_are_refused_and_the_next_one_works() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    for opt in [OPT_STARTTLS, OPT_EXTENDED_HEADERS, 4, 42, 0xdead_beef] {
        c.option(opt, b"some data that must be skipped");
        let (o, kind, _) = c.reply();
        assert_eq!((o, kind), (opt, REP_ERR_UNSUP), "option {opt}");
    }
    let (size, _) = {
        c.option(OPT_GO, &info_data(b"disk", &[]));
        export_info(&c.replies())
    };
    assert_eq!(size, SIZE as u64);
    c.finish();
}

#[test]
fn list_names_the_export() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_LIST, &[]);
    let r = c.replies();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, REP_SERVER);
    assert_eq!(&r[0].1[..4], &4u32.to_be_bytes());
    assert_eq!(&r[0].1[4..8], b"disk");
    assert_eq!(&r[0].1[8..], b"a test disk");
    c.option(OPT_LIST, b"x");
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.finish();
}

#[test]
fn info_and_go_agree_and_carry_every_item() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    let req = info_data(b"disk", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 999]);
    c.option(OPT_INFO, &req);
    let info = c.replies();
    assert_eq!(info_item(&info, INFO_NAME).unwrap(), b"disk");
    assert_eq!(info_item(&info, INFO_DESCRIPTION).unwrap(), b"a test disk");
    let bs = info_item(&info, INFO_BLOCK_SIZE).unwrap();
    let v = |i: usize| u32::from_be_bytes(bs[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!((v(0), v(1), v(2)), (1, 4096, 32 << 20));
    // INFO does not end the handshake; GO with the same request answers the same.
    c.option(OPT_GO, &req);
    let go = c.replies();
    assert_eq!(info, go);
    assert_eq!(export_info(&go).0, SIZE as u64);
    assert_eq!(c.read(9, 4096, 4096), pattern(8192)[4096..]);
    c.finish();
}

#[test]
fn go_errors_keep_the_handshake_alive() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_GO, &info_data(b"other", &[]));
    assert_eq!(c.reply().1, REP_ERR_UNKNOWN);
    // Name length larger than the data (the CVE-2022-26495 shape).
    c.option(OPT_GO, &[0xff, 0xff, 0xff, 0xf0, b'a', 0, 0]);
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    // Info count that does not match the length.
    c.option(OPT_INFO, &[0, 0, 0, 0, 0, 5, 0, 1]);
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.option(OPT_GO, &[]);
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.option(OPT_GO, &info_data(b"", &[]));
    assert_eq!(export_info(&c.replies()).0, SIZE as u64);
    c.finish();
}

#[test]
fn abort_is_acknowledged_even_with_data() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_ABORT, b"trailing junk");
    assert_eq!(c.reply().1, REP_ACK);
    assert!(c.closed());
    c.finish();
}

#[test]
fn meta_contexts() {
    let (_, server) = rw_server(1);
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    // SET before STRUCTURED_REPLY is invalid.
    c.option(OPT_SET_META_CONTEXT, &meta_data(b"", &[b"base:allocation"]));
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.option(OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.reply().1, REP_ACK);
    // LIST with no query, and with the namespace wildcard.
    for q in [&[][..], &[&b"base:"[..]][..]] {
        c.option(OPT_LIST_META_CONTEXT, &meta_data(b"disk", q));
        let r = c.replies();
        assert_eq!(r.len(), 2, "{q:?}");
        assert_eq!(&r[0].1[4..], b"base:allocation");
    }
    // Unknown namespaces are ignored.
    c.option(OPT_SET_META_CONTEXT, &meta_data(b"", &[b"qemu:dirty-bitmap:x", b"x-foo:bar"]));
    assert_eq!(c.replies(), vec![(REP_ACK, vec![])]);
    c.option(OPT_SET_META_CONTEXT, &meta_data(b"other", &[b"base:allocation"]));
    assert_eq!(c.reply().1, REP_ERR_UNKNOWN);
    // A query count larger than the data.
    c.option(OPT_SET_META_CONTEXT, &[0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.option(OPT_SET_META_CONTEXT, &meta_data(b"", &[b"base:allocation"]));
    let r = c.replies();
    assert_eq!(r[0].0, REP_META_CONTEXT);
    let id = u32::from_be_bytes(r[0].1[..4].try_into().unwrap());
    c.option(OPT_GO, &info_data(b"", &[]));
    let (_, flags) = export_info(&c.replies());
    assert_ne!(flags & FLAG_SEND_DF, 0, "DF goes with structured replies");
    c.send(0, CMD_BLOCK_STATUS, 5, 0, 8192, &[]);
    let (f, kind, cookie, d) = c.chunk();
    assert_eq!((f, kind, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 5));
    assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), id);
    c.finish();
}

#[test]
fn malformed_option_streams_are_dropped() {
    let (_, server) = rw_server(1);
    // Bad option magic.
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.s.write_all(&[0x55; 16]).unwrap();
    assert!(c.closed());
    c.finish();
    // An absurd option length is not buffered: the client is dropped.
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    let mut h = IHAVEOPT.to_be_bytes().to_vec();
    h.extend_from_slice(&OPT_GO.to_be_bytes());
    h.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&h).unwrap();
    assert!(c.closed());
    c.finish();
    // Moderately oversized data is drained and refused; the next option works.
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_INFO, &vec![0u8; 100_000]);
    assert_eq!(c.reply().1, REP_ERR_TOO_BIG);
    c.option(OPT_INFO, &info_data(b"", &[]));
    assert_eq!(export_info(&c.replies()).0, SIZE as u64);
    c.finish();
    // Garbage instead of a greeting answer, then hanging up mid-option.
    let mut c = Client::connect(&server);
    c.s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(c.closed());
    c.finish();
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.s.write_all(&IHAVEOPT.to_be_bytes()[..5]).unwrap();
    c.finish();
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let export = Export::read_only(Arc::new(MemDev::new(vec![0; 4096])));
    let cfg = Config { handshake_timeout: Duration::from_millis(300), ..config(1) };
    let server = Server::new(export, cfg).unwrap();
    let mut c = Client::connect(&server);
    assert!(c.closed());
    c.finish();
    // A client that negotiates slowly but steadily still hits the total deadline.
    let mut c = Client::connect(&server);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    let t = Instant::now();
    loop {
        let mut opt = IHAVEOPT.to_be_bytes().to_vec();
        opt.extend_from_slice(&OPT_LIST.to_be_bytes());
        opt.extend_from_slice(&0u32.to_be_bytes());
        if c.s.write_all(&opt).is_err() {
            break;
        }
        let mut h = [0u8; 1];
        match c.s.read(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let mut rest = [0u8; 1024];
                let _ = c.s.read(&mut rest);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        // A hang guard, not a timing check: the deadline is 300 ms, so a
        // minute of steady options means there is no deadline at all.
        assert!(t.elapsed() < Duration::from_secs(60), "handshake never timed out");
    }
    c.finish();
}

// ---- Transmission ------------------------------------------------------

#[test]
fn every_command_on_a_writable_export() {
    let (dev, server) = rw_server(2);
    let mut c = Client::connect(&server);
    let (size, flags) = c.go(false, false);
    assert_eq!(size, SIZE as u64);
    for f in [
        FLAG_SEND_FLUSH,
        FLAG_SEND_FUA,
        FLAG_SEND_TRIM,
        FLAG_SEND_WRITE_ZEROES,
        FLAG_SEND_CACHE,
        FLAG_CAN_MULTI_CONN,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x} missing from {flags:#x}");
    }
    assert_eq!(flags & (FLAG_READ_ONLY | FLAG_SEND_DF | FLAG_ROTATIONAL), 0);
    let mut model = pattern(SIZE);
    assert_eq!(c.read(1, 1000, 5000), model[1000..6000]);
    let data: Vec<u8> = (0..3000).map(|i| (i * 3) as u8).collect();
    assert_eq!(c.write(2, 7777, &data), 0);
    model[7777..10777].copy_from_slice(&data);
    c.send(CMD_FLAG_FUA, CMD_WRITE, 3, 0, 4, b"abcd");
    assert_eq!(c.simple(0).0, 0);
    model[..4].copy_from_slice(b"abcd");
    c.send(0, CMD_WRITE_ZEROES, 4, 100_000, 5000, &[]);
    assert_eq!(c.simple(0).0, 0);
    model[100_000..105_000].fill(0);
    c.send(CMD_FLAG_NO_HOLE | CMD_FLAG_FUA, CMD_WRITE_ZEROES, 5, 200_000, 10, &[]);
    assert_eq!(c.simple(0).0, 0);
    model[200_000..200_010].fill(0);
    c.send(0, CMD_TRIM, 6, 300_000, 4096, &[]);
    assert_eq!(c.simple(0).0, 0);
    model[300_000..304_096].fill(0); // MemDev trims to zeros
    c.send(0, CMD_FLUSH, 7, 0, 0, &[]);
    assert_eq!(c.simple(0), (0, 7, vec![]));
    c.send(0, CMD_CACHE, 8, 0, 65536, &[]);
    assert_eq!(c.simple(0).0, 0);
    assert_eq!(c.read(9, 0, SIZE as u32), model);
    c.send(0, CMD_DISC, 10, 0, 0, &[]);
    assert!(c.closed());
    c.finish();
    assert_eq!(dev.snapshot(), model);
}

#[test]
fn a_32_mib_request_works() {
    let dev = Arc::new(MemDev::new(pattern(33 << 20)));
    let server = Server::new(Export::writable(dev.clone()), config(2)).unwrap();
    let mut c = Client::ready(&server, false, false);
    let data = vec![0xa5u8; 32 << 20];
    assert_eq!(c.write(1, 1 << 20, &data), 0);
    assert_eq!(c.read(2, 1 << 20, 32 << 20), data);
    c.finish();
}

#[test]
fn request_errors_get_the_protocols_answers() {
    let (dev, server) = rw_server(2);
    let before = dev.snapshot();
    let mut c = Client::ready(&server, false, false);
    let end = SIZE as u64;
    let cases: &[(u16, u16, u64, u32, u32)] = &[
        (CMD_READ, 0, end, 1, errno::EINVAL),
        (CMD_READ, 0, end - 10, 11, errno::EINVAL),
        (CMD_READ, 0, u64::MAX - 5, 10, errno::EINVAL),
        (CMD_READ, 0, 0, 0, errno::EINVAL),
        (CMD_READ, 0, 0, MAX_PAYLOAD + 1, errno::EINVAL),
        (CMD_READ, CMD_FLAG_DF, 0, 10, errno::EINVAL), // DF needs structured replies
        (CMD_READ, 1 << 12, 0, 10, errno::EINVAL),     // unknown flag
        (CMD_TRIM, 0, end, 1, errno::EINVAL),
        (CMD_WRITE_ZEROES, 0, end - 1, 2, errno::ENOSPC),
        (CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 2, errno::EINVAL), // not offered
        (CMD_FLUSH, 0, 1, 0, errno::EINVAL),
        (CMD_BLOCK_STATUS, 0, 0, 10, errno::EINVAL), // no context negotiated
        (CMD_CACHE, 0, end, 1, errno::EINVAL),
        (8, 0, 0, 0, errno::EINVAL),
        (0xffff, 0, 0, 10, errno::EINVAL),
    ];
    for (i, &(kind, flags, offset, len, want)) in cases.iter().enumerate() {
        c.send(flags, kind, i as u64, offset, len, &[]);
        assert_eq!(c.simple(0), (want, i as u64, vec![]), "case {i}: {} {offset}+{len}", command_name(kind));
    }
    // Refused writes are drained: the payload is not parsed as requests.
    let junk = Request { flags: 0, kind: CMD_WRITE, cookie: 666, offset: 0, length: 8 }.encode();
    c.send(0, CMD_WRITE, 100, end - 4, junk.len() as u32, &junk);
    assert_eq!(c.simple(0), (errno::ENOSPC, 100, vec![]));
    c.send(CMD_FLAG_DF, CMD_WRITE, 101, 0, junk.len() as u32, &junk);
    assert_eq!(c.simple(0), (errno::EINVAL, 101, vec![]));
    c.send(0, CMD_WRITE, 102, 0, 0, &[]);
    assert_eq!(c.simple(0), (errno::EINVAL, 102, vec![]));
    assert_eq!(c.read(103, 0, 64), pattern(64));
    c.finish();
    assert_eq!(dev.snapshot(), before, "a refused request changed the export");
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let server = ro_server();
    let mut c = Client::connect(&server);
    let (_, flags) = c.go(false, false);
    assert_ne!(flags & FLAG_READ_ONLY, 0);
    assert_eq!(flags & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FUA), 0);
    assert_ne!(flags & FLAG_CAN_MULTI_CONN, 0);
    assert_eq!(c.write(1, 0, &[1; 4096]), errno::EPERM);
    for kind in [CMD_TRIM, CMD_WRITE_ZEROES] {
        c.send(0, kind, 2, 0, 512, &[]);
        assert_eq!(c.simple(0).0, errno::EPERM);
    }
    c.send(0, CMD_FLUSH, 3, 0, 0, &[]);
    assert_eq!(c.simple(0).0, 0);
    assert_eq!(c.read(4, 0, 4096), pattern(4096));
    c.finish();
}

#[test]
fn fatal_request_errors_close_only_that_connection() {
    let (_, server) = rw_server(2);
    let mut good = Client::ready(&server, false, false);
    // Bad request magic.
    let mut c = Client::ready(&server, false, false);
    c.s.write_all(&[0x25, 0x60, 0x95, 0x14]).unwrap();
    c.s.write_all(&[0; 24]).unwrap();
    assert!(c.closed());
    c.finish();
    // A WRITE above the 32 MiB maximum cannot be skipped safely.
    let mut c = Client::ready(&server, false, false);
    c.send(0, CMD_WRITE, 1, 0, MAX_PAYLOAD + 1, &[]);
    assert!(c.closed());
    c.finish();
    // A header cut short.
    let mut c = Client::ready(&server, false, false);
    c.s.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed());
    c.finish();
    assert_eq!(good.read(1, 0, 100), pattern(100));
    good.finish();
}

#[test]
fn structured_reads_and_errors() {
    let (_, server) = rw_server(2);
    let mut c = Client::ready(&server, true, false);
    c.send(CMD_FLAG_DF, CMD_READ, 42, 4096, 65536, &[]);
    let (f, kind, cookie, d) = c.chunk();
    assert_eq!((f, kind, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 42));
    assert_eq!(u64::from_be_bytes(d[..8].try_into().unwrap()), 4096);
    assert_eq!(d[8..], pattern(4096 + 65536)[4096..]);
    // Errors on READ come as a structured ERROR chunk.
    c.send(0, CMD_READ, 43, SIZE as u64, 1, &[]);
    let (f, kind, cookie, d) = c.chunk();
    assert_eq!((f, kind, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 43));
    assert_eq!(u32::from_be_bytes(d[..4].try_into().unwrap()), errno::EINVAL);
    let mlen = u16::from_be_bytes([d[4], d[5]]) as usize;
    assert_eq!(d.len(), 6 + mlen);
    // Other commands may still use simple replies.
    assert_eq!(c.write(44, 0, b"xy"), 0);
    c.finish();
}

/// `pattern`, whose middle third the device reports as a zero hole.
struct Thirds(MemDev);

impl ReadAt for Thirds {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let third = SIZE as u64 / 3;
        let mut out = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let (stop, zero) = if pos < third {
                (third, false)
            } else if pos < 2 * third {
                (2 * third, true)
            } else {
                (u64::MAX, false)
            };
            let n = stop.min(end) - pos;
            out.push(Extent { len: n, zero });
            pos += n;
        }
        Ok(out)
    }
}

#[test]
fn block_status_reports_the_stacks_extents() {
    let export = Export::read_only(Arc::new(Thirds(MemDev::new(pattern(SIZE)))));
    let server = Server::new(export, config(1)).unwrap();
    let mut c = Client::ready(&server, true, true);
    let third = SIZE as u32 / 3;
    let extents = |d: &[u8]| -> Vec<(u32, u32)> {
        d[4..]
            .chunks(8)
            .map(|e| {
                (
                    u32::from_be_bytes(e[..4].try_into().unwrap()),
                    u32::from_be_bytes(e[4..].try_into().unwrap()),
                )
            })
            .collect()
    };
    c.send(0, CMD_BLOCK_STATUS, 1, 0, SIZE as u32, &[]);
    let (_, kind, _, d) = c.chunk();
    assert_eq!(kind, REPLY_TYPE_BLOCK_STATUS);
    assert_eq!(extents(&d), vec![(third, 0), (third, 3), (SIZE as u32 - 2 * third, 0)]);
    c.send(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 2, 10, 2 * third, &[]);
    let (_, _, _, d) = c.chunk();
    assert_eq!(extents(&d), vec![(third - 10, 0)]);
    c.send(0, CMD_BLOCK_STATUS, 3, third as u64 + 1, 5, &[]);
    let (_, _, _, d) = c.chunk();
    assert_eq!(extents(&d), vec![(5, 3)]);
    // Past the end: EINVAL as a structured error.
    c.send(0, CMD_BLOCK_STATUS, 4, SIZE as u64, 5, &[]);
    let (_, kind, cookie, _) = c.chunk();
    assert_eq!((kind, cookie), (REPLY_TYPE_ERROR, 4));
    c.finish();
}

// ---- base:allocation through a cowfile ----------------------------------

const BLOCK: u64 = 65536;

/// The base of the cow tests: `pattern`, with 64 KiB blocks 2, 3 and 10
/// all zeros.
fn base_with_zero_blocks() -> Vec<u8> {
    let mut data = pattern(SIZE);
    for b in [2, 3, 10] {
        data[b * BLOCK as usize..(b + 1) * BLOCK as usize].fill(0);
    }
    data
}

/// `data` as a cloop image of 64 KiB blocks, made by the real binary.
fn cloop_image(dir: &std::path::Path, data: &[u8]) -> std::path::PathBuf {
    let raw = dir.join("base.img");
    std::fs::write(&raw, data).unwrap();
    let image = dir.join("base.cloop");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_cloopbox"))
        .args(["create_compressed_fs", "-q", "-B", "65536"])
        .arg(&raw)
        .arg(&image)
        .status()
        .unwrap();
    assert!(made.success());
    image
}

/// The stack cloopd serves for `IMAGE --cow COWFILE` (cowfile over the
/// decompressed-block cache over the cloop image, under the meter), built
/// by `serve`, as cloopd builds it; the image's zero blocks compress to a
/// few bytes, so the cache's zero probe finds them on the first query.
fn cow_server(dir: &std::path::Path) -> (Served, Arc<Server>) {
    let image = cloop_image(dir, &base_with_zero_blocks());
    let mut o = Options::new(image);
    o.cow = Some(dir.join("test.cow"));
    o.cache_size = 1 << 20;
    let serve::Stack { export, summary, meter, cow_stats, .. } =
        serve::build(&o, Arc::new(|m| panic!("unexpected warning: {m}"))).unwrap();
    assert!(summary.contains("cache 1") && summary.contains("cow "), "{summary}");
    let served = Served { meter, cow: cow_stats.unwrap() };
    (served, Server::new(export, config(2)).unwrap())
}

/// What the stack's status handles say.
struct Served {
    meter: Arc<cloopbox::control::meter::Metered>,
    cow: cloopbox::control::target::CowStats,
}

/// Every byte the map claims is zero reads as zero, every byte that is not
/// zero is claimed as data, and the map tiles the export.
fn check_map_against_reads(c: &mut Client, map: &[(u64, u64, bool)], size: u64) {
    let mut pos = 0;
    for (i, &(off, len, zero)) in map.iter().enumerate() {
        assert_eq!(off, pos, "gap or overlap in the map");
        pos += len;
        if zero {
            let data = c.read_chunks(1000 + i as u64, off, len as u32);
            if let Some(at) = data.iter().position(|&b| b != 0) {
                panic!("extent {off}+{len} is reported zero but byte {} is {:#x}", off + at as u64, data[at]);
            }
        }
    }
    assert_eq!(pos, size);
}

fn zero_runs(map: &[(u64, u64, bool)]) -> Vec<(u64, u64)> {
    map.iter().filter(|r| r.2).map(|&(o, l, _)| (o, l)).collect()
}

#[test]
fn cow_block_status_reports_what_reads_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, server) = cow_server(dir.path());
    let mut c = Client::connect(&server);
    let (size, _) = c.go(true, true);
    // Nothing written yet: exactly the base's zero blocks.
    let map = c.allocation_map(size);
    assert_eq!(zero_runs(&map), vec![(2 * BLOCK, 2 * BLOCK), (10 * BLOCK, BLOCK)]);
    check_map_against_reads(&mut c, &map, size);
    assert_eq!(c.block_status(1, 0, 2 * BLOCK + 5, 10), vec![(10, STATE_HOLE | STATE_ZERO)]);

    // Data written into a zero block of the base is data; the rest of
    // that block is still zero.
    assert_eq!(c.write(2, 2 * BLOCK + 8192, &[0x5a; 4096]), 0);
    // A whole data block of the base zeroed; a write of zeros punches too.
    c.send(0, CMD_WRITE_ZEROES, 3, 5 * BLOCK, BLOCK as u32, &[]);
    assert_eq!(c.simple(0).0, 0);
    assert_eq!(c.write(4, 7 * BLOCK, &vec![0; 8192]), 0);
    // Trimmed, unaligned: the fully covered 4 KiB block is a hole at
    // least; the partial units around it hold written zeros (data).
    c.send(0, CMD_TRIM, 5, 12 * BLOCK + 1000, 10_000, &[]);
    assert_eq!(c.simple(0).0, 0);
    // Written over a zero block of the base, then zeroed again (a whole
    // 4 KiB: a punched unit shares its filesystem block with others, and
    // only a whole block becomes a hole).
    assert_eq!(c.write(6, 10 * BLOCK, &[7; 4096]), 0);
    c.send(0, CMD_WRITE_ZEROES, 7, 10 * BLOCK, 4096, &[]);
    assert_eq!(c.simple(0).0, 0);

    let map = c.allocation_map(size);
    check_map_against_reads(&mut c, &map, size);
    let zeros = zero_runs(&map);
    let covered = |off: u64, len: u64| zeros.iter().any(|&(o, l)| o <= off && off + len <= o + l);
    assert!(covered(2 * BLOCK, 8192) && covered(2 * BLOCK + 12288, BLOCK - 12288), "{zeros:?}");
    assert!(!covered(2 * BLOCK + 8192, 1), "written data reported as zero: {zeros:?}");
    assert!(covered(3 * BLOCK, BLOCK), "{zeros:?}");
    assert!(covered(5 * BLOCK, BLOCK), "zeroed cowfile units not reported: {zeros:?}");
    assert!(covered(7 * BLOCK, 8192), "a write of zeros not reported: {zeros:?}");
    assert!(covered(12 * BLOCK + 4096, 4096), "trimmed units not reported: {zeros:?}");
    assert!(covered(10 * BLOCK, BLOCK), "re-zeroed units not reported: {zeros:?}");
    assert!(!covered(BLOCK, 1) && !covered(4 * BLOCK, 1) && !covered(11 * BLOCK, 1), "{zeros:?}");

    // REQ_ONE: one extent, starting where asked.
    let one = c.block_status(8, CMD_FLAG_REQ_ONE, 2 * BLOCK, 2 * BLOCK as u32);
    assert_eq!(one, vec![(8192, STATE_HOLE | STATE_ZERO)]);
    c.finish();
    assert!((stack.cow)().cowused > 0);
    assert!(stack.meter.stats().bytes_written > 0);
}

#[test]
fn cow_block_status_of_a_fragmented_cowfile_is_exact_to_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, server) = cow_server(dir.path());
    let mut c = Client::connect(&server);
    let (size, _) = c.go(true, true);
    // Every other 1 KiB unit over the base's zero blocks 2 and 3: 64
    // cowfile units of data between 64 base units of zeros.
    for unit in 0..64u64 {
        assert_eq!(c.write(unit, 2 * BLOCK + unit * 2048, &[1; 1024]), 0);
    }
    let extents = c.block_status(100, 0, 2 * BLOCK, 2 * BLOCK as u32);
    let expect: Vec<(u32, u32)> =
        (0..128).map(|i| (1024, if i % 2 == 0 { 0 } else { STATE_HOLE | STATE_ZERO })).collect();
    assert_eq!(extents, expect);
    let map = c.allocation_map(size);
    check_map_against_reads(&mut c, &map, size);
    c.finish();
}

#[test]
fn cloopd_cow_block_status_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let image = cloop_image(dir.path(), &base_with_zero_blocks());
    let cow = dir.path().join("disk.cow");
    let sock = dir.path().join("nbd.sock");
    let expect_zero = |map: &[(u64, u64, bool)], zeros: &[(u64, u64)]| assert_eq!(zero_runs(map), zeros);

    let mut server = CloopdProcess::start(&image, &cow, &sock);
    let mut c = Client::unix(&sock);
    let (size, _) = c.go(true, true);
    let map = c.allocation_map(size);
    expect_zero(&map, &[(2 * BLOCK, 2 * BLOCK), (10 * BLOCK, BLOCK)]);
    check_map_against_reads(&mut c, &map, size);
    assert_eq!(c.write(1, 3 * BLOCK, &[9; 4096]), 0);
    c.send(0, CMD_WRITE_ZEROES, 2, 6 * BLOCK, BLOCK as u32, &[]);
    assert_eq!(c.simple(0).0, 0);
    let after =
        [(2 * BLOCK, BLOCK), (3 * BLOCK + 4096, BLOCK - 4096), (6 * BLOCK, BLOCK), (10 * BLOCK, BLOCK)];
    let map = c.allocation_map(size);
    expect_zero(&map, &after);
    check_map_against_reads(&mut c, &map, size);
    c.finish();
    server.stop();

    // The cowfile persists, and so does what it says.
    let mut server = CloopdProcess::start(&image, &cow, &sock);
    let mut c = Client::unix(&sock);
    c.go(true, true);
    let map = c.allocation_map(size);
    expect_zero(&map, &after);
    check_map_against_reads(&mut c, &map, size);
    c.finish();
    server.stop();
}

/// The real binary, `cloopd IMAGE --cow COW --unix SOCK`.
struct CloopdProcess(std::process::Child);

impl CloopdProcess {
    fn start(image: &std::path::Path, cow: &std::path::Path, sock: &std::path::Path) -> CloopdProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cloopbox"))
            .arg("cloopd")
            .arg(image)
            .arg("--cow")
            .arg(cow)
            .arg("--unix")
            .arg(sock)
            .arg("-q")
            .spawn()
            .unwrap();
        let mut server = CloopdProcess(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(sock).is_err() {
            assert!(server.0.try_wait().unwrap().is_none(), "cloopd exited at start");
            assert!(Instant::now() < deadline, "cloopd did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// SIGTERM (flushes the cowfile) and a clean exit.
    fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                assert!(status.success(), "cloopd exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "cloopd did not exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for CloopdProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- Concurrency -------------------------------------------------------

/// A layer that is slow for reads and writes at offset 0, and counts
/// flushes.
struct Slow {
    inner: MemDev,
    delay: Duration,
    flushes: AtomicUsize,
    /// The first 4 bytes of the device at each flush.
    seen_at_flush: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ReadAt for Slow {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset == 0 {
            std::thread::sleep(self.delay);
        }
        self.inner.read_at(buf, offset)
    }
}

impl BlockDev for Slow {
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset == 0 {
            std::thread::sleep(self.delay);
        }
        self.inner.write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.write_zeroes(offset, len)
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.trim(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        let mut head = vec![0u8; 4];
        self.inner.read_at(&mut head, 0)?;
        self.seen_at_flush.lock().unwrap().push(head);
        self.inner.flush()
    }
}

fn slow_server(threads: usize) -> (Arc<Slow>, Arc<Server>) {
    let dev = Arc::new(Slow {
        inner: MemDev::new(pattern(SIZE)),
        delay: Duration::from_millis(300),
        flushes: AtomicUsize::new(0),
        seen_at_flush: std::sync::Mutex::new(Vec::new()),
    });
    (dev.clone(), Server::new(Export::writable(dev), config(threads)).unwrap())
}

#[test]
fn replies_come_out_of_order() {
    let (_, server) = slow_server(2);
    let mut c = Client::ready(&server, false, false);
    // One write, so that the server finds both requests in its buffer (a
    // request that is alone may be answered by the connection thread).
    let mut both = Request { flags: 0, kind: CMD_READ, cookie: 1, offset: 0, length: 512 }.encode().to_vec();
    both.extend_from_slice(
        &Request { flags: 0, kind: CMD_READ, cookie: 2, offset: 4096, length: 512 }.encode(),
    );
    c.s.write_all(&both).unwrap();
    let (e, first, d) = c.simple(512);
    assert_eq!((e, first), (0, 2), "the fast read must overtake the slow one");
    assert_eq!(d, pattern(4096 + 512)[4096..]);
    assert_eq!(c.simple(512).1, 1);
    c.finish();
}

#[test]
fn flush_waits_for_earlier_writes_of_its_connection() {
    let (dev, server) = slow_server(2);
    let mut c = Client::ready(&server, false, false);
    let mut both = Request { flags: 0, kind: CMD_WRITE, cookie: 1, offset: 0, length: 4 }.encode().to_vec();
    both.extend_from_slice(b"slow");
    both.extend_from_slice(&Request { flags: 0, kind: CMD_FLUSH, cookie: 2, offset: 0, length: 0 }.encode());
    c.s.write_all(&both).unwrap();
    // Replies may come in either order (the write's reply can be sent
    // after the flush it released); what counts is that the flush ran
    // only once the write had reached the device.
    let mut replies: Vec<(u32, u64)> = (0..2).map(|_| c.simple(0)).map(|(e, k, _)| (e, k)).collect();
    replies.sort_by_key(|r| r.1);
    assert_eq!(replies, vec![(0, 1), (0, 2)]);
    assert_eq!(dev.flushes.load(Ordering::SeqCst), 1);
    assert_eq!(
        *dev.seen_at_flush.lock().unwrap(),
        vec![b"slow".to_vec()],
        "FLUSH ran before the write it follows"
    );
    assert_eq!(c.read(3, 0, 4), b"slow");
    c.finish();
}

#[test]
fn many_requests_in_flight_with_cookies_echoed() {
    let (dev, server) = rw_server(3);
    let c = Client::ready(&server, false, false);
    let mut reader = c.s.try_clone().unwrap();
    // Writes to distinct 4 KiB slots and reads of other slots, all pipelined.
    let n = 500u64;
    let expected: Vec<(u64, Option<Vec<u8>>)> = (0..n)
        .map(|i| {
            let cookie = 0xfeed_0000_0000_0000 | i << 8 | (i % 7);
            if i % 2 == 0 {
                (cookie, None)
            } else {
                let off = (i as usize * 4096 + 512) % (SIZE / 2);
                (cookie, Some(pattern(SIZE)[SIZE / 2 + off..][..1024].to_vec()))
            }
        })
        .collect();
    let sender = {
        let mut s = c.s.try_clone().unwrap();
        let expected = expected.clone();
        std::thread::spawn(move || {
            for (i, (cookie, read)) in expected.iter().enumerate() {
                let mut b;
                match read {
                    None => {
                        b = Request {
                            flags: 0,
                            kind: CMD_WRITE,
                            cookie: *cookie,
                            offset: i as u64 * 1024,
                            length: 1024,
                        }
                        .encode()
                        .to_vec();
                        b.extend(std::iter::repeat_n(i as u8, 1024));
                    }
                    Some(_) => {
                        let off = (i * 4096 + 512) % (SIZE / 2);
                        b = Request {
                            flags: 0,
                            kind: CMD_READ,
                            cookie: *cookie,
                            offset: (SIZE / 2 + off) as u64,
                            length: 1024,
                        }
                        .encode()
                        .to_vec();
                    }
                }
                s.write_all(&b).unwrap();
            }
        })
    };
    let mut pending: std::collections::HashMap<u64, Option<Vec<u8>>> = expected.into_iter().collect();
    while !pending.is_empty() {
        let mut h = [0u8; 16];
        reader.read_exact(&mut h).unwrap();
        assert_eq!(u32::from_be_bytes(h[..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC);
        assert_eq!(u32::from_be_bytes(h[4..8].try_into().unwrap()), 0);
        let cookie = u64::from_be_bytes(h[8..].try_into().unwrap());
        let want =
            pending.remove(&cookie).unwrap_or_else(|| panic!("unknown or repeated cookie {cookie:#x}"));
        if let Some(want) = want {
            let mut d = vec![0u8; 1024];
            reader.read_exact(&mut d).unwrap();
            assert_eq!(d, want, "cookie {cookie:#x}");
        }
    }
    sender.join().unwrap();
    c.finish();
    let snap = dev.snapshot();
    for i in (0..n as usize).step_by(2) {
        assert!(snap[i * 1024..][..1024].iter().all(|&b| b == i as u8), "write {i} lost");
    }
}

#[test]
fn concurrent_clients_see_one_export() {
    let (_, server) = rw_server(2);
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut c = Client::ready(&server, t % 2 == 0, false);
                let off = u64::from(t) * 65536;
                for round in 0..20u8 {
                    let data = vec![t ^ round; 4096];
                    assert_eq!(c.write(u64::from(round), off, &data), 0);
                    if t % 2 == 1 {
                        assert_eq!(c.read(1000 + u64::from(round), off, 4096), data);
                    }
                }
                c.finish();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // A client that connects afterwards sees every client's last write.
    let mut c = Client::ready(&server, false, false);
    for t in 0..8u8 {
        assert_eq!(c.read(1, u64::from(t) * 65536, 4096), vec![t ^ 19; 4096]);
    }
    c.finish();
}

#[test]
fn a_client_that_never_reads_replies_does_not_stall_others() {
    // One worker: if it blocked on the stuck client's socket, nobody else
    // would be served.
    let (_, server) = rw_server(1);
    let mut stuck = Client::ready(&server, false, false);
    for i in 0..40 {
        stuck.send(0, CMD_READ, i, 0, 1 << 20, &[]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut good = Client::ready(&server, false, false);
    for i in 0..20 {
        assert_eq!(good.read(i, 4096, 4096), pattern(8192)[4096..]);
    }
    good.finish();
    stuck.finish();
}

#[test]
fn the_server_survives_garbage_and_keeps_serving() {
    let (_, server) = rw_server(2);
    let mut seed = 0x1234_5678_9abc_def0u64;
    for round in 0..50 {
        let mut c = Client::raw(&server);
        let len = 1 + (seed % 300) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        // Sometimes a valid prefix, to reach deeper states.
        if round % 2 == 0 {
            let mut g = [0u8; 18];
            c.s.read_exact(&mut g).unwrap();
            c.client_flags(FLAG_C_FIXED_NEWSTYLE);
            c.option(OPT_GO, &info_data(b"", &[]));
            let _ = c.replies();
        }
        let _ = c.s.write_all(&junk);
        c.finish();
    }
    let mut c = Client::ready(&server, false, false);
    assert_eq!(c.read(1, 0, 4096), pattern(4096));
    c.finish();
    assert_eq!(server.connections(), 0);
}

// ---- Server-level behaviour --------------------------------------------

#[test]
fn listener_connection_limit_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nbd.sock");
    let export = Export::read_only(Arc::new(MemDev::new(pattern(SIZE))));
    let server = Server::new(export, Config { max_connections: 2, ..config(2) }).unwrap();
    let accept = server
        .listen(Listener::Unix(std::os::unix::net::UnixListener::bind(&path).unwrap(), path.clone()))
        .unwrap();
    let connect = || {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut g = [0u8; 18];
        let n = s.read(&mut g).unwrap();
        (s, n)
    };
    let (mut a, n) = connect();
    assert_eq!(n, 18);
    let (_b, n) = connect();
    assert_eq!(n, 18);
    let (_c, n) = connect();
    assert_eq!(n, 0, "a third connection must be refused");
    // Take `a` into transmission, then stop the server under it.
    a.write_all(&FLAG_C_FIXED_NEWSTYLE.to_be_bytes()).unwrap();
    let mut go = IHAVEOPT.to_be_bytes().to_vec();
    go.extend_from_slice(&OPT_GO.to_be_bytes());
    let d = info_data(b"", &[]);
    go.extend_from_slice(&(d.len() as u32).to_be_bytes());
    go.extend_from_slice(&d);
    a.write_all(&go).unwrap();
    let mut r = vec![0u8; 20 + 12 + 20 + 14 + 20];
    a.read_exact(&mut r).unwrap();
    assert!(server.stop(Duration::from_secs(10)), "connections did not finish");
    accept.join().unwrap();
    assert!(!path.exists(), "the socket file was left behind");
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(server.connections(), 0);
}

#[test]
fn transmission_without_a_handshake_for_the_kernel_client() {
    // The kernel client never negotiates: the server starts in
    // transmission with simple replies.
    let (dev, server) = rw_server(2);
    let (a, mut b) = UnixStream::pair().unwrap();
    let srv = server.clone();
    let h = std::thread::spawn(move || srv.serve_transmission(a, Default::default(), "kernel"));
    let mut hdr =
        Request { flags: 0, kind: CMD_WRITE, cookie: 7 << 32 | 3, offset: 512, length: 4 }.encode().to_vec();
    hdr.extend_from_slice(b"kern");
    b.write_all(&hdr).unwrap();
    let mut r = [0u8; 16];
    b.read_exact(&mut r).unwrap();
    assert_eq!(r, simple_reply(7 << 32 | 3, 0));
    b.write_all(&Request { flags: 0, kind: CMD_DISC, cookie: 0, offset: 0, length: 0 }.encode()).unwrap();
    assert_eq!(h.join().unwrap(), cloopbox::nbd::End::Disconnect);
    assert_eq!(&dev.snapshot()[512..516], b"kern");
}

#[test]
fn layer_errors_become_eio_and_the_connection_continues() {
    struct Broken;
    impl ReadAt for Broken {
        fn size(&self) -> u64 {
            1 << 16
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            if offset >= 4096 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("block {}: bad zlib stream", offset / 4096),
                ));
            }
            buf.fill(7);
            Ok(())
        }
    }
    let server = Server::new(Export::read_only(Arc::new(Broken)), config(1)).unwrap();
    let mut c = Client::ready(&server, false, false);
    c.send(0, CMD_READ, 1, 8192, 100, &[]);
    assert_eq!(c.simple(100), (errno::EIO, 1, vec![]), "no data may follow an error reply");
    assert_eq!(c.read(2, 0, 10), vec![7; 10]);
    c.finish();
}

// ---- Hostile byte streams ------------------------------------------------

/// A complete, valid client session: handshake with every option, then
/// one request of each command.
fn valid_session() -> Vec<u8> {
    let mut b = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes().to_vec();
    let mut opt = |o: u32, d: &[u8]| {
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&o.to_be_bytes());
        b.extend_from_slice(&(d.len() as u32).to_be_bytes());
        b.extend_from_slice(d);
    };
    opt(OPT_LIST, &[]);
    opt(OPT_STRUCTURED_REPLY, &[]);
    opt(OPT_LIST_META_CONTEXT, &meta_data(b"", &[b"base:"]));
    opt(OPT_SET_META_CONTEXT, &meta_data(b"", &[b"base:allocation"]));
    opt(OPT_INFO, &info_data(b"", &[INFO_BLOCK_SIZE, INFO_NAME]));
    opt(99, b"xyz");
    opt(OPT_GO, &info_data(b"disk", &[INFO_DESCRIPTION]));
    let reqs: &[(u16, u16, u64, u32)] = &[
        (CMD_READ, CMD_FLAG_DF, 0, 4096),
        (CMD_WRITE, CMD_FLAG_FUA, 4096, 512),
        (CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 65536),
        (CMD_TRIM, 0, 8192, 4096),
        (CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 16384, 4096),
        (CMD_CACHE, 0, 0, 65536),
        (CMD_FLUSH, 0, 0, 0),
        (CMD_READ, 0, SIZE as u64 - 100, 100),
        (CMD_DISC, 0, 0, 0),
    ];
    for (i, &(kind, flags, offset, length)) in reqs.iter().enumerate() {
        b.extend_from_slice(&Request { flags, kind, cookie: i as u64, offset, length }.encode());
        if kind == CMD_WRITE {
            b.extend(std::iter::repeat_n(0xee, length as usize));
        }
    }
    b
}

#[test]
fn mutated_client_streams_never_panic_or_hang() {
    let dev = Arc::new(MemDev::new(pattern(SIZE)));
    let mut export = Export::writable(dev);
    export.name = "disk".into();
    let cfg = Config { threads: 0, log_budget: 0, ..config(0) };
    let server = Server::new(export, cfg).unwrap();
    let base = valid_session();
    // The unmutated session runs to the end (DISC).
    assert_eq!(
        server.serve_io(io::Cursor::new(base.clone()), io::sink()),
        Some(cloopbox::nbd::End::Disconnect)
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut m = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % m.len() as u64) as usize;
            match next() % 4 {
                0 => m[at] ^= 1 << (next() % 8),
                1 => m[at] = next() as u8,
                2 => m.truncate(at),
                _ => {
                    // Plant a large length field somewhere.
                    let end = (at + 4).min(m.len());
                    m[at..end].fill(0xff);
                }
            }
            if m.is_empty() {
                break;
            }
        }
        let _ = server.serve_io(io::Cursor::new(m), io::sink());
    }
}

#[test]
fn stop_gets_rid_of_a_client_that_never_reads() {
    let (_, server) = rw_server(1);
    let mut stuck = Client::ready(&server, false, false);
    // Far more reply data than the socket buffers hold.
    for i in 0..200 {
        stuck.send(0, CMD_READ, i, 0, 1 << 20, &[]);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.stop(Duration::from_secs(2)), "the stuck connection outlived stop()");
    assert_eq!(server.connections(), 0);
    stuck.finish();
}

#[test]
fn a_write_whose_payload_never_comes_changes_nothing() {
    let dev = Arc::new(MemDev::new(pattern(33 << 20)));
    let before = dev.snapshot();
    let server = Server::new(Export::writable(dev.clone()), config(1)).unwrap();
    let mut c = Client::ready(&server, false, false);
    // Announce the maximum payload, send a little of it, then hang up.
    c.send(0, CMD_WRITE, 1, 0, MAX_PAYLOAD, &[0xcc; 1000]);
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.closed());
    c.finish();
    assert!(dev.snapshot() == before, "a partial payload was written");
}
