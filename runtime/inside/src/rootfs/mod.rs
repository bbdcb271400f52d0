//! The container's root filesystem: mounts, devices, pivot, masked and read-only paths.
//!
//! The container init calls, in its own (new) mount namespace, single-threaded:
//! [`prepare`] → createContainer hooks → [`enter`] → hostname and sysctls → [`finish`].
//! Behaviour follows runc's `libcontainer/rootfs_linux.go`.
//!
//! Every container path is resolved inside the rootfs by descriptor ([`resolve`]): a symlink
//! in the rootfs that points at a host path resolves to that path *inside* the rootfs, and
//! mounts go onto `/proc/self/fd/<fd>` of the resolved `O_PATH` descriptor.
//!
//! Submodules: [`mount_options`] (options → flags, pure), [`resolve`] (openat2 helpers),
//! [`mounts`] (the `mounts` entries), [`devices`] (`/dev`), [`pivot`] (entering the
//! rootfs), [`masked`] (masked and read-only paths, read-only root), [`mountinfo`].

pub mod devices;
pub mod masked;
pub mod mount_options;
pub mod mountinfo;
pub mod mounts;
pub mod pivot;
pub mod resolve;

use libc::c_ulong;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// Setting up `mounts[index]` failed in a system call, e.g.
    /// `mounts[3]: mount tmpfs on "/dev": EPERM: Operation not permitted`.
    #[error("mounts[{index}]: {op} on {destination:?}: {errno}")]
    Mount {
        index: usize,
        destination: PathBuf,
        op: String,
        #[source]
        errno: Errno,
    },
    /// `mounts[index]` is invalid or refused (e.g. a mount inside `/proc`).
    #[error("mounts[{index}]: {destination:?}: {reason}")]
    InvalidMount {
        index: usize,
        destination: PathBuf,
        reason: String,
    },
    /// Creating a device node (of `linux.devices` or the default set) failed.
    #[error("device {path:?}: {op}: {errno}")]
    Device {
        path: PathBuf,
        op: String,
        #[source]
        errno: Errno,
    },
    /// Any other step (propagation, pivot, masked/read-only paths): what failed, on which path.
    #[error("{op} {path:?}: {errno}")]
    Sys {
        op: String,
        path: PathBuf,
        #[source]
        errno: Errno,
    },
    /// A configuration the runtime refuses.
    #[error("rootfs: {0}")]
    Other(String),
}

impl RootfsError {
    pub(crate) fn sys(op: impl Into<String>, path: impl Into<PathBuf>, errno: Errno) -> Self {
        RootfsError::Sys {
            op: op.into(),
            path: path.into(),
            errno,
        }
    }

    /// The errno behind the error, if a system call failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RootfsError::Mount { errno, .. }
            | RootfsError::Device { errno, .. }
            | RootfsError::Sys { errno, .. } => Some(*errno),
            RootfsError::InvalidMount { .. } | RootfsError::Other(_) => None,
        }
    }
}

/// What the rootfs set-up needs to know. Runs inside the container's (new) mount namespace.
pub struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    /// Absolute host path of the rootfs.
    pub rootfs: &'a Path,
    /// Absolute host path of the bundle (relative bind sources are relative to it).
    pub bundle: &'a Path,
    pub no_pivot: bool,
    /// The container has its own user namespace: devices are bind-mounted, not mknod'ed.
    pub in_user_ns: bool,
}

/// `mount(2)` with raw `MS_*` flags.
pub(crate) fn sys_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> Result<(), Errno> {
    nix::mount::mount(
        source,
        target,
        fstype,
        nix::mount::MsFlags::from_bits_retain(flags),
        data,
    )
}

/// `linux.rootfsPropagation` as `MS_*` flags (`None` when unset).
fn rootfs_propagation(plan: &RootfsPlan) -> Result<Option<c_ulong>, RootfsError> {
    let Some(p) = plan
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let flags = mount_options::propagation_flags(p)
        .ok_or_else(|| RootfsError::Other(format!("rootfsPropagation={p:?} is not supported")))?;
    if plan.no_pivot && flags & libc::MS_PRIVATE != 0 {
        return Err(RootfsError::Other(
            "rootfsPropagation of [r]private is not safe without pivot_root".into(),
        ));
    }
    Ok(Some(flags))
}

