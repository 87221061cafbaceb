//! The block encoders, only in builds with the `create` feature (the
//! writer's; the initramfs's boot build has none of them, see README
//! "Boot build").

use std::io::Write;

use super::{Codec, CodecError};

/// Which zlib encoder, and how hard it works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZlibEffort {
    /// zlib's own algorithm (zlib-rs), levels 0..=9: the streams
    /// cloop-utils writes (`-L 0`, or `--deflate zlib`).
    Zlib(u32),
    /// libdeflate, levels 1..=12 (the default for `-L 1..12`): at 9, about
    /// 1.6× faster than zlib's algorithm and 1.6 % smaller (BENCHMARKS.md).
    Libdeflate(u32),
    /// zopfli with the given iteration count: cloop-utils `-L -1` ("7zip"),
    /// the smallest deflate stream we can make.
    Zopfli { iterations: u32 },
    /// The smaller of zlib level 9 and zopfli, per block: `-L -2` / `-b`.
    Best { iterations: u32 },
}

/// Compression settings for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    pub zlib: ZlibEffort,
    /// xz preset 0..=9.
    pub xz_preset: u32,
    /// zstd level, [`ZSTD_LEVELS`].
    pub zstd_level: i32,
    /// lz4 level, [`LZ4_LEVELS`]: as the lz4 tool, 1 and 2 the fast
    /// compressor, 3..=12 LZ4_HC.
    pub lz4_level: i32,
}

/// The zstd levels `-L` accepts. 20–22 are zstd's "ultra" levels; they need
/// no more memory here because the window never exceeds one block.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=22;
/// The zstd level without `-L`.
pub const ZSTD_DEFAULT_LEVEL: i32 = 19;
/// The lz4 levels `-L` accepts (the lz4 tool's): 1 and 2 are LZ4's fast
/// compressor, 3..=12 LZ4_HC, 10..=12 its optimal parser.
pub const LZ4_LEVELS: std::ops::RangeInclusive<i32> = 1..=12;
/// The lz4 level without `-L`: LZ4_HC's own default. On a Debian root at
/// 128 KiB blocks it is 0.83× the fast compressor's image and 0.89× EROFS's
/// `lz4hc,12`; 12 is only 0.3 % smaller again but takes 4.9× the CPU
/// (BENCHMARKS.md), the same trade as zstd's 19 against 22.
pub const LZ4_DEFAULT_LEVEL: i32 = 9;
/// The lowest LZ4_HC level; below it the fast compressor runs.
const LZ4_HC_MIN_LEVEL: i32 = 3;
/// The libdeflate levels; 10–12 are its near-optimal parser.
pub const LIBDEFLATE_LEVELS: std::ops::RangeInclusive<u32> = 1..=12;

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            zlib: ZlibEffort::Libdeflate(9),
            xz_preset: 6,
            zstd_level: ZSTD_DEFAULT_LEVEL,
            lz4_level: LZ4_DEFAULT_LEVEL,
        }
    }
}

/// One zlib stream from libdeflate into `out` (replaced). `compressor` is
/// reused between blocks; it must be of the level wanted.
pub fn libdeflate_zlib(compressor: &mut libdeflater::Compressor, src: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(compressor.zlib_compress_bound(src.len()), 0);
    let n = compressor.zlib_compress(src, out).expect("the buffer has libdeflate's own bound");
    out.truncate(n);
}

/// A libdeflate compressor for a level in [`LIBDEFLATE_LEVELS`] (clamped).
pub fn libdeflate_compressor(level: u32) -> libdeflater::Compressor {
    let level = level.clamp(*LIBDEFLATE_LEVELS.start(), *LIBDEFLATE_LEVELS.end()) as i32;
    libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).expect("clamped to the valid range"))
}

