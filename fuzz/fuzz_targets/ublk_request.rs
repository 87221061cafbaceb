//! What the ublk driver writes for a request: a 24-byte I/O descriptor
//! (op, flags, start sector, sector count). Any descriptor, against a
//! small writable device and a buffer smaller than some requests, must be
//! answered with a byte count or a negative errno, never a panic, and a
//! read or write answered with bytes stays inside the device and buffer.
#![no_main]

use cloopbox::blockdev::MemDev;
use cloopbox::ublk::handle;
use cloopbox::ublk::proto::{IoDesc, Op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut raw = [0u8; 24];
    let n = data.len().min(24);
    raw[..n].copy_from_slice(&data[..n]);
    let d = IoDesc::decode(&raw);
    let dev = MemDev::new(vec![0x5a; 64 * 1024]);
    let mut buf = vec![0u8; 16 * 1024];
    let res = handle(&dev, &d, &mut buf);
    if res > 0 {
        assert!(matches!(d.op, Op::Read | Op::Write));
        assert_eq!(res as u64, u64::from(d.nr_sectors) * 512);
        assert!(res as usize <= buf.len());
        assert!(d.start_sector * 512 + res as u64 <= 64 * 1024);
    }
});
