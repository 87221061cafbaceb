//! Version detection and header parsing.
//!
//! Detection goes by signature first and uses index-content heuristics only
//! where no signature exists (docs/formats.md, "Detection"; SliTaz's heuristics misdetect
//! real V4 images, so they never override a signature):
//!
//! 1. The 136-byte header at offset 0: byte 0x0b/0x0c `V4` is V4, `V2`/`V3`
//!    is V2 (the 3.14 driver reads any major ≥ 2 as V2), and any `V` header
//!    whose block count is 0xFFFFFFFF is SliTaz V3. FreeBSD's letters
//!    `v`, `L`, `l`, `Z`, `z` (with the `#!/bin/sh` prefix geom_uzip requires)
//!    are uzip images. A `#!/bin/sh` file without one of those signatures, or
//!    with `V0`/`V1`, is a legacy image classified by its index (V0.68, V1.0,
//!    Accelerated KNOPPIX, or an unsigned V2 table).
//! 2. The dplasa trailer `\nCLOOP3\n` in the last 8 bytes.
//! 3. The header in the last 136 bytes (V4 checked before V2, as the 4.x/5.x
//!    driver does).
//!
//! The block size is validated here, once, for every version.

use std::fmt;

use super::codec::Codec;
use super::error::Error;
use super::source::Source;

/// Size of `struct cloop_head`: 128-byte preamble, block size, block count.
pub const HEADER_LEN: u64 = 136;
/// Offset of the block size in the header (the block count follows it).
const BLOCK_SIZE_OFFSET: usize = 0x80;
/// Where Linux cloop puts `V` and FreeBSD its compressor letter.
const SIGNATURE_OFFSET: usize = 0x0b;
/// Every real preamble starts with this; FreeBSD and SliTaz test for it.
const SHEBANG: &[u8] = b"#!/bin/sh";
/// SliTaz V3: "the index is in the tail".
pub const SLITAZ_NUM_BLOCKS: u32 = 0xFFFF_FFFF;
/// dplasa CLOOP3 trailer magic, the last 8 bytes of the file.
const CLOOP3_MAGIC: &[u8; 8] = b"\nCLOOP3\n";
/// dplasa trailer: u64 index position, u32 file version, the magic.
const CLOOP3_TRAILER_LEN: u64 = 20;
/// dplasa index head: u32 blocks, u32 block size, u64 original size.
pub const CLOOP3_INDEX_HEAD_LEN: u64 = 16;

/// The largest block size we accept. No writer goes above 1 MiB (advfs and
/// cloop_util clamp there; the 4.x/5.x kernel breaks above it); QEMU allows
/// up to 64 MiB, and so do we, so that one decode buffer per thread stays
/// small however hostile the header.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;

/// The cloop dialect of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// 0.68: (n+1) u32 big-endian offsets.
    V0_68,
    /// 1.0/1.02: (n+1) u64 little-endian offsets.
    V1,
    /// "Accelerated KNOPPIX 1.0": n records {u64 offset, u32 size, u32 optidx}.
    AcceleratedKnoppix,
    /// 2.0: (n+1) u64 big-endian offsets, zlib blocks.
    V2,
    /// SliTaz "V3.0": compressed table of sizes in a tail, links, a short last block.
    V3SliTaz {
        /// Bytes per table entry: 4, or 8 for the "64-bit bug" writers.
        entry_size: u8,
        /// False for the 2011 layout (plain table, 8-byte tail).
        compressed_index: bool,
        /// The writer was interrupted and flushed a partial index.
        truncated: bool,
    },
    /// dplasa CLOOP3 (cloop 3.00-alpha): index and trailer at the end.
    Dplasa,
    /// Knopper 4.0: V2 table whose top nibble names the compressor.
    V4,
    /// FreeBSD geom_uzip; `dedup` images may reuse offsets.
    Uzip { codec: Codec, dedup: bool },
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::V0_68 => f.write_str("cloop V0.68"),
            Version::V1 => f.write_str("cloop V1.0"),
            Version::AcceleratedKnoppix => f.write_str("Accelerated KNOPPIX 1.0"),
            Version::V2 => f.write_str("cloop V2.0"),
            Version::V3SliTaz { .. } => f.write_str("SliTaz V3.0"),
            Version::Dplasa => f.write_str("dplasa CLOOP3"),
            Version::V4 => f.write_str("cloop V4.0"),
            Version::Uzip { codec, dedup: false } => write!(f, "FreeBSD uzip ({codec})"),
            Version::Uzip { codec, dedup: true } => write!(f, "FreeBSD uzip ({codec}, dedup)"),
        }
    }
}

/// How the entries of an offset table are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableEntry {
    /// u32 BE absolute offsets (0.68).
    U32Be,
    /// u64 LE absolute offsets (1.0 from x86 builds).
    U64Le,
    /// u64 BE absolute offsets (2.0, uzip).
    U64Be,
    /// u64 BE with the compressor in the top nibble (4.0).
    U64BeFlags,
}

impl TableEntry {
    pub(crate) fn size(self) -> u64 {
        match self {
            TableEntry::U32Be => 4,
            _ => 8,
        }
    }
}

