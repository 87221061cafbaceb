//! The zeroing fallback of the cow overlay (docs/cow.md, "Filesystems
//! without hole punching"), measured: what opening a clean cowfile, an
//! `fstrim` of the whole device and a second `fstrim` cost on a filesystem
//! that cannot punch holes, against what the fallback did before it read
//! first (a blind write of zeros over the same range).
//!
//! DIR must be on such a filesystem: FAT or exFAT, or ramfs, which like
//! them answers hole punching with EOPNOTSUPP and treats the whole file as
//! data (SEEK_DATA) but is mounted anywhere (`mount -t ramfs ramfs DIR`;
//! ramfs holds the cowfile in RAM, SIZE_GIB of it). The example refuses a
//! DIR that can punch holes. On ramfs the times are the CPU and memory
//! cost of the fallback; the bytes read and written (from /proc/self/io)
//! are what it costs a USB stick, at that stick's speeds.
//!
//! Usage: cargo run --release --example cow_zero_fallback -- DIR [SIZE_GIB [DATA_MIB [ROUNDS]]]
//! (defaults 4 GiB of device with 512 MiB of it written, 3 rounds)

use cloopbox::blockdev::{BlockDev, FileDev};
use cloopbox::cow::{cowfile, Overlay, OverlayOptions};
use std::path::Path;
use std::time::Instant;

/// (rchar, wchar) of this process: bytes through read and write calls.
fn io_bytes() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
    };
    (field("rchar:"), field("wchar:"))
}

/// Runs `f`, printing its time and the bytes it read and wrote.
fn measure<T>(what: &str, f: impl FnOnce() -> T) -> (T, f64) {
    let (r0, w0) = io_bytes();
    let t = Instant::now();
    let out = f();
    let secs = t.elapsed().as_secs_f64();
    let (r1, w1) = io_bytes();
    println!(
        "  {what:<44} {secs:>7.3} s   read {:>6} MiB   written {:>6} MiB",
        (r1 - r0) >> 20,
        (w1 - w0) >> 20
    );
    (out, secs)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cow_zero_fallback DIR [SIZE_GIB [DATA_MIB [ROUNDS]]]";
    let dir = Path::new(args.get(1).ok_or(usage)?);
    let size_gib: u64 = args.get(2).map_or(Ok(4), |a| a.parse())?;
    let data_mib: u64 = args.get(3).map_or(Ok(512), |a| a.parse())?;
    let rounds: usize = args.get(4).map_or(Ok(3), |a| a.parse())?;
    let size = size_gib << 30;
    // The base: sparse, in the temporary directory (it is only read for
    // the fingerprint and for partial units).
    let base_path = std::env::temp_dir().join(format!("cow-zero-fallback-base.{}", std::process::id()));
    // Its first blocks hold data, as any filesystem image's do: the
    // fingerprint reads blocks until four have a non-zero byte sum.
    std::fs::write(&base_path, (0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>())?;
    std::fs::OpenOptions::new().write(true).open(&base_path)?.set_len(size)?;
    let cow = dir.join("fallback.cow");
    let probe = dir.join("punch-probe");
    let f = std::fs::File::create(&probe)?;
    f.set_len(4096)?;
    let can_punch = cowfile::punch_hole(&f, 0, 4096)?;
    drop(f);
    std::fs::remove_file(&probe)?;
    if can_punch {
        return Err(format!(
            "{}: this filesystem punches holes; give a FAT, exFAT or ramfs directory",
            dir.display()
        )
        .into());
    }
    let opts = OverlayOptions { warn: std::sync::Arc::new(|_| {}), ..OverlayOptions::default() };
    let (mut opens, mut trims, mut retrims, mut blind) = (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let _ = std::fs::remove_file(&cow);
        println!("round {round}: {size_gib} GiB device, {data_mib} MiB of it written in 64 KiB pieces spread over it");
        let ov = Overlay::open(FileDev::open(&base_path)?, &cow, &opts)?;
        let piece = vec![0x5au8; 64 << 10];
        let pieces = (data_mib << 20) / piece.len() as u64;
        let stride = size / pieces.max(1);
        for i in 0..pieces {
            ov.write_at(&piece, i * stride)?;
        }
        // The last unit too: the cowfile has its full length, as the
        // filesystem on the device would make it sooner or later.
        ov.write_at(&piece[..1024], size - 1024)?;
        ov.close()?;
        // FAT and exFAT write zeros over the gap when a file grows; ramfs
        // leaves it unallocated and would allocate it inside the first
        // timed read. Read it once, untimed, so that both are allocated.
        {
            use std::io::Read;
            let mut buf = vec![0u8; 1 << 20];
            let mut f = std::fs::File::open(&cow)?;
            while f.read(&mut buf)? > 0 {}
        }
        let (ov, secs) = measure("open a clean cowfile (scrub)", || {
            Overlay::open(FileDev::open(&base_path).unwrap(), &cow, &opts)
        });
        let ov = ov?;
        opens.push(secs);
        let (r, secs) = measure("trim the whole device (fstrim)", || ov.trim(0, size));
        r?;
        trims.push(secs);
        let zeroed = ov.stats().zeroed;
        println!("  units zeroed: {zeroed} ({} MiB)", zeroed >> 10);
        let (r, secs) = measure("trim it again (all zeros already)", || ov.trim(0, size));
        r?;
        retrims.push(secs);
        ov.close()?;
        // What the fallback did before it read first, at every open and
        // every trim: zeros written over the whole range.
        let file = std::fs::OpenOptions::new().write(true).open(&cow)?;
        let zeros = vec![0u8; 64 << 10];
        let doffset = std::fs::metadata(&cow)?.len() - size;
        let (r, secs) = measure("before: zeros written over the range", || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            let mut pos = 0;
            while pos < size {
                file.write_all_at(&zeros, doffset + pos)?;
                pos += zeros.len() as u64;
            }
            Ok(())
        });
        r?;
        blind.push(secs);
    }
    let _ = std::fs::remove_file(&cow);
    let _ = std::fs::remove_file(&base_path);
    println!(
        "medians of {rounds}: open {:.3} s, trim {:.3} s, trim again {:.3} s, before (blind zeros) {:.3} s",
        median(&mut opens),
        median(&mut trims),
        median(&mut retrims),
        median(&mut blind)
    );
    Ok(())
}
