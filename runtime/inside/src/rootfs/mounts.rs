//! The `mounts` entries of the config, mounted in order into the rootfs.

use super::mount_options::{self, MountOptions, RecAttr, MS_ATIME_ALL, MS_LOCKABLE};
use super::mountinfo;
use super::resolve::{
    create_file_in_root, fd_real_path, mkdir_all_in_root, open_in_root, proc_fd_path,
};
use super::{sys_mount, RootfsError, RootfsPlan};
use libc::c_ulong;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::sys::statfs::{fstatfs, statfs, CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `nosuid,nodev,noexec`, runc's flags for the mounts it makes up itself.
const DEFAULT_MOUNT_FLAGS: c_ulong = libc::MS_NOEXEC | libc::MS_NOSUID | libc::MS_NODEV;

/// Files under `/proc` that may be mounted over (what lxcfs provides).
const PROC_ALLOWED: &[&str] = &[
    "cpuinfo",
    "diskstats",
    "meminfo",
    "stat",
    "swaps",
    "uptime",
    "loadavg",
    "slabinfo",
    "sys/kernel/ns_last_pid",
    "sys/crypto/fips_enabled",
];

/// One mount to make, from a config entry or made up (cgroup v1 binds).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Index in `mounts`, for error messages.
    pub index: usize,
    /// The destination inside the container, as configured.
    pub dest: PathBuf,
    /// The filesystem type; `"bind"` for bind mounts.
    pub typ: String,
    pub source: Option<PathBuf>,
    pub opts: MountOptions,
}

impl Entry {
    /// From a config entry: options parsed, type `bind` when `bind`/`rbind` is given.
    pub fn from_spec(index: usize, m: &Mount) -> Self {
        let opts = mount_options::parse(m.options().as_deref().unwrap_or_default());
        let mut typ = m.typ().clone().unwrap_or_default();
        let mut opts = opts;
        if typ == "bind" || opts.is_bind() {
            typ = "bind".into();
            opts.flags |= libc::MS_BIND;
        }
        Entry {
            index,
            dest: m.destination().clone(),
            typ,
            source: m.source().clone(),
            opts,
        }
    }

