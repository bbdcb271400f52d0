//! The live [`System`]: the set-up steps done for real, on this process and the namespaces
//! it is in (what `hull init` and the guest agent run).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{Hook, LinuxPersonality, Process, Spec};

use crate::seccomp::{Compiled, Prepared};
use crate::sequence::{io, sys, ExecArgs, InitError, System};
use crate::sync::{ExecPlan, InitPlan};
use crate::{hooks, lsm, namespaces, network, process_setup, rootfs, seccomp, terminal};

/// The set-up steps as system calls.
pub struct LiveSystem;

impl System for LiveSystem {
    fn new_session(&mut self) -> Result<(), InitError> {
        // A new session: detached from hull's terminal and process group, as runc's init.
        nix::unistd::setsid().map_err(sys("setsid"))?;
        Ok(())
    }

    fn prepare_seccomp(
        &mut self,
        filter: Compiled,
        oci_version: &str,
    ) -> Result<Prepared, InitError> {
        Ok(seccomp::prepare_compiled(filter, oci_version)?)
    }

    fn enter_namespaces(&mut self, plan: &InitPlan) -> Result<(), InitError> {
        enter_namespaces(plan)
    }

    fn bring_up_loopback(&mut self) -> Result<(), InitError> {
        Ok(network::bring_up_loopback()?)
    }

    fn join_session_keyring(&mut self, id: &str) {
        join_session_keyring(id)
    }

    fn set_host_and_domain_name(&mut self, spec: &Spec) -> Result<(), InitError> {
        set_host_and_domain_name(spec)
    }

    fn prepare_rootfs(
        &mut self,
        plan: &rootfs::RootfsPlan,
        unshare_flags: i32,
        cgroup_joined: &mut dyn FnMut() -> Result<(), rootfs::RootfsError>,
    ) -> Result<(), InitError> {
        rootfs::prepare_with_cgroup_barrier(plan, &mut || {
            cgroup_joined()?;
            // The cgroup namespace (rooted at the container's cgroup) if it has one.
            let flags = CloneFlags::from_bits_retain(unshare_flags);
            namespaces::unshare(flags & CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| rootfs::RootfsError::Other(format!("joining the cgroup: {e}")))
        })?;
        Ok(())
    }

    fn run_hooks(
        &mut self,
        kind: &str,
        hooks: &[Hook],
        state_json: &[u8],
    ) -> Result<(), InitError> {
        Ok(hooks::run_hooks(kind, hooks, state_json)?)
    }

    fn enter_rootfs(&mut self, plan: &rootfs::RootfsPlan) -> Result<(), InitError> {
        Ok(rootfs::enter(plan)?)
    }

    fn write_sysctls(&mut self, spec: &Spec) -> Result<(), InitError> {
        write_sysctls(spec)
    }

    fn setup_console(&mut self, console_fd: Option<i32>) -> Result<(), InitError> {
        setup_console(console_fd)
    }

    fn mount_console(&mut self) -> Result<(), InitError> {
        // SAFETY: fd 0 is the pty slave setup_console just made our stdin; borrowed only
        // for the call.
        let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
        Ok(terminal::mount_dev_console(stdin)?)
    }

    fn finish_rootfs(&mut self, plan: &rootfs::RootfsPlan) -> Result<(), InitError> {
        Ok(rootfs::finish(plan)?)
    }

    fn enter_cwd(&mut self, cwd: &Path, create_missing: bool) -> Result<(), InitError> {
        if create_missing && !cwd.exists() {
            std::fs::create_dir_all(cwd).map_err(io(format!("creating process.cwd {cwd:?}")))?;
        }
        nix::unistd::chdir(cwd).map_err(sys(format!("process.cwd {cwd:?}")))?;
        verify_cwd_inside(cwd)
    }

    fn container_env(&mut self, process: &Process) -> Vec<String> {
        container_env(process)
    }

    fn find_executable(
        &mut self,
        arg0: &str,
        env: &[String],
        cwd: &Path,
    ) -> Result<PathBuf, InitError> {
        Ok(process_setup::find_executable(arg0, env, cwd)?)
    }

    fn close_fds_on_exec(&mut self, first: i32) -> Result<(), InitError> {
        close_fds_on_exec(first)
    }

    fn apply_exec_labels(&mut self, process: &Process) -> Result<(), InitError> {
        Ok(lsm::apply_exec_labels(&lsm::AttrDir::proc_self(), process)?)
    }

