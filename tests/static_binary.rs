//! The shipped binaries must be fully static: no program interpreter and no
//! shared-library dependencies, so they run as /init in any initramfs. The
//! boot build (`scripts/build-static.sh --boot`, the initramfs's) leaves
//! the writer out, says so, keeps https, and is smaller.

use std::process::Command;

fn release_binary() -> String {
    static_build(&[])
}

fn boot_binary() -> String {
    static_build(&["--boot"])
}

fn static_build(args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/build-static.sh"))
        .args(args)
        .output()
        .expect("run scripts/build-static.sh");
    assert!(out.status.success(), "static build failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("path is UTF-8").trim().to_string()
}

fn readelf(args: &[&str], bin: &str) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(bin)
        .output()
        .expect("readelf must be installed (Debian package binutils)");
    assert!(out.status.success(), "readelf failed on {bin}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_static(bin: &str) {
    let headers = readelf(&["-lW"], bin);
    assert!(headers.contains("LOAD"), "not an ELF executable? {headers}");
    assert!(!headers.contains("INTERP"), "{bin} asks for a dynamic loader:\n{headers}");
    let dynamic = readelf(&["-dW"], bin);
    assert!(!dynamic.contains("(NEEDED)"), "{bin} needs shared libraries:\n{dynamic}");
}

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).output().expect("run the static binary")
}

#[test]
fn release_binary_is_statically_linked() {
    let bin = release_binary();
    assert_static(&bin);

    // And it really runs on its own: the multicall list works.
    let out = Command::new(&bin).arg("--list").output().expect("run the static binary");
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l == "create_compressed_fs"), "{list}");
}

#[test]
fn release_binary_is_the_full_build() {
    let bin = release_binary();
    let out = run(&bin, &["--version"]);
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("(full build)"), "{version}");
    let features = version.lines().find_map(|l| l.strip_prefix("features: ")).expect("a features line");
    assert!(features.split(' ').any(|f| f == "create"), "{version}");
    assert!(features.split(' ').any(|f| f == "https"), "{version}");
    let out = run(&bin, &["create_compressed_fs", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: create_compressed_fs"));
}

#[test]
fn boot_binary_leaves_out_the_writer() {
    let boot = boot_binary();
    assert_static(&boot);
    let out = run(&boot, &["--version"]);
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("(boot build)"), "{version}");
    let features = version.lines().find_map(|l| l.strip_prefix("features: ")).expect("a features line");
    assert!(!features.split(' ').any(|f| f == "create"), "{version}");
    // TLS stays: the initramfs boots from https:// servers too (the QEMU
    // tests' net-https scenario); --boot-offline is the build without it.
    assert!(features.split(' ').any(|f| f == "https"), "{version}");

    // The applet is still listed (a link to it says why it fails), and
    // refuses clearly, --help included, through either door.
    let list = String::from_utf8_lossy(&run(&boot, &["--list"]).stdout).into_owned();
    for applet in
        ["init", "liveroot", "exitrd", "cloopd", "cowdev", "cloopinfo", "extract_compressed_fs", "verity"]
    {
        assert!(list.lines().any(|l| l == applet), "{applet} missing from the boot build: {list}");
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("create_compressed_fs");
    std::os::unix::fs::symlink(&boot, &link).unwrap();
    for out in [
        run(&boot, &["create_compressed_fs", "--help"]),
        run(&boot, &["create_compressed_fs", "in.img", "out.cloop"]),
        run(link.to_str().unwrap(), &["--help"]),
    ] {
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(
                "create_compressed_fs: not in this build of cloopbox (the initramfs's boot build)"
            ),
            "{err}"
        );
    }
    assert!(!dir.path().join("out.cloop").exists());

    // The writer's code is gone, not only unreachable: its usage text is
    // not in the file (the binary is stripped, so nm cannot tell; the
    // encoders' symbols were checked with nm on an unstripped build,
    // BENCHMARKS.md "Binary and initramfs size"). And it is smaller.
    let bytes = std::fs::read(&boot).unwrap();
    let needle = b"Usage: create_compressed_fs";
    assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{boot} still holds the writer's usage");
    let full = std::fs::read(release_binary()).unwrap();
    assert!(full.windows(needle.len()).any(|w| w == needle), "the full build lacks the writer's usage?");
    assert!(bytes.len() < full.len(), "boot build {} bytes, full {}", bytes.len(), full.len());
}
