//! Fuzz target: any bytes as a DNS server's answer (src/net/dns.rs).
//!
//! The answer is parsed for the query id it carries (so the header check
//! passes and the records are walked, compression pointers included) and
//! for two names. Errors are expected; panics, hangs (pointer loops) and
//! allocations sized by what the message claims are bugs.
#![no_main]

use cloopbox::net::dns::parse_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = data.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let _ = parse_answer(data, id, "images.test");
    let _ = parse_answer(data, id, "a");
});
