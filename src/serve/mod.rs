//! Serving an image over NBD: everything between a parsed command line
//! and a running server, so that `cloopd` is a thin front-end and tests
//! exercise the very stack production serves.
//!
//! * [`base`]: opening the bottom layer (a cloop image, or a file raw);
//! * [`stack`]: stacking cache, cow overlay and meter over it;
//! * [`daemon`]: the server's life: signals, kernel attach, control
//!   socket, the event loop and the ordered stop;
//! * [`watch`]: `--watch-space`, the free space of an overlay upper
//!   directory;
//! * [`spawn`]: starting a `cloopd` child and reading its device line
//!   (used by `init`, `liveroot` and `cowdev`).

pub mod base;
pub mod daemon;
pub mod spawn;
pub mod stack;
pub mod ublk;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Serves `o` on its transport until it is stopped.
pub fn run(o: Options) -> Result<(), String> {
    match o.transport {
        Transport::Nbd => daemon::run(o),
        Transport::Ublk => ublk::run(o),
    }
}

/// How the kernel reaches the stack (`--transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// NBD: sockets, and the kernel's NBD client with `--device`.
    #[default]
    Nbd,
    /// The kernel's ublk driver: `/dev/ublkbN` (Linux 6.x, `ublk_drv`).
    Ublk,
}
pub use stack::{build, Stack};

/// Default size of the decompressed-block cache.
pub const DEFAULT_CACHE: u64 = 64 << 20;
/// Default prefetch window, in image blocks (BENCHMARKS.md, "Prefetch").
pub const DEFAULT_PREFETCH: u32 = 0;

/// Default request shape of a kernel device (BENCHMARKS.md, "Request
/// shape").
pub const DEFAULT_QUEUE: crate::nbd::kernel::QueueShape = crate::nbd::kernel::QueueShape {
    max_sectors_kb: crate::nbd::kernel::Limit::Auto,
    read_ahead_kb: crate::nbd::kernel::Limit::Auto,
};

/// What to serve and how: `cloopd`'s command line, validated but not yet
/// acted on.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub image: PathBuf,
    pub cow: Option<PathBuf>,
    pub unix: Vec<PathBuf>,
    pub tcp: Vec<SocketAddr>,
    /// 0 disables the cache.
    pub cache_size: u64,
    /// Blocks to decode ahead of a sequential reader (0: no prefetch).
    pub prefetch: u32,
    pub max_connections: usize,
    pub threads: usize,
    pub export_name: String,
    pub description: Option<String>,
    pub quiet: bool,
    /// A kernel device to attach: `Some(None)` takes a free one.
    pub device: Option<Option<u32>>,
    pub connections: usize,
    /// The kernel device's request size and read-ahead (`--max-request`,
    /// `--read-ahead`).
    pub queue: crate::nbd::kernel::QueueShape,
    /// The device's logical block size; `None` probes the filesystem.
    pub block_size: Option<u32>,
    pub root_daemon: bool,
    pub background: bool,
    /// `--root-hash`, `--verity-tree`, `--check-at-most-once`.
    pub verity: Verity,
    /// `--watch-space DIR`: say on the console when DIR's filesystem is full.
    pub watch_space: Option<PathBuf>,
    /// `--ca-file FILE`: PEM certificates trusted for an `https://` image
    /// besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    pub transport: Transport,
}

/// Verified serving: every block checked against a dm-verity hash tree
/// whose root hash is trusted (docs/verity.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verity {
    pub root: Option<crate::verity::Digest>,
    /// The tree; `None` is `IMAGE.verity`.
    pub tree: Option<PathBuf>,
    pub once: bool,
}

impl Options {
    /// Serve `image` read-only with the defaults, on nothing yet.
    pub fn new(image: impl Into<PathBuf>) -> Options {
        Options {
            image: image.into(),
            cow: None,
            unix: Vec::new(),
            tcp: Vec::new(),
            cache_size: DEFAULT_CACHE,
            prefetch: DEFAULT_PREFETCH,
            max_connections: 64,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            export_name: String::new(),
            description: None,
            quiet: false,
            device: None,
            connections: 1,
            queue: DEFAULT_QUEUE,
            block_size: None,
            root_daemon: false,
            background: false,
            verity: Verity::default(),
            watch_space: None,
            ca_file: None,
            transport: Transport::Nbd,
        }
    }
}
