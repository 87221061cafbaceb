//! Which filesystem is on a device, by its on-disk magic.
//!
//! Used twice during boot: on each candidate medium (to pick the `mount -t`
//! type and to recognise a filesystem already tried through another device
//! node, as with a hybrid ISO whose first partition is the whole disk), and
//! on the image itself (a writable filesystem gets the block-level cowfile,
//! a read-only one gets an overlayfs). Works on any [`ReadAt`], so a cloop
//! image is probed without the kernel.

use crate::blockdev::ReadAt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsType {
    Iso9660,
    Udf,
    Vfat,
    Exfat,
    Ntfs,
    Ext,
    Btrfs,
    Xfs,
    Squashfs,
    Erofs,
}

impl FsType {
    /// The name `mount -t` wants. For ntfs the in-kernel driver is ntfs3.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsType::Iso9660 => "iso9660",
            FsType::Udf => "udf",
            FsType::Vfat => "vfat",
            FsType::Exfat => "exfat",
            FsType::Ntfs => "ntfs3",
            FsType::Ext => "ext4",
            FsType::Btrfs => "btrfs",
            FsType::Xfs => "xfs",
            FsType::Squashfs => "squashfs",
            FsType::Erofs => "erofs",
        }
    }

    /// Read-only by design: writes need an overlay on top, not a block cow.
    pub fn is_read_only(self) -> bool {
        matches!(self, FsType::Iso9660 | FsType::Udf | FsType::Squashfs | FsType::Erofs)
    }
}

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub fs: FsType,
    /// An identity that is the same whichever device node shows this
    /// filesystem (UUID, serial, or volume id plus creation time).
    pub id: String,
    pub label: String,
}

fn read(dev: &dyn ReadAt, offset: u64, len: usize) -> Option<Vec<u8>> {
    if offset.checked_add(len as u64)? > dev.size() {
        return None;
    }
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, offset).ok()?;
    Some(buf)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches(['\0', ' ']).to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Probes a device; `None` if no known filesystem is there (or it is too
/// small or unreadable, which for a candidate medium means the same).
pub fn probe(dev: &dyn ReadAt) -> Option<FsInfo> {
    probe_iso_udf(dev)
        .or_else(|| probe_ext(dev))
        .or_else(|| probe_boot_sector(dev))
        .or_else(|| probe_simple(dev))
}

fn probe_iso_udf(dev: &dyn ReadAt) -> Option<FsInfo> {
    // The volume recognition sequence starts at sector 16 (2048 bytes each).
    let vrs = read(dev, 32768, 2048 * 8)?;
    let ids: Vec<&[u8]> = vrs.chunks(2048).map(|d| &d[1..6]).collect();
    if ids[0] == b"CD001" {
        let pvd = &vrs[..2048];
        let label = text(&pvd[40..72]);
        let created = text(&pvd[813..830]);
        return Some(FsInfo { fs: FsType::Iso9660, id: format!("iso:{label}:{created}"), label });
    }
    if ids.iter().any(|i| *i == b"BEA01") && ids.iter().any(|i| *i == b"NSR02" || *i == b"NSR03") {
        return Some(FsInfo {
            fs: FsType::Udf,
            id: format!("udf:{}", hex(&vrs[..32])),
            label: String::new(),
        });
    }
    None
}

fn probe_ext(dev: &dyn ReadAt) -> Option<FsInfo> {
    let sb = read(dev, 1024, 256)?;
    if sb[56..58] != [0x53, 0xef] {
        return None;
    }
    Some(FsInfo { fs: FsType::Ext, id: format!("ext:{}", hex(&sb[104..120])), label: text(&sb[120..136]) })
}

fn probe_boot_sector(dev: &dyn ReadAt) -> Option<FsInfo> {
    let bs = read(dev, 0, 512)?;
    match &bs[3..11] {
        b"EXFAT   " => {
            return Some(FsInfo {
                fs: FsType::Exfat,
                id: format!("exfat:{}", hex(&bs[100..104])),
                label: exfat_label(dev, &bs).unwrap_or_default(),
            })
        }
        b"NTFS    " => {
            return Some(FsInfo {
                fs: FsType::Ntfs,
                id: format!("ntfs:{}", hex(&bs[72..80])),
                label: String::new(),
            })
        }
        _ => {}
    }
    if bs[510..512] != [0x55, 0xaa] {
        return None;
    }
    let (serial, label) = if &bs[82..87] == b"FAT32" {
        (&bs[67..71], &bs[71..82])
    } else if &bs[54..59] == b"FAT12" || &bs[54..59] == b"FAT16" {
        (&bs[39..43], &bs[43..54])
    } else {
        return None;
    };
    Some(FsInfo { fs: FsType::Vfat, id: format!("vfat:{}", hex(serial)), label: text(label) })
}

/// The volume label of an exFAT filesystem. Unlike FAT's, it is not in
/// the boot sector but in the root directory, as an entry of type 0x83
/// holding a character count (byte 1) and up to 11 UTF-16LE characters
/// (bytes 2..24), per Microsoft's exFAT specification §7.3. The boot sector
/// gives the sector and cluster shifts (bytes 108, 109), the FAT's and the
/// cluster heap's first sector (80, 88), the cluster count (92) and the
/// root directory's first cluster (96). The root directory is followed along its FAT chain; a label is one of
/// its first entries in practice, so the walk stops after 64 clusters or
/// 1 MiB, and at the end-of-directory entry (type 0).
fn exfat_label(dev: &dyn ReadAt, bs: &[u8]) -> Option<String> {
    let le32 = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]) as u64;
    let (sector_shift, cluster_shift) = (bs[108] as u32, bs[109] as u32);
    if !(9..=12).contains(&sector_shift) || sector_shift + cluster_shift > 25 {
        return None;
    }
    let sector = 1u64 << sector_shift;
    let cluster_len = sector << cluster_shift;
    let (fat_start, heap_start, clusters, mut cluster) =
        (le32(80) * sector, le32(88) * sector, le32(92), le32(96));
    let chunk = cluster_len.min(1 << 20) as usize;
    let mut budget = 1u64 << 20;
    for _ in 0..64 {
        if cluster < 2 || cluster >= clusters + 2 || budget == 0 {
            return None;
        }
        let dir = read(dev, heap_start + (cluster - 2) * cluster_len, chunk.min(budget as usize))?;
        budget -= dir.len() as u64;
        for entry in dir.chunks_exact(32) {
            match entry[0] {
                0x00 => return None,
                0x83 => {
                    let n = (entry[1] as usize).min(11);
                    let units: Vec<u16> = entry[2..2 + 2 * n]
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect();
                    return Some(String::from_utf16_lossy(&units));
                }
                _ => {}
            }
        }
        let next = read(dev, fat_start + cluster * 4, 4)?;
        cluster = u32::from_le_bytes([next[0], next[1], next[2], next[3]]) as u64;
    }
    None
}

