//! Crash-state replay of the durability contract (docs/cow.md), in the
//! spirit of dm-log-writes replays and CrashMonkey / ALICE.
//!
//! The overlay runs seeded random workloads against a cowfile reached
//! through a recording layer ([`Rec`], substituted at the `CowIo` seam of
//! `src/cow/cowfile.rs`), which passes every call through and logs every
//! write, hole punch and sync. From each log, crash states are built the
//! way a power loss could leave the file: everything before the last
//! completed sync, plus, for every 512-byte (or 4 KiB) sector touched after
//! it, any one of the versions the sector went through (none, the newest,
//! chosen at random, metadata new and data old and the reverse, whole
//! operations in random subsets, a prefix with a torn last write). Per-sector
//! choice covers reordering between syncs and torn writes.
//!
//! Every crash state is written to a real file and checked through the
//! real code:
//! * `cowlist`'s header read accepts it; a crash after a completed
//!   `sync`/close with no flush begun since leaves it clean;
//! * a dirty state is repaired by `cowrepair`'s function through the
//!   recording layer, and every crash state of that repair (a second crash)
//!   is checked like the first;
//! * the overlay opens it (repairing), and every unit written, trimmed or
//!   zeroed, and every unit whose bit is set, reads as it was at the last
//!   completed flush or as a later operation left it; units no operation
//!   touched read as the base;
//! * after a close, a forced `cowrepair` finds nothing to add (no unflushed
//!   data can come back), and `cowmerge` merges it into a copy of the base,
//!   which then equals what the device read.
//!
//! With 4 KiB sectors (the atomic write unit docs/cow.md assumes) each
//! 1 KiB unit must be one whole version. With 512-byte sectors a unit may be
//! a per-byte mix of its versions, and a unit first written after the last
//! flush may also show zeros where a sector of it did not land.
//!
//! The mutation check replays the same logs with the syncs of one call
//! site at a time treated as if the call were deleted (the program's
//! behaviour does not depend on a sync, only durability does), and
//! requires the replay to find a violation for every site.

