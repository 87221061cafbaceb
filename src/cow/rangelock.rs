//! A lock over ranges of 1 KiB units, held by every mutating request for
//! the units it touches.
//!
//! A partial-unit write is read–merge–write, and a concurrent write to the
//! same unit between the read and the write would be lost, or would leave a
//! result that matches no serial order. Holding the unit range makes every
//! mutation of a unit atomic with respect to the others. Non-overlapping
//! requests never wait for each other; reads never take it (a read racing a
//! write to the same bytes may see either, as on any block device).

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
pub struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    released: Condvar,
}

/// Releases its range when dropped.
pub struct RangeGuard<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

type LockResult<'a, T> = Result<MutexGuard<'a, T>, std::sync::PoisonError<MutexGuard<'a, T>>>;

fn relock<T>(guard: LockResult<'_, T>) -> MutexGuard<'_, T> {
    // The list stays consistent even if a holder panicked elsewhere.
    guard.unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RangeLock {
    /// Waits until no holder overlaps `[start, end)`, then holds it.
    pub fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let mut held = relock(self.held.lock());
        while held.iter().any(|&(s, e)| s < end && start < e) {
            held = self.released.wait(held).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        held.push((start, end));
        RangeGuard { lock: self, range: (start, end) }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = relock(self.lock.held.lock());
        if let Some(i) = held.iter().position(|&r| r == self.range) {
            held.swap_remove(i);
        }
        drop(held);
        self.lock.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let lock = Arc::new(RangeLock::default());
        let guard = lock.lock(10, 20);
        let _disjoint = lock.lock(20, 30);
        let entered = Arc::new(AtomicBool::new(false));
        let (l2, e2) = (lock.clone(), entered.clone());
        let waiter = std::thread::spawn(move || {
            let _g = l2.lock(15, 16);
            e2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!entered.load(Ordering::SeqCst), "an overlapping range got in");
        drop(guard);
        waiter.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
    }
}
