//! hull as podman's OCI runtime: Debian's podman 4.3 with `--runtime <hull>`, the busybox
//! OCI image made locally and `podman load`ed into a private store (`--root`,
//! `--runroot`, `--tmpdir`, vfs driver, file events, cgroupfs, no systemd, no network) under
//! a temp dir, so the host's podman storage is never touched. hull keeps its state in its
//! default root, `/run/hull`, as podman's cleanup process (`podman container cleanup`, run
//! by conmon when the container exits) does not pass `--runtime-flag`s on; each run's id is
//! recorded with `--cidfile` and its state dir checked.
//!
//! Root here lacks CAP_SYS_RESOURCE, and podman asks for the host's hard limits as the
//! container's RLIMIT_NOFILE and RLIMIT_NPROC, which no runtime can set: every run gives
//! explicit `--ulimit`s below them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hull_tests::bundle::CGROUP_PARENT;
use hull_tests::client::{processes_mentioning, run_captured, unmount_under, ClientOut};
use hull_tests::oci_image::{self, OciImage};
use hull_tests::skip::{env_skip_reason, skipped};
use hull_tests::util::signal;
use hull_tests::{cgroup_dirs, mountinfo, parse_mountinfo, unique, wait_until};
use tempfile::TempDir;

const PODMAN: &str = "/usr/bin/podman";
/// hull's default `--root`, which podman leaves it.
const HULL_ROOT: &str = "/run/hull";
const CONMON: &str = "/usr/bin/conmon";
const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

type Out = ClientOut;

/// A private podman store and a hull root under one temp dir.
struct Podman {
    dir: TempDir,
    hull: PathBuf,
    /// `--cgroup-parent` of every container (conmon's cgroup goes below it too).
    cgroup_parent: String,
    image: Option<OciImage>,
}

fn skip_reason() -> Option<String> {
    if let Some(r) = env_skip_reason() {
        return Some(r);
    }
    for bin in [PODMAN, CONMON] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} missing: install Debian's podman (dev/install-deps)"
            ));
        }
    }
    None
}