mod cow_common;
use cloopbox::blockdev::{BlockDev, ReadAt};
use cloopbox::cow::cowfile::{self, CowIo};
use cloopbox::cow::merge::Merge;
use cloopbox::cow::repair::{self, RepairOptions};
use cloopbox::cow::{Overlay, OverlayOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const U: u64 = 1024;

// ---------------------------------------------------------------- random

use cow_common::SplitMix as Rng;

// ------------------------------------------------------ the recording layer

#[derive(Clone, Debug)]
enum Entry {
    Write { off: u64, data: Vec<u8> },
    Punch { off: u64, len: u64 },
    Sync { site: &'static str },
}

/// The file as a power loss sees it: sectors present (absent = hole).
#[derive(Clone, Default)]
struct Image {
    sector: u64,
    data: BTreeMap<u64, Box<[u8]>>,
    len: u64,
}

impl Image {
    fn read_file(file: &File, sector: u64) -> Image {
        let len = file.metadata().unwrap().len();
        let mut image = Image { sector, data: BTreeMap::new(), len };
        let mut pos = 0;
        while let Some((start, end)) = cowfile::next_data(file, pos, len).unwrap() {
            let mut s = start / sector;
            while s * sector < end {
                let mut buf = vec![0u8; sector as usize];
                cowfile::read_zero_filled(file, &mut buf, s * sector).unwrap();
                image.data.insert(s, buf.into_boxed_slice());
                s += 1;
            }
            pos = s * sector;
        }
        image
    }

    fn get(&self, s: u64) -> Option<Box<[u8]>> {
        self.data.get(&s).cloned()
    }

    /// Applies one entry to the sector values in `cur` (missing: taken from
    /// `self`); returns the sectors it touched.
    fn apply(&self, e: &Entry, cur: &mut HashMap<u64, Option<Box<[u8]>>>) -> Vec<u64> {
        let n = self.sector;
        let (off, len) = match e {
            Entry::Write { off, data } => (*off, data.len() as u64),
            Entry::Punch { off, len } => (*off, *len),
            Entry::Sync { .. } => return Vec::new(),
        };
        let mut touched = Vec::new();
        let mut s = off / n;
        while s * n < off + len {
            let (from, to) = (off.max(s * n), (off + len).min(s * n + n));
            let value = cur.entry(s).or_insert_with(|| self.get(s));
            match e {
                Entry::Write { data, .. } => {
                    let sec = value.get_or_insert_with(|| vec![0u8; n as usize].into_boxed_slice());
                    sec[(from - s * n) as usize..(to - s * n) as usize]
                        .copy_from_slice(&data[(from - off) as usize..(to - off) as usize]);
                }
                _ if from == s * n && to == s * n + n => *value = None,
                _ => {
                    if let Some(sec) = value {
                        sec[(from - s * n) as usize..(to - s * n) as usize].fill(0);
                    }
                }
            }
            touched.push(s);
            s += 1;
        }
        touched
    }

    fn apply_all(&mut self, entries: &[Entry]) {
        for e in entries {
            let mut cur = HashMap::new();
            for s in self.apply(e, &mut cur) {
                self.set(s, cur.remove(&s).unwrap());
            }
            if let Entry::Write { off, data } = e {
                self.len = self.len.max(off + data.len() as u64);
            }
        }
    }

    fn set(&mut self, s: u64, value: Option<Box<[u8]>>) {
        match value {
            Some(v) => {
                self.len = self.len.max((s + 1) * self.sector);
                self.data.insert(s, v);
            }
            None => {
                self.data.remove(&s);
            }
        }
    }

    /// Writes the image to a new file at `path`.
    fn write(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
        let file = File::create_new(path).unwrap();
        file.set_len(self.len).unwrap();
        let mut run: Option<(u64, Vec<u8>)> = None;
        let flush = |run: &mut Option<(u64, Vec<u8>)>| {
            if let Some((s, bytes)) = run.take() {
                let at = s * self.sector;
                let keep = (self.len.saturating_sub(at) as usize).min(bytes.len());
                file.write_all_at(&bytes[..keep], at).unwrap();
            }
        };
        for (&s, bytes) in &self.data {
            match &mut run {
                Some((start, buf)) if *start + (buf.len() as u64 / self.sector) == s => {
                    buf.extend_from_slice(bytes)
                }
                _ => {
                    flush(&mut run);
                    run = Some((s, bytes.to_vec()));
                }
            }
        }
        flush(&mut run);
    }
}

/// unit -> (call index, contents after it), in call order.
type UnitVersions = HashMap<u64, Vec<(usize, Box<[u8]>)>>;
/// sector -> (log entry index, or usize::MAX for the durable state; value).
type SectorVersions = BTreeMap<u64, Vec<(usize, Option<Box<[u8]>>)>>;

#[derive(Default)]
struct Log {
    initial: Image,
    entries: Vec<Entry>,
}

/// The recording file layer: passes every call to the file, and logs it.
/// With `no_punch` it answers hole punching as FAT and exFAT do (not
/// supported), so that the overlay's zeroing fallback is what is logged.
struct Rec {
    file: File,
    log: Arc<Mutex<Log>>,
    no_punch: bool,
}

impl Rec {
    fn wrap(file: File, sector: u64) -> (Rec, Arc<Mutex<Log>>) {
        let image = Image::read_file(&file, sector);
        Rec::with_image(file, image)
    }
    /// `image` must be what `file` holds.
    fn with_image(file: File, image: Image) -> (Rec, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log { initial: image, entries: Vec::new() }));
        (Rec { file, log: log.clone(), no_punch: false }, log)
    }
    fn push(&self, e: Entry) {
        self.log.lock().unwrap().entries.push(e);
    }
}

impl CowIo for Rec {
    fn file(&self) -> &File {
        &self.file
    }
    fn pwrite(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.push(Entry::Write { off: offset, data: buf.to_vec() });
        self.file.write_all_at(buf, offset)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        if self.no_punch {
            return Ok(false);
        }
        self.push(Entry::Punch { off: offset, len });
        cowfile::punch_hole(&self.file, offset, len)
    }
    fn fdatasync(&self, site: &'static str) -> io::Result<()> {
        self.push(Entry::Sync { site });
        self.file.sync_data()
    }
    fn fsync(&self, site: &'static str) -> io::Result<()> {
        self.push(Entry::Sync { site });
        self.file.sync_all()
    }
}

fn entries_len(log: &Arc<Mutex<Log>>) -> usize {
    log.lock().unwrap().entries.len()
}

// ------------------------------------------------------------ the base

