//! Checksum files on live media (`sha256sum.txt`, `SHA256SUMS`,
//! `KNOPPIX/sha1sums`, `md5sum.txt`, ...): which of them name the images
//! a boot uses, and whether the images still match.
//!
//! Only the images are hashed, not the whole medium: the check is about
//! what this boot will read.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

/// Names of checksum files, looked for in the medium's root and in the
/// image directory, strongest algorithm first.
pub const FILES: &[(&str, Algorithm)] = &[
    ("sha256sum.txt", Algorithm::Sha256),
    ("SHA256SUMS", Algorithm::Sha256),
    ("sha256sums", Algorithm::Sha256),
    ("sha1sum.txt", Algorithm::Sha1),
    ("sha1sums", Algorithm::Sha1),
    ("SHA1SUMS", Algorithm::Sha1),
    ("md5sum.txt", Algorithm::Md5),
    ("md5sums", Algorithm::Md5),
    ("MD5SUMS", Algorithm::Md5),
];

/// Longest checksum file read (they list a few hundred files at most).
const MAX_LIST: u64 = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha1,
    Md5,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha1 => "sha1",
            Algorithm::Md5 => "md5",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha1 => 40,
            Algorithm::Md5 => 32,
        }
    }
}

/// One image with its expected digest and where that came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub image: PathBuf,
    pub algorithm: Algorithm,
    pub hex: String,
    pub list: PathBuf,
}

/// `path` without `.` components and without a leading `./`, compared
/// ignoring ASCII case (FAT and ISO names).
fn normal(path: &Path) -> String {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("/")
}

/// Parses `HEX  NAME` / `HEX *NAME` lines of `algorithm`; other lines are
/// skipped.
pub fn parse(text: &str, algorithm: Algorithm) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (hex, rest) = line.trim_end_matches('\r').split_once(char::is_whitespace)?;
            let name = rest.trim_start().trim_start_matches('*');
            let ok = hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_hexdigit());
            (ok && !name.is_empty()).then(|| (hex.to_ascii_lowercase(), name.to_string()))
        })
        .collect()
}

/// The expected digests of `images` (paths under `medium_root`), from the
/// first checksum file that names each one.
pub fn expected(medium_root: &Path, images: &[PathBuf]) -> Vec<Expected> {
    let mut dirs = vec![medium_root.to_path_buf()];
    if let Some(dir) = images.first().and_then(|i| i.parent()) {
        if dir != medium_root {
            dirs.push(dir.to_path_buf());
        }
    }
    let mut found: Vec<Expected> = Vec::new();
    for dir in dirs {
        for (name, algorithm) in FILES {
            let Some(list) = super::media::find_entry(&dir, name) else { continue };
            let Ok(meta) = std::fs::metadata(&list) else { continue };
            if !meta.is_file() || meta.len() > MAX_LIST {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&list) else { continue };
            for (hex, entry) in parse(&text, *algorithm) {
                let target = normal(&dir.join(&entry));
                for image in images {
                    if normal(image) == target && !found.iter().any(|e| &e.image == image) {
                        found.push(Expected {
                            image: image.clone(),
                            algorithm: *algorithm,
                            hex: hex.clone(),
                            list: list.clone(),
                        });
                    }
                }
            }
        }
    }
    found
}

/// The digest of a reader, as lower-case hex; `progress(n)` after each
/// chunk, which may return false to stop (then `None`).
pub fn digest(
    mut input: impl Read,
    algorithm: Algorithm,
    progress: &mut dyn FnMut(u64) -> bool,
) -> std::io::Result<Option<String>> {
    let mut sha256 = sha2::Sha256::new();
    let mut sha1 = sha1::Sha1::new();
    let mut md5 = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match algorithm {
            Algorithm::Sha256 => sha256.update(&buf[..n]),
            Algorithm::Sha1 => sha1.update(&buf[..n]),
            Algorithm::Md5 => md5.update(&buf[..n]),
        }
        if !progress(n as u64) {
            return Ok(None);
        }
    }
    let bytes: Vec<u8> = match algorithm {
        Algorithm::Sha256 => sha256.finalize().to_vec(),
        Algorithm::Sha1 => sha1.finalize().to_vec(),
        Algorithm::Md5 => md5.finalize().to_vec(),
    };
    Ok(Some(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_known_strings() {
        let hex = |a| digest(&b"abc"[..], a, &mut |_| true).unwrap().unwrap();
        assert_eq!(
            hex(Algorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(Algorithm::Sha1), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(hex(Algorithm::Md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(digest(&b"abc"[..], Algorithm::Md5, &mut |_| false).unwrap(), None);
    }

    #[test]
    fn lists_name_the_images_relative_to_their_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("KNOPPIX");
        std::fs::create_dir(&dir).unwrap();
        let image = dir.join("KNOPPIX");
        std::fs::write(&image, b"x").unwrap();
        let sha = "a".repeat(64);
        std::fs::write(
            root.path().join("sha256sum.txt"),
            format!("garbage line\n{sha}  ./knoppix/knoppix\r\n{}  boot/linux\n", "b".repeat(64)),
        )
        .unwrap();
        std::fs::write(dir.join("md5sums"), format!("{} *KNOPPIX\n", "c".repeat(32))).unwrap();
        let e = expected(root.path(), std::slice::from_ref(&image));
        assert_eq!(e.len(), 1, "the strongest list wins, once per image");
        assert_eq!(e[0].algorithm, Algorithm::Sha256);
        assert_eq!(e[0].hex, sha);
        std::fs::remove_file(root.path().join("sha256sum.txt")).unwrap();
        let e = expected(root.path(), &[image]);
        assert_eq!((e[0].algorithm, e[0].hex.as_str()), (Algorithm::Md5, "c".repeat(32).as_str()));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text =
            "zz  a\n123 b\n\n  \nd41d8cd98f00b204e9800998ecf8427e\nd41d8cd98f00b204e9800998ecf8427e  ok\n";
        assert_eq!(
            parse(text, Algorithm::Md5),
            vec![("d41d8cd98f00b204e9800998ecf8427e".into(), "ok".into())]
        );
    }
}
