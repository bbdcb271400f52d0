//! `linux.seccomp`: the container's system call filter, compiled on the host.
//!
//! Two steps, far apart in init's life (the second, with no libseccomp, is
//! `hull_inside::seccomp`):
//!
//! 1. [`compile`] turns the OCI profile into a classic-BPF program with libseccomp (rules,
//!    argument conditions, extra architectures) and checks everything that can be checked
//!    without loading it: the actions, `errnoRet` ranges, argument indexes, filter flags the
//!    kernel knows, `listenerPath` when `SCMP_ACT_NOTIFY` is used. init calls it before it
//!    reports *Ready*, so a bad profile fails `hull create` with an error naming the field
//!    (`linux.seccomp.syscalls[3].args[0].index: ...`).
//! 2. `load` installs the program with `seccomp(SECCOMP_SET_MODE_FILTER)`, as the last step
//!    before `execve` (or, when `noNewPrivileges` is false, just before the user switch drops
//!    `CAP_SYS_ADMIN`, which loading a filter without no_new_privs needs — runc's order).
//!
//! hull loads the exported program itself instead of calling `seccomp_load`: the filter
//! flags (`SECCOMP_FILTER_FLAG_LOG`, `SPEC_ALLOW`, `WAIT_KILLABLE_RECV`) are then whatever
//! the kernel supports, not what the installed libseccomp knows (Debian 12 ships 2.5.4, which
//! has no `WAIT_KILLABLE_RECV`), no libseccomp state is touched after the fork-free init has
//! pivoted, and the notify descriptor is ours to pass on.
//!
//! `SCMP_ACT_NOTIFY`: the listener's AF_UNIX socket (`listenerPath`, `@name` for an abstract
//! one) is connected by `prepare_compiled` while the host path is still reachable (before the pivot,
//! as the container's root before the user switch); after loading, one message is sent on it
//! whose payload is runc's `ContainerProcessState` JSON (`ociVersion`, `fds: ["seccompFd"]`,
//! `pid`, `metadata` = `listenerMetadata`, `state`) and whose SCM_RIGHTS carries the notify
//! descriptor — the protocol of runc's seccomp agents.
//!
//! Like runc: unknown syscall names are skipped (with a debug line), a rule whose action is
//! the default action is dropped, conditions on the same argument index become separate
//! rules (OR), `SCMP_ACT_KILL` means kill-thread, `errnoRet` defaults to EPERM for ERRNO and
//! TRACE, `SECCOMP_FILTER_FLAG_TSYNC` is accepted and ignored (init is single-threaded),
//! `SCMP_ACT_NOTIFY` is refused as the default action.

use std::io::{Read, Seek};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use hull_inside::seccomp::{Compiled, Listener};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// The syscall hull itself makes between loading the filter and handing the notify
/// descriptor to the listener: it cannot be sent to that listener.
const SEND_SYSCALL: &str = "sendmsg";

/// A system call has six arguments (indexes 0 to 5).
const MAX_ARGS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Something wrong in the profile, e.g.
    /// `linux.seccomp.syscalls[3].args[0].index: 6 is out of range (0-5)`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// libseccomp refused an operation.
    #[error("{field}: {what}: {source}")]
    Libseccomp {
        field: String,
        what: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// A system call failed.
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::Error },
}

type Result<T> = std::result::Result<T, SeccompError>;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn lib(
    field: impl Into<String>,
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let (field, what) = (field.into(), what.into());
    move |source| SeccompError::Libseccomp {
        field,
        what,
        source,
    }
}

/// One rule of the filter as it was added to libseccomp (kept for tests and debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The syscall name from the profile.
    pub name: String,
    /// `linux.seccomp.syscalls[index]` it came from.
    pub index: usize,
    pub action: ScmpAction,
    /// ANDed conditions (empty: unconditional).
    pub conditions: Vec<ScmpArgCompare>,
}

/// A compiled filter: the BPF program, the `seccomp(2)` flags and the notify listener.
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    rules: Vec<Rule>,
    skipped: Vec<String>,
    listener: Option<Listener>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("rules", &self.rules.len())
            .field("skipped", &self.skipped)
            .field("listener", &self.listener)
            .finish()
    }
}

impl Filter {
    /// The rules added, in profile order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    /// Syscall names libseccomp does not know (skipped, as runc does).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
    /// The `seccomp(2)` flags `load` passes (`SECCOMP_FILTER_FLAG_*`).
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }
    /// Whether the filter has an `SCMP_ACT_NOTIFY` rule (and so a listener).
    pub fn listener(&self) -> Option<&Listener> {
        self.listener.as_ref()
    }
}

