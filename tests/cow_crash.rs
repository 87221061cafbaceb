//! Crash test of the durability contract.
//!
//! A child process (this test binary, re-run with `COW_CRASH_CHILD` set and
//! only `crash_child` selected) applies a seeded random workload through the
//! overlay onto a file-backed cowfile and prints `FLUSHED <op>` after every
//! flush that returned. The parent SIGKILLs it at random moments, reopens
//! the cowfile (repairing it when it was left dirty), reads the whole device
//! and checks it against the workload, which it recomputes from the seed:
//!
//! * everything written before the last reported flush reads back;
//! * each 1 KiB unit touched after it holds its flushed state or the state
//!   after one of the later operations (a unit is never half-applied);
//! * no other byte changed.
//!
//! The observed state becomes the next round's starting point, so data
//! must also survive later sessions and their crashes (a repair must not
//! resurrect unflushed writes). A process kill leaves the page cache alive:
//! this tests our write ordering, not the disk's (see docs/cow.md).
//!
//! The base spans two 4 KiB bitmap chunks, so a flush can be torn between
//! chunk writes.

mod cow_common;
use cloopbox::blockdev::{BlockDev, FileDev, ReadAt};
use cloopbox::cow::{Overlay, OverlayOptions};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const UNIT: u64 = 1024;
/// 36 MiB: units 0..32767 sit in bitmap chunk 0, the rest in chunk 1.
const UNITS: u64 = 36 * 1024;
const SIZE: u64 = UNITS * UNIT;
const CHUNK1: u64 = 32 * 1024;
const OPS: u64 = 250;
const ROUNDS: u64 = 240;
const MIN_KILLS: u64 = 200;

use cow_common::SplitMix as Rng;

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: u64, seed: u64 },
    Zeros { off: u64, len: u64 },
    Trim { off: u64, len: u64 },
    WriteZeroes { off: u64, len: u64 },
    Flush,
}

/// Operation `i` of the workload `seed`; each op has its own generator, so
/// a workload can run for as long as the child lives and the parent can
/// still recompute any prefix of it.
fn op_at(seed: u64, i: u64) -> Op {
    let mut rng = Rng(seed ^ (i + 1).wrapping_mul(0xd134_2543_de82_ef95));
    // Mostly a hot region in chunk 0, some in chunk 1, some across.
    let unit = match rng.below(10) {
        0..=5 => rng.below(2048),
        6..=8 => CHUNK1 + rng.below(UNITS - CHUNK1 - 16),
        _ => CHUNK1 - 8 + rng.below(12),
    };
    let (off, len) = if rng.below(2) == 0 {
        (unit * UNIT, (1 + rng.below(8)) * UNIT)
    } else {
        (unit * UNIT + rng.below(UNIT), 1 + rng.below(5000))
    };
    let len = len.min(SIZE - off);
    match rng.below(20) {
        0..=10 => Op::Write { off, len, seed: rng.next() },
        11 => Op::Zeros { off, len },
        12 | 13 => Op::Trim { off, len },
        14 => Op::WriteZeroes { off, len },
        _ => Op::Flush,
    }
}

fn payload(len: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..len).map(|_| rng.next() as u8 | 1).collect()
}

fn base_image() -> Vec<u8> {
    let mut rng = Rng(42);
    (0..SIZE).map(|_| rng.next() as u8).collect()
}

fn range_of(op: &Op) -> Option<(u64, u64)> {
    match *op {
        Op::Write { off, len, .. }
        | Op::Zeros { off, len }
        | Op::Trim { off, len }
        | Op::WriteZeroes { off, len } => Some((off, len)),
        Op::Flush => None,
    }
}

fn apply_to_model(model: &mut [u8], op: &Op) {
    match *op {
        Op::Write { off, len, seed } => {
            model[off as usize..(off + len) as usize].copy_from_slice(&payload(len, seed))
        }
        Op::Zeros { off, len } | Op::Trim { off, len } | Op::WriteZeroes { off, len } => {
            model[off as usize..(off + len) as usize].fill(0)
        }
        Op::Flush => {}
    }
}

fn options(repair: bool) -> OverlayOptions {
    OverlayOptions { repair, low_space_bytes: 0, warn: Arc::new(|_| {}), ..Default::default() }
}

/// The child half. Not a test on its own: it does nothing unless the
/// parent started this binary with `COW_CRASH_CHILD` set. With
/// `COW_CRASH_OPS` it runs that many ops and closes; without, it runs until
/// it is killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("COW_CRASH_CHILD") else { return };
    let seed: u64 = std::env::var("COW_CRASH_SEED").unwrap().parse().unwrap();
    let limit: Option<u64> = std::env::var("COW_CRASH_OPS").ok().map(|n| n.parse().unwrap());
    let dir = PathBuf::from(dir);
    let base = FileDev::open(&dir.join("base.img")).unwrap();
    let ov = Overlay::open(base, &dir.join("crash.cow"), &options(false)).unwrap();
    println!("READY");
    for i in 0..limit.unwrap_or(u64::MAX) {
        match op_at(seed, i) {
            Op::Write { off, len, seed } => ov.write_at(&payload(len, seed), off).unwrap(),
            Op::Zeros { off, len } => ov.write_at(&vec![0; len as usize], off).unwrap(),
            Op::Trim { off, len } => ov.trim(off, len).unwrap(),
            Op::WriteZeroes { off, len } => ov.write_zeroes(off, len).unwrap(),
            Op::Flush => {
                ov.flush().unwrap();
                println!("FLUSHED {i}");
            }
        }
    }
    ov.close().unwrap();
    println!("CLOSED");
}

struct Round {
    killed: bool,
    /// Index of the last op covered by a completed flush, if any.
    flushed: Option<u64>,
    closed: bool,
}

