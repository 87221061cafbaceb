//! `--watch-space DIR`: the free space of the filesystem that holds an
//! overlayfs upper directory (the changes of a live session on an
//! iso9660 image). The kernel writes there itself, so no layer of ours
//! sees the ENOSPC; a thread looks every two seconds instead, says once
//! on the console when that filesystem is full, and re-arms when it has
//! room again (the user deleted files). The directory is opened at the
//! start: after switch_root its path no longer leads there for a daemon
//! started in the initramfs, the open directory still does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cow::overlay::WarnFn;
use crate::cow::space::space;

const EVERY: Duration = Duration::from_secs(2);
/// Less free than this is full: a writer could not get one more 64 KiB.
const FULL_BELOW: u64 = 64 << 10;

/// What the watch does with one look: `Some(message)` when it must speak.
/// `said` is whether it spoke about the current shortage.
fn step(dir: &Path, (free, total): (u64, u64), said: &mut bool, hint: &str) -> Option<String> {
    if free < FULL_BELOW {
        if *said {
            return None;
        }
        *said = true;
        return Some(format!(
            "copy-on-write space full: {} has no space left ({} KiB of {} KiB free); writes fail (ENOSPC) until \
             space is freed: delete files{hint}",
            dir.display(),
            free >> 10,
            total >> 10
        ));
    }
    // Room again (a twentieth of the filesystem, at least 1 MiB): the
    // next shortage is said again.
    if free >= (total / 20).max(1 << 20) {
        *said = false;
    }
    None
}

/// Opens `dir` and starts the watch thread; it lives as long as the
/// process.
pub fn spawn(dir: PathBuf, hint: &'static str, warn: WarnFn) -> std::io::Result<()> {
    let open =
        File::open(&dir).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    std::thread::Builder::new().name("watch-space".into()).spawn(move || {
        let mut said = false;
        loop {
            if let Some(msg) = space(&open).and_then(|s| step(&dir, s, &mut said, hint)) {
                warn(&msg);
            }
            std::thread::sleep(EVERY);
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_is_said_once_per_shortage() {
        let dir = Path::new("/run/initramfs/cow");
        let mut said = false;
        let total = 32 << 20;
        assert_eq!(step(dir, (10 << 20, total), &mut said, ""), None);
        let msg = step(dir, (4096, total), &mut said, "; hint").unwrap();
        assert!(msg.contains(
            "copy-on-write space full: /run/initramfs/cow has no space left (4 KiB of 32768 KiB free)"
        ));
        assert!(msg.ends_with("delete files; hint"), "{msg}");
        assert_eq!(step(dir, (0, total), &mut said, ""), None);
        // A little room is not room again: still the same shortage.
        assert_eq!(step(dir, (512 << 10, total), &mut said, ""), None);
        assert_eq!(step(dir, (0, total), &mut said, ""), None);
        assert_eq!(step(dir, (8 << 20, total), &mut said, ""), None);
        assert!(step(dir, (0, total), &mut said, "").is_some());
    }

    #[test]
    fn a_real_directory_has_space() {
        let (free, total) = space(&File::open("/").unwrap()).unwrap();
        assert!(total > 0 && free <= total);
    }
}
