//! The control protocol, as pure functions: request parsing, reply
//! framing, the escaping of paths in replies, socket names and their
//! discovery in `/proc/net/unix`.
//!
//! One request per connection: the client sends one command word and a
//! newline (at most [`MAX_REQUEST`] bytes), the server answers with one
//! reply and closes. A reply is `ok\n` followed by a body, or one line
//! `error: MESSAGE\n`; a client reads at most [`MAX_REPLY`] bytes of it.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Every control socket's abstract name starts with this.
pub const PREFIX: &str = "cloopbox/";
/// Longest request line, newline included.
pub const MAX_REQUEST: usize = 64;
/// Longest reply a client accepts.
pub const MAX_REPLY: usize = 64 * 1024;

/// What a client can ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The status block (cowloop's `/proc/cow/N`, docs/formats.md, plus cache and
    /// traffic counters).
    Status,
    /// Flush the stack: cowfile data, bitmap and a clean header.
    Sync,
    /// Flush, disconnect the kernel device, and exit.
    Detach,
    /// Device, image, cowfile and pid, as [`Info`].
    Info,
}

impl Command {
    pub const ALL: [Command; 4] = [Command::Status, Command::Sync, Command::Detach, Command::Info];

    pub fn word(self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Sync => "sync",
            Command::Detach => "detach",
            Command::Info => "info",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    /// No newline within [`MAX_REQUEST`] bytes.
    TooLong,
    NotText,
    Empty,
    Unknown(String),
    /// The client went quiet or the socket failed.
    Io(io::ErrorKind),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = Command::ALL.map(Command::word).join(", ");
        match self {
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::NotText => write!(f, "request is not printable ASCII"),
            RequestError::Empty => write!(f, "empty request (commands: {words})"),
            RequestError::Unknown(w) => write!(f, "unknown command '{w}' (commands: {words})"),
            RequestError::Io(kind) => write!(f, "reading the request: {kind}"),
        }
    }
}

/// Parses one request line, without its newline. Surrounding blanks and
/// a trailing `\r` are allowed.
pub fn parse_request(line: &[u8]) -> Result<Command, RequestError> {
    if line.len() >= MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    if !line.iter().all(|&b| b == b'\t' || b == b'\r' || (b' '..=b'~').contains(&b)) {
        return Err(RequestError::NotText);
    }
    // Only printable ASCII is left, so this cannot fail.
    let word = std::str::from_utf8(line).map_err(|_| RequestError::NotText)?.trim();
    if word.is_empty() {
        return Err(RequestError::Empty);
    }
    Command::ALL.into_iter().find(|c| c.word() == word).ok_or_else(|| RequestError::Unknown(word.into()))
}

/// Reads one request: up to a newline, or to EOF. Never reads more than
/// [`MAX_REQUEST`] bytes, so a client that sends an endless line costs
/// one small buffer.
pub fn read_request<R: Read>(r: &mut R) -> Result<Command, RequestError> {
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    loop {
        if let Some(end) = buf[..len].iter().position(|&b| b == b'\n') {
            return parse_request(&buf[..end]);
        }
        if len == buf.len() {
            return Err(RequestError::TooLong);
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => return parse_request(&buf[..len]),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RequestError::Io(e.kind())),
        }
    }
}

/// The bytes of a reply. An error message is kept to one line.
pub fn encode_reply(result: &Result<String, String>) -> Vec<u8> {
    match result {
        Ok(body) => format!("ok\n{body}").into_bytes(),
        Err(msg) => format!("error: {}\n", msg.replace(['\n', '\r'], " ")).into_bytes(),
    }
}

/// What came back from a server.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    /// The server refused or failed: its message.
    Error(String),
}

/// Decodes a whole reply; `Err` names what is malformed.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("reply is not UTF-8 (at byte {})", e.valid_up_to()))?;
    if let Some(body) = text.strip_prefix("ok\n") {
        return Ok(Reply::Ok(body.to_string()));
    }
    if let Some(msg) = text.strip_prefix("error: ") {
        return Ok(Reply::Error(msg.trim_end().to_string()));
    }
    if text.is_empty() {
        return Err("the server closed the connection without a reply".into());
    }
    let first: String = text.lines().next().unwrap_or_default().chars().take(60).collect();
    Err(format!("malformed reply '{first}'"))
}

/// Escapes arbitrary bytes (a path) into one line of printable text:
/// `\\`, `\n` and `\xHH` for every other byte outside printable ASCII.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The inverse of [`escape`].
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'n') => {
                out.push(b'\n');
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok());
                let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(value) = value else {
                    return Err(format!("bad \\x escape at byte {i} of '{text}'"));
                };
                out.push(value);
                i += 4;
            }
            _ => return Err(format!("bad escape at byte {i} of '{text}'")),
        }
    }
    Ok(out)
}

