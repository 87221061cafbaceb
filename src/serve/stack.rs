//! Stacking the layers over the base, top to bottom:
//!
//! ```text
//!   [Metered] ── [cow Overlay] ── [Cache] ── [verity] ── cloop Image | FileDev
//! ```
//!
//! The cache exists only over cloop images (a raw file already has the
//! page cache) and only when the cache size is not 0; the verity layer
//! only with `--root-hash`, right above the image, so every block is
//! checked before the cache keeps it or a client gets it; the overlay only
//! with a cowfile; the meter always, at the top, so it counts what the
//! clients were served. The transport asks its queries (extents,
//! residency, prefetch) of the top, and each layer passes them down.

use std::sync::Arc;

use super::base::{open_base, zero_probe, Base};
use super::Options;
use crate::blockdev::{BlockDev, ReadAt};
use crate::cache::Cache;
use crate::control::meter::Metered;
use crate::control::target::{CacheStats, CowStats, CowSync, VerityStats};
use crate::cow::overlay::{Overlay, OverlayOptions, WarnFn};
use crate::nbd::{BlockSizes, Export};
use crate::units::Bytes;
use crate::verity::source::Source;

/// The built stack and what to say about it.
pub struct Stack {
    pub export: Export,
    /// "IMAGE (what it is, size) read-only|cow COWFILE".
    pub summary: String,
    /// The logical block size a kernel device should have.
    pub device_block: u32,
    /// The image's own block size (what one decode yields; 4096 for a
    /// raw file).
    pub image_block: u32,
    /// Handles for the control socket's status.
    pub meter: Arc<Metered>,
    pub cow_stats: Option<CowStats>,
    /// cowsync: the cowfile made clean on disk (a flush leaves it DIRTY).
    pub cow_sync: Option<CowSync>,
    pub cache_stats: Option<CacheStats>,
    pub verity_stats: Option<VerityStats>,
}

/// The image (cached when it is a cloop image), its block size and what
/// it is.
struct Read {
    dev: Arc<dyn ReadAt>,
    block_size: u32,
    what: String,
    cache_stats: Option<CacheStats>,
    verity_stats: Option<VerityStats>,
}

/// With `--root-hash`, the verifying layer over `lower` and its counters;
/// else `lower`.
/// The tree is `--verity-tree` (a file or a URL), else `next_to`, the
/// tree next to the image (docs/verity.md).
fn verified(
    o: &Options,
    lower: Arc<dyn ReadAt>,
    next_to: &Source,
    what: &mut String,
    warn: &WarnFn,
) -> Result<(Arc<dyn ReadAt>, Option<VerityStats>), String> {
    let Some(root) = o.verity.root else { return Ok((lower, None)) };
    let options =
        crate::verity::layer::Options { check_at_most_once: o.verity.once, warn: Some(warn.clone()) };
    let tree = o.verity.tree.as_deref().map_or_else(|| next_to.clone(), Source::given);
    let remote = crate::remote::options(o.root_daemon, Some(warn.clone()), o.ca_file.as_deref());
    let layer = crate::verity::serve_layer(&o.image, &tree, root, lower, options, remote).map_err(|e| {
        if o.verity.tree.is_none() && e.starts_with("no hash tree") {
            format!("{e}; --verity-tree FILE|URL names another one")
        } else {
            e
        }
    })?;
    *what = format!("{what}, {}", layer.summary);
    Ok((layer.dev, Some(layer.stats)))
}

