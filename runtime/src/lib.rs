//! hull-runtime: the container lifecycle as a library.
//!
//! The data path: `hull_specs` turns a bundle into a validated `Spec`; `container` carries it
//! out (create → start → kill → delete) using the modules below; `cli` is the runc-compatible
//! front end of the `hull` binary.

pub mod cgroups;
pub mod hooks;
pub mod process_setup;
pub mod rootfs;