/// The action for `action` with `errno_ret` (ERRNO and TRACE default to EPERM, as runc).
pub fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    field: &str,
) -> Result<ScmpAction> {
    let ret = |default: u32| -> Result<u16> {
        let v = errno_ret.unwrap_or(default);
        u16::try_from(v).map_err(|_| {
            invalid(
                field.replace("action", "errnoRet"),
                format!("{v} is out of range (0-65535)"),
            )
        })
    };
    let eperm = libc::EPERM as u32;
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(ret(eperm)?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret(eperm)?),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// libseccomp's architecture token for a config architecture (`None` for native, which
/// every filter has).
pub fn arch(a: Arch) -> Option<ScmpArch> {
    Some(match a {
        Arch::ScmpArchNative => return None,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    })
}

/// One argument condition (`MASKED_EQ`: `(arg & value) == valueTwo`, as runc).
pub fn condition(arg: &LinuxSeccompArg, field: &str) -> Result<ScmpArgCompare> {
    let index = arg.index();
    if index >= MAX_ARGS {
        return Err(invalid(
            format!("{field}.index"),
            format!("{index} is out of range (a syscall has 6 arguments, 0-5)"),
        ));
    }
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return Ok(ScmpArgCompare::new(
                index as u32,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            ))
        }
    };
    Ok(ScmpArgCompare::new(index as u32, op, arg.value()))
}

/// The condition sets of one syscall entry: one set when every argument index appears at
/// most once, else one single-condition set per condition (runc's compatibility rule).
fn condition_sets(call: &LinuxSyscall, field: &str) -> Result<Vec<Vec<ScmpArgCompare>>> {
    let args = call.args().as_deref().unwrap_or_default();
    let mut conds = Vec::with_capacity(args.len());
    let mut counts = [0usize; MAX_ARGS];
    for (k, a) in args.iter().enumerate() {
        let c = condition(a, &format!("{field}.args[{k}]"))?;
        counts[a.index()] += 1;
        conds.push(c);
    }
    if counts.iter().any(|&n| n > 1) {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conds])
    }
}

/// The `seccomp(2)` flag of a config flag (`None`: accepted and ignored).
pub fn filter_flag(f: LinuxSeccompFilterFlag) -> Option<libc::c_ulong> {
    match f {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => Some(libc::SECCOMP_FILTER_FLAG_LOG),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
            Some(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW)
        }
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            Some(libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
        }
        // Synchronising threads means nothing for the single-threaded init (runc ignores it).
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => None,
    }
}

/// The spelling of a config flag (`SECCOMP_FILTER_FLAG_LOG`).
pub fn flag_name(f: LinuxSeccompFilterFlag) -> String {
    match serde_json::to_value(f) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{f:?}"),
    }
}

/// Whether the running kernel accepts a `seccomp(SECCOMP_SET_MODE_FILTER)` flag: with a
/// NULL program a known flag fails with EFAULT, an unknown one with EINVAL (libseccomp's
/// probe).
pub fn kernel_supports_flag(flag: libc::c_ulong) -> bool {
    // The kernel takes WAIT_KILLABLE_RECV only together with NEW_LISTENER.
    let flag = if flag & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
        flag | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        flag
    };
    // SAFETY: a NULL program is never read: the kernel checks the flags first and fails.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flag,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    rc < 0 && nix::Error::last() == nix::Error::EFAULT
}

/// The config flags this hull and this kernel support (`supportedFlags` of `features`).
pub fn supported_flags() -> Vec<String> {
    [
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog,
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
    ]
    .into_iter()
    .filter(|f| match filter_flag(*f) {
        Some(bit) => kernel_supports_flag(bit),
        None => true,
    })
    .map(flag_name)
    .collect()
}

impl Filter {
    pub fn to_compiled(&self) -> Compiled {
        Compiled::new(&self.program, self.flags, self.listener.as_ref())
    }
}

/// One cache entry: the profile it was compiled from (compared in full on a hit, so a
/// hash collision can never load the wrong filter) and the result.
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    key: String,
    compiled: Compiled,
}

/// Entries kept before the cache is emptied (profiles are few: one per image or policy).
const CACHE_MAX_ENTRIES: usize = 256;

