//! Starting a session's process. The [`Launcher`] trait is the seam where the container-side
//! crate (`hull-inside`: capabilities, seccomp, namespaces from the OCI `Process`) plugs in
//! later; [`PlainLauncher`] does what a process needs without it: ids, rlimits, root, cwd, env,
//! stdio and a controlling terminal.

use std::ffi::{CString, NulError};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use hull_agent_protocol::{ProcessSpec, RlimitType};

/// The child's ends of its stdio. In terminal mode all three are the pty's slave side.
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Make stdin the controlling terminal of a new session.
    pub terminal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{field} contains a NUL byte")]
    Nul {
        field: &'static str,
        #[source]
        source: NulError,
    },
    #[error("preparing stdio: {0}")]
    Stdio(#[source] io::Error),
    #[error("fork: {0}")]
    Fork(#[source] io::Error),
    #[error("{program}: {step}: {source}")]
    Child {
        program: String,
        step: &'static str,
        source: io::Error,
    },
}

/// Starts processes. Implementations return once the process runs the new program (or failed
/// to) and must not wait for it: the reaper owns every exit status. `launch` runs with the
/// reaper's lock held, so it must not block on anything but the child's exec.
pub trait Launcher: Send + Sync {
    /// Start `spec` with `stdio` as fds 0, 1, 2; returns the pid.
    fn launch(&self, spec: &ProcessSpec, stdio: ChildStdio) -> Result<i32, LaunchError>;
}

/// fork + execve with the process description applied in between.
#[derive(Debug, Default, Clone)]
pub struct PlainLauncher {
    /// Root for processes whose spec names none (in the guest: the virtio-fs mount).
    pub default_root: Option<String>,
}

impl PlainLauncher {
    pub fn with_root(root: impl Into<String>) -> Self {
        PlainLauncher {
            default_root: Some(root.into()),
        }
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `prlimit64`'s argument; the same layout under glibc and musl, unlike `struct rlimit`'s
/// resource type.
#[repr(C)]
struct Rlimit64 {
    cur: u64,
    max: u64,
}

/// Everything the child needs, built before fork so the child only makes syscalls.
struct Prepared {
    program: String,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    root: Option<CString>,
    rlimits: Vec<(libc::c_long, Rlimit64)>,
    groups: Vec<libc::gid_t>,
    /// Change ids only when asked for something else than what we are, so that an unprivileged
    /// agent under test can still start processes.
    change_ids: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

fn cstr(field: &'static str, s: &str) -> Result<CString, LaunchError> {
    CString::new(s).map_err(|source| LaunchError::Nul { field, source })
}

fn resource(r: RlimitType) -> libc::c_long {
    // The libc constants' types differ between C libraries; the kernel takes an int.
    (match r {
        RlimitType::As => libc::RLIMIT_AS,
        RlimitType::Core => libc::RLIMIT_CORE,
        RlimitType::Cpu => libc::RLIMIT_CPU,
        RlimitType::Data => libc::RLIMIT_DATA,
        RlimitType::Fsize => libc::RLIMIT_FSIZE,
        RlimitType::Locks => libc::RLIMIT_LOCKS,
        RlimitType::Memlock => libc::RLIMIT_MEMLOCK,
        RlimitType::Msgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitType::Nice => libc::RLIMIT_NICE,
        RlimitType::Nofile => libc::RLIMIT_NOFILE,
        RlimitType::Nproc => libc::RLIMIT_NPROC,
        RlimitType::Rss => libc::RLIMIT_RSS,
        RlimitType::Rtprio => libc::RLIMIT_RTPRIO,
        RlimitType::Rttime => libc::RLIMIT_RTTIME,
        RlimitType::Sigpending => libc::RLIMIT_SIGPENDING,
        RlimitType::Stack => libc::RLIMIT_STACK,
    }) as libc::c_long
}

impl Prepared {
    fn new(spec: &ProcessSpec, default_root: Option<&str>) -> Result<Self, LaunchError> {
        let program = spec.args.first().cloned().unwrap_or_default();
        let argv = spec
            .args
            .iter()
            .map(|a| cstr("args", a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = spec
            .env
            .iter()
            .map(|e| cstr("env", e))
            .collect::<Result<Vec<_>, _>>()?;
        // execvpe's search, done here because the child may not allocate: every PATH entry
        // joined with the program name, tried in order.
        let candidates = if program.contains('/') {
            vec![cstr("args", &program)?]
        } else {
            let path = spec
                .env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or(DEFAULT_PATH);
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstr("env PATH", &format!("{d}/{program}")))
                .collect::<Result<Vec<_>, _>>()?
        };
        let root = spec
            .root
            .as_deref()
            .or(default_root)
            .map(|r| cstr("root", r))
            .transpose()?;
        // SAFETY: get*id cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(Prepared {
            program,
            candidates,
            argv,
            envp,
            cwd: cstr("cwd", &spec.cwd)?,
            root,
            rlimits: spec
                .rlimits
                .iter()
                .map(|r| {
                    (
                        resource(r.kind),
                        Rlimit64 {
                            cur: r.soft,
                            max: r.hard,
                        },
                    )
                })
                .collect(),
            groups: spec.additional_gids.clone(),
            change_ids: euid == 0 || spec.uid != euid || spec.gid != egid,
            uid: spec.uid,
            gid: spec.gid,
        })
    }
}

/// Steps of the child, reported with errno through the error pipe.
const STEPS: [&str; 10] = [
    "reset signals",
    "setsid",
    "dup2 stdio",
    "set controlling terminal",
    "setrlimit",
    "chroot",
    "setgroups",
    "setgid",
    "setuid",
    "chdir",
];
const STEP_EXEC: usize = STEPS.len();

/// Move an fd to 3 or above so that installing stdio on 0..=2 cannot clobber it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the result is a new fd we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Launcher for PlainLauncher {
    fn launch(&self, spec: &ProcessSpec, stdio: ChildStdio) -> Result<i32, LaunchError> {
        let p = Prepared::new(spec, self.default_root.as_deref())?;
        let io = [stdio.stdin, stdio.stdout, stdio.stderr]
            .map(above_stdio)
            .into_iter()
            .collect::<io::Result<Vec<_>>>()
            .map_err(LaunchError::Stdio)?;
        let (err_r, err_w) = cloexec_pipe().map_err(LaunchError::Stdio)?;
        let argv = ptrs(&p.argv);
        let envp = ptrs(&p.envp);
        let fds = [io[0].as_raw_fd(), io[1].as_raw_fd(), io[2].as_raw_fd()];
        // SAFETY: the child runs only `child`, which makes async-signal-safe calls on data
        // prepared above and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(LaunchError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: we are the child of fork; see `child`.
            unsafe { child(&p, &argv, &envp, fds, stdio.terminal, err_w.as_raw_fd()) }
        }
        drop(err_w);
        drop(io);
        match read_child_error(&err_r) {
            None => Ok(pid),
            Some((step, errno)) => Err(LaunchError::Child {
                program: p.program,
                step: STEPS.get(step).copied().unwrap_or("execve"),
                source: io::Error::from_raw_os_error(errno),
            }),
        }
    }
}

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// EOF (exec closed the pipe) = success; otherwise the failed step and errno.
fn read_child_error(fd: &OwnedFd) -> Option<(usize, i32)> {
    let mut buf = [0u8; 8];
    let mut have = 0;
    while have < buf.len() {
        // SAFETY: reads into the unfilled tail of a local buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[have..].as_mut_ptr().cast(),
                buf.len() - have,
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
    }
    if have < buf.len() {
        return None;
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    Some((step, i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]])))
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Report a failed step to the parent and exit. Async-signal-safe.
unsafe fn fail(err_fd: RawFd, step: usize) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    msg[4..].copy_from_slice(&errno().to_ne_bytes());
    // SAFETY: write of a local buffer; _exit never returns.
    unsafe {
        libc::write(err_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The child between fork and execve: syscalls only, no allocation, no locks.
///
/// # Safety
/// Call only in the child of `fork`, with pointers into data that the parent prepared.
unsafe fn child(
    p: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: [RawFd; 3],
    terminal: bool,
    err_fd: RawFd,
) -> ! {
    // SAFETY: by this function's contract we are the only thread of a freshly forked child, so
    // only async-signal-safe calls are made: libc's thin syscall wrappers, no allocation, no
    // locks. Every pointer handed to the kernel is valid for the call: `set` is a local (an
    // all-zero sigset_t is a valid value), `lim` points into `p.rlimits` (a #[repr(C)] struct
    // matching the kernel's rlimit64), `root`, `cwd` and `candidates` are NUL-terminated
    // CStrings, `p.groups` is read for exactly `len()` entries, and `argv`/`envp` are
    // null-terminated arrays (`ptrs`) of pointers into `p`'s CStrings; all of it lives in the
    // child's copy of the parent's memory until execve or `fail` ends this image. Writing
    // through __errno_location writes this thread's own errno slot.
    unsafe {
        // Rust ignores SIGPIPE and the agent may block signals; an exec'd program must start
        // from the defaults, and ignored dispositions survive execve.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            fail(err_fd, 0);
        }
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        if libc::setsid() < 0 {
            fail(err_fd, 1);
        }
        for (target, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                fail(err_fd, 2);
            }
        }
        if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            fail(err_fd, 3);
        }
        for (res, lim) in &p.rlimits {
            let rc = libc::syscall(
                libc::SYS_prlimit64,
                0,
                *res,
                lim as *const Rlimit64,
                std::ptr::null_mut::<Rlimit64>(),
            );
            if rc != 0 {
                fail(err_fd, 4);
            }
        }
        if let Some(root) = &p.root {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                fail(err_fd, 5);
            }
        }
        if p.change_ids {
            if libc::setgroups(p.groups.len(), p.groups.as_ptr()) != 0 {
                fail(err_fd, 6);
            }
            if libc::setgid(p.gid) != 0 {
                fail(err_fd, 7);
            }
            if libc::setuid(p.uid) != 0 {
                fail(err_fd, 8);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(err_fd, 9);
        }
        // Like execvpe: ENOENT/ENOTDIR move on to the next PATH entry; a more telling error
        // (EACCES, ENOEXEC, ...) is kept to report if nothing works.
        let mut saved = 0;
        for c in &p.candidates {
            libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let e = errno();
            if e != libc::ENOENT && e != libc::ENOTDIR {
                saved = e;
            }
        }
        if saved != 0 {
            *libc::__errno_location() = saved;
        } else if p.candidates.is_empty() {
            *libc::__errno_location() = libc::ENOENT;
        }
        fail(err_fd, STEP_EXEC)
    }
}
