//! The multicall front door: dispatch by argv[0] and by first argument,
//! --list, --install, unknown applets and --help for every applet.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");

fn applets() -> Vec<String> {
    let out = Command::new(BIN).arg("--list").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn list_names_the_applets_of_this_issue() {
    let list = applets();
    for name in ["cloopinfo", "create_compressed_fs", "extract_compressed_fs"] {
        assert!(list.iter().any(|a| a == name), "{name} missing from {list:?}");
    }
}

#[test]
fn every_applet_has_help_that_exits_zero() {
    for name in applets() {
        let out = Command::new(BIN).args([name.as_str(), "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} --help failed: {text}");
        assert!(text.to_lowercase().contains("usage"), "{name} --help has no usage line: {text}");
    }
}

#[test]
fn unknown_applet_is_a_clear_error_listing_applets() {
    let out = Command::new(BIN).arg("no_such_applet").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown applet 'no_such_applet'"), "{err}");
    assert!(err.contains("extract_compressed_fs"), "{err}");
}

#[test]
fn install_makes_links_that_dispatch_by_argv0() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("--install").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in applets() {
        let link = dir.path().join(&name);
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink(), "{name}");
    }
    // A link named after an applet runs that applet.
    let out = Command::new(dir.path().join("cloopinfo")).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cloopinfo"));
    // Installing twice reports the existing links instead of clobbering.
    let again = Command::new(BIN).arg("--install").arg(dir.path()).output().unwrap();
    assert!(!again.status.success());
}

#[test]
fn leading_at_in_argv0_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("@cloopinfo");
    std::os::unix::fs::symlink(Path::new(BIN), &link).unwrap();
    let out = Command::new(&link).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bare_multicall_prints_usage_and_fails() {
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

/// `modprobe -n` against a modules tree like the initramfs's (`.ko.zst`
/// files, a `modules.dep` naming them, an alias): the dependency order,
/// the alias, and a clear error for an unknown module, without a kernel.
#[test]
fn modprobe_resolves_dependencies_and_aliases_of_ko_zst_modules() {
    let dir = tempfile::tempdir().unwrap();
    let release = "9.9.9-cloopbox-test";
    let mods = dir.path().join("lib/modules").join(release);
    std::fs::create_dir_all(mods.join("kernel/fs")).unwrap();
    std::fs::write(
        mods.join("modules.dep"),
        "kernel/fs/zz_fs_test.ko.zst: kernel/fs/zz_jbd_test.ko.zst kernel/fs/zz_crc_test.ko.zst\n\
         kernel/fs/zz_jbd_test.ko.zst: kernel/fs/zz_crc_test.ko.zst\n\
         kernel/fs/zz_crc_test.ko.zst:\n",
    )
    .unwrap();
    std::fs::write(mods.join("modules.alias"), "alias fs-zzfs zz_fs_test\n").unwrap();
    let modprobe = |args: &[&str]| {
        let base = dir.path().to_str().unwrap();
        Command::new(BIN).args(["modprobe", "-n", "-d", base, "-S", release]).args(args).output().unwrap()
    };
    for name in ["zz-fs-test", "fs-zzfs"] {
        let out = modprobe(&[name]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
        let want: Vec<String> = ["zz_crc_test", "zz_jbd_test", "zz_fs_test"]
            .iter()
            .map(|m| format!("insmod {}", mods.join(format!("kernel/fs/{m}.ko.zst")).display()))
            .collect();
        assert_eq!(lines, want, "{name}");
    }
    let out = modprobe(&["no_such_module"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_module") && err.contains(release), "{err}");
    assert!(modprobe(&["-q", "no_such_module"]).stderr.is_empty());
    // Parameters belong to one module: a second name needs -a.
    assert_eq!(modprobe(&["zz_fs_test", "zz_crc_test"]).status.code(), Some(1));
    assert!(modprobe(&["-a", "zz_fs_test", "zz_crc_test"]).status.success());
}
