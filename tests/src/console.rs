//! The test side of `--console-socket`: an AF_UNIX listener that receives the pty master.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct ConsoleSocket {
    listener: UnixListener,
    pub path: PathBuf,
}

/// What arrived on the console socket.
pub struct Received {
    /// The message payload (runc sends the pty name).
    pub payload: Vec<u8>,
    /// Every fd carried by SCM_RIGHTS (exactly one expected).
    pub fds: Vec<OwnedFd>,
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ConsoleSocket {
    /// Listen on `dir/console.sock` (keep `dir` short: sun_path is 108 bytes).
    pub fn new(dir: &Path) -> ConsoleSocket {
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind console socket");
        listener.set_nonblocking(true).unwrap();
        ConsoleSocket { listener, path }
    }

    fn accept(&self, timeout: Duration) -> UnixStream {
        let end = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((s, _)) => return s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("no connection on the console socket: {e}"),
            }
        }
    }

    /// Accept one connection and receive one message with its SCM_RIGHTS fds.
    pub fn receive(&self, timeout: Duration) -> Received {
        let s = self.accept(timeout);
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut cmsg = vec![0u8; 1024];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr points at live buffers for the duration of recvmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.len() as _;
        // SAFETY: see above.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        assert!(
            n >= 0,
            "recvmsg on console socket: {}",
            std::io::Error::last_os_error()
        );
        let mut fds = vec![];
        // SAFETY: walking the control buffer the kernel filled, with the CMSG_* macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c) as *const i32;
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / 4 {
                        fds.push(OwnedFd::from_raw_fd(*data.add(i)));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        buf.truncate(n as usize);
        Received { payload: buf, fds }
    }
}

/// Write all of `data` to a raw fd.
pub fn write_fd(fd: &OwnedFd, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: writing from a live slice.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                data[off..].as_ptr().cast(),
                data.len() - off,
            )
        };
        assert!(n > 0, "write to pty: {}", std::io::Error::last_os_error());
        off += n as usize;
    }
}

/// Read from `fd` until the accumulated text contains `needle`, EOF/EIO, or the deadline.
pub fn read_until(fd: &OwnedFd, needle: &str, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    let mut acc = Vec::new();
    loop {
        if String::from_utf8_lossy(&acc).contains(needle) {
            break;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(1000) as i32) };
        if r <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a live buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break; // EOF, or EIO once the slave side is closed
        }
        acc.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&acc).into_owned()
}