impl Podman {
    /// A private store with the busybox image loaded, or None (skipped).
    fn new() -> Option<Podman> {
        if let Some(r) = skip_reason() {
            skipped(&r);
            return None;
        }
        let hull = hull_tests::runtime::bin_path();
        assert!(hull.exists(), "{hull:?} missing: build it first");
        let dir = tempfile::Builder::new()
            .prefix("hull-e2e-podman-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["root", "runroot", "tmp", "cids", "net"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
                d.display()
            ),
        )
        .expect("storage.conf");
        std::fs::write(
            d.join("containers.conf"),
            "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
             [containers]\nlog_driver = \"k8s-file\"\n",
        )
        .expect("containers.conf");
        let mut p = Podman {
            dir,
            hull,
            cgroup_parent: format!("{CGROUP_PARENT}/{}", unique("podman")),
            image: None,
        };
        let image = oci_image::busybox_image(&unique("hull-busybox")).expect("build image");
        let tar = image.tar.display().to_string();
        let load = p.load(&tar);
        load.assert_ok();
        assert!(
            load.stdout.contains("Loaded image"),
            "podman load printed no image name: {load}"
        );
        // The layout names the image only by its tag; give it the name the tests use.
        let id = p.podman(&["images", "-q", "--no-trunc"]);
        id.assert_ok();
        let first = id.stdout.split_whitespace().next().unwrap_or_default();
        assert!(!first.is_empty(), "no image after load: {id}");
        let first = first.to_string();
        p.podman(&["tag", &first, &image.name]).assert_ok();
        p.image = Some(image);
        Some(p)
    }

    fn image(&self) -> String {
        self.image
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default()
    }

    /// Ids of every container `run` made (from their `--cidfile`s).
    fn container_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("cids"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `podman` with the private store, hull as the runtime and its private root.
    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(PODMAN);
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net"))
            .args(["--storage-driver", "vfs"])
            .args(["--events-backend", "file"])
            .args(["--cgroup-manager", "cgroupfs"])
            .arg("--runtime")
            .arg(&self.hull);
        c
    }

    /// Run podman ARGS with output through files and a deadline.
    fn podman(&self, args: &[&str]) -> Out {
        self.podman_in(self.cmd(), args)
    }

    /// `podman load -i TAR` in a private mount namespace with a tmpfs over
    /// `/var/lib/containers` (or, when that does not exist, `/var/lib`): podman 4.3 keeps
    /// its image-copy "blob info cache" there whatever `--root` says, and the host's must
    /// stay untouched. Nothing else of podman's is under /var/lib with our flags.
    fn load(&self, tar: &str) -> Out {
        let podman = self.cmd();
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "d=/var/lib/containers; [ -d $d ] || d=/var/lib; \
                 mount -t tmpfs -o size=64m hull-e2e-podman-cache $d && exec \"$@\"",
            )
            .arg("sh")
            .arg(podman.get_program())
            .args(podman.get_args());
        for (k, v) in podman.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        self.podman_in(c, &["load", "-i", tar])
    }

    fn podman_in(&self, cmd: Command, args: &[&str]) -> Out {
        run_captured(cmd, args, self.dir.path(), Duration::from_secs(120))
    }

    /// `podman run ARGS` with the flags every run needs here, then `IMAGE CMD...`.
    fn run(&self, flags: &[&str], cmd: &[&str]) -> Out {
        let parent = self.cgroup_parent.clone();
        let image = self.image();
        let cidfile = self.dir.path().join("cids").join(unique("cid"));
        let cidfile = cidfile.display().to_string();
        let mut args: Vec<&str> = vec![
            "run",
            "--network",
            "none",
            "--cgroup-parent",
            &parent,
            "--cidfile",
            &cidfile,
        ];
        args.extend_from_slice(ULIMITS);
        args.extend_from_slice(flags);
        args.push(&image);
        args.extend_from_slice(cmd);
        self.podman(&args)
    }

    /// Processes whose command line mentions our temp dir (conmon, podman cleanup).
    fn our_processes(&self) -> Vec<i32> {
        processes_mentioning(&self.dir.path().to_string_lossy())
    }

    /// Container cgroups left under our parent (conmon's own `conmon` cgroup is podman's
    /// and removed on drop).
    fn container_cgroups(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for d in cgroup_dirs(&self.cgroup_parent) {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("libpod-") {
                    left.push(e.path());
                }
            }
        }
        left
    }

    /// What is left of containers: podman containers, hull state, container cgroups,
    /// mounts, conmon or cleanup processes.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let ps = self.podman(&["ps", "-a", "-q"]);
        if !ps.stdout.trim().is_empty() {
            left.push(format!("containers: {}", ps.stdout.trim()));
        }
        let state: Vec<PathBuf> = self
            .container_ids()
            .iter()
            .map(|id| Path::new(HULL_ROOT).join(id))
            .filter(|d| d.exists())
            .collect();
        if !state.is_empty() {
            left.push(format!("hull state: {state:?}"));
        }
        let cgroups = self.container_cgroups();
        if !cgroups.is_empty() {
            left.push(format!("cgroups: {cgroups:?}"));
        }
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for m in parse_mountinfo(&mountinfo()) {
            if m.mount_point.starts_with(&prefix) {
                left.push(format!("mount {}", m.mount_point));
            }
        }
        let procs = self.our_processes();
        if !procs.is_empty() {
            left.push(format!("processes: {procs:?}"));
        }
        left
    }

    /// Nothing is left (podman cleans up after `run --rm` asynchronously: give it 10 s).
    fn assert_nothing_left(&self) {
        let mut left = Vec::new();
        let clean = wait_until(Duration::from_secs(10), || {
            left = self.leftovers();
            left.is_empty()
        });
        assert!(clean, "leftovers: {left:#?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["rmi", "--all", "--force"]);
        for pid in self.our_processes() {
            signal(pid, libc::SIGKILL);
        }
        unmount_under(&self.dir.path().to_string_lossy());
        for d in cgroup_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(d.join("conmon"));
            let _ = std::fs::remove_dir(&d);
        }
    }
}

#[test]
fn podman_run_prints_and_exits_with_status() {
    let Some(p) = Podman::new() else {
        return;
    };
    let out = p.run(
        &["--rm"],
        &[
            "sh",
            "-c",
            "echo hello-from-hull-podman; echo nofile=$(ulimit -n); echo to-stderr >&2; exit 3",
        ],
    );
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("hello-from-hull-podman"), "{out}");
    assert!(out.stdout.contains("nofile=1024"), "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    p.assert_nothing_left();
}

#[test]
fn podman_detached_exec_ps_stop() {
    let Some(p) = Podman::new() else {
        return;
    };
    let name = unique("pm");
    let script = "trap 'exit 9' TERM; echo started; while true; do sleep 0.1; done";
    let run = p.run(&["-d", "--name", &name], &["sh", "-c", script]);
    run.assert_ok();
    let id = run.stdout.trim().to_string();
    assert!(p.container_ids().contains(&id), "{id} not in the cidfile");
    assert!(
        Path::new(HULL_ROOT).join(&id).join("state.json").exists(),
        "hull does not hold {id}: {run}"
    );

    let ps = p.podman(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    ps.assert_ok();
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{name} Up"))),
        "{ps}"
    );

    let exec = p.podman(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 4",
    ]);
    assert_eq!(exec.code, 4, "{exec}");
    assert!(exec.stdout.contains("exec-out"), "{exec}");
    assert!(exec.stderr.contains("exec-err"), "{exec}");

    let top = p.podman(&["exec", &name, "cat", "/proc/1/cmdline"]);
    top.assert_ok();
    assert!(top.stdout.starts_with("sh"), "{top}");

    p.podman(&["stop", "--time", "10", &name]).assert_ok();
    let code = p.podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    code.assert_ok();
    assert_eq!(code.stdout.trim(), "9", "{code}");
    let logs = p.podman(&["logs", &name]);
    assert!(logs.stdout.contains("started"), "{logs}");
    p.podman(&["rm", &name]).assert_ok();
    p.assert_nothing_left();
}
