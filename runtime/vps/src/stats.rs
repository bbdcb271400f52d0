//! Resource accounting in the manner of OpenVZ's beancounters (`/proc/user_beancounters`):
//! for each resource what the partition holds, the most it held, its limit, and how often
//! the limit refused it — read from the partition's cgroup files, v1 or v2, whichever
//! hierarchy carries the controller on this host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One row. `None` where the host's cgroup version does not keep that figure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub resource: &'static str,
    pub held: Option<u64>,
    pub max_held: Option<u64>,
    /// None = unlimited.
    pub limit: Option<u64>,
    pub fail_count: Option<u64>,
    /// `bytes`, `count` or `usec` (CPU time).
    pub unit: &'static str,
}

/// The directory of controller `ctrl` among a cgroup's per-hierarchy directories (keys as
/// `hull_runtime::cgroups::ContainerCgroup::dirs`: `memory`, `cpu,cpuacct`, `unified`),
/// and whether it is cgroup v2.
fn dir_for<'a>(dirs: &'a BTreeMap<String, PathBuf>, ctrl: &str) -> Option<(&'a Path, bool)> {
    if let Some((_, d)) = dirs
        .iter()
        .find(|(k, _)| k.as_str() != "unified" && k.split(',').any(|c| c == ctrl))
    {
        return Some((d.as_path(), false));
    }
    let unified = dirs.get("unified")?;
    let enabled = std::fs::read_to_string(unified.join("cgroup.controllers")).ok()?;
    enabled
        .split_whitespace()
        .any(|c| c == ctrl)
        .then_some((unified.as_path(), true))
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse().ok()
}

/// A limit file: "max" or a v1 "unlimited" (a huge page-rounded number) read as None.
fn read_limit(dir: &Path, file: &str) -> Option<u64> {
    read_u64(dir, file).filter(|&v| v < (1 << 62))
}