/// The mount holding `path` (walking up until `mount(2)` stops answering `EINVAL`, i.e.
/// "not a mount point") is made private (or slave if the root propagation asks for slave):
/// `pivot_root` refuses a shared parent, and a shared parent would leak the rootfs bind
/// mount to the host.
fn make_parent_mount_private(path: &Path, root_prop: Option<c_ulong>) -> Result<(), RootfsError> {
    let flags = match root_prop {
        Some(p) if p & libc::MS_SLAVE != 0 => libc::MS_SLAVE,
        _ => libc::MS_PRIVATE,
    };
    let mut cur = path;
    loop {
        match sys_mount(None, cur, None, flags, None) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) => match cur.parent() {
                Some(parent) => cur = parent,
                None => {
                    return Err(RootfsError::sys(
                        "make parent mount private",
                        cur,
                        Errno::EINVAL,
                    ))
                }
            },
            Err(e) => return Err(RootfsError::sys("make parent mount private", cur, e)),
        }
    }
}

/// The rootfs directory as an `O_PATH` descriptor (what mounts are resolved against).
pub fn open_rootfs(rootfs: &Path) -> Result<OwnedFd, RootfsError> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RootfsError::sys("open rootfs", rootfs, e))
}

/// Before pivot: propagation, rootfs bind, every `mounts` entry, default and `linux.devices`.
pub fn prepare(plan: &RootfsPlan) -> Result<(), RootfsError> {
    prepare_with_cgroup_barrier(plan, &mut || Ok(()))
}

/// [`prepare`], calling `cgroup_barrier` once before anything that needs init to be in its
/// cgroup (the first `cgroup`/`cgroup2` mount, which shows init's own cgroup directories)
/// or, without such a mount, at the end. Mounts before it overlap with the parent placing
/// init in its cgroup.
pub fn prepare_with_cgroup_barrier(
    plan: &RootfsPlan,
    cgroup_barrier: &mut dyn FnMut() -> Result<(), RootfsError>,
) -> Result<(), RootfsError> {
    if !plan.rootfs.is_absolute() {
        return Err(RootfsError::Other(format!(
            "rootfs {:?} is not an absolute path",
            plan.rootfs
        )));
    }
    let root_prop = rootfs_propagation(plan)?;
    let slash = Path::new("/");
    let flags = root_prop.unwrap_or(libc::MS_SLAVE | libc::MS_REC);
    sys_mount(None, slash, None, flags, None)
        .map_err(|e| RootfsError::sys("set propagation of", slash, e))?;
    make_parent_mount_private(plan.rootfs, root_prop)?;
    sys_mount(
        Some(plan.rootfs),
        plan.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| RootfsError::sys("bind-mount rootfs onto itself", plan.rootfs, e))?;

    // Opened after the bind so that it holds the new mount (the one we pivot into).
    let root = open_rootfs(plan.rootfs)?;
    let ctx = mounts::Ctx::new(root, plan)?;
    let mut in_cgroup = false;
    for (index, m) in plan.spec.mounts().iter().flatten().enumerate() {
        if !in_cgroup && matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")) {
            cgroup_barrier()?;
            in_cgroup = true;
        }
        ctx.mount(index, m)?;
    }
    // Device nodes need no cgroup: every one hull creates is in the device allow list.
    if devices::needs_setup(plan.spec) {
        devices::setup(ctx.root(), plan.spec, plan.in_user_ns)?;
    }
    if !in_cgroup {
        cgroup_barrier()?;
    }
    Ok(())
}

/// `pivot_root` (or `MS_MOVE` + `chroot` with `no_pivot`) into the rootfs; cwd is `/` after.
pub fn enter(plan: &RootfsPlan) -> Result<(), RootfsError> {
    let root_prop = rootfs_propagation(plan)?;
    let root = open_rootfs(plan.rootfs)?;
    if plan.no_pivot {
        pivot::move_root(plan.rootfs, &root)?;
    } else {
        pivot::pivot_root(&root)?;
    }
    drop(root);
    // runc applies the root propagation only now: on the old rootfs it would reach the host.
    // private and slave were already applied to the parent mount in `prepare`.
    if let Some(p) = root_prop {
        if p & (libc::MS_PRIVATE | libc::MS_SLAVE) == 0 {
            let slash = Path::new("/");
            sys_mount(None, slash, None, p, None)
                .map_err(|e| RootfsError::sys("set rootfsPropagation of", slash, e))?;
        }
    }
    if devices::needs_setup(plan.spec) {
        devices::reopen_dev_null()?;
    }
    Ok(())
}

/// After pivot (and after sysctls): read-only tmpfs mounts, read-only paths, masked paths,
/// `root.readonly` (runc's `finalizeRootfs`, `readonlyPath`, `maskPaths` steps).
pub fn finish(plan: &RootfsPlan) -> Result<(), RootfsError> {
    masked::remount_readonly_mounts(plan.spec)?;
    let linux = plan.spec.linux().as_ref();
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        masked::readonly_path(Path::new(path))?;
    }
    let masked_paths: Vec<&str> = linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    masked::mask_paths(&masked_paths)?;
    if plan
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        masked::set_root_readonly()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
