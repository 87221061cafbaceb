//! The create_compressed_fs command line: cloop-utils' flags and their
//! messages, stdin/stdout, the old number syntax, -S, and the safety rules
//! (no image over the input, no partial image under the final name).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cloopbox::blockdev::ReadAt;
use cloopbox::cloop::reader::Image;

mod common;
use common::vectors;

const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");

fn create(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("create_compressed_fs").args(args);
    cmd
}

fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    out
}

fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"cloop block data\n"[i % 17]).collect()
}

/// The image contents as our reader sees them.
fn contents(path: &Path) -> Vec<u8> {
    let image = Image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = vec![0u8; image.info().size as usize];
    image.read_at(&mut out, 0).unwrap();
    out
}

fn block_size_of(path: &Path) -> u32 {
    Image::open(path).unwrap().info().block_size
}

fn padded(data: &[u8], bs: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(bs) * bs, 0);
    v
}

/// Files in `dir` other than those named.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn block_size_is_clamped_with_cloop_utils_messages_and_takes_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, text(20_000)).unwrap();
    let out = dir.path().join("out");
    for (flag, bs, message) in [
        ("2M", 1 << 20, Some("Block size is too big. Adjusting to 1048576")),
        ("100", 512, Some("Block size is too small. Adjusting to 512")),
        ("4k", 3584, Some("Block size not multiple of 512. Adjusting to 3584")),
        ("64K", 65536, None),
        ("2i", 4096, None),
    ] {
        let result = ok(create(&["-B", flag]).arg(&input).arg(&out));
        assert_eq!(block_size_of(&out), bs, "-B {flag}");
        if let Some(m) = message {
            assert!(stderr(&result).contains(m), "-B {flag}: {}", stderr(&result));
        }
        assert!(contents(&out) == padded(&text(20_000), bs as usize));
    }
    let bad = create(&["-B", "12x"]).arg(&input).arg(&out).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn level_out_of_range_is_the_cloop_utils_error() {
    // zlib takes -2..12 (libdeflate has 10..12), zlib's own algorithm -2..9.
    for args in [&["-L", "13"][..], &["-L", "-3"], &["-L", "fast"], &["-L", "10", "--deflate", "zlib"]] {
        let level = args.join(" ");
        let out = create(&[args, &["in", "out"]].concat()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "-L {level}");
        assert!(stderr(&out).contains("ERROR: Invalid compression method. Exiting..."), "{}", stderr(&out));
    }
}

#[test]
fn old_number_syntax_reads_stdin_and_writes_stdout() {
    let data = text(150_000);
    // "image" does not exist: cloop-utils ignores it and reads stdin.
    let out = run_with_stdin(&mut create(&["image", "16384"]), &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Assuming old command syntax"));
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    std::fs::write(&image, &out.stdout).unwrap();
    assert_eq!(block_size_of(&image), 16384);
    assert!(contents(&image) == padded(&data, 16384));
}

#[test]
fn stdout_output_with_m_f_or_nothing_gives_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, text(300_000)).unwrap();
    let file = dir.path().join("file.cloop");
    ok(create(&["-q"]).arg(&input).arg(&file));
    let expected = std::fs::read(&file).unwrap();
    let spool = dir.path().join("spool");
    for args in [vec!["-m"], vec!["-f", spool.to_str().unwrap()], vec![]] {
        let out = ok(create(&[&["-q"], &args[..]].concat()).arg(&input).arg("-"));
        assert!(out.stdout == expected, "{args:?}");
        assert!(!spool.exists(), "the -f file is removed");
    }
    // Stdin of unknown size to a file (data first, then moved up).
    let piped = dir.path().join("piped.cloop");
    let out = run_with_stdin(create(&["-q", "-"]).arg(&piped), &text(300_000));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&piped).unwrap() == expected);
}

#[test]
fn split_output_concatenates_to_a_valid_image() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = text(200_000);
    std::fs::write(&input, &data).unwrap();
    let header = dir.path().join("hdr");
    let out = ok(create(&["-q", "-B", "8192", "-S"]).arg(&header).arg(&input).arg("-"));
    let mut whole = std::fs::read(&header).unwrap();
    assert_eq!(whole.len(), 136 + 8 * (25 + 1));
    whole.extend(&out.stdout);
    let joined = dir.path().join("joined");
    std::fs::write(&joined, &whole).unwrap();
    assert!(contents(&joined) == padded(&data, 8192));
    let single = dir.path().join("single");
    ok(create(&["-q", "-B", "8192"]).arg(&input).arg(&single));
    assert!(std::fs::read(&single).unwrap() == whole);
    let refused = create(&["-S", "h", "-m", "in", "out"]).output().unwrap();
    assert!(stderr(&refused).contains("Separate header file only"));
}

