//! A small DNS resolver: A records only, for the host names of image URLs.
//!
//! Order: an IPv4 literal; `/etc/hosts`; then each `nameserver` of
//! `/etc/resolv.conf` (which `init` writes from DHCP or `nameserver=`),
//! over UDP and, when the UDP answer is truncated or does not come within
//! [`UDP_WAIT`], over TCP (RFC 7766). Answers are cached for the life of
//! the process: a root-storage daemon keeps reaching its server after
//! switch_root has deleted the initramfs's /etc.
//!
//! [`query`] and [`parse_answer`] are pure; the parser takes outside data
//! and is fuzzed (fuzz/fuzz_targets/dns_answer.rs).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

pub const UDP_WAIT: Duration = Duration::from_secs(2);
pub const TCP_WAIT: Duration = Duration::from_secs(5);
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Compression pointers followed in one name, at most (a loop guard).
const MAX_JUMPS: usize = 32;

/// A query for the A records of `name`, with id `id` and recursion desired.
pub fn query(name: &str, id: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name}: not a valid host name (label '{label}')"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    if q.len() > 12 + 254 {
        return Err(format!("{name}: host name longer than 253 characters"));
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// What an answer says.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Addrs(Vec<Ipv4Addr>),
    /// TC set: ask again over TCP.
    Truncated,
    /// RCODE 3: the name does not exist.
    NoSuchName,
}

/// Skips a (possibly compressed) name at `at`; returns the offset after it.
fn skip_name(m: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *m.get(at).ok_or_else(|| format!("offset {at}: name runs past the end"))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => {
                m.get(at + 1).ok_or_else(|| format!("offset {at}: truncated compression pointer"))?;
                return Ok(at + 2);
            }
            l if l & 0xc0 != 0 => return Err(format!("offset {at}: bad label type {l:#x}")),
            l => at += 1 + l as usize,
        }
    }
}

/// Reads a name at `at` (following compression pointers), lowercased.
fn read_name(m: &[u8], mut at: usize) -> Result<String, String> {
    let mut out = String::new();
    let mut jumps = 0;
    loop {
        let len = *m.get(at).ok_or_else(|| format!("offset {at}: name runs past the end"))?;
        if len == 0 {
            return Ok(out);
        }
        if len & 0xc0 == 0xc0 {
            let lo = *m.get(at + 1).ok_or_else(|| format!("offset {at}: truncated compression pointer"))?;
            jumps += 1;
            if jumps > MAX_JUMPS {
                return Err(format!("offset {at}: compression pointer loop"));
            }
            at = (usize::from(len & 0x3f) << 8) | usize::from(lo);
            continue;
        }
        if len & 0xc0 != 0 {
            return Err(format!("offset {at}: bad label type {len:#x}"));
        }
        let label = m
            .get(at + 1..at + 1 + len as usize)
            .ok_or_else(|| format!("offset {at}: label runs past the end"))?;
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        if out.len() > 255 {
            return Err(format!("offset {at}: name longer than 255 bytes"));
        }
        at += 1 + len as usize;
    }
}

fn be16(m: &[u8], at: usize) -> Result<u16, String> {
    m.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| format!("offset {at}: message ends early"))
}

/// Parses the answer to query `id` for `name`: the A records of `name`
/// and of the names its CNAME records lead to.
pub fn parse_answer(m: &[u8], id: u16, name: &str) -> Result<Answer, String> {
    if m.len() < 12 {
        return Err(format!("DNS answer of {} bytes, shorter than its 12-byte header", m.len()));
    }
    if be16(m, 0)? != id {
        return Err(format!("DNS answer for query id {}, not {id}", be16(m, 0)?));
    }
    let flags = be16(m, 2)?;
    if flags & 0x8000 == 0 {
        return Err("DNS message is a query, not an answer".into());
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match flags & 0xf {
        0 => {}
        3 => return Ok(Answer::NoSuchName),
        rc => return Err(format!("DNS server answered with error code {rc}")),
    }
    let (qd, an) = (be16(m, 4)?, be16(m, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(m, at)? + 4;
    }
    let mut names = vec![name.trim_end_matches('.').to_ascii_lowercase()];
    let mut records = Vec::new();
    for _ in 0..an {
        let owner = read_name(m, at)?;
        at = skip_name(m, at)?;
        let (kind, class, len) = (be16(m, at)?, be16(m, at + 2)?, be16(m, at + 8)? as usize);
        let data_at = at + 10;
        let data = m
            .get(data_at..data_at + len)
            .ok_or_else(|| format!("offset {at}: record data runs past the end"))?;
        records.push((owner, kind, class, data_at, data));
        at = data_at + len;
    }
    // CNAMEs first (they may come in any order), then the A records of
    // every name in the chain.
    for _ in 0..records.len() {
        for (owner, kind, _, data_at, _) in &records {
            if *kind == 5 && names.contains(owner) {
                let target = read_name(m, *data_at)?;
                if !names.contains(&target) {
                    names.push(target);
                }
            }
        }
    }
    let addrs: Vec<Ipv4Addr> = records
        .iter()
        .filter(|(owner, kind, class, _, _)| *kind == TYPE_A && *class == CLASS_IN && names.contains(owner))
        .filter_map(|(_, _, _, _, d)| <[u8; 4]>::try_from(*d).ok().map(Ipv4Addr::from))
        .collect();
    Ok(Answer::Addrs(addrs))
}

/// The `nameserver` lines of a resolv.conf text (IPv4 only).
pub fn nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The address `/etc/hosts` (as text) gives `name`.
pub fn from_hosts(text: &str, name: &str) -> Option<Ipv4Addr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let addr: Ipv4Addr = words.next()?.parse().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(addr)
        })
        .next()
}