struct Base(Arc<Vec<u8>>);

impl ReadAt for Base {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

/// Random bytes, with a run of zero units (so that partial zero writes can
/// leave a unit that is all zeros).
fn make_base(units: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut base: Vec<u8> = (0..units * U).map(|_| rng.next() as u8).collect();
    let zero_from = (units / 4) * U;
    base[zero_from as usize..(zero_from + 8 * U) as usize].fill(0);
    base
}

fn opts(repair: bool) -> OverlayOptions {
    OverlayOptions { create: true, repair, warn: Arc::new(|_| {}), ..Default::default() }
}

// ------------------------------------------------------------ workloads

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Write,
    WriteZeroes,
    Trim,
    Flush,
    /// `Overlay::sync` (cowsync): leaves the file clean.
    Sync,
    Close,
}

/// One overlay call, with the log entries it made.
#[derive(Clone, Debug)]
struct Call {
    kind: Kind,
    log_start: usize,
    log_end: usize,
}

/// One session: the log, the calls, and every version of every unit.
struct Session {
    log: Log,
    calls: Vec<Call>,
    /// unit -> (call index, contents after it), in call order.
    versions: UnitVersions,
    /// What the device read before the session (the base, or the state a
    /// previous session's crash left).
    before: Arc<Vec<u8>>,
    base: Arc<Vec<u8>>,
    doffset: u64,
    name: String,
}

fn pattern(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8 | 1).collect();
    // Sometimes a whole zero unit inside the data, which a repair cannot
    // find and whose bit must therefore go out with the flush.
    if len >= 3 * U as usize && rng.chance(30) {
        let at = rng.below(len as u64 / U - 1) as usize * U as usize;
        data[at..at + U as usize].fill(0);
    }
    data
}

