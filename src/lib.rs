//! cloopbox: cloop and cowloop in userspace.
//!
//! The library holds all logic; `src/main.rs` only dispatches to the applet
//! front-ends in [`applets`], which parse flags and call into the modules
//! below. Tests call the modules directly.

// No unsafe code, except in `sys::ioctl` (CD eject and loop ioctls that
// rustix has no safe wrapper for), which allows it for itself only: the
// `[lints]` table in Cargo.toml denies `unsafe_code` everywhere else and
// undocumented unsafe blocks there.

pub mod applets;
pub mod blockdev;
pub mod boot;
pub mod bufpool;
pub mod cache;
pub mod cloop;
pub mod control;
pub mod cow;
pub mod getopt;
pub mod iso9660;
pub mod nbd;
pub mod net;
pub mod progress;
pub mod remote;
pub mod serve;
pub mod sys;
pub mod ublk;
pub mod units;
pub mod verity;
