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
