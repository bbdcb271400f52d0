//! Entering the rootfs: `pivot_root(".", ".")`, or `MS_MOVE` + `chroot` with `--no-pivot`.

use super::mountinfo;
use super::{sys_mount, RootfsError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{umount2, MntFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, chroot, fchdir};
use std::os::fd::OwnedFd;
use std::path::Path;

/// `pivot_root` into `root` (an `O_PATH` descriptor of the rootfs mount) without a
/// `put_old` directory: `pivot_root(".", ".")` stacks the old root under the new one, and
/// the old root, made rslave first so nothing propagates to the host, is lazily unmounted.
pub fn pivot_root(root: &OwnedFd) -> Result<(), RootfsError> {
    let slash = Path::new("/");
    let old_root = nix::fcntl::open(
        slash,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::sys("open old root", slash, e))?;
    fchdir(root).map_err(|e| RootfsError::sys("chdir to rootfs", ".", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| RootfsError::sys("pivot_root", ".", e))?;
    // "." is the old root now, by the kernel's current behaviour; be explicit anyway.
    fchdir(&old_root).map_err(|e| RootfsError::sys("chdir to old root", ".", e))?;
    // rslave, not rprivate: the host keeps the ability to unmount things we still pin.
    sys_mount(
        None,
        Path::new("."),
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
    )
    .map_err(|e| RootfsError::sys("make old root rslave", ".", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| RootfsError::sys("unmount old root", ".", e))?;
    chdir(slash).map_err(|e| RootfsError::sys("chdir", slash, e))
}

/// `--no-pivot`: full procfs/sysfs mounts of the host outside the rootfs are unmounted (or
/// covered) first — with only `chroot` they would stay reachable and would allow fresh
/// proc/sys mounts — then the rootfs is moved onto `/` and chrooted into.
pub fn move_root(rootfs: &Path, root: &OwnedFd) -> Result<(), RootfsError> {
    fchdir(root).map_err(|e| RootfsError::sys("chdir to rootfs", rootfs, e))?;
    let mounts = mountinfo::read_self().map_err(|e| {
        RootfsError::sys("read", "/proc/self/mountinfo", super::mounts::io_errno(&e))
    })?;
    for m in mounts {
        let full_pseudo = m.root == Path::new("/") && (m.fs_type == "proc" || m.fs_type == "sysfs");
        if !full_pseudo || m.mount_point.starts_with(rootfs) {
            continue;
        }
        let p = m.mount_point.as_path();
        match sys_mount(None, p, None, libc::MS_SLAVE | libc::MS_REC, None) {
            Ok(()) => {}
            // A parent was unmounted already.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(RootfsError::sys("make rslave", p, e)),
        }
        match umount2(p, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::EPERM) => {
                sys_mount(Some(Path::new("tmpfs")), p, Some("tmpfs"), 0, None)
                    .map_err(|e| RootfsError::sys("cover with tmpfs", p, e))?;
            }
            Err(e) => return Err(RootfsError::sys("unmount", p, e)),
        }
    }
    sys_mount(Some(rootfs), Path::new("/"), None, libc::MS_MOVE, None)
        .map_err(|e| RootfsError::sys("move rootfs onto /", rootfs, e))?;
    chroot(".").map_err(|e| RootfsError::sys("chroot", ".", e))?;
    chdir("/").map_err(|e| RootfsError::sys("chdir", "/", e))
}