/// What `info` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// `/dev/nbdN`.
    pub device: String,
    pub pid: u32,
    pub image: PathBuf,
    pub cow: Option<PathBuf>,
}

impl Info {
    /// `key: value` lines; paths escaped.
    pub fn encode(&self) -> String {
        let mut text = format!(
            "device: {}\npid: {}\nimage: {}\n",
            escape(self.device.as_bytes()),
            self.pid,
            escape(self.image.as_os_str().as_bytes())
        );
        if let Some(cow) = &self.cow {
            text += &format!("cowfile: {}\n", escape(cow.as_os_str().as_bytes()));
        }
        text
    }

    /// Parses [`Info::encode`]'s output; unknown keys are ignored, so a
    /// newer server can add some.
    pub fn decode(text: &str) -> Result<Info, String> {
        let (mut device, mut pid, mut image, mut cow) = (None, None, None, None);
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                return Err(format!("info line without 'key: value': '{line}'"));
            };
            let path = || unescape(value).map(|b| PathBuf::from(OsString::from_vec(b)));
            match key {
                "device" => device = Some(value.to_string()),
                "pid" => pid = Some(value.parse::<u32>().map_err(|_| format!("info: bad pid '{value}'"))?),
                "image" => image = Some(path()?),
                "cowfile" => cow = Some(path()?),
                _ => {}
            }
        }
        Ok(Info {
            device: device.ok_or("info: no device line")?,
            pid: pid.ok_or("info: no pid line")?,
            image: image.ok_or("info: no image line")?,
            cow,
        })
    }
}

/// The kernel block device a cloopd serves, which names its control
/// socket: `/dev/nbdN` (`--device`) or `/dev/ublkbN` (`--transport ublk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelDevice {
    Nbd(u32),
    Ublk(u32),
}

impl KernelDevice {
    /// The name in `/dev` and `/sys/block`: `nbd3`, `ublkb3`.
    pub fn name(self) -> String {
        match self {
            KernelDevice::Nbd(i) => format!("nbd{i}"),
            KernelDevice::Ublk(i) => format!("ublkb{i}"),
        }
    }

    /// `/dev/nbd3`, `/dev/ublkb3`, `nbd3` or `ublkb3`; only the canonical
    /// number ("nbd01" and "nbd+1" are not a device's name).
    pub fn parse(text: &str) -> Option<KernelDevice> {
        let name = text.strip_prefix("/dev/").unwrap_or(text);
        let (make, n): (fn(u32) -> KernelDevice, &str) = if let Some(n) = name.strip_prefix("ublkb") {
            (KernelDevice::Ublk, n)
        } else {
            (KernelDevice::Nbd, name.strip_prefix("nbd")?)
        };
        n.parse::<u32>().ok().filter(|i| i.to_string() == n).map(make)
    }

    /// The device a mount source such as `/dev/nbd0p1` or `/dev/ublkb2`
    /// lives on (partitions count as their disk).
    pub fn of_source(source: &str) -> Option<KernelDevice> {
        // Neither name has a 'p' of its own: one starts the partition.
        let name = source.strip_prefix("/dev/")?;
        KernelDevice::parse(name.split_once('p').map_or(name, |(disk, _)| disk))
    }
}

impl fmt::Display for KernelDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/dev/{}", self.name())
    }
}

/// The control socket of the server of `dev`.
pub fn socket_name(dev: KernelDevice) -> String {
    format!("{PREFIX}{}", dev.name())
}

/// The device of a socket name made by [`socket_name`].
pub fn parse_socket_name(name: &str) -> Option<KernelDevice> {
    KernelDevice::parse(name.strip_prefix(PREFIX)?)
}

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s Flags column: a listening socket.
const SO_ACCEPTCON: u32 = 1 << 16;

