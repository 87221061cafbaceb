//! Finding a file inside an ISO 9660 image, over any [`ReadAt`].
//!
//! Enough of ECMA-119 to locate `KNOPPIX/KNOPPIX` on a live CD: the volume
//! descriptor set from sector 16 (at most [`MAX_DESCRIPTORS`]), the
//! primary volume descriptor's logical block size and root directory
//! record, then a walk down the path through directory extents. Names are
//! the primary (ISO 9660) names, compared ASCII case-insensitively without
//! the `;1` version and a trailing dot, so `-R`, `-J` and plain images
//! made by xorriso or genisoimage all match; a Rock Ridge name (an `NM`
//! entry in the record's system use area, IEEE P1282) matches too, so a
//! name that does not fit ISO 9660's (`KNOPPIX.verity`, whose primary
//! name is cut to `KNOPPIX.VER`) is found on `-R` images. `NM` entries in
//! a continuation area (`CE`, for names of more than about 200 bytes) are
//! not followed. A file of several extents
//! (multi-extent, flag bit 7, for files of 4 GiB and more) is returned as
//! all its extents in order. Every length and position is checked against
//! the image size before it is used; directories are read at most
//! [`MAX_DIR_LEN`] bytes at a time.

use std::io;

use crate::blockdev::ReadAt;

/// Sector size of the volume descriptors and of directory record blocks.
pub const SECTOR: u64 = 2048;
/// Volume descriptors read before giving up on finding the terminator.
pub const MAX_DESCRIPTORS: u64 = 64;
/// Largest directory extent read.
pub const MAX_DIR_LEN: u64 = 16 << 20;
/// Deepest path looked up.
const MAX_DEPTH: usize = 32;

const FLAG_DIR: u8 = 0x02;
const FLAG_MULTI_EXTENT: u8 = 0x80;

/// `(byte offset, length)` of each part of a file, in file order.
pub type Extents = Vec<(u64, u64)>;

/// A directory record, the parts this module uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Vec<u8>,
    /// The Rock Ridge name, when the record has one.
    pub rr_name: Option<Vec<u8>>,
    pub flags: u8,
    /// Byte offset of the data in the image.
    pub start: u64,
    pub len: u64,
}

impl Record {
    pub fn is_dir(&self) -> bool {
        self.flags & FLAG_DIR != 0
    }

    /// Whether path component `want` names this record (its primary or
    /// its Rock Ridge name).
    pub fn is_named(&self, want: &str) -> bool {
        same_name(&self.name, want)
            || self.rr_name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(want.as_bytes()))
    }
}

/// The Rock Ridge name in a record's system use area `su`: the `NM`
/// entries' names joined (flag bit 0, CONTINUE, joins the next one);
/// `None` when there is no `NM` entry, or it names `.` or `..` (flag bits
/// 1 and 2). Entries are `[sig, sig, len, version, data...]`; a length
/// that does not fit ends the walk.
pub fn rock_ridge_name(su: &[u8]) -> Option<Vec<u8>> {
    let mut name: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    while pos + 4 <= su.len() {
        let len = su[pos + 2] as usize;
        if len < 4 || pos + len > su.len() {
            break;
        }
        let entry = &su[pos..pos + len];
        if &entry[..2] == b"NM" && len >= 5 {
            let flags = entry[4];
            if flags & 0x06 != 0 {
                return None;
            }
            name.get_or_insert_with(Vec::new).extend_from_slice(&entry[5..]);
            if flags & 1 == 0 {
                break;
            }
        } else if &entry[..2] == b"ST" {
            break;
        }
        pos += len;
    }
    name.filter(|n| !n.is_empty())
}

/// The volume: block size and root directory.
#[derive(Clone, Debug)]
pub struct Volume {
    pub block_size: u64,
    pub root: Record,
}

fn bad(offset: u64, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ISO 9660: at byte {offset}: {what}"))
}

