//! The container's init: `hull init`, exec'd by `create` right after the `clone` that gave
//! it its new namespaces. It is a fresh, single-threaded process image, so it may do all
//! the set-up work (the forked child before it did nothing but async-signal-safe calls).
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
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::Spec;

use crate::sync::{self, FromInit, InitPlan, ToInit};
use crate::{hooks, lsm, namespaces, network, process_setup, rootfs, seccomp, terminal};

/// The environment variable naming init's end of the sync socket.
pub const INIT_FD_ENV: &str = "_HULL_INIT_FD";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{INIT_FD_ENV} is missing or invalid: hull init is started by hull create only")]
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
    Seccomp(#[from] seccomp::SeccompError),
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

/// Entry point of `hull init`. Never returns: execs the container process or exits.
pub fn run() -> ! {
    install_panic_hook();
    let fd = std::env::var(INIT_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    let Some(fd) = fd else {
        let _ = report_on_stderr(&InitError::NoSyncFd.to_string());
        exit_now(1);
    };
    std::env::remove_var(INIT_FD_ENV);
    // SAFETY: the parent placed our end of the sync socket at this descriptor for us alone.
    let mut sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let err = match setup(&mut sock) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // The parent closed the connection on purpose (its own step failed, and it reports
    // that error): a line of ours would only add noise.
    if matches!(err, InitError::Sync(sync::SyncError::Closed)) {
        exit_now(1);
    }
    // The parent reports the error; if it is gone (after create), stderr is all we have.
    // After Ready the socket is shut down: writing it would raise SIGPIPE, whose default
    // action the failed execve has just restored.
    let sent = !SYNC_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
        && sync::send(&mut sock, &FromInit::Error(err.to_string())).is_ok();
    if !sent && !report_on_stderr(&err.to_string()) {
        // Nowhere to say why (a seccomp profile without write): a status that says so.
        exit_now(crate::container::EXIT_ERROR_UNREPORTED);
    }
    exit_now(1);
}

/// `hull init: <msg>` on stderr with one `write(2)`; false if that failed (`eprintln!`
/// would panic then).
fn report_on_stderr(msg: &str) -> bool {
    let line = format!("hull init: {msg}\n");
    // SAFETY: write reads `len` bytes of the buffer we own.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) > 0 }
}

/// `_exit(2)`: no atexit handlers, no stdio flush, nothing a seccomp filter could refuse but
/// `exit_group`.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours.
    unsafe { libc::_exit(code) }
}

/// A panic in init (a bug) must still end in a message and exit status 1: the default path
/// (unwinding or, in release builds, abort) needs signals a seccomp filter may forbid, and
/// ends in SIGSEGV then.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if !report_on_stderr(&format!("internal error: {info}")) {
            exit_now(crate::container::EXIT_ERROR_UNREPORTED);
        }
        exit_now(1);
    }));
}

pub(crate) enum Never {}

