//! `init`: the live-boot PID 1 of a cloopbox initramfs (see
//! `cloopbox::boot::init` for the stages, and docs/boot-options.md for the
//! kernel command line it reads).

use std::ffi::OsString;

const USAGE: &str = "\
Usage: init

Runs as PID 1 in an initramfs (as /init, or whenever cloopbox is PID 1):
finds KNOPPIX/KNOPPIX on a CD, DVD, USB stick, disk or in an ISO file
(or takes it from a web server),
serves it through the kernel's NBD driver with a copy-on-write layer on a
tmpfs under /run (or a persistent disk), mounts it, stages the exit
initramfs and switches root. Options come from the kernel command line
(/proc/cmdline), not from arguments:

  knoppix_dir=DIR knoppix_name=NAME   where the image is on the medium
  bootfrom=DEV (live-media=, fromhd=) search this device first
  bootfrom=DEV/PATH.iso, findiso=PATH the medium is an ISO file on a disk
  rootdelay=S (live-media-timeout=)   wait up to S seconds (default 60)
  toram (rd.live.ram), noeject        copy the images to RAM, eject the CD
  testcd (rd.live.check)              verify every block first
  httpfs=URL (root=live:URL)          the image on an HTTP server, read lazily
  fetch=URL                           the same, downloaded into RAM first
  ip=dhcp | ip=CLIENT::GW:MASK:HOST:DEV:off   the network (DHCP by default
                                      with a URL; NIC drivers: mkinitramfs -N)
  nameserver=IP                       a DNS server for host names in URLs
  cow=DEV:/PATH (rd.live.overlay=)    keep changes on a disk
  cowsize=N%|SIZE                     tmpfs size for changes (default 50%)
  init=PATH                           the new root's init (/sbin/init)
  break=top|modules|premount|bottom   stop in a rescue shell there
  debug                               verbose messages

See docs/boot-options.md for every option and its aliases.
";

pub fn main(args: Vec<OsString>) -> i32 {
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return 0;
    }
    if std::process::id() != 1 {
        return crate::applets::fail("init", "must run as PID 1 (the initramfs /init); see --help");
    }
    crate::boot::init::run()
}
