//! Index tables of every cloop version, turned into one in-memory form.
//!
//! Each version stores "where is block i and how is it compressed"
//! differently (docs/formats.md): (n+1) absolute offsets of 4 or 8 bytes in
//! either byte order (0.68, 1.0, 2.0, uzip), the same with a compressor
//! nibble and links (4.0), 16-byte records (Accelerated KNOPPIX), a
//! zlib-compressed table of sizes with flags and links in a tail (SliTaz
//! V3), or offsets plus a flag table near the end (dplasa). All of them
//! become one [`Entry`] per block: file offset, compressed length and codec,
//! or a link to an earlier block.
//!
//! Invariants established here, so that reading never re-checks them:
//! * every data block lies inside the file (or its data area) and is no
//!   larger than [`max_compressed_len`] allows for its codec;
//! * every link points to a strictly earlier block that is not itself a link
//!   (chains are collapsed to their root), so reading follows at most one
//!   link and can never loop;
//! * the number of blocks is at most [`MAX_BLOCKS`], and every table was
//!   checked against the file length *before* anything was allocated for it.

use super::codec::Codec;
use super::detect::{Detected, Layout, TableEntry, Version, CLOOP3_INDEX_HEAD_LEN, HEADER_LEN};
use super::error::Error;
use super::source::Source;

/// The most blocks an image may have: 32 Mi blocks, i.e. 2 TiB at the
/// usual 64 KiB block size (128 GiB at 4 KiB). It bounds the in-memory
/// index (16 bytes per block, 512 MiB at most) for formats whose table is
/// compressed and could otherwise claim billions of blocks in a few bytes.
pub const MAX_BLOCKS: u64 = 1 << 25;

/// Worst-case deflate expansion (about 1032:1), used to reject a SliTaz
/// compressed table that claims more entries than it can possibly hold
/// before allocating room for them.
const MAX_INFLATE_RATIO: u64 = 1032;

/// Bytes of table read per `pread` while parsing.
const TABLE_CHUNK: usize = 1 << 20;

/// The most bytes a block that decodes to `out` bytes may take with
/// `codec` (`None`: an unknown codec). Each bound is the codec's documented
/// worst case rounded up generously, so any real writer fits:
///
/// | codec | worst case (library) | our bound |
/// |---|---|---|
/// | stored | exactly the block | `out` |
/// | zlib | `compressBound`: n + n/4096 + n/16384 + 13; advfs allows n + n/1000 + 12 | n + n/1000 + 64 |
/// | lz4 | `LZ4_compressBound`: n + n/255 + 16 | n + n/255 + 64 |
/// | lzo1x | n + n/16 + 67 | n + n/16 + 128 |
/// | xz | n + 3 per 64 KiB chunk + headers and check (≤ 1.1 KiB) | n + n/1000 + 2048 |
/// | zstd | `ZSTD_compressBound`: n + n/256 + 64, + frame header | n + n/256 + 1024 |
/// | unknown | | n + n/16 + 4096 |
pub fn max_compressed_len(codec: Option<Codec>, out: u64) -> u64 {
    match codec {
        Some(Codec::Stored) => out,
        Some(Codec::Zlib) => out + out / 1000 + 64,
        Some(Codec::Lz4) => out + out / 255 + 64,
        Some(Codec::Lzo) => out + out / 16 + 128,
        Some(Codec::Xz) => out + out / 1000 + 2048,
        Some(Codec::Zstd) => out + out / 256 + 1024,
        None => out + out / 16 + 4096,
    }
}

/// What a block is, as the index says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Compressed (or stored) data in the file.
    Data(Codec),
    /// Data with a compressor id no writer defines; an error when read.
    Unknown(u32),
    /// Same content as this earlier block (never itself a link).
    Link(u64),
}

/// One block of the index in 16 bytes: `pos` is the file offset, or the
/// target block of a link; `tag` is a V4 codec id, [`TAG_LINK`], or an
/// unknown id with [`TAG_UNKNOWN`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pos: u64,
    len: u32,
    tag: u32,
}

