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

/// splitmix64: a seeded generator whose sequence a test can replay (the
/// crash tests rebuild a child's workload in the parent from the seed).
#[derive(Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
