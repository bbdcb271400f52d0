//! `hull`: the runc-compatible command line.

// The CLI returns the library's `hull_runtime::container::Error` (128 bytes) as it is:
// clippy's result_large_err fires on it here, though it did not while this code lived in the
// library; boxing it would change the library's API for a lint.
#![allow(clippy::result_large_err)]

mod cli;
mod logging;

fn main() {
    // The container init is exec'd as `hull init`: it must not set up logging on the
    // container's stdio, so it is dispatched before anything else.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("init")) {
        hull_inside::init::run();
    }
    std::process::exit(cli::main());
}
