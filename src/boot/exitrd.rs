//! The exit initramfs: how a live system with its root on our NBD (or ublk)
//! devices shuts down without losing the root under its feet.
//!
//! Before switch_root, [`stage`] puts a copy of our binary at
//! `/run/initramfs/shutdown` and an `etc/initrd-release` next to it (the
//! interface of systemd's `INITRD_INTERFACE.md`). At the very end of a
//! shutdown, systemd-shutdown has killed everything except `@` processes,
//! unmounted what it could and remounted the rest read-only; it then
//! pivots into `/run/initramfs` with the old root at `/oldroot` and execs
//! `/shutdown VERB` as PID 1. [`run`] then:
//!
//! 1. unmounts everything but its own API filesystems, deepest first and
//!    in passes (an overlay must go before its lower layers); what cannot
//!    be unmounted is remounted read-only, which flushes it;
//! 2. asks every cloopd to flush its cowfile and disconnect its device
//!    (the daemons are alive: they were never killed), and waits for them
//!    to exit;
//! 3. unmounts what the daemons held (the medium, the cow tmpfs), ejects
//!    an optical medium unless `noeject`, syncs;
//! 4. says `clean shutdown, VERB, N servers flushed and detached` (or what
//!    was unclean, with the same count) and calls
//!    `reboot(2)` for the verb.
//!
//! A daemon whose device still carries a writable mount is only synced,
//! never detached: detaching would lose what that filesystem has not
//! written yet.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::log::Log;
use crate::control::client;
use crate::control::proto::KernelDevice;
use crate::control::{Command, Info};
use crate::sys::mountinfo::{self, Mount};

/// Where the exitrd lives (systemd and dracut look here).
pub const DIR: &str = "/run/initramfs";

/// The lines systemd reads to know it is an initrd.
const INITRD_RELEASE: &str = concat!(
    "NAME=\"cloopbox exit initramfs\"\n",
    "ID=cloopbox\n",
    "VERSION_ID=",
    env!("CARGO_PKG_VERSION"),
    "\n",
    "PRETTY_NAME=\"cloopbox exit initramfs\"\n"
);

/// How long the daemons get to flush and exit, each.
const DAEMON_EXIT: Duration = Duration::from_secs(60);
/// Unmount passes: each pass may free the layer below the last one.
const UNMOUNT_PASSES: usize = 8;