const TAG_LINK: u32 = u32::MAX;
const TAG_UNKNOWN: u32 = 0x8000_0000;

impl Entry {
    fn data(codec: Codec, offset: u64) -> Entry {
        Entry { pos: offset, len: 0, tag: codec.v4_id().into() }
    }
    fn unknown(id: u32, offset: u64) -> Entry {
        // Clamped so that no unknown id can collide with TAG_LINK.
        Entry { pos: offset, len: 0, tag: TAG_UNKNOWN | id.min(TAG_UNKNOWN - 2) }
    }
    fn link(target: u64) -> Entry {
        Entry { pos: target, len: 0, tag: TAG_LINK }
    }
    fn tagged(tag: Option<Codec>, id: u32, offset: u64) -> Entry {
        match tag {
            Some(codec) => Entry::data(codec, offset),
            None => Entry::unknown(id, offset),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        if self.tag == TAG_LINK {
            Kind::Link(self.pos)
        } else if self.tag & TAG_UNKNOWN != 0 {
            Kind::Unknown(self.tag & !TAG_UNKNOWN)
        } else {
            Kind::Data(Codec::from_v4_id(self.tag as u8).expect("tags of data entries are valid codec ids"))
        }
    }
    fn is_link(&self) -> bool {
        self.tag == TAG_LINK
    }
    fn codec(&self) -> Option<Codec> {
        match self.kind() {
            Kind::Data(codec) => Some(codec),
            _ => None,
        }
    }
    /// File offset of the data (meaningless for links).
    pub(crate) fn offset(&self) -> u64 {
        self.pos
    }
    /// Compressed length (0 for links; 0 for a data block means all zeros).
    pub(crate) fn len(&self) -> u32 {
        self.len
    }
}

/// The loaded index of one image.
pub(crate) struct Index {
    pub version: Version,
    pub entries: Vec<Entry>,
    /// Bytes the last block decodes to: the block size, except for SliTaz V3.
    pub last_len: u32,
    /// Exact uncompressed length of the image.
    pub size: u64,
    /// Where the on-disk index (or table) is, and its length.
    pub index_offset: u64,
    pub index_len: u64,
}

/// Reads and validates the index described by `det`.
pub(crate) fn load(src: &Source, det: &Detected) -> Result<Index, Error> {
    let bs = det.block_size;
    match det.layout {
        Layout::Table { index_offset, num_blocks, entry, codec, dedup } => {
            let table =
                TableSpec { index_offset, num_blocks, entry, codec, dedup, count_at: det.num_blocks_at };
            let index = load_table(src, bs, &table)?;
            Ok(full_blocks(det.version, index, num_blocks, bs, index_offset, (num_blocks + 1) * entry.size()))
        }
        Layout::Records { index_offset, num_blocks } => {
            check_count(src, num_blocks, det.num_blocks_at)?;
            let entries = load_records(src, bs, index_offset, num_blocks)?;
            Ok(full_blocks(det.version, entries, num_blocks, bs, index_offset, num_blocks * 16))
        }
        Layout::SliTazTail => load_slitaz(src, bs),
        Layout::Dplasa { index_offset, num_blocks, original_size } => {
            load_dplasa(src, bs, index_offset, num_blocks, original_size)
        }
    }
}

fn full_blocks(version: Version, entries: Vec<Entry>, n: u64, bs: u32, offset: u64, len: u64) -> Index {
    Index { version, entries, last_len: bs, size: n * u64::from(bs), index_offset: offset, index_len: len }
}

/// `at`: where the count was read, for the message.
fn check_count(src: &Source, num_blocks: u64, at: u64) -> Result<(), Error> {
    if num_blocks > MAX_BLOCKS {
        return Err(Error::TooManyBlocks { path: src.path(), offset: at, num_blocks, max: MAX_BLOCKS });
    }
    Ok(())
}

/// `[offset, offset+len)` must end at or before `limit`.
fn check_fits(src: &Source, offset: u64, len: u64, limit: u64) -> Result<(), Error> {
    match offset.checked_add(len) {
        Some(end) if end <= limit => Ok(()),
        _ => Err(Error::IndexPastEof {
            path: src.path(),
            index_offset: offset,
            index_len: len,
            file_len: limit,
        }),
    }
}

/// Calls `f(i, bytes)` for `count` entries of `width` bytes at `offset`,
/// reading a bounded chunk at a time. The caller has checked the range.
fn for_each_entry(
    src: &Source,
    offset: u64,
    count: u64,
    width: usize,
    what: &'static str,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let per_chunk = (TABLE_CHUNK / width) as u64;
    let mut buf = vec![0u8; (count.min(per_chunk) as usize) * width];
    let mut i = 0;
    while i < count {
        let k = (count - i).min(per_chunk);
        let bytes = &mut buf[..k as usize * width];
        src.read_exact_at(bytes, offset + i * width as u64, what)?;
        for (j, e) in bytes.chunks_exact(width).enumerate() {
            f(i + j as u64, e)?;
        }
        i += k;
    }
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4-byte entry"))
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8-byte entry"))
}

/// V4 splits each entry into a 4-bit compressor and a 60-bit offset.
const V4_OFFSET_MASK: u64 = (1 << 60) - 1;
/// SliTaz's V4 nibble for "same as the block numbered by the offset field".
const V4_LINK: u64 = 15;

struct TableSpec {
    index_offset: u64,
    num_blocks: u64,
    entry: TableEntry,
    codec: Codec,
    dedup: bool,
    count_at: u64,
}

/// 0.68, 1.0, 2.0, 4.0 and uzip: (n+1) offsets, block i ends where the
/// next data block starts.
fn load_table(src: &Source, bs: u32, t: &TableSpec) -> Result<Vec<Entry>, Error> {
    let n = t.num_blocks;
    let width = t.entry.size();
    check_fits(src, t.index_offset, (n + 1) * width, src.len())?;
    check_count(src, n, t.count_at)?;
    let mut entries = Vec::with_capacity(n as usize);
    let mut last = 0;
    for_each_entry(src, t.index_offset, n + 1, width as usize, "index", |i, b| {
        let raw = match t.entry {
            TableEntry::U32Be => be32(b).into(),
            TableEntry::U64Le => u64::from_le_bytes(b.try_into().expect("8-byte entry")),
            TableEntry::U64Be | TableEntry::U64BeFlags => be64(b),
        };
        if i == n {
            last = if t.entry == TableEntry::U64BeFlags { raw & V4_OFFSET_MASK } else { raw };
            return Ok(());
        }
        entries.push(if t.entry == TableEntry::U64BeFlags {
            let (id, offset) = (raw >> 60, raw & V4_OFFSET_MASK);
            if id == V4_LINK {
                link(src, &entries, i, offset)?
            } else {
                Entry::tagged(Codec::from_v4_id(id as u8), id as u32, offset)
            }
        } else {
            Entry::data(t.codec, raw)
        });
        Ok(())
    })?;
    if t.dedup {
        resolve_dedup(src, bs, &mut entries, last)?;
    } else {
        fill_lengths(src, bs, &mut entries, last)?;
    }
    Ok(entries)
}

/// A link from block `i` to `target`, collapsed to the chain's root.
fn link(src: &Source, entries: &[Entry], i: u64, target: u64) -> Result<Entry, Error> {
    match entries.get(target as usize) {
        Some(e) if target < i && e.is_link() => Ok(*e),
        Some(_) if target < i => Ok(Entry::link(target)),
        _ => Err(Error::BadLink { path: src.path(), block: i, target }),
    }
}

/// Sets each data block's length from the start of the next data block
/// (links occupy no bytes), checking order, the end of file and the caps.
fn fill_lengths(src: &Source, bs: u32, entries: &mut [Entry], last: u64) -> Result<(), Error> {
    let file_len = src.len();
    if let Some((i, e)) = entries.iter().enumerate().rev().find(|(_, e)| !e.is_link()) {
        if last > file_len {
            return Err(past_eof(src, i as u64, e.pos, last, file_len));
        }
    } else if last > file_len {
        return Err(Error::BlockPastEof {
            path: src.path(),
            block: 0,
            offset: last,
            end: last,
            limit: file_len,
        });
    }
    let mut end = last;
    let mut first_error = None;
    for (i, e) in entries.iter_mut().enumerate().rev() {
        if e.is_link() {
            continue;
        }
        let start = e.pos;
        if start > end {
            first_error = Some(Error::OffsetsNotMonotonic {
                path: src.path(),
                block: i as u64,
                prev: start,
                next: end,
            });
        } else {
            let len = end - start;
            let max = max_compressed_len(e.codec(), bs.into());
            if end > file_len {
                first_error = Some(past_eof(src, i as u64, start, end, file_len));
            } else if len > max {
                first_error = Some(too_large(src, i as u64, start, len, max, e.codec()));
            }
            e.len = len.min(u32::MAX.into()) as u32;
        }
        end = start;
    }
    first_error.map_or(Ok(()), Err)
}

fn past_eof(src: &Source, block: u64, offset: u64, end: u64, limit: u64) -> Error {
    Error::BlockPastEof { path: src.path(), block, offset, end, limit }
}

fn too_large(src: &Source, block: u64, offset: u64, len: u64, max: u64, codec: Option<Codec>) -> Error {
    Error::BlockTooLarge { path: src.path(), block, offset, len, max, codec }
}

/// FreeBSD dedup images (lower-case signature): an offset below the end of
/// the data seen so far refers back to the earlier block stored there; a
/// forward block ends where the next forward entry starts. This follows
/// geom_uzip's `g_uzip_parse_toc`, in linear time.
fn resolve_dedup(src: &Source, bs: u32, entries: &mut [Entry], last: u64) -> Result<(), Error> {
    let n = entries.len();
    let file_len = src.len();
    let mut first_at = std::collections::HashMap::new();
    let mut frontier = entries.first().map_or(0, |e| e.pos);
    let mut i = 0;
    while i < n {
        let start = entries[i].pos;
        if start < frontier {
            let Some(&target) = first_at.get(&start) else {
                return Err(Error::BadIndex {
                    path: src.path(),
                    offset: start,
                    detail: format!("block {i} refers back to offset {start}, where no earlier block starts"),
                });
            };
            entries[i] = Entry::link(target);
            i += 1;
            continue;
        }
        let next = (i + 1..n).find(|&j| entries[j].pos >= frontier);
        let end = next.map_or(last, |j| entries[j].pos);
        if end < start {
            return Err(Error::OffsetsNotMonotonic {
                path: src.path(),
                block: i as u64,
                prev: start,
                next: end,
            });
        }
        if end > file_len {
            return Err(past_eof(src, i as u64, start, end, file_len));
        }
        let len = end - start;
        let codec = entries[i].codec();
        let max = max_compressed_len(codec, bs.into());
        if len > max {
            return Err(too_large(src, i as u64, start, len, max, codec));
        }
        entries[i].len = len as u32;
        if len > 0 {
            first_at.entry(start).or_insert(i as u64);
        }
        frontier = end;
        // Everything between i and next is a back-reference; the loop
        // handles those one by one without rescanning.
        i += 1;
    }
    Ok(())
}

/// Accelerated KNOPPIX: n records {u64 BE offset, u32 BE size, u32 optidx}.
fn load_records(src: &Source, bs: u32, index_offset: u64, n: u64) -> Result<Vec<Entry>, Error> {
    let file_len = src.len();
    check_fits(src, index_offset, n * 16, file_len)?;
    let mut entries = Vec::with_capacity(n as usize);
    let max = max_compressed_len(Some(Codec::Zlib), bs.into());
    for_each_entry(src, index_offset, n, 16, "index", |i, b| {
        let (offset, len) = (be64(b), u64::from(be32(&b[8..])));
        let end = offset.saturating_add(len);
        if end > file_len {
            return Err(past_eof(src, i, offset, end, file_len));
        }
        if len > max {
            return Err(too_large(src, i, offset, len, max, Some(Codec::Zlib)));
        }
        entries.push(Entry { len: len as u32, ..Entry::data(Codec::Zlib, offset) });
        Ok(())
    })?;
    Ok(entries)
}

/// SliTaz V3 tail: u32 BE table_size, index_size, num_blocks (docs/formats.md, "V3").
const SLITAZ_TAIL_LEN: u64 = 12;
/// The 2011 tail: u32 BE index_size (= entry size), num_blocks.
const SLITAZ_OLD_TAIL_LEN: u64 = 8;
/// A table entry meaning "stored, exactly block_size bytes".
const SLITAZ_STORED: u32 = 0xFFFF_FFFF;

/// Turns SliTaz table entries into [`Entry`]s. Entries are u32 BE (the
/// first half of an 8-byte entry): top 4 bits flags, low 28 bits size; the
/// data of non-link blocks follows the header back to back.
struct SliTazBuilder<'a> {
    src: &'a Source,
    bs: u32,
    n: u64,
    /// The interim format's global compressor (index_size bits 4-6).
    global: u32,
    last_len: u32,
    data_end: u64,
    pos: u64,
    entries: Vec<Entry>,
}

