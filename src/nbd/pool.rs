//! A fixed pool of worker threads shared by every connection.
//!
//! Decompression is CPU work, so the pool has one thread per core by
//! default, not one per connection (nbdkit's xz filter serialises per
//! connection; qcow2 caps at 4 threads: docs/nbd-protocol.md). Jobs run in the order
//! they were queued (FIFO), which the flush barrier relies on: when a
//! FLUSH job starts, every write its connection received before it has
//! already been taken by some worker.
//!
//! The queue itself is unbounded, but every job holds an in-flight ticket
//! of its connection, so its length is bounded by connections × the
//! per-connection request limit.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    stopping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    cv: Condvar,
}

pub struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    inline: bool,
}

impl Pool {
    /// A pool of `threads` workers; 0 runs every job on the caller's thread
    /// (deterministic, for tests and fuzzing).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared { queue: Mutex::new(Queue::default()), cv: Condvar::new() });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let s = shared.clone();
            handles
                .push(std::thread::Builder::new().name(format!("nbd-worker-{i}")).spawn(move || worker(&s))?);
        }
        Ok(Pool { shared, threads: Mutex::new(handles), inline: threads == 0 })
    }

    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if self.inline {
            return job();
        }
        let mut q = self.shared.queue.lock().expect("pool lock is never poisoned");
        q.jobs.push_back(Box::new(job));
        drop(q);
        self.shared.cv.notify_one();
    }

    /// Lets the workers finish the queued jobs, then joins them.
    pub fn shutdown(&self) {
        self.shared.queue.lock().expect("pool lock is never poisoned").stopping = true;
        self.shared.cv.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock().expect("pool lock is never poisoned"));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(s: &Shared) {
    loop {
        let job = {
            let mut q = s.queue.lock().expect("pool lock is never poisoned");
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                if q.stopping {
                    return;
                }
                q = s.cv.wait(q).expect("pool lock is never poisoned");
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_every_job_before_shutdown_returns() {
        for threads in [0, 1, 3] {
            let pool = Pool::new(threads).unwrap();
            let n = Arc::new(AtomicUsize::new(0));
            for _ in 0..100 {
                let n = n.clone();
                pool.spawn(move || {
                    n.fetch_add(1, Ordering::SeqCst);
                });
            }
            pool.shutdown();
            assert_eq!(n.load(Ordering::SeqCst), 100, "{threads} threads");
        }
    }
}
