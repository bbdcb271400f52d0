//! The container's set-up sequence, the same for `hull init` and (later) the guest agent:
//! written against [`Coordinator`], the moments it must coordinate with whoever drives it
//! (`hull init`: its parent, `hull create`/`hull exec`, over the sync socket), and
//! [`System`], the steps that need root or namespaces (so the order can be unit-tested).
//!
//! Order (runc's): seccomp agent connect (the filter was compiled by `create`) → join user ns → unshare the rest →
//! loopback up (new network namespace) → keyring → hostname → rootfs prepare → [parent runs
//! prestart/createRuntime hooks] → createContainer hooks → pivot → sysctl → console →
//! masked/read-only paths → cwd, executable lookup → descriptors above the preserved ones
//! marked close-on-exec → LSM exec labels (`lsm`) → limits, user, capabilities,
//! noNewPrivileges (without noNewPrivileges the seccomp filter is loaded before the user
//! switch, which drops the CAP_SYS_ADMIN it needs) → report Ready → block on the exec fifo
//! until `start` → startContainer hooks → seccomp load (with noNewPrivileges) → execve.
//!
//! Everything that can fail is done before Ready, so that a failure fails `create` (as in
//! runc) and only the execve remains after `start`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, LinuxPersonality, Process, Spec};

use crate::seccomp::{Compiled, Prepared};
use crate::sync::{ExecPlan, InitPlan};
use crate::{hooks, lsm, namespaces, network, process_setup, rootfs, seccomp, sync, terminal};

