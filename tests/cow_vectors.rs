//! The cowloop 3.1 vectors through the library: every cowfile reads as
//! vectors/README.md says, repair / merge / pack reproduce the REAL tools'
//! output byte for byte, and a cowfile is never applied to the wrong base.

mod cow_common;

use cloopbox::blockdev::{BlockDev, MemDev, ReadAt};
use cloopbox::cow::pack::{self, SaveFormat};
use cloopbox::cow::repair::{self, Correction, RepairOptions};
use cloopbox::cow::{cowfile, Abi, FormatError, Header, Overlay, OverlayOptions};
use cow_common::*;
use std::path::Path;

fn open(base: Vec<u8>, cow: &Path, repair: bool) -> Result<Overlay<MemDev>, cloopbox::cow::CowError> {
    let opts = OverlayOptions { create: false, repair, ..Default::default() };
    Overlay::open(MemDev::new(base), cow, &opts)
}

fn read_all(dev: &dyn ReadAt) -> Vec<u8> {
    let mut buf = vec![0u8; dev.size() as usize];
    dev.read_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn headers_of_every_vector_parse_with_the_right_abi() {
    for (name, abi, flags, cowused, fp) in [
        ("fresh_64.cow", Abi::X86_64, 0, 0, 0xffff_ffff_8215_0a84u64),
        ("clean_64.cow", Abi::X86_64, 0, 5, 0xffff_ffff_8215_0a84),
        ("dirty_64.cow", Abi::X86_64, 1, 0, 0xffff_ffff_8215_0a84),
        ("fresh_32.cow", Abi::I386, 0, 0, 0x8215_0a84),
        ("clean_32.cow", Abi::I386, 0, 5, 0x8215_0a84),
        ("dirty_32.cow", Abi::I386, 1, 0, 0x8215_0a84),
        ("packed_64.cowsave", Abi::X86_64, 2, 5, 0xffff_ffff_8215_0a84),
        ("packed_32.cowsave", Abi::I386, 2, 5, 0x8215_0a84),
    ] {
        let h = Header::parse(&read(&vector(name))).unwrap();
        assert_eq!((h.abi, h.flags, h.cowused, h.fingerprint), (abi, flags, cowused, fp), "{name}");
        assert_eq!(
            (h.version, h.mapunit, h.mapsize, h.doffset, h.rdoblocks),
            (1, 1024, 1024, 4096, 300),
            "{name}"
        );
        h.check_layout().unwrap();
    }
}

#[test]
fn a_new_cowfile_is_byte_identical_to_the_drivers_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let cow = dir.path().join("new.cow");
    let ov = Overlay::open(MemDev::new(raw_image()), &cow, &OverlayOptions::default()).unwrap();
    assert!(ov.created());
    assert_eq!(read_all(&ov), raw_image());
    drop(ov);
    assert_eq!(read(&cow), read(&vector("fresh_64.cow")));
}

#[test]
fn fresh_and_clean_vectors_read_as_the_readme_states() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let fresh = copy_vector(&format!("fresh_{abi}.cow"), dir.path());
        assert_eq!(read_all(&open(raw_image(), &fresh, false).unwrap()), raw_image(), "fresh_{abi}");
        let clean = copy_vector(&format!("clean_{abi}.cow"), dir.path());
        let ov = open(raw_image(), &clean, false).unwrap();
        assert_eq!(ov.stats().cowused, 5);
        assert_eq!(read_all(&ov), expected_view(), "clean_{abi}");
    }
}

#[test]
fn dirty_vectors_are_refused_without_repair_and_read_right_with_it() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let dirty = copy_vector(&format!("dirty_{abi}.cow"), dir.path());
        let err = open(raw_image(), &dirty, false).err().expect("dirty accepted");
        assert_eq!(err.problem(), Some(&FormatError::Dirty), "{err}");
        assert!(err.to_string().contains("dirty_"), "{err}");
        let ov = open(raw_image(), &dirty, true).unwrap();
        assert_eq!(ov.repaired().unwrap().corrections, 4);
        assert_eq!(read_all(&ov), expected_view(), "dirty_{abi}");
        drop(ov);
        assert_eq!(read(&dirty), read(&vector(&format!("clean_{abi}.cow"))), "repaired dirty_{abi}");
    }
}

