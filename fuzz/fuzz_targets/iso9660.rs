//! Fuzz target: any bytes as an ISO 9660 image.
//!
//! The volume descriptors, the root directory (Rock Ridge names
//! included) and the path walk to `KNOPPIX/KNOPPIX` (and `KNOPPIX1`…,
//! `KNOPPIX.verity`), then reads through the `Slice` of
//! every file found. Errors are expected; panics, hangs and allocations
//! sized by what the image merely claims are bugs. Small inputs are padded
//! to 40 KiB so the descriptors at sector 16 are reachable.
#![no_main]

use std::sync::Arc;

use cloopbox::blockdev::{MemDev, ReadAt, Slice};
use cloopbox::iso9660::{knoppix_images, Volume};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut img = data.to_vec();
    if img.len() < 40 * 1024 {
        // Input first at sector 16 (the descriptors), then the rest.
        let mut padded = vec![0u8; 16 * 2048];
        padded.extend_from_slice(data);
        padded.resize(40 * 1024, 0);
        img = padded;
    }
    let dev = Arc::new(MemDev::new(img));
    if let Ok(vol) = Volume::open(&*dev) {
        let _ = vol.list(&*dev, &vol.root);
        let _ = vol.find(&*dev, "boot/isolinux/isolinux.cfg");
        // A name found by its Rock Ridge NM entries (the hash tree).
        let _ = vol.find(&*dev, "KNOPPIX/KNOPPIX.verity");
    }
    if let Ok(found) = knoppix_images(&*dev) {
        for (_, extents) in found {
            if let Ok(slice) = Slice::new(dev.clone(), &extents) {
                let mut buf = vec![0u8; slice.size().min(4096) as usize];
                let _ = slice.read_at(&mut buf, 0);
            }
        }
    }
});
