//! The overlay against an in-memory model: random reads, aligned and
//! unaligned writes, trims, zeroes, flushes and reopens give identical
//! reads; concurrent partial writes to shared units lose nothing; trims give
//! space back; a "crash" (no flush, no drop) leaves a file that a repair
//! opens with every flushed write, and after a cowsync a clean file holding
//! nothing a later repair could resurrect.

use cloopbox::blockdev::{BlockDev, MemDev, ReadAt};
use cloopbox::cow::repair::{self, RepairOptions};
use cloopbox::cow::{cowfile, Overlay, OverlayOptions};
use proptest::prelude::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// 64 KiB and 300 bytes: the tail is ignored (truncated to whole KiB).
const BASE_LEN: usize = 64 * 1024 + 300;
const SIZE: u64 = 64 * 1024;

fn base_bytes() -> Vec<u8> {
    (0..BASE_LEN).map(|i| (i * 31 % 251) as u8 | 1).collect()
}

fn quiet() -> OverlayOptions {
    OverlayOptions { warn: Arc::new(|_| {}), ..Default::default() }
}

fn open(cow: &Path) -> Overlay<MemDev> {
    Overlay::open(MemDev::new(base_bytes()), cow, &quiet()).unwrap()
}

fn read_all(dev: &dyn ReadAt) -> Vec<u8> {
    let mut buf = vec![0u8; dev.size() as usize];
    dev.read_at(&mut buf, 0).unwrap();
    buf
}

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: u64, seed: u8 },
    WriteZeros { off: u64, len: u64 },
    Trim { off: u64, len: u64 },
    Zero { off: u64, len: u64 },
    Read { off: u64, len: u64 },
    Flush,
    Reopen,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        // Unit-aligned.
        (0..64u64, 1..8u64).prop_map(|(u, n)| (u * 1024, n * 1024)),
        // Anything.
        (0..SIZE, 0..5000u64),
        // Small and inside one unit.
        (0..SIZE, 0..40u64),
    ]
    .prop_map(|(off, len)| (off.min(SIZE), len.min(SIZE - off.min(SIZE))))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (range(), any::<u8>()).prop_map(|((off, len), seed)| Op::Write { off, len, seed }),
        1 => range().prop_map(|(off, len)| Op::WriteZeros { off, len }),
        2 => range().prop_map(|(off, len)| Op::Trim { off, len }),
        1 => range().prop_map(|(off, len)| Op::Zero { off, len }),
        3 => range().prop_map(|(off, len)| Op::Read { off, len }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

fn data(len: u64, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 0x80).collect()
}

fn apply(ov: &Overlay<MemDev>, model: &MemDev, op: &Op) {
    match *op {
        Op::Write { off, len, seed } => {
            let buf = data(len, seed);
            ov.write_at(&buf, off).unwrap();
            model.write_at(&buf, off).unwrap();
        }
        Op::WriteZeros { off, len } => {
            let buf = vec![0u8; len as usize];
            ov.write_at(&buf, off).unwrap();
            model.write_at(&buf, off).unwrap();
        }
        Op::Trim { off, len } => {
            ov.trim(off, len).unwrap();
            model.trim(off, len).unwrap();
        }
        Op::Zero { off, len } => {
            ov.write_zeroes(off, len).unwrap();
            model.write_zeroes(off, len).unwrap();
        }
        Op::Read { off, len } => {
            let (mut a, mut b) = (vec![0u8; len as usize], vec![0u8; len as usize]);
            ov.read_at(&mut a, off).unwrap();
            model.read_at(&mut b, off).unwrap();
            assert_eq!(a, b, "read of {len} bytes at {off}");
        }
        Op::Flush | Op::Reopen => ov.flush().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn overlay_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cow = dir.path().join("p.cow");
        let model = MemDev::new(base_bytes()[..SIZE as usize].to_vec());
        let mut ov = open(&cow);
        for op in &ops {
            apply(&ov, &model, op);
            if let Op::Reopen = op {
                drop(ov);
                ov = open(&cow);
                prop_assert_eq!(read_all(&ov), model.snapshot());
            }
        }
        prop_assert_eq!(read_all(&ov), model.snapshot());
        drop(ov);
        // Everything persists through a clean close, and the file is clean.
        let ov = open(&cow);
        prop_assert_eq!(read_all(&ov), model.snapshot());
    }
}

