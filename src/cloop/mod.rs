//! The cloop image format, every version ever written.
//!
//! * [`codec`]: block compressors and decompressors (zlib, xz, lz4, lzo, zstd, stored).
//! * [`detect`]: version detection and header parsing; [`index`]: the index tables of
//!   every version; [`reader`]: [`reader::Image`], the reader as a `ReadAt` device;
//!   [`extract`]: parallel in-order decoding of a whole image; [`error`]: its errors;
//!   `source`: the image file with bounds-checked reads, which they all share.
//! * [`writer`]: [`writer::create`], V2 (and V4 for other codecs) images as cloop-utils writes them.

pub mod codec;
pub mod detect;
pub mod error;
pub mod extract;
pub mod index;
pub mod reader;
mod source;
#[cfg(feature = "create")]
pub mod writer;
