//! Linux namespaces: which to create, which to join by path, and who does it.
//!
//! Where each namespace is handled follows from the kernel's rules:
//! - namespaces joined by `path` (all but user) are entered by the parent just around the
//!   `clone` of init, so init inherits them even when it is born into a new user namespace
//!   (from inside which it could no longer join namespaces owned by the host); the parent
//!   returns to its own namespaces right after, so its hooks run in the runtime's namespaces;
//! - new namespaces are created by that same `clone`, user namespace included, so they are
//!   owned by the new user namespace; the parent writes the id maps before init execs (an
//!   unmapped process would lose its capabilities at exec);
//! - a new time namespace is unshared by the parent, which writes `timens_offsets` before the
//!   first process enters it;
//! - init itself joins a user namespace given by path (and then unshares the other new
//!   namespaces, so they are owned by it) and unshares the cgroup namespace after the parent
//!   placed it in its cgroup.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("linux.namespaces: {kind} namespace path {path:?}: {source}")]
    Open {
        kind: NsKind,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.namespaces: {kind} namespace path {path:?} is not a {kind} namespace")]
    WrongType { kind: NsKind, path: PathBuf },
    #[error("setns into {kind} namespace {path:?}: {source}")]
    Setns {
        kind: NsKind,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unshare({what}): {source}")]
    Unshare {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("linux.timeOffsets: writing /proc/self/timens_offsets: {0}")]
    TimeOffsets(#[source] std::io::Error),
    #[error("linux.namespaces: a mount namespace is required (a new one, or one joined by path)")]
    MountRequired,
    #[error("linux.namespaces: joining a user namespace by path together with a new pid namespace is not supported; join a pid namespace too")]
    JoinedUserWithNewPid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsKind {
    User,
    Pid,
    Time,
    Mount,
    Uts,
    Ipc,
    Net,
    Cgroup,
}

impl std::fmt::Display for NsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NsKind::User => "user",
            NsKind::Pid => "pid",
            NsKind::Time => "time",
            NsKind::Mount => "mount",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Net => "network",
            NsKind::Cgroup => "cgroup",
        })
    }
}

impl NsKind {
    pub fn from_oci(t: LinuxNamespaceType) -> Self {
        match t {
            LinuxNamespaceType::User => NsKind::User,
            LinuxNamespaceType::Pid => NsKind::Pid,
            LinuxNamespaceType::Time => NsKind::Time,
            LinuxNamespaceType::Mount => NsKind::Mount,
            LinuxNamespaceType::Uts => NsKind::Uts,
            LinuxNamespaceType::Ipc => NsKind::Ipc,
            LinuxNamespaceType::Network => NsKind::Net,
            LinuxNamespaceType::Cgroup => NsKind::Cgroup,
        }
    }

    pub fn clone_flag(self) -> CloneFlags {
        match self {
            NsKind::User => CloneFlags::CLONE_NEWUSER,
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            // CLONE_NEWTIME shares its bit with CSIGNAL in clone(2); only unshare/setns use it.
            NsKind::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
            NsKind::Mount => CloneFlags::CLONE_NEWNS,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        }
    }

    /// The entry name under /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Pid => "pid",
            NsKind::Time => "time",
            NsKind::Mount => "mnt",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Net => "net",
            NsKind::Cgroup => "cgroup",
        }
    }
}

/// Who does what with the namespaces of one container.
#[derive(Debug)]
pub struct NamespacePlan {
    /// Flags for init's `clone`.
    pub clone_flags: CloneFlags,
    /// Namespaces the parent enters just for the `clone` (all joined ones but user).
    pub parent_join: Vec<(NsKind, PathBuf)>,
    /// The parent unshares a new time namespace and writes the offsets before the `clone`.
    pub new_time: bool,
    /// A user namespace init joins by path.
    pub join_user: Option<PathBuf>,
    /// Namespaces init unshares itself.
    pub init_unshare: CloneFlags,
    /// The container runs in a user namespace (new or joined).
    pub in_user_ns: bool,
    /// The `clone` creates a new user namespace whose maps the parent writes.
    pub new_user: bool,
}

impl Default for NamespacePlan {
    fn default() -> Self {
        Self {
            clone_flags: CloneFlags::empty(),
            parent_join: Vec::new(),
            new_time: false,
            join_user: None,
            init_unshare: CloneFlags::empty(),
            in_user_ns: false,
            new_user: false,
        }
    }
}