/// A `key value` line of a flat-keyed file (`memory.events`, `pids.events`, `cpu.stat`).
fn read_key(dir: &Path, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The counters of the cgroup whose directories are `dirs`.
pub fn counters(dirs: &BTreeMap<String, PathBuf>) -> Vec<Counter> {
    let mut out = Vec::new();
    if let Some((d, v2)) = dir_for(dirs, "memory") {
        out.push(if v2 {
            Counter {
                resource: "memory",
                held: read_u64(d, "memory.current"),
                max_held: read_u64(d, "memory.peak"),
                limit: read_limit(d, "memory.max"),
                fail_count: read_key(d, "memory.events", "max"),
                unit: "bytes",
            }
        } else {
            Counter {
                resource: "memory",
                held: read_u64(d, "memory.usage_in_bytes"),
                max_held: read_u64(d, "memory.max_usage_in_bytes"),
                limit: read_limit(d, "memory.limit_in_bytes"),
                fail_count: read_u64(d, "memory.failcnt"),
                unit: "bytes",
            }
        });
        let swap = if v2 {
            Counter {
                resource: "swap",
                held: read_u64(d, "memory.swap.current"),
                max_held: read_u64(d, "memory.swap.peak"),
                limit: read_limit(d, "memory.swap.max"),
                fail_count: read_key(d, "memory.swap.events", "fail"),
                unit: "bytes",
            }
        } else {
            // v1 counts memory+swap together.
            Counter {
                resource: "memory+swap",
                held: read_u64(d, "memory.memsw.usage_in_bytes"),
                max_held: read_u64(d, "memory.memsw.max_usage_in_bytes"),
                limit: read_limit(d, "memory.memsw.limit_in_bytes"),
                fail_count: read_u64(d, "memory.memsw.failcnt"),
                unit: "bytes",
            }
        };
        if swap.held.is_some() {
            out.push(swap);
        }
    }
    if let Some((d, _)) = dir_for(dirs, "pids") {
        out.push(Counter {
            resource: "pids",
            held: read_u64(d, "pids.current"),
            max_held: read_u64(d, "pids.peak"),
            limit: read_limit(d, "pids.max"),
            fail_count: read_key(d, "pids.events", "max"),
            unit: "count",
        });
    }
    if let Some((d, v2)) = dir_for(dirs, "cpu") {
        // CPU time used; the limit is the quota per period; failures are throttled periods.
        let (held, limit) = if v2 {
            let max = std::fs::read_to_string(d.join("cpu.max")).unwrap_or_default();
            let mut f = max.split_whitespace();
            let quota = f.next().and_then(|q| q.parse::<u64>().ok());
            (read_key(d, "cpu.stat", "usage_usec"), quota)
        } else {
            let usage = dir_for(dirs, "cpuacct")
                .and_then(|(a, _)| read_u64(a, "cpuacct.usage"))
                .map(|ns| ns / 1000);
            let quota = std::fs::read_to_string(d.join("cpu.cfs_quota_us"))
                .ok()
                .and_then(|q| q.trim().parse::<i64>().ok())
                .and_then(|q| u64::try_from(q).ok());
            (usage, quota)
        };
        out.push(Counter {
            resource: "cpu",
            held,
            max_held: None,
            limit,
            fail_count: read_key(d, "cpu.stat", "nr_throttled"),
            unit: "usec",
        });
    }
    out
}

/// The root disk's row from its filesystem: used and total bytes. A full disk shows no
/// failure count (ext4 does not keep one).
pub fn disk_counter(used: u64, total: u64) -> Counter {
    Counter {
        resource: "disk",
        held: Some(used),
        max_held: None,
        limit: Some(total),
        fail_count: None,
        unit: "bytes",
    }
}

/// The table `hull vps stats` prints.
pub fn render(counters: &[Counter]) -> String {
    let cell = |v: Option<u64>, unlimited: &str| match v {
        Some(v) => v.to_string(),
        None => unlimited.to_string(),
    };
    let mut s = format!(
        "{:<12} {:>16} {:>16} {:>20} {:>10}  {}\n",
        "RESOURCE", "HELD", "MAXHELD", "LIMIT", "FAILCNT", "UNIT"
    );
    for c in counters {
        s.push_str(&format!(
            "{:<12} {:>16} {:>16} {:>20} {:>10}  {}\n",
            c.resource,
            cell(c.held, "-"),
            cell(c.max_held, "-"),
            cell(c.limit, "unlimited"),
            cell(c.fail_count, "-"),
            c.unit
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for (f, v) in files {
            std::fs::write(dir.join(f), v).expect("write");
        }
    }

    #[test]
    fn v1_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let (mem, pids, cpu) = (t.path().join("m"), t.path().join("p"), t.path().join("c"));
        write(
            &mem,
            &[
                ("memory.usage_in_bytes", "1000\n"),
                ("memory.max_usage_in_bytes", "2000\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.failcnt", "3\n"),
            ],
        );
        write(
            &pids,
            &[
                ("pids.current", "7\n"),
                ("pids.max", "max\n"),
                ("pids.events", "max 2\n"),
            ],
        );
        write(
            &cpu,
            &[
                ("cpu.cfs_quota_us", "150000\n"),
                (
                    "cpu.stat",
                    "nr_periods 10\nnr_throttled 4\nthrottled_time 5\n",
                ),
                ("cpuacct.usage", "5000000\n"),
            ],
        );
        let dirs: BTreeMap<String, PathBuf> = [
            ("memory".to_string(), mem),
            ("pids".to_string(), pids),
            ("cpu,cpuacct".to_string(), cpu),
        ]
        .into();
        let c = counters(&dirs);
        let get = |r: &str| c.iter().find(|x| x.resource == r).cloned().expect(r);
        let m = get("memory");
        assert_eq!(
            (m.held, m.max_held, m.limit, m.fail_count),
            (Some(1000), Some(2000), None, Some(3))
        );
        let p = get("pids");
        assert_eq!((p.held, p.limit, p.fail_count), (Some(7), None, Some(2)));
        let cpu = get("cpu");
        assert_eq!(
            (cpu.held, cpu.limit, cpu.fail_count),
            (Some(5000), Some(150_000), Some(4))
        );
        let table = render(&c);
        assert!(
            table.contains("unlimited") && table.starts_with("RESOURCE"),
            "{table}"
        );
    }

    #[test]
    fn v2_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let u = t.path().join("u");
        write(
            &u,
            &[
                ("cgroup.controllers", "cpu memory pids\n"),
                ("memory.current", "100\n"),
                ("memory.peak", "200\n"),
                ("memory.max", "1073741824\n"),
                ("memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"),
                ("pids.current", "3\n"),
                ("pids.peak", "9\n"),
                ("pids.max", "100\n"),
                ("pids.events", "max 0\n"),
                ("cpu.max", "max 100000\n"),
                ("cpu.stat", "usage_usec 77\nnr_throttled 0\n"),
            ],
        );
        let dirs: BTreeMap<String, PathBuf> = [("unified".to_string(), u)].into();
        let c = counters(&dirs);
        let m = c.iter().find(|x| x.resource == "memory").expect("memory");
        assert_eq!(
            (m.held, m.max_held, m.limit, m.fail_count),
            (Some(100), Some(200), Some(1 << 30), Some(5))
        );
        let p = c.iter().find(|x| x.resource == "pids").expect("pids");
        assert_eq!((p.max_held, p.limit), (Some(9), Some(100)));
        let cpu = c.iter().find(|x| x.resource == "cpu").expect("cpu");
        assert_eq!((cpu.held, cpu.limit), (Some(77), None));
    }
}
