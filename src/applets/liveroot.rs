//! `liveroot [--root DIR] [--no-exitrd]`: the live-boot steps of `init`
//! for another initramfs (the dracut module): find the medium (or take
//! the image on an HTTP server of `root=live:URL`/`httpfs=`, over the
//! network that initramfs brought up), serve the images, mount the root
//! at DIR, stage the exitrd; then exit, leaving the root-storage daemons
//! running.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::boot::cmdline::Cmdline;
use crate::boot::init::{
    finish_preloads, layer_modules, load_modules, locate, mount_net_root, mount_root, start_preloads,
};
use crate::boot::log::Log;
use crate::boot::options::BootOptions;
use crate::net::link::RESOLV_CONF;

const APPLET: &str = "liveroot";

const USAGE: &str = "\
Usage: liveroot [--root DIR] [--no-exitrd] [-q]

For an initramfs that is not ours (dracut): reads the kernel command line
(/etc/cmdline.d/*.conf, /etc/cmdline, then /proc/cmdline, as dracut does;
the options of init, see docs/boot-options.md), loads the
modules it needs, finds the medium, serves each image with an @cloopd
root-storage daemon on a free /dev/nbdN, mounts the root at DIR (default
/sysroot) and stages the exit initramfs in /run/initramfs. Prints one line
per image, 'DEVICE PID IMAGE', and exits 0 with the daemons running.

With root=live:URL, httpfs=URL or fetch=URL the image is on an HTTP(S)
server: the network must already be up (dracut's network module, with
rd.neednet=1 ip=...); host names resolve through /etc/resolv.conf, to
which liveroot adds each nameserver= missing there. ip= is left to the
initramfs that runs liveroot.

  --root DIR     where to mount the root (default /sysroot)
  --no-exitrd    do not stage /run/initramfs/shutdown
  -q             no progress messages on the console
";

/// The command line as dracut's `getcmdline` sees it: options baked into
/// the image (`/etc/cmdline.d/*.conf` in name order, then `/etc/cmdline`)
/// first, the kernel's `/proc/cmdline` last, so that the last word wins.
fn dracut_cmdline(root: &std::path::Path) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("etc/cmdline.d")) {
        let mut confs: Vec<PathBuf> =
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
        confs.sort();
        parts.extend(confs.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    parts.extend(std::fs::read_to_string(root.join("etc/cmdline")).ok());
    let proc = root.join("proc/cmdline");
    parts.push(std::fs::read_to_string(&proc).map_err(|e| format!("{}: {e}", proc.display()))?);
    // Line breaks in the files separate words like spaces do.
    Ok(parts.iter().map(|p| p.replace('\n', " ")).collect::<Vec<_>>().join(" "))
}

/// Adds each of `servers` (`nameserver=`) that `path` (the resolv.conf
/// the initramfs's network module wrote, if any) lacks: our resolver
/// reads only that file, and not every network module writes
/// `nameserver=` there.
fn add_nameservers(path: &Path, servers: &[std::net::Ipv4Addr], log: &Log) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let have = crate::net::dns::nameservers(&text);
    let missing: Vec<_> = servers.iter().filter(|s| !have.contains(s)).copied().collect();
    if missing.is_empty() {
        return;
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.extend(missing.iter().map(|s| format!("nameserver {s}\n")));
    match std::fs::write(path, text) {
        Ok(()) => log.info(&format!(
            "{}: nameserver= added {}",
            path.display(),
            missing.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ")
        )),
        Err(e) => log.warn(&format!("{}: cannot add nameserver= ({e})", path.display())),
    }
}

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
    let cmdline = match dracut_cmdline(Path::new("/")) {
        Ok(c) => c,
        Err(e) => return crate::applets::fail(APPLET, e),
    };
    let opts = BootOptions::from_cmdline(&Cmdline::parse(&cmdline));
    let mut log = if quiet { Log::stderr("cloopbox") } else { Log::open("cloopbox", opts.debug) };
    log.debug = opts.debug;
    for w in &opts.warnings {
        log.warn(w);
    }
    load_modules(&layer_modules(opts.transport), &log);
    start_preloads(&opts.preload, &log);
    let served = match &opts.net_root {
        Some(net) => {
            add_nameservers(Path::new(RESOLV_CONF), &opts.nameservers, &log);
            mount_net_root(&opts, net, &root, exitrd, &log)
        }
        None => locate(&opts, &log).and_then(|medium| mount_root(&opts, &medium, &root, exitrd, &log)),
    };
    // Not while a module is still loading on another thread.
    finish_preloads(&log);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baked_in_options_come_first_so_the_kernel_line_wins() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/cmdline.d")).unwrap();
        std::fs::create_dir_all(root.path().join("proc")).unwrap();
        std::fs::write(root.path().join("etc/cmdline.d/20-b.conf"), "rootdelay=20\n").unwrap();
        std::fs::write(root.path().join("etc/cmdline.d/10-a.conf"), "knoppix_dir=LIVE\ntoram\n").unwrap();
        std::fs::write(root.path().join("etc/cmdline.d/ignored.txt"), "debug").unwrap();
        std::fs::write(root.path().join("proc/cmdline"), "rootdelay=5 quiet\n").unwrap();
        let line = dracut_cmdline(root.path()).unwrap();
        let opts = BootOptions::from_cmdline(&Cmdline::parse(&line));
        assert_eq!(opts.knoppix_dir, "LIVE");
        assert!(opts.toram && !opts.debug);
        assert_eq!(opts.media_timeout.as_secs(), 5, "{line}");
        assert!(dracut_cmdline(&root.path().join("nowhere")).unwrap_err().contains("proc/cmdline"));
    }

    #[test]
    fn nameservers_missing_from_resolv_conf_are_appended_once() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("resolv.conf");
        let log = Log::stderr("test");
        let a: std::net::Ipv4Addr = "10.0.2.101".parse().unwrap();
        let b: std::net::Ipv4Addr = "10.0.2.3".parse().unwrap();
        std::fs::write(&conf, "search test\nnameserver 10.0.2.3").unwrap();
        add_nameservers(&conf, &[b, a], &log);
        add_nameservers(&conf, &[a], &log);
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "search test\nnameserver 10.0.2.3\nnameserver 10.0.2.101\n"
        );
        // No file yet (a network module that writes none): created.
        let fresh = dir.path().join("etc/none");
        add_nameservers(&fresh, &[a], &log);
        assert!(!fresh.exists(), "the directory is missing: a warning, nothing written");
        let fresh = dir.path().join("fresh.conf");
        add_nameservers(&fresh, &[a], &log);
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "nameserver 10.0.2.101\n");
    }
}
