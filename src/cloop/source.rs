//! The image file as the parsers see it: `pread` with bounds checks and
//! errors that name the file. Its own module, below [`super::detect`],
//! [`super::index`] and [`super::reader`], so that they all use it without
//! importing one another in a circle.

use std::io;
use std::sync::Arc;

use super::error::{Error, ImagePath};
use crate::blockdev::ReadAt;

/// The image: reads with bounds checks and errors that name it. The bytes
/// come from any device: a local file (`FileDev`, `pread`), a remote file,
/// a file inside an ISO.
pub(crate) struct Source {
    dev: Arc<dyn ReadAt>,
    path: ImagePath,
    len: u64,
}

impl Source {
    /// `dev` of `len` bytes, named `path` in messages.
    pub(crate) fn new(dev: Arc<dyn ReadAt>, path: ImagePath, len: u64) -> Source {
        Source { dev, path, len }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> ImagePath {
        Arc::clone(&self.path)
    }

    /// The file's name, as messages give it.
    pub(crate) fn name(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a range past the end is
    /// a [`Error::Truncated`] naming `what`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &'static str) -> Result<(), Error> {
        let len = buf.len() as u64;
        let truncated = || Error::Truncated { path: self.path(), what, offset, len, file_len: self.len };
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(truncated());
        }
        self.dev.read_at(buf, offset).map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => truncated(),
            _ => Error::Io { path: self.path(), offset, len, source },
        })
    }
}
