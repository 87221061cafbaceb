//! `toram`: copy the images into RAM, then let the medium go.
//!
//! The copy goes to its own tmpfs, sized to the images, after checking
//! that it leaves enough memory to run the system (docs/boot-design.md: copying
//! what does not fit must be refused cleanly, not halt the boot). The
//! progress line gives percent, throughput and ETA.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::log::Log;
use crate::blockdev::{FileDev, ReadAt};

pub const DIR: &str = "/run/initramfs/toram";
/// Memory that must stay free after the copy, at least.
pub const MIN_SPARE: u64 = 256 << 20;
const CHUNK: usize = 4 << 20;

/// `MemAvailable` from a /proc/meminfo text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Why the images cannot go to RAM, if they cannot: `needed` bytes of
/// images, `available` bytes of memory, keeping [`MIN_SPARE`] or a
/// quarter of what is available, whichever is more.
pub fn refuse_reason(needed: u64, available: u64) -> Option<String> {
    let spare = MIN_SPARE.max(available / 4);
    let mib = |b: u64| b.div_ceil(1 << 20);
    needed.checked_add(spare).is_none_or(|total| total > available).then(|| {
        format!(
            "toram needs {} MiB of RAM ({} MiB of images plus {} MiB to run the system), but only {} MiB are available",
            mib(needed.saturating_add(spare)),
            mib(needed),
            mib(spare),
            mib(available)
        )
    })
}

/// What a copy is called on the progress line ("toram", "fetch").
struct Progress<'a> {
    label: &'a str,
    done: u64,
    total: u64,
    start: Instant,
    shown: Instant,
}

impl Progress<'_> {
    fn add(&mut self, n: usize, log: &Log) {
        self.done += n as u64;
        if self.shown.elapsed().as_millis() >= 500 {
            self.shown = Instant::now();
            let secs = self.start.elapsed().as_secs_f64().max(0.001);
            let rate = self.done as f64 / secs;
            let eta = (self.total.saturating_sub(self.done)) as f64 / rate.max(1.0);
            log.progress(&format!(
                "{}: {:3}% {} of {} MiB, {:.0} MB/s, ETA {:.0}s",
                self.label,
                self.done * 100 / self.total.max(1),
                self.done >> 20,
                self.total >> 20,
                rate / 1e6,
                eta
            ));
        }
    }
}

/// Copies `src` (read by offset) into the new file `dst`.
fn copy_one(src: &dyn ReadAt, what: &str, dst: &Path, progress: &mut Progress, log: &Log) -> io::Result<()> {
    let mut output = std::fs::File::create(dst)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dst.display())))?;
    let mut buf = vec![0u8; CHUNK];
    let size = src.size();
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(CHUNK as u64) as usize;
        src.read_at(&mut buf[..n], at)
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: offset {at}: {e}")))?;
        output
            .write_all(&buf[..n])
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dst.display())))?;
        at += n as u64;
        progress.add(n, log);
    }
    Ok(())
}

/// Refuses what does not fit, then mounts a tmpfs of `total` bytes at [`DIR`].
fn ram_for(total: u64) -> Result<(), String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let available = mem_available(&meminfo).ok_or("/proc/meminfo has no MemAvailable")?;
    if let Some(why) = refuse_reason(total, available) {
        return Err(why);
    }
    std::fs::create_dir_all(DIR).map_err(|e| format!("mkdir {DIR}: {e}"))?;
    use rustix::mount::{mount, MountFlags as F};
    // Rounded up to whole MiB, plus one for the directory.
    let size = format!("size={}m,mode=0700", (total >> 20) + 2);
    let data = std::ffi::CString::new(size).expect("no NUL");
    mount("cloopbox-toram", DIR, "tmpfs", F::NOSUID | F::NODEV, data.as_c_str())
        .map_err(|e| format!("mount a tmpfs on {DIR}: {e}"))
}

