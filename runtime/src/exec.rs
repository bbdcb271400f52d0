//! `exec`: one more process in a running container. The parent enters the container's
//! namespaces around the `clone` (as `create` does for joined ones) and puts the child in
//! the container's cgroup; the child execs `hull init`, which joins the container's user
//! and mount namespaces (so it stands at the container's root), applies the process spec
//! and execs the command (the container side is `hull_inside::sequence`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use crate::container::{hook_state, io, load_state, status_of, Error, Runtime, Status};
use crate::spawn::{
    describe_end, dup_above, reap, spawn_init, stdio_above, stdio_raw, ChildSetup, InitExec,
};
use crate::state::{self, ContainerDir};
use hull_inside::namespaces::{self, ChildNamespaceGuard, NsKind};
use hull_inside::sync::{self, ExecPlan, FromInit, ToInit};
use hull_inside::terminal;

/// Namespaces the parent enters for the clone; user and mount are joined by init.
const PARENT_JOINS: [NsKind; 6] = [
    NsKind::Pid,
    NsKind::Net,
    NsKind::Ipc,
    NsKind::Uts,
    NsKind::Cgroup,
    NsKind::Time,
];

#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub process: Process,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    /// The process's stdin, stdout and stderr; None gives it the caller's fds 0-2.
    pub stdio: Option<[RawFd; 3]>,
}

/// Kills and reaps a half-started exec process unless disarmed.
struct ExecGuard(Option<Pid>);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// `process` checks a process.json must pass (the container's config was validated at
/// create; this one comes from the caller now).
pub fn validate_process(process: &Process) -> Result<(), Error> {
    let args = process.args().as_deref().unwrap_or(&[]);
    if args.first().is_none_or(|a| a.is_empty()) {
        return Err(Error::Usage("process.args must not be empty".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::Usage(format!(
            "process.cwd {:?} is not an absolute path",
            process.cwd()
        )));
    }
    if let Some(env) = process.env() {
        if let Some(bad) = env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
            return Err(Error::Usage(format!(
                "process.env entry {bad:?} is not NAME=value"
            )));
        }
    }
    Ok(())
}

