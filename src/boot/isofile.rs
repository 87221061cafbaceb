//! Booting from an ISO file on a disk (`bootfrom=/dev/sda1/k.iso`,
//! `findiso=`, `iso-scan/filename=`): the file is attached read-only to a
//! free loop device with partition scanning (hybrid ISOs carry a
//! partition table; docs/boot-design.md, dracut#2464), and the loop device is then
//! searched like any medium.

use std::io;
use std::path::{Path, PathBuf};

use crate::sys::ioctl::{self, LO_FLAGS_AUTOCLEAR, LO_FLAGS_PARTSCAN, LO_FLAGS_READ_ONLY};

/// Where the filesystem holding the ISO file is mounted (read-only).
pub const HOLDER_DIR: &str = "/run/initramfs/isodev";

/// A loop device with the ISO attached. It detaches itself when its last
/// user closes it (autoclear), so this handle must live until the medium
/// is mounted from it.
pub struct Attached {
    pub dev: PathBuf,
    _hold: std::fs::File,
}

/// Attaches `file` to a free loop device.
pub fn attach(file: &Path) -> io::Result<Attached> {
    use rustix::fs::{Mode, OFlags};
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let control = rustix::fs::open("/dev/loop-control", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ctx("/dev/loop-control (is the loop module loaded?)", e.into()))?;
    let backing = std::fs::File::open(file).map_err(|e| ctx(&file.display().to_string(), e))?;
    // Another opener may take the free device between the two calls: try
    // again with the next one.
    let mut last = io::Error::other("no free loop device");
    for _ in 0..8 {
        let index = ioctl::loop_get_free(&control).map_err(|e| ctx("LOOP_CTL_GET_FREE", e))?;
        let dev = PathBuf::from(format!("/dev/loop{index}"));
        let loopdev = match std::fs::OpenOptions::new().read(true).open(&dev) {
            Ok(f) => f,
            Err(e) => {
                last = ctx(&dev.display().to_string(), e);
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let name = file.to_string_lossy();
        match ioctl::loop_attach(
            &loopdev,
            &backing,
            LO_FLAGS_READ_ONLY | LO_FLAGS_PARTSCAN | LO_FLAGS_AUTOCLEAR,
            &name,
        ) {
            Ok(()) => return Ok(Attached { dev, _hold: loopdev }),
            Err(e) if e.raw_os_error() == Some(16) => last = ctx(&dev.display().to_string(), e),
            Err(e) => return Err(ctx(&format!("attach {} to {}", file.display(), dev.display()), e)),
        }
    }
    Err(last)
}
