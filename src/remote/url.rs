//! `http://host[:port]/path` URLs, parsed strictly.
//!
//! Only what an image location needs: scheme, host (name, IPv4 or a
//! bracketed IPv6 literal), port, path with query (kept byte for byte, so
//! percent-encoding reaches the server as the user wrote it) and an
//! optional fragment, which is never sent: it names a file inside an ISO
//! (`…/knoppix.iso#KNOPPIX/KNOPPIX1`). No user info, no spaces or control
//! characters, no malformed `%XX`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Host name or address, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`, as written.
    pub path: String,
    /// After `#`, as written; never sent to the server.
    pub fragment: Option<String>,
}

/// Longest URL accepted (a request line has to fit the server's limits too).
pub const MAX_URL_LEN: usize = 4096;

/// Whether `text` looks like a URL rather than a file name.
pub fn is_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let bad = |what: &str| format!("{text}: not a valid URL: {what}");
        if text.len() > MAX_URL_LEN {
            return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
        }
        if let Some(c) = text.chars().find(|c| c.is_control() || c.is_whitespace() || !c.is_ascii()) {
            return Err(bad(&format!(
                "contains {c:?} (spaces, control and non-ASCII characters must be percent-encoded)"
            )));
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((s, _)) => return Err(bad(&format!("scheme {s:?} is not http or https"))),
            None => return Err(bad("no scheme (http:// or https://)")),
        };
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f.to_string())),
            None => (rest, None),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        check_percent(&path).map_err(|e| bad(&e))?;
        if let Some(f) = &fragment {
            check_percent(f).map_err(|e| bad(&e))?;
        }
        if authority.contains('@') {
            return Err(bad("user names and passwords in URLs are not supported"));
        }
        let default_port = if scheme == Scheme::Http { 80 } else { 443 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("IPv6 literal without ']'"))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad(&format!("[{addr}] is not an IPv6 address")));
            }
            let port = match after {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').ok_or_else(|| bad("junk after the IPv6 literal"))?)
                    .map_err(|e| bad(&e))?,
            };
            (addr.to_string(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p).map_err(|e| bad(&e))?),
                None => (authority, default_port),
            };
            if host.is_empty() {
                return Err(bad("no host"));
            }
            if let Some(c) =
                host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
            {
                return Err(bad(&format!("host name {host:?} contains {c:?}")));
            }
            (host.to_ascii_lowercase(), port)
        };
        Ok(Url { scheme, host, port, path, fragment })
    }

    /// The value of the `Host` header.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default = if self.scheme == Scheme::Http { 80 } else { 443 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Where a redirect's `Location` points, relative to this URL:
    /// absolute URLs, `//authority/path`, `/path`. The fragment is kept
    /// unless the new location has its own (RFC 9110, 10.2.2).
    pub fn join(&self, location: &str) -> Result<Url, String> {
        let mut next = if is_url(location) {
            Url::parse(location)?
        } else if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.scheme == Scheme::Http { "http" } else { "https" };
            Url::parse(&format!("{scheme}://{rest}"))?
        } else if location.starts_with('/') {
            Url::parse(&format!("{}{location}", self.origin()))?
        } else {
            // A relative path: resolve against the directory of this one.
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            Url::parse(&format!("{}{dir}{location}", self.origin()))?
        };
        if next.fragment.is_none() {
            next.fragment.clone_from(&self.fragment);
        }
        Ok(next)
    }

    fn origin(&self) -> String {
        let scheme = if self.scheme == Scheme::Http { "http" } else { "https" };
        format!("{scheme}://{}", self.authority())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)?;
        if let Some(frag) = &self.fragment {
            write!(f, "#{frag}")?;
        }
        Ok(())
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
    }
}

fn check_percent(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        let ok = b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
        if !ok {
            return Err(format!("'%' at byte {i} of {s:?} is not followed by two hex digits"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_paths() {
        let u = Url::parse("http://127.0.0.1:8080/img/knoppix%20x.iso?x=1#KNOPPIX/KNOPPIX1").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/img/knoppix%20x.iso?x=1");
        assert_eq!(u.fragment.as_deref(), Some("KNOPPIX/KNOPPIX1"));
        assert_eq!(u.authority(), "127.0.0.1:8080");
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/img/knoppix%20x.iso?x=1#KNOPPIX/KNOPPIX1");

        let u = Url::parse("HTTP://Example.ORG").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("example.org", 80, "/"));
        let u = Url::parse("http://[::1]:81/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        assert_eq!(u.authority(), "[::1]:81");
        let u = Url::parse("http://[fe80::1]/").unwrap();
        assert_eq!(u.port, 80);
        assert_eq!(Url::parse("https://h/x").unwrap().scheme, Scheme::Https);
        assert_eq!(Url::parse("https://h/x").unwrap().port, 443);
        assert_eq!(Url::parse("http://h?q").unwrap().path, "/?q");
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "ftp://h/x",
            "h/x",
            "http:///x",
            "http://h:0/",
            "http://h:65536/",
            "http://h:8a/",
            "http://h:/",
            "http://u:p@h/",
            "http://[::1/",
            "http://[nope]/",
            "http://[::1]x/",
            "http://h/a b",
            "http://h/a%2",
            "http://h/a%zz",
            "http://h\u{e9}/",
            "http://h/\n",
            "http://h!/",
        ] {
            let e = Url::parse(bad).unwrap_err();
            assert!(e.contains("not a valid URL"), "{bad}: {e}");
        }
        assert!(Url::parse(&format!("http://h/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn joins_redirect_locations() {
        let base = Url::parse("http://h:81/a/b.iso#KNOPPIX/KNOPPIX").unwrap();
        assert_eq!(base.join("/c").unwrap().to_string(), "http://h:81/c#KNOPPIX/KNOPPIX");
        assert_eq!(base.join("c.iso").unwrap().to_string(), "http://h:81/a/c.iso#KNOPPIX/KNOPPIX");
        assert_eq!(base.join("//g/x").unwrap().to_string(), "http://g/x#KNOPPIX/KNOPPIX");
        assert_eq!(base.join("http://[::1]:9/y#F").unwrap().to_string(), "http://[::1]:9/y#F");
        assert!(base.join("/a b").is_err());
    }

    #[test]
    fn tells_urls_from_paths() {
        assert!(is_url("http://x/"));
        assert!(is_url("HTTPS://x/"));
        assert!(!is_url("/srv/http://x"));
        assert!(!is_url("image.cloop"));
        assert!(!is_url("htt"));
    }
}
