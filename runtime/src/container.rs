//! The container lifecycle as seen from outside: create, start, state, kill, delete, and
//! the status derived from the saved state and the live process.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::Serialize;

use crate::cgroups::{CgroupError, ContainerCgroup};
use crate::process::{process_alive, process_start_time, PidFd};
use crate::spawn::{
    describe_end, dup_above, reap, spawn_init, stdio_above, stdio_raw, ChildSetup, InitExec,
};
use crate::state::{self, ContainerDir, HookKind, SavedState, StateError};
use hull_inside::hooks::{self, HookError};
use hull_inside::namespaces::{self, ChildNamespaceGuard, NamespaceError, NamespacePlan};
use hull_inside::sync::{self, FromInit, InitPlan, SyncError, ToInit};
use hull_inside::terminal::{self, TerminalError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] hull_specs::SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Terminal(#[from] TerminalError),
    #[error(transparent)]
    SealedExe(#[from] crate::sealed_exe::SealedExeError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Lsm(#[from] hull_inside::lsm::LsmError),
    #[error(transparent)]
    Userns(#[from] crate::userns_auto::UsernsError),
    #[error("container init: {0}")]
    Init(String),
    #[error("talking to container init: {0}")]
    Sync(#[from] SyncError),
    #[error("container not running")]
    NotRunning,
    #[error("init process {pid} was killed during set-up by the memory cgroup's OOM killer: linux.resources.memory.limit ({limit} bytes) is below what the container needs to start")]
    SetupOom { pid: i32, limit: i64 },
    #[error("cannot {op} container \"{id}\": it is {status}")]
    WrongStatus {
        op: &'static str,
        id: String,
        status: Status,
    },
    #[error("{0}")]
    Usage(String),
    /// A VM container that cannot be had (the config, the image, KVM, virtiofsd).
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    /// An operation VM containers do not support.
    #[error("{op} is not supported for VM containers (io.hull.isolation=vm)")]
    NotForVm { op: &'static str },
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
}

// Spawning and waiting have errors of their own (they sit below this module); each maps
// onto the variant the caller saw before, without growing `Error`.
impl From<crate::spawn::SpawnError> for Error {
    fn from(e: crate::spawn::SpawnError) -> Self {
        use crate::spawn::SpawnError;
        match e {
            SpawnError::SealedExe(e) => Error::SealedExe(e),
            SpawnError::NulInEnvironment => Error::Usage(e.to_string()),
            SpawnError::Sys { what, source } => Error::Sys { what, source },
        }
    }
}

impl From<crate::wait::WaitError> for Error {
    fn from(e: crate::wait::WaitError) -> Self {
        use crate::wait::WaitError;
        match e {
            WaitError::Init(msg) => Error::Init(msg),
            WaitError::Sys { what, source } => Error::Sys { what, source },
        }
    }
}

pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |source| Error::Sys { what, source }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The `state` document (runtime-spec state plus runc's `rootfs`, `created`, `owner`).
#[derive(Debug, Clone, Serialize)]
pub struct ContainerState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub annotations: std::collections::HashMap<String, String>,
}

/// Global options shared by every command.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub rootless: bool,
    /// The binary exec'd as `<binary> init` to become the container's init. None means
    /// `/proc/self/exe`: the program using the library must then hand argv `init` to
    /// [`hull_inside::init::run`] first thing in `main`, as the `hull` binary does.
    pub init_binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
    /// The container's stdin, stdout and stderr (e.g. a shim's FIFOs); None gives it the
    /// caller's own fds 0-2. The caller keeps them open during the call.
    pub stdio: Option<[RawFd; 3]>,
    /// The isolation every container gets (`hull --isolation`); the config's annotation
    /// decides when None.
    pub isolation: Option<hull_specs::Isolation>,
}

/// A container `create` made, with what `run` needs to go on.
pub struct Created {
    pub pid: Pid,
    /// The pty master, when `run` asked for one to relay instead of a console socket.
    pub console_master: Option<OwnedFd>,
}

/// Where the console goes: a `--console-socket` path, or a socket `run` relays itself.
enum Console {
    None,
    Socket(OwnedFd),
    Relay { ours: OwnedFd, theirs: OwnedFd },
}

/// Operations that VM containers do not support refuse them by name instead of acting on
/// the VMM as if it were the workload.
pub(crate) fn refuse_vm(spec: &hull_specs::Spec, op: &'static str) -> Result<(), Error> {
    if crate::vm::wanted(spec)? {
        return Err(Error::NotForVm { op });
    }
    Ok(())
}

impl Runtime {
    /// `create`: set the container up and leave its init blocked until `start`.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Created, Error> {
        self.create_inner(id, opts, false)
    }

    /// `create` for a caller that holds the console itself (a partition monitor): when
    /// process.terminal is set and no console socket is given, the pty master comes back in
    /// [`Created::console_master`]. The init is the caller's child.
    pub fn create_with_console(&self, id: &str, opts: &CreateOptions) -> Result<Created, Error> {
        self.create_inner(id, opts, true)
    }

    fn create_inner(&self, id: &str, opts: &CreateOptions, relay: bool) -> Result<Created, Error> {
        hull_specs::validate_container_id(id)?;
        check_preserve_fds(opts.preserve_fds)?;
        let mut bundle = hull_specs::load_bundle(&opts.bundle)?;
        if let Some(want) = opts.isolation {
            hull_specs::annotations::require_isolation(&mut bundle.spec, want)?;
        }
        let spec = &bundle.spec;
        // LSM labels the host cannot apply are refused now, not silently dropped.
        hull_inside::lsm::check_spec(spec, hull_inside::lsm::Host::probe())?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let console = match (&opts.console_socket, terminal, relay) {
            (Some(_), false, _) => {
                return Err(Error::Usage(
                    "--console-socket was given but process.terminal is false".into(),
                ))
            }
            (Some(path), true, _) => Console::Socket(terminal::connect_console_socket(path)?),
            (None, true, true) => {
                let (a, b) = UnixStream::pair().map_err(io("console socketpair"))?;
                Console::Relay {
                    ours: a.into(),
                    theirs: b.into(),
                }
            }
            (None, true, false) => {
                return Err(Error::Usage(
                    "process.terminal is set: --console-socket is required (or use run without --detach)"
                        .into(),
                ))
            }
            (None, false, _) => Console::None,
        };
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let cgroup_path = ContainerCgroup::resolve(
            cgroups_path.as_ref().and_then(|p| p.to_str()),
            id,
            self.systemd_cgroup,
        )?;

        // Declared before `guard`, so dropped after it: a failed create kills init before
        // closing init's connection (init would otherwise wake up to a closed socket).
        let (mut ours, theirs) = UnixStream::pair().map_err(io("sync socketpair"))?;
        // From here on everything created is undone by `guard` unless create succeeds.
        let dir = ContainerDir::create(&self.root, id)?;
        let mut guard = CreateGuard {
            dir: Some(dir),
            pid: None,
            cgroup: None,
            vm_rootfs: None,
        };
        let dir = guard
            .dir
            .as_ref()
            .ok_or_else(|| Error::Init("no state dir".into()))?;
        // io.hull.userns=auto: a free id range, recorded in the state dir (freed with it),
        // becomes the spec's user namespace and mappings before the namespaces are planned.
        crate::userns_auto::apply_if_annotated(&self.root, &dir.path, &mut bundle.spec)?;
        let spec = &bundle.spec;
        let ns_plan = NamespacePlan::from_spec(spec)?;
        let seccomp = self.compile_seccomp(spec)?;
        // io.hull.isolation=vm: everything the VM needs is checked now; init becomes the VMM.
        let vm_plan = if crate::vm::wanted(spec)? {
            guard.vm_rootfs = Some(bundle.rootfs.clone());
            Some(crate::vm::plan(spec, &dir.path, opts.preserve_fds)?)
        } else {
            None
        };
        let fifo = dir.fifo_path();
        make_fifo(&fifo)?;
        // A VM container's init is the VMM, which waits for the guest's boot first.
        let wait_limit =
            crate::init_deadline::limit(vm_plan.as_ref().map_or(Duration::ZERO, |vp| {
                Duration::from_millis(vp.boot_timeout_ms)
            }));
        let mut waited = Duration::ZERO;

        let min_fd = 3 + opts.preserve_fds;
        let init_fd = dup_above(theirs.as_fd(), min_fd)?;
        drop(theirs);
        let console_child_fd = match &console {
            Console::Socket(fd) | Console::Relay { theirs: fd, .. } => {
                Some(dup_above(fd.as_fd(), min_fd)?)
            }
            Console::None => None,
        };
        // A joined mount namespace need not show `--root`: init gets the exec fifo as a
        // descriptor it reopens through /proc/self/fd, as runc's init does.
        let fifo_child_fd = if ns_plan.joins(namespaces::NsKind::Mount) {
            use std::os::unix::fs::OpenOptionsExt;
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&fifo)
                .map_err(io(format!("opening exec fifo {fifo:?}")))?;
            Some(dup_above(f.as_fd(), min_fd)?)
        } else {
            None
        };
        let exec = match &vm_plan {
            Some(vp) => InitExec::command(
                self.init_binary.as_deref(),
                init_fd.as_raw_fd(),
                "vm-init",
                &[(
                    crate::vm::PLAN_ENV,
                    serde_json::to_string(vp).map_err(|e| Error::Init(e.to_string()))?,
                )],
            )?,
            None => InitExec::new(self.init_binary.as_deref(), init_fd.as_raw_fd())?,
        };
        let child_fds: Vec<RawFd> = std::iter::once(init_fd.as_raw_fd())
            .chain(console_child_fd.as_ref().map(|f| f.as_raw_fd()))
            .chain(fifo_child_fd.as_ref().map(|f| f.as_raw_fd()))
            .collect();
        let stdio = stdio_above(opts.stdio, min_fd)?;

        let pid = {
            let _ns =
                ChildNamespaceGuard::enter(&ns_plan, namespaces::time_offsets(spec).as_deref())?;
            spawn_init(&ChildSetup {
                flags: ns_plan.clone_flags.bits(),
                exec: &exec,
                keep_fds: &child_fds,
                first_unpreserved_fd: min_fd,
                stdio: stdio_raw(&stdio),
                wait_for_maps_on: ns_plan.new_user.then_some(init_fd.as_raw_fd()),
            })?
        };
        guard.pid = Some(pid);
        drop(init_fd);
        // Init's copy is closed by its execve of the container process (above 2 +
        // --preserve-fds, like every descriptor hull hands it).
        let init_fifo = match &fifo_child_fd {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => fifo.clone(),
        };
        drop(fifo_child_fd);
        let console_child_fd = console_child_fd.map(|f| f.as_raw_fd());
        if ns_plan.new_user {
            write_id_maps(pid, spec)?;
            use std::io::Write;
            ours.write_all(&[1])
                .map_err(io("releasing init after id mapping"))?;
        }

        let mut saved = SavedState {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            pid: pid.as_raw(),
            pid_start_time: process_start_time(pid.as_raw()).unwrap_or(0),
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            annotations: spec.annotations().clone().unwrap_or_default(),
            ready: false,
            cgroup: Some(ContainerCgroup::load(&cgroup_path)?),
            config: spec.clone(),
        };
        // Saved before the cgroup exists, so `delete --force` finds it after a crash.
        dir.save(&saved)?;
        let mut resources = cgroup_resources(spec);
        if vm_plan.is_some() {
            crate::vm::allow_kvm_device(&mut resources);
        }
        // The plan first: init sets up its namespaces and mounts while the cgroup is made
        // (below), and waits for it only at its cgroup barrier.
        let plan = InitPlan {
            id: id.to_string(),
            spec: spec.clone(),
            rootfs: bundle.rootfs.clone(),
            bundle: bundle.dir.clone(),
            fifo: init_fifo,
            no_pivot: opts.no_pivot,
            no_new_keyring: opts.no_new_keyring,
            console_fd: console_child_fd,
            preserve_fds: opts.preserve_fds,
            join_user: ns_plan.join_user.clone(),
            unshare_flags: ns_plan.init_unshare.bits(),
            in_user_ns: ns_plan.in_user_ns,
            seccomp,
        };
        sync::send(&mut ours, &ToInit::Plan(Box::new(plan)))?;
        let cgroup = match ContainerCgroup::create_empty(&cgroup_path, resources.as_ref()) {
            Ok(cg) => Some(cg),
            // Rootless, as runc: without write access to the cgroup hierarchy the container
            // runs in hull's own cgroup, unless it asks for limits (which would not hold).
            Err(e) if self.rootless && !asks_for_limits(resources.as_ref()) => {
                tracing::warn!("rootless: running without a cgroup of its own: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        };
        saved.cgroup = cgroup.clone();
        guard.cgroup = cgroup;
        if hull_specs::annotations::cgroup_delegate(spec)? {
            if let (Some(cg), Some((uid, gid))) = (
                saved.cgroup.as_ref(),
                hull_specs::annotations::root_host_ids(spec),
            ) {
                cg.delegate(uid, gid)?;
            }
        }
        // Init joins the cgroup v1 hierarchies itself (ToInit::JoinCgroup: no RCU grace
        // period), through `tasks` files opened here, so the kernel checks hull's
        // credentials, not those of an init in a user namespace. Not a VM container's init
        // (hull vm-init speaks another protocol) nor rootless hull's.
        let init_joins_v1 = !self.rootless && vm_plan.is_none();
        let joined = match &saved.cgroup {
            Some(cg) if init_joins_v1 => join_through_init(&mut ours, cg, pid.as_raw()),
            Some(cg) => cg
                .add_process(pid.as_raw())
                .map_err(Error::from)
                .and_then(|()| Ok(sync::send(&mut ours, &ToInit::CgroupJoined)?)),
            None => Ok(sync::send(&mut ours, &ToInit::CgroupJoined)?),
        };
        if let Err(e) = joined {
            // Init may have failed meanwhile (before it needed the cgroup): its message
            // says more than a broken pipe or a vanished pid.
            return Err(pending_init_error(&mut ours).map_or(e, Error::Init));
        }
        loop {
            if let Some(limit) = wait_limit {
                let left = limit.saturating_sub(waited);
                if left.is_zero() {
                    return Err(Error::Init(crate::init_deadline::exceeded(
                        "finish setting up",
                        limit,
                    )));
                }
                ours.set_read_timeout(Some(left))
                    .map_err(io("setting the sync socket's timeout"))?;
            }
            // Only the time spent waiting on init counts (not the hooks run below).
            let asked = Instant::now();
            let msg = sync::recv::<FromInit>(&mut ours);
            waited += asked.elapsed();
            match msg {
                Err(sync::SyncError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::Init(crate::init_deadline::exceeded(
                        "finish setting up",
                        wait_limit.unwrap_or_default(),
                    )));
                }
                Ok(FromInit::MountsReady) => {
                    let state_json = hook_state(&saved, Status::Creating);
                    if let Some(h) = spec.hooks().as_ref() {
                        for (kind, list) in [
                            ("prestart", h.prestart()),
                            ("createRuntime", h.create_runtime()),
                        ] {
                            if let Some(list) = list {
                                hooks::run_hooks(kind, list, state_json.as_bytes())?;
                            }
                        }
                    }
                    sync::send(&mut ours, &ToInit::HooksDone { state_json })?;
                }
                Ok(FromInit::Ready) => break,
                Ok(FromInit::Error(msg)) => return Err(Error::Init(msg)),
                Err(e) if e.peer_gone() => {
                    return Err(init_died_during_setup(
                        &mut guard,
                        pid,
                        spec,
                        saved.cgroup.as_ref(),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if vm_plan.is_some() {
            if let Some(cg) = saved.cgroup.as_mut() {
                cg.separate_kernel_threads()?;
            }
        }
        saved.ready = true;
        dir.save(&saved)?;
        let console_master = match console {
            Console::Relay { ours, .. } => Some(terminal::recv_fd(ours.as_fd())?),
            _ => None,
        };
        // Last: a pid file must never name a process a failed create killed.
        if let Some(pid_file) = &opts.pid_file {
            state::write_pid_file(pid_file, pid.as_raw())?;
        }
        guard.disarm();
        Ok(Created {
            pid,
            console_master,
        })
    }

    /// `linux.seccomp` compiled (through the cache under `--root`), so a bad profile fails
    /// before anything is created and init only has to load it.
    pub(crate) fn compile_seccomp(
        &self,
        spec: &hull_specs::Spec,
    ) -> Result<Option<hull_inside::seccomp::Compiled>, Error> {
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        let cache = self.root.join(".seccomp-cache");
        Ok(Some(crate::seccomp::compile_cached(profile, &cache)?))
    }

    /// `start`: release a created container's init to exec the user process.
    pub fn start(&self, id: &str) -> Result<(), Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        let status = status_of(&dir, &saved);
        if status != Status::Created {
            return Err(Error::WrongStatus {
                op: "start",
                id: id.to_string(),
                status,
            });
        }
        release_fifo(
            &dir.fifo_path(),
            &saved,
            crate::init_deadline::limit(Duration::ZERO),
        )?;
        run_hooks_warning(
            "poststart",
            saved.hooks(HookKind::Poststart),
            &hook_state(&saved, Status::Running),
        );
        Ok(())
    }

    pub fn state(&self, id: &str) -> Result<ContainerState, Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        // runc leaves `owner` empty in `state` and fills it in `list`.
        Ok(public_state(&dir, &saved, String::new()))
    }

    /// The config a container was created from, as saved in its state.
    pub fn state_config(&self, id: &str) -> Result<hull_specs::Spec, Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        Ok(load_state(&dir)?.config)
    }

    pub fn list(&self) -> Result<Vec<ContainerState>, Error> {
        let mut out = Vec::new();
        for id in state::list_ids(&self.root)? {
            let Ok(dir) = ContainerDir::open(&self.root, &id) else {
                continue;
            };
            if let Ok(Some(saved)) = dir.load() {
                let owner = fs::metadata(&dir.path)
                    .map(|m| {
                        hull_inside::passwd::user_name(std::os::unix::fs::MetadataExt::uid(&m))
                    })
                    .unwrap_or_default();
                out.push(public_state(&dir, &saved, owner));
            }
        }
        Ok(out)
    }

    /// `kill`: signal init, or with `all` every process of the container's cgroup.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), Error> {
        hull_specs::validate_container_id(id)?;
        check_signal(signal)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        let status = status_of(&dir, &saved);
        if all {
            if let Some(cg) = &saved.cgroup {
                if status == Status::Stopped && cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
                    return Err(Error::NotRunning);
                }
                cg.signal_all(signal)?;
                return Ok(());
            }
        }
        if status == Status::Stopped {
            return Err(Error::NotRunning);
        }
        // Through a pidfd opened for the recorded process: if init exits and its pid is
        // reused between the check above and the signal, nothing else is hit.
        let sys = |e| Error::Sys {
            what: format!("kill {}", saved.pid),
            source: e,
        };
        let init = PidFd::open(saved.pid, saved.pid_start_time)
            .map_err(sys)?
            .ok_or(Error::NotRunning)?;
        init.signal(signal).map_err(|e| match e {
            nix::Error::ESRCH => Error::NotRunning,
            e => sys(e),
        })
    }

    /// `delete`: remove a stopped (or created) container; `force` kills a running one first.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), Error> {
        hull_specs::validate_container_id(id)?;
        let dir = match ContainerDir::open(&self.root, id) {
            // `--force` asks for the id to be gone, and it is (runc: success, silently).
            Err(StateError::NotExist(_)) if force => return Ok(()),
            other => other?,
        };
        let Some(saved) = dir.load()? else {
            // A create that died before saving anything left only the directory: the id
            // does not exist (as `state` and `list` say); the debris goes anyway, and
            // `--force` asks for exactly that (runc's behaviour).
            dir.remove()?;
            if force {
                return Ok(());
            }
            return Err(StateError::NotExist(id.to_string()).into());
        };
        let status = status_of(&dir, &saved);
        match status {
            Status::Stopped => {}
            Status::Created | Status::Creating => kill_container(&saved)?,
            Status::Running | Status::Paused if force => kill_container(&saved)?,
            _ => {
                return Err(Error::Usage(format!(
                    "cannot delete container \"{id}\" that is not stopped: {status}"
                )))
            }
        }
        if let Some(cg) = &saved.cgroup {
            // Init may be gone while its children (no pid namespace, a hook's processes)
            // still hold the cgroup: they go with the container.
            kill_cgroup_members(cg)?;
            cg.destroy()?;
        }
        if crate::vm::wanted(&saved.config).unwrap_or(false) {
            crate::vm::binds::remove_stage(&saved.rootfs);
        }
        run_hooks_warning(
            "poststop",
            saved.hooks(HookKind::Poststop),
            &hook_state(&saved, Status::Stopped),
        );
        dir.remove()?;
        Ok(())
    }

    /// `pause`: freeze every process of a running container.
    pub fn pause(&self, id: &str) -> Result<(), Error> {
        self.set_frozen(id, true)
    }

    /// `resume`: thaw a paused container.
    pub fn resume(&self, id: &str) -> Result<(), Error> {
        self.set_frozen(id, false)
    }

    fn set_frozen(&self, id: &str, frozen: bool) -> Result<(), Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        let status = status_of(&dir, &saved);
        let (op, want) = if frozen {
            ("pause", Status::Running)
        } else {
            ("resume", Status::Paused)
        };
        if status == Status::Stopped {
            return Err(Error::NotRunning);
        }
        if status != want {
            return Err(Error::WrongStatus {
                op,
                id: id.to_string(),
                status,
            });
        }
        let cg = saved.cgroup.as_ref().ok_or_else(|| {
            Error::Usage(format!("cannot {op} container \"{id}\": it has no cgroup"))
        })?;
        Ok(cg.set_frozen(frozen)?)
    }

    /// `update`: apply new resource limits to a live container and remember them.
    pub fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let mut saved = load_state(&dir)?;
        if status_of(&dir, &saved) == Status::Stopped {
            return Err(Error::NotRunning);
        }
        let cg = saved.cgroup.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "cannot update container \"{id}\": it has no cgroup"
            ))
        })?;
        let outcome = cg.update(resources);
        // What the cgroup now holds goes into the saved config (later updates merge onto it,
        // restore applies it): the whole request, or the fields a partly failed one wrote.
        let written = match &outcome {
            Ok(()) => Some(resources.clone()),
            Err(CgroupError::PartiallyApplied { applied, .. }) => {
                Some(applied_part(resources, applied))
            }
            Err(_) => None,
        };
        if let Some(written) = written {
            let merged = merge_resources(
                saved
                    .config
                    .linux()
                    .as_ref()
                    .and_then(|l| l.resources().clone())
                    .unwrap_or_default(),
                &written,
            );
            let mut linux = saved.config.linux().clone().unwrap_or_default();
            linux.set_resources(Some(merged));
            saved.config.set_linux(Some(linux));
            dir.save(&saved)?;
        }
        Ok(outcome?)
    }

    /// Host pids of every process in the container.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>, Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        if status_of(&dir, &saved) == Status::Stopped {
            return Ok(Vec::new());
        }
        match &saved.cgroup {
            Some(cg) => Ok(cg.pids()?),
            None => Ok(vec![saved.pid]),
        }
    }

    /// `run`: create and start; unless `detach`, wait for the container (relaying its pty
    /// when it has one and no console socket was given), delete it unless `keep`, and
    /// return its exit status (128+signal when killed).
    pub fn run(
        &self,
        id: &str,
        opts: &CreateOptions,
        detach: bool,
        keep: bool,
    ) -> Result<i32, Error> {
        let created = self.create_inner(id, opts, !detach)?;
        let outcome = self.start(id).and_then(|()| {
            if detach {
                return Ok(0);
            }
            crate::wait::wait_for_container(created.pid, created.console_master)
                .map_err(Error::from)
        });
        if !detach && !keep {
            if let Err(e) = self.delete(id, true) {
                tracing::warn!("deleting container \"{id}\" after run: {e}");
            }
        }
        outcome
    }
}

