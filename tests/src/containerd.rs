//! A private containerd (Debian's 1.6) for the tests: its own config, root, state, sockets
//! and FIFO dir under one temp dir; started by the test, waited for, and on drop every
//! task, container, image and the namespace is removed, containerd is stopped by pid, the
//! shims it started (found by our unique socket address) are killed by pid, mounts under
//! the temp dir are detached and the dir removed. [`Containerd::ctr`] runs `ctr` against it.
//!
//! With [`Options::with_cri`] the CRI plugin is enabled too (host-network pods only, so no
//! CNI), with hull as the runtime handlers [`CRI_HANDLER_RUNC_SHIM`] and
//! [`CRI_HANDLER_HULL_SHIM`]; [`cri::CriClient`] talks to it.

pub mod cri;

use crate::util::{unique, wait_child, wait_until};
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub const CONTAINERD: &str = "/usr/bin/containerd";
pub const CTR: &str = "/usr/bin/ctr";

/// Deadline of one `ctr` call.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a containerd test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    if let Some(r) = crate::skip::env_skip_reason() {
        return Some(r);
    }
    for bin in [CONTAINERD, CTR] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} missing: install Debian's containerd (dev/install-deps)"
            ));
        }
    }
    None
}

/// How to start containerd.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directories put in front of containerd's PATH (where it looks for
    /// `containerd-shim-<name>-v2` binaries).
    pub path_prepend: Vec<PathBuf>,
    /// Enable the CRI plugin (see [`CriOptions`]).
    pub cri: Option<CriOptions>,
}

/// The CRI handler driving hull through containerd's runc shim (`BinaryName`).
pub const CRI_HANDLER_RUNC_SHIM: &str = "hull";
/// The CRI handler using hull's own shim, `io.containerd.hull.v2` (it must be on the
/// PATH given with [`Options::path_prepend`]).
pub const CRI_HANDLER_HULL_SHIM: &str = "hull-shim";
/// The containerd namespace CRI works in; with CRI enabled every `ctr` call uses it.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// How the CRI plugin is configured.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// The `BinaryName` of handler [`CRI_HANDLER_RUNC_SHIM`].
    pub hull: PathBuf,
    /// `sandbox_image`: must be imported before the first RunPodSandbox (no registry).
    pub sandbox_image: String,
}

impl Options {
    /// The same options with the CRI plugin enabled.
    pub fn with_cri(mut self, cri: CriOptions) -> Options {
        self.cri = Some(cri);
        self
    }
}

/// The result of one `ctr` call.
#[derive(Debug)]
pub struct CtrOut {
    pub args: Vec<String>,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl CtrOut {
    /// Exit code (128+signal when killed, -1 when it timed out).
    pub fn code(&self) -> i32 {
        match self.status {
            Some(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            None => -1,
        }
    }
    pub fn ok(&self) -> bool {
        self.code() == 0
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "expected success: {self}");
        self
    }
}

impl std::fmt::Display for CtrOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ctr {:?} -> {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            match self.status {
                Some(_) => self.code().to_string(),
                None => "TIMEOUT".into(),
            },
            self.stdout,
            self.stderr
        )
    }
}

pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
    /// The grpc socket.
    pub address: PathBuf,
    /// The namespace every `ctr` call uses (`hull-e2e-<pid>-<n>`).
    pub namespace: String,
}

