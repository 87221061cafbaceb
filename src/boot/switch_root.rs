//! Handing the root over to the live system: switch_root done right.
//!
//! The order and the paranoia follow BusyBox and util-linux (docs/boot-design.md),
//! with the checks they skip:
//!
//! 1. *Before anything is deleted*: the new root must be a mount point, and
//!    its init (`init=` or `/sbin/init`) must resolve, with symlinks
//!    followed *inside* the new root, to an executable regular file. A
//!    failure here leaves the initramfs intact for the rescue shell.
//! 2. `/` becomes recursively private: `MS_MOVE` out of a shared mount
//!    fails with EINVAL.
//! 3. `/dev`, `/proc`, `/sys` and `/run` move into the new root (so the
//!    medium under `/run/initramfs/live` stays visible); where the new root
//!    lacks the directory it is created, or, on a read-only root, the mount
//!    is detached.
//! 4. The initramfs contents are deleted without crossing into other
//!    filesystems, only if `/` really is a ramfs or tmpfs.
//! 5. `chdir(newroot)`, `mount --move . /`, `chroot(".")`, `chdir("/")`:
//!    `/` and `.` are cached dentries, so the chroot to "." is what makes
//!    the moved mount the process root.
//! 6. `exec` init. This function only returns on failure.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// `RAMFS_MAGIC` from `include/uapi/linux/magic.h`.
const RAMFS_MAGIC: i64 = 0x858458f6;
/// `TMPFS_MAGIC`.
const TMPFS_MAGIC: i64 = 0x01021994;
/// How many symlinks resolving init may follow (the kernel allows 40).
const MAX_SYMLINKS: usize = 40;

/// The mounts that move into the new root.
pub const MOVED_MOUNTS: &[&str] = &["/dev", "/proc", "/sys", "/run"];

fn err(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Resolves `init` (an absolute path as seen from the new root) inside
/// `newroot`, following symlinks relative to `newroot`. Returns the host
/// path of the final file.
pub fn resolve_in_root(newroot: &Path, init: &Path) -> io::Result<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![init.to_path_buf()];
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    while let Some(path) = pending.pop() {
        let mut comps: Vec<Component> = path.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir => resolved = PathBuf::from("/"),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let host =
                        newroot.join(candidate.strip_prefix("/").expect("resolved paths are absolute"));
                    let meta = std::fs::symlink_metadata(&host).map_err(|e| {
                        err(format!("{} (looked for {}): {e}", candidate.display(), host.display()))
                    })?;
                    if meta.file_type().is_symlink() {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(err(format!(
                                "{}: too many levels of symbolic links",
                                init.display()
                            )));
                        }
                        let target = std::fs::read_link(&host)?;
                        let rest: PathBuf = comps.iter().rev().collect();
                        comps.clear();
                        if target.is_absolute() {
                            resolved = PathBuf::from("/");
                        }
                        pending.push(target.join(rest));
                        break;
                    }
                    resolved = candidate;
                }
            }
        }
    }
    Ok(newroot.join(resolved.strip_prefix("/").expect("resolved paths are absolute")))
}

/// Step 1: everything that must hold before the point of no return.
pub fn preflight(newroot: &Path, init: &Path) -> io::Result<PathBuf> {
    let root_meta = std::fs::metadata("/")?;
    let new_meta =
        std::fs::metadata(newroot).map_err(|e| err(format!("new root {}: {e}", newroot.display())))?;
    if !new_meta.is_dir() {
        return Err(err(format!("new root {} is not a directory", newroot.display())));
    }
    if new_meta.dev() == root_meta.dev() {
        return Err(err(format!("new root {} is not a mount point", newroot.display())));
    }
    check_init(newroot, init)
}

/// The init check on its own, for tests and for `break=` diagnostics.
pub fn check_init(newroot: &Path, init: &Path) -> io::Result<PathBuf> {
    if !init.is_absolute() {
        return Err(err(format!("init {} is not an absolute path", init.display())));
    }
    let host = resolve_in_root(newroot, init)?;
    let meta = std::fs::metadata(&host)?;
    if !meta.is_file() {
        return Err(err(format!("init {} in {} is not a regular file", init.display(), newroot.display())));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(err(format!("init {} in {} is not executable", init.display(), newroot.display())));
    }
    Ok(host)
}

