//! TLS for `https://` URLs, under the HTTP client.
//!
//! [`Transport`] opens a TCP connection and, for `https://`, runs the TLS
//! handshake over it; the HTTP client reads and writes a [`Stream`] and
//! does not know which of the two it has. The stack is rustls with the
//! ring provider (README "TLS (https://)": chosen by binary size and a
//! static musl build). Certificates are always verified: the chain up to
//! a trusted root (Mozilla's roots built in, from webpki-roots, plus the
//! certificates of a `--ca-file`), the host name (a DNS name is sent as
//! SNI and must be in the certificate's subjectAltName; an IP address must
//! be there as an IP SAN), and the validity dates against the system
//! clock. There is no way to turn verification off.
//!
//! A CA file is PEM: one or more `CERTIFICATE` sections (other sections,
//! such as keys, are ignored); a file without any, an unreadable section
//! or a certificate that cannot be a trust anchor is an error naming the
//! file and the certificate's number.
//!
//! TLS is the cargo feature `https` (default, and in the initramfs's boot
//! build). A build without it (`scripts/build-static.sh --boot-offline`,
//! for media that never boot from the network) speaks plain `http://`
//! only: an `https://` URL is [`Error::Tls`] ([`NO_HTTPS`]) before any
//! connection is made, and a CA file is refused by name rather than
//! ignored (README "Boot build").

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
#[cfg(feature = "https")]
use std::sync::Arc;

#[cfg(feature = "https")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "https")]
use rustls::pki_types::{CertificateDer, ServerName};
#[cfg(feature = "https")]
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::http::Error;
use super::url::{Scheme, Url};

/// Largest CA file read (Debian's whole ca-certificates bundle is ~220 KiB).
#[cfg(feature = "https")]
pub const MAX_CA_FILE: u64 = 4 << 20;

/// Why an `https://` URL fails in a build without the cargo feature
/// `https`, and what to do instead: plain HTTP is safe for an image only
/// with its verity root hash (docs/verity.md).
pub const NO_HTTPS: &str = "https:// is not supported by this build of cloopbox (built without the cargo \
     feature \"https\"): use a build with it (scripts/build-static.sh --boot), or http:// with a verity \
     root hash";

/// Whether this build can open `url` at all: an `https://` URL without
/// the cargo feature `https` is [`Error::Tls`] (final: retrying cannot
/// help), said before a name is resolved or a connection is made.
pub fn check_scheme(url: &Url) -> Result<(), Error> {
    if url.scheme == Scheme::Https && !cfg!(feature = "https") {
        return Err(Error::Tls(NO_HTTPS.into()));
    }
    Ok(())
}

/// Where the TLS settings come from: the built-in roots, plus a CA file.
/// Without the feature `https` there are none.
#[derive(Clone)]
pub struct Tls {
    #[cfg(feature = "https")]
    config: Arc<ClientConfig>,
}

#[cfg(not(feature = "https"))]
impl Tls {
    /// Nothing to set up for plain `http://`; a CA file is refused by
    /// name: it can only be meant for `https://`, which this build lacks.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, String> {
        match ca_file {
            None => Ok(Tls {}),
            Some(path) => Err(format!(
                "CA file {}: this cloopbox is built without https:// support (cargo feature \"https\")",
                path.display()
            )),
        }
    }

    /// No TLS in this build: the same words as [`check_scheme`].
    fn handshake(&self, _url: &Url, _tcp: TcpStream) -> Result<Stream, Error> {
        Err(Error::Tls(NO_HTTPS.into()))
    }
}

