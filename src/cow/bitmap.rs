//! The cowfile bitmap: bit `b` (byte `b >> 3`, bit `b & 7`, LSB first) says
//! whether 1 KiB block `b` of the rdofile lives in the cowfile (docs/formats.md, "Geometry").
//!
//! It is held whole in memory (1 bit per KiB: 128 KiB for a 1 GiB rdofile,
//! capped by [`super::header::MAX_MAPSIZE`]) together with its population
//! count, so `cowused` is always at hand. Bits at and beyond `numblocks`
//! (padding up to `mapsize`) are zero in every valid file; [`Bitmap::from_disk`]
//! refuses a bitmap that says otherwise, because cowmerge and cowpack would
//! act on those bits.

use super::error::FormatError;
use super::header::HEAD_BLOCK;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    bytes: Vec<u8>,
    numblocks: u64,
    count: u64,
}

impl Bitmap {
    /// An empty bitmap of `mapsize` bytes for `numblocks` blocks.
    pub fn new(numblocks: u64, mapsize: usize) -> Bitmap {
        Bitmap { bytes: vec![0; mapsize], numblocks, count: 0 }
    }

    /// A bitmap read from a cowfile; fails on bits beyond `numblocks`.
    pub fn from_disk(bytes: Vec<u8>, numblocks: u64) -> Result<Bitmap, FormatError> {
        let map = Bitmap::from_disk_unchecked(bytes, numblocks);
        let beyond = map.beyond_end().next();
        match beyond {
            Some(block) => Err(FormatError::BitBeyondEnd {
                block,
                rdoblocks: numblocks,
                offset: HEAD_BLOCK + (block >> 3),
            }),
            None => Ok(map),
        }
    }

