//! hull-runtime: the container lifecycle as a library.
//!
//! The data path: `hull_specs` turns a bundle into a validated `Spec`; `container` carries it
//! out (create → start → kill → delete) with the modules below, and `init` is the container
//! side of `create`; `cli` is the runc-compatible front end of the `hull` binary.

pub mod cgroups;
pub mod checkpoint;
pub mod cli;
pub mod container;
pub mod events;
pub mod exec;
mod fds;
pub mod hooks;
pub mod init;
pub mod logging;
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
