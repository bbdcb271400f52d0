//! `hull run` in the foreground: wait for the container's init (hull's own child), forward
//! signals to it, and relay its pty to hull's terminal when it has one.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use hull_inside::terminal;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("container init: {0}")]
    Init(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
}

/// Signals hull passes on to the container instead of acting on them itself: every one
/// runc forwards, less what hull handles (SIGCHLD, SIGWINCH), faults that must stay
/// deliverable to hull (SEGV, BUS, FPE, ILL, TRAP, SYS), SIGPIPE (hull's own writes) and
/// terminal job control (TSTP, TTIN, TTOU), which acts on hull itself.
const FORWARDED: [Signal; 16] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGABRT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGSTKFLT,
    Signal::SIGCONT,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
];

/// `set` plus the real-time signals SIGRTMIN..=SIGRTMAX (34..=64), which nix's `Signal`
/// cannot name: they are forwarded too.
fn with_realtime(set: SigSet) -> SigSet {
    let mut raw: libc::sigset_t = *set.as_ref();
    for signo in hull_specs::signal::SIGRTMIN..=hull_specs::signal::SIGRTMAX {
        // SAFETY: `raw` is an initialised sigset_t; sigaddset only sets the bit of `signo`
        // (or fails with EINVAL for a signal the C library reserves, which stays out).
        unsafe { libc::sigaddset(&mut raw, signo) };
    }
    // SAFETY: `raw` came from a valid SigSet and only had valid signals added.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// Restores the signal mask on drop.
struct MaskGuard(SigSet);

impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// Wait for `pid` to exit and return its status the way a shell reports it.
pub fn wait_for_container(pid: Pid, master: Option<OwnedFd>) -> Result<i32, WaitError> {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGWINCH);
    let set = with_realtime(set);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(
        |source| WaitError::Sys {
            what: "sigprocmask".into(),
            source,
        },
    )?;
    let _restore = MaskGuard(old);
    let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(
        |source| WaitError::Sys {
            what: "signalfd".into(),
            source,
        },
    )?;

    // Readable once `pid` exits, whichever thread SIGCHLD goes to: in a multi-threaded
    // caller (a shim, a test harness) the signalfd may never see it.
    let exited = pidfd_open(pid)?;
    let _raw = master
        .as_ref()
        .and_then(|_| terminal::RawMode::enable_on_stdin());
    if let Some(m) = &master {
        terminal::copy_window_size(m.as_fd());
    }
    // SAFETY: fd 0 stays open for the life of the process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();

    loop {
        // The child may have exited before its SIGCHLD could be queued on the signalfd.
        if let Some(code) = reap(pid)? {
            if let Some(m) = &master {
                drain(m.as_fd());
            }
            // Signals that came for the container after it exited are consumed here: left
            // pending, they would hit `hull run` itself when the mask is restored (a late
            // SIGTERM turning the container's status into 143).
            while let Ok(Some(_)) = sfd.read_signal() {}
            return Ok(code);
        }
        let mut fds = vec![
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(exited.as_fd(), PollFlags::POLLIN),
        ];
        if let (Some(m), true) = (&master, master_open) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(WaitError::Sys {
                    what: "poll".into(),
                    source,
                })
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().map(|r| !r.is_empty()).unwrap_or(false))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                match i32::try_from(info.ssi_signo) {
                    Ok(libc::SIGCHLD) => {}
                    Ok(libc::SIGWINCH) => {
                        if let Some(m) = &master {
                            terminal::copy_window_size(m.as_fd());
                        }
                    }
                    // Everything else in the mask: the forwarded signals, real-time ones
                    // included.
                    Ok(signo) => {
                        if let Err(e) = exited.signal(signo) {
                            tracing::debug!("forwarding signal {signo} to {pid}: {e}");
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        // ready[1] (the pidfd) needs no action: the loop reaps at the top.
        let mut i = 2;
        if let (Some(m), true) = (&master, master_open) {
            if ready[i] && !copy(m.as_fd(), 1) {
                master_open = false;
            }
            i += 1;
        }
        if stdin_open && ready[i] {
            if let Some(m) = &master {
                if !copy(stdin, m.as_raw_fd()) {
                    stdin_open = false;
                }
            }
        }
    }
}

fn pidfd_open(pid: Pid) -> Result<crate::process::PidFd, WaitError> {
    let sys = |source| WaitError::Sys {
        what: format!("pidfd_open({pid})"),
        source,
    };
    crate::process::PidFd::open(pid.as_raw(), 0)
        .map_err(sys)?
        .ok_or_else(|| sys(nix::Error::ESRCH))
}

/// The exit status of `pid` if it has exited: its code, or 128+signal.
fn reap(pid: Pid) -> Result<Option<i32>, WaitError> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(128 + sig as i32)),
        Ok(_) => Ok(None),
        Err(nix::Error::ECHILD) => Err(WaitError::Init(format!(
            "container init {pid} is not our child"
        ))),
        Err(source) => Err(WaitError::Sys {
            what: "waitpid".into(),
            source,
        }),
    }
}

/// Copy what is available from `from` to `to`; false on EOF or error (e.g. EIO when the
/// pty's last slave closed).
fn copy(from: BorrowedFd<'_>, to: i32) -> bool {
    let mut buf = [0u8; 8192];
    let n = match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(_) => return false,
        Ok(n) => n,
    };
    // SAFETY: `to` is stdout or the pty master, both open for the whole relay.
    let to = unsafe { BorrowedFd::borrow_raw(to) };
    let mut off = 0;
    while off < n {
        match nix::unistd::write(to, &buf[off..n]) {
            Ok(w) => off += w,
            Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Relay what the container wrote before it exited.
fn drain(master: BorrowedFd<'_>) {
    loop {
        let mut fds = [PollFd::new(master, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => {
                if !copy(master, 1) {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(set: &SigSet, signo: i32) -> bool {
        // SAFETY: sigismember reads the initialised set behind a valid reference.
        unsafe { libc::sigismember(set.as_ref(), signo) == 1 }
    }

    #[test]
    fn the_forwarded_set_holds_every_realtime_signal() {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        let set = with_realtime(set);
        assert!(has(&set, libc::SIGTERM));
        for signo in 34..=64 {
            assert!(has(&set, signo), "{signo}");
        }
        assert!(!has(&set, libc::SIGKILL));
        assert!(!has(&set, libc::SIGINT));
    }
}
