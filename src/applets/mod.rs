//! The applet table and the multicall dispatcher.
//!
//! The applet is chosen from the basename of argv[0] (a leading `@`, which
//! systemd uses to mark root-storage daemons, is ignored), or from the first
//! argument when we are called as `cloopbox`. Each applet is one file in this
//! directory that parses its flags and calls library code.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

mod cloopd;
mod cloopinfo;
mod cowdev;
mod cowlist;
mod cowmerge;
mod cowpack;
mod cowrepair;
mod cowsync;
#[cfg(feature = "create")]
mod create_compressed_fs;
mod exitrd;
mod extract_compressed_fs;
mod init;
mod kexec;
mod liveroot;
mod modprobe;
mod verity;

/// An applet's entry point. `args[0]` is the applet name as invoked; the
/// return value is the process exit status.
pub type AppletMain = fn(Vec<OsString>) -> i32;

pub struct Applet {
    pub name: &'static str,
    pub summary: &'static str,
    pub main: AppletMain,
}

/// Sorted by name.
pub static APPLETS: &[Applet] = &[
    Applet { name: "cloopd", summary: "serve a cloop image (with a cowfile) over NBD", main: cloopd::main },
    Applet { name: "cloopinfo", summary: "describe and verify a cloop image", main: cloopinfo::main },
    Applet { name: "cowdev", summary: "attach, detach and list copy-on-write devices", main: cowdev::main },
    Applet { name: "cowlist", summary: "show the header of a cowloop cowfile", main: cowlist::main },
    Applet {
        name: "cowmerge",
        summary: "write a cowfile's changes into its read-only file",
        main: cowmerge::main,
    },
    Applet { name: "cowpack", summary: "pack or unpack a cowfile into a savefile", main: cowpack::main },
    Applet { name: "cowrepair", summary: "rebuild the bitmap of a dirty cowfile", main: cowrepair::main },
    Applet { name: "cowsync", summary: "flush every copy-on-write device's cowfile", main: cowsync::main },
    #[cfg(feature = "create")]
    Applet {
        name: "create_compressed_fs",
        summary: "compress a filesystem image into a cloop image",
        main: create_compressed_fs::main,
    },
    #[cfg(not(feature = "create"))]
    Applet {
        name: "create_compressed_fs",
        summary: "(not in this boot build; use the full cloopbox)",
        main: not_in_this_build,
    },
    Applet {
        name: "exitrd",
        summary: "the exit initramfs: detach the root's NBD devices at shutdown",
        main: exitrd::main,
    },
    Applet {
        name: "extract_compressed_fs",
        summary: "decompress a cloop image of any version",
        main: extract_compressed_fs::main,
    },
    Applet {
        name: "init",
        summary: "live-boot PID 1: find the medium, serve it over NBD, switch root",
        main: init::main,
    },
    Applet {
        name: "kexec",
        summary: "load a kernel for the next kexec reboot (kexec-tools' -l, -u)",
        main: kexec::main,
    },
    Applet {
        name: "liveroot",
        summary: "find the medium, serve it and mount the root (for dracut)",
        main: liveroot::main,
    },
    Applet {
        name: "modprobe",
        summary: "load kernel modules with their dependencies (.ko.zst too)",
        main: modprobe::main,
    },
    Applet {
        name: "verity",
        summary: "verify an image against a dm-verity hash tree and root hash",
        main: verity::main,
    },
];

const MULTICALL_NAME: &str = "cloopbox";

/// The cargo features this binary was built with, as `--version` prints
/// them: `create` (the writer and its encoders) is absent from the boot
/// build the initramfs carries, `https` (TLS) from the boot build for
/// offline media too (README "Boot build").
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "create")]
    "create",
    #[cfg(feature = "zlib-rs")]
    "zlib-rs",
    #[cfg(feature = "miniz")]
    "miniz",
    #[cfg(feature = "https")]
    "https",
];

