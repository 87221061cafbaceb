//! The cowloop 3.1 head block, its two ABIs, the geometry the driver derives
//! from an rdofile, and the rdofile fingerprint (docs/formats.md, "cowloop cowfiles").
//!
//! `struct cowhead` holds `unsigned long` fields, so its layout follows the
//! ABI of the kernel that wrote it: 32 bytes on i386, 56 on x86_64, both
//! little-endian. Both have `mapunit == 1024` at offset 8; in the x86_64
//! layout the next word is mapunit's high half (0), in the i386 layout it is
//! mapsize (>= 1024). That word tells them apart. New files are always
//! written in the x86_64 layout; an existing file keeps its own.
//!
//! Parsing is split in two on purpose: [`Header::parse`] only needs the
//! magic (that is all `cowlist` ever checked), and [`Header::check_layout`]
//! applies every structural rule, so each tool can validate exactly as much
//! as its original did, and more where the original was unsafe.

use super::error::FormatError;
use crate::blockdev::ReadAt;
use std::io;

/// `COWMAGIC`: `"\x7fCOW"` in little-endian byte order.
pub const MAGIC: u32 = 0x574f_437f;
/// `COWVERSION` of cowloop 3.1; "DO NOT MODIFY" says its header.
pub const VERSION: i16 = 1;
/// `MAPUNIT`: one bitmap bit covers 1 KiB of the rdofile.
pub const MAPUNIT: u64 = 1024;
/// The head block: the struct followed by zeros.
pub const HEAD_BLOCK: u64 = 1024;
/// `COWDIRTY`: the on-disk bitmap may be stale.
pub const FLAG_DIRTY: u16 = 0x1;
/// `COWPACKED`: a savefile made by `cowpack -p`.
pub const FLAG_PACKED: u16 = 0x2;
/// Ours: `cowmerge` has written this cowfile into its rdofile. cowloop 3.1
/// ignores unknown flag bits; every cloopbox tool that applies a cowfile
/// refuses it.
pub const FLAG_MERGED: u16 = 0x4;
const KNOWN_FLAGS: u16 = FLAG_DIRTY | FLAG_PACKED | FLAG_MERGED;
/// Bitmap bytes per driver chunk (`MAPCHUNKSZ`); also our flush granularity.
pub const MAP_CHUNK: u64 = 4096;
/// Cap on the bitmap we are willing to allocate: 1 GiB of bitmap describes
/// an 8 TiB rdofile. Every size read from a file is checked against it
/// before anything is allocated.
pub const MAX_MAPSIZE: u64 = 1 << 30;
/// The largest rdofile, in 1 KiB blocks, that fits under [`MAX_MAPSIZE`].
pub const MAX_BLOCKS: u64 = MAX_MAPSIZE * 8;
/// How far beyond the end of the bitmap a data area may start. The driver
/// rounds up to 4 KiB; the slack accepts other aligned writers.
const MAX_DOFFSET_GAP: u64 = 1 << 20;

/// Which `unsigned long` the writing kernel had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    X86_64,
    I386,
}

impl Abi {
    /// `sizeof(struct cowhead)`.
    pub fn header_len(self) -> usize {
        match self {
            Abi::X86_64 => 56,
            Abi::I386 => 32,
        }
    }

    fn word(self) -> usize {
        match self {
            Abi::X86_64 => 8,
            Abi::I386 => 4,
        }
    }

    /// File offset of the n-th `unsigned long` (0 = mapunit … 5 = cowused).
    pub fn field_offset(self, n: usize) -> u64 {
        (8 + n * self.word()) as u64
    }

    /// The fingerprint as the driver stores it: the C `int` result, converted
    /// to `unsigned long`, which sign-extends on x86_64 (docs/formats.md, "Fingerprint").
    pub fn store_fingerprint(self, fp: u32) -> u64 {
        match self {
            Abi::X86_64 => fp as i32 as i64 as u64,
            Abi::I386 => u64::from(fp),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::I386 => "i386",
        }
    }

    /// Detects the layout from the first 16 bytes (docs/formats.md, "Header: two ABIs").
    pub fn detect(head: &[u8]) -> Abi {
        match head.get(12..16) {
            Some(w) if w == [0, 0, 0, 0] => Abi::X86_64,
            Some(_) => Abi::I386,
            None => Abi::X86_64,
        }
    }
}

