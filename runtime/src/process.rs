//! The host's view of a process by pid: alive or not, its start time (`/proc/PID/stat`),
//! signals to it.

use std::fs;

use nix::unistd::Pid;

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

/// Send signal number `signal` (standard or real-time) to the one process `pid`; a pid of
/// 0 or less (a process group, or every process) is refused with ESRCH.
pub fn send_signal(pid: Pid, signal: i32) -> Result<(), nix::Error> {
    if pid.as_raw() <= 0 {
        return Err(nix::Error::ESRCH);
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid.as_raw(), signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}
