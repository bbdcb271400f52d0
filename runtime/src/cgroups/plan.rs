//! Deciding, before anything is touched, whether every requested resource can be enforced
//! on this host, and how: a pure function of the request and of the host's [`Env`].

use std::collections::BTreeSet;
use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::devices::{self, Rule};
use super::layout::{Layout, Mode};
use super::CgroupError;

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Env {
    pub mode: Mode,
    /// Mounted v1 controllers.
    pub v1: BTreeSet<String>,
    /// Controllers offered by the cgroup2 root (empty when cgroup2 is not mounted).
    pub unified: BTreeSet<String>,
    /// Huge page sizes in the kernel's cgroup naming ("2MB", "1GB").
    pub hugepage_sizes: BTreeSet<String>,
}

impl Env {
    pub fn probe(layout: &Layout, mode: Mode) -> Self {
        Env {
            mode,
            v1: layout.v1_controllers(),
            unified: layout.unified_controllers(),
            hugepage_sizes: hugepage_sizes(Path::new("/sys/kernel/mm/hugepages")),
        }
    }

    /// Can `controller` be used for the container's cgroup?
    pub fn has(&self, controller: &str) -> bool {
        match self.mode {
            Mode::V1 => self.v1.contains(controller),
            Mode::Hybrid => self.v1.contains(controller) || self.unified.contains(controller),
            Mode::V2 => self.unified.contains(controller),
        }
    }

    /// Is `controller` handled by cgroup2 (rather than a v1 hierarchy)?
    pub fn in_unified(&self, controller: &str) -> bool {
        match self.mode {
            Mode::V1 => false,
            Mode::Hybrid => !self.v1.contains(controller) && self.unified.contains(controller),
            Mode::V2 => true,
        }
    }
}

/// Why the plan is made: `update` never rewrites device rules (as `runc update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Create,
    Update,
}

/// How device rules are enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DevicePlan {
    /// Write this v1 program (deny all, user rules, default allowlist).
    V1(Vec<Rule>),
    /// cgroup v2: attach an eBPF device program for this rule list (same order as V1).
    /// `required`: the config asked for rules, so a host that cannot load the program
    /// fails instead of running the container unconfined.
    Bpf { rules: Vec<Rule>, required: bool },
    /// Nothing can enforce the rules (no v1 devices controller, or cgroup v2 without eBPF);
    /// only reached when every rule is a deny or within the default allowlist.
    Unenforced(&'static str),
    /// Leave device rules alone (update).
    Keep,
}

/// The decisions taken for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub devices: DevicePlan,
    /// Controllers that must be enabled in the cgroup2 `cgroup.subtree_control` of every
    /// ancestor (hybrid: only those used there; v2: used ones must succeed).
    pub unified_needed: BTreeSet<String>,
    /// `linux.resources.unified` has keys (written into the cgroup2 directory).
    pub unified_keys: bool,
    /// Create or update.
    pub purpose: Purpose,
}

impl Plan {
    /// Does the request need the cgroup2 hierarchy (hybrid hosts: hugetlb, unified keys)?
    pub fn needs_unified(&self) -> bool {
        self.unified_keys || !self.unified_needed.is_empty()
    }
}

