//! A strict HTTP/1.1 response parser and body reader.
//!
//! Only what range reads of one file need, and nothing a server could use
//! to make the client allocate or wait without bound: the response head is
//! at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] header lines, CRLF line
//! ends, no obsolete line folding, no whitespace before a colon, one
//! consistent `Content-Length`, `Transfer-Encoding` only as `chunked` and
//! never together with `Content-Length` (RFC 9112, 6.1 and 6.3). A body is
//! read into a buffer the caller sized from what it asked for; a body of a
//! different length, however it is framed, is an error, never short or
//! mixed data.

use std::io::{self, Read};

/// Largest response head (status line, headers, final CRLF).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in one head (or one chunked trailer).
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;
/// Bytes kept in the receive buffer.
const BUF_LEN: usize = 64 * 1024;

/// What went wrong reading a response.
#[derive(Debug)]
pub enum Error {
    /// The connection failed (including timeouts).
    Io(io::Error),
    /// The peer closed the connection before sending a byte of the head:
    /// a kept-alive connection the server had already given up.
    Closed,
    /// The connection ended inside a head or body.
    Truncated(String),
    /// The response breaks the protocol.
    Protocol(String),
    /// The TLS handshake failed for good (a certificate that is not
    /// trusted, no common protocol version): retrying cannot help.
    Tls(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) if is_timeout(e) => write!(f, "timed out ({e})"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Closed => write!(f, "connection closed by the server before a response"),
            Error::Truncated(what) => write!(f, "connection closed early: {what}"),
            Error::Protocol(what) => write!(f, "malformed response: {what}"),
            Error::Tls(what) => write!(f, "{what}"),
        }
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// A parsed status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub status: u16,
    pub reason: String,
    /// Names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A `Content-Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes FIRST-LAST/TOTAL`
    Bytes { first: u64, last: u64, total: u64 },
    /// `bytes */TOTAL` (with 416)
    Unsatisfied { total: u64 },
}

impl Head {
    /// The one value of header `name` (lower case); repeated headers with
    /// different values are an error.
    pub fn one(&self, name: &str) -> Result<Option<&str>, Error> {
        let mut found: Option<&str> = None;
        for (n, v) in &self.headers {
            if n == name {
                match found {
                    Some(prev) if prev != v => {
                        return Err(Error::Protocol(format!(
                            "two different {name} headers: {prev:?} and {v:?}"
                        )))
                    }
                    _ => found = Some(v),
                }
            }
        }
        Ok(found)
    }

    /// RFC 9112, 6.3, for a response to GET.
    pub fn framing(&self) -> Result<Framing, Error> {
        if (100..200).contains(&self.status) || self.status == 204 || self.status == 304 {
            return Ok(Framing::Length(0));
        }
        let te = self.one("transfer-encoding")?;
        let cl = self.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str());
        let mut length: Option<u64> = None;
        for value in cl {
            for part in value.split(',') {
                let part = part.trim_matches([' ', '\t']);
                let n = match part.parse::<u64>() {
                    Ok(n) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => return Err(Error::Protocol(format!("Content-Length {value:?} is not a number"))),
                };
                if length.is_some_and(|l| l != n) {
                    return Err(Error::Protocol(format!("conflicting Content-Length values ({value:?})")));
                }
                length = Some(n);
            }
        }
        match (te, length) {
            (Some(_), Some(_)) => Err(Error::Protocol(
                "both Transfer-Encoding and Content-Length (refused as a smuggling risk)".into(),
            )),
            (Some(te), None) if te.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            (Some(te), None) => Err(Error::Protocol(format!("unsupported Transfer-Encoding {te:?}"))),
            (None, Some(n)) => Ok(Framing::Length(n)),
            (None, None) => Ok(Framing::UntilClose),
        }
    }

    /// Whether the connection may carry another request after this response.
    pub fn keep_alive(&self) -> bool {
        let tokens = || {
            self.headers
                .iter()
                .filter(|(n, _)| n == "connection")
                .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        };
        if tokens().any(|t| t == "close") {
            return false;
        }
        self.minor >= 1 || tokens().any(|t| t == "keep-alive")
    }

    pub fn content_range(&self) -> Result<Option<ContentRange>, Error> {
        let Some(v) = self.one("content-range")? else { return Ok(None) };
        parse_content_range(v).map(Some).ok_or_else(|| Error::Protocol(format!("bad Content-Range {v:?}")))
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = parse_u64(total)?;
    if range == "*" {
        return Some(ContentRange::Unsatisfied { total });
    }
    let (first, last) = range.split_once('-')?;
    let (first, last) = (parse_u64(first)?, parse_u64(last)?);
    (first <= last && last < total).then_some(ContentRange::Bytes { first, last, total })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a complete head from the start of `buf`. `Ok(None)`: more bytes
/// are needed (and `buf` is still under [`MAX_HEAD`]).
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Error> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_HEAD {
            return Err(Error::Protocol(format!("response head longer than {MAX_HEAD} bytes")));
        }
        return Ok(None);
    };
    let text = &buf[..end];
    let mut lines = split_crlf(text);
    let status_line = lines.next().unwrap_or_default();
    let head = parse_status_line(status_line)?;
    let headers = parse_fields(lines)?;
    Ok(Some((Head { headers, ..head }, end + 4)))
}

