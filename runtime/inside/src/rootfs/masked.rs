//! After the pivot: read-only tmpfs mounts, `linux.readonlyPaths`, `linux.maskedPaths` and
//! `root.readonly`. Paths are resolved from `/` (now the container's root) by descriptor.

use super::mount_options::{statvfs_to_ms, MS_LOCKABLE};
use super::mounts::Entry;
use super::resolve::{open_in_root, proc_fd_path};
use super::{sys_mount, RootfsError};
use libc::c_ulong;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statfs::{statfs, PROC_SUPER_MAGIC};
use oci_spec::runtime::Spec;
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

fn open_root() -> Result<OwnedFd, RootfsError> {
    let slash = Path::new("/");
    nix::fcntl::open(
        slash,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::sys("open", slash, e))
}

/// The path to hand to `mount(2)` for a resolved descriptor: its `/proc/self/fd` magic link
/// when the container has a real procfs at `/proc`, else the plain path.
fn target(fd: &OwnedFd, path: &Path, have_proc: bool) -> PathBuf {
    if have_proc {
        proc_fd_path(fd.as_fd())
    } else {
        path.to_path_buf()
    }
}

fn have_proc() -> bool {
    statfs("/proc").is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC)
}

/// Open `path` inside the container; `None` if it does not exist.
fn open_existing(root: &OwnedFd, path: &Path) -> Result<Option<OwnedFd>, RootfsError> {
    match open_in_root(root.as_fd(), path, OFlag::O_PATH) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(RootfsError::sys("open", path, e)),
    }
}

/// `mounts` entries that were mounted read-write because files had to be made in them
/// first (tmpfs, `/dev`), and asked for `ro`: remount them read-only now (runc).
pub fn remount_readonly_mounts(spec: &Spec) -> Result<(), RootfsError> {
    let root = open_root()?;
    let have_proc = have_proc();
    for (index, m) in spec.mounts().iter().flatten().enumerate() {
        let e = Entry::from_spec(index, m);
        if !e.delays_readonly() || e.opts.flags & libc::MS_RDONLY == 0 {
            continue;
        }
        let fd = open_in_root(root.as_fd(), &e.dest, OFlag::O_PATH).map_err(|errno| {
            RootfsError::Mount {
                index,
                destination: e.dest.clone(),
                op: "open for read-only remount".into(),
                errno,
            }
        })?;
        let t = target(&fd, &e.dest, have_proc);
        let flags = e.opts.flags | libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        let mut tries = 0;
        loop {
            match sys_mount(None, &t, None, flags, None) {
                Err(Errno::EBUSY) if tries < 5 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Ok(()) => break,
                Err(errno) => {
                    return Err(RootfsError::Mount {
                        index,
                        destination: e.dest.clone(),
                        op: "remount read-only".into(),
                        errno,
                    })
                }
            }
        }
    }
    Ok(())
}

/// `MS_BIND | MS_REMOUNT` of `target` with `flags`, keeping the mount's locked flags if the
/// plain remount is refused.
fn remount_keeping_locked(t: &Path, flags: c_ulong) -> Result<(), Errno> {
    match sys_mount(None, t, None, flags, None) {
        Err(Errno::EPERM) => {
            let st = nix::sys::statvfs::statvfs(t)?;
            let cur = statvfs_to_ms(st.flags().bits() as u64);
            sys_mount(None, t, None, flags | (cur & MS_LOCKABLE), None)
        }
        other => other,
    }
}

/// A `linux.readonlyPaths` entry: bind onto itself, then remount read-only keeping the
/// mount's `nosuid`, `nodev` and `noexec` (runc). Missing paths are skipped.
pub fn readonly_path(path: &Path) -> Result<(), RootfsError> {
    let root = open_root()?;
    let Some(fd) = open_existing(&root, path)? else {
        return Ok(());
    };
    let have_proc = have_proc();
    let t = target(&fd, path, have_proc);
    sys_mount(Some(&t), &t, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(|e| RootfsError::sys("bind read-only path", path, e))?;
    // Re-open: the old descriptor holds the covered inode, not the new bind.
    let fd = open_in_root(root.as_fd(), path, OFlag::O_PATH)
        .map_err(|e| RootfsError::sys("re-open read-only path", path, e))?;
    let t = target(&fd, path, have_proc);
    let st = nix::sys::statvfs::statvfs(&t).map_err(|e| RootfsError::sys("statvfs", path, e))?;
    let keep = statvfs_to_ms(st.flags().bits() as u64)
        & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    let flags = keep | libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    remount_keeping_locked(&t, flags).map_err(|e| RootfsError::sys("remount read-only", path, e))
}

/// Mount a read-only, empty, one-inode tmpfs on a directory.
fn mask_dir(t: &Path) -> Result<(), Errno> {
    let tmpfs = Path::new("tmpfs");
    sys_mount(
        Some(tmpfs),
        t,
        Some("tmpfs"),
        libc::MS_RDONLY,
        Some("nr_blocks=1,nr_inodes=1"),
    )
    .or_else(
        // Some kernels refuse nr_inodes < 2.
        |_| {
            sys_mount(
                Some(tmpfs),
                t,
                Some("tmpfs"),
                libc::MS_RDONLY,
                Some("nr_blocks=1,nr_inodes=2"),
            )
        },
    )
}

/// `linux.maskedPaths`: `/dev/null` bound over files, a read-only empty tmpfs over
/// directories. Missing paths and duplicates are skipped.
pub fn mask_paths(paths: &[&str]) -> Result<(), RootfsError> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = open_root()?;
    let have_proc = have_proc();
    let null = super::devices::open_dev_null(OFlag::O_PATH)?;
    let null_src = target(&null, Path::new("/dev/null"), have_proc);
    let mut done = HashSet::new();
    for p in paths {
        let path = Path::new(p);
        if !done.insert(super::resolve::clean_relative(path)) {
            continue;
        }
        let Some(fd) = open_existing(&root, path)? else {
            continue;
        };
        let st = fstat(&fd).map_err(|e| RootfsError::sys("stat masked path", path, e))?;
        let t = target(&fd, path, have_proc);
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            mask_dir(&t).map_err(|e| RootfsError::sys("mask directory", path, e))?;
        } else {
            sys_mount(Some(&null_src), &t, None, libc::MS_BIND, None)
                .map_err(|e| RootfsError::sys("mask file", path, e))?;
        }
    }
    Ok(())
}

/// `root.readonly`: remount `/` read-only, keeping the flags it has.
pub fn set_root_readonly() -> Result<(), RootfsError> {
    let slash = Path::new("/");
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    let err = match sys_mount(None, slash, None, flags, None) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let st =
        nix::sys::statvfs::statvfs(slash).map_err(|e| RootfsError::sys("statvfs", slash, e))?;
    let cur = statvfs_to_ms(st.flags().bits() as u64);
    sys_mount(None, slash, None, flags | cur, None)
        .map_err(|_| RootfsError::sys("remount read-only", slash, err))
}
