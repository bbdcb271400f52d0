//! Applying `process` of the OCI config to the container init before it reports Ready (so
//! that a failure fails `create`, as in runc; only the exec fifo, the startContainer hooks
//! and the `execve` remain after `start`).
//!
//! The container init is single-threaded and has already pivoted into the container's root
//! when [`apply`] runs. Everything is applied in runc's order, one small public function per
//! item so each can be exercised on its own (the root-only tests fork a child per item):
//!
//! 1. [`set_rlimits`] — `process.rlimits` (setrlimit)
//! 2. [`set_oom_score_adj`] — `process.oomScoreAdj` (`/proc/self/oom_score_adj`)
//! 3. [`set_io_priority`] — `process.ioPriority` (ioprio_set)
//! 4. [`set_scheduler`] — `process.scheduler` (sched_setattr)
//! 5. [`set_personality`] — `linux.personality` (only through [`apply_with_personality`],
//!    since it is not part of `process`)
//! 6. [`set_umask`] — `process.user.umask`
//! 7. [`drop_bounding_set`] — `process.capabilities.bounding`
//! 8. [`switch_user`] — `additionalGids`, `gid`, `uid`, keeping the permitted set across the
//!    switch (PR_SET_KEEPCAPS)
//! 9. [`set_capabilities`] — effective/permitted/inheritable, then ambient
//! 10. [`set_no_new_privileges`] — `process.noNewPrivileges`
//!
//! `cwd`, `env`, `args` are not applied here; the caller uses [`find_executable`] and
//! [`ensure_home`] for runc's executable lookup and `HOME` default.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{
    Capabilities, IOPriorityClass, LinuxCapabilities, LinuxIOPriority, LinuxPersonality,
    LinuxPersonalityDomain, LinuxSchedulerFlag, LinuxSchedulerPolicy, PosixRlimit, PosixRlimitType,
    Process, Scheduler, User,
};

#[cfg(test)]
mod tests;

/// runc's PATH when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A failure to apply one field of `process`; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ProcessSetupError {
    /// A system call failed, e.g.
    /// `process.rlimits[1] RLIMIT_NOFILE: setrlimit: EPERM (raising a hard limit needs CAP_SYS_RESOURCE)`.
    #[error("{field}: {op}: {errno:?} ({})", .hint.as_deref().unwrap_or(.errno.desc()))]
    Syscall {
        field: String,
        op: String,
        errno: Errno,
        hint: Option<String>,
    },
    /// A value that cannot be applied at all (out of range, unsupported).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Go's `exec.ErrNotFound`, as runc reports it.
    #[error("exec: {arg0:?}: executable file not found in $PATH")]
    ExecNotFound { arg0: String },
    /// The explicit path (it has a `/`) cannot be stat'ed.
    #[error("exec: {arg0:?}: stat {arg0}: {reason}")]
    ExecStat { arg0: String, reason: String },
    /// The explicit path is not a regular file with an execute bit.
    #[error("exec: {arg0:?}: permission denied")]
    ExecPermission { arg0: String },
}

