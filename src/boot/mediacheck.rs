//! The media check (`testcd`, `rd.live.check`, `verify-checksums`):
//! decode every block of the images that will be used, with a progress
//! line, cancellable from the console with Enter. It checks what the boot
//! will read, not the whole disc, and a bad block is reported with the
//! image, block and offset (boot.md §6: checks that hang for hours or
//! fail without saying why are the complaint).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::log::Log;
use crate::cloop::extract::{decode_in_order, Flow};
use crate::cloop::reader::Image;

/// The check's verdict.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Good,
    /// Skipped by the user after this many bytes.
    Cancelled,
    /// Bad blocks, one line each (capped), plus the total.
    Bad(Vec<String>),
}

/// At most this many bad blocks are listed.
const MAX_LISTED: usize = 10;

/// True once a line arrives on stdin (the console), polled without
/// blocking.
fn enter_pressed() -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    if !matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0) || !fds[0].revents().contains(PollFlags::IN) {
        return false;
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok()
}

/// Checks every image; `cancel` is polled between blocks.
pub fn check(images: &[PathBuf], log: &Log, cancel: &mut dyn FnMut() -> bool) -> Result<Outcome, String> {
    let mut opened = Vec::new();
    let mut total = 0u64;
    for path in images {
        let image = Image::open(path).map_err(|e| e.to_string())?;
        total += image.info().file_len;
        opened.push(image);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    let mut done = 0u64;
    let mut bad = Vec::new();
    let mut bad_count = 0u64;
    let mut cancelled = false;
    let mut shown = Instant::now() - Duration::from_secs(1);
    for image in &opened {
        decode_in_order(image, threads, |block, data| {
            done += image.block_info(block).map_or(0, |b| u64::from(b.compressed_len));
            if let Err(e) = data {
                bad_count += 1;
                // The error names the image, the block and its offset.
                if bad.len() < MAX_LISTED {
                    bad.push(e.to_string());
                }
            }
            if shown.elapsed() >= Duration::from_millis(500) {
                shown = Instant::now();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                log.progress(&format!(
                    "media check: {:3}% of {} MiB, {:.0} MB/s, ETA {:.0}s (Enter skips)",
                    done * 100 / total.max(1),
                    total >> 20,
                    rate / 1e6,
                    total.saturating_sub(done) as f64 / rate.max(1.0)
                ));
                if cancel() {
                    cancelled = true;
                    return Flow::Stop;
                }
            }
            Flow::Continue
        });
        if cancelled {
            break;
        }
    }
    log.progress_done();
    if cancelled {
        return Ok(Outcome::Cancelled);
    }
    if bad_count > 0 {
        if bad_count as usize > bad.len() {
            bad.push(format!("... {bad_count} bad blocks in all"));
        }
        return Ok(Outcome::Bad(bad));
    }
    log.info(&format!(
        "media check: {} image(s), {} MiB, every block good ({:.1} s)",
        opened.len(),
        total >> 20,
        start.elapsed().as_secs_f64()
    ));
    Ok(Outcome::Good)
}

/// The console's cancel key.
pub fn console_cancel() -> impl FnMut() -> bool {
    enter_pressed
}
