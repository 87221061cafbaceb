//! Writer → reader round trips, property-based: random and structured data
//! (zero runs, repeated patterns, random bytes), every writable codec, block
//! sizes from 512 to 1 MiB, lengths that are not a multiple of the block
//! size, empty input, every output plan and thread counts. The image must
//! read back through `cloopbox::cloop::reader::Image` as the input
//! zero-padded to whole blocks, and its bytes must not depend on the thread
//! count or the plan.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use cloopbox::blockdev::ReadAt;
use cloopbox::cloop::codec::{Codec, EncodeOptions, ZlibEffort};
use cloopbox::cloop::reader::{Image, Version};
use cloopbox::cloop::writer::{self, Input, Options, Request, Silent, Strategy as Plan, Summary};
use proptest::prelude::*;

/// A piece of test input.
#[derive(Clone, Debug)]
enum Segment {
    Zeros(usize),
    Fill(u8, usize),
    Pattern(Vec<u8>, usize),
    Random(Vec<u8>),
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        (0..200_000usize).prop_map(Segment::Zeros),
        (any::<u8>(), 0..100_000usize).prop_map(|(b, n)| Segment::Fill(b, n)),
        (prop::collection::vec(any::<u8>(), 1..24), 0..150_000usize)
            .prop_map(|(p, n)| Segment::Pattern(p, n)),
        prop::collection::vec(any::<u8>(), 0..40_000).prop_map(Segment::Random),
    ]
}

fn build(segments: &[Segment]) -> Vec<u8> {
    let mut data = Vec::new();
    for s in segments {
        match s {
            Segment::Zeros(n) => data.resize(data.len() + n, 0),
            Segment::Fill(b, n) => data.resize(data.len() + n, *b),
            Segment::Pattern(p, n) => data.extend(p.iter().cycle().take(*n)),
            Segment::Random(r) => data.extend_from_slice(r),
        }
    }
    data
}

/// How the image is written.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Size known: header, reserved index, data, index.
    Direct,
    /// Size unknown: data first, then shifted up.
    Reuse,
    Memory,
    Spool,
    /// `-S`: header file + data file, read as their concatenation.
    Split,
}

fn way() -> impl Strategy<Value = Way> {
    prop_oneof![
        3 => Just(Way::Direct),
        1 => Just(Way::Reuse),
        1 => Just(Way::Memory),
        1 => Just(Way::Spool),
        1 => Just(Way::Split),
    ]
}

fn codec() -> impl Strategy<Value = (Codec, ZlibEffort)> {
    prop_oneof![
        2 => (0..=9u32).prop_map(|l| (Codec::Zlib, ZlibEffort::Zlib(l))),
        2 => (1..=12u32).prop_map(|l| (Codec::Zlib, ZlibEffort::Libdeflate(l))),
        1 => Just((Codec::Xz, ZlibEffort::Zlib(9))),
        1 => Just((Codec::Lz4, ZlibEffort::Zlib(9))),
        1 => Just((Codec::Zstd, ZlibEffort::Zlib(9))),
        1 => Just((Codec::Stored, ZlibEffort::Zlib(9))),
    ]
}

/// Mostly small block sizes, so that most inputs span several blocks.
fn block_size() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => (1..=16u32).prop_map(|k| k * 512),
        2 => (17..=256u32).prop_map(|k| k * 512),
        1 => (257..=2048u32).prop_map(|k| k * 512),
    ]
}

struct Written {
    /// The image as one file (split outputs concatenated).
    path: PathBuf,
    summary: Summary,
}

fn write(dir: &Path, data: &[u8], options: Options, way: Way, tag: &str) -> Written {
    let out = dir.join(format!("{tag}.cloop"));
    let size = if matches!(way, Way::Reuse) { None } else { Some(data.len() as u64) };
    let input =
        Input::Reader { name: "generated".into(), reader: Box::new(Cursor::new(data.to_vec())), size };
    let (strategy, header_file) = match way {
        Way::Direct | Way::Reuse => (Plan::Auto, None),
        Way::Memory => (Plan::Memory, None),
        Way::Spool => (Plan::SpoolFile(dir.join(format!("{tag}.spool"))), None),
        Way::Split => (Plan::Auto, Some(dir.join(format!("{tag}.head")))),
    };
    let request =
        Request { input, output: Some(out.clone()), expected_size: None, strategy, header_file, options };
    let summary = writer::create(request, &mut Silent).expect("writing the image");
    assert!(!dir.join(format!("{tag}.spool")).exists(), "the spool file is removed");
    if let Way::Split = way {
        let mut whole = std::fs::read(dir.join(format!("{tag}.head"))).unwrap();
        whole.extend(std::fs::read(&out).unwrap());
        std::fs::write(&out, whole).unwrap();
    }
    Written { path: out, summary }
}