/// The part of `request` named by `fields` (`linux.resources.memory.limit`,
/// `linux.resources.cpu`, as a partly failed update lists what it wrote).
fn applied_part(
    request: &oci_spec::runtime::LinuxResources,
    fields: &[String],
) -> oci_spec::runtime::LinuxResources {
    use serde_json::Value;
    let Ok(full) = serde_json::to_value(request) else {
        return Default::default();
    };
    let mut out = Value::Object(Default::default());
    for field in fields {
        let Some(rest) = field.strip_prefix("linux.resources.") else {
            continue;
        };
        let keys: Vec<&str> = rest.split('.').collect();
        let Some(value) = keys.iter().try_fold(&full, |v, k| v.get(*k)) else {
            continue;
        };
        put(&mut out, &keys, value.clone());
    }
    serde_json::from_value(out).unwrap_or_default()
}

/// `dst[keys[0]][keys[1]]... = value`, making the objects on the way.
fn put(dst: &mut serde_json::Value, keys: &[&str], value: serde_json::Value) {
    let serde_json::Value::Object(obj) = dst else {
        return;
    };
    match keys {
        [] => {}
        [last] => {
            obj.insert(last.to_string(), value);
        }
        [first, rest @ ..] => put(
            obj.entry(first.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default())),
            rest,
            value,
        ),
    }
}

