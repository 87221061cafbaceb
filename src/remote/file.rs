//! [`RemoteFile`]: one file on an HTTP server as a [`ReadAt`] device.
//!
//! - **Pinned identity.** [`RemoteFile::open`] probes with
//!   `Range: bytes=0-0` (following up to [`MAX_REDIRECTS`] redirects) and
//!   pins the total length from `Content-Range` and the `ETag` and/or
//!   `Last-Modified` validators. Every later request carries `If-Match`
//!   (strong ETag) or `If-Unmodified-Since` (Last-Modified only), and its
//!   answer is compared again (length, validators). A changed image is
//!   reported once and every read from then on fails with EIO: data of two
//!   images is never mixed.
//! - **Retries.** Connection errors, timeouts, 5xx, 408 and 429 are retried
//!   with exponential backoff, forever ([`Retry::Forever`], for a root
//!   filesystem: I/O waits) or a bounded number of times. The outage and
//!   the recovery are each reported once.
//! - **Read-ahead and coalescing.** Reads that continue where an earlier one
//!   ended fetch up to `readahead` bytes more in the same request; recent
//!   ranges stay in a small bounded buffer. A read that falls inside a range
//!   another thread is already fetching waits for it instead of asking
//!   again.
//! - **Parallel connections.** Up to `connections` kept-alive connections.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::client::{self, Pool};
use super::http::{self, ContentRange, Head};
use super::tls::{self, Tls, Transport};
use super::url::{Scheme, Url};
use crate::blockdev::{check_range, ReadAt};

/// Redirects followed by the first request.
pub const MAX_REDIRECTS: usize = 5;
/// The first read-ahead of a sequential run.
pub const MIN_READAHEAD: usize = 64 * 1024;
/// Error bodies up to this size are read and dropped to keep the connection.
const SKIP_LIMIT: u64 = 64 * 1024;

/// How often a failed request is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// For a root filesystem: I/O waits until the server answers.
    Forever,
    /// Give up (with the last error) after this many retries.
    Attempts(u32),
}

pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    pub retry: Retry,
    /// First wait between attempts; doubles up to `backoff_max`.
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// For each read or write on a connection.
    pub io_timeout: Duration,
    /// Parallel connections.
    pub connections: usize,
    /// Most bytes fetched beyond a sequential read: the window starts at
    /// [`MIN_READAHEAD`] and doubles with each read that continues a run.
    pub readahead: usize,
    /// Bytes of recent ranges kept.
    pub buffer: usize,
    /// Where the outage, recovery and changed-image messages go.
    pub log: LogFn,
    /// PEM certificates trusted for `https://` besides the built-in roots.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: Retry::Attempts(4),
            backoff_start: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            connections: 4,
            readahead: 512 * 1024,
            buffer: 8 << 20,
            log: Arc::new(|msg: &str| eprintln!("{msg}")),
            ca_file: None,
        }
    }
}

/// What the probe pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes", self.size)?;
        if let Some(e) = &self.etag {
            write!(f, ", ETag {e}")?;
        }
        if let Some(m) = &self.last_modified {
            write!(f, ", Last-Modified {m}")?;
        }
        Ok(())
    }
}

/// Why an attempt failed, and so what to do next.
enum Fail {
    /// Worth trying again (connection, timeout, 5xx, truncated transfer).
    Retry(String),
    /// This request cannot succeed.
    Fatal(String),
    /// The file on the server is not the one that was opened.
    Changed(String),
}

fn transient(e: http::Error) -> Fail {
    match e {
        http::Error::Protocol(_) | http::Error::Tls(_) => Fail::Fatal(e.to_string()),
        _ => Fail::Retry(e.to_string()),
    }
}

struct Segment {
    start: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct Buffers {
    segs: VecDeque<Segment>,
    bytes: usize,
    /// Ranges being fetched now, `[start, end)`.
    inflight: Vec<(u64, u64)>,
    /// Ends of recent reads and their read-ahead windows: a read starting
    /// at one of them continues a sequential run.
    recent_ends: VecDeque<(u64, usize)>,
}

/// Counters for tests and status.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub retries: AtomicU64,
}

/// A remote file: the state shared with its background read-ahead thread.
pub struct RemoteFile {
    shared: Arc<Shared>,
    /// Ranges for the read-ahead thread to fetch, `[start, end)`.
    ahead: Mutex<Option<mpsc::Sender<(u64, u64)>>>,
}

struct Shared {
    url: Url,
    id: Identity,
    opts: Options,
    pool: Pool,
    bufs: Mutex<Buffers>,
    fetched: Condvar,
    changed: AtomicBool,
    waiting: Mutex<bool>,
    stats: Stats,
}

