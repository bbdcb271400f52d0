//! The container's cgroup (v1, v2 and hybrid) through `cgroups-rs`.
//!
//! One idea per submodule: `path` resolves `linux.cgroupsPath`; `layout` finds the mounted
//! hierarchies; `plan` decides, without side effects, whether every requested resource can
//! be enforced here; `apply` writes them (mostly through `cgroups-rs`' `FsManager`);
//! `devices` holds the device rules; `freeze` freezes and thaws; `fsutil` the file
//! operations; `stats` the serializable statistics.
//!
//! The saved [`ContainerCgroup`] records the directory of the cgroup in every hierarchy, so
//! `delete --force` can remove it from the saved state alone.

mod apply;
mod bpf_devices;
mod devices;
mod error;
mod freeze;
mod fsutil;
mod layout;
mod normalize;
mod path;
mod plan;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use devices::spec_device_rules;
pub use error::CgroupError;
pub use layout::Mode;
/// runc's "zero means not set" rule (see the module).
pub use normalize::normalize as normalize_resources;
pub use stats::Stats;

use fsutil::Ctx;
use layout::{Layout, UNIFIED_KEY};
use plan::{Env, Purpose};

/// A container's cgroup, identified by its resolved path. Serializable so `delete --force`
/// can find it again from the saved state alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// The resolved cgroup path, absolute below each hierarchy's root (e.g. `/hull/abc`).
    pub path: String,
    /// The cgroup's directory in each hierarchy, keyed by the hierarchy's controllers
    /// (`"memory"`, `"cpu,cpuacct"`, `"name=systemd"`) or `"unified"` for cgroup2. Empty in a
    /// state written before this field existed: then it is recomputed from the mounts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dirs: BTreeMap<String, PathBuf>,
    /// cgroup2 only: the child cgroup the container's processes were moved to because its
    /// own cgroup also holds a kernel thread (see [`ContainerCgroup::separate_kernel_threads`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_leaf: Option<String>,
}