/// One zstd frame (content size recorded, no checksum: cloop has none per
/// block either) into `out` (replaced). `cctx` is reused between blocks;
/// every call starts from the level's default parameters.
pub fn zstd_frame(cctx: &mut zstd::zstd_safe::CCtx<'static>, level: i32, src: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(src.len()));
    cctx.compress(out, src, level.clamp(*ZSTD_LEVELS.start(), *ZSTD_LEVELS.end()))
        .expect("the buffer has zstd's own bound");
}

/// Compresses one block. `Codec::Stored` returns the input unchanged.
pub fn encode(codec: Codec, opts: &EncodeOptions, src: &[u8]) -> Result<Vec<u8>, CodecError> {
    Ok(match codec {
        Codec::Zlib => match opts.zlib {
            ZlibEffort::Zlib(level) => deflate_zlib(src, level),
            ZlibEffort::Libdeflate(level) => {
                let mut out = Vec::new();
                libdeflate_zlib(&mut libdeflate_compressor(level), src, &mut out);
                out
            }
            ZlibEffort::Zopfli { iterations } => zopfli_zlib(src, iterations),
            ZlibEffort::Best { iterations } => {
                let a = deflate_zlib(src, 9);
                let b = zopfli_zlib(src, iterations);
                if b.len() < a.len() {
                    b
                } else {
                    a
                }
            }
        },
        Codec::Stored => src.to_vec(),
        Codec::Xz => {
            let mut options = lzma_rust2::XzOptions::with_preset(opts.xz_preset.min(9));
            // The kernel's embedded xz decoder always has CRC32; CRC64 is
            // a config option. SliTaz writes CRC32 too.
            options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
            let err = |e: std::io::Error| CodecError::Corrupt { codec, detail: e.to_string() };
            let mut w = lzma_rust2::XzWriter::new(Vec::with_capacity(src.len() / 2), options).map_err(err)?;
            w.write_all(src).map_err(err)?;
            w.finish().map_err(err)?
        }
        Codec::Lz4 => {
            let mut out = Vec::new();
            lz4_block(opts.lz4_level, src, &mut out);
            out
        }
        Codec::Zstd => {
            let mut out = Vec::new();
            zstd_frame(&mut zstd::zstd_safe::CCtx::create(), opts.zstd_level, src, &mut out);
            out
        }
        Codec::Lzo => return Err(CodecError::EncodeUnsupported { codec }),
    })
}

/// One raw LZ4 block (no frame, as cloop V4 and SliTaz store them) at
/// `level` ([`LZ4_LEVELS`], clamped) into `out` (replaced): lz4_flex's fast
/// compressor below [`LZ4_HC_MIN_LEVEL`], liblz4's LZ4_HC (C, through
/// lzzzz, whose match-finder state is per thread) from there. Every LZ4
/// block decoder reads both.
pub fn lz4_block(level: i32, src: &[u8], out: &mut Vec<u8>) {
    let level = level.clamp(*LZ4_LEVELS.start(), *LZ4_LEVELS.end());
    out.clear();
    let n = if level < LZ4_HC_MIN_LEVEL {
        out.resize(lz4_flex::block::get_maximum_output_size(src.len()), 0);
        lz4_flex::block::compress_into(src, out).expect("the buffer has lz4_flex's own bound")
    } else {
        out.resize(lzzzz::lz4::max_compressed_size(src.len()), 0);
        lzzzz::lz4_hc::compress(src, out, level).expect("the buffer has liblz4's own bound")
    };
    out.truncate(n);
}

fn deflate_zlib(src: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(src.len() / 2 + 64),
        flate2::Compression::new(level.min(9)),
    );
    enc.write_all(src).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn zopfli_zlib(src: &[u8], iterations: u32) -> Vec<u8> {
    let options = zopfli::Options {
        iteration_count: std::num::NonZeroU64::new(iterations.max(1) as u64).expect("max(1) is non-zero"),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(src.len() / 2 + 64);
    zopfli::compress(options, zopfli::Format::Zlib, src, &mut out).expect("writing to a Vec cannot fail");
    out
}