impl NamespacePlan {
    /// The container joins an existing namespace of this kind by path.
    pub fn joins(&self, kind: NsKind) -> bool {
        self.parent_join.iter().any(|(k, _)| *k == kind)
            || (kind == NsKind::User && self.join_user.is_some())
    }

    pub fn from_spec(spec: &Spec) -> Result<Self, NamespaceError> {
        let namespaces: &[LinuxNamespace] = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or(&[]);
        let mut plan = NamespacePlan::default();
        let mut new = CloneFlags::empty();
        for ns in namespaces {
            let kind = NsKind::from_oci(ns.typ());
            match (ns.path(), kind) {
                (Some(path), NsKind::User) => {
                    verify_ns_path(kind, path)?;
                    plan.join_user = Some(path.clone());
                }
                (Some(path), _) => {
                    verify_ns_path(kind, path)?;
                    plan.parent_join.push((kind, path.clone()));
                }
                (None, NsKind::Time) => plan.new_time = true,
                (None, _) => new |= kind.clone_flag(),
            }
        }
        if !new.contains(CloneFlags::CLONE_NEWNS) && !plan.joins(NsKind::Mount) {
            return Err(NamespaceError::MountRequired);
        }
        // As runc: a joined mount namespace is where init then sets the rootfs up (mounts,
        // pivot_root), resolving the bundle's paths there. It is entered last, so that the
        // other namespace paths are still resolved in the runtime's own mount namespace.
        plan.parent_join.sort_by_key(|(k, _)| *k == NsKind::Mount);
        plan.in_user_ns = plan.join_user.is_some() || new.contains(CloneFlags::CLONE_NEWUSER);
        // The cgroup namespace must start at the container's cgroup: init makes it last.
        plan.init_unshare = new & CloneFlags::CLONE_NEWCGROUP;
        new.remove(CloneFlags::CLONE_NEWCGROUP);
        if plan.join_user.is_some() {
            // New namespaces must be owned by the joined user namespace, so init creates them
            // after joining it; a pid namespace can only be made for children, by clone.
            if new.contains(CloneFlags::CLONE_NEWPID) {
                return Err(NamespaceError::JoinedUserWithNewPid);
            }
            new.remove(CloneFlags::CLONE_NEWUSER);
            plan.init_unshare |= new;
        } else {
            plan.new_user = new.contains(CloneFlags::CLONE_NEWUSER);
            plan.clone_flags = new;
        }
        Ok(plan)
    }
}

/// Open a namespace path and check with `NS_GET_NSTYPE` that it is of the expected kind.
pub fn verify_ns_path(kind: NsKind, path: &Path) -> Result<(), NamespaceError> {
    let file = File::open(path).map_err(|source| NamespaceError::Open {
        kind,
        path: path.to_path_buf(),
        source,
    })?;
    match ns_type_of(&file) {
        Some(t) if t == kind.clone_flag().bits() => Ok(()),
        _ => Err(NamespaceError::WrongType {
            kind,
            path: path.to_path_buf(),
        }),
    }
}

/// The `CLONE_NEW*` type of a namespace file, or None if it is not one.
fn ns_type_of(file: &File) -> Option<i32> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3), linux/nsfs.h
                                                 // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    (rc > 0).then_some(rc)
}

/// Enter the namespace at `path`.
pub fn join(kind: NsKind, path: &Path) -> Result<(), NamespaceError> {
    let file = File::open(path).map_err(|source| NamespaceError::Open {
        kind,
        path: path.to_path_buf(),
        source,
    })?;
    nix::sched::setns(file.as_fd(), kind.clone_flag()).map_err(|source| NamespaceError::Setns {
        kind,
        path: path.to_path_buf(),
        source,
    })
}

pub fn unshare(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|source| NamespaceError::Unshare {
        what: format!("{flags:?}"),
        source,
    })
}

/// The parent's own namespaces, saved so it can return to them after it cloned init into
/// the container's.
pub struct ChildNamespaceGuard {
    saved: Vec<(NsKind, File)>,
    /// The working directory before a mount namespace was joined (setns resets it).
    cwd: Option<File>,
}

