//! The boot-time media check on real images: good, damaged, a checksum
//! file that disagrees, and cancelled.

mod common;

use std::path::{Path, PathBuf};

use cloopbox::boot::log::Log;
use cloopbox::boot::mediacheck::{check, Outcome};

/// A medium tree with the vector image as KNOPPIX/KNOPPIX.
fn medium(dir: &Path) -> PathBuf {
    let image = dir.join("KNOPPIX/KNOPPIX");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::copy(common::vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop"), &image).unwrap();
    image
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().expect("sha256sum (coreutils)");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn run(root: &Path, image: &Path, cancel: bool) -> Outcome {
    check(&[image.to_path_buf()], root, &Log::stderr("test"), &mut || cancel).unwrap()
}

#[test]
fn a_good_image_passes_with_and_without_a_checksum_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = medium(dir.path());
    assert_eq!(run(dir.path(), &image, false), Outcome::Good);
    std::fs::write(dir.path().join("sha256sum.txt"), format!("{}  ./KNOPPIX/KNOPPIX\n", sha256(&image)))
        .unwrap();
    assert_eq!(run(dir.path(), &image, false), Outcome::Good);
}

#[test]
fn a_wrong_checksum_is_reported_with_both_sums() {
    let dir = tempfile::tempdir().unwrap();
    let image = medium(dir.path());
    let wrong = "0".repeat(64);
    std::fs::write(dir.path().join("KNOPPIX/sha256sums"), format!("{wrong} *KNOPPIX\n")).unwrap();
    match run(dir.path(), &image, false) {
        Outcome::Bad(lines) => {
            assert_eq!(lines.len(), 1);
            assert!(lines[0].contains(&sha256(&image)) && lines[0].contains(&wrong), "{}", lines[0]);
            assert!(lines[0].contains("sha256sums"), "{}", lines[0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_block_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = medium(dir.path());
    let mut bytes = std::fs::read(&image).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&image, bytes).unwrap();
    match run(dir.path(), &image, false) {
        Outcome::Bad(lines) => {
            assert!(!lines.is_empty());
            assert!(lines[0].contains("KNOPPIX") && lines[0].contains("block"), "{}", lines[0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_user_can_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = medium(dir.path());
    assert_eq!(run(dir.path(), &image, true), Outcome::Cancelled);
}
