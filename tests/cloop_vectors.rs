//! Every cloop vector in ../shared/vectors reads back to what its README
//! says: the detected version, the exact uncompressed bytes (whole-image
//! extraction and random `read_at`s from several threads), and a clean
//! error for the non-conformant file. The V2 images are also cross-checked
//! against QEMU's reader.

use cloopbox::blockdev::ReadAt;
use cloopbox::cloop::codec::{Codec, Decoder};
use cloopbox::cloop::extract::extract;
use cloopbox::cloop::reader::{Image, Kind, Version};
use cloopbox::progress::Progress;

mod common;
use common::{raw, vectors, XorShift};

fn padded(len: usize) -> Vec<u8> {
    let mut v = raw().to_vec();
    v.resize(len, 0);
    v
}

fn odd300000() -> Vec<u8> {
    raw()[..300000].to_vec()
}

const V3_4: Version = Version::V3SliTaz { entry_size: 4, compressed_index: true, truncated: false };

struct Case {
    file: &'static str,
    version: Version,
    header_at_end: bool,
    block_size: u32,
    blocks: u64,
    expected: Vec<u8>,
}

fn case(
    file: &'static str,
    version: Version,
    header_at_end: bool,
    bs: u32,
    blocks: u64,
    expected: Vec<u8>,
) -> Case {
    Case { file, version, header_at_end, block_size: bs, blocks, expected }
}

/// Every cloop vector with what its README says it holds.
fn cases() -> Vec<Case> {
    let v2_64k = |f| case(f, Version::V2, false, 65536, 5, padded(327680));
    vec![
        v2_64k("v2-cloop-utils/ext2_b65536_L9.cloop"),
        v2_64k("v2-cloop-utils/ext2_b65536_L0.cloop"),
        v2_64k("v2-cloop-utils/ext2_b65536_L1.cloop"),
        v2_64k("v2-cloop-utils/ext2_b65536_L-1_7zip.cloop"),
        v2_64k("v2-cloop-utils/ext2_b65536_best.cloop"),
        case("v2-cloop-utils/ext2_b4096_L9.cloop", Version::V2, false, 4096, 75, raw().to_vec()),
        case("v2-cloop-utils/empty_0blocks.cloop", Version::V2, false, 65536, 0, Vec::new()),
        case("v3-slitaz/ext2_gzip_b4096_dedup.cloop", V3_4, false, 4096, 75, raw().to_vec()),
        case("v3-slitaz/odd300000_gzip_b65536.cloop", V3_4, false, 65536, 5, odd300000()),
        case("v3-slitaz/odd300000_xz_b65536.cloop", V3_4, false, 65536, 5, odd300000()),
        case("v3-slitaz/odd300000_lz4_b65536.cloop", V3_4, false, 65536, 5, odd300000()),
        case("v3-dplasa-alpha/odd300000_zlib.cloop", Version::Dplasa, true, 65536, 5, odd300000()),
        case("v3-dplasa-alpha/odd300000_lz4.cloop", Version::Dplasa, true, 65536, 5, odd300000()),
        case("v3-dplasa-alpha/odd300000_lzo.cloop", Version::Dplasa, true, 65536, 5, odd300000()),
        case("v3-dplasa-alpha/odd300000_none.cloop", Version::Dplasa, true, 65536, 5, odd300000()),
        case(
            "v3-dplasa-alpha/odd300000_size-strategy_xz.cloop",
            Version::Dplasa,
            true,
            65536,
            5,
            odd300000(),
        ),
        case("v4-synthetic/ext2_first_zlib.cloop", Version::V4, false, 65536, 5, padded(327680)),
        case("v4-synthetic/ext2_first_xz.cloop", Version::V4, false, 65536, 5, padded(327680)),
        case("v4-synthetic/ext2_first_mixed.cloop", Version::V4, false, 65536, 5, padded(327680)),
        case("v4-synthetic/ext2_last_zlib.cloop", Version::V4, true, 65536, 5, padded(327680)),
        case("v4-synthetic/ext2_last_mixed.cloop", Version::V4, true, 65536, 5, padded(327680)),
        case("v4-synthetic/ext2_v2_b4096_gap16.cloop", Version::V2, false, 4096, 75, raw().to_vec()),
    ]
}

fn extract_all(image: &Image, threads: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut progress = Progress::new("test", None, true);
    let n = extract(image, &mut out, threads, &mut progress).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, out.len() as u64);
    out
}

#[test]
fn every_vector_extracts_to_the_expected_bytes() {
    for Case { file, version, header_at_end, block_size, blocks, expected } in cases() {
        let path = vectors().join(file);
        let image = Image::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let info = image.info();
        assert_eq!(info.version, version, "{file}");
        assert_eq!(info.header_at_end, header_at_end, "{file}");
        assert_eq!(info.block_size, block_size, "{file}");
        assert_eq!(info.num_blocks, blocks, "{file}");
        assert_eq!(info.size, expected.len() as u64, "{file}");
        assert_eq!(info.file_len, std::fs::metadata(&path).unwrap().len(), "{file}");
        for threads in [1, 3] {
            let out = extract_all(&image, threads);
            assert!(out == expected, "{file} with {threads} threads: extraction differs");
        }
    }
}