impl ChildNamespaceGuard {
    /// Enter the joined namespaces init must be born into, and create a new time namespace
    /// with `offsets` if asked.
    pub fn enter(plan: &NamespacePlan, time_offsets: Option<&str>) -> Result<Self, NamespaceError> {
        let mut guard = ChildNamespaceGuard {
            saved: Vec::new(),
            cwd: None,
        };
        // Before the joins: a joined mount namespace has its own /proc (or none).
        if plan.new_time {
            guard.save(NsKind::Time)?;
            unshare(NsKind::Time.clone_flag())?;
            if let Some(offsets) = time_offsets {
                std::fs::write("/proc/self/timens_offsets", offsets)
                    .map_err(NamespaceError::TimeOffsets)?;
            }
        }
        guard.join(&plan.parent_join)?;
        Ok(guard)
    }

    /// Enter `kinds` of the process `pidfd` pins, all in one `setns(pidfd, flags)`: no
    /// `/proc/PID/ns` path, so a pid reused meanwhile cannot lead anywhere else.
    pub fn join_process(pidfd: BorrowedFd<'_>, kinds: &[NsKind]) -> Result<Self, NamespaceError> {
        let mut guard = ChildNamespaceGuard {
            saved: Vec::new(),
            cwd: None,
        };
        if kinds.is_empty() {
            return Ok(guard);
        }
        let mut flags = CloneFlags::empty();
        for &kind in kinds {
            guard.save(kind)?;
            if kind == NsKind::Mount {
                guard.prepare_mount_join()?;
            }
            flags |= kind.clone_flag();
        }
        nix::sched::setns(pidfd, flags).map_err(|source| NamespaceError::Setns {
            kind: kinds[0],
            path: PathBuf::from(format!("pidfd {}", pidfd.as_raw_fd())),
            source,
        })?;
        Ok(guard)
    }

    /// Every path is opened (and our own namespaces saved) before the first `setns`: after
    /// joining a mount namespace, paths would resolve in it.
    fn join(&mut self, namespaces: &[(NsKind, PathBuf)]) -> Result<(), NamespaceError> {
        let mut targets = Vec::with_capacity(namespaces.len());
        for (kind, path) in namespaces {
            self.save(*kind)?;
            let file = File::open(path).map_err(|source| NamespaceError::Open {
                kind: *kind,
                path: path.clone(),
                source,
            })?;
            targets.push((*kind, path, file));
        }
        for (kind, path, file) in targets {
            if kind == NsKind::Mount {
                self.prepare_mount_join()?;
            }
            nix::sched::setns(file.as_fd(), kind.clone_flag()).map_err(|source| {
                NamespaceError::Setns {
                    kind,
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Joining a mount namespace needs a filesystem context of our own (a multi-threaded
    /// caller, the shim, shares it between threads) and resets the working directory,
    /// which is kept to return to.
    fn prepare_mount_join(&mut self) -> Result<(), NamespaceError> {
        unshare(CloneFlags::CLONE_FS)?;
        if self.cwd.is_none() {
            let cwd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(".")
                .map_err(|source| NamespaceError::Open {
                    kind: NsKind::Mount,
                    path: PathBuf::from("."),
                    source,
                })?;
            self.cwd = Some(cwd);
        }
        Ok(())
    }

    fn save(&mut self, kind: NsKind) -> Result<(), NamespaceError> {
        if self.saved.iter().any(|(k, _)| *k == kind) {
            return Ok(());
        }
        // thread-self: in a multi-threaded caller (the shim) /proc/self is the leader.
        let path = PathBuf::from(format!("/proc/thread-self/ns/{}", kind.proc_name()));
        let file =
            File::open(&path).map_err(|source| NamespaceError::Open { kind, path, source })?;
        self.saved.push((kind, file));
        Ok(())
    }
}

impl Drop for ChildNamespaceGuard {
    fn drop(&mut self) {
        for (kind, file) in self.saved.drain(..) {
            if let Err(e) = nix::sched::setns(file.as_fd(), kind.clone_flag()) {
                tracing::warn!("returning to the parent's {kind} namespace: {e}");
            }
        }
        if let Some(cwd) = self.cwd.take() {
            if let Err(e) = nix::unistd::fchdir(cwd.as_fd()) {
                tracing::warn!("returning to the working directory: {e}");
            }
        }
    }
}

/// The namespaces of process `pid` that differ from ours, among `kinds`, as
/// /proc/PID/ns paths: what a process must join to be "in" that process's container.
pub fn differing(pid: i32, kinds: &[NsKind]) -> Vec<(NsKind, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    kinds
        .iter()
        .filter_map(|&kind| {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", kind.proc_name()));
            let ours = PathBuf::from(format!("/proc/thread-self/ns/{}", kind.proc_name()));
            match (ino(&theirs), ino(&ours)) {
                (Some(t), Some(o)) if t == o => None,
                (Some(_), _) => Some((kind, theirs)),
                (None, _) => None,
            }
        })
        .collect()
}

/// `linux.timeOffsets` in the format of /proc/PID/timens_offsets.
pub fn time_offsets(spec: &Spec) -> Option<String> {
    let offsets = spec.linux().as_ref()?.time_offsets().as_ref()?;
    let mut out = String::new();
    for (clock, off) in offsets {
        out.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};

    fn spec_with(ns: Vec<LinuxNamespace>) -> Spec {
        SpecBuilder::default()
            .linux(LinuxBuilder::default().namespaces(ns).build().unwrap())
            .build()
            .unwrap()
    }

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn new_namespaces_are_made_by_clone_but_cgroup() {
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::User, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, None),
            ns(LinuxNamespaceType::Cgroup, None),
            ns(LinuxNamespaceType::Time, None),
        ]);
        let plan = NamespacePlan::from_spec(&spec).unwrap();
        assert_eq!(
            plan.clone_flags,
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWUSER
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWNET
        );
        assert_eq!(plan.init_unshare, CloneFlags::CLONE_NEWCGROUP);
        assert!(plan.new_time && plan.in_user_ns && plan.new_user);
    }

    #[test]
    fn joined_paths_are_split_between_parent_and_init() {
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
            ns(LinuxNamespaceType::Pid, Some("/proc/self/ns/pid")),
        ]);
        let plan = NamespacePlan::from_spec(&spec).unwrap();
        assert_eq!(
            plan.join_user.as_deref(),
            Some(Path::new("/proc/self/ns/user"))
        );
        let kinds: Vec<NsKind> = plan.parent_join.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![NsKind::Net, NsKind::Pid]);
        // Owned by the joined user namespace: made by init, not by clone.
        assert!(plan.clone_flags.is_empty());
        assert_eq!(
            plan.init_unshare,
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS
        );
        assert!(plan.in_user_ns && !plan.new_user);
    }

