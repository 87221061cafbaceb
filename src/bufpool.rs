//! Reusable I/O buffers: a small, bounded, process-wide pool.
//!
//! Why: every NBD READ needs a buffer of header + data, and every cache
//! miss one of a whole block. Allocating each one fresh costs, under musl,
//! an `mmap` + `munmap` pair (plus page faults and zeroing) for anything
//! of 128 KiB or more, and a zeroing `calloc` below that. Recycling them
//! takes that off the hot path (BENCHMARKS.md, "NBD server").
//!
//! Design:
//! * Size classes of 4 KiB × 2^k (up to [`MAX_POOLED`]) plus
//!   [`HEADROOM`] bytes for a reply header, one LIFO stack and lock each.
//!   A buffer serves any request up to its class size.
//! * A [`Buf`] is a `Vec<u8>` plus the length in use. The `Vec`'s own
//!   length is how much of it is initialised, and that survives
//!   recycling: a recycled buffer is handed out without being zeroed
//!   again, which is safe because every user overwrites the bytes it
//!   uses (or fails, and then never shows them).
//! * Dropping a [`Buf`] returns its memory to its class if it is about
//!   the class's size (a buffer grown by appending may not be) and the
//!   class has room; otherwise it is freed.
//!
//! Bounds: nothing larger than [`MAX_POOLED`] (+ headroom) is ever kept,
//! whatever length a client asks for (a larger request gets a fresh
//! buffer, freed after use); each class keeps at most [`CLASS_BYTES`]
//! of class-sized buffers (at least two, at most [`CLASS_BUFFERS`]), and
//! a kept buffer is at most 5/4 of its class size, so the pool never
//! holds more than 18 MiB (`pool_is_bounded` computes it), and in
//! practice only as many buffers as were once in use at the same time.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

/// Room for the largest reply header in front of the data.
pub const HEADROOM: usize = 32;
/// The smallest class: 4 KiB of data.
const MIN_SHIFT: u32 = 12;
/// The largest class: 1 MiB of data. Larger buffers are never pooled.
const MAX_SHIFT: u32 = 20;
pub const MAX_POOLED: usize = 1 << MAX_SHIFT;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Most bytes of class-sized buffers one class keeps (a class keeps at
/// least two buffers).
pub const CLASS_BYTES: usize = 2 << 20;
/// Most buffers one class keeps.
pub const CLASS_BUFFERS: usize = 64;

/// Capacity a buffer of class `c` is allocated with.
fn class_capacity(c: usize) -> usize {
    (1 << (MIN_SHIFT as usize + c)) + HEADROOM
}

/// The smallest class whose buffers hold `len` bytes.
fn class_for_len(len: usize) -> Option<usize> {
    (0..CLASSES).find(|&c| class_capacity(c) >= len)
}

/// The class a buffer of `capacity` bytes is kept in: the largest it can
/// serve, if it is not much larger than that class's buffers.
fn class_for_capacity(capacity: usize) -> Option<usize> {
    let c = (0..CLASSES).rev().find(|&c| class_capacity(c) <= capacity)?;
    (capacity <= class_capacity(c) / 4 * 5).then_some(c)
}

fn class_limit(c: usize) -> usize {
    (CLASS_BYTES / class_capacity(c)).clamp(2, CLASS_BUFFERS)
}

struct Pool {
    classes: [Mutex<Vec<Vec<u8>>>; CLASSES],
}

static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Pool {
        Pool { classes: [const { Mutex::new(Vec::new()) }; CLASSES] }
    }

    fn class(&self, c: usize) -> MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding the lock cannot leave a stack of buffers
        // inconsistent: take it over.
        self.classes[c].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, c: usize) -> Vec<u8> {
        self.class(c).pop().unwrap_or_else(|| Vec::with_capacity(class_capacity(c)))
    }

    fn give(&self, v: Vec<u8>) {
        if let Some(c) = class_for_capacity(v.capacity()) {
            let mut stack = self.class(c);
            if stack.len() < class_limit(c) {
                stack.push(v);
            }
        }
    }
}

/// A byte buffer of a given length, recycled through the pool on drop.
/// Dereferences to the bytes in use.
#[derive(Default)]
pub struct Buf {
    data: Vec<u8>,
    len: usize,
}

