//! cowlist, cowrepair, cowmerge and cowpack through the real binary: the
//! original tools' flags and output formats, our fixes, and exit codes.

mod cow_common;

use cow_common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn run_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn cowlist_prints_the_original_layout_for_every_vector() {
    for (name, state, used) in [
        ("fresh_64.cow", "    clean", 0),
        ("fresh_32.cow", "    clean", 0),
        ("clean_64.cow", "    clean", 5),
        ("clean_32.cow", "    clean", 5),
        ("dirty_64.cow", "    dirty", 0),
        ("dirty_32.cow", "    dirty", 0),
        ("packed_64.cowsave", "    clean packed", 5),
    ] {
        let path = vector(name);
        let out = run(&["cowlist", s(&path)]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let want = format!(
            "\nInfo about cowfile {}:\n     state cowfile: {state}\n    header-version:         1\n       \
             data offset:      4096\n           mapunit:      1024\n     bitmap-blocks:         1 (of 1024 bytes)\n  \
             cowblocks in use: {used:>9} (of 1024 bytes)\n      size rdofile:       300 (of 1024 bytes)\n",
            path.display()
        );
        assert_eq!(text(&out.stdout), want, "{name}");
    }
}

#[test]
fn cowlist_json_and_errors() {
    let out = run(&["cowlist", "--json", s(&vector("dirty_32.cow"))]);
    assert!(out.status.success());
    let json = text(&out.stdout);
    for field in [
        "\"abi\":\"i386\"",
        "\"state\":\"dirty\"",
        "\"dirty\":true",
        "\"cowused\":0",
        "\"rdoblocks\":300",
        "\"fingerprint\":2182417028",
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x42; 100]).unwrap();
    let out = run(&["cowlist", s(&junk)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a valid cowfile (wrong magic"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("junk"));
    let out = run(&["cowlist"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Usage: cowlist"));
}

#[test]
fn cowrepair_fixes_a_dirty_file_without_f_and_verbose_lists_each_block() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let dirty = copy_vector(&format!("dirty_{abi}.cow"), dir.path());
        let out = run(&["cowrepair", "-n", "-v", s(&dirty)]);
        assert!(out.status.success());
        assert_eq!(
            text(&out.stdout),
            "data block         5 (offset        5120) not marked in bitmap; corrected\n\
             data block       100 (offset      102400) not marked in bitmap; corrected\n\
             data block       101 (offset      103424) not marked in bitmap; corrected\n\
             data block       299 (offset      306176) not marked in bitmap; corrected\n\
             Number of corrections in bitmap: 4 (not done due to flag -n)\n"
        );
        assert_eq!(read(&dirty), read(&vector(&format!("dirty_{abi}.cow"))), "-n modified the file");
        // No -f needed for a dirty file (3.1 said "is not dirty" and did nothing).
        let out = run(&["cowrepair", s(&dirty)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "Number of corrections in bitmap: 4\n");
        assert_eq!(read(&dirty), read(&vector(&format!("clean_{abi}.cow"))));
        // Now clean: without -f nothing happens, with -f nothing to correct.
        let out = run(&["cowrepair", s(&dirty)]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stderr).contains("is not dirty"));
        let out = run(&["cowrepair", "-fvv", s(&dirty)]);
        assert_eq!(text(&out.stdout), "Number of corrections in bitmap: 0\n");
        assert_eq!(read(&dirty), read(&vector(&format!("clean_{abi}.cow"))));
    }
}

#[test]
fn cowrepair_f_on_dirty_gives_clean_and_refuses_packed_files() {
    let dir = tempfile::tempdir().unwrap();
    let dirty = copy_vector("dirty_64.cow", dir.path());
    let out = run(&["cowrepair", "-f", "-v", s(&dirty)]);
    assert!(out.status.success());
    assert_eq!(read(&dirty), read(&vector("clean_64.cow")));
    let packed = copy_vector("packed_64.cowsave", dir.path());
    let out = run(&["cowrepair", "-f", s(&packed)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("packed"), "{}", text(&out.stderr));
    assert_eq!(run(&["cowrepair", "-x", s(&packed)]).status.code(), Some(1));
}

#[test]
fn cowmerge_asks_like_the_original_and_marks_the_cowfile() {
    let dir = tempfile::tempdir().unwrap();
    let rdo = dir.path().join("rdo.img");
    std::fs::write(&rdo, raw_image()).unwrap();
    let cow = copy_vector("clean_64.cow", dir.path());
    // Anything but an uppercase Y leaves everything alone.
    let out = run_with_stdin(&["cowmerge", s(&rdo), s(&cow)], "y\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("Really want to modify {} with updates from {} (Y/N)? ", rdo.display(), cow.display())
    );
    assert_eq!(read(&rdo), raw_image());
    let out = run_with_stdin(&["cowmerge", s(&rdo), s(&cow)], "Y\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(&format!("Number of blocks modified in {}: 5\n", rdo.display())));
    assert_eq!(read(&rdo), gunzip(&vector("expected_merged.img.gz")));
    // cowlist still reads it, and says so; a second merge is refused.
    let list = text(&run(&["cowlist", s(&cow)]).stdout);
    assert!(list.contains("     state cowfile:     clean merged\n"), "{list}");
    let out = run(&["cowmerge", "-y", s(&rdo), s(&cow)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("merged"), "{}", text(&out.stderr));
}

#[test]
fn cowmerge_refuses_dirty_and_unrelated_cowfiles() {
    let dir = tempfile::tempdir().unwrap();
    let rdo = dir.path().join("rdo.img");
    std::fs::write(&rdo, raw_image()).unwrap();
    let dirty = copy_vector("dirty_32.cow", dir.path());
    let out = run(&["cowmerge", "-y", s(&rdo), s(&dirty)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is dirty"), "{}", text(&out.stderr));
    let mut other = raw_image();
    other[3000] ^= 0xff;
    std::fs::write(&rdo, &other).unwrap();
    let clean = copy_vector("clean_64.cow", dir.path());
    let out = run(&["cowmerge", "-y", s(&rdo), s(&clean)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("fingerprint"), "{}", text(&out.stderr));
    assert_eq!(read(&rdo), other, "a refused merge wrote to the rdofile");
    let out = run(&["cowmerge", "-y", s(&rdo)]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn cowpack_round_trips_the_stored_savefiles_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let clean = vector(&format!("clean_{abi}.cow"));
        for (flags, ext) in [(&["-p"][..], "cowsave"), (&["-z", "-p"][..], "cowsave.gz")] {
            let save = dir.path().join(format!("{abi}.{ext}"));
            let mut args = vec!["cowpack"];
            args.extend_from_slice(flags);
            args.extend([s(&clean), s(&save)]);
            let out = run(&args);
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert_eq!(read(&save), read(&vector(&format!("packed_{abi}.{ext}"))), "{args:?}");
            let back = dir.path().join(format!("{abi}_{ext}.cow"));
            let unflags: Vec<&str> = flags.iter().map(|f| if *f == "-p" { "-u" } else { f }).collect();
            let mut args = vec!["cowpack"];
            args.extend_from_slice(&unflags);
            args.extend([s(&save), s(&back)]);
            assert!(run(&args).status.success());
            assert_eq!(read(&back), read(&clean), "{args:?}");
        }
    }
}

#[test]
fn cowpack_usage_errors_exit_1() {
    let clean = vector("clean_64.cow");
    for args in [&["cowpack", "-p", "-u", "a", "b"][..], &["cowpack", "a", "b"], &["cowpack", "-p", "a"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("Usage: cowpack [-z] <-p | -u> <source> <dest>"));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["cowpack", "-p", s(&vector("dirty_64.cow")), s(&dir.path().join("x"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("dirty"));
    let out = run(&["cowpack", "-u", s(&clean), s(&dir.path().join("y"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a packed savefile"), "{}", text(&out.stderr));
}

#[test]
fn every_cow_tool_has_help() {
    for (tool, usage) in [
        ("cowlist", "Usage: cowlist [--json] cowfile"),
        ("cowrepair", "Usage: cowrepair [-f] [-n] [-v[v]] cowfile"),
        ("cowmerge", "Usage: cowmerge [-y] [-q] rdofile cowfile"),
        ("cowpack", "Usage: cowpack [-z] <-p | -u> <source> <dest>"),
    ] {
        let out = run(&[tool, "--help"]);
        assert!(out.status.success(), "{tool}");
        assert!(text(&out.stdout).starts_with(usage), "{tool}: {}", text(&out.stdout));
    }
}