/// Splits at CRLF; a bare CR or LF stays in its line (and is refused there).
fn split_crlf(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                rest = Some(&r[i + 2..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn parse_status_line(line: &[u8]) -> Result<Head, Error> {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    let bad = || Error::Protocol(format!("bad status line {:?}", shown()));
    let minor = match line.get(..9) {
        Some(b"HTTP/1.1 ") => 1,
        Some(b"HTTP/1.0 ") => 0,
        _ => return Err(bad()),
    };
    let code = line.get(9..12).ok_or_else(bad)?;
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let reason = match line.get(12..) {
        None | Some(b"") => String::new(),
        Some([b' ', rest @ ..]) if rest.iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f) => {
            String::from_utf8_lossy(rest).into_owned()
        }
        _ => return Err(bad()),
    };
    Ok(Head { minor, status, reason, headers: Vec::new() })
}

fn parse_fields<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Vec<(String, String)>, Error> {
    let mut headers = Vec::new();
    for line in lines {
        if line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(Error::Protocol("bare CR or LF in the response head".into()));
        }
        let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Error::Protocol(format!("folded header line {:?} (obsolete, refused)", shown())));
        }
        let colon = line.iter().position(|&b| b == b':');
        let Some(colon) = colon.filter(|&c| c > 0 && line[..c].iter().all(|&b| is_tchar(b))) else {
            return Err(Error::Protocol(format!("bad header line {:?}", shown())));
        };
        let value = &line[colon + 1..];
        if value.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
            return Err(Error::Protocol(format!("control character in header line {:?}", shown())));
        }
        if headers.len() == MAX_HEADERS {
            return Err(Error::Protocol(format!("more than {MAX_HEADERS} header lines")));
        }
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value).trim_matches([' ', '\t']).to_string();
        headers.push((name, value));
    }
    Ok(headers)
}

/// A buffered reader of responses over one connection.
pub struct Conn<S> {
    stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<S: Read> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn { stream, buf: vec![0; BUF_LEN].into_boxed_slice(), start: 0, end: 0 }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> Result<usize, Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Reads the next response head; interim 1xx responses are skipped.
    pub fn read_head(&mut self) -> Result<Head, Error> {
        let mut interim = 0;
        loop {
            let head = self.read_one_head()?;
            if !(100..200).contains(&head.status) {
                return Ok(head);
            }
            interim += 1;
            if interim > 8 {
                return Err(Error::Protocol("more than 8 interim (1xx) responses".into()));
            }
        }
    }

    fn read_one_head(&mut self) -> Result<Head, Error> {
        let mut first = true;
        loop {
            if let Some((head, used)) = parse_head(&self.buf[self.start..self.end])? {
                self.start += used;
                return Ok(head);
            }
            // parse_head caps the head below the buffer size, so there is
            // room to read more (fill compacts the buffer first).
            let n = self.fill()?;
            if n == 0 {
                return Err(if first && self.buffered() == 0 {
                    Error::Closed
                } else {
                    Error::Truncated(format!("inside the response head, after {} bytes", self.buffered()))
                });
            }
            first = false;
        }
    }

