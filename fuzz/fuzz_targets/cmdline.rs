//! The kernel command line and the boot options built from it: arbitrary
//! bytes must never panic, and every option keeps a sane value.
#![no_main]

use cloopbox::boot::cmdline::Cmdline;
use cloopbox::boot::options::BootOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let opts = BootOptions::from_cmdline(&Cmdline::parse(&text));
    assert!(opts.init.is_absolute());
    assert!(!opts.knoppix_dir.is_empty() && !opts.knoppix_dir.split('/').any(|c| c == ".."));
    assert!(!opts.knoppix_name.contains('/'));
    // Paths on a medium or disk never climb out of it.
    let safe = |p: &str| p.starts_with('/') && !p.split('/').any(|c| c == "..");
    assert!(opts.iso_file.as_deref().is_none_or(safe));
    assert!(opts.persistence.as_ref().is_none_or(|p| safe(&p.path)));
    assert!(opts.bootfrom.as_ref().is_none_or(|d| d.starts_with("/dev/")));
});
