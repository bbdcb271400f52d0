//! Typed errors of the cgroup module: every variant names the cgroup path and, where one is
//! involved, the controller (hierarchy) or the `linux.resources` field.

use std::path::PathBuf;

/// Errors from creating, configuring, querying and removing a container's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `linux.cgroupsPath` (or the default derived from the id) is not acceptable.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    /// `--systemd-cgroup` was given on a host without systemd.
    #[error("systemd cgroup driver requested but systemd is not running (no /run/systemd/system)")]
    SystemdNotRunning,

    /// `--systemd-cgroup` was given and systemd runs, but hull only has the cgroupfs driver.
    #[error("systemd cgroup driver requested for {path:?}, but hull only implements the cgroupfs driver")]
    SystemdUnsupported { path: String },

    /// No cgroup v1 hierarchy and no cgroup2 mount were found in /proc/self/mountinfo.
    #[error("no cgroup filesystem is mounted (checked /proc/self/mountinfo)")]
    NoCgroupFs,

    /// A resource was requested that this host (or hull) cannot enforce.
    #[error("cgroup {path}: {field} requested but {reason}")]
    Unsupported {
        path: String,
        field: String,
        reason: String,
    },

    /// A requested value is malformed.
    #[error("cgroup {path}: invalid {field}: {reason}")]
    InvalidValue {
        path: String,
        field: String,
        reason: String,
    },

    /// A file operation on the cgroup filesystem failed.
    #[error("cgroup {path} (controller {controller}): cannot {op} {file}: {source}")]
    Io {
        path: String,
        controller: String,
        op: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `cgroups-rs` failed to apply a resource.
    #[error("cgroup {path} (controller {controller}): setting {field} failed: {detail}")]
    Apply {
        path: String,
        controller: String,
        field: String,
        detail: String,
    },

    /// The cgroup to create already holds processes.
    #[error("cgroup {path} (controller {controller}) is not empty: {count} process(es) found")]
    NotEmpty {
        path: String,
        controller: String,
        count: usize,
    },

    /// Freezing or thawing did not reach the wanted state in time.
    #[error("cgroup {path} (controller {controller}): {state} not reached after {waited_ms} ms")]
    FreezeTimeout {
        path: String,
        controller: String,
        state: &'static str,
        waited_ms: u64,
    },

    /// An update failed after some of its fields were written (every file was checked
    /// first; the kernel refused a value).
    #[error("{source} (fields already applied: {})", applied.join(", "))]
    PartiallyApplied {
        path: String,
        applied: Vec<String>,
        #[source]
        source: Box<CgroupError>,
    },

    /// Sending a signal to a pid of the cgroup failed (other than ESRCH).
    #[error("cgroup {path}: cannot send signal {signal} to pid {pid}: {source}")]
    Signal {
        path: String,
        pid: i32,
        signal: i32,
        #[source]
        source: std::io::Error,
    },
}

/// Renders an error and its whole `source()` chain on one line (cgroups-rs keeps the
/// interesting part, the errno, in the cause).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    // cgroups-rs also prints its cause (Debug-formatted) after " caused by: "; keep the head
    // of each level and append the causes' own messages instead.
    let head = |e: &dyn std::error::Error| {
        let s = e.to_string();
        match s.split_once(" caused by: ") {
            Some((h, _)) => h.to_string(),
            None => s,
        }
    };
    let mut out = head(err);
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = head(e);
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
