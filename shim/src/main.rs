//! `containerd-shim-hull-v2`: containerd's shim v2 task API on the hull runtime library.
//!
//! The container's init is this binary again, exec'd as `<self> init` by the runtime, so
//! `init` is dispatched before anything else.

mod error;
mod events;
mod exits;
mod logging;
mod metrics;
mod process;
mod rootfs;
mod service;
mod shim;
mod stdio;

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("init")) {
        hull_inside::init::run();
    }
    logging::init();
    containerd_shim::run::<shim::HullShim>(shim::RUNTIME_ID, None);
}