/// `current` with every field `update` really sets (after runc's "zero means not set" rule)
/// replaced; devices are not updated (as runc). A `docker update` that sends `limit: 0` for
/// memory it does not change leaves the saved memory limit alone.
fn merge_resources(
    mut current: oci_spec::runtime::LinuxResources,
    update: &oci_spec::runtime::LinuxResources,
) -> oci_spec::runtime::LinuxResources {
    let update = crate::cgroups::normalize_resources(update);
    macro_rules! take {
        ($cur:ident, $upd:ident, $($get:ident => $set:ident),+) => {
            $(if $upd.$get().is_some() {
                $cur.$set($upd.$get().clone());
            })+
        };
    }
    if let Some(m) = update.memory() {
        let mut cur = current.memory().unwrap_or_default();
        take!(cur, m, limit => set_limit, reservation => set_reservation, swap => set_swap,
              swappiness => set_swappiness, disable_oom_killer => set_disable_oom_killer);
        current.set_memory(Some(cur));
    }
    if let Some(c) = update.cpu() {
        let mut cur = current.cpu().clone().unwrap_or_default();
        take!(cur, c, shares => set_shares, quota => set_quota, period => set_period,
              realtime_runtime => set_realtime_runtime, realtime_period => set_realtime_period,
              cpus => set_cpus, mems => set_mems, idle => set_idle, burst => set_burst);
        current.set_cpu(Some(cur));
    }
    if let Some(p) = update.pids() {
        current.set_pids(Some(*p));
    }
    if let Some(b) = update.block_io() {
        let mut cur = current.block_io().clone().unwrap_or_default();
        take!(cur, b, weight => set_weight, leaf_weight => set_leaf_weight,
              weight_device => set_weight_device,
              throttle_read_bps_device => set_throttle_read_bps_device,
              throttle_write_bps_device => set_throttle_write_bps_device,
              throttle_read_iops_device => set_throttle_read_iops_device,
              throttle_write_iops_device => set_throttle_write_iops_device);
        current.set_block_io(Some(cur));
    }
    if let Some(h) = update.hugepage_limits() {
        current.set_hugepage_limits(Some(h.clone()));
    }
    if let Some(u) = update.unified() {
        current.set_unified(Some(u.clone()));
    }
    current
}

