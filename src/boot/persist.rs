//! Persistence (`cow=DEV:/PATH`, also spelt `rd.live.overlay=` and
//! `persistent=`): the changes of a live system kept on a writable disk.
//!
//! For an image with a writable filesystem, PATH is a cowloop cowfile:
//! created on the first boot, reused on the next, repaired by cloopd when
//! a crash left it dirty. A cowfile made for another image (its rdofile
//! fingerprint or size differ) is refused with the reason, and the boot
//! goes on with a fresh cowfile in RAM: reusing it would corrupt the
//! filesystem. For read-only images (overlayfs), PATH is a directory that
//! holds the overlay's `upper` and `work` directories.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::log::Log;
use super::probe::probe;
use super::scan::candidates;
use crate::blockdev::{FileDev, ReadAt};
use crate::cow::cowfile;
use crate::cow::open::BaseId;
use crate::sys::mountinfo;

/// Where the persistence filesystem is mounted, unless it already was.
pub const DIR: &str = "/run/initramfs/persist";

/// What is at the cowfile path.
#[derive(Debug, PartialEq, Eq)]
pub enum CowCheck {
    /// Nothing yet: cloopd creates it.
    Missing,
    Clean,
    /// Left dirty (a crash or power loss): cloopd repairs it.
    Dirty,
    /// Not a cowfile for this image, and why.
    Foreign(String),
}

/// Hex digits of a UUID or serial, lower case, without separators.
fn normalize_id(s: &str) -> String {
    s.chars().filter(char::is_ascii_hexdigit).collect::<String>().to_ascii_lowercase()
}

/// Does a probed filesystem match `LABEL=x` or `UUID=x`?
pub fn matches_spec(spec: &str, label: &str, id: &str) -> bool {
    if let Some(want) = spec.strip_prefix("LABEL=") {
        return label == want;
    }
    let Some(want) = spec.strip_prefix("UUID=") else { return false };
    let want = normalize_id(want);
    let hex = normalize_id(id.split_once(':').map_or(id, |(_, h)| h));
    // FAT and exFAT serials are stored little-endian, shown big-endian.
    let reversed: String =
        hex.as_bytes().chunks(2).rev().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    !want.is_empty() && (want == hex || want == reversed)
}

/// Finds the device of `spec`, waiting up to `timeout` for it to appear.
pub fn resolve(spec: &str, timeout: Duration, log: &Log) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if spec.starts_with("/dev/") {
            if Path::new(spec).exists() {
                return Some(PathBuf::from(spec));
            }
        } else {
            for c in candidates(Path::new("/sys/class/block"), Path::new("/dev"), None) {
                let Some(fs) = FileDev::open(&c.dev).ok().as_ref().and_then(|d| probe(d)) else { continue };
                if matches_spec(spec, &fs.label, &fs.id) {
                    return Some(c.dev);
                }
            }
        }
        if start.elapsed() >= timeout {
            return None;
        }
        if let Some(loader) = super::kmod::Loader::get() {
            loader.scan();
        }
        log.progress(&format!("waiting for the persistence device {spec}: {}s", start.elapsed().as_secs()));
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Mounts `dev` read-write and returns where. A filesystem that is
/// already mounted (the boot medium itself) is remounted read-write in
/// place: the kernel refuses a second, writable mount of it.
pub fn mount_rw(dev: &Path) -> io::Result<PathBuf> {
    use rustix::mount::{mount, mount_remount, MountFlags as F};
    let canonical = std::fs::canonicalize(dev).unwrap_or_else(|_| dev.to_path_buf());
    let rdev =
        rustix::fs::stat(&canonical).map(|st| (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)));
    for m in mountinfo::current() {
        if Path::new(&m.source) == canonical || rdev.as_ref().is_ok_and(|d| *d == m.dev) {
            mount_remount(m.point.as_str(), F::NOATIME | F::NODEV | F::NOSUID, c"").map_err(|e| {
                io::Error::new(io::Error::from(e).kind(), format!("remount {} read-write: {e}", m.point))
            })?;
            return Ok(PathBuf::from(m.point));
        }
    }
    let fs = FileDev::open(&canonical)
        .ok()
        .as_ref()
        .and_then(|d| probe(d))
        .ok_or_else(|| io::Error::other(format!("{}: no filesystem found", dev.display())))?;
    if fs.fs.is_read_only() {
        return Err(io::Error::other(format!("{}: {} cannot be written", dev.display(), fs.fs.mount_type())));
    }
    std::fs::create_dir_all(DIR)?;
    super::kmod::need_fs(fs.fs.mount_type());
    mount(&canonical, DIR, fs.fs.mount_type(), F::NOATIME | F::NODEV | F::NOSUID, c"").map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mount {} ({}) on {DIR}: {e}", dev.display(), fs.fs.mount_type()),
        )
    })?;
    Ok(PathBuf::from(DIR))
}

/// Is the cowfile at `path` the one for `base`?
pub fn check_cowfile(path: &Path, base: &dyn ReadAt) -> CowCheck {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return CowCheck::Missing,
        Err(e) => return CowCheck::Foreign(format!("cannot open: {e}")),
    };
    let head = match cowfile::read_header(&file, path) {
        Ok(h) => h,
        Err(e) => return CowCheck::Foreign(e.to_string()),
    };
    let id = match BaseId::of(base) {
        Ok(id) => id,
        Err(e) => return CowCheck::Foreign(format!("cannot read the image for its fingerprint: {e}")),
    };
    match head.check_for_base(id.numblocks, id.fingerprint) {
        Err(e) => CowCheck::Foreign(format!("it belongs to a different image: {e}")),
        Ok(_) if head.is_dirty() => CowCheck::Dirty,
        Ok(_) => CowCheck::Clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::MemDev;
    use crate::cow::overlay::{Overlay, OverlayOptions};

    #[test]
    fn label_and_uuid_specs() {
        assert!(matches_spec("LABEL=persist", "persist", "ext:00"));
        assert!(!matches_spec("LABEL=persist", "Persist", "ext:00"));
        let id = "ext:0123456789abcdef0123456789abcdef";
        assert!(matches_spec("UUID=01234567-89AB-CDEF-0123-456789abcdef", "", id));
        assert!(matches_spec("UUID=1234-ABCD", "", "vfat:cdab3412"), "FAT serials read little-endian");
        assert!(!matches_spec("UUID=", "", "vfat:"));
        assert!(!matches_spec("/dev/sda1", "", id));
    }

    fn base(seed: u8) -> MemDev {
        // Every 1 KiB unit gets its own checksum, which the fingerprint
        // is made of.
        let mut data = vec![1u8; 1 << 20];
        for unit in data.chunks_mut(1024) {
            unit[0] = seed;
        }
        MemDev::new(data)
    }

    #[test]
    fn a_cowfile_is_checked_against_its_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.cow");
        let mine = base(3);
        assert_eq!(check_cowfile(&path, &mine), CowCheck::Missing);
        let opts = OverlayOptions { create: true, ..OverlayOptions::default() };
        Overlay::open(base(3), &path, &opts).unwrap().close().unwrap();
        assert_eq!(check_cowfile(&path, &mine), CowCheck::Clean);
        match check_cowfile(&path, &base(5)) {
            CowCheck::Foreign(why) => assert!(why.contains("different image"), "{why}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(dir.path().join("junk"), b"not a cowfile").unwrap();
        assert!(matches!(check_cowfile(&dir.path().join("junk"), &mine), CowCheck::Foreign(_)));
    }
}
