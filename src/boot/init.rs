//! `init`: PID 1 of the initramfs, from the kernel's hand-over to
//! switch_root.
//!
//! Stages (each a `break=` point):
//! 1. early userspace: proc, sys, devtmpfs, /run; console and kmsg;
//!    /proc/cmdline (`top`);
//! 2. kernel modules from modules.dep (`modules`);
//! 3. the medium, found by content (or the ISO file holding it, on a loop
//!    device) and mounted read-only under /run/initramfs/live (`premount`);
//! 4. the media check and toram, if asked; each image served by a `cloopd`
//!    root-storage daemon on /dev/nbdN; a writable filesystem inside gets
//!    the block-level cowfile, a read-only one (iso9660, squashfs, erofs:
//!    real Knoppix images) an overlayfs; the cowfile or overlay upper lives
//!    on a size-limited tmpfs under /run, or on the persistence disk;
//! 5. the root mounted at /newroot, the exit initramfs staged in
//!    /run/initramfs (`bottom`), then switch_root.
//!
//! Steps 3 to 5 are [`locate`] and [`mount_root`], which `liveroot` runs
//! inside a dracut initramfs too.
//!
//! PID 1 never exits and never panics: a failure prints what was tried and
//! drops to the rescue shell (`/bin/sh`, if the initramfs has one), or
//! waits with the message on screen.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cmdline::Cmdline;
use super::isofile;
use super::kmod::ModuleDb;
use super::log::Log;
use super::media::{find_medium, Medium, Search, Want};
use super::options::{BootOptions, CowSize, NetRoot, Persistence, Stage, TransportChoice, VerityRoots};
use super::probe::{min_io_size, probe, FsInfo};
use super::switch_root::{check_init, switch_root};
use crate::cloop::reader::Image;

/// Where things live during the boot; all of it under /run, which moves
/// into the new root, so nothing important sits in the deleted initramfs.
pub const LIVE: &str = "/run/initramfs/live";
pub const COW_DIR: &str = "/run/initramfs/cow";
pub const IMAGES_DIR: &str = "/run/initramfs/images";
pub const NEWROOT: &str = "/newroot";
/// Written by `mkinitramfs.sh --media LIST` (absent when it carries every
/// medium's drivers): the boot media this initramfs has drivers for.
pub const MEDIA_FILE: &str = "/etc/cloopbox/media";

/// Modules a live boot may need; what the kernel lacks or has built in is
/// skipped (and reported in debug mode).
/// The crc32c algorithms come first: libcrc32c and ext4 look the
/// algorithm up when they initialise, and nothing loads it on demand here.
pub const BOOT_MODULES: &[&str] = &[
    "crc32c_generic",
    "crc32c_intel",
    "nbd",
    "loop",
    "overlay",
    "squashfs",
    "isofs",
    "udf",
    "cdrom",
    "sr_mod",
    "ahci",
    "ata_piix",
    "sd_mod",
    "virtio_blk",
    "virtio_scsi",
    "virtio_pci",
    "usb_storage",
    "uas",
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "nls_ascii",
    "exfat",
    "ntfs3",
    "ext4",
    "erofs",
    "mmc_block",
    "sdhci_pci",
    "nvme",
    // In an initramfs built with mkinitramfs.sh -N only.
    "virtio_net",
    "e1000",
    "e1000e",
];

/// A boot failure: what went wrong, and the lines that say what was tried.
pub struct Failure {
    pub what: String,
    pub details: Vec<String>,
}

impl Failure {
    fn new(what: impl Into<String>) -> Failure {
        Failure { what: what.into(), details: Vec::new() }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::new(e.to_string())
    }
}

fn mkdir(path: &str) -> io::Result<()> {
    std::fs::create_dir_all(path).map_err(|e| io::Error::new(e.kind(), format!("mkdir {path}: {e}")))
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: rustix::mount::MountFlags,
    data: &str,
) -> io::Result<()> {
    mkdir(target)?;
    super::kmod::need_fs(fstype);
    let data = std::ffi::CString::new(data).map_err(|_| io::Error::other("mount data with a NUL byte"))?;
    rustix::mount::mount(source, target, fstype, flags, data.as_c_str())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("mount {fstype} on {target}: {e}")))
}

/// Mounts the API filesystems PID 1 needs (busy ones are fine: a re-run
/// or a kernel that mounted devtmpfs itself).
pub fn early_mounts() -> Vec<String> {
    use rustix::mount::MountFlags as F;
    let mut problems = Vec::new();
    let nosuid = F::NOSUID | F::NODEV | F::NOEXEC;
    for (src, dir, fstype, flags, data) in [
        ("proc", "/proc", "proc", nosuid, ""),
        ("sysfs", "/sys", "sysfs", nosuid, ""),
        ("devtmpfs", "/dev", "devtmpfs", F::NOSUID, "mode=0755"),
        ("tmpfs", "/run", "tmpfs", F::NOSUID | F::NODEV, "mode=0755"),
    ] {
        if let Err(e) = mount(src, dir, fstype, flags, data) {
            if e.raw_os_error() != Some(16) {
                problems.push(e.to_string());
            }
        }
    }
    problems
}

