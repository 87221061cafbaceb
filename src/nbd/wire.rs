//! The sending half of a connection, and how replies get onto it.
//!
//! Replies are produced by shared worker threads and by the connection's
//! own thread, in any order. Each reply is one buffer, sent whole under a
//! per-connection lock, so replies never interleave on the wire.
//!
//! A worker must never block on one client's socket: a client that stops
//! reading would otherwise stall the pool that serves everybody. So a
//! reply is first sent with `MSG_DONTWAIT`; what does not fit in the
//! socket buffer is queued, and a per-connection writer thread (started on
//! first need) finishes it with blocking sends. While anything is queued,
//! later replies queue behind it to keep each reply contiguous.
//!
//! Memory: every reply carries the [`Ticket`] its request took when it was
//! admitted; the ticket is released only when the reply has been sent or
//! dropped, so queued replies count against the connection's in-flight
//! budget and a client that never reads stalls only itself.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bufpool::Buf;

/// A byte sink a connection replies on.
pub trait Wire: Send + Sync + 'static {
    /// Sends a prefix of `buf` without blocking; `Ok(0)` when nothing fits.
    fn try_send(&self, buf: &[u8]) -> io::Result<usize>;
    /// Sends all of `buf`, blocking as needed.
    fn send_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Shuts the connection down both ways, so that blocked reads and
    /// sends (ours and the reader's) return.
    fn close(&self);
}

/// A connected socket (`UnixStream`, `TcpStream`) as a [`Wire`]. Sends use
/// `MSG_NOSIGNAL`, so a vanished client gives `EPIPE`, never `SIGPIPE`.
pub struct SocketWire<S>(pub S);

impl<S: AsFd + Send + Sync + 'static> Wire for SocketWire<S> {
    fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        use rustix::net::{send, SendFlags};
        loop {
            match send(&self.0, buf, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::AGAIN) => return Ok(0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        use rustix::net::{send, SendFlags};
        while !buf.is_empty() {
            match send(&self.0, buf, SendFlags::NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
    fn close(&self) {
        // Errors mean the socket is already dead, which is the goal.
        let _ = rustix::net::shutdown(&self.0, rustix::net::Shutdown::Both);
    }
}

/// Any `Write` as a [`Wire`] (tests, fuzzing): sends always complete.
pub struct WriterWire<W>(pub Mutex<W>);

impl<W: Write + Send + 'static> Wire for WriterWire<W> {
    fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        self.send_all(buf).map(|_| buf.len())
    }
    fn send_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut w = self.0.lock().expect("writer lock is never poisoned");
        w.write_all(buf)?;
        w.flush()
    }
    fn close(&self) {}
}

/// Per-connection admission control: bounds the requests and bytes held
/// between admission and the end of their reply.
pub struct Inflight {
    state: Mutex<Budget>,
    cv: Condvar,
    max_requests: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Budget {
    requests: usize,
    bytes: usize,
    /// Threads blocked on `cv`. std's condvar makes a futex call on every
    /// notify, waiters or not; counting them saves one system call per
    /// request on the hot path.
    waiters: usize,
}

/// Admitted requests' share of the budget; returned on drop. Tickets of
/// replies sent together are merged with [`Ticket::absorb`].
pub struct Ticket {
    owner: Arc<Inflight>,
    requests: usize,
    bytes: usize,
}

impl Ticket {
    /// Takes over `other`'s share (both must be of one connection).
    pub fn absorb(&mut self, mut other: Ticket) {
        debug_assert!(Arc::ptr_eq(&self.owner, &other.owner));
        self.requests += std::mem::take(&mut other.requests);
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.requests == 0 && self.bytes == 0 {
            return;
        }
        let mut s = self.owner.lock();
        s.requests -= self.requests;
        s.bytes -= self.bytes;
        if s.waiters > 0 {
            self.owner.cv.notify_all();
        }
    }
}

impl Inflight {
    pub fn new(max_requests: usize, max_bytes: usize) -> Arc<Inflight> {
        Arc::new(Inflight {
            state: Mutex::new(Budget::default()),
            cv: Condvar::new(),
            max_requests: max_requests.max(1),
            max_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Budget> {
        self.state.lock().expect("inflight lock is never poisoned")
    }

    fn wait<'a>(&self, mut s: MutexGuard<'a, Budget>, until: Option<Instant>) -> MutexGuard<'a, Budget> {
        s.waiters += 1;
        let mut s = match until {
            None => self.cv.wait(s).expect("inflight lock is never poisoned"),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                self.cv.wait_timeout(s, left).expect("inflight lock is never poisoned").0
            }
        };
        s.waiters -= 1;
        s
    }

