//! Images on HTTP servers, read lazily with range requests.
//!
//! [`url`] parses `http://` and `https://` URLs, [`http`] is the strict
//! response parser, [`tls`] the transport (TCP, or TLS with verified
//! certificates), [`client`] the connections, [`file::RemoteFile`] the file as a
//! [`ReadAt`] device (identity pinning, retries, read-ahead). [`open`] is
//! what the applets call: it also looks inside an ISO 9660 image for
//! `KNOPPIX/KNOPPIX` (or the file the URL's `#fragment` names). The design
//! is described in docs/remote.md.

pub mod client;
pub mod file;
pub mod http;
pub mod tls;
pub mod url;

use std::io;
use std::sync::Arc;

use crate::blockdev::{ReadAt, Slice};
pub use file::{Options, RemoteFile, Retry};
pub use url::{is_url, Url};

/// The file inside an ISO served when the URL has no `#fragment`.
pub const DEFAULT_ISO_PATH: &str = "KNOPPIX/KNOPPIX";

/// What [`open`] found.
pub struct Opened {
    /// The device to read the image from: the remote file, or the file's
    /// extents inside a remote ISO.
    pub dev: Arc<dyn ReadAt>,
    /// The remote file itself (for its statistics).
    pub remote: Arc<RemoteFile>,
    /// One line for the log: URL, size, identity, and the ISO path if any.
    pub summary: String,
    /// When the image is a file inside a remote ISO: the ISO and the path.
    pub iso: Option<IsoFile>,
}

/// A file inside an ISO: where the image's hash tree (`PATH.verity`) is
/// looked for too.
#[derive(Clone)]
pub struct IsoFile {
    /// The whole ISO.
    pub iso: Arc<dyn ReadAt>,
    /// The file's path inside it, as looked up.
    pub path: String,
    /// The ISO's name in messages (its URL).
    pub name: String,
}

/// Opens `text` (an `http://` or `https://` URL) as the bottom of a stack. If the file is
/// an ISO 9660 image holding `KNOPPIX/KNOPPIX` (or the URL's `#PATH`), the
/// device is that file inside it; a `#PATH` that the ISO lacks is an error.
pub fn open(text: &str, opts: Options) -> io::Result<Opened> {
    let url = Url::parse(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let remote = Arc::new(RemoteFile::open(&url, opts)?);
    let summary = format!("{} ({})", remote.url(), remote.identity());
    let whole: Arc<dyn ReadAt> = remote.clone();
    let (dev, summary, path) = find_in_iso(whole.clone(), url.fragment.as_deref(), &summary)?;
    let iso = path.map(|path| IsoFile { iso: whole, path, name: remote.url().to_string() });
    Ok(Opened { dev, remote, summary, iso })
}

/// `dev` itself, or the file `path` (default [`DEFAULT_ISO_PATH`]) inside
/// it when it is an ISO 9660 image. Works over any [`ReadAt`].
pub fn inside_iso(
    dev: Arc<dyn ReadAt>,
    path: Option<&str>,
    name: &str,
) -> io::Result<(Arc<dyn ReadAt>, String)> {
    find_in_iso(dev, path, name).map(|(dev, what, _)| (dev, what))
}

/// [`inside_iso`], and the path of the file when one was found in an ISO.
fn find_in_iso(
    dev: Arc<dyn ReadAt>,
    path: Option<&str>,
    name: &str,
) -> io::Result<(Arc<dyn ReadAt>, String, Option<String>)> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{name}: {e}"));
    if !crate::iso9660::is_iso(&*dev) {
        return match path {
            Some(p) => Err(named(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("#{p} names a file inside an ISO, but this is no ISO 9660 image"),
            ))),
            None => Ok((dev, name.to_string(), None)),
        };
    }
    let vol = crate::iso9660::Volume::open(&*dev).map_err(named)?;
    let want = path.unwrap_or(DEFAULT_ISO_PATH);
    match vol.find(&*dev, want).map_err(named)? {
        Some(extents) => {
            let slice = Slice::new(dev, &extents).map_err(named)?;
            let size = slice.size();
            Ok((Arc::new(slice), format!("{name}, ISO file {want} ({size} bytes)"), Some(want.to_string())))
        }
        None if path.is_some() => {
            Err(named(io::Error::new(io::ErrorKind::NotFound, format!("the ISO has no file {want}"))))
        }
        // An ISO without a KNOPPIX image is served as it is.
        None => Ok((dev, name.to_string(), None)),
    }
}

