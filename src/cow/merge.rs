//! Writing a cowfile's blocks into its rdofile (what `cowmerge` does).
//!
//! [`Merge::prepare`] does every check before anything is written: the
//! cowfile must be clean, unpacked, not merged before, consistent, and
//! belong to this rdofile by size and fingerprint (cowmerge 3.1 merged dirty
//! files because of its `flags &= X` bug, and never compared sizes).
//! [`Merge::run`] copies the blocks in bitmap order, coalescing runs,
//! fsyncs the rdofile, and only then sets [`FLAG_MERGED`] in the cowfile and
//! fsyncs it. A crash before that leaves the cowfile unmarked, and merging
//! again writes the same bytes; once marked, no cloopbox tool applies the
//! cowfile again. The rdofile's own fingerprint may change with the merge,
//! which is why the mark is needed at all.

use super::bitmap::Bitmap;
use super::cowfile::{lock, read_bitmap, read_header, read_zero_filled, write_header};
use super::error::{CowError, FormatError};
use super::header::{Header, FLAG_MERGED, F_COWUSED, MAPUNIT};
use super::open::BaseId;
use crate::blockdev::FileDev;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Units copied per I/O.
const COPY_UNITS: u64 = 256;

pub struct Merge {
    cow: File,
    cow_path: PathBuf,
    rdo: File,
    rdo_path: PathBuf,
    header: Header,
    bitmap: Bitmap,
}

impl Merge {
    /// Opens both files read-write and checks everything.
    pub fn prepare(rdo_path: &Path, cow_path: &Path) -> Result<Merge, CowError> {
        // Read-write from the start: after merging we must mark it.
        let cow = std::fs::OpenOptions::new().read(true).write(true).open(cow_path).map_err(|e| {
            CowError::io(cow_path, "cannot open for writing (it is marked as merged afterwards)", None, e)
        })?;
        lock(&cow, cow_path, true)?;
        let header = read_header(&cow, cow_path)?;
        header.check_layout().map_err(|p| CowError::format(cow_path, p))?;
        let refuse = |p| Err(CowError::format(cow_path, p));
        if header.is_packed() {
            return refuse(FormatError::Packed);
        }
        if header.is_dirty() {
            return refuse(FormatError::Dirty);
        }
        if header.is_merged() {
            return refuse(FormatError::Merged);
        }
        let bitmap = Bitmap::from_disk(read_bitmap(&cow, cow_path, &header)?, header.rdoblocks)
            .map_err(|p| CowError::format(cow_path, p))?;
        bitmap
            .check_count(header.cowused, header.abi.field_offset(F_COWUSED))
            .map_err(|p| CowError::format(cow_path, p))?;
        let rdo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(rdo_path)
            .map_err(|e| CowError::io(rdo_path, "cannot open", None, e))?;
        let reader = FileDev::from_file(rdo.try_clone().map_err(|e| CowError::io(rdo_path, "dup", None, e))?)
            .map_err(|e| CowError::io(rdo_path, "size", None, e))?;
        let id =
            BaseId::of(&reader).map_err(|e| CowError::io(rdo_path, "read for the fingerprint", None, e))?;
        header.check_related(id.numblocks, id.fingerprint).map_err(|p| CowError::format(cow_path, p))?;
        Ok(Merge {
            cow,
            cow_path: cow_path.to_path_buf(),
            rdo,
            rdo_path: rdo_path.to_path_buf(),
            header,
            bitmap,
        })
    }

    /// Blocks that will be written.
    pub fn blocks(&self) -> u64 {
        self.bitmap.count()
    }

    /// Copies the blocks, reporting bytes done; returns the block count.
    pub fn run(self, progress: &mut dyn FnMut(u64)) -> Result<u64, CowError> {
        let mut buf = vec![0u8; (COPY_UNITS * MAPUNIT) as usize];
        let mut done = 0;
        for (block, n, before) in self.bitmap.pieces(COPY_UNITS) {
            let chunk = &mut buf[..(n * MAPUNIT) as usize];
            let from = self.header.doffset + block * MAPUNIT;
            read_zero_filled(&self.cow, chunk, from)
                .map_err(|e| CowError::io(&self.cow_path, "read data", Some(from), e))?;
            let to = block * MAPUNIT;
            self.rdo
                .write_all_at(chunk, to)
                .map_err(|e| CowError::io(&self.rdo_path, "write", Some(to), e))?;
            done = before + n;
            progress(done * MAPUNIT);
        }
        self.rdo.sync_all().map_err(|e| CowError::io(&self.rdo_path, "fsync", None, e))?;
        let mut header = self.header;
        header.flags |= FLAG_MERGED;
        write_header(&self.cow, &header, false)
            .map_err(|e| CowError::io(&self.cow_path, "mark as merged: write header", Some(0), e))?;
        self.cow.sync_all().map_err(|e| CowError::io(&self.cow_path, "fsync", None, e))?;
        Ok(done)
    }
}
