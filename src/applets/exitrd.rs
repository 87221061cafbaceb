//! `exitrd VERB`: the exit initramfs's `/shutdown` (see
//! `cloopbox::boot::exitrd`). `init` stages our binary as
//! `/run/initramfs/shutdown`; systemd-shutdown execs it as PID 1 with the
//! verb, which is why the name `shutdown` also reaches this applet, but
//! only in PID 1.

use std::ffi::OsString;

const USAGE: &str = "\
Usage: exitrd reboot|poweroff|halt|kexec

The end of a shutdown, run by systemd-shutdown as /run/initramfs/shutdown
(PID 1, old root at /oldroot). Unmounts what is left, remounting read-only
what cannot be unmounted; flushes every cloopd cowfile and disconnects its
NBD device; unmounts the medium and ejects a CD (unless 'noeject' is on the
kernel command line); then reboots, powers off, halts or kexecs. The last
line is 'cloopbox-shutdown: clean shutdown, VERB' or says what was not
clean. init stages it before switch_root; see docs/boot-options.md.
";

pub fn main(args: Vec<OsString>) -> i32 {
    if args.iter().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return 0;
    }
    if std::process::id() != 1 {
        return crate::applets::fail("exitrd", "must run as PID 1 (systemd-shutdown runs it); see --help");
    }
    let verb = args.get(1).map(|a| a.to_string_lossy().into_owned());
    crate::boot::exitrd::run(verb.as_deref())
}
