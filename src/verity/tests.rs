use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::build::{Builder, Built};
use super::error::Error;
use super::format::{to_hex, Geometry, Salted, BLOCK, BLOCK_U64, DIGEST, PER_BLOCK};
use super::layer::{Options, Verified};
use super::tree::{claimed_root, Tree};
use crate::blockdev::{MemDev, ReadAt};

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8).collect()
}

/// An independent, whole-in-memory reference of the tree (no streaming).
fn reference(data: &[u8], salt: &[u8]) -> (Vec<u8>, [u8; DIGEST]) {
    let s = Salted::new(salt);
    let g = Geometry::for_size(data.len() as u64).unwrap();
    let mut padded = data.to_vec();
    padded.resize(g.data_blocks as usize * BLOCK, 0);
    let mut level: Vec<[u8; DIGEST]> = padded.chunks(BLOCK).map(|b| s.hash(b)).collect();
    let mut levels_bytes = Vec::new();
    for _ in 0..g.levels.len() {
        let mut bytes = Vec::new();
        for chunk in level.chunks(PER_BLOCK as usize) {
            let mut block = vec![0u8; BLOCK];
            for (i, d) in chunk.iter().enumerate() {
                block[i * DIGEST..(i + 1) * DIGEST].copy_from_slice(d);
            }
            bytes.push(block);
        }
        level = bytes.iter().map(|b| s.hash(b)).collect();
        levels_bytes.push(bytes.concat());
    }
    assert_eq!(level.len(), 1);
    let mut file = vec![0u8; BLOCK];
    for l in levels_bytes.iter().rev() {
        file.extend_from_slice(l);
    }
    (file, level[0])
}

fn build(
    dir: &tempfile::TempDir,
    data: &[u8],
    salt: &[u8],
    known: bool,
    chunk: usize,
) -> (std::path::PathBuf, Built) {
    let path = dir.path().join(format!("t{known}{chunk}.verity"));
    let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let mut b = Builder::new(file, path.display().to_string(), salt, known.then_some(data.len() as u64));
    for c in data.chunks(chunk) {
        b.update(c).unwrap();
    }
    let (built, _) = b.finish().unwrap();
    (path, built)
}

#[test]
fn streaming_builder_matches_the_reference_for_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [1, 4096, 5000, 127 * 4096, 128 * 4096, 129 * 4096 + 7, (128 * 128 + 1) * 4096];
    for &size in &sizes {
        let d = data(size, size as u32);
        let (want_file, want_root) = reference(&d, b"salty");
        for (known, chunk) in [(true, 65536), (false, 3000), (false, 4096 * 64)] {
            let (path, built) = build(&dir, &d, b"salty", known, chunk);
            assert_eq!(built.root, want_root, "size {size}, known {known}, chunk {chunk}");
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len(), want_file.len(), "size {size}");
            assert!(got[BLOCK..] == want_file[BLOCK..], "size {size}: hash blocks differ");
            let (_, claimed) = claimed_root(&path).unwrap();
            if size > BLOCK {
                assert_eq!(claimed, Some(want_root));
            }
            let tree = Tree::open(&path, built.root, size as u64).unwrap();
            let mut padded = d.clone();
            padded.resize(size.div_ceil(BLOCK) * BLOCK, 0);
            for (i, b) in padded.chunks(BLOCK).enumerate() {
                tree.verify(i as u64, b).unwrap();
            }
        }
    }
}

#[test]
fn empty_data_has_no_tree() {
    let dir = tempfile::tempdir().unwrap();
    let file = tempfile::tempfile_in(dir.path()).unwrap();
    let err = Builder::new(file, "x.verity".into(), b"", None).finish().unwrap_err();
    assert!(err.to_string().contains("x.verity") && err.to_string().contains("not 0"), "{err}");
}

#[test]
fn wrong_root_damaged_levels_and_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let size = (128 * 3 + 5) * 4096;
    let d = data(size, 1);
    let (path, built) = build(&dir, &d, b"", true, 65536);
    // Wrong root hash: refused at open, naming the top block.
    let mut root = built.root;
    root[5] ^= 1;
    let e = Tree::open(&path, root, size as u64).err().unwrap();
    assert!(matches!(e, Error::HashBlock { level: 1, block: 0, offset: 4096, .. }), "{e}");
    assert!(e.to_string().contains("root hash"), "{e}");
    // The tree of another size.
    let e = Tree::open(&path, built.root, size as u64 + 4096).err().unwrap();
    assert!(e.to_string().contains("covers 389 data blocks"), "{e}");
    // A flipped byte in level 0 block 2: only data blocks 256..384 fail.
    let g = Geometry::new(389).unwrap();
    let f = File::options().read(true).write(true).open(&path).unwrap();
    let at = (g.levels[0].start + 2) * BLOCK_U64 + 100;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    let tree = Tree::open(&path, built.root, size as u64).unwrap();
    tree.verify(255, &d[255 * BLOCK..256 * BLOCK]).unwrap();
    let e = tree.verify(300, &d[300 * BLOCK..301 * BLOCK]).unwrap_err();
    assert!(matches!(e, Error::HashBlock { level: 0, block: 2, .. }), "{e}");
    assert!(e.to_string().contains(&format!("offset {}", at - 100)), "{e}");
    // A flipped data byte.
    let mut block = d[7 * BLOCK..8 * BLOCK].to_vec();
    block[9] ^= 1;
    let e = tree.verify(7, &block).unwrap_err();
    assert_eq!(e.to_string(), "data block 7 (bytes 28672..32768) does not match the hash tree");
}

