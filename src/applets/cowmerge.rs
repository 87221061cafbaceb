//! `cowmerge [-y] [-q] RDOFILE COWFILE`: writes a cowfile's blocks into its
//! rdofile, with cowmerge 3.1's question and output.
//!
//! Differences from 3.1: dirty, merged, inconsistent and wrong-sized
//! cowfiles are refused (3.1 merged dirty ones with a stale bitmap, and never
//! compared sizes); `-y` answers the question; progress is shown on stderr
//! (`-q` hides it); the rdofile is fsynced; and the cowfile is then marked
//! as merged, so it can never be applied to the merged rdofile again.

use crate::cow::merge::Merge;
use crate::progress::Progress;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::Path;

const NAME: &str = "cowmerge";
const USAGE: &str = "Usage: cowmerge [-y] [-q] rdofile cowfile\n\
    \trdofile\tread-only file to be updated\n\
    \tcowfile\tcowfile containing the updates\n\n  \
    -y   do not ask for confirmation\n  \
    -q   no progress output\n";

pub fn main(args: Vec<OsString>) -> i32 {
    let parsed = match crate::applets::parse_flags(NAME, USAGE, &args[1..], "yqh", &["help"]) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let has = |n: &str| parsed.opts.iter().any(|o| o.name == n);
    let [rdo, cow] = parsed.operands.as_slice() else {
        return usage_error("expected an rdofile and a cowfile");
    };
    let (rdo, cow) = (Path::new(rdo), Path::new(cow));
    let merge = match Merge::prepare(rdo, cow) {
        Ok(m) => m,
        Err(e) => return crate::applets::fail(NAME, e),
    };
    if !has("y") && !confirmed(rdo, cow) {
        return 0;
    }
    let total = merge.blocks() * 1024;
    let mut progress = Progress::new(NAME, Some(total), has("q"));
    match merge.run(&mut |done| progress.update(done, None)) {
        Ok(blocks) => {
            progress.finish(total, None);
            println!("Number of blocks modified in {}: {blocks}", rdo.display());
            0
        }
        Err(e) => crate::applets::fail(NAME, e),
    }
}

fn usage_error(msg: &str) -> i32 {
    crate::applets::usage_error(NAME, USAGE, msg)
}

/// cowmerge 3.1 read one character from stdin, terminal or not, and went on
/// only for an uppercase `Y`.
fn confirmed(rdo: &Path, cow: &Path) -> bool {
    print!("Really want to modify {} with updates from {} (Y/N)? ", rdo.display(), cow.display());
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    match std::io::stdin().lock().read_line(&mut answer) {
        Ok(_) => answer.starts_with('Y'),
        Err(_) => false,
    }
}
