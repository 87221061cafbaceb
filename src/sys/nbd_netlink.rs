//! The kernel NBD client, configured over generic netlink.
//!
//! Netlink, not the ioctl interface, because `NBD_DO_IT` makes a process sit
//! in an interruptible kernel wait, and any signal there (systemd sends
//! SIGSTOP to everything at switch-root and shutdown) shuts the device down
//! (docs/boot-design.md). With netlink the kernel takes its own reference on each
//! socket and nobody waits in the kernel.
//!
//! Constants from `include/uapi/linux/nbd-netlink.h` (docs/boot-design.md).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::genl::{parse_attrs, Message, Socket};

/// `NBD_GENL_FAMILY_NAME`.
pub const FAMILY_NAME: &str = "nbd";
/// `NBD_GENL_VERSION`.
const VERSION: u8 = 1;

/// `NBD_CMD_CONNECT`.
const CMD_CONNECT: u8 = 1;
/// `NBD_CMD_DISCONNECT`.
const CMD_DISCONNECT: u8 = 2;
/// `NBD_CMD_STATUS`.
const CMD_STATUS: u8 = 5;

/// `NBD_ATTR_INDEX` (u32).
const ATTR_INDEX: u16 = 1;
/// `NBD_ATTR_SIZE_BYTES` (u64).
const ATTR_SIZE_BYTES: u16 = 2;
/// `NBD_ATTR_BLOCK_SIZE_BYTES` (u64).
const ATTR_BLOCK_SIZE_BYTES: u16 = 3;
/// `NBD_ATTR_TIMEOUT` (u64 seconds; 0 = never fail a slow request).
const ATTR_TIMEOUT: u16 = 4;
/// `NBD_ATTR_SERVER_FLAGS` (u64, NBD_FLAG_*).
const ATTR_SERVER_FLAGS: u16 = 5;
/// `NBD_ATTR_CLIENT_FLAGS` (u64, NBD_CFLAG_*).
const ATTR_CLIENT_FLAGS: u16 = 6;
/// `NBD_ATTR_SOCKETS` (nested `NBD_SOCK_ITEM`s).
const ATTR_SOCKETS: u16 = 7;
/// `NBD_ATTR_DEAD_CONN_TIMEOUT` (u64 seconds).
const ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
/// `NBD_ATTR_DEVICE_LIST` (nested `NBD_DEVICE_ITEM`s, STATUS reply).
const ATTR_DEVICE_LIST: u16 = 9;
/// `NBD_ATTR_BACKEND_IDENTIFIER` (string, Linux >= 5.14).
const ATTR_BACKEND_IDENTIFIER: u16 = 10;
/// `NBD_SOCK_ITEM` inside `NBD_ATTR_SOCKETS`.
const SOCK_ITEM: u16 = 1;
/// `NBD_SOCK_FD` (u32) inside an item.
const SOCK_FD: u16 = 1;
/// `NBD_DEVICE_ITEM` inside `NBD_ATTR_DEVICE_LIST`.
const DEVICE_ITEM: u16 = 1;
/// `NBD_DEVICE_INDEX` (u32).
const DEVICE_INDEX: u16 = 1;
/// `NBD_DEVICE_CONNECTED` (u8).
const DEVICE_CONNECTED: u16 = 2;

/// `NBD_CFLAG_DESTROY_ON_DISCONNECT`: remove the nbdN device on disconnect.
pub const CFLAG_DESTROY_ON_DISCONNECT: u64 = 1 << 0;

/// What to ask of `NBD_CMD_CONNECT`.
pub struct Connect<'a> {
    /// The device index (`/dev/nbdN`), or `None` for the first free one.
    pub index: Option<u32>,
    pub size_bytes: u64,
    pub block_size: u64,
    /// NBD_FLAG_* transmission flags, as a server would send them.
    pub server_flags: u64,
    pub client_flags: u64,
    /// Seconds; 0 never times out a request, which a local server wants.
    pub timeout: u64,
    pub dead_conn_timeout: Option<u64>,
    /// Shown in /sys/block/nbdN/backend.
    pub backend: Option<&'a str>,
    /// The kernel's ends of the connections (one per hardware queue).
    pub sockets: &'a [BorrowedFd<'a>],
}

/// A channel to the kernel's nbd family.
pub struct Nbd {
    sock: Socket,
    family: u16,
}

