//! The copy-on-write block device: a read-only base (cloop image, file or
//! block device) plus a cowloop-compatible cowfile that holds every 1 KiB
//! unit written since.
//!
//! # Unit states
//!
//! | bit | cowfile data        | reads as                      |
//! |-----|---------------------|-------------------------------|
//! | 0   | anything (ignored)  | the base                      |
//! | 1   | data                | the cowfile data              |
//! | 1   | hole / past EOF     | zeros (trimmed or zeroed)     |
//!
//! # Ordering and the durability contract
//!
//! Data is always written before its bit is set in memory, and the on-disk
//! bitmap and header are only written by [`Overlay::flush`]:
//!
//! 1. pwrite the head block with DIRTY set, fdatasync (this also makes all
//!    data of acknowledged writes durable);
//! 2. pwrite the 4 KiB bitmap chunks that changed since the last flush,
//!    fdatasync;
//! 3. pwrite the head block with DIRTY clear and `cowused`, fdatasync.
//!
//! When only data changed (overwrites of units already in the cowfile), a
//! flush is one fdatasync; when nothing changed, it makes no system call.
//!
//! Between flushes the on-disk metadata is exactly that of the last flush:
//! a crash there leaves a clean, consistent file in which every flushed
//! write is present. Units written since then either still have a clear bit
//! on disk (they read as before) or were overwritten in place, whole. DIRTY
//! is on disk only while a flush is between steps 1 and 3; a crash there
//! needs a repair, which finds every flushed unit (its bit is on disk, or
//! its data is durable and non-zero). Bits are never cleared, so a torn
//! bitmap is still a superset of the last flushed one.
//!
//! Two things keep the repair from resurrecting stale data: opening a
//! cowfile read-write punches every allocated unit whose bit is clear (left
//! over from writes that never reached a flush), and a write that fails
//! punches the units it may have touched.
//!
//! # Concurrency
//!
//! The bitmap sits behind an `RwLock` held only to look up or set bits,
//! never across data I/O. Mutations hold a [`RangeLock`] over their units,
//! which makes partial-unit read–merge–write atomic. Flushes are serialised
//! and snapshot the changed chunks under the lock, so writes go on while a
//! flush runs.

use super::bitmap::Bitmap;
use super::cowfile;
use super::error::CowError;
use super::header::{Header, FLAG_DIRTY, HEAD_BLOCK, MAPUNIT, MAP_CHUNK};
use super::open::{open_for_base, BaseId};
use super::rangelock::RangeLock;
use super::repair::RepairReport;
use super::space::SpaceWatch;
use crate::blockdev::{check_range, BlockDev, Caps, Extent, ReadAt};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const U: u64 = MAPUNIT;
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Most runs one [`Overlay::extents`] answer holds. NBD lets a status
/// reply cover less than was asked, and clients ask again from where it
/// stopped, so a fragmented bitmap cannot make one query unbounded.
pub const MAX_EXTENT_RUNS: usize = 4096;

/// `(length, reads_as_zero)` runs, neighbours with equal state merged.
#[derive(Default)]
struct Runs(Vec<Extent>);

impl Runs {
    fn push(&mut self, len: u64, zero: bool) {
        match self.0.last_mut() {
            Some(last) if last.zero == zero => last.len += len,
            _ if len > 0 => self.0.push(Extent { len, zero }),
            _ => {}
        }
    }
    fn full(&self) -> bool {
        self.0.len() >= MAX_EXTENT_RUNS
    }
}

/// Where warnings go (low space, truncated rdofile, failed flush on drop).
pub type WarnFn = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct OverlayOptions {
    /// Create the cowfile when it is missing or empty (the driver did).
    pub create: bool,
    /// Repair a dirty cowfile instead of refusing it.
    pub repair: bool,
    /// Warn once when the cowfile's filesystem has less free space.
    pub low_space_bytes: u64,
    /// Name of the base in messages.
    pub base_name: String,
    pub warn: WarnFn,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            create: true,
            repair: false,
            low_space_bytes: 64 << 20,
            base_name: "rdofile".into(),
            warn: Arc::new(|msg| eprintln!("cloopbox: cow: {msg}")),
        }
    }
}

/// Counters for a `/proc/cow/N`-like status. Reads and writes count I/O
/// requests to each file after coalescing, not 1 KiB units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub rdoreads: u64,
    pub cowreads: u64,
    pub cowwrites: u64,
    /// Units in the cowfile now (not only at the last flush).
    pub cowused: u64,
    pub numblocks: u64,
    pub mapsize: u64,
    /// Something changed since the last completed flush.
    pub unflushed: bool,
}

