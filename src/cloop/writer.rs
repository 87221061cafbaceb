//! The cloop writer: a filesystem image in, a cloop image out.
//!
//! Output is V2 for zlib, byte for byte in the layout Debian cloop-utils 3.14
//! writes (docs/formats.md, "V2"): its preamble, n+1 u64 BE offsets, contiguous
//! zlib blocks, the last block zero-padded to the block size, nothing after
//! the data. Any other codec writes V4.0 header first, with the codec in the
//! top nibble of each index entry and incompressible blocks stored raw
//! ([`mod@format`]; the `encode` module).
//!
//! Blocks are compressed by a bounded multi-threaded pipeline and
//! delivered in input order, so the bytes are the same for any thread count
//! and memory is bounded by the number of blocks in flight, not by the image
//! (only the index, 8 bytes per block, grows with it; `-m` is unbounded by
//! request).
//!
//! The index precedes the data, so the compressed sizes must be known before
//! the data can go out. How that is solved is the [`Plan`]:
//!
//! | plan | when | how |
//! |---|---|---|
//! | direct | size known, seekable output (the default) | header + zeroed index, stream blocks, then `pwrite` the index |
//! | reuse | size unknown, seekable output (and `-r`) | blocks from offset 0, then shift them up by the header size |
//! | memory | `-m` | blocks in memory, then header + index + data |
//! | spool | `-f FILE`, or unseekable output with no other choice | blocks to FILE (an unlinked file in `$TMPDIR` by default), then header + index + copy |
//! | split | `-S FILE` | blocks stream to the output; header + index to FILE at the end, offsets as for `cat FILE OUTPUT` |
//!
//! A regular output file is written under a temporary name in its directory
//! and renamed into place at the end (the `output` module); outputs that are the input
//! file (by device and inode) are refused.

mod encode;
mod error;
pub mod format;
mod input;
mod output;
mod pipeline;
mod plan;

use std::io::Read;
use std::path::PathBuf;

pub use crate::cloop::codec::is_zero;
pub use encode::zlib_limit;
pub use error::Error;
pub use format::Format;
pub use output::Staged;
pub use plan::Plan;

use crate::cloop::codec::{Codec, EncodeOptions};

/// The largest block size the writer accepts: what our reader (and QEMU)
/// accept. The applet clamps to 1 MiB, as cloop-utils does, because the
/// 4.x/5.x kernel driver breaks above that.
pub const MAX_BLOCK_SIZE: u32 = crate::cloop::reader::MAX_BLOCK_SIZE;
/// cloop-utils' default block size.
pub const DEFAULT_BLOCK_SIZE: u32 = 65536;
/// zopfli iterations for `-L -1` and `-b`. zopfli's own default is 15; more
/// iterations gain well under 0.1 % on filesystem blocks at a linear cost.
pub const ZOPFLI_ITERATIONS: u32 = 15;

/// How to compress.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub block_size: u32,
    pub codec: Codec,
    pub encode: EncodeOptions,
    /// Compressor threads (at least 1).
    pub threads: usize,
    /// Blocks in flight (read, compressing or waiting to be written); `None`
    /// is `2 × threads + 2`. Memory is about this times twice the block size.
    pub in_flight: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            codec: Codec::Zlib,
            encode: EncodeOptions::default(),
            threads: default_threads(),
            in_flight: None,
        }
    }
}

/// One thread per online CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Where the uncompressed data comes from.
pub enum Input {
    /// A file or block device.
    Path(PathBuf),
    /// Standard input.
    Stdin,
    /// Any reader; `name` is used in messages.
    Reader { name: String, reader: Box<dyn Read + Send>, size: Option<u64> },
}

/// How to get the index in front of the data (cloop-utils' storage
/// strategies); see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Direct when the input size is known and the output seekable, else
    /// reuse for a seekable output, else a spool file in `$TMPDIR`.
    #[default]
    Auto,
    /// `-m`: the compressed data in memory.
    Memory,
    /// `-f FILE`: the compressed data in FILE, removed at the end.
    SpoolFile(PathBuf),
    /// `-r`: the output file itself; the same as `Auto`.
    Reuse,
}

/// A complete job.
pub struct Request {
    pub input: Input,
    /// The image file; `None` is stdout.
    pub output: Option<PathBuf>,
    /// The input length to use instead of its size (`-s`): longer input is
    /// truncated (and reported), shorter input is an error.
    pub expected_size: Option<u64>,
    pub strategy: Strategy,
    /// `-S FILE`: header and index go to FILE, the data to `output`.
    pub header_file: Option<PathBuf>,
    pub options: Options,
}

/// What the writer is about to do, for the start-of-job message.
#[derive(Clone, Debug)]
pub struct Start {
    pub format: Format,
    pub plan: Plan,
    pub block_size: u32,
    pub threads: usize,
    pub expected_bytes: Option<u64>,
    pub expected_blocks: Option<u64>,
}

/// One stored block, in order.
#[derive(Clone, Copy, Debug)]
pub struct BlockDone {
    pub index: u64,
    pub codec: Codec,
    pub compressed_len: usize,
    /// Input bytes in this block (less than the block size only at the end).
    pub input_len: usize,
    /// Input bytes consumed so far.
    pub input_done: u64,
    /// Compressed bytes written so far.
    pub output_done: u64,
}

/// Progress callbacks; every method has an empty default.
pub trait Observer {
    fn start(&mut self, _start: &Start) {}
    fn block(&mut self, _block: &BlockDone) {}
    /// A step after the last block, e.g. "writing index".
    fn step(&mut self, _what: &str) {}
    /// Each block's uncompressed bytes, in order, as the image holds them
    /// (the last block zero-padded), e.g. for a hash tree; an error aborts
    /// the run.
    fn uncompressed(&mut self, _block: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {}

/// The result of a successful run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub format: Format,
    pub block_size: u32,
    pub blocks: u64,
    /// Input bytes compressed.
    pub input_bytes: u64,
    /// Image bytes (header, index and data; for `-S` both files together).
    pub image_bytes: u64,
    /// Blocks stored raw (V4 only).
    pub raw_blocks: u64,
    /// The input had more data than expected; it was ignored and the image
    /// holds only the expected length (cloop-utils exits 1 for this).
    pub excess_input: bool,
}

/// Writes a cloop image as `request` says.
pub fn create(request: Request, observer: &mut dyn Observer) -> Result<Summary, Error> {
    plan::run(request, observer)
}
