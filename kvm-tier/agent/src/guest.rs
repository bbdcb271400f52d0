//! What only PID 1 in the micro-VM does: the boot steps before serving, and powering off.
//! Not exercised by `cargo test`; kept to plain syscalls in order.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Kernel command line parameters the agent reads (`hull.<name>=<value>`).
pub struct BootConfig {
    /// virtio-fs tag of the container's root filesystem.
    pub root_tag: String,
    /// Where that share is mounted; the workload's root (entered with chroot per process).
    pub root_dir: String,
    pub port: u32,
    pub debug: bool,
}

impl BootConfig {
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut c = BootConfig {
            root_tag: "hull-root".into(),
            root_dir: "/run/hull/root".into(),
            port: hull_agent_protocol::AGENT_VSOCK_PORT,
            debug: false,
        };
        for word in cmdline.split_whitespace() {
            match word.split_once('=') {
                Some(("hull.root_tag", v)) => c.root_tag = v.into(),
                Some(("hull.port", v)) => c.port = v.parse().unwrap_or(c.port),
                _ if word == "hull.debug" => c.debug = true,
                _ => {}
            }
        }
        c
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: String,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    File { path: String, source: io::Error },
    #[error("loading module {module}: {source}")]
    Module { module: String, source: io::Error },
}

fn c(s: &str) -> CString {
    // Only called with literals and paths read from our own config, which have no NUL;
    // an empty string makes the syscall fail cleanly instead.
    CString::new(s).unwrap_or_default()
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), GuestError> {
    let err = |source| GuestError::Mount {
        what: format!("{fstype} ({src})"),
        target: target.into(),
        source,
    };
    std::fs::create_dir_all(target).map_err(err)?;
    let (s, t, f, d) = (c(src), c(target), c(fstype), c(data));
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // Already mounted (e.g. the kernel's devtmpfs automount) is fine.
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(err(e));
        }
    }
    Ok(())
}

/// Marks the tmpfs root [`leave_initramfs`] made, so the re-executed agent goes on booting.
const MOVED_MARKER: &str = "/.hull-agent-moved";

/// The kernel refuses `pivot_root` away from the initramfs (the rootfs mount), so a
/// container in the guest could only be entered with `MS_MOVE` + `chroot`. PID 1 therefore
/// moves itself first, as `switch_root` does: the initramfs contents are copied to a tmpfs,
/// deleted from the initramfs (freeing its memory), the tmpfs is moved over `/`, and
/// `/init` is executed again there. Returns once running from the tmpfs.
pub fn leave_initramfs() -> Result<(), GuestError> {
    if Path::new(MOVED_MARKER).exists() {
        return Ok(());
    }
    let file_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| GuestError::File { path, source }
    };
    let new = Path::new("/newroot");
    mount("tmpfs", "/newroot", "tmpfs", libc::MS_NOSUID, "mode=0755")?;
    let root_dev = std::fs::symlink_metadata("/").map_err(file_err(Path::new("/")))?;
    for entry in std::fs::read_dir("/").map_err(file_err(Path::new("/")))? {
        let entry = entry.map_err(file_err(Path::new("/")))?;
        let path = entry.path();
        if path == new {
            continue;
        }
        copy_tree(&path, &new.join(entry.file_name()), &root_dev)?;
    }
    std::fs::write(new.join(MOVED_MARKER.trim_start_matches('/')), b"")
        .map_err(file_err(Path::new(MOVED_MARKER)))?;
    for entry in std::fs::read_dir("/")
        .map_err(file_err(Path::new("/")))?
        .flatten()
    {
        let path = entry.path();
        if path != new {
            remove_tree(&path, &root_dev);
        }
    }
    let (dot, slash) = (c("."), c("/"));
    // SAFETY: chdir/mount/chroot with NUL-terminated literals that outlive the calls.
    unsafe {
        if libc::chdir(c("/newroot").as_ptr()) != 0
            || libc::mount(
                dot.as_ptr(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            ) != 0
            || libc::chroot(dot.as_ptr()) != 0
            || libc::chdir(slash.as_ptr()) != 0
        {
            return Err(GuestError::Mount {
                what: "the tmpfs root".into(),
                target: "/".into(),
                source: io::Error::last_os_error(),
            });
        }
    }
    let init = c("/init");
    let argv = [init.as_ptr(), std::ptr::null()];
    // SAFETY: a NUL-terminated path and a NULL-terminated argv of it; execv only returns
    // on failure.
    unsafe { libc::execv(init.as_ptr(), argv.as_ptr()) };
    Err(GuestError::File {
        path: "/init".into(),
        source: io::Error::last_os_error(),
    })
}

/// Copies `src` (file, directory or symlink, on the initramfs only) to `dst`, modes kept.
fn copy_tree(src: &Path, dst: &Path, root: &std::fs::Metadata) -> Result<(), GuestError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let err = |source| GuestError::File {
        path: src.display().to_string(),
        source,
    };
    let meta = std::fs::symlink_metadata(src).map_err(err)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(err)?;
        return std::os::unix::fs::symlink(target, dst).map_err(err);
    }
    if ft.is_dir() {
        std::fs::create_dir_all(dst).map_err(err)?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(err)?;
        // A mount (the kernel's devtmpfs on /dev) is not the initramfs: only its directory.
        if meta.dev() != root.dev() {
            return Ok(());
        }
        for entry in std::fs::read_dir(src).map_err(err)? {
            let entry = entry.map_err(err)?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()), root)?;
        }
        return Ok(());
    }
    if ft.is_file() {
        std::fs::copy(src, dst).map_err(err)?;
    }
    Ok(())
}

/// Deletes `path` from the initramfs (not descending into mounts); errors are ignored:
/// what stays only costs memory.
fn remove_tree(path: &Path, root: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        if meta.dev() != root.dev() {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                remove_tree(&e.path(), root);
            }
        }
        let _ = std::fs::remove_dir(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Mount the pseudo filesystems every process expects.
pub fn mount_basics() -> Result<(), GuestError> {
    let plain = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", plain, "")?;
    mount("sysfs", "/sys", "sysfs", plain, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    // Terminal sessions open /dev/ptmx, which needs a devpts at /dev/pts.
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "ptmxmode=0666,mode=0620",
    )?;
    Ok(())
}

/// Load the modules of the guest image: `dir/order` names the module files in `dir`, one
/// per line, dependencies first (`hull vm-image build` computes the order).
pub fn load_modules(dir: &Path) -> Result<(), GuestError> {
    let order = dir.join("order");
    let list = match std::fs::read_to_string(&order) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(GuestError::File {
                path: order.display().to_string(),
                source,
            })
        }
    };
    for name in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        finit_module(&dir.join(name))?;
    }
    Ok(())
}

fn finit_module(path: &Path) -> Result<(), GuestError> {
    let err = |source| GuestError::Module {
        module: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(err)?;
    // SAFETY: finit_module with an open fd and an empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), c"".as_ptr(), 0) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(err(e));
        }
    }
    Ok(())
}

/// Mount the container's root filesystem shared in over virtio-fs.
pub fn mount_root(cfg: &BootConfig) -> Result<(), GuestError> {
    mount(&cfg.root_tag, &cfg.root_dir, "virtiofs", 0, "")
}

/// Flush and power the VM off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot(POWER_OFF) does not return on success.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot failed (not PID 1 / no CAP_SYS_BOOT): nothing sensible is left to do.
    std::process::abort()
}
