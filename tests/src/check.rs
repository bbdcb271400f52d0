//! Leftover checks and host-side views (cgroup dirs, mount table).

use crate::bundle::Bundle;
use crate::runtime::Runtime;
use crate::util::wait_until;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::util::host_ns;

/// One parsed /proc/<pid>/mountinfo line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MountEntry {
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    /// Per-mount options (field 6), e.g. `rw,nosuid,nodev`.
    pub mount_options: Vec<String>,
    /// Super-block options, e.g. `size=65536k,mode=755`.
    pub super_options: Vec<String>,
}

impl MountEntry {
    pub fn has(&self, opt: &str) -> bool {
        self.mount_options
            .iter()
            .chain(&self.super_options)
            .any(|o| o == opt)
    }
    pub fn readonly(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }
}

/// Parse mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let unescape = |s: &str| {
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
    };
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                mount_point: unescape(pre.get(4)?),
                mount_options: pre.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: post.first()?.to_string(),
                source: post.get(1).map_or(String::new(), |s| unescape(s)),
                super_options: post
                    .get(2)
                    .map_or(vec![], |s| s.split(',').map(str::to_owned).collect()),
            })
        })
        .collect()
}

/// The host's (this test process's) mount table.
pub fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// Mount points of every cgroup hierarchy mounted on the host (v1 controllers and cgroup2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = parse_mountinfo(&mountinfo())
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| PathBuf::from(m.mount_point))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The v1 mount point holding `controller` (e.g. `memory`, `cpu`), if any.
pub fn cgroup_v1_mount(controller: &str) -> Option<PathBuf> {
    parse_mountinfo(&mountinfo())
        .into_iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
        .map(|m| PathBuf::from(m.mount_point))
}

/// Host directory of cgroup `path` (a cgroupsPath) in `controller`'s v1 hierarchy.
pub fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let m = cgroup_v1_mount(controller)
        .unwrap_or_else(|| PathBuf::from(format!("/sys/fs/cgroup/{controller}")));
    m.join(path.trim_start_matches('/'))
}

/// The directories a cgroupsPath would have in every mounted hierarchy.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return vec![];
    }
    cgroup_mounts().into_iter().map(|m| m.join(rel)).collect()
}

/// Read a file of the container's cgroup on the host, trimmed.
pub fn read_cgroup(controller: &str, path: &str, file: &str) -> String {
    let p = cgroup_dir(controller, path).join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {p:?}: {e}"))
        .trim()
        .to_string()
}

/// What is left of a container run: entries under --root, cgroup dirs, host mounts
/// mentioning the bundle. Empty when clean.
pub fn leftovers(rt: &Runtime, b: &Bundle) -> Vec<String> {
    let mut left = vec![];
    if let Ok(rd) = std::fs::read_dir(rt.root()) {
        for e in rd.flatten() {
            // hull's runtime-wide cache of compiled seccomp filters is not container state:
            // like the --root directory itself, it outlives every container.
            if !rt.is_runc() && e.file_name() == ".seccomp-cache" {
                continue;
            }
            left.push(format!("state left under --root: {}", e.path().display()));
        }
    }
    for d in cgroup_dirs(&b.cgroups_path()) {
        if d.exists() {
            left.push(format!("cgroup dir left: {}", d.display()));
        }
    }
    let bp = b.path().to_string_lossy().into_owned();
    for m in parse_mountinfo(&mountinfo()) {
        if m.mount_point.starts_with(&bp) || m.source.starts_with(&bp) {
            left.push(format!("host mount left: {} ({})", m.mount_point, m.fstype));
        }
    }
    left
}

/// Assert nothing is left of `b`'s containers (polls up to 5 s for asynchronous teardown).
#[track_caller]
pub fn assert_no_leftovers(rt: &Runtime, b: &Bundle) {
    let mut left = vec![];
    wait_until(Duration::from_secs(5), || {
        left = leftovers(rt, b);
        left.is_empty()
    });
    assert!(left.is_empty(), "leftovers:\n{}", left.join("\n"));
}