fn probe_simple(dev: &dyn ReadAt) -> Option<FsInfo> {
    let head = read(dev, 0, 4096)?;
    if &head[..4] == b"hsqs" {
        // No UUID in squashfs: the creation time and size identify it.
        return Some(FsInfo {
            fs: FsType::Squashfs,
            id: format!("squashfs:{}", hex(&head[8..12])),
            label: String::new(),
        });
    }
    if &head[..4] == b"XFSB" {
        return Some(FsInfo {
            fs: FsType::Xfs,
            id: format!("xfs:{}", hex(&head[32..48])),
            label: text(&head[108..120]),
        });
    }
    if head[1024..1028] == [0xe2, 0xe1, 0xf5, 0xe0] {
        return Some(FsInfo {
            fs: FsType::Erofs,
            id: format!("erofs:{}", hex(&head[1024 + 48..1024 + 64])),
            label: String::new(),
        });
    }
    let btrfs = read(dev, 65536, 4096)?;
    if &btrfs[64..72] == b"_BHRfS_M" {
        return Some(FsInfo {
            fs: FsType::Btrfs,
            id: format!("btrfs:{}", hex(&btrfs[32..48])),
            label: text(&btrfs[299..299 + 256]),
        });
    }
    None
}

/// The smallest I/O unit the filesystem needs from its device. A block
/// device whose logical block size is larger cannot hold it (an iso9660
/// filesystem does not mount on 4096-byte sectors; an ext4 with 1 KiB
/// blocks needs sectors of 1 KiB or less). Unknown or odd values give 512.
pub fn min_io_size(dev: &dyn ReadAt, info: &FsInfo) -> u32 {
    let le16 = |off: u64| read(dev, off, 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32);
    let le32 = |off: u64| read(dev, off, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let size = match info.fs {
        FsType::Iso9660 | FsType::Udf => Some(2048),
        FsType::Ext => le32(1024 + 24).filter(|l| *l <= 6).map(|l| 1024 << l),
        FsType::Vfat | FsType::Ntfs => le16(11),
        FsType::Exfat => read(dev, 108, 1).map(|b| b[0] as u32).filter(|s| *s <= 12).map(|s| 1 << s),
        FsType::Btrfs => le32(65536 + 0x90),
        FsType::Xfs => read(dev, 102, 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as u32),
        FsType::Squashfs | FsType::Erofs => None,
    };
    match size {
        Some(s) if s.is_power_of_two() && (512..=65536).contains(&s) => s,
        _ => 512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::MemDev;

    fn dev_with(size: usize, patches: &[(usize, &[u8])]) -> MemDev {
        let mut data = vec![0u8; size];
        for (off, bytes) in patches {
            data[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
        MemDev::new(data)
    }

    #[test]
    fn recognises_each_magic() {
        let iso = dev_with(
            65536,
            &[(32769, b"CD001"), (32768 + 40, b"KNOPPIX_FS"), (32768 + 813, b"2024010112000000")],
        );
        let info = probe(&iso).unwrap();
        assert_eq!((info.fs, info.label.as_str()), (FsType::Iso9660, "KNOPPIX_FS"));
        assert!(info.fs.is_read_only());

        let ext = dev_with(8192, &[(1024 + 56, &[0x53, 0xef]), (1024 + 120, b"root")]);
        let info = probe(&ext).unwrap();
        assert_eq!((info.fs, info.label.as_str(), info.fs.mount_type()), (FsType::Ext, "root", "ext4"));
        assert!(!info.fs.is_read_only());

        let fat32 = dev_with(
            4096,
            &[(82, b"FAT32   "), (71, b"STICK      "), (67, &[1, 2, 3, 4]), (510, &[0x55, 0xaa])],
        );
        assert_eq!(
            probe(&fat32).unwrap(),
            FsInfo { fs: FsType::Vfat, id: "vfat:01020304".into(), label: "STICK".into() }
        );
        let fat16 = dev_with(4096, &[(54, b"FAT16   "), (510, &[0x55, 0xaa])]);
        assert_eq!(probe(&fat16).unwrap().fs, FsType::Vfat);

        assert_eq!(probe(&dev_with(4096, &[(3, b"EXFAT   ")])).unwrap().fs, FsType::Exfat);
        assert_eq!(probe(&dev_with(4096, &[(3, b"NTFS    ")])).unwrap().fs.mount_type(), "ntfs3");
        assert_eq!(probe(&dev_with(70000, &[(0, b"hsqs")])).unwrap().fs, FsType::Squashfs);
        assert_eq!(probe(&dev_with(70000, &[(1024, &[0xe2, 0xe1, 0xf5, 0xe0])])).unwrap().fs, FsType::Erofs);
        assert_eq!(probe(&dev_with(70000, &[(0, b"XFSB")])).unwrap().fs, FsType::Xfs);
        assert_eq!(probe(&dev_with(70000, &[(65536 + 64, b"_BHRfS_M")])).unwrap().fs, FsType::Btrfs);
        let udf = dev_with(65536, &[(32769, b"BEA01"), (32768 + 2048 + 1, b"NSR02")]);
        assert_eq!(probe(&udf).unwrap().fs, FsType::Udf);
    }

    #[test]
    fn min_io_sizes() {
        let iso = dev_with(65536, &[(32769, b"CD001")]);
        assert_eq!(min_io_size(&iso, &probe(&iso).unwrap()), 2048);
        let ext1k = dev_with(8192, &[(1024 + 56, &[0x53, 0xef]), (1024 + 24, &[0, 0, 0, 0])]);
        assert_eq!(min_io_size(&ext1k, &probe(&ext1k).unwrap()), 1024);
        let ext4k = dev_with(8192, &[(1024 + 56, &[0x53, 0xef]), (1024 + 24, &[2, 0, 0, 0])]);
        assert_eq!(min_io_size(&ext4k, &probe(&ext4k).unwrap()), 4096);
        let bogus = dev_with(8192, &[(1024 + 56, &[0x53, 0xef]), (1024 + 24, &[0xff, 0, 0, 0])]);
        assert_eq!(min_io_size(&bogus, &probe(&bogus).unwrap()), 512);
        let fat = dev_with(4096, &[(82, b"FAT32   "), (11, &[0, 2]), (510, &[0x55, 0xaa])]);
        assert_eq!(min_io_size(&fat, &probe(&fat).unwrap()), 512);
    }

    #[test]
    fn same_filesystem_same_id_whatever_the_device() {
        let a = dev_with(65536, &[(32769, b"CD001"), (32768 + 40, b"X")]);
        let b = dev_with(131072, &[(32769, b"CD001"), (32768 + 40, b"X")]);
        assert_eq!(probe(&a).unwrap().id, probe(&b).unwrap().id);
    }

    #[test]
    fn nothing_tiny_or_blank_is_recognised() {
        assert_eq!(probe(&MemDev::new(vec![])), None);
        assert_eq!(probe(&MemDev::new(vec![0u8; 100])), None);
        assert_eq!(probe(&MemDev::new(vec![0u8; 200_000])), None);
        // A boot signature alone (an MBR) is not a FAT filesystem.
        assert_eq!(probe(&dev_with(4096, &[(510, &[0x55, 0xaa])])), None);
    }

    /// exFAT's label walk follows offsets and a FAT chain taken from the
    /// boot sector: garbage there (and in the chain) reads no label, or a
    /// short one, and never panics or reads without bound.
    #[test]
    fn exfat_label_walk_survives_garbage() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut data = vec![0u8; 64 * 1024];
            for b in data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            data[3..11].copy_from_slice(b"EXFAT   ");
            // Small shifts and a root cluster inside the image, so the
            // walk gets past the first checks.
            data[108] = 9;
            data[109] = (x % 4) as u8;
            data[96..100].copy_from_slice(&((x % 40) as u32).to_le_bytes());
            let info = probe(&MemDev::new(data)).expect("the magic alone makes it exFAT");
            assert_eq!(info.fs, FsType::Exfat);
            assert!(info.label.chars().count() <= 11);
        }
    }
}