#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{} is missing or invalid: hull init is started by hull create only",
        sync::INIT_FD_ENV
    )]
    NoSyncFd,
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
    #[error(transparent)]
    Namespace(#[from] namespaces::NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Process(#[from] process_setup::ProcessSetupError),
    #[error(transparent)]
    Terminal(#[from] terminal::TerminalError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompLoadError),
    #[error(transparent)]
    Lsm(#[from] lsm::LsmError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Sys { what, source }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Io { what, source }
}

/// A value that cannot exist: the sequence ends in the container process (an `execve` that
/// does not return) or in an error.
pub enum Never {}

/// What the parent asks for: a new container, or one more process in a running one.
pub enum Plan {
    Create(Box<InitPlan>),
    Exec(Box<ExecPlan>),
}

/// The moments the sequence waits for, or reports to, whoever drives it.
pub trait Coordinator {
    /// What to set up.
    fn plan(&mut self) -> Result<Plan, InitError>;
    /// Before any mount changes: take hold of what [`Coordinator::wait_for_start`] waits on
    /// (for `hull init`, the exec fifo in hull's state directory on the host).
    fn prepare_start(&mut self, plan: &InitPlan) -> Result<(), InitError>;
    /// Block until this process is in the container's cgroup: the parent placed it there,
    /// or sent the files through which it joins (`create` and `exec`).
    fn cgroup_joined(&mut self) -> Result<(), InitError>;
    /// The mounts are prepared; block while the parent runs the prestart and createRuntime
    /// hooks. Returns the container's state JSON, for the createContainer hooks.
    fn mounts_ready(&mut self) -> Result<String, InitError>;
    /// Everything that can fail is done (only the start and the execve remain); after
    /// this, nothing more is sent to the parent.
    fn ready(&mut self) -> Result<(), InitError>;
    /// Block until `start`.
    fn wait_for_start(&mut self) -> Result<(), InitError>;
    /// Tell the parent why the sequence failed; false when it could not be told.
    fn report_error(&mut self, err: &InitError) -> bool;
}

/// The steps that change the process or the system, in the words of the sequence.
/// `system::LiveSystem` does them; tests record them.
pub trait System {
    /// A new session, detached from hull's terminal and process group.
    fn new_session(&mut self) -> Result<(), InitError>;
    /// Make a filter compiled by the parent ready to load (connects a notify agent).
    fn prepare_seccomp(
        &mut self,
        filter: Compiled,
        oci_version: &str,
    ) -> Result<Prepared, InitError>;
    /// Join the user namespace to join and create the new namespaces but the cgroup one.
    fn enter_namespaces(&mut self, plan: &InitPlan) -> Result<(), InitError>;
    fn bring_up_loopback(&mut self) -> Result<(), InitError>;
    fn join_session_keyring(&mut self, id: &str);
    fn set_host_and_domain_name(&mut self, spec: &Spec) -> Result<(), InitError>;
    /// Prepare the mounts; at the cgroup barrier call `cgroup_joined`, then create the
    /// cgroup namespace if `unshare_flags` asks for one.
    fn prepare_rootfs(
        &mut self,
        plan: &rootfs::RootfsPlan,
        unshare_flags: i32,
        cgroup_joined: &mut dyn FnMut() -> Result<(), rootfs::RootfsError>,
    ) -> Result<(), InitError>;
    fn run_hooks(&mut self, kind: &str, hooks: &[Hook], state_json: &[u8])
        -> Result<(), InitError>;
    /// Pivot (or chroot) into the new root.
    fn enter_rootfs(&mut self, plan: &rootfs::RootfsPlan) -> Result<(), InitError>;
    fn write_sysctls(&mut self, spec: &Spec) -> Result<(), InitError>;
    fn setup_console(&mut self, console_fd: Option<i32>) -> Result<(), InitError>;
    /// Init only: bind the console (stdin by now) over `/dev/console`.
    fn mount_console(&mut self) -> Result<(), InitError>;
    /// Masked and read-only paths, the read-only root.
    fn finish_rootfs(&mut self, plan: &rootfs::RootfsPlan) -> Result<(), InitError>;
    /// chdir to `process.cwd` (created first when `create_missing`), refusing a directory
    /// outside the container's root.
    fn enter_cwd(&mut self, cwd: &Path, create_missing: bool) -> Result<(), InitError>;
    fn container_env(&mut self, process: &Process) -> Vec<String>;
    fn find_executable(
        &mut self,
        arg0: &str,
        env: &[String],
        cwd: &Path,
    ) -> Result<PathBuf, InitError>;
    fn close_fds_on_exec(&mut self, first: i32) -> Result<(), InitError>;
    fn apply_exec_labels(&mut self, process: &Process) -> Result<(), InitError>;
    /// Limits, user, capabilities, noNewPrivileges; loads the filter before the user switch
    /// when noNewPrivileges is false, else returns it to be loaded last.
    fn apply_process(
        &mut self,
        process: &Process,
        personality: Option<&LinuxPersonality>,
        seccomp: Option<Prepared>,
        state_json: &str,
    ) -> Result<Option<Prepared>, InitError>;
    fn clear_parent_death_signal(&mut self) -> Result<(), InitError>;
    fn activate_seccomp(&mut self, filter: Prepared, state_json: &str) -> Result<(), InitError>;
    /// `exec`: join the running container's user and mount namespaces (which also puts us
    /// at its root), with the plan's filter prepared on the way.
    fn enter_container(&mut self, plan: &ExecPlan) -> Result<Option<Prepared>, InitError>;
    /// execve the container process; returns only the error.
    fn exec(&mut self, exec: &ExecArgs) -> InitError;
}

/// Run the sequence the coordinator's plan asks for. Returns only when it failed (on
/// success the container process has replaced this one); reporting the error is the
/// caller's (see [`Coordinator::report_error`]).
pub fn run(coord: &mut impl Coordinator, sys: &mut impl System) -> InitError {
    let result = sys.new_session().and_then(|()| match coord.plan()? {
        Plan::Create(plan) => create(&plan, coord, sys),
        Plan::Exec(plan) => exec(&plan, coord, sys),
    });
    match result {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// `create`: a new container's init.
fn create(
    plan: &InitPlan,
    coord: &mut impl Coordinator,
    sys: &mut impl System,
) -> Result<Never, InitError> {
    let spec = &plan.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::Invalid("config.json: process is missing".into()))?;

    // Before any mount changes: the fifo lives in hull's state directory on the host.
    coord.prepare_start(plan)?;
    // Compiled now so a bad profile fails `create`; a notify agent is connected now, while
    // its host path is reachable.
    let seccomp = plan
        .seccomp
        .clone()
        .map(|c| sys.prepare_seccomp(c, spec.version()))
        .transpose()?;

    sys.enter_namespaces(plan)?;
    if network::has_new_netns(spec) {
        sys.bring_up_loopback()?;
    }
    if !plan.no_new_keyring {
        sys.join_session_keyring(&plan.id);
    }
    sys.set_host_and_domain_name(spec)?;

    // linux.mountLabel: the mounts get SELinux's context= option (None without a label).
    let labeled = lsm::label_mounts(spec, lsm::Host::probe());
    let rootfs_plan = rootfs::RootfsPlan {
        spec: labeled.as_ref().unwrap_or(spec),
        rootfs: &plan.rootfs,
        bundle: &plan.bundle,
        no_pivot: plan.no_pivot,
        in_user_ns: plan.in_user_ns,
    };
    sys.prepare_rootfs(&rootfs_plan, plan.unshare_flags, &mut || {
        coord
            .cgroup_joined()
            .map_err(|e| rootfs::RootfsError::Other(format!("joining the cgroup: {e}")))
    })?;

    let state_json = coord.mounts_ready()?;
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        sys.run_hooks("createContainer", &h, state_json.as_bytes())?;
    }

    sys.enter_rootfs(&rootfs_plan)?;
    sys.write_sysctls(spec)?;
    if process.terminal().unwrap_or(false) {
        sys.setup_console(plan.console_fd)?;
        sys.mount_console()?;
    }
    sys.finish_rootfs(&rootfs_plan)?;

    let cwd = process.cwd();
    // runc creates a missing working directory; we are inside the new root by now.
    sys.enter_cwd(cwd, true)?;
    let env = sys.container_env(process);
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| InitError::Invalid("config.json: process.args is empty".into()))?;
    let exe = sys.find_executable(arg0, &env, cwd)?;
    let exec = ExecArgs::new(&exe, &args, &env)?;

    // The caller's descriptors were closed by the exec of init; the ones init opened since
    // are marked now, before a seccomp filter may forbid close_range.
    sys.close_fds_on_exec(3 + plan.preserve_fds)?;
    let personality = spec.linux().as_ref().and_then(|l| l.personality().as_ref());
    // AppArmor profile / SELinux label for the execve, while we may still choose them.
    sys.apply_exec_labels(process)?;
    // Limits, user, capabilities, noNewPrivileges now, so a failure fails `create` (runc).
    // Loads the filter before the user switch when noNewPrivileges is false.
    let seccomp = sys.apply_process(process, personality, seccomp, &state_json)?;

    // From Ready on, init outlives `hull create`: drop the parent-death signal it was
    // cloned with (which took it down if create died half-way).
    sys.clear_parent_death_signal()?;
    coord.ready()?;
    coord.wait_for_start()?;

    // As runc: with the container's credentials (and its filter without noNewPrivileges).
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().clone())
    {
        let state = serde_json::json!({
            "ociVersion": spec.version(), "id": plan.id, "status": "running",
            "pid": std::process::id(), "bundle": plan.bundle,
            "annotations": spec.annotations().clone().unwrap_or_default(),
        });
        sys.run_hooks("startContainer", &h, state.to_string().as_bytes())?;
    }
    if let Some(filter) = seccomp {
        sys.activate_seccomp(filter, &state_json)?;
    }
    Err(sys.exec(&exec))
}

