//! Fuzz target: any bytes as a cloop image. Opens it (detection, header,
//! index of every version), then decodes blocks and does a few `read_at`s.
//! Errors are expected; panics, hangs, and allocations beyond the
//! documented caps are bugs.
#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use cloopbox::blockdev::ReadAt;
use cloopbox::cloop::codec::Decoder;
use cloopbox::cloop::reader::Image;
use libfuzzer_sys::fuzz_target;

/// Blocks decoded per input, so that a header claiming thousands of
/// zero-length 64 MiB blocks does not trip libFuzzer's timeout.
const MAX_BLOCKS_PER_INPUT: u64 = 256;
const MAX_DECODED_PER_INPUT: u64 = 32 << 20;

/// One scratch file, rewritten for each input (the reader needs a `File`).
fn scratch() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| tempfile_in(&std::env::temp_dir()))
}

fn tempfile_in(dir: &Path) -> File {
    let path = dir.join(format!("cloopbox-fuzz-{}.cloop", std::process::id()));
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    file
}

fuzz_target!(|data: &[u8]| {
    let file = scratch();
    file.set_len(0).unwrap();
    file.write_all_at(data, 0).unwrap();
    let Ok(image) = Image::from_file(file.try_clone().unwrap(), Path::new("fuzz.cloop")) else { return };
    let info = image.info().clone();
    let mut out = vec![0u8; info.block_size as usize];
    let mut decoder = Decoder::new();
    let mut decoded = 0u64;
    for block in 0..info.num_blocks.min(MAX_BLOCKS_PER_INPUT) {
        let _ = image.block_info(block);
        if let Ok(valid) = image.read_block(block, &mut decoder, &mut out) {
            assert!(valid <= out.len());
        }
        decoded += u64::from(info.block_size);
        if decoded > MAX_DECODED_PER_INPUT {
            break;
        }
    }
    // Unaligned reads across block boundaries, at the start and the end.
    let len = info.size.min(3 * u64::from(info.block_size)).min(1 << 20);
    let mut buf = vec![0u8; len as usize];
    let _ = image.read_at(&mut buf, 0);
    if info.size > len {
        let _ = image.read_at(&mut buf, info.size - len);
        let _ = image.read_at(&mut buf[..len as usize / 2], info.size / 2);
    }
});