/// The kind of build, as `--version` prints it in parentheses: "full
/// build", or "boot build" without the writer; ", no https" when TLS is
/// left out too (`scripts/build-static.sh --boot-offline`).
pub const BUILD: &str = match (cfg!(feature = "create"), cfg!(feature = "https")) {
    (true, true) => "full build",
    (true, false) => "full build, no https",
    (false, true) => "boot build",
    (false, false) => "boot build, no https",
};

/// The entry point of an applet this build leaves out (the boot build's
/// `create_compressed_fs`): refuses, whatever the arguments, `--help`
/// included, so that nothing mistakes it for the real applet.
#[cfg(not(feature = "create"))]
fn not_in_this_build(args: Vec<OsString>) -> i32 {
    let name = args.first().map_or_else(|| "create_compressed_fs".into(), |a| applet_name(a));
    eprintln!("{name}: not in this build of cloopbox (the initramfs's boot build); use the full cloopbox");
    1
}

pub fn find(name: &str) -> Option<&'static Applet> {
    APPLETS.iter().find(|a| a.name == name)
}

/// Applet name from an argv[0]: basename, without systemd's `@` marker.
pub fn applet_name(argv0: &std::ffi::OsStr) -> String {
    let base = Path::new(argv0).file_name().unwrap_or(argv0).to_string_lossy();
    base.strip_prefix('@').unwrap_or(&base).to_string()
}

pub fn dispatch(mut args: Vec<OsString>) -> i32 {
    let argv0 = args.first().cloned().unwrap_or_else(|| MULTICALL_NAME.into());
    let name = applet_name(&argv0);
    if let Some(applet) = find(&name) {
        return (applet.main)(args);
    }
    // systemd-shutdown execs the staged /run/initramfs/shutdown as PID 1.
    if name == "shutdown" && std::process::id() == 1 {
        return (find("exitrd").expect("exitrd is in the table").main)(args);
    }
    // The kernel may start us as PID 1 under another name
    // (rdinit=/bin/cloopbox): then we are the initramfs init.
    if std::process::id() == 1 {
        return (find("init").expect("init is in the table").main)(args);
    }
    if name != MULTICALL_NAME && !name.starts_with(MULTICALL_NAME) {
        eprintln!("cloopbox: unknown applet '{name}'");
        print_list(&mut std::io::stderr());
        return 1;
    }
    args.remove(0);
    let Some(first) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
        usage(&mut std::io::stderr());
        return 1;
    };
    match first.as_str() {
        "--list" | "-l" => {
            for a in APPLETS {
                println!("{}", a.name);
            }
            0
        }
        "--help" | "-h" | "help" => {
            usage(&mut std::io::stdout());
            0
        }
        "--version" | "-V" => {
            println!("cloopbox {} ({BUILD})", env!("CARGO_PKG_VERSION"));
            println!("features: {}", FEATURES.join(" "));
            0
        }
        "--install" => match args.get(1) {
            Some(dir) => install_links(Path::new(dir)),
            None => {
                eprintln!("cloopbox: --install needs a directory");
                1
            }
        },
        _ => match find(&first) {
            Some(applet) => (applet.main)(args),
            None => {
                eprintln!("cloopbox: unknown applet '{first}'");
                print_list(&mut std::io::stderr());
                1
            }
        },
    }
}

fn usage(out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "cloopbox {}: cloop and cowloop in one static binary\n\n\
         Usage: cloopbox APPLET [ARGS...]     run an applet\n       \
         APPLET [ARGS...]              through a link named after it\n       \
         cloopbox --list               list the applets\n       \
         cloopbox --install DIR        make one symlink per applet in DIR\n       \
         cloopbox APPLET --help        help for one applet\n",
        env!("CARGO_PKG_VERSION")
    );
    print_list(out);
}

fn print_list(out: &mut dyn Write) {
    let _ = writeln!(out, "Applets:");
    for a in APPLETS {
        let _ = writeln!(out, "  {:<24}{}", a.name, a.summary);
    }
}

fn install_links(dir: &Path) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cloopbox: --install: cannot find our own executable: {e}");
            return 1;
        }
    };
    let mut status = 0;
    for a in APPLETS {
        let link = dir.join(a.name);
        if let Err(e) = std::os::unix::fs::symlink(&exe, &link) {
            eprintln!("cloopbox: --install: {}: {e}", link.display());
            status = 1;
        }
    }
    status
}