fn stop_at(stage: Stage, opts: &BootOptions, log: &Log) {
    if opts.break_at.contains(&stage) {
        log.info(&format!("break={}: rescue shell requested; leave it to continue booting", stage.name()));
        rescue_once(log);
    }
}

/// Runs `/bin/sh` on the console once, for `break=`.
fn rescue_once(log: &Log) {
    if !Path::new("/bin/sh").exists() {
        log.warn("break= asked for a shell, but this initramfs has none; continuing");
        return;
    }
    // setsid -c gives the shell the console as its controlling terminal,
    // so job control and ^C work.
    let mut cmd = if Path::new("/bin/setsid").exists() {
        let mut c = Command::new("/bin/setsid");
        c.args(["-c", "/bin/sh"]);
        c
    } else {
        Command::new("/bin/sh")
    };
    if let Err(e) = cmd.env("PS1", "(cloopbox rescue) # ").status() {
        log.error(&format!("cannot start /bin/sh: {e}"));
    }
}

/// PID 1 never leaves: the rescue shell is restarted whenever it exits;
/// without a shell the message stays on screen.
pub fn rescue_forever(log: &Log) -> ! {
    loop {
        if !Path::new("/bin/sh").exists() {
            log.error(
                "no rescue shell in this initramfs (build it with a static busybox: mkinitramfs.sh -s)",
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        rescue_once(log);
        log.info("the rescue shell exited; starting it again (PID 1 cannot exit)");
    }
}

/// The tmpfs for cowfiles and overlay upper directories.
fn mount_cow_tmpfs(size: CowSize) -> io::Result<()> {
    let size = match size {
        CowSize::Percent(p) => format!("{p}%"),
        CowSize::Bytes(b) => b.to_string(),
    };
    use rustix::mount::MountFlags as F;
    mount("cloopbox-cow", COW_DIR, "tmpfs", F::NOSUID | F::NODEV, &format!("size={size},mode=0700"))
}

/// One served image.
pub struct Served {
    pub image: PathBuf,
    pub device: PathBuf,
    pub fs: FsInfo,
    pub daemon_pid: u32,
}

/// The command that serves `image`: a root-storage daemon, verifying
/// every block against `root` when one is given.
fn serve_request<'a>(
    image: &'a Path,
    cow: Option<&'a Path>,
    block_size: u32,
    root: Option<&crate::verity::Digest>,
    extra: &[String],
    watch: Option<&Path>,
) -> crate::serve::spawn::Request<'a> {
    let mut flags: Vec<std::ffi::OsString> =
        vec!["--root-daemon".into(), "--block-size".into(), block_size.to_string().into()];
    if let Some(root) = root {
        flags.extend(["--root-hash".into(), crate::verity::format::to_hex(root).into()]);
    }
    flags.extend(extra.iter().map(Into::into));
    if let Some(dir) = watch {
        flags.extend(["--watch-space".into(), dir.as_os_str().to_owned()]);
    }
    crate::serve::spawn::Request {
        image,
        cow,
        device: "auto",
        // argv[0] starts with '@': systemd leaves root-storage daemons alone.
        argv0: "@cloopd",
        flags,
        capture_stderr: false,
    }
}

/// Starts a root-storage daemon for `image` and returns its device;
/// `watch`: the directory whose free space it watches (`--watch-space`).
fn serve(
    image: &Path,
    cow: Option<&Path>,
    block_size: u32,
    root: Option<&crate::verity::Digest>,
    extra: &[String],
    watch: Option<&Path>,
    log: &Log,
) -> io::Result<(PathBuf, u32)> {
    let req = serve_request(image, cow, block_size, root, extra, watch);
    log.debug(&format!("starting {}", req.describe()));
    // The daemon outlives us; after switch_root the new init reaps it.
    match crate::serve::spawn::spawn(&req) {
        Ok(started) => Ok((started.device, started.pid)),
        Err(e @ crate::serve::spawn::SpawnError::Start(_)) => Err(io::Error::other(e.to_string())),
        Err(crate::serve::spawn::SpawnError::NoDevice { status, .. }) => Err(io::Error::other(format!(
            "cloopd for {} did not attach a device ({status})",
            image.display()
        ))),
    }
}

/// Where this boot's changes go.
enum Changes {
    /// The cow tmpfs (lost at power-off).
    Ram,
    /// A cowfile path, or an overlay directory, on the persistence disk.
    Persistent(PathBuf),
}

/// Mounts the persistence filesystem and returns the full PATH on it;
/// `None` (after saying why) means the changes stay in RAM.
fn persistence(p: &Persistence, timeout: std::time::Duration, log: &Log) -> Option<PathBuf> {
    let Some(dev) = super::persist::resolve(&p.device, timeout, log) else {
        log.progress_done();
        log.warn(&format!("persistence: {} did not appear; changes of this boot stay in RAM", p.device));
        return None;
    };
    log.progress_done();
    match super::persist::mount_rw(&dev) {
        Ok(at) => {
            let full = at.join(p.path.trim_start_matches('/'));
            log.info(&format!("persistence: {} on {} ({})", p.path, dev.display(), full.display()));
            Some(full)
        }
        Err(e) => {
            log.warn(&format!("persistence: {e}; changes of this boot stay in RAM"));
            None
        }
    }
}

