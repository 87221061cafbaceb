//! DHCP (RFC 2131, options RFC 2132): the client's messages and the
//! parser of the server's answers.
//!
//! Pure functions over byte buffers, so they are unit-tested and fuzzed
//! (fuzz/fuzz_targets/dhcp_packet.rs) without a network. The exchange
//! itself (sockets, retries) is in [`super::link`].

use std::net::Ipv4Addr;

/// The fixed BOOTP part before the magic cookie.
const FIXED_LEN: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// The "broadcast" flag: we have no address yet, answer to the broadcast address.
const FLAG_BROADCAST: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_HOSTNAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE: u8 = 51;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMS: u8 = 55;
const OPT_MAX_SIZE: u8 = 57;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

/// DHCP message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            4 => Kind::Decline,
            5 => Kind::Ack,
            6 => Kind::Nak,
            7 => Kind::Release,
            8 => Kind::Inform,
            _ => return None,
        })
    }
}

/// A request from us: DISCOVER, or REQUEST for an offered address.
pub fn build(kind: Kind, xid: u32, mac: [u8; 6], request: Option<(Ipv4Addr, Ipv4Addr)>) -> Vec<u8> {
    let mut p = vec![0u8; FIXED_LEN];
    p[0] = BOOTREQUEST;
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&MAGIC);
    p.extend_from_slice(&[OPT_MSG_TYPE, 1, kind as u8]);
    let mut client_id = vec![OPT_CLIENT_ID, 7, 1];
    client_id.extend_from_slice(&mac);
    p.extend_from_slice(&client_id);
    p.extend_from_slice(&[OPT_MAX_SIZE, 2, 0x05, 0xdc]);
    if let Some((addr, server)) = request {
        p.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        p.extend_from_slice(&addr.octets());
        p.extend_from_slice(&[OPT_SERVER_ID, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.extend_from_slice(&[OPT_PARAMS, 5, OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME, OPT_LEASE]);
    p.push(OPT_END);
    // Some servers drop BOOTP messages shorter than 300 bytes.
    p.resize(p.len().max(300), 0);
    p
}

/// What a server's OFFER or ACK says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub xid: u32,
    /// `yiaddr`: the address for us.
    pub addr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub hostname: Option<String>,
}

fn addrs(payload: &[u8], what: &str) -> Result<Vec<Ipv4Addr>, String> {
    if payload.is_empty() || payload.len() % 4 != 0 {
        return Err(format!("option {what}: length {} is not a multiple of 4", payload.len()));
    }
    Ok(payload.chunks_exact(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])).collect())
}

