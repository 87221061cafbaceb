//! The flush side of `bench/cow.sh`: 4 KiB write + flush at QD1 through
//! `cow::Overlay`, against `pwrite` + `fdatasync` of the same 4 KiB at the
//! same offsets into a new sparse file on the same filesystem (each write
//! allocates, as a new cowfile unit does). Rounds alternate the two, so a
//! burst of load from other jobs hits both alike; prints per-round medians
//! of the per-operation latency, then the median of the rounds.
//!
//! Usage: cargo run --release --example cow_flush_bench -- DIR [COUNT [ROUNDS]]

use cloopbox::blockdev::{BlockDev, FileDev};
use cloopbox::cow::{Overlay, OverlayOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const IO: usize = 4096;
/// The base: 1 GiB, sparse (only its first blocks are read, for the
/// fingerprint).
const BASE: u64 = 1 << 30;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).ok_or("usage: cow_flush_bench DIR [COUNT [ROUNDS]]")?);
    let count: usize = args.get(2).map_or(Ok(300), |a| a.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(5), |a| a.parse())?;
    let base_path = dir.join("flush-base.img");
    std::fs::File::create(&base_path)?.set_len(BASE)?;
    let (mut ov_rounds, mut raw_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    println!("{count} x (4 KiB write + flush) per round, {rounds} rounds, in {}", dir.display());
    println!("{:<6} {:>14} {:>14} {:>8}", "round", "overlay_us", "pwrite+fds_us", "ratio");
    for round in 0..rounds {
        let mut seed = round as u64 + 1;
        let offsets: Vec<u64> =
            (0..count).map(|_| (splitmix(&mut seed) % (BASE / IO as u64)) * IO as u64).collect();
        let data = vec![0x5au8; IO];
        let mut results = [0.0; 2];
        // Alternate which side goes first.
        for side in [round % 2, 1 - round % 2] {
            let mut lat = Vec::with_capacity(count);
            if side == 0 {
                let cow = dir.join("flush-bench.cow");
                let _ = std::fs::remove_file(&cow);
                let opts = OverlayOptions { low_space_bytes: 0, ..Default::default() };
                let ov = Overlay::open(FileDev::open(&base_path)?, &cow, &opts)?;
                for &off in &offsets {
                    let t = Instant::now();
                    ov.write_at(&data, off)?;
                    ov.flush()?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                ov.close()?;
                std::fs::remove_file(&cow)?;
            } else {
                let path = dir.join("flush-bench.raw");
                let _ = std::fs::remove_file(&path);
                let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
                file.set_len(BASE)?;
                for &off in &offsets {
                    let t = Instant::now();
                    file.write_all_at(&data, off)?;
                    file.sync_data()?;
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                drop(file);
                std::fs::remove_file(&path)?;
            }
            results[side] = median(&mut lat);
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{round:<6} {:>14.1} {:>14.1} {:>7.2}x  load {}",
            results[0],
            results[1],
            results[0] / results[1],
            load.split_whitespace().next().unwrap_or("?")
        );
        ratios.push(results[0] / results[1]);
        ov_rounds.push(results[0]);
        raw_rounds.push(results[1]);
    }
    let (o, r) = (median(&mut ov_rounds), median(&mut raw_rounds));
    println!("median  {o:>14.1} {r:>14.1} {:>7.2}x", o / r);
    // The robust figure on a shared disk: both sides of a round saw the
    // same load.
    println!("median of the per-round ratios: {:.2}x", median(&mut ratios));
    std::fs::remove_file(&base_path)?;
    Ok(())
}
