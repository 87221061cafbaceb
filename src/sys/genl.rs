//! Generic netlink: message building and parsing, and a request/reply
//! channel over a `NETLINK_GENERIC` socket.
//!
//! The encoder and decoder are pure functions over byte buffers so they can
//! be unit-tested and fuzzed without a kernel. Layouts follow
//! `include/uapi/linux/netlink.h` and `genetlink.h`; netlink integers are in
//! host byte order.

use std::io;
use std::os::fd::OwnedFd;

/// `struct nlmsghdr` is 16 bytes, `struct genlmsghdr` 4, `struct nlattr` 4.
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;

/// `NLM_F_REQUEST`: a request message.
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`: ask for an acknowledgement (an NLMSG_ERROR with error 0).
const NLM_F_ACK: u16 = 0x4;
/// `NLMSG_ERROR`: an error or acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: end of a multipart dump.
const NLMSG_DONE: u16 = 3;
/// `NLA_F_NESTED`: the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// Mask that strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from a type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `GENL_ID_CTRL`: the family id of the generic netlink controller.
const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_GETFAMILY`.
const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (NUL-terminated string).
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one generic netlink request.
pub struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    pub fn new(family: u16, cmd: u8, version: u8, seq: u32) -> Self {
        Self::with_header(family, 0, seq, &[cmd, version, 0, 0])
    }

    /// A request of any netlink protocol: message type `kind`, `flags`
    /// besides `NLM_F_REQUEST | NLM_F_ACK`, and the protocol's fixed
    /// header (rtnetlink's `ifinfomsg`, `ifaddrmsg`, `rtmsg`, or the
    /// generic netlink header) before the attributes.
    pub fn with_header(kind: u16, flags: u16, seq: u32, header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        buf.extend_from_slice(header);
        buf.resize(align4(buf.len()), 0);
        Self { buf, nests: Vec::new() }
    }

    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub fn u64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// Opens a nested attribute; close it with [`Message::end_nest`].
    pub fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nest(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("end_nest matches a begin_nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        assert!(self.nests.is_empty(), "every begin_nest has its end_nest");
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// One attribute of a parsed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn as_u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
    pub fn as_u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.payload.get(..2)?.try_into().ok()?))
    }
    pub fn as_u8(&self) -> Option<u8> {
        self.payload.first().copied()
    }
    pub fn nested(&self) -> Result<Vec<Attr<'a>>, String> {
        parse_attrs(self.payload)
    }
}

/// Splits an attribute stream; malformed lengths are an error, never a panic.
pub fn parse_attrs(mut data: &[u8]) -> Result<Vec<Attr<'_>>, String> {
    let mut attrs = Vec::new();
    while data.len() >= NLA_HDRLEN {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > data.len() {
            return Err(format!("netlink attribute {kind} has bad length {len}"));
        }
        attrs.push(Attr { kind, payload: &data[NLA_HDRLEN..len] });
        data = &data[align4(len).min(data.len())..];
    }
    Ok(attrs)
}

/// A reply: either the generic netlink payload of a data message (its
/// attributes), or the kernel's verdict on our request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Data {
        cmd: u8,
        attrs: Vec<Attr<'a>>,
    },
    /// NLMSG_ERROR with error 0.
    Ack,
    /// NLMSG_ERROR with a negative errno.
    Error(i32),
    Done,
}

/// Splits a datagram into its netlink messages.
pub fn parse_replies(mut data: &[u8]) -> Result<Vec<Reply<'_>>, String> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(format!("netlink message has bad length {len}"));
        }
        let body = &data[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR => {
                let code = body.get(..4).ok_or("truncated netlink error message")?;
                match i32::from_ne_bytes(code.try_into().expect("4 bytes")) {
                    0 => Reply::Ack,
                    e => Reply::Error(e),
                }
            }
            NLMSG_DONE => Reply::Done,
            _ => {
                if body.len() < GENL_HDRLEN {
                    return Err("truncated generic netlink header".into());
                }
                Reply::Data { cmd: body[0], attrs: parse_attrs(&body[GENL_HDRLEN..])? }
            }
        });
        data = &data[align4(len).min(data.len())..];
    }
    Ok(out)
}

