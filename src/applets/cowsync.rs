//! `cowsync`: every running cloopd writes its cowfile's bitmap and a clean
//! header, as cowloop's `sync(); ioctl(COWSYNC); sync();` did for every
//! cowdevice. The first sync(2) pushes the page cache of filesystems on
//! the devices to their servers; the second makes the cowfiles' own
//! metadata reach the disks under them.

use std::ffi::OsString;

use crate::control::client::{self, ClientError, REQUEST_TIMEOUT};
use crate::control::proto::socket_name;
use crate::control::Command;

const NAME: &str = "cowsync";
const USAGE: &str = "\
Usage: cowsync

Flushes every copy-on-write device served by cloopd (cowdev -l lists
them): pending writes, the bitmap and a clean header reach the cowfile.
Needs root. Exit status: 0 ok, 1 if any server failed.
";

pub fn main(args: Vec<OsString>) -> i32 {
    match crate::applets::parse_flags(NAME, USAGE, args.get(1..).unwrap_or_default(), "h", &["help"]) {
        Ok(p) if p.operands.is_empty() => {}
        Ok(_) => return crate::applets::usage_error(NAME, USAGE, "takes no arguments"),
        Err(status) => return status,
    }
    rustix::fs::sync();
    let devices = match client::devices() {
        Ok(d) => d,
        Err(e) => return crate::applets::fail(NAME, e),
    };
    let mut status = 0;
    for dev in devices {
        match client::request(&socket_name(dev), Command::Sync, REQUEST_TIMEOUT) {
            // Gone between the listing and the request: nothing to sync.
            Ok(_) | Err(ClientError::NotRunning(_)) => {}
            Err(e) => status = crate::applets::fail(NAME, format!("{dev}: {e}")),
        }
    }
    rustix::fs::sync();
    status
}