    fn full(&self, s: &Budget, bytes: usize) -> bool {
        s.requests >= self.max_requests || (s.requests > 0 && s.bytes + bytes > self.max_bytes)
    }

    fn take(self: &Arc<Self>, s: &mut Budget, bytes: usize) -> Ticket {
        s.requests += 1;
        s.bytes += bytes;
        Ticket { owner: self.clone(), requests: 1, bytes }
    }

    /// Waits for room, then takes `bytes`. A request larger than the whole
    /// byte budget is admitted alone, so it cannot wait forever.
    pub fn acquire(self: &Arc<Self>, bytes: usize) -> Ticket {
        let mut s = self.lock();
        while self.full(&s, bytes) {
            s = self.wait(s, None);
        }
        self.take(&mut s, bytes)
    }

    /// [`Inflight::acquire`] without waiting.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Ticket> {
        let mut s = self.lock();
        (!self.full(&s, bytes)).then(|| self.take(&mut s, bytes))
    }

    /// Requests admitted and not yet answered.
    pub fn count(&self) -> usize {
        self.lock().requests
    }

    /// Waits until nothing is in flight, or until `timeout` has passed
    /// (`None`: forever). Returns whether it is idle.
    pub fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.lock();
        while s.requests > 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            s = self.wait(s, deadline);
        }
        true
    }
}

struct Queued {
    buf: Buf,
    sent: usize,
    _ticket: Ticket,
}

#[derive(Default)]
struct ReplyState {
    queue: VecDeque<Queued>,
    /// The writer thread is sending a buffer it took off the queue.
    busy: bool,
    /// A send failed: the client is gone; replies are dropped.
    dead: bool,
    closing: bool,
    writer: Option<JoinHandle<()>>,
}

/// The reply side of one connection.
pub struct Replies {
    wire: Arc<dyn Wire>,
    state: Mutex<ReplyState>,
    cv: Condvar,
}