/// Runs a seeded workload on the cowfile at `path` (which must open
/// without a repair), recording at sector granularity `sector`; with
/// `no_punch`, on a file that cannot punch holes (FAT, exFAT).
fn run_session(
    path: &Path,
    base: &Arc<Vec<u8>>,
    before: Arc<Vec<u8>>,
    seed: u64,
    sector: u64,
    no_punch: bool,
    name: String,
) -> Session {
    let mut rng = Rng(seed);
    let size = base.len() as u64;
    let units = size / U;
    let mut log_handle = None;
    let ov = Overlay::open_with(Base(base.clone()), path, &opts(true), |file| {
        let (mut rec, log) = Rec::wrap(file, sector);
        rec.no_punch = no_punch;
        log_handle = Some(log);
        rec
    })
    .unwrap();
    let log = log_handle.unwrap();
    let doffset = ov.header().doffset;
    let mut model = before.to_vec();
    let mut calls = Vec::new();
    let mut versions = UnitVersions::new();
    // Hot spots: the start, the zero run of the base, and (for a large
    // base) the end of bitmap chunk 0 and chunk 1, so that flushes write
    // several chunks.
    let hot: Vec<u64> =
        [0, units / 4, 32 * 1024 - 4, units - 40].into_iter().filter(|&u| u + 40 <= units).collect();
    let ops = 30 + rng.below(30);
    for _ in 0..ops {
        let at = hot[rng.below(hot.len() as u64) as usize] + rng.below(32);
        let (off, len) = match rng.below(4) {
            0 => (at * U, (1 + rng.below(6)) * U),              // aligned
            1 => (at * U + rng.below(U), 1 + rng.below(U - 1)), // inside a unit or two
            _ => (at * U + rng.below(U), 1 + rng.below(6 * U)), // spanning units
        };
        let len = len.min(size - off);
        let start = entries_len(&log);
        let kind = match rng.below(20) {
            0..=8 => {
                let data =
                    if rng.chance(8) { vec![0; len as usize] } else { pattern(&mut rng, len as usize) };
                ov.write_at(&data, off).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
                Kind::Write
            }
            9 | 10 => {
                ov.write_zeroes(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
                Kind::WriteZeroes
            }
            11 => {
                ov.trim(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
                Kind::Trim
            }
            12..=17 => {
                ov.flush().unwrap();
                Kind::Flush
            }
            _ => {
                ov.sync().unwrap();
                Kind::Sync
            }
        };
        if matches!(kind, Kind::Write | Kind::WriteZeroes | Kind::Trim) {
            for unit in off / U..(off + len).div_ceil(U) {
                let bytes = &model[(unit * U) as usize..((unit + 1) * U) as usize];
                versions.entry(unit).or_default().push((calls.len(), bytes.into()));
            }
        }
        calls.push(Call { kind, log_start: start, log_end: entries_len(&log) });
    }
    let start = entries_len(&log);
    ov.close().unwrap();
    calls.push(Call { kind: Kind::Close, log_start: start, log_end: entries_len(&log) });
    // The device and the model agree before any crash.
    let ov = Overlay::open(Base(base.clone()), path, &opts(false)).unwrap();
    let mut all = vec![0u8; size as usize];
    ov.read_at(&mut all, 0).unwrap();
    assert!(all == model, "{name}: the device differs from the model without any crash");
    ov.abandon();
    let log = std::mem::take(&mut *log.lock().unwrap());
    Session { log, calls, versions, before, base: base.clone(), doffset, name }
}

// ------------------------------------------------------------ crash states

/// Syncs treated as deleted (the mutation check).
#[derive(Clone, Copy)]
struct Mutation(Option<&'static str>);

impl Mutation {
    fn barrier(&self, e: &Entry) -> bool {
        matches!(e, Entry::Sync { site } if Some(*site) != self.0)
    }
}

/// Where a crash hit: `returned` entries of the log had returned (a sync
/// among them only if it completed); everything before the last completed
/// sync is durable.
struct Crash {
    returned: usize,
    what: String,
    /// Data-area writes among the entries after the last completed sync.
    data_writes: usize,
}

/// The per-sector version choices for one window of the log.
struct Window<'a> {
    /// Index of the first entry after the barrier.
    start: usize,
    entries: &'a [Entry],
}

/// Crash states of `log` under `mutation`: calls `check(image, crash)`.
/// Returns the number of states.
fn crash_states(
    log: &Log,
    mutation: Mutation,
    rng: &mut Rng,
    doffset: u64,
    light: bool,
    mut check: impl FnMut(&Image, &Crash) -> Result<(), String>,
) -> Result<usize, String> {
    let mut durable = log.initial.clone();
    let mut windows = Vec::new();
    let mut start = 0;
    for (i, e) in log.entries.iter().enumerate() {
        if mutation.barrier(e) {
            windows.push(Window { start, entries: &log.entries[start..i] });
            start = i + 1;
        }
    }
    windows.push(Window { start, entries: &log.entries[start..] });
    let n = durable.sector;
    let mut states = 0;
    for (wi, w) in windows.iter().enumerate() {
        // Prefix lengths: all of the window (its closing sync in flight),
        // and a few points inside it.
        let mut prefixes = BTreeSet::from([w.entries.len()]);
        for _ in 0..2 {
            prefixes.insert(rng.below(w.entries.len() as u64 + 1) as usize);
        }
        for &m in &prefixes {
            let entries = &w.entries[..m];
            // versions[s] = [(entry index or usize::MAX for durable, value)]
            let mut cur: HashMap<u64, Option<Box<[u8]>>> = HashMap::new();
            let mut versions = SectorVersions::new();
            for (k, e) in entries.iter().enumerate() {
                for s in durable.apply(e, &mut cur) {
                    let list = versions.entry(s).or_insert_with(|| vec![(usize::MAX, durable.get(s))]);
                    list.push((k, cur[&s].clone()));
                }
            }
            let returned = w.start + m;
            let strategies: &[&str] = if versions.is_empty() {
                &["none"]
            } else if light {
                &["newest", "random", "meta-new", "data-new"]
            } else if m == w.entries.len() {
                &["newest", "none", "random", "random", "meta-new", "data-new", "ops", "ops", "torn-prefix"]
            } else {
                &["newest", "random", "ops", "torn-prefix"]
            };
            for &strategy in strategies {
                let cut = rng.below(m as u64 + 1) as usize;
                let subset: Vec<bool> = (0..m).map(|_| rng.chance(50)).collect();
                let mut image = durable.clone();
                for (&s, list) in &versions {
                    let pick = match strategy {
                        "newest" => list.len() - 1,
                        "none" => 0,
                        "random" => rng.below(list.len() as u64) as usize,
                        "meta-new" if s * n < doffset => list.len() - 1,
                        "meta-new" => 0,
                        "data-new" if s * n < doffset => 0,
                        "data-new" => list.len() - 1,
                        "ops" => list.iter().rposition(|(k, _)| *k == usize::MAX || subset[*k]).unwrap(),
                        _ => {
                            // Entries before `cut` whole, entry `cut` torn.
                            let torn = rng.chance(50);
                            list.iter()
                                .rposition(|(k, _)| *k == usize::MAX || *k < cut || (*k == cut && torn))
                                .unwrap()
                        }
                    };
                    image.set(s, list[pick].1.clone());
                }
                for e in entries {
                    if let Entry::Write { off, data } = e {
                        if strategy == "newest" {
                            image.len = image.len.max(off + data.len() as u64);
                        }
                    }
                }
                states += 1;
                let what =
                    format!("window {wi} (entries {}..{}), {m} issued, {strategy}", w.start, w.start + m);
                let data_writes = entries
                    .iter()
                    .filter(|e| matches!(e, Entry::Write { off, .. } if *off >= doffset))
                    .count();
                check(&image, &Crash { returned, what, data_writes })?;
            }
        }
        durable.apply_all(w.entries);
    }
    Ok(states)
}

// ------------------------------------------------------------ checking

#[derive(Clone, Copy)]
struct Expect<'a> {
    session: &'a Session,
    /// Index of the last completed flush, sync or close, if any.
    flushed: Option<usize>,
    /// Calls that began before the crash.
    began: usize,
    /// A completed sync/close with no flush begun since: must be clean.
    must_be_clean: bool,
    strict_units: bool,
}

impl<'a> Expect<'a> {
    fn new(session: &'a Session, returned: usize, strict_units: bool) -> Expect<'a> {
        let calls = &session.calls;
        let completed = |c: &Call| c.log_end <= returned;
        let flushed = calls
            .iter()
            .rposition(|c| matches!(c.kind, Kind::Flush | Kind::Sync | Kind::Close) && completed(c));
        // A call began if it issued an entry that returned, or it issued
        // none and every entry before it returned.
        let began = calls
            .iter()
            .position(|c| c.log_start >= returned && !(c.log_end == c.log_start && c.log_start == returned))
            .unwrap_or(calls.len());
        let began = began.max(flushed.map_or(0, |f| f + 1));
        let last_clean =
            calls.iter().rposition(|c| matches!(c.kind, Kind::Sync | Kind::Close) && completed(c));
        let must_be_clean = match last_clean {
            Some(k) => {
                !calls[k + 1..began].iter().any(|c| matches!(c.kind, Kind::Flush | Kind::Sync | Kind::Close))
            }
            None => false,
        };
        Expect { session, flushed, began, must_be_clean, strict_units }
    }

    /// The allowed contents of `unit`: its state at the last completed
    /// flush, then those left by every later call that began.
    fn allowed(&self, unit: u64) -> (Vec<&[u8]>, bool) {
        let s = self.session;
        let before = &s.before[(unit * U) as usize..((unit + 1) * U) as usize];
        let list = s.versions.get(&unit).map(|v| v.as_slice()).unwrap_or(&[]);
        let flushed = self.flushed.map_or(0, |f| list.iter().take_while(|(c, _)| *c <= f).count());
        let mut allowed = vec![if flushed == 0 { before } else { &list[flushed - 1].1[..] }];
        allowed.extend(list[flushed..].iter().take_while(|(c, _)| *c < self.began).map(|(_, v)| &v[..]));
        (allowed, flushed == 0)
    }

    fn check_unit(&self, unit: u64, got: &[u8]) -> Result<(), String> {
        let (allowed, new_unit) = self.allowed(unit);
        if allowed.contains(&got) {
            return Ok(());
        }
        if !self.strict_units {
            let ok =
                (0..U as usize).all(|i| allowed.iter().any(|a| a[i] == got[i]) || (new_unit && got[i] == 0));
            if ok {
                return Ok(());
            }
        }
        let first_bad = (0..U as usize).find(|&i| allowed.iter().all(|a| a[i] != got[i])).unwrap_or(0);
        Err(format!(
            "unit {unit} (device offset {}) reads {:02x?}.. at byte {first_bad}, allowed: {} versions ({})",
            unit * U,
            &got[first_bad..(first_bad + 8).min(U as usize)],
            allowed.len(),
            allowed
                .iter()
                .map(|a| format!("{:02x?}", &a[first_bad..(first_bad + 4).min(U as usize)]))
                .collect::<Vec<_>>()
                .join(" ")
        ))
    }
}

struct Checker {
    dir: PathBuf,
    counter: usize,
    merges: usize,
    repairs: usize,
    repair_states: usize,
    /// Check tools (close, forced repair, merge) on every Nth state.
    tools_every: usize,
    dirty: usize,
    /// Replay a second crash, during the repair, of every Nth dirty state.
    second_every: usize,
}

impl Checker {
    /// Counters at zero; tools checked on every 4th state, a second crash
    /// replayed on every `second_every`th dirty one.
    fn new(dir: &Path, second_every: usize) -> Checker {
        Checker {
            dir: dir.to_path_buf(),
            counter: 0,
            merges: 0,
            repairs: 0,
            repair_states: 0,
            tools_every: 4,
            dirty: 0,
            second_every,
        }
    }

    fn fresh_path(&mut self, what: &str) -> PathBuf {
        self.counter += 1;
        self.dir.join(format!("{what}-{}.cow", self.counter))
    }

    /// Checks one crash state (the file at `path`).
    fn check_state(
        &mut self,
        image: &Image,
        path: &Path,
        exp: &Expect,
        mutation: Mutation,
        rng: &mut Rng,
        second: bool,
    ) -> Result<(), String> {
        let s = exp.session;
        // cowlist: the header reads.
        let file = cowfile::open_existing(path, false).map_err(|e| format!("cowlist refuses: {e}"))?;
        let header = cowfile::read_header(&file, path).map_err(|e| format!("cowlist refuses: {e}"))?;
        drop(file);
        if exp.must_be_clean && header.is_dirty() {
            return Err("dirty after a completed sync/close with no flush begun since".into());
        }
        if header.is_dirty() && !second {
            self.dirty += 1;
            if self.dirty % self.second_every == 0 {
                self.second_crash(image, exp, mutation, rng)?;
            }
        }
        // The real open path, repairing.
        let ov = Overlay::open(Base(s.base.clone()), path, &opts(true)).map_err(|e| format!("open: {e}"))?;
        let mut units: BTreeSet<u64> = s.versions.keys().copied().collect();
        let bitmap = {
            let file = cowfile::open_existing(path, false).unwrap();
            let h = cowfile::read_header(&file, path).unwrap();
            cowfile::read_bitmap(&file, path, &h).unwrap()
        };
        for (i, &b) in bitmap.iter().enumerate() {
            for bit in 0..8 {
                if b & (1 << bit) != 0 {
                    units.insert(i as u64 * 8 + bit);
                }
            }
        }
        let numunits = s.base.len() as u64 / U;
        for _ in 0..4 {
            units.insert(rng.below(numunits));
        }
        let mut got = vec![0u8; U as usize];
        for &unit in &units {
            ov.read_at(&mut got, unit * U).map_err(|e| format!("read unit {unit}: {e}"))?;
            exp.check_unit(unit, &got)?;
        }
        self.counter += 1;
        // Close, forced repair and merge cost a whole-device pass: on a
        // sample of the states (less often on the large base).
        let every = if s.base.len() > 1 << 20 { self.tools_every * 8 } else { self.tools_every };
        if self.counter % every != 0 {
            ov.abandon();
            return Ok(());
        }
        let mut device = vec![0u8; s.base.len()];
        ov.read_at(&mut device, 0).unwrap();
        ov.close().map_err(|e| format!("close: {e}"))?;
        // cowrepair -f: opening scrubbed the unflushed data, and the close
        // wrote every bit: nothing left to add.
        let file = cowfile::open_existing(path, true).unwrap();
        let mut header = cowfile::read_header(&file, path).unwrap();
        if header.is_dirty() {
            return Err("dirty after close".into());
        }
        let report = repair::repair(&file, path, &mut header, RepairOptions::default(), &mut |_| {})
            .map_err(|e| format!("cowrepair -f: {e}"))?;
        if report.corrections != 0 {
            return Err(format!("cowrepair -f after close made {} corrections", report.corrections));
        }
        drop(file);
        // cowmerge into a copy of the base.
        let rdo = path.with_extension("rdo");
        std::fs::write(&rdo, &s.base[..]).unwrap();
        let merge = Merge::prepare(&rdo, path).map_err(|e| format!("cowmerge refuses: {e}"))?;
        merge.run(&mut |_| {}).map_err(|e| format!("cowmerge: {e}"))?;
        if std::fs::read(&rdo).unwrap() != device {
            return Err("cowmerge result differs from the device".into());
        }
        std::fs::remove_file(&rdo).unwrap();
        self.merges += 1;
        Ok(())
    }

    /// Repairs a dirty state through the recording layer, then checks
    /// every crash state of that repair.
    fn second_crash(
        &mut self,
        image: &Image,
        exp: &Expect,
        mutation: Mutation,
        rng: &mut Rng,
    ) -> Result<(), String> {
        let copy = self.fresh_path("repair");
        image.write(&copy);
        let (rec, log) = Rec::with_image(cowfile::open_existing(&copy, true).unwrap(), image.clone());
        let mut header = cowfile::read_header(rec.file(), &copy).unwrap();
        repair::repair(&rec, &copy, &mut header, RepairOptions::default(), &mut |_| {})
            .map_err(|e| format!("cowrepair refuses the dirty state: {e}"))?;
        drop(rec);
        std::fs::remove_file(&copy).unwrap();
        self.repairs += 1;
        let log = std::mem::take(&mut *log.lock().unwrap());
        let last = log.entries.len();
        let doffset = exp.session.doffset;
        let mut rng2 = rng.clone();
        let mut n = 0;
        let result = crash_states(&log, mutation, &mut rng2, doffset, true, |image, crash| {
            let p = self.fresh_path("second");
            image.write(&p);
            // The repair returned: the file must be clean.
            let repaired = crash.returned == last;
            let clean = Expect { must_be_clean: repaired || exp.must_be_clean, ..*exp };
            n += 1;
            let r = self
                .check_state(image, &p, &clean, mutation, &mut Rng(crash.returned as u64), true)
                .map_err(|e| format!("second crash, during the repair, at {}: {e}", crash.what));
            let _ = std::fs::remove_file(&p);
            r
        });
        rng.next();
        self.repair_states += n;
        result.map(|_| ())
    }
}

/// Replays every crash state of `session`. Returns (states, first
/// violation).
fn replay(
    session: &Session,
    mutation: Mutation,
    checker: &mut Checker,
    seed: u64,
) -> (usize, Option<String>) {
    let mut rng = Rng(seed);
    let strict = session.log.initial.sector >= 4096;
    let doffset = session.doffset;
    let mut rng2 = rng.clone();
    let result = crash_states(&session.log, mutation, &mut rng, doffset, false, |image, crash| {
        let path = checker.fresh_path("state");
        image.write(&path);
        let exp = Expect::new(session, crash.returned, strict);
        let r = checker
            .check_state(image, &path, &exp, mutation, &mut rng2, false)
            .map_err(|e| format!("{}: crash at {}: {e}", session.name, crash.what));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("rdo"));
        r
    });
    match result {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e)),
    }
}