    #[test]
    fn joined_user_with_new_pid_is_refused() {
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::User, Some("/proc/self/ns/user")),
        ]);
        assert!(matches!(
            NamespacePlan::from_spec(&spec),
            Err(NamespaceError::JoinedUserWithNewPid)
        ));
    }

    #[test]
    fn a_path_of_the_wrong_kind_is_refused() {
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/uts")),
        ]);
        let err = NamespacePlan::from_spec(&spec).unwrap_err();
        assert!(
            err.to_string().contains("is not a network namespace"),
            "{err}"
        );
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Ipc, Some("/etc/hostname")),
        ]);
        assert!(matches!(
            NamespacePlan::from_spec(&spec),
            Err(NamespaceError::WrongType { .. }) | Err(NamespaceError::Open { .. })
        ));
    }

    #[test]
    fn a_joined_mount_namespace_is_entered_last_by_the_parent() {
        let spec = spec_with(vec![
            ns(LinuxNamespaceType::Mount, Some("/proc/self/ns/mnt")),
            ns(LinuxNamespaceType::Network, Some("/proc/self/ns/net")),
            ns(LinuxNamespaceType::Pid, None),
        ]);
        let plan = NamespacePlan::from_spec(&spec).unwrap();
        let kinds: Vec<NsKind> = plan.parent_join.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![NsKind::Net, NsKind::Mount]);
        assert_eq!(plan.clone_flags, CloneFlags::CLONE_NEWPID);
        // A path of another kind is refused.
        let spec = spec_with(vec![ns(
            LinuxNamespaceType::Mount,
            Some("/proc/self/ns/uts"),
        )]);
        assert!(matches!(
            NamespacePlan::from_spec(&spec),
            Err(NamespaceError::WrongType { .. })
        ));
    }

    #[test]
    fn a_mount_namespace_is_required() {
        let spec = spec_with(vec![ns(LinuxNamespaceType::Pid, None)]);
        assert!(matches!(
            NamespacePlan::from_spec(&spec),
            Err(NamespaceError::MountRequired)
        ));
    }
}
