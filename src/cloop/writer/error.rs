//! Errors of the cloop writer: one line each, naming the file and the
//! offset or block where something went wrong.

use std::fmt;
use std::io;

use crate::cloop::codec::{Codec, CodecError};

#[derive(Debug)]
pub enum Error {
    /// A file could not be opened, created or inspected.
    Open { what: &'static str, path: String, source: io::Error },
    /// Reading the input (or a spool file) failed at `offset`.
    Read { path: String, offset: u64, source: io::Error },
    /// Writing an output file failed at `offset` (ENOSPC lands here).
    Write { path: String, offset: u64, source: io::Error },
    /// The temporary file could not be renamed to its final name.
    Rename { from: String, to: String, source: io::Error },
    /// The input ended before the expected length (file size, device size
    /// or `-s`).
    ShortInput { path: String, got: u64, expected: u64 },
    /// An output would overwrite the input.
    SameFile { what: &'static str, path: String, input: String },
    /// Two outputs are the same file.
    SameOutput { first: String, second: String },
    /// Block size not a multiple of 512 or out of range.
    InvalidBlockSize { block_size: u64, max: u64 },
    /// This build cannot write the codec.
    CodecUnwritable { codec: Codec },
    /// The image would need more blocks than readers accept.
    TooManyBlocks { blocks: u64, max: u64, block_size: u32 },
    /// Block data would reach past the 60-bit offsets of the index.
    TooLarge { end: u128 },
    /// A block failed to encode.
    Encode { block: u64, source: CodecError },
    /// Fewer blocks arrived than the header already announced.
    BlockCount { path: String, expected: u64, got: u64 },
    /// The observer of the uncompressed data failed (writing a hash tree).
    Observer(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { what, path, source } => write!(f, "{path}: cannot open {what}: {source}"),
            Error::Read { path, offset, source } => {
                write!(f, "{path}: read error at offset {offset}: {source}")
            }
            Error::Write { path, offset, source } => {
                write!(f, "{path}: write error at offset {offset}: {source}")
            }
            Error::Rename { from, to, source } => write!(f, "cannot rename {from} to {to}: {source}"),
            Error::ShortInput { path, got, expected } => write!(
                f,
                "{path}: input ended at offset {got}, but {expected} bytes were expected \
                 (file size, device size or -s); no image written"
            ),
            Error::SameFile { what, path, input } => {
                write!(f, "{path}: refusing to write the {what} over the input file {input}")
            }
            Error::SameOutput { first, second } => write!(f, "{first} and {second} are the same file"),
            Error::InvalidBlockSize { block_size, max } => {
                write!(f, "invalid block size {block_size}: must be a multiple of 512 from 512 to {max}")
            }
            Error::CodecUnwritable { codec } => write!(f, "writing {codec} blocks is not supported"),
            Error::TooManyBlocks { blocks, max, block_size } => write!(
                f,
                "the input needs {blocks} blocks of {block_size} bytes, more than the {max} a cloop \
                 reader accepts; use a larger block size"
            ),
            Error::TooLarge { end } => {
                write!(f, "the image would be {end} bytes long, beyond the 2^60-byte offset limit")
            }
            Error::Encode { block, source } => write!(f, "block {block}: {source}"),
            Error::BlockCount { path, expected, got } => {
                write!(f, "{path}: the header announces {expected} blocks but {got} were written")
            }
            Error::Observer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<super::format::OffsetOverflow> for Error {
    fn from(e: super::format::OffsetOverflow) -> Self {
        Error::TooLarge { end: e.end }
    }
}
