//! Our create_compressed_fs against the peers: Debian cloop-utils 3.14
//! (`create_compressed_fs`, `extract_compressed_fs`) and QEMU's cloop reader
//! (`qemu-img`). Each peer must be installed; a missing one fails the test
//! with the Debian package to install.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloopbox::blockdev::ReadAt;
use cloopbox::cloop::reader::Image;

mod common;
use common::vectors;

const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");

fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} not found: install the Debian package {package} (apt-get install {package})")
    })
}

fn cloop_utils(name: &str) -> PathBuf {
    tool(name, "cloop-utils")
}

/// The 300 KiB ext2 image of the vectors.
fn ext2() -> Vec<u8> {
    let gz = std::fs::read(vectors().join("raw/ext2_300k.img.gz")).unwrap();
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut data).unwrap();
    assert_eq!(data.len(), 307_200);
    data
}

/// Text, zeros, a pattern and noise, `len` bytes: a mix like a filesystem.
fn sample(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut line = 0u32;
    while data.len() < len {
        match (data.len() / 50_000) % 4 {
            0 => {
                data.extend_from_slice(
                    format!("line {line}: the quick brown fox jumps over the lazy dog\n").as_bytes(),
                );
                line += 1;
            }
            1 => data.resize(data.len() + 4096, 0),
            2 => data.extend_from_slice(&(data.len() as u32).to_le_bytes()),
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    data.truncate(len);
    data
}

fn padded(data: &[u8], bs: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(bs) * bs, 0);
    v
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs our create_compressed_fs with `args` on `input`, writing `output`.
fn ours(args: &[&str], input: &Path, output: &Path) -> Vec<u8> {
    run(Command::new(BIN).arg("create_compressed_fs").args(args).arg(input).arg(output));
    std::fs::read(output).unwrap()
}

fn theirs(args: &[&str], input: &Path, output: &Path) -> Vec<u8> {
    run(Command::new(cloop_utils("create_compressed_fs")).args(args).arg(input).arg(output));
    std::fs::read(output).unwrap()
}

fn read_with_our_reader(path: &Path) -> Vec<u8> {
    let image = Image::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![0u8; image.info().size as usize];
    image.read_at(&mut out, 0).unwrap_or_else(|e| panic!("{e}"));
    out
}

fn be64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn cloop_utils_extracts_our_images_exactly() {
    let extract = cloop_utils("extract_compressed_fs");
    let dir = tempfile::tempdir().unwrap();
    // At least 10 blocks each: cloop-utils' extractor dies of SIGFPE below that.
    // libdeflate at its default, fastest and near-optimal levels, and
    // zlib's own algorithm (--deflate zlib).
    let cases = [
        (sample(1_100_001), vec!["-B", "64K"], 65536),
        (ext2(), vec!["-B", "4096"], 4096),
        (sample(1_400_000), vec!["-B", "128K", "-L", "12"], 131072),
        (sample(700_000), vec!["-B", "32K", "-L", "1"], 32768),
        (sample(700_000), vec!["-B", "32K", "--deflate", "zlib"], 32768),
    ];
    for (i, (data, args, bs)) in cases.iter().enumerate() {
        let input = dir.path().join(format!("in{i}"));
        std::fs::write(&input, data).unwrap();
        let image = dir.path().join(format!("img{i}"));
        ours(args, &input, &image);
        let raw = dir.path().join(format!("raw{i}"));
        run(Command::new(&extract).arg(&image).arg(&raw));
        assert!(std::fs::read(&raw).unwrap() == padded(data, *bs), "case {i}: extracted bytes differ");
    }
}

#[test]
fn qemu_detects_and_reads_our_v2_images() {
    let qemu_img = tool("qemu-img", "qemu-utils");
    let dir = tempfile::tempdir().unwrap();
    let data = sample(700_000);
    let input = dir.path().join("in");
    std::fs::write(&input, &data).unwrap();
    for (i, args) in [
        vec![],
        vec!["-B", "4096", "-L", "1"],
        vec!["-L", "-1", "-B", "128K"],
        vec!["-L", "12", "-B", "128K"],
    ]
    .iter()
    .enumerate()
    {
        let image = dir.path().join(format!("img{i}"));
        ours(args, &input, &image);
        let info = run(Command::new(&qemu_img).arg("info").arg(&image));
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("file format: cloop"), "qemu-img does not auto-detect cloop: {info}");
        let raw = dir.path().join(format!("raw{i}"));
        run(Command::new(&qemu_img).args(["convert", "-f", "cloop", "-O", "raw"]).arg(&image).arg(&raw));
        let bs = Image::open(&image).unwrap().info().block_size as usize;
        assert!(std::fs::read(&raw).unwrap() == padded(&data, bs), "{args:?}: qemu reads different bytes");
    }
}

#[test]
fn we_read_cloop_utils_images_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(600_000);
    let input = dir.path().join("in");
    std::fs::write(&input, &data).unwrap();
    for (i, args) in [["-L", "9"], ["-L", "1"], ["-L", "-1"], ["-b", "-q"], ["-B", "4096"]].iter().enumerate()
    {
        let image = dir.path().join(format!("theirs{i}"));
        theirs(args, &input, &image);
        let bs = if args[0] == "-B" { 4096 } else { 65536 };
        assert!(read_with_our_reader(&image) == padded(&data, bs), "{args:?}: we read different bytes");
    }
}

