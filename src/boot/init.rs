//! `init`: PID 1 of the initramfs, from the kernel's hand-over to
//! switch_root.
//!
//! Stages (each a `break=` point):
//! 1. early userspace: proc, sys, devtmpfs, /run; console and kmsg;
//!    /proc/cmdline (`top`);
//! 2. kernel modules from modules.dep (`modules`);
//! 3. the medium, found by content and mounted read-only under
//!    /run/initramfs/live (`premount`);
//! 4. each image served by a `cloopd` root-storage daemon on /dev/nbdN; a
//!    writable filesystem inside gets the block-level cowfile, a read-only
//!    one (iso9660, squashfs, erofs: real Knoppix images) an overlayfs; the
//!    cowfile or overlay upper lives on a size-limited tmpfs under /run;
//! 5. the root mounted at /newroot (`bottom`), then switch_root.
//!
//! PID 1 never exits and never panics: a failure prints what was tried and
//! drops to the rescue shell (`/bin/sh`, if the initramfs has one), or
//! waits with the message on screen.

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cmdline::Cmdline;
use super::kmod::ModuleDb;
use super::log::Log;
use super::media::{find_medium, Medium, Search};
use super::options::{BootOptions, CowSize, Stage};
use super::probe::{min_io_size, probe, FsInfo};
use super::switch_root::{check_init, switch_root};
use crate::cloop::reader::Image;

/// Where things live during the boot; all of it under /run, which moves
/// into the new root, so nothing important sits in the deleted initramfs.
pub const LIVE: &str = "/run/initramfs/live";
pub const COW_DIR: &str = "/run/initramfs/cow";
pub const IMAGES_DIR: &str = "/run/initramfs/images";
pub const NEWROOT: &str = "/newroot";

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

/// Starts a root-storage daemon for `image` and returns its device.
fn serve(image: &Path, cow: Option<&Path>, block_size: u32, log: &Log) -> io::Result<(PathBuf, u32)> {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/init"));
    let mut cmd = Command::new(exe);
    // argv[0] starts with '@': systemd leaves root-storage daemons alone.
    cmd.arg0("@cloopd").arg(image).args(["--device", "auto", "--root-daemon", "--block-size"]);
    cmd.arg(block_size.to_string());
    if let Some(cow) = cow {
        cmd.arg("--cow").arg(cow);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    log.debug(&format!("starting {cmd:?}"));
    let mut child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("starting cloopd: {e}")))?;
    let pid = child.id();
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    BufReader::new(stdout).read_line(&mut line)?;
    let device = line.trim();
    if !device.starts_with("/dev/") {
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        return Err(io::Error::other(format!(
            "cloopd for {} did not attach a device ({status})",
            image.display()
        )));
    }
    // The daemon outlives us; after switch_root the new init reaps it.
    std::mem::forget(child);
    Ok((PathBuf::from(device), pid))
}