pub const F_MAPUNIT: usize = 0;
pub const F_MAPSIZE: usize = 1;
pub const F_DOFFSET: usize = 2;
pub const F_RDOBLOCKS: usize = 3;
pub const F_FINGERPRINT: usize = 4;
pub const F_COWUSED: usize = 5;

/// `struct cowhead`, with every field widened to u64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub abi: Abi,
    pub version: i16,
    pub flags: u16,
    pub mapunit: u64,
    pub mapsize: u64,
    pub doffset: u64,
    pub rdoblocks: u64,
    pub fingerprint: u64,
    pub cowused: u64,
}

/// What the driver derives from an rdofile of `numblocks` KiB (docs/formats.md, "Geometry").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub numblocks: u64,
    pub mapsize: u64,
    pub doffset: u64,
}

impl Geometry {
    pub fn for_blocks(numblocks: u64) -> Result<Geometry, FormatError> {
        if numblocks == 0 {
            return Err(FormatError::NoBlocks);
        }
        if numblocks > MAX_BLOCKS {
            return Err(FormatError::TooLarge { rdoblocks: numblocks, max: MAX_BLOCKS });
        }
        let nbytes = numblocks.div_ceil(8);
        let mapsize = nbytes.div_ceil(1024) * 1024;
        let doffset = (HEAD_BLOCK + mapsize).div_ceil(4096) * 4096;
        Ok(Geometry { numblocks, mapsize, doffset })
    }

    /// Length of a cowfile the driver has just created: header + bitmap.
    pub fn fresh_len(&self) -> u64 {
        HEAD_BLOCK + self.mapsize
    }
}

impl Header {
    /// A new, clean, empty header for an rdofile of this geometry.
    pub fn new(abi: Abi, geom: &Geometry, fingerprint: u32) -> Header {
        Header {
            abi,
            version: VERSION,
            flags: 0,
            mapunit: MAPUNIT,
            mapsize: geom.mapsize,
            doffset: geom.doffset,
            rdoblocks: geom.numblocks,
            fingerprint: abi.store_fingerprint(fingerprint),
            cowused: 0,
        }
    }