/// `linux.resources`, with the device nodes of `linux.devices` allowed, as runc does.
fn cgroup_resources(spec: &hull_specs::Spec) -> Option<oci_spec::runtime::LinuxResources> {
    let linux = spec.linux().as_ref()?;
    let mut resources = linux.resources().clone();
    if let Some(devices) = linux.devices().as_ref().filter(|d| !d.is_empty()) {
        let r = resources.get_or_insert_with(Default::default);
        let mut rules = r.devices().clone().unwrap_or_default();
        rules.extend(crate::cgroups::spec_device_rules(devices));
        r.set_devices(Some(rules));
    }
    resources
}

pub(crate) fn load_state(dir: &ContainerDir) -> Result<SavedState, Error> {
    dir.load()?
        .ok_or_else(|| Error::State(StateError::NotExist(dir.id.clone())))
}

/// The status, derived from the live process rather than stored, so it is never stale.
pub fn status_of(dir: &ContainerDir, saved: &SavedState) -> Status {
    if saved.pid <= 0 || !process_alive(saved.pid, saved.pid_start_time) {
        return Status::Stopped;
    }
    if !saved.ready {
        return Status::Creating;
    }
    if dir.fifo_path().exists() {
        return Status::Created;
    }
    if saved.cgroup.as_ref().is_some_and(|cg| cg.is_frozen()) {
        return Status::Paused;
    }
    Status::Running
}

