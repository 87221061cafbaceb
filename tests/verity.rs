//! Verified images end to end: `create_compressed_fs --verity`, the
//! `verity` applet, `cloopinfo`, and `cloopd --root-hash` read by nbdcopy
//! over NBD; interop both ways with `veritysetup` (Debian cryptsetup-bin).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{tool, Cloopd};

fn veritysetup() -> &'static str {
    tool("veritysetup", "cryptsetup-bin")
}

fn cloopbox(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloopbox"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 3 MiB: pseudo-random runs and zero runs, 768 data blocks (two levels).
fn payload() -> Vec<u8> {
    let mut x = 0x2545f4914f6cdd1du64;
    (0..3 << 20)
        .map(|i: usize| {
            if (i >> 16) % 3 == 1 {
                0
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as u8 & 0x3f
            }
        })
        .collect()
}

/// Compresses `input` into `dir/NAME` with --verity and `extra` flags;
/// returns the image path and the root hash printed on stdout.
fn create(dir: &Path, input: &Path, name: &str, extra: &[&str]) -> (PathBuf, String) {
    let image = dir.join(name);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloopbox"));
    cmd.arg("create_compressed_fs").arg("-q").arg("--verity").args(extra).arg(input).arg(&image);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let root = stdout.strip_prefix("root hash: ").unwrap_or_else(|| panic!("stdout: {stdout}")).trim();
    assert_eq!(root.len(), 64);
    (image, root.to_string())
}

fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], offset).unwrap();
}

fn flip_hex(root: &str) -> String {
    let mut r = root.as_bytes().to_vec();
    r[10] = if r[10] == b'0' { b'1' } else { b'0' };
    String::from_utf8(r).unwrap()
}

fn setup() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let data = payload();
    let input = dir.path().join("fs.img");
    std::fs::write(&input, &data).unwrap();
    (dir, input, data)
}

