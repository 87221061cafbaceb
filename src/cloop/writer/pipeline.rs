//! The compression pipeline: read → compress on N workers → hand over in
//! order.
//!
//! ```text
//!            free slots (pool of `in_flight`)
//!   ┌──────────────────────────────────────────────────┐
//!   ▼                                                  │
//! reader ──jobs (seq, slot)──▶ worker × N ──results──▶ caller's sink
//! thread    bounded channel    BlockEncoder   (reorder by seq)
//! ```
//!
//! A slot (input block buffer + output buffer) circulates: the reader fills
//! it, a worker encodes into it, the sink consumes it, and only then does it
//! go back to the reader. With a fixed number of slots, memory is bounded by
//! `in_flight × (block + encoded block)` whatever the image size, and both
//! buffers are reused instead of allocated per block.
//!
//! Shutdown needs no flags: an error in the sink drops the free-slot sender
//! and the result receiver, so the reader's next `recv` and the workers'
//! next `send` fail and every thread unwinds; an error in the reader closes
//! the job channel after the blocks read so far, which then drain.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;

use super::encode::{BlockEncoder, Payload, Settings, ZeroCache};
use super::input::{BlockReader, InputEnd};
use super::Error;
use crate::cloop::codec::Codec;

/// One block as handed to the sink, in input order.
pub struct Block<'a> {
    pub index: u64,
    pub codec: Codec,
    pub data: &'a [u8],
    /// Input bytes in this block (less than the block size only at the end).
    pub input_len: usize,
    /// The uncompressed block as the image holds it (zero-padded at the end).
    pub input: &'a [u8],
}

#[derive(Default)]
struct Slot {
    input: Vec<u8>,
    input_len: usize,
    output: Vec<u8>,
    payload: Option<Payload>,
}

impl Slot {
    fn block(&self, index: u64) -> Block<'_> {
        let (codec, data) = match self.payload {
            Some(Payload::Encoded(codec)) => (codec, &self.output[..]),
            Some(Payload::Raw) | None => (Codec::Stored, &self.input[..]),
        };
        Block { index, codec, data, input_len: self.input_len, input: &self.input }
    }
}

type Job = (u64, Slot);
type Done = Result<Job, Error>;

/// Compresses everything `input` yields and calls `sink` once per block, in
/// order. `threads` workers, `in_flight` slots (at least `threads + 1`).
pub fn run<R, F>(
    input: &mut BlockReader<R>,
    settings: Settings,
    threads: usize,
    in_flight: usize,
    mut sink: F,
) -> Result<InputEnd, Error>
where
    R: Read + Send,
    F: FnMut(Block<'_>) -> Result<(), Error>,
{
    let threads = threads.max(1);
    let in_flight = in_flight.max(threads + 1);
    let zeros = ZeroCache::default();
    let (free_tx, free_rx) = mpsc::channel::<Slot>();
    for _ in 0..in_flight {
        free_tx.send(Slot::default()).expect("the receiver is alive");
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(in_flight);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();

    std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_blocks(input, free_rx, job_tx));
        for _ in 0..threads {
            let (jobs, done, zeros) = (&job_rx, done_tx.clone(), &zeros);
            scope.spawn(move || work(BlockEncoder::new(settings, zeros), jobs, done));
        }
        drop(done_tx);
        let sunk = deliver_in_order(done_rx, free_tx, &mut sink);
        let read = reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        // A sink error comes first: it is why the reader stopped.
        let blocks = sunk?;
        let end = read?;
        debug_assert_eq!(blocks, end.blocks);
        Ok(end.input)
    })
}

struct ReadEnd {
    input: InputEnd,
    blocks: u64,
}

