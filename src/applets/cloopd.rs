//! `cloopd IMAGE [--cow COWFILE] --unix PATH | --tcp [ADDR:]PORT ...`:
//! serve a cloop image, a plain file or a block device over NBD (or, with
//! `--transport ublk`, as a `/dev/ublkbN` of the kernel's ublk driver).
//!
//! Two stages (ripgrep's low/high args): [`parse_args`] turns the command
//! line into [`Options`] without touching the system; [`crate::serve`]
//! opens the image, stacks the layers and runs the server.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};

use crate::nbd;
use crate::serve::{self, Options, Transport};
use crate::units::parse_size;

const APPLET: &str = "cloopd";

const USAGE: &str = "\
Usage: cloopd [OPTIONS] IMAGE

Serve IMAGE over NBD: a cloop image of any version, a plain file or a block
device. IMAGE may be an http:// or https:// URL (read lazily with range
requests; an ISO there serves its KNOPPIX/KNOPPIX, or the file named by
URL#PATH). Without --cow the export is read-only.

  --transport nbd|ublk    nbd (default): the options below; ublk: serve
                          the same stack as /dev/ublkbN through the
                          kernel's ublk_drv (Linux 6.x, modprobe
                          ublk_drv) and print the device; --threads N is
                          then the number of queues (one thread each),
                          --max-request the largest request and
                          --read-ahead the read-ahead; --device auto or
                          /dev/ublkbN picks the number, --root-daemon,
                          --background and the control socket work as
                          for NBD; no --unix, --tcp or --connections

  --cow COWFILE           write to COWFILE (cowloop format; created when
                          missing, repaired when left dirty by a crash)
  --unix PATH             listen on a unix socket (mode 0600)
  --tcp [ADDR:]PORT       listen on TCP; ADDR defaults to 127.0.0.1
                          (an IP address; [::1]:PORT for IPv6)
  --cache-size SIZE       decompressed-block cache shared by all clients
                          (default 64M; suffixes k K m M g G; 0 disables)
  --prefetch N            decode up to N image blocks ahead of a
                          sequential reader on one background thread
                          (default 0 = off; at most a quarter of the cache)
  --max-connections N     at most N clients at once (default 64)
  --threads N             worker threads (default: one per CPU)
  --device /dev/nbdN|auto attach to the kernel's NBD client (generic
                          netlink; auto takes a free device) and print
                          the device; the kernel's disconnect ends us
                          (with ublk: /dev/ublkbN|auto)
  --connections N         kernel connections, one per queue (default 1;
                          more need multi-conn: a cow or read-only export)
  --max-request KIB|auto|kernel
                          raise the device's max_sectors_kb (the largest
                          request the kernel sends) to KIB, capped at
                          max_hw_sectors_kb; auto (default): the image's
                          block size; kernel: leave it
  --read-ahead KIB|auto|kernel
                          the device's read_ahead_kb; auto (default): the
                          image's block size; kernel: leave it
  --block-size N          the device's logical block size, 512-4096
                          (default: what the filesystem inside needs,
                          2048 for iso9660, at most 4096)
  --background            once the device is attached and printed: a new
                          session, stdin/stdout/stderr on /dev/null and
                          messages to the console and kernel log (cowdev -a
                          starts servers so)
  --root-daemon           serving the root filesystem: argv[0] '@cloopd'
                          (systemd spares it), mlockall, oom_score_adj
                          -1000, PR_SET_IO_FLUSHER, log to /dev/kmsg, and
                          SIGTERM/SIGHUP/SIGINT are ignored; only a kernel
                          disconnect (cowdev -d) ends it
  --root-hash HEX         verify every 4096-byte block against a dm-verity
                          hash tree with this trusted root hash before it
                          is cached or served; a block that does not match
                          is EIO and reported, never served
  --verity-tree FILE|URL  the hash tree (default IMAGE.verity, URL.verity
                          next to an image on a server, or PATH.verity
                          inside the ISO that holds the image)
  --check-at-most-once    hash each block only the first time it is read
                          (dm-verity's option: weaker, see verity(1))
  --watch-space DIR       look at the free space of DIR's filesystem every
                          2 s (an overlayfs upper directory, which the
                          kernel fills itself) and say once on the
                          console when it is full; again after it had
                          room (init passes it for an overlayfs root)
  --ca-file FILE          trust the PEM certificates in FILE for an https://
                          IMAGE, besides the built-in roots (certificates
                          are always verified: chain, host name, dates)
  --export-name NAME      the export's name (default: empty; the empty
                          name is always accepted)
  --description TEXT      the export's description
  -q, --quiet             do not print the startup line
  -h, --help              show this help

