//! Finding the live medium by its content.
//!
//! A device is the medium when, mounted read-only, it has
//! `<knoppix_dir>/<knoppix_name>`. Labels and UUIDs are never trusted
//! (docs/boot-design.md). The search repeats until the timeout, because USB sticks
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

/// What makes a filesystem the one we look for.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    /// The live medium: `dir/name` (plus `name1`, `name2`, ...).
    Images { dir: &'a str, name: &'a str },
    /// A filesystem holding this file (an absolute path whose last
    /// component may hold `*` and `?`, matching exactly one file).
    File(&'a str),
}

impl Want<'_> {
    pub fn describe(&self) -> String {
        match self {
            Want::Images { dir, name } => format!("{dir}/{name}"),
            Want::File(path) => path.trim_start_matches('/').to_string(),
        }
    }

    /// The files that make `root` the one, or why it is not.
    fn look(&self, root: &Path) -> Result<Vec<PathBuf>, String> {
        match self {
            Want::Images { dir, name } => Ok(find_images(root, dir, name)),
            Want::File(pattern) => find_file(root, pattern).map(|f| f.into_iter().collect()),
        }
    }
}

/// Where to look and how long.
pub struct Search<'a> {
    pub sys_class_block: &'a Path,
    pub dev_dir: &'a Path,
    pub mountpoint: &'a Path,
    pub want: Want<'a>,
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

/// `*` and `?` glob match, ASCII case ignored (FAT and ISO names).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    super::kmod::glob(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase())
}

