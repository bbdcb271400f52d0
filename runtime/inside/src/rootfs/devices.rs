//! `/dev` of the container: default device nodes, `linux.devices`, symlinks, `/dev/ptmx`.

use super::resolve::{
    clean_relative, create_file_at, mkdir_all_in_root, proc_fd_path, split_parent,
};
use super::{sys_mount, RootfsError};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets (runc's default set), 0666 and owned by root.
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DeviceNode {
        path: path.into(),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// `linux.devices[index]` as a node to make; errors name that field.
fn convert(index: usize, d: &LinuxDevice) -> Result<DeviceNode, RootfsError> {
    let bad =
        |what: &str| RootfsError::Other(format!("linux.devices[{index}] ({:?}): {what}", d.path()));
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(bad("type \"a\" is not a device type")),
    };
    let major = u64::try_from(d.major()).map_err(|_| bad("negative major"))?;
    let minor = u64::try_from(d.minor()).map_err(|_| bad("negative minor"))?;
    if !d.path().is_absolute() {
        return Err(bad("the path is not absolute"));
    }
    Ok(DeviceNode {
        path: d.path().clone(),
        kind,
        major,
        minor,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// `linux.devices` followed by the defaults it does not override; `/dev/ptmx` is left out
/// (it becomes a symlink to `pts/ptmx`).
pub fn devices_of(spec: &Spec) -> Result<Vec<DeviceNode>, RootfsError> {
    let mut out = Vec::new();
    for (i, d) in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.push(convert(i, d)?);
    }
    for d in default_devices() {
        if !out
            .iter()
            .any(|o| clean_relative(&o.path) == clean_relative(&d.path))
        {
            out.push(d);
        }
    }
    out.retain(|d| clean_relative(&d.path) != Path::new("dev/ptmx"));
    Ok(out)
}

/// `/dev` is set up unless a bind mount provides it (runc's rule).
pub fn needs_setup(spec: &Spec) -> bool {
    !spec.mounts().iter().flatten().any(|m| {
        let e = super::mounts::Entry::from_spec(0, m);
        e.typ == "bind" && clean_relative(&e.dest) == Path::new("dev")
    })
}

/// Whether this process runs in a user namespace other than the initial one.
pub fn running_in_user_ns() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(s) => {
            let f: Vec<&str> = s.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Create the device nodes, the `/dev` symlinks and `/dev/ptmx` inside `root`.
pub fn setup(root: BorrowedFd<'_>, spec: &Spec, in_user_ns: bool) -> Result<(), RootfsError> {
    let bind = in_user_ns || running_in_user_ns();
    for d in devices_of(spec)? {
        create_device(root, &d, bind)?;
    }
    let dev = mkdir_all_in_root(root, Path::new("/dev"), Mode::from_bits_truncate(0o755))
        .map_err(|e| RootfsError::sys("create", "/dev", e))?;
    setup_ptmx(dev.as_fd())?;
    setup_symlinks(dev.as_fd())
}

fn dev_err(d: &DeviceNode, op: &str, errno: Errno) -> RootfsError {
    RootfsError::Device {
        path: d.path.clone(),
        op: op.into(),
        errno,
    }
}

/// mknod the node (or, in a user namespace, where mknod is refused, bind the host's node
/// onto an empty file), then fix its mode and owner.
pub fn create_device(root: BorrowedFd<'_>, d: &DeviceNode, bind: bool) -> Result<(), RootfsError> {
    let (parent, name) = split_parent(&d.path).ok_or_else(|| dev_err(d, "path", Errno::EINVAL))?;
    let dir = mkdir_all_in_root(root, &parent, Mode::from_bits_truncate(0o755))
        .map_err(|e| dev_err(d, "create parent directory", e))?;
    if bind {
        return bind_device(dir.as_fd(), &name, d);
    }
    let dev = makedev(d.major, d.minor);
    let perm = Mode::from_bits_truncate(d.mode);
    match mknodat(dir.as_fd(), name.as_os_str(), d.kind, perm, dev) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(Errno::EPERM) => return bind_device(dir.as_fd(), &name, d),
        Err(e) => return Err(dev_err(d, "mknod", e)),
    }
    let fd = openat(
        dir.as_fd(),
        name.as_os_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| dev_err(d, "open new node", e))?;
    let st = fstat(&fd).map_err(|e| dev_err(d, "stat new node", e))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != d.kind
        || (d.kind != SFlag::S_IFIFO && st.st_rdev != dev)
    {
        return Err(dev_err(
            d,
            "new node has the wrong type or number",
            Errno::EEXIST,
        ));
    }
    // The umask applied to mknod: set the exact mode through the descriptor.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &proc_fd_path(fd.as_fd()),
        perm,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| dev_err(d, "chmod", e))?;
    fchownat(
        fd.as_fd(),
        "",
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| dev_err(d, "chown", e))
}

fn bind_device(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    d: &DeviceNode,
) -> Result<(), RootfsError> {
    let fd = create_file_at(dir, name, Mode::empty())
        .map_err(|e| dev_err(d, "create bind target", e))?;
    sys_mount(
        Some(d.path.as_path()),
        &proc_fd_path(fd.as_fd()),
        None,
        libc::MS_BIND,
        None,
    )
    .map_err(|e| dev_err(d, "bind-mount host device", e))
}

fn setup_ptmx(dev: BorrowedFd<'_>) -> Result<(), RootfsError> {
    match unlinkat(dev, "ptmx", UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(RootfsError::sys("unlink", "/dev/ptmx", e)),
    }
    symlinkat("pts/ptmx", dev, "ptmx").map_err(|e| RootfsError::sys("symlink", "/dev/ptmx", e))
}

fn setup_symlinks(dev: BorrowedFd<'_>) -> Result<(), RootfsError> {
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        match symlinkat(target, dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(RootfsError::sys("symlink", Path::new("/dev").join(name), e)),
        }
    }
    Ok(())
}

fn is_dev_null(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
        && st.st_rdev == makedev(1, 3)
}

/// Open the container's `/dev/null` (after pivot), checked to be the real 1:3 node.
pub fn open_dev_null(flags: OFlag) -> Result<OwnedFd, RootfsError> {
    let p = Path::new("/dev/null");
    let fd = nix::fcntl::open(p, flags | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| RootfsError::sys("open", p, e))?;
    let st = fstat(&fd).map_err(|e| RootfsError::sys("stat", p, e))?;
    if !is_dev_null(&st) {
        return Err(RootfsError::sys(
            "the container's /dev/null is not a 1:3 device",
            p,
            Errno::EINVAL,
        ));
    }
    Ok(fd)
}

/// stdio that points at the host's `/dev/null` is re-pointed at the container's (runc).
pub fn reopen_dev_null() -> Result<(), RootfsError> {
    let null = open_dev_null(OFlag::O_RDWR)?;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    type Dup = fn(BorrowedFd<'_>) -> nix::Result<()>;
    let stdio: [(BorrowedFd<'_>, Dup); 3] = [
        (stdin.as_fd(), |fd| nix::unistd::dup2_stdin(fd)),
        (stdout.as_fd(), |fd| nix::unistd::dup2_stdout(fd)),
        (stderr.as_fd(), |fd| nix::unistd::dup2_stderr(fd)),
    ];
    for (n, (fd, dup)) in stdio.into_iter().enumerate() {
        let Ok(st) = fstat(fd) else { continue };
        if is_dev_null(&st) {
            dup(null.as_fd())
                .map_err(|e| RootfsError::sys("dup /dev/null onto", format!("fd {n}"), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_devices_override_defaults() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"devices":[
                {"path":"/dev/null","type":"c","major":1,"minor":3,"fileMode":384,"uid":5,"gid":6},
                {"path":"/dev/fuse","type":"c","major":10,"minor":229},
                {"path":"/dev/ptmx","type":"c","major":5,"minor":2},
                {"path":"/dev/loop0","type":"b","major":7,"minor":0}
            ]}}"#,
        )
        .unwrap();
        let d = devices_of(&spec).unwrap();
        let paths: Vec<_> = d.iter().map(|d| d.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            vec![
                "/dev/null",
                "/dev/fuse",
                "/dev/loop0",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        assert_eq!((d[0].mode, d[0].uid, d[0].gid), (0o600, 5, 6));
        assert_eq!((d[1].mode, d[1].kind), (0o666, SFlag::S_IFCHR));
        assert_eq!(d[2].kind, SFlag::S_IFBLK);
        let bad: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"devices":[{"path":"/dev/x","type":"c","major":-1,"minor":0}]}}"#,
        )
        .unwrap();
        let err = devices_of(&bad).unwrap_err().to_string();
        assert!(err.contains("linux.devices[0] (\"/dev/x\")"), "{err}");
    }

    #[test]
    fn dev_bind_mount_skips_setup() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","mounts":[{"destination":"/dev/","type":"bind","source":"/dev","options":["rbind"]}]}"#,
        )
        .unwrap();
        assert!(!needs_setup(&spec));
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","mounts":[{"destination":"/dev","type":"tmpfs","source":"tmpfs"}]}"#,
        )
        .unwrap();
        assert!(needs_setup(&spec));
    }
}