/// Deletes everything under `dir` that lives on the device `dev`, without
/// following symlinks or entering other filesystems, and never touching
/// `keep` (the new root). Errors on single entries are collected, not fatal:
/// a leftover file in the old initramfs only costs memory.
pub fn delete_contents(dir: &Path, dev: u64, keep: &Path, failures: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.dev() != dev {
            continue; // a mount point: another filesystem, not ours to delete
        }
        let result = if meta.is_dir() {
            delete_contents(&path, dev, keep, failures);
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
}

/// Moves the API filesystems into the new root.
fn move_api_mounts(newroot: &Path, root_dev: u64) -> Vec<String> {
    use rustix::mount::{mount_move, unmount, UnmountFlags};
    let mut warnings = Vec::new();
    for dir in MOVED_MOUNTS {
        let Ok(meta) = std::fs::metadata(dir) else { continue };
        if meta.dev() == root_dev {
            continue; // not a mount point here
        }
        let target = newroot.join(&dir[1..]);
        if !target.is_dir() && std::fs::create_dir_all(&target).is_err() {
            warnings.push(format!(
                "{} missing in the new root and cannot be created; detaching {dir}",
                target.display()
            ));
            let _ = unmount(*dir, UnmountFlags::DETACH);
            continue;
        }
        if let Err(e) = mount_move(*dir, &target) {
            warnings.push(format!("cannot move {dir} to {}: {e}; detaching it", target.display()));
            let _ = unmount(*dir, UnmountFlags::DETACH);
        }
    }
    warnings
}

/// Switches to `newroot` and execs `init` with `args` (argv[1..]). Returns
/// only on failure; failures before the point of no return leave the
/// initramfs untouched. `warn` receives non-fatal problems.
pub fn switch_root(newroot: &Path, init: &Path, args: &[String], warn: &mut dyn FnMut(&str)) -> io::Error {
    match do_switch(newroot, init, args, warn) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// A value that cannot exist: what `exec` returns on success.
pub enum Never {}

fn do_switch(newroot: &Path, init: &Path, args: &[String], warn: &mut dyn FnMut(&str)) -> io::Result<Never> {
    use rustix::mount::{mount_change, mount_move, MountPropagationFlags};
    preflight(newroot, init)?;
    let root_dev = std::fs::metadata("/")?.dev();
    mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE)
        .map_err(|e| err(format!("making / private: {e}")))?;
    for w in move_api_mounts(newroot, root_dev) {
        warn(&w);
    }
    let fs = rustix::fs::statfs("/")?;
    let magic = fs.f_type as i64;
    if magic == RAMFS_MAGIC || magic == TMPFS_MAGIC {
        let mut failures = Vec::new();
        delete_contents(Path::new("/"), root_dev, newroot, &mut failures);
        for f in failures.iter().take(5) {
            warn(&format!("could not delete {f}"));
        }
    } else {
        warn("old root is not a ramfs or tmpfs: its contents are left alone");
    }
    std::env::set_current_dir(newroot)?;
    mount_move(".", "/").map_err(|e| err(format!("moving {} to /: {e}", newroot.display())))?;
    rustix::process::chroot(".").map_err(|e| err(format!("chroot: {e}")))?;
    std::env::set_current_dir("/")?;
    exec(init, args)
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| err(format!("{} contains a NUL byte", s.to_string_lossy())))
}