impl RemoteFile {
    /// Probes `url` and pins the file's size and validators.
    pub fn open(url: &Url, opts: Options) -> io::Result<RemoteFile> {
        let tls =
            Tls::new(opts.ca_file.as_deref()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let transport = Transport { connect_timeout: opts.connect_timeout, io_timeout: opts.io_timeout, tls };
        let waiting = Mutex::new(false);
        let (final_url, id, conn) = retrying(&opts, &waiting, url, "probe", || probe(url, &transport))?;
        if id.etag.is_none() && id.last_modified.is_none() {
            (opts.log)(&format!(
                "{final_url}: the server sends neither ETag nor Last-Modified: only the length ({} bytes) can tell a replaced image",
                id.size
            ));
        }
        let pool = Pool::new(opts.connections, transport);
        if let Some(c) = conn {
            pool.adopt(c);
        }
        let shared = Arc::new(Shared {
            url: final_url,
            id,
            opts,
            pool,
            bufs: Mutex::new(Buffers::default()),
            fetched: Condvar::new(),
            changed: AtomicBool::new(false),
            waiting,
            stats: Stats::default(),
        });
        Ok(RemoteFile { shared, ahead: Mutex::new(None) })
    }

    /// Where the file is (after redirects).
    pub fn url(&self) -> &Url {
        &self.shared.url
    }

    pub fn identity(&self) -> &Identity {
        &self.shared.id
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.pool.open()
    }

    /// Hands `[start, end)` to the read-ahead thread (started on first
    /// use; it ends when this file is dropped and the channel closes).
    fn read_ahead(&self, start: u64, end: u64) {
        let mut tx = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        if tx.is_none() {
            let (send, recv) = mpsc::channel::<(u64, u64)>();
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new().name("http-readahead".into()).spawn(move || {
                while let Ok((a, b)) = recv.recv() {
                    // Errors are the foreground reads' to report.
                    let _ = shared.prefetch(a, b);
                }
            });
            if spawned.is_err() {
                return;
            }
            *tx = Some(send);
        }
        if let Some(send) = tx.as_ref() {
            let _ = send.send((start, end));
        }
    }
}

impl Shared {
    fn conditions(&self) -> Vec<(&'static str, &str)> {
        match (&self.id.etag, &self.id.last_modified) {
            (Some(e), _) if !e.starts_with("W/") => vec![("If-Match", e.as_str())],
            (_, Some(m)) => vec![("If-Unmodified-Since", m.as_str())],
            _ => Vec::new(),
        }
    }

    /// Compares a response's validators with the pinned ones.
    fn same_identity(&self, head: &Head) -> Result<(), Fail> {
        let check = |name: &str, pinned: &Option<String>| -> Result<(), Fail> {
            let now = head.one(name).map_err(transient)?;
            match (pinned, now) {
                (Some(p), Some(n)) if p != n => {
                    Err(Fail::Changed(format!("{name} is now {n}, was {p} when the image was opened")))
                }
                _ => Ok(()),
            }
        };
        check("etag", &self.id.etag)?;
        check("last-modified", &self.id.last_modified)
    }

    /// One attempt at `[first, first + out.len())`.
    fn fetch_once(&self, first: u64, out: &mut [u8]) -> Result<(), Fail> {
        let last = first + out.len() as u64 - 1;
        let range = format!("bytes={first}-{last}");
        let mut headers = vec![("Range", range.as_str())];
        headers.extend(self.conditions());
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let (mut lease, head) = client::exchange(&self.pool, &self.url, &headers).map_err(transient)?;
        let status = head.status;
        let framing = head.framing().map_err(transient)?;
        let skip = |lease: client::Lease<'_>| {
            let mut lease = lease;
            if head.keep_alive() && matches!(lease.get().conn.skip_body(framing, SKIP_LIMIT), Ok(true)) {
                lease.keep();
            }
        };
        let what = format!("HTTP {status} {}", head.reason);
        match status {
            206 => {}
            200 => {
                // Never read a whole image we did not ask for.
                self.same_identity(&head)?;
                return Err(Fail::Fatal(format!(
                    "{what}: the server sent the whole file instead of the range"
                )));
            }
            412 => {
                skip(lease);
                return Err(Fail::Changed(format!("{what}: the image no longer matches what was opened")));
            }
            404 | 410 => {
                skip(lease);
                return Err(Fail::Changed(format!("{what}: the image is gone from the server")));
            }
            416 => {
                let total = match head.content_range() {
                    Ok(Some(ContentRange::Unsatisfied { total })) => format!(" (now {total} bytes)"),
                    _ => String::new(),
                };
                skip(lease);
                return Err(Fail::Changed(format!("{what}: the range is past the end of the file{total}")));
            }
            408 | 429 | 500..=599 => {
                skip(lease);
                return Err(Fail::Retry(what));
            }
            _ => {
                skip(lease);
                return Err(Fail::Fatal(what));
            }
        }
        self.same_identity(&head)?;
        match head.content_range().map_err(transient)? {
            Some(ContentRange::Bytes { total, .. }) if total != self.id.size => {
                return Err(Fail::Changed(format!("the file is now {total} bytes, was {}", self.id.size)));
            }
            Some(ContentRange::Bytes { first: f, last: l, .. }) if (f, l) == (first, last) => {}
            other => {
                return Err(Fail::Fatal(format!("{what}: asked for {range}, got Content-Range {other:?}")));
            }
        }
        lease.get().conn.read_body(framing, out).map_err(transient)?;
        self.stats.bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
        // A body delimited by the end of the connection used it up.
        if head.keep_alive() && framing != http::Framing::UntilClose {
            lease.keep();
        }
        Ok(())
    }

