//! The remote layer (src/remote) against a real nginx on 127.0.0.1 and a
//! small misbehaving server of our own (also on loopback).
//!
//! nginx: byte-exact reads of a cloop image and of one inside ISOs made by
//! xorriso (through the library, `extract_compressed_fs URL`, `cloopinfo
//! URL` and `cloopd URL` read with nbdcopy), connection reuse and the bytes
//! sent from its access log, redirects, 404/416/5xx, and the image replaced
//! on the server while open. Our server: truncated bodies, a lying
//! Content-Length, 5xx then recovery, slow answers, chunked bodies, no
//! range support, a server that goes away and returns, and one that
//! serves a tampered byte to `cloopd --root-hash`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloopbox::blockdev::{FileDev, ReadAt};
use cloopbox::remote::{self, Options, RemoteFile, Retry, Url};

mod common;
use common::{tool, Cloopd};

const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");

/// Test data: compressible but not trivial, different per `seed`.
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let line =
            format!("line {} value {:x} {}\n", out.len(), x % 1000, "abcdefgh".repeat((x % 5) as usize));
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn make_cloop(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, data).unwrap();
    let out = dir.join(name);
    let st = Command::new(BIN)
        .args(["create_compressed_fs", "-q", "-B", "16384", "-L", "1", "-t", "1"])
        .arg(&raw)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

