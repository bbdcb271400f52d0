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

/// The lxcfs mount point, started now if no lxcfs serves it. Errors name what is missing
/// (the program, /dev/fuse).
pub fn ensure() -> Result<PathBuf, Error> {
    let dir = PathBuf::from(MOUNTPOINT);
    if mounted(&dir) {
        return Ok(dir);
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Tool {
            program: "lxcfs".into(),
            detail: "/dev/fuse is missing (the fuse kernel module)".into(),
        });
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/hull-lxcfs.log")
        .map_err(io("opening", "/var/log/hull-lxcfs.log"))?;
    // loadavg and CPU views from the cgroup; pidfds against pid reuse. lxcfs detaches by
    // itself unless -f; its pid file keeps a second one from starting.
    let mut cmd = Command::new("lxcfs");
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let status = cmd
        .args(["--enable-loadavg", "--enable-cfs", "--enable-pidfd"])
        .arg("--pidfile=/run/hull-lxcfs.pid")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    let mut child = status.map_err(|e| Error::Tool {
        program: "lxcfs".into(),
        detail: format!("{e} (Debian package lxcfs)"),
    })?;
    let t0 = Instant::now();
    while !mounted(&dir) {
        if let Ok(Some(st)) = child.try_wait() {
            if !st.success() && !mounted(&dir) {
                return Err(Error::Tool {
                    program: "lxcfs".into(),
                    detail: format!("exited with {st} (see /var/log/hull-lxcfs.log)"),
                });
            }
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(Error::Tool {
                program: "lxcfs".into(),
                detail: format!(
                    "{MOUNTPOINT} not mounted after 10 s (see /var/log/hull-lxcfs.log)"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // lxcfs without -f stays in the foreground in some builds: leave it running either way
    // (dropping a Child neither kills nor waits for it).
    drop(child);
    tracing::info!("started lxcfs on {MOUNTPOINT}");
    Ok(dir)
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
