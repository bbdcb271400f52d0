//! A private Docker Engine (Debian's `docker.io`, 20.10) with hull as its default runtime.
//!
//! Each [`Docker`] starts its own `dockerd` with everything under one temp dir: data root,
//! exec root (dockerd starts its own containerd there), pid file and API socket, no bridge,
//! no iptables, the vfs storage driver, and `--cgroup-parent` under the tests' cgroup. The
//! busybox rootfs every bundle has is `docker import`ed as the image (there is no
//! registry). On drop every container is removed, dockerd is stopped by its pid, and any
//! process, mount or cgroup left under the temp dir is cleaned up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::bundle::{Bundle, CGROUP_PARENT};
use crate::client::{processes_mentioning, run_captured, unmount_under, ClientOut};
use crate::skip::{env_skip_reason, skipped};
use crate::util::{signal, unique, wait_child, wait_until};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (a newer client elsewhere on PATH may not talk to a 20.10 daemon).
pub const DOCKER: &str = "/usr/bin/docker";
/// The runtime name hull is registered under.
pub const RUNTIME: &str = "hull";

/// Why the Docker tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if let Some(r) = env_skip_reason() {
        return Some(r);
    }
    for bin in [DOCKERD, DOCKER] {
        if !Path::new(bin).exists() {
            return Some(format!(
                "{bin} missing: install Debian's docker.io (dev/install-deps)"
            ));
        }
    }
    None
}

/// A running private dockerd.
pub struct Docker {
    dir: TempDir,
    daemon: Option<std::process::Child>,
    /// The daemon's `--cgroup-parent`: containers' cgroups are `<parent>/<container id>`.
    pub cgroup_parent: String,
    /// The imported busybox image.
    pub image: String,
}

impl Docker {
    /// Start dockerd with hull as the default runtime and import the busybox image, or
    /// print why not and return None.
    pub fn start() -> Option<Docker> {
        if let Some(r) = skip_reason() {
            skipped(&r);
            return None;
        }
        let hull = crate::runtime::bin_path();
        assert!(hull.exists(), "{hull:?} missing: build it first");
        let dir = tempfile::Builder::new()
            .prefix("hull-e2e-docker-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["data", "exec", "config", "scratch"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let cgroup_parent = format!("{CGROUP_PARENT}/{}", unique("docker"));
        let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd.log");
        let log2 = log.try_clone().expect("dup log");
        let mut cmd = Command::new(DOCKERD);
        cmd.arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .args(["--ip-masq=false", "--storage-driver", "vfs"])
            .args(["--cgroup-parent", &cgroup_parent])
            .arg("--add-runtime")
            .arg(format!("{RUNTIME}={}", hull.display()))
            .args(["--default-runtime", RUNTIME])
            .arg("--config-file")
            .arg(d.join("config/daemon.json"))
            .env("DOCKER_CONFIG", d.join("config"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        std::fs::write(d.join("config/daemon.json"), "{}").expect("daemon.json");
        let daemon = cmd.spawn().expect("spawn dockerd");
        let mut docker = Docker {
            dir,
            daemon: Some(daemon),
            cgroup_parent,
            image: String::new(),
        };
        let up = wait_until(Duration::from_secs(60), || {
            docker.call_with_timeout(&["version"], 5).code == 0
        });
        assert!(up, "dockerd did not come up:\n{}", docker.daemon_log());
        docker.image = docker.import_busybox();
        Some(docker)
    }

    /// `docker import` of the busybox rootfs every bundle has.
    fn import_busybox(&self) -> String {
        let bundle = Bundle::new();
        let tar = self.dir.path().join("scratch/busybox.tar");
        let data = crate::oci_image::layer_tar(&bundle.rootfs()).expect("rootfs tar");
        std::fs::write(&tar, data).expect("write rootfs tar");
        let name = format!("{}:latest", unique("hull-busybox"));
        let tar = tar.display().to_string();
        self.call(&["import", &tar, &name]).assert_ok();
        name
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// dockerd's own log, for failure messages.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The Debian docker client talking to this daemon.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_CONFIG", d.join("config"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()));
        c
    }

    /// `docker ARGS` (two minutes at most).
    pub fn call(&self, args: &[&str]) -> ClientOut {
        self.call_with_timeout(args, 120)
    }

    pub fn call_with_timeout(&self, args: &[&str], secs: u64) -> ClientOut {
        run_captured(
            self.cmd(),
            args,
            &self.dir.path().join("scratch"),
            Duration::from_secs(secs),
        )
    }

    /// `docker run FLAGS IMAGE CMD...`.
    pub fn run(&self, flags: &[&str], cmd: &[&str]) -> ClientOut {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(cmd);
        self.call(&args)
    }

    /// `docker inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.call(&["inspect", "--format", format, name]);
        out.assert_ok();
        out.text().to_string()
    }

    /// The full id of a container.
    pub fn id_of(&self, name: &str) -> String {
        self.inspect(name, "{{.Id}}")
    }

    /// hull's `--root` as dockerd's runc shim passes it (`<exec-root>/runtime-runc/<ns>`).
    pub fn hull_roots(&self) -> Vec<PathBuf> {
        let base = self.dir.path().join("exec/runtime-runc");
        std::fs::read_dir(base)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// The v1 cgroup directory of a container in `controller`'s hierarchy.
    pub fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        PathBuf::from(format!(
            "/sys/fs/cgroup/{controller}{}/{id}",
            self.cgroup_parent
        ))
    }

    /// Read a v1 cgroup file of a container (trimmed), or None when absent.
    pub fn cgroup_file(&self, controller: &str, id: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.cgroup_dir(controller, id).join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// What is left: containers, hull state, container cgroups.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let ps = self.call(&["ps", "-a", "-q"]);
        if !ps.text().is_empty() {
            left.push(format!("containers: {}", ps.text()));
        }
        for root in self.hull_roots() {
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.starts_with('.') {
                        left.push(format!("hull state {:?}", e.path()));
                    }
                }
            }
        }
        for d in crate::cgroup_dirs(&self.cgroup_parent) {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        left.push(format!("cgroup {:?}", e.path()));
                    }
                }
            }
        }
        left
    }

    /// Nothing is left (`--rm` cleans up asynchronously: give it 10 s).
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        let mut left = Vec::new();
        let clean = wait_until(Duration::from_secs(10), || {
            left = self.leftovers();
            left.is_empty()
        });
        assert!(clean, "leftovers: {left:#?}");
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ps = self.call_with_timeout(&["ps", "-a", "-q"], 20);
        let ids: Vec<&str> = ps.stdout.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force"];
            args.extend(ids);
            let _ = self.call_with_timeout(&args, 60);
        }
        if let Some(mut daemon) = self.daemon.take() {
            signal(daemon.id() as i32, libc::SIGTERM);
            if wait_child(&mut daemon, Duration::from_secs(20)).is_none() {
                eprintln!("dockerd did not stop on SIGTERM within 20 s; killed");
            }
        }
        // dockerd's containerd and any shim mention our temp dir on their command line.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for pid in processes_mentioning(&prefix) {
            signal(pid, libc::SIGKILL);
        }
        unmount_under(&prefix);
        for d in crate::cgroup_dirs(&self.cgroup_parent) {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}
