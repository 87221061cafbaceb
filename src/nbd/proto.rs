//! NBD wire format: constants, headers and pure parsers.
//!
//! Everything here works on byte slices and does no I/O, so it can be unit
//! tested and fuzzed directly. Constant names follow the NBD protocol
//! specification (NetworkBlockDevice/nbd `doc/proto.md`, summarised in
//! docs/nbd-protocol.md) without their `NBD_` prefix; the module path says
//! that. All integers on the wire are big-endian.
//!
//! Only the compact request and reply headers are implemented: extended
//! headers (`NBD_OPT_EXTENDED_HEADERS`) are refused with `ERR_UNSUP`, which
//! every client that asks for them handles by falling back.

use std::fmt;

// ---- Handshake ----------------------------------------------------------

/// `NBDMAGIC`, the first 8 bytes the server sends (proto.md "Newstyle
/// negotiation").
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic after NBDMAGIC, and the magic that starts
/// every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flag: the server speaks fixed newstyle (MUST be set).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the 124 zero bytes after `NBD_OPT_EXPORT_NAME` may be
/// omitted if the client agrees.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;

/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;
/// Every client flag this server knows; the server MUST drop a client that
/// sets any other bit (proto.md "Client flags").
pub const KNOWN_CLIENT_FLAGS: u32 = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

/// Option: select an export and enter transmission (no error reply exists).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the handshake.
pub const OPT_ABORT: u32 = 2;
/// Option: list exports.
pub const OPT_LIST: u32 = 3;
/// Option: upgrade to TLS (not supported here: `ERR_UNSUP`).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export without entering transmission.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts for `NBD_CMD_BLOCK_STATUS`.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Option: 64-bit request and reply headers (not supported here).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply: success, end of this option's replies.
pub const REP_ACK: u32 = 1;
/// Option reply: one export in an `OPT_LIST` answer.
pub const REP_SERVER: u32 = 2;
/// Option reply: one `NBD_INFO_*` item of an `OPT_INFO`/`OPT_GO` answer.
pub const REP_INFO: u32 = 3;
/// Option reply: one selected or listed metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Error reply bit; every `NBD_REP_ERR_*` has it.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// The option is not known or not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Refused by server policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// The option data is malformed, or the option is not valid now.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// The option is not supported on this platform.
pub const REP_ERR_PLATFORM: u32 = REP_FLAG_ERROR | 4;
/// TLS is required first.
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
/// The requested export does not exist.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// The server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// The server requires the client to request block sizes.
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_FLAG_ERROR | 8;
/// The option data or the reply would be too large.
pub const REP_ERR_TOO_BIG: u32 = REP_FLAG_ERROR | 9;

/// Info item: export size and transmission flags (mandatory in GO/INFO).
pub const INFO_EXPORT: u16 = 0;
/// Info item: the canonical export name.
pub const INFO_NAME: u16 = 1;
/// Info item: a human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Info item: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// The only metadata context this server offers (proto.md "Metadata
/// querying", namespace `base`).
pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";
/// `base:allocation` extent flag: the range is a hole (unallocated).
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation` extent flag: the range reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// The longest string (export name, description, context query) the
/// protocol allows (proto.md: "strings ... MUST be no longer than 4096").
pub const MAX_STRING: usize = 4096;

// ---- Transmission -------------------------------------------------------

/// Transmission flag: MUST always be set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: the export behaves like a rotating disk (never set
/// here: cloop images are SSD-like).
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is supported.
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: several connections see one coherent export.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_CACHE` is supported.
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// Transmission flag: `NBD_CMD_FLAG_FAST_ZERO` is supported.
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// `NBD_REQUEST_MAGIC`, first 4 bytes of every compact request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Size of a compact request header.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Size of a structured reply chunk header.
pub const STRUCTURED_REPLY_LEN: usize = 20;

/// `NBD_CMD_READ`.
pub const CMD_READ: u16 = 0;
/// `NBD_CMD_WRITE`.
pub const CMD_WRITE: u16 = 1;
/// `NBD_CMD_DISC`.
pub const CMD_DISC: u16 = 2;
/// `NBD_CMD_FLUSH`.
pub const CMD_FLUSH: u16 = 3;
/// `NBD_CMD_TRIM`.
pub const CMD_TRIM: u16 = 4;
/// `NBD_CMD_CACHE`.
pub const CMD_CACHE: u16 = 5;
/// `NBD_CMD_WRITE_ZEROES`.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// `NBD_CMD_BLOCK_STATUS`.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (WRITE_ZEROES): do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag (READ): do not fragment the reply.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag (BLOCK_STATUS): one extent only.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag (WRITE_ZEROES): fail with ENOTSUP unless fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of this request.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Structured chunk: no payload (only with DONE).
pub const REPLY_TYPE_NONE: u16 = 0;
/// Structured chunk: u64 offset + data.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Structured chunk: u64 offset + u32 length of a zero range.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Structured chunk: u32 context id + (u32 length, u32 flags) extents.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Structured chunk: u32 error + u16 message length + message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

