//! The `extract_compressed_fs` and `cloopinfo` applets, run as the real
//! binary: output to stdout and files, input from a pipe, truncation of an
//! existing output, the cases where Debian's tool crashes or fails, clean
//! one-line errors on corrupt images, and agreement with Debian's tool.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::vectors;

const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");

fn raw() -> Vec<u8> {
    let gz = std::fs::File::open(vectors().join("raw/ext2_300k.img.gz")).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
    out
}

fn padded(len: usize) -> Vec<u8> {
    let mut v = raw();
    v.resize(len, 0);
    v
}

const L9: &str = "v2-cloop-utils/ext2_b65536_L9.cloop";

fn run(applet: &str, args: &[&Path]) -> Output {
    Command::new(BIN).arg(applet).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A copy of the L9 vector with block 2's compressed data damaged.
fn corrupt_copy(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(vectors().join(L9)).unwrap();
    // off[2] = 22795 (formats.md A2 hexdump); damage the middle of block 2.
    for b in &mut bytes[22795 + 20..22795 + 40] {
        *b ^= 0x5a;
    }
    let path = dir.join("corrupt.cloop");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn five_block_image_to_stdout() {
    // Debian's tool dies with SIGFPE on images of fewer than 10 blocks.
    let out = run("extract_compressed_fs", &[&vectors().join(L9)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == padded(327680), "stdout differs from the padded raw image");
    let dash = run("extract_compressed_fs", &[&vectors().join(L9), Path::new("-")]);
    assert!(dash.status.success() && dash.stdout == out.stdout);
}

#[test]
fn image_from_a_pipe() {
    let image = std::fs::read(vectors().join("v3-slitaz/odd300000_xz_b65536.cloop")).unwrap();
    let mut child = Command::new(BIN)
        .args(["extract_compressed_fs", "-q", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&image));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == raw()[..300000], "a V3 image read from a pipe must give the exact 300000 bytes");
}

#[test]
fn existing_longer_output_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.img");
    std::fs::write(&target, vec![0xff; 1 << 20]).unwrap();
    let out =
        run("extract_compressed_fs", &[&vectors().join("v3-dplasa-alpha/odd300000_lz4.cloop"), &target]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&target).unwrap() == raw()[..300000]);
}

#[test]
fn output_onto_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.cloop");
    std::fs::copy(vectors().join(L9), &image).unwrap();
    let out = run("extract_compressed_fs", &[&image, &image]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is the input image"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&image).unwrap(), std::fs::read(vectors().join(L9)).unwrap());
}

#[test]
fn corrupt_block_exits_1_with_one_line_and_keeps_earlier_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let image = corrupt_copy(dir.path());
    let target = dir.path().join("out.img");
    let out = run("extract_compressed_fs", &[&image, &target]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("extract_compressed_fs: ") && err.contains("corrupt.cloop"), "{err}");
    assert!(err.contains("block 2 at offset 22795"), "{err}");
    assert!(std::fs::read(&target).unwrap() == padded(327680)[..2 * 65536], "blocks 0 and 1 must be written");
}

#[test]
fn truncated_and_non_cloop_inputs_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(vectors().join(L9)).unwrap();
    let cut = dir.path().join("cut.cloop");
    std::fs::write(&cut, &bytes[..160]).unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 5000]).unwrap();
    for (path, what) in [(&cut, "extends past the end"), (&junk, "not a cloop image")] {
        let out = run("extract_compressed_fs", &[path, &dir.path().join("o")]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&*path.to_string_lossy()) && err.contains(what), "{err}");
    }
}

#[test]
fn closed_stdout_exits_0() {
    let mut child = Command::new(BIN)
        .args(["extract_compressed_fs", "-q"])
        .arg(vectors().join("v2-cloop-utils/ext2_b4096_L9.cloop"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(&head[..], &raw()[..100]);
}

#[test]
fn debian_extract_compressed_fs_agrees() {
    let dir = tempfile::tempdir().unwrap();
    // The 75-block image: Debian's tool crashes on fewer than 10 blocks.
    let image = vectors().join("v2-cloop-utils/ext2_b4096_L9.cloop");
    let theirs = dir.path().join("theirs.img");
    let status = Command::new("extract_compressed_fs")
        .arg(&image)
        .arg(&theirs)
        .stderr(Stdio::null())
        .status()
        .expect("Debian's extract_compressed_fs is needed for this test: apt-get install cloop-utils");
    assert!(status.success());
    let ours = run("extract_compressed_fs", &[&image]);
    assert!(ours.status.success());
    assert!(std::fs::read(&theirs).unwrap() == ours.stdout);
}

#[test]
fn cloopinfo_json_reports_version_and_blocks() {
    let out = run("cloopinfo", &[Path::new("--json"), &vectors().join("v2-cloop-utils/ext2_b4096_L9.cloop")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(json.contains("\"version\": \"cloop V2.0\""), "{json}");
    assert!(json.contains("\"blocks\": 75"), "{json}");
    assert!(json.contains("\"codecs\": {\"zlib\": 75}"), "{json}");
    assert!(json.contains("\"largest_block\": {\"block\": 13, \"size\": 4107}"), "{json}");
    // cloop-utils' vector holds an ext2 made with -L cloopvec: mounted as ext4.
    assert!(json.contains("\"filesystem\": \"ext4\",\n  \"filesystem_label\": \"cloopvec\""), "{json}");
    let text = run("cloopinfo", &[&vectors().join("v3-slitaz/ext2_gzip_b4096_dedup.cloop")]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("SliTaz V3.0") && text.contains("links:              56"), "{text}");
    assert!(text.contains("\nfilesystem:         ext4, label '"), "{text}");
}

#[test]
fn cloopinfo_names_no_filesystem_where_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let (raw_file, image) = (dir.path().join("raw"), dir.path().join("raw.cloop"));
    let bytes: Vec<u8> = (0..3 * 65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw_file, bytes).unwrap();
    let made = run("create_compressed_fs", &[Path::new("-q"), &raw_file, &image]);
    assert!(made.status.success(), "{}", stderr(&made));
    let text = String::from_utf8(run("cloopinfo", &[&image]).stdout).unwrap();
    assert!(text.contains("\nfilesystem:         none recognised\n"), "{text}");
    let json = String::from_utf8(run("cloopinfo", &[Path::new("--json"), &image]).stdout).unwrap();
    assert!(json.contains("\"filesystem\": null,\n  \"filesystem_label\": null"), "{json}");
}

#[test]
fn cloopinfo_verify_names_the_bad_block() {
    let dir = tempfile::tempdir().unwrap();
    let image = corrupt_copy(dir.path());
    let out = run("cloopinfo", &[Path::new("--verify"), &image]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 of 5 blocks bad"), "{text}");
    assert!(text.contains("bad block 2 at offset 22795: "), "{text}");
    let ok = run("cloopinfo", &[Path::new("--verify"), &vectors().join(L9)]);
    assert_eq!(ok.status.code(), Some(0));
    let json = run("cloopinfo", &[Path::new("--verify"), Path::new("--json"), &image]);
    assert_eq!(json.status.code(), Some(1));
    let json = String::from_utf8(json.stdout).unwrap();
    assert!(
        json.contains("\"verified\": false") && json.contains("{\"block\": 2, \"offset\": 22795"),
        "{json}"
    );
}
