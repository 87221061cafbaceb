//! The cloop image reader: every version, as a [`ReadAt`] device.
//!
//! [`Image::open`] detects the version ([`super::detect`]), loads and
//! validates the whole index ([`super::index`]) and then only ever reads
//! with `pread`, so one `Image` serves any number of threads at once: there
//! is no shared file position and no lock around decompression. Decoder
//! state comes from the caller ([`Image::read_block`]) or, for
//! [`ReadAt::read_at`], from a small pool of slots (decoder plus one block
//! buffer). A slot remembers the block it last decoded, so a run of small
//! reads inside one block decodes it once.
//!
//! Device size: `num_blocks × block_size`, or the exact original length
//! where the format records one (SliTaz V3 `lastlen`, dplasa
//! `original_size`).
//!
//! A data block with zero compressed bytes reads as zeros: FreeBSD mkuzip
//! writes all-zero blocks that way.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::codec::{Codec, Decoder};
pub use super::detect::{Version, HEADER_LEN, MAX_BLOCK_SIZE};
use super::error::{Error, ImagePath};
use super::index::{self, Entry};
pub use super::index::{max_compressed_len, Kind, MAX_BLOCKS};
use super::source::Source;
use crate::blockdev::{check_range, FileDev, ReadAt};

/// Slots kept for `read_at` (each holds one decoded block).
const MAX_POOLED_SLOTS: usize = 16;

/// What the header and index say about an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub version: Version,
    /// The header (or, for dplasa, the index) sits at the end of the file.
    pub header_at_end: bool,
    pub block_size: u32,
    pub num_blocks: u64,
    /// Exact uncompressed length.
    pub size: u64,
    pub file_len: u64,
    /// Where the on-disk index (the compressed table for SliTaz) starts.
    pub index_offset: u64,
    pub index_len: u64,
    /// Bytes the last block decodes to (block_size except for SliTaz V3).
    pub last_block_len: u32,
}

/// One block as the index describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    pub kind: Kind,
    /// File offset of the data; for a link, of the linked block's data.
    pub offset: u64,
    /// Bytes the block occupies in the file (0 for a link).
    pub compressed_len: u32,
    /// Bytes it decodes to.
    pub uncompressed_len: u32,
}