/// Replaces this process with `program`; returns only the error.
pub fn exec(program: &Path, args: &[String]) -> io::Result<Never> {
    use std::os::unix::process::CommandExt;
    cstring(program.as_os_str())?;
    let e = std::process::Command::new(program).args(args).exec();
    Err(err(format!("exec {}: {e}", program.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn exe(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn init_symlinks_resolve_inside_the_new_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        exe(&r.join("lib/systemd/systemd"));
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        // An absolute link must resolve inside the new root, not on the host.
        symlink("/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        assert_eq!(check_init(r, Path::new("/sbin/init")).unwrap(), r.join("lib/systemd/systemd"));
        // A relative link with .. components.
        symlink("../lib/systemd/systemd", r.join("sbin/relinit")).unwrap();
        assert_eq!(check_init(r, Path::new("/sbin/relinit")).unwrap(), r.join("lib/systemd/systemd"));
        // A directory symlink in the middle (usrmerge: /bin -> usr/bin).
        exe(&r.join("usr/bin/busybox"));
        symlink("usr/bin", r.join("bin")).unwrap();
        assert_eq!(check_init(r, Path::new("/bin/busybox")).unwrap(), r.join("usr/bin/busybox"));
        // .. cannot climb out of the new root.
        symlink("../../../../../../lib/systemd/systemd", r.join("sbin/climb")).unwrap();
        assert_eq!(check_init(r, Path::new("/sbin/climb")).unwrap(), r.join("lib/systemd/systemd"));
    }

    #[test]
    fn bad_inits_are_refused_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        let missing = check_init(r, Path::new("/sbin/init")).unwrap_err().to_string();
        assert!(missing.contains("/sbin/init"), "{missing}");
        std::fs::write(r.join("sbin/noexec"), b"x").unwrap();
        assert!(check_init(r, Path::new("/sbin/noexec")).unwrap_err().to_string().contains("not executable"));
        assert!(check_init(r, Path::new("/sbin")).unwrap_err().to_string().contains("not a regular file"));
        assert!(check_init(r, Path::new("sbin/init")).unwrap_err().to_string().contains("absolute"));
        symlink("/sbin/loop", r.join("sbin/loop")).unwrap();
        assert!(check_init(r, Path::new("/sbin/loop")).unwrap_err().to_string().contains("symbolic links"));
        symlink("/nowhere", r.join("sbin/dangling")).unwrap();
        assert!(check_init(r, Path::new("/sbin/dangling")).is_err());
    }

    #[test]
    fn preflight_refuses_a_root_that_is_not_a_mount_point() {
        let root = tempfile::tempdir().unwrap();
        exe(&root.path().join("sbin/init"));
        // A plain directory on the same filesystem as / is not a mount point
        // (the temp dir may be on its own mount; then use a subdirectory).
        let e = preflight(root.path(), Path::new("/sbin/init"));
        if std::fs::metadata(root.path()).unwrap().dev() == std::fs::metadata("/").unwrap().dev() {
            assert!(e.unwrap_err().to_string().contains("not a mount point"));
        }
        assert!(preflight(&root.path().join("nope"), Path::new("/sbin/init")).is_err());
    }

    #[test]
    fn delete_contents_spares_the_new_root_and_other_filesystems() {
        let top = tempfile::tempdir().unwrap();
        let t = top.path();
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/file"), b"x").unwrap();
        std::fs::write(t.join("top"), b"x").unwrap();
        std::fs::create_dir_all(t.join("newroot/keepme")).unwrap();
        symlink("/etc/passwd", t.join("link")).unwrap();
        let dev = std::fs::metadata(t).unwrap().dev();
        let mut failures = Vec::new();
        delete_contents(t, dev, &t.join("newroot"), &mut failures);
        assert!(failures.is_empty(), "{failures:?}");
        let left: Vec<_> = std::fs::read_dir(t).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("newroot")]);
        assert!(t.join("newroot/keepme").is_dir());
        assert!(Path::new("/etc/passwd").exists(), "symlinks are removed, never followed");
    }

    #[test]
    fn delete_contents_does_not_cross_into_a_mounted_filesystem() {
        use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
        let top = tempfile::tempdir().unwrap();
        let mnt = top.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        mount("tmpfs", &mnt, "tmpfs", MountFlags::empty(), c"size=1m")
            .expect("mounting a tmpfs needs root (the test suite runs as root in CI)");
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = unmount(self.0, UnmountFlags::DETACH);
            }
        }
        let _guard = Unmount(&mnt);
        std::fs::write(mnt.join("survivor"), b"x").unwrap();
        std::fs::write(top.path().join("victim"), b"x").unwrap();
        let dev = std::fs::metadata(top.path()).unwrap().dev();
        let mut failures = Vec::new();
        delete_contents(top.path(), dev, Path::new("/nonexistent"), &mut failures);
        assert!(!top.path().join("victim").exists());
        assert!(mnt.join("survivor").exists(), "the mounted filesystem was entered");
    }
}
