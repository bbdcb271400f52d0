//! The container's cgroup (v1, v2 and hybrid) through `cgroups-rs`.
//!
//! INTERFACE SKELETON — the helper owning this file replaces the bodies; the signatures are
//! what `container.rs` calls. Keep them (add more if needed).

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups: {0}")]
    Other(String),
}

/// A container's cgroup, identified by its resolved path. Serializable so `delete --force`
/// can find it again from the saved state alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerCgroup {
    /// The resolved cgroup path, absolute below each hierarchy's root (e.g. `/hull/abc`).
    pub path: String,
}

impl ContainerCgroup {
    /// Resolve `linux.cgroupsPath` (None → the default for `id`) into an absolute path.
    /// `systemd` is the `--systemd-cgroup` flag (`slice:prefix:name` syntax).
    pub fn resolve(
        _cgroups_path: Option<&str>,
        _id: &str,
        _systemd: bool,
    ) -> Result<String, CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }

    /// Create the cgroup in every available hierarchy, apply `resources` and add `pid`.
    /// On error, removes whatever it created.
    pub fn create(
        _path: &str,
        _resources: Option<&LinuxResources>,
        _pid: i32,
    ) -> Result<Self, CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }

    /// Add another process (e.g. an exec'd one) to the cgroup.
    pub fn add_process(&self, _pid: i32) -> Result<(), CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }

    /// All pids in the cgroup (in the host pid namespace).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }

    /// Freeze (`true`) or thaw (`false`) every process in the cgroup.
    pub fn set_frozen(&self, _frozen: bool) -> Result<(), CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }

    /// Signal every process in the cgroup (freezing it around the signal so no process
    /// escapes by forking).
    pub fn signal_all(&self, _signal: i32) -> Result<(), CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }

    /// Remove the cgroup directories (the processes must be gone). Idempotent: missing
    /// directories are not an error.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        Err(CgroupError::Other("not yet".into()))
    }
}
