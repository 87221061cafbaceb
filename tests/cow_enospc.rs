//! The cowfile on a 256 KiB tmpfs, filled up: the write that does not fit
//! fails with ENOSPC and nothing else; everything written before reads back
//! (now and after a reopen), the low-space warning was given once, and a
//! trim gives the memory back so that writing works again.
//!
//! Needs root for the mount (CI runs as root); without it the test fails
//! with a message saying so instead of skipping.

use cloopbox::blockdev::{BlockDev, MemDev, ReadAt};
use cloopbox::cow::{Overlay, OverlayOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

const CHUNK: usize = 4096;

/// A tmpfs mounted for the test; unmounted on drop, even after a failure.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            rustix::process::geteuid().is_root(),
            "cow_enospc must run as root: it mounts a small tmpfs to fill up (CI runs the tests as root)"
        );
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "cloopbox-enospc"])
            .arg(dir)
            .status()
            .expect("cannot run mount (package mount)");
        assert!(status.success(), "mount -t tmpfs on {} failed: {status}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn base() -> Vec<u8> {
    (0..4 << 20).map(|i: usize| (i % 253) as u8 | 1).collect()
}

fn chunk(i: usize) -> Vec<u8> {
    vec![(i % 250) as u8 + 2; CHUNK]
}

#[test]
fn a_full_cowfile_fails_one_write_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Tmpfs::mount(dir.path(), "256k");
    let cow = mount.0.join("full.cow");
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = warnings.clone();
    let opts = OverlayOptions {
        low_space_bytes: 96 * 1024,
        warn: Arc::new(move |m| sink.lock().unwrap().push(m.to_string())),
        ..Default::default()
    };
    let ov = Overlay::open(MemDev::new(base()), &cow, &opts).unwrap();
    // Fill: every chunk lands on its own pages, 8 KiB apart.
    let mut written = 0;
    let err = loop {
        assert!(written < 200, "256 KiB never filled up");
        match ov.write_at(&chunk(written), (written * 2 * CHUNK) as u64) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(written > 20, "only {written} chunks fitted");
    assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
    assert!(err.to_string().contains("full.cow: write data at offset"), "{err}");
    // Low space, then full, each said once; the next failed write says
    // nothing more.
    let again = ov.write_at(&chunk(written + 1), ((written + 1) * 2 * CHUNK) as u64).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::StorageFull, "{again}");
    let warned = warnings.lock().unwrap().clone();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].contains("almost full"), "{warned:?}");
    assert!(
        warned[1].contains("copy-on-write space full: cowfile ") && warned[1].contains("full.cow"),
        "{warned:?}"
    );
    assert!(warned[1].contains("delete files on it and run fstrim"), "{warned:?}");

    // The failed range still reads as the base; everything before is there.
    let check = |ov: &Overlay<MemDev>| {
        let mut buf = vec![0u8; CHUNK];
        for i in 0..written {
            ov.read_at(&mut buf, (i * 2 * CHUNK) as u64).unwrap();
            assert_eq!(buf, chunk(i), "chunk {i}");
        }
        let at = written * 2 * CHUNK;
        ov.read_at(&mut buf, at as u64).unwrap();
        assert_eq!(buf, base()[at..at + CHUNK], "the failed write left traces");
    };
    check(&ov);
    assert_eq!(ov.stats().cowused, (written * 4) as u64);
    // The bitmap was allocated at open: a flush needs no new space.
    ov.flush().unwrap();
    drop(ov);
    let ov = Overlay::open(MemDev::new(base()), &cow, &opts).unwrap();
    check(&ov);

    // Trimming gives tmpfs memory back: the write that failed now fits.
    ov.trim(0, (8 * 2 * CHUNK) as u64).unwrap();
    ov.write_at(&chunk(written), (written * 2 * CHUNK) as u64).unwrap();
    ov.flush().unwrap();
    let mut buf = vec![0u8; CHUNK];
    ov.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![0; CHUNK]);
    drop(ov);
    drop(mount);
}