impl<'a> SliTazBuilder<'a> {
    fn new(src: &'a Source, bs: u32, n: u64, global: u32, last_len: u32, data_end: u64) -> Self {
        // Grows with what the table really holds, not with what the tail claims.
        let entries = Vec::with_capacity(n.min(1 << 16) as usize);
        SliTazBuilder { src, bs, n, global, last_len, data_end, pos: HEADER_LEN, entries }
    }

    fn push(&mut self, e: u32) -> Result<(), Error> {
        let (src, i) = (self.src, self.entries.len() as u64);
        let (flags, size) = if e == SLITAZ_STORED { (1, self.bs) } else { (e >> 28, e & 0x0FFF_FFFF) };
        if flags >= 8 {
            let entry = link(src, &self.entries, i, size.into())?;
            self.entries.push(entry);
            return Ok(());
        }
        let id = if flags == 0 && self.global != 0 { self.global } else { flags };
        let mut entry = Entry::tagged(Codec::from_v4_id(id as u8), id, self.pos);
        let out = if i + 1 == self.n { self.last_len } else { self.bs };
        let max = max_compressed_len(entry.codec(), out.into());
        if u64::from(size) > max {
            return Err(too_large(src, i, self.pos, size.into(), max, entry.codec()));
        }
        let end = self.pos + u64::from(size);
        if end > self.data_end {
            return Err(past_eof(src, i, self.pos, end, self.data_end));
        }
        entry.len = size;
        self.entries.push(entry);
        self.pos = end;
        Ok(())
    }

