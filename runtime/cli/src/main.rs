//! `hull`: the runc-compatible command line.

// The CLI returns the library's `hull_runtime::container::Error` (128 bytes) as it is:
// clippy's result_large_err fires on it here, though it did not while this code lived in the
// library; boxing it would change the library's API for a lint.
#![allow(clippy::result_large_err)]

mod cli;
mod logging;

fn main() {
    // `hull init`, `hull vm-init`, `hull vm-exec`: before logging is set up on their stdio.
    hull_runtime::run_internal_role();
    std::process::exit(cli::main());
}
