//! The control channel end to end on the host: a real overlay behind a
//! real abstract socket, asked by the library client and by the `cowdev`
//! and `cowsync` applets. (Attaching a kernel device needs the nbd module,
//! which the host lacks: that part is qemu-test.sh's kernel-nbd scenario.)

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command as Process;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cloopbox::blockdev::{BlockDev, MemDev};
use cloopbox::control::client::{self, ClientError};
use cloopbox::control::meter::Metered;
use cloopbox::control::proto::{socket_name, KernelDevice, MAX_REQUEST};
use cloopbox::control::server::{self, READ_TIMEOUT};
use cloopbox::control::{Command, ControlServer, Info, Pending, Target};
use cloopbox::cow::overlay::{Overlay, OverlayOptions};

const BIN: &str = env!("CARGO_BIN_EXE_cloopbox");
const T: Duration = Duration::from_secs(20);

/// A device index no real /dev/nbdN has, unique per test in this process.
fn fake_index() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    4_000_000_000 + std::process::id() % 10_000_000 * 10 + NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The pid of a process that has exited and been reaped.
fn gone_pid() -> u32 {
    let mut child = Process::new("true").spawn().expect("run true");
    let pid = child.id();
    child.wait().unwrap();
    pid
}

struct Fixture {
    device: KernelDevice,
    name: String,
    server: Option<ControlServer>,
    dev: Arc<dyn BlockDev>,
    cow: std::path::PathBuf,
    detaches: mpsc::Receiver<Pending>,
    _dir: tempfile::TempDir,
}

/// A 256 KiB base with a cowfile, metered, behind the control socket of
/// a fake `/dev/nbdN`.
fn fixture() -> Fixture {
    fixture_of(KernelDevice::Nbd)
}

/// The same behind the control socket of a fake device of `kind`.
fn fixture_of(kind: fn(u32) -> KernelDevice) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cow = dir.path().join("my cow");
    let base: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let opts = OverlayOptions { base_name: "base".into(), ..OverlayOptions::default() };
    let overlay = Arc::new(Overlay::open(MemDev::new(base), &cow, &opts).unwrap());
    let meter = Arc::new(Metered::new(overlay.clone() as Arc<dyn BlockDev>));
    let device = kind(fake_index());
    let (tx, detaches) = mpsc::channel();
    let tx = Mutex::new(tx);
    let stats = overlay.clone();
    let synced = overlay.clone();
    let target = Target {
        info: Info {
            device: device.to_string(),
            pid: gone_pid(),
            image: "/images/base image".into(),
            cow: Some(cow.clone()),
        },
        dev: meter.clone(),
        meter: meter.clone(),
        cow: Some(Box::new(move || stats.stats())),
        cow_sync: Some(Box::new(move || synced.sync())),
        cache: Some(Box::new(|| cloopbox::cache::Stats { hits: 5, misses: 2, ..Default::default() })),
        verity: None,
        detach: Box::new(move |p| {
            let _ = tx.lock().unwrap().send(p);
        }),
    };
    let name = socket_name(device);
    let server = server::start(&name, Arc::new(target)).unwrap();
    Fixture { device, name, server: Some(server), dev: meter, cow, detaches, _dir: dir }
}

fn status(f: &Fixture) -> String {
    client::request(&f.name, Command::Status, T).unwrap()
}

fn line<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no '{label}' line in\n{text}"))
}

