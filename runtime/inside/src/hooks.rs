//! OCI hooks: run each with the state JSON on stdin, its `env`, and its `timeout`.
//!
//! Each hook is spawned with `path` as the program, `args` as its argv (`args[0]` is argv[0];
//! with no `args`, argv[0] is `path`), exactly `env` as its environment, and the container's
//! state JSON written to its stdin (then closed). Its stdout and stderr are captured (the
//! runtime's own stdio may be the container's, so a hook must not write there); up to
//! [`CAPTURE_LIMIT`] bytes of each are kept for the error message and the rest is discarded.
//! The hook runs in its own process group so that a timeout (SIGKILL) also ends whatever it
//! started in the foreground. Waiting uses a pidfd and poll(2), so neither a hook that never
//! reads stdin nor a grandchild that keeps the pipes open can block the runtime past the
//! hook's exit or its timeout.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::Hook;

#[cfg(test)]
mod tests;

/// Bytes of a hook's stderr (and stdout) kept for the error message.
pub const CAPTURE_LIMIT: usize = 4096;

/// A hook that could not be run or did not succeed. Every message names the hook list,
/// the index and the path, e.g.
/// `createRuntime hook [0] "/bin/false" exited with status 1: <stderr>`.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The hook's definition cannot be used (bad timeout, malformed env entry).
    #[error("{kind} hook [{index}] {path:?}: {reason}")]
    Invalid {
        kind: String,
        index: usize,
        path: PathBuf,
        reason: String,
    },
    /// fork/exec failed (missing file, not executable, ...).
    #[error("{kind} hook [{index}] {path:?}: cannot run: {source}")]
    Spawn {
        kind: String,
        index: usize,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Waiting for or talking to the hook failed.
    #[error("{kind} hook [{index}] {path:?}: {op}: {errno}")]
    Io {
        kind: String,
        index: usize,
        path: PathBuf,
        op: &'static str,
        errno: Errno,
    },
    /// The hook exited with a non-zero status.
    #[error("{kind} hook [{index}] {path:?} exited with status {code}{}", output_suffix(.stderr, .stdout))]
    Exit {
        kind: String,
        index: usize,
        path: PathBuf,
        code: i32,
        stderr: String,
        stdout: String,
    },
    /// The hook was killed by a signal (not by us).
    #[error("{kind} hook [{index}] {path:?} was killed by signal {signal}{}", output_suffix(.stderr, .stdout))]
    Signal {
        kind: String,
        index: usize,
        path: PathBuf,
        signal: i32,
        stderr: String,
        stdout: String,
    },
    /// The hook ran longer than its `timeout` and was killed.
    #[error("{kind} hook [{index}] {path:?} timed out after {timeout}s (killed){}", output_suffix(.stderr, .stdout))]
    Timeout {
        kind: String,
        index: usize,
        path: PathBuf,
        timeout: i64,
        stderr: String,
        stdout: String,
    },
}

fn output_suffix(stderr: &str, stdout: &str) -> String {
    let (stderr, stdout) = (stderr.trim(), stdout.trim());
    match (stderr.is_empty(), stdout.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(": {stderr}"),
        (true, false) => format!(" (stdout: {stdout})"),
        (false, false) => format!(": {stderr} (stdout: {stdout})"),
    }
}

/// Run `hooks` in order; the first failure stops the sequence and is returned.
/// `kind` names the hook list in errors (e.g. "createRuntime").
pub fn run_hooks(kind: &str, hooks: &[Hook], state_json: &[u8]) -> Result<(), HookError> {
    hooks
        .iter()
        .enumerate()
        .try_for_each(|(index, hook)| run_hook(kind, index, hook, state_json))
}

