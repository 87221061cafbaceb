//! Fuzz target: any bytes as the filesystem inside an image, as init's
//! probe (and `cloopinfo`'s "filesystem" line) reads it.
//!
//! The first byte picks where the rest lands in a zeroed 128 KiB device:
//! at 0 (boot sectors: vfat, exFAT, NTFS), 1024 (ext's and EROFS's
//! superblocks), 32768 (the ISO 9660 / UDF volume recognition sequence) or
//! 65536 (btrfs's superblock), so that every probe sees fuzzed bytes where
//! it looks. Labels, volume ids and UDF's descriptor walk are decoded from
//! them. `None` is expected; panics, hangs and allocations sized by what
//! the bytes claim are bugs.
#![no_main]

use cloopbox::blockdev::MemDev;
use cloopbox::boot::probe::probe;
use libfuzzer_sys::fuzz_target;

const SIZE: usize = 128 * 1024;
const OFFSETS: [usize; 4] = [0, 1024, 32768, 65536];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let at = OFFSETS[usize::from(pick) % OFFSETS.len()];
    let mut img = vec![0u8; SIZE.max(at + rest.len())];
    img[at..at + rest.len()].copy_from_slice(rest);
    if let Some(fs) = probe(&MemDev::new(img)) {
        let _ = (fs.fs.mount_type(), fs.fs.is_read_only(), fs.label.len(), fs.id.len());
    }
});