impl ProcessSetupError {
    fn syscall(field: impl Into<String>, op: impl Into<String>, errno: Errno) -> Self {
        Self::Syscall {
            field: field.into(),
            op: op.into(),
            errno,
            hint: None,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// For a failure after a seccomp filter was loaded (noNewPrivileges false): an EPERM may
    /// come from the filter rather than the kernel's own checks; say so.
    pub fn after_seccomp_load(mut self) -> Self {
        if let Self::Syscall {
            op, errno, hint, ..
        } = &mut self
        {
            if *errno == Errno::EPERM {
                let base = hint.take().unwrap_or_else(|| errno.desc().to_string());
                let call = op.split(['(', ' ']).next().unwrap_or(op.as_str());
                *hint = Some(format!(
                    "{base}; or linux.seccomp does not allow {call}: without \
                     process.noNewPrivileges the filter is loaded before the user switch"
                ));
            }
        }
        self
    }

    fn with_hint(mut self, new: Option<String>) -> Self {
        if let Self::Syscall { hint, .. } = &mut self {
            if new.is_some() {
                *hint = new;
            }
        }
        self
    }
}

type Result<T> = std::result::Result<T, ProcessSetupError>;

/// Everything of `process` that is applied to the calling process before `execve`, in
/// runc's order: rlimits, oomScoreAdj, ioPriority, scheduler, umask, capabilities' bounding
/// set, user (additionalGids, gid, uid — keeping caps across the switch), then the
/// effective/permitted/inheritable/ambient sets, then noNewPrivileges.
/// `cwd` and `env` are not applied here (the caller does them). `linux.personality` is not
/// part of `process`: use [`apply_with_personality`] to apply it at its place in the order.
pub fn apply(process: &Process) -> Result<()> {
    apply_with_personality(process, None)
}

/// [`apply`], with `linux.personality` applied between the scheduler and the umask, as runc
/// does.
pub fn apply_with_personality(
    process: &Process,
    personality: Option<&LinuxPersonality>,
) -> Result<()> {
    apply_before_user_switch(process, personality)?.finish()
}

/// The steps of [`apply_with_personality`] up to the user switch (rlimits … bounding set);
/// [`BeforeUserSwitch::finish`] does the rest. The seam lets a seccomp filter be loaded
/// while init still has the CAP_SYS_ADMIN that loading needs without no_new_privs.
pub fn apply_before_user_switch<'a>(
    process: &'a Process,
    personality: Option<&LinuxPersonality>,
) -> Result<BeforeUserSwitch<'a>> {
    if let Some(rlimits) = process.rlimits() {
        set_rlimits(rlimits)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        set_oom_score_adj(adj)?;
    }
    if let Some(prio) = process.io_priority() {
        set_io_priority(prio)?;
    }
    if let Some(sched) = process.scheduler() {
        set_scheduler(sched)?;
    }
    if let Some(pers) = personality {
        set_personality(pers)?;
    }
    if let Some(mask) = process.user().umask() {
        set_umask(mask)?;
    }
    drop_bounding_set(process.capabilities().as_ref())?;
    Ok(BeforeUserSwitch { process })
}

/// What remains of the process set-up after [`apply_before_user_switch`].
#[must_use = "the user switch and capabilities are applied by finish()"]
pub struct BeforeUserSwitch<'a> {
    process: &'a Process,
}

impl BeforeUserSwitch<'_> {
    /// The user switch, the capability sets, then noNewPrivileges.
    pub fn finish(self) -> Result<()> {
        switch_user(self.process.user())?;
        set_capabilities(self.process.capabilities().as_ref())?;
        if self.process.no_new_privileges() == Some(true) {
            set_no_new_privileges()?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// rlimits

/// The kernel resource for an OCI rlimit type.
pub fn rlimit_resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// `process.rlimits`, in order; the first failure names its index and type.
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    rlimits
        .iter()
        .enumerate()
        .try_for_each(|(i, rl)| set_rlimit(i, rl))
}

/// One entry of `process.rlimits` (`index` is only for the error message).
pub fn set_rlimit(index: usize, rl: &PosixRlimit) -> Result<()> {
    let field = format!("process.rlimits[{index}] {}", rl.typ());
    let resource = rlimit_resource(rl.typ());
    if rl.soft() > rl.hard() {
        return Err(ProcessSetupError::invalid(
            field,
            format!("soft limit {} is above hard limit {}", rl.soft(), rl.hard()),
        ));
    }
    setrlimit(resource, rl.soft(), rl.hard()).map_err(|errno| {
        let hint = match errno {
            Errno::EPERM => {
                let current = nix::sys::resource::getrlimit(resource)
                    .map(|(_, hard)| format!(" (currently {hard})"))
                    .unwrap_or_default();
                let mut h = format!(
                    "raising a hard limit needs CAP_SYS_RESOURCE; requested hard {}{current}",
                    rl.hard()
                );
                if rl.typ() == PosixRlimitType::RlimitNofile {
                    h.push_str(", and RLIMIT_NOFILE cannot exceed /proc/sys/fs/nr_open");
                }
                Some(h)
            }
            _ => None,
        };
        ProcessSetupError::syscall(field, "setrlimit", errno).with_hint(hint)
    })
}

// ---------------------------------------------------------------------------------------------
// oomScoreAdj

/// `process.oomScoreAdj`: written to `/proc/self/oom_score_adj` (of a private procfs).
pub fn set_oom_score_adj(adj: i32) -> Result<()> {
    let field = format!("process.oomScoreAdj {adj}");
    if !(-1000..=1000).contains(&adj) {
        return Err(ProcessSetupError::invalid(
            field,
            "must be between -1000 and 1000",
        ));
    }
    // Through a procfs of init's own: never redirected by a mount (CVE-2025-52881).
    crate::procfs::PrivateProc::shared()
        .map_err(std::io::Error::from)
        .and_then(|p| p.write("self/oom_score_adj", adj.to_string().as_bytes()))
        .map_err(|e| {
            let errno = io_errno(&e);
            let hint = matches!(errno, Errno::EACCES | Errno::EPERM).then(|| {
                "lowering oom_score_adj below its current minimum needs CAP_SYS_RESOURCE"
                    .to_string()
            });
            ProcessSetupError::syscall(field, "write /proc/self/oom_score_adj", errno)
                .with_hint(hint)
        })
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)
}

