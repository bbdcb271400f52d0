//! hull-runtime: the host side of the container lifecycle as a library.
//!
//! The data path: `hull_specs` turns a bundle into a validated `Spec`; `container` carries it
//! out (create → start → kill → delete) with the modules below; the container side of
//! `create` and `exec` (`hull init`) is the `hull_inside` crate. The runc-compatible front
//! end is the `hull` binary (`runtime/cli`).

pub mod build_id;
pub mod cgroups;
pub mod checkpoint;
pub mod container;
pub mod events;
pub mod exec;
/// For the fuzz targets in `runtime/fuzz/` and their corpus replay test only.
#[doc(hidden)]
pub mod fuzzing;
pub mod init_deadline;
pub mod process;
pub mod sealed_exe;
pub mod seccomp;
pub mod spawn;
pub mod state;
pub mod userns_auto;
pub mod vm;
pub mod wait;

pub use container::{CreateOptions, Runtime};

/// The roles the runtime execs its own binary in (`init`; `vm-init` and `vm-exec` for VM
/// containers; see [`spawn::InitExec`]). Every binary that creates containers with this
/// library (the `hull` CLI, the shim) calls this first in `main`, before logging touches
/// the container's stdio; it returns only when the process has none of these roles.
pub fn run_internal_role() {
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some("init") => hull_inside::init::run(),
        Some("vm-init") => vm::init::run(),
        Some("vm-exec") => vm::exec::run(),
        _ => {}
    }
}
