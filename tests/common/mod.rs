//! Helpers shared by the integration tests (each test file that needs them
//! says `mod common;`; not every file uses every helper).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `../shared/vectors` beside the repository. Missing vectors fail the
/// test: CI always has them, so a skip would hide a broken checkout.
pub fn vectors() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    assert!(
        dir.join("README.md").is_file(),
        "test vectors missing: expected them at {} (clone shared/ beside the repo)",
        dir.display()
    );
    dir
}

/// The 307200-byte raw ext2 image every vector was made from.
pub fn raw() -> &'static [u8] {
    static RAW: OnceLock<Vec<u8>> = OnceLock::new();
    RAW.get_or_init(|| {
        let gz = std::fs::File::open(vectors().join("raw/ext2_300k.img.gz")).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 307200);
        out
    })
}

/// A tiny deterministic generator for seeded mutations.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}
