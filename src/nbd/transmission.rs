//! The transmission phase: read requests, run them, send replies.
//!
//! One thread per connection reads and validates requests (see
//! [`super::request`]); a WRITE's payload is read completely before the
//! next header. Accepted requests go to the shared [`Pool`], or are
//! answered on the connection thread when the stack says the read is cheap
//! (a cache hit), which saves two thread hand-overs per request. Replies go
//! out in completion order through [`Replies`], each one whole. A request
//! that is alone (nothing else in flight or buffered) also runs inline: at
//! queue depth 1 the hand-over would cost more than it could overlap.
//!
//! Bounds: a request is admitted only when the connection has fewer than
//! `max_requests` in flight and their buffers fit `max_bytes` (one request
//! larger than that is admitted alone); the connection thread simply stops
//! reading until there is room.
//!
//! Flush ordering: proto.md only requires a FLUSH to cover writes already
//! replied to, which the stack's global flush does. We also make it wait
//! for every write, trim and zero this connection received before the
//! FLUSH (the [`Barrier`]), so a client that pipelines "write; flush"
//! without waiting gets what it most likely meant.
//!
//! This phase needs no handshake state beyond [`Negotiated`], so a socket
//! handed to the kernel's NBD client (which never negotiates) is served by
//! calling [`serve`] directly with `Negotiated::default()`.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::export::Export;
use super::handshake::{Negotiated, ALLOCATION_CONTEXT_ID};
use super::pool::Pool;
use super::proto::*;
use super::request::{validate, Command, Session, Verdict};
use super::wire::{Batch, Inflight, Replies, Ticket, Wire};
use crate::blockdev::{BlockDev, Extent, ReadAt};
use crate::bufpool::Buf;

/// Per-connection bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests admitted but not yet answered. 128 matches the kernel
    /// client's queue depth, so it never waits on us for a slot.
    pub max_requests: usize,
    /// Bytes of request and reply buffers held by those requests.
    pub max_bytes: usize,
    /// After the client leaves or misbehaves, how long replies still in
    /// the queue may take before the socket is shut down under them.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_requests: 128, max_bytes: 64 << 20, drain_timeout: Duration::from_secs(10) }
    }
}

/// Extents per `BLOCK_STATUS` reply. proto.md allows 2^20; clients ask
/// again for the rest, and a smaller cap bounds the reply buffer (512 KiB).
const MAX_EXTENTS: usize = 1 << 16;
/// CACHE prefetches at most this much per request, in [`CACHE_CHUNK`]
/// pieces: it is a hint, and a bounded one cannot tie up a worker.
const CACHE_LIMIT: u64 = MAX_PAYLOAD as u64;
const CACHE_CHUNK: usize = 1 << 20;
/// WRITE payloads up to this size are read into a pooled buffer of their
/// full length; larger ones grow with the bytes that actually arrive, so
/// a client that announces 32 MiB and sends nothing costs us little.
/// 128 KiB is the kernel client's usual request.
const POOLED_PAYLOAD: usize = 128 * 1024;
// A READ's reply header sits in the pool buffers' headroom.
const _: () = assert!(STRUCTURED_REPLY_LEN + 8 <= crate::bufpool::HEADROOM);

/// One line per event on stderr, prefixed with the server's and the
/// connection's name, and limited per connection so that a hostile client
/// cannot flood the log.
pub struct ConnLog {
    prefix: String,
    budget: AtomicU32,
}

impl ConnLog {
    /// At most `budget` lines; 0 silences the connection.
    pub fn new(prefix: String, budget: u32) -> ConnLog {
        ConnLog { prefix, budget: AtomicU32::new(budget) }
    }

    pub fn line(&self, msg: std::fmt::Arguments<'_>) {
        match self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)) {
            Ok(1) => eprintln!("{}: {msg} (further messages from this client suppressed)", self.prefix),
            Ok(_) => eprintln!("{}: {msg}", self.prefix),
            Err(_) => {}
        }
    }
}