fn public_state(dir: &ContainerDir, saved: &SavedState, owner: String) -> ContainerState {
    let status = status_of(dir, saved);
    ContainerState {
        oci_version: saved.oci_version.clone(),
        id: saved.id.clone(),
        pid: if status == Status::Stopped {
            0
        } else {
            saved.pid
        },
        status,
        bundle: saved.bundle.clone(),
        rootfs: saved.rootfs.clone(),
        created: saved.created.clone(),
        owner,
        annotations: saved.annotations.clone(),
    }
}

/// Poststart and poststop hooks: a failure is a warning and the next hooks still run
/// (runtime-spec).
fn run_hooks_warning(kind: &str, list: &[oci_spec::runtime::Hook], state: &str) {
    for (i, hook) in list.iter().enumerate() {
        if let Err(e) = hooks::run_hook(kind, i, hook, state.as_bytes()) {
            tracing::warn!("{e}");
        }
    }
}

/// The state JSON hooks receive on stdin (runtime-spec "state").
pub(crate) fn hook_state(saved: &SavedState, status: Status) -> String {
    serde_json::json!({
        "ociVersion": saved.oci_version,
        "id": saved.id,
        "status": status,
        "pid": saved.pid,
        "bundle": saved.bundle,
        "annotations": saved.annotations,
    })
    .to_string()
}