/// The cowfile for a block-cow root: the persistent one if it belongs to
/// this image, else a fresh one on the tmpfs.
fn choose_cowfile(image_path: &Path, image: &Image, changes: &Changes, log: &Log) -> PathBuf {
    let ram = PathBuf::from(format!(
        "{COW_DIR}/{}.cow",
        image_path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let Changes::Persistent(path) = changes else { return ram };
    use super::persist::CowCheck;
    let verdict = super::persist::check_cowfile(path, image);
    match &verdict {
        CowCheck::Missing => log.info(&format!("persistence: creating {}", path.display())),
        CowCheck::Clean => log.info(&format!("persistence: using {}", path.display())),
        CowCheck::Dirty => log.warn(&format!(
            "persistence: {} was not closed cleanly (crash or power loss): cloopd repairs it",
            path.display()
        )),
        CowCheck::Foreign(why) => {
            log.error(&format!(
                "persistence: {} refused: {why}; changes of this boot stay in RAM",
                path.display()
            ));
            return ram;
        }
    }
    if let Some(parent) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            log.error(&format!("persistence: mkdir {}: {e}; changes stay in RAM", parent.display()));
            return ram;
        }
    }
    path.clone()
}

/// With `cloopbox.verity=`, the root hash `image` must match, after
/// checking that its tree is there (IMAGE.verity next to a file or a URL,
/// PATH.verity inside a remote ISO) and its upper levels match that root;
/// any problem is a reason to refuse the boot. `iso`: the remote ISO the
/// image is in. `only`: the image is the only one of this boot (a network
/// root, on the server or fetched into RAM), so a single root hash is its,
/// whatever its file is called. `ca_file`: trusted certificates for an
/// `https://` tree.
#[allow(clippy::too_many_arguments)]
fn verified(
    path: &Path,
    image: &Image,
    iso: Option<&crate::remote::IsoFile>,
    verity: &VerityRoots,
    only: bool,
    ca_file: Option<&Path>,
    log: &Log,
) -> Result<Option<crate::verity::Digest>, Failure> {
    let name = match iso {
        Some(iso) => iso.path.rsplit('/').next().unwrap_or_default().to_string(),
        None => path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
    };
    let refuse = |why: String| Failure {
        what: format!("{}: refusing to boot an image that does not match cloopbox.verity=", path.display()),
        details: vec![why],
    };
    let root = if only { verity.root_for_only(&name) } else { verity.root_for(&name) };
    let Some(root) = root.map_err(refuse)? else { return Ok(None) };
    let tree = crate::verity::source::Source::next_to(path, iso);
    let opts = crate::remote::options(false, None, ca_file);
    tree.open(root, crate::blockdev::ReadAt::size(image), opts).map_err(refuse)?;
    log.info(&format!(
        "{}: hash tree {} matches root hash {}",
        path.display(),
        tree.name(),
        &crate::verity::format::to_hex(&root)[..16]
    ));
    Ok(Some(root))
}