    /// Reads a body that must be exactly `out.len()` bytes long.
    pub fn read_body(&mut self, framing: Framing, out: &mut [u8]) -> Result<(), Error> {
        let want = out.len() as u64;
        match framing {
            Framing::Length(n) if n != want => {
                Err(Error::Protocol(format!("Content-Length {n}, but the response must carry {want} bytes")))
            }
            Framing::Length(_) => self.read_exact(out, "the body"),
            Framing::Chunked => self.read_chunked(out),
            Framing::UntilClose => {
                self.read_exact(out, "the body (no Content-Length)")?;
                if self.buffered() > 0 || self.fill()? > 0 {
                    return Err(Error::Protocol(format!("body longer than the {want} bytes asked for")));
                }
                Ok(())
            }
        }
    }

    /// Reads and drops a body of at most `limit` bytes. `Ok(false)`: the
    /// body is larger (or delimited by close), so the connection must be
    /// dropped instead.
    pub fn skip_body(&mut self, framing: Framing, limit: u64) -> Result<bool, Error> {
        match framing {
            Framing::Length(n) if n <= limit => {
                let mut left = n;
                while left > 0 {
                    if self.buffered() == 0 && self.fill()? == 0 {
                        return Err(Error::Truncated(format!(
                            "{left} bytes short of the Content-Length {n}"
                        )));
                    }
                    let take = left.min(self.buffered() as u64);
                    self.start += take as usize;
                    left -= take;
                }
                Ok(true)
            }
            Framing::Chunked => {
                let mut sink = Vec::new();
                self.chunked_into(&mut sink, limit)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn read_exact(&mut self, out: &mut [u8], what: &str) -> Result<(), Error> {
        let total = out.len();
        let mut done = self.buffered().min(total);
        out[..done].copy_from_slice(&self.buf[self.start..self.start + done]);
        self.start += done;
        while done < total {
            // Large remainders go straight into the caller's buffer.
            let n = loop {
                match self.stream.read(&mut out[done..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::Io(e)),
                }
            };
            if n == 0 {
                return Err(Error::Truncated(format!("{what} ended after {done} of {total} bytes")));
            }
            done += n;
        }
        Ok(())
    }

    fn read_chunked(&mut self, out: &mut [u8]) -> Result<(), Error> {
        let mut sink = SliceSink { out, filled: 0 };
        self.chunked_into(&mut sink, u64::MAX)?;
        if sink.filled != sink.out.len() {
            return Err(Error::Protocol(format!(
                "chunked body of {} bytes, but the response must carry {}",
                sink.filled,
                sink.out.len()
            )));
        }
        Ok(())
    }

    fn line(&mut self, what: &str) -> Result<Vec<u8>, Error> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                let line = avail[..i]
                    .strip_suffix(b"\r")
                    .ok_or_else(|| Error::Protocol(format!("{what} does not end in CRLF")))?;
                let line = line.to_vec();
                self.start += i + 1;
                return Ok(line);
            }
            if avail.len() > MAX_CHUNK_LINE {
                return Err(Error::Protocol(format!("{what} longer than {MAX_CHUNK_LINE} bytes")));
            }
            if self.fill()? == 0 {
                return Err(Error::Truncated(format!("inside {what}")));
            }
        }
    }