impl Containerd {
    /// Start a private containerd and wait until its socket answers.
    pub fn start(opts: &Options) -> Result<Containerd, String> {
        let dir = tempfile::Builder::new()
            .prefix("hull-e2e-containerd-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let d = dir.path();
        for sub in ["root", "state", "fifo", "opt", "runc-root", "scratch"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let address = d.join("containerd.sock");
        let mut config = config_toml(d, &address);
        if let Some(cri) = &opts.cri {
            for sub in ["cni-conf", "cni-bin"] {
                std::fs::create_dir_all(d.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
            }
            config = cri_config_toml(d, &address, cri, &d.join("runc-root"));
        }
        std::fs::write(d.join("config.toml"), config).map_err(|e| format!("config.toml: {e}"))?;
        let log = File::create(d.join("containerd.log")).map_err(|e| format!("log: {e}"))?;
        let mut path: Vec<PathBuf> = opts.path_prepend.clone();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ));
        let path = std::env::join_paths(path).map_err(|e| format!("PATH: {e}"))?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("log: {e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {CONTAINERD}: {e}"))?;
        let mut c = Containerd {
            dir,
            child: Some(child),
            address,
            namespace: if opts.cri.is_some() {
                CRI_NAMESPACE.to_string()
            } else {
                unique("hull-e2e")
            },
        };
        let ready = wait_until(Duration::from_secs(30), || {
            c.address.exists() && c.ctr(&["version"]).ok()
        });
        if !ready {
            let exited = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten());
            return Err(format!(
                "containerd not ready after 30 s (exited: {exited:?}); log:\n{}",
                c.log_tail()
            ));
        }
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Where `ctr --fifo-dir` puts FIFOs.
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }
    /// A root for runc-compatible runtimes driven by containerd's runc shim.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc-root")
    }
    /// A scratch dir for the test's own files.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }
    /// The runtime v2 state dir of a task (bundle, rootfs mount, sockets).
    pub fn task_dir(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last 60 lines of containerd's log.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The base `ctr` command: `ctr --address SOCK --namespace NS`.
    pub fn ctr_cmd(&self) -> Command {
        let mut c = Command::new(CTR);
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace);
        c
    }

    /// Run `ctr ARGS` (stdin from /dev/null) with the default deadline.
    pub fn ctr(&self, args: &[&str]) -> CtrOut {
        self.ctr_with(args, None, CTR_TIMEOUT)
    }

    /// Run `ctr ARGS` with `stdin` (a file) and a deadline; output goes through files so a
    /// process that inherits it cannot make the call hang.
    pub fn ctr_with(&self, args: &[&str], stdin: Option<File>, timeout: Duration) -> CtrOut {
        let n = unique("ctr");
        let out_path = self.dir.path().join(format!("{n}.out"));
        let err_path = self.dir.path().join(format!("{n}.err"));
        let (Ok(out), Ok(err)) = (File::create(&out_path), File::create(&err_path)) else {
            panic!("cannot create ctr output files in {:?}", self.dir.path());
        };
        let mut cmd = self.ctr_cmd();
        cmd.args(args)
            .stdout(out)
            .stderr(err)
            .stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        let status = match cmd.spawn() {
            Ok(mut child) => wait_child(&mut child, timeout),
            Err(e) => panic!("spawn {CTR}: {e}"),
        };
        let read = |p: &Path| {
            let s = std::fs::read_to_string(p).unwrap_or_default();
            let _ = std::fs::remove_file(p);
            s
        };
        CtrOut {
            args: args.iter().map(|s| s.to_string()).collect(),
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
        }
    }

    /// Import an image layout tar (`ctr image import`).
    pub fn import(&self, tar: &Path) -> CtrOut {
        let tar = tar.to_string_lossy().into_owned();
        self.ctr(&["image", "import", "--all-platforms", &tar])
    }

    /// Pids of processes (shims) started for this containerd: their command line carries
    /// our unique socket address.
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.address.to_string_lossy().into_owned();
        let mut pids = Vec::new();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return pids;
        };
        let me = self.pid().map(|p| p as i32);
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if Some(pid) == me {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.contains(&needle) && args.iter().any(|a| a == "-address") {
                pids.push(pid);
            }
        }
        pids
    }

    /// `ctr events` in the background (every event containerd publishes from now on, one
    /// line each: time, topic, namespace, payload), its output going to a file.
    pub fn events(&self) -> EventStream {
        let path = self.dir.path().join(format!("{}.events", unique("ctr")));
        let out = File::create(&path)
            .unwrap_or_else(|e| panic!("cannot create {path:?} for ctr events: {e}"));
        let child = self
            .ctr_cmd()
            .arg("events")
            .stdout(out)
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {CTR} events: {e}"));
        EventStream { child, path }
    }

    /// Remove every task, container and image of our namespace, then the namespace.
    pub fn clean_namespace(&self) {
        let quick = Duration::from_secs(20);
        let tasks = self.ctr_with(&["task", "ls", "-q"], None, quick);
        for id in tasks.stdout.split_whitespace() {
            let _ = self.ctr_with(&["task", "kill", "-a", "-s", "SIGKILL", id], None, quick);
        }
        for id in tasks.stdout.split_whitespace() {
            let _ = self.ctr_with(&["task", "delete", "-f", id], None, quick);
        }
        let containers = self.ctr_with(&["container", "ls", "-q"], None, quick);
        for id in containers.stdout.split_whitespace() {
            let _ = self.ctr_with(&["container", "delete", id], None, quick);
        }
        let images = self.ctr_with(&["image", "ls", "-q"], None, quick);
        for name in images.stdout.split_whitespace() {
            let _ = self.ctr_with(&["image", "rm", "--sync", name], None, quick);
        }
        let ns = self.namespace.clone();
        let _ = self.ctr_with(&["namespace", "remove", &ns], None, quick);
    }
}

