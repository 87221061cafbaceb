//! Live boot: what `init` needs before and after it finds the medium.

pub mod checksums;
pub mod cmdline;
pub mod exitrd;
pub mod init;
pub mod isofile;
pub mod kmod;
pub mod log;
pub mod media;
pub mod mediacheck;
pub mod options;
pub mod persist;
pub mod probe;
pub mod scan;
pub mod switch_root;
pub mod toram;
