//! What the server exports: a device stack plus the facts the protocol
//! advertises about it.
//!
//! The transport only ever sees an `Arc<dyn BlockDev>`. A read-only stack
//! (an image with no cowfile) is a [`ReadAt`] and is wrapped in
//! [`ReadOnly`], whose mutating methods fail with `EROFS`; the transport
//! never calls them anyway because the export is advertised read-only and
//! validation refuses writes first.
//!
//! Optional knowledge the transport can use but does not need lives in the
//! [`Hints`] trait: `base:allocation` extents for `NBD_CMD_BLOCK_STATUS`,
//! and whether a read can be answered without slow work (so the connection
//! thread may answer it inline instead of queueing it for a worker).

use std::io;
use std::sync::Arc;

use super::proto::*;
use crate::blockdev::{BlockDev, Caps, ReadAt};

/// `NBD_INFO_BLOCK_SIZE` values (proto.md "Size constraints").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSizes {
    /// Power of two ≤ 64 KiB; 1 means any alignment works.
    pub minimum: u32,
    /// Power of two ≥ max(minimum, 512): the size I/O should come in.
    pub preferred: u32,
    /// Largest READ/WRITE payload.
    pub maximum: u32,
}

impl BlockSizes {
    /// Any alignment, `preferred` as given (clamped into the protocol's
    /// rules), and the 32 MiB maximum payload.
    pub fn for_preferred(preferred: u32) -> BlockSizes {
        let p = preferred.clamp(512, MAX_PAYLOAD);
        let p = if p.is_power_of_two() { p } else { p.next_power_of_two().min(MAX_PAYLOAD) };
        BlockSizes { minimum: 1, preferred: p, maximum: MAX_PAYLOAD }
    }
}

/// One `base:allocation` extent: `len` bytes with `STATE_*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    pub flags: u32,
}

/// Optional knowledge about a stack. Every method has a safe answer, so a
/// stack without hints is served correctly, just with less information.
pub trait Hints: Send + Sync {
    /// Appends extents describing `[offset, offset+len)` (already validated
    /// to be inside the export) to `out`. The extents may cover less than
    /// `len` but must cover at least one byte and must not overlap. Flags
    /// of 0 ("allocated data") are always correct. Must be cheap: clients
    /// call it before reading.
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> io::Result<()> {
        let _ = offset;
        out.push(Extent { len, flags: 0 });
        Ok(())
    }

    /// True when writing (or zeroing or trimming) the range is a plain
    /// write to a local file, with no read of a compressed base; the
    /// connection thread then runs it itself. `false` is always correct.
    fn write_is_fast(&self, offset: u64, len: u32) -> bool {
        let _ = (offset, len);
        false
    }

    /// Loads the range into the stack's cache (`NBD_CMD_CACHE`); `None`
    /// means the stack has no cache to fill, and the transport reads the
    /// range through the device instead.
    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        let _ = (offset, len);
        None
    }

    /// True when reading the range needs no decompression or other slow
    /// work; the connection thread then answers it itself, saving a hand
    /// over to a worker. `false` is always correct.
    fn read_is_fast(&self, offset: u64, len: u32) -> bool {
        let _ = (offset, len);
        false
    }
}

/// The single export a server offers.
pub struct Export {
    /// The name clients select; the empty name (the default export) is
    /// accepted as well.
    pub name: String,
    pub description: String,
    pub dev: Arc<dyn BlockDev>,
    pub read_only: bool,
    pub block_sizes: BlockSizes,
    pub hints: Option<Arc<dyn Hints>>,
    /// `NBD_CMD_WRITE_ZEROES` is always cheap (metadata only) on this stack,
    /// so `NBD_FLAG_SEND_FAST_ZERO` can be honoured truthfully.
    pub fast_zero: bool,
}