// Per-thread buffer for compressed bytes, reused across blocks.
thread_local! {
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct Slot {
    decoder: Decoder,
    buf: Vec<u8>,
    /// The block `buf[..valid]` holds.
    holds: Option<(u64, usize)>,
}

/// An open cloop image of any version.
pub struct Image {
    src: Source,
    info: ImageInfo,
    entries: Vec<Entry>,
    slots: Mutex<Vec<Slot>>,
}

impl Image {
    pub fn open(path: &Path) -> Result<Image, Error> {
        let file = File::open(path).map_err(|source| Error::Open { path: Arc::from(path), source })?;
        Image::from_file(file, path)
    }

    /// Reads the image from an open file (or block device); `path` is used
    /// in messages only.
    pub fn from_file(file: File, path: &Path) -> Result<Image, Error> {
        // FileDev seeks to the end: that gives the size of block devices
        // too (metadata says 0).
        let dev = FileDev::from_file(file).map_err(|source| Error::Open { path: Arc::from(path), source })?;
        Image::from_reader(Arc::new(dev), path)
    }

    /// Reads the image from any device (a remote file, a file inside an
    /// ISO); `path` names it in messages.
    pub fn from_reader(dev: Arc<dyn ReadAt>, path: &Path) -> Result<Image, Error> {
        let path: ImagePath = Arc::from(path);
        let len = dev.size();
        let src = Source::new(dev, path, len);
        let mut first_error = None;
        for candidate in super::detect::detect(&src) {
            let loaded = candidate.and_then(|det| Ok((det, index::load(&src, &det)?)));
            match loaded {
                Ok((det, index)) => return Ok(Image::new(src, &det, index)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::NotCloop { path: src.path(), file_len: len }))
    }

    fn new(src: Source, det: &super::detect::Detected, index: index::Index) -> Image {
        let info = ImageInfo {
            version: index.version,
            header_at_end: det.header_at_end,
            block_size: det.block_size,
            num_blocks: index.entries.len() as u64,
            size: index.size,
            file_len: src.len(),
            index_offset: index.index_offset,
            index_len: index.index_len,
            last_block_len: index.last_len,
        };
        Image { src, info, entries: index.entries, slots: Mutex::new(Vec::new()) }
    }

    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        self.src.name()
    }

    /// Bytes block `index` decodes to (0 for a block that does not exist).
    pub fn block_len(&self, index: u64) -> usize {
        let n = self.info.num_blocks;
        if index >= n {
            0
        } else if index + 1 == n {
            self.info.last_block_len as usize
        } else {
            self.info.block_size as usize
        }
    }

    /// How block `index` is stored; `None` past the last block.
    pub fn block_codec(&self, index: u64) -> Option<Kind> {
        self.entries.get(usize::try_from(index).ok()?).map(Entry::kind)
    }

    /// Everything the index says about block `index`.
    pub fn block_info(&self, index: u64) -> Option<BlockInfo> {
        let entry = *self.entries.get(usize::try_from(index).ok()?)?;
        let data = match entry.kind() {
            Kind::Link(root) => self.entries[root as usize],
            _ => entry,
        };
        Some(BlockInfo {
            kind: entry.kind(),
            offset: data.offset(),
            compressed_len: entry.len(),
            uncompressed_len: self.block_len(index) as u32,
        })
    }

    /// Decodes block `index` into `out[..valid_len]` and returns
    /// `valid_len`: the block size, or less for a SliTaz V3 last block.
    /// `out` must hold at least `block_size` bytes.
    pub fn read_block(&self, index: u64, decoder: &mut Decoder, out: &mut [u8]) -> Result<usize, Error> {
        let Some(&entry) = usize::try_from(index).ok().and_then(|i| self.entries.get(i)) else {
            return Err(Error::BlockOutOfRange {
                path: self.src.path(),
                block: index,
                num_blocks: self.info.num_blocks,
            });
        };
        let valid = self.block_len(index);
        let (root, data) = match entry.kind() {
            Kind::Link(root) => (root, self.entries[root as usize]),
            _ => (index, entry),
        };
        // A link's root is an earlier block, so it decodes to a full block
        // even when the link is a short last block.
        let root_len = self.block_len(root);
        if out.len() < root_len {
            return Err(Error::Io {
                path: self.src.path(),
                offset: data.offset(),
                len: root_len as u64,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("output buffer of {} bytes is smaller than the block", out.len()),
                ),
            });
        }
        self.decode(index, data, decoder, &mut out[..root_len])?;
        Ok(valid)
    }

    fn decode(&self, index: u64, data: Entry, decoder: &mut Decoder, out: &mut [u8]) -> Result<(), Error> {
        let offset = data.offset();
        let codec = match data.kind() {
            Kind::Data(codec) => codec,
            Kind::Unknown(id) => {
                return Err(Error::UnknownCodec { path: self.src.path(), block: index, offset, id })
            }
            // The index collapses link chains, so a root is never a link.
            Kind::Link(target) => {
                let detail = format!("block {index} links to block {target}, itself a link");
                return Err(Error::BadIndex { path: self.src.path(), offset, detail });
            }
        };
        let len = data.len() as usize;
        if len == 0 {
            out.fill(0);
            return Ok(());
        }
        if codec == Codec::Stored && len == out.len() {
            return self.src.read_exact_at(out, offset, "block data");
        }
        COMPRESSED.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < len {
                buf.resize(len, 0);
            }
            let packed = &mut buf[..len];
            self.src.read_exact_at(packed, offset, "block data")?;
            decoder.decode(codec, packed, out).map_err(|source| Error::Decode {
                path: self.src.path(),
                block: index,
                offset,
                source,
            })
        })
    }

    fn take_slot(&self, block: u64) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let found = slots.iter().position(|s| s.holds.is_some_and(|(b, _)| b == block));
        match found {
            Some(i) => slots.swap_remove(i),
            // The oldest slot: the most recently used ones keep their block.
            None if !slots.is_empty() => slots.remove(0),
            None => {
                Slot { decoder: Decoder::new(), buf: vec![0; self.info.block_size as usize], holds: None }
            }
        }
    }

    fn put_slot(&self, slot: Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() < MAX_POOLED_SLOTS {
            slots.push(slot);
        }
    }

    /// Copies `chunk.len()` bytes from `within` in `block` through a slot.
    fn read_through_slot(&self, block: u64, within: usize, chunk: &mut [u8]) -> Result<(), Error> {
        let mut slot = self.take_slot(block);
        let result = self.fill_from_slot(&mut slot, block, within, chunk);
        self.put_slot(slot);
        result
    }

    fn fill_from_slot(
        &self,
        slot: &mut Slot,
        block: u64,
        within: usize,
        chunk: &mut [u8],
    ) -> Result<(), Error> {
        let cached = slot.holds.filter(|&(b, _)| b == block).map(|(_, valid)| valid);
        let valid = match cached {
            Some(valid) => valid,
            // A whole block goes straight to the caller's buffer and leaves
            // the slot's cached block alone.
            None if within == 0 && chunk.len() == self.info.block_size as usize => {
                self.read_block(block, &mut slot.decoder, chunk)?;
                return Ok(());
            }
            None => {
                slot.holds = None;
                let valid = self.read_block(block, &mut slot.decoder, &mut slot.buf)?;
                slot.holds = Some((block, valid));
                valid
            }
        };
        let end = within + chunk.len();
        if end > valid {
            return Err(Error::BadIndex {
                path: self.src.path(),
                offset: block * u64::from(self.info.block_size),
                detail: format!("block {block} holds {valid} bytes, fewer than the device size needs"),
            });
        }
        chunk.copy_from_slice(&slot.buf[within..end]);
        Ok(())
    }
}

impl ReadAt for Image {
    fn size(&self) -> u64 {
        self.info.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.info.size, offset, buf.len() as u64)?;
        let bs = u64::from(self.info.block_size);
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = (pos % bs) as usize;
            let take = (bs as usize - within).min(buf.len() - done);
            self.read_through_slot(pos / bs, within, &mut buf[done..done + take])?;
            done += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn image_is_send_and_sync() {
        assert_send_sync::<Image>();
    }
}