/// Finds the file `pattern` (absolute; directories matched ignoring case,
/// the last component a glob) under `root`. `Ok(None)` when absent, an
/// error when the glob is ambiguous.
pub fn find_file(root: &Path, pattern: &str) -> Result<Option<PathBuf>, String> {
    let trimmed = pattern.trim_matches('/');
    let (dirs, last) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    let mut here = root.to_path_buf();
    for part in dirs.split('/').filter(|p| !p.is_empty()) {
        match find_entry(&here, part) {
            Some(p) => here = p,
            None => return Ok(None),
        }
    }
    if !last.contains(['*', '?']) {
        return Ok(find_entry(&here, last).filter(|p| p.is_file()));
    }
    let Ok(entries) = std::fs::read_dir(&here) else { return Ok(None) };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(last, n)) && e.path().is_file())
        .map(|e| e.path())
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(format!(
            "{pattern} matches {} files ({}): give the full name",
            found.len(),
            found
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
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

/// Why a filesystem the probe found cannot be mounted: its driver is
/// neither built in nor a module of this kernel.
fn no_driver(fstype: &str) -> String {
    let hint = match fstype {
        // ntfs3 came with Linux 5.15, and some distributions' kernels
        // (Debian 12's 6.1) leave it out.
        "ntfs3" => {
            " (NTFS needs the ntfs3 driver, in Linux 5.15 and later; this kernel was built without it: \
                    copy the ISO to a FAT32, exFAT or ext4 disk, or boot a kernel with ntfs3)"
        }
        _ => "",
    };
    format!("{fstype}: this kernel has no {fstype} driver{hint}")
}

/// Mounts `device` read-only at `target`, trying the probed type first.
/// Returns the type that worked.
pub fn mount_ro(device: &Path, target: &Path, probed: &str, others: &[&str]) -> io::Result<String> {
    use rustix::mount::{mount, MountFlags};
    let available = kernel_filesystems();
    let mut tried = Vec::new();
    let mut last = io::Error::other("no filesystem type to try");
    let loader = super::kmod::Loader::get();
    // Without /proc/filesystems, every type is worth a try.
    let known = std::path::Path::new("/proc/filesystems").exists();
    let mut available = available;
    for fstype in std::iter::once(probed).chain(others.iter().copied().filter(|t| *t != probed)) {
        if known && !available.iter().any(|a| a == fstype) {
            // Its driver is loaded only now that something may need it.
            let Some(loader) = loader else { continue };
            loader.ensure_fs(fstype);
            available = kernel_filesystems();
            if !available.iter().any(|a| a == fstype) {
                // The type the probe found: say that the kernel lacks it,
                // rather than only how the other types failed.
                if fstype == probed {
                    tried.push(no_driver(fstype));
                }
                continue;
            }
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
    let images = s.want.look(s.mountpoint).unwrap_or_else(|why| {
        log.warn(&format!("{}: {why}", c.dev.display()));
        Vec::new()
    });
    if images.is_empty() {
        attempts
            .note(key, format!("{}: {fstype} mounted, but no {} on it", c.dev.display(), s.want.describe()));
        if let Err(e) = rustix::mount::unmount(s.mountpoint, rustix::mount::UnmountFlags::empty()) {
            log.warn(&format!("cannot unmount {}: {e}", c.dev.display()));
            let _ = rustix::mount::unmount(s.mountpoint, rustix::mount::UnmountFlags::DETACH);
        }
        return None;
    }
    Some(Medium { device: c.dev.clone(), fs, fstype, mountpoint: s.mountpoint.to_path_buf(), images })
}

/// One attempt on one device (a loop device holding an ISO file), and on
/// its partitions after it; no waiting.
pub fn try_device(s: &Search<'_>, log: &Log, dev: &Path) -> Result<Medium, Vec<String>> {
    std::fs::create_dir_all(s.mountpoint).map_err(|e| vec![format!("{}: {e}", s.mountpoint.display())])?;
    let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut names = vec![name.clone()];
    if let Ok(rd) = std::fs::read_dir(s.sys_class_block.join(&name)) {
        let mut parts: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&name) && n.len() > name.len())
            .collect();
        parts.sort();
        names.extend(parts);
    }
    let mut attempts = Attempts::default();
    for n in names {
        let sectors = std::fs::read_to_string(s.sys_class_block.join(&n).join("size"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let c = Candidate {
            dev: s.dev_dir.join(&n),
            name: n,
            class: super::scan::Class::Fixed,
            parent: None,
            start: 0,
            sectors,
        };
        if let Some(m) = try_candidate(s, log, &mut attempts, &c) {
            return Ok(m);
        }
    }
    Err(attempts.lines)
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
        // Drivers for devices that appeared meanwhile (a USB stick's
        // storage driver only once the stick is there).
        if let Some(loader) = super::kmod::Loader::get() {
            loader.scan();
        }
        if shown == Some(elapsed.as_secs()) {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        shown = Some(elapsed.as_secs());
        log.progress(&format!(
            "waiting for a medium with {}: {}s of {}s ({} devices tried)",
            s.want.describe(),
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
    fn globs() {
        assert!(glob_match("K*.iso", "knoppix_9.1.ISO"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "ac"));
        assert!(!glob_match("*.iso", "k.iso.part"));
        assert!(glob_match("*a*b*c", "xxaybzzc"));
        assert!(!glob_match(&"*a".repeat(30), &"a".repeat(29)), "a hostile pattern ends quickly");
    }

    #[test]
    fn a_missing_driver_is_named_and_ntfs_explained() {
        assert_eq!(no_driver("udf"), "udf: this kernel has no udf driver");
        let ntfs = no_driver("ntfs3");
        assert!(
            ntfs.starts_with("ntfs3: this kernel has no ntfs3 driver (NTFS needs the ntfs3 driver"),
            "{ntfs}"
        );
        assert!(ntfs.contains("copy the ISO to a FAT32, exFAT or ext4 disk"), "{ntfs}");
    }

    #[test]
    fn iso_files_by_name_or_unique_glob() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("Isos")).unwrap();
        std::fs::write(root.path().join("Isos/KNOPPIX_V9.iso"), b"x").unwrap();
        std::fs::write(root.path().join("Isos/other.img"), b"x").unwrap();
        let found = find_file(root.path(), "/isos/K*.iso").unwrap().unwrap();
        assert!(found.ends_with("Isos/KNOPPIX_V9.iso"));
        assert!(find_file(root.path(), "/isos/knoppix_v9.iso").unwrap().is_some(), "case ignored");
        assert_eq!(find_file(root.path(), "/isos/none*.iso").unwrap(), None);
        assert_eq!(find_file(root.path(), "/nodir/k.iso").unwrap(), None);
        std::fs::write(root.path().join("Isos/KNOPPIX_V8.iso"), b"x").unwrap();
        let e = find_file(root.path(), "/isos/K*.iso").unwrap_err();
        assert!(e.contains("matches 2 files") && e.contains("KNOPPIX_V8.iso"), "{e}");
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