#[test]
fn malformed_tree_files_are_refused_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(300 * 4096, 3);
    let (path, built) = build(&dir, &d, b"\x00\x11", true, 65536);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.verity");
    let open = |bytes: &[u8]| {
        std::fs::write(&bad, bytes).unwrap();
        Tree::open(&bad, built.root, d.len() as u64).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(open(&good[..100]).contains("shorter than a superblock"));
    assert!(open(&good[..good.len() - 1]).contains("describes 20480 bytes"));
    let mut longer = good.clone();
    longer.push(0);
    assert!(open(&longer).contains("is 20481 bytes"));
    let mut sig = good.clone();
    sig[3] = b'X';
    let e = open(&sig);
    assert!(e.contains("bad.verity") && e.contains("superblock offset 0"), "{e}");
    let mut alg = good.clone();
    alg[32..38].copy_from_slice(b"sha512");
    assert!(open(&alg).contains("only sha256"));
    let mut blocks = good.clone();
    blocks[72] = 0x2d;
    assert!(open(&blocks).contains("describes 20480") || open(&blocks).contains("bytes"));
    assert!(open(&[]).contains("shorter than a superblock"));
    let missing = Tree::open(&dir.path().join("none"), built.root, 1).err().unwrap().to_string();
    assert!(missing.contains("none") && missing.contains("No such file"), "{missing}");
}

#[test]
fn seeded_mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(200 * 4096, 9);
    let (path, built) = build(&dir, &d, b"s", true, 65536);
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("m.verity");
    let mut x = 0x9e3779b97f4a7c15u64;
    for _ in 0..400 {
        let mut m = good.clone();
        for _ in 0..1 + (x % 4) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % 600;
            m[at] = (x >> 32) as u8;
        }
        std::fs::write(&bad, &m).unwrap();
        if let Ok(t) = Tree::open(&bad, built.root, d.len() as u64) {
            let _ = t.verify(0, &d[..BLOCK]);
        }
    }
}

fn layer(data: &[u8], tree_data: &[u8], once: bool) -> (Verified<MemDev>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (path, built) = build(&dir, tree_data, b"layer", true, 65536);
    let tree = Arc::new(Tree::open(&path, built.root, data.len() as u64).unwrap());
    let options = Options { check_at_most_once: once, warn: None };
    (Verified::new(Arc::new(MemDev::new(data.to_vec())), tree, "img".into(), options), dir)
}

#[test]
fn layer_serves_verified_bytes_aligned_or_not() {
    let d = data(1000 * 4096 + 1234, 5);
    let (v, _dir) = layer(&d, &d, false);
    assert_eq!(v.size(), d.len() as u64);
    for (offset, len) in
        [(0, 4096), (4096 * 10, 65536), (17, 5), (4095, 2), (d.len() - 1234, 1234), (d.len() - 10, 10)]
    {
        let mut buf = vec![0u8; len];
        v.read_at(&mut buf, offset as u64).unwrap();
        assert!(buf == d[offset..offset + len], "{offset}+{len}");
    }
    let mut all = vec![0u8; d.len()];
    v.read_at(&mut all, 0).unwrap();
    assert!(all == d);
    assert_eq!(v.stats().failed, 0);
    assert!(v.read_at(&mut [0u8; 2], d.len() as u64 - 1).is_err());
}

#[test]
fn a_tampered_block_is_eio_naming_it_and_its_bytes_never_leave() {
    let good = data(300 * 4096, 6);
    let mut bad = good.clone();
    bad[42 * 4096 + 77] ^= 0x10;
    let (v, _dir) = layer(&bad, &good, false);
    // Blocks before it are fine.
    let mut buf = vec![0xaau8; 42 * 4096];
    v.read_at(&mut buf, 0).unwrap();
    // A read covering it fails as a whole, with zeros in the buffer.
    let mut buf = vec![0xaau8; 65536];
    let e = v.read_at(&mut buf, 40 * 4096).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("img: verity: data block 42 (bytes 172032..176128)"), "{e}");
    assert!(buf.iter().all(|&b| b == 0));
    // Unaligned, one byte of the bad block that is unchanged.
    let mut one = [0xaau8];
    assert!(v.read_at(&mut one, 42 * 4096).is_err());
    assert_eq!(one, [0]);
    assert_eq!(crate::nbd::transmission::nbd_errno(&e), crate::nbd::proto::errno::EIO);
}

#[test]
fn blocks_are_hashed_on_every_read_unless_check_at_most_once() {
    let d = data(64 * 4096, 7);
    let (v, _dir) = layer(&d, &d, false);
    let mut buf = vec![0u8; 8192];
    v.read_at(&mut buf, 0).unwrap();
    v.read_at(&mut buf, 0).unwrap();
    assert_eq!(v.stats().hashed, 4);
    let (once, _dir) = layer(&d, &d, true);
    once.read_at(&mut buf, 0).unwrap();
    once.read_at(&mut buf, 0).unwrap();
    once.read_at(&mut buf[..10], 4096 + 3).unwrap();
    assert_eq!(once.stats().hashed, 2);
    assert_eq!(to_hex(&[0xab]), "ab");
}

#[test]
fn the_warning_names_each_bad_block_once() {
    let good = data(10 * 4096, 8);
    let mut bad = good.clone();
    bad[3 * 4096] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let (path, built) = build(&dir, &good, b"", true, 65536);
    let tree = Arc::new(Tree::open(&path, built.root, bad.len() as u64).unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let options = Options {
        check_at_most_once: false,
        warn: Some(Arc::new(move |m| log.lock().unwrap().push(m.into()))),
    };
    let v = Verified::new(Arc::new(MemDev::new(bad)), tree, "img".into(), options);
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        assert!(v.read_at(&mut buf, 3 * 4096).is_err());
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("data block 3"), "{seen:?}");
    assert_eq!(v.stats().failed, 3);
}
