//! Single-thread block codec comparison behind BENCHMARKS.md "Codec
//! choice": every non-zero block of IMAGE (BS bytes each) is compressed on
//! its own with each candidate encoder, then every block is decoded with
//! each candidate decoder for that format. Prints, per candidate, the sum
//! of the compressed blocks, the CPU time to compress and the decode speed
//! in MB/s of decompressed output. All-zero blocks are left out (the writer
//! encodes them once per image).
//!
//! Usage: cargo run --release --example codec_bench -- IMAGE BS [NAME...]
//! NAME filters the candidates (substring match), e.g. `zstd-19 libdeflate`.

/// This process's user + system CPU seconds (/proc/self/stat, fields 14
/// and 15, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

enum Enc {
    ZlibRs(u32),
    Libdeflate(i32),
    Zstd(i32),
    Ruzstd,
}

#[derive(Clone, Copy)]
enum Dec {
    ZlibRs,
    Libdeflate,
    Zstd,
    Ruzstd,
}

fn encode(enc: &Enc, block: &[u8]) -> Vec<u8> {
    match *enc {
        Enc::ZlibRs(level) => {
            let mut c = flate2::Compress::new(flate2::Compression::new(level), true);
            let mut out = Vec::with_capacity(block.len() + 1024);
            c.compress_vec(block, &mut out, flate2::FlushCompress::Finish).unwrap();
            out
        }
        Enc::Libdeflate(level) => {
            let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
            let mut out = vec![0u8; c.zlib_compress_bound(block.len())];
            let n = c.zlib_compress(block, &mut out).unwrap();
            out.truncate(n);
            out
        }
        Enc::Zstd(level) => zstd::bulk::compress(block, level).unwrap(),
        Enc::Ruzstd => ruzstd::encoding::compress_to_vec(block, ruzstd::encoding::CompressionLevel::Fastest),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let image = std::fs::read(&args[1]).expect("IMAGE");
    let bs: usize = args[2].parse().expect("BS");
    let filter = &args[3..];
    let blocks: Vec<&[u8]> = image.chunks(bs).filter(|b| b.iter().any(|&x| x != 0)).collect();
    let raw: usize = blocks.iter().map(|b| b.len()).sum();
    println!("{} non-zero blocks of {bs} bytes ({raw} bytes) of {}", blocks.len(), image.len().div_ceil(bs));
    let mut candidates: Vec<(String, Enc, Vec<Dec>)> = Vec::new();
    for l in [6, 9] {
        candidates.push((format!("zlib-rs-{l}"), Enc::ZlibRs(l), vec![Dec::ZlibRs, Dec::Libdeflate]));
    }
    for l in [6, 7, 8, 9, 10, 11, 12] {
        candidates.push((format!("libdeflate-{l}"), Enc::Libdeflate(l), vec![Dec::ZlibRs, Dec::Libdeflate]));
    }
    for l in [1, 3, 6, 9, 12, 15, 17, 18, 19, 20, 22] {
        let decs = if l == 19 { vec![Dec::Zstd, Dec::Ruzstd] } else { vec![Dec::Zstd] };
        candidates.push((format!("zstd-{l}"), Enc::Zstd(l), decs));
    }
    candidates.push(("ruzstd-fastest".into(), Enc::Ruzstd, vec![Dec::Zstd, Dec::Ruzstd]));
    for (name, enc, decs) in candidates {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = cpu_seconds();
        let packed: Vec<Vec<u8>> = blocks.iter().map(|b| encode(&enc, b)).collect();
        let enc_s = cpu_seconds() - t;
        let size: usize = packed.iter().map(|p| p.len()).sum();
        let mut line = format!("{name:16} {size:>11} bytes  enc {enc_s:6.2} s");
        let mut out = vec![0u8; bs];
        for dec in decs {
            let mut zlib = flate2::Decompress::new(true);
            let mut ld = libdeflater::Decompressor::new();
            let mut dctx = zstd::bulk::Decompressor::new().unwrap();
            let mut t = cpu_seconds();
            for pass in 0..4 {
                if pass == 1 {
                    t = cpu_seconds();
                }
                for (p, b) in packed.iter().zip(&blocks) {
                    let dst = &mut out[..b.len()];
                    match dec {
                        Dec::ZlibRs => {
                            zlib.reset(true);
                            zlib.decompress(p, dst, flate2::FlushDecompress::Finish).unwrap();
                        }
                        Dec::Libdeflate => {
                            ld.zlib_decompress(p, dst).unwrap();
                        }
                        Dec::Zstd => {
                            dctx.decompress_to_buffer(p, dst).unwrap();
                        }
                        Dec::Ruzstd => {
                            use std::io::Read;
                            let mut r = ruzstd::decoding::StreamingDecoder::new(&p[..]).unwrap();
                            r.read_exact(dst).unwrap();
                        }
                    }
                    if pass == 0 {
                        assert!(dst == *b, "{name}: round trip");
                    }
                }
            }
            let s = (cpu_seconds() - t) / 3.0;
            let which = match dec {
                Dec::ZlibRs => "zlib-rs",
                Dec::Libdeflate => "libdeflate",
                Dec::Zstd => "libzstd",
                Dec::Ruzstd => "ruzstd",
            };
            line += &format!("  dec[{which}] {:7.0} MB/s", raw as f64 / s / 1e6);
        }
        println!("{line}");
    }
}
