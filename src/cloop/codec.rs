//! Block codecs.
//!
//! Every cloop block is compressed on its own. The ids are those of the V4
//! index nibble (Knopper's `cloop.h`, plus SliTaz's zstd); the other formats
//! map their own markers onto [`Codec`].
//!
//! Crate choices (all pure Rust, so the static musl build needs no C
//! toolchain; see README "Codecs"):
//! * zlib: flate2 over zlib-rs (fastest measured pure-Rust inflate), and
//!   zopfli for the maximum-effort modes `-L -1` and `-b`;
//! * xz: lzma-rust2 (encoder and decoder; lzma-rs has no real encoder);
//! * lz4: lz4_flex raw blocks;
//! * lzo1x: the lzo1x crate (decoder only is needed);
//! * zstd: ruzstd (decoder; its encoder offers only the "fastest" level).
//!
//! Decoding is always to an exact expected length: a block that inflates to
//! anything else is an error, never a silent short or long block.

use std::fmt;
use std::io::{Read, Write};

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
    zlib: flate2::Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self { zlib: flate2::Decompress::new(true) }
    }

    /// Decodes `src` into exactly `dst.len()` bytes.
    pub fn decode(&mut self, codec: Codec, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
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
            Codec::Zstd => {
                let reader = ruzstd::decoding::StreamingDecoder::new(src)
                    .map_err(|e| CodecError::Corrupt { codec, detail: e.to_string() })?;
                read_exact_stream(codec, reader, dst)
            }
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

    fn inflate(&mut self, src: &[u8], dst: &mut [u8]) -> Result<(), CodecError> {
        use flate2::{FlushDecompress, Status};
        let codec = Codec::Zlib;
        self.zlib.reset(true);
        let status = self
            .zlib
            .decompress(src, dst, FlushDecompress::Finish)
            .map_err(|e| CodecError::Corrupt { codec, detail: e.to_string() })?;
        let got = self.zlib.total_out() as usize;
        match status {
            Status::StreamEnd if got == dst.len() => Ok(()),
            Status::StreamEnd => Err(CodecError::Short { codec, expected: dst.len(), got }),
            _ if got == dst.len() => {
                // The output is full but the stream has not ended: either
                // more data follows, or only the checksum is missing.
                let mut probe = [0u8; 1];
                let consumed = self.zlib.total_in() as usize;
                match self.zlib.decompress(
                    &src[consumed.min(src.len())..],
                    &mut probe,
                    FlushDecompress::Finish,
                ) {
                    Ok(Status::StreamEnd) if self.zlib.total_out() as usize == got => Ok(()),
                    Ok(_) if self.zlib.total_out() as usize > got => {
                        Err(CodecError::Long { codec, expected: dst.len() })
                    }
                    Ok(_) => Err(CodecError::Corrupt { codec, detail: "stream is truncated".into() }),
                    Err(e) => Err(CodecError::Corrupt { codec, detail: e.to_string() }),
                }
            }
            _ => Err(CodecError::Corrupt {
                codec,
                detail: format!("stream is truncated after {got} of {} bytes", dst.len()),
            }),
        }
    }
}

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

/// How hard the zlib encoder works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZlibEffort {
    /// zlib levels 0..=9, as cloop-utils `-L 0..9`.
    Level(u32),
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
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self { zlib: ZlibEffort::Level(9), xz_preset: 6 }
    }
}

/// Compresses one block. `Codec::Stored` returns the input unchanged.
pub fn encode(codec: Codec, opts: &EncodeOptions, src: &[u8]) -> Result<Vec<u8>, CodecError> {
    Ok(match codec {
        Codec::Zlib => match opts.zlib {
            ZlibEffort::Level(level) => deflate_zlib(src, level),
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
        Codec::Lz4 => lz4_flex::block::compress(src),
        Codec::Zstd => ruzstd::encoding::compress_to_vec(src, ruzstd::encoding::CompressionLevel::Fastest),
        Codec::Lzo => return Err(CodecError::EncodeUnsupported { codec }),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31) ^ (i >> 7)) as u8 % 23).collect()
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
    fn zopfli_modes_are_valid_zlib_and_not_larger_than_level_9() {
        let data = sample(16384);
        let mut dec = Decoder::new();
        let l9 = encode(Codec::Zlib, &EncodeOptions::default(), &data).unwrap();
        for zlib in [ZlibEffort::Zopfli { iterations: 5 }, ZlibEffort::Best { iterations: 5 }] {
            let packed = encode(Codec::Zlib, &EncodeOptions { zlib, xz_preset: 6 }, &data).unwrap();
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
