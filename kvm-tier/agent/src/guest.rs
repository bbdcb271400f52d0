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