fn workdir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// The workloads: small bases (one bitmap chunk), a 36 MiB base (two
/// chunks), at 512-byte and 4 KiB sectors; some with a second session
/// that starts from a crash state of the first (so the open-time scrub of
/// unflushed data is replayed too).
fn sessions(dir: &Path) -> Vec<Session> {
    let mut out = Vec::new();
    let small = Arc::new(make_base(384, 7));
    let large = Arc::new(make_base(36 * 1024, 8));
    let count: u64 = std::env::var("COW_POWERLOSS_WORKLOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    for seed in 0..count {
        let base = if seed % 4 == 3 { &large } else { &small };
        let sector = if seed % 2 == 0 { 512 } else { 4096 };
        // Every fourth workload on a file that cannot punch holes.
        let no_punch = seed % 4 == 1;
        let path = dir.join(format!("w{seed}.cow"));
        let name = format!(
            "workload {seed} ({} KiB base, {sector}-byte sectors{})",
            base.len() / 1024,
            if no_punch { ", no hole punching" } else { "" }
        );
        let first = run_session(&path, base, base.clone(), 1000 + seed, sector, no_punch, name.clone());
        if seed % 3 == 0 {
            // A crash state of the first session with data after the last
            // flush; its repaired, scrubbed view is the second's start.
            let mut rng = Rng(seed);
            let mut pick = None;
            let _ =
                crash_states(&first.log, Mutation(None), &mut rng, first.doffset, false, |image, crash| {
                    // Clean, with unflushed data: the second open must scrub it.
                    let clean = image.data.get(&0).is_some_and(|head| {
                        cloopbox::cow::Header::parse(&head[..]).is_ok_and(|h| !h.is_dirty())
                    });
                    if pick.is_none() && crash.what.contains("newest") && clean && crash.data_writes > 0 {
                        pick = Some(image.clone());
                    }
                    Ok(())
                });
            if let Some(image) = pick {
                // The view: what opening it shows (on a copy, so that the
                // second session's own open does the repair and scrub).
                let second = dir.join(format!("w{seed}b.cow"));
                image.write(&second);
                let view_path = dir.join(format!("w{seed}b-view.cow"));
                image.write(&view_path);
                let ov = Overlay::open(Base(base.clone()), &view_path, &opts(true)).unwrap();
                let mut view = vec![0u8; base.len()];
                ov.read_at(&mut view, 0).unwrap();
                ov.abandon();
                std::fs::remove_file(&view_path).unwrap();
                out.push(run_session(
                    &second,
                    base,
                    Arc::new(view),
                    5000 + seed,
                    sector,
                    no_punch,
                    format!("{name}, second session"),
                ));
            }
        }
        out.push(first);
    }
    out
}