impl Runtime {
    /// Start `opts.process` in container `id`. Returns 0 with `detach`, else the process's
    /// exit status once it exits.
    pub fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32, Error> {
        hull_specs::validate_container_id(id)?;
        validate_process(&opts.process)?;
        crate::container::check_preserve_fds(opts.preserve_fds)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        let status = status_of(&dir, &saved);
        if !matches!(status, Status::Running | Status::Created) {
            return Err(Error::WrongStatus {
                op: "exec in",
                id: id.to_string(),
                status,
            });
        }
        let terminal = opts.process.terminal().unwrap_or(false);
        let (console_sock, relay) = match (&opts.console_socket, terminal, opts.detach) {
            (Some(_), false, _) => {
                return Err(Error::Usage(
                    "--console-socket was given but the process has no terminal".into(),
                ))
            }
            (Some(path), true, _) => (Some(terminal::connect_console_socket(path)?), None),
            (None, true, false) => {
                let (a, b) = UnixStream::pair().map_err(io("console socketpair"))?;
                (Some(OwnedFd::from(b)), Some(OwnedFd::from(a)))
            }
            (None, true, true) => {
                return Err(Error::Usage(
                    "a terminal was requested with --detach: --console-socket is required".into(),
                ))
            }
            (None, false, _) => (None, None),
        };

        // An exec'd process keeps the container's LSM labels unless it names its own (runc);
        // labels the host cannot apply are refused here.
        let mut process = opts.process.clone();
        if let Some(cp) = saved.config.process().as_ref() {
            if process
                .apparmor_profile()
                .as_deref()
                .unwrap_or("")
                .is_empty()
            {
                process.set_apparmor_profile(cp.apparmor_profile().clone());
            }
            if process.selinux_label().as_deref().unwrap_or("").is_empty() {
                process.set_selinux_label(cp.selinux_label().clone());
            }
        }
        hull_inside::lsm::check_process(&process, hull_inside::lsm::Host::probe())?;
        // Init pinned: the parent joins its namespaces through the pidfd, and the user and
        // mount namespace files the child joins, opened below by pid, are init's only if
        // init is still alive after they were opened (its pid cannot have been reused).
        let init = crate::process::PidFd::open(saved.pid, saved.pid_start_time)
            .map_err(|source| Error::Sys {
                what: format!("pidfd_open {}", saved.pid),
                source,
            })?
            .ok_or(Error::NotRunning)?;
        let joins: Vec<NsKind> = namespaces::differing(saved.pid, &PARENT_JOINS)
            .into_iter()
            .map(|(kind, _)| kind)
            .collect();
        let open_ns = |p: &std::path::Path| {
            std::fs::File::open(p).map_err(|source| Error::Io {
                what: format!("opening {}", p.display()),
                source,
            })
        };
        let user_ns = namespaces::differing(saved.pid, &[NsKind::User])
            .pop()
            .map(|(_, p)| open_ns(&p))
            .transpose()?;
        let mount_ns = open_ns(&PathBuf::from(format!("/proc/{}/ns/mnt", saved.pid)))?;
        if init.signal(0).is_err() {
            return Err(Error::NotRunning);
        }
        let plan = ExecPlan {
            id: id.to_string(),
            process,
            join_user: None,
            join_mount: PathBuf::new(),
            console_fd: None,
            preserve_fds: opts.preserve_fds,
            personality: saved
                .config
                .linux()
                .as_ref()
                .and_then(|l| l.personality().clone()),
            seccomp: self.compile_seccomp(&saved.config)?,
            oci_version: saved.oci_version.clone(),
            state_json: hook_state(&saved, Status::Running),
        };

        let (mut ours, theirs) = UnixStream::pair().map_err(io("sync socketpair"))?;
        let min_fd = 3 + opts.preserve_fds;
        let init_fd = dup_above(theirs.as_fd(), min_fd)?;
        drop(theirs);
        let console_child = console_sock
            .as_ref()
            .map(|c| dup_above(c.as_fd(), min_fd))
            .transpose()?;
        let user_ns_child = user_ns
            .as_ref()
            .map(|f| dup_above(f.as_fd(), min_fd))
            .transpose()?;
        let mount_ns_child = dup_above(mount_ns.as_fd(), min_fd)?;
        // A VM container's processes run in its guest: `hull vm-exec` asks the agent.
        let in_vm = crate::vm::wanted(&saved.config)?;
        let exec = if in_vm {
            InitExec::command(
                self.init_binary.as_deref(),
                init_fd.as_raw_fd(),
                "vm-exec",
                &[(
                    crate::vm::exec::SOCKET_ENV,
                    dir.path.join(crate::vm::AGENT_SOCKET).display().to_string(),
                )],
            )?
        } else {
            InitExec::new(self.init_binary.as_deref(), init_fd.as_raw_fd())?
        };
        let child_fds: Vec<RawFd> = std::iter::once(init_fd.as_raw_fd())
            .chain(console_child.as_ref().map(|f| f.as_raw_fd()))
            .chain(user_ns_child.as_ref().map(|f| f.as_raw_fd()))
            .chain(std::iter::once(mount_ns_child.as_raw_fd()))
            .collect();
        let stdio = stdio_above(opts.stdio, min_fd)?;
        let pid = {
            let _ns = ChildNamespaceGuard::join_process(init.as_fd(), &joins)?;
            spawn_init(&ChildSetup {
                flags: CloneFlags::empty().bits(),
                exec: &exec,
                keep_fds: &child_fds,
                first_unpreserved_fd: min_fd,
                stdio: stdio_raw(&stdio),
                wait_for_maps_on: None,
            })?
        };
        let mut guard = ExecGuard(Some(pid));
        drop(init_fd);
        // The child has its own copies at the same numbers.
        let fd_path = |fd: RawFd| PathBuf::from(format!("/proc/self/fd/{fd}"));
        let plan = ExecPlan {
            console_fd: console_child.as_ref().map(|f| f.as_raw_fd()),
            join_user: user_ns_child.as_ref().map(|f| fd_path(f.as_raw_fd())),
            join_mount: fd_path(mount_ns_child.as_raw_fd()),
            ..plan
        };
        drop(console_child);
        // As in `create`: the process joins the cgroup v1 hierarchies itself, through
        // `tasks` files opened here (a move by anyone else first waits for an RCU grace
        // period, 4-8 ms on an idle host). `hull vm-exec` (another protocol) and rootless
        // hull get the parent's write.
        let joins_itself = !self.rootless && !in_vm;
        if let (Some(cg), false) = (&saved.cgroup, joins_itself) {
            cg.add_process(pid.as_raw())?;
        }
        sync::send(&mut ours, &ToInit::Exec(Box::new(plan)))?;
        if joins_itself {
            let joined = match &saved.cgroup {
                Some(cg) => crate::container::join_through_init(&mut ours, cg, pid.as_raw()),
                None => Ok(sync::send(&mut ours, &ToInit::CgroupJoined)?),
            };
            if let Err(e) = joined {
                // The process may have failed meanwhile: its message says more.
                return Err(crate::container::pending_init_error(&mut ours).map_or(e, Error::Init));
            }
        }
        match sync::recv::<FromInit>(&mut ours) {
            Ok(FromInit::Ready) => {}
            Ok(FromInit::Error(msg)) => return Err(Error::Init(msg)),
            Ok(other) => {
                return Err(Error::Init(format!(
                    "unexpected message from exec: {other:?}"
                )))
            }
            Err(e) if e.peer_gone() => {
                let end = reap(pid);
                if end.is_some() {
                    // Reaped: the pid may be reused at once, so the guard must not signal it.
                    guard.0 = None;
                }
                return Err(Error::Init(format!(
                    "exec process {pid} exited during set-up{}",
                    describe_end(end)
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let master = relay
            .map(|ours| terminal::recv_fd(ours.as_fd()))
            .transpose()?;
        if let Some(pid_file) = &opts.pid_file {
            state::write_pid_file(pid_file, pid.as_raw())?;
        }
        guard.0 = None;
        // Other commands on this container may go on while we wait.
        drop(dir);
        if opts.detach {
            return Ok(0);
        }
        crate::wait::wait_for_container(pid, master).map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn process_json_is_validated() {
        assert!(validate_process(&process(
            r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"]}"#
        ))
        .is_ok());
        let err = validate_process(&process(
            r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":[]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("process.args"), "{err}");
        let err = validate_process(&process(
            r#"{"cwd":"tmp","user":{"uid":0,"gid":0},"args":["sh"]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("process.cwd"), "{err}");
        let err = validate_process(&process(
            r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"env":["NOEQUALS"]}"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("process.env"), "{err}");
    }
}
