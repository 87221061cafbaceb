//! Serving an export to the kernel's own NBD client, as `/dev/nbdN`.
//!
//! Each connection is a `socketpair`: the kernel gets one end through
//! generic netlink (`NBD_CMD_CONNECT`), and a thread of ours runs the
//! transmission phase on the other (the kernel never handshakes). The
//! kernel holds its own reference to its ends, so nothing of ours sits in
//! a kernel wait that a signal could break (docs/boot-design.md).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::handshake::Negotiated;
use super::proto::FLAG_CAN_MULTI_CONN;
use super::server::Server;
use super::transmission::End;
use crate::sys::nbd_netlink::{Connect, Nbd};

/// How to attach.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// `/dev/nbdN`'s N, or `None` to let the kernel pick a free device.
    pub index: Option<u32>,
    /// Connections (kernel hardware queues); more than one needs an export
    /// that can honour `CAN_MULTI_CONN`.
    pub connections: usize,
    /// The device's logical block size: a power of two, 512 to 4096.
    pub block_size: u32,
    /// Shown in /sys/block/nbdN/backend (Linux 5.14 and later).
    pub backend: String,
}

/// A live `/dev/nbdN`.
pub struct Attachment {
    pub index: u32,
    threads: Vec<JoinHandle<End>>,
}

impl Attachment {
    pub fn device(&self) -> PathBuf {
        PathBuf::from(format!("/dev/nbd{}", self.index))
    }

    /// Waits until the kernel has closed every connection (after a
    /// disconnect), and returns how each one ended.
    pub fn wait(self) -> Vec<End> {
        self.threads.into_iter().filter_map(|t| t.join().ok()).collect()
    }
}

/// Parses `/dev/nbdN`, `nbdN` or `N`.
pub fn parse_device(text: &str) -> Option<u32> {
    let n = text.strip_prefix("/dev/").unwrap_or(text);
    let n = n.strip_prefix("nbd").unwrap_or(n);
    n.parse().ok()
}

/// Attaches `server`'s export to the kernel. On success the device exists
/// and serves; on failure no thread is left running.
pub fn attach(server: &Arc<Server>, opts: &AttachOptions) -> io::Result<Attachment> {
    let export = server.export();
    let flags = export.flags();
    if opts.connections == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "at least one connection is needed"));
    }
    if opts.connections > 1 && flags & FLAG_CAN_MULTI_CONN == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "several connections need an export that supports multi-conn (the cow layer, or a read-only image)",
        ));
    }
    if !opts.block_size.is_power_of_two() || !(512..=4096).contains(&opts.block_size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("block size {} is not a power of two from 512 to 4096", opts.block_size),
        ));
    }
    let mut nbd = Nbd::open().map_err(|e| match e.raw_os_error() {
        Some(2) => io::Error::new(
            io::ErrorKind::NotFound,
            "the kernel has no 'nbd' generic netlink family: load the nbd module (modprobe nbd)",
        ),
        _ => io::Error::new(e.kind(), format!("nbd netlink: {e}")),
    })?;
    let mut ours = Vec::with_capacity(opts.connections);
    let mut theirs = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let (a, b) = UnixStream::pair()?;
        ours.push(a);
        theirs.push(b);
    }
    let fds: Vec<_> = theirs.iter().map(|s| s.as_fd()).collect();
    let index = nbd.connect(&Connect {
        index: opts.index,
        size_bytes: export.size(),
        block_size: opts.block_size as u64,
        server_flags: flags as u64,
        client_flags: 0,
        timeout: 0,
        dead_conn_timeout: None,
        backend: Some(&opts.backend),
        sockets: &fds,
    })?;
    // The kernel holds its own references now.
    drop(fds);
    drop(theirs);
    let threads = ours
        .into_iter()
        .enumerate()
        .map(|(i, sock)| {
            let server = server.clone();
            std::thread::Builder::new().name(format!("nbd{index}.{i}")).spawn(move || {
                server.serve_transmission(sock, Negotiated::default(), &format!("nbd{index}.{i}"))
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Attachment { index, threads })
}

/// A queue limit of `/sys/block/nbdN/queue` to set after attaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Leave the kernel's value.
    Kernel,
    /// Fit the image: raise to its block size in KiB (docs/nbd-server.md).
    Auto,
    /// This many KiB.
    Kib(u32),
}

impl Limit {
    /// `kernel`, `auto` or a number of KiB.
    pub fn parse(text: &str) -> Option<Limit> {
        match text {
            "kernel" => Some(Limit::Kernel),
            "auto" => Some(Limit::Auto),
            n => n.parse().ok().filter(|&n| n <= 1 << 20).map(Limit::Kib),
        }
    }

    fn value(self, image_block: u32) -> Option<u32> {
        match self {
            Limit::Kernel => None,
            Limit::Auto => Some((image_block / 1024).max(4)),
            Limit::Kib(n) => Some(n),
        }
    }
}

/// The request shape of a device: the largest request the kernel sends
/// (`max_sectors_kb`) and how far it reads ahead (`read_ahead_kb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueShape {
    pub max_sectors_kb: Limit,
    pub read_ahead_kb: Limit,
}

/// What a device's queue holds after [`tune_queue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueState {
    pub max_sectors_kb: u32,
    pub max_hw_sectors_kb: u32,
    pub read_ahead_kb: u32,
}

