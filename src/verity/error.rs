//! Errors of the hash tree: one line each, naming the file, the block and
//! the byte offset. Data is never part of a message.

use std::fmt;
use std::io;
use std::sync::Arc;

use super::format::{to_hex, Digest};

/// The tree file's name, shared by every error about it.
pub type TreePath = Arc<str>;

#[derive(Debug)]
pub enum Error {
    /// The tree file could not be opened or read.
    Io { path: TreePath, offset: u64, source: io::Error },
    /// A superblock field is invalid.
    Superblock { path: TreePath, offset: u64, what: String },
    /// The file is not as long as the superblock's geometry needs.
    Length { path: TreePath, len: u64, expected: u64 },
    /// The tree covers a different number of data blocks than the image has.
    DataBlocks { path: TreePath, tree: u64, image: u64, image_size: u64 },
    /// A hash block does not match its parent (or the root hash).
    HashBlock { path: TreePath, level: usize, block: u64, offset: u64, parent: Parent },
    /// A data block does not match its digest in the tree.
    DataBlock { block: u64, offset: u64 },
}

/// What a hash block was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    Root(Digest),
    Level(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, offset, source } => {
                write!(f, "{path}: read error at offset {offset}: {source}")
            }
            Error::Superblock { path, offset, what } => {
                write!(f, "{path}: not a usable dm-verity hash tree: superblock offset {offset}: {what}")
            }
            Error::Length { path, len, expected } => write!(
                f,
                "{path}: the hash tree file is {len} bytes, its superblock describes {expected} bytes"
            ),
            Error::DataBlocks { path, tree, image, image_size } => write!(
                f,
                "{path}: the hash tree covers {tree} data blocks of 4096 bytes, the image has {image} \
                 ({image_size} bytes): it is the tree of another image"
            ),
            Error::HashBlock { path, level, block, offset, parent: Parent::Root(root) } => write!(
                f,
                "{path}: hash block {block} of level {level} (offset {offset}) does not match the root \
                 hash {}: wrong tree or wrong root hash",
                to_hex(root)
            ),
            Error::HashBlock { path, level, block, offset, parent: Parent::Level(p) } => write!(
                f,
                "{path}: hash block {block} of level {level} (offset {offset}) does not match its \
                 digest in level {p}: the tree is damaged"
            ),
            Error::DataBlock { block, offset } => write!(
                f,
                "data block {block} (bytes {offset}..{}) does not match the hash tree",
                offset + super::format::BLOCK_U64
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// Verification failures are EIO at the NBD edge (`InvalidData`).
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e.to_string())
    }
}
