//! `hull`: the runc-compatible command line.

fn main() {
    // The container init is exec'd as `hull init`: it must not set up logging on the
    // container's stdio, so it is dispatched before anything else.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("init")) {
        hull_runtime::init::run();
    }
    std::process::exit(hull_runtime::cli::main());
}