    fn finish(self, version: Version, at: u64, len: u64) -> Index {
        let n = self.entries.len() as u64;
        let bs = u64::from(self.bs);
        let size = if n == 0 { 0 } else { (n - 1) * bs + u64::from(self.last_len) };
        Index {
            version,
            entries: self.entries,
            last_len: self.last_len,
            size,
            index_offset: at,
            index_len: len,
        }
    }
}

fn load_slitaz(src: &Source, bs: u32) -> Result<Index, Error> {
    let file_len = src.len();
    let min_len = HEADER_LEN + SLITAZ_OLD_TAIL_LEN;
    if file_len < min_len {
        return Err(Error::Truncated {
            path: src.path(),
            what: "SliTaz tail",
            offset: HEADER_LEN,
            len: 8,
            file_len,
        });
    }
    let mut tail = [0u8; 12];
    let tail_len = if file_len >= HEADER_LEN + SLITAZ_TAIL_LEN { 12 } else { 8 };
    src.read_exact_at(&mut tail[12 - tail_len..], file_len - tail_len as u64, "SliTaz tail")?;
    let (index_size, n) = (be32(&tail[4..]), u64::from(be32(&tail[8..])));
    let modern = if tail_len == 12 {
        load_slitaz_compressed(src, bs, be32(&tail), index_size, n)
    } else {
        Err(Error::Truncated { path: src.path(), what: "SliTaz tail", offset: HEADER_LEN, len: 12, file_len })
    };
    match modern {
        Err(e) if index_size == 4 || index_size == 8 => {
            load_slitaz_plain(src, bs, index_size, n).map_err(|_| e)
        }
        other => other,
    }
}

