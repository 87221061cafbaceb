//! Errors of the cloop reader.
//!
//! One variant per broken rule, each carrying the numbers that broke it, so
//! a caller can match on the kind and a user reads exactly what is wrong.
//! Every variant carries the image path; `Display` is a single line of the
//! form `PATH: WHERE: WHAT`, where WHERE names the block number and/or the
//! file offset. Sources are part of that one line and are not repeated by
//! `std::error::Error::source` chains printed elsewhere.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::codec::{Codec, CodecError};

/// The image path as stored in errors: cheap to clone into every error.
pub type ImagePath = Arc<Path>;

#[derive(Debug)]
pub enum Error {
    /// The file could not be opened or its size determined.
    Open { path: ImagePath, source: io::Error },
    /// A read of the image failed (other than at end of file).
    Io { path: ImagePath, offset: u64, len: u64, source: io::Error },
    /// No signature of any cloop version was found.
    NotCloop { path: ImagePath, file_len: u64 },
    /// A structure needs bytes beyond the end of the file.
    Truncated { path: ImagePath, what: &'static str, offset: u64, len: u64, file_len: u64 },
    /// The block size is zero, not a multiple of 512, or above [`super::detect::MAX_BLOCK_SIZE`].
    BlockSize { path: ImagePath, offset: u64, block_size: u64, problem: &'static str },
    /// More blocks than [`super::index::MAX_BLOCKS`].
    TooManyBlocks { path: ImagePath, offset: u64, num_blocks: u64, max: u64 },
    /// The index does not fit between its start and the end of the file.
    IndexPastEof { path: ImagePath, index_offset: u64, index_len: u64, file_len: u64 },
    /// The offset of the block after `block` is smaller than that of `block`.
    OffsetsNotMonotonic { path: ImagePath, block: u64, prev: u64, next: u64 },
    /// Block data reaches past the end of the file (or of the data area).
    BlockPastEof { path: ImagePath, block: u64, offset: u64, end: u64, limit: u64 },
    /// A compressed block is larger than its codec can produce for the block size.
    BlockTooLarge { path: ImagePath, block: u64, offset: u64, len: u64, max: u64, codec: Option<Codec> },
    /// A link (SliTaz dedup, uzip back-reference) does not point to an earlier block.
    BadLink { path: ImagePath, block: u64, target: u64 },
    /// A block's compressor id is not one any writer defines.
    UnknownCodec { path: ImagePath, block: u64, offset: u64, id: u32 },
    /// A block failed to decode to its expected length.
    Decode { path: ImagePath, block: u64, offset: u64, source: CodecError },
    /// Any other inconsistency in an index, tail or trailer.
    BadIndex { path: ImagePath, offset: u64, detail: String },
    /// A block number at or past the number of blocks.
    BlockOutOfRange { path: ImagePath, block: u64, num_blocks: u64 },
}

impl Error {
    /// The image this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Open { path, .. }
            | Error::Io { path, .. }
            | Error::NotCloop { path, .. }
            | Error::Truncated { path, .. }
            | Error::BlockSize { path, .. }
            | Error::TooManyBlocks { path, .. }
            | Error::IndexPastEof { path, .. }
            | Error::OffsetsNotMonotonic { path, .. }
            | Error::BlockPastEof { path, .. }
            | Error::BlockTooLarge { path, .. }
            | Error::BadLink { path, .. }
            | Error::UnknownCodec { path, .. }
            | Error::Decode { path, .. }
            | Error::BadIndex { path, .. }
            | Error::BlockOutOfRange { path, .. } => path,
        }
    }

    /// The block this error is about, for errors tied to one block.
    pub fn block(&self) -> Option<u64> {
        match self {
            Error::OffsetsNotMonotonic { block, .. }
            | Error::BlockPastEof { block, .. }
            | Error::BlockTooLarge { block, .. }
            | Error::BadLink { block, .. }
            | Error::UnknownCodec { block, .. }
            | Error::Decode { block, .. }
            | Error::BlockOutOfRange { block, .. } => Some(*block),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path().display())?;
        match self {
            Error::Open { source, .. } => write!(f, "cannot open: {source}"),
            Error::Io { offset, len, source, .. } => {
                write!(f, "read of {len} bytes at offset {offset} failed: {source}")
            }
            Error::NotCloop { file_len, .. } => write!(
                f,
                "not a cloop image ({file_len} bytes; no cloop signature at offset 0x0b of the first or \
                 last 136 bytes, no CLOOP3 trailer)"
            ),
            Error::Truncated { what, offset, len, file_len, .. } => write!(
                f,
                "truncated: the {what} at offset {offset} needs {len} bytes, but the file ends at {file_len}"
            ),
            Error::BlockSize { offset, block_size, problem, .. } => {
                write!(f, "block size {block_size} at offset {offset} is {problem}")
            }
            Error::TooManyBlocks { offset, num_blocks, max, .. } => {
                write!(f, "block count {num_blocks} at offset {offset} is more than the supported {max}")
            }
            Error::IndexPastEof { index_offset, index_len, file_len, .. } => write!(
                f,
                "index of {index_len} bytes at offset {index_offset} extends past the end of the file \
                 ({file_len} bytes)"
            ),
            Error::OffsetsNotMonotonic { block, prev, next, .. } => write!(
                f,
                "block {block} at offset {prev}: offsets not monotonic, the next block starts at {next}"
            ),
            Error::BlockPastEof { block, offset, end, limit, .. } => write!(
                f,
                "block {block} at offset {offset}: data ends at {end}, past the end of the data at {limit}"
            ),
            Error::BlockTooLarge { block, offset, len, max, codec, .. } => {
                let codec = codec.map_or("compressed".to_string(), |c| c.to_string());
                write!(f, "block {block} at offset {offset}: {len} bytes, more than a {codec} block may take ({max})")
            }
            Error::BadLink { block, target, .. } => {
                write!(f, "block {block}: links to block {target}, which is not an earlier data block")
            }
            Error::UnknownCodec { block, offset, id, .. } => {
                write!(f, "block {block} at offset {offset}: unknown compressor id {id}")
            }
            Error::Decode { block, offset, source, .. } => {
                write!(f, "block {block} at offset {offset}: {source}")
            }
            Error::BadIndex { offset, detail, .. } => write!(f, "index at offset {offset}: {detail}"),
            Error::BlockOutOfRange { block, num_blocks, .. } => {
                write!(f, "block {block} does not exist (the image has {num_blocks} blocks)")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::Open { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::BlockOutOfRange { .. } => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> ImagePath {
        Arc::from(Path::new("image.cloop"))
    }

    #[test]
    fn decode_error_is_one_line_with_file_block_offset() {
        let err = Error::Decode {
            path: p(),
            block: 17,
            offset: 123456,
            source: CodecError::Short { codec: Codec::Zlib, expected: 65536, got: 4000 },
        };
        assert_eq!(
            err.to_string(),
            "image.cloop: block 17 at offset 123456: zlib data decodes to 4000 bytes, expected 65536"
        );
        assert_eq!(err.block(), Some(17));
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(io.to_string().starts_with("image.cloop: block 17"));
    }

    #[test]
    fn io_errors_keep_their_kind() {
        let err = Error::Io { path: p(), offset: 5, len: 3, source: io::ErrorKind::PermissionDenied.into() };
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
    }
}
