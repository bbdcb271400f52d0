//! An honest `/proc` inside partitions: Debian's `lxcfs` (a FUSE filesystem that answers
//! reads of `meminfo`, `cpuinfo`, `stat`, `uptime`, `loadavg`, `diskstats` and `swaps`
//! from the reading process's cgroup limits), bind-mounted over those files. One lxcfs
//! serves the whole host at its Debian location `/var/lib/lxcfs`: a running one (Debian's
//! lxcfs.service) is used; otherwise the first partition to start launches it, and it stays
//! as a host service (stopping it would break every partition's `/proc` files).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{io, Error};

/// Where lxcfs is mounted.
pub const MOUNTPOINT: &str = "/var/lib/lxcfs";

/// The `/proc` files lxcfs virtualizes, bound over the partition's own.
pub const PROC_FILES: [&str; 7] = [
    "meminfo",
    "cpuinfo",
    "stat",
    "uptime",
    "loadavg",
    "diskstats",
    "swaps",
];

/// Whether an lxcfs is mounted at `dir` (`/proc/self/mountinfo` names its type
/// `fuse.lxcfs`).
pub fn mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines().any(|l| {
        let mut f = l.split(" - ");
        let (Some(left), Some(right)) = (f.next(), f.next()) else {
            return false;
        };
        left.split(' ').nth(4) == Some(want.as_ref()) && right.starts_with("fuse.lxcfs ")
    })
}

/// Whether the lxcfs at `dir` answers: a FUSE mount whose daemon died stays in the mount
/// table, but every access to it fails with ENOTCONN.
pub fn serving(dir: &Path) -> bool {
    mounted(dir) && std::fs::read(dir.join("proc/uptime")).is_ok()
}

/// The lxcfs mount point, started now if no lxcfs serves it. Errors name what is missing
/// (the program, /dev/fuse).
pub fn ensure() -> Result<PathBuf, Error> {
    let dir = PathBuf::from(MOUNTPOINT);
    ensure_at(&dir, Path::new(PIDFILE))?;
    Ok(dir)
}

/// Where the lxcfs hull starts keeps its pid (lxcfs locks it: a second one refuses to run).
pub const PIDFILE: &str = "/run/hull-lxcfs.pid";

/// [`ensure`] for any mount point and pid file (tests use their own).
pub fn ensure_at(dir: &Path, pidfile: &Path) -> Result<(), Error> {
    if serving(dir) {
        return Ok(());
    }
    if mounted(dir) {
        // Its daemon died (killed, crashed, or started by a package script in a session
        // that has ended): binding its files would give partitions the host's figures or
        // ENOTCONN. Detach the dead mount and start a new one.
        tracing::warn!("lxcfs on {} no longer answers: remounting", dir.display());
        nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(|e| Error::Tool {
            program: "lxcfs".into(),
            detail: format!("unmounting the dead lxcfs on {}: {e}", dir.display()),
        })?;
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Tool {
            program: "lxcfs".into(),
            detail: "/dev/fuse is missing (the fuse kernel module)".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let t0 = Instant::now();
    let deadline = Duration::from_secs(10);
    let mut child = spawn(dir, pidfile)?;
    while !serving(dir) {
        if let Ok(Some(st)) = child.try_wait() {
            if !serving(dir) {
                // An lxcfs that is shutting down (SIGTERM: it unmounts, then exits) still
                // holds the pid file's lock for a moment, and the new one exits: try again
                // until the deadline.
                if t0.elapsed() > deadline {
                    return Err(Error::Tool {
                        program: "lxcfs".into(),
                        detail: format!("exited with {st} (see /var/log/hull-lxcfs.log)"),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
                child = spawn(dir, pidfile)?;
                continue;
            }
        }
        if t0.elapsed() > deadline {
            return Err(Error::Tool {
                program: "lxcfs".into(),
                detail: format!(
                    "{} not mounted after 10 s (see /var/log/hull-lxcfs.log)",
                    dir.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // lxcfs without -f stays in the foreground in some builds: leave it running either way
    // (dropping a Child neither kills nor waits for it).
    drop(child);
    tracing::info!("started lxcfs on {}", dir.display());
    Ok(())
}

/// Starts lxcfs on `dir`, in a session of its own, its messages appended to
/// /var/log/hull-lxcfs.log.
fn spawn(dir: &Path, pidfile: &Path) -> Result<std::process::Child, Error> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/hull-lxcfs.log")
        .map_err(io("opening", "/var/log/hull-lxcfs.log"))?;
    // loadavg and CPU views from the cgroup; pidfds against pid reuse. Its pid file keeps a
    // second one from starting.
    let mut cmd = Command::new("lxcfs");
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    cmd.args(["--enable-loadavg", "--enable-cfs", "--enable-pidfd"])
        .arg(format!("--pidfile={}", pidfile.display()))
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::Tool {
            program: "lxcfs".into(),
            detail: format!("{e} (Debian package lxcfs)"),
        })
}

/// The bind mounts (OCI JSON) of lxcfs's files over the partition's `/proc` files.
pub fn mounts(dir: &Path) -> Vec<serde_json::Value> {
    PROC_FILES
        .iter()
        .filter(|f| dir.join("proc").join(f).exists())
        .map(|f| {
            serde_json::json!({
                "destination": format!("/proc/{f}"),
                "type": "bind",
                "source": dir.join("proc").join(f),
                "options": ["bind", "rw"],
            })
        })
        .collect()
}