/// A `NETLINK_GENERIC` socket bound to the kernel.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> io::Result<Self> {
        Self::open_protocol(Some(rustix::net::netlink::GENERIC))
    }

    /// A socket of another netlink protocol (`None` is protocol 0,
    /// `NETLINK_ROUTE`): only the kernel's acknowledgements of its
    /// requests are read.
    pub fn open_protocol(protocol: Option<rustix::net::Protocol>) -> io::Result<Self> {
        use rustix::net::{netlink, socket_with, AddressFamily, SocketFlags, SocketType};
        let fd = socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, protocol)?;
        rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))?;
        Ok(Self { fd, seq: 1 })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and collects its replies until the acknowledgement.
    /// Returns the attributes of the data replies (command, raw attribute
    /// bytes), or the kernel's errno.
    pub fn request(&mut self, msg: Message) -> io::Result<Vec<(u8, Vec<u8>)>> {
        use rustix::net::{netlink, sendto, SendFlags};
        let bytes = msg.finish();
        sendto(&self.fd, &bytes, SendFlags::empty(), &netlink::SocketAddrNetlink::new(0, 0))?;
        let mut data = Vec::new();
        let mut buf = vec![0u8; 32768];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], rustix::net::RecvFlags::empty())?;
            let replies =
                parse_replies(&buf[..n]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            for reply in replies {
                match reply {
                    Reply::Data { cmd, attrs } => {
                        // Re-encode the attributes so the caller owns them.
                        let mut raw = Vec::new();
                        for a in attrs {
                            raw.extend_from_slice(&((a.payload.len() + NLA_HDRLEN) as u16).to_ne_bytes());
                            raw.extend_from_slice(&a.kind.to_ne_bytes());
                            raw.extend_from_slice(a.payload);
                            raw.resize(align4(raw.len()), 0);
                        }
                        data.push((cmd, raw));
                    }
                    Reply::Ack | Reply::Done => return Ok(data),
                    Reply::Error(e) => return Err(io::Error::from_raw_os_error(-e)),
                }
            }
        }
    }

    /// Resolves a generic netlink family name to its id. `ENOENT` means the
    /// family is not registered (for "nbd": the module is not loaded).
    pub fn family_id(&mut self, name: &str) -> io::Result<u16> {
        let seq = self.next_seq();
        let mut msg = Message::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, seq);
        msg.string(CTRL_ATTR_FAMILY_NAME, name);
        for (_, raw) in self.request(msg)? {
            let attrs = parse_attrs(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some(id) = attrs.iter().find(|a| a.kind == CTRL_ATTR_FAMILY_ID).and_then(Attr::as_u16) {
                return Ok(id);
            }
        }
        Err(io::Error::new(io::ErrorKind::NotFound, format!("generic netlink family '{name}' not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_matches_the_kernel_headers() {
        let mut msg = Message::new(0x1234, 7, 1, 42);
        msg.u32(1, 0xdead_beef).string(2, "abc").begin_nest(3).u64(4, 9).end_nest();
        let bytes = msg.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 0x1234);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 42);
        assert_eq!(&bytes[16..20], &[7, 1, 0, 0]);
        let attrs = parse_attrs(&bytes[20..]).unwrap();
        assert_eq!(attrs.len(), 3);
        assert_eq!(attrs[0].as_u32(), Some(0xdead_beef));
        assert_eq!(attrs[1].payload, b"abc\0");
        assert_eq!(attrs[2].kind, 3, "NLA_F_NESTED is masked off");
        let inner = attrs[2].nested().unwrap();
        assert_eq!(inner, vec![Attr { kind: 4, payload: &9u64.to_ne_bytes() }]);
    }

    #[test]
    fn replies_parse_acks_errors_and_data() {
        let mut data = Vec::new();
        // A data message with one u32 attribute.
        let mut m = Message::new(0x20, 5, 1, 1);
        m.u32(1, 3);
        data.extend(m.finish());
        // An NLMSG_ERROR carrying -ENOENT.
        let mut err = vec![0u8; 20];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
        data.extend(&err);
        let replies = parse_replies(&data).unwrap();
        assert_eq!(replies.len(), 2);
        assert!(matches!(&replies[0], Reply::Data { cmd: 5, attrs } if attrs[0].as_u32() == Some(3)));
        assert_eq!(replies[1], Reply::Error(-2));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(parse_attrs(&[8, 0, 1, 0, 1]).is_err(), "length past the end");
        assert!(parse_attrs(&[2, 0, 1, 0]).is_err(), "length below the header");
        assert!(parse_replies(&[0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut short_err = vec![0u8; 16];
        short_err[0..4].copy_from_slice(&16u32.to_ne_bytes());
        short_err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(parse_replies(&short_err).is_err());
        // Exhaustive small garbage never panics.
        for a in 0..=255u8 {
            for len in 0..12 {
                let junk: Vec<u8> = (0..len).map(|i| a.wrapping_mul(31).wrapping_add(i as u8)).collect();
                let _ = parse_attrs(&junk);
                let _ = parse_replies(&junk);
            }
        }
    }
}