fn quiet_opts(retry: Retry) -> (Options, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    let opts = Options {
        retry,
        backoff_start: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
        connections: 2,
        readahead: 64 * 1024,
        buffer: 1 << 20,
        log: Arc::new(move |m: &str| sink.lock().unwrap().push(m.to_string())),
        ca_file: None,
    };
    (opts, log)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

// ---------------------------------------------------------------- nginx

struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start() -> Nginx {
        Nginx::start_with(|_, _| String::new())
    }

    /// With more `server` blocks (given nginx's directory and the plain
    /// server's port) next to the plain one, all serving the same files.
    fn start_with(extra: impl Fn(&Path, u16) -> String) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is not installed: scripts/setup.sh installs it (scripts/apt-packages.txt)");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("www")).unwrap();
        std::fs::create_dir_all(p.join("tmp")).unwrap();
        let port = free_port();
        let servers = extra(p, port);
        let d = p.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format t '$status $body_bytes_sent "$http_range" $connection $connection_requests $uri $ssl_protocol';
    access_log {d}/access.log t;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 10000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location = /moved {{ return 302 /img.cloop; }}
        location = /moved-abs {{ return 301 http://127.0.0.1:{port}/img.cloop; }}
        location = /loop {{ return 307 /loop; }}
        location = /boom {{ return 503; }}
    }}
    {servers}
}}
"#
        );
        std::fs::write(p.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(p.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port);
        Nginx { child, port, dir }
    }

    /// `data` as a cloop image at /`name`; returns the local copy and its length.
    fn publish_cloop(&self, name: &str, data: &[u8]) -> (PathBuf, u64) {
        let img = make_cloop(self.dir.path(), name, data);
        let len = std::fs::copy(&img, self.www().join(name)).unwrap();
        (img, len)
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The access log once it has at least `min_lines` lines and has not
    /// grown for 150 ms (at most 10 s). nginx writes a request's line in its
    /// log phase, after the last byte of the response went out, so a client
    /// that has its answer can still be ahead of the log.
    fn settled_log_text(&self, min_lines: usize) -> String {
        let path = self.dir.path().join("access.log");
        let read = || std::fs::read_to_string(&path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = read();
        let mut stable_since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let now = read();
            if now != text {
                text = now;
                stable_since = Instant::now();
            } else if text.lines().count() >= min_lines
                && stable_since.elapsed() >= Duration::from_millis(150)
            {
                break;
            }
        }
        text
    }

    /// Access log lines: (status, bytes sent, range, connection, uri).
    fn log(&self) -> Vec<(u16, u64, String, u64, String)> {
        self.log_of_at_least(0)
    }

    /// `log()`, waiting for at least `min_lines` lines.
    fn log_of_at_least(&self, min_lines: usize) -> Vec<(u16, u64, String, u64, String)> {
        let text = self.settled_log_text(min_lines);
        text.lines()
            .map(|l| {
                let (status, rest) = l.split_once(' ').unwrap();
                let (bytes, rest) = rest.split_once(' ').unwrap();
                let (range, rest) = rest[1..].split_once("\" ").unwrap();
                let f: Vec<&str> = rest.split(' ').collect();
                (
                    status.parse().unwrap(),
                    bytes.parse().unwrap(),
                    range.to_string(),
                    f[0].parse().unwrap(),
                    f[2].to_string(),
                )
            })
            .collect()
    }

    /// The TLS protocol of each access log line (`-` for plain HTTP).
    #[cfg(feature = "https")]
    fn protocols(&self) -> Vec<String> {
        let text = self.settled_log_text(0);
        text.lines().map(|l| l.rsplit(' ').next().unwrap_or_default().to_string()).collect()
    }

    /// Empties the log once the lines of requests already answered are in.
    fn clear_log(&self) {
        self.settled_log_text(0);
        std::fs::write(self.dir.path().join("access.log"), "").unwrap();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_all(dev: &dyn ReadAt, chunk: usize) -> Vec<u8> {
    let mut out = vec![0u8; dev.size() as usize];
    for (i, c) in out.chunks_mut(chunk).enumerate() {
        dev.read_at(c, (i * chunk) as u64).unwrap();
    }
    out
}

/// The cloop image at `url` (`#PATH` inside an ISO) and its remote file.
fn remote_image(url: &str, opts: Options) -> (cloopbox::cloop::reader::Image, Arc<RemoteFile>) {
    let opened = remote::open(url, opts).unwrap();
    let image = cloopbox::cloop::reader::Image::from_reader(opened.dev, Path::new(url)).unwrap();
    (image, opened.remote)
}

#[test]
fn nginx_cloop_image_reads_back_byte_exact_over_few_connections() {
    let ng = Nginx::start();
    let data = payload(3 << 20, 1);
    let (img, image_len) = ng.publish_cloop("img.cloop", &data);

    // The raw remote file equals the local one, read in odd pieces.
    let (opts, log) = quiet_opts(Retry::Attempts(2));
    let url = Url::parse(&ng.url("/img.cloop")).unwrap();
    let rf = RemoteFile::open(&url, opts.clone()).unwrap();
    assert_eq!(rf.size(), image_len);
    assert!(read_all(&rf, 7777) == std::fs::read(&img).unwrap());
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

    // The cloop image over HTTP decodes to the original data.
    ng.clear_log();
    let (image, _) = remote_image(&ng.url("/img.cloop"), opts);
    assert!(read_all(&image, 16384) == data);

    // Keep-alive: the log shows many requests over at most 2+1 connections
    // (the probe's connection is handed to the pool).
    let entries = ng.log();
    let conns: HashSet<u64> = entries.iter().map(|e| e.3).collect();
    assert!(entries.len() >= 10, "{} requests", entries.len());
    assert!(conns.len() <= 3, "{} connections for {} requests", conns.len(), entries.len());
    assert!(entries.iter().all(|e| e.0 == 206), "{entries:?}");
    // Every request was a range, and read-ahead kept the total near the image size.
    let sent: u64 = entries.iter().map(|e| e.1).sum();
    assert!(entries.iter().all(|e| e.2.starts_with("bytes=")));
    assert!(sent >= image_len && sent < image_len * 2, "sent {sent} for an image of {image_len}");
}

#[test]
fn nginx_reading_a_few_blocks_fetches_far_less_than_the_image() {
    let ng = Nginx::start();
    let data = payload(16 << 20, 2);
    let (_, image_len) = ng.publish_cloop("big.cloop", &data);
    let (opts, _log) = quiet_opts(Retry::Attempts(2));
    let (image, remote) = remote_image(&ng.url("/big.cloop"), opts);
    let mut buf = vec![0u8; 4096];
    for off in [0u64, 5 << 20, 9 << 20, 15 << 20] {
        image.read_at(&mut buf, off).unwrap();
        assert_eq!(buf[..], data[off as usize..off as usize + 4096]);
    }
    let sent: u64 = ng.log().iter().map(|e| e.1).sum();
    assert!(sent * 10 < image_len, "nginx sent {sent} bytes of a {image_len}-byte image for 4 blocks");
    // Our count agrees with nginx's (the probe's byte aside), up to a
    // read-ahead still in flight in the background.
    let ours = remote.stats().bytes.load(Ordering::Relaxed) + 1;
    assert!(ours <= sent + 1024 * 1024 && sent <= ours + 1024 * 1024, "we counted {ours}, nginx {sent}");
}

#[test]
fn a_read_whose_tail_is_buffered_fetches_only_its_head() {
    let ng = Nginx::start();
    let data = payload(1 << 20, 9);
    std::fs::write(ng.www().join("raw.bin"), &data).unwrap();
    let (mut opts, _log) = quiet_opts(Retry::Attempts(2));
    opts.readahead = 0;
    let file = RemoteFile::open(&Url::parse(&ng.url("/raw.bin")).unwrap(), opts).unwrap();
    let mut tail = vec![0u8; 64 << 10];
    file.read_at(&mut tail, 64 << 10).unwrap();
    // Head missing, tail buffered, and a second gap past the tail.
    let mut buf = vec![0u8; 192 << 10];
    file.read_at(&mut buf, 0).unwrap();
    assert!(buf[..] == data[..192 << 10]);
    let ranges: Vec<(u64, String)> =
        ng.log().into_iter().filter(|e| e.4 == "/raw.bin").map(|e| (e.1, e.2)).collect();
    let sent: u64 = ranges.iter().map(|r| r.0).sum();
    // The probe's byte, the tail, then only the two gaps.
    assert_eq!(sent, 1 + (192 << 10), "{ranges:?}");
    assert!(ranges.iter().any(|r| r.1 == "bytes=0-65535"), "{ranges:?}");
    assert!(ranges.iter().any(|r| r.1 == "bytes=131072-196607"), "{ranges:?}");
}

#[test]
fn nginx_redirects_and_errors() {
    let ng = Nginx::start();
    let data = payload(200_000, 3);
    let (img, _) = ng.publish_cloop("img.cloop", &data);
    std::fs::write(ng.www().join("empty"), b"").unwrap();
    let (opts, _log) = quiet_opts(Retry::Attempts(1));

    for path in ["/moved", "/moved-abs"] {
        let rf = remote::open(&ng.url(path), opts.clone()).unwrap();
        assert_eq!(rf.remote.url().path, "/img.cloop");
        assert!(read_all(&*rf.dev, 50_000) == std::fs::read(&img).unwrap());
    }
    let err = |path: &str| remote::open(&ng.url(path), opts.clone()).err().unwrap().to_string();
    let e = err("/loop");
    assert!(e.contains("more than 5 redirects") && e.contains("/loop"), "{e}");
    let e = err("/missing");
    assert!(e.contains("404") && e.contains("/missing"), "{e}");
    let e = err("/empty");
    assert!(e.contains("the file is empty"), "{e}");
    let e = err("/boom");
    assert!(e.contains("503") && e.contains("gave up after 2 attempts"), "{e}");
    let statuses: Vec<u16> = ng.log().iter().map(|e| e.0).collect();
    assert!(statuses.contains(&404) && statuses.contains(&503), "{statuses:?}");
}

#[test]
fn nginx_image_replaced_while_open_fails_with_eio_never_mixed() {
    let ng = Nginx::start();
    let old = payload(1 << 20, 4);
    let path = ng.www().join("img.raw");
    std::fs::write(&path, &old).unwrap();
    let (mut opts, log) = quiet_opts(Retry::Attempts(1));
    opts.readahead = 0;
    let rf = RemoteFile::open(&Url::parse(&ng.url("/img.raw")).unwrap(), opts).unwrap();
    let mut buf = vec![0u8; 4096];
    rf.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf[..], old[..4096]);

    // Same size, new content and a new mtime: nginx's ETag changes.
    let new = payload(1 << 20, 5);
    let next = ng.www().join("img.new");
    std::fs::write(&next, &new).unwrap();
    let f = std::fs::File::options().write(true).open(&next).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(100)).unwrap();
    drop(f);
    std::fs::rename(&next, &path).unwrap();

    for off in [8192u64, 500_000, 8192] {
        let e = rf.read_at(&mut buf, off).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(5), "offset {off}: {e}");
    }
    // What was read before the change is still served (as a cache above
    // would): old data, never new.
    rf.read_at(&mut buf, 0).unwrap();
    assert!(buf[..] == old[..4096]);
    let msgs = log.lock().unwrap().clone();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].contains("changed") && msgs[0].contains("/img.raw"), "{msgs:?}");
    // The server answered 412 to the conditional request: nothing of the
    // new image was sent. Two requests before the change (the probe and the
    // first read), then exactly one.
    let after: Vec<_> = ng.log_of_at_least(3).into_iter().skip(2).collect();
    assert_eq!(after.len(), 1, "one request after the change: {after:?}");
    assert!(after.iter().all(|e| e.0 == 412 && e.1 < 1000), "{after:?}");
}

