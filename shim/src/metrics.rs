//! `Stats`: the container's cgroup statistics as containerd's metrics messages, read from
//! the cgroup files the way containerd's runc shim reads them (its `cgroups` library):
//! `io.containerd.cgroups.v1.Metrics` when the host has v1 hierarchies (v1 or hybrid), and
//! `io.containerd.cgroups.v2.Metrics` on a cgroup2-only host. `ctr task metrics` decodes
//! both. A file the kernel does not provide leaves its fields at zero (a missing
//! `memory.memsw.*` without swap accounting, `memory.kmem.*`, a controller not mounted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use hull_runtime::cgroups::{ContainerCgroup, Mode};

use crate::error::{Result, ShimError};

pub const METRICS_V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
pub const METRICS_V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The cgroup2 directory's key in [`ContainerCgroup::dirs`].
const UNIFIED: &str = "unified";

/// USER_HZ: the unit of `cpuacct.stat`.
const CLOCK_TICKS: u64 = 100;

/// Which metrics message the host's cgroup layout calls for.
pub fn v2_metrics(mode: Mode) -> bool {
    mode == Mode::V2
}

/// The container's metrics packed the way containerd's `typeurl` expects.
pub fn collect(cg: &ContainerCgroup, mode: Mode) -> Result<Any> {
    let (type_url, value) = if v2_metrics(mode) {
        let dir = cg.dirs.get(UNIFIED).ok_or_else(|| {
            ShimError::Precondition(format!("cgroup {} has no cgroup2 directory", cg.path))
        })?;
        (METRICS_V2_TYPE_URL, v2_from(dir).write_to_bytes())
    } else {
        (METRICS_V1_TYPE_URL, v1_from(&cg.dirs).write_to_bytes())
    };
    let value = value.map_err(|e| ShimError::InvalidArgument(format!("encoding metrics: {e}")))?;
    Ok(Any {
        type_url: type_url.into(),
        value,
        ..Default::default()
    })
}

