//! Finding the live medium by its content.
//!
//! A device is the medium when, mounted read-only, it has
//! `<knoppix_dir>/<knoppix_name>`. Labels and UUIDs are never trusted
//! (boot.md §6). The search repeats until the timeout, because USB sticks
//! and their partitions appear late; each filesystem is mounted at most
//! once, whichever device node shows it (a hybrid ISO is the same
//! filesystem on `sdb` and `sdb1`).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::log::Log;
use super::probe::{probe, FsInfo};
use super::scan::{candidates, Candidate};
use crate::blockdev::FileDev;

/// Filesystems a medium may carry, tried in this order when the probe's
/// answer does not mount.
pub const MEDIUM_FS: &[&str] = &["iso9660", "udf", "vfat", "exfat", "ext4", "ntfs3"];

/// The medium, mounted.
#[derive(Debug)]
pub struct Medium {
    pub device: PathBuf,
    pub fs: FsInfo,
    pub fstype: String,
    pub mountpoint: PathBuf,
    /// The images, in stacking order: KNOPPIX, KNOPPIX1, KNOPPIX2, ...
    pub images: Vec<PathBuf>,
}

/// Where to look and how long.
pub struct Search<'a> {
    pub sys_class_block: &'a Path,
    pub dev_dir: &'a Path,
    pub mountpoint: &'a Path,
    pub dir: &'a str,
    pub name: &'a str,
    pub first: Option<&'a str>,
    pub timeout: Duration,
}

/// What was tried, for the failure message.
#[derive(Default, Debug)]
pub struct Attempts {
    pub lines: Vec<String>,
    seen: HashSet<String>,
    mounted_ids: HashSet<String>,
}

impl Attempts {
    fn note(&mut self, key: String, line: String) {
        if self.seen.insert(key) {
            self.lines.push(line);
        }
    }
}

