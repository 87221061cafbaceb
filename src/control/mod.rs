//! The control channel of running `cloopd` servers: what `cowdev` and
//! `cowsync` talk to, in place of cowloop's `/dev/cow/ctl` ioctls and
//! `/proc/cow/N`.
//!
//! Every cloopd attached to a kernel device listens on the abstract unix
//! socket `@cloopbox/nbdN` or `@cloopbox/ublkbN` ([`proto::socket_name`]). Abstract names live in
//! the network namespace, not in a filesystem, so they keep working after
//! switch_root and never leave stale files; the listening ones are found in
//! `/proc/net/unix` ([`client::devices`]). Only root (or the server's own
//! user) may connect (`SO_PEERCRED`, [`proto::peer_allowed`]).
//!
//! Layout: [`proto`] is the pure protocol (one command line in, one reply
//! out, bounded both ways), [`server`] the listener thread and its
//! [`server::Handler`] trait, [`client`] the requests, [`status`] the
//! `/proc/cow/N`-style block, [`meter`] the byte counters behind it, and
//! [`target`] the handler cloopd puts behind the socket.

pub mod client;
pub mod meter;
pub mod proto;
pub mod server;
pub mod status;
pub mod target;

pub use client::ClientError;
pub use proto::{Command, Info};
pub use server::{ControlServer, Handler, Pending};
pub use status::{CowStatus, Status};
pub use target::Target;