/// A signal number `kill` accepts: 1..=64, the standard and the real-time signals (nix's
/// `Signal` has no real-time signals, so numbers are passed through as they are).
pub fn check_signal(signal: i32) -> Result<(), Error> {
    if (1..=hull_specs::signal::SIGRTMAX).contains(&signal) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid signal number {signal}: signals are 1..=64"
        )))
    }
}

/// Kill every process of the container and wait until init is gone.
fn kill_container(saved: &SavedState) -> Result<(), Error> {
    if let Some(cg) = &saved.cgroup {
        if let Err(e) = cg.signal_all(libc::SIGKILL) {
            tracing::debug!("signalling the cgroup: {e}");
        }
    }
    let init = PidFd::open(saved.pid, saved.pid_start_time).map_err(|source| Error::Sys {
        what: format!("pidfd_open {}", saved.pid),
        source,
    })?;
    if let Some(init) = init {
        let _ = init.signal(libc::SIGKILL);
        if !init.wait_exit(Duration::from_secs(10)) {
            return Err(Error::Init(format!(
                "init process {} did not die after SIGKILL",
                saved.pid
            )));
        }
    }
    // The cgroup may still list exiting processes for a moment; destroy() retries.
    Ok(())
}

/// `--preserve-fds N`: descriptors 3 .. 3+N must fit below the open-files limit.
pub(crate) fn check_preserve_fds(n: i32) -> Result<(), Error> {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    if n < 0 || i64::from(n) + 3 > limit as i64 {
        return Err(Error::Usage(format!(
            "--preserve-fds {n}: must be between 0 and the open-files limit ({limit}) minus 3"
        )));
    }
    Ok(())
}