/// [`compile`] through a cache in `cache_dir`: libseccomp needs milliseconds of CPU for a
/// Docker-sized profile, on every container start. The key covers everything the result
/// depends on: the profile, hull's build (its build ID, so a rebuilt compiler never loads
/// what an older one produced), libseccomp's version and the kernel (flag support). Init
/// loads the cached BPF as it is, so only a directory and files this user owns and nobody
/// else can write are trusted; otherwise the cache is not used (and a warning says why).
pub fn compile_cached(profile: &LinuxSeccomp, cache_dir: &Path) -> Result<Compiled> {
    use std::hash::{Hash, Hasher};
    let profile_json = serde_json::to_string(profile).unwrap_or_default();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let key = format!(
        "{}\n{}\n{}\n{}\n{profile_json}",
        env!("CARGO_PKG_VERSION"),
        crate::build_id::current(),
        libseccomp_version(),
        kernel
    );
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let file = cache_dir.join(format!("{:016x}.json", h.finish()));
    let usable = match trusted_cache_dir(cache_dir) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(dir = %cache_dir.display(), "seccomp cache not used: {why}");
            false
        }
    };
    if usable {
        match read_trusted(&file) {
            Ok(Some(data)) => match serde_json::from_slice::<CacheEntry>(&data) {
                Ok(entry) if entry.key == key => return Ok(entry.compiled),
                _ => tracing::debug!("seccomp cache: {file:?} is stale or for another profile"),
            },
            Ok(None) => {}
            Err(why) => {
                tracing::warn!(file = %file.display(), "seccomp cache entry not used: {why}")
            }
        }
    }
    let compiled = compile(profile)?.to_compiled();
    if usable {
        if let Err(e) = store_in_cache(cache_dir, &file, &key, &compiled) {
            tracing::debug!("seccomp cache: not stored: {e}");
        }
    }
    Ok(compiled)
}

/// Who may have written `meta`'s file: only this user, nobody else with write access.
fn owned_safely(meta: &std::fs::Metadata) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not {me}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "mode {:04o} lets others write it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Creates the cache directory (0700) if missing, and checks it: a real directory (not a
/// symlink) that only this user can write.
fn trusted_cache_dir(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating it: {e}"))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.file_type().is_dir() {
        return Err("not a directory".into());
    }
    owned_safely(&meta)
}

/// The entry's bytes if it exists and is a regular file (not followed through a symlink)
/// that only this user can have written.
fn read_trusted(file: &Path) -> std::result::Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    owned_safely(&meta)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(|e| e.to_string())?;
    Ok(Some(data))
}

