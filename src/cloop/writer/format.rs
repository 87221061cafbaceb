//! The bytes the writer puts in front of the data: header and index.
//!
//! Layout (docs/formats.md, "V2" and "V4"), header first in both versions:
//!
//! ```text
//! 0      128         132         136                        136+8(n+1)
//! | preamble | block_size | num_blocks | e[0] e[1] … e[n] | block 0 | … |
//! ```
//!
//! The preamble is Debian cloop-utils' text byte for byte, because QEMU
//! auto-detects exactly that text; V4 differs only in the version digit at
//! 0x0c. Index entries are absolute u64 big-endian file offsets; in V4 the
//! top nibble of `e[i]` is block i's codec, and `e[n]` (end of data) has
//! none.
//!
//! [`Index`] collects codec and length per block while the data streams
//! out, with offsets relative to the first block, so one index serves every
//! output strategy: the base (where block 0 lands) is added only when the
//! entries are serialized.

use std::io::Write;

use crate::cloop::codec::Codec;

/// Debian cloop-utils 3.14 (advfs) preamble, 91 bytes; NUL-padded to 128.
pub const PREAMBLE: &[u8] =
    b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\nexit $?\n";
/// The preamble field of `struct cloop_head`.
const PREAMBLE_LEN: usize = 128;
/// Byte holding the major version digit (`V2.0` / `V4.0` start at 0x0b).
const VERSION_DIGIT_OFFSET: usize = 0x0c;
/// `sizeof(struct cloop_head)`: preamble, u32 block size, u32 block count.
pub const HEADER_LEN: u64 = 136;
/// V4 keeps the codec in the top 4 bits of an index entry.
const CODEC_SHIFT: u32 = 60;
/// The offset part of a V4 index entry. V2 offsets stay below it as well,
/// so that V4-aware readers (driver 4.x/5.x) see flag 0 in a V2 image.
pub const MAX_OFFSET: u64 = (1 << CODEC_SHIFT) - 1;
/// Entries serialized per write, so a huge index never needs a second
/// full-size buffer.
const INDEX_CHUNK_ENTRIES: usize = 8192;

/// The image version written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `V2.0`: zlib blocks only, readable by every cloop driver, QEMU, FreeBSD.
    V2,
    /// `V4.0` header first: a codec nibble per block (driver 4.x/5.x).
    V4,
}

impl Format {
    /// zlib images are V2, the format every reader knows; any other codec
    /// needs V4's per-block codec nibble.
    pub fn for_codec(codec: Codec) -> Format {
        if codec == Codec::Zlib {
            Format::V2
        } else {
            Format::V4
        }
    }

    fn digit(self) -> u8 {
        match self {
            Format::V2 => b'2',
            Format::V4 => b'4',
        }
    }
}

/// The 136-byte header.
pub fn header(format: Format, block_size: u32, num_blocks: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..PREAMBLE.len()].copy_from_slice(PREAMBLE);
    h[VERSION_DIGIT_OFFSET] = format.digit();
    h[PREAMBLE_LEN..PREAMBLE_LEN + 4].copy_from_slice(&block_size.to_be_bytes());
    h[PREAMBLE_LEN + 4..].copy_from_slice(&num_blocks.to_be_bytes());
    h
}

/// Where block 0 starts in a header-first image of `num_blocks` blocks:
/// after the header and n+1 index entries. `None` on overflow.
pub fn data_start(num_blocks: u64) -> Option<u64> {
    num_blocks.checked_add(1)?.checked_mul(8)?.checked_add(HEADER_LEN)
}

/// The index of an image being written.
#[derive(Debug, Default)]
pub struct Index {
    /// Per block: `codec id << 60 | offset relative to block 0`.
    entries: Vec<u64>,
    /// Bytes of block data so far (the relative end of the last block).
    data_len: u64,
}

