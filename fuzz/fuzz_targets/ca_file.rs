//! Fuzz target: any bytes as a `--ca-file` / `cloopbox.cafile=` PEM file
//! (src/remote/tls.rs): PEM sections, base64, and each certificate's DER
//! as rustls-webpki reads a trust anchor. Errors are expected; panics and
//! allocations sized by what the file claims are bugs.
#![no_main]

use cloopbox::remote::tls::parse_ca_pem;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_ca_pem(data);
});
