//! The host's view of a process by pid: alive or not, its start time (`/proc/PID/stat`),
//! signals to it.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A process pinned by a pidfd: a signal sent through it reaches that process or fails
/// with ESRCH once it is gone, never a process that got its pid later.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens `pid`. With a known `start_time` (non-zero) the process must have started then;
    /// it is checked after opening, so the descriptor holds the process that was checked.
    /// `Ok(None)`: no such process (or another one has its pid now).
    pub fn open(pid: i32, start_time: u64) -> Result<Option<PidFd>, nix::Error> {
        if pid <= 0 {
            return Ok(None);
        }
        // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return match nix::Error::last() {
                nix::Error::ESRCH => Ok(None),
                e => Err(e),
            };
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if start_time != 0 && process_start_time(pid) != Some(start_time) {
            return Ok(None);
        }
        Ok(Some(PidFd { fd, pid }))
    }

    /// The pid it was opened for.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` (standard or real-time) to the pinned process.
    pub fn signal(&self, signal: i32) -> Result<(), nix::Error> {
        // SAFETY: pidfd_send_signal with a null siginfo (the kernel fills in a kill()-like
        // one); the descriptor is ours and open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(nix::Error::last())
        }
    }

    /// Waits up to `timeout` for the process to exit; true once it has.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                .unwrap_or(PollTimeout::ZERO);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(n) if n > 0 => return true,
                Ok(_) if left.is_zero() => return false,
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => return false,
            }
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// True if `pid` exists, is not a zombie, and (when known) started at `start_time`.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    match read_stat(pid) {
        Some((state, start)) => {
            state != 'Z' && state != 'X' && (start_time == 0 || start == start_time)
        }
        None => false,
    }
}

pub fn process_start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, s)| s)
}

/// (state, starttime) from /proc/PID/stat; the command name may hold spaces and parens.
fn read_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 overall; `rest` starts at field 3.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_signals_its_process_and_never_a_later_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = process_start_time(pid).unwrap();
        assert!(
            PidFd::open(pid, start + 1).unwrap().is_none(),
            "another start time"
        );
        let p = PidFd::open(pid, start).unwrap().expect("the child");
        assert_eq!(p.pid(), pid);
        p.signal(0).unwrap();
        assert!(!p.wait_exit(Duration::from_millis(50)), "still running");
        p.signal(libc::SIGKILL).unwrap();
        assert!(p.wait_exit(Duration::from_secs(10)));
        child.wait().unwrap();
        // Reaped: the pid is free for anyone, the descriptor still names the dead process.
        assert_eq!(p.signal(0), Err(nix::Error::ESRCH));
        assert!(PidFd::open(0, 0).unwrap().is_none());
        assert!(PidFd::open(-1, 0).unwrap().is_none());
    }
}
