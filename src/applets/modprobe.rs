//! `modprobe [-q] [-n] MODULE [PARAM=VALUE...]`, `modprobe -a MODULE...`:
//! loads modules with their dependencies from the initramfs's
//! `/lib/modules/$(uname -r)`, as init does ([`crate::boot::kmod`]). The
//! initramfs keeps its modules as `.ko.zst`, which busybox's modprobe
//! cannot read, so the rescue shell's `modprobe` is this one.

use std::ffi::{CString, OsString};
use std::path::PathBuf;

use crate::boot::kmod::{is_loaded, ModuleDb};

const APPLET: &str = "modprobe";

const USAGE: &str = "\
Usage: modprobe [-q] [-n] [-v] [-d DIR] MODULE [PARAM=VALUE...]
       modprobe -a [-q] [-n] [-v] [-d DIR] MODULE...

Load MODULE and the modules it depends on from /lib/modules/RELEASE, in
dependency order (modules.dep), passing the PARAMs to MODULE only. MODULE
is a module name ('-' and '_' alike) or an alias from modules.alias (such
as fs-vfat or a device's modalias). Compressed modules (.ko.zst, .ko.xz,
.ko.gz) are decompressed as needed. A module already loaded is left as it
is. Exit status 1 when a module is unknown or the kernel refuses one.

  -a, --all            load every MODULE named (no parameters)
  -q, --quiet          say nothing about unknown modules
  -n, --dry-run        print what would be inserted, insert nothing
  -v, --verbose        print each module inserted
  -d, --dirname DIR    modules under DIR/lib/modules/RELEASE (default: /)
  -S, --set-version V  RELEASE (default: the running kernel's)
  -h, --help           show this help
";

#[derive(Debug, PartialEq)]
struct Args {
    names: Vec<String>,
    params: String,
    quiet: bool,
    dry_run: bool,
    verbose: bool,
    base: PathBuf,
    release: Option<String>,
}

fn parse_args(args: &[OsString]) -> Result<Args, i32> {
    let long = ["all", "quiet", "dry-run", "verbose", "dirname=", "set-version=", "help"];
    let parsed = crate::applets::parse_flags(APPLET, USAGE, args, "aqnvd:S:h", &long)?;
    let mut a = Args {
        names: Vec::new(),
        params: String::new(),
        quiet: false,
        dry_run: false,
        verbose: false,
        base: PathBuf::from("/"),
        release: None,
    };
    let mut all = false;
    for opt in &parsed.opts {
        let value = || opt.value.clone().unwrap_or_default();
        match opt.name.as_str() {
            "a" | "all" => all = true,
            "q" | "quiet" => a.quiet = true,
            "n" | "dry-run" => a.dry_run = true,
            "v" | "verbose" => a.verbose = true,
            "d" | "dirname" => a.base = PathBuf::from(value()),
            "S" | "set-version" => a.release = Some(value()),
            _ => {}
        }
    }
    let words: Vec<String> = parsed.operands.iter().map(|o| o.to_string_lossy().into_owned()).collect();
    let usage = |e: &str| crate::applets::usage_error(APPLET, USAGE, e);
    match words.split_first() {
        None => return Err(usage("no MODULE given")),
        Some(_) if all => a.names = words,
        Some((name, params)) => {
            if let Some(bad) = params.iter().find(|p| !p.contains('=')) {
                return Err(usage(&format!("'{bad}' is not PARAM=VALUE (load several modules with -a)")));
            }
            a.names = vec![name.clone()];
            a.params = params.join(" ");
        }
    }
    Ok(a)
}

pub fn main(args: Vec<OsString>) -> i32 {
    let a = match parse_args(args.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let release =
        a.release.clone().unwrap_or_else(|| rustix::system::uname().release().to_string_lossy().into_owned());
    let dir = a.base.join("lib/modules").join(&release);
    let db = match ModuleDb::open(&dir) {
        Ok(db) => db,
        Err(e) => return crate::applets::fail(APPLET, e),
    };
    let Ok(params) = CString::new(a.params.clone()) else {
        return crate::applets::fail(APPLET, "a parameter holds a NUL byte");
    };
    let mut status = 0;
    for name in &a.names {
        let modules = db.resolve(name);
        if modules.is_empty() {
            if !a.quiet {
                eprintln!("{APPLET}: module {name} not found in {}", dir.display());
            }
            status = 1;
            continue;
        }
        for module in &modules {
            let wanted = [module.as_str()];
            if a.dry_run {
                let (order, _) = db.load_order(&wanted);
                for m in order {
                    if !is_loaded(&m) {
                        println!("insmod {}", db.path_of(&m).map(|p| p.display().to_string()).unwrap_or(m));
                    }
                }
                continue;
            }
            // resolve() gives canonical names, as load_with compares them.
            let report = db.load_with(&wanted, Some((module.as_str(), &params)));
            if a.verbose {
                for m in &report.loaded {
                    println!("insmod {}", db.path_of(m).map(|p| p.display().to_string()).unwrap_or_default());
                }
            }
            for (m, e) in &report.failed {
                eprintln!("{APPLET}: {m}: {e}");
                status = 1;
            }
            for m in &report.missing {
                if !a.quiet {
                    eprintln!("{APPLET}: {m} (needed by {module}) is not in {}", dir.display());
                }
                status = 1;
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Args, i32> {
        let args: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse_args(&args)
    }

    #[test]
    fn parameters_go_to_the_one_module() {
        let a = parse(&["nbd", "nbds_max=4", "max_part=8"]).unwrap();
        assert_eq!(a.names, ["nbd"]);
        assert_eq!(a.params, "nbds_max=4 max_part=8");
        assert!(parse(&["nbd", "loop"]).is_err(), "a second module needs -a");
    }

    #[test]
    fn all_loads_every_name_and_flags_parse() {
        let a = parse(&["-a", "-q", "-n", "-d", "/tmp/x", "-S", "6.12.0", "nbd", "loop"]).unwrap();
        assert_eq!(a.names, ["nbd", "loop"]);
        assert!(a.quiet && a.dry_run && !a.verbose);
        assert_eq!(a.base, PathBuf::from("/tmp/x"));
        assert_eq!(a.release.as_deref(), Some("6.12.0"));
        assert!(parse(&[]).is_err());
        assert_eq!(parse(&["--help"]), Err(0));
    }
}