fn store_in_cache(dir: &Path, file: &Path, key: &str, compiled: &Compiled) -> std::io::Result<()> {
    if std::fs::read_dir(dir)?.count() >= CACHE_MAX_ENTRIES {
        for entry in std::fs::read_dir(dir)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let entry = CacheEntry {
        key: key.to_string(),
        compiled: compiled.clone(),
    };
    let data = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
    crate::state::write_atomic(file, &data, 0o600).map_err(std::io::Error::other)
}

/// The installed libseccomp's version (`2.5.4`).
pub fn libseccomp_version() -> String {
    match libseccomp::ScmpVersion::current() {
        Ok(v) => format!("{}.{}.{}", v.major, v.minor, v.micro),
        Err(_) => "unknown".into(),
    }
}

/// Build the filter for `profile`. Makes no change to the calling process.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter> {
    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )
    .map_err(|e| match e {
        SeccompError::Invalid { reason, .. } => invalid("linux.seccomp.defaultErrnoRet", reason),
        e => e,
    })?;
    if default == ScmpAction::Notify {
        return Err(invalid(
            "linux.seccomp.defaultAction",
            "SCMP_ACT_NOTIFY cannot be the default action (hull's own system calls after \
             loading the filter would wait for the agent)",
        ));
    }
    let mut ctx = ScmpFilterContext::new(default)
        .map_err(lib("linux.seccomp.defaultAction", "creating the filter"))?;

    for (i, a) in profile.architectures().iter().flatten().enumerate() {
        let Some(token) = arch(*a) else { continue };
        let field = format!("linux.seccomp.architectures[{i}]");
        ctx.add_arch(token).map_err(|e| {
            invalid(
                &field,
                format!(
                    "{} cannot be filtered by libseccomp {} here ({e}; one filter holds only \
                     architectures of the native byte order, and LOONGARCH64, M68K, SH need \
                     libseccomp 2.6)",
                    arch_name(*a),
                    libseccomp_version()
                ),
            )
        })?;
    }

    let mut flags: libc::c_ulong = 0;
    for (i, f) in profile.flags().iter().flatten().enumerate() {
        let Some(bit) = filter_flag(*f) else {
            tracing::debug!(
                "seccomp: {} ignored (init is single-threaded)",
                flag_name(*f)
            );
            continue;
        };
        if !kernel_supports_flag(bit) {
            return Err(invalid(
                format!("linux.seccomp.flags[{i}]"),
                format!("{} is not supported by this kernel", flag_name(*f)),
            ));
        }
        flags |= bit;
    }

    let syscalls = profile.syscalls().as_deref().unwrap_or_default();
    if syscalls.len() > 32 {
        // libseccomp's binary-tree layout for long rule lists (runc does the same).
        if let Err(e) = ctx.set_ctl_optimize(2) {
            tracing::debug!("seccomp: binary tree optimization not available: {e}");
        }
    }

    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    let mut uses_notify = false;
    for (i, call) in syscalls.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(call.action(), call.errno_ret(), &format!("{field}.action"))?;
        let sets = condition_sets(call, &field)?;
        if call.names().is_empty() {
            return Err(invalid(format!("{field}.names"), "is empty"));
        }
        for (j, name) in call.names().iter().enumerate() {
            if name.is_empty() {
                return Err(invalid(
                    format!("{field}.names[{j}]"),
                    "empty string is not a syscall name",
                ));
            }
            if act == ScmpAction::Notify && name == SEND_SYSCALL {
                return Err(invalid(
                    format!("{field}.action"),
                    format!(
                        "SCMP_ACT_NOTIFY cannot be used for {SEND_SYSCALL:?}: hull sends the \
                         notify descriptor to the agent with it"
                    ),
                ));
            }
        }
        if act == default {
            // Redundant; libseccomp would refuse it (runc skips it too).
            continue;
        }
        for name in call.names() {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                tracing::debug!("seccomp: unknown syscall {name:?} ignored");
                skipped.push(name.clone());
                continue;
            };
            uses_notify |= act == ScmpAction::Notify;
            for conds in &sets {
                ctx.add_rule_conditional(act, nr, conds)
                    .map_err(lib(&field, format!("adding the rule for {name:?}")))?;
                rules.push(Rule {
                    name: name.clone(),
                    index: i,
                    action: act,
                    conditions: conds.clone(),
                });
            }
        }
    }

    let listener = if uses_notify {
        let path = profile
            .listener_path()
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| {
                invalid(
                    "linux.seccomp.listenerPath",
                    "is required when a rule uses SCMP_ACT_NOTIFY",
                )
            })?;
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        Some(Listener {
            path,
            metadata: profile.listener_metadata().clone(),
        })
    } else {
        // The kernel accepts WAIT_KILLABLE_RECV only with a listener.
        flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        None
    };

    Ok(Filter {
        program: export_bpf(&ctx)?,
        flags,
        rules,
        skipped,
        listener,
    })
}

fn arch_name(a: Arch) -> String {
    match serde_json::to_value(a) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{a:?}"),
    }
}

/// libseccomp writes the program to a descriptor: a memfd, read back into instructions.
fn export_bpf(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>> {
    let sys = |what: &str| {
        let what = what.to_string();
        move |errno| SeccompError::Sys { what, errno }
    };
    // SAFETY: the name is a NUL-terminated literal; the result is checked below.
    let fd = unsafe { libc::memfd_create(c"hull-seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(sys("memfd_create for the seccomp program")(
            nix::Error::last(),
        ));
    }
    // SAFETY: memfd_create just returned this descriptor to us alone.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(file.as_fd())
        .map_err(lib("linux.seccomp", "generating the BPF program"))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| SeccompError::Sys {
            what: "reading the seccomp program back".into(),
            errno: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    const INSN: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % INSN != 0 {
        return Err(invalid(
            "linux.seccomp",
            format!("libseccomp produced a program of {} bytes", bytes.len()),
        ));
    }
    let program: Vec<libc::sock_filter> = bytes
        .chunks_exact(INSN)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    if program.len() > usize::from(u16::MAX) {
        return Err(invalid(
            "linux.seccomp",
            format!(
                "the program has {} instructions (at most 65535)",
                program.len()
            ),
        ));
    }
    Ok(program)
}

#[cfg(test)]
mod tests;
