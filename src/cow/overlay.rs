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
//! Data is always written before its bit is set in memory. The on-disk
//! bitmap and header are written only by a flush, and DIRTY stays on disk
//! while the device is busy, so that a flush is cheap:
//!
//! * [`BlockDev::flush`]: pwrite the changed 4 KiB bitmap chunks, then one
//!   fdatasync, which also makes the data durable. A chunk never carries a
//!   bit whose unit has non-zero data that is not durable yet ("fresh"
//!   bits): those go to disk with the next flush, after the fdatasync of
//!   this one made their data durable; until then a repair finds them (the
//!   header is DIRTY). Units that read as zeros (trimmed, zeroed, zero
//!   data) cannot be found by a repair, so their bits go out at once: if
//!   the bit lands before the punch, the unit reads what was there, which is
//!   its state at the last flush or a later one. The first flush after the
//!   file was clean writes the DIRTY header first: with the data in one
//!   fdatasync when no chunk is due, else with an fdatasync of its own
//!   before the chunks. A flush after overwrites of units whose bits are
//!   on disk, with a clean header, is one fdatasync and leaves it clean.
//! * [`Overlay::sync`] (cowsync), close, and [`Overlay::clean_if_idle`]
//!   (the idle timer) make the file clean: fdatasync the data, write every
//!   pending chunk, fdatasync, write the clean header with `cowused`,
//!   fdatasync.
//!
//! A crash with a clean header on disk leaves a consistent file with every
//! flushed write; unflushed units have clear bits and read as before. A
//! crash with DIRTY on disk needs a repair, which finds every flushed unit:
//! its bit is on disk, or its data is durable and non-zero. Bits are never
//! cleared, so a torn bitmap is still a superset of the last flushed one.
//!
//! Two things keep the repair from resurrecting stale data: opening a
//! cowfile read-write punches every allocated unit whose bit is clear (left
//! over from writes that never reached a flush) and makes that durable
//! before anything else, and a write that fails punches the units it may
//! have touched, durably.
//!
//! # Concurrency
//!
//! The bitmap sits behind an `RwLock` held only to look up or set bits,
//! never across data I/O. Mutations hold a [`RangeLock`] over their units,
//! which makes partial-unit read–merge–write atomic. Flushes are serialised
//! and snapshot the changed chunks under the lock, so writes go on while a
//! flush runs.

use super::bitmap::Bitmap;
use super::cowfile::{self, CowIo};
use super::error::CowError;
use super::header::{Header, FLAG_DIRTY, HEAD_BLOCK, MAPUNIT, MAP_CHUNK};
use super::open::{open_for_base, BaseId};
use super::rangelock::RangeLock;
use super::repair::RepairReport;
use super::space::SpaceWatch;
use crate::blockdev::{check_range, BlockDev, Caps, Extent, ReadAt};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

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

/// How long a busy overlay must be idle before the idle cleaner (see
/// [`Overlay::spawn_idle_cleaner`]) clears DIRTY on disk.
pub const IDLE_CLEAN: Duration = Duration::from_secs(5);

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
    /// Appended to the message of a full cowfile: where more space comes
    /// from for this user (the live system's boot options, say).
    pub full_hint: String,
    pub warn: WarnFn,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self {
            create: true,
            repair: false,
            low_space_bytes: 64 << 20,
            base_name: "rdofile".into(),
            full_hint: String::new(),
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
    /// Units overwritten with zeros because the cowfile's filesystem cannot
    /// punch holes (FAT, exFAT); 0 where it can.
    pub zeroed: u64,
}

struct MapState {
    bits: Bitmap,
    /// Per 4 KiB bitmap chunk: holds bits the next flush must write (units
    /// that read as zeros, which a repair cannot find).
    changed: Vec<bool>,
    any_changed: bool,
    /// Per chunk: bits whose data a completed flush made durable but which
    /// are not on disk yet. Written by the next flush that writes anything,
    /// and by a clean.
    deferred: Vec<bool>,
    /// Per chunk, allocated on demand: bits set since the last fdatasync for
    /// units with non-zero data. Never written before that data is durable.
    fresh: Vec<Option<Box<[u8]>>>,
    fresh_any: bool,
    /// Data was written or punched since the last fdatasync.
    data_dirty: bool,
}