/// Prints `applet: message` and the usage on stderr; returns the exit
/// status 1 of a usage error (the cowloop tools' convention).
pub fn usage_error(applet: &str, usage: &str, msg: &str) -> i32 {
    eprint!("{applet}: {msg}\n{usage}");
    1
}

/// Parses getopt-style flags for an applet with `-h`/`--help`: a parse
/// error becomes a usage error, `--help` prints the usage; either way the
/// `Err` holds the exit status to return.
pub fn parse_flags(
    applet: &str,
    usage: &str,
    args: &[OsString],
    short: &str,
    long: &[&str],
) -> Result<crate::getopt::Parsed, i32> {
    let parsed = crate::getopt::parse(args, short, long).map_err(|e| usage_error(applet, usage, &e))?;
    if parsed.opts.iter().any(|o| o.name == "h" || o.name == "help") {
        print!("{usage}");
        return Err(0);
    }
    Ok(parsed)
}

/// The end of an applet's own flag parsing (`parse_args` returning
/// `Ok(None)` for `--help`): help prints the usage on stdout and exits 0, an
/// error is `applet: error` on stderr and exit 1; either way `Err` holds
/// the exit status to return. (The cowloop tools' convention, the usage
/// after every error, is [`parse_flags`].)
pub fn parsed<A>(applet: &str, usage: &str, parsed: Result<Option<A>, String>) -> Result<A, i32> {
    match parsed {
        Ok(Some(args)) => Ok(args),
        Ok(None) => {
            print!("{usage}");
            Err(0)
        }
        Err(e) => Err(fail(applet, e)),
    }
}

/// A JSON string literal (for the applets' `--json` output).
pub fn json_string(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prints `applet: message` on stderr and returns the exit status 1; used
/// by applets for their final error.
pub fn fail(applet: &str, err: impl std::fmt::Display) -> i32 {
    eprintln!("{applet}: {err}");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in APPLETS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} !< {}", pair[0].name, pair[1].name);
        }
    }

    #[cfg(feature = "create")]
    #[test]
    fn full_build_names_itself_and_has_the_writer() {
        assert!(BUILD.starts_with("full build"), "{BUILD}");
        assert!(FEATURES.contains(&"create"));
        let help = vec![OsString::from("create_compressed_fs"), OsString::from("--help")];
        assert_eq!((find("create_compressed_fs").unwrap().main)(help), 0);
    }

    /// Runs with `cargo test --lib --no-default-features --features zlib-rs`.
    #[cfg(not(feature = "create"))]
    #[test]
    fn boot_build_lists_the_writer_but_refuses_it() {
        assert!(BUILD.starts_with("boot build"), "{BUILD}");
        assert!(!FEATURES.contains(&"create"));
        let applet = find("create_compressed_fs").expect("still in the table");
        for args in [&["create_compressed_fs", "--help"][..], &["create_compressed_fs", "a", "b"]] {
            assert_eq!((applet.main)(args.iter().map(OsString::from).collect()), 1);
        }
    }

    /// The default features, and test.sh's boot build without https
    /// (`--no-default-features --features zlib-rs`): each names itself.
    #[test]
    fn build_kind_says_whether_https_is_in() {
        assert_eq!(FEATURES.contains(&"https"), cfg!(feature = "https"), "{FEATURES:?}");
        assert_eq!(BUILD.ends_with(", no https"), !cfg!(feature = "https"), "{BUILD}");
        #[cfg(all(feature = "create", feature = "https"))]
        assert_eq!(BUILD, "full build");
        #[cfg(all(not(feature = "create"), not(feature = "https")))]
        assert_eq!(BUILD, "boot build, no https");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn applet_name_strips_path_and_at() {
        assert_eq!(applet_name("/usr/sbin/@cloopd".as_ref()), "cloopd");
        assert_eq!(applet_name("create_compressed_fs".as_ref()), "create_compressed_fs");
        assert_eq!(applet_name("./x/cloopbox".as_ref()), "cloopbox");
    }
}
