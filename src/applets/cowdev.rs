//! `cowdev`: attach, detach and list read-only-file/cowfile pairs, as
//! cowloop's tool did with `/dev/cow/ctl`, here served by a cloopd per pair
//! on a kernel NBD device and reached through its control socket
//! (`crate::control`).
//!
//! * `-a RDOFILE COWFILE [DEVICE]` starts `cloopd --background` for the
//!   pair and prints the device the kernel gave it;
//! * `-d DEVICE` asks that server to flush, disconnect and exit, and waits
//!   until it has; refused while the device is in use (mounted, held by
//!   another block device, opened exclusively), unless `-f`;
//! * `-l` lists the pairs in the original columns, with whole paths;
//!   `-l -v [DEVICE]` prints status blocks.
//!
//! Differences from cowloop 3.1: the flag may be anywhere (getopt), paths
//! are made absolute (the original handed the kernel the names as given),
//! a read-only server (no cowfile) is listed with `-` as its cowfile, and
//! `-d` checks mounts itself instead of relying on the driver's EBUSY.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::control::client::{self, ClientError, DETACH_TIMEOUT, REQUEST_TIMEOUT};
use crate::control::proto::{display_path, socket_name, KernelDevice};
use crate::control::{Command, Info};
use crate::serve::spawn;
use crate::sys::mountinfo;

const NAME: &str = "cowdev";
const USAGE: &str = "\
Usage: cowdev -a RDOFILE COWFILE [DEVICE]
       cowdev -d [-f] DEVICE
       cowdev -l [-v [DEVICE]]

Copy-on-write devices: a read-only file (a cloop image, any file or block
device) plus a cowloop cowfile, served by cloopd on a kernel NBD device.

  -a   attach RDOFILE with COWFILE (created when missing) on DEVICE
       (/dev/nbdN; default: the first free one) and print the device
  -d   flush the cowfile, disconnect DEVICE (/dev/nbdN, or /dev/ublkbN
       of cloopd --transport ublk) and stop its server; refused while
       DEVICE is mounted or otherwise in use, unless -f is given
  -f   with -d: detach even when the device is in use (its users get I/O
       errors)
  -l   list the active devices: device, read-only file, cowfile
  -v   with -l: the status of DEVICE (or of every device), in the layout
       of cowloop's /proc/cow/N
  -h, --help   show this help

Needs root. Exit status: 0 ok, 1 usage, 2 errors.
";

/// How long a detached server may take to exit after its reply.
const EXIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq)]
enum Action {
    Attach { rdo: PathBuf, cow: PathBuf, device: String },
    Detach { dev: KernelDevice, force: bool },
    List { verbose: bool, dev: Option<KernelDevice> },
    Help,
}

/// A device a server may be attached to: `/dev/nbdN` or `/dev/ublkbN`
/// (the `/dev/` may be left out).
fn device(text: &OsStr) -> Result<KernelDevice, String> {
    let text = text.to_string_lossy();
    KernelDevice::parse(&text)
        .ok_or_else(|| format!("'{text}' is not a cloopbox device (/dev/nbdN or /dev/ublkbN)"))
}

fn parse_args(args: &[OsString]) -> Result<Action, String> {
    let parsed = crate::getopt::parse(args, "adlvfh", &["help"])?;
    let has = |n: &str| parsed.opts.iter().any(|o| o.name == n);
    if has("h") || has("help") {
        return Ok(Action::Help);
    }
    let ops = &parsed.operands;
    let action = match (has("a"), has("d"), has("l")) {
        (true, false, false) => match ops.as_slice() {
            [rdo, cow] | [rdo, cow, _] => {
                let device = match ops.get(2) {
                    None => "auto".to_string(),
                    Some(d) if d == "auto" => "auto".to_string(),
                    Some(d) => match device(d)? {
                        dev @ KernelDevice::Nbd(_) => dev.to_string(),
                        KernelDevice::Ublk(_) => return Err("-a attaches NBD devices (/dev/nbdN)".into()),
                    },
                };
                Action::Attach { rdo: rdo.into(), cow: cow.into(), device }
            }
            _ => return Err("-a needs RDOFILE COWFILE [DEVICE]".into()),
        },
        (false, true, false) => match ops.as_slice() {
            [dev] => Action::Detach { dev: device(dev)?, force: has("f") },
            _ => return Err("-d needs one DEVICE".into()),
        },
        (false, false, true) => match ops.as_slice() {
            [] => Action::List { verbose: has("v"), dev: None },
            [d] if has("v") => Action::List { verbose: true, dev: Some(device(d)?) },
            _ => return Err("-l takes a DEVICE only with -v".into()),
        },
        _ => return Err("give exactly one of -a, -d and -l".into()),
    };
    if has("f") && !matches!(action, Action::Detach { .. }) {
        return Err("-f goes with -d".into());
    }
    if has("v") && !matches!(action, Action::List { .. }) {
        return Err("-v goes with -l".into());
    }
    Ok(action)
}

