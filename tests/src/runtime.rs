//! The runtime binary under test, driven through its runc-compatible CLI.

use crate::bundle::Bundle;
use crate::util::{unique, wait_child, wait_until};
use serde_json::Value;
use std::fmt;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

/// Debian's runc, the behaviour reference.
pub const RUNC: &str = "/usr/sbin/runc";

/// Default deadline of one CLI call (tests run in parallel on 2 cores).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The result of one CLI call.
#[derive(Debug)]
pub struct Out {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Messages of the `level=error` lines this call appended to the json `--log` (if any).
    pub log_errors: String,
}

impl Out {
    /// Exit code; a signal death is reported shell-style as 128+signal.
    pub fn code(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => -1,
        }
    }
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    /// Panic with the full output unless the call succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "expected success: {self}");
        self
    }
    /// Panic with the full output unless the call failed.
    #[track_caller]
    pub fn assert_fail(&self) -> &Self {
        assert!(!self.ok(), "expected failure: {self}");
        self
    }
    /// stderr plus json-log error messages: where a user looks for "why".
    pub fn errors(&self) -> String {
        format!("{}\n{}", self.stderr, self.log_errors)
    }
    /// Assert the error output contains `needle` (case-insensitive).
    #[track_caller]
    pub fn assert_error_contains(&self, needle: &str) -> &Self {
        assert!(
            self.errors()
                .to_lowercase()
                .contains(&needle.to_lowercase()),
            "expected error output to contain {needle:?}: {self}"
        );
        self
    }
    /// stdout with surrounding whitespace trimmed.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited {} (code {})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- log errors ---\n{}",
            self.args.join(" "),
            self.status,
            self.code(),
            self.stdout,
            self.stderr,
            self.log_errors
        )
    }
}

/// Stdio of a CLI call. Output always goes to files, never pipes.
#[derive(Default)]
pub struct Io<'a> {
    pub stdin: Option<&'a [u8]>,
    /// Extra fds to hand to the runtime: (fd number in the child, file).
    pub extra_fds: Vec<(i32, File)>,
    pub timeout: Option<Duration>,
}

/// A runtime binary plus a private `--root`. Every id from [`Runtime::id`] is
/// `delete --force`d on drop, then the root is removed.
pub struct Runtime {
    pub bin: PathBuf,
    base: TempDir,
    root: PathBuf,
    test: String,
    ids: Mutex<Vec<String>>,
    global: Vec<String>,
    runc: bool,
    log: Option<PathBuf>,
    /// (pid, start time) of every container init seen in `state`: killed on drop if
    /// `delete --force` left them alive (a half-finished runtime must not leak processes).
    inits: Mutex<Vec<(i64, u64)>>,
}

/// Start time (clock ticks since boot) of a pid, from /proc/<pid>/stat field 22.
fn start_time(pid: i64) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The binary under test: `$HULL_BIN`, else `<workspace>/target/debug/hull`.
pub fn bin_path() -> PathBuf {
    match std::env::var_os("HULL_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/hull"),
    }
}

/// True when `bin` is runc (by `--version`, falling back to the file name).
pub fn bin_is_runc(bin: &Path) -> bool {
    if let Ok(o) = Command::new(bin).arg("--version").output() {
        let s = String::from_utf8_lossy(&o.stdout).to_lowercase();
        if s.starts_with("runc version") {
            return true;
        }
        if !s.trim().is_empty() {
            return false;
        }
    }
    bin.file_name().is_some_and(|n| n == "runc")
}

impl Runtime {
    /// The binary under test. FAILS (panics) with instructions when it is missing.
    pub fn new(test: &str) -> Runtime {
        let bin = bin_path();
        assert!(
            bin.is_file(),
            "binary under test not found at {}: build it first (`cargo build -p hull-runtime`) \
             or point HULL_BIN at a runc-compatible runtime (e.g. HULL_BIN=/usr/sbin/runc)",
            bin.display()
        );
        Self::with_bin(&bin, test)
    }

    /// Any runc-compatible binary (used for differential runs against runc).
    pub fn with_bin(bin: &Path, test: &str) -> Runtime {
        let base = tempfile::Builder::new()
            .prefix("hull-e2e-rt-")
            .tempdir()
            .expect("tempdir");
        let root = base.path().join("root");
        std::fs::create_dir_all(base.path().join("io")).unwrap();
        Runtime {
            bin: bin.to_path_buf(),
            root,
            base,
            test: test.replace('_', "-"),
            ids: Mutex::new(vec![]),
            global: vec![],
            runc: bin_is_runc(bin),
            log: None,
            inits: Mutex::new(vec![]),
        }
    }

    /// Pass `--log <file> --log-format json` like containerd's shim does.
    pub fn json_log(mut self) -> Runtime {
        let log = self.base.path().join("log.json");
        self.global = vec![
            "--log".into(),
            log.to_str().unwrap().into(),
            "--log-format".into(),
            "json".into(),
        ];
        self.log = Some(log);
        self
    }