#[test]
fn an_unaligned_kib_write_keeps_the_base_around_it() {
    // cowloop 3.1 wrote 1024 bytes at 512 "straight" and marked both units,
    // so the other halves read back as zeros.
    let dir = tempfile::tempdir().unwrap();
    let ov = open(&dir.path().join("u.cow"));
    ov.write_at(&[0xee; 1024], 512).unwrap();
    let mut got = vec![0u8; 2048];
    ov.read_at(&mut got, 0).unwrap();
    let mut want = base_bytes()[..2048].to_vec();
    want[512..1536].fill(0xee);
    assert_eq!(got, want);
}

#[test]
fn the_base_tail_beyond_whole_kib_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let sink = warnings.clone();
    let opts = OverlayOptions {
        base_name: "base.img".into(),
        warn: Arc::new(move |m| sink.lock().unwrap().push(m.to_string())),
        ..Default::default()
    };
    let ov = Overlay::open(MemDev::new(base_bytes()), &dir.path().join("t.cow"), &opts).unwrap();
    assert_eq!(ov.size(), SIZE);
    assert_eq!(*warnings.lock().unwrap(), vec!["base.img truncated to multiple of 1024 bytes".to_string()]);
    assert!(ov.write_at(&[1], SIZE).is_err(), "a write past the end was accepted");
}

#[test]
fn concurrent_partial_writes_to_shared_units_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ov = Arc::new(open(&dir.path().join("c.cow")));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let ov = ov.clone();
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    for unit in 0..64u64 {
                        // Each thread owns one 256-byte quarter of every unit.
                        let unit = (unit * 7 + round + t) % 64;
                        let fill = (t * 50 + round) as u8 | 0x80;
                        ov.write_at(&[fill; 256], unit * 1024 + t * 256).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = read_all(&*ov);
    for unit in 0..64usize {
        for t in 0..4usize {
            let quarter = &all[unit * 1024 + t * 256..unit * 1024 + (t + 1) * 256];
            assert_eq!(quarter, &[(t as u8 * 50 + 49) | 0x80; 256][..], "unit {unit}, thread {t}");
        }
    }
}

#[test]
fn trim_reads_as_zeros_and_gives_the_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let cow = dir.path().join("s.cow");
    let ov = open(&cow);
    ov.write_at(&vec![0x77; 48 * 1024], 0).unwrap();
    ov.flush().unwrap();
    let before = std::fs::metadata(&cow).unwrap().blocks();
    ov.trim(4096, 40 * 1024).unwrap();
    ov.flush().unwrap();
    let after = std::fs::metadata(&cow).unwrap().blocks();
    assert!(after + 70 <= before, "trim freed too little: {before} -> {after} sectors");
    let mut buf = vec![1u8; 40 * 1024];
    ov.read_at(&mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // Zeroing beyond the written part still reads as zeros, and the file
    // covers every marked unit (a packed copy would find it).
    ov.write_zeroes(60 * 1024, 4096).unwrap();
    drop(ov);
    let header = cloopbox::cow::Header::parse(&std::fs::read(&cow).unwrap()).unwrap();
    assert!(std::fs::metadata(&cow).unwrap().len() >= header.doffset + SIZE);
    let ov = open(&cow);
    let mut buf = vec![1u8; 4096];
    ov.read_at(&mut buf, 60 * 1024).unwrap();
    assert_eq!(buf, vec![0; 4096]);
}

