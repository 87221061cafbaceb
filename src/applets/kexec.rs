//! `kexec -l KERNEL [--initrd=FILE] [--append=ARGS]`: loads a kernel for
//! the next `reboot(KEXEC)` through `kexec_file_load(2)`, with the flags of
//! kexec-tools' `kexec -s` that a live system needs (systemd's
//! `systemctl kexec` and the exit initramfs's `kexec` verb then start it).

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

const APPLET: &str = "kexec";

const USAGE: &str = "\
Usage: kexec -l KERNEL [--initrd=FILE] [--append=ARGS | --reuse-cmdline]
       kexec -u

Load KERNEL (a bzImage, such as the medium's boot/vmlinuz) with FILE as its
initramfs and ARGS as its command line, to be started by the next kexec
reboot: 'systemctl kexec', or the exit initramfs with the verb kexec. The
kernel checks the image, and its signature when Secure Boot or lockdown
asks for one. Uses kexec_file_load(2) only (kexec-tools' -s).

  -l, --load KERNEL           the kernel to load
      --initrd, --ramdisk FILE  its initramfs (default: none)
      --append, --command-line ARGS  its command line
      --reuse-cmdline         the running kernel's command line (without
                              BOOT_IMAGE=), then --append's
  -u, --unload                drop a loaded kernel
  -s, --kexec-file-syscall    accepted: always so
  -h, --help                  show this help
";

#[derive(Debug, PartialEq)]
enum Action {
    Load { kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String },
    Unload,
}

fn parse_args(args: &[OsString], running_cmdline: impl FnOnce() -> String) -> Result<Action, i32> {
    let long = [
        "load=",
        "initrd=",
        "ramdisk=",
        "append=",
        "command-line=",
        "reuse-cmdline",
        "unload",
        "kexec-file-syscall",
        "help",
    ];
    let parsed = crate::applets::parse_flags(APPLET, USAGE, args, "l:ush", &long)?;
    let (mut kernel, mut initrd, mut append, mut reuse, mut unload) = (None, None, Vec::new(), false, false);
    for opt in &parsed.opts {
        let value = || opt.value.clone().unwrap_or_default();
        match opt.name.as_str() {
            "l" | "load" => kernel = Some(PathBuf::from(value())),
            "initrd" | "ramdisk" => initrd = Some(PathBuf::from(value())),
            "append" | "command-line" => append.push(value()),
            "reuse-cmdline" => reuse = true,
            "u" | "unload" => unload = true,
            _ => {}
        }
    }
    let usage = |e: &str| crate::applets::usage_error(APPLET, USAGE, e);
    if !parsed.operands.is_empty() {
        return Err(usage("unexpected operand (the kernel goes after -l)"));
    }
    match (kernel, unload) {
        (Some(_), true) => Err(usage("-l and -u together")),
        (None, true) => Ok(Action::Unload),
        (None, false) => Err(usage("nothing to do: -l KERNEL or -u")),
        (Some(kernel), false) => {
            let mut words: Vec<String> = Vec::new();
            if reuse {
                words.extend(
                    running_cmdline()
                        .split_whitespace()
                        .filter(|w| !w.starts_with("BOOT_IMAGE="))
                        .map(String::from),
                );
            }
            words.extend(append.iter().filter(|a| !a.is_empty()).cloned());
            Ok(Action::Load { kernel, initrd, cmdline: words.join(" ") })
        }
    }
}

fn run(action: &Action) -> Result<(), String> {
    match action {
        Action::Unload => crate::sys::ioctl::kexec_file_load(None, None, c"", true)
            .map_err(|e| format!("unloading the kexec kernel: {e}")),
        Action::Load { kernel, initrd, cmdline } => {
            let open = |p: &PathBuf| File::open(p).map_err(|e| format!("{}: {e}", p.display()));
            let k = open(kernel)?;
            let i = initrd.as_ref().map(open).transpose()?;
            let c = CString::new(cmdline.as_str())
                .map_err(|_| "the command line holds a NUL byte".to_string())?;
            crate::sys::ioctl::kexec_file_load(Some(k.as_fd()), i.as_ref().map(|f| f.as_fd()), &c, false)
                .map_err(|e| {
                    let why = match e.raw_os_error() {
                        Some(1) => " (needs root, and a kernel not locked down against kexec)",
                        Some(8) => " (not a kernel this kernel can start: a bzImage is needed)",
                        Some(129) => " (its signature is not trusted: Secure Boot or lockdown asks for one)",
                        Some(38) => " (this kernel has no kexec_file_load: CONFIG_KEXEC_FILE)",
                        _ => "",
                    };
                    format!("{}: cannot load it for kexec: {e}{why}", kernel.display())
                })
        }
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    let action = match parse_args(args.get(1..).unwrap_or_default(), || {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match run(&action) {
        Ok(()) => 0,
        Err(e) => crate::applets::fail(APPLET, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, i32> {
        let args: Vec<OsString> = args.iter().map(Into::into).collect();
        parse_args(&args, || "BOOT_IMAGE=/boot/vmlinuz console=ttyS0 quiet".into())
    }

    #[test]
    fn kexec_tools_flags() {
        assert_eq!(
            parse(&["-s", "-l", "/b/vmlinuz", "--initrd=/b/initrd.gz", "--append=console=ttyS0 x=1"]),
            Ok(Action::Load {
                kernel: "/b/vmlinuz".into(),
                initrd: Some("/b/initrd.gz".into()),
                cmdline: "console=ttyS0 x=1".into()
            })
        );
        assert_eq!(
            parse(&["--load", "k", "--reuse-cmdline", "--command-line", "extra"]),
            Ok(Action::Load {
                kernel: "k".into(),
                initrd: None,
                cmdline: "console=ttyS0 quiet extra".into()
            })
        );
        assert_eq!(parse(&["-u"]), Ok(Action::Unload));
    }

    #[test]
    fn bad_invocations_are_usage_errors() {
        for args in [&[][..], &["-l", "k", "-u"], &["k"], &["-l"], &["--bogus"]] {
            assert!(matches!(parse(args), Err(c) if c != 0), "{args:?}");
        }
    }

    #[test]
    fn a_missing_kernel_is_named() {
        let action =
            Action::Load { kernel: "/nonexistent/vmlinuz".into(), initrd: None, cmdline: String::new() };
        let e = run(&action).unwrap_err();
        assert!(e.contains("/nonexistent/vmlinuz"), "{e}");
    }
}
