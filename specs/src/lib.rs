//! hull-specs: the OCI bundle as hull's input. Pure code: it reads files (`config.json`,
//! a stat of `root.path`) and writes one (`hull spec`), but makes no other syscalls.
//!
//! - [`load_bundle`] reads, parses and validates a bundle; [`validate`] checks a parsed spec.
//! - [`validate_container_id`], [`signal`] parse what the CLI is given.
//! - [`defaults`] is `hull spec`, [`features`] is `hull features`.
//! - [`annotations`] holds hull's own annotations (`io.hull.isolation`); [`vm`] sizes a VM
//!   container's guest and refuses what the VM tier cannot carry out.

pub mod annotations;
mod bundle;
pub mod defaults;
mod error;
pub mod features;
mod id;
pub mod json;
pub mod seccomp_default;
pub mod signal;
pub mod validate;
pub mod vm;

pub use oci_spec::runtime::Spec;

pub use annotations::Isolation;
pub use bundle::{
    load_bundle, parse_config, parse_json_naming_field, read_config, Bundle, CONFIG_FILE,
};
pub use error::SpecError;
pub use id::{validate_container_id, MAX_ID_LEN};
pub use validate::{resolve_rootfs, validate, validate_resources, validate_spec};
