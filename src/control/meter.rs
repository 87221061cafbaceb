//! A pass-through [`BlockDev`] layer that counts what the NBD clients
//! read and write, for the status block's "bytes read" and "bytes
//! written". It sits at the top of the stack, so it counts what was
//! served, not what the layers below did to serve it. Failed requests are
//! not counted; zeroing and trimming count as neither. The queries
//! (extents, residency, prefetch) pass through uncounted.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::blockdev::{BlockDev, Caps, Extent, ReadAt};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterStats {
    pub reads: u64,
    pub bytes_read: u64,
    pub writes: u64,
    pub bytes_written: u64,
}

pub struct Metered {
    inner: Arc<dyn BlockDev>,
    reads: AtomicU64,
    bytes_read: AtomicU64,
    writes: AtomicU64,
    bytes_written: AtomicU64,
}

impl Metered {
    pub fn new(inner: Arc<dyn BlockDev>) -> Metered {
        Metered {
            inner,
            reads: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> MeterStats {
        MeterStats {
            reads: self.reads.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}

impl ReadAt for Metered {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.inner.extents(offset, len)
    }
    fn is_resident(&self, offset: u64, len: u64) -> bool {
        self.inner.is_resident(offset, len)
    }
    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        self.inner.prefetch(offset, len)
    }
}

impl BlockDev for Metered {
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.write_zeroes(offset, len)
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.trim(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn write_is_fast(&self, offset: u64, len: u64) -> bool {
        self.inner.write_is_fast(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::MemDev;

    #[test]
    fn counts_successful_requests_only() {
        let m = Metered::new(Arc::new(MemDev::new(vec![0; 8192])));
        let mut buf = [0u8; 1024];
        m.read_at(&mut buf, 0).unwrap();
        m.write_at(&[1; 512], 4096).unwrap();
        m.write_zeroes(0, 4096).unwrap();
        assert!(m.read_at(&mut buf, 8000).is_err());
        assert!(m.write_at(&[1; 512], 8000).is_err());
        assert_eq!(m.stats(), MeterStats { reads: 1, bytes_read: 1024, writes: 1, bytes_written: 512 });
        assert_eq!((m.size(), m.caps()), (8192, MemDev::new(vec![0; 1]).caps()));
    }
}
