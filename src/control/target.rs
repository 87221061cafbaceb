//! The [`Handler`] of a served stack: what cloopd puts behind its control
//! socket. It sees the stack only through a few handles (the top device
//! to flush, the counters to report, a callback that starts a detach), so
//! it works, and is tested, with any stack.

use std::sync::Arc;

use super::meter::Metered;
use super::proto::Info;
use super::server::{Handler, Pending};
use super::status::{CowStatus, Status};
use crate::blockdev::BlockDev;

pub type CowStats = Box<dyn Fn() -> crate::cow::overlay::Stats + Send + Sync>;
/// cowsync: writes the bitmap and a clean header (`Overlay::sync`).
pub type CowSync = Box<dyn Fn() -> std::io::Result<()> + Send + Sync>;
pub type CacheStats = Box<dyn Fn() -> crate::cache::Stats + Send + Sync>;
pub type VerityStats = crate::verity::StatsFn;
pub type DetachFn = Box<dyn Fn(Pending) + Send + Sync>;

pub struct Target {
    pub info: Info,
    /// The top of the stack: `sync` flushes it.
    pub dev: Arc<dyn BlockDev>,
    pub meter: Arc<Metered>,
    /// Present when there is a cowfile (its path is in `info`).
    pub cow: Option<CowStats>,
    /// Makes the cowfile clean on disk; a plain flush leaves it DIRTY.
    pub cow_sync: Option<CowSync>,
    pub cache: Option<CacheStats>,
    /// Present when blocks are checked against a hash tree (`--root-hash`).
    pub verity: Option<VerityStats>,
    pub detach: DetachFn,
}

impl Target {
    pub fn status_of(&self) -> Status {
        let served = self.meter.stats();
        let cow = self.cow.as_ref().map(|stats| stats());
        Status {
            device: self.info.device.clone(),
            pid: self.info.pid,
            image: self.info.image.clone(),
            // Without a cowfile every read served is a read of the image.
            rdoreads: cow.map_or(served.reads, |c| c.rdoreads),
            cow: cow.map(|c| CowStatus {
                path: self.info.cow.clone().unwrap_or_default(),
                dirty: c.unflushed,
                mapsize: c.mapsize,
                cowused: c.cowused,
                cowreads: c.cowreads,
                cowwrites: c.cowwrites,
                zeroed: c.zeroed,
            }),
            cache: self.cache.as_ref().map(|stats| stats()),
            verity: self.verity.as_ref().map(|stats| {
                let s = stats();
                (s.hashed, s.failed)
            }),
            bytes_read: served.bytes_read,
            bytes_written: served.bytes_written,
        }
    }
}

impl Handler for Target {
    fn status(&self) -> String {
        self.status_of().render()
    }
    fn info(&self) -> Info {
        self.info.clone()
    }
    fn sync(&self) -> Result<(), String> {
        self.dev.flush().map_err(|e| format!("{}: sync failed: {e}", self.info.device))?;
        match &self.cow_sync {
            Some(sync) => sync().map_err(|e| format!("{}: sync failed: {e}", self.info.device)),
            None => Ok(()),
        }
    }
    fn detach(&self, pending: Pending) {
        (self.detach)(pending)
    }
}