At least one of --unix, --tcp or --device is needed (not with ublk). SIGINT or SIGTERM
stop the server cleanly (outside --root-daemon): in-flight requests
finish, the cowfile is flushed and a kernel device is disconnected.
With --device (and always with ublk), root controls the server through
the abstract socket @cloopbox/nbdN or @cloopbox/ublkbN (cowdev -l -v,
cowdev -d, cowsync).
";

fn parse_count(opt: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("--{opt} needs a positive number, not '{value}'")),
    }
}

fn parse_limit(opt: &str, value: &str) -> Result<nbd::kernel::Limit, String> {
    nbd::kernel::Limit::parse(value)
        .ok_or_else(|| format!("--{opt} '{value}': expected KiB (0-1048576), auto or kernel"))
}

/// `PORT`, `ADDR:PORT` or `[V6ADDR]:PORT`; a bare port binds loopback.
/// Host names are refused: resolving them would pull in NSS, which a
/// root-filesystem daemon must not depend on.
pub fn parse_tcp(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    text.parse().map_err(|_| format!("--tcp '{text}': expected PORT, IPADDR:PORT or [IPV6ADDR]:PORT"))
}

fn parse_transport(value: &str) -> Result<Transport, String> {
    match value {
        "nbd" => Ok(Transport::Nbd),
        "ublk" => Ok(Transport::Ublk),
        _ => Err(format!("--transport '{value}': expected nbd or ublk")),
    }
}

/// The ublk transport serves its own device: the NBD-only options are
/// refused rather than ignored.
fn check_ublk(a: &Options) -> Result<(), String> {
    let nbd_only =
        [(!a.unix.is_empty(), "--unix"), (!a.tcp.is_empty(), "--tcp"), (a.connections != 1, "--connections")];
    match nbd_only.iter().find(|(set, _)| *set) {
        Some((_, name)) => Err(format!("{name} is for --transport nbd; ublk serves /dev/ublkbN itself")),
        None => Ok(()),
    }
}

/// `--device`'s value for the transport: `auto` (`Some(None)`) or the
/// number of `/dev/nbdN` or `/dev/ublkbN`.
fn parse_device(value: &str, transport: Transport) -> Result<Option<Option<u32>>, String> {
    use crate::control::proto::KernelDevice;
    if value == "auto" {
        return Ok(Some(None));
    }
    match transport {
        Transport::Nbd => nbd::kernel::parse_device(value)
            .map(|n| Some(Some(n)))
            .ok_or_else(|| format!("--device '{value}': expected /dev/nbdN or auto")),
        Transport::Ublk => match KernelDevice::parse(value) {
            Some(KernelDevice::Ublk(n)) => Ok(Some(Some(n))),
            _ => Err(format!("--device '{value}': expected /dev/ublkbN or auto (--transport ublk)")),
        },
    }
}

