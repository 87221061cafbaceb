//! Where the hash tree of an image is, and opening it from there.
//!
//! The tree travels next to the image: `IMAGE.verity` beside a local
//! file, `URL.verity` beside an image on an HTTP server, and
//! `PATH.verity` inside the same ISO when the image is the file `PATH`
//! (by default `KNOPPIX/KNOPPIX`) inside an ISO. `--verity-tree` may name
//! a local file or a URL. A remote tree is a [`RemoteFile`] like the
//! image: its length and validators are pinned when it is opened, so a
//! server that swaps it later gets EIO, never a mix of two trees; and
//! whatever it serves is only used after matching the root hash.
//!
//! [`RemoteFile`]: crate::remote::RemoteFile

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::TreePath;
use super::tree::Tree;
use super::Digest;
use crate::blockdev::ReadAt;

/// Where a tree is.
#[derive(Clone)]
pub enum Source {
    /// A local file, named by `--verity-tree` or found next to the image.
    Path { path: PathBuf, given: bool },
    /// A file on an HTTP server.
    Url { url: String, given: bool },
    /// A file inside a remote ISO, already looked up.
    Inside { iso: Arc<dyn ReadAt>, path: String, iso_name: String },
}

/// `URL.verity`: the `#fragment` dropped, `.verity` added to the path
/// before any `?query`.
pub fn url_for(image: &str) -> String {
    let base = image.split('#').next().unwrap_or(image);
    match base.split_once('?') {
        Some((path, query)) => format!("{path}.verity?{query}"),
        None => format!("{base}.verity"),
    }
}

impl Source {
    /// The tree `--verity-tree VALUE` names: a URL or a local path.
    pub fn given(value: &Path) -> Source {
        match value.to_str().filter(|v| crate::remote::is_url(v)) {
            Some(url) => Source::Url { url: url.to_string(), given: true },
            None => Source::Path { path: value.to_path_buf(), given: true },
        }
    }

    /// The default tree of the image at `image` (a path or a URL);
    /// `iso`: the ISO and the path inside it when the image is a file in
    /// a remote ISO.
    pub fn next_to(image: &Path, iso: Option<&crate::remote::IsoFile>) -> Source {
        if let Some(iso) = iso {
            return Source::Inside {
                iso: iso.iso.clone(),
                path: format!("{}.verity", iso.path),
                iso_name: iso.name.clone(),
            };
        }
        match image.to_str().filter(|v| crate::remote::is_url(v)) {
            Some(url) => Source::Url { url: url_for(url), given: false },
            None => Source::Path { path: super::tree_path_for(image), given: false },
        }
    }

    /// How messages name the tree.
    pub fn name(&self) -> String {
        match self {
            Source::Path { path, .. } => path.display().to_string(),
            Source::Url { url, .. } => url.clone(),
            Source::Inside { path, iso_name, .. } => format!("{iso_name}#{path}"),
        }
    }

    /// Opens the tree file for an image of `data_size` bytes, checking its
    /// superblock and length against that size (which bounds everything
    /// read from it later) but nothing against a root hash yet: for a copy
    /// that is verified when it is used. `remote`: how to reach a URL
    /// (retries, where outages are reported). A tree that is missing where
    /// the image's tree should be is an error that says where it was
    /// looked for.
    pub fn open_file(
        &self,
        data_size: u64,
        remote: crate::remote::Options,
    ) -> Result<(Arc<dyn ReadAt>, TreePath), String> {
        let missing = |why: String| match self {
            Source::Path { given: true, .. } | Source::Url { given: true, .. } => {
                format!("the hash tree {}: {why}", self.name())
            }
            _ => format!("no hash tree {} next to the image ({why})", self.name()),
        };
        let (dev, name): (Arc<dyn ReadAt>, String) = match self {
            Source::Path { path, given } => {
                if !given && !path.exists() {
                    return Err(missing("no such file".into()));
                }
                let dev =
                    crate::blockdev::FileDev::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                (Arc::new(dev), self.name())
            }
            Source::Url { url, .. } => {
                let parsed = crate::remote::Url::parse(url).map_err(|e| missing(format!("{url}: {e}")))?;
                let file =
                    crate::remote::RemoteFile::open(&parsed, remote).map_err(|e| missing(e.to_string()))?;
                let name = format!("{} ({})", file.url(), file.identity());
                (Arc::new(file), name)
            }
            Source::Inside { iso, path, iso_name } => {
                let (dev, _) = crate::remote::inside_iso(iso.clone(), Some(path), iso_name)
                    .map_err(|e| missing(e.to_string()))?;
                (dev, self.name())
            }
        };
        let name: TreePath = name.into();
        super::tree::info_for(&*dev, &name, data_size).map_err(|e| e.to_string())?;
        Ok((dev, name))
    }

    /// Opens the tree ([`Source::open_file`]) and verifies its upper
    /// levels against `root`.
    pub fn open(&self, root: Digest, data_size: u64, remote: crate::remote::Options) -> Result<Tree, String> {
        let (dev, name) = self.open_file(data_size, remote)?;
        Tree::from_reader(dev, name, root, data_size).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_url_is_next_to_the_image_url() {
        assert_eq!(url_for("http://h/a/K.cloop"), "http://h/a/K.cloop.verity");
        assert_eq!(url_for("http://h/K?v=2"), "http://h/K.verity?v=2");
        assert_eq!(url_for("http://h/k.iso#KNOPPIX/KNOPPIX1"), "http://h/k.iso.verity");
        let s = Source::next_to(Path::new("/m/KNOPPIX/KNOPPIX"), None);
        assert_eq!(s.name(), "/m/KNOPPIX/KNOPPIX.verity");
        let s = Source::given(Path::new("http://h/t.verity"));
        assert!(matches!(s, Source::Url { given: true, .. }));
    }

    #[test]
    fn a_missing_local_tree_says_where_it_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        let e = Source::next_to(&image, None)
            .open([0; 32], 4096, crate::remote::Options::default())
            .err()
            .unwrap();
        assert!(
            e.contains("no hash tree") && e.contains("img.verity") && e.contains("next to the image"),
            "{e}"
        );
    }
}