fn one_addr(payload: &[u8], what: &str) -> Result<Ipv4Addr, String> {
    match payload {
        [a, b, c, d] => Ok(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => Err(format!("option {what}: length {} instead of 4", payload.len())),
    }
}

/// Parses a server's message meant for `xid` and `mac`. `Ok(None)`: a
/// well-formed message for someone else (another client's exchange on
/// the same broadcast domain); `Err`: malformed, with the offset.
pub fn parse(p: &[u8], xid: u32, mac: [u8; 6]) -> Result<Option<Reply>, String> {
    if p.len() < FIXED_LEN + MAGIC.len() {
        return Err(format!(
            "DHCP message of {} bytes, shorter than the {} of its header",
            p.len(),
            FIXED_LEN + 4
        ));
    }
    if p[0] != BOOTREPLY {
        return Ok(None);
    }
    let got_xid = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    if got_xid != xid || p[28..34] != mac {
        return Ok(None);
    }
    if p[FIXED_LEN..FIXED_LEN + 4] != MAGIC {
        return Err(format!("offset {FIXED_LEN}: no DHCP magic cookie"));
    }
    let addr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let mut r = Reply {
        kind: Kind::Discover,
        xid,
        addr,
        server_id: None,
        netmask: None,
        routers: Vec::new(),
        dns: Vec::new(),
        lease_secs: None,
        hostname: None,
    };
    let mut kind = None;
    let mut at = FIXED_LEN + 4;
    let mut ended = false;
    while at < p.len() {
        let code = p[at];
        if code == OPT_PAD {
            at += 1;
            continue;
        }
        if code == OPT_END {
            ended = true;
            break;
        }
        let len =
            *p.get(at + 1).ok_or_else(|| format!("offset {at}: option {code} without a length"))? as usize;
        let payload = p
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| format!("offset {at}: option {code} of {len} bytes runs past the end"))?;
        let ctx = |e: String| format!("offset {at}: {e}");
        match code {
            OPT_MSG_TYPE => {
                let v = *payload
                    .first()
                    .filter(|_| len == 1)
                    .ok_or_else(|| ctx("message type of bad length".into()))?;
                kind = Some(Kind::from_u8(v).ok_or_else(|| ctx(format!("unknown message type {v}")))?);
            }
            OPT_SERVER_ID => r.server_id = Some(one_addr(payload, "server id").map_err(ctx)?),
            OPT_SUBNET => r.netmask = Some(one_addr(payload, "subnet mask").map_err(ctx)?),
            OPT_ROUTER => r.routers = addrs(payload, "router").map_err(ctx)?,
            OPT_DNS => r.dns = addrs(payload, "DNS server").map_err(ctx)?,
            OPT_LEASE => match payload {
                [a, b, c, d] => r.lease_secs = Some(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => return Err(ctx(format!("lease time of {len} bytes"))),
            },
            OPT_HOSTNAME => {
                let name = std::str::from_utf8(payload).map_err(|_| ctx("host name is not UTF-8".into()))?;
                r.hostname = Some(name.trim_end_matches('\0').to_string());
            }
            _ => {}
        }
        at += 2 + len;
    }
    if !ended {
        return Err("options end without the END option".into());
    }
    r.kind = kind.ok_or("no message type option (53): a BOOTP reply, not DHCP")?;
    if matches!(r.kind, Kind::Offer | Kind::Ack) && (r.addr.is_unspecified() || r.addr.is_broadcast()) {
        return Err(format!("{:?} offers the address {}", r.kind, r.addr));
    }
    Ok(Some(r))
}

/// The UDP payload of an IPv4 packet (as a packet socket hands it over,
/// from the IP header on) sent to UDP port `port`: the source address and
/// the payload. `None` for anything else, fragments included; lengths are
/// checked against the buffer.
pub fn udp_payload(pkt: &[u8], port: u16) -> Option<(Ipv4Addr, &[u8])> {
    let (&vihl, _) = pkt.split_first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || pkt.len() < ihl + 8 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    // 17: UDP. More-fragments set, or a fragment offset: not reassembled.
    if pkt[9] != 17 || frag & 0x3fff != 0 || total < ihl + 8 || total > pkt.len() {
        return None;
    }
    let udp = &pkt[ihl..total];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if dport != port || len < 8 || len > udp.len() {
        return None;
    }
    Some((Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]), &udp[8..len]))
}

