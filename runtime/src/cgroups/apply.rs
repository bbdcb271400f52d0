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
use super::plan::{DevicePlan, Env, Plan};
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

/// Applies `res` to `t` according to `plan`.
pub(crate) fn apply(t: &Target<'_>, res: &LinuxResources, plan: &Plan) -> Result<(), CgroupError> {
    let v2 = t.env.mode == Mode::V2;
    let mut core = CoreSetter::new(t);

    if let Some(cpu) = res.cpu() {
        let core_part = cpu.shares().is_some()
            || cpu.quota().is_some()
            || cpu.period().is_some()
            || cpu.realtime_runtime().is_some()
            || cpu.realtime_period().is_some()
            || cpu.cpus().is_some()
            || cpu.mems().is_some();
        if core_part {
            let mut r = LinuxResources::default();
            r.set_cpu(Some(cpu.clone()));
            core.set("linux.resources.cpu", "cpu,cpuset", &r)?;
        }
        if let Some(idle) = cpu.idle() {
            let field = "linux.resources.cpu.idle";
            let dir = t.knob(field, "cpu", "cpu.idle")?;
            fsutil::write(t.ctx("cpu"), &dir, "cpu.idle", &idle.to_string())?;
        }
        if let Some(burst) = cpu.burst() {
            let field = "linux.resources.cpu.burst";
            let file = if v2 {
                "cpu.max.burst"
            } else {
                "cpu.cfs_burst_us"
            };
            let dir = t.knob(field, "cpu", file)?;
            fsutil::write(t.ctx("cpu"), &dir, file, &burst.to_string())?;
        }
    }

    if let Some(mem) = res.memory() {
        let core_part = mem.limit().is_some()
            || mem.reservation().is_some()
            || mem.swap().is_some()
            || mem.swappiness().is_some()
            || mem.disable_oom_killer() == Some(true);
        if core_part {
            if !v2 && mem.swap().is_some_and(|s| s != 0) {
                t.knob(
                    "linux.resources.memory.swap",
                    "memory",
                    "memory.memsw.limit_in_bytes",
                )?;
            }
            let mut r = LinuxResources::default();
            r.set_memory(Some(*mem));
            core.set("linux.resources.memory", "memory", &r)?;
        }
    }

    if let Some(pids) = res.pids() {
        let mut r = LinuxResources::default();
        r.set_pids(Some(*pids));
        core.set("linux.resources.pids", "pids", &r)?;
    }

    if let Some(bio) = res.block_io() {
        let c = if v2 { "io" } else { "blkio" };
        let nonempty = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        let wd = bio.weight_device().as_ref();
        let checks: [(&str, bool, &str); 6] = if v2 {
            [
                ("weight", bio.weight().is_some(), "io.bfq.weight"),
                (
                    "weightDevice",
                    wd.is_some_and(|v| !v.is_empty()),
                    "io.bfq.weight",
                ),
                (
                    "throttleReadBpsDevice",
                    nonempty(bio.throttle_read_bps_device()),
                    "io.max",
                ),
                (
                    "throttleWriteBpsDevice",
                    nonempty(bio.throttle_write_bps_device()),
                    "io.max",
                ),
                (
                    "throttleReadIOPSDevice",
                    nonempty(bio.throttle_read_iops_device()),
                    "io.max",
                ),
                (
                    "throttleWriteIOPSDevice",
                    nonempty(bio.throttle_write_iops_device()),
                    "io.max",
                ),
            ]
        } else {
            [
                (
                    "weight",
                    bio.weight().is_some() || bio.leaf_weight().is_some(),
                    "blkio.weight",
                ),
                (
                    "weightDevice",
                    wd.is_some_and(|v| !v.is_empty()),
                    "blkio.weight_device",
                ),
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
            ]
        };
        let mut any = false;
        for (name, requested, file) in checks {
            if requested {
                any = true;
                t.knob(&format!("linux.resources.blockIO.{name}"), c, file)?;
            }
        }
        if !v2 && bio.leaf_weight().is_some() {
            t.knob("linux.resources.blockIO.leafWeight", c, "blkio.leaf_weight")?;
        }
        if any {
            let mut r = LinuxResources::default();
            r.set_block_io(Some(bio.clone()));
            core.set("linux.resources.blockIO", c, &r)?;
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
            fsutil::write(ctx, dir, &file, &value)?;
        }
    }

    if let Some(net) = res.network() {
        let prios = net.priorities().as_ref().is_some_and(|p| !p.is_empty());
        if net.class_id().is_some() || prios {
            let mut r = LinuxResources::default();
            r.set_network(Some(net.clone()));
            core.set("linux.resources.network", "net_cls,net_prio", &r)?;
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
        fsutil::write(t.ctx(UNIFIED_KEY), dir, key, value)?;
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
        DevicePlan::Unenforced(why) => {
            tracing::warn!(cgroup = t.path, "device access is not restricted: {why}");
        }
        DevicePlan::Keep => {}
    }
    Ok(())
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
