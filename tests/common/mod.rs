//! Helpers shared by the integration tests (each test file that needs them
//! says `mod common;`; not every file uses every helper).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// `../shared/vectors` beside the repository. Missing vectors fail the
/// test: CI always has them, so a skip would hide a broken checkout.
pub fn vectors() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/vectors");
    assert!(
        dir.join("README.md").is_file(),
        "test vectors missing: expected them at {} (clone shared/ beside the repo)",
        dir.display()
    );
    dir
}

/// The 307200-byte raw ext2 image every vector was made from.
pub fn raw() -> &'static [u8] {
    static RAW: OnceLock<Vec<u8>> = OnceLock::new();
    RAW.get_or_init(|| {
        let gz = std::fs::File::open(vectors().join("raw/ext2_300k.img.gz")).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 307200);
        out
    })
}

/// A tiny deterministic generator for seeded mutations.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// The command `name`, which must be installed: a missing one fails the
/// test with the Debian package to install.
pub fn tool(name: &str, package: &str) -> &'static str {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    assert!(found.status.success(), "{name} is not installed: apt-get install {package}");
    Box::leak(name.to_string().into_boxed_str())
}

/// One qemu-io command (`read -v OFFSET LEN`...) on the read-only raw
/// export at `uri`: its stdout and stderr together.
pub fn qemu_io(uri: &str, cmd: &str) -> String {
    let out = Command::new(tool("qemu-io", "qemu-utils"))
        .args(["-f", "raw", "-r", "-c", cmd])
        .arg(uri)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A running cloopd; killed (SIGKILL) if the test did not stop it.
pub struct Cloopd {
    child: Child,
    pub socket: PathBuf,
    pub banner: String,
}

impl Cloopd {
    /// Starts cloopd on `dir/nbd.sock`; panics when it does not serve.
    pub fn start(dir: &Path, image: &Path, extra: &[&str]) -> Cloopd {
        Cloopd::try_start(dir, image, extra)
            .unwrap_or_else(|err| panic!("cloopd did not start within 30 s: {err}"))
    }

    /// Starts cloopd; `Err(stderr)` when it exits (or hangs) instead of
    /// printing its banner.
    pub fn try_start(dir: &Path, image: &Path, extra: &[&str]) -> Result<Cloopd, String> {
        let socket = dir.join("nbd.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloopbox"))
            .arg("cloopd")
            .arg(image)
            .arg("--unix")
            .arg(&socket)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The banner is printed once every listener accepts connections;
        // a server that never prints it fails the test instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = String::new();
            let _ = BufReader::new(stdout).read_line(&mut banner);
            let _ = tx.send(banner);
        });
        let banner = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap_or_default();
        if banner.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return Err(err);
        }
        Ok(Cloopd { child, socket, banner })
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// SIGTERM, then the exit status and stderr.
    pub fn stop(mut self) -> (i32, String) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "cloopd did not exit within 60 s of SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Cloopd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