fn load_slitaz_compressed(
    src: &Source,
    bs: u32,
    table_size: u32,
    index_size: u32,
    n: u64,
) -> Result<Index, Error> {
    let file_len = src.len();
    let tail_at = file_len - SLITAZ_TAIL_LEN;
    let entry_size = index_size & 0xF;
    let bad = |detail: String| Error::BadIndex { path: src.path(), offset: tail_at, detail };
    if entry_size != 4 && entry_size != 8 {
        return Err(bad(format!("SliTaz tail: index entry size {entry_size}, expected 4 or 8")));
    }
    let table_size = u64::from(table_size);
    let table_at =
        tail_at.checked_sub(table_size).filter(|&at| at >= HEADER_LEN).ok_or(Error::IndexPastEof {
            path: src.path(),
            index_offset: tail_at.saturating_sub(table_size),
            index_len: table_size,
            file_len: tail_at,
        })?;
    check_count(src, n, file_len - 4)?;
    if n * u64::from(entry_size) > table_size * MAX_INFLATE_RATIO + 64 {
        return Err(bad(format!("a compressed table of {table_size} bytes cannot hold {n} entries")));
    }
    let last_len = match index_size >> 8 {
        0 => bs,
        len if len <= bs => len,
        len => return Err(bad(format!("last block length {len} is larger than the block size {bs}"))),
    };
    let mut packed = vec![0u8; table_size as usize];
    src.read_exact_at(&mut packed, table_at, "SliTaz index")?;
    let mut builder = SliTazBuilder::new(src, bs, n, (index_size >> 4) & 7, last_len, table_at);
    inflate_entries(src, table_at, &packed, entry_size as usize, n, |e| builder.push(e))?;
    let version = Version::V3SliTaz {
        entry_size: entry_size as u8,
        compressed_index: true,
        truncated: index_size & 0x80 != 0,
    };
    Ok(builder.finish(version, table_at, table_size))
}

