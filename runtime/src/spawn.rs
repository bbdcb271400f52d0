//! Spawning `hull init`, shared by `create` and `exec`: a fork-like `clone` with the new
//! namespaces, then only async-signal-safe system calls until the `execveat` of the sealed
//! hull binary (see [`spawn_init`]).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use hull_inside::init::EXIT_ERROR_UNREPORTED;
use hull_inside::sync::INIT_FD_ENV;
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    SealedExe(#[from] crate::sealed_exe::SealedExeError),
    #[error("environment contains a NUL byte")]
    NulInEnvironment,
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
}

/// execve arguments for `hull init`, built before the clone so the child allocates nothing.
pub struct InitExec {
    /// The hull binary, read-only to the container (see `sealed_exe`).
    exe: OwnedFd,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl InitExec {
    pub fn new(binary: Option<&Path>, init_fd: RawFd) -> Result<Self, SpawnError> {
        Self::command(binary, init_fd, "init", &[])
    }

    /// `hull <command>` with `extra_env` added: `vm-init` and `vm-exec` for VM containers.
    pub fn command(
        binary: Option<&Path>,
        init_fd: RawFd,
        command: &str,
        extra_env: &[(&str, String)],
    ) -> Result<Self, SpawnError> {
        let bad = |_| SpawnError::NulInEnvironment;
        let exe = crate::sealed_exe::open(binary)?;
        let argv = vec![
            CString::new("hull").map_err(bad)?,
            CString::new(command).map_err(bad)?,
        ];
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != INIT_FD_ENV)
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend_from_slice(v.as_encoded_bytes());
                CString::new(kv).ok()
            })
            .collect();
        envp.push(CString::new(format!("{INIT_FD_ENV}={init_fd}")).map_err(bad)?);
        for (k, v) in extra_env {
            envp.push(CString::new(format!("{k}={v}")).map_err(bad)?);
        }
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(Self {
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            exe,
            _argv: argv,
            _envp: envp,
        })
    }
}

/// What the child of [`spawn_init`] does between `clone` and `execve`.
pub struct ChildSetup<'a> {
    /// `CLONE_NEW*` flags for the clone.
    pub flags: libc::c_int,
    pub exec: &'a InitExec,
    /// Descriptors the child keeps across exec (sync socket, console socket).
    pub keep_fds: &'a [RawFd],
    /// `3 + --preserve-fds`: every other descriptor from here up is closed by the exec of
    /// `hull init` (the caller's inherited ones must not live on in a created container).
    pub first_unpreserved_fd: RawFd,
    /// Descriptors (all above 2) that become the child's stdin, stdout and stderr; None
    /// keeps the caller's own.
    pub stdio: Option<[RawFd; 3]>,
    /// Wait for one byte here (the id maps are written), then become root of the new
    /// user namespace.
    pub wait_for_maps_on: Option<RawFd>,
}

/// clone(2) the container's init and exec `hull init` in it.
///
/// The child runs only async-signal-safe system calls until execve: set the parent-death
/// signal (so a killed `create` takes init with it), wait for the id maps when it is in a
/// new user namespace and become its root, install its stdio, mark every descriptor above
/// the preserved ones close-on-exec except the ones init needs (so the caller's inherited
/// descriptors never reach init), make those survive exec.
pub fn spawn_init(setup: &ChildSetup<'_>) -> Result<Pid, SpawnError> {
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child gets a copy of our
    // address space and runs `child_after_clone`, which never returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (setup.flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(SpawnError::Sys {
            what: "clone of container init".into(),
            source: nix::Error::last(),
        }),
        0 => child_after_clone(setup),
        pid => Ok(Pid::from_raw(pid as i32)),
    }
}

