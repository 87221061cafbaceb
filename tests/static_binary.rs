//! The shipped binary must be fully static: no program interpreter and no
//! shared-library dependencies, so it runs as /init in any initramfs.

use std::process::Command;

fn release_binary() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/build-static.sh"))
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

#[test]
fn release_binary_is_statically_linked() {
    let bin = release_binary();
    let headers = readelf(&["-lW"], &bin);
    assert!(headers.contains("LOAD"), "not an ELF executable? {headers}");
    assert!(!headers.contains("INTERP"), "{bin} asks for a dynamic loader:\n{headers}");
    let dynamic = readelf(&["-dW"], &bin);
    assert!(!dynamic.contains("(NEEDED)"), "{bin} needs shared libraries:\n{dynamic}");

    // And it really runs on its own: the multicall list works.
    let out = Command::new(&bin).arg("--list").output().expect("run the static binary");
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l == "create_compressed_fs"), "{list}");
}
