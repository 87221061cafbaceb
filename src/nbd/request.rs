//! Request validation: every request is checked once, here, at the edge.
//!
//! [`validate`] is pure: it sees the parsed header and what was negotiated,
//! and returns what the transport must do. Nothing is allocated for a
//! request before it passes, so a client's claimed length never sizes a
//! buffer unless it is within [`MAX_PAYLOAD`] and inside the export.
//!
//! Error choice follows proto.md ("Error values", summarised in
//! docs/nbd-protocol.md): EINVAL for malformed requests and reads past the end, ENOSPC for
//! writes past the end, EPERM for writes to a read-only export. A WRITE
//! whose payload cannot be read safely (longer than [`MAX_PAYLOAD`]) closes
//! the connection, since its payload would otherwise be parsed as requests.

use super::proto::*;

/// What was negotiated for this connection, as far as validation cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// Export size in bytes.
    pub size: u64,
    /// The transmission flags sent to the client.
    pub flags: u16,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected with `NBD_OPT_SET_META_CONTEXT`.
    pub allocation_context: bool,
}

impl Session {
    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// A request that passed validation; ranges are inside the export and
/// lengths are non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Read { offset: u64, len: u32 },
    Write { offset: u64, len: u32, fua: bool },
    Flush,
    Trim { offset: u64, len: u32, fua: bool },
    Cache { offset: u64, len: u32 },
    WriteZeroes { offset: u64, len: u32, fua: bool, fast: bool },
    BlockStatus { offset: u64, len: u32, req_one: bool },
}

impl Command {
    /// Bytes of request payload that follow the header.
    pub fn payload_len(&self) -> u32 {
        match *self {
            Command::Write { len, .. } => len,
            _ => 0,
        }
    }

    /// Whether this command changes the export (and so takes part in the
    /// flush barrier).
    pub fn is_write(&self) -> bool {
        matches!(self, Command::Write { .. } | Command::Trim { .. } | Command::WriteZeroes { .. })
    }
}

