//! Small helpers: polling, unique names, guards for host-side helper processes and mounts.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique in this machine for the life of this test process: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Poll `f` every 10 ms until it returns true or `timeout` passes. Returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for a child with a deadline; on timeout SIGKILL it (it is ours) and return None.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A host helper process started by the test (e.g. `unshare --net sleep`), SIGKILLed by
/// pid and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send a signal to one pid we own.
pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a specific positive pid touches no memory of ours.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A host mount made by a test under its own temp dir, lazily unmounted on drop.
pub struct HostMount(pub PathBuf);

impl HostMount {
    pub fn tmpfs(target: &Path, options: &str) -> HostMount {
        let src = CString::new("tmpfs").unwrap();
        let tgt = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
        let data = CString::new(options).unwrap();
        // SAFETY: plain mount(2) with valid C strings.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                tgt.as_ptr(),
                src.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount tmpfs on {target:?}: {}",
            std::io::Error::last_os_error()
        );
        HostMount(target.to_path_buf())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let tgt = CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 on the path we mounted.
        unsafe { libc::umount2(tgt.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Current (soft, hard) RLIMIT_NOFILE of this process.
pub fn nofile_limits() -> (u64, u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into rl.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (rl.rlim_cur, rl.rlim_max)
}

/// Host readlink of /proc/self/ns/<ns>.
pub fn host_ns(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Write an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A thread that keeps exchanging two paths (`renameat2(RENAME_EXCHANGE)`, atomic: the
/// technique of the mount-race exploits) until [`SwapRacer::stop`].
pub struct SwapRacer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl SwapRacer {
    pub fn start(a: &Path, b: &Path) -> SwapRacer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
        let (a, b) = (c(a), c(b));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: renameat2 with two NUL-terminated paths we own.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if rc == 0 {
                    swaps += 1;
                }
            }
            swaps
        });
        SwapRacer { stop, thread }
    }

    /// Stops the thread; how many exchanges it made.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("racer thread")
    }
}
