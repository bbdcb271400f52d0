//! Running a real client (docker, podman, ctr) as a test would: output through files, never
//! pipes (a container that inherits them cannot hang the test), and a deadline after which
//! the client is killed.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{unique, wait_child};

/// The result of one client call.
#[derive(Debug)]
pub struct ClientOut {
    /// The program, for messages.
    pub program: String,
    pub args: Vec<String>,
    /// Exit code; 128+N when killed by signal N; -1 when the deadline passed.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for ClientOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} -> {}\n--- stdout\n{}\n--- stderr\n{}",
            self.program, self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl ClientOut {
    #[track_caller]
    pub fn assert_ok(&self) -> &ClientOut {
        assert_eq!(self.code, 0, "expected success: {self}");
        self
    }

    /// stdout without surrounding white space.
    pub fn text(&self) -> &str {
        self.stdout.trim()
    }
}

/// Run `cmd ARGS` with stdin from /dev/null and stdout/stderr captured through files in
/// `scratch`, killing it after `timeout`.
pub fn run_captured(
    mut cmd: Command,
    args: &[&str],
    scratch: &Path,
    timeout: Duration,
) -> ClientOut {
    let n = unique("client");
    let out_path = scratch.join(format!("{n}.out"));
    let err_path = scratch.join(format!("{n}.err"));
    let (Ok(out), Ok(err)) = (File::create(&out_path), File::create(&err_path)) else {
        panic!("cannot create output files in {scratch:?}");
    };
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    let code = match cmd.spawn() {
        Ok(mut child) => match wait_child(&mut child, timeout) {
            Some(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            None => -1,
        },
        Err(e) => panic!("spawn {program}: {e}"),
    };
    let read = |p: &Path| {
        let s = std::fs::read_to_string(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        s
    };
    ClientOut {
        program,
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// Pids of processes (other than this one) whose command line contains `needle`: the
/// daemons and shims a test started under its own temp dir.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Lazily unmount every mount point under `prefix`, deepest first.
pub fn unmount_under(prefix: &str) {
    let mut mounts: Vec<String> = crate::parse_mountinfo(&crate::mountinfo())
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(prefix))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: umount2 with a valid C string, on a mount under the test's own dir.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
