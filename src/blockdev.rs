//! The one small block-device trait that every layer implements.
//!
//! A stack is built bottom-up; each layer owns only the layer below it:
//!
//! ```text
//!   NBD transport ── [Metered] ── [cow Overlay] ── [Cache] ── cloop Image | FileDev
//! ```
//!
//! (see the README's "How it is built" for the file of each layer). The
//! read half is its own supertrait, so a layer that must never write to
//! what is below it (the cow overlay over an image) takes a `R: ReadAt` and
//! a write to the base is a compile error, not a convention.
//!
//! Besides the data path, the traits carry the *queries* the transport
//! asks of a stack, nbdkit's `next_ops` style: [`ReadAt::extents`]
//! (`base:allocation`), [`ReadAt::is_resident`] (can a read be answered
//! without slow work), [`ReadAt::prefetch`] (`NBD_CMD_CACHE`) and
//! [`BlockDev::write_is_fast`]. Each has a safe default ("everything is
//! data", "not resident", "no cache", "not fast"), so a new bottom layer
//! only implements `size` and `read_at`; a layer in the middle answers a
//! query from what it knows and asks the layer below for the rest, and a
//! pass-through layer ([`ReadOnly`], `Arc`, the meter) forwards every one.
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

    /// Describes `[offset, offset+len)` (already validated to be inside
    /// the device) as runs of data and of bytes that read as zeros
    /// (`base:allocation`). The runs may cover less than `len` but cover at
    /// least one byte when `len > 0`; "data" is always a correct answer.
    /// Must be cheap: clients ask before reading.
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let _ = offset;
        Ok(vec![Extent::data(len)])
    }

    /// True when reading the range needs no decompression, network or
    /// other slow work (the transport then answers it on the connection
    /// thread). `false` is always correct.
    fn is_resident(&self, offset: u64, len: u64) -> bool {
        let _ = (offset, len);
        false
    }

    /// Loads the range into a cache at or below this layer
    /// (`NBD_CMD_CACHE`); `None` means there is no cache to fill, and the
    /// caller reads the range instead.
    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        let _ = (offset, len);
        None
    }
}

/// One run of a [`ReadAt::extents`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    /// The run reads as zeros (NBD: a hole that reads as zeros).
    pub zero: bool,
}

impl Extent {
    pub fn data(len: u64) -> Extent {
        Extent { len, zero: false }
    }
    pub fn zero(len: u64) -> Extent {
        Extent { len, zero: true }
    }
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

    /// True when writing (or zeroing or trimming) the range is a plain
    /// write to a local file, with no read of a slow base (the transport
    /// then runs it on the connection thread). `false` is always correct.
    fn write_is_fast(&self, offset: u64, len: u64) -> bool {
        let _ = (offset, len);
        false
    }
}

/// Forwards everything, queries included, so a shared layer is a layer.
impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        (**self).extents(offset, len)
    }
    fn is_resident(&self, offset: u64, len: u64) -> bool {
        (**self).is_resident(offset, len)
    }
    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        (**self).prefetch(offset, len)
    }
}

impl<T: BlockDev + ?Sized> BlockDev for std::sync::Arc<T> {
    fn caps(&self) -> Caps {
        (**self).caps()
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).write_zeroes(offset, len)
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).trim(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn write_is_fast(&self, offset: u64, len: u64) -> bool {
        (**self).write_is_fast(offset, len)
    }
}

/// A read-only view of a [`ReadAt`] as a [`BlockDev`]: every mutating
/// method fails with `EROFS`, flush succeeds (nothing is ever dirty), and
/// the queries pass through. An export with no cowfile is one of these;
/// the transport never calls the mutating methods anyway, because the
/// export is advertised read-only and validation refuses writes first.
pub struct ReadOnly<R>(pub R);

fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "the export is read-only")
}

impl<R: ReadAt> ReadAt for ReadOnly<R> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.0.extents(offset, len)
    }
    fn is_resident(&self, offset: u64, len: u64) -> bool {
        self.0.is_resident(offset, len)
    }
    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        self.0.prefetch(offset, len)
    }
}

impl<R: ReadAt> BlockDev for ReadOnly<R> {
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

    /// Answers every query with something no default gives.
    struct Knowing;

    impl ReadAt for Knowing {
        fn size(&self) -> u64 {
            100
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn extents(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
            Ok(vec![Extent::zero(len)])
        }
        fn is_resident(&self, _offset: u64, _len: u64) -> bool {
            true
        }
        fn prefetch(&self, _offset: u64, _len: u64) -> Option<io::Result<()>> {
            Some(Ok(()))
        }
    }

    #[test]
    fn defaults_are_safe_and_wrappers_forward_queries() {
        let plain = MemDev::new(vec![1; 100]);
        assert_eq!(plain.extents(10, 20).unwrap(), vec![Extent::data(20)]);
        assert!(!plain.is_resident(0, 1) && plain.prefetch(0, 1).is_none() && !plain.write_is_fast(0, 1));
        let wrapped = ReadOnly(std::sync::Arc::new(ReadOnly(Knowing)));
        assert_eq!(wrapped.extents(0, 7).unwrap(), vec![Extent::zero(7)]);
        assert!(wrapped.is_resident(0, 1));
        assert!(matches!(wrapped.prefetch(0, 1), Some(Ok(()))));
        assert_eq!(wrapped.write_at(&[1], 0).unwrap_err().kind(), io::ErrorKind::ReadOnlyFilesystem);
        assert!(wrapped.flush().is_ok() && wrapped.caps().multi_conn && !wrapped.caps().write);
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