fn xorriso(dir: &Path, out: &Path, flags: &[&str]) {
    let st = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet"])
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("xorriso (scripts/apt-packages.txt)");
    assert!(st.success());
}

#[test]
fn nginx_iso_holding_knoppix_images() {
    let ng = Nginx::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(1 << 20, 6);
    let data1 = payload(18 * 16384, 7);
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("KNOPPIX")).unwrap();
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::write(tree.join("boot/readme.txt"), b"hello").unwrap();
    let img = make_cloop(tmp.path(), "k.cloop", &data);
    std::fs::copy(&img, tree.join("KNOPPIX/KNOPPIX")).unwrap();
    let img1 = make_cloop(tmp.path(), "k1.cloop", &data1);
    std::fs::copy(&img1, tree.join("KNOPPIX/KNOPPIX1")).unwrap();
    for (name, flags) in [("rj.iso", &["-R", "-J"][..]), ("plain.iso", &[][..])] {
        let iso = ng.www().join(name);
        xorriso(&tree, &iso, flags);

        // Local ISO, same code over a file.
        let local: Arc<dyn ReadAt> = Arc::new(FileDev::open(&iso).unwrap());
        let images = cloopbox::iso9660::knoppix_images(&*local).unwrap();
        let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["KNOPPIX/KNOPPIX", "KNOPPIX/KNOPPIX1"], "{name}");
        let (dev, _) = remote::inside_iso(local, None, name).unwrap();
        assert!(read_all(&*dev, 65536) == std::fs::read(&img).unwrap(), "{name}: local ISO");

        // Over HTTP, the default and a #fragment.
        let (opts, _log) = quiet_opts(Retry::Attempts(1));
        let image = remote::open_cloop(Path::new(&ng.url(&format!("/{name}"))), None).unwrap();
        assert!(read_all(&image, 16384) == data, "{name}: over HTTP");
        let (image1, _) = remote_image(&ng.url(&format!("/{name}#knoppix/knoppix1")), opts.clone());
        assert!(read_all(&image1, 16384) == data1, "{name}: #knoppix/knoppix1");
        let e = remote::open(&ng.url(&format!("/{name}#KNOPPIX/KNOPPIX7")), opts).err().unwrap();
        assert!(e.to_string().contains("no file KNOPPIX/KNOPPIX7"), "{e}");
    }
}

#[test]
fn applets_take_urls() {
    let ng = Nginx::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(2 << 20, 8);
    ng.publish_cloop("img.cloop", &data);
    let url = ng.url("/img.cloop");

    let out = tmp.path().join("out");
    let st = Command::new(BIN).args(["extract_compressed_fs", &url]).arg(&out).status().unwrap();
    assert!(st.success());
    assert!(std::fs::read(&out).unwrap() == data);

    let info = Command::new(BIN).args(["cloopinfo", &url]).output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    assert!(
        String::from_utf8_lossy(&info.stdout).contains("16"),
        "{}",
        String::from_utf8_lossy(&info.stdout)
    );
    let bad = Command::new(BIN).args(["cloopinfo", &ng.url("/nope")]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("404"), "{}", String::from_utf8_lossy(&bad.stderr));

    // cloopd serves the URL over NBD; nbdcopy reads the whole device.
    let port = free_port();
    let mut cloopd = Command::new(BIN)
        .args(["cloopd", "-q", "--tcp", &format!("127.0.0.1:{port}"), &url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let copy = tmp.path().join("copy");
    let st = Command::new("nbdcopy").arg(format!("nbd://127.0.0.1:{port}")).arg(&copy).status().unwrap();
    let _ = cloopd.kill();
    let _ = cloopd.wait();
    assert!(st.success());
    assert!(std::fs::read(&copy).unwrap() == data);
}

// ------------------------------------------------- a misbehaving server

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Good,
    /// Correct headers, half the body, then close.
    Truncate,
    /// Content-Length one byte short of the range.
    ShortLength,
    /// Answers 503 to this many range requests, then serves.
    Fail(usize),
    /// Sleeps this long before the first answer on each connection.
    Slow(Duration),
    Chunked,
    /// Five bytes of junk after every body.
    Extra,
    /// 200 with the whole body to every request.
    NoRanges,
    /// Every body that covers this offset of the file has that byte
    /// flipped (a compromised mirror or a proxy in the way).
    Tamper(usize),
}

struct TestServer {
    data: Arc<Vec<u8>>,
    mode: Arc<Mutex<Mode>>,
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
    requests: Arc<AtomicUsize>,
}

impl TestServer {
    fn start(data: Vec<u8>, mode: Mode) -> TestServer {
        let mut s = TestServer {
            data: Arc::new(data),
            mode: Arc::new(Mutex::new(mode)),
            port: free_port(),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            accept: None,
            requests: Arc::new(AtomicUsize::new(0)),
        };
        s.listen();
        s
    }

    fn url(&self) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}/img", self.port)).unwrap()
    }

    fn listen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (stop, conns, data, mode, requests) = (
            self.stop.clone(),
            self.conns.clone(),
            self.data.clone(),
            self.mode.clone(),
            self.requests.clone(),
        );
        self.accept = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        conns.lock().unwrap().push(s.try_clone().unwrap());
                        let (data, mode, requests) = (data.clone(), mode.clone(), requests.clone());
                        std::thread::spawn(move || serve(s, &data, &mode, &requests));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Stops listening and cuts every connection.
    fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.down();
    }
}