/// Maps a layer's error to the NBD error set, in one place (the nbdkit
/// `nbd_errno` rule): anything unrecognised is EIO.
pub fn nbd_errno(e: &io::Error) -> u32 {
    use io::ErrorKind as K;
    if let Some(code) = e.raw_os_error() {
        return match rustix::io::Errno::from_raw_os_error(code) {
            rustix::io::Errno::PERM | rustix::io::Errno::ROFS | rustix::io::Errno::ACCESS => errno::EPERM,
            rustix::io::Errno::NOMEM => errno::ENOMEM,
            rustix::io::Errno::INVAL => errno::EINVAL,
            rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT | rustix::io::Errno::FBIG => errno::ENOSPC,
            rustix::io::Errno::OVERFLOW => errno::EOVERFLOW,
            rustix::io::Errno::NOTSUP => errno::ENOTSUP,
            rustix::io::Errno::SHUTDOWN => errno::ESHUTDOWN,
            _ => errno::EIO,
        };
    }
    match e.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => errno::EPERM,
        K::OutOfMemory => errno::ENOMEM,
        K::InvalidInput => errno::EINVAL,
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => errno::ENOSPC,
        K::Unsupported => errno::ENOTSUP,
        _ => errno::EIO,
    }
}

/// Why a connection's transmission phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `NBD_CMD_DISC`.
    Disconnect,
    /// The client closed the connection between requests.
    Eof,
    /// We closed it: the message says why.
    Closed(String),
}

/// Makes a FLUSH wait for the writes its connection received before it.
#[derive(Default)]
struct Barrier {
    state: Mutex<(u64, BTreeMap<u64, usize>)>,
    cv: Condvar,
}

/// A write in progress; leaves the barrier when dropped.
struct WriteToken<'a> {
    barrier: &'a Barrier,
    epoch: u64,
}

impl Barrier {
    fn begin_write(&self) -> u64 {
        let mut s = self.state.lock().expect("barrier lock is never poisoned");
        let e = s.0;
        *s.1.entry(e).or_insert(0) += 1;
        e
    }

    fn end_write(&self, epoch: u64) {
        let mut s = self.state.lock().expect("barrier lock is never poisoned");
        if let Some(n) = s.1.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                s.1.remove(&epoch);
            }
        }
        self.cv.notify_all();
    }

    /// Opens a new epoch and waits until every write of the older ones is
    /// done. Writes of later epochs do not hold it up.
    fn wait_for_earlier_writes(&self) {
        let mut s = self.state.lock().expect("barrier lock is never poisoned");
        let e = s.0;
        s.0 += 1;
        while s.1.range(..=e).next().is_some() {
            s = self.cv.wait(s).expect("barrier lock is never poisoned");
        }
    }
}

impl Drop for WriteToken<'_> {
    fn drop(&mut self) {
        self.barrier.end_write(self.epoch);
    }
}

/// State shared by the connection thread and its jobs.
struct Conn {
    export: Arc<Export>,
    replies: Arc<Replies>,
    barrier: Barrier,
    structured: bool,
    log: Arc<ConnLog>,
}

/// Serves requests from `reader` until the client disconnects or breaks
/// the protocol, then waits for its in-flight requests. Replies go to
/// `wire`.
pub fn serve<R: Read>(
    reader: R,
    wire: Arc<dyn Wire>,
    export: Arc<Export>,
    pool: &Pool,
    neg: Negotiated,
    limits: &Limits,
    log: Arc<ConnLog>,
) -> End {
    let session = Session {
        size: export.size(),
        flags: export.flags() | if neg.structured { FLAG_SEND_DF } else { 0 },
        structured: neg.structured,
        allocation_context: neg.allocation_context,
    };
    let conn = Arc::new(Conn {
        export,
        replies: Replies::new(wire.clone()),
        barrier: Barrier::default(),
        structured: neg.structured,
        log,
    });
    let inflight = Inflight::new(limits.max_requests, limits.max_bytes);
    let mut r = BufReader::with_capacity(256 * 1024, reader);
    let end = request_loop(&mut r, &conn, &session, &inflight, pool);
    if let End::Closed(why) = &end {
        conn.log.line(format_args!("closing the connection: {why}"));
    }
    // Give queued replies a chance, then cut the socket so a client that
    // does not read cannot keep us here; jobs still running finish anyway.
    if !inflight.wait_idle(Some(limits.drain_timeout)) {
        conn.log.line(format_args!("replies not read within {:?}; dropping them", limits.drain_timeout));
    }
    wire.close();
    inflight.wait_idle(None);
    conn.replies.finish();
    end
}