#[test]
fn repair_of_dirty_gives_clean_byte_for_byte_and_reports_each_block() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let path = copy_vector(&format!("dirty_{abi}.cow"), dir.path());
        let file = cowfile::open_existing(&path, true).unwrap();
        let mut header = cowfile::read_header(&file, &path).unwrap();
        let mut seen = Vec::new();
        let dry =
            repair::repair(&file, &path, &mut header.clone(), RepairOptions { dry_run: true }, &mut |c| {
                seen.push(c)
            })
            .unwrap();
        assert_eq!(dry.corrections, 4);
        assert_eq!(read(&path), read(&vector(&format!("dirty_{abi}.cow"))), "dry run wrote");
        let marked: Vec<u64> = seen
            .iter()
            .map(|c| if let Correction::Marked { block } = c { *block } else { panic!("{c:?}") })
            .collect();
        assert_eq!(marked, vec![5, 100, 101, 299]);
        let report =
            repair::repair(&file, &path, &mut header, RepairOptions::default(), &mut |_| {}).unwrap();
        assert_eq!((report.corrections, report.cowused, report.was_dirty), (4, 5, true));
        assert_eq!(read(&path), read(&vector(&format!("clean_{abi}.cow"))), "dirty_{abi}");
    }
}

#[test]
fn merge_gives_the_expected_image_and_marks_the_cowfile() {
    let dir = tempfile::tempdir().unwrap();
    let expected = gunzip(&vector("expected_merged.img.gz"));
    assert_eq!(expected, expected_view());
    for abi in ["64", "32"] {
        let rdo = dir.path().join("rdo.img");
        std::fs::write(&rdo, raw_image()).unwrap();
        let cow = copy_vector(&format!("clean_{abi}.cow"), dir.path());
        let merge = cloopbox::cow::merge::Merge::prepare(&rdo, &cow).unwrap();
        assert_eq!(merge.blocks(), 5);
        let mut last = 0;
        assert_eq!(merge.run(&mut |done| last = done).unwrap(), 5);
        assert_eq!(last, 5 * 1024);
        assert_eq!(read(&rdo), expected, "merge of clean_{abi}");
        let header = Header::parse(&read(&cow)).unwrap();
        assert!(header.is_merged() && !header.is_dirty());
        // Never again: neither merged a second time nor applied.
        let again = cloopbox::cow::merge::Merge::prepare(&rdo, &cow).err().expect("merged twice");
        assert_eq!(again.problem(), Some(&FormatError::Merged));
        let err = open(read(&rdo), &cow, false).err().expect("merged cowfile applied");
        assert_eq!(err.problem(), Some(&FormatError::Merged), "{err}");
    }
}

#[test]
fn pack_and_unpack_match_the_real_cowpack_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let clean = vector(&format!("clean_{abi}.cow"));
        for (format, ext) in [(SaveFormat::Plain, "cowsave"), (SaveFormat::Gzip, "cowsave.gz")] {
            let stored = vector(&format!("packed_{abi}.{ext}"));
            let save = dir.path().join(format!("out_{abi}.{ext}"));
            assert_eq!(pack::pack(&clean, &save, format).unwrap().blocks, 5);
            assert_eq!(read(&save), read(&stored), "cowpack -p of clean_{abi} as {ext}");
            let back = dir.path().join(format!("back_{abi}_{ext}.cow"));
            // A longer file at the destination must not keep its tail.
            std::fs::write(&back, vec![0xaa; 400_000]).unwrap();
            assert_eq!(pack::unpack(&stored, &back, format).unwrap().blocks, 5);
            assert_eq!(read(&back), read(&clean), "cowpack -u of packed_{abi}.{ext}");
            assert_eq!(pack::unpack_bytes(&read(&stored), format).unwrap(), read(&clean));
        }
    }
}

#[test]
fn pack_refuses_dirty_and_packed_sources_and_unpack_refuses_unpacked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = pack::pack(&vector("dirty_64.cow"), &out, SaveFormat::Plain).unwrap_err();
    assert_eq!(err.problem(), Some(&FormatError::Dirty));
    let err = pack::pack(&vector("packed_64.cowsave"), &out, SaveFormat::Plain).unwrap_err();
    assert_eq!(err.problem(), Some(&FormatError::Packed));
    let err = pack::unpack(&vector("clean_64.cow"), &out, SaveFormat::Plain).unwrap_err();
    assert_eq!(err.problem(), Some(&FormatError::NotPacked));
    let err = pack::unpack_bytes(&read(&vector("packed_64.cowsave"))[..6000], SaveFormat::Plain).unwrap_err();
    assert!(matches!(err.problem(), Some(FormatError::TruncatedSavefile { .. })), "{err}");
}