#[test]
fn status_sync_and_info_reflect_the_stack() {
    let f = fixture();
    let s = status(&f);
    assert_eq!(line(&s, "state cowfile"), "     state cowfile:     clean");
    assert_eq!(line(&s, "cowblocks in use"), "  cowblocks in use:         0 (of 1024 bytes)");
    assert_eq!(line(&s, "bitmap-blocks"), "     bitmap-blocks:         1 (of 1024 bytes)");
    assert_eq!(line(&s, "cache hits"), "        cache hits:         5");
    assert_eq!(line(&s, "cache prefetched"), "  cache prefetched:         0");
    assert_eq!(line(&s, "cache prefetch hit"), "cache prefetch hit:         0");
    assert_eq!(line(&s, "read-only file"), "    read-only file: /images/base image");

    f.dev.write_at(&[0xab; 3072], 8192).unwrap();
    let mut buf = vec![0; 4096];
    f.dev.read_at(&mut buf, 8192).unwrap();
    let s = status(&f);
    assert_eq!(line(&s, "state cowfile"), "     state cowfile:     dirty");
    assert_eq!(line(&s, "cowblocks in use"), "  cowblocks in use:         3 (of 1024 bytes)");
    assert_eq!(line(&s, "bytes read"), "        bytes read:      4096");
    assert_eq!(line(&s, "bytes written"), "     bytes written:      3072");
    // The on-disk header still says clean with nothing in use: only a
    // sync writes the bitmap.
    let on_disk =
        || cloopbox::cow::cowfile::read_header(&std::fs::File::open(&f.cow).unwrap(), &f.cow).unwrap();
    assert_eq!(on_disk().cowused, 0);

    assert_eq!(client::request(&f.name, Command::Sync, T).unwrap(), "");
    assert_eq!(line(&status(&f), "state cowfile"), "     state cowfile:     clean");
    let h = on_disk();
    assert_eq!((h.cowused, h.is_dirty()), (3, false));

    let info = Info::decode(&client::request(&f.name, Command::Info, T).unwrap()).unwrap();
    assert_eq!(info.device, f.device.to_string());
    assert_eq!(info.cow.as_deref(), Some(f.cow.as_path()));
}

#[test]
fn detach_is_answered_when_the_server_says_so() {
    let f = fixture();
    let name = f.name.clone();
    let asker = std::thread::spawn(move || client::request(&name, Command::Detach, T));
    let pending = f.detaches.recv_timeout(T).expect("the handler got the detach");
    // Other requests are still served while the detach is pending.
    assert!(status(&f).contains("cowloop version"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!asker.is_finished(), "the client must wait for the outcome");
    pending.reply(Ok("detached\n".into()));
    assert_eq!(asker.join().unwrap().unwrap(), "detached\n");

    // A detach that fails is an error for the client.
    let name = f.name.clone();
    let asker = std::thread::spawn(move || client::request(&name, Command::Detach, T));
    f.detaches.recv_timeout(T).unwrap().reply(Err("flush failed: EIO".into()));
    let err = asker.join().unwrap().unwrap_err();
    assert!(matches!(&err, ClientError::Refused(_, m) if m == "flush failed: EIO"), "{err}");

    // A dropped request: the client sees a closed connection, not a hang.
    let name = f.name.clone();
    let asker = std::thread::spawn(move || client::request(&name, Command::Detach, T));
    drop(f.detaches.recv_timeout(T).unwrap());
    let err = asker.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("without a reply"), "{err}");
}

fn raw(name: &str) -> std::os::unix::net::UnixStream {
    client::connect(name).unwrap()
}

#[test]
fn bad_clients_do_not_hurt_the_server() {
    let f = fixture();
    // An endless line: refused after MAX_REQUEST bytes.
    let mut s = raw(&f.name);
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.write_all(&vec![b'x'; 100_000]);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with(&format!("error: request longer than {MAX_REQUEST} bytes")), "{reply}");
    // Unknown words, binary junk, connect-and-close.
    for junk in [&b"reboot\n"[..], b"\x00\xff\n", b"\n"] {
        let mut s = raw(&f.name);
        s.write_all(junk).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("error: "), "{junk:?}: {reply}");
    }
    drop(raw(&f.name));
    // A silent client does not hold the others up for good: the server
    // gives up on it after READ_TIMEOUT (it closes the connection without a
    // reply), and only then, or before, answers the next client. No timing
    // is asserted: the fact is that the silent one was dropped.
    let mut silent = raw(&f.name);
    std::thread::sleep(Duration::from_millis(50));
    assert!(status(&f).contains("cowloop version"));
    silent.set_read_timeout(Some(READ_TIMEOUT * 30)).unwrap();
    let mut reply = Vec::new();
    match silent.read_to_end(&mut reply) {
        Ok(_) => assert!(reply.is_empty() || reply.starts_with(b"error: "), "{reply:?}"),
        Err(e) => {
            assert!(!matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}")
        }
    }
    // A client that never reads its reply.
    let mut s = raw(&f.name);
    s.write_all(b"status\n").unwrap();
    drop(s);
    assert!(status(&f).contains("cowloop version"));
}

