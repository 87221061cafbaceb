//! Candidate boot media, in the order they are searched.
//!
//! The kernel's view under `/sys/class/block` is enough: optical drives
//! first (sr*, or a `cdrom` capability), then removable and USB devices,
//! then fixed disks; within each device its partitions come before the
//! whole device. A hybrid ISO written to a stick shows its filesystem both
//! through the whole disk and through its first partition, which starts at
//! sector 0; mounting the whole disk claims it exclusively, and then no
//! partition of it (such as the persistence partition `mklive.sh
//! --persistence` appends) can be mounted: EBUSY. Through the partition,
//! the disk's other partitions stay usable. Devices that can never hold the medium (loop, ram, zram,
//! nbd, floppy) are left out, and so are our own NBD exports.

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Optical,
    Removable,
    Fixed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Kernel name, e.g. `sr0`, `sdb1`, `nvme0n1p2`.
    pub name: String,
    /// The node under /dev.
    pub dev: PathBuf,
    pub class: Class,
    /// The whole device this partition belongs to, if it is one.
    pub parent: Option<String>,
    /// Start sector of a partition (0 for a whole device).
    pub start: u64,
    /// Size in 512-byte sectors.
    pub sectors: u64,
}

const SKIP_PREFIXES: &[&str] = &["loop", "ram", "zram", "nbd", "ublkb", "fd", "md"];

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_number(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// Lists candidates under `sys_class_block` (normally `/sys/class/block`),
/// with device nodes under `dev_dir` (normally `/dev`), in search order.
/// `first` puts one device (and its partitions) ahead of everything else:
/// the `bootfrom=`/`live-media=` choice.
pub fn candidates(sys_class_block: &Path, dev_dir: &Path, first: Option<&str>) -> Vec<Candidate> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else { return Vec::new() };
    let mut names: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort_by_key(|n| natural_key(n));
    let mut out = Vec::new();
    for name in names {
        if SKIP_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let dir = sys_class_block.join(&name);
        let is_partition = dir.join("partition").exists();
        let whole = if is_partition { parent_name(&dir) } else { Some(name.clone()) };
        let Some(whole) = whole else { continue };
        let whole_dir = sys_class_block.join(&whole);
        let sectors = read_number(&dir.join("size")).unwrap_or(0);
        if sectors == 0 {
            continue; // empty drive, or an extended-partition stub
        }
        out.push(Candidate {
            dev: dev_dir.join(&name),
            class: classify(&whole, &whole_dir),
            parent: is_partition.then(|| whole.clone()),
            start: if is_partition { read_number(&dir.join("start")).unwrap_or(0) } else { 0 },
            sectors,
            name,
        });
    }
    let rank = |c: &Candidate| {
        let family = c.parent.as_deref().unwrap_or(&c.name);
        let chosen = first.is_some_and(|f| {
            let f = f.trim_start_matches("/dev/");
            f == c.name || f == family
        });
        (!chosen, c.class, natural_key(family), c.parent.is_none())
    };
    // Stable: partitions keep their natural order (`sdb2` before `sdb10`).
    out.sort_by_key(rank);
    out
}

/// The whole-device name of a partition: its sysfs directory's parent.
fn parent_name(part_dir: &Path) -> Option<String> {
    let real = std::fs::canonicalize(part_dir).ok()?;
    real.parent()?.file_name()?.to_str().map(str::to_string)
}

fn classify(whole: &str, whole_dir: &Path) -> Class {
    let optical = whole.starts_with("sr")
        || read_number(&whole_dir.join("capability")).is_some_and(|cap| cap & 0x8 != 0) // GENHD_FL_CD (old kernels)
        || read_trimmed(&whole_dir.join("device/type")).as_deref() == Some("5"); // SCSI TYPE_ROM
    if optical {
        return Class::Optical;
    }
    let removable = read_number(&whole_dir.join("removable")) == Some(1);
    let usb = std::fs::canonicalize(whole_dir).is_ok_and(|p| p.to_string_lossy().contains("/usb"));
    if removable || usb {
        Class::Removable
    } else {
        Class::Fixed
    }
}

