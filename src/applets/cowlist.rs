//! `cowlist COWFILE`: the header of a cowfile, in cowlist 3.1's layout.
//!
//! Differences from 3.1: the file is opened read-only (3.1 wanted write
//! permission), both ABIs are read, our MERGED flag is shown, and `--json`
//! prints the same fields as one JSON object.

use crate::cow::cowfile::{open_existing, read_header};
use crate::cow::Header;
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

const NAME: &str = "cowlist";
const USAGE: &str = "Usage: cowlist [--json] cowfile\n\n\
    Shows the header of a cowloop cowfile (read-only).\n\n  \
    --json   print the fields as one JSON object\n";

pub fn main(args: Vec<OsString>) -> i32 {
    let parsed = match crate::applets::parse_flags(NAME, USAGE, &args[1..], "h", &["help", "json"]) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let json = parsed.opts.iter().any(|o| o.name == "json");
    let [path] = parsed.operands.as_slice() else {
        return usage_error("expected exactly one cowfile");
    };
    let path = Path::new(path);
    let header = match open_existing(path, false).and_then(|f| read_header(&f, path)) {
        Ok(h) => h,
        Err(e) => return crate::applets::fail(NAME, e),
    };
    let text = if json { to_json(path, &header) } else { listing(path, &header) };
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => crate::applets::fail(NAME, e),
    }
}

fn usage_error(msg: &str) -> i32 {
    crate::applets::usage_error(NAME, USAGE, msg)
}

fn state(header: &Header) -> String {
    let mut state = format!("{:>9}", if header.is_dirty() { "dirty" } else { "clean" });
    if header.is_packed() {
        state += " packed";
    }
    if header.is_merged() {
        state += " merged";
    }
    state
}

/// cowlist 3.1's printf formats, field for field.
pub fn listing(path: &Path, h: &Header) -> String {
    let unit = h.mapunit;
    format!(
        "\nInfo about cowfile {}:\n     state cowfile: {}\n    header-version: {:>9}\n       data offset: {:>9}\n           mapunit: {:>9}\n     bitmap-blocks: {:>9} (of {unit} bytes)\n  cowblocks in use: {:>9} (of {unit} bytes)\n      size rdofile: {:>9} (of {unit} bytes)\n",
        path.display(),
        state(h),
        h.version,
        h.doffset,
        h.mapunit,
        h.mapsize.checked_div(h.mapunit).unwrap_or(0),
        h.cowused,
        h.rdoblocks,
    )
}

pub fn to_json(path: &Path, h: &Header) -> String {
    format!(
        "{{\"file\":{},\"abi\":\"{}\",\"state\":\"{}\",\"dirty\":{},\"packed\":{},\"merged\":{},\"flags\":{},\
         \"version\":{},\"data_offset\":{},\"mapunit\":{},\"mapsize\":{},\"bitmap_blocks\":{},\"cowused\":{},\
         \"rdoblocks\":{},\"fingerprint\":{}}}\n",
        crate::applets::json_string(&path.to_string_lossy()),
        h.abi.name(),
        if h.is_dirty() { "dirty" } else { "clean" },
        h.is_dirty(),
        h.is_packed(),
        h.is_merged(),
        h.flags,
        h.version,
        h.doffset,
        h.mapunit,
        h.mapsize,
        h.mapsize.checked_div(h.mapunit).unwrap_or(0),
        h.cowused,
        h.rdoblocks,
        h.fingerprint,
    )
}
