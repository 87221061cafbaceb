//! rtnetlink: an interface up, an IPv4 address on it, a route. The
//! messages are built by [`super::genl::Message`] with rtnetlink's fixed
//! headers (`include/uapi/linux/rtnetlink.h`, `if_addr.h`); the kernel's
//! acknowledgement is checked for each.

use std::io;
use std::net::Ipv4Addr;

use super::genl::{Message, Socket};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_BOOT`: set up at boot.
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = vec![0u8; 4];
    h.extend_from_slice(&(index as i32).to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&change.to_ne_bytes());
    h
}

/// `RTM_NEWLINK` that sets IFF_UP on `index`.
pub fn link_up_msg(index: u32, seq: u32) -> Message {
    Message::with_header(RTM_NEWLINK, 0, seq, &ifinfomsg(index, IFF_UP, IFF_UP))
}

/// `RTM_NEWADDR`: `addr/prefix` (with its broadcast address) on `index`.
pub fn add_addr_msg(index: u32, addr: Ipv4Addr, prefix: u8, seq: u32) -> Message {
    let mut h = vec![AF_INET, prefix, 0, RT_SCOPE_UNIVERSE];
    h.extend_from_slice(&index.to_ne_bytes());
    let mut m = Message::with_header(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &h);
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    let brd = Ipv4Addr::from(u32::from(addr) | host_bits);
    m.attr(IFA_LOCAL, &addr.octets()).attr(IFA_ADDRESS, &addr.octets());
    if prefix < 31 {
        m.attr(IFA_BROADCAST, &brd.octets());
    }
    m
}

/// `RTM_NEWROUTE` (or `RTM_DELROUTE`): `dst/dst_len` via `gateway`, or
/// directly on the link without one, out of `index`.
pub fn route_msg(
    add: bool,
    index: u32,
    dst: Ipv4Addr,
    dst_len: u8,
    gateway: Option<Ipv4Addr>,
    seq: u32,
) -> Message {
    let scope = if gateway.is_some() { RT_SCOPE_UNIVERSE } else { RT_SCOPE_LINK };
    let h = [AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0, 0, 0, 0];
    let (kind, flags) = if add { (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE) } else { (RTM_DELROUTE, 0) };
    let mut m = Message::with_header(kind, flags, seq, &h);
    if dst_len > 0 {
        m.attr(RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        m.attr(RTA_GATEWAY, &gw.octets());
    }
    m.u32(RTA_OIF, index);
    m
}

/// A `NETLINK_ROUTE` socket.
pub struct Rtnl(Socket);

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        // NETLINK_ROUTE is protocol 0.
        Socket::open_protocol(None).map(Rtnl)
    }

    fn run(&mut self, what: &str, build: impl FnOnce(u32) -> Message) -> io::Result<()> {
        let seq = self.0.next_seq();
        self.0.request(build(seq)).map(drop).map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
    }

    pub fn link_up(&mut self, index: u32) -> io::Result<()> {
        self.run("set the link up", |seq| link_up_msg(index, seq))
    }

    pub fn add_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.run(&format!("add address {addr}/{prefix}"), |seq| add_addr_msg(index, addr, prefix, seq))
    }

    pub fn route(
        &mut self,
        add: bool,
        index: u32,
        dst: Ipv4Addr,
        len: u8,
        gw: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        let what = match gw {
            Some(gw) => format!("route {dst}/{len} via {gw}"),
            None => format!("route {dst}/{len} on the link"),
        };
        self.run(&what, |seq| route_msg(add, index, dst, len, gw, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::genl::parse_attrs;

    #[test]
    fn messages_carry_the_kernel_headers() {
        let link = link_up_msg(3, 9).finish();
        assert_eq!(link.len(), 16 + 16);
        assert_eq!(u16::from_ne_bytes([link[4], link[5]]), RTM_NEWLINK);
        assert_eq!(i32::from_ne_bytes(link[20..24].try_into().unwrap()), 3);
        assert_eq!(u32::from_ne_bytes(link[24..28].try_into().unwrap()), IFF_UP);

        let addr = add_addr_msg(2, Ipv4Addr::new(10, 0, 2, 15), 24, 1).finish();
        assert_eq!(&addr[16..20], &[AF_INET, 24, 0, 0]);
        let attrs = parse_attrs(&addr[24..]).unwrap();
        assert_eq!(attrs[0].payload, [10, 0, 2, 15]);
        assert_eq!(attrs[2].kind, IFA_BROADCAST);
        assert_eq!(attrs[2].payload, [10, 0, 2, 255]);

        let route =
            route_msg(true, 2, Ipv4Addr::UNSPECIFIED, 0, Some(Ipv4Addr::new(10, 0, 2, 2)), 1).finish();
        assert_eq!(&route[16..24], &[AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST]);
        let attrs = parse_attrs(&route[28..]).unwrap();
        assert_eq!((attrs[0].kind, attrs[0].payload), (RTA_GATEWAY, &[10u8, 0, 2, 2][..]));
        assert_eq!(attrs[1].as_u32(), Some(2));

        let bcast = route_msg(false, 2, Ipv4Addr::BROADCAST, 32, None, 1).finish();
        assert_eq!(u16::from_ne_bytes([bcast[4], bcast[5]]), RTM_DELROUTE);
        assert_eq!(bcast[22], RT_SCOPE_LINK);
    }
}
