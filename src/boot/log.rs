//! Boot messages: to the console for the user and to `/dev/kmsg` for
//! `dmesg` and the journal. Both files are opened once, early; a write
//! that fails is dropped (there is nowhere else to report it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

/// syslog levels as `/dev/kmsg` reads them in its `<N>` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error = 3,
    Warning = 4,
    Info = 6,
    Debug = 7,
}

pub struct Log {
    tag: String,
    console: Mutex<Option<File>>,
    kmsg: Mutex<Option<File>>,
    pub debug: bool,
}

impl Log {
    /// Opens `/dev/console` and `/dev/kmsg` if they exist.
    pub fn open(tag: &str, debug: bool) -> Log {
        let console = OpenOptions::new().write(true).open("/dev/console").ok();
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        Log { tag: tag.into(), console: Mutex::new(console), kmsg: Mutex::new(kmsg), debug }
    }

    /// A log that writes to stderr only (for tests and tools).
    pub fn stderr(tag: &str) -> Log {
        Log { tag: tag.into(), console: Mutex::new(None), kmsg: Mutex::new(None), debug: true }
    }

    pub fn line(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            self.kmsg_line(level, msg);
            return;
        }
        // The record first: when the kernel echoes it to the console (its
        // level is below the console's loglevel), printk does so inside this
        // write, before our own line; written the other way round, its echo
        // of one line could cut into our next one on a slow serial console.
        self.kmsg_line(level, msg);
        let text = format!("{}: {msg}\n", self.tag);
        let mut console = self.console.lock().unwrap_or_else(|e| e.into_inner());
        match console.as_mut() {
            Some(c) => {
                let _ = c.write_all(text.as_bytes());
            }
            None => eprint!("{text}"),
        }
    }

    fn kmsg_line(&self, level: Level, msg: &str) {
        let mut kmsg = self.kmsg.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = kmsg.as_mut() {
            // One write per record; kmsg limits records to about 1 KiB.
            let mut record = format!("<{}>{}: {msg}", level as u8, self.tag);
            record.truncate(1000);
            let _ = k.write_all(record.as_bytes());
        }
    }

    /// A progress line redrawn in place on the console (not logged).
    pub fn progress(&self, msg: &str) {
        let text = format!("\r{}: {msg}\x1b[K", self.tag);
        let mut console = self.console.lock().unwrap_or_else(|e| e.into_inner());
        match console.as_mut() {
            Some(c) => {
                let _ = c.write_all(text.as_bytes());
            }
            None => eprint!("{text}"),
        }
    }

    /// Ends a progress line.
    pub fn progress_done(&self) {
        self.progress("");
        let mut console = self.console.lock().unwrap_or_else(|e| e.into_inner());
        match console.as_mut() {
            Some(c) => {
                let _ = c.write_all(b"\r");
            }
            None => eprint!("\r"),
        }
    }

    pub fn info(&self, msg: &str) {
        self.line(Level::Info, msg)
    }
    pub fn warn(&self, msg: &str) {
        self.line(Level::Warning, msg)
    }
    pub fn error(&self, msg: &str) {
        self.line(Level::Error, msg)
    }
    pub fn debug(&self, msg: &str) {
        self.line(Level::Debug, msg)
    }
}