fn child_after_clone(setup: &ChildSetup<'_>) -> ! {
    // SAFETY: only async-signal-safe system calls on memory prepared before the clone.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if let Some(fd) = setup.wait_for_maps_on {
            let mut b = 0u8;
            if libc::read(fd, (&mut b as *mut u8).cast(), 1) != 1 {
                libc::_exit(EXIT_NO_MAPS);
            }
            if libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
            {
                libc::_exit(EXIT_ROOT_UNMAPPED);
            }
        }
        if let Some(stdio) = setup.stdio {
            for (target, fd) in stdio.into_iter().enumerate() {
                if libc::dup2(fd, target as libc::c_int) < 0 {
                    libc::_exit(EXIT_STDIO);
                }
            }
        }
        let _ = hull_inside::fds::mark_cloexec_from(setup.first_unpreserved_fd);
        for &fd in setup.keep_fds {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        libc::syscall(
            libc::SYS_execveat,
            setup.exec.exe.as_raw_fd(),
            c"".as_ptr(),
            setup.exec.argv_ptrs.as_ptr(),
            setup.exec.envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(EXIT_EXEC)
    }
}

// Exit codes of the child between clone and exec (it can only _exit), explained by
// `describe_end`.
const EXIT_NO_MAPS: libc::c_int = 101;
const EXIT_ROOT_UNMAPPED: libc::c_int = 102;
const EXIT_STDIO: libc::c_int = 103;
const EXIT_EXEC: libc::c_int = 127;

/// Duplicates of the caller-given stdio descriptors numbered at least `min`, so the child's
/// dup2 onto 0-2 can never overwrite one it still needs.
pub fn stdio_above(
    stdio: Option<[RawFd; 3]>,
    min: i32,
) -> Result<Option<[OwnedFd; 3]>, SpawnError> {
    let Some(fds) = stdio else {
        return Ok(None);
    };
    let dup = |fd: RawFd| {
        // SAFETY: the caller guarantees the descriptor stays open during the call.
        dup_above(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, min)
    };
    Ok(Some([dup(fds[0])?, dup(fds[1])?, dup(fds[2])?]))
}

pub fn stdio_raw(fds: &Option<[OwnedFd; 3]>) -> Option<[RawFd; 3]> {
    fds.as_ref()
        .map(|f| [f[0].as_raw_fd(), f[1].as_raw_fd(), f[2].as_raw_fd()])
}

/// A `CLOEXEC` duplicate of `fd` numbered at least `min` (clear of `--preserve-fds`).
pub fn dup_above(fd: std::os::fd::BorrowedFd<'_>, min: i32) -> Result<OwnedFd, SpawnError> {
    let raw =
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min)).map_err(|source| {
            SpawnError::Sys {
                what: "dup".into(),
                source,
            }
        })?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Reap a child whose sync socket just reached EOF: it closes its descriptors a moment
/// before it can be reaped, so wait up to a second. None if it is still there (or not ours).
pub fn reap(pid: Pid) -> Option<nix::sys::wait::WaitStatus> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    for _ in 0..100 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
    None
}

/// " (exit status N: why)" or " (killed by SIG)" for a reaped child, for error messages.
pub fn describe_end(end: Option<nix::sys::wait::WaitStatus>) -> String {
    use nix::sys::wait::WaitStatus;
    match end {
        Some(WaitStatus::Exited(_, code)) => {
            let why = match code {
                EXIT_NO_MAPS => ": the uid/gid maps were never written",
                EXIT_ROOT_UNMAPPED => ": uid/gid 0 is not mapped in the user namespace",
                EXIT_STDIO => ": installing the given stdio failed",
                EXIT_EXEC => ": executing hull init failed",
                EXIT_ERROR_UNREPORTED => {
                    ": init failed and could not report why (writing to its sync socket and \
                     to stderr failed: does linux.seccomp allow write?)"
                }
                _ => "",
            };
            format!(" (exit status {code}{why})")
        }
        Some(WaitStatus::Signaled(_, sig, _)) => format!(" (killed by {sig})"),
        _ => String::new(),
    }
}
