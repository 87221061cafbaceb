//! `cowpack [-z] <-p | -u> SOURCE DEST`: cowfile to savefile and back, with
//! cowpack 3.1's flags; the savefiles are byte-identical to its output.
//!
//! Differences from 3.1: the destination is truncated (3.1 kept the tail of
//! a longer old file), missing operands are a usage error (3.1 crashed),
//! `-p` refuses a packed source and `-u` an unpacked one, and the bitmap is
//! checked before anything is copied.

use crate::cow::pack::{pack, unpack, SaveFormat};
use crate::cow::FormatError;
use std::ffi::OsString;
use std::path::Path;

const NAME: &str = "cowpack";
const USAGE: &str = "Usage: cowpack [-z] <-p | -u> <source> <dest>\n \
    where: -z indicates GZipped input (with -u) or output (with -p)\n        \
    -p indicates packing source (a cow file) to dest\n        \
    -u indicates unpacking source to dest (a cow file)\n\
    NOTE: -p and -u are mutually exclusive\n";

pub fn main(args: Vec<OsString>) -> i32 {
    let parsed = match crate::applets::parse_flags(NAME, USAGE, &args[1..], "zpuh", &["help"]) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let has = |n: &str| parsed.opts.iter().any(|o| o.name == n);
    let packing = match (has("p"), has("u")) {
        (true, false) => true,
        (false, true) => false,
        _ => return usage_error("give exactly one of -p and -u"),
    };
    let [src, dest] = parsed.operands.as_slice() else {
        return usage_error("expected a source and a destination");
    };
    let format = if has("z") { SaveFormat::Gzip } else { SaveFormat::Plain };
    let (src, dest) = (Path::new(src), Path::new(dest));
    let result = if packing { pack(src, dest, format) } else { unpack(src, dest, format) };
    match result {
        Ok(_) => 0,
        Err(e) => match e.problem() {
            Some(FormatError::BadMagic { found })
                if found & 0xffff == 0x8b1f && format == SaveFormat::Plain =>
            {
                crate::applets::fail(NAME, format!("{e} (a gzip savefile? add -z)"))
            }
            _ => crate::applets::fail(NAME, e),
        },
    }
}

fn usage_error(msg: &str) -> i32 {
    crate::applets::usage_error(NAME, USAGE, msg)
}