/// Sets `/sys/block/DEVICE/queue/{max_sectors_kb,read_ahead_kb}` (DEVICE
/// `nbdN` or `ublkbN`) for an image of `image_block` bytes per block. `auto` raises each (never
/// lowers it) to the image's block size, so that one request and one
/// read-ahead window can cover a whole image block; a number of KiB is set
/// as given. `max_sectors_kb` is capped at `max_hw_sectors_kb`.
/// `sys_block` is `/sys/block` (a directory of the tests elsewhere).
pub fn tune_queue(
    sys_block: &Path,
    device: &str,
    shape: &QueueShape,
    image_block: u32,
) -> io::Result<QueueState> {
    let queue = sys_block.join(device).join("queue");
    let read = |name: &str| -> io::Result<u32> {
        let path = queue.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a number: {:?}", path.display(), text.trim()),
            )
        })
    };
    let write = |name: &str, value: u32| -> io::Result<()> {
        let path = queue.join(name);
        std::fs::write(&path, format!("{value}\n"))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: writing {value}: {e}", path.display())))
    };
    let hw = read("max_hw_sectors_kb")?;
    for (name, limit, cap) in
        [("max_sectors_kb", shape.max_sectors_kb, hw), ("read_ahead_kb", shape.read_ahead_kb, u32::MAX)]
    {
        let Some(want) = limit.value(image_block).map(|w| w.min(cap)) else { continue };
        if limit != Limit::Auto || want > read(name)? {
            write(name, want)?;
        }
    }
    Ok(QueueState {
        max_sectors_kb: read("max_sectors_kb")?,
        max_hw_sectors_kb: hw,
        read_ahead_kb: read("read_ahead_kb")?,
    })
}

/// Asks the kernel to disconnect `/dev/nbdN`: it sends `NBD_CMD_DISC` on
/// every connection, and the serving threads end.
pub fn detach(index: u32) -> io::Result<()> {
    Nbd::open()?.disconnect(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device("/dev/nbd3"), Some(3));
        assert_eq!(parse_device("nbd12"), Some(12));
        assert_eq!(parse_device("7"), Some(7));
        assert_eq!(parse_device("/dev/sda"), None);
        assert_eq!(parse_device("nbd"), None);
    }

    /// A fake /sys/block/nbd3/queue with the kernel's 6.1 values for nbd.
    fn fake_queue(max_sectors: u32, hw: u32, ra: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("nbd3/queue");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("max_sectors_kb"), format!("{max_sectors}\n")).unwrap();
        std::fs::write(q.join("max_hw_sectors_kb"), format!("{hw}\n")).unwrap();
        std::fs::write(q.join("read_ahead_kb"), format!("{ra}\n")).unwrap();
        dir
    }

    #[test]
    fn queue_fits_the_image_block() {
        let auto = QueueShape { max_sectors_kb: Limit::Auto, read_ahead_kb: Limit::Auto };
        let dir = fake_queue(128, 32768, 128);
        let got = tune_queue(dir.path(), "nbd3", &auto, 256 * 1024).unwrap();
        assert_eq!(got, QueueState { max_sectors_kb: 256, max_hw_sectors_kb: 32768, read_ahead_kb: 256 });
        // Capped at the hardware limit; never lowered.
        let dir = fake_queue(128, 64, 128);
        assert_eq!(tune_queue(dir.path(), "nbd3", &auto, 256 * 1024).unwrap().max_sectors_kb, 128);
        let dir = fake_queue(1280, 32768, 128);
        let got = tune_queue(dir.path(), "nbd3", &auto, 64 * 1024).unwrap();
        assert_eq!((got.max_sectors_kb, got.read_ahead_kb), (1280, 128));
        // Explicit and kernel values.
        let shape = QueueShape { max_sectors_kb: Limit::Kernel, read_ahead_kb: Limit::Kib(1024) };
        let dir = fake_queue(128, 32768, 128);
        let got = tune_queue(dir.path(), "nbd3", &shape, 128 * 1024).unwrap();
        assert_eq!((got.max_sectors_kb, got.read_ahead_kb), (128, 1024));
        let shape = QueueShape { max_sectors_kb: Limit::Kib(99999), read_ahead_kb: Limit::Kib(64) };
        let got = tune_queue(dir.path(), "nbd3", &shape, 128 * 1024).unwrap();
        assert_eq!((got.max_sectors_kb, got.read_ahead_kb), (32768, 64));
        let ra = std::fs::read_to_string(dir.path().join("nbd3/queue/read_ahead_kb")).unwrap();
        assert_eq!(ra, "64\n");
    }

    #[test]
    fn queue_errors_name_the_file() {
        let auto = QueueShape { max_sectors_kb: Limit::Auto, read_ahead_kb: Limit::Auto };
        let dir = tempfile::tempdir().unwrap();
        let e = tune_queue(dir.path(), "nbd3", &auto, 65536).unwrap_err().to_string();
        assert!(e.contains("nbd3/queue/max_hw_sectors_kb"), "{e}");
        let dir = fake_queue(128, 32768, 128);
        std::fs::write(dir.path().join("nbd3/queue/max_hw_sectors_kb"), "lots\n").unwrap();
        let e = tune_queue(dir.path(), "nbd3", &auto, 65536).unwrap_err().to_string();
        assert!(e.contains("max_hw_sectors_kb: not a number"), "{e}");
    }

    #[test]
    fn limits_parse() {
        assert_eq!(Limit::parse("auto"), Some(Limit::Auto));
        assert_eq!(Limit::parse("kernel"), Some(Limit::Kernel));
        assert_eq!(Limit::parse("512"), Some(Limit::Kib(512)));
        assert_eq!(Limit::parse("-1"), None);
        assert_eq!(Limit::parse("lots"), None);
        assert_eq!(Limit::parse("99999999"), None);
    }
}