fn serve(s: TcpStream, data: &[u8], mode: &Mutex<Mode>, requests: &AtomicUsize) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = s;
    let mut first = true;
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let range = headers.get("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
        });
        let m = *mode.lock().unwrap();
        if let Mode::Slow(d) = m {
            if first {
                std::thread::sleep(d);
            }
        }
        first = false;
        let total = data.len();
        let etag = "\"v1\"";
        let resp = match (m, range) {
            (Mode::NoRanges, _) | (_, None) => {
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nETag: {etag}\r\n\r\n")
                    .into_bytes();
                r.extend_from_slice(data);
                r
            }
            (Mode::Fail(k), Some(_)) if n < k => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec()
            }
            (_, Some((a, b))) => {
                let body = &data[a..=b.min(total - 1)];
                let cr =
                    format!("Content-Range: bytes {a}-{}/{total}\r\nETag: {etag}\r\n", a + body.len() - 1);
                match m {
                    Mode::Chunked => {
                        let mut r = format!("HTTP/1.1 206 Partial\r\n{cr}Transfer-Encoding: chunked\r\n\r\n")
                            .into_bytes();
                        for c in body.chunks(1000) {
                            r.extend_from_slice(format!("{:x};x=y\r\n", c.len()).as_bytes());
                            r.extend_from_slice(c);
                            r.extend_from_slice(b"\r\n");
                        }
                        r.extend_from_slice(b"0\r\n\r\n");
                        r
                    }
                    Mode::ShortLength if body.len() > 1 => {
                        let mut r =
                            format!("HTTP/1.1 206 Partial\r\n{cr}Content-Length: {}\r\n\r\n", body.len() - 1)
                                .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    Mode::Truncate if body.len() > 1 => {
                        let mut r =
                            format!("HTTP/1.1 206 Partial\r\n{cr}Content-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        r.extend_from_slice(&body[..body.len() / 2]);
                        let _ = out.write_all(&r);
                        let _ = out.shutdown(Shutdown::Both);
                        return;
                    }
                    _ => {
                        let mut r =
                            format!("HTTP/1.1 206 Partial\r\n{cr}Content-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        let start = r.len();
                        r.extend_from_slice(body);
                        if m == Mode::Extra {
                            r.extend_from_slice(b"JUNK!");
                        }
                        if let Mode::Tamper(at) = m {
                            if (a..a + body.len()).contains(&at) {
                                r[start + at - a] ^= 0x20;
                            }
                        }
                        r
                    }
                }
            }
        };
        if out.write_all(&resp).is_err() {
            return;
        }
    }
}

#[test]
fn misbehaving_servers_are_detected_never_short_data() {
    let data = payload(300_000, 9);
    // Truncated bodies and a short Content-Length: never short data.
    for mode in [Mode::Truncate, Mode::ShortLength] {
        let srv = TestServer::start(data.clone(), Mode::Good);
        let (opts, _log) = quiet_opts(Retry::Attempts(1));
        let rf = RemoteFile::open(&srv.url(), opts).unwrap();
        *srv.mode.lock().unwrap() = mode;
        let mut buf = vec![0u8; 10_000];
        let e = rf.read_at(&mut buf, 1000).unwrap_err().to_string();
        let want = if mode == Mode::Truncate { "connection closed early" } else { "Content-Length 9999" };
        assert!(e.contains(want) && e.contains("/img") && e.contains("bytes 1000-"), "{mode:?}: {e}");
    }
    // Chunked bodies are fine.
    let srv = TestServer::start(data.clone(), Mode::Chunked);
    let (opts, _log) = quiet_opts(Retry::Attempts(1));
    let rf = RemoteFile::open(&srv.url(), opts.clone()).unwrap();
    assert!(read_all(&rf, 9000) == data);
    // Junk after the bodies: the connection is replaced, the data exact.
    let srv = TestServer::start(data.clone(), Mode::Extra);
    let (mut one, _log) = quiet_opts(Retry::Attempts(1));
    one.connections = 1;
    let rf = RemoteFile::open(&srv.url(), one).unwrap();
    assert!(read_all(&rf, 9000) == data);
    // No range support: a clear error at open.
    let srv = TestServer::start(data.clone(), Mode::NoRanges);
    let e = RemoteFile::open(&srv.url(), opts).err().unwrap().to_string();
    assert!(e.contains("does not do range requests"), "{e}");
}

#[test]
fn server_errors_and_slowness_are_retried() {
    let data = payload(100_000, 10);
    let srv = TestServer::start(data.clone(), Mode::Good);
    let (opts, log) = quiet_opts(Retry::Attempts(5));
    let rf = RemoteFile::open(&srv.url(), opts.clone()).unwrap();
    *srv.mode.lock().unwrap() = Mode::Fail(srv.requests.load(Ordering::SeqCst) + 3);
    let mut buf = vec![0u8; 5000];
    rf.read_at(&mut buf, 70_000).unwrap();
    assert_eq!(buf[..], data[70_000..75_000]);
    assert_eq!(rf.stats().retries.load(Ordering::Relaxed), 3);
    let msgs = log.lock().unwrap().clone();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("server unreachable") && msgs[0].contains("503") && msgs[0].contains("waiting"));
    assert!(msgs[1].contains("resumed"));

    // Too many failures with a bounded policy: an error, not a hang.
    *srv.mode.lock().unwrap() = Mode::Fail(usize::MAX);
    let e = rf.read_at(&mut buf, 0).unwrap_err().to_string();
    assert!(e.contains("503") && e.contains("gave up after 6 attempts"), "{e}");

    // A server slower than the I/O timeout on new connections.
    let slow = TestServer::start(data.clone(), Mode::Slow(Duration::from_millis(2500)));
    let (mut opts, log) = quiet_opts(Retry::Attempts(1));
    opts.io_timeout = Duration::from_millis(500);
    let e = RemoteFile::open(&slow.url(), opts.clone()).err().unwrap().to_string();
    assert!(e.contains("timed out"), "{e}");
    assert!(log.lock().unwrap()[0].contains("waiting"));
}

