//! Building a tree while the data streams past, in bounded memory.
//!
//! Data arrives in any chunking ([`Builder::update`]); every full 4 KiB
//! block is hashed into the current level-0 hash block, and every full hash
//! block of any level is hashed into the level above it. Completed level-0
//! blocks go to the tree file at once; the levels above (1/128 of level 0
//! and less) stay in memory until [`Builder::finish`], which knows the
//! final geometry, pads the last block of each level with zeros, writes
//! the upper levels and the superblock, and returns the root hash.
//!
//! Level 0 is written where it belongs when the data size is known up
//! front; otherwise it starts right after the superblock and is moved up
//! once, at the end, by the size of the upper levels (1/128 of its own).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::format::{Digest, Geometry, Salted, Superblock, BLOCK, BLOCK_U64, DIGEST, PER_BLOCK};

/// One level's hash block being filled.
struct Pending {
    block: Box<[u8; BLOCK]>,
    entries: usize,
}

impl Pending {
    fn new() -> Self {
        Pending { block: Box::new([0; BLOCK]), entries: 0 }
    }
}

/// What a finished build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub root: Digest,
    pub geometry: Geometry,
}

pub struct Builder {
    salted: Salted,
    salt: Vec<u8>,
    uuid: [u8; 16],
    file: File,
    name: String,
    /// A partial data block carried between `update` calls.
    carry: Vec<u8>,
    data_blocks: u64,
    /// `pending[i]`: the hash block of level i being filled.
    pending: Vec<Pending>,
    /// Completed level-0 blocks written so far, and where the first went.
    leaf_written: u64,
    leaf_at: u64,
    /// Completed blocks of levels 1.. (index 0 unused).
    upper: Vec<Vec<u8>>,
}

impl Builder {
    /// `expected_size` (bytes of data), when known, puts level 0 in its
    /// final place from the start. `name` is the tree file's name for
    /// error messages.
    pub fn new(file: File, name: String, salt: &[u8], expected_size: Option<u64>) -> Builder {
        let leaf_at = expected_size.and_then(Geometry::for_size).map_or(1, |g| g.leaf_start());
        Builder {
            salted: Salted::new(salt),
            salt: salt.to_vec(),
            uuid: super::format::uuid_for(salt),
            file,
            name,
            carry: Vec::new(),
            data_blocks: 0,
            pending: vec![Pending::new()],
            leaf_written: 0,
            leaf_at,
            upper: vec![Vec::new()],
        }
    }

    fn write_err(&self, offset: u64, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: write error at offset {offset}: {e}", self.name))
    }

    /// Feeds the next bytes of data.
    pub fn update(&mut self, data: &[u8]) -> io::Result<()> {
        let mut carry = std::mem::take(&mut self.carry);
        let result = super::blocks(&mut carry, data, |block| self.data_block(block));
        self.carry = carry;
        result
    }

    fn data_block(&mut self, block: &[u8]) -> io::Result<()> {
        let d = self.salted.hash(block);
        self.data_blocks += 1;
        self.push(0, &d)
    }

    /// Adds a digest to level `level`; a full hash block is completed.
    fn push(&mut self, level: usize, d: &Digest) -> io::Result<()> {
        if self.pending.len() <= level {
            self.pending.push(Pending::new());
            self.upper.push(Vec::new());
        }
        let p = &mut self.pending[level];
        p.block[p.entries * DIGEST..(p.entries + 1) * DIGEST].copy_from_slice(d);
        p.entries += 1;
        if p.entries as u64 == PER_BLOCK {
            self.complete(level)?;
        }
        Ok(())
    }

    /// Emits level `level`'s pending block (zero-padded) and hashes it
    /// into the level above.
    fn complete(&mut self, level: usize) -> io::Result<()> {
        let p = std::mem::replace(&mut self.pending[level], Pending::new());
        let d = self.salted.hash(&p.block[..]);
        if level == 0 {
            let offset = (self.leaf_at + self.leaf_written) * BLOCK_U64;
            self.file.write_all_at(&p.block[..], offset).map_err(|e| self.write_err(offset, e))?;
            self.leaf_written += 1;
        } else {
            self.upper[level].extend_from_slice(&p.block[..]);
        }
        self.push(level + 1, &d)
    }

    /// Completes the tree: the last partial data block is hashed
    /// zero-padded. Fails for no data at all (dm-verity has no empty tree).
    pub fn finish(mut self) -> io::Result<(Built, File)> {
        if !self.carry.is_empty() {
            let mut block = std::mem::take(&mut self.carry);
            block.resize(BLOCK, 0);
            self.data_block(&block)?;
        }
        let geometry = Geometry::new(self.data_blocks).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: a hash tree needs 1 to 2^52 data blocks, not {}", self.name, self.data_blocks),
            )
        })?;
        // Close every level's partial block, bottom up.
        for level in 0..geometry.levels.len() {
            if self.pending[level].entries > 0 {
                self.complete(level)?;
            }
        }
        let top = geometry.levels.len();
        let p = &self.pending[top];
        debug_assert!(p.entries == 1 && self.upper.get(top).is_none_or(|u| u.is_empty()));
        let root: Digest = p.block[..DIGEST].try_into().expect("one digest");
        // Level 0 to its final place, if it was not written there.
        if let Some(leaf) = geometry.levels.first() {
            debug_assert_eq!(leaf.blocks, self.leaf_written);
            if leaf.start != self.leaf_at {
                self.move_leaves(leaf.start)?;
            }
        }
        for (level, l) in geometry.levels.iter().enumerate().skip(1) {
            let offset = l.start * BLOCK_U64;
            debug_assert_eq!(self.upper[level].len() as u64, l.blocks * BLOCK_U64);
            self.file.write_all_at(&self.upper[level], offset).map_err(|e| self.write_err(offset, e))?;
        }
        let mut first = vec![0u8; BLOCK];
        let sb = Superblock { uuid: self.uuid, data_blocks: self.data_blocks, salt: self.salt.clone() };
        first[..super::format::SUPERBLOCK_LEN].copy_from_slice(&sb.to_bytes());
        self.file.write_all_at(&first, 0).map_err(|e| self.write_err(0, e))?;
        self.file.set_len(geometry.file_len()).map_err(|e| self.write_err(geometry.file_len(), e))?;
        Ok((Built { root, geometry }, self.file))
    }

    /// Moves the level-0 blocks to start at block `to`, chunk by chunk in
    /// the order that never overwrites a chunk before it is read.
    fn move_leaves(&mut self, to: u64) -> io::Result<()> {
        const CHUNK: u64 = 256;
        let n = self.leaf_written;
        let mut buf = vec![0u8; (CHUNK.min(n) * BLOCK_U64) as usize];
        let chunks = n.div_ceil(CHUNK);
        for k in 0..chunks {
            // Moving up: last chunk first; moving down: first chunk first.
            let k = if to > self.leaf_at { chunks - 1 - k } else { k };
            let start = k * CHUNK;
            let end = (start + CHUNK).min(n);
            let chunk = &mut buf[..((end - start) * BLOCK_U64) as usize];
            let from = (self.leaf_at + start) * BLOCK_U64;
            self.file.read_exact_at(chunk, from).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: read error at offset {from}: {e}", self.name))
            })?;
            let dest = (to + start) * BLOCK_U64;
            self.file.write_all_at(chunk, dest).map_err(|e| self.write_err(dest, e))?;
        }
        self.leaf_at = to;
        Ok(())
    }
}