    /// Reads the fields. Only the length and the magic are checked here.
    pub fn parse(bytes: &[u8]) -> Result<Header, FormatError> {
        let too_small = |need: usize| FormatError::TooSmall {
            len: bytes.len() as u64,
            need: need as u64,
            what: "cowfile header",
        };
        let magic = u32::from_le_bytes(bytes.get(0..4).ok_or(too_small(32))?.try_into().expect("4 bytes"));
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        let abi = Abi::detect(bytes);
        if bytes.len() < abi.header_len() {
            return Err(too_small(abi.header_len()));
        }
        let field = |n: usize| {
            let at = abi.field_offset(n) as usize;
            match abi {
                Abi::X86_64 => u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes")),
                Abi::I386 => u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))),
            }
        };
        Ok(Header {
            abi,
            version: i16::from_le_bytes([bytes[4], bytes[5]]),
            flags: u16::from_le_bytes([bytes[6], bytes[7]]),
            mapunit: field(F_MAPUNIT),
            mapsize: field(F_MAPSIZE),
            doffset: field(F_DOFFSET),
            rdoblocks: field(F_RDOBLOCKS),
            fingerprint: field(F_FINGERPRINT),
            cowused: field(F_COWUSED),
        })
    }

    /// `sizeof(struct cowhead)` bytes, as cowrepair and cowpack write them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.abi.header_len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        for value in
            [self.mapunit, self.mapsize, self.doffset, self.rdoblocks, self.fingerprint, self.cowused]
        {
            match self.abi {
                Abi::X86_64 => out.extend_from_slice(&value.to_le_bytes()),
                // i386 files only ever hold values that came from 32-bit
                // fields (or counts bounded by them), so this cannot cut.
                Abi::I386 => out.extend_from_slice(&(value as u32).to_le_bytes()),
            }
        }
        out
    }

    /// The whole 1 KiB head block, as the driver writes it.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut block = self.encode();
        block.resize(HEAD_BLOCK as usize, 0);
        block
    }

    pub fn is_dirty(&self) -> bool {
        self.flags & FLAG_DIRTY != 0
    }

    pub fn is_packed(&self) -> bool {
        self.flags & FLAG_PACKED != 0
    }

    pub fn is_merged(&self) -> bool {
        self.flags & FLAG_MERGED != 0
    }

    /// Version, flags known, mapunit, and the sizes that drive offsets and
    /// allocations. Says nothing about DIRTY, PACKED or MERGED: each caller
    /// decides what those mean for it.
    pub fn check_layout(&self) -> Result<Geometry, FormatError> {
        if self.version > VERSION {
            return Err(FormatError::NewerVersion { version: self.version });
        }
        if self.version < VERSION {
            return Err(FormatError::UnsupportedVersion { version: self.version });
        }
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::UnknownFlags { flags: self.flags });
        }
        if self.mapunit != MAPUNIT {
            return Err(FormatError::BadMapunit {
                mapunit: self.mapunit,
                offset: self.abi.field_offset(F_MAPUNIT),
            });
        }
        let geom = Geometry::for_blocks(self.rdoblocks)?;
        if self.mapsize != geom.mapsize {
            return Err(FormatError::MapsizeMismatch {
                mapsize: self.mapsize,
                rdoblocks: self.rdoblocks,
                expected: geom.mapsize,
                offset: self.abi.field_offset(F_MAPSIZE),
            });
        }
        let min = HEAD_BLOCK + geom.mapsize;
        let max = geom.doffset + MAX_DOFFSET_GAP;
        if self.doffset < min || self.doffset > max || self.doffset % MAPUNIT != 0 {
            return Err(FormatError::BadDoffset {
                doffset: self.doffset,
                min,
                max,
                offset: self.abi.field_offset(F_DOFFSET),
            });
        }
        // Caps above keep doffset + rdoblocks*1024 far below i64::MAX.
        Ok(Geometry { doffset: self.doffset, ..geom })
    }

    /// The rules the driver applied when it activated a cowfile over an
    /// rdofile of `numblocks` blocks with fingerprint `fp` (docs/cow.md, "Opening a cowfile"), minus the
    /// bitmap checks (see [`super::bitmap::Bitmap::from_disk`]).
    pub fn check_for_base(&self, numblocks: u64, fp: u32) -> Result<Geometry, FormatError> {
        let geom = self.check_layout()?;
        if self.is_packed() {
            return Err(FormatError::Packed);
        }
        if self.is_merged() {
            return Err(FormatError::Merged);
        }
        self.check_related(numblocks, fp)?;
        Ok(geom)
    }

    /// rdoblocks and fingerprint against an rdofile.
    pub fn check_related(&self, numblocks: u64, fp: u32) -> Result<(), FormatError> {
        if self.rdoblocks != numblocks {
            return Err(FormatError::NotRelated {
                rdoblocks: self.rdoblocks,
                numblocks,
                offset: self.abi.field_offset(F_RDOBLOCKS),
            });
        }
        let computed = self.abi.store_fingerprint(fp);
        if self.fingerprint != computed {
            return Err(FormatError::FingerprintMismatch {
                stored: self.fingerprint,
                computed,
                offset: self.abi.field_offset(F_FINGERPRINT),
            });
        }
        Ok(())
    }
}

