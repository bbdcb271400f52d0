//! `containerd-shim-hull-v2`: containerd's shim v2 task API on the hull runtime library.
//!
//! The container's init is this binary again, exec'd as `<self> init` by the runtime (a VM
//! container's as `<self> vm-init`, its exec relays as `<self> vm-exec`), so those roles
//! are dispatched before anything else.

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
mod working_set;

fn main() {
    hull_runtime::run_internal_role();
    one_malloc_arena();
    logging::init();
    containerd_shim::run::<shim::HullShim>(shim::RUNTIME_ID, None);
}

/// The shim lives as long as its container and mostly sleeps; glibc would give each of its
/// threads (ttrpc server, reaper, publisher) a malloc arena of its own, each holding touched
/// pages. One arena is enough for its traffic and keeps its resident memory down.
fn one_malloc_arena() {
    // SAFETY: mallopt only sets a malloc tunable; called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}