#[test]
fn a_crash_between_flushes_keeps_flushed_writes_and_after_cowsync_leaves_a_clean_file() {
    let dir = tempfile::tempdir().unwrap();
    let cow = dir.path().join("k.cow");
    let ov = open(&cow);
    ov.write_at(&[0x11; 3000], 100).unwrap();
    ov.flush().unwrap();
    ov.write_at(&[0x22; 2048], 10 * 1024).unwrap(); // new units, never flushed
    ov.write_at(&[0x33; 10], 200).unwrap(); // overwrite in place, never flushed
    ov.abandon(); // no flush: the process "dies"
                  // DIRTY stays on disk while the device is busy: the reopen repairs.
    let header = cloopbox::cow::Header::parse(&std::fs::read(&cow).unwrap()).unwrap();
    assert!(header.is_dirty(), "a crash while busy must leave DIRTY for the repair");
    let repair_opts = OverlayOptions { repair: true, ..quiet() };
    let ov = Overlay::open(MemDev::new(base_bytes()), &cow, &repair_opts).unwrap();
    assert!(ov.repaired().is_some());
    let all = read_all(&ov);
    let base = base_bytes();
    for unit in 10..12 {
        let got = &all[unit * 1024..(unit + 1) * 1024];
        assert!(
            got == &base[unit * 1024..(unit + 1) * 1024] || got.iter().all(|&b| b == 0x22),
            "unit {unit}"
        );
    }
    assert!(all[100..200].iter().all(|&b| b == 0x11));
    assert!(all[200..210].iter().all(|&b| b == 0x11) || all[200..210].iter().all(|&b| b == 0x33));
    assert!(all[210..3100].iter().all(|&b| b == 0x11));
    // cowsync leaves the file clean; writes after it never appear.
    ov.sync().unwrap();
    ov.write_at(&[0x44; 2048], 20 * 1024).unwrap();
    ov.abandon();
    let header = cloopbox::cow::Header::parse(&std::fs::read(&cow).unwrap()).unwrap();
    assert!(!header.is_dirty(), "a crash after cowsync with no flush since left the file dirty");
    let ov = open(&cow);
    let after = read_all(&ov);
    assert_eq!(
        &after[20 * 1024..22 * 1024],
        &base[20 * 1024..22 * 1024],
        "unflushed new units must not appear"
    );
    assert_eq!(&after[..20 * 1024], &all[..20 * 1024]);
    drop(ov);
    // Opening scrubbed the unflushed data: even a forced repair finds nothing.
    let file = cowfile::open_existing(&cow, true).unwrap();
    let mut header = cowfile::read_header(&file, &cow).unwrap();
    let report = repair::repair(&file, &cow, &mut header, RepairOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(report.corrections, 0, "repair resurrected unflushed data");
}

#[test]
fn flush_without_changes_is_free_and_stats_count_io() {
    let dir = tempfile::tempdir().unwrap();
    let ov = open(&dir.path().join("f.cow"));
    assert!(!ov.stats().unflushed);
    ov.write_at(&[5; 4096], 8192).unwrap();
    let mut buf = vec![0u8; 16384];
    ov.read_at(&mut buf, 0).unwrap(); // base, cow, base: three requests
    let s = ov.stats();
    assert_eq!((s.cowused, s.cowwrites, s.cowreads, s.rdoreads, s.unflushed), (4, 1, 1, 2, true));
    ov.sync().unwrap();
    assert!(!ov.stats().unflushed);
    ov.flush().unwrap();
    assert!(!ov.stats().unflushed);
}

/// Two cloopd processes on one cowfile: the second is refused before it
/// serves anything, with a message naming the cowfile and the first
/// server's pid, and exits non-zero; the first keeps serving and, once it
/// is gone, the cowfile opens again.
#[test]
fn a_second_cloopd_on_the_same_cowfile_is_refused_naming_the_holder() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    std::fs::write(&base, base_bytes()).unwrap();
    let cow = dir.path().join("shared.cow");
    let bin = env!("CARGO_BIN_EXE_cloopbox");
    let serve = |sock: &str| {
        Command::new(bin)
            .args(["cloopd", "--cow"])
            .arg(&cow)
            .arg("--unix")
            .arg(dir.path().join(sock))
            .arg(&base)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = serve("one.sock");
    // The banner comes once it serves, so the cowfile is open and locked.
    let mut banner = String::new();
    std::io::BufReader::new(first.stdout.take().unwrap()).read_line(&mut banner).unwrap();
    assert!(!banner.is_empty(), "the first cloopd did not start");
    let second = serve("two.sock").wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_ne!(second.status.code(), Some(0), "the second cloopd must not serve: {err}");
    assert!(err.contains(&format!("{}: in use by another process", cow.display())), "{err}");
    assert!(err.contains(&format!("held by pid {}", first.id())), "the holder is named: {err}");
    assert!(second.stdout.is_empty(), "the second cloopd printed a banner");
    assert!(!dir.path().join("two.sock").exists(), "the second cloopd listened");
    assert_eq!(first.try_wait().unwrap(), None, "the first cloopd keeps serving");
    first.kill().unwrap();
    first.wait().unwrap();
    let reopened =
        Overlay::open(MemDev::new(base_bytes()), &cow, &quiet()).expect("free once the holder is gone");
    drop(reopened);
}

#[test]
fn a_cowfile_in_use_is_refused_until_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cow = dir.path().join("busy.cow");
    let ov = open(&cow);
    let err = Overlay::open(MemDev::new(base_bytes()), &cow, &quiet()).err().expect("opened twice");
    assert!(err.to_string().contains("busy.cow: in use by another process"), "{err}");
    assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy);
    let bin = env!("CARGO_BIN_EXE_cloopbox");
    let out = std::process::Command::new(bin).args(["cowrepair", "-f"]).arg(&cow).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    drop(ov);
    let out = std::process::Command::new(bin).args(["cowrepair", "-f"]).arg(&cow).output().unwrap();
    assert!(out.status.success());
    drop(open(&cow));
}