impl Buf {
    /// A buffer of `len` bytes whose contents are unspecified (zeros or
    /// what an earlier user left): the caller must overwrite what it
    /// sends or returns.
    pub fn new(len: usize) -> Buf {
        let mut data = match class_for_len(len) {
            Some(c) => POOL.take(c),
            None => Vec::new(),
        };
        if data.len() < len {
            data.resize(len, 0);
        }
        Buf { data, len }
    }

    /// An empty buffer with room for `capacity` bytes, to append to.
    pub fn with_capacity(capacity: usize) -> Buf {
        let mut data = match class_for_len(capacity) {
            Some(c) => POOL.take(c),
            None => Vec::with_capacity(capacity),
        };
        data.clear();
        Buf { data, len: 0 }
    }

    /// Appends bytes, growing the buffer as needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.data.truncate(self.len);
        self.data.extend_from_slice(bytes);
        self.len = self.data.len();
    }

    /// Bytes of memory held, for tests.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }
}

impl From<Vec<u8>> for Buf {
    fn from(data: Vec<u8>) -> Buf {
        Buf { len: data.len(), data }
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buf").field("len", &self.len).field("capacity", &self.data.capacity()).finish()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let data = std::mem::take(&mut self.data);
        if data.capacity() > 0 {
            POOL.give(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_pooled_length_and_nothing_more() {
        assert_eq!(class_for_len(0), Some(0));
        assert_eq!(class_for_len(4096 + HEADROOM), Some(0));
        assert_eq!(class_for_len(4096 + HEADROOM + 1), Some(1));
        assert_eq!(class_for_len(MAX_POOLED + HEADROOM), Some(CLASSES - 1));
        assert_eq!(class_for_len(MAX_POOLED + HEADROOM + 1), None);
        for c in 0..CLASSES {
            assert_eq!(class_for_capacity(class_capacity(c)), Some(c));
            assert_eq!(class_for_capacity(class_capacity(c) + 1), Some(c));
            assert_eq!(class_for_capacity(class_capacity(c) * 3 / 2), None, "grown buffer kept");
        }
        assert_eq!(class_for_capacity(4096), None, "too small for any class");
        assert_eq!(class_for_capacity(64 << 20), None, "too large to keep");
    }

    #[test]
    fn a_recycled_buffer_is_reused_without_losing_its_length() {
        // A pool of its own: the process-wide one is shared by other tests.
        let pool = Pool::new();
        let c = class_for_len(600 << 10).unwrap();
        let mut a = pool.take(c);
        a.resize(600 << 10, 0xa5);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(c);
        assert_eq!(b.as_ptr(), ptr, "the pooled buffer was not reused");
        assert_eq!(b.len(), 600 << 10, "the initialised length was lost");
        assert!(b.iter().all(|&x| x == 0xa5), "reuse should not zero");
        assert!(pool.take(c).is_empty(), "the class should be empty again");
    }

    #[test]
    fn oversized_requests_get_exact_fresh_buffers() {
        let b = Buf::new(32 << 20);
        assert_eq!(b.len(), 32 << 20);
        assert!(b.iter().all(|&x| x == 0));
        assert!(class_for_capacity(b.capacity()).is_none(), "would be pooled");
    }

    #[test]
    fn extending_keeps_the_bytes_in_use() {
        let mut b = Buf::new(3);
        b.copy_from_slice(b"abc");
        b.extend_from_slice(b"de");
        assert_eq!(&*b, b"abcde");
        let mut v = Buf::from(b"xy".to_vec());
        v.extend_from_slice(b"z");
        assert_eq!(&*v, b"xyz");
        let mut w = Buf::with_capacity(20 << 10);
        assert!(w.is_empty() && w.capacity() >= 20 << 10);
        w.extend_from_slice(&[7; 100]);
        assert_eq!(&*w, &[7; 100][..]);
    }

    #[test]
    fn pool_is_bounded() {
        let worst: usize = (0..CLASSES).map(|c| class_limit(c) * class_capacity(c) / 4 * 5).sum();
        assert!(worst <= 18 << 20, "{worst} bytes");
    }

    #[test]
    fn classes_are_bounded() {
        for c in 0..CLASSES {
            let limit = class_limit(c);
            assert!((2..=CLASS_BUFFERS).contains(&limit));
            assert!(limit * class_capacity(c) <= CLASS_BYTES.max(2 * class_capacity(c)));
        }
        let pool = Pool::new();
        for _ in 0..3 * CLASS_BUFFERS {
            pool.give(Vec::with_capacity(class_capacity(1)));
        }
        assert_eq!(pool.class(1).len(), class_limit(1));
    }
}
