//! What a root-storage daemon does to itself so that the root filesystem
//! it serves cannot deadlock or kill it (docs/boot-design.md):
//!
//! * `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: none of our pages
//!   can be swapped out, so serving never waits for I/O on the device being
//!   served. `MCL_ONFAULT` (Linux 4.4) locks each page when it is first
//!   touched instead of populating every new mapping at once: the ublk
//!   queues' 16 MiB of request buffers and the cache's blocks are zeroed
//!   only as requests need them, not all at start while the boot waits
//!   for the root. A page never touched holds nothing that could be
//!   swapped; its first touch only allocates, which `PR_SET_IO_FLUSHER`
//!   keeps from waiting on our own device;
//! * `oom_score_adj = -1000`: a full tmpfs cowfile must not get the daemon
//!   chosen by the OOM killer;
//! * `PR_SET_IO_FLUSHER`: our allocations do not recurse into reclaim that
//!   waits for writeback to our own device, and we are not throttled as an
//!   ordinary dirtier.
//!
//! Each step can fail on its own (no CAP_IPC_LOCK, an old kernel); the
//! daemon runs anyway and says which protection it lacks.
//!
//! Tested where the capabilities exist: the QEMU scenarios check the
//! daemon's VmLck and oom_score_adj in the guest (the development
//! sandbox lacks CAP_SYS_RESOURCE).

use std::io::Write;

/// What the hardening achieved: one line per failed step.
pub fn harden() -> Vec<String> {
    let mut missing = Vec::new();
    use rustix::mm::{mlockall, MlockAllFlags};
    let all = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
    // EINVAL: a kernel older than 4.4 without MCL_ONFAULT.
    if let Err(e) = mlockall(all | MlockAllFlags::ONFAULT).or_else(|_| mlockall(all)) {
        missing.push(format!("mlockall: {e} (pages may be swapped out)"));
    }
    if let Err(e) = set_oom_score_adj(-1000) {
        missing.push(format!("oom_score_adj: {e} (the OOM killer may pick us)"));
    }
    if let Err(e) = rustix::process::configure_io_flusher_behavior(true) {
        missing.push(format!("PR_SET_IO_FLUSHER: {e} (memory reclaim may deadlock on our own device)"));
    }
    missing
}

pub fn set_oom_score_adj(value: i32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open("/proc/self/oom_score_adj")?;
    f.write_all(value.to_string().as_bytes())
}

pub fn oom_score_adj() -> std::io::Result<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj")?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable oom_score_adj"))
}
