//! The input side: fixed-size blocks from any reader, with an optional
//! expected length.
//!
//! With an expected length (file size, block-device size or `-s`), exactly
//! that many bytes are read: ending early is [`Error::ShortInput`], and data
//! beyond it is not read but noticed (`excess`), which cloop-utils reports
//! as a warning with exit status 1. Without one, input is read to EOF.
//! Reads from pipes return short counts, so a block is filled in a loop.

use std::io::{ErrorKind, Read};

use super::Error;

pub struct BlockReader<R> {
    reader: R,
    name: String,
    block_size: usize,
    expected: Option<u64>,
    offset: u64,
    done: bool,
}

/// How the input ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputEnd {
    /// Bytes of input used.
    pub bytes: u64,
    /// There was more input than expected; it was ignored.
    pub excess: bool,
}

impl<R: Read> BlockReader<R> {
    pub fn new(reader: R, name: String, block_size: usize, expected: Option<u64>) -> Self {
        Self { reader, name, block_size, expected, offset: 0, done: false }
    }

    /// Fills `buf` (resized to one block) with the next block, zero-padding
    /// a short last block. Returns the number of input bytes in it; 0 means
    /// the input is over.
    pub fn next_block(&mut self, buf: &mut Vec<u8>) -> Result<usize, Error> {
        if self.done {
            return Ok(0);
        }
        let want = match self.expected {
            Some(total) => (total - self.offset).min(self.block_size as u64) as usize,
            None => self.block_size,
        };
        buf.resize(self.block_size, 0);
        let got = self.fill(&mut buf[..want])?;
        buf[got..].fill(0);
        self.offset += got as u64;
        if got < want {
            self.done = true;
            if let Some(expected) = self.expected {
                return Err(Error::ShortInput { path: self.name.clone(), got: self.offset, expected });
            }
        }
        if self.expected == Some(self.offset) {
            self.done = true;
        }
        Ok(got)
    }

    /// Called once [`next_block`](Self::next_block) returned 0: probes for
    /// data past the expected length.
    pub fn finish(&mut self) -> Result<InputEnd, Error> {
        let mut excess = false;
        if self.expected.is_some() {
            let mut probe = [0u8; 1];
            excess = self.fill(&mut probe)? > 0;
        }
        Ok(InputEnd { bytes: self.offset, excess })
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    let offset = self.offset + filled as u64;
                    return Err(Error::Read { path: self.name.clone(), offset, source });
                }
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns at most 3 bytes per read, like a slow pipe.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn blocks(r: &mut BlockReader<impl Read>) -> Result<Vec<(usize, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            match r.next_block(&mut buf)? {
                0 => return Ok(out),
                n => out.push((n, buf)),
            }
        }
    }

    #[test]
    fn short_reads_fill_whole_blocks_and_the_tail_is_zero_padded() {
        let data: Vec<u8> = (1..=10).collect();
        let mut r = BlockReader::new(Trickle(&data), "in".into(), 4, None);
        let got = blocks(&mut r).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (2, vec![9, 10, 0, 0]));
        assert_eq!(r.finish().unwrap(), InputEnd { bytes: 10, excess: false });
    }

    #[test]
    fn expected_length_truncates_and_reports_excess() {
        let data = [7u8; 10];
        let mut r = BlockReader::new(&data[..], "in".into(), 4, Some(6));
        let got = blocks(&mut r).unwrap();
        assert_eq!(got[1], (2, vec![7, 7, 0, 0]));
        assert_eq!(r.finish().unwrap(), InputEnd { bytes: 6, excess: true });
        let mut exact = BlockReader::new(&data[..], "in".into(), 5, Some(10));
        assert_eq!(blocks(&mut exact).unwrap().len(), 2);
        assert!(!exact.finish().unwrap().excess);
    }

    #[test]
    fn input_shorter_than_expected_is_an_error_naming_both_lengths() {
        let data = [1u8; 5];
        let mut r = BlockReader::new(&data[..], "disk.img".into(), 4, Some(9));
        let err = blocks(&mut r).unwrap_err().to_string();
        assert!(err.contains("disk.img") && err.contains('5') && err.contains('9'), "{err}");
    }

    #[test]
    fn empty_input_has_no_blocks() {
        let mut r = BlockReader::new(&[][..], "in".into(), 512, None);
        assert!(blocks(&mut r).unwrap().is_empty());
        let mut r = BlockReader::new(&[][..], "in".into(), 512, Some(0));
        assert!(blocks(&mut r).unwrap().is_empty());
        assert_eq!(r.finish().unwrap(), InputEnd::default());
    }
}
