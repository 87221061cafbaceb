//! Starting a `cloopd` child that attaches a kernel device, and reading
//! the device line it prints once attached (the one way `init`,
//! `liveroot` and `cowdev` start servers).
//!
//! Everything read from the child is bounded: the line to [`MAX_LINE`]
//! bytes, what it says on stderr (when captured) to [`MAX_STDERR`].

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Longest device line read from the child.
pub const MAX_LINE: u64 = 4096;
/// Most of the child's stderr kept when it is captured.
pub const MAX_STDERR: u64 = 64 * 1024;
/// How long a successful start waits for the child's stderr to close
/// (`--background` closes it right after the device line).
const STDERR_WAIT: Duration = Duration::from_secs(3);

/// A server to start: `cloopd IMAGE --device DEVICE [FLAGS] [--cow COW]`.
pub struct Request<'a> {
    /// Absolute (a relative one could start with `-`).
    pub image: &'a Path,
    pub cow: Option<&'a Path>,
    /// `auto` or `/dev/nbdN` (`/dev/ublkbN` with `--transport ublk` in
    /// the flags).
    pub device: &'a str,
    /// The child's argv[0]: `@cloopd` for a root-storage daemon.
    pub argv0: &'a str,
    /// Further flags, such as `--root-daemon` or `--background`.
    pub flags: Vec<OsString>,
    /// Collect the child's stderr (to relay or report it) instead of
    /// letting it through.
    pub capture_stderr: bool,
}

/// A server that attached its device.
#[derive(Debug)]
pub struct Started {
    pub device: PathBuf,
    pub pid: u32,
    /// What it said on stderr until it closed it (captured only).
    pub said: String,
}

/// A server that did not attach a device.
#[derive(Debug)]
pub enum SpawnError {
    /// It could not be started at all.
    Start(io::Error),
    /// It ended (or printed something else) without a device line: its
    /// exit status, and what it said on stderr when that was captured.
    NoDevice { status: String, said: String },
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Start(e) => write!(f, "starting cloopd: {e}"),
            SpawnError::NoDevice { said, .. } if !said.trim_end().is_empty() => {
                write!(f, "{}", said.trim_end())
            }
            SpawnError::NoDevice { status, .. } => write!(f, "cloopd exited ({status})"),
        }
    }
}

impl Request<'_> {
    /// The command as it will run, for debug messages.
    pub fn describe(&self) -> String {
        format!("{:?}", self.command())
    }

    fn command(&self) -> Command {
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let mut cmd = Command::new(exe);
        // The image first: `ps` shows `@cloopd IMAGE --device ...`, which
        // the boot scenarios check. Callers give absolute paths, so the
        // image cannot be taken for a flag.
        cmd.arg0(self.argv0).arg(self.image).args(["--device", self.device]).args(&self.flags);
        if let Some(cow) = self.cow {
            cmd.arg("--cow").arg(cow);
        }
        let stderr = if self.capture_stderr { Stdio::piped() } else { Stdio::inherit() };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        cmd
    }
}

/// Starts the server and waits for its device line. The child outlives
/// this call either way it went: a started server runs on (whoever is
/// PID 1 reaps it), a failed one has been waited for.
pub fn spawn(req: &Request) -> Result<Started, SpawnError> {
    let mut child = req.command().spawn().map_err(SpawnError::Start)?;
    let pid = child.id();
    // Read on the side, so a chatty server cannot fill the pipe and stall
    // before its device line.
    let said = child.stderr.take().map(|stderr| {
        let (tx, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.take(MAX_STDERR).read_to_end(&mut text);
            let _ = tx.send(String::from_utf8_lossy(&text).into_owned());
        });
        said
    });
    let said = |timeout| said.as_ref().and_then(|rx| rx.recv_timeout(timeout).ok()).unwrap_or_default();
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout.take(MAX_LINE)).read_line(&mut line);
    }
    let device = line.trim_end();
    if device.starts_with("/dev/") && crate::control::proto::KernelDevice::parse(device).is_some() {
        return Ok(Started { device: PathBuf::from(device), pid, said: said(STDERR_WAIT) });
    }
    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
    Err(SpawnError::NoDevice { status, said: said(STDERR_WAIT) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_puts_the_image_first() {
        let req = Request {
            image: Path::new("/m/KNOPPIX"),
            cow: Some(Path::new("/c.cow")),
            device: "auto",
            argv0: "@cloopd",
            flags: vec!["--root-daemon".into()],
            capture_stderr: false,
        };
        let cmd = req.command();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["/m/KNOPPIX", "--device", "auto", "--root-daemon", "--cow", "/c.cow"]);
    }

    #[test]
    fn errors_say_what_the_server_said_or_how_it_ended() {
        let quiet = SpawnError::NoDevice { status: "exit status: 1".into(), said: "\n".into() };
        assert_eq!(quiet.to_string(), "cloopd exited (exit status: 1)");
        let said = SpawnError::NoDevice { status: "x".into(), said: "cloopd: bad image\n".into() };
        assert_eq!(said.to_string(), "cloopd: bad image");
    }
}
