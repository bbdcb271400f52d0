//! `Stats`: hull's cgroup statistics in containerd's cgroup v1 metrics message
//! (`io.containerd.cgroups.v1.Metrics`, what `ctr task metrics` decodes).

use containerd_shim::protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryStat, Metrics,
    PidsStat, Throttle,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use hull_runtime::cgroups::Stats;

use crate::error::{Result, ShimError};

pub const METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// One memory counter group (the runtime's entry types are not named outside it).
macro_rules! entry {
    ($e:expr) => {
        MessageField::some(MemoryEntry {
            // -1 ("no limit") becomes the largest value, as in cgroup v1 files.
            limit: u64::try_from($e.limit).unwrap_or(u64::MAX),
            usage: $e.usage,
            max: $e.max,
            failcnt: $e.failcnt,
            ..Default::default()
        })
    };
}

macro_rules! blkio {
    ($entries:expr) => {
        $entries
            .iter()
            .map(|e| BlkIOEntry {
                op: e.op.clone(),
                major: e.major,
                minor: e.minor,
                value: e.value,
                ..Default::default()
            })
            .collect()
    };
}

/// hull's statistics as containerd's v1 metrics.
pub fn to_metrics(s: &Stats) -> Metrics {
    let raw = |k: &str| s.memory.raw.get(k).copied().unwrap_or(0);
    Metrics {
        hugetlb: s
            .hugetlb
            .iter()
            .map(|(size, h)| HugetlbStat {
                usage: h.usage,
                max: h.max,
                failcnt: h.failcnt,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        pids: MessageField::some(PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage: MessageField::some(CPUUsage {
                total: s.cpu.usage.total,
                kernel: s.cpu.usage.kernel,
                user: s.cpu.usage.user,
                per_cpu: s.cpu.usage.per_cpu.clone(),
                ..Default::default()
            }),
            throttling: MessageField::some(Throttle {
                periods: s.cpu.throttling.periods,
                throttled_periods: s.cpu.throttling.throttled_periods,
                throttled_time: s.cpu.throttling.throttled_time,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            cache: s.memory.cache,
            rss: raw("rss"),
            rss_huge: raw("rss_huge"),
            mapped_file: raw("mapped_file"),
            dirty: raw("dirty"),
            writeback: raw("writeback"),
            pg_pg_in: raw("pgpgin"),
            pg_pg_out: raw("pgpgout"),
            pg_fault: raw("pgfault"),
            pg_maj_fault: raw("pgmajfault"),
            inactive_anon: raw("inactive_anon"),
            active_anon: raw("active_anon"),
            inactive_file: raw("inactive_file"),
            active_file: raw("active_file"),
            unevictable: raw("unevictable"),
            hierarchical_memory_limit: raw("hierarchical_memory_limit"),
            hierarchical_swap_limit: raw("hierarchical_memsw_limit"),
            total_cache: raw("total_cache"),
            total_rss: raw("total_rss"),
            total_mapped_file: raw("total_mapped_file"),
            total_inactive_file: raw("total_inactive_file"),
            total_active_file: raw("total_active_file"),
            total_inactive_anon: raw("total_inactive_anon"),
            total_active_anon: raw("total_active_anon"),
            usage: entry!(s.memory.usage),
            swap: entry!(s.memory.swap),
            kernel: entry!(s.memory.kernel),
            ..Default::default()
        }),
        blkio: MessageField::some(BlkIOStat {
            io_service_bytes_recursive: blkio!(s.blkio.io_service_bytes_recursive),
            io_serviced_recursive: blkio!(s.blkio.io_serviced_recursive),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The metrics packed the way containerd's `typeurl` expects.
pub fn to_any(s: &Stats) -> Result<Any> {
    let value = to_metrics(s)
        .write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encoding metrics: {e}")))?;
    Ok(Any {
        type_url: METRICS_TYPE_URL.into(),
        value,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_pids_cpu_and_memory() {
        let mut s = Stats::default();
        s.pids.current = 3;
        s.cpu.usage.total = 42;
        s.memory.usage.usage = 4096;
        s.memory.usage.limit = -1;
        s.memory.raw.insert("rss".into(), 100);
        let any = to_any(&s).unwrap();
        assert_eq!(any.type_url, METRICS_TYPE_URL);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.cpu.usage.total, 42);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, u64::MAX);
        assert_eq!(m.memory.rss, 100);
    }
}