/// Stages the exitrd in `dir`: our binary as `dir/shutdown`, and the
/// directories and files systemd's exitrd interface expects.
pub fn stage(dir: &Path) -> io::Result<()> {
    for sub in ["etc", "proc", "sys", "dev", "oldroot"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", dir.join(sub).display())))?;
    }
    std::fs::write(dir.join("etc/initrd-release"), INITRD_RELEASE)?;
    // Written under a temporary name, then renamed: a half-copied
    // /shutdown that systemd would exec is worse than none.
    let tmp = dir.join(".shutdown.new");
    std::fs::copy("/proc/self/exe", &tmp)
        .map_err(|e| io::Error::new(e.kind(), format!("copy /proc/self/exe to {}: {e}", tmp.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, dir.join("shutdown"))?;
    Ok(())
}

/// What argv[1] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Poweroff,
    Reboot,
    Halt,
    Kexec,
}

impl Verb {
    /// systemd passes `reboot|poweroff|halt|kexec|exit`; `exit` (a
    /// container's shutdown) and anything unknown power off, the safe end.
    pub fn parse(word: Option<&str>) -> (Verb, Option<String>) {
        match word {
            Some("reboot") => (Verb::Reboot, None),
            Some("poweroff") | None => (Verb::Poweroff, None),
            Some("halt") => (Verb::Halt, None),
            Some("kexec") => (Verb::Kexec, None),
            Some(other) => (Verb::Poweroff, Some(format!("unknown verb '{other}': powering off"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verb::Poweroff => "poweroff",
            Verb::Reboot => "reboot",
            Verb::Halt => "halt",
            Verb::Kexec => "kexec",
        }
    }
}

/// Mounts the exitrd must keep: its own root and API filesystems.
fn keep(m: &Mount) -> bool {
    matches!(m.point.as_str(), "/" | "/proc" | "/sys" | "/dev")
}

/// One pass over the mount table, deepest first. Returns how many went.
fn unmount_pass(log: &Log) -> usize {
    let mounts = mountinfo::current();
    let mut gone = 0;
    for m in mountinfo::below(&mounts, "/") {
        if keep(m) {
            continue;
        }
        match rustix::mount::unmount(m.point.as_str(), rustix::mount::UnmountFlags::empty()) {
            Ok(()) => {
                log.debug(&format!("unmounted {} ({} {})", m.point, m.fstype, m.source));
                gone += 1;
            }
            Err(e) => log.debug(&format!("{}: not unmounted yet: {e}", m.point)),
        }
    }
    gone
}

fn unmount_all(log: &Log) {
    for _ in 0..UNMOUNT_PASSES {
        if unmount_pass(log) == 0 {
            break;
        }
    }
}

/// Remounts read-only whatever is still mounted writable from a served
/// device (NBD or ublk), so its data reaches the server; returns the
/// devices that still carry a writable mount.
fn freeze_served_mounts(log: &Log) -> Vec<KernelDevice> {
    use rustix::mount::{mount_remount, MountFlags};
    let mut busy = Vec::new();
    for m in mountinfo::current() {
        let Some(dev) = KernelDevice::of_source(&m.source) else { continue };
        if m.read_only() {
            continue;
        }
        match mount_remount(m.point.as_str(), MountFlags::RDONLY, c"") {
            Ok(()) => log.info(&format!("{} ({}) remounted read-only", m.point, m.source)),
            Err(e) => {
                log.warn(&format!("{} ({}) is still mounted writable: {e}", m.point, m.source));
                busy.push(dev);
            }
        }
    }
    busy
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// PID 1 inherits every exited daemon: reap them.
fn reap() {
    use rustix::process::{waitpid, WaitOptions};
    while let Ok(Some(_)) = waitpid(None, WaitOptions::NOHANG) {}
}

/// Flushes and detaches every daemon; returns the problems and how many
/// servers were flushed, detached and gone.
fn stop_daemons(log: &Log, busy: &[KernelDevice]) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut stopped = 0;
    let devices = match client::devices() {
        Ok(d) => d,
        Err(e) => return (vec![format!("cannot list the servers: {e}")], 0),
    };
    for dev in devices {
        let info = client::request_device(dev, Command::Info, client::REQUEST_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|t| Info::decode(&t));
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("{dev}: {e}"));
                continue;
            }
        };
        if busy.contains(&dev) {
            // Keep serving: the kernel may still write. Sync what we have.
            match client::request_device(dev, Command::Sync, client::REQUEST_TIMEOUT) {
                Ok(_) => log.warn(&format!("{dev} is still mounted writable: cowfile synced, left attached")),
                Err(e) => problems.push(format!("{dev}: sync failed: {e}")),
            }
            problems.push(format!("{dev} still mounted writable"));
            continue;
        }
        match client::request_device(dev, Command::Detach, client::DETACH_TIMEOUT) {
            Ok(reply) => log.info(&format!("{} (pid {}): {}", info.device, info.pid, reply.trim())),
            Err(e) => {
                problems.push(format!("{}: detach failed: {e}", info.device));
                continue;
            }
        }
        let deadline = Instant::now() + DAEMON_EXIT;
        while alive(info.pid) && Instant::now() < deadline {
            reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        reap();
        if alive(info.pid) {
            problems.push(format!("{}: server pid {} did not exit", info.device, info.pid));
        } else {
            stopped += 1;
        }
    }
    (problems, stopped)
}

/// The last line's account of the servers, which the tests check: a
/// shutdown that found no server is clean too, but says so.
fn servers_stopped(n: usize) -> String {
    match n {
        1 => "1 server flushed and detached".to_string(),
        n => format!("{n} servers flushed and detached"),
    }
}

/// Optical drives that carried a mount, for ejecting them afterwards.
fn optical_sources(mounts: &[Mount]) -> Vec<String> {
    let mut v: Vec<String> = mounts
        .iter()
        .filter(|m| m.source.starts_with("/dev/sr") || m.source.starts_with("/dev/scd"))
        .map(|m| m.source.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn eject(dev: &str, log: &Log) {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(dev, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => match crate::sys::ioctl::cdrom_eject(&fd) {
            Ok(()) => log.info(&format!("{dev}: ejected")),
            Err(e) => log.warn(&format!("{dev}: cannot eject: {e}")),
        },
        Err(e) => log.warn(&format!("{dev}: cannot open to eject: {e}")),
    }
}

/// Makes sure /proc, /sys and /dev exist in the exitrd (systemd may or
/// may not have moved them in).
fn api_mounts() {
    use rustix::mount::{mount, MountFlags as F};
    let _ = std::fs::create_dir_all("/proc");
    if !Path::new("/proc/self").exists() {
        let _ = mount("proc", "/proc", "proc", F::NOSUID | F::NODEV | F::NOEXEC, c"");
    }
    let _ = std::fs::create_dir_all("/sys");
    if !Path::new("/sys/class").exists() {
        let _ = mount("sysfs", "/sys", "sysfs", F::NOSUID | F::NODEV | F::NOEXEC, c"");
    }
    let _ = std::fs::create_dir_all("/dev");
    if !Path::new("/dev/console").exists() {
        let _ = mount("devtmpfs", "/dev", "devtmpfs", F::NOSUID, c"mode=0755");
    }
}

/// The exitrd's whole run, as PID 1. Never returns.
pub fn run(verb_word: Option<&str>) -> ! {
    api_mounts();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmd = super::cmdline::Cmdline::parse(&cmdline);
    let debug = cmd.has("debug") || cmd.has("rd.debug");
    let log = Log::open("cloopbox-shutdown", debug);
    let (verb, warning) = Verb::parse(verb_word);
    if let Some(w) = warning {
        log.warn(&w);
    }
    log.info(&format!("{} in the exit initramfs", verb.name()));
    let before = mountinfo::current();
    let optical = optical_sources(&before);
    unmount_all(&log);
    let busy = freeze_served_mounts(&log);
    let (mut problems, stopped) = stop_daemons(&log, &busy);
    unmount_all(&log);
    rustix::fs::sync();
    for m in mountinfo::current() {
        if !keep(&m) {
            log.warn(&format!("still mounted: {} ({} {})", m.point, m.fstype, m.source));
            if KernelDevice::of_source(&m.source).is_some() && !m.read_only() {
                problems.push(format!("{} still mounted writable", m.point));
            }
        }
    }
    if !cmd.has("noeject") && verb != Verb::Reboot {
        for dev in optical {
            eject(&dev, &log);
        }
    }
    if problems.is_empty() {
        log.info(&format!("clean shutdown, {}, {}", verb.name(), servers_stopped(stopped)));
    } else {
        log.error(&format!("unclean shutdown ({}): {}", servers_stopped(stopped), problems.join("; ")));
    }
    finish(verb, &log)
}

fn finish(verb: Verb, log: &Log) -> ! {
    use rustix::system::{reboot, RebootCommand};
    rustix::fs::sync();
    let cmd = match verb {
        Verb::Poweroff => RebootCommand::PowerOff,
        Verb::Reboot => RebootCommand::Restart,
        Verb::Halt => RebootCommand::Halt,
        Verb::Kexec => RebootCommand::Kexec,
    };
    if let Err(e) = reboot(cmd) {
        log.error(&format!("reboot({}) failed: {e}; powering off", verb.name()));
        let _ = reboot(RebootCommand::PowerOff);
    }
    // Halt returns to us: PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert_eq!(Verb::parse(Some("reboot")), (Verb::Reboot, None));
        assert_eq!(Verb::parse(None).0, Verb::Poweroff);
        assert_eq!(Verb::parse(Some("kexec")).0, Verb::Kexec);
        let (v, w) = Verb::parse(Some("exit"));
        assert_eq!(v, Verb::Poweroff);
        assert!(w.unwrap().contains("'exit'"));
    }

    #[test]
    fn stage_writes_an_executable_copy_and_the_release_file() {
        let dir = tempfile::tempdir().unwrap();
        stage(dir.path()).unwrap();
        let me = std::fs::metadata("/proc/self/exe").unwrap();
        let copy = std::fs::metadata(dir.path().join("shutdown")).unwrap();
        assert_eq!(copy.len(), me.len());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(copy.permissions().mode() & 0o777, 0o755);
        let rel = std::fs::read_to_string(dir.path().join("etc/initrd-release")).unwrap();
        assert!(rel.contains("ID=cloopbox"));
        assert!(dir.path().join("oldroot").is_dir());
        assert!(!dir.path().join(".shutdown.new").exists());
    }

    #[test]
    fn optical_drives_are_found_once() {
        let m = mountinfo::parse(
            "1 0 11:0 / /live ro - iso9660 /dev/sr0 ro\n2 0 11:0 / /x ro - iso9660 /dev/sr0 ro\n\
             3 0 8:1 / /y rw - ext4 /dev/sda1 rw\n",
        );
        assert_eq!(optical_sources(&m), ["/dev/sr0"]);
    }
}
