//! Reaping. As PID 1 (or, under test, a child subreaper) the agent inherits every orphan, so one
//! thread per process waits for *all* children; sessions register the pids they started and
//! get their exit status through a channel. Nothing else in the process may call `wait`.
//!
//! The thread first peeks at an exited child (`WNOWAIT`), then reaps it while holding the
//! registry lock. So while the lock is held a registered pid cannot be reaped and reused, which
//! makes [`Reaper::signal`] safe against pid reuse, and a child that exits before its starter
//! registered it is still matched (the starter holds the lock across fork and registration).

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use hull_agent_protocol::ExitStatus;

pub struct Reaper {
    waiters: Mutex<HashMap<i32, Sender<ExitStatus>>>,
    thread: OnceLock<Thread>,
}

static GLOBAL: OnceLock<Reaper> = OnceLock::new();

impl Reaper {
    /// The process's reaper, started on first use. Outside PID 1 this makes the process a child
    /// subreaper so that orphans of its sessions come back to it as they would to PID 1.
    pub fn global() -> &'static Reaper {
        let r = GLOBAL.get_or_init(|| Reaper {
            waiters: Mutex::new(HashMap::new()),
            thread: OnceLock::new(),
        });
        r.thread.get_or_init(|| {
            if std::process::id() != 1 {
                // SAFETY: prctl with integer arguments only; failure leaves us a plain parent.
                let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
                if rc != 0 {
                    tracing::warn!("PR_SET_CHILD_SUBREAPER: {}", io::Error::last_os_error());
                }
            }
            match thread::Builder::new()
                .name("reaper".into())
                .spawn(move || r.run())
            {
                Ok(h) => h.thread().clone(),
                // Without a reaper thread exits go unnoticed; there is no way to go on.
                Err(e) => {
                    tracing::error!("cannot start the reaper thread: {e}");
                    std::process::abort();
                }
            }
        });
        r
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Sender<ExitStatus>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `start` (which forks and returns the child's pid) and register the pid; the receiver
    /// yields the child's exit status once.
    pub fn spawn<E>(
        &self,
        start: impl FnOnce() -> Result<i32, E>,
    ) -> Result<(i32, Receiver<ExitStatus>), E> {
        let (tx, rx) = mpsc::channel();
        let pid = {
            let mut w = self.lock();
            let pid = start()?;
            w.insert(pid, tx);
            pid
        };
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
        Ok((pid, rx))
    }

    /// Send `signal` to a registered child that has not been reaped yet. `Ok(false)`: it is gone.
    pub fn signal(&self, pid: i32, signal: i32) -> io::Result<bool> {
        let w = self.lock();
        if !w.contains_key(&pid) {
            return Ok(false);
        }
        // SAFETY: plain syscall; the pid is ours and unreaped while the lock is held.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    fn run(&self) {
        loop {
            let pid = match peek_exited() {
                Ok(pid) => pid,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    if e.raw_os_error() != Some(libc::ECHILD) {
                        tracing::warn!("waitid: {e}");
                    }
                    // No children: sleep until a spawn wakes us (or a while, for orphans that
                    // arrive without a spawn, which only happens to a subreaper under test).
                    thread::park_timeout(Duration::from_millis(200));
                    continue;
                }
            };
            let mut w = self.lock();
            let Some(status) = reap(pid) else { continue };
            match w.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::debug!(pid, ?status, "reaped an orphan"),
            }
        }
    }
}

/// Wait for any child to exit without reaping it; returns its pid.
fn peek_exited() -> io::Result<i32> {
    // SAFETY: siginfo_t is plain data, all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, which lives across the call.
    let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid succeeded for an exited child, so si_pid is the field that is set.
    Ok(unsafe { info.si_pid() })
}

/// Reap `pid`, known to have exited.
fn reap(pid: i32) -> Option<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            break;
        }
        if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
    if libc::WIFSIGNALED(status) {
        Some(ExitStatus::Signaled {
            signal: libc::WTERMSIG(status),
        })
    } else {
        Some(ExitStatus::Exited {
            code: libc::WEXITSTATUS(status),
        })
    }
}
