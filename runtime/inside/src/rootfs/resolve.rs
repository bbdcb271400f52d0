//! Resolving container paths inside the rootfs by descriptor.
//!
//! Every path of the container (mount destinations, device nodes, masked paths) is looked up
//! relative to an `O_PATH` descriptor of the rootfs, with symlinks (absolute ones and `..`)
//! kept inside it: `openat2(2)` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, or, on
//! kernels without `openat2`, a component-by-component `O_NOFOLLOW` walk that expands
//! symlinks itself. Missing directories are created with `mkdirat` relative to their parent's
//! descriptor, and the mount target handed to `mount(2)` is `/proc/self/fd/<fd>`, so a symlink
//! swapped in by the rootfs can never redirect a mount onto the host.

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Symlinks followed in one lookup before giving up with `ELOOP` (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Set once `openat2` answered `ENOSYS`, so later lookups go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `struct open_how` of `<linux/openat2.h>`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)` (raw syscall) resolving `path` with `dirfd` as the root.
pub(crate) fn sys_openat2(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    flags: u64,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow {
        flags,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a fully initialised `open_how` whose size
    // is passed along; both outlive the call. The kernel only reads them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: on success the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// The path as normal components, `.` dropped; `..` kept (resolution handles it).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// `path` made relative (leading `/` dropped, lexically cleaned, `..` never above the root);
/// `"."` for the root itself. This is what a container path means inside the rootfs.
pub fn clean_relative(path: &Path) -> PathBuf {
    let mut out: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

fn cstring(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/<fd>`: the magic link through which `mount(2)` reaches exactly the inode
/// the descriptor holds.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The path the kernel reports for a descriptor (`readlink /proc/self/fd/<fd>`).
pub fn fd_real_path(fd: BorrowedFd<'_>) -> Result<PathBuf, Errno> {
    std::fs::read_link(proc_fd_path(fd))
        .map_err(|e| e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO))
}

/// Open `path` (a container path) inside the tree of `root`. `flags` are `open(2)` flags;
/// `O_CLOEXEC` is always added. Symlinks resolve as if `root` were `/`; magic links fail.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let rel = clean_relative_keep_dotdot(path);
    let flags = flags | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let c = cstring(&rel)?;
        let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let mut tries = 0;
        loop {
            // Valid `open(2)` flags are non-negative; the cast keeps the bit pattern.
            match sys_openat2(root, &c, flags.bits() as u64, resolve) {
                // EAGAIN: a concurrent rename raced the lookup; retry a few times.
                Err(Errno::EAGAIN) if tries < 16 => tries += 1,
                Err(Errno::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    break;
                }
                other => return other,
            }
        }
    }
    walk_in_root(root, &rel, flags)
}

/// The path relative to the root with `.` dropped but `..` kept for the resolver (a `..`
/// after a symlink must apply to the symlink's target, not lexically).
fn clean_relative_keep_dotdot(path: &Path) -> PathBuf {
    let comps = components(path);
    if comps.is_empty() {
        PathBuf::from(".")
    } else {
        comps.iter().collect()
    }
}

/// How a walk treats missing components.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    Fail,
    /// Create missing directories with this mode.
    Mkdir(Mode),
}

/// The fallback resolver: one `openat(O_PATH | O_NOFOLLOW)` per component, symlinks expanded
/// by hand and re-rooted at `root`, `..` never climbing above it.
pub fn walk_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let fd = walk(root, path, flags.contains(OFlag::O_NOFOLLOW), Missing::Fail)?;
    finish_open(fd, flags)
}

/// Turn the `O_PATH` result of a walk into what the caller asked for.
fn finish_open(fd: OwnedFd, flags: OFlag) -> Result<OwnedFd, Errno> {
    if flags.contains(OFlag::O_DIRECTORY) {
        let st = fstat(&fd)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
    }
    if flags.contains(OFlag::O_PATH) {
        return Ok(fd);
    }
    // Re-open the resolved inode with the real flags; the magic link is the inode itself.
    let reopen = flags & !(OFlag::O_NOFOLLOW | OFlag::O_CREAT | OFlag::O_EXCL);
    nix::fcntl::open(&proc_fd_path(fd.as_fd()), reopen, Mode::empty())
}