/// `(field, reason)` → the typed error for `path`.
fn unsupported(path: &str, field: impl Into<String>, reason: impl Into<String>) -> CgroupError {
    CgroupError::Unsupported {
        path: path.to_string(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks `res` against `env`. No side effects.
pub(crate) fn check(
    path: &str,
    res: &LinuxResources,
    env: &Env,
    purpose: Purpose,
) -> Result<Plan, CgroupError> {
    // The ranges any kernel has (shared with bundle validation); what this host lacks below.
    hull_specs::validate_resources(res).map_err(|e| from_spec(path, e))?;
    let mut needed: BTreeSet<String> = BTreeSet::new();
    let mut require = |field: &str, controller: &str| -> Result<(), CgroupError> {
        if !env.has(controller) {
            let where_ = match env.mode {
                Mode::V2 => "in the cgroup2 root's cgroup.controllers",
                Mode::Hybrid => "as a v1 hierarchy nor in the cgroup2 mount",
                Mode::V1 => "as a v1 hierarchy",
            };
            return Err(unsupported(
                path,
                format!("linux.resources.{field}"),
                format!("the {controller} controller is not available ({controller} not mounted {where_})"),
            ));
        }
        if env.in_unified(controller) {
            needed.insert(controller.to_string());
        }
        Ok(())
    };
    let v2 = env.mode == Mode::V2;

    if let Some(cpu) = res.cpu() {
        let knobs = [
            ("cpu.shares", cpu.shares().is_some()),
            ("cpu.quota", cpu.quota().is_some()),
            ("cpu.period", cpu.period().is_some()),
            ("cpu.idle", cpu.idle().is_some()),
            ("cpu.burst", cpu.burst().is_some()),
            ("cpu.realtimeRuntime", cpu.realtime_runtime().is_some()),
            ("cpu.realtimePeriod", cpu.realtime_period().is_some()),
        ];
        let sets = [
            ("cpu.cpus", cpu.cpus().is_some()),
            ("cpu.mems", cpu.mems().is_some()),
        ];
        let any = knobs.iter().chain(sets.iter()).any(|(_, s)| *s);
        if any {
            // cgroups-rs applies the cpu and cpuset parts of LinuxCpu together.
            let first = knobs
                .iter()
                .chain(sets.iter())
                .find(|(_, s)| *s)
                .map_or("cpu", |(f, _)| *f);
            require(first, "cpu")?;
            require(first, "cpuset")?;
        }
        if v2 {
            for (field, set) in &knobs[5..] {
                if *set {
                    return Err(unsupported(
                        path,
                        format!("linux.resources.{field}"),
                        "cgroup v2 has no realtime CPU bandwidth knobs",
                    ));
                }
            }
        }
        check_cpu_values(path, cpu, v2)?;
        for (field, val) in [("cpu.cpus", cpu.cpus()), ("cpu.mems", cpu.mems())] {
            if let Some(v) = val {
                if !is_cpu_list(v) {
                    return Err(CgroupError::InvalidValue {
                        path: path.to_string(),
                        field: format!("linux.resources.{field}"),
                        reason: format!("{v:?} is not a list like \"0-3,5\""),
                    });
                }
            }
        }
    }

    if let Some(mem) = res.memory() {
        let any = mem.limit().is_some()
            || mem.reservation().is_some()
            || mem.swap().is_some()
            || mem.swappiness().is_some()
            || mem.disable_oom_killer() == Some(true);
        if any {
            require("memory", "memory")?;
        }
        if v2 && mem.swappiness().is_some() {
            return Err(unsupported(
                path,
                "linux.resources.memory.swappiness",
                "cgroup v2 has no per-cgroup swappiness",
            ));
        }
        if v2 && mem.disable_oom_killer() == Some(true) {
            return Err(unsupported(
                path,
                "linux.resources.memory.disableOOMKiller",
                "cgroup v2 cannot disable the OOM killer per cgroup",
            ));
        }
        if v2 {
            if let Err((field, reason)) =
                super::apply::swap_v2(mem.swap().unwrap_or(0), mem.limit().unwrap_or(0))
            {
                return Err(invalid(path, &format!("memory.{field}"), reason));
            }
        }
    }

    if res.pids().is_some() {
        require("pids", "pids")?;
    }

    if let Some(bio) = res.block_io() {
        let any = bio.weight().is_some()
            || bio.leaf_weight().is_some()
            || bio.weight_device().as_ref().is_some_and(|v| !v.is_empty())
            || bio
                .throttle_read_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || bio
                .throttle_write_bps_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || bio
                .throttle_read_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty())
            || bio
                .throttle_write_iops_device()
                .as_ref()
                .is_some_and(|v| !v.is_empty());
        if any {
            require("blockIO", if v2 { "io" } else { "blkio" })?;
        }
        check_blkio_weights(path, bio)?;
        if v2 && bio.leaf_weight().is_some() {
            return Err(unsupported(
                path,
                "linux.resources.blockIO.leafWeight",
                "cgroup v2 has no leaf weights",
            ));
        }
    }

    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let field = format!("hugepageLimits[{i}].pageSize");
        if !env.hugepage_sizes.contains(h.page_size()) {
            return Err(unsupported(
                path,
                format!("linux.resources.{field}"),
                format!(
                    "huge page size {:?} is not supported by this kernel (supported: {})",
                    h.page_size(),
                    env.hugepage_sizes
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        require(&field, "hugetlb")?;
    }

    if let Some(net) = res.network() {
        if net.class_id().is_some() {
            require_v1(path, env, "network.classID", "net_cls")?;
        }
        if net.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            require_v1(path, env, "network.priorities", "net_prio")?;
        }
    }

    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(unsupported(
            path,
            "linux.resources.rdma",
            "hull does not manage the rdma controller",
        ));
    }

    for key in res.unified().iter().flat_map(|m| m.keys()) {
        let field = format!("linux.resources.unified[{key:?}]");
        if env.mode == Mode::V1 {
            return Err(unsupported(path, field, "cgroup2 is not mounted"));
        }
        let Some((controller, _)) = key.split_once('.') else {
            return Err(CgroupError::InvalidValue {
                path: path.to_string(),
                field,
                reason: "not a cgroup2 interface file name (<controller>.<knob>)".into(),
            });
        };
        if key.contains('/') || controller.is_empty() {
            return Err(CgroupError::InvalidValue {
                path: path.to_string(),
                field,
                reason: "not a cgroup2 interface file name (<controller>.<knob>)".into(),
            });
        }
        if controller != "cgroup" {
            if !env.unified.contains(controller) {
                return Err(unsupported(
                    path,
                    field,
                    format!("the {controller} controller is not available in the cgroup2 mount"),
                ));
            }
            needed.insert(controller.to_string());
        }
    }

    let devices = match purpose {
        // cgroup v2: new rules replace the device program (in one step where the kernel
        // can). v1: the rules written at create stay (an update cannot take back a
        // v1 allow without resetting the list, which would briefly deny everything).
        Purpose::Update
            if env.mode == Mode::V2 && res.devices().as_ref().is_some_and(|d| !d.is_empty()) =>
        {
            device_plan(path, res, env)?
        }
        Purpose::Update => {
            if res.devices().as_ref().is_some_and(|d| !d.is_empty()) {
                tracing::warn!(
                    cgroup = path,
                    "device rules are not changed by update on a v1 devices hierarchy"
                );
            }
            DevicePlan::Keep
        }
        Purpose::Create => device_plan(path, res, env)?,
    };

    Ok(Plan {
        devices,
        unified_needed: needed,
        unified_keys: res.unified().as_ref().is_some_and(|m| !m.is_empty()),
        purpose,
    })
}

/// A `validate_resources` error as a cgroup error, without the `config.json:` prefix (the
/// values may come from `update`).
fn from_spec(path: &str, e: hull_specs::SpecError) -> CgroupError {
    let text = e.to_string();
    let field = e.field().unwrap_or("linux.resources").to_string();
    let reason = text
        .strip_prefix("config.json: ")
        .and_then(|t| t.strip_prefix(field.as_str()))
        .and_then(|t| t.strip_prefix(": "))
        .unwrap_or(&text)
        .to_string();
    CgroupError::InvalidValue {
        path: path.to_string(),
        field,
        reason,
    }
}

fn invalid(path: &str, field: &str, reason: String) -> CgroupError {
    CgroupError::InvalidValue {
        path: path.to_string(),
        field: format!("linux.resources.{field}"),
        reason,
    }
}

/// The kernel's ranges for the CPU bandwidth knobs (kernel/sched/core.c): shares 2–262144
/// on cgroup v1 (the kernel clamps, runc reads back and fails), period 1 ms–1 s, a positive
/// quota at least 1 ms (negative = no limit).
fn check_cpu_values(
    path: &str,
    cpu: &oci_spec::runtime::LinuxCpu,
    v2: bool,
) -> Result<(), CgroupError> {
    if let Some(s) = cpu.shares() {
        if !v2 && !(2..=262_144).contains(&s) {
            return Err(invalid(
                path,
                "cpu.shares",
                format!("{s} is outside the kernel's range 2-262144"),
            ));
        }
    }
    Ok(())
}

/// Block I/O weights are 1–1000 (BFQ, v1 and v2; CFQ's and the cgroup v2 io.weight
/// conversion take 10–1000, checked where the file is known), leaf weights 10–1000.
fn check_blkio_weights(
    path: &str,
    bio: &oci_spec::runtime::LinuxBlockIo,
) -> Result<(), CgroupError> {
    let max = 1_000;
    let check = |field: String, w: Option<u16>, min: u16| match w {
        Some(w) if !(min..=max).contains(&w) => Err(invalid(
            path,
            &field,
            format!("{w} is outside the kernel's range {min}-{max}"),
        )),
        _ => Ok(()),
    };
    check("blockIO.weight".into(), bio.weight(), 1)?;
    check("blockIO.leafWeight".into(), bio.leaf_weight(), 10)?;
    for (i, d) in bio.weight_device().iter().flatten().enumerate() {
        check(format!("blockIO.weightDevice[{i}].weight"), d.weight(), 1)?;
        check(
            format!("blockIO.weightDevice[{i}].leafWeight"),
            d.leaf_weight(),
            10,
        )?;
    }
    Ok(())
}

fn require_v1(path: &str, env: &Env, field: &str, controller: &str) -> Result<(), CgroupError> {
    if env.mode != Mode::V2 && env.v1.contains(controller) {
        return Ok(());
    }
    let why = if env.mode == Mode::V2 {
        format!("{controller} is a cgroup v1 controller and this host runs cgroup v2 only")
    } else {
        format!("the {controller} controller is not mounted (no v1 {controller} hierarchy)")
    };
    Err(unsupported(path, format!("linux.resources.{field}"), why))
}

fn device_plan(path: &str, res: &LinuxResources, env: &Env) -> Result<DevicePlan, CgroupError> {
    let user = devices::parse_rules(res).map_err(|(field, reason)| CgroupError::InvalidValue {
        path: path.to_string(),
        field,
        reason,
    })?;
    if env.mode != Mode::V2 && env.v1.contains("devices") {
        return Ok(DevicePlan::V1(devices::v1_program(&user)));
    }
    if env.mode == Mode::V2 {
        return Ok(DevicePlan::Bpf {
            required: !user.is_empty(),
            rules: devices::v1_program(&user),
        });
    }
    let (why, hint) = (
        "no v1 devices controller is mounted",
        "so no rule can be enforced",
    );
    if let Some((i, r)) = devices::first_v2_unenforceable(&user) {
        return Err(unsupported(
            path,
            format!("linux.resources.devices[{i}]"),
            format!(
                "it allows {:?} beyond the default devices, but {why}, {hint}",
                r.v1_line()
            ),
        ));
    }
    Ok(DevicePlan::Unenforced(why))
}

/// Is `s` a kernel cpu/mem list ("0-3,5")?
fn is_cpu_list(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.split(',').all(|part| {
            let mut it = part.splitn(2, '-');
            let ok = |x: Option<&str>| {
                x.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            };
            match (it.next(), it.next()) {
                (a, None) => ok(a),
                (a, b) => ok(a) && ok(b),
            }
        })
}

/// Huge page sizes from `dir` (`hugepages-2048kB` …) in the kernel's cgroup naming.
pub(crate) fn hugepage_sizes(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(cgroup_size_name(kb))
        })
        .collect()
}

/// The kernel's hugetlb cgroup name for a page of `kb` KiB (mm/hugetlb_cgroup.c mem_fmt).
pub(crate) fn cgroup_size_name(kb: u64) -> String {
    let bytes = kb * 1024;
    const K: u64 = 1024;
    if bytes >= K * K * K {
        format!("{}GB", bytes / (K * K * K))
    } else if bytes >= K * K {
        format!("{}MB", bytes / (K * K))
    } else {
        format!("{}KB", bytes / K)
    }
}
