//! The free-space watch on the filesystem that holds the cowfile.
//!
//! Like the driver (which looked every 16 writes), we call fstatvfs on
//! every 16th write and after a write failed for lack of space, and warn
//! once when the free space drops below the threshold. The warning re-arms
//! when space is back above it, so a long-running server warns again on the
//! next shortage instead of flooding the log.
//!
//! A write that failed for lack of space is said once too ([`SpaceWatch::full`]):
//! the filesystem is full, writes fail until space is freed. It re-arms
//! with the low-space warning, once free space is back above the threshold.
//!
//! The reserve ([`SpaceWatch::admit`]): the last 1/32 of the filesystem
//! (16 KiB to 4 MiB) is held back from writes that need new space. Once
//! writes have been failing and then stopped for a second, it is given
//! out: a filesystem on the device (ext4) can then still write its
//! journal, so that deleting files and fstrim work, instead of its
//! journal aborting on the next commit. It is held back again once free
//! space is back above twice the reserve.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

const CHECK_EVERY: u64 = 16;
/// How long writes must have stopped failing before the reserve is given out.
const QUIET_MS: u64 = 1000;

pub struct SpaceWatch {
    threshold: u64,
    reserve: u64,
    writes: AtomicU64,
    warned: AtomicBool,
    full_said: AtomicBool,
    /// Milliseconds since `start` of the last failed write, plus one (0:
    /// none since there was room).
    failed_at: AtomicU64,
    released: AtomicBool,
    start: Instant,
}

/// Free and total bytes of the filesystem holding `file` (also used by
/// `cloopd --watch-space`, on an open directory).
pub(crate) fn space(file: &File) -> Option<(u64, u64)> {
    let st = rustix::fs::fstatvfs(file).ok()?;
    Some((st.f_bavail.saturating_mul(st.f_frsize), st.f_blocks.saturating_mul(st.f_frsize)))
}

impl SpaceWatch {
    /// `threshold`: warn below this much free space (at most an eighth of
    /// the filesystem holding `file`, so a small one does not warn at once).
    pub fn new(threshold: u64, file: &File) -> Self {
        let total = space(file).map_or(0, |(_, total)| total);
        let reserve = if total == 0 { 0 } else { (total / 32).clamp(16 << 10, 4 << 20) };
        let threshold = if total == 0 { threshold } else { threshold.min(total / 8).max(2 * reserve) };
        Self {
            threshold,
            reserve,
            writes: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            full_said: AtomicBool::new(false),
            failed_at: AtomicU64::new(0),
            released: AtomicBool::new(false),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Whether a write that needs new space in `file` may go on: always
    /// while free space is above the reserve; below it only once the
    /// reserve was given out (see the module documentation).
    pub fn admit(&self, file: &File) -> bool {
        let Some((free, _)) = space(file) else { return true };
        if free >= 2 * self.reserve {
            self.failed_at.store(0, Ordering::Relaxed);
            self.released.store(false, Ordering::Relaxed);
            return true;
        }
        if free >= self.reserve || self.released.load(Ordering::Relaxed) {
            return true;
        }
        let failed = self.failed_at.load(Ordering::Relaxed);
        if failed != 0 && self.now_ms().saturating_sub(failed) >= QUIET_MS {
            self.released.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// A write failed (or was refused) for lack of space.
    pub fn failed(&self) {
        self.failed_at.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Counts a write; checks on every 16th. Returns a warning to log.
    pub fn after_write(&self, file: &File) -> Option<u64> {
        if self.writes.fetch_add(1, Ordering::Relaxed) % CHECK_EVERY != 0 {
            return None;
        }
        self.check(file)
    }

    /// Checks now. Returns the free bytes when a warning is due.
    pub fn check(&self, file: &File) -> Option<u64> {
        let st = rustix::fs::fstatvfs(file).ok()?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free >= self.threshold {
            self.warned.store(false, Ordering::Relaxed);
            self.full_said.store(false, Ordering::Relaxed);
            return None;
        }
        if self.warned.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(free)
    }

    /// After a write failed for lack of space: true the first time, then
    /// false until free space was back above the threshold.
    pub fn full(&self) -> bool {
        !self.full_said.swap(true, Ordering::Relaxed)
    }
}
