//! Fuzz target: any bytes as a DHCP server's answer (src/net/dhcp.rs).
//!
//! The input is parsed as the answer to our transaction (its own xid and
//! MAC, so the option parser is reached), as one for someone else, and
//! as an IPv4/UDP packet whose payload is then parsed.
//! Errors are expected; panics and hangs are bugs.
#![no_main]

use cloopbox::net::dhcp::{parse, prefix_len, udp_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (xid, mac) = match data.get(4..8).zip(data.get(28..34)) {
        Some((x, m)) => (
            u32::from_be_bytes([x[0], x[1], x[2], x[3]]),
            [m[0], m[1], m[2], m[3], m[4], m[5]],
        ),
        None => (0, [0; 6]),
    };
    if let Ok(Some(r)) = parse(data, xid, mac) {
        let _ = r.netmask.and_then(prefix_len);
    }
    let _ = parse(data, xid.wrapping_add(1), mac);
    // The same bytes as an IPv4 packet from a packet socket.
    if let Some((_, payload)) = udp_payload(data, 68) {
        let _ = parse(payload, xid, mac);
    }
});