/// Inflates the zlib table `packed` a bounded chunk at a time and calls `f`
/// with the first u32 BE of each of its `n` entries; the stream must hold
/// exactly `n × entry_size` bytes and end with a valid checksum.
fn inflate_entries(
    src: &Source,
    at: u64,
    packed: &[u8],
    entry_size: usize,
    n: u64,
    mut f: impl FnMut(u32) -> Result<(), Error>,
) -> Result<(), Error> {
    use flate2::{FlushDecompress, Status};
    let want = n * entry_size as u64;
    let bad = |detail: String| Error::BadIndex {
        path: src.path(),
        offset: at,
        detail: format!("compressed SliTaz index: {detail}"),
    };
    let mut z = flate2::Decompress::new(true);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut have, mut produced) = (0usize, 0u64);
    loop {
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let input = packed.get(in_before as usize..).unwrap_or_default();
        let status =
            z.decompress(input, &mut buf[have..], FlushDecompress::Finish).map_err(|e| bad(e.to_string()))?;
        have += (z.total_out() - out_before) as usize;
        let complete = have / entry_size * entry_size;
        for chunk in buf[..complete].chunks_exact(entry_size) {
            if produced == n {
                return Err(bad(format!("decodes to more than the {want} bytes of {n} entries")));
            }
            f(be32(chunk))?;
            produced += 1;
        }
        buf.copy_within(complete..have, 0);
        have -= complete;
        match status {
            Status::StreamEnd => break,
            _ if z.total_in() == in_before && z.total_out() == out_before => {
                return Err(bad(format!("stream is truncated after {} entries", produced)));
            }
            _ => {}
        }
    }
    if produced != n || have != 0 {
        let got = produced * entry_size as u64 + have as u64;
        return Err(bad(format!("decodes to {got} bytes, expected {want} ({n} entries)")));
    }
    Ok(())
}

