//! Where connections come from. Accepted connections are handed out as `UnixStream`s whatever
//! the socket family: the server only reads, writes, sets timeouts and shuts down, and those
//! are the same socket calls for AF_UNIX and AF_VSOCK stream sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

pub trait Listener: Send + Sync {
    fn accept(&self) -> io::Result<UnixStream>;
}

impl Listener for UnixListener {
    fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).map(|(s, _)| s)
    }
}

/// An AF_VSOCK stream listener on a port, any CID (the guest side of the agent's socket).
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    pub fn bind(port: u32) -> io::Result<VsockListener> {
        // SAFETY: socket returns a new fd or -1.
        let raw =
            unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_vm is plain data; all-zero is valid before we fill it in.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
        // SAFETY: bind and listen on our fd with a correctly sized address.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::listen(fd.as_raw_fd(), 64) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(VsockListener { fd })
    }
}

impl Listener for VsockListener {
    fn accept(&self) -> io::Result<UnixStream> {
        // SAFETY: accept4 without an address; returns a new fd or -1.
        let raw = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh connected stream socket owned by nobody else (see module doc).
        Ok(unsafe { UnixStream::from_raw_fd(raw) })
    }
}