#[cfg(feature = "https")]
impl Tls {
    /// The built-in roots plus the certificates of `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, String> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = ca_file {
            let shown = path.display();
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut bytes))
                .map_err(|e| format!("CA file {shown}: {e}"))?;
            if bytes.len() as u64 > MAX_CA_FILE {
                return Err(format!("CA file {shown}: larger than {MAX_CA_FILE} bytes"));
            }
            let extra = parse_ca_pem(&bytes).map_err(|e| format!("CA file {shown}: {e}"))?;
            roots.roots.extend(extra.roots);
        }
        // ring's provider is "deprecated" in rustls 0.23.48 only because it
        // lacks the post-quantum key exchange (X25519MLKEM768); see README
        // "TLS (https://)" for why ring all the same.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls { config: Arc::new(config) })
    }

    /// The TLS handshake for `url` over `tcp`.
    fn handshake(&self, url: &Url, tcp: TcpStream) -> Result<Stream, Error> {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| Error::Tls(format!("{:?} is no valid TLS server name: {e}", url.host)))?;
        let mut conn =
            ClientConnection::new(self.config.clone(), name).map_err(|e| Error::Tls(e.to_string()))?;
        let mut tcp = tcp;
        while conn.is_handshaking() {
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(Error::Truncated(
                        "the server closed the connection during the TLS handshake".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(handshake_error(e)),
            }
        }
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

/// The trust anchors of a PEM file: every `CERTIFICATE` section, each
/// checked to be a certificate rustls can anchor a chain at.
#[cfg(feature = "https")]
pub fn parse_ca_pem(bytes: &[u8]) -> Result<RootCertStore, String> {
    let mut anchors = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let n = i + 1;
        let cert = cert.map_err(|e| format!("certificate {n}: bad PEM: {e}"))?;
        anchors.add(cert).map_err(|e| format!("certificate {n}: not a usable CA certificate: {e}"))?;
    }
    if anchors.is_empty() {
        return Err("no PEM CERTIFICATE section (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(anchors)
}

/// A connection to the server: plain TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "https")]
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A peer that closes without close_notify is an end of stream
            // like any other: every body is framed (Content-Length,
            // chunked, or exactly the requested length), so a cut is still
            // seen as one (http::Conn).
            #[cfg(feature = "https")]
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "https")]
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "https")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Opens connections for one file: timeouts and TLS settings.
#[derive(Clone)]
pub struct Transport {
    pub connect_timeout: std::time::Duration,
    pub io_timeout: std::time::Duration,
    pub tls: Tls,
}

impl Transport {
    /// A TCP connection to `addr` for `url`, with the TLS handshake done
    /// for `https://`. A certificate that fails verification is
    /// [`Error::Tls`] (retrying cannot help), as is `https://` in a build
    /// without the feature `https` ([`NO_HTTPS`]); network trouble is
    /// [`Error::Io`].
    pub fn open(&self, url: &Url, tcp: TcpStream) -> Result<Stream, Error> {
        tcp.set_read_timeout(Some(self.io_timeout))
            .and_then(|()| tcp.set_write_timeout(Some(self.io_timeout)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(Error::Io)?;
        if url.scheme == Scheme::Http {
            return Ok(Stream::Plain(tcp));
        }
        self.tls.handshake(url, tcp)
    }
}

/// A handshake failure: rustls's own errors are final and said in words;
/// I/O errors are the network's.
#[cfg(feature = "https")]
fn handshake_error(e: io::Error) -> Error {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return Error::Truncated("the server closed the connection during the TLS handshake".into());
        }
        return Error::Io(e);
    };
    Error::Tls(match tls {
        rustls::Error::InvalidCertificate(c) => {
            format!("certificate not trusted: {}", certificate_problem(c))
        }
        rustls::Error::InvalidMessage(_) => {
            format!("TLS handshake failed: {tls} (does the server speak TLS on this port?)")
        }
        other => format!("TLS handshake failed: {other}"),
    })
}

#[cfg(feature = "https")]
fn certificate_problem(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => {
            "unknown issuer (not signed by a built-in root or a certificate of the CA file)".into()
        }
        CertificateError::NotValidForName => "not valid for this host name".into(),
        CertificateError::Expired => "expired".into(),
        CertificateError::NotValidYet => "not valid yet (is the clock right?)".into(),
        CertificateError::BadSignature => "bad signature".into(),
        CertificateError::BadEncoding => "badly encoded".into(),
        // These carry the names, dates and algorithms in their own words.
        other => other.to_string(),
    }
}