fn check_reads_back(w: &Written, data: &[u8], options: &Options) {
    let bs = options.block_size as u64;
    let blocks = (data.len() as u64).div_ceil(bs);
    let file_len = std::fs::metadata(&w.path).unwrap().len();
    assert_eq!(w.summary.image_bytes, file_len);
    assert_eq!(w.summary.blocks, blocks);
    assert_eq!(w.summary.input_bytes, data.len() as u64);
    let image = Image::open(&w.path).unwrap_or_else(|e| panic!("{e}"));
    let info = image.info();
    let version = if options.codec == Codec::Zlib { Version::V2 } else { Version::V4 };
    assert_eq!(info.version, version);
    assert_eq!((info.block_size as u64, info.num_blocks), (bs, blocks));
    assert_eq!(info.size, blocks * bs);
    let mut back = vec![0xa5u8; info.size as usize];
    image.read_at(&mut back, 0).unwrap_or_else(|e| panic!("{e}"));
    assert!(back[..data.len()] == *data, "data differs");
    assert!(back[data.len()..].iter().all(|&b| b == 0), "padding is not zero");
}

fn options(block_size: u32, (codec, zlib): (Codec, ZlibEffort), threads: usize) -> Options {
    Options {
        block_size,
        codec,
        encode: EncodeOptions { zlib, xz_preset: 1, zstd_level: 3, lz4_level: 9 },
        threads,
        in_flight: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn images_read_back_as_the_zero_padded_input(
        segments in prop::collection::vec(segment(), 0..6),
        bs in block_size(),
        codec in codec(),
        way in way(),
        threads in 1..5usize,
    ) {
        let data = build(&segments);
        let dir = tempfile::tempdir().unwrap();
        let opts = options(bs, codec, threads);
        let w = write(dir.path(), &data, opts, way, "a");
        check_reads_back(&w, &data, &opts);
        // Neither the plan nor the thread count changes a byte.
        let reference = write(dir.path(), &data, options(bs, codec, 1), Way::Direct, "b");
        prop_assert!(std::fs::read(&w.path).unwrap() == std::fs::read(&reference.path).unwrap());
    }
}

#[test]
fn empty_input_gives_a_zero_block_image_for_every_codec_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    for codec in [Codec::Zlib, Codec::Xz, Codec::Lz4, Codec::Zstd, Codec::Stored] {
        for (i, way) in [Way::Direct, Way::Reuse, Way::Memory, Way::Spool, Way::Split].into_iter().enumerate()
        {
            let opts = options(65536, (codec, ZlibEffort::Zlib(9)), 2);
            let w = write(dir.path(), &[], opts, way, &format!("{codec}{i}"));
            assert_eq!(std::fs::metadata(&w.path).unwrap().len(), 144, "{codec} {way:?}");
            check_reads_back(&w, &[], &opts);
        }
    }
}

#[test]
fn zopfli_and_best_read_back_and_are_not_larger_than_level_9() {
    let mut data = build(&[
        Segment::Pattern(b"zopfli tries harder ".to_vec(), 50_000),
        Segment::Zeros(20_000),
        Segment::Random((0..5000u32).map(|i| (i * 7919 % 251) as u8).collect()),
    ]);
    data.truncate(70_001);
    let dir = tempfile::tempdir().unwrap();
    let level9 =
        write(dir.path(), &data, options(16384, (Codec::Zlib, ZlibEffort::Zlib(9)), 2), Way::Direct, "l9");
    for (tag, effort) in
        [("z", ZlibEffort::Zopfli { iterations: 3 }), ("b", ZlibEffort::Best { iterations: 3 })]
    {
        let opts = options(16384, (Codec::Zlib, effort), 2);
        let w = write(dir.path(), &data, opts, Way::Direct, tag);
        check_reads_back(&w, &data, &opts);
        if tag == "b" {
            assert!(w.summary.image_bytes <= level9.summary.image_bytes);
        }
    }
}

#[test]
fn v4_stores_incompressible_blocks_raw_at_full_block_size() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let noise: Vec<u8> = (0..5 * 8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for codec in [Codec::Lz4, Codec::Zstd, Codec::Xz] {
        let opts = options(8192, (codec, ZlibEffort::Zlib(9)), 3);
        let w = write(dir.path(), &noise, opts, Way::Direct, codec.name());
        check_reads_back(&w, &noise, &opts);
        assert_eq!(w.summary.raw_blocks, 5, "{codec}");
        let image = Image::open(&w.path).unwrap();
        for block in 0..5 {
            let info = image.block_info(block).unwrap();
            assert_eq!(info.compressed_len, 8192, "{codec} block {block}");
        }
    }
}
