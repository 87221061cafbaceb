//! Multicall entry point: everything happens in the library.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    std::process::exit(cloopbox::applets::dispatch(args));
}
