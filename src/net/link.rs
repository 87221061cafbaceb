//! Bringing an interface up: the link, then DHCP or the static address
//! of `ip=`, the default route, and /etc/resolv.conf.
//!
//! The DHCP exchange sends from a UDP socket on port 68. Before the
//! interface has an address the kernel can send to 255.255.255.255 only
//! through a route; a link route for that one address is added for the
//! exchange and removed after it. Answers are read from a packet socket
//! (`AF_PACKET`, `SOCK_DGRAM`, IPv4 only): a server may send them to the
//! address it offers, which the kernel's IP layer drops until the address
//! is set. Both through rustix's safe calls, no unsafe code.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::dhcp::{self, Kind};
use super::IpConfig;
use crate::boot::log::Log;
use crate::sys::rtnl::Rtnl;

/// DISCOVER rounds before giving up, waiting 2, 4, 8, 8, 8, 8 s for an offer
/// (RFC 2131 4.1's backoff, capped): about 40 s in all.
const DHCP_WAITS: [u64; 6] = [2, 4, 8, 8, 8, 8];

/// What the interface got.
#[derive(Clone, Debug)]
pub struct Configured {
    pub dev: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

fn sysfs(dev: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(dev).join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Ethernet interfaces backed by a device (not lo, not virtual), by name.
fn ethernet_interfaces(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("device").exists())
                .filter(|e| std::fs::read_to_string(e.path().join("type")).is_ok_and(|t| t.trim() == "1"))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Waits up to `timeout` for `want` (or any Ethernet interface) to appear;
/// its driver may still be binding.
pub fn wait_interface(want: Option<&str>, timeout: Duration, rescan: &dyn Fn()) -> Result<String, String> {
    let start = Instant::now();
    loop {
        rescan();
        let have = ethernet_interfaces(Path::new("/sys/class/net"));
        match want {
            Some(w) if Path::new("/sys/class/net").join(w).exists() => return Ok(w.to_string()),
            None if !have.is_empty() => return Ok(have[0].clone()),
            _ => {}
        }
        if start.elapsed() >= timeout {
            let what = want.map_or("an Ethernet interface".to_string(), |w| format!("interface {w}"));
            return Err(format!(
                "no {what} appeared within {} s (present: {}); is its driver in the initramfs (mkinitramfs.sh -N)?",
                timeout.as_secs(),
                if have.is_empty() { "none".to_string() } else { have.join(", ") }
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text.split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>().ok()?;
    bytes.try_into().ok()
}

fn xid() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(16) ^ std::process::id()
}

/// The two sockets of an exchange: UDP port 68 to send, and a packet
/// socket to receive. Servers may answer to the address they offer
/// (QEMU's does, whatever the broadcast flag says), which the kernel drops
/// while the interface has no address; a packet socket sees it anyway.
struct Sockets {
    udp: UdpSocket,
    raw: std::os::fd::OwnedFd,
}

impl Sockets {
    fn open() -> Result<Sockets, String> {
        use rustix::net::{eth, socket_with, AddressFamily, SocketFlags, SocketType};
        let udp = UdpSocket::bind("0.0.0.0:68").map_err(|e| format!("bind to UDP port 68: {e}"))?;
        udp.set_broadcast(true).map_err(|e| e.to_string())?;
        let raw = socket_with(AddressFamily::PACKET, SocketType::DGRAM, SocketFlags::CLOEXEC, Some(eth::IP))
            .map_err(|e| format!("packet socket: {e}"))?;
        Ok(Sockets { udp, raw })
    }

    /// Sends `msg` and waits up to `wait` for an answer of a kind in `want`.
    fn exchange(
        &self,
        msg: &[u8],
        xid: u32,
        mac: [u8; 6],
        want: &[Kind],
        wait: Duration,
        log: &Log,
    ) -> io::Result<Option<dhcp::Reply>> {
        use rustix::net::sockopt::{set_socket_timeout, Timeout};
        self.udp.send_to(msg, SocketAddr::from((Ipv4Addr::BROADCAST, 67)))?;
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            set_socket_timeout(&self.raw, Timeout::Recv, Some(left.max(Duration::from_millis(1))))?;
            let n = match rustix::net::recv(&self.raw, &mut buf[..], rustix::net::RecvFlags::empty()) {
                Ok((n, _)) => n,
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some((from, payload)) = dhcp::udp_payload(&buf[..n.min(buf.len())], 68) else { continue };
            match dhcp::parse(payload, xid, mac) {
                Ok(Some(r)) if want.contains(&r.kind) => return Ok(Some(r)),
                Ok(_) => {}
                Err(e) => log.warn(&format!("DHCP: ignoring a malformed message from {from}: {e}")),
            }
        }
    }
}

/// DISCOVER, OFFER, REQUEST, ACK, with the backoff of [`DHCP_WAITS`].
fn dhcp_lease(dev: &str, mac: [u8; 6], log: &Log) -> Result<dhcp::Reply, String> {
    let sock = Sockets::open().map_err(|e| format!("DHCP on {dev}: {e}"))?;
    for (round, secs) in DHCP_WAITS.iter().enumerate() {
        let id = xid();
        let wait = Duration::from_secs(*secs);
        let discover = dhcp::build(Kind::Discover, id, mac, None);
        let offer = match sock.exchange(&discover, id, mac, &[Kind::Offer], wait, log) {
            Ok(Some(o)) => o,
            Ok(None) => {
                log.info(&format!(
                    "DHCP on {dev}: no offer within {secs} s (round {} of {})",
                    round + 1,
                    DHCP_WAITS.len()
                ));
                continue;
            }
            Err(e) => return Err(format!("DHCP on {dev}: {e}")),
        };
        let Some(server) = offer.server_id else {
            log.warn(&format!("DHCP on {dev}: an offer without a server id, ignored"));
            continue;
        };
        let request = dhcp::build(Kind::Request, id, mac, Some((offer.addr, server)));
        match sock.exchange(&request, id, mac, &[Kind::Ack, Kind::Nak], wait, log) {
            Ok(Some(ack)) if ack.kind == Kind::Ack => return Ok(ack),
            Ok(Some(_)) => {
                log.warn(&format!("DHCP on {dev}: {server} declined our request (NAK); starting over"))
            }
            Ok(None) => log.info(&format!("DHCP on {dev}: no answer to our request within {secs} s")),
            Err(e) => return Err(format!("DHCP on {dev}: {e}")),
        }
    }
    let total: u64 = DHCP_WAITS.iter().sum();
    Err(format!("DHCP on {dev}: no lease after {} rounds ({total} s)", DHCP_WAITS.len()))
}

/// Where `resolv.conf` goes: /etc in the initramfs.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Writes the DNS servers for [`super::dns`] (and for the new root's
/// tools, if it wants them: the file is in the initramfs only).
pub fn write_resolv_conf(path: &Path, servers: &[Ipv4Addr]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
    std::fs::write(path, text)
}

/// Brings up the interface of `config`; `extra_dns` (`nameserver=`)
/// comes before what DHCP gave. Everything said on the console.
/// `rescan` loads the drivers of devices that appeared meanwhile.
pub fn bring_up(
    config: &IpConfig,
    extra_dns: &[Ipv4Addr],
    timeout: Duration,
    rescan: &dyn Fn(),
    log: &Log,
) -> Result<Configured, String> {
    let dev = wait_interface(config.dev(), timeout, rescan)?;
    let index: u32 = sysfs(&dev, "ifindex")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{dev}: no ifindex in /sys/class/net"))?;
    let mac_text = sysfs(&dev, "address").unwrap_or_default();
    let mac =
        parse_mac(&mac_text).ok_or_else(|| format!("{dev}: cannot read its MAC address ('{mac_text}')"))?;
    let mut rt = Rtnl::open().map_err(|e| format!("rtnetlink: {e}"))?;
    let ctx = |e: io::Error| format!("{dev}: {e}");
    rt.link_up(index).map_err(ctx)?;
    // The carrier comes a moment after the link is up (a real NIC
    // negotiates its speed); DHCP's retries cover a slow one.
    let start = Instant::now();
    while sysfs(&dev, "carrier").as_deref() != Some("1") && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = match config {
        IpConfig::Static { addr, prefix, gateway, dns, .. } => {
            Configured { dev: dev.clone(), addr: *addr, prefix: *prefix, gateway: *gateway, dns: dns.clone() }
        }
        IpConfig::Dhcp { .. } => {
            rt.route(true, index, Ipv4Addr::BROADCAST, 32, None).map_err(ctx)?;
            let lease = dhcp_lease(&dev, mac, log);
            let _ = rt.route(false, index, Ipv4Addr::BROADCAST, 32, None);
            let lease = lease?;
            let prefix = lease.netmask.and_then(dhcp::prefix_len).unwrap_or(24);
            log.info(&format!(
                "DHCP on {dev}: lease of {}/{prefix} from {} for {}, router {}, DNS {}",
                lease.addr,
                lease.server_id.map_or("?".into(), |s| s.to_string()),
                lease.lease_secs.map_or("ever".into(), |s| format!("{s} s")),
                lease.routers.first().map_or("none".into(), |r| r.to_string()),
                if lease.dns.is_empty() { "none".into() } else { join(&lease.dns) },
            ));
            Configured {
                dev: dev.clone(),
                addr: lease.addr,
                prefix,
                gateway: lease.routers.first().copied(),
                dns: lease.dns,
            }
        }
    };
    rt.add_addr(index, c.addr, c.prefix).map_err(ctx)?;
    if let Some(gw) = c.gateway {
        rt.route(true, index, Ipv4Addr::UNSPECIFIED, 0, Some(gw)).map_err(ctx)?;
    }
    let mut dns = extra_dns.to_vec();
    dns.extend(c.dns.iter().filter(|d| !extra_dns.contains(d)));
    c.dns = dns;
    write_resolv_conf(&PathBuf::from(RESOLV_CONF), &c.dns).map_err(|e| format!("{RESOLV_CONF}: {e}"))?;
    log.info(&format!(
        "network: {dev} ({mac_text}) is {}/{}, gateway {}, DNS {}",
        c.addr,
        c.prefix,
        c.gateway.map_or("none".into(), |g| g.to_string()),
        if c.dns.is_empty() { "none".into() } else { join(&c.dns) }
    ));
    Ok(c)
}

fn join(a: &[Ipv4Addr]) -> String {
    a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_resolv_conf() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etc/resolv.conf");
        write_resolv_conf(&p, &[Ipv4Addr::new(10, 0, 2, 101), Ipv4Addr::new(10, 0, 2, 3)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            super::super::dns::nameservers(&text),
            [Ipv4Addr::new(10, 0, 2, 101), Ipv4Addr::new(10, 0, 2, 3)]
        );
    }

    #[test]
    fn finds_ethernet_interfaces_with_a_device() {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind, device) in
            [("lo", "772", false), ("eth1", "1", true), ("eth0", "1", true), ("br0", "1", false)]
        {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            if device {
                std::fs::create_dir(d.join("device")).unwrap();
            }
        }
        assert_eq!(ethernet_interfaces(dir.path()), ["eth0", "eth1"]);
    }
}