#[test]
fn every_crash_state_keeps_flushed_writes() {
    let t0 = Instant::now();
    let dir = workdir();
    let sessions = sessions(dir.path());
    let mut checker = Checker::new(dir.path(), 4);
    let mut states = 0;
    let mut entries = 0;
    for (i, s) in sessions.iter().enumerate() {
        entries += s.log.entries.len();
        let t = Instant::now();
        let (n, err) = replay(s, Mutation(None), &mut checker, 77 + i as u64);
        if std::env::var_os("COW_POWERLOSS_VERBOSE").is_some() {
            eprintln!(
                "{}: {} entries, {n} states, {:.1} s",
                s.name,
                s.log.entries.len(),
                t.elapsed().as_secs_f64()
            );
        }
        if let Some(e) = err {
            panic!("{e}");
        }
        states += n;
    }
    eprintln!(
        "cow_powerloss: {} sessions, {entries} logged operations, {states} crash states ({} dirty) + {} during \
         repairs ({} repairs replayed, {} merges) in {:.1} s",
        sessions.len(),
        checker.dirty,
        checker.repair_states,
        checker.repairs,
        checker.merges,
        t0.elapsed().as_secs_f64()
    );
    assert!(states >= 2000, "only {states} crash states");
    assert!(checker.repairs >= 50, "only {} dirty states repaired", checker.repairs);
}