    fn chunked_into(&mut self, sink: &mut dyn Sink, limit: u64) -> Result<(), Error> {
        let mut total = 0u64;
        loop {
            let line = self.line("a chunk-size line")?;
            let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
            let size_text = std::str::from_utf8(size_part).unwrap_or("").trim_end_matches([' ', '\t']);
            let size = match u64::from_str_radix(size_text, 16) {
                Ok(n) if !size_text.is_empty() && size_text.len() <= 16 && !size_text.starts_with('+') => n,
                _ => {
                    let shown = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
                    return Err(Error::Protocol(format!("bad chunk size line {shown:?}")));
                }
            };
            if size == 0 {
                break;
            }
            total = total.saturating_add(size);
            if total > limit || total > sink.room() {
                return Err(Error::Protocol(format!(
                    "chunked body longer than the {} bytes expected",
                    sink.room().min(limit)
                )));
            }
            let mut left = size;
            while left > 0 {
                if self.buffered() == 0 && self.fill()? == 0 {
                    return Err(Error::Truncated(format!("inside a chunk, {left} bytes short")));
                }
                let take = left.min(self.buffered() as u64) as usize;
                sink.put(&self.buf[self.start..self.start + take]);
                self.start += take;
                left -= take as u64;
            }
            if !self.line("the CRLF after a chunk")?.is_empty() {
                return Err(Error::Protocol("chunk data longer than its size".into()));
            }
        }
        // Trailer fields, then the final empty line.
        for _ in 0..=MAX_HEADERS {
            if self.line("the chunked trailer")?.is_empty() {
                return Ok(());
            }
        }
        Err(Error::Protocol(format!("more than {MAX_HEADERS} trailer lines")))
    }
}

trait Sink {
    fn room(&self) -> u64;
    fn put(&mut self, data: &[u8]);
}

struct SliceSink<'a> {
    out: &'a mut [u8],
    filled: usize,
}

impl Sink for SliceSink<'_> {
    fn room(&self) -> u64 {
        self.out.len() as u64
    }
    fn put(&mut self, data: &[u8]) {
        self.out[self.filled..self.filled + data.len()].copy_from_slice(data);
        self.filled += data.len();
    }
}