fn read_layers(o: &Options, warn: &WarnFn) -> Result<Read, String> {
    let (base, tree) = open_base(&o.image, o.root_daemon, warn, o.ca_file.as_deref())?;
    let image = match base {
        Base::Raw(file) => {
            let mut what = "raw".to_string();
            let (dev, verity_stats) = verified(o, file, &tree, &mut what, warn)?;
            return Ok(Read { dev, block_size: 4096, what, cache_stats: None, verity_stats });
        }
        Base::Cloop(image) => image,
    };
    let info = image.info().clone();
    let mut what =
        format!("{} image, {} blocks of {}", info.version, info.num_blocks, Bytes(info.block_size.into()));
    let (lower, verity_stats) = verified(o, image.clone(), &tree, &mut what, warn)?;
    if o.cache_size == 0 {
        let what = what + ", no cache";
        return Ok(Read { dev: lower, block_size: info.block_size, what, cache_stats: None, verity_stats });
    }
    let probe = zero_probe(image);
    let cache = Cache::new(lower, info.block_size, o.cache_size)
        .map_err(|e| format!("{}: {e}", o.image.display()))?
        .with_zero_probe(probe);
    let cache = Arc::new(cache);
    cache.start_prefetch(o.prefetch).map_err(|e| format!("starting the prefetch thread: {e}"))?;
    let what = format!("{what}, cache {}", Bytes(cache.capacity()));
    let counted = cache.clone();
    let cache_stats: Option<CacheStats> = Some(Box::new(move || counted.stats()));
    Ok(Read { dev: cache, block_size: info.block_size, what, cache_stats, verity_stats })
}

/// The filesystem inside decides the device's logical block size: an
/// iso9660 does not mount on 4096-byte sectors, an ext4 with 4 KiB blocks
/// is best served with 4096.
fn device_block(o: &Options, read: &dyn ReadAt) -> u32 {
    o.block_size.unwrap_or_else(|| {
        crate::boot::probe::probe(read)
            .map(|fs| crate::boot::probe::min_io_size(read, &fs).min(4096))
            .unwrap_or(512)
    })
}

/// How a live system gets more room for its changes (docs/boot-options.md).
pub const ROOT_FULL_HINT: &str =
    "; for more, boot with a larger cowsize= (the RAM for changes, default 50%) or keep the changes on a disk with cow=DEVICE:/FILE";

/// Opens the image and stacks the layers `o` asks for. `warn` reports the
/// layers' trouble while serving (a cowfile running out of space): on
/// stderr in the foreground, to the console and kmsg for a daemon, whose
/// stderr is gone.
pub fn build(o: &Options, warn: WarnFn) -> Result<Stack, String> {
    let Read { dev: read, block_size, what, cache_stats, verity_stats } = read_layers(o, &warn)?;
    let size = read.size();
    let device_block = device_block(o, &*read);
    let mut cow_stats: Option<CowStats> = None;
    let mut cow_sync: Option<CowSync> = None;
    let (mut export, rw) = match &o.cow {
        None => (Export::read_only(read), "read-only".to_string()),
        Some(path) => {
            let opts = OverlayOptions {
                create: true,
                repair: true,
                base_name: o.image.display().to_string(),
                full_hint: if o.root_daemon { ROOT_FULL_HINT.into() } else { String::new() },
                warn: warn.clone(),
                ..OverlayOptions::default()
            };
            let overlay = Overlay::open(read, path, &opts).map_err(|e| e.to_string())?;
            if let Some(report) = overlay.repaired() {
                warn(&format!("{}: was not closed cleanly; repaired: {report:?}", path.display()));
            }
            let created = if overlay.created() { ", created" } else { "" };
            let overlay = Arc::new(overlay);
            // DIRTY stays set while writes come; this clears it when idle
            // (docs/cow.md).
            Overlay::spawn_idle_cleaner(&overlay, crate::cow::overlay::IDLE_CLEAN)
                .map_err(|e| e.to_string())?;
            let counted = overlay.clone();
            cow_stats = Some(Box::new(move || counted.stats()));
            let synced = overlay.clone();
            cow_sync = Some(Box::new(move || synced.sync()));
            (Export::writable(overlay as Arc<dyn BlockDev>), format!("cow {}{created}", path.display()))
        }
    };
    export.name = o.export_name.clone();
    export.description = o.description.clone().unwrap_or_else(|| format!("{} ({what})", o.image.display()));
    export.block_sizes = BlockSizes::for_preferred(block_size);
    let meter = Arc::new(Metered::new(export.dev.clone()));
    export.dev = meter.clone();
    let summary = format!("{} ({what}, {}) {rw}", o.image.display(), Bytes(size));
    Ok(Stack {
        export,
        summary,
        device_block,
        image_block: block_size,
        meter,
        cow_stats,
        cow_sync,
        cache_stats,
        verity_stats,
    })
}
