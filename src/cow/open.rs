//! Opening a cowfile for its rdofile: the open / create sequence the
//! driver performed at activation, every check it made plus ours, and the
//! repair of a dirty file when asked. Built on the file operations of
//! [`super::cowfile`] and on [`super::repair`]; only the overlay opens
//! cowfiles this way.

use super::bitmap::Bitmap;
use super::cowfile::{file_len, lock, read_bitmap, read_header};
use super::error::{CowError, FormatError};
use super::header::{fingerprint, Abi, Geometry, Header, F_COWUSED, HEAD_BLOCK, MAPUNIT};
use crate::blockdev::ReadAt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Makes the directory entry of a new file durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// What identifies an rdofile to its cowfile: its size in 1 KiB units and
/// its fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseId {
    pub numblocks: u64,
    /// The C `int` fingerprint; see [`super::header::fingerprint`].
    pub fingerprint: u32,
}

impl BaseId {
    /// Computes the identity of `base` (a trailing partial KiB does not
    /// count, as in the driver). The one place the overlay, `cowmerge` and
    /// the persistence check get it from.
    pub fn of(base: &dyn ReadAt) -> io::Result<BaseId> {
        let numblocks = base.size() / MAPUNIT;
        Ok(BaseId { numblocks, fingerprint: fingerprint(base, numblocks)? })
    }
}

/// A cowfile validated against its rdofile, ready for the overlay.
pub struct Opened {
    pub file: File,
    pub header: Header,
    pub geom: Geometry,
    pub bitmap: Bitmap,
    pub created: bool,
    /// Set when a dirty file was repaired on the way in.
    pub repaired: Option<super::repair::RepairReport>,
}

/// Opens (or, when `create` and the file is missing or empty, creates) the
/// cowfile for `base`, applying every check of the driver plus ours.
/// A dirty file is repaired when `repair` is set and refused otherwise.
pub fn open_for_base(path: &Path, base: BaseId, create: bool, repair: bool) -> Result<Opened, CowError> {
    let geom_for_base = Geometry::for_blocks(base.numblocks).map_err(|p| CowError::format(path, p))?;
    let fresh = |file| {
        let header = Header::new(Abi::X86_64, &geom_for_base, base.fingerprint);
        let bitmap = Bitmap::new(base.numblocks, header.mapsize as usize);
        Ok(Opened { file, header, geom: geom_for_base, bitmap, created: true, repaired: None })
    };
    check_size_limit(path, &geom_for_base)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true);
    let file = match opts.open(path) {
        Ok(file) => file,
        Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
            match create_new(path, base, &geom_for_base)? {
                Some(file) => return fresh(file),
                // Someone else created it meanwhile: open theirs.
                None => opts.open(path).map_err(|e| CowError::io(path, "cannot open", None, e))?,
            }
        }
        Err(e) => return Err(CowError::io(path, "cannot open", None, e)),
    };
    lock(&file, path, true)?;
    if create && file_len(&file, path)? == 0 {
        // An empty file given to us (the driver accepted one too).
        let header = Header::new(Abi::X86_64, &geom_for_base, base.fingerprint);
        initialise(&file, path, &header)?;
        return fresh(file);
    }
    let mut header = read_header(&file, path)?;
    let geom =
        header.check_for_base(base.numblocks, base.fingerprint).map_err(|p| CowError::format(path, p))?;
    let mut repaired = None;
    if header.is_dirty() {
        if !repair {
            return Err(CowError::format(path, FormatError::Dirty));
        }
        let opts = super::repair::RepairOptions { dry_run: false };
        repaired = Some(super::repair::repair(&file, path, &mut header, opts, &mut |_| {})?);
    }
    let bytes = read_bitmap(&file, path, &header)?;
    let bitmap = Bitmap::from_disk(bytes, header.rdoblocks).map_err(|p| CowError::format(path, p))?;
    bitmap
        .check_count(header.cowused, header.abi.field_offset(F_COWUSED))
        .map_err(|p| CowError::format(path, p))?;
    Ok(Opened { file, header, geom, bitmap, created: false, repaired })
}

/// FAT's `f_type` (MSDOS_SUPER_MAGIC): vfat and msdos.
const FAT_MAGIC: i64 = 0x4d44;
/// FAT keeps a file's size in 32 bits: a file ends at 4 GiB - 1 byte.
pub const FAT_MAX_FILE: u64 = (1 << 32) - 1;

/// The largest file the filesystem of `dir` holds, where it is smaller
/// than any cowfile could want: FAT's 4 GiB - 1. (exFAT, ext4, btrfs, xfs
/// and tmpfs hold files far larger than the 8 TiB rdofile cap.)
fn file_size_limit(f_type: i64) -> Option<(u64, &'static str)> {
    (f_type == FAT_MAGIC).then_some((FAT_MAX_FILE, "FAT (vfat)"))
}

/// Refuses, before anything is created or written, a cowfile whose data
/// area would end past what its filesystem can hold: on FAT32 the write
/// of a unit near the end of a 4 GiB image would otherwise fail with
/// EFBIG in the middle of a session. Uses the directory (the file may not
/// exist yet).
fn check_size_limit(path: &Path, geom: &Geometry) -> Result<(), CowError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Unknown filesystem (statfs failed): the open below reports the path.
    let Ok(fs) = rustix::fs::statfs(dir) else { return Ok(()) };
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    let f_type = fs.f_type as i64;
    size_limit_error(path, geom, file_size_limit(f_type))
}

