//! The fixed newstyle handshake (proto.md "Handshake", docs/nbd-protocol.md).
//!
//! [`negotiate`] runs over any `Read + Write`, so tests and the fuzz
//! target can feed it bytes. It answers one option at a time and returns
//! when the client enters transmission (`EXPORT_NAME` or `GO`) or leaves.
//!
//! Hostile input: option data above [`MAX_OPTION_DATA`] is never buffered
//! (it is drained and refused with `ERR_TOO_BIG`, or the client is dropped
//! above [`MAX_OPTION_DRAIN`]); every length inside option data is checked
//! against the bytes actually present before use (the CVE-2022-26495 class
//! of nbd-server bugs); a client may send at most [`MAX_OPTIONS`] options.
//! The caller bounds the handshake's duration through `before_read`
//! (qemu's CVE-2024-7409 fix uses a 10 s limit; cloopd does the same).

use std::fmt;
use std::io::{self, Read, Write};

use super::export::Export;
use super::proto::*;

/// Largest option payload read into memory. The largest legitimate one is
/// a `SET_META_CONTEXT` with a few queries, or GO with a 4096-byte name.
pub const MAX_OPTION_DATA: u32 = 64 * 1024;
/// Largest oversized option payload that is drained (and refused) rather
/// than answered by dropping the client.
pub const MAX_OPTION_DRAIN: u32 = 1 << 20;
/// Options per handshake; a client that keeps negotiating is dropped.
pub const MAX_OPTIONS: u32 = 1024;
/// Context id of `base:allocation` in `BLOCK_STATUS` replies.
pub const ALLOCATION_CONTEXT_ID: u32 = 1;

/// What the client chose during the handshake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub structured: bool,
    pub allocation_context: bool,
}

/// How a handshake ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Enter the transmission phase.
    Transmission(Negotiated),
    /// The client sent `NBD_OPT_ABORT` or hung up between options.
    Ended,
}

/// A handshake that ended by dropping the client.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    /// The client broke the protocol; the message says how.
    Protocol(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Io(e) => write!(f, "handshake I/O: {e}"),
            HandshakeError::Protocol(m) => write!(f, "handshake: {m}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

fn protocol(msg: impl Into<String>) -> HandshakeError {
    HandshakeError::Protocol(msg.into())
}

struct State<'a, W> {
    w: W,
    export: &'a Export,
    no_zeroes: bool,
    neg: Negotiated,
}

/// Runs the server side of the handshake. `before_read` is called before
/// each blocking read (to arm a deadline); an error from it ends the
/// handshake.
pub fn negotiate<R: Read, W: Write>(
    r: &mut R,
    w: &mut W,
    export: &Export,
    before_read: &mut dyn FnMut() -> io::Result<()>,
) -> Result<Outcome, HandshakeError> {
    let mut greeting = [0u8; 18];
    greeting[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    greeting[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    greeting[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&greeting)?;
    w.flush()?;
    before_read()?;
    let mut cf = [0u8; 4];
    r.read_exact(&mut cf)?;
    let client_flags = u32::from_be_bytes(cf);
    if client_flags & !KNOWN_CLIENT_FLAGS != 0 {
        return Err(protocol(format!("unknown client flags {client_flags:#x}")));
    }
    let mut st =
        State { w, export, no_zeroes: client_flags & FLAG_C_NO_ZEROES != 0, neg: Negotiated::default() };
    for _ in 0..MAX_OPTIONS {
        before_read()?;
        let mut hdr = [0u8; 16];
        match r.read_exact(&mut hdr) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Outcome::Ended),
            other => other?,
        }
        let magic = u64::from_be_bytes(hdr[..8].try_into().expect("8-byte slice"));
        if magic != IHAVEOPT {
            return Err(protocol(format!("bad option magic {magic:#018x}")));
        }
        let opt = u32::from_be_bytes(hdr[8..12].try_into().expect("4-byte slice"));
        let len = u32::from_be_bytes(hdr[12..16].try_into().expect("4-byte slice"));
        let Some(data) = read_option_data(r, &mut st, opt, len)? else { continue };
        if let Some(outcome) = st.option(opt, &data)? {
            st.w.flush()?;
            return Ok(outcome);
        }
        st.w.flush()?;
    }
    Err(protocol(format!("more than {MAX_OPTIONS} options")))
}

/// Reads an option's data, or drains and refuses it when it is too long.
fn read_option_data<R: Read, W: Write>(
    r: &mut R,
    st: &mut State<'_, W>,
    opt: u32,
    len: u32,
) -> Result<Option<Vec<u8>>, HandshakeError> {
    if len <= MAX_OPTION_DATA {
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data)?;
        return Ok(Some(data));
    }
    if len > MAX_OPTION_DRAIN || opt == OPT_EXPORT_NAME {
        return Err(protocol(format!("option {} with {len} bytes of data", option_name(opt))));
    }
    io::copy(&mut r.take(u64::from(len)), &mut io::sink())?;
    st.error(opt, REP_ERR_TOO_BIG, "option data too long")?;
    Ok(None)
}

