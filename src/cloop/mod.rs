//! The cloop image format, every version ever written.
//!
//! * [`codec`]: block compressors and decompressors (zlib, xz, lz4, lzo, zstd, stored).

pub mod codec;