#[cfg(all(test, feature = "https"))]
mod tests {
    use super::*;

    /// A real CA certificate (P-256, CN=cloopbox unit test CA), made with
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256
    /// -addext basicConstraints=critical,CA:TRUE`; its key is not kept.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUPcz4fHPdLzDz8brHJkOZIYKenVYwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVY2xvb3Bib3ggdW5pdCB0ZXN0IENBMB4XDTI2MTIwNjIwMzUw
N1oXDTM2MTIwMzIwMzUwN1owIDEeMBwGA1UEAwwVY2xvb3Bib3ggdW5pdCB0ZXN0
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEW9Y2R1PIsRft3yV/TD09OsUH
PF3/8rauXNHMHUg89EnJzg4gbBStdCz69+19xrXX01ja1LXOStrGx7cFUwIWJaNT
MFEwHQYDVR0OBBYEFETBIq9B6H7bPisHeJogN9MCGqvNMB8GA1UdIwQYMBaAFETB
Iq9B6H7bPisHeJogN9MCGqvNMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
SAAwRQIhAII9SAH985FOSkZj42qalHuQs+YdIibuMnF56cFuUksCAiAY3hcQYhil
KwbrSL3Gj/geP9vwF8Eh12lFeq4v6br4oA==
-----END CERTIFICATE-----
";

    #[test]
    fn ca_files_with_one_or_more_certificates_and_other_sections() {
        assert_eq!(parse_ca_pem(CA.as_bytes()).unwrap().len(), 1);
        let two =
            format!("# comment\n{CA}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{CA}");
        assert_eq!(parse_ca_pem(two.as_bytes()).unwrap().len(), 2);
        assert_eq!(parse_ca_pem(CA.replace('\n', "\r\n").as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn malformed_ca_files_are_refused_with_the_certificate_number() {
        let e = parse_ca_pem(b"").unwrap_err();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        let e = parse_ca_pem(b"just text\n").unwrap_err();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        // A key alone is no certificate.
        let e = parse_ca_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap_err();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        let e = parse_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert!(e.contains("certificate 1: bad PEM") && e.contains("missing section end"), "{e}");
        let e = parse_ca_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(e.contains("certificate 1: bad PEM") && e.contains("base64"), "{e}");
        // Valid base64, but no certificate inside.
        let e = parse_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(e.contains("certificate 1: not a usable CA certificate"), "{e}");
        // A cut-off certificate, as the second one.
        let lines: Vec<&str> = CA.lines().collect();
        let cut = format!("{CA}{}\n{}\n", lines[..4].join("\n"), lines[lines.len() - 1]);
        let e = parse_ca_pem(cut.as_bytes()).unwrap_err();
        assert!(e.starts_with("certificate 2: "), "{e}");
    }

    #[test]
    fn mutated_ca_files_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut m = CA.as_bytes().to_vec();
            for _ in 0..1 + next() % 3 {
                let i = (next() % m.len() as u64) as usize;
                match next() % 3 {
                    0 => m[i] = next() as u8,
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, b"-\nA/+=B"[(next() % 7) as usize]),
                }
            }
            if parse_ca_pem(&m).is_ok() {
                accepted += 1;
            }
        }
        // Most mutations break the base64 or the DER; a few land in
        // places that do not matter (the signature, line breaks).
        assert!(accepted < 3000, "{accepted}");
    }

    #[test]
    fn built_in_roots_are_there_and_a_missing_ca_file_is_named() {
        assert!(Tls::new(None).is_ok());
        assert!(webpki_roots::TLS_SERVER_ROOTS.len() > 100);
        let e = Tls::new(Some(Path::new("/nonexistent/ca.pem"))).err().unwrap();
        assert!(e.starts_with("CA file /nonexistent/ca.pem: "), "{e}");
    }