/// Parses the command line (without argv[0]); `Ok(None)` means --help.
pub fn parse_args(args: &[OsString]) -> Result<Option<Options>, String> {
    let long = [
        "cow=",
        "unix=",
        "tcp=",
        "cache-size=",
        "prefetch=",
        "max-connections=",
        "threads=",
        "export-name=",
        "description=",
        "device=",
        "connections=",
        "max-request=",
        "read-ahead=",
        "block-size=",
        "root-daemon",
        "background",
        "root-hash=",
        "verity-tree=",
        "check-at-most-once",
        "watch-space=",
        "ca-file=",
        "transport=",
        "quiet",
        "help",
    ];
    let parsed = crate::getopt::parse(args, "qh", &long)?;
    let mut a = Options::new("");
    // Read once the transport is known: it decides what a device is.
    let mut device = None;
    for opt in parsed.opts {
        let value = opt.value.unwrap_or_default();
        match opt.name.as_str() {
            "cow" => a.cow = Some(value.into()),
            "unix" => a.unix.push(value.into()),
            "tcp" => a.tcp.push(parse_tcp(&value)?),
            "cache-size" => a.cache_size = parse_size(&value).map_err(|e| format!("--cache-size: {e}"))?,
            "prefetch" => {
                a.prefetch = value
                    .parse()
                    .map_err(|_| format!("--prefetch needs a number of blocks, not '{value}'"))?
            }
            "max-connections" => a.max_connections = parse_count("max-connections", &value)?,
            "threads" => a.threads = parse_count("threads", &value)?,
            "export-name" if value.len() > nbd::proto::MAX_STRING => {
                return Err(format!("--export-name is longer than {} bytes", nbd::proto::MAX_STRING))
            }
            "export-name" => a.export_name = value,
            "description" => a.description = Some(value),
            "device" => device = Some(value),
            "connections" => a.connections = parse_count("connections", &value)?,
            "max-request" => a.queue.max_sectors_kb = parse_limit("max-request", &value)?,
            "read-ahead" => a.queue.read_ahead_kb = parse_limit("read-ahead", &value)?,
            "block-size" => match value.parse::<u32>() {
                Ok(n) if n.is_power_of_two() && (512..=4096).contains(&n) => a.block_size = Some(n),
                _ => return Err(format!("--block-size '{value}': a power of two from 512 to 4096")),
            },
            "root-daemon" => a.root_daemon = true,
            "background" => a.background = true,
            "root-hash" => a.verity.root = Some(crate::verity::format::parse_root_hash(&value)?),
            "verity-tree" => a.verity.tree = Some(value.into()),
            "check-at-most-once" => a.verity.once = true,
            "watch-space" => a.watch_space = Some(value.into()),
            "ca-file" => a.ca_file = Some(value.into()),
            "transport" => a.transport = parse_transport(&value)?,
            "q" | "quiet" => a.quiet = true,
            _ => return Ok(None),
        }
    }
    let [image] =
        <[OsString; 1]>::try_from(parsed.operands).map_err(|_| "expected one IMAGE (try --help)")?;
    a.image = image.into();
    if let Some(value) = device {
        a.device = parse_device(&value, a.transport)?;
    }
    if a.verity.root.is_none() && (a.verity.tree.is_some() || a.verity.once) {
        return Err("--verity-tree and --check-at-most-once need --root-hash".into());
    }
    if a.transport == Transport::Ublk {
        // ublk always makes a kernel device: --device is optional.
        return check_ublk(&a).map(|()| Some(a));
    }
    if a.unix.is_empty() && a.tcp.is_empty() && a.device.is_none() {
        return Err("nothing to serve on: give --unix PATH, --tcp [ADDR:]PORT and/or --device".into());
    }
    if a.root_daemon && a.device.is_none() {
        return Err("--root-daemon serves a kernel device: it needs --device".into());
    }
    if a.background && a.device.is_none() {
        return Err("--background detaches once a kernel device is attached: it needs --device".into());
    }
    Ok(Some(a))
}