    fn mark_changed(&self, why: &str) {
        if !self.changed.swap(true, Ordering::SeqCst) {
            (self.opts.log)(&format!(
                "{}: the image on the server changed ({why}); refusing to mix two images: reads that need the server fail with EIO from now on",
                self.url
            ));
        }
    }

    /// Fetches `[first, first + out.len())` with retries.
    fn fetch(&self, first: u64, out: &mut [u8]) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let what = format!("bytes {first}-{}", first + out.len() as u64 - 1);
        let result = retrying(&self.opts, &self.waiting, &self.url, &what, || {
            if self.changed.load(Ordering::SeqCst) {
                return Err(Fail::Changed(String::new()));
            }
            let r = self.fetch_once(first, out);
            if matches!(r, Err(Fail::Retry(_))) {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            r
        });
        result.map_err(|e| {
            if let Some(why) = e.get_ref().and_then(|i| i.downcast_ref::<ChangedError>()) {
                if !why.0.is_empty() {
                    self.mark_changed(&why.0);
                }
                return io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error());
            }
            e
        })
    }
}

#[derive(Debug)]
struct ChangedError(String);
impl std::fmt::Display for ChangedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "image changed: {}", self.0)
    }
}
impl std::error::Error for ChangedError {}

/// Runs `attempt` until it succeeds, fails for good, or the retry policy
/// gives up. The first retry of an outage and the first success after one
/// are reported once each through `opts.log`.
fn retrying<T>(
    opts: &Options,
    waiting: &Mutex<bool>,
    url: &Url,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, Fail>,
) -> io::Result<T> {
    let mut delay = opts.backoff_start;
    let mut retries = 0u32;
    loop {
        match attempt() {
            Ok(v) => {
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                if std::mem::take(&mut *w) {
                    (opts.log)(&format!("{url}: the server answers again, I/O resumed"));
                }
                return Ok(v);
            }
            Err(Fail::Fatal(msg)) => return Err(io::Error::other(format!("{url}: {what}: {msg}"))),
            Err(Fail::Changed(msg)) => return Err(io::Error::other(ChangedError(msg))),
            Err(Fail::Retry(msg)) => {
                if let Retry::Attempts(n) = opts.retry {
                    if retries >= n {
                        let tries = retries + 1;
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("{url}: {what}: {msg} (gave up after {tries} attempts)"),
                        ));
                    }
                }
                retries += 1;
                {
                    let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                    if !*w {
                        *w = true;
                        (opts.log)(&format!("{url}: server unreachable ({what}: {msg}), waiting"));
                    }
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(opts.backoff_max);
            }
        }
    }
}

