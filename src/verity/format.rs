//! dm-verity's on-disk format, version 1 (what `veritysetup format` writes):
//! the 512-byte superblock at offset 0 of the tree file, the tree's
//! geometry, and the salted SHA-256 that every level uses.
//!
//! Only the parameters cloopbox writes and accepts are supported: hash type
//! 1 (salt prepended, digests padded to a power of two), `sha256`, 4096-byte
//! data and hash blocks. Anything else in a superblock is an error naming
//! the field and its offset; docs/verity.md describes the format.

use sha2::{Digest as _, Sha256};

/// Data and hash block size.
pub const BLOCK: usize = 4096;
/// `BLOCK` as a u64, for offsets.
pub const BLOCK_U64: u64 = BLOCK as u64;
/// SHA-256 digest size; already a power of two, so no padding per digest.
pub const DIGEST: usize = 32;
/// Digests per hash block.
pub const PER_BLOCK: u64 = (BLOCK / DIGEST) as u64;
/// log2(PER_BLOCK).
const PER_BLOCK_BITS: u32 = PER_BLOCK.trailing_zeros();
/// Bytes of the superblock (the rest of the tree file's first block is
/// not part of the format).
pub const SUPERBLOCK_LEN: usize = 512;
/// The largest salt the superblock has room for.
pub const MAX_SALT: usize = 256;
/// The salt cloopbox generates.
pub const DEFAULT_SALT_LEN: usize = 32;
/// The most data blocks accepted: 2^52 blocks of 4 KiB is 2^64 bytes.
pub const MAX_DATA_BLOCKS: u64 = 1 << 52;

const SIGNATURE: &[u8; 8] = b"verity\0\0";
const ALGORITHM: &[u8] = b"sha256";

/// A SHA-256 digest.
pub type Digest = [u8; DIGEST];

/// SHA-256 with the salt already fed in: `salted.hash(block)` is
/// `sha256(salt || block)`, the hash of format version 1.
///
/// The digest of an all-zero 4 KiB block is computed once: filesystem
/// images are often mostly zeros (60 % of the benchmark's root
/// filesystem), and comparing a block with zero is ten times cheaper than
/// hashing it. It is the same digest, so nothing is trusted that was not
/// checked.
#[derive(Clone)]
pub struct Salted {
    state: Sha256,
    zero: Digest,
}

impl Salted {
    pub fn new(salt: &[u8]) -> Self {
        let mut state = Sha256::new();
        state.update(salt);
        let mut h = state.clone();
        h.update([0u8; BLOCK]);
        Salted { state, zero: h.finalize().into() }
    }

    pub fn hash(&self, block: &[u8]) -> Digest {
        if block.len() == BLOCK && crate::cache::is_zero(block) {
            return self.zero;
        }
        let mut h = self.state.clone();
        h.update(block);
        h.finalize().into()
    }
}

/// One level of the tree: where it starts in the tree file (in blocks)
/// and how many hash blocks it has. Level 0 hashes the data blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub start: u64,
    pub blocks: u64,
}

/// Where every level of a tree over `data_blocks` blocks lives, as
/// cryptsetup lays it out: the superblock in block 0, then the levels from
/// the top (one block) down to level 0. A single data block has no levels:
/// its own digest is the root hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub data_blocks: u64,
    /// `levels[0]` hashes the data; the last level has one block.
    pub levels: Vec<Level>,
    /// Blocks of the whole tree file, superblock included.
    pub total_blocks: u64,
}

impl Geometry {
    /// `None` for 0 or more than [`MAX_DATA_BLOCKS`] data blocks.
    pub fn new(data_blocks: u64) -> Option<Geometry> {
        if data_blocks == 0 || data_blocks > MAX_DATA_BLOCKS {
            return None;
        }
        let mut count = 0u32;
        while PER_BLOCK_BITS * count < 64 && (data_blocks - 1) >> (PER_BLOCK_BITS * count) != 0 {
            count += 1;
        }
        let mut levels = vec![Level { start: 0, blocks: 0 }; count as usize];
        let mut position = 1u64;
        for i in (0..count).rev() {
            let shift = PER_BLOCK_BITS * (i + 1);
            let blocks = if shift >= 64 { 1 } else { data_blocks.div_ceil(1u64 << shift) };
            levels[i as usize] = Level { start: position, blocks };
            position += blocks;
        }
        Some(Geometry { data_blocks, levels, total_blocks: position })
    }

    /// Data blocks covering `size` bytes (a partial last block counts; it
    /// is hashed zero-padded).
    pub fn for_size(size: u64) -> Option<Geometry> {
        Geometry::new(size.div_ceil(BLOCK_U64))
    }