fn query_id() -> u16 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}

fn ask_udp(server: SocketAddr, q: &[u8], id: u16, name: &str) -> Result<Answer, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.connect(server).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(UDP_WAIT)).map_err(|e| e.to_string())?;
    sock.send(q).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).map_err(|e| format!("UDP: {e}"))?;
        // A stray datagram (an old query's late answer) is skipped.
        if let Ok(a) = parse_answer(&buf[..n], id, name) {
            return Ok(a);
        }
    }
}

fn ask_tcp(server: SocketAddr, q: &[u8], id: u16, name: &str) -> Result<Answer, String> {
    let mut s = TcpStream::connect_timeout(&server, TCP_WAIT).map_err(|e| format!("TCP: {e}"))?;
    s.set_read_timeout(Some(TCP_WAIT)).map_err(|e| e.to_string())?;
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(q);
    s.write_all(&msg).map_err(|e| format!("TCP: {e}"))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| format!("TCP: {e}"))?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).map_err(|e| format!("TCP: {e}"))?;
    parse_answer(&buf, id, name)
}

static CACHE: Mutex<Option<HashMap<String, Vec<Ipv4Addr>>>> = Mutex::new(None);

/// The IPv4 addresses of `host`, or why there are none.
pub fn resolve(host: &str) -> Result<Vec<Ipv4Addr>, String> {
    if let Ok(a) = host.parse::<Ipv4Addr>() {
        return Ok(vec![a]);
    }
    let key = host.trim_end_matches('.').to_ascii_lowercase();
    match lookup(&key) {
        Ok(addrs) => {
            CACHE
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(key, addrs.clone());
            Ok(addrs)
        }
        // The servers are gone (an outage, or /etc went with the
        // initramfs): what they said before still holds.
        Err(e) => match CACHE.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|c| c.get(&key)) {
            Some(addrs) => Ok(addrs.clone()),
            None => Err(e),
        },
    }
}

fn lookup(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    if let Some(a) = from_hosts(&std::fs::read_to_string("/etc/hosts").unwrap_or_default(), name) {
        return Ok(vec![a]);
    }
    if name == "localhost" {
        return Ok(vec![Ipv4Addr::LOCALHOST]);
    }
    let servers = nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    if servers.is_empty() {
        return Err(format!(
            "cannot resolve {name}: no nameserver in /etc/resolv.conf (DHCP gave none; use nameserver=)"
        ));
    }
    let servers: Vec<SocketAddr> = servers.into_iter().map(|s| SocketAddr::from((s, 53))).collect();
    ask_servers(name, &servers)
}