    /// As read, bits beyond the end included (for cowrepair, which clears them).
    pub fn from_disk_unchecked(bytes: Vec<u8>, numblocks: u64) -> Bitmap {
        let count = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
        Bitmap { bytes, numblocks, count }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn numblocks(&self) -> u64 {
        self.numblocks
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `cowused` rule of a clean file (the driver's "inconsistent cowfile admi").
    pub fn check_count(&self, cowused: u64, cowused_offset: u64) -> Result<(), FormatError> {
        if cowused != self.count {
            return Err(FormatError::Inconsistent { cowused, counted: self.count, offset: cowused_offset });
        }
        Ok(())
    }

    pub fn get(&self, block: u64) -> bool {
        let byte = (block >> 3) as usize;
        byte < self.bytes.len() && self.bytes[byte] & (1 << (block & 7)) != 0
    }

    /// Sets one bit; true if it was clear. Blocks past the bitmap are ignored.
    pub fn set(&mut self, block: u64) -> bool {
        let byte = (block >> 3) as usize;
        let mask = 1 << (block & 7);
        match self.bytes.get_mut(byte) {
            Some(b) if *b & mask == 0 => {
                *b |= mask;
                self.count += 1;
                true
            }
            _ => false,
        }
    }

    /// Sets `[start, end)`; calls `changed(byte_index, newly_set_bits)` once
    /// per byte that changed. Returns the number of newly set bits.
    pub fn set_range(&mut self, start: u64, end: u64, mut changed: impl FnMut(usize, u8)) -> u64 {
        let mut added = 0;
        let mut block = start;
        while block < end {
            let byte = (block >> 3) as usize;
            let Some(b) = self.bytes.get_mut(byte) else { break };
            let first = (block & 7) as u32;
            let last = ((end - (block & !7)).min(8)) as u32;
            let mask = (((1u32 << (last - first)) - 1) << first) as u8;
            let new = mask & !*b;
            if new != 0 {
                *b |= new;
                added += u64::from(new.count_ones());
                changed(byte, new);
            }
            block = (block & !7) + 8;
        }
        self.count += added;
        added
    }

    pub fn clear(&mut self, block: u64) -> bool {
        let byte = (block >> 3) as usize;
        let mask = 1 << (block & 7);
        match self.bytes.get_mut(byte) {
            Some(b) if *b & mask != 0 => {
                *b &= !mask;
                self.count -= 1;
                true
            }
            _ => false,
        }
    }

    /// The value of bit `start` and how many bits from `start` (up to `end`)
    /// share it: the unit of I/O coalescing.
    pub fn run(&self, start: u64, end: u64) -> (bool, u64) {
        let value = self.get(start);
        let whole = if value { 0xff } else { 0x00 };
        let mut block = start + 1;
        while block < end {
            if block & 7 == 0 && end - block >= 8 && self.byte(block) == whole {
                block += 8;
                continue;
            }
            if self.get(block) != value {
                break;
            }
            block += 1;
        }
        (value, block - start)
    }

    fn byte(&self, block: u64) -> u8 {
        self.bytes.get((block >> 3) as usize).copied().unwrap_or(0)
    }

    /// Runs of set bits over the whole bitmap (padding included), in order,
    /// as `(first_block, count)`.
    pub fn set_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let nbits = self.bytes.len() as u64 * 8;
        let mut block = 0;
        std::iter::from_fn(move || {
            while block < nbits {
                if block & 7 == 0 && self.byte(block) == 0 {
                    block += 8;
                    continue;
                }
                let (set, len) = self.run(block, nbits);
                let start = block;
                block += len;
                if set {
                    return Some((start, len));
                }
            }
            None
        })
    }

    /// The set runs cut into pieces of at most `max` units, in order, as
    /// `(first_block, count, units_before)`: the walk every copy of cowfile
    /// data takes (merging into the rdofile, packing, unpacking), where
    /// `units_before` is the piece's position in a packed savefile.
    pub fn pieces(&self, max: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let max = max.max(1);
        let mut before = 0;
        self.set_runs()
            .flat_map(move |(first, count)| {
                (first..first + count).step_by(max as usize).map(move |b| (b, (first + count - b).min(max)))
            })
            .map(move |(block, n)| {
                before += n;
                (block, n, before - n)
            })
    }

    /// Set bits at or beyond `numblocks`.
    pub fn beyond_end(&self) -> impl Iterator<Item = u64> + '_ {
        let nbits = self.bytes.len() as u64 * 8;
        (self.numblocks..nbits).filter(|&b| self.get(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsb_first_layout_matches_the_vectors() {
        // clean_64.cow: blocks 5, 100..=102, 299 → bytes 0x20 @0, 0x70 @12, 0x08 @37.
        let mut map = Bitmap::new(300, 1024);
        for b in [5, 100, 101, 102, 299] {
            assert!(map.set(b));
        }
        assert!(!map.set(5));
        assert_eq!((map.bytes()[0], map.bytes()[12], map.bytes()[37]), (0x20, 0x70, 0x08));
        assert_eq!(map.count(), 5);
        assert_eq!(map.set_runs().collect::<Vec<_>>(), vec![(5, 1), (100, 3), (299, 1)]);
    }

    #[test]
    fn set_range_counts_and_reports_changed_bytes() {
        let mut map = Bitmap::new(100, 1024);
        map.set(10);
        let mut changed = Vec::new();
        assert_eq!(map.set_range(3, 21, |b, new| changed.push((b, new))), 17);
        assert_eq!(changed, vec![(0, 0xf8), (1, 0xfb), (2, 0x1f)]);
        assert_eq!(map.count(), 18);
        assert!(!map.get(2) && map.get(3) && map.get(20) && !map.get(21));
        assert_eq!(map.set_range(3, 21, |_, _| panic!("nothing changes")), 0);
        assert_eq!(map.set_range(7, 8, |_, _| {}), 0);
        assert_eq!(map.set_range(64, 64, |_, _| panic!("empty")), 0);
    }

    #[test]
    fn runs_coalesce_across_whole_bytes() {
        let mut map = Bitmap::new(1000, 1024);
        map.set_range(3, 500, |_, _| {});
        assert_eq!(map.run(0, 1000), (false, 3));
        assert_eq!(map.run(3, 1000), (true, 497));
        assert_eq!(map.run(10, 20), (true, 10));
        assert_eq!(map.run(500, 1000), (false, 500));
    }

    #[test]
    fn bits_beyond_the_end_are_refused_with_their_offset() {
        let mut bytes = vec![0u8; 1024];
        bytes[37] = 0x10; // block 300 of a 300-block rdofile
        let err = Bitmap::from_disk(bytes.clone(), 300).unwrap_err();
        assert_eq!(err, FormatError::BitBeyondEnd { block: 300, rdoblocks: 300, offset: 1024 + 37 });
        let mut map = Bitmap::from_disk_unchecked(bytes, 300);
        assert_eq!(map.beyond_end().collect::<Vec<_>>(), vec![300]);
        assert!(map.clear(300));
        assert_eq!(map.count(), 0);
        assert!(map.check_count(1, 48).is_err());
    }

    #[test]
    fn pieces_cut_runs_and_count_what_came_before() {
        let mut m = Bitmap::new(64, 1024);
        for b in [1, 2, 3, 4, 5, 9, 20, 21] {
            m.set(b);
        }
        let got: Vec<_> = m.pieces(2).collect();
        assert_eq!(got, vec![(1, 2, 0), (3, 2, 2), (5, 1, 4), (9, 1, 5), (20, 2, 6)]);
        assert_eq!(m.pieces(100).map(|p| p.1).sum::<u64>(), m.count());
    }
}