/// Orders `sdb2` < `sdb10` and `sdz` < `sdaa`, as the kernel numbers them.
fn natural_key(name: &str) -> (usize, Vec<(String, u64)>) {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut num: Option<u64> = None;
    for c in name.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(d as u64));
        } else {
            if let Some(n) = num.take() {
                parts.push((std::mem::take(&mut text), n));
            }
            text.push(c);
        }
    }
    parts.push((text, num.unwrap_or(0)));
    let alpha_len = name.chars().take_while(|c| c.is_ascii_alphabetic()).count();
    (alpha_len, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Builds a fake sysfs: devices/<bus path>/<disk>[/<part>], and
    /// class/block/<name> symlinks to them, as the kernel lays them out.
    struct FakeSys {
        root: tempfile::TempDir,
    }

    impl FakeSys {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("class/block")).unwrap();
            Self { root }
        }
        fn class(&self) -> PathBuf {
            self.root.path().join("class/block")
        }
        fn disk(&self, bus: &str, name: &str, sectors: u64, attrs: &[(&str, &str)]) {
            let dir = self.root.path().join("devices").join(bus).join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
            for (k, v) in attrs {
                if let Some(parent) = Path::new(k).parent() {
                    fs::create_dir_all(dir.join(parent)).unwrap();
                }
                fs::write(dir.join(k), v).unwrap();
            }
            std::os::unix::fs::symlink(&dir, self.class().join(name)).unwrap();
        }
        fn part(&self, bus: &str, disk: &str, name: &str, start: u64, sectors: u64) {
            let dir = self.root.path().join("devices").join(bus).join(disk).join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("size"), format!("{sectors}")).unwrap();
            fs::write(dir.join("start"), format!("{start}")).unwrap();
            fs::write(dir.join("partition"), "1").unwrap();
            std::os::unix::fs::symlink(&dir, self.class().join(name)).unwrap();
        }
    }

    fn names(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn optical_then_removable_then_fixed_partitions_before_whole() {
        let sys = FakeSys::new();
        sys.disk("pci0/ata1", "sda", 1000, &[("removable", "0")]);
        sys.part("pci0/ata1", "sda", "sda1", 2048, 500);
        sys.part("pci0/ata1", "sda", "sda10", 4096, 100);
        sys.part("pci0/ata1", "sda", "sda2", 3000, 100);
        sys.disk("pci0/usb1/1-1", "sdb", 2000, &[("removable", "0")]);
        sys.part("pci0/usb1/1-1", "sdb", "sdb1", 0, 2000);
        sys.disk("pci0/ata2", "sr0", 600, &[("removable", "1")]);
        sys.disk("pci0/ata3", "sr1", 0, &[]); // no disc
        sys.disk("virtual", "loop0", 100, &[]);
        sys.disk("virtual", "nbd0", 100, &[]);
        sys.disk("pci0/mmc", "mmcblk0", 100, &[("removable", "1")]);
        let c = candidates(&sys.class(), Path::new("/dev"), None);
        assert_eq!(names(&c), vec!["sr0", "sdb1", "sdb", "mmcblk0", "sda1", "sda2", "sda10", "sda"]);
        assert_eq!(c[0].class, Class::Optical);
        assert_eq!(c[2].class, Class::Removable, "USB by sysfs path");
        assert_eq!(c[3].class, Class::Removable, "removable flag");
        assert_eq!(c[1].parent.as_deref(), Some("sdb"));
        assert_eq!(c[1].start, 0);
        assert_eq!(c[4].start, 2048);
        assert_eq!(c[0].dev, Path::new("/dev/sr0"));
    }

    #[test]
    fn bootfrom_device_goes_first_with_its_partitions() {
        let sys = FakeSys::new();
        sys.disk("pci0/ata1", "sda", 1000, &[]);
        sys.part("pci0/ata1", "sda", "sda1", 2048, 500);
        sys.disk("pci0/ata2", "sr0", 600, &[]);
        let c = candidates(&sys.class(), Path::new("/dev"), Some("/dev/sda"));
        assert_eq!(names(&c), vec!["sda1", "sda", "sr0"]);
        let c = candidates(&sys.class(), Path::new("/dev"), Some("sda1"));
        assert_eq!(names(&c)[0], "sda1");
    }

    #[test]
    fn missing_sysfs_gives_nothing() {
        assert!(candidates(Path::new("/nonexistent"), Path::new("/dev"), None).is_empty());
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["sdb10", "sdaa", "sdb2", "sda", "sdb", "nvme0n1p10", "nvme0n1p2"];
        v.sort_by_key(|n| natural_key(n));
        // Shorter alphabetic prefixes first, so sdz comes before sdaa.
        assert_eq!(v, vec!["sda", "sdb", "sdb2", "sdb10", "nvme0n1p2", "nvme0n1p10", "sdaa"]);
    }
}
