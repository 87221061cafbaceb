//! Fuzz target: any bytes as a cowfile, and as a cowpack savefile (plain
//! and gzip). The cowfile goes through the header parser and every check of
//! the open path, the repair scan (dry run), and, when it is valid for a
//! base built to match its size and fingerprint, through the overlay with a
//! few reads, writes, trims and a flush. Errors are expected; panics, hangs
//! and allocations beyond the documented caps are bugs.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use cloopbox::blockdev::{BlockDev, MemDev, ReadAt};
use cloopbox::cow::pack::{unpack_bytes, SaveFormat};
use cloopbox::cow::repair::{repair, RepairOptions};
use cloopbox::cow::{cowfile, Abi, Header, Overlay, OverlayOptions};
use libfuzzer_sys::fuzz_target;

/// Largest base we build for a header (4 MiB), so one input stays fast.
const MAX_BASE_BLOCKS: u64 = 4096;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("cloopbox-fuzz-{}.cow", std::process::id())))
}

/// A base of `blocks` KiB whose driver fingerprint is `fp`, if one exists:
/// the first four blocks get one byte each with the wanted sum.
fn base_for(header: &Header) -> Option<MemDev> {
    let blocks = header.rdoblocks;
    if blocks < 4 || blocks > MAX_BASE_BLOCKS {
        return None;
    }
    let fp32 = header.fingerprint as u32;
    if header.abi.store_fingerprint(fp32) != header.fingerprint || fp32.to_le_bytes().contains(&0) {
        return None;
    }
    let mut data = vec![0u8; (blocks * 1024) as usize];
    for (i, b) in fp32.to_le_bytes().into_iter().enumerate() {
        data[i * 1024] = b;
    }
    Some(MemDev::new(data))
}

fn exercise_overlay(header: &Header) {
    let Some(base) = base_for(header) else { return };
    let opts = OverlayOptions { create: false, repair: true, warn: Arc::new(|_| {}), ..Default::default() };
    let Ok(ov) = Overlay::open(base, scratch(), &opts) else { return };
    let size = ov.size();
    let mut buf = vec![0u8; 5000.min(size as usize)];
    let _ = ov.read_at(&mut buf, 0);
    let _ = ov.write_at(&[0xa5; 1500], size / 3);
    let _ = ov.trim(size / 2, 3000.min(size / 2));
    let tail = size - buf.len() as u64;
    let _ = ov.read_at(&mut buf, tail);
    let _ = ov.flush();
}

fuzz_target!(|data: &[u8]| {
    let _ = unpack_bytes(data, SaveFormat::Plain);
    let _ = unpack_bytes(data, SaveFormat::Gzip);
    let _ = Abi::detect(data);
    let Ok(header) = Header::parse(data) else { return };
    let _ = header.check_layout();
    if std::fs::write(scratch(), data).is_err() {
        return;
    }
    if let Ok(file) = cowfile::open_existing(scratch(), false) {
        let mut h = header;
        let _ = repair(&file, scratch(), &mut h, RepairOptions { dry_run: true }, &mut |_| {});
    }
    exercise_overlay(&header);
});
