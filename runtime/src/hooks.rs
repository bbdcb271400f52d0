//! OCI hooks: run each with the state JSON on stdin, its `env`, and its `timeout`.
//!
//! INTERFACE SKELETON — replaced by the owning helper.

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook: {0}")]
    Other(String),
}

/// Run `hooks` in order; the first failure stops the sequence and is returned.
/// `kind` names the hook list in errors (e.g. "createRuntime").
pub fn run_hooks(_kind: &str, _hooks: &[Hook], _state_json: &[u8]) -> Result<(), HookError> {
    Err(HookError::Other("not yet".into()))
}
