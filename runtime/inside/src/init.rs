//! The container's init: `hull init`, exec'd by `create` (and `exec`) right after the
//! `clone` that gave it its new namespaces. It is a fresh, single-threaded process image, so
//! it may do all the set-up work (the forked child before it did nothing but
//! async-signal-safe calls). It runs [`crate::sequence`] with its parent on the other end
//! of the sync socket ([`SocketCoordinator`]).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::sequence::{self, io, Coordinator, InitError, Plan};
use crate::sync::{self, FromInit, InitPlan, ToInit, INIT_FD_ENV};
use crate::system::LiveSystem;

/// Init failed and neither the sync socket nor stderr took its message.
pub const EXIT_ERROR_UNREPORTED: libc::c_int = 104;

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
    let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut coord = SocketCoordinator::new(sock);
    let err = sequence::run(&mut coord, &mut LiveSystem);
    // The parent closed the connection on purpose (its own step failed, and it reports
    // that error): a line of ours would only add noise.
    if matches!(err, InitError::Sync(sync::SyncError::Closed)) {
        exit_now(1);
    }
    // The parent reports the error; if it is gone (after create), stderr is all we have.
    let sent = coord.report_error(&err);
    if !sent && !report_on_stderr(&err.to_string()) {
        // Nowhere to say why (a seccomp profile without write): a status that says so.
        exit_now(EXIT_ERROR_UNREPORTED);
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
            exit_now(EXIT_ERROR_UNREPORTED);
        }
        exit_now(1);
    }));
}

/// The parent (`hull create` or `hull exec`) at the other end of the sync socket.
pub struct SocketCoordinator {
    sock: UnixStream,
    /// The exec fifo, held from before the mounts change until `start`.
    fifo: Option<File>,
    /// Set once the socket is shut down: nothing may be written to it after that.
    dropped: bool,
}

impl SocketCoordinator {
    pub fn new(sock: UnixStream) -> Self {
        Self {
            sock,
            fifo: None,
            dropped: false,
        }
    }
}

impl Coordinator for SocketCoordinator {
    fn plan(&mut self) -> Result<Plan, InitError> {
        match sync::recv::<ToInit>(&mut self.sock)? {
            ToInit::Plan(p) => Ok(Plan::Create(p)),
            ToInit::Exec(p) => Ok(Plan::Exec(p)),
            other => Err(sync::SyncError::Unexpected {
                expected: "Plan",
                got: format!("{other:?}"),
            }
            .into()),
        }
    }

    fn prepare_start(&mut self, plan: &InitPlan) -> Result<(), InitError> {
        self.fifo = Some(open_fifo_path(&plan.fifo)?);
        Ok(())
    }

    fn cgroup_joined(&mut self) -> Result<(), InitError> {
        match sync::recv::<ToInit>(&mut self.sock)? {
            ToInit::CgroupJoined => Ok(()),
            ToInit::JoinCgroup { files } => {
                let fds = sync::recv_fds(&self.sock, files.len())?;
                // "0": this thread, the only one init has.
                for (path, fd) in files.iter().zip(fds) {
                    File::from(fd)
                        .write_all(b"0")
                        .map_err(|source| InitError::Io {
                            what: format!("joining the cgroup through {}", path.display()),
                            source,
                        })?;
                }
                Ok(())
            }
            other => Err(sync::SyncError::Unexpected {
                expected: "CgroupJoined",
                got: format!("{other:?}"),
            }
            .into()),
        }
    }

    fn mounts_ready(&mut self) -> Result<String, InitError> {
        sync::send(&mut self.sock, &FromInit::MountsReady)?;
        match sync::recv::<ToInit>(&mut self.sock)? {
            ToInit::HooksDone { state_json } => Ok(state_json),
            other => Err(sync::SyncError::Unexpected {
                expected: "HooksDone",
                got: format!("{other:?}"),
            }
            .into()),
        }
    }

    fn ready(&mut self) -> Result<(), InitError> {
        sync::send(&mut self.sock, &FromInit::Ready)?;
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self.dropped = true;
        Ok(())
    }

    fn wait_for_start(&mut self) -> Result<(), InitError> {
        let fifo = self
            .fifo
            .take()
            .ok_or_else(|| InitError::Invalid("waiting for start without the exec fifo".into()))?;
        wait_for_start(&fifo)
    }

    // After Ready the socket is shut down: writing it would raise SIGPIPE, whose default
    // action the failed execve has just restored.
    fn report_error(&mut self, err: &InitError) -> bool {
        !self.dropped && sync::send(&mut self.sock, &FromInit::Error(err.to_string())).is_ok()
    }
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
