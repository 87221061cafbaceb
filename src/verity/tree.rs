//! An opened hash tree: the superblock validated, the upper levels read
//! and verified against the root hash once, level-0 hash blocks verified
//! on first use and kept in a bounded cache.
//!
//! Trust flows down from the root hash only: a hash block is used after it
//! matched its digest in a block that was itself verified, up to the root.
//! The levels above level 0 are 1/128 of the tree or less (260 KiB for a
//! 4 GiB image); they are verified when the tree is opened, so a wrong root
//! hash or a damaged upper level is an error at once. Level-0 blocks (one
//! per 512 KiB of data) are verified when a data block first needs them
//! and evicted by CLOCK beyond [`LEAF_CACHE_BLOCKS`]; an evicted block is
//! read and verified again, never trusted from the file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::error::{Error, Parent, TreePath};
use super::format::{
    Digest, Geometry, Salted, Superblock, BLOCK, BLOCK_U64, DIGEST, PER_BLOCK, SUPERBLOCK_LEN,
};
use crate::blockdev::{FileDev, ReadAt};

/// Verified level-0 blocks kept (4 KiB each; each covers 512 KiB of data).
pub const LEAF_CACHE_BLOCKS: usize = 256;

/// What a tree file says about itself, before anything is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeInfo {
    pub superblock: Superblock,
    pub geometry: Geometry,
}

fn io_err(path: &TreePath, offset: u64) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.clone(), offset, source }
}

/// Reads and validates the superblock and the file length. The tree is
/// read through [`ReadAt`]: a local file, a file on an HTTP server (its
/// identity pinned) or a file inside an ISO.
fn read_info(file: &dyn ReadAt, path: &TreePath) -> Result<TreeInfo, Error> {
    let len = file.size();
    let mut sb = [0u8; SUPERBLOCK_LEN];
    if len < SUPERBLOCK_LEN as u64 {
        return Err(Error::Superblock {
            path: path.clone(),
            offset: len,
            what: format!("the file is {len} bytes, shorter than a superblock ({SUPERBLOCK_LEN})"),
        });
    }
    file.read_at(&mut sb, 0).map_err(io_err(path, 0))?;
    parse_info(&sb, len, path)
}

/// Validates a superblock and the length of the file it came from.
pub fn parse_info(sb: &[u8; SUPERBLOCK_LEN], file_len: u64, path: &TreePath) -> Result<TreeInfo, Error> {
    let superblock = Superblock::parse(sb).map_err(|e| Error::Superblock {
        path: path.clone(),
        offset: e.offset as u64,
        what: e.what,
    })?;
    let geometry = Geometry::new(superblock.data_blocks).expect("parse checked the block count");
    if file_len != geometry.file_len() {
        return Err(Error::Length { path: path.clone(), len: file_len, expected: geometry.file_len() });
    }
    Ok(TreeInfo { superblock, geometry })
}

/// Reads the superblock of `file` and checks that the tree covers an image
/// of `data_size` bytes and that the file is as long as that tree. Verifies
/// nothing against a root hash, but bounds what the file can make us read
/// or hold by the image's size.
pub fn info_for(file: &dyn ReadAt, path: &TreePath, data_size: u64) -> Result<TreeInfo, Error> {
    let info = read_info(file, path)?;
    let image_blocks = data_size.div_ceil(BLOCK_U64);
    if image_blocks != info.geometry.data_blocks {
        return Err(Error::DataBlocks {
            path: path.clone(),
            tree: info.geometry.data_blocks,
            image: image_blocks,
            image_size: data_size,
        });
    }
    Ok(info)
}

/// Opens a local tree file as a [`ReadAt`].
fn open_file(path: &Path) -> Result<(Arc<dyn ReadAt>, TreePath), Error> {
    let name: TreePath = path.display().to_string().into();
    let file = FileDev::open(path).map_err(io_err(&name, 0))?;
    Ok((Arc::new(file), name))
}