/// Where the index is and how to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// (n+1) offsets at `index_offset`; block i spans entries i..i+1.
    Table {
        index_offset: u64,
        num_blocks: u64,
        entry: TableEntry,
        /// Codec of every block unless the entry says otherwise.
        codec: Codec,
        /// uzip dedup: offsets may repeat or point back to earlier blocks.
        dedup: bool,
    },
    /// n 16-byte records at `index_offset` (Accelerated KNOPPIX).
    Records { index_offset: u64, num_blocks: u64 },
    /// SliTaz V3: the tail at the end of the file says the rest.
    SliTazTail,
    /// dplasa: the index block at `index_offset`.
    Dplasa { index_offset: u64, num_blocks: u64, original_size: u64 },
}

/// What detection found; [`super::index`] reads the index from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Detected {
    pub version: Version,
    pub header_at_end: bool,
    pub block_size: u32,
    pub layout: Layout,
    /// Where the block size and the block count were read (for messages).
    pub block_size_at: u64,
    pub num_blocks_at: u64,
}

/// Every plausible reading of the file, most authoritative first: the
/// header at offset 0, the CLOOP3 trailer, the header at the end. The
/// caller takes the first one whose index loads; checking them in turn
/// (rather than trusting the first signature seen) keeps e.g. a dplasa
/// image of stored blocks that happens to start with a cloop header
/// readable. An empty list means no signature at all.
pub(crate) fn detect(src: &Source) -> Vec<Result<Detected, Error>> {
    let mut found = Vec::new();
    let file_len = src.len();
    let mut push = |r: Result<Option<Detected>, Error>| match r {
        Ok(Some(d)) => found.push(check_block_size(src, &d).map(|()| d)),
        Ok(None) => {}
        Err(e) => found.push(Err(e)),
    };
    if file_len >= HEADER_LEN {
        push(read_head(src, 0).and_then(|head| from_header_first(src, &head)));
    }
    push(from_cloop3_trailer(src));
    if file_len >= HEADER_LEN {
        push(read_head(src, file_len - HEADER_LEN).and_then(|head| from_header_last(src, &head)));
    }
    found
}

fn read_head(src: &Source, offset: u64) -> Result<[u8; HEADER_LEN as usize], Error> {
    let mut head = [0u8; HEADER_LEN as usize];
    src.read_exact_at(&mut head, offset, "header")?;
    Ok(head)
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4-byte slice"))
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"))
}

/// A detection from a 136-byte header at `at`.
fn from_header(version: Version, at: u64, block_size: u32, layout: Layout) -> Detected {
    let field = at + BLOCK_SIZE_OFFSET as u64;
    Detected {
        version,
        header_at_end: at > 0,
        block_size,
        layout,
        block_size_at: field,
        num_blocks_at: field + 4,
    }
}

const SLITAZ: Version = Version::V3SliTaz { entry_size: 4, compressed_index: true, truncated: false };

fn sizes(head: &[u8]) -> (u32, u32) {
    (be32(head, BLOCK_SIZE_OFFSET), be32(head, BLOCK_SIZE_OFFSET + 4))
}

fn from_header_first(src: &Source, head: &[u8]) -> Result<Option<Detected>, Error> {
    let (block_size, n) = sizes(head);
    let shebang = head.starts_with(SHEBANG);
    let table = |version, entry, codec, dedup| {
        let layout = Layout::Table { index_offset: HEADER_LEN, num_blocks: n.into(), entry, codec, dedup };
        from_header(version, 0, block_size, layout)
    };
    let uzip = |codec, dedup| table(Version::Uzip { codec, dedup }, TableEntry::U64Be, codec, dedup);
    Ok(Some(match (head[SIGNATURE_OFFSET], head[SIGNATURE_OFFSET + 1]) {
        (b'V', _) if n == SLITAZ_NUM_BLOCKS => from_header(SLITAZ, 0, block_size, Layout::SliTazTail),
        (b'V', b'4') => table(Version::V4, TableEntry::U64BeFlags, Codec::Zlib, false),
        (b'V', b'2' | b'3') => table(Version::V2, TableEntry::U64Be, Codec::Zlib, false),
        (b'v', _) if shebang => uzip(Codec::Zlib, true),
        (b'L', _) if shebang => uzip(Codec::Xz, false),
        (b'l', _) if shebang => uzip(Codec::Xz, true),
        (b'Z', _) if shebang => uzip(Codec::Zstd, false),
        (b'z', _) if shebang => uzip(Codec::Zstd, true),
        (b'V', b'0' | b'1') => return legacy(src, block_size, n).map(Some),
        _ if shebang && n == SLITAZ_NUM_BLOCKS => from_header(SLITAZ, 0, block_size, Layout::SliTazTail),
        _ if shebang => return legacy(src, block_size, n).map(Some),
        _ => return Ok(None),
    }))
}