    // `process_setup::apply_with_personality`, with the filter loaded at runc's point when
    // `noNewPrivileges` is false: after the bounding set is dropped and before the user
    // switch (which drops the CAP_SYS_ADMIN loading needs without no_new_privs). Returns the
    // filter when it is still to be loaded (no_new_privs set: load it as late as possible
    // with [`Prepared::activate`]).
    fn apply_process(
        &mut self,
        process: &Process,
        personality: Option<&LinuxPersonality>,
        seccomp: Option<Prepared>,
        state_json: &str,
    ) -> Result<Option<Prepared>, InitError> {
        let nnp = process.no_new_privileges() == Some(true);
        let staged = process_setup::apply_before_user_switch(process, personality)?;
        match seccomp {
            Some(sc) if !nnp => {
                sc.activate(state_json)?;
                staged
                    .finish()
                    .map_err(process_setup::ProcessSetupError::after_seccomp_load)?;
                Ok(None)
            }
            later => {
                staged.finish()?;
                Ok(later)
            }
        }
    }

    fn clear_parent_death_signal(&mut self) -> Result<(), InitError> {
        nix::sys::prctl::set_pdeathsig(None).map_err(sys("clearing the parent-death signal"))
    }

    fn activate_seccomp(&mut self, filter: Prepared, state_json: &str) -> Result<(), InitError> {
        Ok(filter.activate(state_json)?)
    }

    fn enter_container(&mut self, plan: &ExecPlan) -> Result<Option<Prepared>, InitError> {
        // Open both namespace files before entering either: after the user namespace we may
        // no longer be allowed to open the host's /proc entries.
        let open = |p: &PathBuf| {
            File::open(p).map_err(|e| InitError::Io {
                what: format!("opening {p:?}"),
                source: e,
            })
        };
        let user = plan.join_user.as_ref().map(open).transpose()?;
        // The agent (a host path) is connected before entering the container.
        let filter = plan
            .seccomp
            .clone()
            .map(|c| seccomp::prepare_compiled(c, &plan.oci_version))
            .transpose()?;
        let mount = open(&plan.join_mount)?;
        if let Some(user) = &user {
            nix::sched::setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
                .map_err(sys("joining the container's user namespace"))?;
            become_root_in_user_ns()?;
        }
        // Entering the mount namespace also sets our root and cwd to the container's root.
        nix::sched::setns(mount.as_fd(), CloneFlags::CLONE_NEWNS)
            .map_err(sys("joining the container's mount namespace"))?;
        drop((user, mount));
        Ok(filter)
    }

    fn exec(&mut self, exec: &ExecArgs) -> InitError {
        reset_signals();
        let Err(err) = nix::unistd::execve(&exec.path, &exec.argv, &exec.envp);
        InitError::Sys {
            what: format!("exec {:?}", exec.path),
            source: err,
        }
    }
}

/// CVE-2024-21626: a `process.cwd` reached through a descriptor of the host (e.g.
/// `/proc/self/fd/N` of a leaked or `--preserve-fds` directory) leaves the working directory
/// outside the container's root; `getcwd` then fails with ENOENT ("unreachable"). Refuse
/// that, as runc does, instead of starting the process there.
fn verify_cwd_inside(cwd: &Path) -> Result<(), InitError> {
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

fn become_root_in_user_ns() -> Result<(), InitError> {
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

/// `linux.sysctl`, written through a private procfs (CVE-2025-52881).
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
        let rel = format!("sys/{}", key.replace('.', "/"));
        // Through a procfs of init's own (see `procfs`).
        let proc = crate::procfs::PrivateProc::shared()
            .map_err(sys("linux.sysctl: a private procfs to write through"))?;
        proc.write(&rel, sysctl[key].as_bytes())
            .map_err(io(format!("linux.sysctl {key:?} (writing /proc/{rel})")))?;
    }
    Ok(())
}

/// Allocate the container's pty, send its master to the console socket and make the slave
/// init's controlling terminal and stdio.
fn setup_console(console_fd: Option<i32>) -> Result<(), InitError> {
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
fn container_env(process: &oci_spec::runtime::Process) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home =
            crate::passwd::home_for_uid(process.user().uid()).unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

/// Every descriptor from `first` up is closed by the coming execve (see `fds`: also where a
/// seccomp profile written before `close_range` existed forbids it).
fn close_fds_on_exec(first: i32) -> Result<(), InitError> {
    crate::fds::mark_cloexec_from(first).map_err(io("marking descriptors close-on-exec"))
}

/// Give the container process default signal handling: the Rust runtime ignores SIGPIPE
/// (an ignored signal survives execve) and a caller's blocked signals are inherited.
fn reset_signals() {
    use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    // SAFETY: installing SIG_DFL runs no handler code; we exec right after.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