/// Run one hook (`index` is its place in the `kind` list, for errors).
pub fn run_hook(kind: &str, index: usize, hook: &Hook, state_json: &[u8]) -> Result<(), HookError> {
    let ctx = Ctx {
        kind,
        index,
        path: hook.path(),
    };
    let timeout = match hook.timeout() {
        None => None,
        Some(t) if t > 0 => Some(t),
        Some(t) => return Err(ctx.invalid(format!("timeout must be > 0, got {t}"))),
    };
    let mut cmd = command(&ctx, hook)?;
    let mut child = cmd.spawn().map_err(|source| ctx.spawn(source))?;
    let outcome = supervise(&mut child, state_json, timeout.map(|t| t as u64));
    // Whatever happened, the hook must not outlive this call (nor stay a zombie).
    let outcome = match outcome {
        Ok(o) => o,
        Err((op, errno)) => {
            kill_and_reap(&mut child);
            return Err(ctx.io(op, errno));
        }
    };
    let (stdout, stderr) = (outcome.stdout.text(), outcome.stderr.text());
    match outcome.end {
        End::TimedOut => Err(HookError::Timeout {
            kind: kind.to_string(),
            index,
            path: ctx.path.clone(),
            timeout: timeout.unwrap_or_default(),
            stderr,
            stdout,
        }),
        End::Exited(status) => match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(code), _) => Err(HookError::Exit {
                kind: kind.to_string(),
                index,
                path: ctx.path.clone(),
                code,
                stderr,
                stdout,
            }),
            (None, signal) => Err(HookError::Signal {
                kind: kind.to_string(),
                index,
                path: ctx.path.clone(),
                signal: signal.unwrap_or_default(),
                stderr,
                stdout,
            }),
        },
    }
}

struct Ctx<'a> {
    kind: &'a str,
    index: usize,
    path: &'a PathBuf,
}

impl Ctx<'_> {
    fn invalid(&self, reason: String) -> HookError {
        HookError::Invalid {
            kind: self.kind.to_string(),
            index: self.index,
            path: self.path.clone(),
            reason,
        }
    }
    fn spawn(&self, source: io::Error) -> HookError {
        HookError::Spawn {
            kind: self.kind.to_string(),
            index: self.index,
            path: self.path.clone(),
            source,
        }
    }
    fn io(&self, op: &'static str, errno: Errno) -> HookError {
        HookError::Io {
            kind: self.kind.to_string(),
            index: self.index,
            path: self.path.clone(),
            op,
            errno,
        }
    }
}

/// The hook's command: program, argv (with argv[0]), exactly its env, piped stdio and no
/// other descriptor, own process group.
fn command(ctx: &Ctx, hook: &Hook) -> Result<Command, HookError> {
    let mut cmd = Command::new(hook.path());
    if let Some((argv0, rest)) = hook.args().as_deref().and_then(|a| a.split_first()) {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for (i, entry) in hook.env().iter().flatten().enumerate() {
        match entry.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                cmd.env(k, v);
            }
            _ => {
                return Err(ctx.invalid(format!("env[{i}] {entry:?} is not of the form KEY=VALUE")))
            }
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // Only its stdio: descriptors our caller left open (a shim's or a script's pipe) must
    // not reach a hook, which may leave a process behind holding them.
    // SAFETY: the closure makes only async-signal-safe system calls (close_range/fcntl).
    unsafe {
        cmd.pre_exec(|| {
            // Best effort: a hook that gets an extra descriptor still runs.
            let _ = crate::fds::mark_cloexec_from(3);
            Ok(())
        });
    }
    Ok(cmd)
}

enum End {
    Exited(ExitStatus),
    TimedOut,
}

struct Outcome {
    end: End,
    stdout: Capture,
    stderr: Capture,
}

/// Bounded capture of one output pipe.
#[derive(Default)]
struct Capture {
    buf: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        let room = CAPTURE_LIMIT.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        self.truncated |= data.len() > room;
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            s.push_str("...(truncated)");
        }
        s
    }
}

type SysResult<T> = Result<T, (&'static str, Errno)>;

fn set_nonblocking(fd: &impl AsFd) -> SysResult<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(|e| ("fcntl", e))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(|e| ("fcntl", e))
}

/// A pidfd for the child, or `None` where the kernel has none (before Linux 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (or -1); on success we
    // are its only owner.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    // SAFETY: `fd` was just returned by the kernel, is open, and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Feed stdin, drain stdout/stderr, and wait for the exit or the deadline, all in one