#[test]
fn deflate_zlib_is_cloop_utils_byte_for_byte_at_4k_blocks() {
    // The compatibility path: zlib's own algorithm (zlib-rs) writes the
    // image cloop-utils (zlib 1.2.13) writes. libdeflate, the default, does
    // not, and is smaller.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ext2.img");
    std::fs::write(&input, ext2()).unwrap();
    let theirs = theirs(&["-q", "-B", "4096", "-L", "9"], &input, &dir.path().join("theirs"));
    let compat =
        ours(&["-q", "-B", "4096", "-L", "9", "--deflate", "zlib"], &input, &dir.path().join("compat"));
    assert!(compat == theirs, "--deflate zlib differs from cloop-utils");
    let default = ours(&["-q", "-B", "4096", "-L", "9"], &input, &dir.path().join("default"));
    assert!(default != theirs && default.len() < theirs.len(), "{} vs {}", default.len(), theirs.len());
    assert!(read_with_our_reader(&dir.path().join("default")) == padded(&ext2(), 4096));
}

#[test]
fn zstd_and_lz4_images_at_every_level_read_back_and_are_v4_which_the_peers_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(300_000);
    let input = dir.path().join("in");
    std::fs::write(&input, &data).unwrap();
    for (codec, top) in [("zstd", 22), ("lz4", 12)] {
        let mut sizes = Vec::new();
        for level in 1..=top {
            let image = dir.path().join(format!("{codec}{level}"));
            let bytes =
                ours(&["-q", "-B", "64K", "--codec", codec, "-L", &level.to_string()], &input, &image);
            assert!(read_with_our_reader(&image) == padded(&data, 65536), "{codec} level {level}");
            sizes.push(bytes.len());
        }
        assert!(sizes[top - 1] < sizes[0], "{codec}: {sizes:?}");
        // Debian's cloop-utils and QEMU read V2 (zlib) only: a V4 image is
        // refused, never misread.
        let image = dir.path().join(format!("{codec}{}", top - 3));
        let extracted = dir.path().join("raw");
        let out =
            Command::new(cloop_utils("extract_compressed_fs")).arg(&image).arg(&extracted).output().unwrap();
        let read = std::fs::read(&extracted).unwrap_or_default();
        assert!(!out.status.success() || read != padded(&data, 65536), "cloop-utils read a V4 {codec} image");
        let out = Command::new(tool("qemu-img", "qemu-utils"))
            .args(["convert", "-f", "cloop", "-O", "raw"])
            .arg(&image)
            .arg(&extracted)
            .output()
            .unwrap();
        assert!(!out.status.success(), "qemu-img read a V4 {codec} image");
    }
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, sample(900_000)).unwrap();
    // The default (libdeflate 9), libdeflate 12, zlib's algorithm, zstd,
    // LZ4_HC (its match finder's state is per thread).
    for codec in [
        &[][..],
        &["-L", "12"],
        &["--deflate", "zlib"],
        &["--codec", "zstd", "-L", "19"],
        &["--codec", "lz4"],
    ] {
        let base = [&["-q", "-B", "16K"][..], codec].concat();
        let one = ours(&[&base[..], &["-t", "1"]].concat(), &input, &dir.path().join("t1"));
        for args in [["-t", "4", "-a", "9"], ["-t", "3", "-a", "1"], ["-t", "8", "-a", "64"]] {
            let many = ours(&[&base[..], &args[..]].concat(), &input, &dir.path().join("tn"));
            assert!(one == many, "{codec:?} {args:?} changed the output");
        }
    }
}

