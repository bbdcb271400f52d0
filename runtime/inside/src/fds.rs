//! Descriptors a new program must not inherit: everything from a first number up is marked
//! close-on-exec before an `execve` (container init, exec'd processes, hooks).
//!
//! Usable between `fork`/`clone` and `execve`: only system calls, no allocation, no locks.
//! Written by hand (no crate offers an async-signal-safe `/proc/self/fd` walk): `close_range`
//! first; where it is missing (before Linux 5.11) or a seccomp profile written before it
//! existed forbids it, each descriptor listed in `/proc/self/fd` (read with `getdents64`
//! into a stack buffer); without `/proc`, every number below the `RLIMIT_NOFILE` soft limit.

use std::io;
use std::os::fd::RawFd;

/// Mark every descriptor from `first` up close-on-exec. Async-signal-safe.
pub fn mark_cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags of this process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match mark_listed_from(first) {
        Ok(true) => Ok(()),
        Ok(false) => {
            mark_every_number_from(first);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `FD_CLOEXEC` on each descriptor from `first` up listed in `/proc/self/fd`; false when
/// that directory cannot be opened (no `/proc`). Async-signal-safe.
pub(crate) fn mark_listed_from(first: RawFd) -> io::Result<bool> {
    // SAFETY: open reads the NUL-terminated literal; the descriptor is closed below.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return Ok(false);
    }
    let result = mark_entries(dir, first);
    // SAFETY: closing the directory descriptor opened above.
    unsafe { libc::close(dir) };
    result.map(|()| true)
}

/// Read `dir` (an open `/proc/self/fd`) with `getdents64` and mark each numeric entry from
/// `first` up, except `dir` itself.
fn mark_entries(dir: RawFd, first: RawFd) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into the buffer we own.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(());
        }
        let mut off = 0usize;
        let end = n as usize;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while off + 19 <= end {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > end {
                break;
            }
            if let Some(fd) = parse_fd(&buf[off + 19..off + reclen]) {
                if fd >= first && fd != dir {
                    // SAFETY: fcntl only changes the flags of a descriptor of this process.
                    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                    if rc < 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EBADF) {
                            return Err(e);
                        }
                    }
                }
            }
            off += reclen;
        }
    }
}

/// The descriptor number of a NUL-terminated directory entry name (`.`/`..` give None).
fn parse_fd(name: &[u8]) -> Option<RawFd> {
    let mut fd: RawFd = 0;
    let mut digits = 0;
    for &b in name.iter().take_while(|b| **b != 0) {
        if !b.is_ascii_digit() {
            return None;
        }
        fd = fd.checked_mul(10)?.checked_add(RawFd::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(fd)
}

/// `FD_CLOEXEC` on every number from `first` below the `RLIMIT_NOFILE` soft limit (capped
/// at 2^20): the last resort without `/proc`.
fn mark_every_number_from(first: RawFd) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes into the local struct.
    let limit = if unsafe { libc::prlimit(0, libc::RLIMIT_NOFILE, std::ptr::null(), &mut rl) } == 0
    {
        rl.rlim_cur.min(1 << 20) as RawFd
    } else {
        1 << 20
    };
    for fd in first..limit {
        // SAFETY: fcntl only changes the flags of a descriptor of this process (EBADF for a
        // number that is not open).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the flags of a descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn proc_fd_walk_marks_descriptors_from_first_up() {
        let file = tempfile::tempfile().expect("tempfile");
        // SAFETY: dup returns new descriptors (without FD_CLOEXEC) that we close below.
        let (low, high) = unsafe {
            let a = libc::dup(file.as_raw_fd());
            let b = libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, a + 1);
            (a, b)
        };
        assert!(low > 2 && high > low);
        assert!(!cloexec(low) && !cloexec(high));
        assert!(
            mark_listed_from(high).expect("walk"),
            "/proc/self/fd missing"
        );
        assert!(cloexec(high), "descriptor {high} not marked");
        assert!(!cloexec(low), "descriptor {low} below `first` was marked");
        // SAFETY: closing the two descriptors dup'ed above.
        unsafe {
            libc::close(low);
            libc::close(high);
        }
    }

    #[test]
    fn entry_names_parse_as_descriptor_numbers() {
        assert_eq!(parse_fd(b"17\0\0\0"), Some(17));
        assert_eq!(parse_fd(b"0\0"), Some(0));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"\0"), None);
        assert_eq!(parse_fd(b"99999999999\0"), None);
    }
}
