//! The filesystem probe against images made by the real mkfs tools.

use std::path::Path;
use std::process::Command;

use cloopbox::blockdev::FileDev;
use cloopbox::boot::probe::{min_io_size, probe, FsType};

fn run(cmd: &mut Command, package: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (install the Debian package {package})"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn blank(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

fn probed(path: &Path) -> cloopbox::boot::probe::FsInfo {
    probe(&FileDev::open(path).unwrap()).unwrap_or_else(|| panic!("{} not recognised", path.display()))
}

#[test]
fn real_filesystems_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree/KNOPPIX");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("KNOPPIX"), b"not really an image").unwrap();

    let ext = dir.path().join("ext4.img");
    blank(&ext, 16 << 20);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "extlabel"]).arg(&ext), "e2fsprogs");
    let info = probed(&ext);
    assert_eq!((info.fs, info.label.as_str()), (FsType::Ext, "extlabel"));
    let ext4k = dir.path().join("ext4-4k.img");
    blank(&ext4k, 16 << 20);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096"]).arg(&ext4k), "e2fsprogs");
    assert_eq!(min_io_size(&FileDev::open(&ext4k).unwrap(), &probed(&ext4k)), 4096);
    let ext1k = dir.path().join("ext4-1k.img");
    blank(&ext1k, 16 << 20);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "1024"]).arg(&ext1k), "e2fsprogs");
    assert_eq!(min_io_size(&FileDev::open(&ext1k).unwrap(), &probed(&ext1k)), 1024);

    let vfat = dir.path().join("vfat.img");
    blank(&vfat, 64 << 20);
    run(Command::new("mkfs.vfat").args(["-F", "32", "-n", "STICK"]).arg(&vfat), "dosfstools");
    let info = probed(&vfat);
    assert_eq!((info.fs, info.label.as_str()), (FsType::Vfat, "STICK"));

    let exfat = dir.path().join("exfat.img");
    blank(&exfat, 16 << 20);
    run(Command::new("mkfs.exfat").args(["-L", "Persist"]).arg(&exfat), "exfatprogs");
    let info = probed(&exfat);
    assert_eq!((info.fs, info.label.as_str()), (FsType::Exfat, "Persist"));
    // A large stick: clusters of 128 KiB, the label still found.
    let exfat_big = dir.path().join("exfat-big.img");
    blank(&exfat_big, 256 << 20);
    run(Command::new("mkfs.exfat").args(["-c", "128K", "-L", "BIGSTICK"]).arg(&exfat_big), "exfatprogs");
    assert_eq!(probed(&exfat_big).label, "BIGSTICK");
    // No label at all reads as the empty label.
    let exfat_none = dir.path().join("exfat-none.img");
    blank(&exfat_none, 16 << 20);
    run(Command::new("mkfs.exfat").arg(&exfat_none), "exfatprogs");
    assert_eq!(probed(&exfat_none).label, "");

    let iso = dir.path().join("cd.iso");
    run(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-V", "KNOPPIX_CD", "-o"])
            .arg(&iso)
            .arg(dir.path().join("tree")),
        "xorriso",
    );
    let info = probed(&iso);
    assert_eq!((info.fs, info.label.as_str()), (FsType::Iso9660, "KNOPPIX_CD"));
    assert_eq!(min_io_size(&FileDev::open(&iso).unwrap(), &info), 2048);
    assert!(info.fs.is_read_only());

    let sqfs = dir.path().join("root.sqfs");
    run(
        Command::new("mksquashfs").arg(dir.path().join("tree")).arg(&sqfs).args(["-quiet", "-noappend"]),
        "squashfs-tools",
    );
    assert_eq!(probed(&sqfs).fs, FsType::Squashfs);

    let erofs = dir.path().join("root.erofs");
    run(Command::new("mkfs.erofs").arg("-d0").arg(&erofs).arg(dir.path().join("tree")), "erofs-utils");
    assert_eq!(probed(&erofs).fs, FsType::Erofs);
}