fn dup_dir(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    openat(
        fd,
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn is_type(fd: &OwnedFd, t: SFlag) -> Result<bool, Errno> {
    let st = fstat(fd)?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == t)
}

fn walk(
    root: BorrowedFd<'_>,
    path: &Path,
    nofollow_last: bool,
    missing: Missing,
) -> Result<OwnedFd, Errno> {
    // `stack` holds the directories from the root down to the current one, so `..` is a pop.
    let mut stack: Vec<OwnedFd> = vec![dup_dir(root)?];
    let mut todo = components(path);
    let mut links = 0usize;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let cur = stack.last().ok_or(Errno::EINVAL)?;
        let o_path = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(cur, name.as_os_str(), o_path, Mode::empty()) {
            Err(Errno::ENOENT) => match missing {
                Missing::Fail => return Err(Errno::ENOENT),
                Missing::Mkdir(mode) => {
                    match mkdirat(cur, name.as_os_str(), mode) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    openat(cur, name.as_os_str(), o_path, Mode::empty())?
                }
            },
            other => other?,
        };
        let last = todo.is_empty();
        if is_type(&fd, SFlag::S_IFLNK)? {
            if last && nofollow_last {
                stack.push(fd);
                break;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(&fd, "")?;
            let target = Path::new(&target);
            if target.is_absolute() {
                stack.truncate(1);
            }
            for c in components(target).into_iter().rev() {
                todo.push_front(c);
            }
            continue;
        }
        if !last && !is_type(&fd, SFlag::S_IFDIR)? {
            return Err(Errno::ENOTDIR);
        }
        stack.push(fd);
    }
    stack.pop().ok_or(Errno::EINVAL)
}

/// Open the directory `path` inside `root`, creating missing components (mode `mode`, less
/// the umask) one `mkdirat` at a time relative to their parent. Symlinks on the way are
/// followed inside the root, so a dangling `evil -> /host/dir` creates `<root>/host/dir`.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path, mode: Mode) -> Result<OwnedFd, Errno> {
    match open_in_root(root, path, OFlag::O_PATH | OFlag::O_DIRECTORY) {
        Err(Errno::ENOENT) => {}
        other => return other,
    }
    let fd = walk(root, path, false, Missing::Mkdir(mode))?;
    finish_open(fd, OFlag::O_PATH | OFlag::O_DIRECTORY)
}

/// Split a container path into its parent directory and final name (`None` for the root).
pub fn split_parent(path: &Path) -> Option<(PathBuf, OsString)> {
    let clean = clean_relative(path);
    let name = clean.file_name()?.to_os_string();
    let parent = clean.parent().map(Path::to_path_buf).unwrap_or_default();
    Some((parent, name))
}

/// Create (or, if it exists, open) the regular file `path` inside `root`, parents included.
/// A dangling symlink in the last component is followed inside the root (like the
/// directories of [`mkdir_all_in_root`]). Returns an `O_PATH` descriptor of whatever is there
/// afterwards.
pub fn create_file_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let mut path = path.to_path_buf();
    for _ in 0..=MAX_SYMLINKS {
        let mut comps = components(&path);
        let name = match comps.pop_back() {
            Some(n) if n != ".." => n,
            _ => return Err(Errno::EISDIR),
        };
        let parent: PathBuf = comps.iter().collect();
        let dir = mkdir_all_in_root(root, &parent, Mode::from_bits_truncate(0o755))?;
        match create_file_at(dir.as_fd(), &name, mode) {
            Err(Errno::ELOOP) => {
                let target = readlinkat(dir.as_fd(), name.as_os_str())?;
                let target = Path::new(&target);
                path = if target.is_absolute() {
                    target.to_path_buf()
                } else {
                    parent.join(target)
                };
            }
            other => return other,
        }
    }
    Err(Errno::ELOOP)
}