#[test]
fn a_server_that_goes_away_and_returns_makes_reads_wait() {
    let data = payload(400_000, 11);
    let mut srv = TestServer::start(data.clone(), Mode::Good);
    let (opts, log) = quiet_opts(Retry::Forever);
    let rf = Arc::new(RemoteFile::open(&srv.url(), opts).unwrap());
    let mut buf = vec![0u8; 4096];
    rf.read_at(&mut buf, 0).unwrap();
    srv.down();
    let reader = {
        let rf = rf.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 50_000];
            rf.read_at(&mut buf, 300_000).map(|()| buf)
        })
    };
    // The read waits (retrying) while the server is away...
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!reader.is_finished(), "the read must wait for the server");
    assert!(rf.stats().retries.load(Ordering::Relaxed) >= 2);
    srv.listen();
    // ...and succeeds once it is back.
    let got = reader.join().unwrap().unwrap();
    assert_eq!(got[..], data[300_000..350_000]);
    let msgs = log.lock().unwrap().clone();
    assert_eq!(msgs.len(), 2, "one message each for the outage and the recovery: {msgs:?}");
    assert!(msgs[0].contains("server unreachable") && msgs[0].contains("waiting"), "{msgs:?}");
    assert!(msgs[1].contains("I/O resumed"), "{msgs:?}");
}

