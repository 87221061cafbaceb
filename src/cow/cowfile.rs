//! File-level operations on a cowfile: reading and writing the head block
//! and the bitmap, positioned data I/O that treats the sparse tail as
//! zeros, hole punching, walking the allocated extents, and locking. The
//! policy of opening a cowfile for an rdofile (create, check, repair) is
//! in [`super::open`], above this module and `repair`.

use super::error::{CowError, FormatError};
use super::header::{Header, HEAD_BLOCK};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The seam between the cow layer and the cowfile: every write, hole punch
/// and sync that changes what a crash would leave on disk goes through it.
/// Production uses [`File`] (each method is the plain system call, and the
/// generic code is monomorphised, so the seam costs nothing);
/// `tests/cow_powerloss.rs` substitutes a layer that records every call and
/// replays the crash states a power loss could leave.
///
/// Reads, `stat`, `SEEK_DATA`, `fallocate(KEEP_SIZE)`, `fstatvfs` and
/// `flock` change no content and use [`CowIo::file`] directly.
pub trait CowIo: Send + Sync {
    /// The underlying file, for calls that change no content.
    fn file(&self) -> &File;
    /// `pwrite` of all of `buf` at `offset`.
    fn pwrite(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`; false when the filesystem
    /// cannot punch holes (the caller writes zeros instead).
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool>;
    /// `fdatasync`. `site` names the call site, so that the replay test can
    /// leave out one site at a time and prove that each one is needed.
    fn fdatasync(&self, site: &'static str) -> io::Result<()>;
    /// `fsync` (see [`CowIo::fdatasync`] for `site`).
    fn fsync(&self, site: &'static str) -> io::Result<()>;
}

impl CowIo for File {
    #[inline]
    fn file(&self) -> &File {
        self
    }
    #[inline]
    fn pwrite(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    #[inline]
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        punch_hole(self, offset, len)
    }
    #[inline]
    fn fdatasync(&self, _site: &'static str) -> io::Result<()> {
        self.sync_data()
    }
    #[inline]
    fn fsync(&self, _site: &'static str) -> io::Result<()> {
        self.sync_all()
    }
}

/// Opens a cowfile for the tools: read-only or read-write, never created.
pub fn open_existing(path: &Path, write: bool) -> Result<File, CowError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| CowError::io(path, "cannot open", None, e))
}

/// Takes an advisory lock on the cowfile for as long as `file` is open:
/// exclusive for anything that writes it, shared for readers. Like the
/// driver's EBUSY for a cowfile already in use, this keeps two processes
/// from applying (or repairing, or merging) one cowfile at once.
pub fn lock(file: &File, path: &Path, exclusive: bool) -> Result<(), CowError> {
    use rustix::fs::{flock, FlockOperation};
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    // A lock held by an open file description that a concurrently forked
    // child (of any thread of this process) still shares goes away when
    // that child execs; a short retry rides that out, while a real second
    // user, which holds the lock for its lifetime, is still refused.
    let mut result = flock(file, op);
    for _ in 0..50 {
        if result != Err(rustix::io::Errno::WOULDBLOCK) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        result = flock(file, op);
    }
    match result {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = lock_holder(file).unwrap_or_else(|| "a process we cannot see".into());
            Err(CowError::io(
                path,
                "in use by another process (locked)",
                None,
                io::Error::new(io::ErrorKind::ResourceBusy, format!("held by {holder}")),
            ))
        }
        Err(e) => Err(CowError::io(path, "lock", None, e.into())),
    }
}

/// Who holds a `flock` on `file`: "pid N (NAME)", from /proc/locks and the
/// holder's /proc/N/comm, so that a refusal names the other user. `None`
/// when /proc does not say (no procfs, or the lock went away meanwhile).
fn lock_holder(file: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = flock_holder(&locks, major, minor, meta.ino())?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    Some(match comm.trim() {
        "" => format!("pid {pid}"),
        name => format!("pid {pid} ({name})"),
    })
}

/// The pid of the first FLOCK line of a /proc/locks text on device
/// `major:minor` (hex, as the kernel prints them), inode `ino`. Lines that
/// do not parse are skipped.
fn flock_holder(locks: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        // "1: FLOCK  ADVISORY  WRITE 12276 fe:00:6123189 0 EOF" (a blocked
        // waiter's line has "->" before FLOCK, and is not the holder).
        let (_, kind, _, _, pid, id) =
            (words.next()?, words.next()?, words.next()?, words.next()?, words.next()?, words.next()?);
        if kind != "FLOCK" {
            return None;
        }
        let mut parts = id.split(':');
        let (maj, min, inode) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = u32::from_str_radix(maj, 16).ok()? == major
            && u32::from_str_radix(min, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        if matches {
            pid.parse().ok()
        } else {
            None
        }
    })
}

/// Reads and parses the head block (only the magic is checked).
pub fn read_header(file: &File, path: &Path) -> Result<Header, CowError> {
    let mut block = vec![0u8; HEAD_BLOCK as usize];
    let n = read_some_at(file, &mut block, 0).map_err(|e| CowError::io(path, "read header", Some(0), e))?;
    block.truncate(n);
    Header::parse(&block).map_err(|p| CowError::format(path, p))
}

/// Reads `mapsize` bytes of bitmap at offset 1024; the header's layout must
/// have been checked (that bounds `mapsize`).
pub fn read_bitmap(file: &File, path: &Path, header: &Header) -> Result<Vec<u8>, CowError> {
    let len = file_len(file, path)?;
    let need = HEAD_BLOCK + header.mapsize;
    if len < need {
        return Err(CowError::format(path, FormatError::TooSmall { len, need, what: "bitmap" }));
    }
    let mut bytes = vec![0u8; header.mapsize as usize];
    file.read_exact_at(&mut bytes, HEAD_BLOCK)
        .map_err(|e| CowError::io(path, "read bitmap", Some(HEAD_BLOCK), e))?;
    Ok(bytes)
}

pub fn file_len(file: &File, path: &Path) -> Result<u64, CowError> {
    file.metadata().map(|m| m.len()).map_err(|e| CowError::io(path, "stat", None, e))
}

/// Writes the header: the whole 1 KiB head block (as the driver did), or
/// only `sizeof(struct cowhead)` bytes (as cowrepair and cowpack did).
pub fn write_header(file: &(impl CowIo + ?Sized), header: &Header, whole_block: bool) -> io::Result<()> {
    let bytes = if whole_block { header.encode_block() } else { header.encode() };
    file.pwrite(&bytes, 0)
}

/// Reads as much as the file has, up to `buf.len()`; returns the count.
pub fn read_some_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Fills `buf` from `offset`; whatever lies past the end of the file reads
/// as zeros, like the holes before it.
pub fn read_zero_filled(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let n = read_some_at(file, buf, offset)?;
    buf[n..].fill(0);
    Ok(())
}

/// Deallocates `[offset, offset+len)` keeping the file size. Returns false
/// when the filesystem cannot punch holes (the caller writes zeros).
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The next allocated extent at or after `from`, as `[start, end)`, found
/// with SEEK_DATA / SEEK_HOLE so that holes are never read. Filesystems
/// without them report the rest of the file as one extent.
pub fn next_data(file: &File, from: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    if from >= len {
        return Ok(None);
    }
    match seek(file, SeekFrom::Data(from)) {
        Ok(start) if start >= len => Ok(None),
        Ok(start) => {
            let end = seek(file, SeekFrom::Hole(start))?;
            Ok(Some((start, end.min(len))))
        }
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::OPNOTSUPP) => Ok(Some((from, len))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::flock_holder;

    #[test]
    fn flock_holder_finds_the_pid_of_the_lock_on_that_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 fe:00:42 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 12276 fe:00:6123189 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 555 103:02:42 0 EOF\n\
                     3: FLOCK  ADVISORY  READ 12263 103:02:42 0 EOF\n";
        assert_eq!(flock_holder(locks, 0xfe, 0, 6123189), Some(12276));
        assert_eq!(flock_holder(locks, 0x103, 2, 42), Some(12263), "the waiter's line is skipped");
        assert_eq!(flock_holder(locks, 0xfe, 0, 42), None, "a POSIX lock is not a flock");
        assert_eq!(flock_holder(locks, 1, 2, 3), None);
        assert_eq!(flock_holder("garbage\n4: FLOCK\n5: FLOCK A B x y:z\n\n", 0, 0, 0), None);
    }
}
