//! PLACEHOLDER: replaced by the real applet before anything lands.
use std::ffi::OsString;

pub fn main(_args: Vec<OsString>) -> i32 {
    crate::applets::fail("extract_compressed_fs", "PLACEHOLDER")
}
