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
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some("init") => hull_inside::init::run(),
        // A VM container's init (its VMM) and its exec relays.
        Some("vm-init") => hull_runtime::vm::init::run(),
        Some("vm-exec") => hull_runtime::vm::exec::run(),
        _ => {}
    }
    std::process::exit(cli::main());
}
