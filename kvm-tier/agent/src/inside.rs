//! Processes of a VM container, set up by the container-side crate (`hull-inside`) exactly
//! as `hull init` sets up an ordinary container: the container's own process gets its
//! namespaces, mounts, masked paths, hostname, user, capabilities and seccomp filter from the
//! container's config; an exec'd process joins them.
//!
//! The agent is multi-threaded, so between fork and execve only async-signal-safe work is
//! allowed: [`InsideLauncher`] clones (with the container's namespace flags), wires the
//! stdio and re-executes the agent binary as `hull-agent container-init`, a fresh
//! single-threaded image that reads its plan from fd 3, runs the sequence and execs the
//! workload; a failure comes back as a message on fd 4 (close-on-exec: EOF means exec'd).

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;

use hull_agent_protocol::ProcessSpec;
use hull_inside::seccomp::Compiled;
use hull_inside::sequence::{self, Coordinator, InitError, Plan};
use hull_inside::sync::{ExecPlan, InitPlan};
use hull_inside::system::LiveSystem;
use serde::{Deserialize, Serialize};

use crate::launcher::{ChildStdio, LaunchError, Launcher};

/// Where the agent mounts the container's rootfs share.
pub const ROOT_DIR: &str = hull_agent_protocol::GUEST_ROOTFS_DIR;
/// The argument that makes `hull-agent` the container-side set-up.
pub const CONTAINER_INIT_ARG: &str = "container-init";
const PLAN_FD: RawFd = 3;
const ERR_FD: RawFd = 4;

/// What `container-init` runs.
#[derive(Debug, Serialize, Deserialize)]
struct GuestPlan {
    plan: GuestPlanKind,
    /// The process asked for a terminal: stdin is the pty slave, to become the
    /// controlling terminal once the sequence has made a new session.
    terminal: bool,
    state_json: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum GuestPlanKind {
    Create(Box<InitPlan>),
    Exec(Box<ExecPlan>),
}

/// Starts the container's processes through `hull-inside`.
#[derive(Debug, Default)]
pub struct InsideLauncher {
    /// The container's own process (exec'd processes join its namespaces).
    init_pid: Mutex<Option<i32>>,
}

fn bad(step: &'static str, msg: impl Into<String>) -> LaunchError {
    LaunchError::Child {
        program: "container set-up".into(),
        step,
        source: std::io::Error::other(msg.into()),
    }
}

impl InsideLauncher {
    /// The plan and the clone flags for `spec`.
    fn plan(
        &self,
        spec: &ProcessSpec,
    ) -> Result<(GuestPlan, libc::c_int, Option<i32>), LaunchError> {
        let state_json = spec.state_json.clone().unwrap_or_default();
        let seccomp: Option<Compiled> = spec
            .seccomp
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad("reading the seccomp filter", e.to_string()))?;
        let oci = spec
            .oci
            .clone()
            .ok_or_else(|| bad("reading the process", "no OCI process in the request"))?;
        let mut process: oci_spec::runtime::Process =
            serde_json::from_value(oci).map_err(|e| bad("reading the process", e.to_string()))?;
        // The launcher already made the pty our stdio; the sequence must not look for a
        // console socket.
        process.set_terminal(Some(false));
        match &spec.container {
            Some(config) => {
                let mut config: hull_specs::Spec = serde_json::from_value(config.clone())
                    .map_err(|e| bad("reading the container config", e.to_string()))?;
                config.set_process(Some(process));
                share_agent_devpts(&mut config);
                let mut root = oci_spec::runtime::Root::default();
                root.set_path(PathBuf::from(ROOT_DIR));
                root.set_readonly(config.root().as_ref().and_then(|r| r.readonly()));
                config.set_root(Some(root));
                hull_specs::validate_spec(&config)
                    .map_err(|e| bad("checking the container config", e.to_string()))?;
                let ns = hull_inside::namespaces::NamespacePlan::from_spec(&config)
                    .map_err(|e| bad("planning namespaces", e.to_string()))?;
                let id = serde_json::from_str::<serde_json::Value>(&state_json)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "container".into());
                let plan = InitPlan {
                    id,
                    spec: config,
                    rootfs: PathBuf::from(ROOT_DIR),
                    bundle: PathBuf::from("/"),
                    fifo: PathBuf::new(),
                    // The agent left the initramfs at boot: pivot_root works.
                    no_pivot: false,
                    no_new_keyring: false,
                    console_fd: None,
                    preserve_fds: 0,
                    join_user: None,
                    unshare_flags: ns.init_unshare.bits(),
                    in_user_ns: false,
                    seccomp,
                };
                Ok((
                    GuestPlan {
                        plan: GuestPlanKind::Create(Box::new(plan)),
                        terminal: spec.terminal,
                        state_json,
                    },
                    ns.clone_flags.bits(),
                    None,
                ))
            }
            None => {
                let init = self
                    .init_pid
                    .lock()
                    .map_err(|_| bad("exec", "launcher state poisoned"))?
                    .ok_or_else(|| bad("exec", "the container's process is not running"))?;
                let plan = ExecPlan {
                    id: "container".into(),
                    process,
                    join_user: None,
                    join_mount: PathBuf::from(format!("/proc/{init}/ns/mnt")),
                    console_fd: None,
                    preserve_fds: 0,
                    personality: None,
                    seccomp,
                    oci_version: "1.0.2".into(),
                    state_json: state_json.clone(),
                };
                Ok((
                    GuestPlan {
                        plan: GuestPlanKind::Exec(Box::new(plan)),
                        terminal: spec.terminal,
                        state_json,
                    },
                    0,
                    Some(init),
                ))
            }
        }
    }
}