/// The devices of the control sockets listening in a `/proc/net/unix`
/// text (abstract names show there as `@name`), sorted (NBD first).
/// Accepted connections share the listener's name but do not listen, so
/// they are skipped.
pub fn listening_devices(proc_net_unix: &str) -> Vec<KernelDevice> {
    let mut found: Vec<KernelDevice> = proc_net_unix
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let name = fields.get(7)?.strip_prefix('@')?;
            (flags & SO_ACCEPTCON != 0 && fields.len() == 8).then_some(name)?;
            parse_socket_name(name)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Who may use a control socket: root, and the server's own user (who
/// could ptrace or kill the server anyway; a cloopd attached to a kernel
/// device runs as root, so there this is root only). The peer's uid comes
/// from `SO_PEERCRED`, which the kernel fills in at connect time; the
/// client cannot forge it.
pub fn peer_allowed(peer_uid: u32, server_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == server_uid
}

/// A path shown in a listing or a status block: lossy, but never with a
/// line break inside.
pub fn display_path(path: &Path) -> String {
    path.to_string_lossy().replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hands out its bytes a few at a time, like a slow socket.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn commands_parse_with_or_without_newline() {
        for c in Command::ALL {
            assert_eq!(parse_request(c.word().as_bytes()), Ok(c));
            assert_eq!(read_request(&mut format!("{}\n", c.word()).as_bytes()), Ok(c));
            assert_eq!(read_request(&mut format!(" {}\r\n", c.word()).as_bytes()), Ok(c));
            assert_eq!(read_request(&mut Trickle(format!("{}\n", c.word()).as_bytes(), 1)), Ok(c));
            // EOF without a newline (the client shut its side down).
            assert_eq!(read_request(&mut c.word().as_bytes()), Ok(c));
        }
        // Only the first line counts.
        assert_eq!(read_request(&mut &b"info\nstatus\n"[..]), Ok(Command::Info));
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        assert_eq!(parse_request(b""), Err(RequestError::Empty));
        assert_eq!(read_request(&mut &b"\n"[..]), Err(RequestError::Empty));
        assert_eq!(parse_request(b"STATUS"), Err(RequestError::Unknown("STATUS".into())));
        assert_eq!(parse_request(b"status now"), Err(RequestError::Unknown("status now".into())));
        assert_eq!(parse_request(b"sync\0"), Err(RequestError::NotText));
        assert_eq!(parse_request("st\u{e4}tus".as_bytes()), Err(RequestError::NotText));
        let msg = RequestError::Unknown("x".into()).to_string();
        assert!(msg.contains("status, sync, detach, info"), "{msg}");
    }

    #[test]
    fn an_endless_line_reads_a_bounded_amount() {
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                buf.fill(b'a');
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let mut r = Endless(0);
        assert_eq!(read_request(&mut r), Err(RequestError::TooLong));
        assert!(r.0 <= MAX_REQUEST, "read {} bytes", r.0);
        let long = vec![b's'; MAX_REQUEST - 1];
        assert_eq!(
            parse_request(&long),
            Err(RequestError::Unknown(String::from_utf8(long.clone()).unwrap()))
        );
        assert_eq!(parse_request(&[b's'; MAX_REQUEST]), Err(RequestError::TooLong));
    }

    #[test]
    fn read_errors_are_reported_not_retried_forever() {
        struct Fails;
        impl Read for Fails {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        assert_eq!(read_request(&mut Fails), Err(RequestError::Io(io::ErrorKind::WouldBlock)));
    }

    #[test]
    fn replies_round_trip() {
        let ok = encode_reply(&Ok("a: 1\nb: 2\n".into()));
        assert_eq!(ok, b"ok\na: 1\nb: 2\n");
        assert_eq!(decode_reply(&ok), Ok(Reply::Ok("a: 1\nb: 2\n".into())));
        let err = encode_reply(&Err("flush failed:\nEIO".into()));
        assert_eq!(err, b"error: flush failed: EIO\n");
        assert_eq!(decode_reply(&err), Ok(Reply::Error("flush failed: EIO".into())));
        assert_eq!(decode_reply(b"ok\n"), Ok(Reply::Ok(String::new())));
        assert!(decode_reply(b"").unwrap_err().contains("without a reply"));
        assert!(decode_reply(b"HTTP/1.0 200\n").unwrap_err().contains("malformed"));
        assert!(decode_reply(b"ok\n\xff").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn escapes_keep_every_byte_on_one_line() {
        let raw = b"/a b\\c\nd\x01\xff\xe4";
        let text = escape(raw);
        assert_eq!(text, "/a b\\\\c\\nd\\x01\\xff\\xe4");
        assert_eq!(unescape(&text).unwrap(), raw);
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("\\xzz").is_err());
        assert!(unescape("trailing\\").is_err());
    }

    proptest! {
        #[test]
        fn escape_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = escape(&bytes);
            prop_assert!(!text.contains('\n'));
            prop_assert_eq!(unescape(&text).unwrap(), bytes);
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = read_request(&mut &bytes[..]);
            let _ = decode_reply(&bytes);
            let _ = unescape(&String::from_utf8_lossy(&bytes));
            let _ = Info::decode(&String::from_utf8_lossy(&bytes));
            let _ = listening_devices(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn info_round_trips_odd_paths() {
        let info = Info {
            device: "/dev/nbd2".into(),
            pid: 4711,
            image: PathBuf::from(OsString::from_vec(b"/media/my cd/KNOPPIX\n\xff".to_vec())),
            cow: Some("/data/cow file".into()),
        };
        let text = info.encode();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert_eq!(Info::decode(&text), Ok(info.clone()));
        let ro = Info { cow: None, ..info };
        assert_eq!(Info::decode(&ro.encode()), Ok(ro));
        // Newer servers may add keys.
        assert!(Info::decode("device: /dev/nbd0\npid: 1\nimage: /x\nfuture: 7\n").is_ok());
        assert!(Info::decode("device: /dev/nbd0\nimage: /x\n").unwrap_err().contains("pid"));
        assert!(Info::decode("device: /dev/nbd0\npid: -1\nimage: /x\n").is_err());
        assert!(Info::decode("garbage").is_err());
    }

    #[test]
    fn socket_names() {
        use KernelDevice::{Nbd, Ublk};
        assert_eq!(socket_name(Nbd(0)), "cloopbox/nbd0");
        assert_eq!(socket_name(Ublk(2)), "cloopbox/ublkb2");
        assert_eq!(parse_socket_name("cloopbox/nbd15"), Some(Nbd(15)));
        assert_eq!(parse_socket_name("cloopbox/ublkb0"), Some(Ublk(0)));
        assert_eq!(parse_socket_name("cloopbox/nbd01"), None);
        assert_eq!(parse_socket_name("cloopbox/nbd+1"), None);
        assert_eq!(parse_socket_name("cloopbox/ublkc0"), None);
        assert_eq!(parse_socket_name("cloopbox/ublkb"), None);
        assert_eq!(parse_socket_name("cloopbox/loop0"), None);
        assert_eq!(parse_socket_name("other/nbd0"), None);
    }

    #[test]
    fn devices_parse_and_print() {
        use KernelDevice::{Nbd, Ublk};
        assert_eq!(KernelDevice::parse("/dev/nbd3"), Some(Nbd(3)));
        assert_eq!(KernelDevice::parse("ublkb12"), Some(Ublk(12)));
        assert_eq!(KernelDevice::parse("/dev/sda"), None);
        assert_eq!(KernelDevice::parse("/dev/nbd3p1"), None);
        assert_eq!(Ublk(4).to_string(), "/dev/ublkb4");
        assert_eq!(KernelDevice::of_source("/dev/nbd12p1"), Some(Nbd(12)));
        assert_eq!(KernelDevice::of_source("/dev/ublkb0"), Some(Ublk(0)));
        assert_eq!(KernelDevice::of_source("/dev/ublkb1p2"), Some(Ublk(1)));
        assert_eq!(KernelDevice::of_source("/dev/nbd"), None);
        assert_eq!(KernelDevice::of_source("/dev/nbdx"), None);
        assert_eq!(KernelDevice::of_source("nbd0"), None);
        assert_eq!(KernelDevice::of_source("/dev/sda1"), None);
        assert!(Nbd(9) < Ublk(0));
    }

    #[test]
    fn finds_listening_control_sockets_only() {
        let text = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 20334 @cloopbox/nbd3
0000000000000000: 00000003 00000000 00000000 0001 03 20401 @cloopbox/nbd3
0000000000000000: 00000002 00000000 00010000 0001 01 20335 @cloopbox/nbd0
0000000000000000: 00000002 00000000 00010000 0001 01 11111 /run/cloopbox/nbd1
0000000000000000: 00000002 00000000 00010000 0001 01 11112 @other/nbd2
0000000000000000: 00000002 00000000 00010000 0001 01 11113 @cloopbox/nbd4 extra
0000000000000000: 00000002 00000000 00010000 0005 01 11114
garbage
0000000000000000: 00000002 00000000 00010000 0001 01 20336 @cloopbox/nbd12
0000000000000000: 00000002 00000000 00010000 0001 01 20337 @cloopbox/ublkb1
";
        use KernelDevice::{Nbd, Ublk};
        assert_eq!(listening_devices(text), vec![Nbd(0), Nbd(3), Nbd(12), Ublk(1)]);
        assert_eq!(listening_devices(""), Vec::<KernelDevice>::new());
    }

    #[test]
    fn only_root_and_the_servers_user_may_control() {
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(65534, 0));
        assert!(!peer_allowed(u32::MAX, 0));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(1001, 1000));
    }
}