#[test]
fn a_cowfile_is_never_applied_to_the_wrong_base() {
    let dir = tempfile::tempdir().unwrap();
    for abi in ["64", "32"] {
        let cow = copy_vector(&format!("clean_{abi}.cow"), dir.path());
        // One byte changed in block 0 changes the fingerprint.
        let mut modified = raw_image();
        modified[10] ^= 0x01;
        let err = open(modified, &cow, false).err().expect("modified rdofile accepted");
        assert!(matches!(err.problem(), Some(FormatError::FingerprintMismatch { .. })), "{err}");
        assert!(err.to_string().contains("rdofile modified?"), "{err}");
        let err =
            open(raw_image()[..200 * 1024].to_vec(), &cow, false).err().expect("smaller rdofile accepted");
        assert!(matches!(
            err.problem(),
            Some(FormatError::NotRelated { rdoblocks: 300, numblocks: 200, .. })
        ));
        assert!(err.to_string().contains("not related to this rdofile"), "{err}");
        // A zero-extended fingerprint (a buggy 64-bit writer) is refused too.
        if abi == "64" {
            let mut bytes = read(&cow);
            bytes[44..48].copy_from_slice(&[0, 0, 0, 0]);
            std::fs::write(&cow, bytes).unwrap();
            let err = open(raw_image(), &cow, false).err().expect("zero-extended fingerprint accepted");
            assert!(matches!(err.problem(), Some(FormatError::FingerprintMismatch { .. })));
        }
    }
}

#[test]
fn writing_through_an_i386_cowfile_keeps_its_layout() {
    let dir = tempfile::tempdir().unwrap();
    let cow = copy_vector("clean_32.cow", dir.path());
    let ov = open(raw_image(), &cow, false).unwrap();
    ov.write_at(&[0x5a; 2048], 7 * 1024).unwrap();
    ov.flush().unwrap();
    drop(ov);
    let header = Header::parse(&read(&cow)).unwrap();
    assert_eq!((header.abi, header.cowused, header.flags), (Abi::I386, 7, 0));
    assert_eq!(header.fingerprint, 0x8215_0a84);
    let ov = open(raw_image(), &cow, false).unwrap();
    let mut buf = vec![0u8; 2048];
    ov.read_at(&mut buf, 7 * 1024).unwrap();
    assert_eq!(buf, vec![0x5a; 2048]);
}

#[test]
fn the_overlay_works_over_a_cloop_image_base() {
    let dir = tempfile::tempdir().unwrap();
    let path = vectors().join("v2-cloop-utils/ext2_b65536_L9.cloop");
    let image = || cloopbox::cloop::reader::Image::open(&path).unwrap();
    // V2 pads the last block: the device is 320 KiB, so the cowfiles made
    // for the 300 KiB rdofile do not belong to it and are refused.
    assert_eq!(image().size(), 320 * 1024);
    let cow = copy_vector("clean_64.cow", dir.path());
    let opts = OverlayOptions { create: false, ..Default::default() };
    let err = Overlay::open(image(), &cow, &opts).err().expect("cowfile for another size accepted");
    assert!(matches!(err.problem(), Some(FormatError::NotRelated { rdoblocks: 300, numblocks: 320, .. })));
    // A cowfile of its own: writes land, survive a reopen, the image is untouched.
    let mut want = raw_image();
    want.resize(320 * 1024, 0);
    let cow = dir.path().join("over_cloop.cow");
    let ov = Overlay::open(image(), &cow, &OverlayOptions::default()).unwrap();
    assert_eq!(read_all(&ov), want);
    ov.write_at(&[0x42; 3000], 200_000).unwrap();
    ov.trim(4096, 8192).unwrap();
    drop(ov);
    want[200_000..203_000].fill(0x42);
    want[4096..12288].fill(0);
    let ov = Overlay::open(image(), &cow, &opts).unwrap();
    assert_eq!(read_all(&ov), want);
    assert_eq!(read_all(&image())[..307_200], raw_image()[..]);
}

#[test]
fn repair_of_a_32_gib_sparse_cowfile_reads_only_its_data() {
    use cloopbox::cow::header::FLAG_DIRTY;
    use cloopbox::cow::Geometry;
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.cow");
    let geom = Geometry::for_blocks(32 << 20).unwrap(); // 32 GiB rdofile
    let mut header = Header::new(Abi::X86_64, &geom, 0x0102_0304);
    header.flags |= FLAG_DIRTY;
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.write_all_at(&header.encode_block(), 0).unwrap();
    file.write_all_at(&[0xab; 1024], geom.doffset + 7 * 1024).unwrap();
    file.write_all_at(&[0xcd; 1024], geom.doffset + 30_000_000 * 1024).unwrap();
    file.set_len(geom.doffset + (32u64 << 30)).unwrap();
    let mut marked = Vec::new();
    let report =
        repair::repair(&file, &path, &mut header, RepairOptions::default(), &mut |c| marked.push(c)).unwrap();
    assert_eq!(marked, vec![Correction::Marked { block: 7 }, Correction::Marked { block: 30_000_000 }]);
    assert_eq!((report.corrections, report.cowused), (2, 2));
    assert!(report.scanned_bytes <= 1 << 20, "read {} bytes of a sparse file", report.scanned_bytes);
    let header = cowfile::read_header(&file, &path).unwrap();
    assert!(!header.is_dirty());
    assert_eq!(header.cowused, 2);
}
