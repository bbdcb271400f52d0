//! hull-runtime: the container lifecycle as a library.
//!
//! The data path: `hull_specs` turns a bundle into a validated `Spec`; `container` carries it
//! out (create → start → kill → delete) with the modules below, and `init` is the container
//! side of `create`. The runc-compatible front end is the `hull` binary (`runtime/cli`).

pub mod cgroups;
pub mod checkpoint;
pub mod container;
pub mod events;
pub mod exec;
mod fds;
pub mod hooks;
pub mod init;
pub mod lsm;
pub mod namespaces;
pub mod network;
pub mod process_setup;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
pub mod state;
pub mod sync;
pub mod terminal;
pub mod userns_auto;
pub mod wait;

pub use container::{CreateOptions, Runtime};