/// What to do with one request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Execute it.
    Accept(Command),
    /// Reply with `errno`, after reading and discarding `drain` payload
    /// bytes (at most [`MAX_PAYLOAD`]).
    Reject { errno: u32, drain: u32, reason: &'static str },
    /// `NBD_CMD_DISC`: finish what is in flight, then close.
    Disconnect,
    /// The stream cannot be trusted any more; close without a reply.
    Close(&'static str),
}

/// Flags each command may carry. FUA is accepted everywhere: proto.md lets
/// a server ignore it where nothing is written.
fn allowed_flags(kind: u16, s: &Session) -> u16 {
    let df = if s.structured { CMD_FLAG_DF } else { 0 };
    let fast = if s.has(FLAG_SEND_FAST_ZERO) { CMD_FLAG_FAST_ZERO } else { 0 };
    CMD_FLAG_FUA
        | match kind {
            CMD_READ => df,
            CMD_WRITE_ZEROES => CMD_FLAG_NO_HOLE | fast,
            CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
            _ => 0,
        }
}

fn reject(errno: u32, drain: u32, reason: &'static str) -> Verdict {
    Verdict::Reject { errno, drain, reason }
}

/// Decides what to do with `req` in session `s`.
pub fn validate(req: &Request, s: &Session) -> Verdict {
    let (offset, len) = (req.offset, req.length);
    let fua = req.flags & CMD_FLAG_FUA != 0;
    // The payload of a WRITE is on the wire whatever we think of it.
    let drain = if req.kind == CMD_WRITE { len } else { 0 };
    if req.kind == CMD_WRITE && len > MAX_PAYLOAD {
        return Verdict::Close("WRITE payload larger than the 32 MiB maximum");
    }
    if req.kind == CMD_DISC {
        return Verdict::Disconnect;
    }
    if req.kind > CMD_BLOCK_STATUS {
        return reject(errno::EINVAL, 0, "unknown command");
    }
    if req.flags & !allowed_flags(req.kind, s) != 0 {
        return reject(errno::EINVAL, drain, "flag not valid for this command");
    }
    let in_range = offset.checked_add(u64::from(len)).is_some_and(|end| end <= s.size);
    let writes = matches!(req.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && s.has(FLAG_READ_ONLY) {
        return reject(errno::EPERM, drain, "write to a read-only export");
    }
    if req.kind == CMD_FLUSH {
        if offset != 0 || len != 0 {
            return reject(errno::EINVAL, 0, "FLUSH with a non-zero offset or length");
        }
        return Verdict::Accept(Command::Flush);
    }
    let needed = match req.kind {
        CMD_TRIM => FLAG_SEND_TRIM,
        CMD_WRITE_ZEROES => FLAG_SEND_WRITE_ZEROES,
        _ => 0,
    };
    if needed != 0 && !s.has(needed) {
        return reject(errno::EINVAL, 0, "command not offered to this client");
    }
    if req.kind == CMD_BLOCK_STATUS && !(s.structured && s.allocation_context) {
        return reject(errno::EINVAL, 0, "BLOCK_STATUS without a selected metadata context");
    }
    if len == 0 {
        return reject(errno::EINVAL, drain, "zero length");
    }
    if req.kind == CMD_READ && len > MAX_PAYLOAD {
        return reject(errno::EINVAL, 0, "READ longer than the 32 MiB maximum");
    }
    if !in_range {
        let e = if matches!(req.kind, CMD_WRITE | CMD_WRITE_ZEROES) { errno::ENOSPC } else { errno::EINVAL };
        return reject(e, drain, "range beyond the end of the export");
    }
    Verdict::Accept(match req.kind {
        CMD_READ => Command::Read { offset, len },
        CMD_WRITE => Command::Write { offset, len, fua },
        CMD_TRIM => Command::Trim { offset, len, fua },
        CMD_CACHE => Command::Cache { offset, len },
        CMD_WRITE_ZEROES => {
            Command::WriteZeroes { offset, len, fua, fast: req.flags & CMD_FLAG_FAST_ZERO != 0 }
        }
        _ => Command::BlockStatus { offset, len, req_one: req.flags & CMD_FLAG_REQ_ONE != 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Session = Session {
        size: 1 << 20,
        flags: FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES,
        structured: true,
        allocation_context: true,
    };
    const RO: Session = Session { flags: FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH, ..RW };

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request { flags, kind, cookie: 1, offset, length }
    }

    fn errno_of(v: Verdict) -> (u32, u32) {
        match v {
            Verdict::Reject { errno, drain, .. } => (errno, drain),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn accepts_valid_requests() {
        assert_eq!(
            validate(&req(CMD_READ, 0, 0, 4096), &RW),
            Verdict::Accept(Command::Read { offset: 0, len: 4096 })
        );
        assert_eq!(
            validate(&req(CMD_WRITE, CMD_FLAG_FUA, (1 << 20) - 1, 1), &RW),
            Verdict::Accept(Command::Write { offset: (1 << 20) - 1, len: 1, fua: true })
        );
        assert_eq!(validate(&req(CMD_FLUSH, 0, 0, 0), &RO), Verdict::Accept(Command::Flush));
        assert_eq!(validate(&req(CMD_DISC, 0, 0, 0), &RO), Verdict::Disconnect);
        assert!(matches!(
            validate(
                &req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, u32::MAX),
                &Session { size: u64::MAX, ..RW }
            ),
            Verdict::Accept(Command::BlockStatus { req_one: true, .. })
        ));
    }

    #[test]
    fn range_errors_depend_on_the_command() {
        assert_eq!(errno_of(validate(&req(CMD_READ, 0, 1 << 20, 1), &RW)), (errno::EINVAL, 0));
        assert_eq!(errno_of(validate(&req(CMD_WRITE, 0, 1 << 20, 7), &RW)), (errno::ENOSPC, 7));
        assert_eq!(errno_of(validate(&req(CMD_WRITE_ZEROES, 0, u64::MAX, 7), &RW)), (errno::ENOSPC, 0));
        assert_eq!(errno_of(validate(&req(CMD_TRIM, 0, u64::MAX, 1), &RW)), (errno::EINVAL, 0));
    }

    #[test]
    fn zero_and_oversized_lengths() {
        assert_eq!(errno_of(validate(&req(CMD_READ, 0, 0, 0), &RW)), (errno::EINVAL, 0));
        assert_eq!(errno_of(validate(&req(CMD_READ, 0, 0, MAX_PAYLOAD + 1), &RW)).0, errno::EINVAL);
        assert!(matches!(validate(&req(CMD_WRITE, 0, 0, MAX_PAYLOAD + 1), &RW), Verdict::Close(_)));
        let big = Session { size: u64::MAX, ..RW };
        assert!(matches!(validate(&req(CMD_READ, 0, 0, MAX_PAYLOAD), &big), Verdict::Accept(_)));
        // Payload-less commands may exceed the maximum payload.
        assert!(matches!(validate(&req(CMD_TRIM, 0, 0, u32::MAX), &big), Verdict::Accept(_)));
    }

    #[test]
    fn read_only_refuses_writes_but_drains_them() {
        assert_eq!(errno_of(validate(&req(CMD_WRITE, 0, 0, 512), &RO)), (errno::EPERM, 512));
        assert_eq!(errno_of(validate(&req(CMD_TRIM, 0, 0, 512), &RO)).0, errno::EPERM);
        assert_eq!(errno_of(validate(&req(CMD_WRITE_ZEROES, 0, 0, 512), &RO)).0, errno::EPERM);
    }

    #[test]
    fn unknown_commands_flags_and_unnegotiated_features() {
        assert_eq!(errno_of(validate(&req(99, 0, 0, 1), &RW)).0, errno::EINVAL);
        assert_eq!(errno_of(validate(&req(CMD_READ, 1 << 9, 0, 1), &RW)).0, errno::EINVAL);
        assert_eq!(errno_of(validate(&req(CMD_WRITE, CMD_FLAG_DF, 0, 9), &RW)), (errno::EINVAL, 9));
        let simple = Session { structured: false, allocation_context: false, ..RW };
        assert_eq!(errno_of(validate(&req(CMD_READ, CMD_FLAG_DF, 0, 1), &simple)).0, errno::EINVAL);
        assert_eq!(errno_of(validate(&req(CMD_BLOCK_STATUS, 0, 0, 1), &simple)).0, errno::EINVAL);
        // FAST_ZERO is only valid when offered.
        assert_eq!(
            errno_of(validate(&req(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 1), &RW)).0,
            errno::EINVAL
        );
        assert_eq!(errno_of(validate(&req(CMD_FLUSH, 0, 1, 0), &RW)).0, errno::EINVAL);
        let no_trim = Session { flags: RW.flags & !FLAG_SEND_TRIM, ..RW };
        assert_eq!(errno_of(validate(&req(CMD_TRIM, 0, 0, 1), &no_trim)).0, errno::EINVAL);
    }
}
