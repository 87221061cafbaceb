//! The status block: `/proc/cow/N` of cowloop 3.1 (docs/formats.md), label
//! for label where the meaning carries over, then what a userspace server
//! adds (the device, the block cache, bytes served).
//!
//! ```text
//!    cowloop version: cloopbox 0.1.0
//!
//!       device state: cowopenrw
//!             device: /dev/nbd0
//!      pid of thread:      1234
//!
//!     read-only file: /images/fs.cloop
//!           rdoreads:        17
//!
//! copy-on-write file: /data/cow
//!      state cowfile:     dirty
//!      bitmap-blocks:         2 (of 1024 bytes)
//!   cowblocks in use:       117 (of 1024 bytes)
//!           cowreads:         3
//!          cowwrites:        40
//!
//!         cache hits:       120
//!       cache misses:        17
//!         bytes read:    491520
//!      bytes written:    119808
//! ```
//!
//! Differences from the driver: "number of opens" is gone (the kernel
//! does not tell an NBD server), "pid of thread" is the server's pid, the
//! state words are `cowopenrw ` or nothing (no cowfile), and "state
//! cowfile" is `dirty` while anything written since the last sync is not
//! yet in the on-disk bitmap and header. Where the cowfile's filesystem
//! cannot punch holes (FAT, exFAT), a line `zeroed (no holes): N` after
//! cowwrites counts the 1 KiB units overwritten with zeros instead. Without a cowfile the
//! copy-on-write section is one line, `copy-on-write file: -`; without a
//! cache (a raw base, or `--cache-size 0`) the cache lines are left out.
//! With `--root-hash`, two more lines after the cache's: `verity checked`
//! (4 KiB data blocks hashed against the tree) and `verity refused` (blocks
//! that did not match, each failed with EIO).

use std::fmt::Write as _;
use std::path::PathBuf;

use super::proto::display_path;

/// The cowfile half of a status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CowStatus {
    pub path: PathBuf,
    pub dirty: bool,
    /// Bitmap bytes (a multiple of 1024).
    pub mapsize: u64,
    /// 1 KiB units in the cowfile now.
    pub cowused: u64,
    pub cowreads: u64,
    pub cowwrites: u64,
    /// Units overwritten with zeros where the filesystem cannot punch
    /// holes; the line is left out while it is 0.
    pub zeroed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub device: String,
    pub pid: u32,
    pub image: PathBuf,
    /// Read requests to the image.
    pub rdoreads: u64,
    pub cow: Option<CowStatus>,
    /// The decompressed-block cache's counters.
    pub cache: Option<crate::cache::Stats>,
    /// (4 KiB data blocks hashed, blocks that did not match) of the
    /// verifying layer, when there is one.
    pub verity: Option<(u64, u64)>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// The driver's `"%18s: %9s"`-style line.
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:>18}: {value:>9}");
}

impl Status {
    pub fn render(&self) -> String {
        let mut out = String::new();
        field(&mut out, "cowloop version", format!("cloopbox {}", env!("CARGO_PKG_VERSION")));
        out.push('\n');
        let state = if self.cow.is_some() { "cowopenrw " } else { "" };
        let _ = writeln!(out, "{:>18}: {state}", "device state");
        let _ = writeln!(out, "{:>18}: {}", "device", self.device);
        field(&mut out, "pid of thread", self.pid);
        out.push('\n');
        let _ = writeln!(out, "{:>18}: {}", "read-only file", display_path(&self.image));
        field(&mut out, "rdoreads", self.rdoreads);
        out.push('\n');
        match &self.cow {
            Some(c) => {
                let _ = writeln!(out, "{:>18}: {}", "copy-on-write file", display_path(&c.path));
                field(&mut out, "state cowfile", if c.dirty { "dirty" } else { "clean" });
                let _ = writeln!(out, "{:>18}: {:>9} (of 1024 bytes)", "bitmap-blocks", c.mapsize / 1024);
                let _ = writeln!(out, "{:>18}: {:>9} (of 1024 bytes)", "cowblocks in use", c.cowused);
                field(&mut out, "cowreads", c.cowreads);
                field(&mut out, "cowwrites", c.cowwrites);
                if c.zeroed > 0 {
                    field(&mut out, "zeroed (no holes)", c.zeroed);
                }
            }
            None => {
                let _ = writeln!(out, "{:>18}: -", "copy-on-write file");
            }
        }
        out.push('\n');
        if let Some(c) = self.cache {
            field(&mut out, "cache hits", c.hits);
            field(&mut out, "cache misses", c.misses);
            field(&mut out, "cache prefetched", c.prefetched);
            // Of those, how many a read then used; the rest was decoding
            // for nothing (or is still waiting to be read).
            field(&mut out, "cache prefetch hit", c.prefetch_used);
        }
        if let Some((checked, refused)) = self.verity {
            field(&mut out, "verity checked", checked);
            field(&mut out, "verity refused", refused);
        }
        field(&mut out, "bytes read", self.bytes_read);
        field(&mut out, "bytes written", self.bytes_written);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_driver_labels_aligned() {
        let s = Status {
            device: "/dev/nbd0".into(),
            pid: 1234,
            image: "/images/my fs.cloop".into(),
            rdoreads: 17,
            cow: Some(CowStatus {
                path: "/data/cow".into(),
                dirty: true,
                mapsize: 2048,
                cowused: 117,
                cowreads: 3,
                cowwrites: 40,
                zeroed: 0,
            }),
            cache: Some(crate::cache::Stats {
                hits: 120,
                misses: 17,
                prefetched: 9,
                prefetch_used: 7,
                ..Default::default()
            }),
            verity: Some((2048, 1)),
            bytes_read: 491520,
            bytes_written: 119808,
        };
        let text = s.render();
        let expected = format!(
            "   cowloop version: cloopbox {}\n\n      device state: cowopenrw \n            device: /dev/nbd0\n     pid of thread:      1234\n\n    read-only file: /images/my fs.cloop\n          rdoreads:        17\n\ncopy-on-write file: /data/cow\n     state cowfile:     dirty\n     bitmap-blocks:         2 (of 1024 bytes)\n  cowblocks in use:       117 (of 1024 bytes)\n          cowreads:         3\n         cowwrites:        40\n\n        cache hits:       120\n      cache misses:        17\n  cache prefetched:         9\ncache prefetch hit:         7\n    verity checked:      2048\n    verity refused:         1\n        bytes read:    491520\n     bytes written:    119808\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn read_only_and_uncached_servers_leave_sections_out() {
        let s = Status { device: "/dev/nbd3".into(), image: "/x".into(), ..Status::default() };
        let text = s.render();
        assert!(text.contains("copy-on-write file: -\n"), "{text}");
        assert!(!text.contains("state cowfile"), "{text}");
        assert!(!text.contains("cache hits"), "{text}");
        assert!(!text.contains("verity"), "{text}");
        assert!(text.contains("      device state: \n"), "{text}");
    }

    #[test]
    fn a_newline_in_a_path_cannot_fake_a_line() {
        let s = Status { image: "/a\n          rdoreads: 99".into(), ..Status::default() };
        let text = s.render();
        assert_eq!(text.lines().filter(|l| l.trim_start().starts_with("rdoreads:")).count(), 1, "{text}");
    }
}
