//! The overlay side of `bench/cow.sh`: random 4 KiB writes, a flush, then
//! reads of the same offsets, through `cow::Overlay` over a raw base, in one
//! thread, one request at a time (as qemu-io does on the qcow2 side).
//! It also writes the same workload as two qemu-io command scripts, so both
//! sides run exactly the same offsets and data patterns.
//!
//! Usage: cargo run --release --example cow_bench -- BASE COWFILE COUNT SEED SCRIPT_PREFIX

use cloopbox::blockdev::{BlockDev, FileDev, ReadAt};
use cloopbox::cow::{Overlay, OverlayOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

const IO: usize = 4096;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, cow, count, seed, prefix] = args.as_slice() else {
        return Err("usage: cow_bench BASE COWFILE COUNT SEED SCRIPT_PREFIX".into());
    };
    let (count, mut seed): (usize, u64) = (count.parse()?, seed.parse()?);
    let cow = Path::new(cow);
    let _ = std::fs::remove_file(cow);
    let base = FileDev::open(Path::new(base))?;
    let opts = OverlayOptions { low_space_bytes: 0, ..Default::default() };
    let ov = Overlay::open(base, cow, &opts)?;
    let slots = ov.size() / IO as u64;
    let work: Vec<(u64, u8)> =
        (0..count).map(|i| ((splitmix(&mut seed) % slots) * IO as u64, (i % 255) as u8 + 1)).collect();
    write_scripts(prefix, &work)?;

    let mut buf = vec![0u8; IO];
    let start = Instant::now();
    for &(off, pattern) in &work {
        buf.fill(pattern);
        ov.write_at(&buf, off)?;
    }
    ov.flush()?;
    let write_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut sum = 0u64;
    for &(off, _) in &work {
        ov.read_at(&mut buf, off)?;
        sum = sum.wrapping_add(u64::from(buf[0]));
    }
    let read_s = start.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    let allocated = std::fs::metadata(cow)?.blocks() * 512;
    let mb = (count * IO) as f64 / 1e6;
    println!(
        "overlay: {count} random 4 KiB writes + flush in {write_s:.3}s ({:.0} IOPS, {:.1} MB/s); \
         reads in {read_s:.3}s ({:.0} IOPS, {:.1} MB/s); cowfile uses {:.1} MiB",
        count as f64 / write_s,
        mb / write_s,
        count as f64 / read_s,
        mb / read_s,
        allocated as f64 / (1 << 20) as f64
    );
    println!("RESULT overlay_write_s={write_s:.6} overlay_read_s={read_s:.6} overlay_bytes={allocated}");
    Ok(())
}

/// `PREFIX.writes` (the writes and a flush) and `PREFIX.reads`, for qemu-io.
fn write_scripts(prefix: &str, work: &[(u64, u8)]) -> std::io::Result<()> {
    let mut writes = std::io::BufWriter::new(std::fs::File::create(format!("{prefix}.writes"))?);
    let mut reads = std::io::BufWriter::new(std::fs::File::create(format!("{prefix}.reads"))?);
    for &(off, pattern) in work {
        writeln!(writes, "write -q -P 0x{pattern:02x} {off} 4k")?;
        writeln!(reads, "read -q {off} 4k")?;
    }
    writeln!(writes, "flush")?;
    writes.flush()?;
    reads.flush()
}
