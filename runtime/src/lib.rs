//! hull-runtime: the host side of the container lifecycle as a library.
//!
//! The data path: `hull_specs` turns a bundle into a validated `Spec`; `container` carries it
//! out (create → start → kill → delete) with the modules below; the container side of
//! `create` and `exec` (`hull init`) is the `hull_inside` crate. The runc-compatible front
//! end is the `hull` binary (`runtime/cli`).

pub mod cgroups;
pub mod checkpoint;
pub mod container;
pub mod events;
pub mod exec;
pub mod process;
pub mod sealed_exe;
pub mod seccomp;
pub mod spawn;
pub mod state;
pub mod userns_auto;
pub mod vm;
pub mod wait;

pub use container::{CreateOptions, Runtime};
