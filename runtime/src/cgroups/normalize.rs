//! runc's "zero means not set" rule for `linux.resources`.
//!
//! runc's cgroup setters skip a field whose value is 0 (and treat a few other spellings as
//! "not set"), and clients rely on it: Docker Engine sends `cpu.shares: 0` and
//! `blockIO.weight: 0` with every `docker run`, and `docker update` sends `quota: 0`,
//! `period: 0`, `reservation: 0`, `kernel: 0` for whatever it does not change. Such a field
//! must neither be written nor be checked against the kernel (a host without a blkio weight
//! file must still accept `weight: 0`). [`normalize`] turns a request into the fields that
//! are really set; the plan and the writes only ever see its result.

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxNetwork, LinuxResources, LinuxWeightDeviceBuilder,
};

/// `res` without the fields runc treats as not set:
/// - `cpu`: `shares`, `quota`, `period`, `realtimeRuntime`, `realtimePeriod` of 0; `cpus`
///   and `mems` of `""` (`idle` and `burst` are kept: runc writes them whenever present).
/// - `memory`: `limit`, `reservation`, `swap` of 0; `swappiness` of -1 (as Docker encodes
///   it, `2^64 - 1`); `disableOOMKiller: false`; `kernel` and `kernelTCP` always (ignored by
///   runc; a warning is logged only when one is non-zero).
/// - `pids`: `limit: 0` (runc 1.1: 0 leaves `pids.max` alone; -1 means no limit).
/// - `blockIO`: `weight`/`leafWeight` of 0, the same inside `weightDevice` entries (an entry
///   with neither left is dropped); throttle entries are kept (a rate of 0 removes a limit).
/// - `network`: `classID` of 0.
///
/// A section left empty becomes `None`. Device rules, hugepage limits, rdma and unified
/// keys are kept as they are. Pure: see [`warn_ignored`] for the log line.
pub fn normalize(res: &LinuxResources) -> LinuxResources {
    let mut out = res.clone();
    out.set_cpu(res.cpu().as_ref().and_then(cpu));
    out.set_memory(res.memory().as_ref().and_then(memory));
    out.set_pids(res.pids().filter(|p| p.limit() != 0));
    out.set_block_io(res.block_io().as_ref().and_then(block_io));
    out.set_network(res.network().as_ref().and_then(network));
    out
}

fn nonzero_u64(v: Option<u64>) -> Option<u64> {
    v.filter(|v| *v != 0)
}

fn nonzero_i64(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

fn cpu(c: &LinuxCpu) -> Option<LinuxCpu> {
    let mut n = LinuxCpu::default();
    n.set_shares(nonzero_u64(c.shares()));
    n.set_quota(nonzero_i64(c.quota()));
    n.set_period(nonzero_u64(c.period()));
    n.set_realtime_runtime(nonzero_i64(c.realtime_runtime()));
    n.set_realtime_period(nonzero_u64(c.realtime_period()));
    n.set_cpus(c.cpus().clone().filter(|s| !s.trim().is_empty()));
    n.set_mems(c.mems().clone().filter(|s| !s.trim().is_empty()));
    n.set_idle(c.idle());
    n.set_burst(c.burst());
    (n != LinuxCpu::default()).then_some(n)
}

/// Logs the settings `normalize` drops although they are set: a non-zero kernel memory
/// limit (`kernel: 0`, as Docker sends it, is not worth a warning).
pub(crate) fn warn_ignored(res: &LinuxResources, cgroup: &str) {
    if let Some(m) = res.memory() {
        if nonzero_i64(m.kernel()).is_some() || nonzero_i64(m.kernel_tcp()).is_some() {
            tracing::warn!(
                cgroup,
                "linux.resources.memory.kernel/kernelTCP are deprecated by the kernel and ignored (as runc does)"
            );
        }
    }
}

fn memory(m: &LinuxMemory) -> Option<LinuxMemory> {
    let mut n = LinuxMemory::default();
    n.set_limit(nonzero_i64(m.limit()));
    n.set_reservation(nonzero_i64(m.reservation()));
    n.set_swap(nonzero_i64(m.swap()));
    // Docker writes an unset swappiness (-1) as uint64(-1).
    n.set_swappiness(m.swappiness().filter(|s| *s as i64 != -1));
    n.set_disable_oom_killer(m.disable_oom_killer().filter(|d| *d));
    n.set_use_hierarchy(m.use_hierarchy());
    n.set_check_before_update(m.check_before_update());
    let set = n.limit().is_some()
        || n.reservation().is_some()
        || n.swap().is_some()
        || n.swappiness().is_some()
        || n.disable_oom_killer().is_some();
    set.then_some(n)
}

fn block_io(b: &LinuxBlockIo) -> Option<LinuxBlockIo> {
    let mut n = b.clone();
    n.set_weight(b.weight().filter(|w| *w != 0));
    n.set_leaf_weight(b.leaf_weight().filter(|w| *w != 0));
    let devices: Vec<_> = b
        .weight_device()
        .iter()
        .flatten()
        .filter_map(|d| {
            let weight = d.weight().filter(|w| *w != 0);
            let leaf = d.leaf_weight().filter(|w| *w != 0);
            if weight.is_none() && leaf.is_none() {
                return None;
            }
            let mut b = LinuxWeightDeviceBuilder::default()
                .major(d.major())
                .minor(d.minor());
            if let Some(w) = weight {
                b = b.weight(w);
            }
            if let Some(w) = leaf {
                b = b.leaf_weight(w);
            }
            // Every field is given: the builder cannot fail; keep the entry as is if it did.
            Some(b.build().unwrap_or(*d))
        })
        .collect();
    n.set_weight_device((!devices.is_empty()).then_some(devices));
    let nonempty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
    let set = n.weight().is_some()
        || n.leaf_weight().is_some()
        || n.weight_device().is_some()
        || nonempty(n.throttle_read_bps_device())
        || nonempty(n.throttle_write_bps_device())
        || nonempty(n.throttle_read_iops_device())
        || nonempty(n.throttle_write_iops_device());
    set.then_some(n)
}

fn network(net: &LinuxNetwork) -> Option<LinuxNetwork> {
    let mut n = net.clone();
    n.set_class_id(net.class_id().filter(|c| *c != 0));
    let set = n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty());
    set.then_some(n)
}
