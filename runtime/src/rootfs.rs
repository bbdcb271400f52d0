//! The container's root filesystem: mounts, devices, pivot, masked and read-only paths.
//!
//! INTERFACE SKELETON — replaced by the owning helper.

use oci_spec::runtime::Spec;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs: {0}")]
    Other(String),
}

/// What the rootfs set-up needs to know. Runs inside the container's (new) mount namespace.
pub struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    /// Absolute host path of the rootfs.
    pub rootfs: &'a Path,
    /// Absolute host path of the bundle (relative bind sources are relative to it).
    pub bundle: &'a Path,
    pub no_pivot: bool,
    /// The container has its own user namespace: devices are bind-mounted, not mknod'ed.
    pub in_user_ns: bool,
}

/// Before pivot: propagation, rootfs bind, every `mounts` entry, default and `linux.devices`.
pub fn prepare(_plan: &RootfsPlan) -> Result<(), RootfsError> {
    Err(RootfsError::Other("not yet".into()))
}

/// `pivot_root` (or `MS_MOVE` + `chroot` with `no_pivot`) into the rootfs; cwd is `/` after.
pub fn enter(_plan: &RootfsPlan) -> Result<(), RootfsError> {
    Err(RootfsError::Other("not yet".into()))
}

/// After pivot (and after sysctls): masked paths, read-only paths, `root.readonly`.
pub fn finish(_plan: &RootfsPlan) -> Result<(), RootfsError> {
    Err(RootfsError::Other("not yet".into()))
}
