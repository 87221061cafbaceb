//! Network in the initramfs: the `ip=` setting, the interface brought up
//! with a DHCP client of our own or a static address (over rtnetlink),
//! and a small DNS resolver. Described in docs/boot-options.md
//! ("Network boot").

pub mod dhcp;
pub mod dns;
pub mod link;

use std::net::Ipv4Addr;

/// `ip=`, in the kernel's syntax (Documentation/admin-guide/nfs/nfsroot.rst).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// `ip=dhcp` (also `on`, `any`, `both`, `bootp`, `dhcp` in the
    /// autoconf field): on `dev`, or the first Ethernet interface.
    Dhcp { dev: Option<String> },
    /// `ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEV:off[:DNS0[:DNS1]]`.
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        hostname: Option<String>,
        dev: Option<String>,
        dns: Vec<Ipv4Addr>,
    },
}

fn is_auto(word: &str) -> bool {
    matches!(word, "dhcp" | "on" | "any" | "both" | "bootp")
}

/// A netmask as `255.255.255.0` or a prefix length `24`.
fn parse_mask(v: &str) -> Option<u8> {
    if let Ok(n) = v.parse::<u8>() {
        return (n <= 32).then_some(n);
    }
    dhcp::prefix_len(v.parse().ok()?)
}

impl IpConfig {
    /// Parses the value of `ip=`. `None` for `ip=off`/`none` (no network);
    /// `Err` says what is wrong.
    pub fn parse(v: &str) -> Result<Option<IpConfig>, String> {
        if matches!(v, "off" | "none") {
            return Ok(None);
        }
        if is_auto(v) {
            return Ok(Some(IpConfig::Dhcp { dev: None }));
        }
        let f: Vec<&str> = v.split(':').collect();
        let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
        // dracut's ip=DEV:dhcp.
        if f.len() == 2 && is_auto(f[1]) {
            return Ok(Some(IpConfig::Dhcp { dev: Some(f[0].to_string()) }));
        }
        let dev = field(5).map(str::to_string);
        let autoconf = field(6).unwrap_or(if field(0).is_some() { "off" } else { "dhcp" });
        if is_auto(autoconf) {
            return Ok(Some(IpConfig::Dhcp { dev }));
        }
        if !matches!(autoconf, "off" | "none" | "static") {
            return Err(format!("ip={v}: unknown autoconfiguration '{autoconf}' (dhcp or off)"));
        }
        let addr: Ipv4Addr = field(0)
            .ok_or_else(|| format!("ip={v}: a static address needs CLIENT (the first field)"))?
            .parse()
            .map_err(|_| format!("ip={v}: CLIENT is not an IPv4 address"))?;
        let ip = |i: usize, what: &str| -> Result<Option<Ipv4Addr>, String> {
            field(i)
                .map(|s| s.parse().map_err(|_| format!("ip={v}: {what} '{s}' is not an IPv4 address")))
                .transpose()
        };
        let gateway = ip(2, "GW")?;
        let prefix = match field(3) {
            Some(m) => parse_mask(m).ok_or_else(|| format!("ip={v}: NETMASK '{m}' is not a netmask"))?,
            // The kernel's default: the class of the address; 24 for what
            // a static setup on a LAN means in practice.
            None => 24,
        };
        let dns = [ip(7, "DNS0")?, ip(8, "DNS1")?].into_iter().flatten().collect();
        Ok(Some(IpConfig::Static { addr, prefix, gateway, hostname: field(4).map(str::to_string), dev, dns }))
    }

    pub fn dev(&self) -> Option<&str> {
        match self {
            IpConfig::Dhcp { dev } | IpConfig::Static { dev, .. } => dev.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhcp_spellings() {
        for v in ["dhcp", "on", "any", "bootp", "::::::dhcp", ":::::eth1:dhcp", "eth1:dhcp"] {
            assert!(matches!(IpConfig::parse(v), Ok(Some(IpConfig::Dhcp { .. }))), "{v}");
        }
        assert_eq!(IpConfig::parse(":::::eth1:dhcp").unwrap().unwrap().dev(), Some("eth1"));
        assert_eq!(IpConfig::parse("off"), Ok(None));
    }

    #[test]
    fn static_kernel_syntax() {
        let c = IpConfig::parse("10.0.2.15::10.0.2.2:255.255.255.0:live:eth0:off").unwrap().unwrap();
        assert_eq!(
            c,
            IpConfig::Static {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                hostname: Some("live".into()),
                dev: Some("eth0".into()),
                dns: vec![],
            }
        );
        let c = IpConfig::parse("192.168.1.9:::16::::192.168.1.1").unwrap().unwrap();
        assert!(
            matches!(c, IpConfig::Static { prefix: 16, gateway: None, ref dns, .. } if dns == &[Ipv4Addr::new(192, 168, 1, 1)])
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        assert!(IpConfig::parse("10.0.2.300::::::off").unwrap_err().contains("CLIENT"));
        assert!(IpConfig::parse("10.0.2.3::x:::::").unwrap_err().contains("GW 'x'"));
        assert!(IpConfig::parse("10.0.2.3:::255.0.255.0:::off").unwrap_err().contains("NETMASK"));
        assert!(IpConfig::parse("10.0.2.3::::::rarp").unwrap_err().contains("rarp"));
        assert!(IpConfig::parse(":::::eth0:off").unwrap_err().contains("CLIENT"));
    }
}
