//! The media check (`testcd`, `rd.live.check`, `verify-checksums`):
//! decode every block of the images that will be used, then compare them
//! with a checksum file on the medium if one names them, with a progress
//! line, cancellable from the console with Enter. It checks what the boot
//! will read, not the whole disc, and a bad block is reported with the
//! image, block and offset (docs/boot-design.md: checks that hang for hours or
//! fail without saying why are the complaint).

use std::path::{Path, PathBuf};
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

/// Checks every image, then its checksum if a checksum file on the medium
/// (under `medium_root`) names it; `cancel` is polled as it goes.
pub fn check(
    images: &[PathBuf],
    medium_root: &Path,
    log: &Log,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<Outcome, String> {
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
    checksums(images, medium_root, log, cancel)
}

/// The second half: the images against the medium's checksum files.
fn checksums(
    images: &[PathBuf],
    medium_root: &Path,
    log: &Log,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<Outcome, String> {
    let expected = super::checksums::expected(medium_root, images);
    if expected.is_empty() {
        log.info("media check: no checksum file on the medium names the images; the block check is all");
        return Ok(Outcome::Good);
    }
    let mut bad = Vec::new();
    for e in &expected {
        let file = std::fs::File::open(&e.image).map_err(|err| format!("{}: {err}", e.image.display()))?;
        let total = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = Instant::now();
        let mut done = 0u64;
        let mut shown = Instant::now();
        let mut progress = |n: u64| {
            done += n;
            if shown.elapsed() >= Duration::from_millis(500) {
                shown = Instant::now();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                log.progress(&format!(
                    "media check: {} of {}: {:3}%, {:.0} MB/s (Enter skips)",
                    e.algorithm.name(),
                    e.image.display(),
                    done * 100 / total.max(1),
                    rate / 1e6
                ));
                return !cancel();
            }
            true
        };
        let got = super::checksums::digest(file, e.algorithm, &mut progress)
            .map_err(|err| format!("{}: {err}", e.image.display()))?;
        log.progress_done();
        match got {
            None => return Ok(Outcome::Cancelled),
            Some(hex) if hex == e.hex => log.info(&format!(
                "media check: {} matches its {} in {}",
                e.image.display(),
                e.algorithm.name(),
                e.list.display()
            )),
            Some(hex) => bad.push(format!(
                "{}: {} is {hex}, but {} says {}",
                e.image.display(),
                e.algorithm.name(),
                e.list.display(),
                e.hex
            )),
        }
    }
    Ok(if bad.is_empty() { Outcome::Good } else { Outcome::Bad(bad) })
}

/// The console's cancel key.
pub fn console_cancel() -> impl FnMut() -> bool {
    enter_pressed
}