    /// Extra global flags (placed after `--root`).
    pub fn global_flags(&mut self, flags: &[&str]) {
        self.global.extend(flags.iter().map(|s| s.to_string()));
    }

    pub fn is_runc(&self) -> bool {
        self.runc
    }
    /// The `--root` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// A private scratch dir of this runtime instance (not under `--root`).
    pub fn scratch(&self) -> &Path {
        self.base.path()
    }
    /// A fresh container id, `e2e-<test>-<pid>-<n>`, deleted with --force on drop.
    pub fn id(&self) -> String {
        let id = unique(&format!("e2e-{}", self.test));
        self.adopt(&id);
        id
    }
    /// Register an id for cleanup.
    pub fn adopt(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }
    /// Pid file path used by `create`/`run` for this id.
    pub fn pid_file(&self, id: &str) -> PathBuf {
        // Sanitised: ids under test may be hostile (`../x`).
        self.base
            .path()
            .join(format!("{}.pid", id.replace(['/', '\n', '.'], "_")))
    }

    /// `bin --root R [global flags] args...` with stdin from /dev/null.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .args(&self.global)
            .args(args);
        c.stdin(Stdio::null());
        c
    }

    fn log_len(&self) -> u64 {
        self.log
            .as_ref()
            .and_then(|l| std::fs::metadata(l).ok())
            .map_or(0, |m| m.len())
    }

    fn log_errors_since(&self, off: u64) -> String {
        let Some(l) = &self.log else {
            return String::new();
        };
        let Ok(all) = std::fs::read(l) else {
            return String::new();
        };
        let tail = String::from_utf8_lossy(all.get(off as usize..).unwrap_or(&[])).into_owned();
        let mut msgs = vec![];
        for line in tail.lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v["level"] == "error" || v["level"] == "fatal" => {
                    msgs.push(v["msg"].as_str().unwrap_or("").to_string())
                }
                Ok(_) => {}
                Err(_) => msgs.push(line.to_string()),
            }
        }
        msgs.join("\n")
    }

    /// Run a prepared command with output to files, a deadline, optional stdin and fds.
    pub fn exec_cmd(&self, mut c: Command, io: Io) -> Out {
        let n = unique("io");
        let dir = self.base.path().join("io");
        let (po, pe, pi) = (
            dir.join(format!("{n}.out")),
            dir.join(format!("{n}.err")),
            dir.join(format!("{n}.in")),
        );
        c.stdout(File::create(&po).unwrap())
            .stderr(File::create(&pe).unwrap());
        if let Some(input) = io.stdin {
            std::fs::write(&pi, input).unwrap();
            c.stdin(File::open(&pi).unwrap());
        }
        if !io.extra_fds.is_empty() {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fds: Vec<(i32, i32)> = io
                .extra_fds
                .iter()
                .map(|(n, f)| (*n, f.as_raw_fd()))
                .collect();
            // SAFETY: only async-signal-safe dup2/fcntl between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    for (target, src) in &fds {
                        if libc::dup2(*src, *target) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::fcntl(*target, libc::F_SETFD, 0);
                    }
                    Ok(())
                });
            }
        }
        let args: Vec<String> = std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let off = self.log_len();
        let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        drop(io.extra_fds);
        let timeout = io.timeout.unwrap_or(CMD_TIMEOUT);
        let status = wait_child(&mut child, timeout);
        let stdout = std::fs::read_to_string(&po).unwrap_or_default();
        let stderr = std::fs::read_to_string(&pe).unwrap_or_default();
        let _ = std::fs::remove_file(&po);
        let _ = std::fs::remove_file(&pe);
        let _ = std::fs::remove_file(&pi);
        let Some(status) = status else {
            panic!(
                "`{}` timed out after {timeout:?}\nstdout: {stdout}\nstderr: {stderr}",
                args.join(" ")
            )
        };
        Out {
            args,
            status,
            stdout,
            stderr,
            log_errors: self.log_errors_since(off),
        }
    }

    /// Run `bin --root R args...` and collect its output.
    pub fn call(&self, args: &[&str]) -> Out {
        self.exec_cmd(self.cmd(args), Io::default())
    }
    /// Same, with bytes on stdin.
    pub fn call_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        self.exec_cmd(
            self.cmd(args),
            Io {
                stdin: Some(stdin),
                ..Io::default()
            },
        )
    }
    /// Start a CLI call in the background (output discarded); the caller owns the child.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.cmd(args);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c.spawn().expect("spawn runtime")
    }

    // ---- commands -------------------------------------------------------------------

    /// `create --bundle B --pid-file P [extra] id` (writes config.json first).
    pub fn create_with(&self, id: &str, b: &Bundle, extra: &[&str]) -> Out {
        b.write();
        let pid = self.pid_file(id);
        let mut a = vec!["create", "--bundle", b.path().to_str().unwrap()];
        a.extend(["--pid-file", pid.to_str().unwrap()]);
        a.extend_from_slice(extra);
        a.push(id);
        self.call(&a)
    }
    pub fn create(&self, id: &str, b: &Bundle) -> Out {
        self.create_with(id, b, &[])
    }
    pub fn start(&self, id: &str) -> Out {
        self.call(&["start", id])
    }
    /// `run --bundle B [extra] id` in the foreground, stdin from /dev/null.
    pub fn run_with(&self, id: &str, b: &Bundle, extra: &[&str], io: Io) -> Out {
        b.write();
        let mut a = vec!["run", "--bundle", b.path().to_str().unwrap()];
        a.extend_from_slice(extra);
        a.push(id);
        self.exec_cmd(self.cmd(&a), io)
    }
    pub fn run(&self, id: &str, b: &Bundle) -> Out {
        self.run_with(id, b, &[], Io::default())
    }
    /// `run` under a fresh id; the usual way to "run this and show me the output".
    pub fn run_bundle(&self, b: &Bundle) -> Out {
        let id = self.id();
        self.run(&id, b)
    }
    pub fn state(&self, id: &str) -> Out {
        self.call(&["state", id])
    }
    /// Parsed `state` output; panics when `state` fails.
    #[track_caller]
    pub fn state_json(&self, id: &str) -> Value {
        let o = self.state(id);
        o.assert_ok();
        let v: Value = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("state is not JSON ({e}): {o}"));
        self.remember_init(&v);
        v
    }

    fn remember_init(&self, state: &Value) {
        if let Some(pid) = state["pid"].as_i64().filter(|p| *p > 1) {
            if let Some(st) = start_time(pid) {
                let mut v = self.inits.lock().unwrap_or_else(|e| e.into_inner());
                if !v.contains(&(pid, st)) {
                    v.push((pid, st));
                }
            }
        }
    }
    /// The `status` field, or None when `state` fails.
    pub fn status(&self, id: &str) -> Option<String> {
        let o = self.state(id);
        if !o.ok() {
            return None;
        }
        let v = serde_json::from_str::<Value>(&o.stdout).ok()?;
        self.remember_init(&v);
        v["status"].as_str().map(str::to_owned)
    }
    /// Poll `state` until the status is `want`.
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.status(id).as_deref() == Some(want))
    }
    pub fn kill(&self, id: &str, sig: &str) -> Out {
        self.call(&["kill", id, sig])
    }
    pub fn kill_all(&self, id: &str, sig: &str) -> Out {
        self.call(&["kill", "--all", id, sig])
    }
    pub fn delete(&self, id: &str) -> Out {
        self.call(&["delete", id])
    }
    pub fn delete_force(&self, id: &str) -> Out {
        self.call(&["delete", "--force", id])
    }
    pub fn list(&self, extra: &[&str]) -> Out {
        let mut a = vec!["list"];
        a.extend_from_slice(extra);
        self.call(&a)
    }
    pub fn ps(&self, id: &str, extra: &[&str]) -> Out {
        let mut a = vec!["ps"];
        a.extend_from_slice(extra);
        a.push(id);
        self.call(&a)
    }
    /// `ps --format json id` parsed as a pid list.
    #[track_caller]
    pub fn ps_pids(&self, id: &str) -> Vec<i64> {
        let o = self.ps(id, &["--format", "json"]);
        o.assert_ok();
        serde_json::from_str::<Vec<i64>>(o.out()).unwrap_or_else(|e| panic!("ps json ({e}): {o}"))
    }
    /// `exec id args...` (foreground).
    pub fn exec(&self, id: &str, args: &[&str]) -> Out {
        let mut a = vec!["exec", id];
        a.extend_from_slice(args);
        self.call(&a)
    }

    /// create + start a long-running container (`args`), asserting both succeed.
    #[track_caller]
    pub fn start_running(&self, b: &Bundle) -> String {
        let id = self.id();
        self.create(&id, b).assert_ok();
        self.start(&id).assert_ok();
        let st = self.status(&id);
        assert!(
            matches!(st.as_deref(), Some("running") | Some("stopped")),
            "{id} after start: status {st:?}"
        );
        id
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            let mut c = self.cmd(&["delete", "--force", &id]);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            if let Ok(mut ch) = c.spawn() {
                let _ = wait_child(&mut ch, Duration::from_secs(20));
            }
        }
        // Inits the runtime failed to kill: SIGKILL them, but only if the pid still names
        // the same process (same start time).
        let inits = std::mem::take(&mut *self.inits.lock().unwrap_or_else(|e| e.into_inner()));
        for (pid, st) in inits {
            if start_time(pid) == Some(st) {
                crate::util::signal(pid as i32, libc::SIGKILL);
            }
        }
        // The root and scratch files go away with `base`.
    }
}