/// Create the file `name` in `dir` unless something is already there; `O_PATH` result.
/// `ELOOP` if `name` is a symlink.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr, mode: Mode) -> Result<OwnedFd, Errno> {
    let create = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(dir, name, create | OFlag::O_RDONLY, mode) {
        Ok(fd) => Ok(fd),
        Err(Errno::EEXIST) => {
            let fd = openat(
                dir,
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            if is_type(&fd, SFlag::S_IFLNK)? {
                return Err(Errno::ELOOP);
            }
            Ok(fd)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn open_dir(p: &Path) -> OwnedFd {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open dir")
    }

    fn real(fd: &OwnedFd) -> PathBuf {
        fd_real_path(fd.as_fd()).expect("readlink")
    }

    /// A tree with escaping symlinks, used by both resolvers.
    fn tree() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let host = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        let r = std::fs::canonicalize(root.path()).expect("canon");
        std::fs::create_dir_all(r.join("a/b")).expect("mkdir");
        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        std::fs::write(r.join("a/b/f"), b"x").expect("write");
        symlink(host.path(), r.join("abs")).expect("symlink");
        symlink("../../../../../..", r.join("a/up")).expect("symlink");
        symlink("/a/b", r.join("etc/ab")).expect("symlink");
        symlink("loop2", r.join("loop1")).expect("symlink");
        symlink("loop1", r.join("loop2")).expect("symlink");
        (host, root, r)
    }

    fn check_resolver(resolve: &dyn Fn(BorrowedFd<'_>, &Path, OFlag) -> Result<OwnedFd, Errno>) {
        let (host, _root, r) = tree();
        let rootfd = open_dir(&r);
        let root = rootfd.as_fd();
        let p = OFlag::O_PATH;
        // Plain lookups and `..` clamped at the root.
        assert_eq!(
            real(&resolve(root, Path::new("/a/b/f"), p).unwrap()),
            r.join("a/b/f")
        );
        assert_eq!(
            real(&resolve(root, Path::new("../../a/b"), p).unwrap()),
            r.join("a/b")
        );
        // An absolute symlink to the host resolves inside the root (and is missing there).
        assert_eq!(
            resolve(root, Path::new("abs"), p).unwrap_err(),
            Errno::ENOENT
        );
        // `..` through a symlink stays inside.
        assert_eq!(
            real(&resolve(root, Path::new("a/up/etc"), p).unwrap()),
            r.join("etc")
        );
        assert_eq!(
            real(&resolve(root, Path::new("etc/ab/f"), p).unwrap()),
            r.join("a/b/f")
        );
        assert_eq!(
            real(&resolve(root, Path::new("etc/ab/.."), p).unwrap()),
            r.join("a")
        );
        // O_NOFOLLOW returns the final symlink itself.
        let l = resolve(root, Path::new("etc/ab"), p | OFlag::O_NOFOLLOW).unwrap();
        assert!(is_type(&l, SFlag::S_IFLNK).unwrap());
        assert_eq!(
            resolve(root, Path::new("loop1"), p).unwrap_err(),
            Errno::ELOOP
        );
        assert_eq!(
            resolve(root, Path::new("a/b/f/x"), p).unwrap_err(),
            Errno::ENOTDIR
        );
        assert_eq!(
            resolve(root, Path::new("a/b/f"), p | OFlag::O_DIRECTORY).unwrap_err(),
            Errno::ENOTDIR
        );
        assert_eq!(real(&resolve(root, Path::new("/"), p).unwrap()), r);
        drop(host);
    }

    #[test]
    fn openat2_resolver_stays_in_root() {
        check_resolver(&|root, path, flags| open_in_root(root, path, flags));
    }

    #[test]
    fn fallback_walk_stays_in_root() {
        check_resolver(&|root, path, flags| walk_in_root(root, path, flags | OFlag::O_CLOEXEC));
    }

    #[test]
    fn walk_reopens_with_real_flags() {
        let (_host, _root, r) = tree();
        let rootfd = open_dir(&r);
        let fd = walk_in_root(rootfd.as_fd(), Path::new("etc/ab/f"), OFlag::O_RDONLY).unwrap();
        let mut s = String::new();
        use std::io::Read;
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "x");
    }

    #[test]
    fn mkdir_all_follows_symlinks_inside_root() {
        let (host, _root, r) = tree();
        let rootfd = open_dir(&r);
        let mode = Mode::from_bits_truncate(0o755);
        // `abs` points at the host dir: the directories are made inside the root.
        let fd = mkdir_all_in_root(rootfd.as_fd(), Path::new("/abs/x/y"), mode).unwrap();
        let rel = host.path().strip_prefix("/").unwrap();
        assert_eq!(real(&fd), r.join(rel).join("x/y"));
        assert!(!host.path().join("x").exists());
        // Existing paths are just opened.
        let fd = mkdir_all_in_root(rootfd.as_fd(), Path::new("a/b"), mode).unwrap();
        assert_eq!(real(&fd), r.join("a/b"));
        // A file on the way is an error.
        assert_eq!(
            mkdir_all_in_root(rootfd.as_fd(), Path::new("a/b/f/g"), mode).unwrap_err(),
            Errno::ENOTDIR
        );
        let f = create_file_in_root(
            rootfd.as_fd(),
            Path::new("/new/dir/file"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(real(&f), r.join("new/dir/file"));
        assert!(r.join("new/dir/file").is_file());
        // A dangling symlink as the file is followed inside the root.
        symlink("/etc/hostname", r.join("lnk")).unwrap();
        let f = create_file_in_root(
            rootfd.as_fd(),
            Path::new("/lnk"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert_eq!(real(&f), r.join("etc/hostname"));
        symlink("../../x/../abs", r.join("etc/rel")).unwrap();
        let f = create_file_in_root(
            rootfd.as_fd(),
            Path::new("/etc/rel"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let rel = host.path().strip_prefix("/").unwrap();
        assert_eq!(real(&f), r.join(rel));
        assert!(std::fs::read_dir(host.path()).unwrap().next().is_none());
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(
            clean_relative(Path::new("/../a/./b/../c")),
            PathBuf::from("a/c")
        );
        assert_eq!(clean_relative(Path::new("dev/")), PathBuf::from("dev"));
        let (parent, name) = split_parent(Path::new("/dev/net/tun")).unwrap();
        assert_eq!(
            (parent, name),
            (PathBuf::from("dev/net"), OsString::from("tun"))
        );
        let (parent, name) = split_parent(Path::new("/dev")).unwrap();
        assert_eq!((parent, name), (PathBuf::new(), OsString::from("dev")));
        assert!(split_parent(Path::new("/")).is_none());
    }
}
