//! hull-specs: the OCI bundle as input. Pure code: it reads files but makes no other syscalls.
//!
//! (Skeleton: the helper owning this crate replaces this file.)

use std::path::{Path, PathBuf};

pub use oci_spec::runtime::Spec;

/// A loaded and validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute, canonical bundle directory.
    pub dir: PathBuf,
    /// Absolute, canonical path of the root filesystem.
    pub rootfs: PathBuf,
    pub spec: Spec,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
}

pub fn load_bundle(_dir: &Path) -> Result<Bundle, SpecError> {
    Err(SpecError::Invalid("not yet".into()))
}
