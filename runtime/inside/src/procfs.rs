//! Writes to procfs that cannot be redirected (CVE-2025-52881). Init writes LSM attributes,
//! sysctls and `oom_score_adj` inside the container, where mounts it does not control
//! (shared bind mounts, a racing neighbour) could cover a procfs file with another one, so
//! that the write lands somewhere else (`/proc/sysrq-trigger`, another sysctl). Each write
//! goes through a procfs instance of init's own: made with `fsopen("proc")` + `fsmount`,
//! detached (attached nowhere, so nothing can be mounted on it), and every path in it is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS)`, which
//! fails instead of crossing a mount or following a magic link. Where the kernel refuses a
//! new procfs (a user namespace without a fully visible /proc), the container's `/proc`,
//! checked to be a procfs, is used with the same resolution rules.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::rootfs::resolve::sys_openat2;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;
const RESOLVE_NO_XDEV: u64 = 0x01;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

/// The root of a procfs that only this process can reach.
#[derive(Debug)]
pub struct PrivateProc {
    root: OwnedFd,
}

impl PrivateProc {
    /// The process's one instance, made on first use (init writes up to three kinds of
    /// files; one `fsopen`/`fsmount` serves them all). Made after the pivot: the procfs of
    /// the container's pid namespace. Closed by the `execve` of the container process.
    pub fn shared() -> Result<&'static PrivateProc, Errno> {
        static SHARED: std::sync::OnceLock<PrivateProc> = std::sync::OnceLock::new();
        if let Some(p) = SHARED.get() {
            return Ok(p);
        }
        let made = PrivateProc::new()?;
        Ok(SHARED.get_or_init(|| made))
    }

    /// A new detached procfs of the caller's pid namespace, or the checked `/proc`.
    pub fn new() -> Result<Self, Errno> {
        match fresh_procfs() {
            Ok(root) => Ok(PrivateProc { root }),
            Err(e) => {
                tracing::debug!("a private procfs could not be made ({e}): using /proc");
                let root = nix::fcntl::open(
                    "/proc",
                    nix::fcntl::OFlag::O_PATH
                        | nix::fcntl::OFlag::O_DIRECTORY
                        | nix::fcntl::OFlag::O_NOFOLLOW
                        | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )?;
                let fs = nix::sys::statfs::fstatfs(&root)?;
                if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
                    return Err(Errno::EXDEV);
                }
                Ok(PrivateProc { root })
            }
        }
    }

    /// Opens `rel` (relative to the procfs root, e.g. `self/attr/exec`) for writing:
    /// ENOENT when missing, EXDEV/ELOOP when anything is mounted on its way.
    pub fn open_write(&self, rel: &str) -> Result<std::fs::File, Errno> {
        let path = CString::new(rel).map_err(|_| Errno::EINVAL)?;
        let flags = (libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
        let fd = sys_openat2(
            self.root.as_fd(),
            &path,
            flags,
            RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS,
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Writes `value` to `rel` in one `write` (as procfs files want).
    pub fn write(&self, rel: &str, value: &[u8]) -> Result<(), std::io::Error> {
        let mut f = self.open_write(rel)?;
        f.write_all(value)
    }
}

/// fsopen("proc") → FSCONFIG_CMD_CREATE → fsmount: the root of a detached procfs mount.
fn fresh_procfs() -> Result<OwnedFd, Errno> {
    // SAFETY: a NUL-terminated file system name and flags; returns a new fd or -1.
    let fsfd = unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC) };
    if fsfd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fsfd = unsafe { OwnedFd::from_raw_fd(fsfd as i32) };
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    // SAFETY: integers only; returns a new mount descriptor or -1.
    let mfd = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
    };
    if mfd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mfd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_go_to_the_procfs_file_and_never_across_a_mount() {
        let p = PrivateProc::new().expect("a procfs");
        // A harmless write that must reach our own process.
        let before = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        p.write("self/oom_score_adj", before.trim().as_bytes())
            .unwrap();
        assert_eq!(p.open_write("no/such/file").unwrap_err(), Errno::ENOENT);
        assert!(
            p.open_write("../etc/passwd").is_err(),
            "beneath the procfs root only"
        );
        // /proc/self/fd/N are magic links: refused.
        assert!(p.open_write("self/fd/1").is_err());
    }

    #[test]
    fn a_mount_over_a_proc_file_makes_the_write_fail_instead_of_landing_elsewhere() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a private mount namespace");
            return;
        }
        // On a thread of its own with a private mount namespace (unshare(CLONE_NEWNS)
        // takes a copy of the filesystem context for that thread only): cover
        // /proc/sys/kernel/domainname with /dev/null. The private procfs has no cover; the
        // visible /proc refuses to cross it.
        let outcome = std::thread::spawn(|| -> Result<(), String> {
            let s = |e: Errno| e.to_string();
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(s)?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(s)?;
            nix::mount::mount(
                Some("/dev/null"),
                "/proc/sys/kernel/domainname",
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(s)?;
            let p = PrivateProc::new().map_err(s)?;
            p.open_write("sys/kernel/domainname")
                .map_err(|e| format!("the private procfs: {e}"))?;
            let visible = PrivateProc {
                root: nix::fcntl::open(
                    "/proc",
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(s)?,
            };
            match visible.open_write("sys/kernel/domainname") {
                Err(Errno::EXDEV) => Ok(()),
                other => Err(format!("across the cover: {other:?}")),
            }
        })
        .join()
        .expect("thread");
        assert_eq!(outcome, Ok(()));
    }
}