/// The error for a cowfile that would outgrow `limit`, if it would.
fn size_limit_error(path: &Path, geom: &Geometry, limit: Option<(u64, &str)>) -> Result<(), CowError> {
    let need = geom.doffset + geom.numblocks * MAPUNIT;
    match limit {
        Some((max, fs)) if need > max => Err(CowError::io(
            path,
            "cannot hold this image's changes",
            None,
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "the cowfile can grow to {need} bytes ({:.2} GiB) for an image of {} KiB, but its \
                     filesystem is {fs}, whose files end at {max} bytes (4 GiB - 1): keep the cowfile \
                     on exFAT, ext4 or another filesystem without that limit",
                    need as f64 / (1u64 << 30) as f64,
                    geom.numblocks
                ),
            ),
        )),
        _ => Ok(()),
    }
}

/// Creates a new cowfile atomically: written and synced under a temporary
/// name, then renamed into place without replacing anything, so a crash
/// never leaves a half-made cowfile behind. `None` if `path` appeared
/// meanwhile.
fn create_new(path: &Path, base: BaseId, geom: &Geometry) -> Result<Option<File>, CowError> {
    let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.new-{}", std::process::id()));
    let create =
        || std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&temp);
    let file = match create() {
        // Our pid in the name: left by a crashed process that had it before.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&temp);
            create()
        }
        other => other,
    }
    .map_err(|e| CowError::io(&temp, "cannot create", None, e))?;
    let header = Header::new(Abi::X86_64, geom, base.fingerprint);
    // Locked before it gets its name, so no one can open it unlocked.
    let placed = lock(&file, &temp, true).and_then(|()| initialise(&file, &temp, &header)).and_then(|()| {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, &temp, CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(CowError::io(path, "rename the new cowfile into place", None, e.into())),
        }
    });
    match placed {
        Ok(true) => {
            sync_parent(path)
                .map_err(|e| CowError::io(path, "fsync the directory of the new cowfile", None, e))?;
            Ok(Some(file))
        }
        Ok(false) => {
            let _ = std::fs::remove_file(&temp);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Writes an all-zero (allocated) bitmap, then the fresh head block, and
/// makes both durable. The header goes last: an interrupted initialisation
/// of an empty file leaves no valid magic behind, never a valid header over
/// a short bitmap.
fn initialise(file: &File, path: &Path, header: &Header) -> Result<(), CowError> {
    let bitmap = vec![0u8; header.mapsize as usize];
    file.write_all_at(&bitmap, HEAD_BLOCK)
        .map_err(|e| CowError::io(path, "write new bitmap", Some(HEAD_BLOCK), e))?;
    file.sync_data().map_err(|e| CowError::io(path, "fdatasync new bitmap", None, e))?;
    file.write_all_at(&header.encode_block(), 0)
        .map_err(|e| CowError::io(path, "write new header", Some(0), e))?;
    file.sync_all().map_err(|e| CowError::io(path, "fsync new cowfile", None, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cowfile_past_fats_4_gib_is_refused_naming_file_and_limit() {
        let fat = file_size_limit(FAT_MAGIC);
        assert_eq!(fat, Some((FAT_MAX_FILE, "FAT (vfat)")));
        assert_eq!(file_size_limit(0xEF53), None, "ext4 has no such limit");
        assert_eq!(file_size_limit(0x2011_BAB0), None, "nor has exFAT");
        let path = Path::new("/stick/live/knoppix.cow");
        // The largest image whose cowfile still fits: its data area ends
        // at or before 4 GiB - 1.
        let fits = (0..2048u64)
            .map(|k| (1u64 << 22) - k)
            .map(|numblocks| Geometry::for_blocks(numblocks).unwrap())
            .find(|g| g.doffset + g.numblocks * MAPUNIT <= FAT_MAX_FILE)
            .unwrap();
        size_limit_error(path, &fits, fat).expect("fits in FAT");
        let over = Geometry::for_blocks(fits.numblocks + 1).unwrap();
        let err = size_limit_error(path, &over, fat).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        let msg = err.to_string();
        assert!(msg.starts_with("/stick/live/knoppix.cow: cannot hold this image's changes: "), "{msg}");
        assert!(msg.contains("FAT (vfat), whose files end at 4294967295 bytes (4 GiB - 1)"), "{msg}");
        // A 4 GiB image: refused on FAT, fine elsewhere.
        let four = Geometry::for_blocks(4 << 20).unwrap();
        assert!(size_limit_error(path, &four, fat).is_err());
        size_limit_error(path, &four, None).unwrap();
    }

    #[test]
    fn the_check_passes_on_this_hosts_filesystem() {
        // tmpfs or ext4 here: no limit, whatever the size.
        let dir = tempfile::tempdir().unwrap();
        let geom = Geometry::for_blocks(8 << 20).unwrap();
        check_size_limit(&dir.path().join("big.cow"), &geom).unwrap();
    }
}
