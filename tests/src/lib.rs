//! End-to-end test support for the `hull` CLI (runc-compatible).
//!
//! * [`Bundle`]: an OCI bundle in a fresh temp dir, rootfs from Debian's `busybox-static`,
//!   `config.json` shaped like `runc spec`'s default, edited through builder methods.
//! * [`Runtime`]: the binary under test (`HULL_BIN`, default `<workspace>/target/debug/hull`)
//!   with a private temp `--root`; every container id it hands out is `delete --force`d
//!   on drop.
//! * [`check`]: leftover checks (state under `--root`, cgroup dirs, host mounts).
//! * [`skip`]: skip helpers that print `skipped: <reason>`.
//!
//! Commands never read the runtime's output through pipes: stdout/stderr go to files, so a
//! container that inherits them (create, run --detach) cannot make a test hang.

pub mod bundle;
pub mod check;
pub mod client;
pub mod console;
pub mod containerd;
pub mod docker;
pub mod nested;
pub mod oci_image;
pub mod runtime;
pub mod skip;
pub mod util;

pub use bundle::Bundle;
pub use check::{
    assert_no_leftovers, cgroup_dir, cgroup_dirs, mountinfo, parse_mountinfo, read_cgroup,
};
pub use runtime::{Out, Runtime};
pub use skip::setup;
pub use util::{host_ns, unique, wait_until, write_script, ChildGuard, HostMount};