fn setup(sock: &mut UnixStream) -> Result<Never, InitError> {
    // A new session: detached from hull's terminal and process group, as runc's init.
    nix::unistd::setsid().map_err(sys("setsid"))?;
    let plan = match sync::recv::<ToInit>(sock)? {
        ToInit::Plan(p) => *p,
        ToInit::Exec(p) => return crate::exec::run_in_container(sock, *p),
        other => {
            return Err(sync::SyncError::Unexpected {
                expected: "Plan",
                got: format!("{other:?}"),
            }
            .into())
        }
    };
    let spec = &plan.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::Invalid("config.json: process is missing".into()))?;

    // Before any mount changes: the fifo lives in hull's state directory on the host.
    let fifo = open_fifo_path(&plan.fifo)?;
    // Compiled now so a bad profile fails `create`; a notify agent is connected now, while
    // its host path is reachable.
    let seccomp = plan
        .seccomp
        .clone()
        .map(|c| seccomp::prepare_compiled(c, spec.version()))
        .transpose()?;

    enter_namespaces(&plan)?;
    if network::has_new_netns(spec) {
        network::bring_up_loopback()?;
    }
    if !plan.no_new_keyring {
        join_session_keyring(&plan.id);
    }
    set_host_and_domain_name(spec)?;

    // linux.mountLabel: the mounts get SELinux's context= option (None without a label).
    let labeled = lsm::label_mounts(spec, lsm::Host::probe());
    let rootfs_plan = rootfs::RootfsPlan {
        spec: labeled.as_ref().unwrap_or(spec),
        rootfs: &plan.rootfs,
        bundle: &plan.bundle,
        no_pivot: plan.no_pivot,
        in_user_ns: plan.in_user_ns,
    };
    rootfs::prepare_with_cgroup_barrier(&rootfs_plan, &mut || {
        after_cgroup_join(sock, &plan)
            .map_err(|e| rootfs::RootfsError::Other(format!("joining the cgroup: {e}")))
    })?;

    sync::send(sock, &FromInit::MountsReady)?;
    let state_json = match sync::recv::<ToInit>(sock)? {
        ToInit::HooksDone { state_json } => state_json,
        other => {
            return Err(sync::SyncError::Unexpected {
                expected: "HooksDone",
                got: format!("{other:?}"),
            }
            .into())
        }
    };
    if let Some(h) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        hooks::run_hooks("createContainer", &h, state_json.as_bytes())?;
    }

    rootfs::enter(&rootfs_plan)?;
    write_sysctls(spec)?;
    if process.terminal().unwrap_or(false) {
        setup_console(plan.console_fd)?;
    }
    rootfs::finish(&rootfs_plan)?;

    let cwd = process.cwd();
    // runc creates a missing working directory; we are inside the new root by now.
    if !cwd.exists() {
        std::fs::create_dir_all(cwd).map_err(io(format!("creating process.cwd {cwd:?}")))?;
    }
    nix::unistd::chdir(cwd).map_err(sys(format!("process.cwd {cwd:?}")))?;
    verify_cwd_inside(cwd)?;
    let env = container_env(process);
    let args = process.args().clone().unwrap_or_default();
    let arg0 = args
        .first()
        .ok_or_else(|| InitError::Invalid("config.json: process.args is empty".into()))?;
    let exe = process_setup::find_executable(arg0, &env, cwd)?;
    let exec = ExecArgs::new(&exe, &args, &env)?;

    // The caller's descriptors were closed by the exec of init; the ones init opened since
    // are marked now, before a seccomp filter may forbid close_range.
    close_fds_on_exec(3 + plan.preserve_fds)?;
    let personality = spec.linux().as_ref().and_then(|l| l.personality().as_ref());
    // AppArmor profile / SELinux label for the execve, while we may still choose them.
    lsm::apply_exec_labels(&lsm::AttrDir::proc_self(), process)?;
    // Limits, user, capabilities, noNewPrivileges now, so a failure fails `create` (runc).
    // Loads the filter before the user switch when noNewPrivileges is false.
    let seccomp = seccomp::apply_process(process, personality, seccomp, &state_json)?;

    // From Ready on, init outlives `hull create`: drop the parent-death signal it was
    // cloned with (which took it down if create died half-way).
    nix::sys::prctl::set_pdeathsig(None).map_err(sys("clearing the parent-death signal"))?;
    sync::send(sock, &FromInit::Ready)?;
    drop_sync_socket(sock);
    wait_for_start(&fifo)?;
    drop(fifo);

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
        hooks::run_hooks("startContainer", &h, state.to_string().as_bytes())?;
    }
    if let Some(filter) = seccomp {
        filter.activate(&state_json)?;
    }
    Err(exec.exec())
}

/// CVE-2024-21626: a `process.cwd` reached through a descriptor of the host (e.g.
/// `/proc/self/fd/N` of a leaked or `--preserve-fds` directory) leaves the working directory
/// outside the container's root; `getcwd` then fails with ENOENT ("unreachable"). Refuse
/// that, as runc does, instead of starting the process there.
pub(crate) fn verify_cwd_inside(cwd: &Path) -> Result<(), InitError> {
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        Ok(p) => Err(InitError::Invalid(format!(
            "process.cwd {cwd:?}: the working directory {p:?} is outside the container's root"
        ))),
        Err(e) => Err(InitError::Invalid(format!(
            "process.cwd {cwd:?}: the working directory is outside the container's root \
             (getcwd: {e}): possible container breakout, refused"
        ))),
    }
}

/// Join a user namespace by path (init's only `setns`), become its root, then create the
/// namespaces that must be owned by it or must start at the container's cgroup.
fn enter_namespaces(plan: &InitPlan) -> Result<(), InitError> {
    if let Some(path) = &plan.join_user {
        namespaces::join(namespaces::NsKind::User, path)?;
        become_root_in_user_ns()?;
    }
    let flags = CloneFlags::from_bits_retain(plan.unshare_flags);
    namespaces::unshare(flags - CloneFlags::CLONE_NEWCGROUP)?;
    Ok(())
}

/// Wait until the parent has placed init in its cgroup, then make the cgroup namespace
/// (rooted at that cgroup) if the container has one.
fn after_cgroup_join(sock: &mut UnixStream, plan: &InitPlan) -> Result<(), InitError> {
    match sync::recv::<ToInit>(sock)? {
        ToInit::CgroupJoined => {}
        other => {
            return Err(sync::SyncError::Unexpected {
                expected: "CgroupJoined",
                got: format!("{other:?}"),
            }
            .into())
        }
    }
    let flags = CloneFlags::from_bits_retain(plan.unshare_flags);
    namespaces::unshare(flags & CloneFlags::CLONE_NEWCGROUP)?;
    Ok(())
}