pub fn main(args: Vec<OsString>) -> i32 {
    let action = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(e) => return crate::applets::usage_error(NAME, USAGE, &e),
    };
    let result = match action {
        Action::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Action::Attach { rdo, cow, device } => attach(&rdo, &cow, &device),
        Action::Detach { dev, force } => detach(dev, force),
        Action::List { verbose: false, .. } => list(),
        Action::List { verbose: true, dev } => status(dev),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            2
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts `cloopd --background` for the pair, relays its device line and
/// whatever it said on stderr until it went to the background.
fn attach(rdo: &Path, cow: &Path, device: &str) -> Result<(), String> {
    let (rdo, cow) = (absolute(rdo)?, absolute(cow)?);
    let req = spawn::Request {
        image: &rdo,
        cow: Some(&cow),
        device,
        argv0: "cloopd",
        flags: vec!["--background".into(), "-q".into()],
        capture_stderr: true,
    };
    match spawn::spawn(&req) {
        // The server lives on in its own session; init reaps it.
        Ok(started) => {
            println!("{}", started.device.display());
            eprint!("{}", started.said);
            Ok(())
        }
        Err(e) => Err(format!("cannot attach {} with {}: {e}", rdo.display(), cow.display())),
    }
}

fn not_ours(dev: KernelDevice, e: ClientError) -> String {
    match e {
        ClientError::NotRunning(_) => format!("{dev}: no cloopbox server is attached to it"),
        e => format!("{dev}: {e}"),
    }
}

fn detach(dev: KernelDevice, force: bool) -> Result<(), String> {
    let name = socket_name(dev);
    let info = client::request(&name, Command::Info, REQUEST_TIMEOUT)
        .map_err(|e| not_ours(dev, e))
        .and_then(|text| Info::decode(&text).map_err(|e| format!("{dev}: {e}")))?;
    if !force {
        if let Some(why) = in_use(dev) {
            return Err(format!("{} is {why}: not detached (umount first, or -f)", info.device));
        }
    }
    client::request(&name, Command::Detach, DETACH_TIMEOUT).map_err(|e| not_ours(dev, e))?;
    // The reply comes after the final flush; wait for the exit too, so the
    // cowfile is free (unlocked) when we return.
    let deadline = Instant::now() + EXIT_WAIT;
    while alive(info.pid) {
        if Instant::now() >= deadline {
            return Err(format!("{}: detached, but server pid {} has not exited", info.device, info.pid));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A zombie (exited, not yet reaped by init) counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Every server's info, in device order; servers that vanish while we
/// look are left out.
fn infos() -> Result<Vec<Info>, String> {
    let mut out = Vec::new();
    for dev in client::devices().map_err(|e| e.to_string())? {
        match client::request(&socket_name(dev), Command::Info, REQUEST_TIMEOUT) {
            Ok(text) => out.push(Info::decode(&text).map_err(|e| format!("{dev}: {e}"))?),
            Err(ClientError::NotRunning(_)) => {}
            Err(e) => return Err(not_ours(dev, e)),
        }
    }
    Ok(out)
}

/// cowdev 3.1's `-l` layout, whole paths.
fn listing(infos: &[Info]) -> String {
    let mut out = format!("{:<12}  {:<32} {:<32}\n", "cowdevice", "read-only file", "copy-on-write file");
    out += &"-".repeat(80);
    out.push('\n');
    for i in infos {
        let cow = i.cow.as_deref().map_or_else(|| "-".to_string(), display_path);
        out += &format!("{:<12}  {:<32} {:<32}\n", i.device, display_path(&i.image), cow);
    }
    out.push('\n');
    out
}

fn print(text: &str) -> Result<(), String> {
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

fn list() -> Result<(), String> {
    print(&listing(&infos()?))
}

fn status(dev: Option<KernelDevice>) -> Result<(), String> {
    let devs = match dev {
        Some(d) => vec![d],
        None => client::devices().map_err(|e| e.to_string())?,
    };
    let mut blocks = Vec::new();
    for d in devs {
        match client::request(&socket_name(d), Command::Status, REQUEST_TIMEOUT) {
            Ok(text) => blocks.push(text),
            Err(ClientError::NotRunning(_)) if dev.is_none() => {}
            Err(e) => return Err(not_ours(d, e)),
        }
    }
    print(&blocks.join("\n"))
}

/// Why `dev` must not be detached, if it must not.
fn in_use(dev: KernelDevice) -> Option<String> {
    let node = dev.to_string();
    let sys = PathBuf::from(format!("/sys/block/{}", dev.name()));
    let mut devs = Vec::new();
    if let Ok(st) = rustix::fs::stat(node.as_str()) {
        devs.push((rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)));
    }
    // The partitions (nbdNpM) have their own numbers.
    if let Ok(entries) = std::fs::read_dir(&sys) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&format!("{}p", dev.name())) {
                if let Some(dev) =
                    std::fs::read_to_string(e.path().join("dev")).ok().and_then(|t| mountinfo::parse_dev(&t))
                {
                    devs.push(dev);
                }
            }
        }
    }
    if let Some(at) = mountinfo::mount_points(&mountinfo::current(), &devs).first() {
        return Some(format!("mounted on {at}"));
    }
    if let Ok(holders) = std::fs::read_dir(sys.join("holders")) {
        let names: Vec<String> =
            holders.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        if !names.is_empty() {
            return Some(format!("held by {}", names.join(", ")));
        }
    }
    // The catch-all: a mount in another namespace, swap, an exclusive
    // opener. The kernel refuses an O_EXCL open of a claimed device.
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(node.as_str(), OFlags::RDONLY | OFlags::EXCL | OFlags::CLOEXEC, Mode::empty()) {
        Err(rustix::io::Errno::BUSY) => Some("in use (mounted or claimed by another process)".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Action, String> {
        parse_args(&v.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            args(&["-a", "rdo", "cow"]),
            Ok(Action::Attach { rdo: "rdo".into(), cow: "cow".into(), device: "auto".into() })
        );
        assert_eq!(
            args(&["-a", "rdo", "cow", "nbd3"]),
            Ok(Action::Attach { rdo: "rdo".into(), cow: "cow".into(), device: "/dev/nbd3".into() })
        );
        assert_eq!(
            args(&["-a", "rdo", "cow", "auto"]),
            Ok(Action::Attach { rdo: "rdo".into(), cow: "cow".into(), device: "auto".into() })
        );
        use KernelDevice::{Nbd, Ublk};
        assert_eq!(args(&["-d", "/dev/nbd1"]), Ok(Action::Detach { dev: Nbd(1), force: false }));
        assert_eq!(args(&["-f", "-d", "/dev/nbd1"]), Ok(Action::Detach { dev: Nbd(1), force: true }));
        assert_eq!(args(&["-d", "/dev/ublkb0"]), Ok(Action::Detach { dev: Ublk(0), force: false }));
        assert_eq!(args(&["-l"]), Ok(Action::List { verbose: false, dev: None }));
        assert_eq!(args(&["-lv"]), Ok(Action::List { verbose: true, dev: None }));
        assert_eq!(args(&["-l", "-v", "/dev/nbd2"]), Ok(Action::List { verbose: true, dev: Some(Nbd(2)) }));
        assert_eq!(args(&["-l", "-v", "ublkb3"]), Ok(Action::List { verbose: true, dev: Some(Ublk(3)) }));
        assert_eq!(args(&["--help"]), Ok(Action::Help));
    }

    #[test]
    fn bad_command_lines() {
        for bad in [
            &[][..],
            &["-a", "rdo"],
            &["-a", "rdo", "cow", "/dev/sda"],
            &["-a", "rdo", "cow", "/dev/ublkb0"],
            &["-d", "/dev/ublkc0"],
            &["-a", "a", "b", "c", "d"],
            &["-d"],
            &["-d", "/dev/loop0"],
            &["-l", "/dev/nbd0"],
            &["-a", "-d", "x"],
            &["-l", "-f"],
            &["-d", "-v", "/dev/nbd0"],
            &["-x"],
        ] {
            assert!(args(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listing_keeps_the_original_columns_and_whole_paths() {
        let infos = [
            Info {
                device: "/dev/nbd0".into(),
                pid: 1,
                image: "/media/my cd/a very long path to an image/KNOPPIX".into(),
                cow: Some("/data/my cow".into()),
            },
            Info { device: "/dev/nbd1".into(), pid: 2, image: "/x".into(), cow: None },
        ];
        let text = listing(&infos);
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(
            lines[0],
            format!("{:<12}  {:<32} {:<32}", "cowdevice", "read-only file", "copy-on-write file")
        );
        assert_eq!(lines[1], "-".repeat(80));
        assert_eq!(lines[2], "/dev/nbd0     /media/my cd/a very long path to an image/KNOPPIX /data/my cow                    ");
        assert_eq!(lines[3], format!("/dev/nbd1     {:<32} {:<32}", "/x", "-"));
        assert_eq!(&lines[4..], ["", ""]);
        assert_eq!(listing(&[]), format!("{}\n{}\n\n", lines[0], lines[1]));
    }

    #[test]
    fn a_missing_process_is_not_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
