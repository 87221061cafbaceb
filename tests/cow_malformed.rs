//! Malformed cowfiles: truncated headers and bitmaps, bits beyond the
//! rdofile, wrong sizes, random bytes. Each gives its own clear error
//! naming the file (and the offset where there is one); nothing panics.

mod cow_common;

use cloopbox::blockdev::{MemDev, ReadAt};
use cloopbox::cow::pack::{self, SaveFormat};
use cloopbox::cow::repair::{self, RepairOptions};
use cloopbox::cow::{cowfile, FormatError, Header, Overlay, OverlayOptions};
use cow_common::*;
use std::path::Path;
use std::sync::Arc;

fn try_open(bytes: &[u8], dir: &Path) -> Result<Overlay<MemDev>, cloopbox::cow::CowError> {
    let path = dir.join("bad.cow");
    std::fs::write(&path, bytes).unwrap();
    let opts = OverlayOptions { create: false, warn: Arc::new(|_| {}), ..Default::default() };
    Overlay::open(MemDev::new(raw_image()), &path, &opts)
}

fn problem(bytes: &[u8], dir: &Path) -> FormatError {
    let err = try_open(bytes, dir).err().expect("malformed cowfile accepted");
    assert!(err.to_string().contains("bad.cow"), "no file name in: {err}");
    err.problem().cloned().unwrap_or_else(|| panic!("not a format error: {err}"))
}

fn clean() -> Vec<u8> {
    read(&vector("clean_64.cow"))
}

fn with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = clean();
    f(&mut bytes);
    bytes
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn truncated_headers_and_bitmaps() {
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 3, 20, 40] {
        let p = problem(&clean()[..len], dir.path());
        assert!(matches!(p, FormatError::TooSmall { what: "cowfile header", .. }), "{len}: {p:?}");
    }
    let p = problem(&clean()[..1500], dir.path());
    assert_eq!(p, FormatError::TooSmall { len: 1500, need: 2048, what: "bitmap" });
    assert!(p.to_string().contains("too small for the bitmap: 1500 bytes, need at least 2048"));
}

/// Bytes, the error they must give, and a phrase of its message.
type Case = (Vec<u8>, fn(&FormatError) -> bool, &'static str);

#[test]
fn each_broken_rule_has_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Case> = vec![
        (with(|b| b[0] = 0x7e), |p| matches!(p, FormatError::BadMagic { .. }), "wrong magic"),
        (with(|b| b[4] = 2), |p| matches!(p, FormatError::NewerVersion { version: 2 }), "newer than"),
        (with(|b| b[6] = 2), |p| *p == FormatError::Packed, "cowpack -u"),
        (with(|b| b[6] = 0x20), |p| matches!(p, FormatError::UnknownFlags { .. }), "unknown flags"),
        (
            with(|b| put_u64(b, 8, 512)),
            |p| matches!(p, FormatError::BadMapunit { offset: 8, .. }),
            "mapunit 512",
        ),
        (
            with(|b| put_u64(b, 16, 2048)),
            |p| matches!(p, FormatError::MapsizeMismatch { .. }),
            "mapsize 2048",
        ),
        (with(|b| put_u64(b, 16, 1 << 40)), |p| matches!(p, FormatError::MapsizeMismatch { .. }), "mapsize"),
        (with(|b| put_u64(b, 24, 1024)), |p| matches!(p, FormatError::BadDoffset { .. }), "data offset 1024"),
        (with(|b| put_u64(b, 24, 5000)), |p| matches!(p, FormatError::BadDoffset { .. }), "multiple of 1024"),
        (with(|b| put_u64(b, 32, 0)), |p| *p == FormatError::NoBlocks, "0 blocks"),
        (with(|b| put_u64(b, 32, u64::MAX)), |p| matches!(p, FormatError::TooLarge { .. }), "exceeds"),
        (with(|b| put_u64(b, 32, 301)), |p| matches!(p, FormatError::NotRelated { .. }), "not related"),
        (with(|b| put_u64(b, 48, 6)), |p| matches!(p, FormatError::Inconsistent { .. }), "inconsistent"),
        (
            with(|b| b[1024 + 37] |= 0x10),
            |p| *p == FormatError::BitBeyondEnd { block: 300, rdoblocks: 300, offset: 1061 },
            "beyond the rdofile end",
        ),
        (
            with(|b| b[1024 + 200] = 1),
            |p| matches!(p, FormatError::BitBeyondEnd { block: 1600, .. }),
            "block 1600",
        ),
    ];
    for (bytes, is, text) in cases {
        let p = problem(&bytes, dir.path());
        assert!(is(&p), "{text}: got {p:?}");
        assert!(p.to_string().contains(text), "message {p} lacks '{text}'");
    }
}