/// The first request: `Range: bytes=0-0`, following redirects.
fn probe(start: &Url, transport: &Transport) -> Result<(Url, Identity, Option<client::Connection>), Fail> {
    let mut url = start.clone();
    for hop in 0..=MAX_REDIRECTS {
        let mut c = client::connect(&url, transport).map_err(transient)?;
        client::send_get(&mut c, &url, &[("Range", "bytes=0-0")]).map_err(|e| Fail::Retry(e.to_string()))?;
        let head = c.conn.read_head().map_err(transient)?;
        let framing = head.framing().map_err(transient)?;
        let what = format!("{url}: HTTP {} {}", head.status, head.reason);
        match head.status {
            206 => {
                let total = match head.content_range().map_err(transient)? {
                    Some(ContentRange::Bytes { first: 0, last: 0, total }) => total,
                    other => {
                        return Err(Fail::Fatal(format!(
                            "{what}: asked for bytes 0-0, got Content-Range {other:?}"
                        )))
                    }
                };
                let mut one = [0u8; 1];
                c.conn.read_body(framing, &mut one).map_err(transient)?;
                let id = Identity {
                    size: total,
                    etag: head.one("etag").map_err(transient)?.map(str::to_string),
                    last_modified: head.one("last-modified").map_err(transient)?.map(str::to_string),
                };
                let reusable = head.keep_alive() && framing != http::Framing::UntilClose;
                return Ok((url, id, reusable.then_some(c)));
            }
            200 if framing == http::Framing::Length(0) => {
                return Err(Fail::Fatal(format!("{what}: the file is empty")));
            }
            200 => {
                return Err(Fail::Fatal(format!(
                    "{what}: the server does not do range requests (it answered Range: bytes=0-0 with the whole file); lazy reading needs them"
                )))
            }
            301 | 302 | 303 | 307 | 308 => {
                let Some(location) = head.one("location").map_err(transient)? else {
                    return Err(Fail::Fatal(format!("{what}: a redirect without Location")));
                };
                if hop == MAX_REDIRECTS {
                    return Err(Fail::Fatal(format!("{what}: more than {MAX_REDIRECTS} redirects")));
                }
                let next = url.join(location).map_err(|e| Fail::Fatal(format!("{what}: redirect to {e}")))?;
                // What TLS protects must not be fetched without it.
                if url.scheme == Scheme::Https && next.scheme == Scheme::Http {
                    return Err(Fail::Fatal(format!("{what}: redirect to {next} refused (it would drop TLS)")));
                }
                // An https:// target in a build without TLS, named.
                tls::check_scheme(&next).map_err(|e| Fail::Fatal(format!("{what}: redirect to {next}: {e}")))?;
                url = next;
            }
            416 => {
                let empty = matches!(head.content_range(), Ok(Some(ContentRange::Unsatisfied { total: 0 })));
                let why = if empty { "the file is empty" } else { "the server refused the range bytes=0-0" };
                return Err(Fail::Fatal(format!("{what}: {why}")));
            }
            408 | 429 | 500..=599 => return Err(Fail::Retry(format!("HTTP {} {}", head.status, head.reason))),
            _ => return Err(Fail::Fatal(what)),
        }
    }
    unreachable!("the loop returns on its last hop")
}

impl ReadAt for RemoteFile {
    fn size(&self) -> u64 {
        self.shared.id.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (result, ahead) = self.shared.read_at(buf, offset);
        if let Some((a, b)) = ahead {
            self.read_ahead(a, b);
        }
        result
    }
}

impl Shared {
    /// Fetches `[start, end)` into the buffer unless it is there or being
    /// fetched already (the read-ahead thread's work).
    fn prefetch(&self, start: u64, end: u64) -> io::Result<()> {
        let st = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if self.changed.load(Ordering::SeqCst) || buffered_until(&st, start) > start {
            return Ok(());
        }
        let mut end = end.min(self.id.size);
        for &(a, _) in &st.inflight {
            if a > start && a < end {
                end = a;
            }
        }
        if end <= start {
            return Ok(());
        }
        let (mut st, result) = self.fetch_tracked(st, start, end);
        let result = result.map(|data| self.store(&mut st, start, data));
        drop(st);
        self.fetched.notify_all();
        result
    }

