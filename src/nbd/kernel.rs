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
use std::path::PathBuf;
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
}