/// Copies `sources` (name, device) into the tmpfs at [`DIR`] with a
/// progress line labelled `label`; returns the copies' paths.
fn copy_all(label: &str, sources: &[(String, Arc<dyn ReadAt>)], log: &Log) -> Result<Vec<PathBuf>, String> {
    let total = sources.iter().map(|(_, d)| d.size()).fold(0u64, u64::saturating_add);
    ram_for(total)?;
    let start = Instant::now();
    let mut progress = Progress { label, done: 0, total, start, shown: start };
    let mut copies = Vec::new();
    for (name, dev) in sources {
        let file = Path::new(name).file_name().map_or("image".into(), |f| f.to_string_lossy().into_owned());
        let dst = Path::new(DIR).join(file);
        if let Err(e) = copy_one(&**dev, name, &dst, &mut progress, log) {
            log.progress_done();
            let _ = rustix::mount::unmount(DIR, rustix::mount::UnmountFlags::empty());
            return Err(format!("copy to RAM failed: {e}"));
        }
        copies.push(dst);
    }
    log.progress_done();
    let secs = start.elapsed().as_secs_f64();
    log.info(&format!(
        "{label}: {} MiB copied in {secs:.1} s ({:.0} MB/s), {total} bytes",
        total >> 20,
        total as f64 / secs.max(0.001) / 1e6
    ));
    Ok(copies)
}

/// `fetch=`: the image at `url` (inside an ISO if the URL names one)
/// downloaded into RAM; returns its path there. `Err`: why not (too
/// little RAM, or the server failed), and the caller boots lazily.
/// `verify` (`cloopbox.verity=`): the image's hash tree (URL.verity, or
/// PATH.verity inside the ISO) comes along as `NAME.verity`, after its
/// superblock matched the image's size (so a lying server cannot make it
/// large). It is checked against the root hash when the copy is served,
/// and the daemon then verifies every block of the copy as it reads it,
/// exactly as from a medium (docs/verity.md).
pub fn fetch(url: &str, verify: bool, ca_file: Option<&Path>, log: &Log) -> Result<PathBuf, String> {
    let remote = crate::remote::options(false, None, ca_file);
    let opened = crate::remote::open(url, remote.clone()).map_err(|e| format!("{url}: {e}"))?;
    log.info(&format!("fetch: {} into RAM", opened.summary));
    // The copy is named as the image: the URL's last path segment, or the
    // file's name inside the ISO.
    let name = match &opened.iso {
        None => {
            let path = url.split(['#', '?']).next().unwrap_or(url);
            path.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("image").to_string()
        }
        Some(iso) => iso.path.rsplit('/').next().unwrap_or("KNOPPIX").to_string(),
    };
    let mut sources = vec![(name.clone(), opened.dev.clone())];
    if verify {
        // The tree covers the uncompressed image.
        let data_size = match crate::cloop::reader::Image::from_reader(opened.dev.clone(), Path::new(url)) {
            Ok(image) => image.size(),
            Err(_) => opened.dev.size(),
        };
        let tree = crate::verity::source::Source::next_to(Path::new(url), opened.iso.as_ref());
        let (dev, _) = tree.open_file(data_size, remote)?;
        sources.push((format!("{name}.verity"), dev));
    }
    let mut copies = copy_all("fetch", &sources, log)?;
    Ok(copies.remove(0))
}

/// Copies `images` into a tmpfs at [`DIR`]; returns the copies' paths in
/// the same order. `Err` leaves nothing mounted and the caller boots from
/// the medium.
pub fn copy(images: &[PathBuf], log: &Log) -> Result<Vec<PathBuf>, String> {
    // An image's hash tree goes along: cloopbox.verity= needs it.
    let trees: Vec<PathBuf> =
        images.iter().map(|i| crate::verity::tree_path_for(i)).filter(|t| t.is_file()).collect();
    let mut sources: Vec<(String, Arc<dyn ReadAt>)> = Vec::new();
    for img in images.iter().chain(&trees) {
        let dev = FileDev::open(img).map_err(|e| format!("{}: {e}", img.display()))?;
        sources.push((img.display().to_string(), Arc::new(dev)));
    }
    let mut copies = copy_all("toram", &sources, log)?;
    copies.truncate(images.len());
    Ok(copies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let m = "MemTotal:        2000000 kB\nMemFree:  100 kB\nMemAvailable:    1500000 kB\n";
        assert_eq!(mem_available(m), Some(1_536_000_000));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn refuses_what_does_not_fit_and_says_how_much_is_needed() {
        let gib = 1u64 << 30;
        assert_eq!(refuse_reason(gib, 4 * gib), None);
        let why = refuse_reason(3 * gib, 3 * gib).unwrap();
        assert!(why.contains("needs 3840 MiB") && why.contains("only 3072 MiB"), "{why}");
        assert!(refuse_reason(100 << 20, 300 << 20).is_some(), "the 256 MiB floor applies");
        assert!(refuse_reason(u64::MAX, u64::MAX).is_some(), "no overflow");
    }
}