#[test]
fn output_over_the_input_is_refused_also_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = text(50_000);
    std::fs::write(&input, &data).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    for (i, o) in [(&input, &input), (&input, &link), (&link, &input)] {
        let out = create(&["-q"]).arg(i).arg(o).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("refusing to write"), "{}", stderr(&out));
    }
    let header = create(&["-q", "-S"]).arg(&input).arg(&input).arg(dir.path().join("x")).output().unwrap();
    assert_eq!(header.status.code(), Some(1));
    assert!(std::fs::read(&input).unwrap() == data, "the input was modified");
    assert_eq!(others(dir.path(), &["in", "link"]), Vec::<String>::new());
}

#[test]
fn failures_leave_no_temporary_file_and_keep_the_old_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, text(100_000)).unwrap();
    let out = dir.path().join("out");
    std::fs::write(&out, b"previous image").unwrap();
    // Input shorter than -s: an error after some blocks were written.
    let short = create(&["-q", "-B", "4096", "-s", "1M"]).arg(&input).arg(&out).output().unwrap();
    assert_eq!(short.status.code(), Some(1));
    assert!(stderr(&short).contains("input ended at offset 100000"), "{}", stderr(&short));
    // A directory as input.
    let not_file = create(&["-q"]).arg(dir.path()).arg(&out).output().unwrap();
    assert_eq!(not_file.status.code(), Some(1));
    assert!(stderr(&not_file).contains("is a directory"), "{}", stderr(&not_file));
    assert_eq!(std::fs::read(&out).unwrap(), b"previous image");
    assert_eq!(others(dir.path(), &["in", "out"]), Vec::<String>::new());
}

#[test]
fn a_fifo_closed_early_leaves_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils)");
    assert!(status.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            f.write_all(&text(70_000)).unwrap();
        })
    };
    let out = dir.path().join("out");
    let result = create(&["-q", "-s", "512K"]).arg(&fifo).arg(&out).output().unwrap();
    writer.join().unwrap();
    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("input ended at offset 70000"), "{}", stderr(&result));
    assert_eq!(others(dir.path(), &["fifo"]), Vec::<String>::new());
}

#[test]
fn more_input_than_s_warns_exits_1_and_writes_the_truncated_image() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = text(100_000);
    std::fs::write(&input, &data).unwrap();
    let out = dir.path().join("out");
    let result = create(&["-q", "-B", "4096", "-s", "40000"]).arg(&input).arg(&out).output().unwrap();
    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("WARNING: got more data than expected"), "{}", stderr(&result));
    assert!(contents(&out) == padded(&data[..40_000], 4096));
}

#[test]
fn tiny_and_empty_inputs_work() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"hello").unwrap();
    let out = dir.path().join("tiny.cloop");
    ok(create(&["-q"]).arg(&tiny).arg(&out));
    assert!(contents(&out) == padded(b"hello", 65536));

    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let vector = std::fs::read(vectors().join("v2-cloop-utils/empty_0blocks.cloop")).unwrap();
    let out = dir.path().join("empty.cloop");
    ok(create(&["-q"]).arg(&empty).arg(&out));
    assert_eq!(std::fs::read(&out).unwrap(), vector);
    // cloop-utils' own recipe: old syntax with empty stdin.
    let piped = run_with_stdin(&mut create(&["x", "65536"]), b"");
    assert!(piped.status.success());
    assert_eq!(piped.stdout, vector);
}

#[test]
fn quiet_means_nothing_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, text(300_000)).unwrap();
    let out = ok(create(&["-q", "-B", "4096", "-t", "0"]).arg(&input).arg(dir.path().join("out")));
    assert_eq!(stderr(&out), "");
    let loud = ok(create(&["-B", "4096"]).arg(&input).arg(dir.path().join("out2")));
    assert!(stderr(&loud).contains("Block size 4096, expected number of blocks: 74"), "{}", stderr(&loud));
}

#[test]
fn write_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, text(100_000)).unwrap();
    let out = create(&["-q"]).arg(&input).arg("/dev/full").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("/dev/full") && err.contains("offset 0"), "{err}");
}

#[test]
fn remote_compression_is_refused_clearly() {
    let out = create(&["-l", "in", "out"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not supported"));
    let out = create(&["in", "out", "node1:3103"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("node1:3103"));
}

#[test]
fn other_codecs_write_v4_images() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let data = text(90_000);
    std::fs::write(&input, &data).unwrap();
    for codec in ["xz", "lz4", "zstd", "none"] {
        let out = dir.path().join(codec);
        ok(create(&["-q", "-B", "8K", "--codec", codec]).arg(&input).arg(&out));
        assert_eq!(&std::fs::read(&out).unwrap()[0x0b..0x0f], b"V4.0", "{codec}");
        assert!(contents(&out) == padded(&data, 8192), "{codec}");
    }
    let lzo = create(&["--codec", "lzo", "in", "out"]).output().unwrap();
    assert_eq!(lzo.status.code(), Some(1));
}