pub(crate) fn become_root_in_user_ns() -> Result<(), InitError> {
    nix::unistd::setresgid(0.into(), 0.into(), 0.into())
        .map_err(sys("setresgid(0) in the user namespace (is 0 mapped?)"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into())
        .map_err(sys("setresuid(0) in the user namespace (is 0 mapped?)"))
}

/// A session keyring of the container's own, so containers do not share the host's keys.
/// Kernels or seccomp profiles without keyctl are tolerated, as runc does.
fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let Ok(name) = CString::new(format!("_ses.{id}")) else {
        return;
    };
    // SAFETY: keyctl reads the NUL-terminated name we own; no other memory is passed.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc < 0 {
        tracing::debug!("keyctl: {}", std::io::Error::last_os_error());
    }
}

fn set_host_and_domain_name(spec: &Spec) -> Result<(), InitError> {
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).map_err(sys(format!("hostname {h:?}")))?;
    }
    if let Some(d) = spec.domainname() {
        // SAFETY: setdomainname reads `len` bytes of the string we own.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc < 0 {
            return Err(InitError::Sys {
                what: format!("domainname {d:?}"),
                source: nix::Error::last(),
            });
        }
    }
    Ok(())
}

/// `linux.sysctl`, written through the container's own (verified) /proc/sys.
fn write_sysctls(spec: &Spec) -> Result<(), InitError> {
    let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        if key.contains('/') || key.split('.').any(|p| p.is_empty() || p == "..") {
            return Err(InitError::Invalid(format!(
                "linux.sysctl: invalid key {key:?}"
            )));
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, sysctl[key].as_bytes())
            .map_err(io(format!("linux.sysctl {key:?} (writing {path:?})")))?;
    }
    Ok(())
}

/// Allocate the container's pty, send its master to the console socket and make the slave
/// init's controlling terminal and stdio.
pub(crate) fn setup_console(console_fd: Option<i32>) -> Result<(), InitError> {
    let fd = console_fd.ok_or_else(|| {
        InitError::Invalid("process.terminal is set but no console socket was given".into())
    })?;
    // SAFETY: the parent passed this descriptor to us for this purpose only.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let pty = terminal::open_pty()?;
    terminal::send_fd(
        std::os::fd::AsFd::as_fd(&sock),
        "/dev/ptmx",
        std::os::fd::AsFd::as_fd(&pty.master),
    )?;
    drop(pty.master);
    terminal::become_console(&pty.slave)?;
    Ok(())
}

/// `process.env`, plus `HOME` from the container's /etc/passwd when it is not set.
pub(crate) fn container_env(process: &oci_spec::runtime::Process) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home =
            process_setup::home_for_uid(process.user().uid()).unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

/// The exec fifo as an `O_PATH` descriptor: opening it for writing blocks, so that waits
/// until everything else is done.
fn open_fifo_path(path: &Path) -> Result<File, InitError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(io(format!("opening exec fifo {path:?}")))
}

/// Block until `hull start` opens the fifo for reading, then tell it we are going.
fn wait_for_start(fifo: &File) -> Result<(), InitError> {
    use std::io::Write;
    let reopen = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&reopen)
        .map_err(io("opening the exec fifo for writing (is /proc mounted?)"))?;
    w.write_all(b"0").map_err(io("writing the exec fifo"))
}

/// Every descriptor from `first` up is closed by the coming execve (see `fds`: also where a
/// seccomp profile written before `close_range` existed forbids it).
pub(crate) fn close_fds_on_exec(first: i32) -> Result<(), InitError> {
    crate::fds::mark_cloexec_from(first).map_err(io("marking descriptors close-on-exec"))
}

/// Set once the sync socket is shut down: nothing may be written to it after that.
static SYNC_DROPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn drop_sync_socket(sock: &UnixStream) {
    let _ = sock.shutdown(std::net::Shutdown::Both);
    SYNC_DROPPED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Give the container process default signal handling: the Rust runtime ignores SIGPIPE
/// (an ignored signal survives execve) and a caller's blocked signals are inherited.
fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    // SAFETY: installing SIG_DFL runs no handler code; we exec right after.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The user process's execve arguments, built before anything can go wrong at exec time.
pub(crate) struct ExecArgs {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecArgs {
    pub(crate) fn new(exe: &Path, args: &[String], env: &[String]) -> Result<Self, InitError> {
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

    pub(crate) fn exec(&self) -> InitError {
        reset_signals();
        let Err(err) = nix::unistd::execve(&self.path, &self.argv, &self.envp);
        InitError::Sys {
            what: format!("exec {:?}", self.path),
            source: err,
        }
    }
}