#[test]
fn veritysetup_verifies_our_tree_and_we_accept_its_tree() {
    let vs = veritysetup();
    let (dir, input, data) = setup();
    let d = dir.path();
    let (image, root) = create(d, &input, "img.cloop", &["--salt", "00112233"]);
    let tree = d.join("img.cloop.verity");
    // Ours, checked by veritysetup on the extracted image.
    let extracted = d.join("extracted");
    assert!(cloopbox(&[&"extract_compressed_fs", &"-q", &image, &extracted]).status.success());
    assert!(std::fs::read(&extracted).unwrap() == data);
    let out = Command::new(vs).arg("verify").arg(&extracted).arg(&tree).arg(&root).output().unwrap();
    assert!(out.status.success(), "veritysetup verify: {}{}", text(&out.stdout), text(&out.stderr));
    // veritysetup refuses it with another root hash (the check is real).
    let out =
        Command::new(vs).arg("verify").arg(&extracted).arg(&tree).arg(flip_hex(&root)).output().unwrap();
    assert!(!out.status.success());
    // Theirs, with the same salt: the same root hash, accepted by us.
    let theirs = d.join("theirs.verity");
    let out = Command::new(vs)
        .args(["format", "--salt", "00112233"])
        .arg(&extracted)
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let line = printed.lines().find(|l| l.starts_with("Root hash:")).unwrap();
    assert_eq!(line.split_whitespace().last().unwrap(), root);
    // Apart from the UUID (bytes 16..32), the files are identical.
    let (a, b) = (std::fs::read(&tree).unwrap(), std::fs::read(&theirs).unwrap());
    assert_eq!(a.len(), b.len());
    assert!(a[..16] == b[..16] && a[32..] == b[32..]);
    let out = cloopbox(&[&"verity", &"-q", &image, &theirs, &root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("all 768 data blocks match"), "{}", text(&out.stdout));
    // A random-salt tree from veritysetup over the raw file, too.
    let random = d.join("random.verity");
    let out = Command::new(vs).arg("format").arg(&extracted).arg(&random).output().unwrap();
    let printed = text(&out.stdout);
    let other_root =
        printed.lines().find(|l| l.starts_with("Root hash:")).unwrap().split_whitespace().last().unwrap();
    let out = cloopbox(&[&"verity", &"-q", &extracted, &random, &other_root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // cloopd serves the raw file verified with veritysetup's tree.
    let server = Cloopd::try_start(
        d,
        &extracted,
        &["--root-hash", other_root, "--verity-tree", random.to_str().unwrap()],
    )
    .unwrap();
    assert!(server.banner.contains("raw, verity"), "{}", server.banner);
    assert!(copy(&server, d).unwrap() == data);
}

#[test]
fn stdin_input_and_salts_give_the_expected_trees() {
    let (dir, input, _) = setup();
    let d = dir.path();
    let (_, root) = create(d, &input, "a.cloop", &["--salt", "ab"]);
    // Input size unknown (stdin): the same tree.
    let out = Command::new(env!("CARGO_BIN_EXE_cloopbox"))
        .args(["create_compressed_fs", "-q", "--verity=", "--salt", "ab", "-"])
        .arg(d.join("b.cloop"))
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success(), "an empty --verity= is not a file name");
    let out = Command::new(env!("CARGO_BIN_EXE_cloopbox"))
        .args(["create_compressed_fs", "-q", "--salt", "ab", "-"])
        .arg(format!("--verity={}", d.join("b.tree").display()))
        .arg(d.join("b.cloop"))
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("root hash: {root}"));
    assert!(std::fs::read(d.join("b.tree")).unwrap() == std::fs::read(d.join("a.cloop.verity")).unwrap());
    // SOURCE_DATE_EPOCH: a reproducible salt; without it, a random one.
    let epoch = |name: &str, value: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloopbox"));
        cmd.args(["create_compressed_fs", "-q", "--verity"]).arg(&input).arg(d.join(name));
        match value {
            Some(v) => cmd.env("SOURCE_DATE_EPOCH", v),
            None => cmd.env_remove("SOURCE_DATE_EPOCH"),
        };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(epoch("e1", Some("1700000000")), epoch("e2", Some("1700000000")));
    assert_ne!(epoch("e3", Some("1700000000")), epoch("e4", Some("1700000001")));
    assert_ne!(epoch("r1", None), epoch("r2", None));
    // A block size that is no multiple of 4096: the last data block is
    // hashed zero-padded, and everything still verifies.
    let (odd, odd_root) = create(d, &input, "odd.cloop", &["-B", "3584"]);
    let out = cloopbox(&[&"verity", &"-q", &odd, &d.join("odd.cloop.verity"), &odd_root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = text(&cloopbox(&[&"cloopinfo", &odd]).stdout);
    assert!(info.contains(&format!("root hash {odd_root}")), "{info}");
}

/// Copies the whole export with nbdcopy: its bytes, or nbdcopy's stderr.
fn copy(server: &Cloopd, dir: &Path) -> Result<Vec<u8>, String> {
    let out = dir.join("copy.img");
    let r = Command::new(tool("nbdcopy", "libnbd-bin")).arg(server.uri()).arg(&out).output().unwrap();
    if r.status.success() {
        Ok(std::fs::read(out).unwrap())
    } else {
        Err(text(&r.stderr))
    }
}

#[test]
fn cloopd_serves_verified_data_and_refuses_tampered_blocks() {
    let (dir, input, data) = setup();
    let d = dir.path();
    // Stored blocks (--codec none): a flipped byte still decodes, so only
    // verity can catch it.
    let (image, root) = create(d, &input, "img.cloop", &["--codec", "none", "--salt", "5a"]);
    let tree = d.join("img.cloop.verity");
    let server = Cloopd::try_start(d, &image, &["--root-hash", &root]).unwrap();
    assert!(copy(&server, d).unwrap() == data);
    drop(server);
    // The same with the cache disabled, and with --check-at-most-once.
    for extra in [["--cache-size", "0"], ["--check-at-most-once", "--threads=2"]] {
        let mut args = vec!["--root-hash", root.as_str()];
        args.extend(extra);
        let server = Cloopd::try_start(d, &image, &args).unwrap();
        assert!(copy(&server, d).unwrap() == data, "{extra:?}");
    }

    // One flipped byte in the compressed image, inside data block 300.
    let header = {
        let info = text(&cloopbox(&[&"cloopinfo", &"--json", &image]).stdout);
        let at = info.find("\"index_offset\": ").unwrap() + 16;
        let offset: u64 = info[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        let at = info.find("\"index_size\": ").unwrap() + 14;
        let len: u64 = info[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        offset + len
    };
    let tampered = d.join("tampered.cloop");
    std::fs::copy(&image, &tampered).unwrap();
    std::fs::copy(&tree, d.join("tampered.cloop.verity")).unwrap();
    flip(&tampered, header + 300 * 4096 + 5);
    let server = Cloopd::try_start(d, &tampered, &["--root-hash", &root]).unwrap();
    let err = copy(&server, d).unwrap_err();
    assert!(err.contains("Input/output error"), "nbdcopy: {err}");
    // Only that 4 KiB block fails: its neighbours in the same 64 KiB cloop
    // block read fine, byte for byte (the cache retries the piece asked for).
    let qemu_io = |cmd: &str| common::qemu_io(&server.uri(), cmd);
    for (offset, len) in [(1228800 - 4096, 4096), (1228800 + 4096, 8192), (0, 1228800)] {
        let pattern = qemu_io(&format!("read -v {offset} {len}"));
        assert!(!pattern.contains("error"), "{offset}+{len}: {pattern}");
        let first = pattern.lines().next().unwrap();
        let want: Vec<String> = data[offset..offset + 16].iter().map(|b| format!("{b:02x}")).collect();
        assert!(first.contains(&want.join(" ")), "{offset}: {first}");
    }
    for (offset, len) in [(1228800, 512), (1228800 + 4000, 200), (1228800 - 10, 20)] {
        let out = qemu_io(&format!("read {offset} {len}"));
        assert!(out.contains("Input/output error"), "{offset}+{len}: {out}");
    }
    let log = server.stop().1;
    assert!(
        log.contains("tampered.cloop: verity: data block 300 (bytes 1228800..1232896) does not match"),
        "{log}"
    );
    assert!(!log.contains("data block 299") && !log.contains("data block 301"), "{log}");
    let off = cloopbox(&[&"verity", &"-q", &tampered, &"-", &root]);
    assert_eq!(off.status.code(), Some(1));
    assert!(text(&off.stdout).contains("bad data block 300 at offset 1228800"), "{}", text(&off.stdout));
    assert!(text(&off.stderr).contains("1 of 768 data blocks do not match"), "{}", text(&off.stderr));
    let info = cloopbox(&[&"cloopinfo", &"--verify", &"--root-hash", &root, &tampered]);
    assert_eq!(info.status.code(), Some(1));
    assert!(text(&info.stdout).contains("1 of 768 data blocks bad"), "{}", text(&info.stdout));

    // A zlib image: the flipped byte breaks the block's checksum; EIO too.
    let (zimage, zroot) = create(d, &input, "z.cloop", &["--salt", "5a"]);
    assert_eq!(zroot, root, "the tree is over the uncompressed data, whatever the codec");
    flip(&zimage, std::fs::metadata(&zimage).unwrap().len() / 2);
    let server = Cloopd::try_start(d, &zimage, &["--root-hash", &zroot]).unwrap();
    assert!(copy(&server, d).unwrap_err().contains("Input/output error"));
    let off = cloopbox(&[&"verity", &"-q", &zimage, &"-", &zroot]);
    assert_eq!(off.status.code(), Some(1));
    assert!(text(&off.stdout).contains("bad data block"), "{}", text(&off.stdout));
}

#[test]
fn a_damaged_tree_or_a_wrong_root_hash_is_named() {
    let (dir, input, data) = setup();
    let d = dir.path();
    let (image, root) = create(d, &input, "img.cloop", &["--salt", "01"]);
    let tree = d.join("img.cloop.verity");
    let good_tree = std::fs::read(&tree).unwrap();
    // Level 0 starts at block 2 (block 1 is the top); flip a byte in level
    // 0's block 1, which covers data blocks 128..256.
    flip(&tree, 3 * 4096 + 40);
    let server = Cloopd::try_start(d, &image, &["--root-hash", &root]).unwrap();
    let err = copy(&server, d).unwrap_err();
    assert!(err.contains("Input/output error"), "{err}");
    let log = server.stop().1;
    assert!(log.contains("data block 128"), "{log}");
    assert!(log.contains("hash block 1 of level 0 (offset 12288)"), "{log}");
    let off = cloopbox(&[&"verity", &"-q", &image, &tree, &root]);
    assert_eq!(off.status.code(), Some(1));
    assert!(text(&off.stderr).contains("128 of 768 data blocks do not match"), "{}", text(&off.stderr));
    assert!(text(&off.stdout).starts_with("bad data block 128 at offset 524288"), "{}", text(&off.stdout));
    std::fs::write(&tree, &good_tree).unwrap();

    // The top block, or the root hash: refused at start, naming the block.
    flip(&tree, 4096 + 7);
    let err = Cloopd::try_start(d, &image, &["--root-hash", &root]).err().unwrap();
    assert!(err.contains("hash block 0 of level 1 (offset 4096) does not match the root hash"), "{err}");
    std::fs::write(&tree, &good_tree).unwrap();
    let wrong = flip_hex(&root);
    let err = Cloopd::try_start(d, &image, &["--root-hash", &wrong]).err().unwrap();
    assert!(err.contains("does not match the root hash") && err.contains(&wrong), "{err}");
    let off = cloopbox(&[&"verity", &image, &tree, &wrong]);
    assert_eq!(off.status.code(), Some(1));
    assert!(text(&off.stderr).contains("does not match the root hash"), "{}", text(&off.stderr));

    // No tree, malformed trees, the tree of another image.
    let other = d.join("other.cloop");
    std::fs::copy(&image, &other).unwrap();
    let err = Cloopd::try_start(d, &other, &["--root-hash", &root]).err().unwrap();
    assert!(err.contains("no hash tree") && err.contains("other.cloop.verity"), "{err}");
    let bad = d.join("bad.verity");
    for (bytes, want) in [
        (good_tree[..300].to_vec(), "shorter than a superblock"),
        ([b"Verity".as_slice(), &good_tree[6..]].concat(), "superblock offset 0"),
        ([&good_tree[..], &[0u8][..]].concat(), "describes"),
    ] {
        std::fs::write(&bad, &bytes).unwrap();
        let err =
            Cloopd::try_start(d, &image, &["--root-hash", &root, "--verity-tree", bad.to_str().unwrap()])
                .err()
                .unwrap();
        assert!(err.contains("bad.verity") && err.contains(want), "{want}: {err}");
        let off = cloopbox(&[&"verity", &image, &bad, &root]);
        assert_eq!(off.status.code(), Some(1));
        assert!(text(&off.stderr).contains(want), "{}", text(&off.stderr));
        let info = text(&cloopbox(&[&"cloopinfo", &"--verity-tree", &bad, &image]).stdout);
        assert!(info.contains("unusable") && info.contains(want), "{info}");
    }
    let short_input = d.join("short.img");
    std::fs::write(&short_input, &data[..1 << 20]).unwrap();
    let (_, short_root) = create(d, &short_input, "short.cloop", &[]);
    let err = Cloopd::try_start(
        d,
        &image,
        &["--root-hash", &short_root, "--verity-tree", d.join("short.cloop.verity").to_str().unwrap()],
    )
    .err()
    .unwrap();
    assert!(err.contains("covers 256 data blocks") && err.contains("the image has 768"), "{err}");
    // cloopinfo without a tree says so.
    let info = text(&cloopbox(&[&"cloopinfo", &other]).stdout);
    assert!(info.contains("verity tree:        none"), "{info}");
}
