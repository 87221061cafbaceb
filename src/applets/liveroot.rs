//! `liveroot [--root DIR] [--no-exitrd]`: the live-boot steps of `init`
//! for another initramfs (the dracut module): find the medium, serve the
//! images, mount the root at DIR, stage the exitrd; then exit, leaving the
//! root-storage daemons running.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::boot::cmdline::Cmdline;
use crate::boot::init::{load_modules, locate, mount_root};
use crate::boot::log::Log;
use crate::boot::options::BootOptions;

const APPLET: &str = "liveroot";

const USAGE: &str = "\
Usage: liveroot [--root DIR] [--no-exitrd] [-q]

For an initramfs that is not ours (dracut): reads the kernel command line
(/proc/cmdline; the options of init, see docs/boot-options.md), loads the
modules it needs, finds the medium, serves each image with an @cloopd
root-storage daemon on a free /dev/nbdN, mounts the root at DIR (default
/sysroot) and stages the exit initramfs in /run/initramfs. Prints one line
per image, 'DEVICE PID IMAGE', and exits 0 with the daemons running.

  --root DIR     where to mount the root (default /sysroot)
  --no-exitrd    do not stage /run/initramfs/shutdown
  -q             no progress messages on the console
";

pub fn main(args: Vec<OsString>) -> i32 {
    let mut root = PathBuf::from("/sysroot");
    let mut exitrd = true;
    let mut quiet = false;
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--help") | Some("-h") => {
                print!("{USAGE}");
                return 0;
            }
            Some("--root") => match it.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => return crate::applets::usage_error(APPLET, USAGE, "--root needs a directory"),
            },
            Some("--no-exitrd") => exitrd = false,
            Some("-q") | Some("--quiet") => quiet = true,
            _ => {
                return crate::applets::usage_error(
                    APPLET,
                    USAGE,
                    &format!("unknown argument '{}'", a.to_string_lossy()),
                )
            }
        }
    }
    if !rustix::process::geteuid().is_root() {
        return crate::applets::fail(
            APPLET,
            "must run as root (it mounts filesystems and attaches NBD devices)",
        );
    }
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(c) => c,
        Err(e) => return crate::applets::fail(APPLET, format!("/proc/cmdline: {e}")),
    };
    let opts = BootOptions::from_cmdline(&Cmdline::parse(&cmdline));
    let mut log = if quiet { Log::stderr("cloopbox") } else { Log::open("cloopbox", opts.debug) };
    log.debug = opts.debug;
    for w in &opts.warnings {
        log.warn(w);
    }
    load_modules(&log);
    let served = locate(&opts, &log).and_then(|medium| mount_root(&opts, &medium, &root, exitrd, &log));
    match served {
        Ok(served) => {
            for s in served {
                println!("{} {} {}", s.device.display(), s.daemon_pid, s.image.display());
            }
            0
        }
        Err(f) => {
            for d in &f.details {
                log.error(&format!("  {d}"));
            }
            crate::applets::fail(APPLET, f.what)
        }
    }
}
