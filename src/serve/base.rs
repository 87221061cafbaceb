//! The bottom layer: a cloop image, or any other file served as it is.

use std::path::Path;
use std::sync::Arc;

use crate::blockdev::{FileDev, ReadAt};
use crate::cache::ZeroProbe;
use crate::cloop::codec::Codec;
use crate::cloop::error::Error as CloopError;
use crate::cloop::reader::{Image, Kind};
use crate::cow::overlay::WarnFn;
use crate::verity::source::Source;

/// The base image, as a cloop image or a raw file.
pub enum Base {
    Cloop(Arc<Image>),
    Raw(Arc<dyn ReadAt>),
}

/// Opens `path` as a cloop image; a file with no cloop signature at all
/// is served raw. A damaged cloop image is an error, never silently
/// served as if it were a plain file. An `http(s)://` URL is opened by
/// [`open_remote_base`]; `root_daemon` makes it wait for the server
/// forever, `warn` reports outages and a changed image, and `ca_file`
/// adds trusted certificates for `https://`. Also returns where the
/// image's hash tree is by default (next to it, or inside the same ISO).
pub fn open_base(
    path: &Path,
    root_daemon: bool,
    warn: &WarnFn,
    ca_file: Option<&Path>,
) -> Result<(Base, Source), String> {
    if let Some(url) = path.to_str().filter(|p| crate::remote::is_url(p)) {
        return open_remote_base(url, root_daemon, warn, ca_file);
    }
    let base = match Image::open(path) {
        Ok(image) => Ok(Base::Cloop(Arc::new(image))),
        Err(CloopError::NotCloop { .. }) => {
            let file = FileDev::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Base::Raw(Arc::new(file)))
        }
        Err(e) => Err(e.to_string()),
    }?;
    Ok((base, Source::next_to(path, None)))
}

/// An `http(s)://` URL as the base: a cloop image, an ISO holding
/// `KNOPPIX/KNOPPIX` (or the URL's `#PATH`), else a raw file
/// (docs/remote.md).
fn open_remote_base(
    url: &str,
    root_daemon: bool,
    warn: &WarnFn,
    ca_file: Option<&Path>,
) -> Result<(Base, Source), String> {
    let opts = crate::remote::options(root_daemon, Some(warn.clone()), ca_file);
    let opened = crate::remote::open(url, opts).map_err(|e| e.to_string())?;
    let tree = Source::next_to(Path::new(url), opened.iso.as_ref());
    let base = match Image::from_reader(opened.dev.clone(), Path::new(url)) {
        Ok(image) => Ok(Base::Cloop(Arc::new(image))),
        Err(CloopError::NotCloop { .. }) => Ok(Base::Raw(opened.dev)),
        // The error names the URL already.
        Err(e) => Err(e.to_string()),
    }?;
    Ok((base, tree))
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
