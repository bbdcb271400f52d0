//! Which cgroup hierarchies are mounted where (from /proc/self/mountinfo), and where a given
//! cgroup path lives in each of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Key of the cgroup2 hierarchy in [`Layout::dirs`] and in the saved state.
pub const UNIFIED_KEY: &str = "unified";

/// v1 controller names the kernel knows (anything else in the super options is a mount option).
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// How cgroups are set up on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only v1 hierarchies.
    V1,
    /// v1 hierarchies plus a cgroup2 mount (systemd's "hybrid" layout).
    Hybrid,
    /// Only cgroup2 ("unified").
    V2,
}

/// One mounted v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// The controllers bound to it, in mount-option order, e.g. `["cpu", "cpuacct"]` or
    /// `["name=systemd"]`; joined with ',' this is the hierarchy's key.
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
}

impl V1Hierarchy {
    pub fn key(&self) -> String {
        self.controllers.join(",")
    }
}

/// The mounted hierarchies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub v1: Vec<V1Hierarchy>,
    /// Mount point of cgroup2, if mounted.
    pub unified: Option<PathBuf>,
}

impl Layout {
    /// The layout seen by this process.
    pub fn current() -> Result<Self, CgroupError> {
        let file = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(file).map_err(|source| CgroupError::Io {
            path: "/".into(),
            controller: "*".into(),
            op: "read",
            file: file.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses mountinfo text (proc(5)). The first visible mount of each hierarchy wins; a
    /// mount that a later mount covers (at its mount point or above, e.g. a tmpfs over
    /// /sys/fs/cgroup/unified) is not visible and is skipped.
    pub fn parse(mountinfo: &str) -> Self {
        let mut layout = Layout::default();
        let entries: Vec<(PathBuf, &str, &str)> = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mountpoint = left.split(' ').nth(4)?;
                let mut right = right.split(' ');
                let (fstype, _source, opts) = (right.next()?, right.next()?, right.next()?);
                Some((PathBuf::from(unescape(mountpoint)), fstype, opts))
            })
            .collect();
        for (i, (mountpoint, fstype, opts)) in entries.iter().enumerate() {
            let (mountpoint, fstype, opts) = (mountpoint.clone(), *fstype, *opts);
            if entries[i + 1..]
                .iter()
                .any(|(later, _, _)| mountpoint.starts_with(later))
            {
                continue;
            }
            match fstype {
                "cgroup2" if layout.unified.is_none() => layout.unified = Some(mountpoint),
                "cgroup" => {
                    let controllers: Vec<String> = opts
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    if controllers.is_empty() {
                        continue;
                    }
                    let h = V1Hierarchy {
                        controllers,
                        mountpoint,
                    };
                    if !layout.v1.iter().any(|o| o.key() == h.key()) {
                        layout.v1.push(h);
                    }
                }
                _ => {}
            }
        }
        layout
    }

    pub fn mode(&self) -> Result<Mode, CgroupError> {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (false, false) => Ok(Mode::V1),
            (false, true) => Ok(Mode::Hybrid),
            (true, true) => Ok(Mode::V2),
            (true, false) => Err(CgroupError::NoCgroupFs),
        }
    }

    /// Every v1 controller mounted.
    pub fn v1_controllers(&self) -> BTreeSet<String> {
        self.v1
            .iter()
            .flat_map(|h| h.controllers.iter().cloned())
            .filter(|c| !c.starts_with("name="))
            .collect()
    }

    /// Controllers the cgroup2 root offers (`cgroup.controllers`); empty when not mounted.
    pub fn unified_controllers(&self) -> BTreeSet<String> {
        self.unified
            .as_ref()
            .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The directory of `path` (absolute, normalized) in every hierarchy, by hierarchy key.
    pub fn dirs(&self, path: &str) -> BTreeMap<String, PathBuf> {
        let rel = path.trim_start_matches('/');
        let mut dirs: BTreeMap<String, PathBuf> = self
            .v1
            .iter()
            .map(|h| (h.key(), h.mountpoint.join(rel)))
            .collect();
        if let Some(u) = &self.unified {
            dirs.insert(UNIFIED_KEY.to_string(), u.join(rel));
        }
        dirs
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
