//! cloopd against real NBD clients: qemu-img, qemu-io (Debian qemu-utils)
//! and nbdinfo, nbdcopy (Debian libnbd-bin).
//!
//! Each test starts the real binary (`cloopbox cloopd`) in its own temp
//! directory and talks to it over a unix socket (one test uses TCP). The
//! tools are required: a missing one fails the test with the package name.

use std::path::Path;
use std::process::Command;

mod common;
use common::{tool, vectors, Cloopd};

fn qemu_img() -> &'static str {
    tool("qemu-img", "qemu-utils")
}
fn qemu_io() -> &'static str {
    tool("qemu-io", "qemu-utils")
}
fn nbdinfo() -> &'static str {
    tool("nbdinfo", "libnbd-bin")
}
fn nbdcopy() -> &'static str {
    tool("nbdcopy", "libnbd-bin")
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn raw_image() -> Vec<u8> {
    let gz = vectors().join("raw/ext2_300k.img.gz");
    let out = run(Command::new("gzip").arg("-dc").arg(gz));
    assert_eq!(out.len(), 307_200);
    out
}

fn extract(image: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("extracted.img");
    run(Command::new(env!("CARGO_BIN_EXE_cloopbox"))
        .arg("extract_compressed_fs")
        .arg("-q")
        .arg(image)
        .arg(&out));
    std::fs::read(out).unwrap()
}