struct MapState {
    bits: Bitmap,
    /// One flag per 4 KiB bitmap chunk changed since the last flush.
    changed: Vec<bool>,
    any_changed: bool,
    /// Data was written or punched since the last fdatasync.
    data_dirty: bool,
}

#[derive(Default)]
struct Counters {
    rdoreads: AtomicU64,
    cowreads: AtomicU64,
    cowwrites: AtomicU64,
}

pub struct Overlay<B: ReadAt> {
    base: B,
    file: File,
    path: PathBuf,
    header: Header,
    size: u64,
    map: RwLock<MapState>,
    units: RangeLock,
    /// Serialises flushes; true while DIRTY may be on disk.
    flushing: Mutex<bool>,
    /// A lower bound of the cowfile length (pwrite only ever grows it).
    file_end: AtomicU64,
    can_punch: AtomicBool,
    space: SpaceWatch,
    counters: Counters,
    warn: WarnFn,
    closed: AtomicBool,
    repaired: Option<RepairReport>,
    created: bool,
}

fn read_map<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write_map<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl<B: ReadAt> Overlay<B> {
    /// Opens (or creates) the cowfile at `path` over `base`, with every
    /// check the driver made at activation: magic, version, packed, dirty,
    /// rdoblocks, fingerprint, cowused; plus ours (layout, bits beyond the
    /// end, merged).
    pub fn open(base: B, path: &Path, opts: &OverlayOptions) -> Result<Self, CowError> {
        let base_len = base.size();
        let numblocks = base_len >> 10;
        if base_len % U != 0 {
            (opts.warn)(&format!("{} truncated to multiple of 1024 bytes", opts.base_name));
        }
        let id = BaseId::of(&base)
            .map_err(|e| CowError::io(Path::new(&opts.base_name), "read for the fingerprint", None, e))?;
        let opened = open_for_base(path, id, opts.create, opts.repair)?;
        let file_end = cowfile::file_len(&opened.file, path)?;
        let chunks = opened.header.mapsize.div_ceil(MAP_CHUNK) as usize;
        let overlay = Overlay {
            base,
            size: numblocks * U,
            map: RwLock::new(MapState {
                bits: opened.bitmap,
                changed: vec![false; chunks],
                any_changed: false,
                data_dirty: false,
            }),
            units: RangeLock::default(),
            flushing: Mutex::new(false),
            file_end: AtomicU64::new(file_end),
            can_punch: AtomicBool::new(true),
            space: SpaceWatch::new(opts.low_space_bytes),
            counters: Counters::default(),
            warn: opts.warn.clone(),
            closed: AtomicBool::new(false),
            repaired: opened.repaired,
            created: opened.created,
            header: opened.header,
            file: opened.file,
            path: path.to_path_buf(),
        };
        overlay.reserve_metadata()?;
        overlay.scrub(file_end)?;
        Ok(overlay)
    }

    pub fn base(&self) -> &B {
        &self.base
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header as opened (ABI, geometry, fingerprint); `cowused` and
    /// the flags on disk change with every flush, see [`Overlay::stats`].
    pub fn header(&self) -> Header {
        self.header
    }

    /// The repair done on open, if the file was dirty.
    pub fn repaired(&self) -> Option<RepairReport> {
        self.repaired
    }

    pub fn created(&self) -> bool {
        self.created
    }

    pub fn stats(&self) -> Stats {
        let map = read_map(&self.map);
        Stats {
            rdoreads: self.counters.rdoreads.load(Ordering::Relaxed),
            cowreads: self.counters.cowreads.load(Ordering::Relaxed),
            cowwrites: self.counters.cowwrites.load(Ordering::Relaxed),
            cowused: map.bits.count(),
            numblocks: self.size / U,
            mapsize: self.header.mapsize,
            unflushed: map.any_changed || map.data_dirty,
        }
    }

    /// "Sync now" (cowsync): writes the bitmap and a clean header; the same
    /// as [`BlockDev::flush`].
    pub fn sync(&self) -> io::Result<()> {
        self.flush_now()
    }

    /// Flushes and closes; unlike dropping, reports a failed flush.
    pub fn close(self) -> io::Result<()> {
        let result = self.flush_now();
        self.closed.store(true, Ordering::SeqCst);
        result
    }

    /// Closes without flushing, leaving the cowfile exactly as a crash at
    /// this moment would (for tests, and for callers that must not touch
    /// the disk again).
    pub fn abandon(self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn data_offset(&self, dev_offset: u64) -> u64 {
        self.header.doffset + dev_offset
    }

    /// The bitmap region is written by every flush: allocate it now, so a
    /// flush never needs space the filesystem no longer has.
    fn reserve_metadata(&self) -> Result<(), CowError> {
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(&self.file, FallocateFlags::KEEP_SIZE, 0, HEAD_BLOCK + self.header.mapsize) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(()),
            Err(e) => Err(CowError::io(&self.path, "allocate header and bitmap", Some(0), e.into())),
        }
    }

    /// Punches every allocated unit whose bit is clear: data of writes that
    /// never reached a flush, which a later repair must not bring back.
    fn scrub(&self, len: u64) -> Result<(), CowError> {
        let doffset = self.header.doffset;
        let map = read_map(&self.map);
        let mut pos = doffset;
        while let Some((start, end)) = cowfile::next_data(&self.file, pos, len)
            .map_err(|e| CowError::io(&self.path, "seek data", Some(pos), e))?
        {
            let (first, last) = ((start - doffset) / U, (end - doffset).div_ceil(U));
            let mut unit = first;
            while unit < last {
                let (set, n) = map.bits.run(unit, last);
                if !set {
                    self.punch(unit, unit + n).map_err(|e| {
                        CowError::io(&self.path, "punch stale data", Some(doffset + unit * U), e)
                    })?;
                }
                unit += n;
            }
            pos = doffset + last * U;
        }
        Ok(())
    }

    fn pwrite(&self, data: &[u8], dev_offset: u64) -> io::Result<()> {
        let at = self.data_offset(dev_offset);
        self.file
            .write_all_at(data, at)
            .map_err(|e| super::error::io_context(&self.path, "write data", at, e))?;
        self.counters.cowwrites.fetch_add(1, Ordering::Relaxed);
        self.file_end.fetch_max(at + data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Reads one unit as the device shows it now. The caller holds the unit.
    fn read_unit(&self, unit: u64, buf: &mut [u8]) -> io::Result<()> {
        let in_cow = read_map(&self.map).bits.get(unit);
        self.read_run(in_cow, buf, unit * U)
    }

    fn read_run(&self, in_cow: bool, buf: &mut [u8], dev_offset: u64) -> io::Result<()> {
        if in_cow {
            self.counters.cowreads.fetch_add(1, Ordering::Relaxed);
            let at = self.data_offset(dev_offset);
            cowfile::read_zero_filled(&self.file, buf, at)
                .map_err(|e| super::error::io_context(&self.path, "read data", at, e))
        } else {
            self.counters.rdoreads.fetch_add(1, Ordering::Relaxed);
            self.base.read_at(buf, dev_offset)
        }
    }

    /// Read–merge–write of one unit. The caller holds the unit.
    fn write_partial(&self, unit: u64, at: usize, piece: &[u8]) -> io::Result<()> {
        let mut block = [0u8; U as usize];
        self.read_unit(unit, &mut block)?;
        block[at..at + piece.len()].copy_from_slice(piece);
        self.pwrite(&block, unit * U)
    }

    /// Sets the bits of `[first, end)` after their data is in the cowfile.
    fn mark(&self, first: u64, end: u64) {
        let mut map = write_map(&self.map);
        let MapState { bits, changed, any_changed, data_dirty } = &mut *map;
        bits.set_range(first, end, |byte| {
            changed[byte / MAP_CHUNK as usize] = true;
            *any_changed = true;
        });
        *data_dirty = true;
    }

    /// Makes whole units `[first, end)` of the cowfile read as zeros,
    /// freeing their space. Past the end of the file, the file is first
    /// grown (by one byte, then punched) so that a packed copy still finds
    /// every marked unit inside the file.
    fn punch(&self, first: u64, end: u64) -> io::Result<()> {
        let (start, stop) = (self.data_offset(first * U), self.data_offset(end * U));
        if stop > self.file_end.load(Ordering::Relaxed) {
            self.file
                .write_all_at(&[0], stop - 1)
                .map_err(|e| super::error::io_context(&self.path, "extend", stop - 1, e))?;
            self.file_end.fetch_max(stop, Ordering::Relaxed);
        }
        if self.can_punch.load(Ordering::Relaxed) {
            match cowfile::punch_hole(&self.file, start, stop - start) {
                Ok(true) => return Ok(()),
                Ok(false) => self.can_punch.store(false, Ordering::Relaxed),
                Err(e) => return Err(super::error::io_context(&self.path, "punch hole", start, e)),
            }
        }
        let mut pos = start;
        while pos < stop {
            let n = (stop - pos).min(ZEROS.len() as u64);
            self.file
                .write_all_at(&ZEROS[..n as usize], pos)
                .map_err(|e| super::error::io_context(&self.path, "write zeros", pos, e))?;
            pos += n;
        }
        Ok(())
    }

    /// Writes `buf` at `offset` while holding its units.
    fn write_locked(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let (mut pos, mut rest) = (offset, buf);
        if pos % U != 0 || (rest.len() as u64) < U {
            let at = (pos % U) as usize;
            let n = rest.len().min(U as usize - at);
            self.write_partial(pos / U, at, &rest[..n])?;
            pos += n as u64;
            rest = &rest[n..];
        }
        let whole = rest.len() / U as usize * U as usize;
        if whole > 0 {
            self.pwrite(&rest[..whole], pos)?;
            pos += whole as u64;
            rest = &rest[whole..];
        }
        if !rest.is_empty() {
            self.write_partial(pos / U, 0, rest)?;
        }
        Ok(())
    }

    /// Zeroes `[offset, offset+len)` while holding its units: whole units
    /// are punched, partial ones merged.
    fn zero_locked(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        let (whole_first, whole_end) = (offset.div_ceil(U), end / U);
        if whole_first >= whole_end {
            // Within one unit, or two partial units with nothing between.
            let mut pos = offset;
            while pos < end {
                let n = (end - pos).min(U - pos % U);
                self.write_partial(pos / U, (pos % U) as usize, &ZEROS[..n as usize])?;
                pos += n;
            }
            return Ok(());
        }
        if offset % U != 0 {
            let at = offset % U;
            self.write_partial(offset / U, at as usize, &ZEROS[..(U - at) as usize])?;
        }
        self.punch(whole_first, whole_end)?;
        if end % U != 0 {
            self.write_partial(end / U, 0, &ZEROS[..(end % U) as usize])?;
        }
        Ok(())
    }

    /// After a failed mutation: units whose bit is still clear may hold
    /// part of the new data; punch them so no repair can pick it up.
    fn discard_unmarked(&self, first: u64, end: u64) {
        let runs: Vec<(u64, u64)> = {
            let map = read_map(&self.map);
            let mut runs = Vec::new();
            let mut unit = first;
            while unit < end {
                let (set, n) = map.bits.run(unit, end);
                if !set {
                    runs.push((unit, n));
                }
                unit += n;
            }
            runs
        };
        for (unit, n) in runs {
            let start = self.data_offset(unit * U);
            let _ = cowfile::punch_hole(&self.file, start, n * U);
        }
    }

    /// Runs a mutation of `[offset, offset+len)` under its unit lock, then
    /// marks the units; on failure nothing is marked.
    fn mutate(&self, offset: u64, len: u64, op: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let (first, end) = (offset / U, (offset + len).div_ceil(U));
        let _held = self.units.lock(first, end);
        match op() {
            Ok(()) => {
                self.mark(first, end);
                if let Some(free) = self.space.after_write(&self.file) {
                    self.warn_low_space(free);
                }
                Ok(())
            }
            Err(e) => {
                self.discard_unmarked(first, end);
                if is_out_of_space(&e) {
                    if let Some(free) = self.space.check(&self.file) {
                        self.warn_low_space(free);
                    }
                }
                Err(e)
            }
        }
    }

    fn warn_low_space(&self, free: u64) {
        (self.warn)(&format!("cowfile {} almost full (only {} KiB free)", self.path.display(), free / 1024));
    }

    fn flush_now(&self) -> io::Result<()> {
        let mut disk_dirty = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = {
            let mut map = write_map(&self.map);
            if !map.any_changed && !map.data_dirty {
                return Ok(());
            }
            Snapshot::take(&mut map)
        };
        let result = self.write_snapshot(&snapshot, &mut disk_dirty);
        if result.is_err() {
            snapshot.restore(&mut write_map(&self.map));
        }
        result
    }

    fn write_snapshot(&self, snap: &Snapshot, disk_dirty: &mut bool) -> io::Result<()> {
        let ctx = |op: &'static str, at: u64| move |e| super::error::io_context(&self.path, op, at, e);
        if snap.chunks.is_empty() && !*disk_dirty {
            return self.file.sync_data().map_err(ctx("fdatasync", 0));
        }
        let mut header = self.header;
        if !*disk_dirty {
            header.flags |= FLAG_DIRTY;
            cowfile::write_header(&self.file, &header, true).map_err(ctx("write header", 0))?;
            *disk_dirty = true;
        }
        self.file.sync_data().map_err(ctx("fdatasync", 0))?;
        for (index, bytes) in &snap.chunks {
            let at = HEAD_BLOCK + index * MAP_CHUNK;
            self.file.write_all_at(bytes, at).map_err(ctx("write bitmap", at))?;
        }
        self.file.sync_data().map_err(ctx("fdatasync", 0))?;
        header.flags &= !FLAG_DIRTY;
        header.cowused = snap.count;
        cowfile::write_header(&self.file, &header, true).map_err(ctx("write header", 0))?;
        self.file.sync_data().map_err(ctx("fdatasync", 0))?;
        *disk_dirty = false;
        Ok(())
    }
}

/// `base:allocation` (what NBD_CMD_BLOCK_STATUS reports).
impl<B: ReadAt> Overlay<B> {
    /// Describes `[offset, offset+len)` as runs of data and zeros.
    ///
    /// A unit in the cowfile reads as zeros exactly where the cowfile has
    /// a hole or has not grown to (it was trimmed or zeroed, which punches
    /// it); anywhere else in the cowfile it counts as data, even if the
    /// bytes written happen to be zeros. Units not in the cowfile are
    /// described by the base's [`ReadAt::extents`] for their byte range,
    /// which may cover less than asked (an empty answer counts as data).
    ///
    /// The answer claims zero only where a read would now return zeros,
    /// covers at least one byte when `len > 0`, and may stop early: once
    /// it holds [`MAX_EXTENT_RUNS`] runs, or where the base stopped short.
    fn allocation(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        let end = offset + len;
        let mut out = Runs::default();
        for (in_cow, unit, n) in self.unit_runs(offset, end, MAX_EXTENT_RUNS) {
            let (from, to) = ((unit * U).max(offset), ((unit + n) * U).min(end));
            let whole = if in_cow {
                self.cow_extents(from, to, &mut out)?
            } else {
                base_extents(self.base.extents(from, to - from)?, to - from, &mut out)
            };
            if !whole || out.full() {
                break;
            }
        }
        Ok(out.0)
    }

    /// Runs of `[offset, end)` in and out of the cowfile, as (in_cow,
    /// first unit, units); at most `limit` of them.
    fn unit_runs(&self, offset: u64, end: u64, limit: usize) -> Vec<(bool, u64, u64)> {
        let map = read_map(&self.map);
        let mut runs = Vec::new();
        let mut unit = offset / U;
        let last = end.div_ceil(U);
        while unit < last && runs.len() < limit {
            let (set, n) = map.bits.run(unit, last);
            runs.push((set, unit, n));
            unit += n;
        }
        runs
    }

    /// Holes (zeros) and data of the cowfile for device bytes
    /// `[from, to)`, found with SEEK_DATA/SEEK_HOLE; false if it stopped
    /// because `out` is full.
    fn cow_extents(&self, from: u64, to: u64, out: &mut Runs) -> io::Result<bool> {
        let doffset = self.header.doffset;
        let mut pos = from;
        while pos < to {
            if out.full() {
                return Ok(false);
            }
            let found = cowfile::next_data(&self.file, doffset + pos, doffset + to)
                .map_err(|e| super::error::io_context(&self.path, "seek data", doffset + pos, e))?;
            match found {
                None => {
                    out.push(to - pos, true);
                    pos = to;
                }
                // SEEK_HOLE always moves past data; anything else is taken
                // as data to the end, which is never wrong.
                Some((start, stop)) if stop <= start => {
                    out.push(to - pos, false);
                    pos = to;
                }
                Some((start, stop)) => {
                    let (start, stop) = ((start - doffset).max(pos), (stop - doffset).min(to));
                    out.push(start - pos, true);
                    out.push(stop - start, false);
                    pos = stop;
                }
            }
        }
        Ok(true)
    }
}

/// Appends the base's answer for a range of `len` bytes; false if it
/// covered less than that (or `out` filled up).
fn base_extents(got: Vec<Extent>, len: u64, out: &mut Runs) -> bool {
    if got.is_empty() {
        out.push(len, false);
        return true;
    }
    let mut covered = 0;
    for Extent { len: n, zero } in got {
        let n = n.min(len - covered);
        if n == 0 {
            break;
        }
        if out.full() {
            return false;
        }
        out.push(n, zero);
        covered += n;
    }
    covered == len
}

fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// The bitmap chunks changed since the last flush, copied under the lock.
struct Snapshot {
    chunks: Vec<(u64, Vec<u8>)>,
    count: u64,
    data_dirty: bool,
}

impl Snapshot {
    fn take(map: &mut MapState) -> Snapshot {
        let bytes = map.bits.bytes();
        let mut chunks = Vec::new();
        for (i, flag) in map.changed.iter_mut().enumerate() {
            if std::mem::take(flag) {
                let start = i * MAP_CHUNK as usize;
                let stop = (start + MAP_CHUNK as usize).min(bytes.len());
                chunks.push((i as u64, bytes[start..stop].to_vec()));
            }
        }
        map.any_changed = false;
        let data_dirty = std::mem::take(&mut map.data_dirty);
        Snapshot { chunks, count: map.bits.count(), data_dirty }
    }

    /// A failed flush leaves its work for the next one.
    fn restore(&self, map: &mut MapState) {
        for (i, _) in &self.chunks {
            map.changed[*i as usize] = true;
        }
        map.any_changed |= !self.chunks.is_empty();
        map.data_dirty |= self.data_dirty;
    }
}

impl<B: ReadAt> ReadAt for Overlay<B> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        for (in_cow, unit, n) in self.unit_runs(offset, end, usize::MAX) {
            let from = (unit * U).max(offset);
            let to = ((unit + n) * U).min(end);
            let slice = &mut buf[(from - offset) as usize..(to - offset) as usize];
            self.read_run(in_cow, slice, from)?;
        }
        Ok(())
    }

    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.allocation(offset, len)
    }

    /// The base's answer for the whole range: it is right for the units
    /// not in the cowfile, and units in the cowfile are a local pread.
    fn is_resident(&self, offset: u64, len: u64) -> bool {
        self.base.is_resident(offset, len)
    }

    fn prefetch(&self, offset: u64, len: u64) -> Option<io::Result<()>> {
        self.base.prefetch(offset, len)
    }
}