// ---------------------------------------------------------------------------------------------
// ioPriority

const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;

/// The kernel's `IOPRIO_CLASS_*` number for an OCI class.
pub fn io_priority_class(class: IOPriorityClass) -> u32 {
    match class {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    }
}

/// The `ioprio` value for ioprio_set: `class << 13 | priority` (priority 0..=7).
pub fn io_priority_value(prio: &LinuxIOPriority) -> Result<u32> {
    let priority = prio.priority();
    if !(0..=7).contains(&priority) {
        return Err(ProcessSetupError::invalid(
            format!("process.ioPriority.priority {priority}"),
            "must be between 0 and 7",
        ));
    }
    Ok((io_priority_class(prio.class()) << IOPRIO_CLASS_SHIFT) | priority as u32)
}

/// `process.ioPriority`: ioprio_set(IOPRIO_WHO_PROCESS, 0, class|priority).
pub fn set_io_priority(prio: &LinuxIOPriority) -> Result<()> {
    let value = io_priority_value(prio)?;
    sys_ioprio_set(value).map_err(|errno| {
        ProcessSetupError::syscall(
            format!("process.ioPriority {} {}", prio.class(), prio.priority()),
            "ioprio_set",
            errno,
        )
    })
}

fn sys_ioprio_set(value: u32) -> std::result::Result<(), Errno> {
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_int,
            value as libc::c_int,
        )
    };
    Errno::result(rc).map(drop)
}

// ---------------------------------------------------------------------------------------------
// scheduler

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER1, 56 bytes, like runc's).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedAttr {
    pub size: u32,
    pub sched_policy: u32,
    pub sched_flags: u64,
    pub sched_nice: i32,
    pub sched_priority: u32,
    pub sched_runtime: u64,
    pub sched_deadline: u64,
    pub sched_period: u64,
    pub sched_util_min: u32,
    pub sched_util_max: u32,
}

/// The kernel's `SCHED_*` policy number.
pub fn sched_policy_number(policy: LinuxSchedulerPolicy) -> u32 {
    match policy {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }
}

/// The kernel's `SCHED_FLAG_*` bit.
pub fn sched_flag_bit(flag: LinuxSchedulerFlag) -> u64 {
    match flag {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// `process.scheduler` as the kernel's `sched_attr`, validated as runc does.
pub fn sched_attr(s: &Scheduler) -> Result<SchedAttr> {
    let policy = *s.policy();
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(ProcessSetupError::invalid(
            format!("process.scheduler.nice {nice}"),
            "must be between -20 and 19",
        ));
    }
    let priority = s.priority().unwrap_or(0);
    let realtime = matches!(
        policy,
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    if realtime && !(1..=99).contains(&priority) {
        return Err(ProcessSetupError::invalid(
            format!("process.scheduler.priority {priority}"),
            format!("must be between 1 and 99 for {policy}"),
        ));
    }
    if !realtime && priority != 0 {
        return Err(ProcessSetupError::invalid(
            format!("process.scheduler.priority {priority}"),
            format!("must be 0 (or unset) for {policy}"),
        ));
    }
    let deadline_fields = s.runtime().is_some() || s.deadline().is_some() || s.period().is_some();
    if policy != LinuxSchedulerPolicy::SchedDeadline && deadline_fields {
        return Err(ProcessSetupError::invalid(
            "process.scheduler",
            format!("runtime, deadline and period are only for SCHED_DEADLINE, not {policy}"),
        ));
    }
    let flags = s
        .flags()
        .iter()
        .flatten()
        .fold(0, |acc, f| acc | sched_flag_bit(*f));
    Ok(SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: sched_policy_number(policy),
        sched_flags: flags,
        sched_nice: nice,
        sched_priority: priority as u32,
        sched_runtime: s.runtime().unwrap_or(0),
        sched_deadline: s.deadline().unwrap_or(0),
        sched_period: s.period().unwrap_or(0),
        sched_util_min: 0,
        sched_util_max: 0,
    })
}

/// `process.scheduler`: sched_setattr(0, attr, 0).
pub fn set_scheduler(s: &Scheduler) -> Result<()> {
    let attr = sched_attr(s)?;
    sys_sched_setattr(&attr).map_err(|errno| {
        let hint = match errno {
            Errno::EPERM => {
                Some("realtime policies and lower nice values need CAP_SYS_NICE".to_string())
            }
            Errno::EBUSY => Some("SCHED_DEADLINE bandwidth is not available".to_string()),
            _ => None,
        };
        ProcessSetupError::syscall(
            format!("process.scheduler {}", s.policy()),
            "sched_setattr",
            errno,
        )
        .with_hint(hint)
    })
}

fn sys_sched_setattr(attr: &SchedAttr) -> std::result::Result<(), Errno> {
    // SAFETY: `attr` is a valid, initialised `struct sched_attr` whose `size` field matches its
    // layout; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::pid_t,
            attr as *const SchedAttr,
            0 as libc::c_uint,
        )
    };
    Errno::result(rc).map(drop)
}