impl ContainerCgroup {
    /// Resolve `linux.cgroupsPath` (None → the default for `id`) into an absolute path.
    /// `systemd` is the `--systemd-cgroup` flag (`slice:prefix:name` syntax).
    pub fn resolve(
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Result<String, CgroupError> {
        path::resolve(cgroups_path, id, systemd)
    }

    /// The cgroup at `path` as laid out on the current mounts (nothing is created).
    pub fn load(path: &str) -> Result<Self, CgroupError> {
        let path = path::normalize(path)?;
        let layout = Layout::current()?;
        layout.mode()?;
        let dirs = layout.dirs(&path);
        Ok(ContainerCgroup {
            path,
            dirs,
            process_leaf: None,
        })
    }

    /// Delegate the cgroup to host ids `uid`/`gid` (see hull_specs'
    /// `io.hull.cgroup.delegate`): chown its directory in every hierarchy and the files a
    /// manager inside writes to make children and move processes.
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<(), CgroupError> {
        // cgroup v1's and v2's delegation files (kernel's cgroup-v2.rst "Delegation").
        const FILES: [&str; 6] = [
            "cgroup.procs",
            "tasks",
            "cgroup.clone_children",
            "cgroup.subtree_control",
            "cgroup.threads",
            "notify_on_release",
        ];
        let (uid, gid) = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        for (controller, dir) in &self.dirs {
            let chown = |p: &Path| {
                nix::unistd::chown(p, uid, gid).map_err(|e| CgroupError::Io {
                    path: self.path.clone(),
                    controller: controller.clone(),
                    op: "delegate (chown)",
                    file: p.to_path_buf(),
                    source: e.into(),
                })
            };
            chown(dir)?;
            for f in FILES {
                let p = dir.join(f);
                if p.exists() {
                    chown(&p)?;
                }
            }
        }
        tracing::debug!(cgroup = %self.path, uid = uid.map(|u| u.as_raw()), "cgroup delegated");
        Ok(())
    }

    /// How cgroups are set up on this host.
    pub fn host_mode() -> Result<Mode, CgroupError> {
        Layout::current()?.mode()
    }

    /// Create the cgroup in every available hierarchy, apply `resources` and add `pid`.
    /// On error, removes whatever it created (and moves `pid` back where it was).
    pub fn create(
        path: &str,
        resources: Option<&LinuxResources>,
        pid: i32,
    ) -> Result<Self, CgroupError> {
        let (cg, mut undo) = Self::build(path, resources)?;
        undo.original = original_cgroups(pid);
        undo.pid = Some(pid);
        cg.join(pid)?;
        undo.disarm();
        tracing::info!(cgroup = %cg.path, pid, "cgroup created");
        Ok(cg)
    }

    /// [`create`](Self::create) without adding a process: the cgroup exists with its limits
    /// applied and no member yet. Add one with [`add_process`](Self::add_process) (the caller
    /// removes the cgroup with [`destroy`](Self::destroy) if that fails). Lets `create`
    /// overlap the slow first `cgroup.procs` write (an RCU grace period on cgroup v1) with
    /// the container's mount set-up.
    pub fn create_empty(
        path: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        let (cg, mut undo) = Self::build(path, resources)?;
        undo.disarm();
        tracing::info!(cgroup = %cg.path, "cgroup created (no member yet)");
        Ok(cg)
    }

    /// The directories in every hierarchy with `resources` applied; `Undo` removes them
    /// unless disarmed.
    fn build(path: &str, resources: Option<&LinuxResources>) -> Result<(Self, Undo), CgroupError> {
        let path = path::normalize(path)?;
        let layout = Layout::current()?;
        let mode = layout.mode()?;
        check_cgroups_rs_agrees(&path, mode)?;
        let env = Env::probe(&layout, mode);
        let default = LinuxResources::default();
        let res = resources.unwrap_or(&default);
        normalize::warn_ignored(res, &path);
        let res = normalize::normalize(res);
        let res = &res;
        // Refuse before touching anything.
        let plan = plan::check(&path, res, &env, Purpose::Create)?;

        let mut dirs = layout.dirs(&path);
        let mut undo = Undo::new(&path);
        let mut skipped = Vec::new();
        for (key, dir) in &dirs {
            let mountpoint = mountpoint_of(&layout, key);
            let ctx = Ctx {
                path: &path,
                controller: key,
            };
            let optional = key == UNIFIED_KEY && mode == Mode::Hybrid && !plan.needs_unified();
            let created = match fsutil::mkdir_tracked(ctx, &mountpoint, dir) {
                Ok(c) => c,
                Err(e) if optional => {
                    tracing::warn!(cgroup = %path, "not using the hybrid cgroup2 hierarchy: {e}");
                    skipped.push(key.clone());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let fresh = created.last() == Some(dir);
            undo.created
                .extend(created.into_iter().map(|d| (key.clone(), d)));
            if !fresh {
                let mut pids = Vec::new();
                fsutil::procs_recursive(ctx, dir, &mut pids)?;
                if !pids.is_empty() {
                    return Err(CgroupError::NotEmpty {
                        path: path.clone(),
                        controller: key.clone(),
                        count: pids.len(),
                    });
                }
            }
        }
        for key in skipped {
            dirs.remove(&key);
        }
        if let Some((key, dir)) = dir_for(&dirs, "cpuset") {
            let mountpoint = mountpoint_of(&layout, key);
            inherit_cpuset(
                Ctx {
                    path: &path,
                    controller: key,
                },
                &mountpoint,
                dir,
            )?;
        }
        if let (Some(mount), Some(dir)) = (layout.unified.as_ref(), dirs.get(UNIFIED_KEY)) {
            let all = mode == Mode::V2;
            let ctx = Ctx {
                path: &path,
                controller: UNIFIED_KEY,
            };
            enable_subtree(ctx, mount, dir, &plan.unified_needed, all)?;
        }

        let cg = ContainerCgroup {
            path,
            dirs,
            process_leaf: None,
        };
        let target = apply::Target {
            path: &cg.path,
            dirs: &cg.dirs,
            env: &env,
        };
        apply::apply(&target, res, &plan)?;
        Ok((cg, undo))
    }

    /// Add another process (e.g. an exec'd one) to the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        self.join(pid)
    }

    /// The `tasks` files of every cgroup v1 hierarchy, in join order: a single-threaded
    /// process that writes "0" to each joins the container's v1 cgroups without the
    /// global lock (and RCU grace period) every other cgroup move waits for.
    pub fn v1_task_files(&self) -> Vec<PathBuf> {
        Self::join_order(&self.dirs())
            .into_iter()
            .filter(|(k, _)| k.as_str() != UNIFIED_KEY)
            .map(|(_, d)| d.join("tasks"))
            .collect()
    }

    /// [`add_process`](Self::add_process) for the cgroup2 hierarchy only: the process has
    /// joined the v1 ones itself (through [`v1_task_files`](Self::v1_task_files)).
    pub fn add_process_v2_only(&self, pid: i32) -> Result<(), CgroupError> {
        self.join_where(pid, |k| k == UNIFIED_KEY)
    }

    /// blkio before memory for writeback accounting (as cgroups-rs), cgroup2 last.
    fn join_order(dirs: &BTreeMap<String, PathBuf>) -> Vec<(&String, &PathBuf)> {
        let mut order: Vec<(&String, &PathBuf)> = dirs.iter().collect();
        order.sort_by_key(|(k, _)| match k.as_str() {
            "blkio" => 0,
            "memory" => 1,
            UNIFIED_KEY => 3,
            _ => 2,
        });
        order
    }

    fn join(&self, pid: i32) -> Result<(), CgroupError> {
        self.join_where(pid, |_| true)
    }

    fn join_where(&self, pid: i32, wanted: impl Fn(&str) -> bool) -> Result<(), CgroupError> {
        let dirs = self.dirs();
        let value = pid.to_string();
        for (key, dir) in Self::join_order(&dirs) {
            if !wanted(key) {
                continue;
            }
            let ctx = Ctx {
                path: &self.path,
                controller: key,
            };
            let dir = match (&self.process_leaf, key.as_str()) {
                (Some(leaf), UNIFIED_KEY) => dir.join(leaf),
                _ => dir.clone(),
            };
            fsutil::write(ctx, &dir, "cgroup.procs", &value)?;
        }
        Ok(())
    }

    /// All pids in the cgroup (in the host pid namespace), its child cgroups included;
    /// sorted, without duplicates. A cgroup that no longer exists has none.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dirs = self.dirs();
        let pick = ["pids", "freezer", "memory", "cpu", "devices"]
            .iter()
            .find_map(|c| dir_for(&dirs, c))
            .or_else(|| {
                dirs.get_key_value(UNIFIED_KEY)
                    .map(|(k, d)| (k.as_str(), d.as_path()))
            })
            .or_else(|| dirs.iter().next().map(|(k, d)| (k.as_str(), d.as_path())));
        let Some((key, dir)) = pick else {
            return Ok(Vec::new());
        };
        let mut pids = Vec::new();
        fsutil::procs_recursive(
            Ctx {
                path: &self.path,
                controller: key,
            },
            dir,
            &mut pids,
        )?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Freeze (`true`) or thaw (`false`) every process in the cgroup, waiting until the
    /// kernel reports the new state.
    pub fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let dirs = self.dirs();
        if let Some((_, dir)) = dir_for(&dirs, "freezer") {
            return freeze::set(&self.path, freeze::Freezer::V1(dir), frozen);
        }
        match self
            .freezer_v2_dir(&dirs)
            .filter(|d| d.join("cgroup.freeze").exists())
        {
            Some(dir) => freeze::set(&self.path, freeze::Freezer::V2(&dir), frozen),
            None => Err(CgroupError::Unsupported {
                path: self.path.clone(),
                field: if frozen { "pause" } else { "resume" }.into(),
                reason: "no v1 freezer hierarchy and no cgroup2 cgroup.freeze".into(),
            }),
        }
    }

    /// True when the cgroup is frozen (the container is paused). One read of the freezer
    /// state; false when there is no freezer or the cgroup is gone.
    pub fn is_frozen(&self) -> bool {
        let dirs = self.dirs();
        if let Some((_, dir)) = dir_for(&dirs, "freezer") {
            return std::fs::read_to_string(dir.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false);
        }
        self.freezer_v2_dir(&dirs)
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.freeze")).ok())
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
    }

    /// The cgroup2 directory `pause` freezes: the process leaf when there is one.
    fn freezer_v2_dir(&self, dirs: &BTreeMap<String, PathBuf>) -> Option<PathBuf> {
        let dir = dirs.get(UNIFIED_KEY)?;
        Some(match &self.process_leaf {
            Some(leaf) => dir.join(leaf),
            None => dir.clone(),
        })
    }

    /// For VM containers on a cgroup2 freezer. KVM attaches a kernel worker thread of each
    /// VM (`kvm-nx-lpage-recovery-PID`, Linux before 6.13) to its creator's cgroup, and the
    /// cgroup2 freezer never reports a cgroup holding a kernel thread as frozen, so `pause`
    /// could never succeed. The container's processes move into the child cgroup
    /// [`PROCESS_LEAF`], which `pause` freezes and later processes join; the kernel thread
    /// stays behind, still inside the container's limits. A v1 freezer skips kernel threads:
    /// nothing to do there, nor when the cgroup holds no kernel thread.
    pub fn separate_kernel_threads(&mut self) -> Result<(), CgroupError> {
        let dirs = self.dirs();
        if self.process_leaf.is_some() || dir_for(&dirs, "freezer").is_some() {
            return Ok(());
        }
        let Some(dir) = dirs.get(UNIFIED_KEY) else {
            return Ok(());
        };
        let ctx = Ctx {
            path: &self.path,
            controller: UNIFIED_KEY,
        };
        let pids: Vec<i32> = fsutil::read(ctx, dir, "cgroup.procs")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let (kernel, user): (Vec<i32>, Vec<i32>) =
            pids.into_iter().partition(|&p| is_kernel_thread(p));
        if kernel.is_empty() {
            return Ok(());
        }
        let leaf = dir.join(PROCESS_LEAF);
        fsutil::mkdir_tracked(ctx, dir, &leaf)?;
        for pid in user {
            match fsutil::write(ctx, &leaf, "cgroup.procs", &pid.to_string()) {
                Ok(()) => {}
                // Exited meanwhile.
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(cgroup = %self.path, ?kernel, "processes moved to {PROCESS_LEAF}: the cgroup holds kernel threads");
        self.process_leaf = Some(PROCESS_LEAF.to_string());
        Ok(())
    }

    /// Signal every process in the cgroup (freezing it around the signal so no process
    /// escapes by forking). Processes that are already gone are skipped.
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        let frozen = match self.set_frozen(true) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(cgroup = %self.path, "signalling without freezing: {e}");
                false
            }
        };
        let result = self.pinned_members().and_then(|members| {
            let mut first_err = None;
            for p in members {
                if let Err(e) = p.signal(signal) {
                    if e != nix::Error::ESRCH && first_err.is_none() {
                        first_err = Some(CgroupError::Signal {
                            path: self.path.clone(),
                            pid: p.pid(),
                            signal,
                            source: std::io::Error::from_raw_os_error(e as i32),
                        });
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        });
        let thawed = if frozen {
            self.set_frozen(false)
        } else {
            Ok(())
        };
        result.and(thawed)
    }

    /// The cgroup's processes, each pinned by a pidfd: a pid listed, then opened, then
    /// listed again is the member's (had it exited and its pid gone to a process outside
    /// the cgroup in between, the second listing would not name it), so signalling these
    /// never reaches a process outside the container.
    fn pinned_members(&self) -> Result<Vec<crate::process::PidFd>, CgroupError> {
        let pinned: Vec<crate::process::PidFd> = self
            .pids()?
            .into_iter()
            .filter_map(|pid| crate::process::PidFd::open(pid, 0).ok().flatten())
            .collect();
        let still = self.pids()?;
        Ok(pinned
            .into_iter()
            .filter(|p| still.binary_search(&p.pid()).is_ok())
            .collect())
    }

    /// Remove the cgroup directories (the processes must be gone), child cgroups first,
    /// retrying briefly while the kernel reports EBUSY. Idempotent: missing directories are
    /// not an error. Works from the deserialized struct alone.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let rel = self.path.trim_start_matches('/');
        let mut first_err = None;
        for (key, dir) in &self.dirs() {
            if rel.is_empty() || !dir.ends_with(rel) {
                tracing::warn!(cgroup = %self.path, dir = %dir.display(), "not removing a directory that does not end with the cgroup path");
                continue;
            }
            let ctx = Ctx {
                path: &self.path,
                controller: key,
            };
            if let Err(e) = fsutil::remove_cgroup_dir(ctx, dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Change the resources of a running container (`hull update`). Device rules are left
    /// as they are (as `runc update`); everything else in `resources` is applied.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let layout = Layout::current()?;
        let mode = layout.mode()?;
        check_cgroups_rs_agrees(&self.path, mode)?;
        let env = Env::probe(&layout, mode);
        normalize::warn_ignored(resources, &self.path);
        let resources = &normalize::normalize(resources);
        let plan = plan::check(&self.path, resources, &env, Purpose::Update)?;
        let dirs = self.dirs();
        if let (Some(mount), Some(dir)) = (layout.unified.as_ref(), dirs.get(UNIFIED_KEY)) {
            let ctx = Ctx {
                path: &self.path,
                controller: UNIFIED_KEY,
            };
            enable_subtree(ctx, mount, dir, &plan.unified_needed, false)?;
        }
        let target = apply::Target {
            path: &self.path,
            dirs: &dirs,
            env: &env,
        };
        apply::apply(&target, resources, &plan)
    }

    /// Statistics of the cgroup (through `cgroups-rs`); counters of missing controllers are 0.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        use cgroups_rs::manager::{FsManager, Manager};
        let m =
            FsManager::new(self.path.trim_start_matches('/')).map_err(|e| CgroupError::Apply {
                path: self.path.clone(),
                controller: "*".into(),
                field: "stats".into(),
                detail: error::chain(&e),
            })?;
        Ok(Stats::from(m.stats()))
    }

    /// The saved directories, or (for an old state without them) the current layout's.
    fn dirs(&self) -> BTreeMap<String, PathBuf> {
        if !self.dirs.is_empty() {
            return self.dirs.clone();
        }
        Layout::current()
            .map(|l| l.dirs(&self.path))
            .unwrap_or_default()
    }
}

/// The child cgroup of [`ContainerCgroup::separate_kernel_threads`].
pub const PROCESS_LEAF: &str = "processes";

/// True when `pid` is a kernel thread (`PF_KTHREAD` in the flags of `/proc/PID/stat`).
fn is_kernel_thread(pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command (which may hold spaces): state is 3rd, flags 9th.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|f| f & PF_KTHREAD != 0)
}

/// The directory of the hierarchy holding `controller` (a key listing it), if any.
fn dir_for<'a>(
    dirs: &'a BTreeMap<String, PathBuf>,
    controller: &str,
) -> Option<(&'a str, &'a Path)> {
    dirs.iter()
        .find(|(k, _)| k.as_str() != UNIFIED_KEY && k.split(',').any(|c| c == controller))
        .map(|(k, d)| (k.as_str(), d.as_path()))
}

fn mountpoint_of(layout: &Layout, key: &str) -> PathBuf {
    if key == UNIFIED_KEY {
        return layout.unified.clone().unwrap_or_default();
    }
    layout
        .v1
        .iter()
        .find(|h| h.key() == key)
        .map(|h| h.mountpoint.clone())
        .unwrap_or_default()
}

/// cgroups-rs decides v1/v2 on its own (statfs of /sys/fs/cgroup); make sure it sees what we
/// see, or its writes would go to the wrong place.
fn check_cgroups_rs_agrees(path: &str, mode: Mode) -> Result<(), CgroupError> {
    let rs_v2 = cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode();
    if rs_v2 != (mode == Mode::V2) {
        return Err(CgroupError::Unsupported {
            path: path.to_string(),
            field: "cgroups".into(),
            reason: format!(
                "the mounts say {mode:?} but cgroups-rs sees {} at /sys/fs/cgroup",
                if rs_v2 { "cgroup2" } else { "no cgroup2" }
            ),
        });
    }
    Ok(())
}

/// Gives every level from the hierarchy root down to `leaf` non-empty `cpuset.cpus` and
/// `cpuset.mems` (copied from the parent), without which no task can join.
fn inherit_cpuset(ctx: Ctx<'_>, mountpoint: &Path, leaf: &Path) -> Result<(), CgroupError> {
    let rel = leaf.strip_prefix(mountpoint).unwrap_or(Path::new(""));
    let mut parent = mountpoint.to_path_buf();
    for comp in rel.components() {
        let dir = parent.join(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if fsutil::read(ctx, &dir, file)?.is_empty() {
                let value = fsutil::read(ctx, &parent, file)?;
                if value.is_empty() {
                    return Err(CgroupError::Unsupported {
                        path: ctx.path.to_string(),
                        field: "cpuset".into(),
                        reason: format!("{} is empty", parent.join(file).display()),
                    });
                }
                fsutil::write(ctx, &dir, file, &value)?;
            }
        }
        parent = dir;
    }
    Ok(())
}

/// Enables controllers in `cgroup.subtree_control` of every ancestor of `leaf` (from the
/// cgroup2 root down to its parent): the `needed` ones must succeed; with `all`, every other
/// available controller is enabled too, best effort (pure v2, as runc).
fn enable_subtree(
    ctx: Ctx<'_>,
    mount: &Path,
    leaf: &Path,
    needed: &BTreeSet<String>,
    all: bool,
) -> Result<(), CgroupError> {
    if needed.is_empty() && !all {
        return Ok(());
    }
    let rel = leaf.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut level = mount.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for comp in comps {
        let available: BTreeSet<String> = fsutil::read(ctx, &level, "cgroup.controllers")?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let enabled: BTreeSet<String> = fsutil::read(ctx, &level, "cgroup.subtree_control")?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let want: BTreeSet<&String> = if all {
            available.iter().chain(needed.iter()).collect()
        } else {
            needed.iter().collect()
        };
        for c in want {
            if enabled.contains(c) {
                continue;
            }
            if !available.contains(c) {
                return Err(CgroupError::Unsupported {
                    path: ctx.path.to_string(),
                    field: format!("{c} controller"),
                    reason: format!(
                        "{} does not offer it",
                        level.join("cgroup.controllers").display()
                    ),
                });
            }
            match fsutil::write(ctx, &level, "cgroup.subtree_control", &format!("+{c}")) {
                Ok(()) => {}
                Err(e) if needed.contains(c) => return Err(e),
                Err(e) => tracing::warn!("not enabling {c}: {e}"),
            }
        }
        level.push(comp);
    }
    Ok(())
}

/// Where `pid` is now: `(controllers, path)` per line of /proc/<pid>/cgroup.
fn original_cgroups(pid: i32) -> Vec<(Vec<String>, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, p) = (it.next()?, it.next()?, it.next()?);
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((ctrls, p.to_string()))
        })
        .collect()
}