/// Counts and drops (error bodies being skipped).
impl Sink for Vec<u8> {
    fn room(&self) -> u64 {
        u64::MAX
    }
    fn put(&mut self, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(bytes: &[u8]) -> Conn<io::Cursor<Vec<u8>>> {
        Conn::new(io::Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn parses_a_range_response() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 2-5/10\r\nContent-Length: 4\r\nETag: \"a-b\"\r\n\r\nabcdNEXT";
        let mut c = conn(raw);
        let head = c.read_head().unwrap();
        assert_eq!((head.status, head.minor, head.reason.as_str()), (206, 1, "Partial Content"));
        assert_eq!(head.content_range().unwrap(), Some(ContentRange::Bytes { first: 2, last: 5, total: 10 }));
        assert_eq!(head.one("etag").unwrap(), Some("\"a-b\""));
        assert!(head.keep_alive());
        let mut body = [0u8; 4];
        c.read_body(head.framing().unwrap(), &mut body).unwrap();
        assert_eq!(&body, b"abcd");
        assert_eq!(c.buffered(), 4);
    }

    #[test]
    fn reads_chunked_bodies_and_skips_interim_responses() {
        let raw = b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-T: 1\r\n\r\n";
        let mut c = conn(raw);
        let head = c.read_head().unwrap();
        assert_eq!(head.status, 206);
        let mut body = [0u8; 4];
        c.read_body(head.framing().unwrap(), &mut body).unwrap();
        assert_eq!(&body, b"abcd");
        assert!(matches!(c.read_head(), Err(Error::Closed)));
    }

    #[test]
    fn wrong_lengths_are_errors_never_short_data() {
        let cases: &[(&[u8], usize)] = &[
            // Content-Length disagrees with what was asked for.
            (b"HTTP/1.1 206 OK\r\nContent-Length: 3\r\n\r\nabc", 4),
            // Truncated body.
            (b"HTTP/1.1 206 OK\r\nContent-Length: 4\r\n\r\nabc", 4),
            // Chunked, too short and too long.
            (b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 4),
            (b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n", 4),
            (b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 3),
            (b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab", 4),
            (b"HTTP/1.1 206 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab", 4),
            // Close-delimited, short and long.
            (b"HTTP/1.0 206 OK\r\n\r\nabc", 4),
            (b"HTTP/1.0 206 OK\r\n\r\nabcde", 4),
        ];
        for (raw, want) in cases {
            let mut c = conn(raw);
            let head = c.read_head().unwrap();
            let mut body = vec![0u8; *want];
            let r = head.framing().and_then(|f| c.read_body(f, &mut body));
            assert!(r.is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn malformed_heads_are_refused() {
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS + 1));
        for raw in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 x\r\n\r\n",
            "HTTP/1.1 200OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX : 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\n: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            "HTTP/1.1 200 OK\nX: 1\r\n\r\n",
            long.as_str(),
            many.as_str(),
        ] {
            assert!(matches!(conn(raw.as_bytes()).read_head(), Err(Error::Protocol(_))), "{raw:?}");
        }
        assert!(matches!(conn(b"HTTP/1.1 200 OK\r\nX: 1").read_head(), Err(Error::Truncated(_))));
        assert!(matches!(conn(b"").read_head(), Err(Error::Closed)));
    }

    #[test]
    fn framing_rules() {
        let head = |h: &str| parse_head(format!("HTTP/1.1 206 OK\r\n{h}\r\n").as_bytes()).unwrap().unwrap().0;
        assert_eq!(head("Content-Length: 5\r\n").framing().unwrap(), Framing::Length(5));
        assert_eq!(
            head("Content-Length: 5, 5\r\nContent-Length: 5\r\n").framing().unwrap(),
            Framing::Length(5)
        );
        assert!(head("Content-Length: 5\r\nContent-Length: 6\r\n").framing().is_err());
        assert!(head("Content-Length: -5\r\n").framing().is_err());
        assert!(head("Content-Length: 99999999999999999999999\r\n").framing().is_err());
        assert!(head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n").framing().is_err());
        assert!(head("Transfer-Encoding: gzip, chunked\r\n").framing().is_err());
        assert_eq!(head("Transfer-Encoding: Chunked\r\n").framing().unwrap(), Framing::Chunked);
        assert_eq!(head("").framing().unwrap(), Framing::UntilClose);
        assert!(!head("Connection: close\r\n").keep_alive());
        let old = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap().0;
        assert!(!old.keep_alive());
        assert!(head("ETag: a\r\nETag: b\r\n").one("etag").is_err());
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 0-0/1"),
            Some(ContentRange::Bytes { first: 0, last: 0, total: 1 })
        );
        assert_eq!(parse_content_range("bytes */7"), Some(ContentRange::Unsatisfied { total: 7 }));
        for bad in [
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes 0-1",
            "items 0-1/2",
            "bytes -1-2/3",
            "bytes 0-1/x",
            "bytes 0-1/",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn skips_small_error_bodies_only() {
        let mut c = conn(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 404 x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n");
        let h = c.read_head().unwrap();
        assert!(c.skip_body(h.framing().unwrap(), 100).unwrap());
        let h = c.read_head().unwrap();
        assert!(c.skip_body(h.framing().unwrap(), 100).unwrap());
        assert_eq!(c.buffered(), 0);
        assert!(!c.skip_body(Framing::Length(1000), 100).unwrap());
        assert!(!c.skip_body(Framing::UntilClose, 100).unwrap());
    }

    /// Seeded random mutations of valid responses: errors, never a panic,
    /// never a body of a length other than the one asked for.
    #[test]
    fn mutated_responses_never_panic() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 206 P\r\nContent-Range: bytes 0-9/20\r\nContent-Length: 10\r\n\r\n0123456789",
            b"HTTP/1.1 206 P\r\nContent-Range: bytes 0-9/20\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n6\r\n456789\r\n0\r\n\r\n",
            b"HTTP/1.0 206 P\r\nContent-Range: bytes 0-9/20\r\n\r\n0123456789",
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut m = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next() % 4 {
                let i = (next() % m.len() as u64) as usize;
                match next() % 3 {
                    0 => m[i] = next() as u8,
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, b"\r\n:;-/0 9aF"[(next() % 11) as usize]),
                }
            }
            let mut c = conn(&m);
            let Ok(head) = c.read_head() else { continue };
            let _ = head.content_range();
            let Ok(framing) = head.framing() else { continue };
            let mut body = [0u8; 10];
            if c.read_body(framing, &mut body).is_ok() && framing != Framing::UntilClose {
                assert!(matches!(framing, Framing::Length(10) | Framing::Chunked));
            }
        }
    }
}
