//! Pseudo-terminals: the container side (allocate in the container's devpts, become the
//! controlling terminal, hand the master to the console socket) and hull's side (receive
//! the master, relay it to hull's own terminal for `hull run`).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::sys::termios::{self, SetArg, Termios};

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("process.terminal: opening /dev/ptmx in the container: {0}")]
    OpenPtmx(#[source] nix::Error),
    #[error("process.terminal: {what}: {source}")]
    Pty {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("--console-socket {path:?}: {source}")]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("console socket: sending the pty master: {0}")]
    Send(#[source] nix::Error),
    #[error("console socket: receiving the pty master: {0}")]
    Recv(String),
    #[error("/dev/console: {what}: {source}")]
    DevConsole {
        what: String,
        #[source]
        source: nix::Error,
    },
}

/// The container side of a new pty, opened in the container's /dev/pts.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Open a pty pair through the container's `/dev/ptmx`. The slave is opened from the
/// master with `TIOCGPTPEER`, so no path lookup can be raced.
pub fn open_pty() -> Result<Pty, TerminalError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(TerminalError::OpenPtmx)?;
    nix::pty::unlockpt(&master).map_err(|source| TerminalError::Pty {
        what: "unlockpt",
        source,
    })?;
    let slave = open_peer(master.as_raw_fd()).map_err(|source| TerminalError::Pty {
        what: "TIOCGPTPEER",
        source,
    })?;
    // SAFETY: posix_openpt returned a valid descriptor that PtyMaster owns; we move it out.
    let master = unsafe { OwnedFd::from_raw_fd(master_into_raw(master)) };
    Ok(Pty { master, slave })
}

fn master_into_raw(m: nix::pty::PtyMaster) -> RawFd {
    use std::os::fd::IntoRawFd;
    m.into_raw_fd()
}

fn open_peer(master: RawFd) -> Result<OwnedFd, nix::Error> {
    const TIOCGPTPEER: libc::c_ulong = 0x5441; // _IO('T', 0x41)
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let fd = unsafe { libc::ioctl(master, TIOCGPTPEER, flags) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the ioctl returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make `slave` the controlling terminal of the (session-leading) caller and its stdio.
pub fn become_console(slave: &OwnedFd) -> Result<(), TerminalError> {
    let fd = slave.as_raw_fd();
    // SAFETY: TIOCSCTTY with argument 0 on a descriptor we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
        return Err(TerminalError::Pty {
            what: "TIOCSCTTY",
            source: nix::Error::last(),
        });
    }
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which the init owns.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(TerminalError::Pty {
                what: "dup2 onto stdio",
                source: nix::Error::last(),
            });
        }
    }
    Ok(())
}

/// The first and last major numbers of Unix98 pty slaves (`/dev/pts/N`).
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u64> = 136..=143;

/// runc's `/dev/console`: the pty slave `slave` bound over the container's `/dev/console`
/// (an empty file is created when it is missing), after the pivot. Both ends are held and
/// checked by descriptor, never re-resolved by path (CVE-2025-52565, a racing symlink
/// redirecting the bind): the source must be a pty slave, the target a file or device
/// reached in `/dev` without following a symlink, and after the mount `/dev/console` must
/// be that pty. Without `/proc` (nothing to bind through) it is skipped.
pub fn mount_dev_console(slave: BorrowedFd<'_>) -> Result<(), TerminalError> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{fstat, major, Mode, SFlag};
    let err = |what: &str| {
        let what = what.to_string();
        move |source| TerminalError::DevConsole { what, source }
    };
    let kind =
        |st: &nix::sys::stat::FileStat| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let pty = fstat(slave).map_err(err("stat the pty"))?;
    if kind(&pty) != SFlag::S_IFCHR || !PTY_SLAVE_MAJORS.contains(&major(pty.st_rdev)) {
        return Err(err("the console is not a pty slave")(nix::Error::EINVAL));
    }
    if !Path::new("/proc/self/fd").is_dir() {
        tracing::warn!("no /proc in the container: /dev/console is not bound to the pty");
        return Ok(());
    }
    let dev = nix::fcntl::open(
        "/dev",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open /dev (a directory, not a symlink)"))?;
    let open_target = || {
        openat(
            &dev,
            "console",
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let target = match open_target() {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => {
            let made = openat(
                &dev,
                "console",
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(err("create the mountpoint"))?;
            drop(made);
            open_target().map_err(err("open the new mountpoint"))?
        }
        Err(e) => return Err(err("open the mountpoint")(e)),
    };
    let st = fstat(&target).map_err(err("stat the mountpoint"))?;
    if !matches!(kind(&st), SFlag::S_IFREG | SFlag::S_IFCHR) {
        return Err(err("the mountpoint is not a file or a device")(
            nix::Error::EINVAL,
        ));
    }
    let fd_path = |fd: i32| format!("/proc/self/fd/{fd}");
    nix::mount::mount(
        Some(fd_path(slave.as_raw_fd()).as_str()),
        fd_path(target.as_raw_fd()).as_str(),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("bind the pty"))?;
    // What /dev/console is now: the pty, or the mount went somewhere else.
    let now = openat(
        &dev,
        "console",
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("reopen after mounting"))?;
    let now = fstat(&now).map_err(err("stat after mounting"))?;
    if kind(&now) != SFlag::S_IFCHR || now.st_rdev != pty.st_rdev {
        return Err(err("after mounting it is not the pty")(nix::Error::EINVAL));
    }
    Ok(())
}

/// Connect to the console socket given with `--console-socket`.
pub fn connect_console_socket(path: &Path) -> Result<OwnedFd, TerminalError> {
    let stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| TerminalError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(OwnedFd::from(stream))
}

/// Send `fd` over the unix socket `sock` with a name payload, as runc does.
pub fn send_fd(sock: BorrowedFd<'_>, name: &str, fd: BorrowedFd<'_>) -> Result<(), TerminalError> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(TerminalError::Send)?;
    Ok(())
}

/// Receive exactly one descriptor sent with [`send_fd`].
pub fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd, TerminalError> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| TerminalError::Recv(e.to_string()))?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| TerminalError::Recv(e.to_string()))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: SCM_RIGHTS delivered a new descriptor into this process.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if received.len() != 1 {
        return Err(TerminalError::Recv(format!(
            "expected exactly one descriptor, got {}",
            received.len()
        )));
    }
    Ok(received.remove(0))
}

/// Puts hull's own terminal in raw mode for the relay and restores it on drop.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin if it is a terminal; None otherwise.
    pub fn enable_on_stdin() -> Option<RawMode> {
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let saved = termios::tcgetattr(stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd: 0, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the descriptor was valid when raw mode was enabled and is never closed.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Copy the window size of hull's terminal (stdin) onto the pty `master`.
pub fn copy_window_size(master: BorrowedFd<'_>) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read/write a winsize we own.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_a_socketpair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        send_fd(a.as_fd(), "console", file.as_fd()).unwrap();
        let got = recv_fd(b.as_fd()).unwrap();
        let st1 = nix::sys::stat::fstat(&file).unwrap();
        let st2 = nix::sys::stat::fstat(&got).unwrap();
        assert_eq!((st1.st_dev, st1.st_ino), (st2.st_dev, st2.st_ino));
    }

    #[test]
    fn a_message_without_descriptor_is_refused() {
        use std::io::Write;
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(b"name").unwrap();
        assert!(recv_fd(b.as_fd()).is_err());
    }
}
