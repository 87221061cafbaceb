//! The bottom layer: a cloop image, or any other file served as it is.

use std::path::Path;
use std::sync::Arc;

use crate::blockdev::FileDev;
use crate::cache::ZeroProbe;
use crate::cloop::codec::Codec;
use crate::cloop::error::Error as CloopError;
use crate::cloop::reader::{Image, Kind};

/// The base image, as a cloop image or a raw file.
pub enum Base {
    Cloop(Arc<Image>),
    Raw(FileDev),
}

/// Opens `path` as a cloop image; a file with no cloop signature at all
/// is served raw. A damaged cloop image is an error, never silently
/// served as if it were a plain file.
pub fn open_base(path: &Path) -> Result<Base, String> {
    match Image::open(path) {
        Ok(image) => Ok(Base::Cloop(Arc::new(image))),
        Err(CloopError::NotCloop { .. }) => {
            FileDev::open(path).map(Base::Raw).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Blocks whose compressed form is this small (relative to the block size)
/// are likely all zeros and cheap to decode, so status queries probe them.
pub fn zero_probe(image: Arc<Image>) -> ZeroProbe {
    let limit = (u64::from(image.info().block_size) / 64).max(1024);
    Box::new(move |b| {
        image.block_info(b).is_some_and(|i| {
            matches!(i.kind, Kind::Data(c) if c != Codec::Stored) && u64::from(i.compressed_len) <= limit
        })
    })
}