/// Every sync site the workloads reach must be needed: with its syncs
/// treated as deleted, the replay finds a violation.
#[test]
fn removing_any_one_sync_is_caught() {
    let dir = workdir();
    let sessions = sessions(dir.path());
    let mut sites: BTreeSet<&'static str> = BTreeSet::new();
    for s in &sessions {
        for e in &s.log.entries {
            if let Entry::Sync { site } = e {
                sites.insert(site);
            }
        }
    }
    sites.insert("repair: bitmap");
    sites.insert("repair: header");
    let mut uncaught = Vec::new();
    for &site in &sites {
        let mut checker = Checker::new(dir.path(), 1);
        let mut states = 0;
        let mut caught = None;
        for (i, s) in sessions.iter().enumerate() {
            let (n, err) = replay(s, Mutation(Some(site)), &mut checker, 77 + i as u64);
            states += n;
            if let Some(e) = err {
                caught = Some(e);
                break;
            }
        }
        match caught {
            Some(e) => eprintln!("cow_powerloss mutation: without the sync \"{site}\": caught: {e}"),
            None => {
                eprintln!("cow_powerloss mutation: without the sync \"{site}\": NOT caught in {states} crash states");
                uncaught.push(site);
            }
        }
    }
    for needed in
        ["flush: data and bitmap", "flush: DIRTY before the bitmap", "clean: header", "clean: bitmap"]
    {
        assert!(
            sites.contains(needed),
            "the workloads never reached the sync \"{needed}\"; sites seen: {sites:?}"
        );
    }
    assert!(uncaught.is_empty(), "removing these syncs goes unnoticed: {uncaught:?}");
}