/// Reads a request header; `Ok(false)` on a clean EOF before its first byte.
fn read_header(r: &mut impl Read, hdr: &mut [u8; REQUEST_LEN]) -> io::Result<bool> {
    let mut got = 0;
    while got < hdr.len() {
        match r.read(&mut hdr[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn request_loop<R: Read>(
    r: &mut BufReader<R>,
    conn: &Arc<Conn>,
    session: &Session,
    inflight: &Arc<Inflight>,
    pool: &Pool,
) -> End {
    let mut batch = Batch::default();
    let end = request_loop_batched(r, conn, session, inflight, pool, &mut batch);
    batch.flush(&conn.replies);
    end
}

/// Replies produced on the connection thread are collected in `batch` and
/// sent with one system call whenever the thread is about to block (on
/// reading, or on admission), instead of one call each.
fn request_loop_batched<R: Read>(
    r: &mut BufReader<R>,
    conn: &Arc<Conn>,
    session: &Session,
    inflight: &Arc<Inflight>,
    pool: &Pool,
    batch: &mut Batch,
) -> End {
    let mut hdr = [0u8; REQUEST_LEN];
    loop {
        if conn.replies.is_dead() {
            return End::Closed("the client stopped accepting replies".into());
        }
        if r.buffer().len() < REQUEST_LEN {
            batch.flush(&conn.replies);
        }
        match read_header(r, &mut hdr) {
            Ok(true) => {}
            Ok(false) => return End::Eof,
            Err(e) => return End::Closed(format!("reading a request: {e}")),
        }
        let req = match Request::parse(&hdr) {
            Ok(req) => req,
            Err(e) => return End::Closed(e.to_string()),
        };
        match validate(&req, session) {
            Verdict::Accept(cmd) => {
                if let Err(e) = dispatch(r, conn, &req, cmd, inflight, pool, batch) {
                    return End::Closed(format!("reading the payload of {}: {e}", describe(&req)));
                }
            }
            Verdict::Reject { errno, drain, reason } => {
                conn.log.line(format_args!("{}: {reason} ({})", describe(&req), errno::name(errno)));
                if r.buffer().len() < drain as usize {
                    batch.flush(&conn.replies);
                }
                let drained = io::copy(&mut r.take(u64::from(drain)), &mut io::sink());
                if !matches!(drained, Ok(n) if n == u64::from(drain)) {
                    return End::Closed(format!("the payload of {} ended early", describe(&req)));
                }
                let ticket = admit(inflight, 0, batch, &conn.replies);
                let reply = conn.error_reply(req.cookie, req.kind, errno, reason);
                batch.add(reply.into(), ticket, &conn.replies);
            }
            Verdict::Disconnect => return End::Disconnect,
            Verdict::Close(why) => return End::Closed(format!("{}: {why}", describe(&req))),
        }
    }
}

fn describe(req: &Request) -> String {
    format!("{} offset {} length {}", command_name(req.kind), req.offset, req.length)
}

/// Takes a ticket; if that has to wait, the batch goes out first, since
/// its replies hold tickets too.
fn admit(inflight: &Arc<Inflight>, bytes: usize, batch: &mut Batch, replies: &Arc<Replies>) -> Ticket {
    inflight.try_acquire(bytes).unwrap_or_else(|| {
        batch.flush(replies);
        inflight.acquire(bytes)
    })
}

/// Admits an accepted request, reads its payload and runs it, inline or on
/// the pool.
fn dispatch<R: Read>(
    r: &mut BufReader<R>,
    conn: &Arc<Conn>,
    req: &Request,
    cmd: Command,
    inflight: &Arc<Inflight>,
    pool: &Pool,
    batch: &mut Batch,
) -> io::Result<()> {
    let bytes = match cmd {
        Command::Read { len, .. } | Command::Write { len, .. } => len as usize,
        Command::Cache { len, .. } => (len as usize).min(CACHE_CHUNK),
        _ => 0,
    };
    let ticket = admit(inflight, bytes, batch, &conn.replies);
    let mut payload = Buf::default();
    if let Command::Write { len, .. } = cmd {
        if r.buffer().len() < len as usize {
            batch.flush(&conn.replies);
        }
        payload = read_payload(r, len as usize)?;
    }
    let write = cmd.is_write().then(|| conn.barrier.begin_write());
    let cookie = req.cookie;
    // Inline when it is cheap, or when this is the only request in flight
    // and no other is waiting in the buffer: the thread would only block
    // in read() otherwise, and a hand-over costs two context switches at
    // queue depth 1.
    let alone = inflight.count() == 1 && r.buffer().is_empty();
    let inline = alone
        || match cmd {
            Command::Read { offset, len } => conn.export.dev.is_resident(offset, len.into()),
            Command::Write { offset, len, fua: false }
            | Command::Trim { offset, len, fua: false }
            | Command::WriteZeroes { offset, len, fua: false, .. } => {
                conn.export.dev.write_is_fast(offset, len.into())
            }
            _ => false,
        };
    if inline {
        batch.add(conn.run(cookie, cmd, payload, write), ticket, &conn.replies);
    } else {
        let conn = conn.clone();
        pool.spawn(move || {
            let reply = conn.run(cookie, cmd, payload, write);
            conn.replies.send(reply, ticket);
        });
    }
    Ok(())
}

/// Reads a WRITE's payload of `len` bytes (already validated against the
/// maximum). Up to [`POOLED_PAYLOAD`] it goes into a recycled buffer;
/// beyond, the buffer grows with what arrives, from 128 KiB reserved.
fn read_payload(r: &mut impl Read, len: usize) -> io::Result<Buf> {
    if len <= POOLED_PAYLOAD {
        let mut buf = Buf::new(len);
        r.read_exact(&mut buf)?;
        return Ok(buf);
    }
    let mut payload = Vec::with_capacity(POOLED_PAYLOAD);
    let got = r.take(len as u64).read_to_end(&mut payload)?;
    if got != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(payload.into())
}

impl Conn {
    /// Runs one request and returns its reply.
    fn run(&self, cookie: u64, cmd: Command, payload: Buf, write: Option<u64>) -> Buf {
        let _token = write.map(|epoch| WriteToken { barrier: &self.barrier, epoch });
        let dev = &self.export.dev;
        let result = match cmd {
            Command::Read { offset, len } => return self.read(cookie, offset, len),
            Command::BlockStatus { offset, len, req_one } => {
                return self.block_status(cookie, offset, len, req_one)
            }
            Command::Write { offset, fua, .. } => {
                dev.write_at(&payload, offset).and_then(|_| if fua { dev.flush() } else { Ok(()) })
            }
            Command::Flush => {
                self.barrier.wait_for_earlier_writes();
                dev.flush()
            }
            Command::Trim { offset, len, fua } => {
                dev.trim(offset, len.into()).and_then(|_| if fua { dev.flush() } else { Ok(()) })
            }
            Command::WriteZeroes { offset, len, fua, .. } => {
                dev.write_zeroes(offset, len.into()).and_then(|_| if fua { dev.flush() } else { Ok(()) })
            }
            Command::Cache { offset, len } => self.prefetch(offset, len),
        };
        drop(payload);
        match result {
            Ok(()) => simple_reply(cookie, 0).to_vec().into(),
            Err(e) => self.fail(cookie, cmd_kind(&cmd), cmd_range(&cmd), &e),
        }
    }

    /// Logs a failed request; returns the reply with its mapped error.
    fn fail(&self, cookie: u64, kind: u16, (offset, len): (u64, u32), e: &io::Error) -> Buf {
        let code = nbd_errno(e);
        self.log.line(format_args!(
            "{} offset {offset} length {len}: {e} ({})",
            command_name(kind),
            errno::name(code)
        ));
        self.error_reply(cookie, kind, code, &e.to_string()).into()
    }

    fn error_reply(&self, cookie: u64, kind: u16, code: u32, msg: &str) -> Vec<u8> {
        // A READ or BLOCK_STATUS under structured replies must get a
        // structured answer; everything else may use a simple reply.
        if self.structured && matches!(kind, CMD_READ | CMD_BLOCK_STATUS) {
            structured_error(cookie, code, msg)
        } else {
            simple_reply(cookie, code).to_vec()
        }
    }

    /// The data is read into the reply buffer behind room for the header,
    /// so the header is written only once the read succeeded (an error
    /// after a simple-reply header would force a hard disconnect). The
    /// buffer comes from the pool and is not zeroed: the read fills all
    /// of it, or fails and the buffer is not sent.
    fn read(&self, cookie: u64, offset: u64, len: u32) -> Buf {
        let head = if self.structured { STRUCTURED_REPLY_LEN + 8 } else { SIMPLE_REPLY_LEN };
        let mut buf = Buf::new(head + len as usize);
        if let Err(e) = self.export.dev.read_at(&mut buf[head..], offset) {
            return self.fail(cookie, CMD_READ, (offset, len), &e);
        }
        if self.structured {
            write_structured_header(&mut buf, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, cookie, len + 8);
            buf[STRUCTURED_REPLY_LEN..head].copy_from_slice(&offset.to_be_bytes());
        } else {
            write_simple_reply(&mut buf, cookie, 0);
        }
        buf
    }

    fn prefetch(&self, offset: u64, len: u32) -> io::Result<()> {
        let total = u64::from(len).min(CACHE_LIMIT);
        if let Some(done) = self.export.dev.prefetch(offset, total) {
            return done;
        }
        let mut scratch = vec![0u8; (total as usize).min(CACHE_CHUNK)];
        let mut done = 0u64;
        while done < total {
            let n = ((total - done) as usize).min(scratch.len());
            self.export.dev.read_at(&mut scratch[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn block_status(&self, cookie: u64, offset: u64, len: u32, req_one: bool) -> Buf {
        let raw = match self.export.dev.extents(offset, len.into()) {
            Ok(raw) => raw,
            Err(e) => return self.fail(cookie, CMD_BLOCK_STATUS, (offset, len), &e),
        };
        let limit = if req_one { 1 } else { MAX_EXTENTS };
        let extents = clip_extents(&raw, len, limit);
        let payload_len = 4 + 8 * extents.len();
        let mut buf = vec![0u8; STRUCTURED_REPLY_LEN + payload_len];
        write_structured_header(
            &mut buf,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            cookie,
            payload_len as u32,
        );
        buf[20..24].copy_from_slice(&ALLOCATION_CONTEXT_ID.to_be_bytes());
        for (i, (l, f)) in extents.iter().enumerate() {
            let at = 24 + 8 * i;
            buf[at..at + 4].copy_from_slice(&l.to_be_bytes());
            buf[at + 4..at + 8].copy_from_slice(&f.to_be_bytes());
        }
        buf.into()
    }
}

/// The stack's runs as `base:allocation` (length, flags) pairs: zeros are
/// a hole that reads as zeros. Merges neighbours with equal flags, drops
/// empty runs, and cuts the list to the requested length and at most
/// `limit` entries. Always returns at least one extent: a stack that
/// described nothing gets the safe answer "data".
pub fn clip_extents(raw: &[Extent], len: u32, limit: usize) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut left = u64::from(len);
    for e in raw.iter().filter(|e| e.len > 0) {
        if left == 0 {
            break;
        }
        let take = e.len.min(left);
        left -= take;
        let flags = if e.zero { STATE_HOLE | STATE_ZERO } else { 0 };
        let full = out.len() == limit;
        match out.last_mut() {
            Some(last) if last.1 == flags => last.0 += take as u32,
            _ if full => break,
            _ => out.push((take as u32, flags)),
        }
    }
    if out.is_empty() {
        out.push((len, 0));
    }
    out
}

fn cmd_kind(cmd: &Command) -> u16 {
    match cmd {
        Command::Read { .. } => CMD_READ,
        Command::Write { .. } => CMD_WRITE,
        Command::Flush => CMD_FLUSH,
        Command::Trim { .. } => CMD_TRIM,
        Command::Cache { .. } => CMD_CACHE,
        Command::WriteZeroes { .. } => CMD_WRITE_ZEROES,
        Command::BlockStatus { .. } => CMD_BLOCK_STATUS,
    }
}

fn cmd_range(cmd: &Command) -> (u64, u32) {
    match *cmd {
        Command::Read { offset, len }
        | Command::Write { offset, len, .. }
        | Command::Trim { offset, len, .. }
        | Command::Cache { offset, len }
        | Command::WriteZeroes { offset, len, .. }
        | Command::BlockStatus { offset, len, .. } => (offset, len),
        Command::Flush => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_wire_set() {
        let os = |e: rustix::io::Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert_eq!(nbd_errno(&os(rustix::io::Errno::ROFS)), errno::EPERM);
        assert_eq!(nbd_errno(&os(rustix::io::Errno::FBIG)), errno::ENOSPC);
        assert_eq!(nbd_errno(&os(rustix::io::Errno::DQUOT)), errno::ENOSPC);
        assert_eq!(nbd_errno(&os(rustix::io::Errno::BADF)), errno::EIO);
        assert_eq!(nbd_errno(&io::Error::new(io::ErrorKind::InvalidData, "bad block")), errno::EIO);
        assert_eq!(nbd_errno(&io::Error::new(io::ErrorKind::InvalidInput, "range")), errno::EINVAL);
        assert_eq!(nbd_errno(&io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "ro")), errno::EPERM);
        assert_eq!(nbd_errno(&io::Error::new(io::ErrorKind::StorageFull, "full")), errno::ENOSPC);
    }

    #[test]
    fn extents_are_merged_clipped_and_never_empty() {
        let (z, d) = (Extent::zero, Extent::data);
        let raw = [z(10), z(5), d(0), d(20), z(100)];
        assert_eq!(clip_extents(&raw, 40, 10), vec![(15, 3), (20, 0), (5, 3)]);
        assert_eq!(clip_extents(&raw, 40, 1), vec![(15, 3)]);
        assert_eq!(clip_extents(&raw, 12, 10), vec![(12, 3)]);
        assert_eq!(clip_extents(&[], 7, 10), vec![(7, 0)]);
        assert_eq!(clip_extents(&[z(u64::MAX)], u32::MAX, 10), vec![(u32::MAX, 3)]);
        assert_eq!(STATE_HOLE | STATE_ZERO, 3);
    }

    #[test]
    fn barrier_waits_only_for_earlier_writes() {
        let b = Arc::new(Barrier::default());
        let early = b.begin_write();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait_for_earlier_writes());
        std::thread::sleep(Duration::from_millis(20));
        // A write that arrives after the flush must not hold it up...
        let late = loop {
            let e = b.begin_write();
            if e > early {
                break e;
            }
            b.end_write(e);
            std::thread::yield_now();
        };
        assert!(!t.is_finished());
        // ...but the earlier one does.
        b.end_write(early);
        t.join().unwrap();
        b.end_write(late);
    }
}
