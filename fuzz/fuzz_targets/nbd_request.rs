//! Fuzz target: any bytes as what an NBD client sends.
//!
//! 1. The first 28 bytes as a request header, validated against a session
//!    whose size and flags also come from the input: an accepted request
//!    must lie inside the export and carry a payload within the 32 MiB cap.
//! 2. The whole input as a client's byte stream through the real server
//!    (handshake, then transmission) over an in-memory writable export,
//!    with requests run inline (no worker threads) so runs are repeatable.
//!
//! Errors and disconnects are expected; panics, hangs and allocations
//! sized by what a client merely claims are bugs.
#![no_main]

use std::io::{self, Cursor};
use std::sync::{Arc, OnceLock};

use cloopbox::blockdev::MemDev;
use cloopbox::nbd::proto::{Request, MAX_PAYLOAD, REQUEST_LEN};
use cloopbox::nbd::request::{validate, Command, Session, Verdict};
use cloopbox::nbd::{Config, Export, Server};
use libfuzzer_sys::fuzz_target;

fn server() -> &'static Arc<Server> {
    static SERVER: OnceLock<Arc<Server>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let mut export = Export::writable(Arc::new(MemDev::new(vec![0x5a; 1 << 20])));
        export.name = "fuzz".into();
        let cfg = Config { name: "fuzz".into(), threads: 0, log_budget: 0, ..Config::default() };
        Server::new(export, cfg).expect("no threads to start")
    })
}

fn check_validation(data: &[u8]) {
    let Some(hdr) = data.get(..REQUEST_LEN) else { return };
    let Ok(req) = Request::parse(hdr.try_into().expect("28 bytes")) else { return };
    let extra = data.get(REQUEST_LEN..REQUEST_LEN + 11).unwrap_or(&[]);
    let mut b = [0u8; 11];
    b[..extra.len()].copy_from_slice(extra);
    let s = Session {
        size: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        flags: u16::from_le_bytes([b[8], b[9]]),
        structured: b[10] & 1 != 0,
        allocation_context: b[10] & 2 != 0,
    };
    match validate(&req, &s) {
        Verdict::Accept(cmd) => {
            let range = match cmd {
                Command::Flush => None,
                Command::Read { offset, len }
                | Command::Write { offset, len, .. }
                | Command::Trim { offset, len, .. }
                | Command::Cache { offset, len }
                | Command::WriteZeroes { offset, len, .. }
                | Command::BlockStatus { offset, len, .. } => Some((offset, len)),
            };
            if let Some((offset, len)) = range {
                assert!(len > 0);
                assert!(offset.checked_add(u64::from(len)).is_some_and(|end| end <= s.size));
            }
            assert!(cmd.payload_len() <= MAX_PAYLOAD);
            if let Command::Read { len, .. } = cmd {
                assert!(len <= MAX_PAYLOAD);
            }
        }
        Verdict::Reject { drain, .. } => assert!(drain <= MAX_PAYLOAD),
        Verdict::Disconnect | Verdict::Close(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check_validation(data);
    let _ = server().serve_io(Cursor::new(data.to_vec()), io::sink());
});