#[test]
fn concurrent_readers_share_fetches_and_get_exact_data() {
    let data = payload(2 << 20, 12);
    let srv = TestServer::start(data.clone(), Mode::Good);
    let (opts, _log) = quiet_opts(Retry::Attempts(2));
    let rf = Arc::new(RemoteFile::open(&srv.url(), opts).unwrap());
    let data = Arc::new(data);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (rf, data) = (rf.clone(), data.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                for i in 0..200u64 {
                    let off = ((i * 4096 + t * 997) % (data.len() as u64 - 4096)) as usize;
                    rf.read_at(&mut buf, off as u64).unwrap();
                    assert_eq!(buf[..], data[off..off + 4096]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(rf.connections() <= 2);
    // Sequential readers ride on read-ahead: far fewer requests than reads.
    let reqs = rf.stats().requests.load(Ordering::Relaxed);
    assert!(reqs < 400, "{reqs} requests for 800 reads");
}

/// Reads through qemu-io from the export at `uri`: every `(offset, len)`
/// of `exact` gives exactly `data`'s bytes, every one of `eio` an
/// Input/output error and no data.
fn assert_exact_around_eio_inside(uri: &str, data: &[u8], exact: &[(usize, usize)], eio: &[(usize, usize)]) {
    for &(offset, len) in exact {
        let dump = common::qemu_io(uri, &format!("read -v {offset} {len}"));
        assert!(!dump.contains("error"), "{offset}+{len}: {dump}");
        let hex: String = dump
            .lines()
            .filter(|l| l.len() > 10 && l.as_bytes()[8] == b':')
            .flat_map(|l| l[10..].split_whitespace().take(16).map(str::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>()
            .join("");
        let want: String = data[offset..offset + len].iter().map(|b| format!("{b:02x}")).collect();
        assert!(hex == want, "{offset}+{len}: not the image's bytes");
    }
    for &(offset, len) in eio {
        let out = common::qemu_io(uri, &format!("read -v {offset} {len}"));
        assert!(out.contains("Input/output error"), "{offset}+{len}: {out}");
        assert!(!out.contains(&format!("{offset:08x}:")), "{offset}+{len}: data came back: {out}");
    }
}

#[test]
fn a_tampering_server_gives_eio_for_exactly_that_block_with_root_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = payload(1 << 20, 12);
    // Stored blocks (--codec none): the tampered byte still decodes, so
    // only the hash tree can catch it.
    let (image, tree, root) = make_verified(d, "img.cloop", &data);
    let file = std::fs::read(&image).unwrap();
    // Data block 77 (bytes 315392..319488), found in the image by its bytes
    // (lines of the payload are numbered, so 64 of them are unique).
    let block = 77;
    let at = block * 4096 + 1000;
    let file_at =
        file.windows(64).position(|w| w == &data[at..at + 64]).expect("block 77 stored in the image");
    let srv = TestServer::start(file, Mode::Tamper(file_at));

    let uri = srv.url().to_string();
    let server = Cloopd::try_start(d, Path::new(&uri), &["--root-hash", &root, "--verity-tree"])
        .err()
        .expect("--verity-tree without a value is refused");
    assert!(server.contains("verity-tree"), "{server}");
    let verity_tree = tree.to_str().unwrap();
    let server = Cloopd::start(
        d,
        Path::new(&uri),
        &["--root-hash", &root, "--verity-tree", verity_tree, "--threads=2"],
    );
    // The whole device: nbdcopy fails with EIO rather than copy a wrong byte.
    let copy = d.join("copy");
    let r = Command::new(tool("nbdcopy", "libnbd-bin")).arg(server.uri()).arg(&copy).output().unwrap();
    assert!(!r.status.success(), "nbdcopy read the tampered device whole");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // Around it: exact data; in it: EIO, whatever piece is asked for.
    let bad = block * 4096;
    let around = [(0, bad), (bad + 4096, (1 << 20) - bad - 4096), (bad - 4096, 4096)];
    let inside = [(bad, 4096), (bad + 1000, 64), (bad - 100, 200), (bad + 4000, 200)];
    assert_exact_around_eio_inside(&server.uri(), &data, &around, &inside);
    let log = server.stop().1;
    assert!(
        log.contains(&format!("verity: data block {block} (bytes {bad}..{}) does not match", bad + 4096)),
        "{log}"
    );
    let named: Vec<&str> = log.lines().filter(|l| l.contains("data block")).collect();
    assert!(
        named.iter().all(|l| l.contains(&format!("data block {block} "))),
        "only block {block} is named: {log}"
    );

    // The same server telling the truth: every byte, no complaint.
    *srv.mode.lock().unwrap() = Mode::Good;
    let server = Cloopd::start(d, Path::new(&uri), &["--root-hash", &root, "--verity-tree", verity_tree]);
    let r = Command::new("nbdcopy").arg(server.uri()).arg(&copy).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(&copy).unwrap() == data);
    assert!(!server.stop().1.contains("verity"));
}

// ---------------------------------------------------------------- HTTPS
// With the cargo feature `https` only; a build without it refuses
// https:// (src/remote/tls.rs tests that).

#[cfg(feature = "https")]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(tool("openssl", "openssl")).args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA made now, and server certificates it signed: `good.pem` for
/// 127.0.0.1 and localhost, `wrong.pem` for another name only,
/// `expired.pem` valid for the right names but in the past. Keys are
/// `NAME.key`; the CA is `ca.pem`.
#[cfg(feature = "https")]
fn make_pki(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=cloopbox test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &ca);
    let sans = [
        ("good", "IP:127.0.0.1,DNS:localhost"),
        ("wrong", "DNS:wrong.example"),
        ("expired", "IP:127.0.0.1,DNS:localhost"),
    ];
    // `openssl ca` takes explicit start and end dates (x509 -req does not).
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::create_dir_all(dir.join("issued")).unwrap();
    let conf = "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nserial = serial\n\
                new_certs_dir = issued\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
                copy_extensions = copy\n[any]\ncommonName = supplied\n";
    std::fs::write(dir.join("ca.cnf"), conf).unwrap();
    for (name, san) in sans {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        let mut req = vec!["req", "-new", "-subj", "/CN=cloopbox test server"];
        req.extend(ec);
        let san = format!("subjectAltName={san}");
        req.extend(["-keyout", &key, "-out", &csr, "-addext", &san]);
        openssl(dir, &req);
        let (start, end) = if name == "expired" {
            ("20200101000000Z", "20200201000000Z")
        } else {
            ("20200101000000Z", "20991231000000Z")
        };
        openssl(
            dir,
            &["ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-notext"]
                .into_iter()
                .chain(["-startdate", start, "-enddate", end, "-in", &csr, "-out", &pem])
                .collect::<Vec<_>>(),
        );
    }
}

/// nginx with a test CA: the plain server, and TLS servers with the good,
/// wrong-name and expired certificates. Returns nginx, the CA file and the
/// three TLS ports.
#[cfg(feature = "https")]
fn nginx_tls() -> (Nginx, PathBuf, [u16; 3]) {
    let ports = [free_port(), free_port(), free_port()];
    let ng = Nginx::start_with(|dir, plain| {
        make_pki(dir);
        let d = dir.display();
        let mut servers = String::new();
        for (port, cert) in ports.iter().zip(["good", "wrong", "expired"]) {
            servers.push_str(&format!(
                "server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/{cert}.pem; \
                 ssl_certificate_key {d}/{cert}.key; root {d}/www; \
                 location = /to-http {{ return 302 http://127.0.0.1:{plain}/img.cloop; }} }}\n"
            ));
        }
        servers
    });
    for p in ports {
        wait_for_port(p);
    }
    let ca = ng.dir.path().join("ca.pem");
    (ng, ca, ports)
}

#[cfg(feature = "https")]
#[test]
fn https_reads_with_the_ca_file_over_kept_alive_tls_connections() {
    let (ng, ca, [good, _, _]) = nginx_tls();
    let data = payload(3 << 20, 21);
    let (img, image_len) = ng.publish_cloop("img.cloop", &data);
    let (mut opts, log) = quiet_opts(Retry::Attempts(1));
    opts.ca_file = Some(ca.clone());

    // An IP address (checked against the IP SAN) and a name (SNI and the
    // DNS SAN; localhost from /etc/hosts).
    for host in ["127.0.0.1", "localhost"] {
        ng.clear_log();
        let url = format!("https://{host}:{good}/img.cloop");
        let rf = RemoteFile::open(&Url::parse(&url).unwrap(), opts.clone()).unwrap();
        assert_eq!(rf.size(), image_len);
        assert!(read_all(&rf, 7777) == std::fs::read(&img).unwrap(), "{url}");
        let (image, _) = remote_image(&url, opts.clone());
        assert!(read_all(&image, 16384) == data, "{url}");

        // Every request went over TLS, many on each connection: the two
        // opens above made at most 2 + 1 connections each.
        let entries = ng.log();
        let protocols = ng.protocols();
        assert!(protocols.iter().all(|p| p.starts_with("TLSv1.")), "{host}: {protocols:?}");
        let conns: HashSet<u64> = entries.iter().map(|e| e.3).collect();
        assert!(entries.len() >= 20, "{host}: {} requests", entries.len());
        assert!(conns.len() <= 6, "{host}: {} connections for {} requests", conns.len(), entries.len());
        assert!(entries.iter().all(|e| e.0 == 206), "{entries:?}");
    }
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
}

#[cfg(feature = "https")]
#[test]
fn https_refuses_untrusted_wrong_name_and_expired_certificates() {
    let (ng, ca, [good, wrong, expired]) = nginx_tls();
    ng.publish_cloop("img.cloop", &payload(100_000, 22));
    let (opts, _log) = quiet_opts(Retry::Attempts(3));
    let mut with_ca = opts.clone();
    with_ca.ca_file = Some(ca);
    let err = |port: u16, opts: &Options| {
        let url = format!("https://127.0.0.1:{port}/img.cloop");
        let e = remote::open(&url, opts.clone()).err().unwrap().to_string();
        assert!(e.starts_with(&url), "{e}");
        e
    };

    let e = err(good, &opts);
    assert!(e.contains("certificate not trusted: unknown issuer"), "{e}");
    let e = err(wrong, &with_ca);
    assert!(e.contains("certificate not trusted") && e.contains("wrong.example"), "{e}");
    let e = err(expired, &with_ca);
    assert!(e.contains("certificate not trusted: certificate expired"), "{e}");
    // Final at once: no retries ("gave up after" would mean retried), and
    // not a single request reached nginx.
    assert!(!e.contains("gave up"), "{e}");
    assert!(ng.log().is_empty(), "{:?}", ng.log());

    // A redirect from https:// to http:// would drop TLS.
    let url = format!("https://127.0.0.1:{good}/to-http");
    let e = remote::open(&url, with_ca.clone()).err().unwrap().to_string();
    assert!(e.contains("refused (it would drop TLS)"), "{e}");

    // The tools: a clear message and exit status 1, never a panic.
    let url = format!("https://127.0.0.1:{good}/img.cloop");
    for args in [&["cloopinfo", &url][..], &["extract_compressed_fs", &url, "/dev/null"][..]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&url) && stderr.contains("certificate not trusted: unknown issuer"),
            "{stderr}"
        );
    }
}

