//! Errors of the copy-on-write layer.
//!
//! ```text
//! CowError
//! ├── Format { path, problem: FormatError }   the file breaks a rule of the format,
//! │                                            or does not belong to this rdofile
//! └── Io { path, op, offset, source }         a system call failed
//! ```
//!
//! `Display` is the complete one-line message (file, what, where, why), so
//! `source()` returns nothing: the applets print an error once, prefixed with
//! their name, and a chain printer must not repeat the cause. At the
//! `BlockDev` boundary a `CowError` becomes an `io::Error` of the same kind,
//! so an NBD server can still map ENOSPC and friends to the wire.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// One violated rule of the cowfile format, with the numbers involved.
/// Offsets are file offsets of the field in the cowfile.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The file is shorter than the header (or than header + bitmap).
    TooSmall {
        len: u64,
        need: u64,
        what: &'static str,
    },
    BadMagic {
        found: u32,
    },
    NewerVersion {
        version: i16,
    },
    UnsupportedVersion {
        version: i16,
    },
    Packed,
    NotPacked,
    Dirty,
    /// cowmerge has written this cowfile into its rdofile (our flag 0x4).
    Merged,
    UnknownFlags {
        flags: u16,
    },
    BadMapunit {
        mapunit: u64,
        offset: u64,
    },
    NoBlocks,
    TooLarge {
        rdoblocks: u64,
        max: u64,
    },
    MapsizeMismatch {
        mapsize: u64,
        rdoblocks: u64,
        expected: u64,
        offset: u64,
    },
    BadDoffset {
        doffset: u64,
        min: u64,
        max: u64,
        offset: u64,
    },
    BitBeyondEnd {
        block: u64,
        rdoblocks: u64,
        offset: u64,
    },
    NotRelated {
        rdoblocks: u64,
        numblocks: u64,
        offset: u64,
    },
    FingerprintMismatch {
        stored: u64,
        computed: u64,
        offset: u64,
    },
    Inconsistent {
        cowused: u64,
        counted: u64,
        offset: u64,
    },
    /// The savefile ends before all the blocks its bitmap announces.
    TruncatedSavefile {
        block: u64,
        offset: u64,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match self {
            TooSmall { len, need, what } => {
                write!(f, "too small for the {what}: {len} bytes, need at least {need}")
            }
            BadMagic { found } => {
                write!(
                    f,
                    "is not a valid cowfile (wrong magic {found:#010x} at offset 0, expected 0x574f437f)"
                )
            }
            NewerVersion { version } => {
                write!(f, "header version {version} at offset 4 is newer than this program (1)")
            }
            UnsupportedVersion { version } => {
                write!(f, "header version {version} at offset 4 is not supported")
            }
            Packed => write!(f, "is a packed savefile (flag 0x2 at offset 6); unpack it with cowpack -u"),
            NotPacked => write!(f, "is not a packed savefile (flag 0x2 at offset 6 is clear)"),
            Dirty => write!(
                f,
                "is dirty (flag 0x1 at offset 6: not properly closed); run cowrepair or open it with repair"
            ),
            Merged => write!(
                f,
                "was merged into its rdofile by cowmerge (flag 0x4 at offset 6) and must not be applied again"
            ),
            UnknownFlags { flags } => write!(f, "has unknown flags {flags:#06x} at offset 6"),
            BadMapunit { mapunit, offset } => {
                write!(f, "mapunit {mapunit} at offset {offset} is not 1024")
            }
            NoBlocks => write!(f, "describes an rdofile of 0 blocks"),
            TooLarge { rdoblocks, max } => {
                write!(f, "rdofile size of {rdoblocks} blocks exceeds the supported maximum of {max}")
            }
            MapsizeMismatch { mapsize, rdoblocks, expected, offset } => write!(
                f,
                "mapsize {mapsize} at offset {offset} does not fit an rdofile of {rdoblocks} blocks \
                 (expected {expected})"
            ),
            BadDoffset { doffset, min, max, offset } => write!(
                f,
                "data offset {doffset} at offset {offset} is invalid (must be a multiple of 1024 \
                 between {min} and {max})"
            ),
            BitBeyondEnd { block, rdoblocks, offset } => write!(
                f,
                "bitmap marks block {block} (bitmap byte at offset {offset}) beyond the rdofile end \
                 ({rdoblocks} blocks)"
            ),
            NotRelated { rdoblocks, numblocks, offset } => write!(
                f,
                "is not related to this rdofile: rdoblocks {rdoblocks} at offset {offset}, \
                 but the rdofile has {numblocks} blocks of 1024 bytes"
            ),
            FingerprintMismatch { stored, computed, offset } => write!(
                f,
                "fingerprint {stored:#x} at offset {offset} does not match the rdofile's {computed:#x} \
                 (rdofile modified?)"
            ),
            Inconsistent { cowused, counted, offset } => write!(
                f,
                "is inconsistent: cowused {cowused} at offset {offset}, but {counted} bits are set in \
                 the bitmap; run cowrepair -f"
            ),
            TruncatedSavefile { block, offset } => {
                write!(f, "savefile ends at offset {offset}, before the data of block {block}")
            }
        }
    }
}

#[derive(Debug)]
pub enum CowError {
    Format { path: PathBuf, problem: FormatError },
    Io { path: PathBuf, op: &'static str, offset: Option<u64>, source: io::Error },
}

impl CowError {
    pub fn format(path: &Path, problem: FormatError) -> Self {
        CowError::Format { path: path.to_path_buf(), problem }
    }

    pub fn io(path: &Path, op: &'static str, offset: Option<u64>, source: io::Error) -> Self {
        CowError::Io { path: path.to_path_buf(), op, offset, source }
    }

    /// The format rule that was broken, if that is what happened.
    pub fn problem(&self) -> Option<&FormatError> {
        match self {
            CowError::Format { problem, .. } => Some(problem),
            CowError::Io { .. } => None,
        }
    }

    pub fn kind(&self) -> io::ErrorKind {
        match self {
            CowError::Format { .. } => io::ErrorKind::InvalidData,
            CowError::Io { source, .. } => source.kind(),
        }
    }
}

impl fmt::Display for CowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CowError::Format { path, problem } => write!(f, "{}: {problem}", path.display()),
            CowError::Io { path, op, offset: Some(off), source } => {
                write!(f, "{}: {op} at offset {off}: {source}", path.display())
            }
            CowError::Io { path, op, offset: None, source } => {
                write!(f, "{}: {op}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for CowError {}

impl From<CowError> for io::Error {
    fn from(err: CowError) -> io::Error {
        io::Error::new(err.kind(), err.to_string())
    }
}

/// Wraps an `io::Error` with the file, operation and offset, keeping its
/// kind (ENOSPC stays StorageFull for the NBD errno mapping).
pub(crate) fn io_context(path: &Path, op: &str, offset: u64, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {op} at offset {offset}: {err}", path.display()))
}