fn read_blocks<R: Read>(
    input: &mut BlockReader<R>,
    free: Receiver<Slot>,
    jobs: SyncSender<Job>,
) -> Result<ReadEnd, Error> {
    let mut seq = 0;
    // A closed channel means the consumer stopped; its error is reported.
    while let Ok(mut slot) = free.recv() {
        slot.input_len = input.next_block(&mut slot.input)?;
        if slot.input_len == 0 {
            return Ok(ReadEnd { input: input.finish()?, blocks: seq });
        }
        if jobs.send((seq, slot)).is_err() {
            break;
        }
        seq += 1;
    }
    Ok(ReadEnd { input: InputEnd::default(), blocks: seq })
}

fn work(mut encoder: BlockEncoder<'_>, jobs: &Mutex<Receiver<Job>>, done: Sender<Done>) {
    loop {
        // Hold the lock only to receive, never while encoding.
        let job = jobs.lock().map(|rx| rx.recv());
        let Ok(Ok((seq, mut slot))) = job else { return };
        let result = encoder
            .encode(&slot.input, &mut slot.output)
            .map(|payload| {
                slot.payload = Some(payload);
                (seq, slot)
            })
            .map_err(|source| Error::Encode { block: seq, source });
        if done.send(result).is_err() {
            return;
        }
    }
}

fn deliver_in_order<F>(done: Receiver<Done>, free: Sender<Slot>, sink: &mut F) -> Result<u64, Error>
where
    F: FnMut(Block<'_>) -> Result<(), Error>,
{
    let mut waiting = BTreeMap::new();
    let mut next = 0u64;
    for result in done {
        let (seq, slot) = result?;
        waiting.insert(seq, slot);
        while let Some(slot) = waiting.remove(&next) {
            sink(slot.block(next))?;
            next += 1;
            // The reader may have finished; a lost slot is then harmless.
            let _ = free.send(slot);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloop::codec::{EncodeOptions, ZlibEffort};
    use crate::cloop::writer::format::Format;

    fn settings() -> Settings {
        Settings {
            format: Format::V2,
            codec: Codec::Zlib,
            options: EncodeOptions { zlib: ZlibEffort::Zlib(6), ..Default::default() },
        }
    }

    fn collect(data: &[u8], bs: usize, threads: usize) -> Result<(Vec<Vec<u8>>, InputEnd), Error> {
        let mut r = BlockReader::new(data, "in".into(), bs, None);
        let mut blocks = Vec::new();
        let end = run(&mut r, settings(), threads, threads * 2, |b| {
            assert_eq!(b.index as usize, blocks.len());
            blocks.push(b.data.to_vec());
            Ok(())
        })?;
        Ok((blocks, end))
    }

    #[test]
    fn order_and_bytes_do_not_depend_on_the_thread_count() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 7).collect();
        let (one, end) = collect(&data, 4096, 1).unwrap();
        assert_eq!(end, InputEnd { bytes: 300_000, excess: false });
        assert_eq!(one.len(), 74);
        for threads in [2, 3, 8] {
            assert_eq!(collect(&data, 4096, threads).unwrap().0, one, "{threads} threads");
        }
    }

    #[test]
    fn a_sink_error_stops_everything_and_is_returned() {
        let data = vec![1u8; 1 << 20];
        let mut r = BlockReader::new(&data[..], "in".into(), 512, None);
        let mut seen = 0;
        let err = run(&mut r, settings(), 4, 8, |_| {
            seen += 1;
            if seen == 3 {
                return Err(Error::ShortInput { path: "sink".into(), got: 1, expected: 2 });
            }
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("sink"), "{err}");
        assert_eq!(seen, 3);
    }

    #[test]
    fn a_read_error_is_returned_after_the_blocks_before_it() {
        struct FailAfter(usize);
        impl Read for FailAfter {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(9);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = BlockReader::new(FailAfter(2048 + 100), "bad.img".into(), 1024, None);
        let mut seen = 0;
        let err = run(&mut r, settings(), 2, 4, |_| {
            seen += 1;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(seen, 2);
        assert!(err.contains("bad.img") && err.contains("2148") && err.contains("disk on fire"), "{err}");
    }
}
