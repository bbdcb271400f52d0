//! Resolving `linux.cgroupsPath` into a normalized absolute cgroup path.

use std::path::Path;

use super::CgroupError;

/// Where `/run/systemd/system` tells whether systemd is the init system (sd_booted(3)).
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// Parent of the containers' cgroups when `linux.cgroupsPath` is absent.
const DEFAULT_PARENT: &str = "/hull";

/// Resolves `cgroups_path` (None or empty → `/hull/<id>`) into an absolute path below each
/// hierarchy's root. Relative paths are taken relative to the root. `..` and NUL are rejected.
pub(crate) fn resolve(
    cgroups_path: Option<&str>,
    id: &str,
    systemd: bool,
) -> Result<String, CgroupError> {
    resolve_with(
        cgroups_path,
        id,
        systemd,
        Path::new(SYSTEMD_RUN_DIR).is_dir(),
    )
}

/// `resolve` with the "is systemd running" probe made explicit (for tests).
pub(crate) fn resolve_with(
    cgroups_path: Option<&str>,
    id: &str,
    systemd: bool,
    systemd_running: bool,
) -> Result<String, CgroupError> {
    if systemd {
        if !systemd_running {
            return Err(CgroupError::SystemdNotRunning);
        }
        return Err(CgroupError::SystemdUnsupported {
            path: cgroups_path.unwrap_or_default().to_string(),
        });
    }
    match cgroups_path {
        Some(p) if !p.is_empty() => normalize(p),
        _ => {
            if id.is_empty() || id.contains('/') {
                return Err(CgroupError::InvalidPath {
                    path: format!("{DEFAULT_PARENT}/{id}"),
                    reason: "the container id cannot name a cgroup (empty or contains '/')",
                });
            }
            normalize(&format!("{DEFAULT_PARENT}/{id}"))
        }
    }
}

/// Normalizes a cgroup path: absolute, no empty or `.` components, no `..`, no NUL, not the
/// root itself.
pub(crate) fn normalize(raw: &str) -> Result<String, CgroupError> {
    let invalid = |reason| CgroupError::InvalidPath {
        path: raw.to_string(),
        reason,
    };
    if raw.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut out = String::with_capacity(raw.len() + 1);
    for comp in raw.split('/') {
        match comp {
            "" | "." => continue,
            ".." => return Err(invalid("contains a '..' component")),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        return Err(invalid("names the hierarchy root"));
    }
    Ok(out)
}