impl Export {
    /// A writable export of `dev`.
    pub fn writable(dev: Arc<dyn BlockDev>) -> Export {
        let read_only = !dev.caps().write;
        Export {
            name: String::new(),
            description: String::new(),
            dev,
            read_only,
            block_sizes: BlockSizes::for_preferred(4096),
            hints: None,
            fast_zero: false,
        }
    }

    /// A read-only export of `base`.
    pub fn read_only<R: ReadAt + ?Sized + 'static>(base: Arc<R>) -> Export {
        Export::writable(Arc::new(ReadOnly(base)))
    }

    pub fn size(&self) -> u64 {
        self.dev.size()
    }

    /// Whether a client asking for `name` gets this export.
    pub fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }

    /// The transmission flags, computed from the stack's capabilities.
    /// Never `ROTATIONAL`; `SEND_FLUSH` even when read-only (a no-op that
    /// lets clients stay simple, as qemu-nbd and nbdkit do).
    pub fn flags(&self) -> u16 {
        let caps = self.dev.caps();
        let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_CACHE;
        let mut set = |cond: bool, flag: u16| {
            if cond {
                f |= flag;
            }
        };
        let rw = !self.read_only && caps.write;
        set(!rw, FLAG_READ_ONLY);
        // FUA without native support is emulated by a flush after the
        // write (nbdkit's "emulate" mode), so a flush is enough.
        set(rw && (caps.fua || caps.flush), FLAG_SEND_FUA);
        set(rw && caps.trim, FLAG_SEND_TRIM);
        set(rw && caps.write_zeroes, FLAG_SEND_WRITE_ZEROES);
        set(rw && caps.write_zeroes && self.fast_zero, FLAG_SEND_FAST_ZERO);
        set(caps.multi_conn, FLAG_CAN_MULTI_CONN);
        f
    }
}

/// A read-only view of a [`ReadAt`] as a [`BlockDev`]: every mutating
/// method fails with `EROFS`, flush succeeds (nothing is ever dirty).
pub struct ReadOnly<R: ?Sized>(pub Arc<R>);

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "the export is read-only")
}

impl<R: ReadAt + ?Sized> ReadAt for ReadOnly<R> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
}

impl<R: ReadAt + ?Sized> BlockDev for ReadOnly<R> {
    fn caps(&self) -> Caps {
        // Nothing changes, so every connection trivially sees the same data.
        Caps { multi_conn: true, ..Caps::default() }
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only_error())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::MemDev;

    #[test]
    fn flags_follow_caps() {
        let ro = Export::read_only(Arc::new(MemDev::new(vec![0; 512])));
        assert_eq!(
            ro.flags(),
            FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH | FLAG_SEND_CACHE | FLAG_CAN_MULTI_CONN
        );
        assert!(ro.dev.write_at(&[1], 0).is_err());
        let rw = Export::writable(Arc::new(MemDev::new(vec![0; 512])));
        let f = rw.flags();
        assert_eq!(f & FLAG_READ_ONLY, 0);
        for flag in [FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES, FLAG_CAN_MULTI_CONN] {
            assert_ne!(f & flag, 0, "{flag:#x}");
        }
        assert_eq!(f & (FLAG_SEND_FAST_ZERO | FLAG_ROTATIONAL), 0);
    }

    #[test]
    fn block_sizes_obey_the_rules() {
        assert_eq!(BlockSizes::for_preferred(65536).preferred, 65536);
        assert_eq!(BlockSizes::for_preferred(100).preferred, 512);
        assert_eq!(BlockSizes::for_preferred(3 * 4096).preferred, 16384);
        assert_eq!(BlockSizes::for_preferred(u32::MAX).preferred, MAX_PAYLOAD);
    }

    #[test]
    fn default_export_name_matches() {
        let mut e = Export::read_only(Arc::new(MemDev::new(vec![0; 512])));
        e.name = "disk".into();
        assert!(e.matches(b""));
        assert!(e.matches(b"disk"));
        assert!(!e.matches(b"other"));
    }
}
