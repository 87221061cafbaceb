//! Per-worker block encoding: one full, zero-padded block in, the bytes to
//! store and their codec out.
//!
//! Rules, in order:
//! 1. An all-zero block is encoded once per image and its bytes reused
//!    ([`ZeroCache`]); disk images are often a fifth zeros. The cached bytes
//!    are whatever the normal path made for the first zero block, so the
//!    output does not depend on which worker got there first.
//! 2. Each worker reuses one encoder state (a libdeflate compressor, a
//!    `flate2::Compress` reset per block, a zstd context) instead of
//!    building a fresh one per block, whose state is several hundred KiB of
//!    allocations. None of them carries anything from one block to the
//!    next, so the output is the same for any thread count.
//! 3. A zlib stream larger than [`zlib_limit`] is redone at level 0 (stored
//!    deflate blocks in a zlib wrapper): V2 has no stored marker, and readers
//!    (cloop-utils' extract_compressed_fs, our own) reject blocks much larger
//!    than the block size.
//! 4. xz gets a dictionary no larger than the block: a larger one is never
//!    used, but the encoder allocates and clears it for every block, which
//!    made xz several times slower (and the kernel's decoder needs less).
//! 5. V4 only: a block whose encoding is not smaller than the block itself
//!    is stored raw (codec `Stored`, exactly block_size bytes, as the 5.x
//!    driver needs).

use std::io::Write;
use std::sync::OnceLock;

use flate2::{Compress, Compression, FlushCompress, Status};

use super::format::Format;
use crate::cloop::codec::{self, is_zero, Codec, CodecError, EncodeOptions, ZlibEffort};

/// What to store for one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The encoder's output buffer holds the block's bytes.
    Encoded(Codec),
    /// The block is stored raw: the input buffer is the payload.
    Raw,
}

/// Everything that decides a block's bytes; shared by all workers.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub format: Format,
    pub codec: Codec,
    pub options: EncodeOptions,
}

/// The encoding of the all-zero block, made once per image.
#[derive(Default)]
pub struct ZeroCache {
    cell: OnceLock<(Payload, Vec<u8>)>,
}

/// The largest zlib stream we store for a block: cloop-utils' own bound
/// (advfs accepts `bs + bs/1000 + 12`; its extractor rejects more than
/// `bs + bs/1000 + 16`).
pub fn zlib_limit(block_size: usize) -> usize {
    block_size + block_size / 1000 + 12
}

/// One worker's encoder.
pub struct BlockEncoder<'a> {
    settings: Settings,
    zeros: &'a ZeroCache,
    zlib: Option<(u32, Compress)>,
    libdeflate: Option<libdeflater::Compressor>,
    zstd: Option<zstd::zstd_safe::CCtx<'static>>,
}

impl<'a> BlockEncoder<'a> {
    pub fn new(settings: Settings, zeros: &'a ZeroCache) -> Self {
        Self { settings, zeros, zlib: None, libdeflate: None, zstd: None }
    }