#[test]
fn v2_header_and_index_have_cloop_utils_layout() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, sample(1_000_000)).unwrap();
    for args in [vec!["-L", "9"], vec!["-B", "4096", "-L", "6"], vec!["-B", "1M"]] {
        let a = ours(&[&["-q"], &args[..]].concat(), &input, &dir.path().join("ours"));
        let b = theirs(&[&["-q"], &args[..]].concat(), &input, &dir.path().join("theirs"));
        // Preamble, block size and block count: identical bytes.
        assert_eq!(a[..136], b[..136], "{args:?}: header differs");
        let n = u32::from_be_bytes(a[132..136].try_into().unwrap()) as usize;
        // Index right after the header, data right after the index.
        assert_eq!(be64(&a, 136), (136 + 8 * (n + 1)) as u64);
        assert_eq!(be64(&a, 136), be64(&b, 136));
        // Contiguous blocks and no trailing bytes.
        assert_eq!(be64(&a, 136 + 8 * n), a.len() as u64);
        assert!((0..n).all(|i| be64(&a, 136 + 8 * i) < be64(&a, 144 + 8 * i)));
        // zlib's own algorithm (--deflate zlib, zlib-rs) matches zlib's
        // ratio at level 9; its faster levels use other match finders (see
        // the man page). The default, libdeflate, is smaller on real
        // filesystems (deflate_zlib_is_cloop_utils_byte_for_byte_at_4k_blocks,
        // BENCHMARKS.md) but not on this sample's runs of 32-bit counters.
        if !args.contains(&"-L") || args.contains(&"9") {
            let compat = [&["-q", "--deflate", "zlib"][..], &args[..]].concat();
            let c = ours(&compat, &input, &dir.path().join("compat"));
            let ratio = c.len() as f64 / b.len() as f64;
            assert!(ratio < 1.01, "{args:?}: {} bytes vs cloop-utils' {}", c.len(), b.len());
        }
    }
    // Stored deflate (-L 0) has nothing left to choose: the whole file matches.
    let a = ours(&["-q", "-L", "0"], &input, &dir.path().join("ours0"));
    let b = theirs(&["-q", "-L", "0"], &input, &dir.path().join("theirs0"));
    assert!(a == b, "-L 0 images differ");
}

#[test]
fn split_header_matches_the_cloop_utils_vector() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ext2.img");
    std::fs::write(&input, ext2()).unwrap();
    let header = dir.path().join("hdr.bin");
    let data = dir.path().join("data.bin");
    let mut cmd = Command::new(BIN);
    run(cmd.args(["create_compressed_fs", "-q", "-S"]).arg(&header).arg(&input).arg(&data));
    let ours = std::fs::read(&header).unwrap();
    let vector = std::fs::read(vectors().join("v2-cloop-utils/ext2_b65536_S-header.bin")).unwrap();
    assert_eq!(ours.len(), vector.len());
    assert_eq!(ours[..136], vector[..136]);
    assert_eq!(be64(&ours, 136), 184);
    let mut whole = ours;
    whole.extend(std::fs::read(&data).unwrap());
    assert_eq!(be64(&whole, 136 + 8 * 5), whole.len() as u64);
    let joined = dir.path().join("joined.cloop");
    std::fs::write(&joined, &whole).unwrap();
    assert!(read_with_our_reader(&joined) == padded(&ext2(), 65536));
    // cloop-utils' own concatenation reads the same.
    let theirs = vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop");
    assert!(read_with_our_reader(&theirs) == read_with_our_reader(&joined));
}