    fn err(&self, op: impl Into<String>, errno: Errno) -> RootfsError {
        RootfsError::Mount {
            index: self.index,
            destination: self.dest.clone(),
            op: op.into(),
            errno,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> RootfsError {
        RootfsError::InvalidMount {
            index: self.index,
            destination: self.dest.clone(),
            reason: reason.into(),
        }
    }

    fn is_bind(&self) -> bool {
        self.typ == "bind"
    }

    /// Mounted read-write first and made read-only in `finish` (runc: tmpfs and `/dev` need
    /// files made in them first).
    pub fn delays_readonly(&self) -> bool {
        !self.is_bind()
            && (self.typ == "tmpfs"
                || super::resolve::clean_relative(&self.dest) == Path::new("dev"))
    }
}

/// The mount set-up state shared by all entries.
pub struct Ctx<'a> {
    root: OwnedFd,
    /// The kernel's path of the rootfs (symlinks in `plan.rootfs` resolved).
    root_real: PathBuf,
    bundle: &'a Path,
    cgroupns: bool,
    /// The container has its own user namespace (sysfs may not be mountable: see
    /// `mount_proc_or_sys`).
    in_user_ns: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(root: OwnedFd, plan: &RootfsPlan<'a>) -> Result<Self, RootfsError> {
        let root_real = fd_real_path(root.as_fd())
            .map_err(|e| RootfsError::sys("readlink rootfs descriptor", plan.rootfs, e))?;
        Ok(Ctx {
            root,
            root_real,
            bundle: plan.bundle,
            cgroupns: has_namespace(plan.spec, LinuxNamespaceType::Cgroup),
            in_user_ns: plan.in_user_ns,
        })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Mount `mounts[index]`.
    pub fn mount(&self, index: usize, m: &Mount) -> Result<(), RootfsError> {
        self.mount_entry(&Entry::from_spec(index, m))
    }

    pub fn mount_entry(&self, e: &Entry) -> Result<(), RootfsError> {
        if e.opts.idmap {
            return Err(e.invalid("idmapped mounts (idmap, ridmap) are not supported"));
        }
        if e.is_bind() {
            return self.mount_bind(e);
        }
        match e.typ.as_str() {
            "" => Err(e.invalid("the mount has no type")),
            "proc" | "sysfs" => self.mount_proc_or_sys(e),
            "cgroup" if host_is_cgroup2() => self.mount_cgroup2(e),
            "cgroup" => self.mount_cgroup_v1(e),
            "cgroup2" => self.mount_cgroup2(e),
            "tmpfs" => self.mount_tmpfs(e),
            _ => {
                let (dst, _) = self.mountpoint(e, false)?;
                let data = e.opts.data().map(str::to_string);
                let flags = self.initial_flags(e);
                self.mount_fs(e, &dst, &self.fs_source(e), flags, data.as_deref())?;
                Ok(())
            }
        }
    }

    fn fs_source(&self, e: &Entry) -> PathBuf {
        e.source.clone().unwrap_or_else(|| PathBuf::from(&e.typ))
    }

    fn initial_flags(&self, e: &Entry) -> c_ulong {
        if e.delays_readonly() {
            e.opts.flags & !libc::MS_RDONLY
        } else {
            e.opts.flags
        }
    }

    /// Resolve the destination inside the rootfs, creating it (an empty file when `is_file`,
    /// else directories) if missing. Returns the descriptor and whether it existed.
    fn mountpoint(&self, e: &Entry, is_file: bool) -> Result<(OwnedFd, bool), RootfsError> {
        let (fd, existed) = match open_in_root(self.root(), &e.dest, OFlag::O_PATH) {
            Ok(fd) => (fd, true),
            Err(Errno::ENOENT) => {
                let made = if is_file {
                    create_file_in_root(self.root(), &e.dest, Mode::from_bits_truncate(0o644))
                } else {
                    mkdir_all_in_root(self.root(), &e.dest, Mode::from_bits_truncate(0o755))
                };
                (
                    made.map_err(|errno| e.err("create mountpoint", errno))?,
                    false,
                )
            }
            Err(errno) => return Err(e.err("resolve mountpoint", errno)),
        };
        self.check_mountpoint(e, &fd)?;
        Ok((fd, existed))
    }

    /// The mountpoint is strictly inside the rootfs and not somewhere under `/proc`.
    fn check_mountpoint(&self, e: &Entry, fd: &OwnedFd) -> Result<(), RootfsError> {
        let real = fd_real_path(fd.as_fd()).map_err(|errno| e.err("readlink mountpoint", errno))?;
        let rel = real
            .strip_prefix(&self.root_real)
            .map_err(|_| e.invalid(format!("mountpoint {real:?} is outside of the rootfs")))?;
        if rel.as_os_str().is_empty() {
            return Err(e.invalid("mountpoint is the top of the rootfs"));
        }
        let Ok(in_proc) = rel.strip_prefix("proc") else {
            return Ok(());
        };
        if in_proc.as_os_str().is_empty() {
            // Only a fresh procfs, or a bind of a procfs, may go on /proc.
            if e.typ == "proc" {
                return Ok(());
            }
            if e.is_bind() {
                if let Some(src) = &e.source {
                    let src = self.bind_source(src);
                    if statfs(&src).map(|s| s.filesystem_type() == PROC_SUPER_MAGIC) == Ok(true) {
                        return Ok(());
                    }
                }
            }
            return Err(e.invalid("only a procfs may be mounted on /proc"));
        }
        if PROC_ALLOWED.iter().any(|a| in_proc == Path::new(a)) {
            return Ok(());
        }
        Err(e.invalid(format!(
            "{real:?} cannot be mounted because it is inside /proc"
        )))
    }

    /// Mount onto the descriptor, re-open the new mount's top and apply the propagation
    /// options. Returns the descriptor of the new mount.
    fn mount_fs(
        &self,
        e: &Entry,
        dst: &OwnedFd,
        source: &Path,
        flags: c_ulong,
        data: Option<&str>,
    ) -> Result<OwnedFd, RootfsError> {
        let target = proc_fd_path(dst.as_fd());
        let fstype = (!e.is_bind()).then_some(e.typ.as_str());
        let op = if e.is_bind() {
            format!("bind-mount {source:?}")
        } else {
            format!("mount {}", e.typ)
        };
        sys_mount(Some(source), &target, fstype, flags, data).map_err(|errno| match data {
            // Options that are no mount flag went to the filesystem: name them, the kernel
            // refuses an unknown one with a bare EINVAL.
            Some(d) if errno == Errno::EINVAL => {
                e.err(format!("{op} with filesystem options {d:?}"), errno)
            }
            _ => e.err(op, errno),
        })?;
        let new = self.reopen(e, dst)?;
        self.apply_propagation(e, &new)?;
        Ok(new)
    }

    /// A descriptor of the mount just made on `old`'s path (the old descriptor still holds
    /// the covered directory). Checked to be at the same place.
    fn reopen(&self, e: &Entry, old: &OwnedFd) -> Result<OwnedFd, RootfsError> {
        let new = open_in_root(self.root(), &e.dest, OFlag::O_PATH)
            .map_err(|errno| e.err("re-open mountpoint", errno))?;
        let (a, b) = (fd_real_path(old.as_fd()), fd_real_path(new.as_fd()));
        if a.is_err() || a != b {
            return Err(e.invalid("mountpoint moved while it was being mounted"));
        }
        Ok(new)
    }

    fn apply_propagation(&self, e: &Entry, fd: &OwnedFd) -> Result<(), RootfsError> {
        let target = proc_fd_path(fd.as_fd());
        for &p in &e.opts.propagation {
            sys_mount(None, &target, None, p, None)
                .map_err(|errno| e.err(format!("set propagation {p:#x}"), errno))?;
        }
        Ok(())
    }

    fn bind_source(&self, src: &Path) -> PathBuf {
        if src.is_absolute() {
            src.to_path_buf()
        } else {
            self.bundle.join(src)
        }
    }

    fn mount_bind(&self, e: &Entry) -> Result<(), RootfsError> {
        let src = e
            .source
            .as_deref()
            .ok_or_else(|| e.invalid("a bind mount needs a source"))?;
        let src = self.bind_source(src);
        let meta = std::fs::metadata(&src).map_err(|err| {
            e.err(
                format!("stat bind source {src:?}"),
                Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        let (dst, _) = self.mountpoint(e, !meta.is_dir())?;
        let flags = libc::MS_BIND | (e.opts.flags & libc::MS_REC);
        let new = self.mount_fs(e, &dst, &src, flags, None)?;
        // MS_BIND ignores the other flags: a remount applies them. Skipped when nothing
        // beyond bind/rbind was asked for, keeping the source's flags (runc).
        let extra = e.opts.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
        if extra != 0 || e.opts.cleared != 0 {
            self.remount_bind(e, &new, &src)?;
        }
        if let Some(attr) = e.opts.rec_attr {
            mount_setattr_recursive(new.as_fd(), attr)
                .map_err(|errno| e.err("mount_setattr", errno))?;
        }
        Ok(())
    }

    /// `MS_BIND | MS_REMOUNT` with the requested flags; when the kernel refuses (flags locked
    /// by a user namespace), retry with the source's locked flags kept, unless the user asked
    /// to clear one of them (runc's behaviour).
    fn remount_bind(&self, e: &Entry, fd: &OwnedFd, src: &Path) -> Result<(), RootfsError> {
        let target = proc_fd_path(fd.as_fd());
        let mut flags = e.opts.flags | libc::MS_BIND | libc::MS_REMOUNT;
        let Err(first) = sys_mount(None, &target, None, flags, None) else {
            return Ok(());
        };
        let st = nix::sys::statvfs::statvfs(src)
            .map_err(|errno| e.err(format!("statvfs bind source {src:?}"), errno))?;
        let src_flags = mount_options::statvfs_to_ms(st.flags().bits() as u64);
        if src_flags & e.opts.cleared & MS_LOCKABLE != 0 {
            return Err(e.err("remount bind (cannot clear locked flags)", first));
        }
        let atime = e.opts.flags & MS_ATIME_ALL;
        if atime != 0 && atime != src_flags & MS_ATIME_ALL {
            return Err(e.err("remount bind (cannot change locked atime flags)", first));
        }
        flags |= src_flags & MS_LOCKABLE;
        sys_mount(None, &target, None, flags, None).map_err(|errno| e.err("remount bind", errno))
    }

    fn mount_tmpfs(&self, e: &Entry) -> Result<(), RootfsError> {
        let (dst, existed) = self.mountpoint(e, false)?;
        let mut data = e.opts.data.clone();
        if existed {
            // Keep the mode of the directory it covers (runc); an explicit mode= wins.
            let st = fstat(&dst).map_err(|errno| e.err("stat mountpoint", errno))?;
            let mode = format!("mode={:04o}", st.st_mode & 0o7777);
            data = if data.is_empty() {
                mode
            } else {
                format!("{mode},{data}")
            };
        }
        // The covered directory stays reachable through a descriptor for tmpcopyup.
        let lower = if e.opts.tmpcopyup {
            let fd = nix::fcntl::open(
                &proc_fd_path(dst.as_fd()),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| e.err("open directory for tmpcopyup", errno))?;
            Some(fd)
        } else {
            None
        };
        let data = (!data.is_empty()).then_some(data);
        let new = self.mount_fs(
            e,
            &dst,
            &self.fs_source(e),
            self.initial_flags(e),
            data.as_deref(),
        )?;
        if let Some(lower) = lower {
            copy_tree(&proc_fd_path(lower.as_fd()), &proc_fd_path(new.as_fd()))
                .map_err(|err| e.err("tmpcopyup", io_errno(&err)))?;
        }
        Ok(())
    }

    fn mount_proc_or_sys(&self, e: &Entry) -> Result<(), RootfsError> {
        // No mounting through a symlink (or onto a file): the last component must be a
        // plain directory if it exists.
        match open_in_root(self.root(), &e.dest, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(|errno| e.err("stat mountpoint", errno))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                    return Err(e.invalid(format!(
                        "filesystem {:?} must be mounted on an ordinary directory",
                        e.typ
                    )));
                }
            }
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(e.err("resolve mountpoint", errno)),
        }
        let dst = mkdir_all_in_root(self.root(), &e.dest, Mode::from_bits_truncate(0o755))
            .map_err(|errno| e.err("create mountpoint", errno))?;
        self.check_mountpoint(e, &dst)?;
        let data = e.opts.data().map(str::to_string);
        let new = match self.mount_fs(e, &dst, &self.fs_source(e), e.opts.flags, data.as_deref()) {
            // Rootless and other user namespaces without a network namespace of their own
            // cannot mount sysfs (EPERM): bind the host's /sys instead, with the entry's
            // flags (read-only stays read-only), as runc does.
            Err(err)
                if e.typ == "sysfs" && self.in_user_ns && err.errno() == Some(Errno::EPERM) =>
            {
                tracing::debug!("{err}: bind-mounting /sys instead");
                let mut opts = e.opts.clone();
                opts.flags |= libc::MS_BIND | libc::MS_REC;
                return self.mount_bind(&Entry {
                    typ: "bind".into(),
                    source: Some(PathBuf::from("/sys")),
                    opts,
                    ..e.clone()
                });
            }
            other => other?,
        };
        let (want, name) = if e.typ == "proc" {
            (PROC_SUPER_MAGIC, "procfs")
        } else {
            (SYSFS_MAGIC, "sysfs")
        };
        let st = fstatfs(&new).map_err(|errno| e.err("statfs mountpoint", errno))?;
        if st.filesystem_type() != want {
            return Err(e.invalid(format!("the mount is not {name} after mounting it")));
        }
        Ok(())
    }

    /// `cgroup2`, falling back (EPERM/EBUSY: a user namespace without a cgroup namespace) to
    /// a bind of the host's cgroup2 mount, as runc does.
    fn mount_cgroup2(&self, e: &Entry) -> Result<(), RootfsError> {
        let (dst, _) = self.mountpoint(e, false)?;
        let data = e.opts.data().map(str::to_string);
        let src = e.source.clone().unwrap_or_else(|| PathBuf::from("cgroup2"));
        let cg2 = Entry {
            typ: "cgroup2".into(),
            ..e.clone()
        };
        match self.mount_fs(&cg2, &dst, &src, e.opts.flags, data.as_deref()) {
            Err(err) if matches!(err.errno(), Some(Errno::EPERM | Errno::EBUSY)) => {
                let Some(host) = host_cgroup2_mount() else {
                    return Err(err);
                };
                let mut opts = e.opts.clone();
                opts.flags |= libc::MS_BIND | libc::MS_REC;
                self.mount_bind(&Entry {
                    typ: "bind".into(),
                    source: Some(host),
                    opts,
                    ..e.clone()
                })
            }
            other => other.map(drop),
        }
    }

    /// cgroup v1 (runc): a tmpfs at the destination, then one directory per hierarchy —
    /// with a cgroup namespace a fresh `cgroup` mount, without one a bind of this process's
    /// own cgroup directory (the init is already in the container's cgroup). Co-mounted
    /// controllers (`cpu,cpuacct`) get symlinks per controller.
    fn mount_cgroup_v1(&self, e: &Entry) -> Result<(), RootfsError> {
        let hierarchies =
            own_cgroup_v1_dirs().map_err(|errno| e.err("read cgroup hierarchies", errno))?;
        let tmpfs = Entry {
            typ: "tmpfs".into(),
            source: Some("tmpfs".into()),
            opts: MountOptions {
                flags: DEFAULT_MOUNT_FLAGS,
                data: "mode=755".into(),
                propagation: e.opts.propagation.clone(),
                ..MountOptions::default()
            },
            ..e.clone()
        };
        self.mount_tmpfs(&tmpfs)?;
        let mut merged = Vec::new();
        for h in &hierarchies {
            let name = h.name.clone();
            if name.contains(',') {
                merged.push(name.clone());
            }
            let dest = e.dest.join(&name);
            if self.cgroupns {
                let sub = Entry {
                    dest: dest.clone(),
                    typ: "cgroup".into(),
                    ..e.clone()
                };
                let dst = mkdir_all_in_root(self.root(), &dest, Mode::from_bits_truncate(0o755))
                    .map_err(|errno| sub.err("create mountpoint", errno))?;
                let mut flags = DEFAULT_MOUNT_FLAGS | (e.opts.flags & libc::MS_RDONLY);
                flags &= !libc::MS_BIND;
                let (source, data) = if name == "systemd" {
                    ("systemd".to_string(), "none,name=systemd".to_string())
                } else {
                    ("cgroup".to_string(), name.clone())
                };
                let target = proc_fd_path(dst.as_fd());
                sys_mount(
                    Some(Path::new(&source)),
                    &target,
                    Some("cgroup"),
                    flags,
                    Some(&data),
                )
                .map_err(|errno| sub.err("mount cgroup", errno))?;
            } else {
                let mut opts = e.opts.clone();
                opts.flags |= libc::MS_BIND | libc::MS_REC;
                opts.data.clear();
                self.mount_bind(&Entry {
                    dest,
                    typ: "bind".into(),
                    source: Some(h.source.clone()),
                    opts,
                    ..e.clone()
                })?;
            }
        }
        if !merged.is_empty() {
            let dir = open_in_root(self.root(), &e.dest, OFlag::O_PATH | OFlag::O_DIRECTORY)
                .map_err(|errno| e.err("open cgroup tmpfs", errno))?;
            for m in &merged {
                for ctrl in m.split(',') {
                    match nix::unistd::symlinkat(m.as_str(), dir.as_fd(), ctrl) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(e.err(format!("symlink {ctrl} -> {m}"), errno)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A cgroup v1 hierarchy as seen by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The mount point's base name (`cpu`, `cpu,cpuacct`, `systemd`).
    pub name: String,
    /// This process's cgroup directory in that hierarchy, as a host path.
    pub source: PathBuf,
}

/// For every v1 hierarchy mounted here, this process's own cgroup directory (runc's
/// `getCgroupMounts`): the mount point joined with our path from `/proc/self/cgroup`
/// relative to the mount's root.
pub fn own_cgroup_v1_dirs() -> Result<Vec<CgroupDir>, Errno> {
    let mounts = mountinfo::read_self().map_err(|e| io_errno(&e))?;
    let cg = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| io_errno(&e))?;
    Ok(cgroup_v1_dirs(&mounts, &mountinfo::parse_cgroup(&cg)))
}

/// The pure part of [`own_cgroup_v1_dirs`].
pub fn cgroup_v1_dirs(
    mounts: &[mountinfo::MountInfo],
    cgroups: &[mountinfo::CgroupLine],
) -> Vec<CgroupDir> {
    let mut paths: HashMap<&str, &Path> = HashMap::new();
    for l in cgroups {
        for c in &l.controllers {
            paths.insert(c.as_str(), l.path.as_path());
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for m in mounts.iter().filter(|m| m.fs_type == "cgroup") {
        let Some(ctrl) = m.super_options.split(',').find(|o| paths.contains_key(o)) else {
            continue;
        };
        // A hierarchy mounted twice (or bind-mounted) is used once.
        if seen.contains(&ctrl) {
            continue;
        }
        seen.push(ctrl);
        let Some(name) = m.mount_point.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let own = paths[ctrl];
        let source = match own.strip_prefix(&m.root) {
            Ok(rel) => m.mount_point.join(rel),
            Err(_) => m.mount_point.clone(),
        };
        out.push(CgroupDir {
            name: name.to_string(),
            source,
        });
    }
    out
}

fn has_namespace(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == t))
}

/// The host runs cgroup v2 only (`/sys/fs/cgroup` is cgroup2).
fn host_is_cgroup2() -> bool {
    statfs("/sys/fs/cgroup").is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
}

/// Where the host's cgroup2 hierarchy is mounted (`/sys/fs/cgroup`, or `unified` on hybrid).
fn host_cgroup2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| statfs(p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
}

pub(crate) fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr)`: the recursive `r*` options.
pub fn mount_setattr_recursive(fd: BorrowedFd<'_>, attr: RecAttr) -> Result<(), Errno> {
    let ma = MountAttr {
        attr_set: attr.set,
        attr_clr: attr.clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: the path is a NUL-terminated empty string, `ma` is a fully initialised
    // `mount_attr` whose size is passed; the kernel only reads them during the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &ma as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Copy a directory tree (files, directories, symlinks, with modes and owners) for
/// `tmpcopyup`. Symlinks are copied, never followed.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        } else {
            // Device nodes, fifos and sockets are not copied.
            continue;
        }
        lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mountinfo::{parse, parse_cgroup};

    #[test]
    fn cgroup_dirs_from_mountinfo() {
        let mi = parse(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             99 31 0:32 /x /mnt/memory rw,relatime - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        let cg = parse_cgroup("9:name=systemd:/\n4:memory:/c/1\n2:cpu,cpuacct:/c/1\n0::/\n");
        let dirs = cgroup_v1_dirs(&mi, &cg);
        assert_eq!(
            dirs,
            vec![
                CgroupDir {
                    name: "cpu,cpuacct".into(),
                    source: "/sys/fs/cgroup/cpu,cpuacct/c/1".into()
                },
                CgroupDir {
                    name: "memory".into(),
                    source: "/sys/fs/cgroup/memory/c/1".into()
                },
                CgroupDir {
                    name: "systemd".into(),
                    source: "/sys/fs/cgroup/systemd".into()
                },
            ]
        );
    }

    #[test]
    fn entry_from_spec() {
        let m: Mount = serde_json::from_str(
            r#"{"destination":"/data","type":"none","source":"./d","options":["rbind","ro","rprivate"]}"#,
        )
        .unwrap();
        let e = Entry::from_spec(4, &m);
        assert_eq!(e.typ, "bind");
        assert!(e.opts.is_rec());
        assert_eq!(e.opts.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        let m: Mount =
            serde_json::from_str(r#"{"destination":"/x","type":"bind","source":"/s"}"#).unwrap();
        assert_eq!(Entry::from_spec(0, &m).typ, "bind");
        let m: Mount = serde_json::from_str(
            r#"{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["ro"]}"#,
        )
        .unwrap();
        let e = Entry::from_spec(3, &m);
        assert!(e.delays_readonly());
        let err = e.err("mount tmpfs", Errno::EPERM);
        assert_eq!(
            err.to_string(),
            "mounts[3]: mount tmpfs on \"/dev\": EPERM: Operation not permitted"
        );
    }
}
