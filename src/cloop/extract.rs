//! Whole-image decoding in parallel, delivered in block order.
//!
//! Design: `threads` workers each own a [`Decoder`] and claim the next block
//! number from a shared counter, but only after taking a free buffer from a
//! pool of `2 × threads` block buffers. The calling thread receives decoded
//! blocks, reorders them, hands each to a sink in block order and returns
//! the buffer to the pool. Because a block number is claimed only by a
//! worker already holding a buffer, the lowest block not yet delivered is
//! always being decoded, so the pipeline cannot deadlock; memory is bounded
//! by `2 × threads × block_size` plus one compressed block per worker.
//!
//! A failed block is delivered in order like any other, so a sink that
//! stops at the first error (extraction) has written everything before it,
//! and one that carries on (verification) sees every bad block.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use super::codec::Decoder;
use super::error::Error;
use super::reader::Image;
use crate::progress::Progress;

/// What the sink wants after a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Free block buffers; `None` from `take` once the run is stopping.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    ready: Condvar,
    stop: AtomicBool,
}

impl Pool {
    fn take(&self) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            if let Some(buf) = free.pop() {
                return Some(buf);
            }
            free = self.ready.wait(free).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put(&self, buf: Vec<u8>) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        self.ready.notify_one();
    }

    fn stop(&self) {
        let _guard = self.free.lock().unwrap_or_else(|e| e.into_inner());
        self.stop.store(true, Ordering::Release);
        self.ready.notify_all();
    }
}

type Decoded = (u64, Result<(Vec<u8>, usize), Error>);

/// Decodes every block of `image` with `threads` workers and calls
/// `sink(block, data)` in block order, where `data` is the block's valid
/// bytes or its error. Stops early when the sink says so.
pub fn decode_in_order<F>(image: &Image, threads: usize, mut sink: F)
where
    F: FnMut(u64, Result<&[u8], Error>) -> Flow,
{
    let n = image.info().num_blocks;
    if n == 0 {
        return;
    }
    let threads = threads.clamp(1, 256).min(usize::try_from(n).unwrap_or(usize::MAX));
    let block_size = image.info().block_size as usize;
    let pool = Pool {
        free: Mutex::new((0..2 * threads).map(|_| vec![0u8; block_size]).collect()),
        ready: Condvar::new(),
        stop: AtomicBool::new(false),
    };
    let next = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel::<Decoded>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (pool, next) = (&pool, &next);
            scope.spawn(move || worker(image, pool, next, &tx));
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0;
        'receive: for (block, result) in rx.iter() {
            pending.insert(block, result);
            while let Some(result) = pending.remove(&want) {
                let flow = match result {
                    Ok((buf, valid)) => {
                        let flow = sink(want, Ok(&buf[..valid]));
                        pool.put(buf);
                        flow
                    }
                    Err(e) => sink(want, Err(e)),
                };
                want += 1;
                if flow == Flow::Stop || want == n {
                    break 'receive;
                }
            }
        }
        pool.stop();
    });
}

fn worker(image: &Image, pool: &Pool, next: &AtomicU64, tx: &mpsc::Sender<Decoded>) {
    let n = image.info().num_blocks;
    let mut decoder = Decoder::new();
    while let Some(mut buf) = pool.take() {
        let block = next.fetch_add(1, Ordering::Relaxed);
        if block >= n {
            pool.put(buf);
            return;
        }
        let message = match image.read_block(block, &mut decoder, &mut buf) {
            Ok(valid) => (block, Ok((buf, valid))),
            Err(e) => {
                pool.put(buf);
                (block, Err(e))
            }
        };
        if tx.send(message).is_err() {
            return;
        }
    }
}

/// Why an extraction stopped.
#[derive(Debug)]
pub enum ExtractError {
    /// The image is corrupt (or unreadable) at some block.
    Read(Error),
    /// Writing the output failed.
    Write(io::Error),
}

impl std::fmt::Display for ExtractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExtractError::Read(e) => e.fmt(f),
            ExtractError::Write(e) => write!(f, "write error: {e}"),
        }
    }
}

impl std::error::Error for ExtractError {}

/// Writes the whole uncompressed image to `out` (exactly `info().size`
/// bytes), decoding with `threads` workers. Returns the bytes written; on
/// error, everything before the failing block has been written.
pub fn extract(
    image: &Image,
    out: &mut dyn Write,
    threads: usize,
    progress: &mut Progress,
) -> Result<u64, ExtractError> {
    let size = image.info().size;
    let mut written = 0u64;
    let mut failure = None;
    decode_in_order(image, threads, |_, data| {
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                failure = Some(ExtractError::Read(e));
                return Flow::Stop;
            }
        };
        // The last block of a padded format carries bytes past the recorded
        // original size; they are not part of the image.
        let take = (data.len() as u64).min(size - written) as usize;
        if let Err(e) = out.write_all(&data[..take]) {
            failure = Some(ExtractError::Write(e));
            return Flow::Stop;
        }
        written += take as u64;
        progress.update(written, None);
        Flow::Continue
    });
    if let Some(e) = failure {
        if let ExtractError::Read(_) = e {
            // Keep everything before the bad block; the read error is the one to report.
            let _ = out.flush();
        }
        return Err(e);
    }
    out.flush().map_err(ExtractError::Write)?;
    progress.finish(written, None);
    Ok(written)
}