/// Asks each server in turn: UDP, then TCP if that is truncated or silent.
pub fn ask_servers(name: &str, servers: &[SocketAddr]) -> Result<Vec<Ipv4Addr>, String> {
    let id = query_id();
    let q = query(name, id)?;
    let mut tried = Vec::new();
    for &server in servers {
        let answer = match ask_udp(server, &q, id, name) {
            Ok(Answer::Truncated) | Err(_) => ask_tcp(server, &q, id, name),
            other => other,
        };
        match answer {
            Ok(Answer::Addrs(a)) if !a.is_empty() => return Ok(a),
            Ok(Answer::Addrs(_)) => tried.push(format!("{server}: no A record")),
            Ok(Answer::NoSuchName) => {
                return Err(format!("cannot resolve {name}: {server} says it does not exist"))
            }
            Ok(Answer::Truncated) => tried.push(format!("{server}: truncated answer over TCP")),
            Err(e) => tried.push(format!("{server}: {e}")),
        }
    }
    Err(format!("cannot resolve {name} ({})", tried.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to `query(name, id)`: a CNAME to `real`, then `real`'s A.
    fn answer(id: u16, name: &str) -> Vec<u8> {
        let mut m = query(name, id).unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // ANCOUNT
                  // name (pointer to offset 12) CNAME IN ttl, rdata "www" + pointer
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'w', b'w', b'w', 0xc0, 12]);
        let cname_at = m.len() - 6;
        m.extend_from_slice(&[0xc0, cname_at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 2, 100]);
        m
    }

    #[test]
    fn queries_are_well_formed() {
        let q = query("images.test", 0x1234).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 1, 0]);
        assert_eq!(&q[12..], b"\x06images\x04test\x00\x00\x01\x00\x01");
        assert!(query("a..b", 1).is_err());
        assert!(query(&"x".repeat(64), 1).is_err());
        assert!(query(&["abc"; 80].join("."), 1).is_err());
    }

    #[test]
    fn follows_cnames_to_the_address() {
        let m = answer(7, "images.test");
        assert_eq!(
            parse_answer(&m, 7, "Images.Test."),
            Ok(Answer::Addrs(vec![Ipv4Addr::new(10, 0, 2, 100)]))
        );
        assert!(parse_answer(&m, 8, "images.test").unwrap_err().contains("query id"));
        // An A record for another name is not ours.
        assert_eq!(parse_answer(&m, 7, "other.test"), Ok(Answer::Addrs(vec![])));
    }

    #[test]
    fn flags_truncation_and_errors() {
        let mut m = answer(1, "a.b");
        m[2] |= 0x02;
        assert_eq!(parse_answer(&m, 1, "a.b"), Ok(Answer::Truncated));
        let mut m = answer(1, "a.b");
        m[3] = 0x83;
        assert_eq!(parse_answer(&m, 1, "a.b"), Ok(Answer::NoSuchName));
        m[3] = 0x82;
        assert!(parse_answer(&m, 1, "a.b").unwrap_err().contains("error code 2"));
        let mut m = answer(1, "a.b");
        m[2] = 0x01;
        assert!(parse_answer(&m, 1, "a.b").unwrap_err().contains("query"));
    }

    #[test]
    fn malformed_answers_are_errors() {
        let m = answer(3, "images.test");
        for cut in 0..m.len() {
            // Every truncation is an error or a shorter answer, never a panic.
            let _ = parse_answer(&m[..cut], 3, "images.test");
        }
        assert!(parse_answer(&m[..11], 3, "x").unwrap_err().contains("12-byte header"));
        // A pointer loop: the CNAME's target points at itself.
        let mut looped = m.clone();
        let target = m.len() - 16 - 2;
        looped[target] = 0xc0;
        looped[target + 1] = (target) as u8;
        let e = parse_answer(&looped, 3, "images.test").unwrap_err();
        assert!(e.contains("loop"), "{e}");
        // A record longer than the message.
        let mut long = m.clone();
        let rdlen = long.len() - 6;
        long[rdlen] = 0xff;
        assert!(parse_answer(&long, 3, "images.test").unwrap_err().contains("past the end"));
        // A reserved label type.
        let mut bad = m;
        bad[12] = 0x80;
        assert!(parse_answer(&bad, 3, "images.test").unwrap_err().contains("label type"));
    }

    #[test]
    fn reads_resolv_conf_and_hosts() {
        let r = "# dhcp\nnameserver 10.0.2.3\nnameserver  10.0.2.101 \nnameserver fe80::1\nsearch x\n";
        assert_eq!(nameservers(r), [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(10, 0, 2, 101)]);
        let h = "127.0.0.1 localhost\n10.1.2.3 srv srv.lan # comment\n#10.9.9.9 images\n";
        assert_eq!(from_hosts(h, "SRV.lan"), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(from_hosts(h, "images"), None);
    }

    /// A server on 127.0.0.1 whose UDP answers are truncated (TC set),
    /// so only its TCP side (RFC 7766 framing) gives the address; `tcp`
    /// false: it has no TCP side and UDP says nothing.
    fn server(udp_truncates: bool, tcp: bool) -> (SocketAddr, std::thread::JoinHandle<usize>) {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let listener = tcp.then(|| std::net::TcpListener::bind(addr).unwrap());
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            if udp_truncates {
                let mut tc = buf[..n].to_vec();
                tc[2] = 0x83;
                udp.send_to(&tc, from).unwrap();
            }
            let Some(listener) = listener else { return 0 };
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut q).unwrap();
            assert_eq!(u16::from_be_bytes([q[0], q[1]]), id, "the TCP query repeats the UDP one");
            let a = answer(id, "images.test");
            s.write_all(&(a.len() as u16).to_be_bytes()).unwrap();
            s.write_all(&a).unwrap();
            q.len()
        });
        (addr, handle)
    }

    #[test]
    fn truncated_udp_answers_are_asked_again_over_tcp() {
        let (addr, h) = server(true, true);
        assert_eq!(ask_servers("images.test", &[addr]), Ok(vec![Ipv4Addr::new(10, 0, 2, 100)]));
        assert!(h.join().unwrap() > 12);
    }

    #[test]
    fn silent_udp_falls_back_to_tcp_and_failures_name_the_server() {
        let (addr, h) = server(false, true);
        assert_eq!(ask_servers("images.test", &[addr]), Ok(vec![Ipv4Addr::new(10, 0, 2, 100)]));
        h.join().unwrap();
        let (dead, h) = server(false, false);
        let e = ask_servers("images.test", &[dead]).unwrap_err();
        assert!(e.contains(&dead.to_string()) && e.contains("TCP"), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn literals_need_no_server() {
        assert_eq!(resolve("192.0.2.7"), Ok(vec![Ipv4Addr::new(192, 0, 2, 7)]));
    }
}