/// A running `ctr events`; stopped (by its pid) on drop.
pub struct EventStream {
    child: Child,
    path: PathBuf,
}

impl EventStream {
    /// Everything received so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// Wait until a line holds every one of `needles`.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.text()
                .lines()
                .any(|l| needles.iter().all(|n| l.contains(n)))
        })
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean_namespace();
        let shims = self.shim_pids();
        if let Some(mut child) = self.child.take() {
            crate::util::signal(child.id() as i32, libc::SIGTERM);
            if wait_child(&mut child, Duration::from_secs(10)).is_none() {
                eprintln!("containerd {} did not stop on SIGTERM: killed", child.id());
            }
        }
        for pid in shims {
            crate::util::signal(pid, libc::SIGKILL);
        }
        // Mounts under our dir (task rootfs, snapshots), deepest first.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = crate::check::parse_mountinfo(&crate::check::mountinfo())
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 with a valid C string, on a mount under our own temp dir.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// containerd's config: everything under `dir`, only what `ctr run` needs enabled.
pub fn config_toml(dir: &Path, address: &Path) -> String {
    let d = dir.display();
    let a = address.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{a}"

[ttrpc]
  address = "{a}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

# containerd 1.6's tasks service needs the v1 runtime loaded; keep it inside `dir`.
[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{d}/runtime-v1"

[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
"#
    )
}

/// containerd's config with the CRI plugin enabled: [`config_toml`] without CRI in
/// `disabled_plugins`, plus a CRI section whose state, CNI dirs and runc roots are all
/// under `dir`, `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE, so the
/// sandbox's -998 could not be set) and the two hull handlers. Pods must use the host
/// network: the CNI dirs are empty.
pub fn cri_config_toml(dir: &Path, address: &Path, cri: &CriOptions, runc_root: &Path) -> String {
    let d = dir.display();
    let base = config_toml(dir, address).replace("  \"io.containerd.grpc.v1.cri\",\n", "");
    format!(
        r#"{base}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  stats_collect_period = 1
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{h}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{h}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{h}.options]
        BinaryName = "{hull}"
        Root = "{root}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{hs}]
      runtime_type = "io.containerd.hull.v2"
"#,
        sandbox = cri.sandbox_image,
        h = CRI_HANDLER_RUNC_SHIM,
        hs = CRI_HANDLER_HULL_SHIM,
        hull = cri.hull.display(),
        root = runc_root.display(),
    )
}

impl Containerd {
    /// Run `ctr ARGS` with a pty as its stdin, stdout and stderr (what `-t` needs); returns
    /// the exit code (-1 on timeout) and everything written to the pty. `input` is typed
    /// into the pty once it is open.
    pub fn ctr_tty(&self, args: &[&str], input: &[u8], timeout: Duration) -> (i32, String) {
        use std::io::Read;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = File::from(pty.slave);
        let mut cmd = self.ctr_cmd();
        cmd.args(args)
            .stdin(slave.try_clone().expect("dup pty"))
            .stdout(slave.try_clone().expect("dup pty"))
            .stderr(slave);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {CTR}: {e}"));
        // Our copies of the slave are gone (moved into the Command, dropped with it), so
        // reads end with EIO once ctr and everything holding the pty have exited.
        drop(cmd);
        let mut master = File::from(pty.master);
        if !input.is_empty() {
            let _ = std::io::Write::write_all(&mut master, input);
        }
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        });
        let status = wait_child(&mut child, timeout);
        let code = match status {
            Some(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            None => -1,
        };
        let out = if wait_until(Duration::from_secs(5), || reader.is_finished()) {
            reader.join().unwrap_or_default()
        } else {
            String::from("<pty still open>")
        };
        (code, out)
    }
}
