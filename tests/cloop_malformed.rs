//! Hostile and unusual cloop images: truncation at every structural
//! boundary, flipped bytes, absurd counts and sizes, broken offsets and
//! links; plus synthetic images of the versions no sample exists for (0.68,
//! 1.0, Accelerated KNOPPIX, V4 header-last with links, FreeBSD uzip with
//! dedup, SliTaz's old and 64-bit layouts). Every failure must be an `Err`
//! whose one-line message names the file; nothing may panic, hang or
//! allocate according to a claimed size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloopbox::blockdev::ReadAt;
use cloopbox::cloop::codec::{encode, Codec, Decoder, EncodeOptions};
use cloopbox::cloop::error::Error;
use cloopbox::cloop::reader::{Image, Kind, Version};

mod common;
use common::{raw, vectors, XorShift};

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(vectors().join(name)).unwrap()
}

/// Writes `bytes` as `name` in a fresh temporary directory.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn check_message(path: &Path, err: &Error) {
    let msg = err.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "error does not name the file: {msg}");
    assert_eq!(msg.lines().count(), 1, "error is not one line: {msg}");
}

/// Opens and decodes every block (and a few `read_at`s); returns the
/// decoded image or the first error. Checks every error message on the way.
fn read_all(path: &Path) -> Result<Vec<u8>, Error> {
    let image = Image::open(path).inspect_err(|e| check_message(path, e))?;
    let info = image.info().clone();
    let mut out = vec![0u8; info.block_size as usize];
    let mut dec = Decoder::new();
    let mut data = Vec::new();
    let mut first_error = None;
    for block in 0..info.num_blocks {
        match image.read_block(block, &mut dec, &mut out) {
            Ok(valid) => data.extend_from_slice(&out[..valid]),
            Err(e) => {
                check_message(path, &e);
                first_error.get_or_insert(e);
            }
        }
    }
    let mut buf = vec![0u8; (info.size.min(1 << 20)) as usize];
    if let Err(e) = image.read_at(&mut buf, 0) {
        assert!(e.to_string().contains(&*path.file_name().unwrap().to_string_lossy()), "{e}");
    }
    match first_error {
        Some(e) => Err(e),
        None => {
            data.truncate(info.size as usize);
            Ok(data)
        }
    }
}