// ---------------------------------------------------------------------------------------------
// personality

/// The kernel's `PER_*` value for an OCI personality domain.
pub fn personality_value(domain: LinuxPersonalityDomain) -> libc::c_int {
    match domain {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    }
}

/// `linux.personality`: the domain only (runc ignores `flags`, and so do we).
pub fn set_personality(p: &LinuxPersonality) -> Result<()> {
    if p.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        tracing::warn!("linux.personality.flags are not supported and are ignored");
    }
    let persona = nix::sys::personality::Persona::from_bits_retain(personality_value(p.domain()));
    nix::sys::personality::set(persona)
        .map(drop)
        .map_err(|errno| {
            ProcessSetupError::syscall(
                format!("linux.personality {}", p.domain()),
                "personality",
                errno,
            )
        })
}

// ---------------------------------------------------------------------------------------------
// umask

/// `process.user.umask`.
pub fn set_umask(mask: u32) -> Result<()> {
    if mask > 0o777 {
        return Err(ProcessSetupError::invalid(
            format!("process.user.umask {mask:#o}"),
            "must be at most 0777",
        ));
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as _));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// capabilities

/// The `caps` crate's capability for an OCI one, by its `CAP_*` name; `None` when the `caps`
/// crate does not know it.
pub fn oci_to_cap(cap: &oci_spec::runtime::Capability) -> Option<caps::Capability> {
    let name = match serde_json::to_value(cap) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("CAP_{cap}"),
    };
    cap_from_name(&name)
}

/// A capability by name: `CAP_KILL`, `kill` or `KILL`.
pub fn cap_from_name(name: &str) -> Option<caps::Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let canonical = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    canonical.parse().ok()
}

/// The capabilities supported by the running kernel (up to `cap_last_cap`).
pub fn supported_caps() -> CapsHashSet {
    caps::runtime::thread_all_supported()
}

/// One OCI capability set, converted; a missing set is empty, and capabilities that are
/// unknown or not supported by the kernel are left out with a warning (runc's behaviour).
pub fn cap_set(field: &str, set: Option<&Capabilities>, supported: &CapsHashSet) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    let mut unknown = Vec::new();
    for c in set.into_iter().flatten() {
        match oci_to_cap(c) {
            Some(cap) if supported.contains(&cap) => {
                out.insert(cap);
            }
            _ => unknown.push(c.to_string()),
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        tracing::warn!(
            "{field}: ignoring unknown or unavailable capabilities: {}",
            unknown.join(", ")
        );
    }
    out
}