/// poll(2) loop (no threads).
fn supervise(child: &mut Child, input: &[u8], timeout_secs: Option<u64>) -> SysResult<Outcome> {
    let deadline = timeout_secs.map(|t| Instant::now() + Duration::from_secs(t));
    let mut stdin: Option<ChildStdin> = child.stdin.take();
    let mut stdout: Option<ChildStdout> = child.stdout.take();
    let mut stderr: Option<ChildStderr> = child.stderr.take();
    if input.is_empty() {
        stdin = None;
    }
    for fd in [
        stdin.as_ref().map(|f| f.as_fd()),
        stdout.as_ref().map(|f| f.as_fd()),
        stderr.as_ref().map(|f| f.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(&fd)?;
    }
    let pidfd = pidfd_open(child.id());
    let mut written = 0usize;
    let (mut out_cap, mut err_cap) = (Capture::default(), Capture::default());

    loop {
        // Has the hook exited?
        if let Some(status) = child.try_wait().map_err(|e| ("wait", io_errno(&e)))? {
            // Collect what it wrote before exiting; a grandchild holding the pipes open must
            // not keep us here, so only what is already buffered is read.
            drain(&mut stdout, &mut out_cap);
            drain(&mut stderr, &mut err_cap);
            return Ok(Outcome {
                end: End::Exited(status),
                stdout: out_cap,
                stderr: err_cap,
            });
        }
        let remaining = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    kill_and_reap(child);
                    drain(&mut stdout, &mut out_cap);
                    drain(&mut stderr, &mut err_cap);
                    return Ok(Outcome {
                        end: End::TimedOut,
                        stdout: out_cap,
                        stderr: err_cap,
                    });
                }
                Some(d - now)
            }
            None => None,
        };
        // Without a pidfd, poll in short slices and re-check the exit.
        let slice = match (&pidfd, remaining) {
            (Some(_), Some(r)) => Some(r),
            (Some(_), None) => None,
            (None, Some(r)) => Some(r.min(Duration::from_millis(10))),
            (None, None) => Some(Duration::from_millis(10)),
        };
        let timeout = match slice {
            // Round up so we never spin on a sub-millisecond remainder.
            Some(d) => {
                PollTimeout::try_from(d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };

        let mut fds = Vec::with_capacity(4);
        let mut which = Vec::with_capacity(4);
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            which.push(Slot::Pid);
        }
        if let Some(f) = &stdin {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
            which.push(Slot::Stdin);
        }
        if let Some(f) = &stdout {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            which.push(Slot::Stdout);
        }
        if let Some(f) = &stderr {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            which.push(Slot::Stderr);
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(("poll", e)),
        }
        let ready: Vec<(Slot, PollFlags)> = fds
            .iter()
            .zip(&which)
            .map(|(fd, slot)| (*slot, fd.revents().unwrap_or(PollFlags::empty())))
            .filter(|(_, ev)| !ev.is_empty())
            .collect();
        drop(fds);
        for (slot, ev) in ready {
            match slot {
                Slot::Pid => {} // checked at the top of the loop
                Slot::Stdin => {
                    if ev.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                        stdin = None; // the hook closed its stdin: stop feeding it
                        continue;
                    }
                    let f = stdin.as_mut().expect("polled");
                    match f.write(&input[written..]) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => stdin = None, // EPIPE: it does not want the state
                    }
                    if written >= input.len() {
                        stdin = None; // all written: close so the hook sees EOF
                    }
                }
                Slot::Stdout => read_some(&mut stdout, &mut out_cap),
                Slot::Stderr => read_some(&mut stderr, &mut err_cap),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Pid,
    Stdin,
    Stdout,
    Stderr,
}

/// One read from a ready pipe; EOF or an error closes it.
fn read_some<R: Read>(pipe: &mut Option<R>, cap: &mut Capture) {
    let Some(r) = pipe.as_mut() else { return };
    let mut buf = [0u8; 4096];
    match r.read(&mut buf) {
        Ok(0) => *pipe = None,
        Ok(n) => cap.push(&buf[..n]),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) => {}
        Err(_) => *pipe = None,
    }
}

/// Read whatever is buffered in a non-blocking pipe, then close it.
fn drain<R: Read>(pipe: &mut Option<R>, cap: &mut Capture) {
    if let Some(mut r) = pipe.take() {
        let mut buf = [0u8; 4096];
        // Bounded: at most a pipe's worth past the capture limit is read.
        for _ in 0..64 {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => cap.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

/// SIGKILL the hook's process group (the hook and what it started in it) and reap the hook.
fn kill_and_reap(child: &mut Child) {
    let pgid = Pid::from_raw(child.id() as i32);
    if killpg(pgid, Signal::SIGKILL).is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)
}