    /// The tree file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.total_blocks * BLOCK_U64
    }

    /// First block of level 0 (the end of the file for a one-block tree).
    pub fn leaf_start(&self) -> u64 {
        self.levels.first().map_or(self.total_blocks, |l| l.start)
    }
}

/// A superblock field that is not what format version 1 with our
/// parameters allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub offset: usize,
    pub what: String,
}

/// The superblock's variable fields; the others are fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Superblock {
    /// Parses and validates every field of the 512 bytes at the start of
    /// a tree file.
    pub fn parse(b: &[u8; SUPERBLOCK_LEN]) -> Result<Superblock, FieldError> {
        let bad = |offset: usize, what: String| Err(FieldError { offset, what });
        if &b[0..8] != SIGNATURE {
            return bad(0, format!("signature is {:02x?}, not \"verity\\0\\0\"", &b[0..8]));
        }
        match le32(b, 8) {
            1 => {}
            v => return bad(8, format!("superblock version {v}; only version 1 is known")),
        }
        match le32(b, 12) {
            1 => {}
            0 => return bad(12, "hash type 0 (Chrome OS) is not supported; only type 1".into()),
            t => return bad(12, format!("unknown hash type {t}; only type 1 is supported")),
        }
        let uuid: [u8; 16] = b[16..32].try_into().expect("16 bytes");
        let alg = &b[32..64];
        let name_len = alg.iter().position(|&c| c == 0).unwrap_or(alg.len());
        if &alg[..name_len] != ALGORITHM || alg[name_len..].iter().any(|&c| c != 0) {
            let shown = String::from_utf8_lossy(&alg[..name_len]);
            return bad(32, format!("hash algorithm '{shown}'; only sha256 is supported"));
        }
        for (at, what) in [(64, "data block size"), (68, "hash block size")] {
            let v = le32(b, at);
            if v != BLOCK as u32 {
                return bad(at, format!("{what} {v}; only {BLOCK} is supported"));
            }
        }
        let data_blocks = u64::from_le_bytes(b[72..80].try_into().expect("8 bytes"));
        if data_blocks == 0 || data_blocks > MAX_DATA_BLOCKS {
            return bad(72, format!("{data_blocks} data blocks; expected 1 to {MAX_DATA_BLOCKS}"));
        }
        let salt_len = usize::from(u16::from_le_bytes([b[80], b[81]]));
        if salt_len > MAX_SALT {
            return bad(80, format!("salt size {salt_len} is larger than {MAX_SALT}"));
        }
        if let Some(i) = b[82..88].iter().position(|&c| c != 0) {
            return bad(82 + i, "padding after the salt size is not zero".into());
        }
        if let Some(i) = b[88 + salt_len..88 + MAX_SALT].iter().position(|&c| c != 0) {
            return bad(88 + salt_len + i, format!("salt field is not zero after its {salt_len} bytes"));
        }
        if let Some(i) = b[88 + MAX_SALT..].iter().position(|&c| c != 0) {
            return bad(88 + MAX_SALT + i, "padding at the end of the superblock is not zero".into());
        }
        Ok(Superblock { uuid, data_blocks, salt: b[88..88 + salt_len].to_vec() })
    }

    /// The 512 bytes `veritysetup format` would write for these fields.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_LEN] {
        assert!(self.salt.len() <= MAX_SALT, "salt length checked by the caller");
        let mut b = [0u8; SUPERBLOCK_LEN];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM);
        b[64..68].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[68..72].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        b
    }
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (either case); `what` names the value in the error.
pub fn from_hex(text: &str, what: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return Err(format!("{what} '{text}': odd number of hex digits"));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|p| match (digit(p[0]), digit(p[1])) {
            (Some(h), Some(l)) => Ok(h << 4 | l),
            _ => Err(format!("{what} '{text}': not a hex string")),
        })
        .collect()
}

/// A root hash as given on a command line: 64 hex digits.
pub fn parse_root_hash(text: &str) -> Result<Digest, String> {
    let bytes = from_hex(text, "root hash")?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!("root hash '{}': {} bytes, a sha256 root hash has {DIGEST}", text.trim(), b.len())
    })
}

/// A salt as given on a command line: hex, at most 256 bytes; `-` is the
/// empty salt (veritysetup's spelling).
pub fn parse_salt(text: &str) -> Result<Vec<u8>, String> {
    if text == "-" {
        return Ok(Vec::new());
    }
    let salt = from_hex(text, "salt")?;
    if salt.len() > MAX_SALT {
        return Err(format!("salt: {} bytes, at most {MAX_SALT}", salt.len()));
    }
    Ok(salt)
}