impl<B: ReadAt> BlockDev for Overlay<B> {
    fn caps(&self) -> Caps {
        Caps { write: true, flush: true, fua: false, trim: true, write_zeroes: true, multi_conn: true }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.iter().all(|&b| b == 0) {
            return self.write_zeroes(offset, buf.len() as u64);
        }
        self.mutate(offset, buf.len() as u64, || self.write_locked(buf, offset))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.mutate(offset, len, || self.zero_locked(offset, len))
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }

    fn flush(&self) -> io::Result<()> {
        self.flush_now()
    }

    /// Whole units are written without reading the base.
    fn write_is_fast(&self, offset: u64, len: u64) -> bool {
        offset % U == 0 && len % U == 0
    }
}

impl<B: ReadAt> Drop for Overlay<B> {
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.flush_now() {
            (self.warn)(&format!("flush on close failed: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::MemDev;

    fn open(dir: &Path, base: MemDev) -> Overlay<MemDev> {
        open_over(dir, base)
    }

    /// Bytes `[offset, offset+len)` as the device reads them.
    fn read(o: &Overlay<MemDev>, offset: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        o.read_at(&mut buf, offset).unwrap();
        buf
    }

    /// A base that answers `base:allocation` with `answer(len)` and
    /// records what it was asked.
    struct Told {
        dev: MemDev,
        answer: fn(u64) -> Vec<Extent>,
        asked: Mutex<Vec<(u64, u64)>>,
    }

    impl Told {
        fn new(dev: MemDev, answer: fn(u64) -> Vec<Extent>) -> Told {
            Told { dev, answer, asked: Mutex::new(Vec::new()) }
        }
    }

    impl ReadAt for Told {
        fn size(&self) -> u64 {
            self.dev.size()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.dev.read_at(buf, offset)
        }
        fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
            self.asked.lock().unwrap().push((offset, len));
            Ok((self.answer)(len))
        }
    }

    fn open_over<B: ReadAt>(dir: &Path, base: B) -> Overlay<B> {
        let opts =
            OverlayOptions { warn: Arc::new(|m| panic!("unexpected warning: {m}")), ..Default::default() };
        Overlay::open(base, &dir.join("t.cow"), &opts).unwrap()
    }

    fn pairs(runs: &[Extent]) -> Vec<(u64, bool)> {
        runs.iter().map(|e| (e.len, e.zero)).collect()
    }

    #[test]
    fn extents_never_claim_zero_for_data_and_find_holes() {
        let dir = tempfile::tempdir().unwrap();
        // MemDev answers with the default: everything is data.
        let o = open(dir.path(), MemDev::new(vec![0x11; 1 << 20]));
        o.write_at(&[1; 4096], 8192).unwrap();
        o.write_zeroes(65536, 65536).unwrap();
        o.write_at(&[0; 4096], 200_000).unwrap(); // unaligned: partial units hold zeros as data
        o.trim(300_000, 1000).unwrap(); // within one unit: written zeros, data
        let runs = pairs(&o.extents(0, 1 << 20).unwrap());
        assert_eq!(runs.iter().map(|r| r.0).sum::<u64>(), 1 << 20);
        let mut pos = 0;
        for &(len, zero) in &runs {
            if zero {
                assert!(read(&o, pos, len).iter().all(|&b| b == 0), "{pos}+{len} claimed zero");
            }
            pos += len;
        }
        assert_eq!(runs[0], (65536, false), "{runs:?}");
        assert_eq!(runs[1], (65536, true), "{runs:?}");
        // Zeros written unaligned: the three whole units punched there are
        // a hole only on a filesystem with blocks smaller than 4 KiB.
        let zero_bytes: u64 = runs.iter().filter(|r| r.1).map(|r| r.0).sum();
        assert!((65536..=65536 + 3072).contains(&zero_bytes), "{runs:?}");
    }

    #[test]
    fn extents_take_the_base_answer_and_stop_where_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let short = Told::new(MemDev::new(vec![0; 1 << 20]), |len| vec![Extent::zero(len.min(2000))]);
        let o = open_over(dir.path(), short);
        o.write_at(&[3; 1024], 4096).unwrap();
        let runs = o.extents(1000, 10_000).unwrap();
        // The base's first range is [1000, 4096); it answers 2000 bytes
        // only, and the answer stops there.
        assert_eq!(*o.base().asked.lock().unwrap(), vec![(1000, 3096)]);
        assert_eq!(pairs(&runs), vec![(2000, true)]);
        assert!(o.extents(1 << 20, 1).is_err());
        // An empty answer from the base counts as data.
        let dir = tempfile::tempdir().unwrap();
        let o = open_over(dir.path(), Told::new(MemDev::new(vec![0; 1 << 20]), |_| vec![]));
        assert_eq!(pairs(&o.extents(0, 8192).unwrap()), vec![(8192, false)]);
    }

    #[test]
    fn queries_reach_the_base_and_whole_units_write_fast() {
        let dir = tempfile::tempdir().unwrap();
        let o = open(dir.path(), MemDev::new(vec![0; 1 << 20]));
        assert!(o.write_is_fast(2048, 4096) && !o.write_is_fast(100, 1024) && !o.write_is_fast(0, 1000));
        // The base (a MemDev) has no cache and nothing is resident.
        assert!(o.prefetch(0, 4096).is_none() && !o.is_resident(0, 4096));
    }

    #[test]
    fn extents_of_a_fragmented_cowfile_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = Told::new(MemDev::new(vec![0; 16 << 20]), |len| vec![Extent::zero(len)]);
        let o = open_over(dir.path(), zeros);
        for unit in 0..4000u64 {
            o.write_at(&[5; 1024], unit * 2048).unwrap();
        }
        let runs = pairs(&o.extents(0, 16 << 20).unwrap());
        assert!(runs.len() <= MAX_EXTENT_RUNS + 1, "{} runs", runs.len());
        assert!(runs.len() >= MAX_EXTENT_RUNS, "{} runs", runs.len());
        let covered: u64 = runs.iter().map(|r| r.0).sum();
        assert!(covered < 16 << 20 && covered > 0);
        for (i, &(len, zero)) in runs.iter().enumerate() {
            assert_eq!((len, zero), (1024, i % 2 == 1), "run {i}");
        }
    }
}