#[cfg(feature = "https")]
#[test]
fn https_applets_take_ca_file() {
    let (ng, ca, [good, _, _]) = nginx_tls();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(2 << 20, 23);
    ng.publish_cloop("img.cloop", &data);
    let url = format!("https://localhost:{good}/img.cloop");
    let ca = ca.to_str().unwrap();

    let out = tmp.path().join("out");
    let st =
        Command::new(BIN).args(["extract_compressed_fs", "-q", "--ca-file", ca, &url]).arg(&out).status();
    assert!(st.unwrap().success());
    assert!(std::fs::read(&out).unwrap() == data);
    let info = Command::new(BIN).args(["cloopinfo", "--ca-file", ca, &url]).output().unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));

    // cloopd serves it over NBD; nbdcopy reads the whole device.
    let port = free_port();
    let mut cloopd = Command::new(BIN)
        .args(["cloopd", "-q", "--ca-file", ca, "--tcp", &format!("127.0.0.1:{port}"), &url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let copy = tmp.path().join("copy");
    let st = Command::new(tool("nbdcopy", "libnbd-bin"))
        .arg(format!("nbd://127.0.0.1:{port}"))
        .arg(&copy)
        .status()
        .unwrap();
    let _ = cloopd.kill();
    let _ = cloopd.wait();
    assert!(st.success());
    assert!(std::fs::read(&copy).unwrap() == data);
    assert!(ng.protocols().iter().all(|p| p.starts_with("TLSv1.")));

    // Without the CA, cloopd does not start.
    let out =
        Command::new(BIN).args(["cloopd", "-q", "--tcp", &free_port().to_string(), &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("certificate not trusted: unknown issuer"), "{stderr}");

    // A CA file that is no CA file is named in the error.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
    let out =
        Command::new(BIN).args(["cloopinfo", "--ca-file", junk.to_str().unwrap(), &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("junk.pem: certificate 1: bad PEM"), "{stderr}");
    let out = Command::new(BIN).args(["cloopinfo", "--ca-file", "/nonexistent.pem", &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("CA file /nonexistent.pem"), "{stderr}");
}

/// A verified cloop image of `data` in `dir` (stored blocks: a flipped
/// byte still decodes, so only the tree can catch it); returns the image,
/// its tree and the root hash.
fn make_verified(dir: &Path, name: &str, data: &[u8]) -> (PathBuf, PathBuf, String) {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, data).unwrap();
    let image = dir.join(name);
    let out = Command::new(BIN)
        .args(["create_compressed_fs", "-q", "-B", "16384", "--codec", "none", "--verity", "--salt", "5a"])
        .arg(&raw)
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let root = stdout.trim().strip_prefix("root hash: ").unwrap_or_else(|| panic!("stdout: {stdout}"));
    let tree = dir.join(format!("{name}.verity"));
    assert!(tree.is_file());
    (image, tree, root.to_string())
}

/// nbdcopy of the whole export: the bytes, or the error.
fn copy_export(server: &Cloopd, dir: &Path) -> Result<Vec<u8>, String> {
    let copy = dir.join("copy");
    let _ = std::fs::remove_file(&copy);
    let r = Command::new(tool("nbdcopy", "libnbd-bin")).arg(server.uri()).arg(&copy).output().unwrap();
    if r.status.success() {
        Ok(std::fs::read(&copy).unwrap())
    } else {
        Err(String::from_utf8_lossy(&r.stderr).into_owned())
    }
}

#[test]
fn nginx_verified_image_finds_its_tree_next_to_the_url_and_refuses_tampering() {
    let ng = Nginx::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = payload(1 << 20, 21);
    let (image, tree, root) = make_verified(d, "img.cloop", &data);
    let www = ng.www();
    let publish = |name: &str, image: &[u8], tree: Option<&[u8]>| {
        std::fs::write(www.join(name), image).unwrap();
        if let Some(t) = tree {
            std::fs::write(www.join(format!("{name}.verity")), t).unwrap();
        }
    };
    let (img_bytes, tree_bytes) = (std::fs::read(&image).unwrap(), std::fs::read(&tree).unwrap());
    // 256 data blocks: level 0 is two hash blocks (offsets 8192, 12288),
    // level 1 (the top) one block at 4096.
    assert_eq!(tree_bytes.len(), 4 * 4096);

    // The tree next to the URL, found by itself; cache and prefetch on.
    publish("img.cloop", &img_bytes, Some(&tree_bytes));
    let url = ng.url("/img.cloop");
    ng.clear_log();
    let server = Cloopd::start(d, Path::new(&url), &["--root-hash", &root, "--prefetch", "8"]);
    assert!(copy_export(&server, d).expect("the verified image reads") == data);
    let (_, log) = server.stop();
    assert!(!log.contains("verity:"), "{log}");
    let asked: Vec<String> = ng.log().into_iter().map(|e| e.4).collect();
    assert!(
        asked.iter().any(|u| u == "/img.cloop.verity"),
        "the tree was fetched from the server: {asked:?}"
    );

    // --verity-tree as a URL, under another name.
    publish("other.verity", &tree_bytes, None);
    let other = ng.url("/other.verity");
    let server = Cloopd::start(d, Path::new(&url), &["--root-hash", &root, "--verity-tree", &other]);
    assert!(copy_export(&server, d).unwrap() == data);
    server.stop();

    // No tree on the server: refused, naming where it was looked for.
    publish("notree.cloop", &img_bytes, None);
    let e = Cloopd::try_start(d, Path::new(&ng.url("/notree.cloop")), &["--root-hash", &root]).err().unwrap();
    let want = format!("no hash tree {} next to the image", ng.url("/notree.cloop.verity"));
    assert!(e.contains(&want) && e.contains("404"), "{e}");

    // A wrong root hash: refused at open.
    let mut wrong = root.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let e = Cloopd::try_start(d, Path::new(&url), &["--root-hash", &wrong]).err().unwrap();
    assert!(e.contains("does not match the root hash") && e.contains("img.cloop.verity"), "{e}");

    // A tampered top level of the tree: refused at open.
    let mut t = tree_bytes.clone();
    t[4096 + 5] ^= 1;
    publish("toptamper.cloop", &img_bytes, Some(&t));
    let e =
        Cloopd::try_start(d, Path::new(&ng.url("/toptamper.cloop")), &["--root-hash", &root]).err().unwrap();
    assert!(e.contains("hash block 0 of level 1") && e.contains("does not match the root hash"), "{e}");

    // A tampered level-0 block: the data blocks under it get EIO, the
    // others read exactly.
    let mut t = tree_bytes.clone();
    t[12288 + 5] ^= 1;
    publish("leaftamper.cloop", &img_bytes, Some(&t));
    let server = Cloopd::start(d, Path::new(&ng.url("/leaftamper.cloop")), &["--root-hash", &root]);
    let first = common::qemu_io(&server.uri(), "read -v 0 4096");
    assert!(!first.contains("error"), "{first}");
    let out = common::qemu_io(&server.uri(), &format!("read -v {} 4096", 200 * 4096));
    assert!(out.contains("Input/output error") && !out.contains(":  "), "{out}");
    let (_, log) = server.stop();
    assert!(log.contains("hash block 1 of level 0") && log.contains("the tree is damaged"), "{log}");

    // One tampered byte in the image on the server: EIO for exactly that
    // block, every other byte exact, with the cache and prefetch on.
    let block = 77;
    let at = block * 4096 + 1000;
    let file_at = img_bytes.windows(64).position(|w| w == &data[at..at + 64]).unwrap();
    let mut bad = img_bytes.clone();
    bad[file_at] ^= 0x20;
    publish("bad.cloop", &bad, Some(&tree_bytes));
    let server =
        Cloopd::start(d, Path::new(&ng.url("/bad.cloop")), &["--root-hash", &root, "--prefetch", "8"]);
    let e = copy_export(&server, d).expect_err("nbdcopy read the tampered image whole");
    assert!(e.contains("Input/output error"), "{e}");
    let bad_off = block * 4096;
    let around = [(0, bad_off), (bad_off + 4096, (1 << 20) - bad_off - 4096)];
    assert_exact_around_eio_inside(&server.uri(), &data, &around, &[(bad_off, 4096), (bad_off + 1000, 64)]);
    let (_, log) = server.stop();
    let named: Vec<&str> = log.lines().filter(|l| l.contains("data block")).collect();
    assert!(!named.is_empty(), "{log}");
    assert!(named.iter().all(|l| l.contains(&format!("data block {block} (bytes {bad_off}.."))), "{log}");
    assert!(named.iter().all(|l| l.contains(&ng.url("/bad.cloop"))), "the image's URL is named: {log}");
}

#[test]
fn nginx_verified_image_in_an_iso_finds_its_tree_in_the_iso() {
    let ng = Nginx::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = payload(1 << 20, 22);
    let (image, tree, root) = make_verified(d, "k.cloop", &data);
    let dir = d.join("cd");
    std::fs::create_dir_all(dir.join("KNOPPIX")).unwrap();
    std::fs::copy(&image, dir.join("KNOPPIX/KNOPPIX")).unwrap();
    xorriso(&dir, &ng.www().join("notree.iso"), &["-R", "-J"]);
    std::fs::copy(&tree, dir.join("KNOPPIX/KNOPPIX.verity")).unwrap();
    xorriso(&dir, &ng.www().join("k.iso"), &["-R", "-J"]);
    // The tree is not next to the ISO: only inside it.
    let url = ng.url("/k.iso");
    let server = Cloopd::start(d, Path::new(&url), &["--root-hash", &root]);
    assert!(copy_export(&server, d).unwrap() == data);
    let (_, log) = server.stop();
    assert!(!log.contains("verity:"), "{log}");
    let asked: Vec<String> = ng.log().into_iter().map(|e| e.4).collect();
    assert!(!asked.iter().any(|u| u.ends_with(".verity")), "no tree asked for next to the ISO: {asked:?}");

    let e = Cloopd::try_start(d, Path::new(&ng.url("/notree.iso")), &["--root-hash", &root]).err().unwrap();
    assert!(e.contains("no hash tree") && e.contains("the ISO has no file KNOPPIX/KNOPPIX.verity"), "{e}");
}

#[test]
fn nginx_a_tree_replaced_on_the_server_is_pinned_like_the_image() {
    let ng = Nginx::start();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // 32 MiB: 8192 data blocks, level 0 is 64 hash blocks (256 KiB), so
    // the level-0 block of the last data block is far from what the
    // daemon read at start (superblock, level 1) and at first use.
    let data = payload(32 << 20, 23);
    let (image, tree, root) = make_verified(d, "big.cloop", &data);
    std::fs::copy(&image, ng.www().join("big.cloop")).unwrap();
    std::fs::copy(&tree, ng.www().join("big.cloop.verity")).unwrap();
    let server = Cloopd::start(d, Path::new(&ng.url("/big.cloop")), &["--root-hash", &root]);
    let first = common::qemu_io(&server.uri(), "read -v 0 4096");
    assert!(!first.contains("error") && first.contains("00000000:"), "{first}");
    // The tree is replaced: the same length, one byte of the last
    // level-0 block changed, a new modification time (so a new ETag).
    let mut t = std::fs::read(&tree).unwrap();
    let last_leaf = t.len() - 4096;
    t[last_leaf + 7] ^= 1;
    let new = ng.www().join("big.cloop.verity.new");
    std::fs::write(&new, &t).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(100);
    std::fs::File::options().write(true).open(&new).unwrap().set_modified(later).unwrap();
    std::fs::rename(&new, ng.www().join("big.cloop.verity")).unwrap();
    let last = (32 << 20) - 4096;
    let out = common::qemu_io(&server.uri(), &format!("read -v {last} 4096"));
    assert!(out.contains("Input/output error"), "{out}");
    let (_, log) = server.stop();
    assert!(
        log.contains(&format!("{}: the image on the server changed", ng.url("/big.cloop.verity")))
            && log.contains("refusing to mix two images"),
        "{log}"
    );
    // nginx refused the conditional request for the new tree: 412.
    let tree_log: Vec<_> = ng.log().into_iter().filter(|e| e.4 == "/big.cloop.verity").collect();
    assert!(tree_log.iter().any(|e| e.0 == 412), "{tree_log:?}");
}