/// SIGKILL whatever is left in the container's cgroup and wait (10 s at most) until it is
/// empty, so that its directories can be removed.
fn kill_cgroup_members(cg: &ContainerCgroup) -> Result<(), Error> {
    if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
        return Ok(());
    }
    cg.signal_all(libc::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
        if Instant::now() > deadline {
            return Err(Error::Init(format!(
                "processes of cgroup {} did not die after SIGKILL",
                cg.path
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Open the exec fifo for reading and wait for init's byte, watching that init lives.
fn release_fifo(fifo: &Path, saved: &SavedState, limit: Option<Duration>) -> Result<(), Error> {
    let began = Instant::now();
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(fifo)
        .map_err(io(format!("opening exec fifo {fifo:?}")))?;
    // Unlinked at once: from here on the start is committed (init's write goes through
    // even if this command dies), and the status must no longer say "created".
    fs::remove_file(fifo).map_err(io(format!("removing {fifo:?}")))?;
    loop {
        let mut fds = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16))
            .or_else(|e| {
                if e == nix::Error::EINTR {
                    Ok(0)
                } else {
                    Err(e)
                }
            })
            .map_err(sys("poll exec fifo"))?;
        if n > 0 {
            let mut b = [0u8; 1];
            match f.read(&mut b) {
                Ok(1) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io("reading exec fifo")(e)),
            }
        }
        if !process_alive(saved.pid, saved.pid_start_time) {
            return Err(Error::Init(format!(
                "container init {} exited before start",
                saved.pid
            )));
        }
        if let Some(limit) = limit.filter(|l| began.elapsed() > *l) {
            return Err(Error::Init(crate::init_deadline::exceeded(
                "start the container process",
                limit,
            )));
        }
    }
    Ok(())
}

fn make_fifo(path: &Path) -> Result<(), Error> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .map_err(sys(format!("mkfifo {path:?}")))?;
    // mkfifo applies the umask; init (perhaps another uid) must be able to write it.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o622))
        .map_err(io(format!("chmod {path:?}")))
}

/// Write the new user namespace's uid/gid maps: directly as root (any number of ranges),
/// through newuidmap/newgidmap when unprivileged (see `userns_auto`).
fn write_id_maps(pid: Pid, spec: &hull_specs::Spec) -> Result<(), Error> {
    let linux = spec.linux().as_ref();
    let uid = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or_default();
    Ok(crate::userns_auto::write_id_maps(pid.as_raw(), uid, gid)?)
}

/// Puts init in `cg`: the parent writes its pid into the cgroup2 hierarchy (if any),
/// then sends `ToInit::JoinCgroup` with the v1 `tasks` files, which init writes "0" into.
pub(crate) fn join_through_init(
    sock: &mut UnixStream,
    cg: &ContainerCgroup,
    pid: i32,
) -> Result<(), Error> {
    cg.add_process_v2_only(pid)?;
    let files = cg.v1_task_files();
    if files.is_empty() {
        return Ok(sync::send(sock, &ToInit::CgroupJoined)?);
    }
    let mut fds = Vec::with_capacity(files.len());
    for path in &files {
        use std::os::unix::fs::OpenOptionsExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        fds.push(OwnedFd::from(f));
    }
    sync::send(sock, &ToInit::JoinCgroup { files })?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    sync::send_fds(sock, &borrowed)?;
    Ok(())
}

/// `linux.resources` asks for more than the device rules (which a rootless container does
/// without: it cannot create devices anyway). Zeros are not asks (runc's rule: Docker sends
/// `cpu.shares: 0` and `blockIO.weight: 0` with every container).
fn asks_for_limits(resources: Option<&oci_spec::runtime::LinuxResources>) -> bool {
    resources.is_some_and(|r| {
        let mut r = crate::cgroups::normalize_resources(r);
        r.set_devices(None);
        r != oci_spec::runtime::LinuxResources::default()
    })
}

/// Undoes a failed `create`: kills init, removes the cgroup and the state directory.
struct CreateGuard {
    dir: Option<ContainerDir>,
    pid: Option<Pid>,
    cgroup: Option<ContainerCgroup>,
    /// A VM container's rootfs, where its VMM stages host bind mounts.
    vm_rootfs: Option<PathBuf>,
}

impl CreateGuard {
    fn disarm(&mut self) {
        self.dir = None;
        self.pid = None;
        self.cgroup = None;
        self.vm_rootfs = None;
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = kill_cgroup_members(&cg).and_then(|()| Ok(cg.destroy()?)) {
                tracing::warn!("cleaning up after a failed create: {e}");
            }
        }
        if let Some(rootfs) = self.vm_rootfs.take() {
            crate::vm::binds::remove_stage(&rootfs);
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.remove() {
                tracing::warn!("cleaning up after a failed create: {e}");
            }
        }
    }
}