fn caps_error(field: &str, op: String, e: caps::errors::CapsError) -> ProcessSetupError {
    // The caps crate flattens the OS error into its message ("... (os error 1)").
    let msg = e.to_string();
    let errno = msg
        .rsplit_once("(os error ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse::<i32>().ok())
        .map(Errno::from_raw);
    match errno {
        Some(errno) => {
            let hint = (errno == Errno::EPERM).then(|| {
                "a capability must be in the permitted set to be granted (and, for ambient, \
                 in the inheritable set too)"
                    .to_string()
            });
            ProcessSetupError::syscall(field, op, errno).with_hint(hint)
        }
        None => ProcessSetupError::invalid(field, format!("{op}: {msg}")),
    }
}

/// `process.capabilities.bounding`: drop every supported capability that is not listed
/// (a missing `capabilities` or `bounding` drops them all, as runc does). Needs CAP_SETPCAP,
/// so it runs before the user switch.
pub fn drop_bounding_set(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let supported = supported_caps();
    let keep = cap_set(
        "process.capabilities.bounding",
        caps.and_then(|c| c.bounding().as_ref()),
        &supported,
    );
    let mut drop: Vec<_> = supported.difference(&keep).copied().collect();
    drop.sort_by_key(|c| c.index());
    for cap in drop {
        drop_from_bounding(cap).map_err(|e| {
            caps_error(
                "process.capabilities.bounding",
                format!("drop {cap} from the bounding set"),
                e,
            )
        })?;
    }
    Ok(())
}

/// One `PR_CAPBSET_DROP` (the `caps` crate reads the set before each drop, doubling the
/// system calls on the container's start path).
fn drop_from_bounding(cap: caps::Capability) -> std::result::Result<(), caps::errors::CapsError> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap.index() as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(caps::errors::CapsError::from(format!(
            "PR_CAPBSET_DROP: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// `process.capabilities.{inheritable,effective,permitted,ambient}`, exactly as listed
/// (missing sets are empty). Runs after the user switch; the permitted set can only shrink.
pub fn set_capabilities(caps: Option<&LinuxCapabilities>) -> Result<()> {
    let supported = supported_caps();
    let get = |name: &str, set: Option<&Capabilities>| {
        cap_set(&format!("process.capabilities.{name}"), set, &supported)
    };
    let inheritable = get("inheritable", caps.and_then(|c| c.inheritable().as_ref()));
    let effective = get("effective", caps.and_then(|c| c.effective().as_ref()));
    let permitted = get("permitted", caps.and_then(|c| c.permitted().as_ref()));
    let ambient = get("ambient", caps.and_then(|c| c.ambient().as_ref()));

    // One capset with all three would be checked against the old permitted set; setting
    // inheritable, then effective, then permitted passes exactly the same kernel checks.
    for (name, set, value) in [
        ("inheritable", CapSet::Inheritable, &inheritable),
        ("effective", CapSet::Effective, &effective),
        ("permitted", CapSet::Permitted, &permitted),
    ] {
        caps::set(None, set, value).map_err(|e| {
            let err = caps_error(
                &format!("process.capabilities.{name}"),
                format!("capset {}", names(value)),
                e,
            );
            err.with_hint(ungrantable_hint(value))
        })?;
    }
    set_ambient(&ambient)
}

/// When `wanted` holds capabilities init's permitted set lacks (the host, e.g. a root
/// without CAP_SYS_RESOURCE, cannot grant them): a hint naming them.
fn ungrantable_hint(wanted: &CapsHashSet) -> Option<String> {
    let permitted = caps::read(None, CapSet::Permitted).ok()?;
    let missing: CapsHashSet = wanted.difference(&permitted).copied().collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} cannot be granted: not in the runtime's own permitted or bounding set on this host",
            names(&missing)
        )
    })
}

fn set_ambient(ambient: &CapsHashSet) -> Result<()> {
    if caps::runtime::ambient_set_supported().is_err() {
        if !ambient.is_empty() {
            tracing::warn!("process.capabilities.ambient: not supported by this kernel, ignored");
        }
        return Ok(());
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| {
        caps_error(
            "process.capabilities.ambient",
            "clear the ambient set".into(),
            e,
        )
    })?;
    let mut list: Vec<_> = ambient.iter().copied().collect();
    list.sort_by_key(|c| c.index());
    // As runc 1.2: an ambient capability the kernel refuses (not both permitted and
    // inheritable, e.g. with runc's default spec) is a warning, not a failure.
    for cap in list {
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            tracing::warn!("process.capabilities.ambient: cannot raise {cap}: {e}");
        }
    }
    Ok(())
}

fn names(set: &CapsHashSet) -> String {
    let mut v: Vec<_> = set.iter().collect();
    v.sort_by_key(|c| c.index());
    let v: Vec<String> = v.iter().map(|c| c.to_string()).collect();
    format!("[{}]", v.join(" "))
}

// ---------------------------------------------------------------------------------------------
// user

/// Whether setgroups(2) is allowed: false when `/proc/self/setgroups` says `deny` (a user
/// namespace whose gid map was written by an unprivileged process).
pub fn setgroups_allowed() -> bool {
    setgroups_allowed_in(Path::new("/proc/self/setgroups"))
}