impl<W: Write> State<'_, W> {
    fn reply(&mut self, opt: u32, kind: u32, payload: &[u8]) -> io::Result<()> {
        self.w.write_all(&option_reply(opt, kind, payload))
    }

    fn error(&mut self, opt: u32, kind: u32, msg: &str) -> io::Result<()> {
        self.reply(opt, kind, msg.as_bytes())
    }

    /// Handles one option; `Some` ends the handshake.
    fn option(&mut self, opt: u32, data: &[u8]) -> Result<Option<Outcome>, HandshakeError> {
        match opt {
            OPT_EXPORT_NAME => return self.export_name(data).map(Some),
            OPT_ABORT => {
                // The client may already be gone; the handshake ends anyway.
                let _ = self.reply(opt, REP_ACK, &[]);
                return Ok(Some(Outcome::Ended));
            }
            OPT_LIST => self.list(data)?,
            OPT_INFO | OPT_GO => {
                if self.info(opt, data)? && opt == OPT_GO {
                    return Ok(Some(Outcome::Transmission(self.neg)));
                }
            }
            OPT_STRUCTURED_REPLY if data.is_empty() => {
                self.neg.structured = true;
                self.reply(opt, REP_ACK, &[])?;
            }
            OPT_STRUCTURED_REPLY => self.error(opt, REP_ERR_INVALID, "STRUCTURED_REPLY takes no data")?,
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => self.meta_context(opt, data)?,
            _ => self.error(opt, REP_ERR_UNSUP, "option not supported")?,
        }
        Ok(None)
    }

    fn transmission_flags(&self) -> u16 {
        let df = if self.neg.structured { FLAG_SEND_DF } else { 0 };
        self.export.flags() | df
    }

    fn export_name(&mut self, name: &[u8]) -> Result<Outcome, HandshakeError> {
        if !self.export.matches(name) {
            // EXPORT_NAME has no error reply: the only answer is to hang up.
            return Err(protocol(format!("unknown export '{}'", String::from_utf8_lossy(name))));
        }
        let mut b = Vec::with_capacity(134);
        b.extend_from_slice(&self.export.size().to_be_bytes());
        b.extend_from_slice(&self.transmission_flags().to_be_bytes());
        if !self.no_zeroes {
            b.resize(134, 0);
        }
        self.w.write_all(&b)?;
        Ok(Outcome::Transmission(self.neg))
    }

    fn list(&mut self, data: &[u8]) -> io::Result<()> {
        if !data.is_empty() {
            return self.error(OPT_LIST, REP_ERR_INVALID, "LIST takes no data");
        }
        let name = self.export.name.as_bytes();
        let mut p = Vec::with_capacity(4 + name.len() + self.export.description.len());
        p.extend_from_slice(&(name.len() as u32).to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(self.export.description.as_bytes());
        self.reply(OPT_LIST, REP_SERVER, &p)?;
        self.reply(OPT_LIST, REP_ACK, &[])
    }

    /// INFO and GO; returns whether the export was described (ACKed).
    /// Both send the same items for the same request, as proto.md demands.
    fn info(&mut self, opt: u32, data: &[u8]) -> io::Result<bool> {
        let req = match InfoRequest::parse(data) {
            Ok(r) => r,
            Err(e) => return self.error(opt, REP_ERR_INVALID, e.0).map(|_| false),
        };
        if !self.export.matches(req.name) {
            return self.error(opt, REP_ERR_UNKNOWN, "no such export").map(|_| false);
        }
        let mut p = Vec::with_capacity(12);
        p.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        p.extend_from_slice(&self.export.size().to_be_bytes());
        p.extend_from_slice(&self.transmission_flags().to_be_bytes());
        self.reply(opt, REP_INFO, &p)?;
        if req.infos.contains(&INFO_NAME) {
            self.info_string(opt, INFO_NAME, self.export.name.clone())?;
        }
        if req.infos.contains(&INFO_DESCRIPTION) && !self.export.description.is_empty() {
            self.info_string(opt, INFO_DESCRIPTION, self.export.description.clone())?;
        }
        // Sent unasked too: a client that did not ask is free to ignore it.
        let bs = self.export.block_sizes;
        let mut p = Vec::with_capacity(14);
        p.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        for v in [bs.minimum, bs.preferred, bs.maximum] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        self.reply(opt, REP_INFO, &p)?;
        self.reply(opt, REP_ACK, &[])?;
        Ok(true)
    }

    fn info_string(&mut self, opt: u32, kind: u16, s: String) -> io::Result<()> {
        let s = &s.as_bytes()[..s.len().min(MAX_STRING)];
        let mut p = Vec::with_capacity(2 + s.len());
        p.extend_from_slice(&kind.to_be_bytes());
        p.extend_from_slice(s);
        self.reply(opt, REP_INFO, &p)
    }

    fn meta_context(&mut self, opt: u32, data: &[u8]) -> io::Result<()> {
        let set = opt == OPT_SET_META_CONTEXT;
        if set && !self.neg.structured {
            return self.error(opt, REP_ERR_INVALID, "SET_META_CONTEXT needs structured replies first");
        }
        let req = match MetaContextRequest::parse(data) {
            Ok(r) => r,
            Err(e) => return self.error(opt, REP_ERR_INVALID, e.0),
        };
        if !self.export.matches(req.name) {
            return self.error(opt, REP_ERR_UNKNOWN, "no such export");
        }
        let wanted = CONTEXT_BASE_ALLOCATION.as_bytes();
        // "base:" lists every context of the namespace; SET needs full names.
        let hit = |q: &&[u8]| *q == wanted || (!set && *q == b"base:");
        let selected = if set {
            req.queries.iter().any(hit)
        } else {
            req.queries.is_empty() || req.queries.iter().any(hit)
        };
        if set {
            // SET replaces whatever an earlier SET chose.
            self.neg.allocation_context = selected;
        }
        if selected {
            let id = if set { ALLOCATION_CONTEXT_ID } else { 0 };
            let mut p = Vec::with_capacity(4 + wanted.len());
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(wanted);
            self.reply(opt, REP_META_CONTEXT, &p)?;
        }
        self.reply(opt, REP_ACK, &[])
    }
}
