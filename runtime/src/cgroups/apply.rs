//! Writing resources into an existing cgroup: the core knobs through `cgroups-rs`'s
//! `FsManager` (one field group at a time, so an error names the field), and what it does
//! not cover (device programs, hugetlb in a hybrid cgroup2 mount, cpu idle/burst, unified
//! keys) with direct writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cgroups_rs::manager::{FsManager, Manager};
use oci_spec::runtime::LinuxResources;

use super::error::chain;
use super::fsutil::{self, Ctx};
use super::layout::{Mode, UNIFIED_KEY};
use super::plan::{DevicePlan, Env, Plan, Purpose};
use super::CgroupError;

/// The cgroup being configured.
pub(crate) struct Target<'a> {
    pub path: &'a str,
    pub dirs: &'a BTreeMap<String, PathBuf>,
    pub env: &'a Env,
}

impl Target<'_> {
    /// Directory of the hierarchy serving `controller` (v1 key containing it, or unified).
    pub fn dir_for(&self, controller: &str) -> Option<(String, &Path)> {
        if self.env.in_unified(controller) {
            return self
                .dirs
                .get(UNIFIED_KEY)
                .map(|d| (UNIFIED_KEY.to_string(), d.as_path()));
        }
        super::dir_for(self.dirs, controller).map(|(k, d)| (k.to_string(), d))
    }

    fn ctx<'b>(&'b self, controller: &'b str) -> Ctx<'b> {
        Ctx {
            path: self.path,
            controller,
        }
    }

    fn unsupported(&self, field: &str, reason: String) -> CgroupError {
        CgroupError::Unsupported {
            path: self.path.to_string(),
            field: field.to_string(),
            reason,
        }
    }

    /// [`knob`](Self::knob) for a value that may be the kernel's default (`cpu.idle: 0`,
    /// `cpu.burst: 0`): on a kernel without the file, the default is what it does anyway,
    /// so there is nothing to write (None) rather than an error.
    fn optional_knob(
        &self,
        field: &str,
        controller: &str,
        file: &str,
        is_default: bool,
    ) -> Result<Option<PathBuf>, CgroupError> {
        match self.knob(field, controller, file) {
            Ok(dir) => Ok(Some(dir)),
            Err(CgroupError::Unsupported { .. }) if is_default => {
                tracing::debug!(
                    cgroup = self.path,
                    field,
                    "no {file} here; 0 needs no write"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `dir_for(controller)` + an existence check of `file` there.
    fn knob(&self, field: &str, controller: &str, file: &str) -> Result<PathBuf, CgroupError> {
        let Some((_, dir)) = self.dir_for(controller) else {
            return Err(self.unsupported(field, format!("no {controller} hierarchy")));
        };
        if !dir.join(file).exists() {
            return Err(self.unsupported(
                field,
                format!("this kernel provides no {controller} file {file}"),
            ));
        }
        Ok(dir.to_path_buf())
    }
}

/// Applies `res` (already [`normalize`](super::normalize::normalize)d and checked by
/// the plan) to `t`. Every file is checked first ([`preflight`]), so a request this host
/// cannot carry out changes nothing; when a write still fails (the kernel refuses a value),
/// an update's error names the fields already written.
pub(crate) fn apply(t: &Target<'_>, res: &LinuxResources, plan: &Plan) -> Result<(), CgroupError> {
    preflight(t, res, plan)?;
    let mut applied = Vec::new();
    match write_all(t, res, plan, &mut applied) {
        Ok(()) => Ok(()),
        Err(e) if plan.purpose == Purpose::Update && !applied.is_empty() => {
            Err(CgroupError::PartiallyApplied {
                path: t.path.to_string(),
                applied,
                source: Box::new(e),
            })
        }
        Err(e) => Err(e),
    }
}

/// cgroup v2's file and value for a block I/O weight `w` (1-1000 semantics): BFQ's
/// `io.bfq.weight` as is, else `io.weight` with runc's conversion of 10-1000 onto
/// 1-10000. None when neither file exists or `w` cannot be converted.
pub(crate) fn io_weight_v2(dir: &Path, w: u16) -> Option<(&'static str, u64)> {
    if dir.join("io.bfq.weight").exists() {
        return Some(("io.bfq.weight", u64::from(w)));
    }
    if !dir.join("io.weight").exists() || !(10..=1000).contains(&w) {
        return None;
    }
    Some(("io.weight", 1 + (u64::from(w) - 10) * 9999 / 990))
}

/// The v1 blkio files for (weight, weightDevice): CFQ's, else BFQ's (as runc).
fn blkio_weight_files(dir: &Path) -> Option<(&'static str, &'static str)> {
    if dir.join("blkio.weight").exists() {
        Some(("blkio.weight", "blkio.weight_device"))
    } else if dir.join("blkio.bfq.weight").exists() {
        Some(("blkio.bfq.weight", "blkio.bfq.weight_device"))
    } else {
        None
    }
}

/// Every file the request will write exists (no side effects).
fn preflight(t: &Target<'_>, res: &LinuxResources, plan: &Plan) -> Result<(), CgroupError> {
    let v2 = t.env.mode == Mode::V2;
    if let Some(cpu) = res.cpu() {
        if let Some(idle) = cpu.idle() {
            t.optional_knob("linux.resources.cpu.idle", "cpu", "cpu.idle", idle == 0)?;
        }
        if let Some(burst) = cpu.burst() {
            let file = if v2 {
                "cpu.max.burst"
            } else {
                "cpu.cfs_burst_us"
            };
            t.optional_knob("linux.resources.cpu.burst", "cpu", file, burst == 0)?;
        }
        if !v2 {
            for (field, set, file) in [
                ("shares", cpu.shares().is_some(), "cpu.shares"),
                ("quota", cpu.quota().is_some(), "cpu.cfs_quota_us"),
                ("period", cpu.period().is_some(), "cpu.cfs_period_us"),
                (
                    "realtimeRuntime",
                    cpu.realtime_runtime().is_some(),
                    "cpu.rt_runtime_us",
                ),
                (
                    "realtimePeriod",
                    cpu.realtime_period().is_some(),
                    "cpu.rt_period_us",
                ),
            ] {
                if set {
                    t.knob(&format!("linux.resources.cpu.{field}"), "cpu", file)?;
                }
            }
        }
    }
    if let Some(mem) = res.memory() {
        if !v2 && mem.swap().is_some() {
            t.knob(
                "linux.resources.memory.swap",
                "memory",
                "memory.memsw.limit_in_bytes",
            )?;
        }
        if !v2 && mem.swappiness().is_some() {
            t.knob(
                "linux.resources.memory.swappiness",
                "memory",
                "memory.swappiness",
            )?;
        }
    }
    if let Some(bio) = res.block_io() {
        let nonempty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        let throttles = [
            (
                "throttleReadBpsDevice",
                nonempty(bio.throttle_read_bps_device()),
                "blkio.throttle.read_bps_device",
            ),
            (
                "throttleWriteBpsDevice",
                nonempty(bio.throttle_write_bps_device()),
                "blkio.throttle.write_bps_device",
            ),
            (
                "throttleReadIOPSDevice",
                nonempty(bio.throttle_read_iops_device()),
                "blkio.throttle.read_iops_device",
            ),
            (
                "throttleWriteIOPSDevice",
                nonempty(bio.throttle_write_iops_device()),
                "blkio.throttle.write_iops_device",
            ),
        ];
        let weights = bio.weight().is_some()
            || bio
                .weight_device()
                .iter()
                .flatten()
                .any(|d| d.weight().is_some());
        if v2 {
            let has_device_weight = bio
                .weight_device()
                .iter()
                .flatten()
                .any(|d| d.weight().is_some());
            if has_device_weight {
                t.knob(
                    "linux.resources.blockIO.weightDevice",
                    "io",
                    "io.bfq.weight",
                )?;
            }
            if let Some(w) = bio.weight() {
                let field = "linux.resources.blockIO.weight";
                let Some((_, dir)) = t.dir_for("io") else {
                    return Err(t.unsupported(field, "no io controller".into()));
                };
                match io_weight_v2(dir, w) {
                    Some(_) => {}
                    None if !dir.join("io.bfq.weight").exists()
                        && !dir.join("io.weight").exists() =>
                    {
                        return Err(t.unsupported(
                            field,
                            "this kernel provides neither io.bfq.weight nor io.weight".into(),
                        ))
                    }
                    None => {
                        return Err(CgroupError::InvalidValue {
                            path: t.path.to_string(),
                            field: field.into(),
                            reason: format!(
                                "{w} cannot be converted to io.weight (no BFQ here; 10-1000)"
                            ),
                        })
                    }
                }
            }
            for (name, requested, _) in throttles {
                if requested {
                    t.knob(&format!("linux.resources.blockIO.{name}"), "io", "io.max")?;
                }
            }
        } else {
            let Some((_, dir)) = t.dir_for("blkio") else {
                return Err(t.unsupported("linux.resources.blockIO", "no blkio hierarchy".into()));
            };
            if weights && blkio_weight_files(dir).is_none() {
                let field = if bio.weight().is_some() {
                    "weight"
                } else {
                    "weightDevice"
                };
                return Err(t.unsupported(
                    &format!("linux.resources.blockIO.{field}"),
                    "this kernel provides no blkio weight file (blkio.weight nor blkio.bfq.weight: \
                     no CFQ or BFQ I/O scheduler)"
                        .into(),
                ));
            }
            let leaf_devices = bio
                .weight_device()
                .iter()
                .flatten()
                .any(|d| d.leaf_weight().is_some());
            if bio.leaf_weight().is_some() {
                t.knob(
                    "linux.resources.blockIO.leafWeight",
                    "blkio",
                    "blkio.leaf_weight",
                )?;
            }
            if leaf_devices {
                t.knob(
                    "linux.resources.blockIO.weightDevice",
                    "blkio",
                    "blkio.leaf_weight_device",
                )?;
            }
            for (name, requested, file) in throttles {
                if requested {
                    t.knob(&format!("linux.resources.blockIO.{name}"), "blkio", file)?;
                }
            }
        }
    }
    if res.pids().is_some() {
        t.knob("linux.resources.pids", "pids", "pids.max")?;
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        let Some((key, dir)) = t.dir_for("hugetlb") else {
            return Err(t.unsupported(&field, "no hugetlb hierarchy".into()));
        };
        for (file, _) in hugetlb_writes(key == UNIFIED_KEY, h.page_size(), h.limit(), |f| {
            dir.join(f).exists()
        }) {
            if !dir.join(&file).exists() {
                return Err(t.unsupported(
                    &field,
                    format!("this kernel provides no hugetlb file {file}"),
                ));
            }
        }
    }
    for key in res.unified().iter().flat_map(|m| m.keys()) {
        let field = format!("linux.resources.unified[{key:?}]");
        let Some(dir) = t.dirs.get(UNIFIED_KEY) else {
            return Err(t.unsupported(&field, "cgroup2 is not mounted".into()));
        };
        if !dir.join(key).exists() {
            return Err(t.unsupported(
                &field,
                format!("no cgroup2 file {key} in {}", dir.display()),
            ));
        }
    }
    if let DevicePlan::V1(_) = &plan.devices {
        if t.dir_for("devices").is_none() {
            return Err(t.unsupported("linux.resources.devices", "no devices hierarchy".into()));
        }
    }
    Ok(())
}

/// The writes, in order; `applied` collects the field groups written so far.
fn write_all(
    t: &Target<'_>,
    res: &LinuxResources,
    plan: &Plan,
    applied: &mut Vec<String>,
) -> Result<(), CgroupError> {
    let v2 = t.env.mode == Mode::V2;
    let mut core = CoreSetter::new(t);

    if let Some(cpu) = res.cpu() {
        let core_part = cpu.shares().is_some()
            || (!v2 && cpu.burst().is_some())
            || cpu.quota().is_some()
            || cpu.period().is_some()
            || cpu.realtime_runtime().is_some()
            || cpu.realtime_period().is_some()
            || cpu.cpus().is_some()
            || cpu.mems().is_some();
        if core_part && v2 {
            let mut r = LinuxResources::default();
            r.set_cpu(Some(cpu.clone()));
            core.set("linux.resources.cpu", "cpu,cpuset", &r)?;
            applied.push("linux.resources.cpu".into());
        } else if core_part {
            write_cpu_v1(t, cpu, applied)?;
        }
        if let Some(idle) = cpu.idle() {
            let field = "linux.resources.cpu.idle";
            if let Some(dir) = t.optional_knob(field, "cpu", "cpu.idle", idle == 0)? {
                fsutil::write(t.ctx("cpu"), &dir, "cpu.idle", &idle.to_string())
                    .map_err(|e| named("linux.resources.cpu.idle", e))?;
                applied.push(field.into());
            }
        }
        // On v1 the burst is written with the quota, in runc's order.
        if let Some(burst) = cpu.burst().filter(|_| v2) {
            let field = "linux.resources.cpu.burst";
            let file = "cpu.max.burst";
            if let Some(dir) = t.optional_knob(field, "cpu", file, burst == 0)? {
                fsutil::write(t.ctx("cpu"), &dir, file, &burst.to_string())
                    .map_err(|e| named("linux.resources.cpu.burst", e))?;
                applied.push(field.into());
            }
        }
    }

    if let Some(mem) = res.memory() {
        // Directly rather than through cgroups-rs, which writes memory.swap.max = 0 on
        // cgroup v2 when no swap limit is given, and memsw = -1 on v1 without checking
        // that the kernel has it.
        let (key, dir) = t
            .dir_for("memory")
            .ok_or_else(|| t.unsupported("linux.resources.memory", "no memory hierarchy".into()))?;
        let ctx = t.ctx(&key);
        let current = if v2 {
            None
        } else {
            fsutil::read(ctx, dir, "memory.limit_in_bytes")?
                .parse()
                .ok()
        };
        let swap_file = if v2 {
            "memory.swap.max"
        } else {
            "memory.memsw.limit_in_bytes"
        };
        let writes = memory_writes(v2, mem, current, dir.join(swap_file).exists()).map_err(
            |(field, reason)| CgroupError::InvalidValue {
                path: t.path.to_string(),
                field: format!("linux.resources.memory.{field}"),
                reason,
            },
        )?;
        for (file, value, field) in writes {
            fsutil::write(ctx, dir, file, &value)
                .map_err(|e| named(&format!("linux.resources.memory.{field}"), e))?;
            applied.push(format!("linux.resources.memory.{field}"));
        }
    }

    if let Some(pids) = res.pids() {
        let mut r = LinuxResources::default();
        r.set_pids(Some(*pids));
        core.set("linux.resources.pids", "pids", &r)?;
        applied.push("linux.resources.pids".into());
    }

    if let Some(bio) = res.block_io() {
        let c = if v2 { "io" } else { "blkio" };
        let mut rest = bio.clone();
        if let (true, Some(w)) = (v2, bio.weight()) {
            let field = "linux.resources.blockIO.weight";
            let (key, dir) = t
                .dir_for("io")
                .ok_or_else(|| t.unsupported(field, "no io controller".into()))?;
            let (file, value) = io_weight_v2(dir, w)
                .ok_or_else(|| t.unsupported(field, "no usable io weight file".into()))?;
            fsutil::write(t.ctx(&key), dir, file, &value.to_string())
                .map_err(|e| named(field, e))?;
            applied.push(field.into());
            rest.set_weight(None);
        }
        if !v2 {
            // Weights directly (cgroups-rs knows only CFQ's files), the throttles below.
            let dir = t.knob("linux.resources.blockIO", "blkio", "cgroup.procs")?;
            let ctx = t.ctx("blkio");
            let files = blkio_weight_files(&dir);
            if let (Some(w), Some((file, _))) = (bio.weight(), files) {
                fsutil::write(ctx, &dir, file, &w.to_string())
                    .map_err(|e| named("linux.resources.blockIO.weight", e))?;
                applied.push("linux.resources.blockIO.weight".into());
            }
            if let Some(w) = bio.leaf_weight() {
                fsutil::write(ctx, &dir, "blkio.leaf_weight", &w.to_string())
                    .map_err(|e| named("linux.resources.blockIO.leafWeight", e))?;
                applied.push("linux.resources.blockIO.leafWeight".into());
            }
            for d in bio.weight_device().iter().flatten() {
                let dev = format!("{}:{}", d.major(), d.minor());
                if let (Some(w), Some((_, file))) = (d.weight(), files) {
                    fsutil::write(ctx, &dir, file, &format!("{dev} {w}"))
                        .map_err(|e| named("linux.resources.blockIO.weightDevice", e))?;
                }
                if let Some(w) = d.leaf_weight() {
                    fsutil::write(ctx, &dir, "blkio.leaf_weight_device", &format!("{dev} {w}"))
                        .map_err(|e| named("linux.resources.blockIO.weightDevice", e))?;
                }
            }
            if bio.weight_device().is_some() {
                applied.push("linux.resources.blockIO.weightDevice".into());
            }
            rest.set_weight(None);
            rest.set_leaf_weight(None);
            rest.set_weight_device(None);
        }
        let nonempty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        let any = rest.weight().is_some()
            || rest.weight_device().is_some()
            || nonempty(rest.throttle_read_bps_device())
            || nonempty(rest.throttle_write_bps_device())
            || nonempty(rest.throttle_read_iops_device())
            || nonempty(rest.throttle_write_iops_device());
        if any {
            let mut r = LinuxResources::default();
            r.set_block_io(Some(rest));
            core.set("linux.resources.blockIO", c, &r)?;
            applied.push("linux.resources.blockIO".into());
        }
    }

    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        let Some((key, dir)) = t.dir_for("hugetlb") else {
            return Err(t.unsupported(&field, "no hugetlb hierarchy".into()));
        };
        let ctx = t.ctx(&key);
        for (file, value) in hugetlb_writes(key == UNIFIED_KEY, h.page_size(), h.limit(), |f| {
            dir.join(f).exists()
        }) {
            if !dir.join(&file).exists() {
                return Err(t.unsupported(
                    &field,
                    format!("this kernel provides no hugetlb file {file}"),
                ));
            }
            fsutil::write(ctx, dir, &file, &value).map_err(|e| named(&field, e))?;
        }
        applied.push(field);
    }

    if let Some(net) = res.network() {
        let prios = net.priorities().as_ref().is_some_and(|p| !p.is_empty());
        if net.class_id().is_some() || prios {
            let mut r = LinuxResources::default();
            r.set_network(Some(net.clone()));
            core.set("linux.resources.network", "net_cls,net_prio", &r)?;
            applied.push("linux.resources.network".into());
        }
    }

    for (key, value) in res.unified().iter().flatten() {
        let field = format!("linux.resources.unified[{key:?}]");
        let Some(dir) = t.dirs.get(UNIFIED_KEY) else {
            return Err(t.unsupported(&field, "cgroup2 is not mounted".into()));
        };
        if !dir.join(key).exists() {
            return Err(t.unsupported(
                &field,
                format!("no cgroup2 file {key} in {}", dir.display()),
            ));
        }
        fsutil::write(t.ctx(UNIFIED_KEY), dir, key, value).map_err(|e| named(&field, e))?;
        applied.push(field);
    }

    match &plan.devices {
        DevicePlan::V1(rules) => {
            let Some((key, dir)) = t.dir_for("devices") else {
                return Err(t.unsupported("linux.resources.devices", "no devices hierarchy".into()));
            };
            let ctx = t.ctx(&key);
            let mut allow = fsutil::LineWriter::new(ctx, dir, "devices.allow");
            let mut deny = fsutil::LineWriter::new(ctx, dir, "devices.deny");
            for rule in rules {
                let target = if rule.allow { &mut allow } else { &mut deny };
                target.write(&rule.v1_line())?;
            }
        }
        DevicePlan::Bpf { rules, required } => {
            let Some(dir) = t.dirs.get(UNIFIED_KEY) else {
                return Err(t.unsupported("linux.resources.devices", "no cgroup2 directory".into()));
            };
            if let Err(e) = super::bpf_devices::apply(dir, rules) {
                let why = format!("loading the eBPF device filter: {e}");
                if *required {
                    return Err(t.unsupported("linux.resources.devices", why));
                }
                tracing::warn!(cgroup = t.path, "device access is not restricted: {why}");
            }
        }
        DevicePlan::Unenforced(why) => {
            tracing::warn!(cgroup = t.path, "device access is not restricted: {why}");
        }
        DevicePlan::Keep => {}
    }
    Ok(())
}

/// cgroup v1 cpuset and cpu writes, in runc's order: cpuset.cpus/mems, cpu.shares, then
/// each bandwidth pair period first, retried after the quota (runtime) when the kernel
/// refuses the period with EINVAL (old quota / new period above the parent's limit).
fn write_cpu_v1(
    t: &Target<'_>,
    cpu: &oci_spec::runtime::LinuxCpu,
    applied: &mut Vec<String>,
) -> Result<(), CgroupError> {
    let hierarchy = |controller: &str| {
        t.dir_for(controller).ok_or_else(|| {
            t.unsupported("linux.resources.cpu", format!("no {controller} hierarchy"))
        })
    };
    if cpu.cpus().is_some() || cpu.mems().is_some() {
        let (key, dir) = hierarchy("cpuset")?;
        for (file, value, field) in [
            ("cpuset.cpus", cpu.cpus(), "cpus"),
            ("cpuset.mems", cpu.mems(), "mems"),
        ] {
            if let Some(v) = value {
                fsutil::write(t.ctx(&key), dir, file, v)
                    .map_err(|e| named(&format!("linux.resources.cpu.{field}"), e))?;
                applied.push(format!("linux.resources.cpu.{field}"));
            }
        }
    }
    // cfs_burst_us of 0 on a kernel without it: nothing to do (checked by the preflight).
    let burst = cpu.burst().filter(|b| {
        *b != 0
            || t.dir_for("cpu")
                .is_some_and(|(_, d)| d.join("cpu.cfs_burst_us").exists())
    });
    let bandwidth = cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || burst.is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some();
    if !bandwidth {
        return Ok(());
    }
    let (key, dir) = hierarchy("cpu")?;
    let ctx = t.ctx(&key);
    if let Some(shares) = cpu.shares() {
        fsutil::write(ctx, dir, "cpu.shares", &shares.to_string())
            .map_err(|e| named("linux.resources.cpu.shares", e))?;
        applied.push("linux.resources.cpu.shares".into());
    }
    // (files written before the quota, retried after it on EINVAL), then the quota.
    let groups = [
        (
            vec![
                ("cpu.cfs_period_us", cpu.period(), "period"),
                ("cpu.cfs_burst_us", burst, "burst"),
            ],
            (
                "cpu.cfs_quota_us",
                cpu.quota().map(|q| q.to_string()),
                "quota",
            ),
        ),
        (
            vec![("cpu.rt_period_us", cpu.realtime_period(), "realtimePeriod")],
            (
                "cpu.rt_runtime_us",
                cpu.realtime_runtime().map(|r| r.to_string()),
                "realtimeRuntime",
            ),
        ),
    ];
    for (before, (qfile, quota, qfield)) in groups {
        let mut retry = Vec::new();
        for (file, value, field) in before {
            let Some(v) = value else { continue };
            match fsutil::write(ctx, dir, file, &v.to_string()) {
                Ok(()) => applied.push(format!("linux.resources.cpu.{field}")),
                Err(e) if quota.is_some() && errno(&e) == Some(libc::EINVAL) => {
                    tracing::debug!(cgroup = t.path, "{file} refused, retrying after {qfile}");
                    retry.push((file, v, field));
                }
                Err(e) => return Err(named(&format!("linux.resources.cpu.{field}"), e)),
            }
        }
        if let Some(q) = quota {
            fsutil::write(ctx, dir, qfile, &q)
                .map_err(|e| named(&format!("linux.resources.cpu.{qfield}"), e))?;
            applied.push(format!("linux.resources.cpu.{qfield}"));
            for (file, v, field) in retry {
                fsutil::write(ctx, dir, file, &v.to_string())
                    .map_err(|e| named(&format!("linux.resources.cpu.{field}"), e))?;
                applied.push(format!("linux.resources.cpu.{field}"));
            }
        }
    }
    Ok(())
}

/// A failed write named by the field it served (the file and errno stay in the detail).
fn named(field: &str, e: CgroupError) -> CgroupError {
    match e {
        CgroupError::Io {
            path,
            controller,
            op,
            file,
            source,
        } => CgroupError::Apply {
            path,
            controller,
            field: field.to_string(),
            detail: format!("cannot {op} {}: {source}", file.display()),
        },
        other => other,
    }
}

/// The errno of a failed file operation.
fn errno(e: &CgroupError) -> Option<i32> {
    match e {
        CgroupError::Io { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// One memory write: `(file, value, field)`.
pub(crate) type MemoryWrite = (&'static str, String, &'static str);

/// The memory writes for `mem` (normalized: no zeros), in runc's order, as `(file, value,
/// field)`. cgroup v1: memory and memory+swap limits ordered so the kernel accepts them
/// (`current` is the present `memory.limit_in_bytes`), a -1 limit with no swap given also
/// lifts the memory+swap limit when the kernel has one, then soft limit, OOM killer,
/// swappiness. cgroup v2: `memory.swap.max` holds swap alone (memory+swap minus memory),
/// never written when no swap limit is asked for, then `memory.max` and `memory.low`.
pub(crate) fn memory_writes(
    v2: bool,
    mem: &oci_spec::runtime::LinuxMemory,
    current: Option<u64>,
    swap_file: bool,
) -> Result<Vec<MemoryWrite>, (&'static str, String)> {
    let limit = mem.limit().unwrap_or(0);
    let mut swap = mem.swap().unwrap_or(0);
    let mut out = Vec::new();
    if v2 {
        let num = |v: i64| match v {
            0 => None,
            -1 => Some("max".to_string()),
            v => Some(v.to_string()),
        };
        let swap_only = swap_v2(swap, limit)?;
        let value = match num(swap_only) {
            None if swap > 0 => Some("0".to_string()),
            v => v,
        };
        if let Some(v) = value {
            // No swap accounting: "max" and "0" are what the kernel does anyway (runc).
            if swap_file || (v != "max" && v != "0") {
                out.push(("memory.swap.max", v, "swap"));
            }
        }
        if let Some(v) = num(limit) {
            out.push(("memory.max", v, "limit"));
        }
        if let Some(v) = mem.reservation().and_then(num) {
            out.push(("memory.low", v, "reservation"));
        }
        return Ok(out);
    }
    if limit == -1 && swap == 0 && swap_file {
        swap = -1;
    }
    let memsw = "memory.memsw.limit_in_bytes";
    let swap_first = limit != 0
        && swap != 0
        && (swap == -1 || current.is_some_and(|c| i64::try_from(c).is_ok_and(|c| c < swap)));
    if swap_first {
        out.push((memsw, swap.to_string(), "swap"));
        out.push(("memory.limit_in_bytes", limit.to_string(), "limit"));
    } else {
        if limit != 0 {
            out.push(("memory.limit_in_bytes", limit.to_string(), "limit"));
        }
        if swap != 0 {
            out.push((memsw, swap.to_string(), "swap"));
        }
    }
    if let Some(r) = mem.reservation() {
        out.push(("memory.soft_limit_in_bytes", r.to_string(), "reservation"));
    }
    if mem.disable_oom_killer() == Some(true) {
        out.push(("memory.oom_control", "1".into(), "disableOOMKiller"));
    }
    if let Some(s) = mem.swappiness() {
        out.push(("memory.swappiness", s.to_string(), "swappiness"));
    }
    Ok(out)
}

/// cgroup v2's swap limit for the OCI memory+swap limit `swap` and memory limit `limit`
/// (0 = not set, -1 = no limit), as runc converts it.
pub(crate) fn swap_v2(swap: i64, limit: i64) -> Result<i64, (&'static str, String)> {
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 || limit == -1 {
        return Ok(swap);
    }
    if limit == 0 {
        return Err((
            "swap",
            "cgroup v2 cannot limit memory+swap without a memory limit".into(),
        ));
    }
    if swap < limit {
        return Err((
            "swap",
            format!("{swap} is below memory.limit {limit} (swap is the memory+swap limit)"),
        ));
    }
    Ok(swap - limit)
}

/// The files and values for one hugetlb limit: v1 `hugetlb.<size>.limit_in_bytes`, cgroup2
/// `hugetlb.<size>.max` (+ `.rsvd.max` when the kernel has it). A negative limit = no limit.
pub(crate) fn hugetlb_writes(
    unified: bool,
    size: &str,
    limit: i64,
    exists: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    if unified {
        let value = if limit < 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        let mut out = vec![(format!("hugetlb.{size}.max"), value.clone())];
        let rsvd = format!("hugetlb.{size}.rsvd.max");
        if exists(&rsvd) {
            out.push((rsvd, value));
        }
        out
    } else {
        let value = if limit < 0 {
            "-1".to_string()
        } else {
            limit.to_string()
        };
        vec![(format!("hugetlb.{size}.limit_in_bytes"), value)]
    }
}

/// `cgroups-rs`'s FsManager for the container's path, applied one field group at a time.
struct CoreSetter<'a> {
    path: &'a str,
    manager: Option<FsManager>,
}

impl<'a> CoreSetter<'a> {
    /// The FsManager itself is made on first use (it reads /proc/self/{cgroup,mountinfo}).
    fn new(t: &Target<'a>) -> Self {
        CoreSetter {
            path: t.path,
            manager: None,
        }
    }

    fn set(
        &mut self,
        field: &str,
        controller: &str,
        r: &LinuxResources,
    ) -> Result<(), CgroupError> {
        let err = |detail: String| CgroupError::Apply {
            path: self.path.to_string(),
            controller: controller.to_string(),
            field: field.to_string(),
            detail,
        };
        if self.manager.is_none() {
            let m =
                FsManager::new(self.path.trim_start_matches('/')).map_err(|e| err(chain(&e)))?;
            self.manager = Some(m);
        }
        let Some(m) = self.manager.as_mut() else {
            return Ok(());
        };
        tracing::debug!(cgroup = self.path, field, "applying through cgroups-rs");
        m.set(r).map_err(|e| CgroupError::Apply {
            path: self.path.to_string(),
            controller: controller.to_string(),
            field: field.to_string(),
            detail: chain(&e),
        })
    }
}