/// `exec`: one more process in a running container.
fn exec(
    plan: &ExecPlan,
    coord: &mut impl Coordinator,
    sys: &mut impl System,
) -> Result<Never, InitError> {
    // In the container's cgroup before anything is charged to it or can fail in it.
    coord.cgroup_joined()?;
    let filter = sys.enter_container(plan)?;

    let process = &plan.process;
    let cwd = process.cwd();
    // CVE-2024-21626: never start inside a host directory reached through a descriptor.
    sys.enter_cwd(cwd, false)?;
    let env = sys.container_env(process);
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| InitError::Invalid("process.args is empty".into()))?;
    let exe = sys.find_executable(arg0, &env, cwd)?;
    let exec = ExecArgs::new(&exe, &args, &env)?;
    if process.terminal().unwrap_or(false) {
        sys.setup_console(plan.console_fd)?;
    }
    // --apparmor / --process-label (or the container's own labels, see `Runtime::exec`).
    sys.apply_exec_labels(process)?;
    // Before a seccomp filter (which may not allow close_range) is loaded.
    sys.close_fds_on_exec(3 + plan.preserve_fds)?;
    let filter = sys.apply_process(process, plan.personality.as_ref(), filter, &plan.state_json)?;
    // `hull exec --detach` exits after Ready; the process must outlive it.
    sys.clear_parent_death_signal()?;
    coord.ready()?;
    if let Some(filter) = filter {
        sys.activate_seccomp(filter, &plan.state_json)?;
    }
    Err(sys.exec(&exec))
}

/// The user process's execve arguments, built before anything can go wrong at exec time.
#[derive(Debug)]
pub struct ExecArgs {
    pub(crate) path: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
}

impl ExecArgs {
    pub fn new(exe: &Path, args: &[String], env: &[String]) -> Result<Self, InitError> {
        let c = |s: &str, what: &str| {
            CString::new(s).map_err(|_| InitError::Invalid(format!("{what} contains a NUL byte")))
        };
        Ok(Self {
            path: c(&exe.to_string_lossy(), "process.args[0]")?,
            argv: args
                .iter()
                .map(|a| c(a, "process.args"))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|e| c(e, "process.env"))
                .collect::<Result<_, _>>()?,
        })
    }
}