/// Init went away before it was ready: its exit status, or the memory limit when the
/// cgroup's OOM killer took it (runc fails the same config when it sets the limit).
fn init_died_during_setup(
    guard: &mut CreateGuard,
    pid: Pid,
    spec: &hull_specs::Spec,
    cgroup: Option<&ContainerCgroup>,
) -> Error {
    let end = reap(pid);
    if end.is_some() {
        // Reaped: the pid may be reused at once, so the guard must not signal it.
        guard.pid = None;
    }
    let sigkilled = matches!(
        end,
        Some(nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGKILL, _))
    );
    let limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    if let (true, Some(limit), Some(cg)) = (sigkilled, limit, cgroup) {
        match cg.stats() {
            Ok(st) if st.memory.usage.failcnt > 0 => {
                return Error::SetupOom {
                    pid: pid.as_raw(),
                    limit,
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("reading the memory cgroup's failure count: {e}"),
        }
    }
    Error::Init(format!(
        "init process {pid} exited during set-up{}",
        describe_end(end)
    ))
}

/// An error message init has already sent, without waiting for one.
pub(crate) fn pending_init_error(sock: &mut UnixStream) -> Option<String> {
    sock.set_nonblocking(true).ok()?;
    let msg = sync::recv::<FromInit>(sock);
    let _ = sock.set_nonblocking(false);
    match msg {
        Ok(FromInit::Error(m)) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{applied_part, asks_for_limits, merge_resources};
    use oci_spec::runtime::LinuxResources;

    #[test]
    fn a_partly_failed_update_saves_only_what_it_wrote() {
        let request: LinuxResources = serde_json::from_str(
            r#"{"pids":{"limit":50},"memory":{"limit":1,"reservation":4096},"cpu":{"shares":512,"quota":50000}}"#,
        )
        .unwrap();
        let fields = [
            "linux.resources.cpu".to_string(),
            "linux.resources.pids".to_string(),
            "linux.resources.memory.reservation".to_string(),
        ];
        let part = applied_part(&request, &fields);
        assert_eq!(part.pids().map(|p| p.limit()), Some(50));
        assert_eq!(part.cpu().as_ref().and_then(|c| c.shares()), Some(512));
        assert_eq!(part.cpu().as_ref().and_then(|c| c.quota()), Some(50000));
        let mem = part.memory().expect("memory part");
        assert_eq!(mem.reservation(), Some(4096));
        assert_eq!(mem.limit(), None, "the refused limit must not be saved");
        assert_eq!(applied_part(&request, &[]), LinuxResources::default());
    }

    #[test]
    fn docker_zeros_and_device_rules_are_no_limits_for_a_rootless_create() {
        let docker: LinuxResources = serde_json::from_str(
            r#"{"devices":[{"allow":false,"access":"rwm"}],"cpu":{"shares":0},"blockIO":{"weight":0},"memory":{"limit":0}}"#,
        )
        .unwrap();
        assert!(!asks_for_limits(Some(&docker)));
        assert!(!asks_for_limits(None));
        let real: LinuxResources =
            serde_json::from_str(r#"{"cpu":{"shares":0},"pids":{"limit":10}}"#).unwrap();
        assert!(asks_for_limits(Some(&real)));
    }

    #[test]
    fn merge_keeps_fields_an_update_leaves_at_zero() {
        let current: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":67108864,"swap":134217728},"cpu":{"shares":512,"quota":50000,"period":100000},"pids":{"limit":50}}"#,
        )
        .unwrap();
        let update: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":33554432,"reservation":0,"kernel":0},"cpu":{"shares":0,"quota":0,"period":0},"pids":{"limit":0},"blockIO":{"weight":0}}"#,
        )
        .unwrap();
        let m = merge_resources(current, &update);
        let mem = m.memory().unwrap();
        assert_eq!(
            (mem.limit(), mem.swap(), mem.reservation()),
            (Some(33554432), Some(134217728), None)
        );
        let cpu = m.cpu().clone().unwrap();
        assert_eq!(
            (cpu.shares(), cpu.quota(), cpu.period()),
            (Some(512), Some(50000), Some(100000))
        );
        assert_eq!(m.pids().unwrap().limit(), 50);
        assert!(m.block_io().is_none());
    }
}