    /// Fetches `[start, end)` without holding the lock, listed as in
    /// flight meanwhile so that other readers wait for it.
    fn fetch_tracked<'a>(
        &'a self,
        mut st: MutexGuard<'a, Buffers>,
        start: u64,
        end: u64,
    ) -> (MutexGuard<'a, Buffers>, io::Result<Vec<u8>>) {
        st.inflight.push((start, end));
        drop(st);
        let mut data = vec![0u8; (end - start) as usize];
        let result = self.fetch(start, &mut data).map(|()| data);
        let mut st = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = st.inflight.iter().position(|&r| r == (start, end)) {
            st.inflight.swap_remove(i);
        }
        (st, result)
    }

    /// Keeps a fetched range, dropping the oldest beyond the buffer size.
    fn store(&self, st: &mut Buffers, start: u64, data: Vec<u8>) {
        if data.len() <= self.opts.buffer / 2 {
            st.bytes += data.len();
            st.segs.push_back(Segment { start, data });
            while st.bytes > self.opts.buffer {
                let Some(old) = st.segs.pop_front() else { break };
                st.bytes -= old.data.len();
            }
        }
    }

    /// What to read ahead after a read of a sequential run that ended at
    /// `end` with read-ahead `window`: the next window past what is
    /// buffered or being fetched, once less than a window is left.
    fn next_ahead(&self, st: &Buffers, end: u64, window: usize) -> Option<(u64, u64)> {
        if window == 0 {
            return None;
        }
        let ready = buffered_until(st, end);
        (ready < self.id.size && ready - end < window as u64)
            .then(|| (ready, ready.saturating_add(window as u64).min(self.id.size)))
    }

    /// The read itself, and a range for the read-ahead thread.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> (io::Result<()>, Option<(u64, u64)>) {
        if let Err(e) = check_range(self.id.size, offset, buf.len() as u64) {
            return (Err(e), None);
        }
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        let mut st = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let run = st.recent_ends.iter().find(|&&(e, _)| e == offset).map(|&(_, w)| w);
        loop {
            // Whatever the buffer holds from `pos` on.
            while pos < end {
                let Some(seg) =
                    st.segs.iter().find(|s| s.start <= pos && pos < s.start + s.data.len() as u64)
                else {
                    break;
                };
                let from = (pos - seg.start) as usize;
                let n = (seg.data.len() - from).min((end - pos) as usize);
                let at = (pos - offset) as usize;
                buf[at..at + n].copy_from_slice(&seg.data[from..from + n]);
                pos += n as u64;
            }
            if pos == end {
                let window = run.unwrap_or(0);
                note_end(&mut st, end, window);
                return (Ok(()), self.next_ahead(&st, end, window));
            }
            if self.changed.load(Ordering::SeqCst) {
                return (Err(io::Error::from_raw_os_error(rustix::io::Errno::IO.raw_os_error())), None);
            }
            // Another thread is fetching it: wait instead of asking again.
            if st.inflight.iter().any(|&(a, b)| a <= pos && pos < b) {
                st = self.fetched.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // A gap before data the buffer holds (or a fetch brings) later
            // in the read: fetch only the gap, then take the rest from the
            // buffer. Fetching through to `end` would send those bytes
            // twice (a boot's reads did that for 16 % of what nginx sent).
            let held = st.segs.iter().map(|s| s.start).chain(st.inflight.iter().map(|&(a, _)| a));
            let Some(gap_end) = held.filter(|&a| a > pos && a < end).min() else { break };
            let (guard, result) = self.fetch_tracked(st, pos, gap_end);
            st = guard;
            match result {
                Ok(data) => {
                    let at = (pos - offset) as usize;
                    buf[at..at + data.len()].copy_from_slice(&data);
                    self.store(&mut st, pos, data);
                    pos = gap_end;
                    self.fetched.notify_all();
                }
                Err(e) => {
                    drop(st);
                    self.fetched.notify_all();
                    return (Err(e), None);
                }
            }
        }
        let window = match run {
            Some(w) => (w * 2).clamp(MIN_READAHEAD, self.opts.readahead.max(MIN_READAHEAD)),
            None if pos > offset => MIN_READAHEAD,
            None => 0,
        }
        .min(self.opts.readahead);
        let mut fetch_end = end.saturating_add(window as u64).min(self.id.size);
        // Read-ahead stops where another fetch starts.
        for &(a, _) in &st.inflight {
            if a > pos && a < fetch_end {
                fetch_end = a.max(end);
            }
        }
        let (mut st, result) = self.fetch_tracked(st, pos, fetch_end);
        let mut ahead = None;
        let result = result.map(|data| {
            let at = (pos - offset) as usize;
            buf[at..].copy_from_slice(&data[..(end - pos) as usize]);
            note_end(&mut st, end, window);
            self.store(&mut st, pos, data);
            ahead = self.next_ahead(&st, end, window);
        });
        drop(st);
        self.fetched.notify_all();
        (result, ahead)
    }
}

/// Where the data buffered or being fetched from `pos` on ends.
fn buffered_until(st: &Buffers, mut pos: u64) -> u64 {
    loop {
        let seg = st.segs.iter().find(|s| s.start <= pos && pos < s.start + s.data.len() as u64);
        let next = match seg {
            Some(s) => s.start + s.data.len() as u64,
            None => match st.inflight.iter().find(|&&(a, b)| a <= pos && pos < b) {
                Some(&(_, b)) => b,
                None => return pos,
            },
        };
        pos = next;
    }
}

fn note_end(st: &mut Buffers, end: u64, window: usize) {
    if st.recent_ends.len() == 8 {
        st.recent_ends.pop_front();
    }
    st.recent_ends.retain(|&(e, _)| e != end);
    st.recent_ends.push_back((end, window));
}
