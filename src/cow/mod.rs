//! The copy-on-write layer: cowloop 3.1 cowfiles in userspace.
//!
//! * [`header`]: the head block in both ABIs, the driver's geometry and the
//!   rdofile fingerprint;
//! * [`bitmap`]: one bit per 1 KiB unit, held in memory;
//! * [`cowfile`]: file-level I/O and the open/create sequence;
//! * [`overlay`]: [`Overlay`], the block device (base + cowfile), with the
//!   on-disk ordering behind its durability contract;
//! * [`repair`], [`merge`], [`pack`]: what `cowrepair`, `cowmerge` and
//!   `cowpack` do;
//! * [`error`]: [`CowError`], one variant per broken rule.
//!
//! The design, the durability contract and the deliberate differences from
//! cowloop 3.1 are written up in `docs/cow.md`.

pub mod bitmap;
pub mod cowfile;
pub mod error;
pub mod header;
pub mod merge;
pub mod open;
pub mod overlay;
pub mod pack;
mod rangelock;
pub mod repair;
pub(crate) mod space;

pub use error::{CowError, FormatError};
pub use header::{Abi, Geometry, Header};
pub use overlay::{Overlay, OverlayOptions, Stats};