/// Serves every image and assembles the root at NEWROOT.
fn assemble_root(medium: &Medium, log: &Log) -> Result<Vec<Served>, Failure> {
    mkdir(IMAGES_DIR)?;
    // Open and probe every image first: a corrupt one stops the boot with
    // a clear message before anything is served.
    let mut plans = Vec::new();
    for path in &medium.images {
        let image = Image::open(path).map_err(|e| Failure::new(format!("{e}")))?;
        let fs = probe(&image).ok_or_else(|| {
            Failure::new(format!("{}: no known filesystem inside the image", path.display()))
        })?;
        let block = min_io_size(&image, &fs).min(4096);
        log.info(&format!(
            "{}: {} image, {} filesystem '{}'",
            path.display(),
            image.info().version,
            fs.fs.mount_type(),
            fs.label
        ));
        plans.push((path.clone(), fs, block));
    }
    let block_cow = plans.len() == 1 && !plans[0].1.fs.is_read_only();
    let mut served = Vec::new();
    for (path, fs, block) in plans {
        let cow = block_cow.then(|| {
            PathBuf::from(format!("{COW_DIR}/{}.cow", path.file_name().unwrap_or_default().to_string_lossy()))
        });
        let (device, pid) = serve(&path, cow.as_deref(), block, log).map_err(Failure::from)?;
        log.info(&format!(
            "{} served on {} by pid {pid}{}",
            path.display(),
            device.display(),
            if cow.is_some() { " with a cowfile on tmpfs" } else { "" },
        ));
        served.push(Served { image: path, device, fs, daemon_pid: pid });
    }
    use rustix::mount::MountFlags as F;
    if block_cow {
        let s = &served[0];
        mount(&s.device.to_string_lossy(), NEWROOT, s.fs.fs.mount_type(), F::empty(), "")?;
    } else {
        let mut lower = Vec::new();
        for (i, s) in served.iter().enumerate() {
            let dir = format!("{IMAGES_DIR}/{i}");
            mount(&s.device.to_string_lossy(), &dir, s.fs.fs.mount_type(), F::RDONLY, "")?;
            lower.push(dir);
        }
        mkdir(&format!("{COW_DIR}/upper"))?;
        mkdir(&format!("{COW_DIR}/work"))?;
        let data = format!("lowerdir={},upperdir={COW_DIR}/upper,workdir={COW_DIR}/work", lower.join(":"));
        mount("overlay", NEWROOT, "overlay", F::empty(), &data)?;
    }
    Ok(served)
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

    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    match ModuleDb::open(Path::new("/lib/modules").join(&release).as_path()) {
        Ok(db) => {
            let report = db.load(BOOT_MODULES);
            log.debug(&format!("modules loaded: {}", report.loaded.join(" ")));
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
        Err(e) => log.warn(&format!("no modules for kernel {release} ({e}); relying on built-in drivers")),
    }
    stop_at(Stage::Modules, &opts, log);

    let first = opts.bootfrom.as_ref().map(|p| p.to_string_lossy().into_owned());
    let search = Search {
        sys_class_block: Path::new("/sys/class/block"),
        dev_dir: Path::new("/dev"),
        mountpoint: Path::new(LIVE),
        dir: &opts.knoppix_dir,
        name: &opts.knoppix_name,
        first: first.as_deref(),
        timeout: opts.media_timeout,
    };
    let medium = find_medium(&search, log).map_err(|tried| Failure {
        what: format!(
            "no medium with {} found within {} s (filesystems tried: {})",
            opts.image_path(),
            opts.media_timeout.as_secs(),
            super::media::MEDIUM_FS.join(", ")
        ),
        details: if tried.is_empty() { vec!["no block devices appeared".into()] } else { tried },
    })?;
    log.info(&format!(
        "medium: {} ({}, label '{}'), {} image(s)",
        medium.device.display(),
        medium.fstype,
        medium.fs.label,
        medium.images.len()
    ));
    stop_at(Stage::Media, &opts, log);

    mount_cow_tmpfs(opts.cow_size)?;
    assemble_root(&medium, log)?;
    let newroot = Path::new(NEWROOT);
    // Knoppix shows the medium at /mnt-system where the root has it.
    if newroot.join("mnt-system").is_dir() {
        let _ = rustix::mount::mount_bind(LIVE, newroot.join("mnt-system"));
    }
    check_init(newroot, &opts.init)
        .map_err(|e| Failure::new(format!("the new root has no usable init: {e}")))?;
    // Without it, systemd's shutdown would leave the root's devices to
    // die with the power.
    match super::exitrd::stage(Path::new(super::exitrd::DIR)) {
        Ok(()) => log.debug("exit initramfs staged in /run/initramfs"),
        Err(e) => log.warn(&format!("no exit initramfs ({e}): shutdown cannot detach the root cleanly")),
    }
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
            log.info(&format!("switching to the new root, init {}", opts.init.display()));
            let e = switch_root(Path::new(NEWROOT), &opts.init, &opts.init_args, &mut |w| log.warn(w));
            fail(&log, &Failure::new(format!("switch_root: {e}")));
        }
        Err(f) => fail(&log, &f),
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
