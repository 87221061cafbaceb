//! The one small block-device trait that every layer implements.
//!
//! A stack is built bottom-up: image reader → cow overlay → cache → NBD
//! transport. Each layer owns only the layer below it. The read half is its
//! own supertrait, so a layer that must never write to what is below it (the
//! cow overlay over an image) takes a `R: ReadAt` and a write to the base is
//! a compile error, not a convention.
//!
//! Errors are `io::Error` because the top of every stack is a wire protocol
//! that speaks errno; a layer that has a richer error type converts at this
//! boundary and keeps the details (file, block, offset) in the message.

use std::io;

/// Read-only random access to a device of fixed size.
pub trait ReadAt: Send + Sync {
    /// Size of the device in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` from `offset`. `offset + buf.len()` must not exceed
    /// `size()`; the caller (the protocol edge) validates requests once.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// What a layer supports; computed once when the stack is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub write: bool,
    pub flush: bool,
    pub fua: bool,
    pub trim: bool,
    pub write_zeroes: bool,
    /// Every connection sees the same data and a flush on one covers writes
    /// made on another.
    pub multi_conn: bool,
}

/// A read-write device. Mutating methods have no default implementation on
/// purpose: a layer that forgets one must not silently pass writes through.
pub trait BlockDev: ReadAt {
    fn caps(&self) -> Caps;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make `len` bytes at `offset` read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The range is no longer needed; it may read back as anything the
    /// layer documents (the cow overlay makes it read as zeros).
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Every write acknowledged before this call is durable when it returns.
    fn flush(&self) -> io::Result<()>;
}

/// Validates that `[offset, offset+len)` lies inside a device of `size`
/// bytes, with overflow-checked arithmetic.
pub fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} beyond the end of the device ({size} bytes)"),
        )),
    }
}

/// A plain file or block device as a read-only base.
pub struct FileDev {
    file: std::fs::File,
    size: u64,
}

impl FileDev {
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        Self::from_file(file)
    }

    pub fn from_file(file: std::fs::File) -> io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        // Seeking to the end gives the size of block devices too, where
        // metadata().len() is 0.
        let size = (&file).seek(SeekFrom::End(0))?;
        Ok(Self { file, size })
    }
}

impl ReadAt for FileDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        check_range(self.size, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }
}

/// An in-memory device, for tests and as a model in property tests.
#[derive(Default)]
pub struct MemDev {
    data: std::sync::RwLock<Vec<u8>>,
}

impl MemDev {
    pub fn new(data: Vec<u8>) -> Self {
        Self { data: std::sync::RwLock::new(data) }
    }
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().expect("MemDev lock is never poisoned").clone()
    }
}

impl ReadAt for MemDev {
    fn size(&self) -> u64 {
        self.data.read().expect("MemDev lock is never poisoned").len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().expect("MemDev lock is never poisoned");
        check_range(data.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }
}

impl BlockDev for MemDev {
    fn caps(&self) -> Caps {
        Caps { write: true, flush: true, fua: true, trim: true, write_zeroes: true, multi_conn: true }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().expect("MemDev lock is never poisoned");
        check_range(data.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut data = self.data.write().expect("MemDev lock is never poisoned");
        check_range(data.len() as u64, offset, len)?;
        data[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Part of a device as a device of its own: the extents of a file inside
/// an ISO 9660 image, in file order. Built once, checked against the size
/// of the device below.
pub struct Slice<R: ?Sized> {
    /// `(offset in the file, offset below, length)`, ascending, contiguous.
    extents: Vec<(u64, u64, u64)>,
    size: u64,
    inner: std::sync::Arc<R>,
}

impl<R: ReadAt + ?Sized> Slice<R> {
    /// `extents` are `(offset below, length)` pairs, concatenated in order.
    pub fn new(inner: std::sync::Arc<R>, extents: &[(u64, u64)]) -> io::Result<Self> {
        let mut out = Vec::with_capacity(extents.len());
        let mut size = 0u64;
        for &(start, len) in extents {
            check_range(inner.size(), start, len)?;
            if len > 0 {
                out.push((size, start, len));
            }
            size = size
                .checked_add(len)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "slice longer than 2^64 bytes"))?;
        }
        Ok(Slice { extents: out, size, inner })
    }
}

impl<R: ReadAt + ?Sized> ReadAt for Slice<R> {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        let mut done = 0usize;
        let first = self.extents.partition_point(|&(at, _, len)| at + len <= offset);
        for &(at, below, len) in &self.extents[first..] {
            if done == buf.len() {
                break;
            }
            let pos = offset + done as u64;
            let within = pos - at;
            let n = (len - within).min((buf.len() - done) as u64) as usize;
            self.inner.read_at(&mut buf[done..done + n], below + within)?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_range_rejects_overflow_and_past_end() {
        assert!(check_range(100, 0, 100).is_ok());
        assert!(check_range(100, 100, 0).is_ok());
        assert!(check_range(100, 1, 100).is_err());
        assert!(check_range(100, u64::MAX, 2).is_err());
    }

    #[test]
    fn memdev_reads_back_writes_and_zeroes() {
        let dev = MemDev::new(vec![7u8; 16]);
        dev.write_at(&[1, 2, 3], 4).unwrap();
        dev.write_zeroes(0, 2).unwrap();
        let mut buf = [0u8; 8];
        dev.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0, 0, 7, 7, 1, 2, 3, 7]);
        assert!(dev.read_at(&mut buf, 12).is_err());
    }

    #[test]
    fn slice_concatenates_extents() {
        let data: Vec<u8> = (0..100u8).collect();
        let dev = std::sync::Arc::new(MemDev::new(data));
        let s = Slice::new(dev.clone(), &[(10, 5), (50, 0), (40, 10), (0, 3)]).unwrap();
        assert_eq!(s.size(), 18);
        let mut buf = [0u8; 18];
        s.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [10, 11, 12, 13, 14, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 0, 1, 2]);
        let mut two = [0u8; 2];
        s.read_at(&mut two, 4).unwrap();
        assert_eq!(two, [14, 40]);
        s.read_at(&mut two, 16).unwrap();
        assert_eq!(two, [1, 2]);
        assert!(s.read_at(&mut two, 17).is_err());
        assert!(Slice::new(dev.clone(), &[(99, 2)]).is_err());
        assert!(Slice::new(dev, &[(u64::MAX, 2)]).is_err());
    }
}
