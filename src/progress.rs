//! Progress reporting for long-running applets.
//!
//! On a terminal: one line redrawn in place, at most five times a second,
//! with percent, throughput, ratio (where there is one) and ETA. When stderr
//! is not a terminal: a plain line every ten seconds, so logs stay readable.
//! Nothing at all when quiet.

use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Quiet,
    Terminal,
    Log,
}

pub struct Progress {
    label: String,
    total: Option<u64>,
    mode: Mode,
    start: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// `total` is the expected input in bytes, if known.
    pub fn new(label: impl Into<String>, total: Option<u64>, quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if rustix::termios::isatty(std::io::stderr()) {
            Mode::Terminal
        } else {
            Mode::Log
        };
        Self { label: label.into(), total, mode, start: Instant::now(), last_draw: None, drawn: false }
    }

    /// Reports `done` input bytes processed and, for compressors,
    /// `output` bytes produced (to show the ratio).
    pub fn update(&mut self, done: u64, output: Option<u64>) {
        let interval = match self.mode {
            Mode::Quiet => return,
            Mode::Terminal => Duration::from_millis(200),
            Mode::Log => Duration::from_secs(10),
        };
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now.duration_since(t) < interval) {
            return;
        }
        if self.mode == Mode::Log && self.last_draw.is_none() {
            // The first log line waits one interval: short jobs print nothing.
            self.last_draw = Some(now);
            return;
        }
        self.last_draw = Some(now);
        self.draw(done, output, false);
    }

    /// Prints the final line (on a terminal, and in logs for jobs that
    /// printed progress at all).
    pub fn finish(&mut self, done: u64, output: Option<u64>) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => self.draw(done, output, true),
            Mode::Log if self.drawn => self.draw(done, output, true),
            Mode::Log => {}
        }
    }

    fn draw(&mut self, done: u64, output: Option<u64>, last: bool) {
        let line = format_line(&self.label, done, self.total, output, self.start.elapsed(), last);
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            Mode::Terminal if last => writeln!(err, "\r{line}\x1b[K"),
            Mode::Terminal => write!(err, "\r{line}\x1b[K"),
            _ => writeln!(err, "{line}"),
        };
        let _ = err.flush();
        self.drawn = true;
    }
}

fn format_line(
    label: &str,
    done: u64,
    total: Option<u64>,
    output: Option<u64>,
    elapsed: Duration,
    last: bool,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = done as f64 / secs;
    let mut line = format!("{label}: ");
    match total {
        Some(total) if total > 0 => {
            let pct = (done as f64 * 100.0 / total as f64).min(100.0);
            line += &format!("{pct:5.1}% {} of {}", crate::units::Bytes(done), crate::units::Bytes(total));
        }
        _ => line += &crate::units::Bytes(done).to_string(),
    }
    line += &format!(", {:.1} MB/s", rate / 1e6);
    if let Some(out) = output {
        if done > 0 {
            line += &format!(", ratio {:.1}%", out as f64 * 100.0 / done as f64);
        }
    }
    if last {
        line += &format!(", {:.1}s", secs);
    } else if let Some(total) = total {
        if rate > 0.0 && total > done {
            line += &format!(", ETA {}", format_eta((total - done) as f64 / rate));
        }
    }
    line
}

fn format_eta(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_percent_rate_ratio_and_eta() {
        let line =
            format_line("compress", 50 << 20, Some(100 << 20), Some(25 << 20), Duration::from_secs(1), false);
        assert!(line.starts_with("compress:  50.0% 50.0 MiB of 100.0 MiB"), "{line}");
        assert!(line.contains("52.4 MB/s"), "{line}");
        assert!(line.contains("ratio 50.0%"), "{line}");
        assert!(line.contains("ETA 1s"), "{line}");
        let done = format_line("x", 10, None, None, Duration::from_secs(2), true);
        assert_eq!(done, "x: 10 B, 0.0 MB/s, 2.0s");
    }

    #[test]
    fn eta_units() {
        assert_eq!(format_eta(59.4), "59s");
        assert_eq!(format_eta(61.0), "1m01s");
        assert_eq!(format_eta(7260.0), "2h01m");
    }
}
