//! A serializable snapshot of the cgroup's statistics, shaped like the `data` of runc's
//! `events --stats` (cpu, memory, pids, blkio, hugetlb), taken with `cgroups-rs`.

use std::collections::BTreeMap;

use serde::Serialize;

/// CPU time consumed, in nanoseconds (cpuacct), and CFS throttling.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CpuUsage {
    pub total: u64,
    #[serde(rename = "percpu", skip_serializing_if = "Vec::is_empty")]
    pub per_cpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// One memory counter set (usage, peak, limit, failures).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MemoryEntry {
    pub limit: i64,
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Memory {
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    /// Selected `memory.stat` counters.
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Pids {
    pub current: u64,
    /// 0 = no limit.
    pub limit: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Blkio {
    #[serde(rename = "ioServiceBytesRecursive")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Hugetlb {
    pub usage: u64,
    pub max: u64,
    pub failcnt: u64,
}

/// Statistics of a container's cgroup (missing controllers read as zeros).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

impl From<cgroups_rs::CgroupStats> for Stats {
    fn from(s: cgroups_rs::CgroupStats) -> Self {
        let mut out = Stats::default();
        if let Some(a) = s.cpu.cpu_acct {
            out.cpu.usage = CpuUsage {
                total: a.total_usage,
                per_cpu: a.usage_percpu,
                kernel: a.system_usage,
                user: a.user_usage,
            };
        }
        if let Some(t) = s.cpu.cpu_throttling {
            out.cpu.throttling = Throttling {
                periods: t.periods,
                throttled_periods: t.throttled_periods,
                throttled_time: t.throttled_time,
            };
        }
        let entry = |m: Option<cgroups_rs::stats::MemoryStats>| {
            m.map(|m| MemoryEntry {
                limit: m.limit,
                usage: m.usage,
                max: m.max_usage,
                failcnt: m.fail_cnt,
            })
            .unwrap_or_default()
        };
        let m = s.memory;
        out.memory.cache = m.cache;
        out.memory.raw = [
            ("cache", m.cache),
            ("rss", m.rss),
            ("rss_huge", m.rss_huge),
            ("shmem", m.shmem),
            ("mapped_file", m.mapped_file),
            ("dirty", m.dirty),
            ("writeback", m.writeback),
            ("swap", m.swap),
            ("pgfault", m.pgfault),
            ("pgmajfault", m.pgmajfault),
            ("active_anon", m.active_anon),
            ("inactive_anon", m.inactive_anon),
            ("active_file", m.active_file),
            ("inactive_file", m.inactive_file),
            ("unevictable", m.unevictable),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        out.memory.usage = entry(m.memory);
        out.memory.swap = entry(m.memory_swap);
        out.memory.kernel = entry(m.kernel_memory);
        out.pids = Pids {
            current: s.pids.current,
            limit: u64::try_from(s.pids.limit).unwrap_or(0),
        };
        let blk = |v: Vec<cgroups_rs::stats::BlkioStat>| {
            v.into_iter()
                .map(|b| BlkioEntry {
                    major: b.major,
                    minor: b.minor,
                    op: b.op,
                    value: b.value,
                })
                .collect()
        };
        out.blkio = Blkio {
            io_service_bytes_recursive: blk(s.blkio.io_service_bytes_recursive),
            io_serviced_recursive: blk(s.blkio.io_serviced_recursive),
        };
        out.hugetlb = s
            .hugetlb
            .into_iter()
            .map(|(size, h)| {
                (
                    size,
                    Hugetlb {
                        usage: h.usage,
                        max: h.max_usage,
                        failcnt: h.fail_cnt,
                    },
                )
            })
            .collect();
        out
    }
}