impl Replies {
    pub fn new(wire: Arc<dyn Wire>) -> Arc<Replies> {
        Arc::new(Replies { wire, state: Mutex::new(ReplyState::default()), cv: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, ReplyState> {
        self.state.lock().expect("reply lock is never poisoned")
    }

    /// True once a send has failed.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    /// Sends one whole reply; never blocks on the socket.
    pub fn send(self: &Arc<Self>, buf: Buf, ticket: Ticket) {
        let mut s = self.lock();
        if s.dead {
            return;
        }
        let mut sent = 0;
        if s.queue.is_empty() && !s.busy {
            match self.wire.try_send(&buf) {
                Ok(n) if n == buf.len() => return,
                Ok(n) => sent = n,
                Err(_) => {
                    s.dead = true;
                    return;
                }
            }
        }
        s.queue.push_back(Queued { buf, sent, _ticket: ticket });
        if s.writer.is_none() {
            let me = self.clone();
            let spawned =
                std::thread::Builder::new().name("nbd-writer".into()).spawn(move || me.writer_loop());
            match spawned {
                Ok(h) => s.writer = Some(h),
                Err(_) => {
                    // No thread, no way to finish the reply: give up on
                    // this client rather than block a shared worker.
                    s.dead = true;
                    s.queue.clear();
                    return;
                }
            }
        }
        self.cv.notify_all();
    }

    fn writer_loop(&self) {
        let mut s = self.lock();
        loop {
            while s.queue.is_empty() && !s.closing {
                s = self.cv.wait(s).expect("reply lock is never poisoned");
            }
            let Some(item) = s.queue.pop_front() else { return };
            s.busy = true;
            drop(s);
            let result = self.wire.send_all(&item.buf[item.sent..]);
            drop(item);
            s = self.lock();
            s.busy = false;
            if result.is_err() {
                s.dead = true;
                s.queue.clear();
            }
            self.cv.notify_all();
        }
    }

    /// Stops the writer thread once its queue is empty; call after every
    /// reply has been handed over (or the wire is closed).
    pub fn finish(&self) {
        let handle = {
            let mut s = self.lock();
            s.closing = true;
            self.cv.notify_all();
            s.writer.take()
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// Replies gathered on the connection thread, to be sent as one buffer.
#[derive(Default)]
pub struct Batch {
    buf: Option<Buf>,
    ticket: Option<Ticket>,
}

impl Batch {
    /// Replies larger than this are not copied into a batch.
    const MAX_COPY: usize = 64 * 1024;
    /// A batch this large goes out at once. With [`Self::MAX_COPY`], a
    /// batch fits one 256 KiB pool buffer.
    const MAX_LEN: usize = 192 * 1024;

    pub fn add(&mut self, reply: Buf, ticket: Ticket, replies: &Arc<Replies>) {
        if reply.len() > Self::MAX_COPY {
            self.flush(replies);
            return replies.send(reply, ticket);
        }
        // A lone reply is sent as it is; once a second one comes, both are
        // copied into a pooled buffer that holds a whole batch (so it never
        // grows) and their own buffers go back to the pool.
        let len = match &mut self.buf {
            Some(buf) => {
                if buf.capacity() < buf.len() + reply.len() {
                    let mut whole = Buf::with_capacity(Self::MAX_LEN + Self::MAX_COPY);
                    whole.extend_from_slice(buf);
                    *buf = whole;
                }
                buf.extend_from_slice(&reply);
                buf.len()
            }
            None => self.buf.insert(reply).len(),
        };
        match &mut self.ticket {
            Some(t) => t.absorb(ticket),
            None => self.ticket = Some(ticket),
        }
        if len >= Self::MAX_LEN {
            self.flush(replies);
        }
    }

    pub fn flush(&mut self, replies: &Arc<Replies>) {
        if let Some(t) = self.ticket.take() {
            replies.send(self.buf.take().unwrap_or_default(), t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn large_replies_to_a_slow_reader_arrive_whole_and_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let replies = Replies::new(Arc::new(SocketWire(a)));
        let inflight = Inflight::new(8, usize::MAX);
        // Far more than a socket buffer: forces the queue and the writer.
        for i in 0..4u8 {
            replies.send(vec![i; 1 << 20].into(), inflight.acquire(1 << 20));
        }
        let mut got = vec![0u8; 4 << 20];
        b.read_exact(&mut got).unwrap();
        for (i, chunk) in got.chunks(1 << 20).enumerate() {
            assert!(chunk.iter().all(|&x| x == i as u8), "reply {i} interleaved");
        }
        assert!(inflight.wait_idle(Some(Duration::from_secs(5))));
        replies.finish();
    }

    #[test]
    fn a_vanished_client_releases_every_ticket() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let replies = Replies::new(Arc::new(SocketWire(a)));
        let inflight = Inflight::new(2, 10);
        replies.send(vec![0; 100].into(), inflight.acquire(5));
        replies.send(vec![0; 100].into(), inflight.acquire(5));
        assert!(replies.is_dead());
        assert!(inflight.wait_idle(Some(Duration::from_secs(5))));
        replies.finish();
    }

    #[test]
    fn merged_tickets_release_everything_once() {
        let inflight = Inflight::new(3, 100);
        let mut a = inflight.acquire(10);
        a.absorb(inflight.acquire(20));
        a.absorb(inflight.acquire(30));
        assert_eq!(inflight.count(), 3);
        assert!(inflight.try_acquire(1).is_none(), "a fourth request was admitted");
        drop(a);
        assert_eq!(inflight.count(), 0);
        assert!(inflight.try_acquire(100).is_some());
        assert!(inflight.wait_idle(Some(Duration::from_millis(1))));
    }

    #[test]
    fn admission_respects_the_byte_budget_but_admits_one_oversized() {
        let inflight = Inflight::new(4, 100);
        let big = inflight.acquire(1000);
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (i2, f2) = (inflight.clone(), flag.clone());
        let t = std::thread::spawn(move || {
            let _t = i2.acquire(1);
            f2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!flag.load(std::sync::atomic::Ordering::SeqCst), "admitted past the budget");
        drop(big);
        t.join().unwrap();
        assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
    }
}