/// The UUID we write: derived from the salt (RFC 9562 version 8), so a
/// reproducible build gets a reproducible tree file.
pub fn uuid_for(salt: &[u8]) -> [u8; 16] {
    let d = Salted::new(b"cloopbox verity uuid\0").hash(salt);
    let mut u: [u8; 16] = d[..16].try_into().expect("16 bytes");
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_veritysetup() {
        // veritysetup format on 300 blocks: 4 hash blocks (3 + 1), 20480 bytes.
        let g = Geometry::new(300).unwrap();
        assert_eq!(g.levels, vec![Level { start: 2, blocks: 3 }, Level { start: 1, blocks: 1 }]);
        assert_eq!(g.file_len(), 20480);
        // One block: no levels, the superblock alone.
        let g = Geometry::new(1).unwrap();
        assert!(g.levels.is_empty());
        assert_eq!(g.file_len(), 4096);
        assert_eq!(Geometry::new(128).unwrap().levels, vec![Level { start: 1, blocks: 1 }]);
        assert_eq!(Geometry::new(129).unwrap().levels.len(), 2);
        let big = Geometry::new(128 * 128 + 1).unwrap();
        assert_eq!(big.levels.iter().map(|l| l.blocks).collect::<Vec<_>>(), vec![129, 2, 1]);
        assert!(Geometry::new(0).is_none());
        assert!(Geometry::new(MAX_DATA_BLOCKS + 1).is_none());
        assert_eq!(Geometry::new(MAX_DATA_BLOCKS).unwrap().levels.len(), 8);
        assert_eq!(Geometry::for_size(4097).unwrap().data_blocks, 2);
    }

    #[test]
    fn superblock_round_trips_and_every_field_is_checked() {
        let sb = Superblock { uuid: uuid_for(b"s"), data_blocks: 300, salt: vec![0, 0x11] };
        let bytes = sb.to_bytes();
        assert_eq!(Superblock::parse(&bytes).unwrap(), sb);
        let mutate = |at: usize, v: u8| {
            let mut b = bytes;
            b[at] = v;
            Superblock::parse(&b).unwrap_err()
        };
        assert_eq!(mutate(0, b'V').offset, 0);
        assert_eq!(mutate(8, 2).offset, 8);
        assert!(mutate(12, 0).what.contains("Chrome OS"));
        assert_eq!(mutate(32, b'S').offset, 32);
        assert_eq!(mutate(40, b'x').offset, 32);
        assert_eq!(mutate(65, 0x20).offset, 64);
        assert_eq!(mutate(69, 0x20).offset, 68);
        let mut zero_blocks = bytes;
        zero_blocks[72..80].fill(0);
        assert_eq!(Superblock::parse(&zero_blocks).unwrap_err().offset, 72);
        assert_eq!(mutate(81, 2).offset, 80);
        assert_eq!(mutate(85, 1).offset, 85);
        assert_eq!(mutate(90, 1).offset, 90);
        assert_eq!(mutate(511, 1).offset, 511);
    }

    #[test]
    fn hex_salts_and_root_hashes() {
        assert_eq!(from_hex("00aF", "x").unwrap(), vec![0, 0xaf]);
        assert!(from_hex("0", "x").is_err());
        assert!(from_hex("zz", "x").is_err());
        assert_eq!(parse_salt("-").unwrap(), Vec::<u8>::new());
        assert!(parse_salt(&"00".repeat(257)).is_err());
        let root = "941a5fa7043e42c7bceae2b522d6a01107b9772f45997947570cae1f7039ddc1";
        assert_eq!(to_hex(&parse_root_hash(root).unwrap()), root);
        assert!(parse_root_hash(&root[2..]).unwrap_err().contains("31 bytes"));
    }

    #[test]
    fn salted_hash_is_sha256_of_salt_then_block() {
        let d = Salted::new(&[0]).hash(&[1, 2]);
        let want: Digest = Sha256::digest([0u8, 1, 2]).into();
        assert_eq!(d, want);
        // The zero shortcut gives the real digest, and only for zeros.
        let mut block = vec![0u8; BLOCK];
        let salted = Salted::new(b"s");
        let real = |b: &[u8]| -> Digest { Sha256::digest([&b"s"[..], b].concat()).into() };
        assert_eq!(salted.hash(&block), real(&block));
        for at in [0, 15, 16, 4095] {
            block[at] = 1;
            assert_eq!(salted.hash(&block), real(&block), "{at}");
            block[at] = 0;
        }
    }
}
