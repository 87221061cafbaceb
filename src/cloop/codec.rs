//! Block codecs.
//!
//! Every cloop block is compressed on its own. The ids are those of the V4
//! index nibble (Knopper's `cloop.h`, plus SliTaz's zstd); the other formats
//! map their own markers onto [`Codec`].
//!
//! Crate choices (pure Rust except where a C library measured clearly
//! better; both C libraries are built from source by their crates, so the
//! static musl build needs only musl-gcc; see README "Codecs"):
//! * zlib: libdeflate (C, through libdeflater) writes levels 1–12: faster
//!   and smaller than zlib's algorithm at the same level; flate2 over
//!   zlib-rs writes zlib's own streams (`-L 0`, `--deflate zlib`, the
//!   byte-for-byte cloop-utils path); libdeflate also inflates (faster
//!   than zlib-rs); zopfli for the
//!   maximum-effort modes `-L -1` and `-b`;
//! * xz: lzma-rust2 (encoder and decoder; lzma-rs has no real encoder);
//! * lz4: lz4_flex raw blocks;
//! * lzo1x: the lzo1x crate (decoder only is needed);
//! * zstd: libzstd (C, through the zstd crate): real levels 1–22, and it
//!   decodes about 3× faster than the pure-Rust ruzstd.
//!
//! Decoding is always to an exact expected length: a block that inflates to
//! anything else is an error, never a silent short or long block.

use std::fmt;
use std::io::Read;

/// A block compressor, numbered as in the V4 index nibble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// RFC 1950 zlib stream (V4 id 0; the only codec of V0.68, V1, V2).
    Zlib,
    /// Stored bytes (V4 id 1).
    Stored,
    /// A complete .xz container stream (V4 id 2).
    Xz,
    /// A raw LZ4 block, no frame (V4 id 3).
    Lz4,
    /// A raw LZO1X block (V4 id 4).
    Lzo,
    /// A zstd frame (id 5, SliTaz only).
    Zstd,
}

impl Codec {
    /// The codec for a V4 index nibble; `None` for ids no writer defines.
    pub fn from_v4_id(id: u8) -> Option<Codec> {
        Some(match id {
            0 => Codec::Zlib,
            1 => Codec::Stored,
            2 => Codec::Xz,
            3 => Codec::Lz4,
            4 => Codec::Lzo,
            5 => Codec::Zstd,
            _ => return None,
        })
    }

    pub fn v4_id(self) -> u8 {
        match self {
            Codec::Zlib => 0,
            Codec::Stored => 1,
            Codec::Xz => 2,
            Codec::Lz4 => 3,
            Codec::Lzo => 4,
            Codec::Zstd => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Zlib => "zlib",
            Codec::Stored => "none",
            Codec::Xz => "xz",
            Codec::Lz4 => "lz4",
            Codec::Lzo => "lzo",
            Codec::Zstd => "zstd",
        }
    }

    pub fn from_name(name: &str) -> Option<Codec> {
        Some(match name {
            "zlib" | "gzip" | "deflate" => Codec::Zlib,
            "none" | "stored" | "raw" => Codec::Stored,
            "xz" | "lzma" => Codec::Xz,
            "lz4" => Codec::Lz4,
            "lzo" | "lzo1x" => Codec::Lzo,
            "zstd" => Codec::Zstd,
            _ => return None,
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a block failed to decode. The caller adds the file and block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The stream is not valid for its codec.
    Corrupt { codec: Codec, detail: String },
    /// The block decoded to fewer bytes than expected.
    Short { codec: Codec, expected: usize, got: usize },
    /// The block decodes to more bytes than expected.
    Long { codec: Codec, expected: usize },
    /// The codec exists but this build cannot write it.
    EncodeUnsupported { codec: Codec },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Corrupt { codec, detail } => write!(f, "corrupt {codec} data: {detail}"),
            CodecError::Short { codec, expected, got } => {
                write!(f, "{codec} data decodes to {got} bytes, expected {expected}")
            }
            CodecError::Long { codec, expected } => {
                write!(f, "{codec} data decodes to more than the expected {expected} bytes")
            }
            CodecError::EncodeUnsupported { codec } => {
                write!(f, "writing {codec} blocks is not supported")
            }
        }
    }
}

impl std::error::Error for CodecError {}

/// Reusable decoding state: one per worker thread.
pub struct Decoder {
    zlib: libdeflater::Decompressor,
    /// Made on the first zstd block (a context is about 100 KiB).
    zstd: Option<zstd::zstd_safe::DCtx<'static>>,
    /// The last compressed block that decoded to `zero_len` zero bytes.
    zero: Option<(Codec, Vec<u8>)>,
    zero_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self { zlib: libdeflater::Decompressor::new(), zstd: None, zero: None, zero_len: 0 }
    }