/// Reads only the superblock of `path` and checks the file's length.
pub fn info(path: &Path) -> Result<TreeInfo, Error> {
    let (file, name) = open_file(path)?;
    read_info(&*file, &name)
}

/// The root hash the tree file implies: the digest of its top hash block.
/// `None` for a one-block tree, whose root is the data block's digest.
/// This is what the file claims, not a verification.
pub fn claimed_root(path: &Path) -> Result<(TreeInfo, Option<Digest>), Error> {
    let (file, name) = open_file(path)?;
    let info = read_info(&*file, &name)?;
    let Some(top) = info.geometry.levels.last() else { return Ok((info, None)) };
    let mut block = vec![0u8; BLOCK];
    let offset = top.start * BLOCK_U64;
    file.read_at(&mut block, offset).map_err(io_err(&name, offset))?;
    let root = Salted::new(&info.superblock.salt).hash(&block);
    Ok((info, Some(root)))
}

/// Verified level-0 blocks, evicted by CLOCK.
#[derive(Default)]
struct LeafCache {
    index: HashMap<u64, usize>,
    ring: Vec<(u64, Box<[u8; BLOCK]>, bool)>,
    hand: usize,
}

impl LeafCache {
    fn digest(&mut self, leaf: u64, entry: usize) -> Option<Digest> {
        let slot = *self.index.get(&leaf)?;
        let e = &mut self.ring[slot];
        e.2 = true;
        Some(e.1[entry * DIGEST..(entry + 1) * DIGEST].try_into().expect("one digest"))
    }

    fn insert(&mut self, leaf: u64, block: Box<[u8; BLOCK]>, capacity: usize) {
        if self.index.contains_key(&leaf) {
            return;
        }
        if self.ring.len() < capacity {
            self.index.insert(leaf, self.ring.len());
            self.ring.push((leaf, block, false));
            return;
        }
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.ring.len();
            let e = &mut self.ring[slot];
            if e.2 {
                e.2 = false;
                continue;
            }
            self.index.remove(&e.0);
            *e = (leaf, block, false);
            self.index.insert(leaf, slot);
            return;
        }
    }
}

/// A tree whose upper levels matched the root hash.
pub struct Tree {
    path: TreePath,
    file: Arc<dyn ReadAt>,
    info: TreeInfo,
    root: Digest,
    salted: Salted,
    /// Hash blocks [1, leaf start) of the file, verified; for a tree of one
    /// level, that level's single block.
    upper: Vec<u8>,
    leaves: Mutex<LeafCache>,
    capacity: usize,
}

impl Tree {
    /// Opens `path`, checks that it covers `data_size` bytes, and verifies
    /// every level above level 0 against `root`.
    pub fn open(path: &Path, root: Digest, data_size: u64) -> Result<Tree, Error> {
        let (file, name) = open_file(path)?;
        Tree::from_reader(file, name, root, data_size)
    }

    /// [`Tree::open`] over any [`ReadAt`] (`path` names it in messages).
    /// Nothing is allocated before the superblock's geometry matched both
    /// the file's length and `data_size`: a lying server cannot make us
    /// hold more than the upper levels of a tree for `data_size` bytes
    /// (1/128 of the tree or less), and level-0 blocks are read one at a
    /// time on use.
    pub fn from_reader(
        file: Arc<dyn ReadAt>,
        path: TreePath,
        root: Digest,
        data_size: u64,
    ) -> Result<Tree, Error> {
        let info = info_for(&*file, &path, data_size)?;
        let salted = Salted::new(&info.superblock.salt);
        let g = &info.geometry;
        // One level: its block is the top; read it as the "upper" part.
        let upper_end = if g.levels.len() == 1 { g.total_blocks } else { g.leaf_start() };
        let mut upper = vec![0u8; ((upper_end - 1) * BLOCK_U64) as usize];
        file.read_at(&mut upper, BLOCK_U64).map_err(io_err(&path, BLOCK_U64))?;
        let tree = Tree {
            path,
            file,
            root,
            salted,
            upper,
            leaves: Mutex::new(LeafCache::default()),
            capacity: LEAF_CACHE_BLOCKS,
            info,
        };
        tree.verify_upper()?;
        Ok(tree)
    }