/// Retry policy for an applet: a root filesystem (`cloopd --root-daemon`)
/// waits for the server forever; everything else gives up after a few
/// retries (about half a minute of backoff). `ca_file`: PEM certificates
/// trusted for `https://` besides the built-in roots (`--ca-file`).
pub fn options(root: bool, log: Option<file::LogFn>, ca_file: Option<&std::path::Path>) -> Options {
    let mut opts = Options {
        retry: if root { Retry::Forever } else { Retry::Attempts(7) },
        ca_file: ca_file.map(Into::into),
        ..Options::default()
    };
    if let Some(log) = log {
        opts.log = log;
    }
    opts
}

/// A cloop image at a local path or an `http(s)://` URL (inside an ISO
/// too), for the tools that read one (cloopinfo, extract_compressed_fs).
pub fn open_cloop(
    path: &std::path::Path,
    ca_file: Option<&std::path::Path>,
) -> Result<crate::cloop::reader::Image, crate::cloop::error::Error> {
    open_cloop_described(path, ca_file).map(|(image, _)| image)
}

/// [`open_cloop`], and for a URL what [`open`] found (the summary for the
/// boot's log: size, identity, the file inside an ISO; the ISO, where the
/// hash tree is looked for).
pub fn open_cloop_described(
    path: &std::path::Path,
    ca_file: Option<&std::path::Path>,
) -> Result<(crate::cloop::reader::Image, Option<Opened>), crate::cloop::error::Error> {
    match path.to_str().filter(|p| is_url(p)) {
        None => Ok((crate::cloop::reader::Image::open(path)?, None)),
        Some(text) => {
            let opened = open(text, options(false, None, ca_file))
                .map_err(|source| crate::cloop::error::Error::Open { path: Arc::from(path), source })?;
            let image = crate::cloop::reader::Image::from_reader(opened.dev.clone(), path)?;
            Ok((image, Some(opened)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::MemDev;

    #[test]
    fn inside_iso_picks_the_knoppix_file_or_passes_through() {
        let iso: Arc<dyn ReadAt> = Arc::new(MemDev::new(crate::iso9660::tests::tiny_iso()));
        let (dev, what) = inside_iso(iso.clone(), None, "cd").unwrap();
        assert_eq!(dev.size(), 4096 + 100);
        assert!(what.contains("ISO file KNOPPIX/KNOPPIX"), "{what}");
        let mut first = [0u8; 4];
        dev.read_at(&mut first, 4096).unwrap();
        // The second extent starts at sector 24: sector 23 is skipped.
        let at = 2 * 2048;
        assert_eq!(
            first,
            [(at % 251) as u8, ((at + 1) % 251) as u8, ((at + 2) % 251) as u8, ((at + 3) % 251) as u8]
        );
        let (dev, _) = inside_iso(iso.clone(), Some("knoppix/knoppix1"), "cd").unwrap();
        assert_eq!(dev.size(), 10);
        let e = inside_iso(iso, Some("KNOPPIX/KNOPPIX9"), "cd").err().unwrap().to_string();
        assert!(e.contains("cd: the ISO has no file KNOPPIX/KNOPPIX9"), "{e}");

        let plain: Arc<dyn ReadAt> = Arc::new(MemDev::new(vec![7; 100_000]));
        let (dev, _) = inside_iso(plain.clone(), None, "f").unwrap();
        assert_eq!(dev.size(), 100_000);
        let e = inside_iso(plain, Some("KNOPPIX/KNOPPIX"), "f").err().unwrap().to_string();
        assert!(e.contains("no ISO 9660 image"), "{e}");
    }
}