/// Runs `(first, end)` of units whose new contents read as zeros.
#[derive(Default)]
struct ZeroUnits(Vec<(u64, u64)>);

impl ZeroUnits {
    fn push(&mut self, first: u64, end: u64) {
        match self.0.last_mut() {
            Some(last) if last.1 == first => last.1 = end,
            _ if end > first => self.0.push((first, end)),
            _ => {}
        }
    }
}

fn is_zero(data: &[u8]) -> bool {
    // An OR over the whole slice vectorises; `all` stops early but does not.
    data.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// `(byte index, mask)` of the bits of units `[first, end)`.
fn byte_masks(first: u64, end: u64) -> impl Iterator<Item = (usize, u8)> {
    let (first_byte, end_byte) = (first / 8, end.div_ceil(8));
    (first_byte..end_byte).map(move |byte| {
        let lo = first.max(byte * 8) - byte * 8;
        let hi = end.min(byte * 8 + 8) - byte * 8;
        (byte as usize, ((0xffu16 << lo) & !(0xffu16 << hi)) as u8)
    })
}

#[derive(Default)]
struct Counters {
    rdoreads: AtomicU64,
    cowreads: AtomicU64,
    cowwrites: AtomicU64,
    zeroed: AtomicU64,
}

/// The overlay of `base` with its cowfile, reached through `F` (a [`File`];
/// tests substitute a recording layer, see [`CowIo`]).
pub struct Overlay<B: ReadAt, F: CowIo = File> {
    base: B,
    file: F,
    path: PathBuf,
    header: Header,
    size: u64,
    map: RwLock<MapState>,
    units: RangeLock,
    /// Serialises flushes; true while DIRTY may be on disk.
    flushing: Mutex<bool>,
    /// Milliseconds since `opened_at` of the last mutation or flush.
    last_active: AtomicU64,
    opened_at: Instant,
    /// A lower bound of the cowfile length (pwrite only ever grows it).
    file_end: AtomicU64,
    can_punch: AtomicBool,
    space: SpaceWatch,
    counters: Counters,
    warn: WarnFn,
    full_hint: String,
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
        Self::open_with(base, path, opts, |file| file)
    }
}