/// Serves every image and assembles the root at `root`. `net_root`: the
/// one image is a network root (on the server, or fetched into RAM).
/// `ca_file`: trusted certificates for an `https://` image's tree.
#[allow(clippy::too_many_arguments)]
fn assemble_root(
    images: &[PathBuf],
    root: &Path,
    changes: &Changes,
    verity: &VerityRoots,
    daemon_flags: &[String],
    ca_file: Option<&Path>,
    net_root: bool,
    log: &Log,
) -> Result<Vec<Served>, Failure> {
    mkdir(IMAGES_DIR)?;
    // Open and probe every image first: a corrupt one stops the boot with
    // a clear message before anything is served.
    let mut plans = Vec::new();
    for path in images {
        let (image, remote) =
            crate::remote::open_cloop_described(path, ca_file).map_err(|e| Failure::new(format!("{e}")))?;
        if let Some(opened) = &remote {
            log.info(&format!("image on the server: {}", opened.summary));
        }
        let fs = probe(&image).ok_or_else(|| {
            Failure::new(format!("{}: no known filesystem inside the image", path.display()))
        })?;
        // Its driver loads on another thread while the daemon starts.
        if let Some(loader) = super::kmod::Loader::get() {
            loader.preload(&[fs.fs.mount_type().to_string()]);
        }
        let block = min_io_size(&image, &fs).min(4096);
        let iso = remote.and_then(|o| o.iso);
        let hash = verified(path, &image, iso.as_ref(), verity, net_root, ca_file, log)?;
        log.info(&format!(
            "{}: {} image, {} filesystem '{}'",
            path.display(),
            image.info().version,
            fs.fs.mount_type(),
            fs.label
        ));
        plans.push((path.clone(), image, fs, block, hash));
    }
    let block_cow = plans.len() == 1 && !plans[0].2.fs.is_read_only();
    let mut served = Vec::new();
    // An overlayfs root: the kernel fills the upper directory itself, so
    // the first image's daemon watches that filesystem's free space.
    // (The nearest directory that exists: the upper one is made later.)
    let upper_fs = match changes {
        Changes::Persistent(dir) => dir.ancestors().find(|d| d.is_dir()).unwrap_or(dir).to_path_buf(),
        Changes::Ram => PathBuf::from(COW_DIR),
    };
    for (i, (path, image, fs, block, hash)) in plans.into_iter().enumerate() {
        let cow = block_cow.then(|| choose_cowfile(&path, &image, changes, log));
        let watch = (!block_cow && i == 0).then_some(upper_fs.as_path());
        drop(image);
        let (device, pid) = serve(&path, cow.as_deref(), block, hash.as_ref(), daemon_flags, watch, log)
            .map_err(Failure::from)?;
        log.info(&format!(
            "{} served on {} by pid {pid}{}",
            path.display(),
            device.display(),
            match &cow {
                Some(c) if c.starts_with(COW_DIR) => " with a cowfile on tmpfs".to_string(),
                Some(c) => format!(" with the persistent cowfile {}", c.display()),
                None => String::new(),
            }
        ));
        served.push(Served { image: path, device, fs, daemon_pid: pid });
    }
    use rustix::mount::MountFlags as F;
    let root_str = root.to_string_lossy();
    if block_cow {
        let s = &served[0];
        mount(&s.device.to_string_lossy(), &root_str, s.fs.fs.mount_type(), F::empty(), "")?;
    } else {
        let mut lower = Vec::new();
        for (i, s) in served.iter().enumerate() {
            let dir = format!("{IMAGES_DIR}/{i}");
            mount(&s.device.to_string_lossy(), &dir, s.fs.fs.mount_type(), F::RDONLY, "")?;
            lower.push(dir);
        }
        let lower = lower.join(":");
        let ram_upper = PathBuf::from(COW_DIR);
        let mut uppers = Vec::new();
        if let Changes::Persistent(dir) = changes {
            uppers.push(dir.clone());
        }
        uppers.push(ram_upper);
        let mut last = None;
        for base in uppers {
            let (upper, work) = (base.join("upper"), base.join("work"));
            let made = mkdir(&upper.to_string_lossy()).and_then(|()| mkdir(&work.to_string_lossy()));
            let data = format!("lowerdir={lower},upperdir={},workdir={}", upper.display(), work.display());
            match made.and_then(|()| mount("overlay", &root_str, "overlay", F::empty(), &data)) {
                Ok(()) => {
                    if !base.starts_with(COW_DIR) {
                        log.info(&format!("persistence: overlay upper directory {}", upper.display()));
                    }
                    last = None;
                    break;
                }
                Err(e) => {
                    if !base.starts_with(COW_DIR) {
                        log.error(&format!(
                            "persistence: overlay on {} failed ({e}): changes of this boot stay in RAM",
                            base.display()
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        if let Some(e) = last {
            return Err(Failure::from(e));
        }
    }
    Ok(served)
}

/// Finds the medium: by content on every device, or inside an ISO file.
pub fn locate(opts: &BootOptions, log: &Log) -> Result<Medium, Failure> {
    let first = opts.bootfrom.as_ref().map(|p| p.to_string_lossy().into_owned());
    let want = Want::Images { dir: &opts.knoppix_dir, name: &opts.knoppix_name };
    let search = |mountpoint, want, first| Search {
        sys_class_block: Path::new("/sys/class/block"),
        dev_dir: Path::new("/dev"),
        mountpoint,
        want,
        first,
        timeout: opts.media_timeout,
    };
    let not_found = |what: String, tried: Vec<String>| Failure {
        what: format!(
            "no medium with {what} found within {} s (filesystems tried: {})",
            opts.media_timeout.as_secs(),
            super::media::MEDIUM_FS.join(", ")
        ),
        details: {
            let mut details = if tried.is_empty() { vec!["no block devices appeared".into()] } else { tried };
            details.extend(media_note(Path::new(MEDIA_FILE)));
            details
        },
    };
    let Some(iso) = &opts.iso_file else {
        return find_medium(&search(Path::new(LIVE), want, first.as_deref()), log)
            .map_err(|tried| not_found(opts.image_path(), tried));
    };
    let holder = find_medium(&search(Path::new(isofile::HOLDER_DIR), Want::File(iso), first.as_deref()), log)
        .map_err(|tried| not_found(iso.trim_start_matches('/').to_string(), tried))?;
    let file = &holder.images[0];
    let attached = isofile::attach(file).map_err(|e| Failure::new(format!("{}: {e}", file.display())))?;
    log.info(&format!(
        "{} on {} ({}): attached to {}",
        iso,
        holder.device.display(),
        holder.fstype,
        attached.dev.display()
    ));
    // Partitions of a hybrid ISO show up a moment after the attach.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let medium = super::media::try_device(&search(Path::new(LIVE), want, None), log, &attached.dev).map_err(
        |tried| Failure {
            what: format!("{} holds no {}", file.display(), opts.image_path()),
            details: tried,
        },
    )?;
    drop(attached);
    Ok(medium)
}

/// What to add when no medium was found on an initramfs built for some
/// boot media only (`MEDIA_FILE`): the medium may well be there, on a
/// controller this initramfs has no driver for. `None` when the file is
/// absent (every medium's drivers) or is not a list of names.
pub fn media_note(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    // A short list of names; anything longer or stranger is not ours.
    std::fs::File::open(path).ok()?.take(257).read_to_string(&mut text).ok()?;
    let list = text.trim();
    let names = list.split(',').collect::<Vec<_>>();
    if text.len() > 256
        || list.is_empty()
        || names.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_lowercase()))
    {
        return None;
    }
    Some(format!(
        "this initramfs has the drivers of these boot media only: {} (mkinitramfs.sh --media {list})",
        names.join(", ")
    ))
}

/// The media check's second pass with `cloopbox.verity=`: every 4 KiB
/// block of each image against its hash tree. Images without a root
/// hash or tree are left to [`verified`], which refuses them.
fn check_against_trees(images: &[PathBuf], verity: &VerityRoots, log: &Log) -> Result<(), Failure> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for path in images {
        let tree = crate::verity::tree_path_for(path);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let Ok(Some(root)) = verity.root_for(&name) else { continue };
        if !tree.exists() {
            continue;
        }
        let report = crate::verity::check::verify_image(path, &tree, root, threads, true)
            .map_err(|e| Failure::new(format!("media check: {}: {e}", path.display())))?;
        if report.bad_count > 0 {
            let mut details: Vec<String> = report
                .bad
                .iter()
                .map(|b| format!("block {} at offset {}: {}", b.block, b.offset, b.error))
                .collect();
            details.push(format!("{} bad 4 KiB blocks in all", report.bad_count));
            return Err(Failure {
                what: format!(
                    "media check failed: {} does not match its hash tree {}",
                    path.display(),
                    tree.display()
                ),
                details,
            });
        }
        log.info(&format!(
            "media check: {}: all {} blocks match the hash tree",
            path.display(),
            report.data_blocks
        ));
    }
    Ok(())
}

/// Lets the medium go after toram: unmounts it (and the disk holding an
/// ISO file), and ejects an optical disc unless `noeject`.
fn release_medium(medium: &Medium, eject: bool, log: &Log) {
    use rustix::mount::{unmount, UnmountFlags};
    if let Err(e) = unmount(&medium.mountpoint, UnmountFlags::empty()) {
        log.warn(&format!("toram: cannot unmount the medium {}: {e}", medium.device.display()));
        return;
    }
    if Path::new(isofile::HOLDER_DIR).exists() {
        let _ = unmount(isofile::HOLDER_DIR, UnmountFlags::empty());
    }
    let dev = medium.device.to_string_lossy();
    if dev.starts_with("/dev/sr") && eject {
        use rustix::fs::{Mode, OFlags};
        match rustix::fs::open(
            dev.as_ref(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)
        .and_then(crate::sys::ioctl::cdrom_eject)
        {
            Ok(()) => log.info(&format!("toram: {dev} ejected; the disc can be taken out")),
            Err(e) => log.warn(&format!("toram: cannot eject {dev}: {e}")),
        }
    } else {
        log.info(&format!("toram: {dev} released; it can be removed"));
    }
}

/// From the found medium to the root mounted at `root`: media check,
/// toram, the cow tmpfs, persistence, the daemons, the root, /mnt-system
/// and the exitrd. Shared by `init` and `liveroot`.
pub fn mount_root(
    opts: &BootOptions,
    medium: &Medium,
    root: &Path,
    stage_exitrd: bool,
    log: &Log,
) -> Result<Vec<Served>, Failure> {
    let mut images = medium.images.clone();
    if opts.media_check {
        use super::mediacheck::{check, console_cancel, Outcome};
        log.info("media check: verifying every block of the images (press Enter to skip)");
        match check(&images, &medium.mountpoint, log, &mut console_cancel()).map_err(Failure::new)? {
            Outcome::Good => check_against_trees(&images, &opts.verity, log)?,
            Outcome::Cancelled => log.warn("media check skipped by the user"),
            Outcome::Bad(lines) => {
                return Err(Failure {
                    what: "media check failed: the medium is damaged (bad blocks below); copy it again"
                        .into(),
                    details: lines,
                })
            }
        }
    }
    let mut in_ram = false;
    if opts.toram {
        match super::toram::copy(&images, log) {
            Ok(copies) => {
                images = copies;
                in_ram = true;
                release_medium(medium, opts.eject, log);
            }
            Err(why) => log.warn(&format!("{why}: booting from the medium instead")),
        }
    }
    let served = serve_images(opts, &images, root, false, log)?;
    // Knoppix shows the medium at /mnt-system where the root has it.
    if !in_ram && root.join("mnt-system").is_dir() {
        let _ = rustix::mount::mount_bind(LIVE, root.join("mnt-system"));
    }
    if stage_exitrd {
        stage_exit_initramfs(log);
    }
    Ok(served)
}

/// The cow tmpfs, persistence, the daemons and the root at `root`, for
/// images on a medium, in RAM or on an HTTP server (`net_root`).
fn serve_images(
    opts: &BootOptions,
    images: &[PathBuf],
    root: &Path,
    net_root: bool,
    log: &Log,
) -> Result<Vec<Served>, Failure> {
    mount_cow_tmpfs(opts.cow_size)?;
    let changes = match &opts.persistence {
        Some(p) => persistence(p, opts.media_timeout, log).map_or(Changes::Ram, Changes::Persistent),
        None => Changes::Ram,
    };
    let ca_file = opts.ca_file();
    let mut flags = opts.cloopd.clone();
    transport_flags(opts.transport, Path::new(crate::serve::ublk::CONTROL), &mut flags, log);
    if let Some(ca) = &ca_file {
        flags.extend(["--ca-file".to_string(), ca.display().to_string()]);
    }
    assemble_root(images, root, &changes, &opts.verity, &flags, ca_file.as_deref(), net_root, log)
}

/// `cloopbox.transport=`: loads the driver the root daemons will use and
/// adds `--transport ublk` to their flags when ublk was asked for and the
/// kernel has it (`control`, the driver's control node, exists once
/// `ublk_drv` is loaded); the NBD client otherwise. Loaded here, not with
/// the [`ALWAYS_MODULES`], so a ublk boot never sets up the NBD client's
/// devices. `--connections` is NBD's and is dropped with ublk, with a
/// word on the console.
fn transport_flags(choice: TransportChoice, control: &Path, flags: &mut Vec<String>, log: &Log) {
    let load = |name: &str| {
        if let Some(loader) = super::kmod::Loader::get() {
            report(&loader.db.load(&[name]), log);
        }
    };
    if choice != TransportChoice::Nbd {
        load("ublk_drv");
        if control.exists() {
            if let Some(at) = flags.iter().position(|f| f == "--connections") {
                log.warn("cloopbox.connections= is for NBD: ublk serves one queue per CPU instead");
                flags.drain(at..(at + 2).min(flags.len()));
            }
            flags.extend(["--transport".to_string(), "ublk".to_string()]);
            return;
        }
        let why = format!("{}; serving over NBD", crate::serve::ublk::NOT_FOUND);
        match choice {
            TransportChoice::Ublk => log.warn(&format!("cloopbox.transport=ublk: {why}")),
            _ => log.debug(&format!("cloopbox.transport=auto: {why}")),
        }
    }
    load("nbd");
}

fn stage_exit_initramfs(log: &Log) {
    // Without it, systemd's shutdown would leave the root's devices
    // to die with the power.
    match super::exitrd::stage(Path::new(super::exitrd::DIR)) {
        Ok(()) => log.debug("exit initramfs staged in /run/initramfs"),
        Err(e) => log.warn(&format!("no exit initramfs ({e}): shutdown cannot detach the root cleanly")),
    }
}

/// Brings up the network of `ip=`; the drivers of NICs that show up
/// meanwhile are loaded by modalias.
pub fn network(opts: &BootOptions, log: &Log) -> Result<(), Failure> {
    let Some(ip) = &opts.ip else { return Ok(()) };
    let rescan = || {
        if let Some(loader) = super::kmod::Loader::get() {
            report(&loader.scan(), log);
        }
    };
    crate::net::link::bring_up(ip, &opts.nameservers, opts.media_timeout, &rescan, log)
        .map(drop)
        .map_err(|e| Failure::new(format!("network: {e}")))
}

/// The root from an image on an HTTP server (`httpfs=`, `root=live:`),
/// read lazily; with `fetch=` downloaded into RAM first. Shared by `init`
/// (after [`network`]) and `liveroot` (the network is dracut's).
pub fn mount_net_root(
    opts: &BootOptions,
    net: &NetRoot,
    root: &Path,
    stage_exitrd: bool,
    log: &Log,
) -> Result<Vec<Served>, Failure> {
    let mut images = vec![PathBuf::from(&net.url)];
    if net.fetch {
        let verify = opts.verity != VerityRoots::Off;
        match super::toram::fetch(&net.url, verify, opts.ca_file().as_deref(), log) {
            Ok(copy) => images = vec![copy],
            Err(why) => log.warn(&format!("fetch: {why}: booting lazily from {} instead", net.url)),
        }
    }
    let served = serve_images(opts, &images, root, true, log)?;
    if stage_exitrd {
        stage_exit_initramfs(log);
    }
    Ok(served)
}

/// Modules loaded whatever the hardware: the layers above the served
/// device. The crc32c algorithms come first: libcrc32c and ext4 look the
/// algorithm up when they initialise, and nothing loads it on demand.
/// The device's own driver, NBD or ublk, is added by [`layer_modules`].
pub const ALWAYS_MODULES: &[&str] = &["crc32c_generic", "crc32c_intel", "loop", "overlay"];

fn report(report: &super::kmod::LoadReport, log: &Log) {
    if !report.loaded.is_empty() {
        log.debug(&format!("modules loaded: {}", report.loaded.join(" ")));
    }
    for (name, e) in &report.failed {
        // ENODEV: hardware this machine lacks (crc32c_intel without
        // SSE4.2, a host controller that is absent): not a problem.
        if e.contains("os error 19") {
            log.debug(&format!("module {name}: {e}"));
        } else {
            log.warn(&format!("module {name}: {e}"));
        }
    }
    if !report.missing.is_empty() {
        log.debug(&format!("not in this kernel or initramfs: {}", report.missing.join(" ")));
    }
}

/// The modules of the layers between the medium and the root: the
/// [`ALWAYS_MODULES`] and the driver of the transport `transport` asks
/// for (ublk_drv for `ublk` and `auto`, whose fallback to NBD
/// [`transport_flags`] loads only when it is needed), so that a ublk boot
/// never sets up the NBD client's devices.
pub fn layer_modules(transport: TransportChoice) -> Vec<&'static str> {
    let mut names = ALWAYS_MODULES.to_vec();
    names.push(match transport {
        TransportChoice::Nbd => "nbd",
        TransportChoice::Ublk | TransportChoice::Auto => "ublk_drv",
    });
    names
}

/// Loads what this machine needs from the initramfs's modules: `layers`
/// (see [`layer_modules`]), then the drivers of the devices present (by
/// modalias; the search for the medium rescans while it waits), and
/// filesystems when they are mounted. Without a `modules.alias` (an
/// initramfs built without it) every module in [`BOOT_MODULES`] is loaded.
///
/// `layers` load on a second thread while this one loads the storage
/// drivers: under QEMU TCG each module costs tens of milliseconds of CPU
/// (signature check, relocation), and the storage drivers spend part of
/// theirs waiting for the hardware, so on two CPUs the layers come for
/// free (BENCHMARKS.md, "Where the boot's time goes"). Both are done when
/// this returns: the medium search that follows may need any of them.
pub fn load_modules(layers: &[&'static str], log: &Log) {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let db = match ModuleDb::open(Path::new("/lib/modules").join(&release).as_path()) {
        Ok(db) => db,
        Err(e) => {
            log.warn(&format!("no modules for kernel {release} ({e}); relying on built-in drivers"));
            return;
        }
    };
    let loader = super::kmod::Loader::install(db);
    if !loader.db.has_aliases() {
        report(&loader.db.load(BOOT_MODULES), log);
        return;
    }
    let names = layers.to_vec();
    // The kernel serialises what must be (a module loading twice waits
    // for the first; a missing symbol waits for a module still coming).
    let background = std::thread::Builder::new().name("modules".into()).spawn(move || loader.db.load(&names));
    // Controllers first; the disks behind them show up a moment later and
    // need their own drivers (sd_mod, sr_mod, usb-storage).
    for _ in 0..4 {
        let r = loader.scan();
        let more = !r.loaded.is_empty();
        report(&r, log);
        if !more {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let layered = match background.map(|t| t.join()) {
        Ok(Ok(r)) => r,
        // No thread (or it died): load them here.
        _ => loader.db.load(layers),
    };
    report(&layered, log);
}

/// Everything up to the switch; returns the new root's init and args.
fn boot(log: &mut Log) -> Result<BootOptions, Failure> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let opts = BootOptions::from_cmdline(&Cmdline::parse(&cmdline));
    log.debug = opts.debug;
    for w in &opts.warnings {
        log.warn(w);
    }
    stop_at(Stage::Top, &opts, log);
    load_modules(&layer_modules(opts.transport), log);
    start_preloads(&opts.preload, log);
    stop_at(Stage::Modules, &opts, log);
    let newroot = Path::new(NEWROOT);
    if let Some(net) = &opts.net_root {
        network(&opts, log)?;
        stop_at(Stage::Media, &opts, log);
        mount_net_root(&opts, net, newroot, true, log)?;
        check_init(newroot, &opts.init)
            .map_err(|e| Failure::new(format!("the new root has no usable init: {e}")))?;
        stop_at(Stage::Bottom, &opts, log);
        return Ok(opts);
    }
    if let Err(f) = network(&opts, log) {
        log.warn(&format!("{}; booting from a local medium without it", f.what));
    }
    let medium = locate(&opts, log)?;
    log.info(&format!(
        "medium: {} ({}, label '{}'), {} image(s)",
        medium.device.display(),
        medium.fstype,
        medium.fs.label,
        medium.images.len()
    ));
    stop_at(Stage::Media, &opts, log);
    mount_root(&opts, &medium, newroot, true, log)?;
    check_init(newroot, &opts.init)
        .map_err(|e| Failure::new(format!("the new root has no usable init: {e}")))?;
    stop_at(Stage::Bottom, &opts, log);
    Ok(opts)
}

/// The init applet's body. Never returns.
pub fn run() -> ! {
    let early = early_mounts();
    let mut log = Log::open("cloopbox", false);
    for p in early {
        log.warn(&p);
    }
    log.info(&format!("cloopbox {} live boot", env!("CARGO_PKG_VERSION")));
    match boot(&mut log) {
        Ok(opts) => {
            // No module may still be loading from the initramfs that
            // switch_root empties.
            finish_preloads(&log);
            log.info(&format!("switching to the new root, init {}", opts.init.display()));
            let e = switch_root(Path::new(NEWROOT), &opts.init, &opts.init_args, &mut |w| log.warn(w));
            fail(&log, &Failure::new(format!("switch_root: {e}")));
        }
        Err(f) => fail(&log, &f),
    }
}

/// `cloopbox.preload=`: starts loading those drivers on a thread of their
/// own, and says which names this initramfs has nothing for.
pub fn start_preloads(names: &[String], log: &Log) {
    let Some(loader) = super::kmod::Loader::get() else { return };
    let unknown = loader.preload(names);
    if !unknown.is_empty() {
        log.warn(&format!(
            "cloopbox.preload={}: no module, built-in driver or filesystem of that name in this initramfs",
            unknown.join(",")
        ));
    }
}

/// Waits for the modules loading ahead and says what they were, how long
/// they took on their thread and how long the boot waited for them.
pub fn finish_preloads(log: &Log) {
    let Some(loader) = super::kmod::Loader::get() else { return };
    for done in loader.ahead.finish_all() {
        let Some(r) = &done.result else {
            log.warn(&format!("loading {} ahead: the thread died", done.names.join(" ")));
            continue;
        };
        if !r.loaded.is_empty() {
            log.info(&format!(
                "loaded ahead: {} ({:.2} s on their own thread; waited for {:.2} s)",
                r.loaded.join(" "),
                done.took.as_secs_f64(),
                done.waited.as_secs_f64()
            ));
        }
        report(r, log);
    }
}

fn fail(log: &Log, f: &Failure) -> ! {
    log.error(&format!("boot failed: {}", f.what));
    for d in &f.details {
        log.error(&format!("  {d}"));
    }
    log.error("dropping to the rescue shell");
    rescue_forever(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_note_names_the_media_of_a_trimmed_initramfs_and_ignores_anything_else() {
        let dir = std::env::temp_dir().join(format!("cloopbox-media-note-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("media");
        assert_eq!(media_note(&file), None, "no file: every medium's drivers");
        std::fs::write(&file, "cd,keyboard\n").unwrap();
        assert_eq!(
            media_note(&file).as_deref(),
            Some("this initramfs has the drivers of these boot media only: cd, keyboard (mkinitramfs.sh --media cd,keyboard)")
        );
        for junk in ["", "\n", "cd,,usb", "cd;rm -rf", "CD", &"a".repeat(300)] {
            std::fs::write(&file, junk).unwrap();
            assert_eq!(media_note(&file), None, "{junk:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn args(req: &crate::serve::spawn::Request) -> String {
        req.describe()
    }

    #[test]
    fn the_daemon_verifies_when_a_root_hash_is_given() {
        let root = [0x5a; 32];
        let with = serve_request(Path::new("/m/KNOPPIX"), None, 4096, Some(&root), &[], None);
        assert_eq!(with.flags, ["--root-daemon", "--block-size", "4096", "--root-hash", &"5a".repeat(32)]);
        assert!(args(&with).contains(&format!("\"--root-hash\" \"{}\"", "5a".repeat(32))), "{}", args(&with));
        let without = serve_request(Path::new("/m/KNOPPIX"), None, 512, None, &[], None);
        assert!(!args(&without).contains("--root-hash"), "{}", args(&without));
        assert!(!args(&without).contains("--watch-space"), "{}", args(&without));
        let tuned =
            serve_request(Path::new("/m/KNOPPIX"), None, 512, None, &["--prefetch".into(), "8".into()], None);
        assert_eq!(tuned.flags, ["--root-daemon", "--block-size", "512", "--prefetch", "8"]);
        let watched = serve_request(Path::new("/m/KNOPPIX"), None, 2048, None, &[], Some(Path::new(COW_DIR)));
        assert_eq!(watched.flags[3..], ["--watch-space", COW_DIR]);
    }

    #[test]
    fn the_layers_bring_only_the_transport_asked_for() {
        let nbd = layer_modules(TransportChoice::Nbd);
        assert!(nbd.contains(&"nbd") && !nbd.contains(&"ublk_drv"), "{nbd:?}");
        for choice in [TransportChoice::Ublk, TransportChoice::Auto] {
            let ublk = layer_modules(choice);
            assert!(ublk.contains(&"ublk_drv") && !ublk.contains(&"nbd"), "{ublk:?}");
            assert_eq!(ublk[..ALWAYS_MODULES.len()], *ALWAYS_MODULES);
        }
    }

    #[test]
    fn ublk_is_asked_for_only_where_the_kernel_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("ublk-control");
        std::fs::write(&present, b"").unwrap();
        let absent = dir.path().join("missing");
        let log = Log::stderr("test");
        let base = || vec!["--prefetch".to_string(), "8".into(), "--connections".into(), "2".into()];
        let run = |choice, control: &Path| {
            let mut flags = base();
            transport_flags(choice, control, &mut flags, &log);
            flags
        };
        assert_eq!(run(TransportChoice::Nbd, &present), base());
        assert_eq!(run(TransportChoice::Ublk, &absent), base());
        assert_eq!(run(TransportChoice::Auto, &absent), base());
        for choice in [TransportChoice::Ublk, TransportChoice::Auto] {
            assert_eq!(run(choice, &present), ["--prefetch", "8", "--transport", "ublk"]);
        }
    }
}
