//! hull-inside: the container side of hull — everything that runs inside the container (or,
//! later, a VM guest) to set it up: namespace joins, rootfs and mounts, the hooks that run
//! inside, the console, process set-up, LSM labels, loading a precompiled seccomp filter, and
//! the set-up sequence that orders them ([`sequence`]).
//!
//! `hull init` ([`init`]) drives the sequence over its sync socket with `hull create`; the
//! host side (`hull-runtime`) depends on this crate, never the reverse.

pub mod fds;
pub mod hooks;
pub mod init;
pub mod lsm;
pub mod namespaces;
pub mod network;
pub mod passwd;
pub mod process_setup;
pub mod procfs;
pub mod rootfs;
pub mod seccomp;
pub mod sequence;
pub mod sync;
pub mod system;
pub mod terminal;
