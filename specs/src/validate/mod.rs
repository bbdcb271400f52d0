//! Validation of a parsed `config.json`: every rule hull checks before it creates anything.
//!
//! [`validate_spec`] is pure (no file system access); [`resolve_rootfs`] stats and
//! canonicalizes `root.path`; [`validate`] does both. Rules that need a syscall (is this
//! namespace path really a namespace of that type? is it the host's?) belong to the runtime.

mod linux;
mod mounts;
mod namespaces;
mod paths;
mod process;
pub(crate) mod raw;
mod resources;
pub mod version;

use std::path::{Path, PathBuf};

use crate::annotations;
use crate::{Spec, SpecError};

pub use mounts::is_bind;
pub use namespaces::{namespace_name, NamespaceEntry, NamespaceSet};
pub use resources::validate_resources;
pub use version::{check_oci_version, parse_semver, SemVer};

/// `HOST_NAME_MAX` on Linux: `sethostname(2)` refuses longer names.
pub const HOST_NAME_MAX: usize = 64;

/// Validates `spec` and resolves its root filesystem against `bundle_dir`; returns the
/// canonical, absolute rootfs path.
pub fn validate(spec: &Spec, bundle_dir: &Path) -> Result<PathBuf, SpecError> {
    validate_spec(spec)?;
    resolve_rootfs(spec, bundle_dir)
}

/// All the rules that need no file system access, in the order of the fields in
/// `config.json`; returns the first violation.
pub fn validate_spec(spec: &Spec) -> Result<(), SpecError> {
    check_oci_version(spec.version())?;
    check_root(spec)?;
    let ns = NamespaceSet::from_spec(spec)?;
    process::check(spec)?;
    check_hostnames(spec, &ns)?;
    mounts::check(spec)?;
    check_hooks(spec)?;
    check_annotations(spec)?;
    linux::check(spec, &ns)?;
    resources::check(spec)?;
    Ok(())
}

/// `root` present with a non-empty `path`.
fn check_root(spec: &Spec) -> Result<&Path, SpecError> {
    let root = spec.root().as_ref().ok_or_else(|| SpecError::Missing {
        field: "root".into(),
    })?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(SpecError::Empty {
            field: "root.path".into(),
        });
    }
    paths::no_nul("root.path", path)?;
    Ok(path)
}

/// Resolves `root.path` (relative to `bundle_dir` when relative), checks that it is a
/// directory, and returns it canonicalized.
pub fn resolve_rootfs(spec: &Spec, bundle_dir: &Path) -> Result<PathBuf, SpecError> {
    let path = check_root(spec)?;
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        bundle_dir.join(path)
    };
    let canonical = std::fs::canonicalize(&joined).map_err(|source| SpecError::Rootfs {
        path: joined.clone(),
        source,
    })?;
    let meta = std::fs::metadata(&canonical).map_err(|source| SpecError::Rootfs {
        path: joined.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SpecError::RootfsNotDir { path: joined });
    }
    Ok(canonical)
}

/// `hostname` and `domainname`: need a UTS namespace of the container's own (listed in
/// `linux.namespaces`, created or joined, as runc requires), fit `HOST_NAME_MAX`.
fn check_hostnames(spec: &Spec, ns: &NamespaceSet) -> Result<(), SpecError> {
    for (field, value) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        let Some(value) = value.as_deref() else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        if !ns.has(oci_spec::runtime::LinuxNamespaceType::Uts) {
            return Err(SpecError::NeedsNamespace {
                field: field.into(),
                what: field.into(),
                ns: "UTS",
            });
        }
        paths::no_nul_str(field, value)?;
        if value.len() > HOST_NAME_MAX {
            return Err(SpecError::invalid(
                field,
                format!("longer than {HOST_NAME_MAX} bytes"),
            ));
        }
    }
    Ok(())
}

/// `hooks.<kind>[i]`: absolute `path`, positive `timeout`, no NUL in args and env.
fn check_hooks(spec: &Spec) -> Result<(), SpecError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    #[allow(deprecated)] // prestart is deprecated in the spec but still sent and run.
    let kinds = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (kind, list) in kinds {
        for (i, hook) in list.iter().flatten().enumerate() {
            let field = format!("hooks.{kind}[{i}]");
            let path = hook.path();
            paths::absolute(&format!("{field}.path"), path, "")?;
            paths::no_nul(&format!("{field}.path"), path)?;
            for (j, arg) in hook.args().iter().flatten().enumerate() {
                paths::no_nul_str(&format!("{field}.args[{j}]"), arg)?;
            }
            for (j, env) in hook.env().iter().flatten().enumerate() {
                paths::env_entry(&format!("{field}.env[{j}]"), env)?;
            }
            if let Some(t) = hook.timeout() {
                if t <= 0 {
                    return Err(SpecError::OutOfRange {
                        field: format!("{field}.timeout"),
                        value: t.into(),
                        range: "must be greater than 0 seconds",
                    });
                }
            }
        }
    }
    Ok(())
}

/// `annotations`: keys non-empty; hull's own keys have valid values.
fn check_annotations(spec: &Spec) -> Result<(), SpecError> {
    let Some(map) = spec.annotations() else {
        return Ok(());
    };
    if map.contains_key("") {
        return Err(SpecError::invalid(
            "annotations",
            "keys must not be empty strings",
        ));
    }
    annotations::isolation(spec)?;
    annotations::userns_auto(spec)?;
    Ok(())
}

#[cfg(test)]
mod tests;