/// The data would reach past [`MAX_OFFSET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetOverflow {
    pub end: u128,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the next block.
    pub fn push(&mut self, codec: Codec, len: usize) -> Result<(), OffsetOverflow> {
        let end = self.data_len as u128 + len as u128;
        if end > MAX_OFFSET as u128 {
            return Err(OffsetOverflow { end });
        }
        self.entries.push((u64::from(codec.v4_id()) << CODEC_SHIFT) | self.data_len);
        self.data_len = end as u64;
        Ok(())
    }

    pub fn num_blocks(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Bytes of block data.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Bytes the serialized index takes: 8 × (n + 1).
    pub fn byte_len(&self) -> u64 {
        (self.num_blocks() + 1) * 8
    }

    /// Writes the n+1 big-endian entries with block 0 at absolute offset
    /// `base`. The caller checked `base + data_len` with [`Index::check_base`].
    pub fn write_to(&self, base: u64, out: &mut dyn Write) -> std::io::Result<()> {
        let absolute = |e: u64| (e & !MAX_OFFSET) | (base + (e & MAX_OFFSET));
        let mut buf = Vec::with_capacity(INDEX_CHUNK_ENTRIES.min(self.entries.len() + 1) * 8);
        for chunk in self.entries.chunks(INDEX_CHUNK_ENTRIES) {
            buf.clear();
            for &e in chunk {
                buf.extend_from_slice(&absolute(e).to_be_bytes());
            }
            out.write_all(&buf)?;
        }
        out.write_all(&(base + self.data_len).to_be_bytes())
    }

    /// Whether block data placed at `base` stays addressable.
    pub fn check_base(&self, base: u64) -> Result<(), OffsetOverflow> {
        let end = base as u128 + self.data_len as u128;
        if end > MAX_OFFSET as u128 {
            return Err(OffsetOverflow { end });
        }
        Ok(())
    }

    /// Header and index together, for the strategies that emit them in one
    /// piece before (or apart from) the data.
    pub fn header_and_index(&self, format: Format, block_size: u32) -> Vec<u8> {
        let n = self.num_blocks();
        let base = data_start(n).expect("the block count was capped far below overflow");
        let mut out = Vec::with_capacity(base as usize);
        out.extend_from_slice(&header(format, block_size, n as u32));
        self.write_to(base, &mut out).expect("writing to a Vec cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_matches_cloop_utils_bytes() {
        let h = header(Format::V2, 65536, 5);
        assert_eq!(&h[..16], b"#!/bin/sh\n#V2.0 ");
        assert_eq!(PREAMBLE.len(), 91);
        assert!(h[91..128].iter().all(|&b| b == 0));
        assert_eq!(&h[128..], &[0, 1, 0, 0, 0, 0, 0, 5]);
        let v4 = header(Format::V4, 65536, 5);
        assert_eq!(&v4[0x0b..0x0f], b"V4.0");
        assert_eq!(h.iter().zip(v4.iter()).filter(|(a, b)| a != b).count(), 1);
    }

    #[test]
    fn empty_image_is_one_entry_pointing_past_it() {
        let bytes = Index::new().header_and_index(Format::V2, 65536);
        assert_eq!(bytes.len(), 144);
        assert_eq!(&bytes[136..], &0x90u64.to_be_bytes());
    }

    #[test]
    fn v4_entries_carry_the_codec_nibble_and_the_end_has_none() {
        let mut index = Index::new();
        index.push(Codec::Xz, 100).unwrap();
        index.push(Codec::Stored, 4096).unwrap();
        let bytes = index.header_and_index(Format::V4, 4096);
        let entry = |i: usize| u64::from_be_bytes(bytes[136 + 8 * i..144 + 8 * i].try_into().unwrap());
        assert_eq!(entry(0), (2 << 60) | 160);
        assert_eq!(entry(1), (1 << 60) | 260);
        assert_eq!(entry(2), 260 + 4096);
    }

    #[test]
    fn offsets_past_60_bits_are_refused() {
        let mut index = Index::new();
        index.data_len = MAX_OFFSET - 10;
        assert!(index.push(Codec::Zlib, 11).is_err());
        index.push(Codec::Zlib, 10).unwrap();
        assert!(index.check_base(1).is_err());
    }
}