/// Finds `name` in `dir`, exactly or else ignoring ASCII case (a FAT stick
/// written on another system may say `knoppix`).
pub fn find_entry(dir: &Path, name: &str) -> Option<PathBuf> {
    let exact = dir.join(name);
    if exact.exists() {
        return Some(exact);
    }
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// The images under `root/dir`: `name` first, then `name1`, `name2`, ...
/// in numeric order, as Knoppix stacks them.
pub fn find_images(root: &Path, dir: &str, name: &str) -> Vec<PathBuf> {
    let mut here = root.to_path_buf();
    for part in dir.split('/') {
        match find_entry(&here, part) {
            Some(p) => here = p,
            None => return Vec::new(),
        }
    }
    let Some(first) = find_entry(&here, name).filter(|p| p.is_file()) else { return Vec::new() };
    let mut numbered: Vec<(u32, PathBuf)> = std::fs::read_dir(&here)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let file = e.file_name().into_string().ok()?;
                    let (head, tail) = file.split_at_checked(name.len())?;
                    let n: u32 = tail.parse().ok().filter(|_| head.eq_ignore_ascii_case(name))?;
                    (n >= 1 && !tail.starts_with('0') && e.path().is_file()).then(|| (n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    numbered.sort();
    std::iter::once(first).chain(numbered.into_iter().map(|(_, p)| p)).collect()
}

/// Filesystem types this kernel can mount now (`/proc/filesystems`).
pub fn kernel_filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Mounts `device` read-only at `target`, trying the probed type first.
/// Returns the type that worked.
pub fn mount_ro(device: &Path, target: &Path, probed: &str, others: &[&str]) -> io::Result<String> {
    use rustix::mount::{mount, MountFlags};
    let available = kernel_filesystems();
    let mut tried = Vec::new();
    let mut last = io::Error::other("no filesystem type to try");
    for fstype in std::iter::once(probed).chain(others.iter().copied().filter(|t| *t != probed)) {
        if !available.is_empty() && !available.iter().any(|a| a == fstype) {
            continue;
        }
        let flags = MountFlags::RDONLY | MountFlags::NOATIME | MountFlags::NODEV | MountFlags::NOSUID;
        match mount(device, target, fstype, flags, c"") {
            Ok(()) => return Ok(fstype.to_string()),
            Err(e) => {
                tried.push(format!("{fstype}: {e}"));
                last = e.into();
            }
        }
    }
    Err(io::Error::new(last.kind(), format!("{}: cannot mount ({})", device.display(), tried.join(", "))))
}

/// One pass over the current devices. `Ok(Some)` when the medium is found.
fn try_candidates(s: &Search<'_>, log: &Log, attempts: &mut Attempts) -> Option<Medium> {
    for c in candidates(s.sys_class_block, s.dev_dir, s.first) {
        if let Some(m) = try_candidate(s, log, attempts, &c) {
            return Some(m);
        }
    }
    None
}

fn try_candidate(s: &Search<'_>, log: &Log, attempts: &mut Attempts, c: &Candidate) -> Option<Medium> {
    let key = format!("{}:{}", c.name, c.sectors);
    if attempts.seen.contains(&key) {
        return None;
    }
    let fs = match FileDev::open(&c.dev).ok().as_ref().and_then(|d| probe(d)) {
        Some(fs) => fs,
        None => {
            attempts.note(key, format!("{}: no filesystem found", c.dev.display()));
            return None;
        }
    };
    if attempts.mounted_ids.contains(&fs.id) {
        attempts.note(
            key,
            format!("{}: {} already tried through another device", c.dev.display(), fs.fs.mount_type()),
        );
        return None;
    }
    log.debug(&format!("trying {} ({}, label '{}')", c.dev.display(), fs.fs.mount_type(), fs.label));
    let fstype = match mount_ro(&c.dev, s.mountpoint, fs.fs.mount_type(), MEDIUM_FS) {
        Ok(t) => t,
        Err(e) => {
            attempts.note(key, e.to_string());
            return None;
        }
    };
    attempts.mounted_ids.insert(fs.id.clone());
    let images = find_images(s.mountpoint, s.dir, s.name);
    if images.is_empty() {
        attempts
            .note(key, format!("{}: {fstype} mounted, but no {}/{} on it", c.dev.display(), s.dir, s.name));
        if let Err(e) = rustix::mount::unmount(s.mountpoint, rustix::mount::UnmountFlags::empty()) {
            log.warn(&format!("cannot unmount {}: {e}", c.dev.display()));
            let _ = rustix::mount::unmount(s.mountpoint, rustix::mount::UnmountFlags::DETACH);
        }
        return None;
    }
    Some(Medium { device: c.dev.clone(), fs, fstype, mountpoint: s.mountpoint.to_path_buf(), images })
}

/// Searches until the medium is found or the timeout passes, with a
/// progress line. On failure, the lines say what was tried.
pub fn find_medium(s: &Search<'_>, log: &Log) -> Result<Medium, Vec<String>> {
    std::fs::create_dir_all(s.mountpoint).map_err(|e| vec![format!("{}: {e}", s.mountpoint.display())])?;
    let start = Instant::now();
    let mut attempts = Attempts::default();
    let mut waited = false;
    let mut shown = None;
    loop {
        if let Some(m) = try_candidates(s, log, &mut attempts) {
            if waited {
                log.progress_done();
            }
            return Ok(m);
        }
        let elapsed = start.elapsed();
        if elapsed >= s.timeout {
            if waited {
                log.progress_done();
            }
            return Err(attempts.lines);
        }
        waited = true;
        if shown == Some(elapsed.as_secs()) {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        shown = Some(elapsed.as_secs());
        log.progress(&format!(
            "waiting for a medium with {}/{}: {}s of {}s ({} devices tried)",
            s.dir,
            s.name,
            elapsed.as_secs(),
            s.timeout.as_secs(),
            attempts.seen.len()
        ));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_in_knoppix_order_with_case_tolerance() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("knoppix");
        std::fs::create_dir(&d).unwrap();
        for f in ["KNOPPIX", "KNOPPIX10", "KNOPPIX2", "knoppix1", "KNOPPIX01", "KNOPPIX.md5", "KNOPPIXx"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::create_dir(d.join("KNOPPIX3")).unwrap(); // a directory is not an image
        let imgs = find_images(root.path(), "KNOPPIX", "KNOPPIX");
        let names: Vec<_> = imgs.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, vec!["KNOPPIX", "knoppix1", "KNOPPIX2", "KNOPPIX10"]);
    }

    #[test]
    fn no_image_no_list() {
        let root = tempfile::tempdir().unwrap();
        assert!(find_images(root.path(), "KNOPPIX", "KNOPPIX").is_empty());
        std::fs::create_dir_all(root.path().join("KNOPPIX/KNOPPIX")).unwrap();
        assert!(find_images(root.path(), "KNOPPIX", "KNOPPIX").is_empty(), "a directory is not an image");
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/IMG"), b"x").unwrap();
        assert_eq!(find_images(root.path(), "a/b", "IMG").len(), 1, "nested knoppix_dir");
    }
}