pub fn main(args: Vec<OsString>) -> i32 {
    if args.iter().any(|a| a == "--root-daemon") {
        if let Some(e) = serve::daemon::ensure_at_name(&args) {
            return crate::applets::fail(APPLET, format!("--root-daemon: re-executing as @cloopd: {e}"));
        }
    }
    match crate::applets::parsed(APPLET, USAGE, parse_args(args.get(1..).unwrap_or_default())) {
        Ok(a) => match serve::run(a) {
            Ok(()) => 0,
            Err(e) => crate::applets::fail(APPLET, e),
        },
        Err(status) => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Option<Options>, String> {
        parse_args(&v.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn tcp_defaults_to_loopback_and_refuses_names() {
        assert_eq!(parse_tcp("10809").unwrap(), "127.0.0.1:10809".parse().unwrap());
        assert_eq!(parse_tcp("localhost:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(parse_tcp("0.0.0.0:7").unwrap(), "0.0.0.0:7".parse().unwrap());
        assert_eq!(parse_tcp("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        assert!(parse_tcp("example.org:7").is_err());
        assert!(parse_tcp("70000").is_err());
    }

    #[test]
    fn flags_parse_and_combine() {
        let a = args(&["img", "--unix", "/s", "--tcp=9", "--cache-size", "1M", "--threads", "3", "-q"])
            .unwrap()
            .unwrap();
        assert_eq!(a.image, std::path::PathBuf::from("img"));
        assert_eq!(a.unix, vec![std::path::PathBuf::from("/s")]);
        assert_eq!(a.tcp, vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!((a.cache_size, a.threads, a.quiet), (1 << 20, 3, true));
        assert_eq!(args(&["img", "--unix", "/s", "--cache-size", "0"]).unwrap().unwrap().cache_size, 0);
        assert_eq!(args(&["img", "--unix", "/s", "--prefetch", "16"]).unwrap().unwrap().prefetch, 16);
        assert!(args(&["img", "--unix", "/s", "--prefetch", "-1"]).unwrap_err().contains("--prefetch"));
        assert!(args(&["--help"]).unwrap().is_none());
        let w = args(&["img", "--unix", "/s", "--watch-space", "/run/initramfs/cow"]).unwrap().unwrap();
        assert_eq!(w.watch_space, Some(std::path::PathBuf::from("/run/initramfs/cow")));
    }

    #[test]
    fn transport_ublk_takes_its_device_and_no_sockets() {
        assert_eq!(
            args(&["img"]).map(|_| ()).unwrap_err(),
            "nothing to serve on: give --unix PATH, --tcp [ADDR:]PORT and/or --device"
        );
        let u = args(&["img", "--transport", "ublk", "--cow", "c", "--threads", "2"]).unwrap().unwrap();
        assert_eq!((u.transport, u.threads, u.cow), (Transport::Ublk, 2, Some("c".into())));
        assert_eq!(args(&["img", "--unix", "/s"]).unwrap().unwrap().transport, Transport::Nbd);
        assert_eq!(
            args(&["img", "--transport=nbd", "--unix", "/s"]).unwrap().unwrap().transport,
            Transport::Nbd
        );
        assert!(args(&["img", "--transport", "ublk", "--tcp", "9"])
            .unwrap_err()
            .contains("--tcp is for --transport nbd"));
        assert!(args(&["img", "--transport", "ublk", "--connections", "2"])
            .unwrap_err()
            .contains("--connections is for --transport nbd"));
        // The root daemon of a live boot: a device of any number, or one.
        let root = args(&["img", "--device", "auto", "--root-daemon", "--transport", "ublk", "--background"])
            .unwrap()
            .unwrap();
        assert_eq!((root.device, root.root_daemon, root.background), (Some(None), true, true));
        let three = args(&["img", "--transport", "ublk", "--device", "/dev/ublkb3"]).unwrap().unwrap();
        assert_eq!(three.device, Some(Some(3)));
        assert!(args(&["img", "--transport", "ublk", "--device", "/dev/nbd0"])
            .unwrap_err()
            .contains("expected /dev/ublkbN"));
        assert!(args(&["img", "--device", "/dev/ublkb0"]).unwrap_err().contains("expected /dev/nbdN"));
        assert!(args(&["img", "--transport", "ublk", "--verity-tree", "t"])
            .unwrap_err()
            .contains("need --root-hash"));
        assert!(args(&["img", "--transport", "loop"]).unwrap_err().contains("expected nbd or ublk"));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(args(&["img"]).unwrap_err().contains("nothing to serve on"));
        assert!(args(&["img", "--root-daemon", "--unix", "/s"]).unwrap_err().contains("needs --device"));
        assert!(args(&["img", "--device", "/dev/sda"]).is_err());
        assert!(args(&["img", "--device", "auto", "--block-size", "8192"]).is_err());
        assert!(args(&["img", "--background", "--unix", "/s"]).unwrap_err().contains("needs --device"));
        assert!(args(&["img", "--device", "auto", "--background"]).unwrap().unwrap().background);
        let d = args(&["img", "--device", "/dev/nbd3", "--block-size", "2048", "--connections", "2"])
            .unwrap()
            .unwrap();
        assert_eq!((d.device, d.block_size, d.connections), (Some(Some(3)), Some(2048), 2));
        assert_eq!(d.queue, crate::serve::DEFAULT_QUEUE);
        let q = args(&["img", "--device", "auto", "--max-request", "kernel", "--read-ahead", "512"])
            .unwrap()
            .unwrap();
        let want = nbd::kernel::QueueShape {
            max_sectors_kb: nbd::kernel::Limit::Kernel,
            read_ahead_kb: nbd::kernel::Limit::Kib(512),
        };
        assert_eq!(q.queue, want);
        assert!(args(&["img", "--device", "auto", "--read-ahead", "big"])
            .unwrap_err()
            .contains("--read-ahead 'big'"));
        assert!(args(&["img", "--device", "auto", "--max-request", "-4"])
            .unwrap_err()
            .contains("--max-request"));
        assert_eq!(args(&["img", "--device", "auto"]).unwrap().unwrap().device, Some(None));
        assert!(args(&["--unix", "/s"]).is_err());
        assert!(args(&["a", "b", "--unix", "/s"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--threads", "0"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--max-connections", "x"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--cache-size", "12Q"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--bogus"]).is_err());
        assert!(args(&["img", "--unix", "/s", "--verity-tree", "t"]).unwrap_err().contains("--root-hash"));
        assert!(args(&["img", "--unix", "/s", "--root-hash", "ab"]).unwrap_err().contains("1 bytes"));
        let v = args(&["img", "--unix", "/s", "--root-hash", &"ab".repeat(32), "--check-at-most-once"])
            .unwrap()
            .unwrap()
            .verity;
        assert_eq!((v.root, v.tree, v.once), (Some([0xab; 32]), None, true));
    }
}