#[test]
fn cowrepair_clears_bits_beyond_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("beyond.cow");
    std::fs::write(&path, with(|b| b[1024 + 37] |= 0x10)).unwrap();
    let out = std::process::Command::new(BIN).args(["cowrepair", "-f", "-v"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "bitmap bit       300 beyond the end of the rdofile (300 blocks); cleared\n\
         Number of corrections in bitmap: 1\n"
    );
    assert_eq!(read(&path), clean());
}

#[test]
fn bits_over_missing_data_read_as_zeros() {
    // A cowfile cut inside its data area: marked blocks past the end read
    // as zeros (the holes they would have been), never as garbage.
    let dir = tempfile::tempdir().unwrap();
    let ov = try_open(&clean()[..4096 + 100 * 1024], dir.path()).unwrap();
    let mut buf = vec![1u8; 1024];
    ov.read_at(&mut buf, 299 * 1024).unwrap();
    assert_eq!(buf, vec![0; 1024]);
    ov.read_at(&mut buf, 5 * 1024).unwrap();
    assert_eq!(buf, pat(5, 1));
}

/// splitmix64, for reproducible mutations.
fn rng(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Everything a cowfile meets, on one input: no panic allowed.
fn exercise(bytes: &[u8], dir: &Path) {
    let _ = pack::unpack_bytes(bytes, SaveFormat::Plain);
    let _ = pack::unpack_bytes(bytes, SaveFormat::Gzip);
    let path = dir.join("m.cow");
    std::fs::write(&path, bytes).unwrap();
    if let Ok(file) = cowfile::open_existing(&path, false) {
        if let Ok(mut header) = cowfile::read_header(&file, &path) {
            let _ = repair::repair(&file, &path, &mut header, RepairOptions { dry_run: true }, &mut |_| {});
            let _ = Header::check_layout(&header);
        }
    }
    let _ = pack::pack(&path, &dir.join("m.save"), SaveFormat::Gzip);
    if let Ok(ov) = try_open(bytes, dir) {
        let mut buf = vec![0u8; ov.size() as usize];
        ov.read_at(&mut buf, 0).unwrap();
    }
}

#[test]
fn random_mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<Vec<u8>> = ["clean_64.cow", "dirty_32.cow", "packed_64.cowsave", "packed_32.cowsave.gz"]
        .iter()
        .map(|n| read(&vector(n)))
        .collect();
    let mut state = 7;
    for round in 0..600 {
        let mut bytes = seeds[round % seeds.len()].clone();
        match rng(&mut state) % 4 {
            0 => {
                let n = (rng(&mut state) % bytes.len() as u64) as usize;
                bytes.truncate(n);
            }
            1 => bytes = (0..rng(&mut state) % 3000).map(|_| rng(&mut state) as u8).collect(),
            _ => {
                for _ in 0..1 + rng(&mut state) % 6 {
                    // Mostly the header and the bitmap, where parsing happens.
                    let at = (rng(&mut state) % bytes.len().min(2100) as u64) as usize;
                    bytes[at] = rng(&mut state) as u8;
                }
            }
        }
        exercise(&bytes, dir.path());
    }
}
