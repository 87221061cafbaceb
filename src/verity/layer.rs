//! The verifying layer: a [`ReadAt`] over the image reader that checks
//! every 4 KiB data block it passes up against the hash tree.
//!
//! It sits directly above the image (below the cache), so a block is
//! hashed once when it is decoded into the cache; cache hits cost nothing.
//! A read is widened to whole 4 KiB blocks, read from below in one call,
//! and every block in it is hashed. A block that does not match fails the
//! whole read with `InvalidData` (EIO at the NBD edge), the buffer is
//! zeroed so no layer above can pass the bytes on, and the block is
//! reported once through the `warn` callback.
//!
//! Re-reads of an evicted block are hashed again: the bytes come from the
//! medium again, and a medium (a USB stick, an HTTP mirror) can answer
//! differently the second time. [`Options::check_at_most_once`] trades that
//! away as dm-verity's option of the same name does: a block that matched
//! once is not hashed again (docs/verity.md).

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::format::{BLOCK, BLOCK_U64};
use super::tree::Tree;
use crate::blockdev::{check_range, ReadAt};

/// Reports a failed block (the console for a daemon, stderr otherwise).
pub type WarnFn = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone, Default)]
pub struct Options {
    /// dm-verity's `check_at_most_once`: hash each block only the first
    /// time it is read. Off by default.
    pub check_at_most_once: bool,
    pub warn: Option<WarnFn>,
}

/// Counters for tests and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Data blocks hashed.
    pub hashed: u64,
    /// Data blocks that did not match.
    pub failed: u64,
}

/// One bit per data block.
struct Bitmap(Vec<AtomicU64>);

impl Bitmap {
    fn new(bits: u64) -> Bitmap {
        Bitmap((0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    fn get(&self, bit: u64) -> bool {
        self.0[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
    }
    /// Sets the bit; true when it was clear.
    fn set(&self, bit: u64) -> bool {
        let mask = 1 << (bit % 64);
        self.0[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask == 0
    }
}

/// The largest per-thread buffer for unaligned reads kept between reads.
const WIDE_KEEP: usize = 1 << 20;

thread_local! {
    /// Buffer for reads that are not whole aligned blocks.
    static WIDE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub struct Verified<R: ?Sized> {
    lower: Arc<R>,
    tree: Arc<Tree>,
    name: String,
    size: u64,
    verified: Option<Bitmap>,
    reported: Bitmap,
    warn: Option<WarnFn>,
    hashed: AtomicU64,
    failed: AtomicU64,
}

impl<R: ReadAt + ?Sized> Verified<R> {
    /// `tree` must have been opened for `lower.size()` bytes; `name` (the
    /// image) is used in messages.
    pub fn new(lower: Arc<R>, tree: Arc<Tree>, name: String, options: Options) -> Verified<R> {
        let size = lower.size();
        let blocks = tree.info().geometry.data_blocks;
        debug_assert_eq!(blocks, size.div_ceil(BLOCK_U64));
        Verified {
            lower,
            tree,
            name,
            size,
            verified: options.check_at_most_once.then(|| Bitmap::new(blocks)),
            reported: Bitmap::new(blocks),
            warn: options.warn,
            hashed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats { hashed: self.hashed.load(Ordering::Relaxed), failed: self.failed.load(Ordering::Relaxed) }
    }

    /// Verifies the whole blocks in `wide`, which starts at block `first`
    /// and holds `valid` bytes of data (the rest zero padding).
    fn check(&self, wide: &mut [u8], first: u64, valid: usize) -> io::Result<()> {
        wide[valid..].fill(0);
        for (i, block) in wide.chunks_exact(BLOCK).enumerate() {
            let index = first + i as u64;
            if self.verified.as_ref().is_some_and(|v| v.get(index)) {
                continue;
            }
            self.hashed.fetch_add(1, Ordering::Relaxed);
            match self.tree.verify(index, block) {
                Ok(()) => {
                    if let Some(v) = &self.verified {
                        v.set(index);
                    }
                }
                Err(e) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    wide.fill(0);
                    let msg = match e {
                        super::Error::DataBlock { .. } => format!("{}: verity: {e}; read refused", self.name),
                        _ => format!(
                            "{}: verity: data block {index} (bytes {}..{}) cannot be checked: {e}; read refused",
                            self.name,
                            index * BLOCK_U64,
                            (index + 1) * BLOCK_U64
                        ),
                    };
                    if self.reported.set(index) {
                        if let Some(warn) = &self.warn {
                            warn(&msg);
                        }
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
        }
        Ok(())
    }
}

impl<R: ReadAt + ?Sized> ReadAt for Verified<R> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let first = offset / BLOCK_U64;
        let end = offset + buf.len() as u64;
        // Whole aligned blocks inside the device: verify in place.
        if offset % BLOCK_U64 == 0 && end % BLOCK_U64 == 0 {
            let valid = buf.len();
            let result = self.lower.read_at(buf, offset).and_then(|()| self.check(buf, first, valid));
            return result.inspect_err(|_| buf.fill(0));
        }
        let wide_start = first * BLOCK_U64;
        let wide_end = end.div_ceil(BLOCK_U64) * BLOCK_U64;
        let valid_end = wide_end.min(self.size);
        WIDE.with(|w| {
            let mut wide = w.borrow_mut();
            wide.resize((wide_end - wide_start) as usize, 0);
            let valid = (valid_end - wide_start) as usize;
            let result = self
                .lower
                .read_at(&mut wide[..valid], wide_start)
                .and_then(|()| self.check(&mut wide, first, valid));
            let from = (offset - wide_start) as usize;
            match result {
                Ok(()) => buf.copy_from_slice(&wide[from..from + buf.len()]),
                Err(_) => buf.fill(0),
            }
            // Unaligned requests are small; do not keep a big one's buffer.
            if wide.capacity() > WIDE_KEEP {
                *wide = Vec::new();
            }
            result
        })
    }
}