impl<B: ReadAt, F: CowIo> Overlay<B, F> {
    /// [`Overlay::open`], with the cowfile's I/O after the open checks (and
    /// any repair) going through `wrap(file)`: the seam the crash-state
    /// replay test records at.
    pub fn open_with(
        base: B,
        path: &Path,
        opts: &OverlayOptions,
        wrap: impl FnOnce(File) -> F,
    ) -> Result<Self, CowError> {
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
        let space = SpaceWatch::new(opts.low_space_bytes, &opened.file);
        let file = wrap(opened.file);
        let overlay = Overlay {
            base,
            size: numblocks * U,
            map: RwLock::new(MapState {
                bits: opened.bitmap,
                changed: vec![false; chunks],
                any_changed: false,
                deferred: vec![false; chunks],
                fresh: (0..chunks).map(|_| None).collect(),
                fresh_any: false,
                data_dirty: false,
            }),
            units: RangeLock::default(),
            flushing: Mutex::new(false),
            last_active: AtomicU64::new(0),
            opened_at: Instant::now(),
            file_end: AtomicU64::new(file_end),
            can_punch: AtomicBool::new(true),
            space,
            counters: Counters::default(),
            warn: opts.warn.clone(),
            full_hint: opts.full_hint.clone(),
            closed: AtomicBool::new(false),
            repaired: opened.repaired,
            created: opened.created,
            header: opened.header,
            file,
            path: path.to_path_buf(),
        };
        overlay.reserve_metadata()?;
        // A repair gave every non-zero unit its bit: nothing stale is left,
        // and on a filesystem without holes the scrub would read it all again.
        if overlay.repaired.is_none() {
            overlay.scrub(file_end)?;
        }
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
            unflushed: map.any_changed || map.data_dirty || map.fresh_any,
            zeroed: self.counters.zeroed.load(Ordering::Relaxed),
        }
    }

    /// "Sync now" (cowsync): a flush that also writes every pending bitmap
    /// chunk and a clean header, so that the file on disk needs no repair
    /// until the next write is flushed.
    pub fn sync(&self) -> io::Result<()> {
        self.flush_now(true)
    }

    /// Makes the file clean, as [`Overlay::sync`] does, if DIRTY may be on
    /// disk and nothing was written or flushed for `idle`. Returns whether
    /// it did. Does nothing while a flush runs.
    pub fn clean_if_idle(&self, idle: Duration) -> io::Result<bool> {
        match self.flushing.try_lock() {
            Ok(dirty) if *dirty => {}
            _ => return Ok(false),
        }
        let last = Duration::from_millis(self.last_active.load(Ordering::Relaxed));
        if self.opened_at.elapsed().saturating_sub(last) < idle {
            return Ok(false);
        }
        self.flush_now(true).map(|()| true)
    }

    fn touch(&self) {
        let now = self.opened_at.elapsed().as_millis() as u64;
        self.last_active.store(now, Ordering::Relaxed);
    }

    /// Flushes and closes, leaving a clean file; unlike dropping, reports a
    /// failed flush.
    pub fn close(self) -> io::Result<()> {
        let result = self.flush_now(true);
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
        match fallocate(self.file.file(), FallocateFlags::KEEP_SIZE, 0, HEAD_BLOCK + self.header.mapsize) {
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
        let mut punched = false;
        while let Some((start, end)) = cowfile::next_data(self.file.file(), pos, len)
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
                    punched = true;
                }
                unit += n;
            }
            pos = doffset + last * U;
        }
        // Durable before anything else: a flush may make DIRTY durable in
        // the same fdatasync as new data, and a repair then must not find
        // the stale data.
        if punched {
            self.file.fdatasync("open: scrub").map_err(|e| CowError::io(&self.path, "fdatasync", None, e))?;
        }
        Ok(())
    }

    fn pwrite(&self, data: &[u8], dev_offset: u64) -> io::Result<()> {
        let at = self.data_offset(dev_offset);
        self.file.pwrite(data, at).map_err(|e| super::error::io_context(&self.path, "write data", at, e))?;
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
            cowfile::read_zero_filled(self.file.file(), buf, at)
                .map_err(|e| super::error::io_context(&self.path, "read data", at, e))
        } else {
            self.counters.rdoreads.fetch_add(1, Ordering::Relaxed);
            self.base.read_at(buf, dev_offset)
        }
    }

    /// Read–merge–write of one unit. The caller holds the unit. Adds the
    /// unit to `zeros` if it now holds only zeros.
    fn write_partial(&self, unit: u64, at: usize, piece: &[u8], zeros: &mut ZeroUnits) -> io::Result<()> {
        let mut block = [0u8; U as usize];
        self.read_unit(unit, &mut block)?;
        block[at..at + piece.len()].copy_from_slice(piece);
        self.pwrite(&block, unit * U)?;
        if is_zero(&block) {
            zeros.push(unit, unit + 1);
        }
        Ok(())
    }

    /// Sets the bits of `[first, end)` after their data is in the cowfile.
    /// Newly set bits of units with data are fresh (not on disk before the
    /// data is durable); units in `zeros` go out with the next flush.
    fn mark(&self, first: u64, end: u64, zeros: &ZeroUnits) {
        let mut map = write_map(&self.map);
        let map = &mut *map;
        let all_zero = zeros.0.first() == Some(&(first, end));
        let mapsize = self.header.mapsize as usize;
        let chunk_of = |byte: usize| byte / MAP_CHUNK as usize;
        let (fresh, fresh_any) = (&mut map.fresh, &mut map.fresh_any);
        map.bits.set_range(first, end, |byte, new| {
            if all_zero {
                return;
            }
            let chunk = chunk_of(byte);
            let len = (mapsize - chunk * MAP_CHUNK as usize).min(MAP_CHUNK as usize);
            let mask = fresh[chunk].get_or_insert_with(|| vec![0; len].into_boxed_slice());
            mask[byte % MAP_CHUNK as usize] |= new;
            *fresh_any = true;
        });
        for &(a, b) in &zeros.0 {
            for (byte, bits) in byte_masks(a, b) {
                let chunk = chunk_of(byte);
                map.changed[chunk] = true;
                if let Some(mask) = &mut map.fresh[chunk] {
                    mask[byte % MAP_CHUNK as usize] &= !bits;
                }
            }
        }
        map.any_changed |= all_zero || !zeros.0.is_empty();
        map.data_dirty = true;
    }

    /// Makes whole units `[first, end)` of the cowfile read as zeros,
    /// freeing their space. Past the end of the file, the file is first
    /// grown (by one byte, then punched) so that a packed copy still finds
    /// every marked unit inside the file.
    fn punch(&self, first: u64, end: u64) -> io::Result<()> {
        let (start, stop) = (self.data_offset(first * U), self.data_offset(end * U));
        let old_end = self.file_end.load(Ordering::Relaxed);
        if stop > old_end {
            self.file
                .pwrite(&[0], stop - 1)
                .map_err(|e| super::error::io_context(&self.path, "extend", stop - 1, e))?;
            self.file_end.fetch_max(stop, Ordering::Relaxed);
        }
        if self.can_punch.load(Ordering::Relaxed) {
            match self.file.punch_hole(start, stop - start) {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    // Said once, by whichever thread found it first.
                    if self.can_punch.swap(false, Ordering::Relaxed) {
                        (self.warn)(&format!(
                            "cowfile {}: its filesystem cannot punch holes (FAT, exFAT?): trimmed and \
                             zeroed units are overwritten with zeros instead",
                            self.path.display()
                        ));
                    }
                }
                Err(e) => return Err(super::error::io_context(&self.path, "punch hole", start, e)),
            }
        }
        // What the file grew by above reads as zeros already (a filesystem
        // without holes fills the gap with zeros).
        self.zero_fill(start, stop.min(old_end))
    }

    /// The fallback of [`Overlay::punch`] where the filesystem cannot punch
    /// holes: `[start, stop)` of the cowfile is read, and zeros are written
    /// only over the 1 KiB units that are not zero already. Trimming free
    /// space that is already zero (every `fstrim` trims all free space),
    /// and the scrub at open over a cowfile without stale data, then cost
    /// a read, not a write of the same size: on a USB stick reading is
    /// several times faster than writing, and wears nothing.
    fn zero_fill(&self, start: u64, stop: u64) -> io::Result<()> {
        const CHUNK: u64 = 256 * 1024;
        if start >= stop {
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK.min(stop - start) as usize];
        let mut pos = start;
        while pos < stop {
            let n = (stop - pos).min(CHUNK) as usize;
            let chunk = &mut buf[..n];
            cowfile::read_zero_filled(self.file.file(), chunk, pos)
                .map_err(|e| super::error::io_context(&self.path, "read before zeroing", pos, e))?;
            let mut at = 0;
            while at < n {
                let len = (n - at).min(U as usize);
                if is_zero(&chunk[at..at + len]) {
                    at += len;
                    continue;
                }
                // A run of non-zero units, written over in one go.
                let mut run_end = at + len;
                while run_end < n && run_end - at < ZEROS.len() {
                    let l = (n - run_end).min(U as usize);
                    if is_zero(&chunk[run_end..run_end + l]) {
                        break;
                    }
                    run_end += l;
                }
                let off = pos + at as u64;
                self.file
                    .pwrite(&ZEROS[..run_end - at], off)
                    .map_err(|e| super::error::io_context(&self.path, "write zeros", off, e))?;
                self.counters.zeroed.fetch_add((run_end - at).div_ceil(U as usize) as u64, Ordering::Relaxed);
                at = run_end;
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// Writes `buf` at `offset` while holding its units; returns the units
    /// that now hold only zeros.
    fn write_locked(&self, buf: &[u8], offset: u64) -> io::Result<ZeroUnits> {
        let mut zeros = ZeroUnits::default();
        let (mut pos, mut rest) = (offset, buf);
        if pos % U != 0 || (rest.len() as u64) < U {
            let at = (pos % U) as usize;
            let n = rest.len().min(U as usize - at);
            self.write_partial(pos / U, at, &rest[..n], &mut zeros)?;
            pos += n as u64;
            rest = &rest[n..];
        }
        let whole = rest.len() / U as usize * U as usize;
        if whole > 0 {
            self.pwrite(&rest[..whole], pos)?;
            for (i, unit) in rest[..whole].chunks_exact(U as usize).enumerate() {
                if is_zero(unit) {
                    zeros.push(pos / U + i as u64, pos / U + i as u64 + 1);
                }
            }
            pos += whole as u64;
            rest = &rest[whole..];
        }
        if !rest.is_empty() {
            self.write_partial(pos / U, 0, rest, &mut zeros)?;
        }
        Ok(zeros)
    }

    /// Zeroes `[offset, offset+len)` while holding its units: whole units
    /// are punched, partial ones merged. Returns the units that now hold
    /// only zeros.
    fn zero_locked(&self, offset: u64, len: u64) -> io::Result<ZeroUnits> {
        let mut zeros = ZeroUnits::default();
        let end = offset + len;
        let (whole_first, whole_end) = (offset.div_ceil(U), end / U);
        if whole_first >= whole_end {
            // Within one unit, or two partial units with nothing between.
            let mut pos = offset;
            while pos < end {
                let n = (end - pos).min(U - pos % U);
                self.write_partial(pos / U, (pos % U) as usize, &ZEROS[..n as usize], &mut zeros)?;
                pos += n;
            }
            return Ok(zeros);
        }
        if offset % U != 0 {
            let at = offset % U;
            self.write_partial(offset / U, at as usize, &ZEROS[..(U - at) as usize], &mut zeros)?;
        }
        self.punch(whole_first, whole_end)?;
        zeros.push(whole_first, whole_end);
        if end % U != 0 {
            self.write_partial(end / U, 0, &ZEROS[..(end % U) as usize], &mut zeros)?;
        }
        Ok(zeros)
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
        let punched = !runs.is_empty();
        for (unit, n) in runs {
            let start = self.data_offset(unit * U);
            let stop = (start + n * U).min(self.file_end.load(Ordering::Relaxed));
            if !matches!(self.file.punch_hole(start, n * U), Ok(true)) {
                let _ = self.zero_fill(start, stop);
            }
        }
        // Durable now: a later bit for one of these units may reach the
        // disk before a later punch or write does.
        if punched {
            let _ = self.file.fdatasync("failed write: punch");
        }
    }

    /// Runs a mutation of `[offset, offset+len)` under its unit lock, then
    /// marks the units; on failure nothing is marked. `may_zero`: the
    /// mutation may leave a unit that reads as zeros. `data`: it writes
    /// data, so it is held to the space reserve (zeroing punches holes).
    fn mutate(
        &self,
        offset: u64,
        len: u64,
        may_zero: bool,
        data: bool,
        op: impl FnOnce() -> io::Result<ZeroUnits>,
    ) -> io::Result<()> {
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let (first, end) = (offset / U, (offset + len).div_ceil(U));
        let _held = self.units.lock(first, end);
        self.touch();
        if may_zero {
            self.write_deferred(first, end)?;
        }
        let refused = data && self.needs_space(first, end) && !self.space.admit(self.file.file());
        let result = if refused {
            Err(super::error::io_context(
                &self.path,
                "write data",
                self.data_offset(offset),
                io::Error::from(io::ErrorKind::StorageFull),
            ))
        } else {
            op()
        };
        match result {
            Ok(zeros) => {
                self.mark(first, end, &zeros);
                if let Some(free) = self.space.after_write(self.file.file()) {
                    self.warn_low_space(free);
                }
                Ok(())
            }
            Err(e) => {
                if !refused {
                    self.discard_unmarked(first, end);
                }
                if is_out_of_space(&e) {
                    self.space.failed();
                    if let Some(free) = self.space.check(self.file.file()) {
                        self.warn_low_space(free);
                    }
                    if self.space.full() {
                        self.warn_full();
                    }
                }
                Err(e)
            }
        }
    }

    /// Before units `[first, end)` may be zeroed: a deferred bit there
    /// (its data durable, the bit not on disk yet) must reach the disk
    /// first. Until then only a repair finds the unit, by its non-zero
    /// data, and a punch or zero write that landed would lose it. Writes
    /// the deferred chunks of the range and fdatasyncs; costs nothing when
    /// there are none.
    fn write_deferred(&self, first: u64, end: u64) -> io::Result<()> {
        let chunk_of = |unit: u64| (unit / 8 / MAP_CHUNK) as usize;
        let chunks = chunk_of(first)..=chunk_of(end - 1);
        if !read_map(&self.map).deferred[chunks.clone()].contains(&true) {
            return Ok(());
        }
        let _flushing = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        {
            let mut map = write_map(&self.map);
            let map = &mut *map;
            let bytes = map.bits.bytes();
            for i in chunks {
                if std::mem::take(&mut map.deferred[i]) {
                    let start = i * MAP_CHUNK as usize;
                    let mut chunk = bytes[start..(start + MAP_CHUNK as usize).min(bytes.len())].to_vec();
                    if let Some(mask) = &map.fresh[i] {
                        chunk.iter_mut().zip(mask.iter()).for_each(|(b, m)| *b &= !m);
                    }
                    due.push((i as u64, chunk));
                }
            }
        }
        let snap = Snapshot { chunks: due, fresh: Vec::new(), count: 0, data_dirty: false, clean: false };
        let result = self.write_chunks(&snap).and_then(|()| self.sync_data("zeroing: deferred bits first"));
        if result.is_err() {
            let mut map = write_map(&self.map);
            for (i, _) in &snap.chunks {
                map.deferred[*i as usize] = true;
            }
        }
        result
    }

    /// Whether a mutation of units `[first, end)` may take new space in
    /// the cowfile: some unit is not in it yet.
    fn needs_space(&self, first: u64, end: u64) -> bool {
        let map = read_map(&self.map);
        let (set, n) = map.bits.run(first, end);
        !(set && first + n >= end)
    }

    /// Once per shortage: the cowfile's filesystem is full.
    fn warn_full(&self) {
        (self.warn)(&format!(
            "copy-on-write space full: cowfile {} cannot grow, its filesystem has no space left; writes to the \
             device fail (ENOSPC) until space is freed: delete files on it and run fstrim, or give the cowfile a \
             larger filesystem{}",
            self.path.display(),
            self.full_hint
        ));
    }

    fn warn_low_space(&self, free: u64) {
        (self.warn)(&format!("cowfile {} almost full (only {} KiB free)", self.path.display(), free / 1024));
    }

    /// A flush (`clean` false) or a clean (`clean` true); see the module
    /// documentation for the order of writes.
    fn flush_now(&self, clean: bool) -> io::Result<()> {
        let mut disk_dirty = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        self.touch();
        let snapshot = {
            let mut map = write_map(&self.map);
            let pending = map.any_changed || map.data_dirty || map.fresh_any;
            if !(pending || clean && *disk_dirty) {
                return Ok(());
            }
            Snapshot::take(&mut map, clean)
        };
        let result = if clean {
            self.write_clean(&snapshot, &mut disk_dirty)
        } else {
            self.write_flush(&snapshot, &mut disk_dirty)
        };
        let mut map = write_map(&self.map);
        match result {
            Ok(()) => snapshot.done(&mut map),
            Err(_) => snapshot.restore(&mut map),
        }
        result
    }

    fn sync_data(&self, site: &'static str) -> io::Result<()> {
        self.file.fdatasync(site).map_err(|e| super::error::io_context(&self.path, "fdatasync", 0, e))
    }

    fn write_header_flags(&self, dirty: bool, cowused: Option<u64>) -> io::Result<()> {
        let mut header = self.header;
        if dirty {
            header.flags |= FLAG_DIRTY;
        }
        if let Some(n) = cowused {
            header.cowused = n;
        }
        cowfile::write_header(&self.file, &header, true)
            .map_err(|e| super::error::io_context(&self.path, "write header", 0, e))
    }

    fn write_chunks(&self, snap: &Snapshot) -> io::Result<()> {
        for (index, bytes) in &snap.chunks {
            let at = HEAD_BLOCK + index * MAP_CHUNK;
            self.file
                .pwrite(bytes, at)
                .map_err(|e| super::error::io_context(&self.path, "write bitmap", at, e))?;
        }
        Ok(())
    }

    /// The cheap flush: chunks (without fresh bits) and one fdatasync,
    /// leaving DIRTY on disk.
    fn write_flush(&self, snap: &Snapshot, disk_dirty: &mut bool) -> io::Result<()> {
        if !*disk_dirty {
            if snap.chunks.is_empty() && snap.fresh.is_empty() {
                // Only units whose bits are on disk changed.
                return self.sync_data("flush: data, header clean");
            }
            *disk_dirty = true;
            self.write_header_flags(true, None)?;
            if snap.chunks.is_empty() {
                return self.sync_data("flush: data and DIRTY");
            }
            self.sync_data("flush: DIRTY before the bitmap")?;
        }
        self.write_chunks(snap)?;
        self.sync_data("flush: data and bitmap")
    }

    /// The clean: data, every pending chunk, then a clean header, each made
    /// durable before the next is written.
    fn write_clean(&self, snap: &Snapshot, disk_dirty: &mut bool) -> io::Result<()> {
        if !*disk_dirty {
            if snap.chunks.is_empty() {
                return self.sync_data("flush: data, header clean");
            }
            *disk_dirty = true;
            self.write_header_flags(true, None)?;
            self.sync_data("clean: data and DIRTY")?;
        } else if snap.data_dirty {
            self.sync_data("clean: data")?;
        }
        if !snap.chunks.is_empty() {
            self.write_chunks(snap)?;
            self.sync_data("clean: bitmap")?;
        }
        self.write_header_flags(false, Some(snap.count))?;
        self.sync_data("clean: header")?;
        *disk_dirty = false;
        Ok(())
    }

    /// Cleans whenever DIRTY has been on disk and nothing happened for
    /// `idle`, from a thread that lives as long as `overlay` does. Errors go
    /// to the warning function, and the next round tries again.
    pub fn spawn_idle_cleaner(overlay: &Arc<Self>, idle: Duration) -> io::Result<()>
    where
        B: 'static,
        F: 'static,
    {
        let weak: Weak<Self> = Arc::downgrade(overlay);
        let tick = (idle / 2).max(Duration::from_millis(50));
        std::thread::Builder::new().name("cow-idle-clean".into()).spawn(move || loop {
            std::thread::sleep(tick);
            let Some(overlay) = weak.upgrade() else { return };
            if overlay.closed.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = overlay.clean_if_idle(idle) {
                (overlay.warn)(&format!("cleaning the idle cowfile failed: {e}"));
            }
        })?;
        Ok(())
    }
}

/// `base:allocation` (what NBD_CMD_BLOCK_STATUS reports).
impl<B: ReadAt, F: CowIo> Overlay<B, F> {
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
            let found = cowfile::next_data(self.file.file(), doffset + pos, doffset + to)
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

/// What a flush writes, copied under the lock so that writes go on.
struct Snapshot {
    /// `(chunk index, bytes)`: the chunks to write.
    chunks: Vec<(u64, Vec<u8>)>,
    /// The fresh masks taken (their bits are left out of `chunks` by a
    /// flush, and included by a clean).
    fresh: Vec<(usize, Box<[u8]>)>,
    count: u64,
    data_dirty: bool,
    clean: bool,
}

impl Snapshot {
    fn take(map: &mut MapState, clean: bool) -> Snapshot {
        let mut fresh = Vec::new();
        if map.fresh_any {
            for (i, mask) in map.fresh.iter_mut().enumerate() {
                if let Some(mask) = mask.take() {
                    fresh.push((i, mask));
                }
            }
        }
        map.fresh_any = false;
        let mut fresh_of = fresh.iter().peekable();
        let bytes = map.bits.bytes();
        let mut chunks = Vec::new();
        for i in 0..map.changed.len() {
            let mask = fresh_of.next_if(|(j, _)| *j == i).map(|(_, m)| m);
            let due = std::mem::take(&mut map.changed[i]) | std::mem::take(&mut map.deferred[i]);
            if !(due || clean && mask.is_some()) {
                continue;
            }
            let start = i * MAP_CHUNK as usize;
            let stop = (start + MAP_CHUNK as usize).min(bytes.len());
            let mut chunk = bytes[start..stop].to_vec();
            if let (false, Some(mask)) = (clean, mask) {
                chunk.iter_mut().zip(mask.iter()).for_each(|(b, m)| *b &= !m);
            }
            chunks.push((i as u64, chunk));
        }
        map.any_changed = false;
        let data_dirty = std::mem::take(&mut map.data_dirty);
        Snapshot { chunks, fresh, count: map.bits.count(), data_dirty, clean }
    }

    /// After a flush: the fresh bits' data is durable now, and their chunks
    /// go out with the next flush that writes anything.
    fn done(&self, map: &mut MapState) {
        if !self.clean {
            for (i, _) in &self.fresh {
                map.deferred[*i] = true;
            }
        }
    }

    /// A failed flush leaves its work for the next one.
    fn restore(&self, map: &mut MapState) {
        for (i, _) in &self.chunks {
            map.changed[*i as usize] = true;
        }
        map.any_changed |= !self.chunks.is_empty();
        for (i, mask) in &self.fresh {
            match &mut map.fresh[*i] {
                Some(now) => now.iter_mut().zip(mask.iter()).for_each(|(b, m)| *b |= m),
                slot => *slot = Some(mask.clone()),
            }
            map.fresh_any = true;
        }
        map.data_dirty |= self.data_dirty;
    }
}

impl<B: ReadAt, F: CowIo> ReadAt for Overlay<B, F> {
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

impl<B: ReadAt, F: CowIo> BlockDev for Overlay<B, F> {
    fn caps(&self) -> Caps {
        Caps { write: true, flush: true, fua: false, trim: true, write_zeroes: true, multi_conn: true }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.iter().all(|&b| b == 0) {
            return self.write_zeroes(offset, buf.len() as u64);
        }
        // Can a unit end up all zeros? Only if a piece of `buf` within one
        // unit is all zeros.
        let head = ((U - offset % U) as usize).min(buf.len());
        let may_zero = is_zero(&buf[..head]) || buf[head..].chunks(U as usize).any(is_zero);
        self.mutate(offset, buf.len() as u64, may_zero, true, || self.write_locked(buf, offset))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.mutate(offset, len, true, false, || self.zero_locked(offset, len))
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }

    fn flush(&self) -> io::Result<()> {
        self.flush_now(false)
    }

    /// Whole units are written without reading the base.
    fn write_is_fast(&self, offset: u64, len: u64) -> bool {
        offset % U == 0 && len % U == 0
    }
}

impl<B: ReadAt, F: CowIo> Drop for Overlay<B, F> {
    fn drop(&mut self) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.flush_now(true) {
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