/// The 2011 layout: a plain table of n entries right before an 8-byte tail.
fn load_slitaz_plain(src: &Source, bs: u32, entry_size: u32, n: u64) -> Result<Index, Error> {
    let tail_at = src.len() - SLITAZ_OLD_TAIL_LEN;
    check_count(src, n, src.len() - 4)?;
    let table_len = n * u64::from(entry_size);
    let table_at =
        tail_at.checked_sub(table_len).filter(|&at| at >= HEADER_LEN).ok_or(Error::IndexPastEof {
            path: src.path(),
            index_offset: tail_at.saturating_sub(table_len),
            index_len: table_len,
            file_len: tail_at,
        })?;
    let mut builder = SliTazBuilder::new(src, bs, n, 0, bs, table_at);
    for_each_entry(src, table_at, n, entry_size as usize, "SliTaz index", |_, b| builder.push(be32(b)))?;
    let version =
        Version::V3SliTaz { entry_size: entry_size as u8, compressed_index: false, truncated: false };
    Ok(builder.finish(version, table_at, table_len))
}

/// dplasa's flag bits (the `#define`s the tool really writes; docs/formats.md, "CLOOP3").
fn dplasa_codec(flags: u32) -> Option<Codec> {
    Some(match flags {
        0x00 => Codec::Stored,
        0x02 => Codec::Zlib,
        0x04 => Codec::Lzo,
        0x08 => Codec::Xz,
        0x10 => Codec::Lz4,
        _ => return None,
    })
}

/// dplasa: at X, u32 n, u32 block size, u64 original size, (n+1) u64
/// offsets, n u32 flags; then the 20-byte trailer.
fn load_dplasa(src: &Source, bs: u32, at: u64, n: u64, original_size: u64) -> Result<Index, Error> {
    let limit = src.len() - 20;
    let offsets_at = at + CLOOP3_INDEX_HEAD_LEN;
    let flags_at = offsets_at + (n + 1) * 8;
    let index_len = CLOOP3_INDEX_HEAD_LEN + (n + 1) * 8 + n * 4;
    check_fits(src, at, index_len, limit)?;
    check_count(src, n, at)?;
    let bs64 = u64::from(bs);
    let fits =
        if n == 0 { original_size == 0 } else { original_size > (n - 1) * bs64 && original_size <= n * bs64 };
    if !fits {
        return Err(Error::BadIndex {
            path: src.path(),
            offset: at,
            detail: format!("original size {original_size} does not fit {n} blocks of {bs} bytes"),
        });
    }
    let mut entries = Vec::with_capacity(n as usize);
    let mut last = 0;
    for_each_entry(src, offsets_at, n + 1, 8, "CLOOP3 index", |i, b| {
        if i < n {
            entries.push(Entry::data(Codec::Zlib, be64(b)));
        } else {
            last = be64(b);
        }
        Ok(())
    })?;
    for_each_entry(src, flags_at, n, 4, "CLOOP3 flags", |i, b| {
        let e = &mut entries[i as usize];
        let flags = be32(b);
        *e = Entry::tagged(dplasa_codec(flags), flags, e.pos);
        Ok(())
    })?;
    if last > at {
        let block = n.saturating_sub(1);
        let offset = entries.last().map_or(last, |e| e.pos);
        return Err(past_eof(src, block, offset, last, at));
    }
    fill_lengths(src, bs, &mut entries, last)?;
    Ok(Index {
        version: Version::Dplasa,
        entries,
        last_len: bs,
        size: original_size,
        index_offset: at,
        index_len,
    })
}