    #[test]
    fn both_schemes_pass_the_scheme_check_with_tls() {
        for url in ["http://127.0.0.1/img.cloop", "https://127.0.0.1/img.cloop"] {
            assert!(check_scheme(&Url::parse(url).unwrap()).is_ok(), "{url}");
        }
    }
}

/// The build without TLS: `cargo test --lib --no-default-features
/// --features zlib-rs` (test.sh's boot build without https).
#[cfg(all(test, not(feature = "https")))]
mod without_https {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    fn transport() -> Transport {
        let tls = Tls::new(None).unwrap();
        Transport { connect_timeout: Duration::from_secs(5), io_timeout: Duration::from_secs(5), tls }
    }

    #[test]
    fn a_ca_file_is_refused_by_name() {
        let e = Tls::new(Some(Path::new("/etc/cloopbox/ca.pem"))).err().unwrap();
        assert_eq!(
            e,
            "CA file /etc/cloopbox/ca.pem: this cloopbox is built without https:// support (cargo feature \"https\")"
        );
    }

    #[test]
    fn https_is_a_tls_error_and_http_still_opens_a_plain_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = |scheme: &str| Url::parse(&format!("{scheme}://127.0.0.1:{port}/img.cloop")).unwrap();
        match check_scheme(&url("https")) {
            Err(Error::Tls(m)) => assert_eq!(m, NO_HTTPS),
            other => panic!("{other:?}"),
        }
        check_scheme(&url("http")).unwrap();

        // Transport::open, handed a connection: Error::Tls, and not a
        // byte sent (no ClientHello).
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        match transport().open(&url("https"), tcp) {
            Err(Error::Tls(m)) => assert!(m.contains("built without") && m == NO_HTTPS, "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an https:// stream without TLS"),
        }
        let (mut server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "{got:?}");

        // http:// is the plain stream, both ways.
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut stream = transport().open(&url("http"), tcp).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        stream.write_all(b"ping").unwrap();
        stream.flush().unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").unwrap();
        drop(server);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pong");
    }

    #[test]
    fn an_https_image_fails_at_once_with_the_whole_message_and_no_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://127.0.0.1:{port}/img.cloop");
        // What cloopd, cloopinfo, extract_compressed_fs and init call:
        // the URL, then the words whole; final, so no retries.
        let opts = || crate::remote::options(false, None, None);
        let e = crate::remote::open(&url, opts()).err().unwrap().to_string();
        assert_eq!(e, format!("{url}: probe: {NO_HTTPS}"));
        let e = crate::remote::open_cloop(Path::new(&url), None).err().unwrap().to_string();
        assert!(e.starts_with(&url) && e.ends_with(NO_HTTPS), "{e}");
        assert_eq!(listener.accept().err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
        // A CA file (--ca-file, cloopbox.cafile=, /etc/cloopbox/ca.pem) is
        // named, whatever the scheme.
        let ca = Some(Path::new("/etc/cloopbox/ca.pem"));
        for url in [url.replace("https", "http"), url.clone()] {
            let e = crate::remote::open_cloop(Path::new(&url), ca).err().unwrap().to_string();
            assert!(
                e.contains("CA file /etc/cloopbox/ca.pem: this cloopbox is built without https://"),
                "{e}"
            );
        }
        assert_eq!(listener.accept().err().map(|e| e.kind()), Some(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn a_redirect_to_https_names_its_target() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = format!("https://127.0.0.1:{port}/img.cloop");
        let location = target.clone();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
            );
            c.write_all(answer.as_bytes()).unwrap();
            head
        });
        let url = format!("http://127.0.0.1:{port}/img.cloop");
        let e =
            crate::remote::open(&url, crate::remote::options(false, None, None)).err().unwrap().to_string();
        let head = server.join().unwrap();
        assert!(head.starts_with(b"GET /img.cloop HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&head));
        assert!(e.starts_with(&url), "{e}");
        assert!(e.ends_with(&format!("redirect to {target}: {NO_HTTPS}")), "{e}");
    }
}
