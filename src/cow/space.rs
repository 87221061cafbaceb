//! The free-space watch on the filesystem that holds the cowfile.
//!
//! Like the driver (which looked every 16 writes), we call fstatvfs on
//! every 16th write and after a write failed for lack of space, and warn
//! once when the free space drops below the threshold. The warning re-arms
//! when space is back above it, so a long-running server warns again on the
//! next shortage instead of flooding the log.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const CHECK_EVERY: u64 = 16;

pub struct SpaceWatch {
    threshold: u64,
    writes: AtomicU64,
    warned: AtomicBool,
}

impl SpaceWatch {
    pub fn new(threshold: u64) -> Self {
        Self { threshold, writes: AtomicU64::new(0), warned: AtomicBool::new(false) }
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
            return None;
        }
        if self.warned.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(free)
    }
}
