//! What the server exports: a device stack plus the facts the protocol
//! advertises about it.
//!
//! The transport only ever sees an `Arc<dyn BlockDev>`. A read-only stack
//! (an image with no cowfile) is a [`ReadAt`] and is wrapped in
//! [`ReadOnly`]. What the transport may ask beyond reads and writes
//! (`base:allocation` extents, whether a request can run on the connection
//! thread, `NBD_CMD_CACHE`) are the block-device traits' query methods, so
//! every stack answers them, with safe defaults where a layer knows nothing.

use std::sync::Arc;

use super::proto::*;
use crate::blockdev::{BlockDev, ReadAt, ReadOnly};

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

/// The single export a server offers.
pub struct Export {
    /// The name clients select; the empty name (the default export) is
    /// accepted as well.
    pub name: String,
    pub description: String,
    pub dev: Arc<dyn BlockDev>,
    pub read_only: bool,
    pub block_sizes: BlockSizes,
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
