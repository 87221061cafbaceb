//! Text the boot reads from media and the kernel: checksum lists (from
//! the medium), mountinfo and the served devices its mount sources name,
//! `/proc/net/unix`'s control sockets (all read at shutdown), and the
//! module indexes (`modules.dep`, `modules.alias`) init and modprobe read.
//! Arbitrary bytes must never panic, and what is accepted is well-formed.
#![no_main]

use cloopbox::boot::checksums::{parse, Algorithm};
use cloopbox::boot::kmod::ModuleDb;
use cloopbox::control::proto::{listening_devices, socket_name, KernelDevice};
use cloopbox::sys::mountinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for alg in [Algorithm::Sha256, Algorithm::Sha1, Algorithm::Md5] {
        for (hex, name) in parse(&text, alg) {
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(!name.is_empty());
        }
    }
    let mounts = mountinfo::parse(&text);
    for m in mountinfo::below(&mounts, "/oldroot") {
        assert!(m.point == "/oldroot" || m.point.starts_with("/oldroot/"));
    }
    for m in &mounts {
        if let Some(dev) = KernelDevice::of_source(&m.source) {
            assert!(m.source.starts_with(&dev.to_string()));
        }
    }
    let mut db = ModuleDb::parse(std::path::Path::new("/m"), &text, &text);
    db.parse_aliases(&text);
    for word in text.split_whitespace().take(8) {
        for module in db.resolve(word) {
            // Dependencies first, each once, whatever cycles the text has.
            let (order, _) = db.load_order(&[module.as_str()]);
            let mut seen = std::collections::HashSet::new();
            assert!(order.iter().all(|m| seen.insert(m.clone())));
        }
    }
    let devices = listening_devices(&text);
    assert!(devices.windows(2).all(|w| w[0] < w[1]));
    for dev in devices {
        assert!(text.contains(&format!("@{}", socket_name(dev))));
    }
});