/// Images without a usable signature: classify by the first index words,
/// in the order SliTaz's `build_index` uses (docs/formats.md, "Detection").
fn legacy(src: &Source, block_size: u32, n: u32) -> Result<Detected, Error> {
    let mut words = [0u8; 16];
    let avail = src.len().saturating_sub(HEADER_LEN).min(16) as usize;
    src.read_exact_at(&mut words[..avail], HEADER_LEN, "index")?;
    let w = |i: usize| be32(&words, i * 4);
    let num_blocks = u64::from(n);
    let table = |version, entry| {
        let codec = Codec::Zlib;
        let layout = Layout::Table { index_offset: HEADER_LEN, num_blocks, entry, codec, dedup: false };
        from_header(version, 0, block_size, layout)
    };
    Ok(if w(0) == 0 && w(2) != 0 && n > 0 {
        let layout = Layout::Records { index_offset: HEADER_LEN, num_blocks };
        from_header(Version::AcceleratedKnoppix, 0, block_size, layout)
    } else if w(0) == 0 {
        table(Version::V2, TableEntry::U64Be)
    } else if w(1) == 0 {
        table(Version::V1, TableEntry::U64Le)
    } else if u64::from(w(0)) == 4 * num_blocks + 0x8C {
        table(Version::V0_68, TableEntry::U32Be)
    } else {
        return Err(Error::BadIndex {
            path: src.path(),
            offset: HEADER_LEN,
            detail: format!(
                "no version signature, and the index (first word {:#x}) matches no known layout",
                w(0)
            ),
        });
    })
}

fn from_header_last(src: &Source, head: &[u8]) -> Result<Option<Detected>, Error> {
    let (block_size, n) = sizes(head);
    let entry = match (head[SIGNATURE_OFFSET], head[SIGNATURE_OFFSET + 1]) {
        (b'V', b'4') => TableEntry::U64BeFlags,
        (b'V', b'2') => TableEntry::U64Be,
        _ => return Ok(None),
    };
    let version = if entry == TableEntry::U64BeFlags { Version::V4 } else { Version::V2 };
    let file_len = src.len();
    let index_len = (u64::from(n) + 1) * 8;
    let index_offset = file_len.checked_sub(HEADER_LEN + index_len).ok_or(Error::Truncated {
        path: src.path(),
        what: "index before the trailing header",
        offset: 0,
        len: HEADER_LEN + index_len,
        file_len,
    })?;
    let layout =
        Layout::Table { index_offset, num_blocks: n.into(), entry, codec: Codec::Zlib, dedup: false };
    Ok(Some(from_header(version, file_len - HEADER_LEN, block_size, layout)))
}

fn from_cloop3_trailer(src: &Source) -> Result<Option<Detected>, Error> {
    let file_len = src.len();
    if file_len < CLOOP3_MAGIC.len() as u64 {
        return Ok(None);
    }
    let mut magic = [0u8; 8];
    src.read_exact_at(&mut magic, file_len - 8, "trailer")?;
    if &magic != CLOOP3_MAGIC {
        return Ok(None);
    }
    let trailer_at = file_len.checked_sub(CLOOP3_TRAILER_LEN).ok_or(Error::Truncated {
        path: src.path(),
        what: "CLOOP3 trailer",
        offset: 0,
        len: CLOOP3_TRAILER_LEN,
        file_len,
    })?;
    let mut trailer = [0u8; CLOOP3_TRAILER_LEN as usize];
    src.read_exact_at(&mut trailer, trailer_at, "CLOOP3 trailer")?;
    let index_offset = be64(&trailer, 0);
    let file_version = be32(&trailer, 8);
    if file_version != 3 {
        return Err(Error::BadIndex {
            path: src.path(),
            offset: trailer_at,
            detail: format!("CLOOP3 trailer names file version {file_version}, expected 3"),
        });
    }
    let head_end = index_offset.checked_add(CLOOP3_INDEX_HEAD_LEN).filter(|&end| end <= trailer_at);
    if head_end.is_none() {
        return Err(Error::IndexPastEof {
            path: src.path(),
            index_offset,
            index_len: CLOOP3_INDEX_HEAD_LEN,
            file_len: trailer_at,
        });
    }
    let mut head = [0u8; CLOOP3_INDEX_HEAD_LEN as usize];
    src.read_exact_at(&mut head, index_offset, "CLOOP3 index")?;
    Ok(Some(Detected {
        version: Version::Dplasa,
        header_at_end: true,
        block_size: be32(&head, 4),
        layout: Layout::Dplasa {
            index_offset,
            num_blocks: be32(&head, 0).into(),
            original_size: be64(&head, 8),
        },
        block_size_at: index_offset + 4,
        num_blocks_at: index_offset,
    }))
}

fn check_block_size(src: &Source, d: &Detected) -> Result<(), Error> {
    let block_size = d.block_size;
    let problem = if block_size == 0 {
        "zero"
    } else if block_size % 512 != 0 {
        "not a multiple of 512"
    } else if block_size > MAX_BLOCK_SIZE {
        "larger than the 64 MiB limit"
    } else {
        return Ok(());
    };
    Err(Error::BlockSize {
        path: src.path(),
        offset: d.block_size_at,
        block_size: block_size.into(),
        problem,
    })
}
