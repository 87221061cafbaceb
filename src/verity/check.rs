//! Offline verification: every data block of an image against a tree and
//! a root hash (`cloopbox verity`, `cloopinfo --verify --root-hash`).
//!
//! A cloop image is decoded in parallel and in order
//! ([`decode_in_order`]); a raw image is read sequentially. Hashing runs
//! on the calling thread in block order, so memory stays bounded. A block
//! that cannot be decoded is reported as bad with the decoder's error, and
//! so is every data block it overlaps; the check goes on to the end.

use std::collections::VecDeque;
use std::path::Path;

use super::format::{Digest, BLOCK, BLOCK_U64};
use super::tree::Tree;
use crate::blockdev::{FileDev, ReadAt};
use crate::cloop::error::Error as CloopError;
use crate::cloop::extract::{decode_in_order, Flow};
use crate::cloop::reader::Image;
use crate::progress::Progress;

/// Bad blocks listed in a report; more are only counted.
pub const MAX_LISTED: usize = 100;

/// One data block that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad {
    pub block: u64,
    pub offset: u64,
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub data_blocks: u64,
    pub bad_count: u64,
    /// The first [`MAX_LISTED`] bad blocks, in order.
    pub bad: Vec<Bad>,
}

/// Feeds an image's bytes in order and checks each 4 KiB block.
struct Stream<'t> {
    tree: &'t Tree,
    carry: Vec<u8>,
    /// Bytes fed so far.
    pos: u64,
    /// Byte ranges that could not be read, with why.
    unreadable: VecDeque<(u64, u64, String)>,
    next: u64,
    report: Report,
}

impl Stream<'_> {
    fn bad(&mut self, block: u64, error: String) {
        self.report.bad_count += 1;
        if self.report.bad.len() < MAX_LISTED {
            self.report.bad.push(Bad { block, offset: block * BLOCK_U64, error });
        }
    }

    fn block(&mut self, data: &[u8]) {
        let index = self.next;
        self.next += 1;
        let (start, end) = (index * BLOCK_U64, (index + 1) * BLOCK_U64);
        while self.unreadable.front().is_some_and(|r| r.1 <= start) {
            self.unreadable.pop_front();
        }
        if let Some((_, _, why)) = self.unreadable.front().filter(|r| r.0 < end) {
            let why = why.clone();
            self.bad(index, why);
            return;
        }
        if let Err(e) = self.tree.verify(index, data) {
            self.bad(index, e.to_string());
        }
    }

    fn feed(&mut self, data: &[u8]) {
        let mut carry = std::mem::take(&mut self.carry);
        let _ = super::blocks::<()>(&mut carry, data, |b| {
            self.block(b);
            Ok(())
        });
        self.carry = carry;
        self.pos += data.len() as u64;
    }

    fn feed_unreadable(&mut self, len: u64, why: String) {
        self.unreadable.push_back((self.pos, self.pos + len, why));
        let zeros = vec![0u8; len as usize];
        self.feed(&zeros);
    }

    fn finish(mut self) -> Report {
        if !self.carry.is_empty() {
            let mut last = std::mem::take(&mut self.carry);
            last.resize(BLOCK, 0);
            self.block(&last);
        }
        self.report.data_blocks = self.next;
        self.report
    }
}

/// Verifies every block of `image` (a cloop image, or any other file as
/// raw data) against `tree` and `root`. An error is returned when the
/// check cannot start: the image or the tree cannot be opened, the tree
/// covers another size, or its upper levels do not match `root`.
pub fn verify_image(
    image: &Path,
    tree: &Path,
    root: Digest,
    threads: usize,
    quiet: bool,
) -> Result<Report, String> {
    let cloop = match Image::open(image) {
        Ok(i) => Some(i),
        Err(CloopError::NotCloop { .. }) => None,
        Err(e) => return Err(e.to_string()),
    };
    let raw = match cloop {
        Some(_) => None,
        None => Some(FileDev::open(image).map_err(|e| format!("{}: {e}", image.display()))?),
    };
    let size = cloop.as_ref().map_or_else(|| raw.as_ref().map_or(0, |r| r.size()), |c| c.size());
    let tree = Tree::open(tree, root, size).map_err(|e| e.to_string())?;
    let mut stream = Stream {
        tree: &tree,
        carry: Vec::new(),
        pos: 0,
        unreadable: VecDeque::new(),
        next: 0,
        report: Report::default(),
    };
    let mut progress = Progress::new("verity", Some(size), quiet);
    if let Some(image) = &cloop {
        let info = image.info().clone();
        decode_in_order(image, threads, |block, data| {
            match data {
                Ok(bytes) => stream.feed(bytes),
                Err(e) => {
                    let len = if block + 1 == info.num_blocks {
                        info.size - block * u64::from(info.block_size)
                    } else {
                        info.block_size.into()
                    };
                    stream.feed_unreadable(len, e.to_string());
                }
            }
            progress.update(stream.pos, None);
            Flow::Continue
        });
    } else if let Some(raw) = &raw {
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(buf.len() as u64) as usize;
            match raw.read_at(&mut buf[..n], at) {
                Ok(()) => stream.feed(&buf[..n]),
                Err(e) => stream.feed_unreadable(n as u64, format!("{}: read error: {e}", image.display())),
            }
            at += n as u64;
            progress.update(at, None);
        }
    }
    progress.finish(stream.pos, None);
    Ok(stream.finish())
}