    /// Decodes `src` into exactly `dst.len()` bytes.
    pub fn decode(&mut self, codec: Codec, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
        // Writers encode every all-zero block to the same bytes; decoding
        // is deterministic, so those bytes, once seen to give zeros, give
        // zeros again. libdeflate inflates runs of zeros 3× slower than
        // zlib-rs (BENCHMARKS.md), and disk images are often half zeros.
        if let Some((zc, zsrc)) = &self.zero {
            if *zc == codec && zsrc.len() == src.len() && dst.len() == self.zero_len && zsrc[..] == *src {
                dst.fill(0);
                return Ok(());
            }
        }
        self.decode_stream(codec, src, dst)?;
        if codec != Codec::Stored && src.len() * 64 < dst.len() && is_zero(dst) {
            self.zero = Some((codec, src.to_vec()));
            self.zero_len = dst.len();
        }
        Ok(())
    }

    fn decode_stream(&mut self, codec: Codec, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
        match codec {
            Codec::Zlib => self.inflate(src, dst),
            Codec::Stored => {
                if src.len() != dst.len() {
                    let expected = dst.len();
                    return Err(if src.len() < expected {
                        CodecError::Short { codec, expected, got: src.len() }
                    } else {
                        CodecError::Long { codec, expected }
                    });
                }
                dst.copy_from_slice(src);
                Ok(())
            }
            Codec::Xz => read_exact_stream(codec, lzma_rust2::XzReader::new(src, false), dst),
            Codec::Zstd => self.unzstd(src, dst),
            Codec::Lz4 => match lz4_flex::block::decompress_into(src, dst) {
                Ok(n) if n == dst.len() => Ok(()),
                Ok(n) => Err(CodecError::Short { codec, expected: dst.len(), got: n }),
                Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => {
                    Err(CodecError::Long { codec, expected: dst.len() })
                }
                Err(e) => Err(CodecError::Corrupt { codec, detail: e.to_string() }),
            },
            Codec::Lzo => lzo1x::decompress(src, dst).map_err(|e| match e {
                lzo1x::DecompressError::OutputLength => CodecError::Corrupt {
                    codec,
                    detail: format!("does not decode to exactly {} bytes", dst.len()),
                },
                lzo1x::DecompressError::InvalidInput => {
                    CodecError::Corrupt { codec, detail: "invalid input".into() }
                }
            }),
        }
    }

    /// One or more zstd frames into exactly `dst`. libzstd's one-shot
    /// decoder writes straight into `dst` and allocates no window, whatever
    /// the frame header claims.
    fn unzstd(&mut self, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
        use zstd::zstd_safe;
        let codec = Codec::Zstd;
        let expected = dst.len();
        let corrupt = |detail: String| CodecError::Corrupt { codec, detail };
        match zstd_safe::get_frame_content_size(src) {
            Ok(Some(n)) if n < expected as u64 => {
                return Err(CodecError::Short { codec, expected, got: n as usize })
            }
            Ok(Some(n)) if n > expected as u64 => return Err(CodecError::Long { codec, expected }),
            Ok(_) => {}
            Err(_) => return Err(corrupt("no valid zstd frame header".into())),
        }
        let dctx = self.zstd.get_or_insert_with(zstd_safe::DCtx::create);
        match dctx.decompress(dst, src) {
            Ok(got) if got == expected => Ok(()),
            Ok(got) => Err(CodecError::Short { codec, expected, got }),
            Err(code) if code == ZSTD_DST_TOO_SMALL => Err(CodecError::Long { codec, expected }),
            Err(code) => Err(corrupt(zstd_safe::get_error_name(code).to_string())),
        }
    }

