//! `cowrepair [-f] [-n] [-v[v]] COWFILE`: rebuilds the bitmap of a dirty
//! cowfile, with cowrepair 3.1's flags and output.
//!
//! Differences from 3.1: a dirty file is repaired without `-f` (3.1's
//! `flags &= COWPACKED` made every file look clean); holes are skipped with
//! SEEK_DATA/SEEK_HOLE; bits beyond the rdofile end are cleared and counted;
//! `-n` opens the file read-only.

use crate::cow::cowfile::{lock, open_existing, read_header};
use crate::cow::repair::{repair, Correction, RepairOptions};
use crate::cow::FormatError;
use std::ffi::OsString;
use std::path::Path;

const NAME: &str = "cowrepair";
const USAGE: &str = "Usage: cowrepair [-f] [-n] [-v[v]] cowfile\n\n   \
    -f   forced:   repair cowfile which is not dirty\n   \
    -n   nomodify: do not modify cowfile (fake mode)\n   \
    -v   verbose:  provide extra info\n";

struct Flags {
    force: bool,
    dry_run: bool,
    verbose: bool,
}

pub fn main(args: Vec<OsString>) -> i32 {
    let parsed = match crate::applets::parse_flags(NAME, USAGE, &args[1..], "fnvh", &["help"]) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let has = |n: &str| parsed.opts.iter().any(|o| o.name == n);
    let flags = Flags { force: has("f"), dry_run: has("n"), verbose: has("v") };
    let [path] = parsed.operands.as_slice() else {
        return usage_error("expected exactly one cowfile");
    };
    match run(Path::new(path), &flags) {
        Ok(status) => status,
        Err(e) => crate::applets::fail(NAME, e),
    }
}

fn usage_error(msg: &str) -> i32 {
    crate::applets::usage_error(NAME, USAGE, msg)
}

fn run(path: &Path, flags: &Flags) -> Result<i32, crate::cow::CowError> {
    let file = open_existing(path, !flags.dry_run)?;
    lock(&file, path, !flags.dry_run)?;
    let mut header = read_header(&file, path)?;
    header.check_layout().map_err(|p| crate::cow::CowError::format(path, p))?;
    if header.is_packed() {
        return Err(crate::cow::CowError::format(path, FormatError::Packed));
    }
    if !header.is_dirty() && !flags.force {
        eprintln!("cowfile {} is not dirty", path.display());
        return Ok(0);
    }
    let rdoblocks = header.rdoblocks;
    let mut show = |c: Correction| {
        if !flags.verbose {
            return;
        }
        match c {
            Correction::Marked { block } => {
                println!("data block {block:>9} (offset {:>11}) not marked in bitmap; corrected", block * 1024)
            }
            Correction::ClearedBeyondEnd { block } => {
                println!("bitmap bit {block:>9} beyond the end of the rdofile ({rdoblocks} blocks); cleared")
            }
            Correction::IgnoredBeyondEnd { block } => println!(
                "data block {block:>9} (offset {:>11}) beyond the end of the rdofile ({rdoblocks} blocks); ignored",
                block * 1024
            ),
        }
    };
    let report = repair(&file, path, &mut header, RepairOptions { dry_run: flags.dry_run }, &mut show)?;
    let suffix = if flags.dry_run { " (not done due to flag -n)" } else { "" };
    println!("Number of corrections in bitmap: {}{suffix}", report.corrections);
    Ok(0)
}