    pub fn info(&self) -> &TreeInfo {
        &self.info
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn root(&self) -> &Digest {
        &self.root
    }

    /// Bytes of hash block `block` of `level` in `upper`.
    fn upper_block(&self, level: usize, block: u64) -> &[u8] {
        let start = ((self.info.geometry.levels[level].start + block - 1) * BLOCK_U64) as usize;
        &self.upper[start..start + BLOCK]
    }

    /// Digest number `entry` of `level` (held in `upper`).
    fn upper_digest(&self, level: usize, entry: u64) -> Digest {
        let block = self.upper_block(level, entry / PER_BLOCK);
        let at = (entry % PER_BLOCK) as usize * DIGEST;
        block[at..at + DIGEST].try_into().expect("one digest")
    }

    fn mismatch(&self, level: usize, block: u64, parent: Parent) -> Error {
        let offset = (self.info.geometry.levels[level].start + block) * BLOCK_U64;
        Error::HashBlock { path: self.path.clone(), level, block, offset, parent }
    }

    /// Top block against the root, then each level against the one above,
    /// down to level 1 (level 0 too when it is the only level).
    fn verify_upper(&self) -> Result<(), Error> {
        let levels = &self.info.geometry.levels;
        let Some(top) = levels.len().checked_sub(1) else { return Ok(()) };
        if self.salted.hash(self.upper_block(top, 0)) != self.root {
            return Err(self.mismatch(top, 0, Parent::Root(self.root)));
        }
        for level in (1..top).rev() {
            for block in 0..levels[level].blocks {
                if self.salted.hash(self.upper_block(level, block)) != self.upper_digest(level + 1, block) {
                    return Err(self.mismatch(level, block, Parent::Level(level + 1)));
                }
            }
        }
        Ok(())
    }

    /// The verified digest of data block `index`.
    fn expected(&self, index: u64) -> Result<Digest, Error> {
        let levels = &self.info.geometry.levels;
        match levels.len() {
            0 => return Ok(self.root),
            1 => return Ok(self.upper_digest(0, index)),
            _ => {}
        }
        let (leaf, entry) = (index / PER_BLOCK, (index % PER_BLOCK) as usize);
        let cached = self.leaves.lock().unwrap_or_else(|e| e.into_inner()).digest(leaf, entry);
        if let Some(d) = cached {
            return Ok(d);
        }
        // Read and verify outside the lock; two threads may both do it.
        let mut block = Box::new([0u8; BLOCK]);
        let offset = (levels[0].start + leaf) * BLOCK_U64;
        self.file.read_at(&mut block[..], offset).map_err(io_err(&self.path, offset))?;
        if self.salted.hash(&block[..]) != self.upper_digest(1, leaf) {
            return Err(self.mismatch(0, leaf, Parent::Level(1)));
        }
        let d = block[entry * DIGEST..(entry + 1) * DIGEST].try_into().expect("one digest");
        self.leaves.lock().unwrap_or_else(|e| e.into_inner()).insert(leaf, block, self.capacity);
        Ok(d)
    }

    /// Checks data block `index` (exactly 4096 bytes; a short last block is
    /// passed zero-padded).
    pub fn verify(&self, index: u64, block: &[u8]) -> Result<(), Error> {
        debug_assert_eq!(block.len(), BLOCK);
        if index >= self.info.geometry.data_blocks {
            return Err(Error::DataBlock { block: index, offset: index * BLOCK_U64 });
        }
        let expected = self.expected(index)?;
        if self.salted.hash(block) != expected {
            return Err(Error::DataBlock { block: index, offset: index * BLOCK_U64 });
        }
        Ok(())
    }
}