#[test]
fn v4_mixed_uses_every_codec_and_slitaz_dedup_has_links() {
    let mixed = Image::open(&vectors().join("v4-synthetic/ext2_first_mixed.cloop")).unwrap();
    let kinds: Vec<_> = (0..5).map(|i| mixed.block_codec(i).unwrap()).collect();
    let want = [Codec::Zlib, Codec::Xz, Codec::Stored, Codec::Lz4, Codec::Lzo].map(Kind::Data);
    assert_eq!(kinds, want);
    let dedup = Image::open(&vectors().join("v3-slitaz/ext2_gzip_b4096_dedup.cloop")).unwrap();
    let links = (0..75).filter(|&i| matches!(dedup.block_codec(i), Some(Kind::Link(_)))).count();
    assert_eq!(links, 56, "README: 56 dedup links");
    let stored = (0..75).filter(|&i| dedup.block_codec(i) == Some(Kind::Data(Codec::Stored))).count();
    assert!(stored > 0, "README: the dedup vector contains stored blocks");
}

#[test]
fn header_plus_data_concatenation_is_the_l9_image() {
    let dir = vectors().join("v2-cloop-utils");
    let mut joined = std::fs::read(dir.join("ext2_b65536_S-header.bin")).unwrap();
    joined.extend(std::fs::read(dir.join("ext2_b65536_S-data.bin")).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("joined.cloop");
    std::fs::write(&path, &joined).unwrap();
    let image = Image::open(&path).unwrap();
    assert_eq!(image.info().version, Version::V2);
    assert!(extract_all(&image, 2) == padded(327680));
}

#[test]
fn nonconformant_slitaz_v4_is_a_clean_error() {
    let path = vectors().join("nonconformant/slitaz_v4flag_odd300000_gzip.cloop");
    let err = match Image::open(&path) {
        Ok(image) => {
            // If the index happened to pass, reading must fail cleanly.
            let mut out = Vec::new();
            let mut progress = Progress::new("t", None, true);
            extract(&image, &mut out, 2, &mut progress)
                .expect_err("a non-conformant image must not extract")
                .to_string()
        }
        Err(e) => e.to_string(),
    };
    assert!(err.contains("slitaz_v4flag_odd300000_gzip.cloop"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn read_at_random_ranges_from_several_threads() {
    for Case { file, block_size: bs, expected, .. } in cases() {
        let image = Image::open(&vectors().join(file)).unwrap();
        let size = expected.len() as u64;
        std::thread::scope(|scope| {
            for t in 0..3u64 {
                let (image, expected) = (&image, &expected);
                scope.spawn(move || {
                    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                    for _ in 0..150 {
                        let offset = rng.below(size + 1);
                        let max = (size - offset).min(3 * u64::from(bs));
                        let len = rng.below(max + 1);
                        let mut buf = vec![0xAA; len as usize];
                        image.read_at(&mut buf, offset).unwrap_or_else(|e| panic!("{file}: {e}"));
                        let want = &expected[offset as usize..(offset + len) as usize];
                        assert!(buf == want, "{file}: read_at({offset}, {len}) differs");
                    }
                });
            }
        });
        if size > 0 {
            let mut one = [0u8; 1];
            assert!(image.read_at(&mut one, size).is_err(), "{file}: read past the end must fail");
        }
    }
}

#[test]
fn read_block_reports_short_last_block_and_rejects_bad_numbers() {
    let image = Image::open(&vectors().join("v3-slitaz/odd300000_xz_b65536.cloop")).unwrap();
    let mut out = vec![0u8; 65536];
    let mut dec = Decoder::new();
    assert_eq!(image.read_block(0, &mut dec, &mut out).unwrap(), 65536);
    assert_eq!(image.read_block(4, &mut dec, &mut out).unwrap(), 300000 - 4 * 65536);
    assert_eq!(&out[..300000 - 4 * 65536], &raw()[4 * 65536..300000]);
    let err = image.read_block(5, &mut dec, &mut out).unwrap_err().to_string();
    assert!(err.contains("odd300000_xz_b65536.cloop") && err.contains("block 5"), "{err}");
    let mut small = vec![0u8; 100];
    assert!(image.read_block(0, &mut dec, &mut small).is_err());
}

/// QEMU's cloop driver (V2 only) must give the same bytes as we do.
#[test]
fn qemu_img_agrees_on_v2_vectors() {
    let tmp = tempfile::tempdir().unwrap();
    for Case { file, version, .. } in cases() {
        if version != Version::V2 || file.contains("empty") {
            continue;
        }
        let out = tmp.path().join("qemu.raw");
        let status = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "cloop", "-O", "raw"])
            .arg(vectors().join(file))
            .arg(&out)
            .status()
            .expect("qemu-img is needed for this test: apt-get install qemu-utils");
        assert!(status.success(), "qemu-img failed on {file}");
        let image = Image::open(&vectors().join(file)).unwrap();
        assert!(std::fs::read(&out).unwrap() == extract_all(&image, 2), "{file}: qemu-img disagrees");
    }
}