/// The driver's "checksum of the first blocks" (docs/formats.md, "Fingerprint") as the C `int` it
/// computes: one byte-sum (mod 256) from each of the first four 1 KiB
/// blocks whose sum is non-zero. Use [`Abi::store_fingerprint`] to get the
/// stored value. Like the driver, a mostly-zero rdofile is read until four
/// such blocks are found.
pub fn fingerprint(base: &dyn ReadAt, numblocks: u64) -> io::Result<u32> {
    let mut fp = 0u32;
    let mut nrval = 0;
    let mut block = vec![0u8; MAPUNIT as usize];
    let mut i = 0;
    while nrval < 4 && i < numblocks {
        base.read_at(&mut block, i * MAPUNIT)?;
        i += 1;
        let cs = block.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
        if cs == 0 {
            continue;
        }
        fp |= u32::from(cs) << (8 * nrval);
        nrval += 1;
    }
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_the_driver_examples() {
        let g = Geometry::for_blocks(300).unwrap();
        assert_eq!((g.mapsize, g.doffset, g.fresh_len()), (1024, 4096, 2048));
        let g = Geometry::for_blocks(102_400).unwrap();
        assert_eq!((g.mapsize, g.doffset, g.fresh_len()), (13312, 16384, 14336));
        // 8193 blocks need 1025 bitmap bytes: two bitmap blocks.
        let g = Geometry::for_blocks(8193).unwrap();
        assert_eq!((g.mapsize, g.doffset), (2048, 4096));
        assert_eq!(Geometry::for_blocks(0), Err(FormatError::NoBlocks));
        assert!(Geometry::for_blocks(MAX_BLOCKS + 1).is_err());
    }

    #[test]
    fn fingerprint_sign_extends_only_on_x86_64() {
        assert_eq!(Abi::X86_64.store_fingerprint(0x8215_0a84), 0xffff_ffff_8215_0a84);
        assert_eq!(Abi::I386.store_fingerprint(0x8215_0a84), 0x8215_0a84);
        assert_eq!(Abi::X86_64.store_fingerprint(0x7215_0a84), 0x7215_0a84);
    }

    #[test]
    fn fingerprint_skips_zero_sum_blocks_and_stops_after_four() {
        let mut data = vec![0u8; 8 * 1024];
        data[1024] = 0x84; // block 1
        data[2048] = 0xff; // block 2: sum 0x01 with the next byte
        data[2049] = 0x02;
        data[3072] = 0x80; // block 3: 0x80 + 0x80 = 0 mod 256: skipped
        data[3073] = 0x80;
        data[5 * 1024] = 0x15;
        data[6 * 1024] = 0x82;
        data[7 * 1024] = 0x55; // a fifth value: ignored
        let dev = crate::blockdev::MemDev::new(data);
        assert_eq!(fingerprint(&dev, 8).unwrap(), 0x8215_0184);
        assert_eq!(fingerprint(&dev, 2).unwrap(), 0x84);
    }

    #[test]
    fn both_layouts_round_trip_and_are_detected() {
        let g = Geometry::for_blocks(300).unwrap();
        for abi in [Abi::X86_64, Abi::I386] {
            let mut h = Header::new(abi, &g, 0x8215_0a84);
            h.cowused = 5;
            let bytes = h.encode();
            assert_eq!(bytes.len(), abi.header_len());
            assert_eq!(Header::parse(&bytes).unwrap(), h);
            assert_eq!(h.encode_block().len(), 1024);
            assert_eq!(h.check_layout().unwrap(), g);
        }
    }

    #[test]
    fn layout_rules_each_have_their_error() {
        let g = Geometry::for_blocks(300).unwrap();
        let good = Header::new(Abi::X86_64, &g, 1);
        let bad = |f: fn(&mut Header)| {
            let mut h = good;
            f(&mut h);
            h.check_layout().unwrap_err()
        };
        assert!(matches!(bad(|h| h.version = 2), FormatError::NewerVersion { version: 2 }));
        assert!(matches!(bad(|h| h.version = 0), FormatError::UnsupportedVersion { .. }));
        assert!(matches!(bad(|h| h.flags = 0x10), FormatError::UnknownFlags { .. }));
        assert!(matches!(bad(|h| h.mapunit = 512), FormatError::BadMapunit { offset: 8, .. }));
        assert!(matches!(bad(|h| h.mapsize = 2048), FormatError::MapsizeMismatch { offset: 16, .. }));
        assert!(matches!(bad(|h| h.doffset = 1536), FormatError::BadDoffset { .. }));
        assert!(matches!(bad(|h| h.doffset = 4097), FormatError::BadDoffset { .. }));
        assert!(matches!(bad(|h| h.doffset = u64::MAX), FormatError::BadDoffset { .. }));
        assert!(matches!(bad(|h| h.rdoblocks = 0), FormatError::NoBlocks));
        assert!(matches!(bad(|h| h.rdoblocks = u64::MAX), FormatError::TooLarge { .. }));
        assert!(Header::parse(&[0x7f, 0x43, 0x4f, 0x57, 1, 0]).is_err());
        assert!(matches!(Header::parse(&[0u8; 64]), Err(FormatError::BadMagic { found: 0 })));
    }
}
