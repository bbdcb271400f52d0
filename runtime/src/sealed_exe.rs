//! The hull binary as the container's processes can reach it (CVE-2019-5736).
//!
//! Every process hull starts in a container first runs hull itself (`hull init`), so a
//! container process could open `/proc/<pid>/exe` and, once that process is gone, write
//! through it into the host's hull binary. hull therefore never execs its binary by path:
//! it execs a descriptor of a *detached, read-only bind mount* of it (`open_tree` with
//! `OPEN_TREE_CLONE`, then `mount_setattr(MOUNT_ATTR_RDONLY)`), so every `/proc/<pid>/exe`
//! of those processes points into a mount that refuses writes and that no container can
//! reach to remount. That costs three system calls per container. Where that is not
//! possible (old kernel, no CAP_SYS_ADMIN), the fallback is runc's original fix: a sealed
//! memfd copy of the binary (a few milliseconds for a 5 MB copy).

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use hull_inside::rootfs::mount_options::{RecAttr, MOUNT_ATTR_RDONLY};

#[derive(Debug, thiserror::Error)]
pub enum SealedExeError {
    #[error("protecting the hull binary {path:?} from the container: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A descriptor of the hull binary (`binary`, or this process's own executable) that the
/// container cannot write through. Exec it with `execveat(fd, "", AT_EMPTY_PATH)`.
pub fn open(binary: Option<&Path>) -> Result<OwnedFd, SealedExeError> {
    let path = binary.unwrap_or(Path::new("/proc/self/exe"));
    match read_only_clone(path) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            tracing::debug!("read-only bind of {path:?} failed ({e}); using a sealed memfd");
            sealed_memfd(path).map_err(|source| SealedExeError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// A detached bind mount of `path` alone, made read-only.
fn read_only_clone(path: &Path) -> std::io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = RecAttr {
        set: MOUNT_ATTR_RDONLY,
        clear: 0,
    };
    hull_inside::rootfs::mounts::mount_setattr_recursive(fd.as_fd(), attr)
        .map_err(std::io::Error::from)?;
    Ok(fd)
}

/// A memfd holding a copy of `path`, sealed against any change.
fn sealed_memfd(path: &Path) -> std::io::Result<OwnedFd> {
    let name = c"hull";
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new descriptor.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let mut memfd = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::copy(&mut File::open(path)?, &mut memfd)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on a memfd we own; no memory is passed.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&memfd),
            libc::F_ADD_SEALS,
            seals,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(memfd.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn reopen_for_write(fd: &OwnedFd) -> std::io::Result<File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    #[test]
    fn the_sealed_memfd_refuses_writes_and_keeps_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bin");
        std::fs::write(&file, b"\x7fELF pretend").unwrap();
        let fd = sealed_memfd(&file).unwrap();
        let mut w = reopen_for_write(&fd).unwrap();
        assert!(std::io::Write::write_all(&mut w, b"x").is_err());
        let content = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(content, b"\x7fELF pretend");
    }

    #[test]
    fn the_read_only_clone_refuses_writes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: open_tree(OPEN_TREE_CLONE) needs CAP_SYS_ADMIN");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bin");
        std::fs::write(&file, b"original").unwrap();
        let fd = read_only_clone(&file).unwrap();
        let err = reopen_for_write(&fd).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // The host file itself stays writable for its owner: only the clone is read-only.
        std::fs::write(&file, b"changed").unwrap();
        assert_eq!(
            std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(),
            b"changed"
        );
    }
}