// ---- reading cgroup files ---------------------------------------------------------------

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// A file holding one number; "max" (no limit) reads as `max`.
fn read_u64(dir: &Path, file: &str, max: u64) -> Option<u64> {
    let text = read(dir, file)?;
    let t = text.trim();
    if t == "max" {
        return Some(max);
    }
    t.parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`).
fn read_flat(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read(dir, file)
        .map(|text| {
            text.lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    let k = it.next()?;
                    let v = it.next()?.parse().ok()?;
                    Some((k.to_string(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The directory of the v1 hierarchy holding `controller`.
fn v1_dir<'a>(dirs: &'a BTreeMap<String, PathBuf>, controller: &str) -> Option<&'a Path> {
    dirs.iter()
        .find(|(k, _)| k.as_str() != UNIFIED && k.split(',').any(|c| c == controller))
        .map(|(_, d)| d.as_path())
}

/// Hugetlb page sizes the cgroup has files for (`hugetlb.2MB.<suffix>`), sorted.
fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
                    (!size.contains('.')).then(|| size.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    sizes.sort();
    sizes
}

// ---- cgroup v1 ----------------------------------------------------------------------------

/// containerd's v1 metrics from the container's v1 directories.
pub fn v1_from(dirs: &BTreeMap<String, PathBuf>) -> v1::Metrics {
    let mut m = v1::Metrics::default();
    if let Some(d) = v1_dir(dirs, "pids") {
        m.pids = MessageField::some(v1::PidsStat {
            current: read_u64(d, "pids.current", 0).unwrap_or(0),
            // "max" (no limit) is 0, as containerd reports it.
            limit: read_u64(d, "pids.max", 0).unwrap_or(0),
            ..Default::default()
        });
    }
    let mut cpu = v1::CPUStat::default();
    let mut have_cpu = false;
    if let Some(d) = v1_dir(dirs, "cpuacct") {
        have_cpu = true;
        let stat = read_flat(d, "cpuacct.stat");
        let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / CLOCK_TICKS);
        cpu.usage = MessageField::some(v1::CPUUsage {
            total: read_u64(d, "cpuacct.usage", 0).unwrap_or(0),
            kernel: ns(stat.get("system").copied().unwrap_or(0)),
            user: ns(stat.get("user").copied().unwrap_or(0)),
            per_cpu: read(d, "cpuacct.usage_percpu")
                .map(|t| {
                    t.split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        });
    }
    if let Some(d) = v1_dir(dirs, "cpu") {
        have_cpu = true;
        let stat = read_flat(d, "cpu.stat");
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        cpu.throttling = MessageField::some(v1::Throttle {
            periods: get("nr_periods"),
            throttled_periods: get("nr_throttled"),
            throttled_time: get("throttled_time"),
            ..Default::default()
        });
    }
    if have_cpu {
        m.cpu = MessageField::some(cpu);
    }
    if let Some(d) = v1_dir(dirs, "memory") {
        m.memory = MessageField::some(v1_memory(d));
        let oom = read_flat(d, "memory.oom_control");
        let get = |k: &str| oom.get(k).copied().unwrap_or(0);
        m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
            oom_kill_disable: get("oom_kill_disable"),
            under_oom: get("under_oom"),
            oom_kill: get("oom_kill"),
            ..Default::default()
        });
    }
    if let Some(d) = v1_dir(dirs, "blkio") {
        m.blkio = MessageField::some(v1_blkio(d));
    }
    if let Some(d) = v1_dir(dirs, "hugetlb") {
        m.hugetlb = hugetlb_sizes(d, ".usage_in_bytes")
            .into_iter()
            .map(|size| {
                let f = |what: &str| {
                    read_u64(d, &format!("hugetlb.{size}.{what}"), u64::MAX).unwrap_or(0)
                };
                v1::HugetlbStat {
                    usage: f("usage_in_bytes"),
                    max: f("max_usage_in_bytes"),
                    failcnt: f("failcnt"),
                    pagesize: size,
                    ..Default::default()
                }
            })
            .collect();
    }
    m
}

/// `memory.stat` and the usage/limit files of the memory controller (`memory.*`,
/// `memory.memsw.*`, `memory.kmem.*`, `memory.kmem.tcp.*`).
fn v1_memory(d: &Path) -> v1::MemoryStat {
    let raw = read_flat(d, "memory.stat");
    let r = |k: &str| raw.get(k).copied().unwrap_or(0);
    let entry = |module: &str| -> MessageField<v1::MemoryEntry> {
        let f = |name: &str| read_u64(d, &format!("memory.{module}{name}"), u64::MAX);
        // Without the module's files (no swap accounting, no kmem), the entry stays empty.
        let Some(usage) = f("usage_in_bytes") else {
            return MessageField::some(v1::MemoryEntry::default());
        };
        MessageField::some(v1::MemoryEntry {
            usage,
            max: f("max_usage_in_bytes").unwrap_or(0),
            failcnt: f("failcnt").unwrap_or(0),
            limit: f("limit_in_bytes").unwrap_or(0),
            ..Default::default()
        })
    };
    v1::MemoryStat {
        cache: r("cache"),
        rss: r("rss"),
        rss_huge: r("rss_huge"),
        mapped_file: r("mapped_file"),
        dirty: r("dirty"),
        writeback: r("writeback"),
        pg_pg_in: r("pgpgin"),
        pg_pg_out: r("pgpgout"),
        pg_fault: r("pgfault"),
        pg_maj_fault: r("pgmajfault"),
        inactive_anon: r("inactive_anon"),
        active_anon: r("active_anon"),
        inactive_file: r("inactive_file"),
        active_file: r("active_file"),
        unevictable: r("unevictable"),
        hierarchical_memory_limit: r("hierarchical_memory_limit"),
        hierarchical_swap_limit: r("hierarchical_memsw_limit"),
        total_cache: r("total_cache"),
        total_rss: r("total_rss"),
        total_rss_huge: r("total_rss_huge"),
        total_mapped_file: r("total_mapped_file"),
        total_dirty: r("total_dirty"),
        total_writeback: r("total_writeback"),
        total_pg_pg_in: r("total_pgpgin"),
        total_pg_pg_out: r("total_pgpgout"),
        total_pg_fault: r("total_pgfault"),
        total_pg_maj_fault: r("total_pgmajfault"),
        total_inactive_anon: r("total_inactive_anon"),
        total_active_anon: r("total_active_anon"),
        total_inactive_file: r("total_inactive_file"),
        total_active_file: r("total_active_file"),
        total_unevictable: r("total_unevictable"),
        usage: entry(""),
        swap: entry("memsw."),
        kernel: entry("kmem."),
        kernel_tcp: entry("kmem.tcp."),
        ..Default::default()
    }
}

/// Device names by (major, minor), from /proc/partitions.
fn partitions() -> BTreeMap<(u64, u64), String> {
    let text = std::fs::read_to_string("/proc/partitions").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min, name) = (f.first()?, f.get(1)?, f.get(3)?);
            Some((
                (maj.parse().ok()?, min.parse().ok()?),
                format!("/dev/{name}"),
            ))
        })
        .collect()
}

/// One blkio file: `MAJ:MIN Op value` lines (or `MAJ:MIN value`); the `Total` line is
/// skipped.
fn blkio_entries(
    d: &Path,
    name: &str,
    devices: &BTreeMap<(u64, u64), String>,
) -> Vec<v1::BlkIOEntry> {
    let Some(text) = read(d, &format!("blkio.{name}")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, op, value) = match f.as_slice() {
                [dev, op, value] => (*dev, *op, *value),
                [dev, value] => (*dev, "", *value),
                _ => return None,
            };
            let (maj, min) = dev.split_once(':')?;
            let (major, minor) = (maj.parse().ok()?, min.parse().ok()?);
            Some(v1::BlkIOEntry {
                op: op.to_string(),
                device: devices.get(&(major, minor)).cloned().unwrap_or_default(),
                major,
                minor,
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

/// The CFQ/BFQ `*_recursive` files when the scheduler provides them, else the throttle
/// counters (containerd's order).
fn v1_blkio(d: &Path) -> v1::BlkIOStat {
    let devices = partitions();
    let e = |name: &str| blkio_entries(d, name, &devices);
    let mut s = v1::BlkIOStat::default();
    if d.join("blkio.io_serviced_recursive").exists() {
        s.sectors_recursive = e("sectors_recursive");
        s.io_service_bytes_recursive = e("io_service_bytes_recursive");
        s.io_serviced_recursive = e("io_serviced_recursive");
        s.io_queued_recursive = e("io_queued_recursive");
        s.io_service_time_recursive = e("io_service_time_recursive");
        s.io_wait_time_recursive = e("io_wait_time_recursive");
        s.io_merged_recursive = e("io_merged_recursive");
        s.io_time_recursive = e("time_recursive");
    }
    let any = !(s.sectors_recursive.is_empty()
        && s.io_service_bytes_recursive.is_empty()
        && s.io_serviced_recursive.is_empty()
        && s.io_queued_recursive.is_empty()
        && s.io_service_time_recursive.is_empty()
        && s.io_wait_time_recursive.is_empty()
        && s.io_merged_recursive.is_empty()
        && s.io_time_recursive.is_empty());
    if !any {
        s.io_serviced_recursive = e("throttle.io_serviced");
        s.io_service_bytes_recursive = e("throttle.io_service_bytes");
    }
    s
}

// ---- cgroup v2 ----------------------------------------------------------------------------

/// containerd's v2 metrics from the container's cgroup2 directory.
pub fn v2_from(d: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::default();
    if d.join("pids.current").exists() {
        m.pids = MessageField::some(v2::PidsStat {
            current: read_u64(d, "pids.current", 0).unwrap_or(0),
            limit: read_u64(d, "pids.max", 0).unwrap_or(0),
            ..Default::default()
        });
    }
    let cpu = read_flat(d, "cpu.stat");
    if !cpu.is_empty() {
        let g = |k: &str| cpu.get(k).copied().unwrap_or(0);
        m.cpu = MessageField::some(v2::CPUStat {
            usage_usec: g("usage_usec"),
            user_usec: g("user_usec"),
            system_usec: g("system_usec"),
            nr_periods: g("nr_periods"),
            nr_throttled: g("nr_throttled"),
            throttled_usec: g("throttled_usec"),
            nr_bursts: g("nr_bursts"),
            burst_usec: g("burst_usec"),
            ..Default::default()
        });
    }
    let mem = read_flat(d, "memory.stat");
    if d.join("memory.current").exists() {
        let g = |k: &str| mem.get(k).copied().unwrap_or(0);
        let f = |file: &str| read_u64(d, file, u64::MAX).unwrap_or(0);
        m.memory = MessageField::some(v2::MemoryStat {
            anon: g("anon"),
            file: g("file"),
            kernel_stack: g("kernel_stack"),
            slab: g("slab"),
            sock: g("sock"),
            shmem: g("shmem"),
            file_mapped: g("file_mapped"),
            file_dirty: g("file_dirty"),
            file_writeback: g("file_writeback"),
            anon_thp: g("anon_thp"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            slab_reclaimable: g("slab_reclaimable"),
            slab_unreclaimable: g("slab_unreclaimable"),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            workingset_refault: g("workingset_refault"),
            workingset_activate: g("workingset_activate"),
            workingset_nodereclaim: g("workingset_nodereclaim"),
            pgrefill: g("pgrefill"),
            pgscan: g("pgscan"),
            pgsteal: g("pgsteal"),
            pgactivate: g("pgactivate"),
            pgdeactivate: g("pgdeactivate"),
            pglazyfree: g("pglazyfree"),
            pglazyfreed: g("pglazyfreed"),
            thp_fault_alloc: g("thp_fault_alloc"),
            thp_collapse_alloc: g("thp_collapse_alloc"),
            usage: f("memory.current"),
            usage_limit: f("memory.max"),
            swap_usage: f("memory.swap.current"),
            swap_limit: f("memory.swap.max"),
            max_usage: f("memory.peak"),
            swap_max_usage: f("memory.swap.peak"),
            ..Default::default()
        });
        let ev = read_flat(d, "memory.events");
        let g = |k: &str| ev.get(k).copied().unwrap_or(0);
        m.memory_events = MessageField::some(v2::MemoryEvents {
            low: g("low"),
            high: g("high"),
            max: g("max"),
            oom: g("oom"),
            oom_kill: g("oom_kill"),
            oom_group_kill: g("oom_group_kill"),
            ..Default::default()
        });
    }
    if let Some(text) = read(d, "io.stat") {
        let usage = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (maj, min) = f.next()?.split_once(':')?;
                let mut e = v2::IOEntry {
                    major: maj.parse().ok()?,
                    minor: min.parse().ok()?,
                    ..Default::default()
                };
                for kv in f {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let v = v.parse().unwrap_or(0);
                    match k {
                        "rbytes" => e.rbytes = v,
                        "wbytes" => e.wbytes = v,
                        "rios" => e.rios = v,
                        "wios" => e.wios = v,
                        _ => {}
                    }
                }
                Some(e)
            })
            .collect();
        m.io = MessageField::some(v2::IOStat {
            usage,
            ..Default::default()
        });
    }
    m.hugetlb = hugetlb_sizes(d, ".current")
        .into_iter()
        .map(|size| {
            let events = read_flat(d, &format!("hugetlb.{size}.events"));
            v2::HugeTlbStat {
                current: read_u64(d, &format!("hugetlb.{size}.current"), u64::MAX).unwrap_or(0),
                max: read_u64(d, &format!("hugetlb.{size}.max"), u64::MAX).unwrap_or(0),
                failcnt: events.get("max").copied().unwrap_or(0),
                pagesize: size,
                ..Default::default()
            }
        })
        .collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir()
                .join(format!("hull-shim-metrics-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    /// A v1 layout as on a Debian 12 host: cpu,cpuacct together, memory with memsw/kmem.
    #[test]
    fn v1_metrics_carry_what_the_runc_shim_sends() {
        let root = TempDir::new("v1");
        let (cpu, mem, pids) = (
            root.path().join("cpu"),
            root.path().join("mem"),
            root.path().join("pids"),
        );
        for d in [&cpu, &mem, &pids] {
            std::fs::create_dir(d).unwrap();
        }
        write(
            &cpu,
            &[
                ("cpuacct.usage", "300\n"),
                ("cpuacct.usage_percpu", "100 200 \n"),
                ("cpuacct.stat", "user 23\nsystem 2\n"),
                (
                    "cpu.stat",
                    "nr_periods 5\nnr_throttled 1\nthrottled_time 77\n",
                ),
            ],
        );
        write(
            &mem,
            &[
                (
                    "memory.stat",
                    "cache 4096\nrss 8192\npgpgin 96\npgpgout 66\npgfault 218\n\
                     hierarchical_memory_limit 67108864\n\
                     hierarchical_memsw_limit 9223372036854771712\n\
                     total_cache 4096\ntotal_rss 8192\ntotal_pgpgin 96\ntotal_pgpgout 66\n\
                     total_pgfault 218\ntotal_active_anon 4096\ntotal_inactive_file 4096\n",
                ),
                ("memory.usage_in_bytes", "12288\n"),
                ("memory.max_usage_in_bytes", "20000\n"),
                ("memory.failcnt", "0\n"),
                ("memory.limit_in_bytes", "67108864\n"),
                ("memory.memsw.usage_in_bytes", "12288\n"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                ("memory.kmem.tcp.usage_in_bytes", "0\n"),
                ("memory.kmem.tcp.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        write(&pids, &[("pids.current", "3\n"), ("pids.max", "max\n")]);
        let dirs: BTreeMap<String, PathBuf> = [
            ("cpu,cpuacct".to_string(), cpu),
            ("memory".to_string(), mem),
            ("pids".to_string(), pids),
            (UNIFIED.to_string(), root.path().join("unified")),
        ]
        .into_iter()
        .collect();
        let m = v1_from(&dirs);
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 0);
        assert_eq!(m.cpu.usage.total, 300);
        assert_eq!(m.cpu.usage.per_cpu, vec![100, 200]);
        assert_eq!(m.cpu.usage.user, 230_000_000);
        assert_eq!(m.cpu.usage.kernel, 20_000_000);
        assert_eq!(m.cpu.throttling.throttled_time, 77);
        let mem = &m.memory;
        assert_eq!(
            (mem.cache, mem.rss, mem.pg_pg_in, mem.pg_pg_out),
            (4096, 8192, 96, 66)
        );
        assert_eq!(mem.hierarchical_memory_limit, 67108864);
        assert_eq!(mem.hierarchical_swap_limit, 9223372036854771712);
        assert_eq!(
            (mem.total_cache, mem.total_rss, mem.total_pg_fault),
            (4096, 8192, 218)
        );
        assert_eq!(mem.total_inactive_file, 4096);
        assert_eq!(
            (mem.usage.usage, mem.usage.max, mem.usage.limit),
            (12288, 20000, 67108864)
        );
        assert_eq!(mem.swap.limit, 9223372036854771712);
        assert_eq!(mem.kernel_tcp.limit, 9223372036854771712);
        // No memory.kmem.* files: an empty entry, not an error.
        assert_eq!(mem.kernel.limit, 0);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        let any = collect(
            &ContainerCgroup {
                path: "/x".into(),
                dirs,
                process_leaf: None,
            },
            Mode::Hybrid,
        )
        .unwrap();
        assert_eq!(any.type_url, METRICS_V1_TYPE_URL);
        let back = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.cpu.usage.per_cpu, vec![100, 200]);
    }

    /// On a cgroup2-only host the v2 message is sent, from the unified directory.
    #[test]
    fn v2_host_gets_v2_metrics() {
        let root = TempDir::new("v2");
        let d = root.path();
        write(
            d,
            &[
                ("pids.current", "2\n"),
                ("pids.max", "50\n"),
                (
                    "cpu.stat",
                    "usage_usec 1000\nuser_usec 700\nsystem_usec 300\nnr_periods 0\n",
                ),
                ("memory.current", "65536\n"),
                ("memory.max", "max\n"),
                ("memory.swap.current", "0\n"),
                ("memory.swap.max", "max\n"),
                ("memory.stat", "anon 4096\nfile 8192\npgfault 12\n"),
                ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
                (
                    "io.stat",
                    "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
                ),
                ("hugetlb.2MB.current", "0\n"),
                ("hugetlb.2MB.max", "max\n"),
                ("hugetlb.2MB.events", "max 0\n"),
            ],
        );
        let cg = ContainerCgroup {
            path: "/x".into(),
            dirs: [(UNIFIED.to_string(), d.to_path_buf())]
                .into_iter()
                .collect(),
            process_leaf: None,
        };
        let any = collect(&cg, Mode::V2).unwrap();
        assert_eq!(any.type_url, METRICS_V2_TYPE_URL);
        let m = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (2, 50));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1000, 700, 300)
        );
        assert_eq!(m.memory.usage, 65536);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(
            (m.memory.anon, m.memory.file, m.memory.pgfault),
            (4096, 8192, 12)
        );
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(
            (
                m.io.usage[0].major,
                m.io.usage[0].rbytes,
                m.io.usage[0].wios
            ),
            (8, 10, 2)
        );
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(m.hugetlb[0].pagesize, "2MB");
        assert_eq!(m.hugetlb[0].max, u64::MAX);
        // A hybrid host (v1 memory) keeps the v1 message.
        assert!(!v2_metrics(Mode::Hybrid));
        assert!(!v2_metrics(Mode::V1));
    }
}