/// The prefix length of a netmask; `None` for a mask with holes.
pub fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server's answer as slirp's would be.
    pub fn reply(kind: Kind, xid: u32) -> Vec<u8> {
        let mut p = vec![0u8; FIXED_LEN];
        p[0] = BOOTREPLY;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        p[28..34].copy_from_slice(&MAC);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[OPT_MSG_TYPE, 1, kind as u8]);
        p.extend_from_slice(&[OPT_SERVER_ID, 4, 10, 0, 2, 2]);
        p.extend_from_slice(&[OPT_SUBNET, 4, 255, 255, 255, 0]);
        p.extend_from_slice(&[OPT_ROUTER, 4, 10, 0, 2, 2]);
        p.extend_from_slice(&[OPT_DNS, 8, 10, 0, 2, 3, 10, 0, 2, 4]);
        p.extend_from_slice(&[OPT_LEASE, 4, 0, 1, 0x51, 0x80]);
        p.extend_from_slice(&[OPT_PAD, OPT_PAD, OPT_END]);
        p
    }

    #[test]
    fn requests_carry_the_fields_servers_need() {
        let d = build(Kind::Discover, 0xdead_beef, MAC, None);
        assert_eq!(d.len(), 300);
        assert_eq!((d[0], d[1], d[2]), (1, 1, 6));
        assert_eq!(&d[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&d[10..12], &[0x80, 0]);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, 1]);
        let r = build(Kind::Request, 1, MAC, Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))));
        let opts = &r[240..];
        assert!(opts.windows(6).any(|w| w == [50, 4, 10, 0, 2, 15]));
        assert!(opts.windows(6).any(|w| w == [54, 4, 10, 0, 2, 2]));
    }

    #[test]
    fn parses_an_offer() {
        let r = parse(&reply(Kind::Offer, 7), 7, MAC).unwrap().unwrap();
        assert_eq!(r.kind, Kind::Offer);
        assert_eq!(r.addr, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.netmask.and_then(prefix_len), Some(24));
        assert_eq!(r.routers, [Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(r.dns, [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(10, 0, 2, 4)]);
        assert_eq!(r.lease_secs, Some(86400));
    }

    #[test]
    fn other_clients_messages_are_ignored() {
        assert_eq!(parse(&reply(Kind::Offer, 7), 8, MAC), Ok(None));
        let mut other = reply(Kind::Offer, 7);
        other[33] ^= 1;
        assert_eq!(parse(&other, 7, MAC), Ok(None));
    }

    #[test]
    fn malformed_replies_are_errors_with_offsets() {
        let good = reply(Kind::Ack, 1);
        let e = parse(&good[..100], 1, MAC).unwrap_err();
        assert!(e.contains("100 bytes"), "{e}");
        let mut bad = good.clone();
        bad[236] = 0;
        assert!(parse(&bad, 1, MAC).unwrap_err().contains("magic cookie"));
        // An option running past the end.
        let mut bad = good[..good.len() - 3].to_vec();
        bad.extend_from_slice(&[OPT_DNS, 40, 1, 2]);
        assert!(parse(&bad, 1, MAC).unwrap_err().contains("runs past the end"));
        // No END.
        let cut = &good[..good.len() - 1];
        assert!(parse(cut, 1, MAC).unwrap_err().contains("END"));
        // A router list of 3 bytes; a lease of 2; a message type of 9.
        for (opt, payload) in [(OPT_ROUTER, vec![1, 2, 3]), (OPT_LEASE, vec![1, 2]), (OPT_MSG_TYPE, vec![9])]
        {
            let mut bad = good[..240].to_vec();
            bad.extend_from_slice(&[OPT_MSG_TYPE, 1, 5, opt, payload.len() as u8]);
            bad.extend_from_slice(&payload);
            bad.push(OPT_END);
            let e = parse(&bad, 1, MAC).unwrap_err();
            assert!(e.starts_with("offset 243"), "{e}");
        }
        // An ACK for 0.0.0.0.
        let mut zero = good.clone();
        zero[16..20].copy_from_slice(&[0, 0, 0, 0]);
        assert!(parse(&zero, 1, MAC).unwrap_err().contains("0.0.0.0"));
        // No message type: BOOTP.
        let mut bootp = good[..240].to_vec();
        bootp.push(OPT_END);
        assert!(parse(&bootp, 1, MAC).unwrap_err().contains("BOOTP"));
    }

    #[test]
    fn garbage_never_panics() {
        let base = reply(Kind::Offer, 3);
        for i in 0..base.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut m = base.clone();
                m[i] = v;
                let _ = parse(&m, 3, MAC);
                let _ = parse(&m[..i], 3, MAC);
            }
        }
    }

    /// `payload` in UDP from 10.0.2.2:67 to port `dport`, in IPv4.
    pub fn ip_udp(payload: &[u8], dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 2, 2, 10, 0, 2, 15];
        let total = (20 + 8 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&67u16.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn udp_payloads_from_ip_packets() {
        let pkt = ip_udp(b"hello", 68);
        assert_eq!(udp_payload(&pkt, 68), Some((Ipv4Addr::new(10, 0, 2, 2), &b"hello"[..])));
        assert_eq!(udp_payload(&pkt, 67), None, "another port");
        let mut frag = pkt.clone();
        frag[6] = 0x20;
        assert_eq!(udp_payload(&frag, 68), None, "a fragment");
        let mut tcp = pkt.clone();
        tcp[9] = 6;
        assert_eq!(udp_payload(&tcp, 68), None);
        let mut long = pkt.clone();
        long[3] = 200;
        assert_eq!(udp_payload(&long, 68), None, "total length past the buffer");
        let mut udp_long = pkt.clone();
        udp_long[25] = 100;
        assert_eq!(udp_payload(&udp_long, 68), None, "UDP length past the packet");
        let mut opts = pkt.clone();
        opts[0] = 0x4f;
        assert_eq!(udp_payload(&opts, 68), None, "header longer than the packet");
        // Ethernet padding after the packet is ignored.
        let mut padded = pkt.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(udp_payload(&padded, 68).unwrap().1, b"hello");
        for cut in 0..pkt.len() {
            let _ = udp_payload(&pkt[..cut], 68);
        }
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
    }
}