fn expect_err(path: &Path, what: &str) -> Error {
    match read_all(path) {
        Ok(_) => panic!("{}: {what}: expected an error", path.display()),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- truncation

/// Structural boundaries of a vector: header, index, each block, tail.
fn boundaries(bytes: &[u8], path: &Path) -> Vec<usize> {
    let image = Image::open(path).unwrap();
    let info = image.info();
    let mut cuts = vec![0, 1, 8, 11, 12, 127, 128, 132, 135, 136, 137, 143, 144];
    let index = info.index_offset as usize;
    let index_end = index + info.index_len as usize;
    cuts.extend([index, index + 1, index + 4, index + 8, (index + index_end) / 2, index_end - 1, index_end]);
    for block in 0..info.num_blocks {
        let b = image.block_info(block).unwrap();
        let (start, len) = (b.offset as usize, b.compressed_len as usize);
        cuts.extend([start, start + 1, start + len / 2, (start + len).saturating_sub(1), start + len]);
    }
    let len = bytes.len();
    cuts.extend((1..=24).map(|k| len.saturating_sub(k)));
    cuts.retain(|&c| c < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

const TRUNCATION_VECTORS: &[&str] = &[
    "v2-cloop-utils/ext2_b65536_L9.cloop",
    "v2-cloop-utils/ext2_b4096_L9.cloop",
    "v2-cloop-utils/empty_0blocks.cloop",
    "v3-slitaz/ext2_gzip_b4096_dedup.cloop",
    "v3-slitaz/odd300000_xz_b65536.cloop",
    "v3-dplasa-alpha/odd300000_zlib.cloop",
    "v3-dplasa-alpha/odd300000_none.cloop",
    "v4-synthetic/ext2_first_mixed.cloop",
    "v4-synthetic/ext2_last_mixed.cloop",
    "v4-synthetic/ext2_v2_b4096_gap16.cloop",
];

#[test]
fn truncation_at_every_boundary_and_many_lengths_is_an_error() {
    let scratch = Scratch::new();
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for name in TRUNCATION_VECTORS {
        let bytes = vector(name);
        let base = Path::new(name).file_name().unwrap().to_string_lossy().into_owned();
        let mut cuts = boundaries(&bytes, &vectors().join(name));
        cuts.extend((0..40).map(|_| rng.below(bytes.len() as u64) as usize));
        for cut in cuts {
            let path = scratch.write(&format!("cut{cut}-{base}"), &bytes[..cut]);
            expect_err(&path, &format!("{name} cut at {cut}"));
            std::fs::remove_file(&path).unwrap();
        }
    }
}

// ---------------------------------------------------------------- flips

#[test]
fn every_header_and_index_byte_flipped_never_panics() {
    let scratch = Scratch::new();
    for name in TRUNCATION_VECTORS {
        let bytes = vector(name);
        let image = Image::open(&vectors().join(name)).unwrap();
        let (at, len) = (image.info().index_offset as usize, image.info().index_len as usize);
        let header_at = if image.info().header_at_end { bytes.len().saturating_sub(136) } else { 0 };
        // The preamble text between the signature and the sizes is read by nobody.
        let header = (0..16).chain(0x80..0x88).map(|p| header_at + p).filter(|&p| p < bytes.len());
        let positions: Vec<usize> = header.chain(at..at + len).collect();
        for pos in positions {
            for mask in [0xff, 0x01, 0x80] {
                let mut damaged = bytes.clone();
                damaged[pos] ^= mask;
                let path = scratch.write("flip.cloop", &damaged);
                let _ = read_all(&path);
            }
        }
    }
}

#[test]
fn flipped_bytes_in_zlib_blocks_are_detected() {
    // zlib carries an Adler-32, so a damaged V2 block never reads back wrong.
    let scratch = Scratch::new();
    let name = "v2-cloop-utils/ext2_b4096_L9.cloop";
    let bytes = vector(name);
    let image = Image::open(&vectors().join(name)).unwrap();
    let mut rng = XorShift(42);
    let mut detected = 0;
    for _ in 0..300 {
        let block = rng.below(75);
        let b = image.block_info(block).unwrap();
        let pos = b.offset + rng.below(b.compressed_len.into());
        let mut damaged = bytes.clone();
        damaged[pos as usize] ^= 1 << rng.below(8);
        let path = scratch.write("zflip.cloop", &damaged);
        match read_all(&path) {
            // Only the padding bits after the last deflate code are free to change.
            Ok(data) => assert!(data == raw(), "bit flip at {pos} read back silently wrong"),
            Err(err) => {
                assert_eq!(err.block(), Some(block), "{err}");
                assert!(err.to_string().contains(&format!("block {block} at offset {}", b.offset)), "{err}");
                detected += 1;
            }
        }
    }
    // Python's zlib agrees: ~7% of single-bit flips land in ignored bits
    // (the 26-byte all-zero blocks have several).
    assert!(detected > 240, "only {detected} of 300 bit flips were detected");
}

// ---------------------------------------------------------------- counts and sizes

fn set_be32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_be64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn giant_block_counts_fail_fast_without_allocating() {
    let scratch = Scratch::new();
    // V2 header first.
    let mut v2 = vector("v2-cloop-utils/ext2_b65536_L9.cloop");
    set_be32(&mut v2, 0x84, 0xFFFF_FFF0);
    let err = expect_err(&scratch.write("giant-v2.cloop", &v2), "giant V2");
    assert!(matches!(err, Error::IndexPastEof { .. }), "{err}");
    // V4 header last.
    let mut v4 = vector("v4-synthetic/ext2_last_zlib.cloop");
    let n_at = v4.len() - 4;
    set_be32(&mut v4, n_at, 0xFFFF_FFF0);
    let err = expect_err(&scratch.write("giant-v4.cloop", &v4), "giant V4");
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    // SliTaz tail claiming billions of entries in a 26-byte table.
    let mut v3 = vector("v3-slitaz/odd300000_xz_b65536.cloop");
    let n_at = v3.len() - 4;
    set_be32(&mut v3, n_at, 0xFFFF_FFF0);
    let err = expect_err(&scratch.write("giant-v3.cloop", &v3), "giant V3");
    assert!(matches!(err, Error::TooManyBlocks { offset, .. } if offset == n_at as u64), "{err}");
    set_be32(&mut v3, n_at, 1 << 20);
    let err = expect_err(&scratch.write("big-v3.cloop", &v3), "big V3");
    assert!(err.to_string().contains("cannot hold"), "{err}");
    // dplasa index claiming billions of blocks.
    let mut dp = vector("v3-dplasa-alpha/odd300000_zlib.cloop");
    set_be32(&mut dp, 0x6000, 0xFFFF_FFF0);
    let err = expect_err(&scratch.write("giant-dp.cloop", &dp), "giant dplasa");
    assert!(matches!(err, Error::IndexPastEof { .. }), "{err}");
}

#[test]
fn bad_block_sizes_are_rejected() {
    let scratch = Scratch::new();
    for (bs, problem) in [(0u32, "zero"), (511, "not a multiple of 512"), (1 << 31, "larger than the 64 MiB")]
    {
        let mut v2 = vector("v2-cloop-utils/ext2_b65536_L9.cloop");
        set_be32(&mut v2, 0x80, bs);
        let path = scratch.write("bs.cloop", &v2);
        let err = expect_err(&path, "bad block size");
        assert!(matches!(err, Error::BlockSize { offset: 128, .. }), "{err}");
        assert!(err.to_string().contains(&format!("block size {bs} at offset 128 is {problem}")), "{err}");
    }
}

#[test]
fn offsets_past_eof_and_out_of_order_are_rejected() {
    let scratch = Scratch::new();
    let v2 = vector("v2-cloop-utils/ext2_b65536_L9.cloop");
    let entry = |i: usize| 136 + 8 * i;
    let mut past = v2.clone();
    set_be64(&mut past, entry(5), v2.len() as u64 + 1);
    let err = expect_err(&scratch.write("past.cloop", &past), "final offset past EOF");
    assert!(matches!(err, Error::BlockPastEof { block: 4, .. }), "{err}");
    let mut huge = v2.clone();
    set_be64(&mut huge, entry(2), u64::MAX - 7);
    let err = expect_err(&scratch.write("huge.cloop", &huge), "huge offset");
    assert!(matches!(err, Error::BlockPastEof { block: 1, offset: 14787, .. }), "{err}");
    let mut swapped = v2.clone();
    let (a, b) = (v2[entry(1)..entry(2)].to_vec(), v2[entry(2)..entry(3)].to_vec());
    swapped[entry(1)..entry(2)].copy_from_slice(&b);
    swapped[entry(2)..entry(3)].copy_from_slice(&a);
    let err = expect_err(&scratch.write("swapped.cloop", &swapped), "swapped offsets");
    assert!(matches!(err, Error::OffsetsNotMonotonic { block: 1, prev: 22795, next: 14787, .. }), "{err}");
    // In the level-0 image (65552-byte blocks), make block 0 swallow block 1.
    let mut large = vector("v2-cloop-utils/ext2_b65536_L0.cloop");
    let off2 = large[entry(2)..entry(3)].to_vec();
    large[entry(1)..entry(2)].copy_from_slice(&off2);
    let err = expect_err(&scratch.write("large.cloop", &large), "oversized block");
    assert!(matches!(err, Error::BlockTooLarge { block: 0, .. }), "{err}");
}

// ---------------------------------------------------------------- synthetic images

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn header(preamble: &str, bs: u32, n: u32) -> Vec<u8> {
    let mut h = preamble.as_bytes().to_vec();
    h.resize(128, 0);
    h.extend(bs.to_be_bytes());
    h.extend(n.to_be_bytes());
    h
}

const V2_PREAMBLE: &str =
    "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
const V4_PREAMBLE: &str =
    "#!/bin/sh\n#V4.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

/// The raw image cut into `bs`-byte blocks, the last one zero-padded.
fn chunks(data: &[u8], bs: usize) -> Vec<Vec<u8>> {
    data.chunks(bs)
        .map(|c| {
            let mut v = c.to_vec();
            v.resize(bs, 0);
            v
        })
        .collect()
}

fn padded(data: &[u8], bs: usize) -> Vec<u8> {
    chunks(data, bs).concat()
}

/// A header-first image: header, (n+1) index entries written by `entry`
/// from absolute offsets, then the blocks.
fn table_image(
    preamble: &str,
    bs: u32,
    blocks: &[Vec<u8>],
    width: usize,
    entry: fn(u64) -> Vec<u8>,
) -> Vec<u8> {
    let n = blocks.len();
    let mut out = header(preamble, bs, n as u32);
    let mut pos = (136 + width * (n + 1)) as u64;
    for b in blocks {
        out.extend(entry(pos));
        pos += b.len() as u64;
    }
    out.extend(entry(pos));
    for b in blocks {
        out.extend(b);
    }
    out
}

#[test]
fn synthetic_v0_68_and_v1_read_correctly() {
    let scratch = Scratch::new();
    let data = &raw()[..100_000];
    let blocks: Vec<_> = chunks(data, 8192).iter().map(|c| zlib(c)).collect();
    let v068 = table_image("#!/bin/sh\ninsmod cloop.o file=$0\n", 8192, &blocks, 4, |o| {
        (o as u32).to_be_bytes().to_vec()
    });
    let v1 = table_image("#!/bin/sh\n#V1.0 Format\n", 8192, &blocks, 8, |o| o.to_le_bytes().to_vec());
    for (name, bytes, version) in [("v068.cloop", v068, Version::V0_68), ("v1.cloop", v1, Version::V1)] {
        let path = scratch.write(name, &bytes);
        assert_eq!(Image::open(&path).unwrap().info().version, version, "{name}");
        assert!(read_all(&path).unwrap() == padded(data, 8192), "{name}");
    }
}

#[test]
fn synthetic_accelerated_knoppix_with_blocks_out_of_order() {
    let scratch = Scratch::new();
    let data = &raw()[..50_000];
    let blocks: Vec<_> = chunks(data, 4096).iter().map(|c| zlib(c)).collect();
    let n = blocks.len();
    let mut out = header("#!/bin/sh\n#KNOPPIX accelerated\n", 4096, n as u32);
    // Blocks are stored in reverse order; the records say where each is.
    let mut pos = 136 + 16 * n as u64;
    let mut records = vec![Vec::new(); n];
    for i in (0..n).rev() {
        let mut r = pos.to_be_bytes().to_vec();
        r.extend((blocks[i].len() as u32).to_be_bytes());
        r.extend(0u32.to_be_bytes());
        records[i] = r;
        pos += blocks[i].len() as u64;
    }
    out.extend(records.concat());
    for b in blocks.iter().rev() {
        out.extend(b);
    }
    let path = scratch.write("ak.cloop", &out);
    assert_eq!(Image::open(&path).unwrap().info().version, Version::AcceleratedKnoppix);
    assert!(read_all(&path).unwrap() == padded(data, 4096));
}

fn v4_entry(codec: u64, offset: u64) -> [u8; 8] {
    ((codec << 60) | offset).to_be_bytes()
}

/// V4 header last with data at offset 16 (the kernel refuses offset 0),
/// a stored block, an xz block and links (SliTaz's nibble 15).
fn v4_last_with_links() -> (Vec<u8>, Vec<u8>) {
    let bs = 4096usize;
    let data = padded(&raw()[..40_000], bs);
    let plain = chunks(&data, bs);
    let n = plain.len() + 2;
    let mut expected = data.clone();
    expected.extend(&plain[1]);
    expected.extend(&plain[3]);
    let mut out = vec![0u8; 16];
    let mut index = Vec::new();
    for (i, c) in plain.iter().enumerate() {
        let (codec, packed) = match i % 3 {
            0 => (0, zlib(c)),
            1 => (1, c.clone()),
            _ => (2, encode(Codec::Xz, &EncodeOptions::default(), c).unwrap()),
        };
        index.extend(v4_entry(codec, out.len() as u64));
        out.extend(packed);
    }
    index.extend(v4_entry(15, 1));
    index.extend(v4_entry(15, 3));
    index.extend(v4_entry(0, out.len() as u64));
    out.extend(index);
    out.extend(header(V4_PREAMBLE, bs as u32, n as u32));
    (out, expected)
}

#[test]
fn synthetic_v4_header_last_with_links_reads_correctly() {
    let scratch = Scratch::new();
    let (bytes, expected) = v4_last_with_links();
    let path = scratch.write("v4links.cloop", &bytes);
    let image = Image::open(&path).unwrap();
    assert_eq!(image.info().version, Version::V4);
    assert!(image.info().header_at_end);
    let n = image.info().num_blocks;
    assert_eq!(image.block_codec(n - 2), Some(Kind::Link(1)));
    assert_eq!(image.block_codec(2), Some(Kind::Data(Codec::Xz)));
    assert!(read_all(&path).unwrap() == expected);
}

#[test]
fn bad_links_and_unknown_codecs() {
    let scratch = Scratch::new();
    let (bytes, _) = v4_last_with_links();
    let index_at = |bytes: &[u8]| {
        let n = u32::from_be_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        (bytes.len() - 136 - 8 * (n + 1), n)
    };
    let (at, n) = index_at(&bytes);
    // A link to itself, and one to a later block.
    for target in [n as u64 - 1, n as u64] {
        let mut b = bytes.clone();
        b[at + 8 * (n - 1)..at + 8 * n].copy_from_slice(&v4_entry(15, target));
        let err = expect_err(&scratch.write("badlink.cloop", &b), "bad link");
        assert!(matches!(err, Error::BadLink { .. }), "{err}");
    }
    // Compressor id 7 on block 0: the image opens, block 0 fails by name.
    let mut b = bytes.clone();
    let offset = u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    b[at..at + 8].copy_from_slice(&v4_entry(7, offset));
    let path = scratch.write("unknown.cloop", &b);
    let image = Image::open(&path).unwrap();
    assert_eq!(image.block_codec(0), Some(Kind::Unknown(7)));
    let err = expect_err(&path, "unknown codec");
    assert!(matches!(err, Error::UnknownCodec { block: 0, id: 7, .. }), "{err}");
    assert!(err.to_string().contains("unknown compressor id 7"), "{err}");
}

#[test]
fn zlib_block_inflating_past_the_block_size_is_an_error() {
    let scratch = Scratch::new();
    let big = zlib(&[0x55; 1024]);
    let blocks = vec![zlib(&[1; 512]), big];
    let bytes = table_image(V2_PREAMBLE, 512, &blocks, 8, |o| o.to_be_bytes().to_vec());
    let err = expect_err(&scratch.write("long.cloop", &bytes), "long block");
    assert!(matches!(err, Error::Decode { block: 1, .. }), "{err}");
    assert!(err.to_string().contains("more than the expected 512 bytes"), "{err}");
}

#[test]
fn synthetic_uzip_dedup_and_zero_blocks() {
    let scratch = Scratch::new();
    let bs = 4096usize;
    let a = raw()[..bs].to_vec();
    let b = raw()[bs..2 * bs].to_vec();
    let zero = vec![0u8; bs];
    // Blocks: a, b, a (back-reference), zero (nil), b (back-reference), a.
    let (za, zb) = (zlib(&a), zlib(&b));
    let n = 6;
    let data_at = 136 + 8 * (n + 1) as u64;
    let (off_a, off_b) = (data_at, data_at + za.len() as u64);
    let end = off_b + zb.len() as u64;
    let offsets = [off_a, off_b, off_a, end, off_b, off_a, end];
    let mut bytes = header("#!/bin/sh\n#v3.0 Format\n", bs as u32, n as u32);
    for o in offsets {
        bytes.extend(o.to_be_bytes());
    }
    bytes.extend(&za);
    bytes.extend(&zb);
    let path = scratch.write("uzip.cloop", &bytes);
    let image = Image::open(&path).unwrap();
    assert_eq!(image.info().version, Version::Uzip { codec: Codec::Zlib, dedup: true });
    assert_eq!(image.block_codec(2), Some(Kind::Link(0)));
    assert_eq!(image.block_codec(4), Some(Kind::Link(1)));
    assert_eq!(image.block_info(3).unwrap().compressed_len, 0);
    let expected = [&a, &b, &a, &zero, &b, &a].map(|v| v.as_slice()).concat();
    assert!(read_all(&path).unwrap() == expected);
    // A back-reference to an offset where no block starts.
    let mut bad = bytes.clone();
    set_be64(&mut bad, 136 + 8 * 2, off_a + 1);
    let err = expect_err(&scratch.write("uzipbad.cloop", &bad), "dangling back-reference");
    assert!(err.to_string().contains("block 2 refers back"), "{err}");
}

#[test]
fn synthetic_uzip_xz() {
    let scratch = Scratch::new();
    let data = &raw()[..20_000];
    let blocks: Vec<_> =
        chunks(data, 8192).iter().map(|c| encode(Codec::Xz, &EncodeOptions::default(), c).unwrap()).collect();
    let bytes = table_image("#!/bin/sh\n#L3.0\n", 8192, &blocks, 8, |o| o.to_be_bytes().to_vec());
    let path = scratch.write("uzipxz.cloop", &bytes);
    assert_eq!(Image::open(&path).unwrap().info().version, Version::Uzip { codec: Codec::Xz, dedup: false });
    assert!(read_all(&path).unwrap() == padded(data, 8192));
}

/// SliTaz layout with a custom table encoding and tail.
fn slitaz(blocks: &[Vec<u8>], bs: u32, table: Vec<u8>, tail: Vec<u8>) -> Vec<u8> {
    let mut out = header("#!/bin/sh\n#V3.0 Format\n", bs, 0xFFFF_FFFF);
    for b in blocks {
        out.extend(b);
    }
    out.extend(table);
    out.extend(tail);
    out
}

#[test]
fn synthetic_slitaz_old_and_64bit_layouts() {
    let scratch = Scratch::new();
    let data = &raw()[..30_000];
    let bs = 8192u32;
    let blocks: Vec<_> = chunks(data, bs as usize).iter().map(|c| zlib(c)).collect();
    let sizes: Vec<u32> = blocks.iter().map(|b| b.len() as u32).collect();
    let n = sizes.len() as u32;
    let be4: Vec<u8> = sizes.iter().flat_map(|s| s.to_be_bytes()).collect();
    let be8: Vec<u8> = sizes.iter().flat_map(|s| [s.to_be_bytes(), [0; 4]].concat()).collect();
    let tail8 = |esz: u32| [esz.to_be_bytes(), n.to_be_bytes()].concat();
    let old4 = slitaz(&blocks, bs, be4.clone(), tail8(4));
    let old8 = slitaz(&blocks, bs, be8.clone(), tail8(8));
    let packed8 = zlib(&be8);
    let tail12 = [(packed8.len() as u32).to_be_bytes(), 8u32.to_be_bytes(), n.to_be_bytes()].concat();
    let bug64 = slitaz(&blocks, bs, packed8, tail12);
    for (name, bytes, esz, compressed) in
        [("old4.cloop", old4, 4, false), ("old8.cloop", old8, 8, false), ("bug64.cloop", bug64, 8, true)]
    {
        let path = scratch.write(name, &bytes);
        let version = Image::open(&path).unwrap_or_else(|e| panic!("{e}")).info().version;
        assert_eq!(
            version,
            Version::V3SliTaz { entry_size: esz, compressed_index: compressed, truncated: false }
        );
        assert!(read_all(&path).unwrap() == padded(data, bs as usize), "{name}");
    }
}

#[test]
fn slitaz_table_that_does_not_match_its_tail_is_an_error() {
    let scratch = Scratch::new();
    let mut v3 = vector("v3-slitaz/odd300000_gzip_b65536.cloop");
    let n_at = v3.len() - 4;
    set_be32(&mut v3, n_at, 4); // the table holds 5 entries
    let err = expect_err(&scratch.write("fewer.cloop", &v3), "entry count mismatch");
    assert!(err.to_string().contains("compressed SliTaz index"), "{err}");
    set_be32(&mut v3, n_at, 6);
    let err = expect_err(&scratch.write("more.cloop", &v3), "entry count mismatch");
    assert!(err.to_string().contains("decodes to 20 bytes, expected 24"), "{err}");
}

// ---------------------------------------------------------------- fuzz-style

/// A few thousand random mutations of several vectors through open and
/// full decoding, bounded in time: catches panics in CI without a fuzzer.
#[test]
fn random_mutations_never_panic() {
    let scratch = Scratch::new();
    let seeds: Vec<Vec<u8>> = TRUNCATION_VECTORS
        .iter()
        .map(|n| vector(n))
        .chain(["v3-slitaz/odd300000_lz4_b65536.cloop", "v3-dplasa-alpha/odd300000_lzo.cloop"].map(vector))
        .chain([v4_last_with_links().0])
        .collect();
    let interesting: [u64; 9] = [0, 1, 0x8C, 136, 0x7FFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFF0, 1 << 31, u64::MAX];
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3000 && start.elapsed() < Duration::from_secs(8) {
        let seed = &seeds[rng.below(seeds.len() as u64) as usize];
        let mut bytes = seed.clone();
        for _ in 0..1 + rng.below(4) {
            let len = bytes.len() as u64;
            match rng.below(5) {
                0 => {
                    let at = rng.below(len) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 => {
                    // An interesting value over a 4- or 8-byte field near a structure.
                    let hot = [
                        0x80,
                        0x84,
                        136,
                        len.saturating_sub(20),
                        len.saturating_sub(12),
                        len.saturating_sub(8),
                    ];
                    let at = (hot[rng.below(hot.len() as u64) as usize] + rng.below(16)) as usize;
                    let v = interesting[rng.below(interesting.len() as u64) as usize];
                    let width = if rng.below(2) == 0 { 4 } else { 8 };
                    if at + width <= bytes.len() {
                        bytes[at..at + width].copy_from_slice(&v.to_be_bytes()[8 - width..]);
                    }
                }
                2 => bytes.truncate(rng.below(len + 1) as usize),
                3 => {
                    let at = rng.below(len + 1) as usize;
                    let extra: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, extra);
                }
                _ => {
                    let at = rng.below(len) as usize;
                    let end = (at + 1 + rng.below(64) as usize).min(bytes.len());
                    bytes.drain(at..end);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        let path = scratch.write("mutant.cloop", &bytes);
        let _ = read_all(&path);
        runs += 1;
    }
    assert!(runs >= 500, "only {runs} mutations ran in the time budget");
}