    /// Encodes `block` (a full block) into `out` (cleared first).
    pub fn encode(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<Payload, CodecError> {
        if !is_zero(block) {
            return self.encode_data(block, out);
        }
        if let Some((payload, bytes)) = self.zeros.cell.get() {
            out.clear();
            out.extend_from_slice(bytes);
            return Ok(*payload);
        }
        let payload = self.encode_data(block, out)?;
        // Another worker may have won the race; its bytes are identical.
        let _ = self.zeros.cell.set((payload, out.clone()));
        Ok(payload)
    }

    fn encode_data(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<Payload, CodecError> {
        let codec = self.settings.codec;
        match codec {
            Codec::Stored => return Ok(Payload::Raw),
            Codec::Zlib => self.zlib(block, out),
            Codec::Xz => xz(self.settings.options.xz_preset, block, out)?,
            Codec::Zstd => {
                let cctx = self.zstd.get_or_insert_with(zstd::zstd_safe::CCtx::create);
                codec::zstd_frame(cctx, self.settings.options.zstd_level, block, out);
            }
            Codec::Lz4 => codec::lz4_block(self.settings.options.lz4_level, block, out),
            _ => *out = codec::encode(codec, &self.settings.options, block)?,
        }
        if self.settings.format == Format::V4 && out.len() >= block.len() {
            return Ok(Payload::Raw);
        }
        Ok(Payload::Encoded(codec))
    }

    fn zlib(&mut self, block: &[u8], out: &mut Vec<u8>) {
        match self.settings.options.zlib {
            ZlibEffort::Zlib(level) => self.deflate(level.min(9), block, out),
            ZlibEffort::Libdeflate(level) => {
                let compressor = self.libdeflate.get_or_insert_with(|| codec::libdeflate_compressor(level));
                codec::libdeflate_zlib(compressor, block, out);
            }
            effort => {
                let options = EncodeOptions { zlib: effort, ..self.settings.options };
                *out = codec::encode(Codec::Zlib, &options, block)
                    .expect("zlib encoding into a Vec cannot fail");
            }
        }
        if out.len() > zlib_limit(block.len()) {
            self.deflate(0, block, out);
        }
    }

    fn deflate(&mut self, level: u32, block: &[u8], out: &mut Vec<u8>) {
        let stream = match &mut self.zlib {
            Some((l, stream)) if *l == level => {
                stream.reset();
                stream
            }
            slot => &mut slot.insert((level, Compress::new(Compression::new(level), true))).1,
        };
        out.clear();
        out.reserve(zlib_limit(block.len()) + 64);
        loop {
            let consumed = stream.total_in() as usize;
            let status = stream
                .compress_vec(&block[consumed..], out, FlushCompress::Finish)
                .expect("deflate into a buffer with free space cannot fail");
            if status == Status::StreamEnd {
                return;
            }
            out.reserve(out.capacity().max(4096));
        }
    }
}

/// An .xz stream (CRC32 check, as the kernel's decoder always supports; see
/// `codec::encode`) with the dictionary clamped to the block.
fn xz(preset: u32, block: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut options = lzma_rust2::XzOptions::with_preset(preset.min(9));
    options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
    let dict = u32::try_from(block.len()).unwrap_or(u32::MAX).max(lzma_rust2::DICT_SIZE_MIN);
    options.lzma_options.dict_size = options.lzma_options.dict_size.min(dict);
    let err = |e: std::io::Error| CodecError::Corrupt { codec: Codec::Xz, detail: e.to_string() };
    out.clear();
    let mut w = lzma_rust2::XzWriter::new(std::mem::take(out), options).map_err(err)?;
    w.write_all(block).map_err(err)?;
    *out = w.finish().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloop::codec::Decoder;

    fn settings(codec: Codec, zlib: ZlibEffort) -> Settings {
        Settings {
            format: Format::for_codec(codec),
            codec,
            options: EncodeOptions { zlib, ..Default::default() },
        }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn reused_zlib_state_gives_the_same_bytes_as_a_fresh_encoder() {
        let zeros = ZeroCache::default();
        let mut enc = BlockEncoder::new(settings(Codec::Zlib, ZlibEffort::Zlib(9)), &zeros);
        let text: Vec<u8> = (0..65536u32).map(|i| b"cloop writer "[(i % 13) as usize]).collect();
        let reference = codec::encode(Codec::Zlib, &EncodeOptions::default(), &text).unwrap();
        let mut out = Vec::new();
        for _ in 0..3 {
            assert_eq!(enc.encode(&noise(65536, 7), &mut out).unwrap(), Payload::Encoded(Codec::Zlib));
            assert_eq!(enc.encode(&text, &mut out).unwrap(), Payload::Encoded(Codec::Zlib));
            assert_eq!(out, reference);
        }
    }

    #[test]
    fn incompressible_zlib_stays_within_the_cloop_utils_bound_at_every_level() {
        let zeros = ZeroCache::default();
        let mut dec = Decoder::new();
        for bs in [512, 4096, 65536, 1 << 20] {
            let data = noise(bs, bs as u64);
            for level in 0..=9 {
                let mut enc = BlockEncoder::new(settings(Codec::Zlib, ZlibEffort::Zlib(level)), &zeros);
                let mut out = Vec::new();
                enc.encode(&data, &mut out).unwrap();
                assert!(out.len() <= zlib_limit(bs), "bs {bs} level {level}: {}", out.len());
                let mut back = vec![0u8; bs];
                dec.decode(Codec::Zlib, &out, &mut back).unwrap();
                assert_eq!(back, data);
            }
        }
    }

    #[test]
    fn v4_stores_what_does_not_compress_and_v2_never_does() {
        let zeros = ZeroCache::default();
        let data = noise(4096, 3);
        let mut out = Vec::new();
        for codec in [Codec::Xz, Codec::Lz4, Codec::Zstd, Codec::Stored] {
            let mut enc = BlockEncoder::new(settings(codec, ZlibEffort::Zlib(9)), &zeros);
            assert_eq!(enc.encode(&data, &mut out).unwrap(), Payload::Raw, "{codec}");
        }
        let mut enc = BlockEncoder::new(settings(Codec::Zlib, ZlibEffort::Zlib(9)), &zeros);
        assert_eq!(enc.encode(&data, &mut out).unwrap(), Payload::Encoded(Codec::Zlib));
    }

    #[test]
    fn zero_blocks_are_encoded_once_and_reused() {
        let zeros = ZeroCache::default();
        let s = settings(Codec::Zlib, ZlibEffort::Zopfli { iterations: 2 });
        let mut a = BlockEncoder::new(s, &zeros);
        let mut b = BlockEncoder::new(s, &zeros);
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        a.encode(&[0u8; 8192], &mut out_a).unwrap();
        assert!(zeros.cell.get().is_some());
        b.encode(&[0u8; 8192], &mut out_b).unwrap();
        assert_eq!(out_a, out_b);
        let mut back = vec![1u8; 8192];
        Decoder::new().decode(Codec::Zlib, &out_b, &mut back).unwrap();
        assert!(is_zero(&back));
    }

    #[test]
    fn is_zero_sees_a_single_bit_anywhere() {
        for len in [0, 1, 63, 64, 65, 200] {
            let mut v = vec![0u8; len];
            assert!(is_zero(&v));
            for i in 0..len {
                v[i] = 0x80;
                assert!(!is_zero(&v), "len {len} at {i}");
                v[i] = 0;
            }
        }
    }
}