/// Undoes a half-done `create` when dropped armed: moves the pid back where it was, then
/// removes the directories created (deepest first).
struct Undo {
    path: String,
    armed: bool,
    created: Vec<(String, PathBuf)>,
    pid: Option<i32>,
    original: Vec<(Vec<String>, String)>,
}

impl Undo {
    fn new(path: &str) -> Self {
        Undo {
            path: path.to_string(),
            armed: true,
            created: Vec::new(),
            pid: None,
            original: Vec::new(),
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::warn!(cgroup = %self.path, "cgroup creation failed, removing what was created");
        if let (Some(pid), Ok(layout)) = (self.pid, Layout::current()) {
            for (key, mountpoint) in layout
                .v1
                .iter()
                .map(|h| (h.key(), h.mountpoint.clone()))
                .chain(layout.unified.clone().map(|u| (UNIFIED_KEY.to_string(), u)))
            {
                let first = key.split(',').next().unwrap_or_default().to_string();
                let orig = self.original.iter().find(|(ctrls, _)| {
                    if key == UNIFIED_KEY {
                        ctrls.is_empty()
                    } else {
                        ctrls.contains(&first)
                    }
                });
                if let Some((_, p)) = orig {
                    let dir = mountpoint.join(p.trim_start_matches('/'));
                    let _ = std::fs::write(dir.join("cgroup.procs"), pid.to_string());
                }
            }
        }
        for (key, dir) in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(controller = %key, dir = %dir.display(), "cannot remove: {e}");
            }
        }
    }
}
