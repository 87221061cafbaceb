//! Rebuilding the bitmap of a dirty cowfile (what `cowrepair` does).
//!
//! Every 1 KiB data block that holds a non-zero byte gets its bit; bits are
//! never cleared for data (a clear bit with zero data and a set bit over a
//! hole read the same only if the rdofile block is zero, so we cannot tell).
//! Unlike cowrepair 3.1, the data area is walked with SEEK_DATA/SEEK_HOLE,
//! so a 32 GiB sparse cowfile costs what its allocated blocks cost; bits set
//! beyond the rdofile end are cleared (3.1 had no bound check at all); and
//! data beyond the end is reported instead of overflowing the bitmap.
//!
//! On-disk order: bitmap, fdatasync, then the header with `cowused`
//! recomputed and DIRTY cleared, fdatasync. A crash in between leaves the
//! file dirty, and repairing again gives the same result.

use super::bitmap::Bitmap;
use super::cowfile::{file_len, next_data, read_bitmap, read_zero_filled, write_header, CowIo};
use super::error::{CowError, FormatError};
use super::header::{Header, FLAG_DIRTY, HEAD_BLOCK, MAPUNIT};
use std::fs::File;
use std::path::Path;

/// Units read per I/O while scanning allocated extents.
const SCAN_UNITS: u64 = 256;
static ZERO_UNIT: [u8; MAPUNIT as usize] = [0; MAPUNIT as usize];

#[derive(Clone, Copy, Debug, Default)]
pub struct RepairOptions {
    /// Compute and report, write nothing (`-n`).
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Correction {
    /// The block holds data but its bit was clear; the bit is set.
    Marked { block: u64 },
    /// A bit was set beyond the rdofile end; it is cleared.
    ClearedBeyondEnd { block: u64 },
    /// Data lies beyond the rdofile end, where no bit can describe it; it is
    /// left alone and not counted.
    IgnoredBeyondEnd { block: u64 },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Bits changed (cowrepair's "Number of corrections in bitmap").
    pub corrections: u64,
    /// Bits set after the repair.
    pub cowused: u64,
    pub was_dirty: bool,
    /// Bytes of allocated data actually read.
    pub scanned_bytes: u64,
}

/// Repairs the bitmap of `file` whose parsed header is `header`, which is
/// updated to what was (or, with `dry_run`, would be) written.
pub fn repair(
    io: &(impl CowIo + ?Sized),
    path: &Path,
    header: &mut Header,
    opts: RepairOptions,
    report: &mut dyn FnMut(Correction),
) -> Result<RepairReport, CowError> {
    header.check_layout().map_err(|p| CowError::format(path, p))?;
    if header.is_packed() {
        return Err(CowError::format(path, FormatError::Packed));
    }
    let file = io.file();
    let bytes = read_bitmap(file, path, header)?;
    let mut map = Bitmap::from_disk_unchecked(bytes, header.rdoblocks);
    let mut corrections = 0;
    let beyond: Vec<u64> = map.beyond_end().collect();
    for block in beyond {
        map.clear(block);
        corrections += 1;
        report(Correction::ClearedBeyondEnd { block });
    }
    let (marked, scanned_bytes) = scan_data(file, path, header, &mut map, report)?;
    corrections += marked;
    let result =
        RepairReport { corrections, cowused: map.count(), was_dirty: header.is_dirty(), scanned_bytes };
    if opts.dry_run {
        return Ok(result);
    }
    if corrections > 0 {
        io.pwrite(map.bytes(), HEAD_BLOCK)
            .map_err(|e| CowError::io(path, "write bitmap", Some(HEAD_BLOCK), e))?;
        io.fdatasync("repair: bitmap")
            .map_err(|e| CowError::io(path, "fdatasync after the bitmap", None, e))?;
    }
    header.cowused = map.count();
    header.flags &= !FLAG_DIRTY;
    write_header(io, header, false).map_err(|e| CowError::io(path, "write header", Some(0), e))?;
    io.fdatasync("repair: header").map_err(|e| CowError::io(path, "fdatasync after the header", None, e))?;
    Ok(result)
}

/// Sets the bit of every allocated, non-zero data block. Returns the
/// number of bits set and the bytes read.
fn scan_data(
    file: &File,
    path: &Path,
    header: &Header,
    map: &mut Bitmap,
    report: &mut dyn FnMut(Correction),
) -> Result<(u64, u64), CowError> {
    let len = file_len(file, path)?;
    let doffset = header.doffset;
    let mut buf = vec![0u8; (SCAN_UNITS * MAPUNIT) as usize];
    let (mut marked, mut scanned) = (0, 0);
    let mut pos = doffset;
    while let Some((start, end)) =
        next_data(file, pos, len).map_err(|e| CowError::io(path, "seek data", Some(pos), e))?
    {
        let first = (start.max(doffset) - doffset) / MAPUNIT;
        let last = (end - doffset).div_ceil(MAPUNIT);
        let mut unit = first;
        while unit < last {
            // Units whose bit is already set need no look: only runs of
            // clear bits are read (a dirty file left by a busy overlay has
            // most of its bits on disk already).
            let (set, run) = map.run(unit, last);
            if set {
                unit += run;
                continue;
            }
            let count = run.min(SCAN_UNITS);
            let chunk = &mut buf[..(count * MAPUNIT) as usize];
            let offset = doffset + unit * MAPUNIT;
            read_zero_filled(file, chunk, offset)
                .map_err(|e| CowError::io(path, "read data", Some(offset), e))?;
            scanned += chunk.len() as u64;
            for (i, data) in chunk.chunks_exact(MAPUNIT as usize).enumerate() {
                let block = unit + i as u64;
                if data == ZERO_UNIT {
                    continue;
                }
                if block >= header.rdoblocks {
                    report(Correction::IgnoredBeyondEnd { block });
                    continue;
                }
                map.set(block);
                marked += 1;
                report(Correction::Marked { block });
            }
            unit += count;
        }
        pos = doffset + last * MAPUNIT;
    }
    Ok((marked, scanned))
}