impl Nbd {
    /// Opens the channel. `ErrorKind::NotFound` means the nbd module is not
    /// loaded (or the kernel predates netlink configuration).
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::open()?;
        let family = sock.family_id(FAMILY_NAME)?;
        Ok(Self { sock, family })
    }

    /// Connects a device; returns its index.
    pub fn connect(&mut self, req: &Connect<'_>) -> io::Result<u32> {
        let seq = self.sock.next_seq();
        let mut msg = Message::new(self.family, CMD_CONNECT, VERSION, seq);
        if let Some(index) = req.index {
            msg.u32(ATTR_INDEX, index);
        }
        msg.u64(ATTR_SIZE_BYTES, req.size_bytes)
            .u64(ATTR_BLOCK_SIZE_BYTES, req.block_size)
            .u64(ATTR_SERVER_FLAGS, req.server_flags)
            .u64(ATTR_CLIENT_FLAGS, req.client_flags)
            .u64(ATTR_TIMEOUT, req.timeout);
        if let Some(t) = req.dead_conn_timeout {
            msg.u64(ATTR_DEAD_CONN_TIMEOUT, t);
        }
        if let Some(id) = req.backend {
            msg.string(ATTR_BACKEND_IDENTIFIER, id);
        }
        msg.begin_nest(ATTR_SOCKETS);
        for fd in req.sockets {
            msg.begin_nest(SOCK_ITEM).u32(SOCK_FD, fd.as_raw_fd() as u32).end_nest();
        }
        msg.end_nest();
        let replies = self.sock.request(msg)?;
        for (_, raw) in &replies {
            let attrs = parse_attrs(raw).map_err(invalid)?;
            if let Some(index) = attrs.iter().find(|a| a.kind == ATTR_INDEX).and_then(|a| a.as_u32()) {
                return Ok(index);
            }
        }
        req.index.ok_or_else(|| invalid("NBD_CMD_CONNECT reply carries no device index".to_string()))
    }

    /// Disconnects a device: the kernel sends NBD_CMD_DISC on its sockets.
    pub fn disconnect(&mut self, index: u32) -> io::Result<()> {
        let seq = self.sock.next_seq();
        let mut msg = Message::new(self.family, CMD_DISCONNECT, VERSION, seq);
        msg.u32(ATTR_INDEX, index);
        self.sock.request(msg).map(drop)
    }

    /// `(index, connected)` for one device, or for all when `index` is None.
    pub fn status(&mut self, index: Option<u32>) -> io::Result<Vec<(u32, bool)>> {
        let seq = self.sock.next_seq();
        let mut msg = Message::new(self.family, CMD_STATUS, VERSION, seq);
        if let Some(i) = index {
            msg.u32(ATTR_INDEX, i);
        }
        let mut devices = Vec::new();
        for (_, raw) in self.sock.request(msg)? {
            devices.extend(parse_device_list(&raw).map_err(invalid)?);
        }
        Ok(devices)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Parses the attributes of an `NBD_CMD_STATUS` reply.
pub fn parse_device_list(raw: &[u8]) -> Result<Vec<(u32, bool)>, String> {
    let mut devices = Vec::new();
    for attr in parse_attrs(raw)?.iter().filter(|a| a.kind == ATTR_DEVICE_LIST) {
        for item in attr.nested()?.iter().filter(|a| a.kind == DEVICE_ITEM) {
            let fields = item.nested()?;
            let index = fields.iter().find(|a| a.kind == DEVICE_INDEX).and_then(|a| a.as_u32());
            let connected = fields.iter().find(|a| a.kind == DEVICE_CONNECTED).and_then(|a| a.as_u8());
            match (index, connected) {
                (Some(i), Some(c)) => devices.push((i, c != 0)),
                _ => return Err("NBD_DEVICE_ITEM without index or connected state".into()),
            }
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_list_parses_nested_items() {
        let mut msg = Message::new(0x20, CMD_STATUS, VERSION, 1);
        msg.begin_nest(ATTR_DEVICE_LIST);
        for (i, c) in [(0u32, 1u8), (3, 0)] {
            msg.begin_nest(DEVICE_ITEM).u32(DEVICE_INDEX, i).attr(DEVICE_CONNECTED, &[c]).end_nest();
        }
        msg.end_nest();
        let bytes = msg.finish();
        assert_eq!(parse_device_list(&bytes[20..]).unwrap(), vec![(0, true), (3, false)]);
    }

    #[test]
    fn malformed_device_list_is_an_error() {
        let mut msg = Message::new(0x20, CMD_STATUS, VERSION, 1);
        msg.begin_nest(ATTR_DEVICE_LIST).begin_nest(DEVICE_ITEM).u32(DEVICE_INDEX, 1).end_nest().end_nest();
        let bytes = msg.finish();
        assert!(parse_device_list(&bytes[20..]).is_err());
    }

    #[test]
    fn the_generic_netlink_controller_answers_on_this_host() {
        // Exercises the real socket path: the controller family always
        // exists, and resolving itself gives GENL_ID_CTRL.
        let mut sock = Socket::open().expect("open a NETLINK_GENERIC socket");
        assert_eq!(sock.family_id("nlctrl").unwrap(), 0x10);
        let err = sock.family_id("nosuchfam").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(2), "ENOENT for an unknown family: {err}");
    }
}
