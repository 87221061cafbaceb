//! Fuzz target: any bytes as a dm-verity hash tree file. They go through
//! the superblock parser and the length check, then, opened with the root
//! hash the file itself implies (so the upper levels verify and the
//! lazily read level 0 is reached too), through a few data-block checks.
//! Errors are expected; panics, hangs and allocations beyond the file's
//! own size are bugs.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cloopbox::verity::format::{BLOCK, BLOCK_U64, SUPERBLOCK_LEN};
use cloopbox::verity::tree::{claimed_root, parse_info, Tree};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("cloopbox-fuzz-{}.verity", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = <&[u8; SUPERBLOCK_LEN]>::try_from(data.get(..SUPERBLOCK_LEN).unwrap_or_default()) {
        let _ = parse_info(sb, data.len() as u64, &"fuzz".into());
    }
    if std::fs::write(scratch(), data).is_err() {
        return;
    }
    let Ok((info, root)) = claimed_root(scratch()) else { return };
    let root = root.unwrap_or([0; 32]);
    let blocks = info.geometry.data_blocks;
    let Ok(tree) = Tree::open(scratch(), root, blocks * BLOCK_U64) else { return };
    let zeros = [0u8; BLOCK];
    for index in [0, blocks / 2, blocks - 1, blocks] {
        let _ = tree.verify(index, &zeros);
    }
});
