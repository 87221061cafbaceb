//! Verified images: a dm-verity hash tree over the uncompressed image.
//!
//! The tree is dm-verity's on-disk format version 1 as `veritysetup format`
//! writes it (sha256, 4 KiB data and hash blocks, a salt, the superblock at
//! offset 0), so `veritysetup verify` on the extracted image agrees with
//! us, and a tree made by veritysetup is accepted here. By default it lives
//! next to the image as `IMAGE.verity` ([`tree_path_for`]).
//!
//! * [`format`]: superblock, geometry, salted hash, hex;
//! * [`build`]: the streaming tree builder (`create_compressed_fs --verity`);
//! * [`tree`]: an opened tree verified against a root hash;
//! * [`layer`]: the verifying [`ReadAt`](crate::blockdev::ReadAt) layer of
//!   the serving stack;
//! * [`check`]: offline verification of a whole image.
//!
//! docs/verity.md has the format, the chain of trust and what is not
//! covered.

pub mod build;
pub mod check;
pub mod error;
pub mod format;
pub mod layer;
pub mod source;
pub mod tree;

use std::path::{Path, PathBuf};

pub use error::Error;
pub use format::{Digest, BLOCK};

/// `IMAGE.verity`: where the tree of IMAGE is looked for by default.
pub fn tree_path_for(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_os_string();
    name.push(".verity");
    PathBuf::from(name)
}

/// Cuts a stream into 4 KiB blocks: completes `carry` (a partial block
/// from the previous call) with the start of `data`, hands every whole
/// block to `f` and leaves the remainder in `carry`.
pub fn blocks<E>(
    carry: &mut Vec<u8>,
    mut data: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    if !carry.is_empty() {
        let n = (BLOCK - carry.len()).min(data.len());
        carry.extend_from_slice(&data[..n]);
        data = &data[n..];
        if carry.len() < BLOCK {
            return Ok(());
        }
        f(carry)?;
        carry.clear();
    }
    let mut whole = data.chunks_exact(BLOCK);
    for block in &mut whole {
        f(block)?;
    }
    carry.extend_from_slice(whole.remainder());
    Ok(())
}

#[cfg(test)]
mod tests;

/// The verifying layer of a served stack: the device, what to say about
/// it, and its counters for the control socket's status.
pub struct ServeLayer {
    pub dev: std::sync::Arc<dyn crate::blockdev::ReadAt>,
    pub summary: String,
    pub stats: StatsFn,
}

/// The verifying layer's counters (blocks hashed, blocks refused).
pub type StatsFn = Box<dyn Fn() -> layer::Stats + Send + Sync>;

/// The verifying layer for a server: opens `tree` (a local file, a URL
/// or a file inside a remote ISO, see [`source`]), verifies its upper
/// levels against `root` and stacks [`layer::Verified`] on `lower`.
/// Returns the layer and a summary for the startup line. Any problem is
/// an error: a server asked to verify never serves unverified data.
pub fn serve_layer(
    image: &Path,
    tree: &source::Source,
    root: Digest,
    lower: std::sync::Arc<dyn crate::blockdev::ReadAt>,
    options: layer::Options,
    remote: crate::remote::Options,
) -> Result<ServeLayer, String> {
    let opened = tree.open(root, lower.size(), remote)?;
    let summary = format!("verity {} root {}", tree.name(), &format::to_hex(&root)[..16]);
    let name = image.display().to_string();
    let layer = std::sync::Arc::new(layer::Verified::new(lower, std::sync::Arc::new(opened), name, options));
    let counted = layer.clone();
    Ok(ServeLayer { dev: layer, summary, stats: Box::new(move || counted.stats()) })
}