    /// A zlib stream into exactly `dst`, by libdeflate (1.3× faster than
    /// zlib-rs on a Debian root at 128 KiB blocks, BENCHMARKS.md). It
    /// checks the header and the Adler-32 and never writes past `dst`.
    fn inflate(&mut self, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
        let codec = Codec::Zlib;
        let expected = dst.len();
        match self.zlib.zlib_decompress(src, dst) {
            Ok(got) if got == expected => Ok(()),
            Ok(got) => Err(CodecError::Short { codec, expected, got }),
            Err(libdeflater::DecompressionError::InsufficientSpace) => {
                Err(CodecError::Long { codec, expected })
            }
            Err(libdeflater::DecompressionError::BadData) => Err(CodecError::Corrupt {
                codec,
                detail: "invalid or truncated stream, or Adler-32 mismatch".into(),
            }),
        }
    }
}

/// Whether every byte is zero. Folds 64-byte chunks with OR so the
/// compiler vectorizes it; an early exit per byte would not be.
pub fn is_zero(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(64);
    for chunk in &mut chunks {
        if chunk.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// libzstd's "destination buffer is too small" error, as its API returns it.
const ZSTD_DST_TOO_SMALL: usize =
    (zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall as usize).wrapping_neg();

/// Reads a decoder stream into exactly `dst`, then checks that it ends there.
fn read_exact_stream(codec: Codec, mut reader: impl Read, dst: &mut [u8]) -> Result<(), CodecError> {
    let corrupt = |e: std::io::Error| CodecError::Corrupt { codec, detail: e.to_string() };
    let mut filled = 0;
    while filled < dst.len() {
        match reader.read(&mut dst[filled..]) {
            Ok(0) => return Err(CodecError::Short { codec, expected: dst.len(), got: filled }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match reader.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(CodecError::Long { codec, expected: dst.len() }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(e)),
        }
    }
}

#[cfg(feature = "create")]
mod encoding;
#[cfg(feature = "create")]
pub use encoding::*;

#[cfg(all(test, feature = "create"))]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31) ^ (i >> 7)) as u8 % 23).collect()
    }

    /// `text_len` bytes of text-like [`sample`], then 64 KiB of noise: the
    /// levels of a codec differ on the first half, and the second checks
    /// blocks that hardly shrink.
    fn text_then_noise(text_len: usize) -> Vec<u8> {
        let mut data = sample(text_len);
        data.extend((0..65536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        data
    }

    #[test]
    fn every_writable_codec_round_trips() {
        let data = sample(65536);
        let opts = EncodeOptions::default();
        let mut dec = Decoder::new();
        for codec in [Codec::Zlib, Codec::Stored, Codec::Xz, Codec::Lz4, Codec::Zstd] {
            let packed = encode(codec, &opts, &data).unwrap();
            let mut out = vec![0u8; data.len()];
            dec.decode(codec, &packed, &mut out).unwrap_or_else(|e| panic!("{codec}: {e}"));
            assert_eq!(out, data, "{codec}");
        }
    }

    #[test]
    fn zstd_round_trips_at_every_level() {
        // The noisy half stays a valid frame even where it does not shrink
        // (the writer stores those raw in V4).
        let data = text_then_noise(65536);
        let mut dec = Decoder::new();
        let mut sizes = Vec::new();
        for level in ZSTD_LEVELS {
            let opts = EncodeOptions { zstd_level: level, ..Default::default() };
            let packed = encode(Codec::Zstd, &opts, &data).unwrap();
            let mut out = vec![0u8; data.len()];
            dec.decode(Codec::Zstd, &packed, &mut out).unwrap_or_else(|e| panic!("level {level}: {e}"));
            assert!(out == data, "level {level}");
            sizes.push(packed.len());
        }
        // The levels are real: the top level is clearly smaller than level 1.
        assert!(sizes[21] * 10 < sizes[0] * 9, "{sizes:?}");
    }

    #[test]
    fn lz4_round_trips_at_every_level_and_liblz4_reads_every_block() {
        let data = text_then_noise(131072);
        let mut dec = Decoder::new();
        let mut sizes = Vec::new();
        for level in LZ4_LEVELS {
            let opts = EncodeOptions { lz4_level: level, ..Default::default() };
            let packed = encode(Codec::Lz4, &opts, &data).unwrap();
            let mut out = vec![0u8; data.len()];
            dec.decode(Codec::Lz4, &packed, &mut out).unwrap_or_else(|e| panic!("level {level}: {e}"));
            assert!(out == data, "level {level}");
            // liblz4's LZ4_decompress_safe, the kernel cloop driver's call,
            // as a second, independent reader.
            let mut back = vec![0u8; data.len()];
            assert_eq!(lzzzz::lz4::decompress(&packed, &mut back).unwrap(), data.len(), "level {level}");
            assert!(back == data, "level {level} via liblz4");
            sizes.push(packed.len());
        }
        // The levels are real: LZ4_HC at 12 is clearly smaller than the fast
        // compressor, and the fast levels are lz4_flex's block.
        assert!(sizes[11] * 10 < sizes[0] * 9, "{sizes:?}");
        assert_eq!(sizes[0], lz4_flex::block::compress(&data).len());
    }

    #[test]
    fn malformed_lz4_blocks_are_clear_errors() {
        let data = sample(8192);
        let packed = encode(Codec::Lz4, &EncodeOptions::default(), &data).unwrap();
        let mut dec = Decoder::new();
        let mut out = vec![0u8; data.len()];
        let err = dec.decode(Codec::Lz4, &packed, &mut out[..8000]).unwrap_err();
        assert_eq!(err, CodecError::Long { codec: Codec::Lz4, expected: 8000 });
        let mut big = vec![0u8; 9000];
        assert!(matches!(dec.decode(Codec::Lz4, &packed, &mut big).unwrap_err(), CodecError::Short { .. }));
        assert!(dec.decode(Codec::Lz4, &packed[..packed.len() - 3], &mut out).is_err());
        for at in [0, packed.len() / 2, packed.len() - 1] {
            let mut bad = packed.clone();
            bad[at] ^= 0xff;
            // No checksum: a flip may decode to other bytes, but never past
            // the block and never panics.
            let _ = dec.decode(Codec::Lz4, &bad, &mut out);
        }
        dec.decode(Codec::Lz4, &packed, &mut out).unwrap();
        assert!(out == data);
    }

    #[test]
    fn libdeflate_levels_are_zlib_streams_every_reader_decodes() {
        let data = sample(65536);
        let mut dec = Decoder::new();
        for level in LIBDEFLATE_LEVELS {
            let opts = EncodeOptions { zlib: ZlibEffort::Libdeflate(level), ..Default::default() };
            let packed = encode(Codec::Zlib, &opts, &data).unwrap();
            // zlib-rs (flate2), as a second, independent reader.
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&packed[..]).read_to_end(&mut back).unwrap();
            assert!(back == data, "level {level} via zlib-rs");
            let mut out = vec![0u8; data.len()];
            dec.decode(Codec::Zlib, &packed, &mut out).unwrap();
            assert!(out == data, "level {level}");
        }
    }

    #[test]
    fn malformed_zstd_blocks_are_clear_errors() {
        let data = sample(8192);
        let packed = encode(Codec::Zstd, &EncodeOptions::default(), &data).unwrap();
        let mut dec = Decoder::new();
        let mut out = vec![0u8; data.len()];
        // A frame that says it holds another length than the block's.
        let err = dec.decode(Codec::Zstd, &packed, &mut out[..8000]).unwrap_err();
        assert_eq!(err, CodecError::Long { codec: Codec::Zstd, expected: 8000 });
        let mut big = vec![0u8; 9000];
        let err = dec.decode(Codec::Zstd, &packed, &mut big).unwrap_err();
        assert_eq!(err, CodecError::Short { codec: Codec::Zstd, expected: 9000, got: 8192 });
        // Not a frame at all.
        let err = dec.decode(Codec::Zstd, b"not zstd", &mut out).unwrap_err();
        assert_eq!(err.to_string(), "corrupt zstd data: no valid zstd frame header");
        // Truncated, and a flipped bit inside the compressed data.
        let err = dec.decode(Codec::Zstd, &packed[..packed.len() - 3], &mut out).unwrap_err();
        assert!(matches!(err, CodecError::Corrupt { .. }), "{err}");
        for at in [packed.len() / 2, packed.len() - 1] {
            let mut bad = packed.clone();
            bad[at] ^= 0x40;
            if let Ok(()) = dec.decode(Codec::Zstd, &bad, &mut out) {
                // zstd has no checksum here: a flip may decode to other bytes,
                // but never to a wrong length, and never panics.
                assert_eq!(out.len(), data.len());
            }
        }
        // Trailing garbage after the frame.
        let mut long = packed.clone();
        long.extend_from_slice(b"garbage!");
        assert!(dec.decode(Codec::Zstd, &long, &mut out).is_err());
        // The decoder still works after all of that.
        dec.decode(Codec::Zstd, &packed, &mut out).unwrap();
        assert!(out == data);
    }

    #[test]
    fn zero_blocks_are_remembered_only_for_the_same_bytes_and_length() {
        let mut dec = Decoder::new();
        for codec in [Codec::Zlib, Codec::Zstd] {
            let zeros = encode(codec, &EncodeOptions::default(), &[0u8; 65536]).unwrap();
            let mut out = vec![7u8; 65536];
            dec.decode(codec, &zeros, &mut out).unwrap();
            assert!(out.iter().all(|&b| b == 0));
            out.fill(7);
            dec.decode(codec, &zeros, &mut out).unwrap();
            assert!(out.iter().all(|&b| b == 0), "{codec}: remembered zero block");
            // Another length is decoded (and is an error), not answered from memory.
            assert!(dec.decode(codec, &zeros, &mut out[..4096]).is_err(), "{codec}");
            // Other bytes are decoded too.
            let data = sample(65536);
            dec.decode(codec, &encode(codec, &EncodeOptions::default(), &data).unwrap(), &mut out).unwrap();
            assert!(out == data);
        }
    }

    #[test]
    fn zopfli_modes_are_valid_zlib_and_not_larger_than_level_9() {
        let data = sample(16384);
        let mut dec = Decoder::new();
        let l9 = encode(Codec::Zlib, &EncodeOptions::default(), &data).unwrap();
        for zlib in [ZlibEffort::Zopfli { iterations: 5 }, ZlibEffort::Best { iterations: 5 }] {
            let packed = encode(Codec::Zlib, &EncodeOptions { zlib, ..Default::default() }, &data).unwrap();
            let mut out = vec![0u8; data.len()];
            dec.decode(Codec::Zlib, &packed, &mut out).unwrap();
            assert_eq!(out, data);
            if let ZlibEffort::Best { .. } = zlib {
                assert!(packed.len() <= l9.len());
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors_for_every_codec() {
        let data = sample(4096);
        let opts = EncodeOptions::default();
        let mut dec = Decoder::new();
        for codec in [Codec::Zlib, Codec::Stored, Codec::Xz, Codec::Lz4, Codec::Zstd] {
            let packed = encode(codec, &opts, &data).unwrap();
            let mut small = vec![0u8; 4095];
            assert!(dec.decode(codec, &packed, &mut small).is_err(), "{codec} long");
            let mut big = vec![0u8; 4097];
            assert!(dec.decode(codec, &packed, &mut big).is_err(), "{codec} short");
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let data = sample(8192);
        let opts = EncodeOptions::default();
        let mut dec = Decoder::new();
        for codec in [Codec::Zlib, Codec::Xz, Codec::Lz4, Codec::Zstd, Codec::Lzo] {
            let mut out = vec![0u8; data.len()];
            assert!(dec.decode(codec, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3], &mut out).is_err(), "{codec}");
            assert!(dec.decode(codec, &[], &mut out).is_err(), "{codec} empty");
            if codec != Codec::Lzo {
                let packed = encode(codec, &opts, &data).unwrap();
                let cut = &packed[..packed.len() / 2];
                assert!(dec.decode(codec, cut, &mut out).is_err(), "{codec} truncated");
            }
        }
    }

    #[test]
    fn zlib_missing_checksum_is_an_error() {
        let data = sample(4096);
        let packed = encode(Codec::Zlib, &EncodeOptions::default(), &data).unwrap();
        let mut out = vec![0u8; data.len()];
        let mut dec = Decoder::new();
        assert!(dec.decode(Codec::Zlib, &packed[..packed.len() - 4], &mut out).is_err());
        dec.decode(Codec::Zlib, &packed, &mut out).unwrap();
    }

    #[test]
    fn v4_ids_round_trip() {
        for id in 0..=5 {
            assert_eq!(Codec::from_v4_id(id).unwrap().v4_id(), id);
        }
        assert_eq!(Codec::from_v4_id(6), None);
    }
}
