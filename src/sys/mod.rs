//! Kernel interfaces, each behind one small typed module.
//!
//! Everything here speaks to the kernel through rustix's safe wrappers;
//! the crate denies `unsafe`, so an interface that cannot be reached safely
//! gets its own file with an audited, documented exception.

pub mod daemon;
pub mod genl;
pub mod ioctl;
pub mod mountinfo;
pub mod nbd_netlink;
pub mod rtnl;