/// The container's `/dev/pts` becomes the agent's devpts instance (bound in) instead of a
/// new one: the agent opens the ptys of terminal sessions, and a pty slave is only a
/// terminal by name (`tty`, `ttyname`) in the devpts it came from. Inside its own VM the
/// container shares that instance with no one else.
fn share_agent_devpts(config: &mut hull_specs::Spec) {
    let Some(mounts) = config.mounts().clone() else {
        return;
    };
    let mounts = mounts
        .into_iter()
        .map(|mut m| {
            if m.destination() == std::path::Path::new("/dev/pts") {
                m.set_typ(Some("bind".into()));
                m.set_source(Some(PathBuf::from("/dev/pts")));
                m.set_options(Some(vec!["rbind".into(), "nosuid".into(), "noexec".into()]));
            }
            m
        })
        .collect();
    config.set_mounts(Some(mounts));
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Stdio(std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A namespace descriptor and its `CLONE_NEW*` type.
type NsFd = (OwnedFd, libc::c_int);

/// Descriptors of the namespaces of `pid` an exec'd process joins (the mount namespace is
/// joined by the sequence itself; the pid namespace by the launching thread).
fn namespace_fds(pid: i32) -> Result<(Option<OwnedFd>, Vec<NsFd>), LaunchError> {
    let open = |name: &str| -> Option<OwnedFd> {
        File::open(format!("/proc/{pid}/ns/{name}"))
            .ok()
            .map(OwnedFd::from)
    };
    let others = [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
    ]
    .into_iter()
    .filter_map(|(n, f)| open(n).map(|fd| (fd, f)))
    .collect();
    Ok((open("pid"), others))
}

impl Launcher for InsideLauncher {
    fn launch(&self, spec: &ProcessSpec, stdio: ChildStdio) -> Result<i32, LaunchError> {
        let (plan, clone_flags, join) = self.plan(spec)?;
        let plan_json =
            serde_json::to_vec(&plan).map_err(|e| bad("encoding the plan", e.to_string()))?;
        let exe = c"/proc/self/exe";
        let arg0 = c"hull-agent";
        let arg1 = CString::new(CONTAINER_INIT_ARG).map_err(|e| LaunchError::Nul {
            field: "argv",
            source: e,
        })?;
        let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        let (plan_r, plan_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (pid_ns, other_ns) = match join {
            Some(init) => namespace_fds(init)?,
            None => (None, Vec::new()),
        };
        // An exec'd process must be born in the container's pid namespace: this thread's
        // children go there until it returns to its own below.
        let own_pid_ns = match &pid_ns {
            Some(target) => {
                let own = File::open("/proc/thread-self/ns/pid")
                    .map_err(|e| bad("opening the agent's pid namespace", e.to_string()))?;
                // SAFETY: setns with a namespace descriptor we hold.
                if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
                    return Err(bad(
                        "joining the container's pid namespace",
                        std::io::Error::last_os_error().to_string(),
                    ));
                }
                Some(own)
            }
            None => None,
        };
        let fds = ChildFds {
            stdio: [
                stdio.stdin.as_raw_fd(),
                stdio.stdout.as_raw_fd(),
                stdio.stderr.as_raw_fd(),
            ],
            plan: plan_r.as_raw_fd(),
            err: err_w.as_raw_fd(),
        };
        let ns: Vec<(RawFd, libc::c_int)> =
            other_ns.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
        // SAFETY: a fork-like clone (no CLONE_VM, no new stack); the child only runs
        // `child_after_clone`, which makes async-signal-safe calls and never returns.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (clone_flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if rc == 0 {
            // SAFETY: in the child of clone, with data prepared before it.
            unsafe { child_after_clone(&fds, &ns, exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) }
        }
        let clone_err = std::io::Error::last_os_error();
        if let Some(own) = &own_pid_ns {
            // SAFETY: back to the agent's own pid namespace for this thread's children.
            unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
        }
        if rc < 0 {
            return Err(LaunchError::Fork(clone_err));
        }
        let pid = rc as i32;
        drop((plan_r, err_w, stdio));
        let mut w = File::from(plan_w);
        let wrote = w.write_all(&plan_json);
        drop(w);
        let mut msg = String::new();
        let _ = File::from(err_r).read_to_string(&mut msg);
        if !msg.is_empty() || wrote.is_err() {
            // The child exits after reporting; the reaper collects it.
            return Err(bad(
                "setting up the container process",
                if msg.is_empty() {
                    "the set-up process ended before reading its plan".into()
                } else {
                    msg
                },
            ));
        }
        if matches!(plan.plan, GuestPlanKind::Create(_)) {
            if let Ok(mut p) = self.init_pid.lock() {
                *p = Some(pid);
            }
        }
        Ok(pid)
    }
}

struct ChildFds {
    stdio: [RawFd; 3],
    plan: RawFd,
    err: RawFd,
}

/// Between clone and execve: stdio, the plan and error pipes at fixed numbers, the
/// namespaces to join, then the agent binary again. Async-signal-safe calls only.
///
/// # Safety
/// Call only in the child of a fork-like clone, with pointers to data prepared before it.
unsafe fn child_after_clone(
    fds: &ChildFds,
    ns: &[(RawFd, libc::c_int)],
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // The error pipe moves first to a number above everything we place, so no dup2
    // below overwrites it before it is used.
    let err = libc::fcntl(fds.err, libc::F_DUPFD_CLOEXEC, 10);
    let fail = |step: &[u8]| -> ! {
        libc::write(err, step.as_ptr().cast(), step.len());
        libc::_exit(127)
    };
    if err < 0 {
        libc::_exit(127);
    }
    for (fd, kind) in ns {
        if libc::setns(*fd, *kind) != 0 {
            fail(b"joining the container's namespaces");
        }
    }
    // stdio and the plan above 10 first, then into place: the sources may sit on 0-4.
    let mut high = [0; 4];
    for (i, src) in [fds.stdio[0], fds.stdio[1], fds.stdio[2], fds.plan]
        .iter()
        .enumerate()
    {
        high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 10);
        if high[i] < 0 {
            fail(b"placing the process's stdio");
        }
    }
    for (i, target) in [0, 1, 2, PLAN_FD].iter().enumerate() {
        if libc::dup2(high[i], *target) < 0 {
            fail(b"placing the process's stdio");
        }
    }
    if libc::dup2(err, ERR_FD) < 0 {
        fail(b"placing the error pipe");
    }
    libc::execve(exe, argv, envp);
    fail(b"re-executing the agent for the container set-up")
}