fn read(dev: &dyn ReadAt, offset: u64, len: u64, what: &str) -> io::Result<Vec<u8>> {
    if offset.checked_add(len).is_none_or(|end| end > dev.size()) {
        return Err(bad(
            offset,
            format!("{what} ({len} bytes) reaches past the end of the image ({} bytes)", dev.size()),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    dev.read_at(&mut buf, offset)?;
    Ok(buf)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Whether the image has an ISO 9660 volume descriptor at sector 16.
pub fn is_iso(dev: &dyn ReadAt) -> bool {
    let mut id = [0u8; 5];
    dev.size() >= 17 * SECTOR && dev.read_at(&mut id, 16 * SECTOR + 1).is_ok() && &id == b"CD001"
}

impl Volume {
    /// Reads the volume descriptor set and the primary volume descriptor.
    pub fn open(dev: &dyn ReadAt) -> io::Result<Volume> {
        for i in 16..16 + MAX_DESCRIPTORS {
            let at = i * SECTOR;
            let vd = read(dev, at, SECTOR, "volume descriptor")?;
            if &vd[1..6] != b"CD001" {
                return Err(bad(at + 1, "no CD001 volume descriptor (not an ISO 9660 image)"));
            }
            match vd[0] {
                1 => return Volume::from_pvd(dev, at, &vd),
                255 => return Err(bad(at, "the descriptor set ends without a primary volume descriptor")),
                _ => {}
            }
        }
        Err(bad(16 * SECTOR, format!("no primary volume descriptor in the first {MAX_DESCRIPTORS}")))
    }

    fn from_pvd(dev: &dyn ReadAt, at: u64, vd: &[u8]) -> io::Result<Volume> {
        let le = u16::from_le_bytes([vd[128], vd[129]]);
        let be = u16::from_be_bytes([vd[130], vd[131]]);
        if le != be || !matches!(le, 512 | 1024 | 2048) {
            return Err(bad(
                at + 128,
                format!("logical block size {le}/{be} (must be 512, 1024 or 2048 in both byte orders)"),
            ));
        }
        let block_size = u64::from(le);
        let root = parse_record(dev, &vd[156..190], at + 156, block_size)?;
        if !root.is_dir() {
            return Err(bad(at + 156, "the root directory record is not a directory"));
        }
        Ok(Volume { block_size, root })
    }

    /// The records of directory `dir`, without `.` and `..`.
    pub fn list(&self, dev: &dyn ReadAt, dir: &Record) -> io::Result<Vec<Record>> {
        if dir.len > MAX_DIR_LEN {
            return Err(bad(dir.start, format!("directory of {} bytes (more than {MAX_DIR_LEN})", dir.len)));
        }
        let data = read(dev, dir.start, dir.len, "directory")?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let len = data[pos] as usize;
            if len == 0 {
                // Records do not cross sectors; the rest of this one is padding.
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let sector_end = ((pos / SECTOR as usize + 1) * SECTOR as usize).min(data.len());
            let at = dir.start + pos as u64;
            if pos + len > sector_end {
                return Err(bad(at, format!("directory record of {len} bytes crosses a sector end")));
            }
            let rec = parse_record(dev, &data[pos..pos + len], at, self.block_size)?;
            if !matches!(rec.name.as_slice(), [0] | [1]) {
                out.push(rec);
            }
            pos += len;
        }
        Ok(out)
    }

    /// The extents `(byte offset, length)` of the file at `path`
    /// (`/`-separated); `Ok(None)` if there is no such file.
    pub fn find(&self, dev: &dyn ReadAt, path: &str) -> io::Result<Option<Extents>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() || parts.len() > MAX_DEPTH {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("ISO 9660: bad path {path:?}")));
        }
        let mut dir = self.root.clone();
        for (i, part) in parts.iter().enumerate() {
            let entries = self.list(dev, &dir)?;
            let Some(first) = entries.iter().position(|r| r.is_named(part)) else {
                return Ok(None);
            };
            if i + 1 < parts.len() {
                if !entries[first].is_dir() {
                    return Ok(None);
                }
                dir = entries[first].clone();
                continue;
            }
            if entries[first].is_dir() {
                return Ok(None);
            }
            let mut extents = Vec::new();
            for rec in &entries[first..] {
                if !rec.is_named(part) {
                    return Err(bad(
                        rec.start,
                        format!("multi-extent file {part:?} ends without its last extent"),
                    ));
                }
                extents.push((rec.start, rec.len));
                if rec.flags & FLAG_MULTI_EXTENT == 0 {
                    return Ok(Some(extents));
                }
            }
            return Err(bad(dir.start, format!("multi-extent file {part:?} ends without its last extent")));
        }
        Ok(None)
    }
}

fn parse_record(dev: &dyn ReadAt, r: &[u8], at: u64, block_size: u64) -> io::Result<Record> {
    if r.len() < 34 || (r[0] as usize) < 34 || r[0] as usize > r.len() {
        return Err(bad(
            at,
            format!("directory record of {} bytes (at least 34)", r.first().copied().unwrap_or(0)),
        ));
    }
    let name_len = r[32] as usize;
    if name_len == 0 || 33 + name_len > r[0] as usize {
        return Err(bad(at, format!("name of {name_len} bytes does not fit its {}-byte record", r[0])));
    }
    if r[26] != 0 || r[27] != 0 {
        return Err(bad(at, "interleaved file (file unit size or gap set): not supported"));
    }
    let xa = u64::from(r[1]);
    let start = (u64::from(le32(&r[2..6])) + xa) * block_size;
    let len = u64::from(le32(&r[10..14]));
    if start.checked_add(len).is_none_or(|end| end > dev.size()) {
        return Err(bad(
            at,
            format!(
                "extent at byte {start}, {len} bytes, reaches past the end of the image ({} bytes)",
                dev.size()
            ),
        ));
    }
    // The system use area follows the name, padded to an even length.
    let su_start = 33 + name_len + (name_len + 1) % 2;
    let rr_name = r.get(su_start..r[0] as usize).and_then(rock_ridge_name);
    Ok(Record { name: r[33..33 + name_len].to_vec(), rr_name, flags: r[25], start, len })
}

/// ISO name `raw` (maybe `NAME.;1`) against a path component.
pub fn same_name(raw: &[u8], want: &str) -> bool {
    let name = match raw.iter().rposition(|&b| b == b';') {
        Some(i) => &raw[..i],
        None => raw,
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    let want = want.as_bytes();
    let want = want.strip_suffix(b".").unwrap_or(want);
    name.eq_ignore_ascii_case(want)
}

/// The cloop images of a KNOPPIX CD: `KNOPPIX/KNOPPIX`, then
/// `KNOPPIX/KNOPPIX1`, `KNOPPIX2`… in numeric order, as (name, extents).
pub fn knoppix_images(dev: &dyn ReadAt) -> io::Result<Vec<(String, Extents)>> {
    let vol = Volume::open(dev)?;
    let mut out = Vec::new();
    if let Some(ext) = vol.find(dev, "KNOPPIX/KNOPPIX")? {
        out.push(("KNOPPIX/KNOPPIX".to_string(), ext));
    }
    for n in 1..100 {
        let name = format!("KNOPPIX/KNOPPIX{n}");
        match vol.find(dev, &name)? {
            Some(ext) => out.push((name, ext)),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::blockdev::MemDev;

    #[test]
    fn rock_ridge_names_are_read_and_malformed_areas_are_harmless() {
        let px = [b'P', b'X', 8, 1, 0, 0, 0, 0];
        let mut su = px.to_vec();
        su.extend_from_slice(&[b'N', b'M', 5 + 8, 1, 1]);
        su.extend_from_slice(b"KNOPPIX.");
        su.extend_from_slice(&[b'N', b'M', 5 + 6, 1, 0]);
        su.extend_from_slice(b"verity");
        assert_eq!(rock_ridge_name(&su).as_deref(), Some(&b"KNOPPIX.verity"[..]));
        assert_eq!(rock_ridge_name(&px), None);
        assert_eq!(rock_ridge_name(&[b'N', b'M', 5, 1, 2]), None, "'.'");
        assert_eq!(rock_ridge_name(&[b'N', b'M', 200, 1, 0, b'x']), None, "a length past the end");
        assert_eq!(rock_ridge_name(&[b'N', b'M', 2, 1, 0, b'x']), None, "a length below 4");
        assert_eq!(rock_ridge_name(&[]), None);
        let rec = Record {
            name: b"KNOPPIX.VER;1".to_vec(),
            rr_name: Some(b"KNOPPIX.verity".to_vec()),
            flags: 0,
            start: 0,
            len: 0,
        };
        assert!(rec.is_named("knoppix/../KNOPPIX.verity".rsplit('/').next().unwrap()));
        assert!(rec.is_named("KNOPPIX.VER") && !rec.is_named("KNOPPIX"));
    }

    fn record(name: &[u8], flags: u8, lba: u32, len: u32) -> Vec<u8> {
        let total = 33 + name.len() + (name.len() + 1) % 2;
        let mut r = vec![0u8; total];
        r[0] = total as u8;
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = flags;
        r[28] = 1;
        r[32] = name.len() as u8;
        r[33..33 + name.len()].copy_from_slice(name);
        r
    }

    /// A tiny ISO: root (sector 20) → KNOPPIX dir (sector 21) → KNOPPIX in
    /// two extents (sectors 22 and 24) and KNOPPIX1 (sector 25).
    pub(crate) fn tiny_iso() -> Vec<u8> {
        let mut img = vec![0u8; 26 * SECTOR as usize];
        let s = |n: u64| (n * SECTOR) as usize;
        let pvd = &mut img[s(16)..s(17)];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
        pvd[156..190].copy_from_slice(&record(&[0], FLAG_DIR, 20, 2048));
        img[s(17)] = 255;
        img[s(17) + 1..s(17) + 6].copy_from_slice(b"CD001");
        let mut root = record(&[0], FLAG_DIR, 20, 2048);
        root.extend(record(&[1], FLAG_DIR, 20, 2048));
        root.extend(record(b"BOOT", FLAG_DIR, 20, 2048));
        root.extend(record(b"KNOPPIX", FLAG_DIR, 21, 2048));
        img[s(20)..s(20) + root.len()].copy_from_slice(&root);
        let mut dir = record(&[0], FLAG_DIR, 21, 2048);
        dir.extend(record(&[1], FLAG_DIR, 20, 2048));
        dir.extend(record(b"KNOPPIX.;1", FLAG_MULTI_EXTENT, 22, 4096));
        dir.extend(record(b"KNOPPIX.;1", 0, 24, 100));
        dir.extend(record(b"KNOPPIX1.;1", 0, 25, 10));
        img[s(21)..s(21) + dir.len()].copy_from_slice(&dir);
        for (i, b) in img[s(22)..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        img
    }

    #[test]
    fn finds_multi_extent_files_case_insensitively() {
        let dev = MemDev::new(tiny_iso());
        assert!(is_iso(&dev));
        let vol = Volume::open(&dev).unwrap();
        let ext = vol.find(&dev, "knoppix/knoppix").unwrap().unwrap();
        assert_eq!(ext, vec![(22 * SECTOR, 4096), (24 * SECTOR, 100)]);
        assert_eq!(vol.find(&dev, "/KNOPPIX/KNOPPIX1.").unwrap().unwrap(), vec![(25 * SECTOR, 10)]);
        assert_eq!(vol.find(&dev, "KNOPPIX/KNOPPIX2").unwrap(), None);
        assert_eq!(vol.find(&dev, "KNOPPIX").unwrap(), None, "a directory is not a file");
        assert_eq!(vol.find(&dev, "BOOT/X").unwrap(), None);
        assert!(vol.find(&dev, "").is_err());
        let all = knoppix_images(&dev).unwrap();
        assert_eq!(
            all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["KNOPPIX/KNOPPIX", "KNOPPIX/KNOPPIX1"]
        );
    }

    #[test]
    fn names_compare_without_version_and_dot() {
        assert!(same_name(b"KNOPPIX.;1", "KNOPPIX"));
        assert!(same_name(b"KNOPPIX;1", "knoppix"));
        assert!(same_name(b"knoppix", "KNOPPIX"));
        assert!(same_name(b"A.B;1", "a.b"));
        assert!(!same_name(b"KNOPPIX1;1", "KNOPPIX"));
        assert!(!same_name(b"KNOPPI", "KNOPPIX"));
    }

    fn expect_err(img: Vec<u8>, needle: &str) {
        let dev = MemDev::new(img);
        let r = Volume::open(&dev).and_then(|v| v.find(&dev, "KNOPPIX/KNOPPIX"));
        let e = r.expect_err(needle);
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
    }

    #[test]
    fn malformed_images_are_clear_errors() {
        let s = |n: u64| (n * SECTOR) as usize;
        expect_err(vec![0; 100], "past the end");
        expect_err(vec![0; s(18)], "CD001");
        let mut img = tiny_iso();
        img[s(16)] = 2;
        expect_err(img, "without a primary volume descriptor");
        let mut img = tiny_iso();
        img[s(16) + 129] = 0;
        expect_err(img, "logical block size");
        let mut img = tiny_iso();
        img[s(16) + 156 + 2..s(16) + 156 + 6].copy_from_slice(&1000u32.to_le_bytes());
        expect_err(img, "past the end of the image");
        let mut img = tiny_iso();
        img[s(16) + 156 + 10..s(16) + 156 + 14].copy_from_slice(&u32::MAX.to_le_bytes());
        expect_err(img, "past the end of the image");
        let mut img = tiny_iso();
        img[s(16) + 156] = 20;
        expect_err(img, "directory record of 20 bytes");
        let mut img = tiny_iso();
        img[s(16) + 156 + 32] = 200;
        expect_err(img, "does not fit");
        // A record in the KNOPPIX directory with a bad length.
        let mut img = tiny_iso();
        let at = s(21) + 34 + 34;
        img[at] = 10;
        expect_err(img, "directory record of 10 bytes");
        // A record that crosses the sector end: eight 250-byte records,
        // then one of 60 bytes at byte 2000 of the sector.
        let mut img = tiny_iso();
        img[s(21)..s(22)].fill(0);
        for i in 0..8 {
            let r = record(b"PAD", 0, 22, 1);
            let at = s(21) + i * 250;
            img[at..at + r.len()].copy_from_slice(&r);
            img[at] = 250;
        }
        let r = record(b"KNOPPIX", 0, 22, 1);
        img[s(21) + 2000..s(21) + 2000 + r.len()].copy_from_slice(&r);
        img[s(21) + 2000] = 60;
        expect_err(img, "crosses a sector end");
        // The last multi-extent part missing.
        let mut img = tiny_iso();
        let second = s(21) + 34 + 34 + 44;
        img[second + 25] = FLAG_MULTI_EXTENT;
        img[second + 44 + 33..second + 44 + 33 + 7].copy_from_slice(b"KNOPPIX");
        img[second + 44 + 25] = FLAG_MULTI_EXTENT;
        expect_err(img, "ends without its last extent");
        // Interleaved.
        let mut img = tiny_iso();
        img[s(21) + 68 + 26] = 1;
        expect_err(img, "interleaved");
    }

    /// Seeded random byte changes in the descriptors and directories of
    /// the tiny ISO: errors or results inside the image, never a panic.
    #[test]
    fn mutated_images_never_panic() {
        let base = tiny_iso();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let hot: Vec<usize> = (16 * 2048..16 * 2048 + 200)
            .chain(20 * 2048..20 * 2048 + 200)
            .chain(21 * 2048..21 * 2048 + 200)
            .collect();
        for _ in 0..5000 {
            let mut img = base.clone();
            for _ in 0..1 + next() % 3 {
                let i = hot[(next() % hot.len() as u64) as usize];
                img[i] = next() as u8;
            }
            let dev = MemDev::new(img);
            if let Ok(found) = knoppix_images(&dev) {
                for (_, extents) in found {
                    for (start, len) in extents {
                        assert!(start + len <= dev.size());
                    }
                }
            }
        }
    }
}
