//! Pseudo-terminals for `terminal: true` sessions, and pipes for the others. Every fd is opened
//! close-on-exec at once, so a concurrent session's fork cannot leak it into another workload
//! (a leaked pty slave would keep the master from ever seeing the end of output).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use hull_agent_protocol::WindowSize;

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Open a new pty pair.
pub fn open_pty() -> io::Result<Pty> {
    // SAFETY: posix_openpt returns a new fd or -1.
    let m = check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: m is a fresh fd owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: grantpt/unlockpt on our master fd.
    check(unsafe { libc::grantpt(m) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(m) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes at most name.len() bytes, NUL-terminated.
    let rc = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: name is NUL-terminated by ptsname_r.
    let s = check(unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: s is a fresh fd owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    Ok(Pty { master, slave })
}

/// Set the terminal's size (the kernel sends SIGWINCH to its foreground group).
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that lives across the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