/// Error values on the wire (proto.md "Error values"); not the host's errno
/// numbers, even though they coincide on Linux.
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const EOVERFLOW: u32 = 75;
    pub const ENOTSUP: u32 = 95;
    pub const ESHUTDOWN: u32 = 108;

    /// The symbolic name, for log lines.
    pub fn name(e: u32) -> &'static str {
        match e {
            0 => "OK",
            EPERM => "EPERM",
            EIO => "EIO",
            ENOMEM => "ENOMEM",
            EINVAL => "EINVAL",
            ENOSPC => "ENOSPC",
            EOVERFLOW => "EOVERFLOW",
            ENOTSUP => "ENOTSUP",
            ESHUTDOWN => "ESHUTDOWN",
            _ => "E?",
        }
    }
}

/// The largest READ or WRITE payload this server accepts: 32 MiB, the
/// protocol's default maximum and the size below which a request SHOULD
/// NOT be treated as a denial of service (proto.md "Size constraints").
pub const MAX_PAYLOAD: u32 = 1 << 25;

// ---- Parsing ------------------------------------------------------------

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// A compact request header, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// The request header did not start with `NBD_REQUEST_MAGIC`; the stream is
/// out of sync and the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRequestMagic(pub u32);

impl fmt::Display for BadRequestMagic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad request magic {:#010x} (expected {REQUEST_MAGIC:#010x})", self.0)
    }
}

impl Request {
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Result<Request, BadRequestMagic> {
        let magic = be32(&b[0..]);
        if magic != REQUEST_MAGIC {
            return Err(BadRequestMagic(magic));
        }
        Ok(Request {
            flags: be16(&b[4..]),
            kind: be16(&b[6..]),
            cookie: be64(&b[8..]),
            offset: be64(&b[16..]),
            length: be32(&b[24..]),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// The command's name for log lines.
pub fn command_name(kind: u16) -> &'static str {
    match kind {
        CMD_READ => "READ",
        CMD_WRITE => "WRITE",
        CMD_DISC => "DISC",
        CMD_FLUSH => "FLUSH",
        CMD_TRIM => "TRIM",
        CMD_CACHE => "CACHE",
        CMD_WRITE_ZEROES => "WRITE_ZEROES",
        CMD_BLOCK_STATUS => "BLOCK_STATUS",
        _ => "UNKNOWN",
    }
}

/// The option's name for log lines.
pub fn option_name(opt: u32) -> &'static str {
    match opt {
        OPT_EXPORT_NAME => "EXPORT_NAME",
        OPT_ABORT => "ABORT",
        OPT_LIST => "LIST",
        OPT_STARTTLS => "STARTTLS",
        OPT_INFO => "INFO",
        OPT_GO => "GO",
        OPT_STRUCTURED_REPLY => "STRUCTURED_REPLY",
        OPT_LIST_META_CONTEXT => "LIST_META_CONTEXT",
        OPT_SET_META_CONTEXT => "SET_META_CONTEXT",
        OPT_EXTENDED_HEADERS => "EXTENDED_HEADERS",
        _ => "UNKNOWN",
    }
}

/// A malformed option payload; answered with `NBD_REP_ERR_INVALID` and
/// the handshake goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadOption(pub &'static str);

impl fmt::Display for BadOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Splits a length-prefixed (u32) string off the front of `data`.
fn take_string<'a>(data: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], BadOption> {
    if data.len() < 4 {
        return Err(BadOption(what));
    }
    let len = be32(data) as usize;
    let rest = &data[4..];
    if len > MAX_STRING || len > rest.len() {
        return Err(BadOption(what));
    }
    let (s, tail) = rest.split_at(len);
    *data = tail;
    Ok(s)
}

/// The payload of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    pub name: &'a [u8],
    pub infos: Vec<u16>,
}

impl<'a> InfoRequest<'a> {
    /// Parses `u32 namelen, name, u16 n, n × u16`; the lengths must account
    /// for every byte.
    pub fn parse(mut data: &'a [u8]) -> Result<Self, BadOption> {
        let name = take_string(&mut data, "export name length exceeds the option data")?;
        if data.len() < 2 {
            return Err(BadOption("option data ends before the info request count"));
        }
        let n = be16(data) as usize;
        let rest = &data[2..];
        if rest.len() != n * 2 {
            return Err(BadOption("info request count does not match the option length"));
        }
        let infos = rest.chunks_exact(2).map(be16).collect();
        Ok(InfoRequest { name, infos })
    }
}

/// The payload of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    pub name: &'a [u8],
    pub queries: Vec<&'a [u8]>,
}