/// The sequence's coordinator inside the guest: nothing to wait for (the host already
/// created the cgroup and ran its hooks, and `start` has been given), errors go to fd 4.
struct GuestCoordinator {
    plan: Option<GuestPlanKind>,
    terminal: bool,
    state_json: String,
    err: File,
}

impl Coordinator for GuestCoordinator {
    fn plan(&mut self) -> Result<Plan, InitError> {
        // The sequence made a new session just before: the pty can become its terminal.
        if self.terminal {
            // SAFETY: TIOCSCTTY on our stdin, the pty's slave.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
                return Err(InitError::Invalid(format!(
                    "making the pty the controlling terminal: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
        match self.plan.take() {
            Some(GuestPlanKind::Create(p)) => Ok(Plan::Create(p)),
            Some(GuestPlanKind::Exec(p)) => Ok(Plan::Exec(p)),
            None => Err(InitError::Invalid("the plan was already taken".into())),
        }
    }

    fn prepare_start(&mut self, _plan: &InitPlan) -> Result<(), InitError> {
        Ok(())
    }

    fn cgroup_joined(&mut self) -> Result<(), InitError> {
        Ok(())
    }

    fn mounts_ready(&mut self) -> Result<String, InitError> {
        Ok(self.state_json.clone())
    }

    fn ready(&mut self) -> Result<(), InitError> {
        Ok(())
    }

    fn wait_for_start(&mut self) -> Result<(), InitError> {
        Ok(())
    }

    fn report_error(&mut self, err: &InitError) -> bool {
        self.err.write_all(err.to_string().as_bytes()).is_ok()
    }
}

/// `hull-agent container-init`: read the plan from fd 3, run the sequence, exec the
/// workload; on failure the message goes to fd 4 and the process exits 1.
pub fn container_init() -> ! {
    // SAFETY: the launcher placed the plan pipe and the error pipe at these numbers.
    let (mut plan_pipe, mut err) =
        unsafe { (File::from_raw_fd(PLAN_FD), File::from_raw_fd(ERR_FD)) };
    // SAFETY: marking our own descriptor close-on-exec.
    unsafe { libc::fcntl(ERR_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut json = Vec::new();
    let plan = plan_pipe
        .read_to_end(&mut json)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice::<GuestPlan>(&json).map_err(|e| e.to_string()));
    drop(plan_pipe);
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            let _ = err.write_all(format!("reading the set-up plan: {e}").as_bytes());
            // SAFETY: _exit ends the process.
            unsafe { libc::_exit(1) }
        }
    };
    let mut coord = GuestCoordinator {
        plan: Some(plan.plan),
        terminal: plan.terminal,
        state_json: plan.state_json,
        err,
    };
    let e = sequence::run(&mut coord, &mut LiveSystem);
    coord.report_error(&e);
    // SAFETY: _exit ends the process.
    unsafe { libc::_exit(1) }
}