#[test]
fn the_name_is_free_after_stop_and_taken_while_running() {
    let mut f = fixture();
    let err = server::bind(&f.name).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&f.name), "{err}");
    f.server.take().unwrap().stop();
    let err = client::request(&f.name, Command::Status, T).unwrap_err();
    assert!(matches!(err, ClientError::NotRunning(_)), "{err}");
    // The name is free once the last descriptor of the socket is closed.
    // Other tests of this binary spawn processes, and a child forked in
    // that moment holds a copy (close-on-exec) until its exec: wait that
    // out, but never for good (a hang guard, not a timing check).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match server::bind(&f.name) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("the name is free again: {e}"),
        }
    }
}

#[test]
fn listening_servers_are_discovered() {
    let f = fixture();
    assert!(client::devices().unwrap().contains(&f.device));
    let u = fixture_of(KernelDevice::Ublk);
    assert!(client::devices().unwrap().contains(&u.device));
}

fn cloopbox(args: &[&str]) -> std::process::Output {
    Process::new(BIN).args(args).output().expect("run cloopbox")
}

/// `cowdev -a` starts cloopd through `serve::spawn`: when the server does
/// not come up, its own words (captured from its stderr) are the reason.
#[test]
fn cowdev_attach_reports_why_the_server_did_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("missing image.cloop");
    let cow = dir.path().join("c.cow");
    let out = cloopbox(&["cowdev", "-a", image.to_str().unwrap(), cow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("cowdev: cannot attach {} with {}: cloopd: ", image.display(), cow.display());
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("missing image.cloop"), "the server's reason is relayed: {err}");
    assert!(!cow.exists(), "no cowfile is made for a server that never started");
}

#[test]
fn cowdev_and_cowsync_talk_to_servers() {
    talk_to(fixture());
}

/// `cloopd --transport ublk` answers on `@cloopbox/ublkbN`: the tools
/// find it, and take `/dev/ublkbN` for a device.
#[test]
fn cowdev_and_cowsync_talk_to_ublk_servers() {
    talk_to(fixture_of(KernelDevice::Ublk));
}

fn talk_to(f: Fixture) {
    let dev = f.device.to_string();
    let out = cloopbox(&["cowdev", "-l"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = format!("{:<12}  {:<32} {:<32}", dev, "/images/base image", f.cow.display());
    assert!(text.lines().any(|l| l == expected), "no '{expected}' in\n{text}");
    assert!(text.starts_with("cowdevice     read-only file"), "{text}");

    f.dev.write_at(&[1; 1024], 0).unwrap();
    let out = cloopbox(&["cowdev", "-l", "-v", &dev]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line(&text, "state cowfile"), "     state cowfile:     dirty");

    let out = cloopbox(&["cowsync"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(line(&status(&f), "state cowfile"), "     state cowfile:     clean");

    // -d: the server is asked, and its answer decides the exit status.
    let detaches = f.detaches;
    let answer = std::thread::spawn(move || detaches.recv_timeout(T).unwrap().reply(Ok("done\n".into())));
    let out = cloopbox(&["cowdev", "-d", &dev]);
    answer.join().unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = cloopbox(&["cowdev", "-d", "/dev/nbd3999999999"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cloopbox server is attached"), "{out:?}");
    assert_eq!(cloopbox(&["cowdev", "-d"]).status.code(), Some(1));
    assert_eq!(cloopbox(&["cowsync", "extra"]).status.code(), Some(1));
}

#[test]
fn only_root_is_answered() {
    let f = fixture();
    if !rustix::process::geteuid().is_root() {
        // Then our own uid is the server's, which is allowed; the refusal
        // of strangers needs a second uid, which only root can take.
        eprintln!(
            "only_root_is_answered: needs root to run a client as another user; checked peer_allowed only"
        );
        assert!(status(&f).contains("cowloop version"));
        return;
    }
    let out = Process::new(BIN)
        .args(["cowdev", "-l", "-v", &f.device.to_string()])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run cowdev as nobody");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied: uid 65534 is not root"), "{err}");
    assert!(out.stdout.is_empty());
    // And the server goes on.
    assert!(status(&f).contains("cowloop version"));
}