#[test]
fn qemu_img_convert_gives_the_extracted_bytes() {
    let qemu_img = qemu_img();
    let v = vectors();
    for (name, cache) in [
        ("v2-cloop-utils/ext2_b65536_L9.cloop", "64M"),
        ("v2-cloop-utils/ext2_b4096_L9.cloop", "0"),
        ("v3-slitaz/ext2_gzip_b4096_dedup.cloop", "64M"),
        ("v3-slitaz/odd300000_xz_b65536.cloop", "128K"),
        ("v3-dplasa-alpha/odd300000_lzo.cloop", "64M"),
        ("v4-synthetic/ext2_first_mixed.cloop", "64M"),
        ("v4-synthetic/ext2_last_zlib.cloop", "64M"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let image = v.join(name);
        let want = extract(&image, dir.path());
        let server = Cloopd::start(dir.path(), &image, &["--cache-size", cache]);
        assert!(server.banner.contains("read-only"), "{}", server.banner);
        let out = dir.path().join("out.raw");
        run(Command::new(qemu_img).args(["convert", "-f", "raw", "-O", "raw"]).arg(server.uri()).arg(&out));
        let got = std::fs::read(&out).unwrap();
        // qemu rounds an export size up to whole 512-byte sectors.
        assert_eq!(got.len(), want.len().next_multiple_of(512), "{name}");
        assert!(
            got[..want.len()] == want[..],
            "{name}: qemu-img read different bytes than extract_compressed_fs"
        );
        assert!(got[want.len()..].iter().all(|&b| b == 0), "{name}");
        let size = run(Command::new(nbdinfo()).arg("--size").arg(server.uri()));
        assert_eq!(String::from_utf8(size).unwrap().trim(), want.len().to_string(), "{name}: export size");
        let (code, err) = server.stop();
        assert_eq!(code, 0, "{name}: {err}");
    }
}

#[test]
fn nbdcopy_gives_identical_bytes_and_skips_zero_blocks() {
    let (nbdcopy, nbdinfo) = (nbdcopy(), nbdinfo());
    let dir = tempfile::tempdir().unwrap();
    let image = vectors().join("v2-cloop-utils/ext2_b4096_L9.cloop");
    let want = extract(&image, dir.path());
    let server = Cloopd::start(dir.path(), &image, &[]);
    let out = dir.path().join("copy.raw");
    run(Command::new(nbdcopy).arg(server.uri()).arg(&out));
    assert!(std::fs::read(&out).unwrap() == want, "nbdcopy read different bytes");
    // The image's zero blocks are reported as holes, which lets nbdcopy
    // skip them.
    let map = String::from_utf8(run(Command::new(nbdinfo).arg("--map").arg(server.uri()))).unwrap();
    let holes: u64 = map
        .lines()
        .filter(|l| l.contains("hole,zero"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    let zero_blocks = want.chunks(4096).filter(|c| c.iter().all(|&b| b == 0)).count() as u64;
    assert!(holes > 0 && holes <= zero_blocks * 4096, "holes {holes}, zero blocks {zero_blocks}\n{map}");
    for line in map.lines().filter(|l| l.contains("hole,zero")) {
        let f: Vec<u64> = line.split_whitespace().take(2).map(|x| x.parse().unwrap()).collect();
        assert!(want[f[0] as usize..][..f[1] as usize].iter().all(|&b| b == 0), "{line} is not zero");
    }
    assert_eq!(server.stop().0, 0);
}

fn json_field<'a>(json: &'a str, key: &str) -> &'a str {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = json[at + key.len() + 3..].trim_start();
    rest[..rest.find([',', '\n', '}']).unwrap()].trim()
}

#[test]
fn nbdinfo_shows_size_flags_and_block_sizes() {
    let nbdinfo = nbdinfo();
    let dir = tempfile::tempdir().unwrap();
    let image = vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop");
    let server = Cloopd::start(dir.path(), &image, &["--export-name", "live", "--description", "test image"]);
    let uri = server.uri().replace("///?", "///live?");
    let json = String::from_utf8(run(Command::new(nbdinfo).arg("--json").arg(uri))).unwrap();
    for (key, want) in [
        ("export-size", "327680"),
        ("is_read_only", "true"),
        ("can_multi_conn", "true"),
        ("can_flush", "true"),
        ("can_cache", "true"),
        ("can_df", "true"),
        ("can_trim", "false"),
        ("can_zero", "false"),
        ("is_rotational", "false"),
        ("block_size_minimum", "1"),
        ("block_size_preferred", "65536"),
        ("block_size_maximum", "33554432"),
        ("export-name", "\"live\""),
        ("description", "\"test image\""),
    ] {
        assert_eq!(json_field(&json, key), want, "{key} in {json}");
    }
    assert!(json.contains("base:allocation"), "{json}");
    assert_eq!(server.stop().0, 0);

    let cow = dir.path().join("disk.cow");
    let server = Cloopd::start(dir.path(), &image, &["--cow", cow.to_str().unwrap()]);
    let json = String::from_utf8(run(Command::new(nbdinfo).arg("--json").arg(server.uri()))).unwrap();
    for (key, want) in [
        ("export-size", "327680"),
        ("is_read_only", "false"),
        ("can_multi_conn", "true"),
        ("can_flush", "true"),
        ("can_fua", "true"),
        ("can_trim", "true"),
        ("can_zero", "true"),
        ("block_size_preferred", "65536"),
        ("block_size_maximum", "33554432"),
    ] {
        assert_eq!(json_field(&json, key), want, "{key} in {json}");
    }
    assert_eq!(server.stop().0, 0);
    assert!(cow.exists(), "the cowfile was not created");
}

#[test]
fn qemu_io_writes_survive_a_restart() {
    let (qemu_io, qemu_img) = (qemu_io(), qemu_img());
    let dir = tempfile::tempdir().unwrap();
    let image = vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop");
    let cow = dir.path().join("disk.cow");
    let cow_arg = cow.to_str().unwrap();
    let mut model = extract(&image, dir.path());
    let server = Cloopd::start(dir.path(), &image, &["--cow", cow_arg]);
    assert!(server.banner.contains("created"), "{}", server.banner);
    // Aligned, unaligned, spanning a cloop block boundary, zeroes, and a
    // discard (which the cowfile turns into zeros).
    let writes: &[(&str, usize, usize, u8)] = &[
        ("write -P 0xab 4096 8192", 4096, 8192, 0xab),
        ("write -P 0x11 100000 1000", 100_000, 1000, 0x11),
        ("write -P 0x5a 65000 1072", 65_000, 1072, 0x5a),
        ("write -z 200704 4096", 200_704, 4096, 0),
        ("write -f -P 0x77 300000 2048", 300_000, 2048, 0x77),
        ("discard 131072 3072", 131_072, 3072, 0),
    ];
    let mut cmd = Command::new(qemu_io);
    cmd.args(["-f", "raw"]);
    for (c, off, len, byte) in writes {
        cmd.args(["-c", c]);
        model[*off..off + len].fill(*byte);
    }
    cmd.args(["-c", "flush"]).arg(server.uri());
    let out = String::from_utf8(run(&mut cmd)).unwrap();
    assert!(!out.contains("fail"), "{out}");
    let (code, err) = server.stop();
    assert_eq!(code, 0, "{err}");
    // cowlist sees a clean file holding exactly the 1 KiB units written.
    let listed = String::from_utf8(run(
        Command::new(env!("CARGO_BIN_EXE_cloopbox")).args(["cowlist", "--json", cow_arg])
    ))
    .unwrap();
    assert_eq!(json_field(&listed, "state"), "\"clean\"", "{listed}");
    let mut units = std::collections::BTreeSet::new();
    for (_, off, len, _) in writes {
        units.extend(off / 1024..(off + len).div_ceil(1024));
    }
    assert_eq!(json_field(&listed, "cowused"), units.len().to_string(), "{listed}");
    // A restarted server serves the base with exactly those writes.
    let server = Cloopd::start(dir.path(), &image, &["--cow", cow_arg]);
    assert!(!server.banner.contains("created"), "{}", server.banner);
    let mut check = Command::new(qemu_io);
    check.args(["-f", "raw", "-r"]);
    for (_, off, len, byte) in writes {
        check.args(["-c", &format!("read -P {byte:#x} {off} {len}")]);
    }
    let out = String::from_utf8(run(check.arg(server.uri()))).unwrap();
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let all = dir.path().join("all.raw");
    run(Command::new(qemu_img).args(["convert", "-f", "raw", "-O", "raw"]).arg(server.uri()).arg(&all));
    assert!(std::fs::read(&all).unwrap() == model, "restarted export differs from base + writes");
    assert_eq!(server.stop().0, 0);
}

#[test]
fn tcp_listener_on_loopback() {
    let nbdinfo = nbdinfo();
    let dir = tempfile::tempdir().unwrap();
    let image = vectors().join("v4-synthetic/ext2_first_zlib.cloop");
    let server = Cloopd::start(dir.path(), &image, &["--tcp", "0"]);
    let addr =
        server.banner.split("tcp:").nth(1).unwrap().split([',', '\n']).next().unwrap().trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{}", server.banner);
    let size =
        String::from_utf8(run(Command::new(nbdinfo).arg("--size").arg(format!("nbd://{addr}")))).unwrap();
    assert_eq!(size.trim(), "327680");
    assert_eq!(server.stop().0, 0);
}

#[test]
fn raw_files_are_served_raw_and_damaged_images_are_refused() {
    let qemu_img = qemu_img();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("plain.img");
    std::fs::write(&raw, raw_image()).unwrap();
    let server = Cloopd::start(dir.path(), &raw, &[]);
    assert!(server.banner.contains("(raw"), "{}", server.banner);
    let out = dir.path().join("out.raw");
    run(Command::new(qemu_img).args(["convert", "-f", "raw", "-O", "raw"]).arg(server.uri()).arg(&out));
    assert!(std::fs::read(&out).unwrap() == raw_image());
    assert_eq!(server.stop().0, 0);
    // A cloop image whose index is cut off is an error, not a raw file.
    let damaged = dir.path().join("damaged.cloop");
    let bytes = std::fs::read(vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop")).unwrap();
    std::fs::write(&damaged, &bytes[..150]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloopbox"))
        .arg("cloopd")
        .arg(&damaged)
        .arg("--unix")
        .arg(dir.path().join("x.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("cloopd: ") && err.contains("damaged.cloop"), "{err}");
}

#[test]
fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let image = vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop");
    let first = Cloopd::start(dir.path(), &image, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_cloopbox"))
        .arg("cloopd")
        .arg(&image)
        .arg("--unix")
        .arg(&first.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another server is listening"));
    // A socket file left by a killed server is replaced.
    let socket = first.socket.clone();
    drop(first); // SIGKILL: the socket file stays behind
    assert!(socket.exists());
    let second = Cloopd::start(dir.path(), &image, &[]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&second.socket).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(second.stop().0, 0);
    assert!(!socket.exists(), "the socket file was not removed on exit");
}
