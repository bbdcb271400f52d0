//! The virtiofsd process: started for one shared directory with its own
//! sandbox, handed a listening socket in a private directory, stopped (by
//! pid) at teardown.
//!
//! The VMM binds the listening socket itself and passes it with `--fd`, so
//! it can connect at once, with no wait for the daemon to create a socket
//! file; the socket file and its directory are removed as soon as the VMM
//! is connected, so nothing else can reach the daemon.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use seccompiler::BpfProgram;

use super::FsError;
use crate::config::VirtiofsOptions;
use crate::seccomp::{self, ThreadKind};

/// How long a request to virtiofsd may take before the VMM gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long virtiofsd gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running virtiofsd. Dropping it stops the daemon.
#[derive(Debug)]
pub struct Virtiofsd {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    log: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// Makes a fresh directory only the VMM's user can enter.
fn private_dir(parent: &Path) -> Result<PathBuf, FsError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("hull-vfs-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(FsError::SocketDir {
                    dir: parent.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Lets `fd` survive `exec` (runs in the forked child before exec).
fn keep_across_exec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory effects; it is
    // async-signal-safe, as required between fork and exec.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the kernel SIGKILL the forked child when its parent dies, so a
/// VMM killed with SIGKILL leaves no virtiofsd behind (runs in the forked
/// child before exec; `parent` is the VMM's pid, taken before the fork).
///
/// The signal follows the *thread* that forked: `Vm::start` must run on a
/// thread that outlives the VM (hull-vmm's main thread does).
fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid have no memory effects
    // and are async-signal-safe, as required between fork and exec.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The parent may have died before the prctl: then no signal comes.
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

fn send_signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory effects; `pid` is our own unreaped child,
    // so the number cannot have been reused.
    unsafe { libc::kill(pid, sig) };
}

impl Virtiofsd {
    /// Starts `binary` serving `shared_dir`; its socket lives in a private
    /// directory under `runtime_dir`. Returns the daemon and the VMM's
    /// connection to it. The thread forwarding the daemon's log confines
    /// itself with `log_filter`.
    pub fn spawn(
        binary: &Path,
        shared_dir: &Path,
        opts: &VirtiofsOptions,
        runtime_dir: &Path,
        log_filter: Option<BpfProgram>,
    ) -> Result<(Virtiofsd, UnixStream), FsError> {
        let dir = private_dir(runtime_dir)?;
        let socket = dir.join("fs.sock");
        let cleanup = |e: FsError| {
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_dir(&dir);
            e
        };
        let listener = UnixListener::bind(&socket)
            .map_err(|source| FsError::Socket {
                path: socket.clone(),
                source,
            })
            .map_err(cleanup)?;
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--fd={fd}"))
            .arg("--shared-dir")
            .arg(shared_dir)
            .arg(format!("--sandbox={}", opts.sandbox.as_arg()))
            .arg(format!("--log-level={}", opts.log_level))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: getpid has no memory effects.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure only calls fcntl, prctl and getppid, which are
        // async-signal-safe, and touches no memory shared with the parent
        // (it allocates nothing: the error paths build io::Errors from
        // errno values, which do not allocate).
        unsafe {
            cmd.pre_exec(move || {
                keep_across_exec(fd)?;
                die_with_parent(parent)
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|source| FsError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })
            .map_err(cleanup)?;
        // Only the daemon holds the listener now: if it dies, connecting
        // or waiting for a reply fails instead of hanging.
        drop(listener);
        let log = child.stderr.take().and_then(|stderr| {
            std::thread::Builder::new()
                .name("hull-vfsd-log".into())
                .spawn(move || {
                    if let Some(f) = &log_filter {
                        if let Err(e) = seccomp::install(ThreadKind::Device, f) {
                            tracing::error!(error = %e, "virtiofsd's log is not forwarded");
                            return;
                        }
                    }
                    forward_log(stderr)
                })
                .ok()
        });
        let pid = child.id();
        tracing::debug!(pid, socket = %socket.display(), shared_dir = %shared_dir.display(), "virtiofsd started");
        let mut daemon = Virtiofsd {
            child,
            dir,
            socket,
            log,
            status: None,
        };
        let stream = match daemon.connect() {
            Ok(s) => s,
            Err(e) => {
                daemon.stop();
                return Err(e);
            }
        };
        daemon.remove_socket();
        Ok((daemon, stream))
    }

    fn connect(&self) -> Result<UnixStream, FsError> {
        let err = |source| FsError::Socket {
            path: self.socket.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.socket).map_err(err)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(err)?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(err)?;
        Ok(stream)
    }

    fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The socket path it was started on (removed once the VMM connected).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Whether the daemon still runs.
    pub fn is_running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after a grace period; reaps
    /// it and removes its socket. Returns its exit status. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.terminate();
            tracing::debug!(pid = self.child.id(), status = ?self.status, "virtiofsd stopped");
        }
        if let Some(log) = self.log.take() {
            let _ = log.join();
        }
        self.remove_socket();
        self.status
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        send_signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => break,
            }
        }
        tracing::warn!(
            pid = self.child.id(),
            "virtiofsd ignored SIGTERM; killing it"
        );
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies virtiofsd's stderr lines into the VMM's log until it exits.
fn forward_log(stderr: impl std::io::Read) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line.contains("ERROR") {
            tracing::warn!(target: "virtiofsd", "{line}");
        } else {
            tracing::info!(target: "virtiofsd", "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    #[test]
    fn child_dies_with_the_thread_that_started_it() {
        // The parent-death signal follows the forking thread: start a
        // child from a thread that then ends; the kernel must kill it.
        let child = std::thread::spawn(|| {
            // SAFETY: getpid has no memory effects.
            let parent = unsafe { libc::getpid() };
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            // SAFETY: die_with_parent is async-signal-safe (see there).
            unsafe {
                cmd.pre_exec(move || die_with_parent(parent));
            }
            cmd.spawn().expect("sleep starts")
        })
        .join()
        .unwrap();
        let mut child = child;
        let t0 = std::time::Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    }
}