fn run_child(dir: &Path, seed: u64, kill_after: Option<Duration>) -> Round {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if kill_after.is_none() {
        command.env("COW_CRASH_OPS", OPS.to_string());
    }
    let mut child = command
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("COW_CRASH_CHILD", dir)
        .env("COW_CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until the overlay is open, so the kill lands in the workload.
    for line in lines.by_ref() {
        if line.unwrap().ends_with("READY") {
            break;
        }
    }
    let reader = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    let closed = out.iter().any(|l| l == "CLOSED");
    // Only our SIGKILL may end it early; a panic in the child is a failure.
    let killed = status.signal() == Some(9);
    assert!(killed || status.success(), "crash child failed (seed {seed}): {status}");
    let flushed =
        out.iter().filter_map(|l| l.strip_prefix("FLUSHED ")).filter_map(|n| n.parse().ok()).next_back();
    Round { killed: killed && !closed, flushed, closed }
}

/// Checks `actual` against workload `seed` after a crash, starting from
/// `model` (the state the round began with). Returns the number of units
/// that were checked against later states.
fn verify(mut model: Vec<u8>, actual: &[u8], round: &Round, seed: u64) -> usize {
    // Ops before `durable` must all be there; ops before `upto` may be:
    // the child cannot have got past the flush that followed.
    let (durable, upto) = if round.closed {
        (OPS, OPS)
    } else {
        let durable = round.flushed.map_or(0, |f| f + 1);
        let next_flush = (durable..).find(|&i| matches!(op_at(seed, i), Op::Flush)).expect("a flush comes");
        (durable, next_flush + 1)
    };
    let ops: Vec<Op> = (0..upto).map(|i| op_at(seed, i)).collect();
    let (durable, upto) = (durable as usize, upto as usize);
    for op in &ops[..durable] {
        apply_to_model(&mut model, op);
    }
    // The states each unit passes through in the ops that may have run.
    let mut allowed: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut later: HashMap<u64, Vec<u8>> = HashMap::new();
    for op in &ops[durable..upto] {
        let Some((off, len)) = range_of(op) else { continue };
        let (first, end) = (off / UNIT, (off + len).div_ceil(UNIT));
        let mut window = Vec::with_capacity(((end - first) * UNIT) as usize);
        for unit in first..end {
            let r = (unit * UNIT) as usize..((unit + 1) * UNIT) as usize;
            window.extend_from_slice(later.get(&unit).map_or(&model[r], |v| &v[..]));
        }
        let shifted = match *op {
            Op::Write { len, seed, .. } => Op::Write { off: off - first * UNIT, len, seed },
            _ => Op::Zeros { off: off - first * UNIT, len },
        };
        apply_to_model(&mut window, &shifted);
        for (i, unit) in (first..end).enumerate() {
            let state = window[i * UNIT as usize..(i + 1) * UNIT as usize].to_vec();
            allowed.entry(unit).or_default().push(state.clone());
            later.insert(unit, state);
        }
    }
    for unit in 0..UNITS {
        let r = (unit * UNIT) as usize..((unit + 1) * UNIT) as usize;
        if actual[r.clone()] == model[r.clone()] {
            continue;
        }
        let ok = allowed.get(&unit).is_some_and(|states| states.iter().any(|s| s[..] == actual[r.clone()]));
        assert!(
            ok,
            "seed {seed}: unit {unit} holds neither its flushed state nor a later one \
             (flushed through op {durable}, ops run up to {upto}, killed {})",
            round.killed
        );
    }
    allowed.len()
}

#[test]
fn sigkill_never_loses_a_flushed_write() {
    let started = Instant::now();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let base = base_image();
    std::fs::write(dir.path().join("base.img"), &base).unwrap();
    let cow = dir.path().join("crash.cow");
    let mut state = base.clone();
    let mut rng = Rng(0x5eed);
    let (mut kills, mut repairs, mut corrections, mut flushes, mut alternatives, mut closes) =
        (0, 0, 0, 0, 0, 0);
    for round in 0..ROUNDS {
        let seed = rng.next();
        let kill_after = (round % 20 != 19).then(|| Duration::from_micros(rng.below(25_000)));
        let result = run_child(dir.path(), seed, kill_after);
        kills += u64::from(result.killed);
        closes += u64::from(result.closed);
        flushes += u64::from(result.flushed.is_some());
        if !cow.exists() {
            // Killed before the cowfile was created: nothing may have changed.
            assert!(result.flushed.is_none());
            continue;
        }
        let ov = Overlay::open(FileDev::open(&dir.path().join("base.img")).unwrap(), &cow, &options(true))
            .unwrap_or_else(|e| panic!("round {round}, seed {seed}: reopen failed: {e}"));
        if let Some(report) = ov.repaired() {
            repairs += 1;
            corrections += report.corrections;
        }
        let mut actual = vec![0u8; SIZE as usize];
        ov.read_at(&mut actual, 0).unwrap();
        drop(ov);
        alternatives += verify(state, &actual, &result, seed);
        state = actual;
    }
    assert!(
        kills >= MIN_KILLS,
        "only {kills} kills ({closes} closes, {flushes} with flushes, {repairs} repairs)"
    );
    assert!(flushes > 0 && closes > 0);
    // Straight to stderr, not println!: the numbers belong in every CI log,
    // and libtest hides a passing test's printed output.
    let _ = writeln!(
        std::io::stderr(),
        "crash test: {ROUNDS} rounds, {kills} SIGKILLs, {closes} clean closes, {flushes} rounds with a completed \
         flush, {repairs} reopens needed a repair ({corrections} bits recovered), {alternatives} units checked \
         against later states, {} MiB compared per round, {:.1}s",
        SIZE >> 20,
        started.elapsed().as_secs_f64()
    );
}