impl<'a> MetaContextRequest<'a> {
    /// Parses `u32 namelen, name, u32 n, n × (u32 len, query)`; the lengths
    /// must account for every byte. The query count is checked against the
    /// data before anything is allocated for it.
    pub fn parse(mut data: &'a [u8]) -> Result<Self, BadOption> {
        let name = take_string(&mut data, "export name length exceeds the option data")?;
        if data.len() < 4 {
            return Err(BadOption("option data ends before the query count"));
        }
        let n = be32(data) as usize;
        data = &data[4..];
        // Each query takes at least its 4-byte length.
        if n > data.len() / 4 {
            return Err(BadOption("query count exceeds the option data"));
        }
        let mut queries = Vec::with_capacity(n);
        for _ in 0..n {
            queries.push(take_string(&mut data, "query length exceeds the option data")?);
        }
        if !data.is_empty() {
            return Err(BadOption("trailing bytes after the last query"));
        }
        Ok(MetaContextRequest { name, queries })
    }
}

// ---- Encoding -----------------------------------------------------------

/// An option reply header followed by its payload, as one buffer.
pub fn option_reply(opt: u32, reply: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + payload.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A simple reply header.
pub fn simple_reply(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    write_simple_reply(&mut b, cookie, error);
    b
}

/// Writes a simple reply header into the first 16 bytes of `b`.
pub fn write_simple_reply(b: &mut [u8], cookie: u64, error: u32) {
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
}

/// Writes a structured reply chunk header into the first 20 bytes of `b`.
pub fn write_structured_header(b: &mut [u8], flags: u16, kind: u16, cookie: u64, length: u32) {
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&length.to_be_bytes());
}

/// A final structured `ERROR` chunk carrying `error` and a short message.
pub fn structured_error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // Messages SHOULD stay within 256 bytes; cut at a char boundary.
    let mut end = message.len().min(256);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &message.as_bytes()[..end];
    let len = 6 + msg.len();
    let mut b = vec![0u8; STRUCTURED_REPLY_LEN + len];
    write_structured_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, len as u32);
    b[20..24].copy_from_slice(&error.to_be_bytes());
    b[24..26].copy_from_slice(&(msg.len() as u16).to_be_bytes());
    b[26..].copy_from_slice(msg);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_rejects_bad_magic() {
        let r = Request {
            flags: 1,
            kind: CMD_WRITE,
            cookie: 0xdead_beef_0102_0304,
            offset: 1 << 40,
            length: 4096,
        };
        let b = r.encode();
        assert_eq!(Request::parse(&b), Ok(r));
        let mut bad = b;
        bad[0] ^= 1;
        assert_eq!(Request::parse(&bad), Err(BadRequestMagic(REQUEST_MAGIC ^ (1 << 24))));
    }

    #[test]
    fn info_request_needs_exact_lengths() {
        let mut d = vec![0, 0, 0, 3, b'a', b'b', b'c', 0, 2, 0, 3, 0, 1];
        let r = InfoRequest::parse(&d).unwrap();
        assert_eq!(r.name, b"abc");
        assert_eq!(r.infos, vec![INFO_BLOCK_SIZE, INFO_NAME]);
        d.push(0);
        assert!(InfoRequest::parse(&d).is_err());
        assert!(InfoRequest::parse(&[0xff, 0xff, 0xff, 0xff, 0, 0]).is_err());
        assert!(InfoRequest::parse(&[0, 0, 0, 0]).is_err());
        assert!(InfoRequest::parse(&[]).is_err());
    }

    #[test]
    fn meta_context_request_parses_and_caps_counts() {
        let mut d = vec![0, 0, 0, 0, 0, 0, 0, 2];
        for q in [&b"base:allocation"[..], b"qemu:x"] {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q);
        }
        let r = MetaContextRequest::parse(&d).unwrap();
        assert_eq!(r.name, b"");
        assert_eq!(r.queries, vec![&b"base:allocation"[..], b"qemu:x"]);
        // A huge count must be refused before allocating.
        assert!(MetaContextRequest::parse(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        d.push(1);
        assert!(MetaContextRequest::parse(&d).is_err());
    }

    #[test]
    fn structured_error_is_well_formed() {
        let b = structured_error(7, errno::EIO, "boom");
        assert_eq!(be32(&b), STRUCTURED_REPLY_MAGIC);
        assert_eq!(be16(&b[4..]), REPLY_FLAG_DONE);
        assert_eq!(be16(&b[6..]), REPLY_TYPE_ERROR);
        assert_eq!(be64(&b[8..]), 7);
        assert_eq!(be32(&b[16..]) as usize, b.len() - 20);
        assert_eq!(be32(&b[20..]), errno::EIO);
        assert_eq!(&b[26..], b"boom");
        let long = "é".repeat(300);
        let b = structured_error(1, 5, &long);
        assert!(b.len() <= 20 + 6 + 256);
        assert!(std::str::from_utf8(&b[26..]).is_ok());
    }
}