/// [`setgroups_allowed`] reading the given file (a missing file means allowed).
pub fn setgroups_allowed_in(path: &Path) -> bool {
    fs::read_to_string(path).map_or(true, |s| s.trim() != "deny")
}

/// `process.user`: setgroups(additionalGids) (skipped when setgroups is denied), then
/// setresgid(gid), PR_SET_KEEPCAPS, setresuid(uid), and PR_SET_KEEPCAPS cleared again.
/// The permitted set survives the switch; the effective set is restored by
/// [`set_capabilities`].
pub fn switch_user(user: &User) -> Result<()> {
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if setgroups_allowed() {
        // Called even with an empty list: it clears the groups the init inherited.
        setgroups(&gids).map_err(|errno| {
            let hint = (errno == Errno::EINVAL)
                .then(|| "a group is not mapped in the user namespace".to_string());
            ProcessSetupError::syscall(
                format!(
                    "process.user.additionalGids {:?}",
                    user.additional_gids().as_deref().unwrap_or(&[])
                ),
                "setgroups",
                errno,
            )
            .with_hint(hint)
        })?;
    } else if !gids.is_empty() {
        tracing::warn!("process.user.additionalGids: /proc/self/setgroups is \"deny\"; not set");
    }

    let not_mapped = |what: &str| format!("{what} is not mapped in the user namespace");
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|errno| {
        ProcessSetupError::syscall(format!("process.user.gid {gid}"), "setresgid", errno)
            .with_hint((errno == Errno::EINVAL).then(|| not_mapped("the gid")))
    })?;

    nix::sys::prctl::set_keepcaps(true).map_err(|errno| {
        ProcessSetupError::syscall("process.user", "prctl(PR_SET_KEEPCAPS, 1)", errno)
    })?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|errno| {
        ProcessSetupError::syscall(format!("process.user.uid {uid}"), "setresuid", errno)
            .with_hint((errno == Errno::EINVAL).then(|| not_mapped("the uid")))
    })?;
    nix::sys::prctl::set_keepcaps(false).map_err(|errno| {
        ProcessSetupError::syscall("process.user", "prctl(PR_SET_KEEPCAPS, 0)", errno)
    })
}

// ---------------------------------------------------------------------------------------------
// noNewPrivileges

/// `process.noNewPrivileges: true`: prctl(PR_SET_NO_NEW_PRIVS, 1).
pub fn set_no_new_privileges() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(|errno| {
        ProcessSetupError::syscall(
            "process.noNewPrivileges",
            "prctl(PR_SET_NO_NEW_PRIVS)",
            errno,
        )
    })
}

// ---------------------------------------------------------------------------------------------
// executable lookup and HOME

/// runc's lookup of `args[0]` after pivot_root (Go's `exec.LookPath` with the process's
/// environment): a name with a `/` is checked as is (relative to `cwd`); otherwise it is
/// searched in `PATH` from `env` (the last `PATH=` wins; [`DEFAULT_PATH`] when there is none;
/// an empty element means `cwd`). The result must be a regular file with an execute bit.
/// Relative results are made absolute against `cwd`.
pub fn find_executable(arg0: &str, env: &[String], cwd: &Path) -> Result<PathBuf> {
    if arg0.contains('/') {
        let path = cwd.join(arg0);
        return match fs::metadata(&path) {
            Err(e) => Err(ProcessSetupError::ExecStat {
                arg0: arg0.to_string(),
                reason: errno_text(&e),
            }),
            Ok(m) if is_executable(&m) => Ok(path),
            Ok(_) => Err(ProcessSetupError::ExecPermission {
                arg0: arg0.to_string(),
            }),
        };
    }
    let not_found = || ProcessSetupError::ExecNotFound {
        arg0: arg0.to_string(),
    };
    if arg0.is_empty() {
        return Err(not_found());
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    if path_var.is_empty() {
        return Err(not_found());
    }
    path_var
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cwd.join(dir).join(arg0)
        })
        .find(|p| fs::metadata(p).is_ok_and(|m| is_executable(&m)))
        .ok_or_else(not_found)
}

fn is_executable(m: &fs::Metadata) -> bool {
    m.is_file() && m.permissions().mode() & 0o111 != 0
}

/// Go's lower-case strerror text for an I/O error ("no such file or directory").
fn errno_text(e: &std::io::Error) -> String {
    let desc = io_errno(e).desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => e.to_string(),
    }
}
