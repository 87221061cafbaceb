//! Shared helpers for the cow_* integration tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

/// `../shared/vectors/cowloop`; a missing directory fails the test.
pub fn vectors() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    assert!(
        dir.join("cowloop").is_dir(),
        "test vectors missing: {} (clone shared/ beside the repo)",
        dir.display()
    );
    dir
}

pub fn vector(name: &str) -> PathBuf {
    vectors().join("cowloop").join(name)
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

/// The 300 KiB ext2 rdofile of the cowloop vectors.
pub fn raw_image() -> Vec<u8> {
    let raw = gunzip(&vectors().join("raw/ext2_300k.img.gz"));
    assert_eq!(raw.len(), 307_200);
    raw
}

/// A writable copy of a vector in `dir`.
pub fn copy_vector(name: &str, dir: &Path) -> PathBuf {
    let dest = dir.join(name);
    std::fs::write(&dest, read(&vector(name))).unwrap();
    dest
}

/// The data `make_cow_vectors.py` wrote: `pat(b, seed)`.
pub fn pat(block: u64, seed: u64) -> Vec<u8> {
    (0..1024u64).map(|i| ((block * 7 + i * 13 + seed) & 0xff) as u8).collect()
}

/// The blocks written into the vector cowfiles.
pub fn vector_writes() -> Vec<(u64, Vec<u8>)> {
    vec![(5, pat(5, 1)), (100, pat(100, 2)), (101, pat(101, 3)), (102, vec![0; 1024]), (299, pat(299, 4))]
}

/// What the device over the vector cowfiles reads as.
pub fn expected_view() -> Vec<u8> {
    let mut view = raw_image();
    for (b, data) in vector_writes() {
        view[b as usize * 1024..(b as usize + 1) * 1024].copy_from_slice(&data);
    }
    view
}

pub const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");
