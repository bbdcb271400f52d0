//! Applying `process` of the OCI config to the container init just before `execve`.
//!
//! INTERFACE SKELETON — replaced by the owning helper.

use oci_spec::runtime::Process;

#[derive(Debug, thiserror::Error)]
pub enum ProcessSetupError {
    #[error("process: {0}")]
    Other(String),
}

/// Everything of `process` that is applied to the calling process before `execve`, in
/// runc's order: rlimits, oomScoreAdj, ioPriority, scheduler, personality, umask,
/// capabilities' bounding set, user (additionalGids, gid, uid — keeping caps across the
/// switch), then the effective/permitted/inheritable/ambient sets, then noNewPrivileges.
/// `cwd` and `env` are not applied here (the caller does them).
pub fn apply(_process: &Process) -> Result<(), ProcessSetupError> {
    Err(ProcessSetupError::Other("not yet".into()))
}
