//! OCI bundles built from busybox-static, with a runc-default-shaped `config.json`.

use crate::skip::BUSYBOX;
use crate::util::unique;
use serde_json::{json, Value};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tempfile::TempDir;

/// The cgroup parent every test container goes under (`/hull-e2e/<tag>`).
pub const CGROUP_PARENT: &str = "/hull-e2e";

fn applets() -> &'static Vec<String> {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let out = std::process::Command::new(BUSYBOX).arg("--list").output();
        let mut v: Vec<String> = match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            Err(_) => vec![],
        };
        // The applets the tests rely on, in case --list is unavailable.
        for a in [
            "sh", "echo", "cat", "ls", "sleep", "true", "false", "id", "hostname", "mount", "ps",
            "grep", "head", "env", "readlink", "stat", "touch", "mkdir", "wc", "kill", "pwd",
            "tty", "test", "wait", "uname", "sed", "tr", "cut",
        ] {
            if !v.iter().any(|x| x == a) {
                v.push(a.to_string());
            }
        }
        v.retain(|a| !a.is_empty() && !a.contains('/') && a != "busybox");
        v
    })
}

/// An OCI bundle in its own temp dir. `config` is edited with the builder methods (or
/// directly) and written to `config.json` by [`Bundle::write`], which every
/// [`crate::Runtime`] command taking a bundle calls first.
pub struct Bundle {
    dir: TempDir,
    /// The config.json document.
    pub config: Value,
    /// Unique tag of this bundle (used for its cgroupsPath).
    pub tag: String,
    /// When false, `write` leaves config.json alone (tests of broken bundles).
    pub write_config: bool,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    /// A fresh bundle: rootfs with busybox + applet symlinks, /etc/passwd and /etc/group
    /// (root, user 1000, group 2000 "extra"), config running `sh` with a unique cgroupsPath.
    pub fn new() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("hull-e2e-bundle-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in [
            "bin",
            "proc",
            "sys",
            "dev",
            "tmp",
            "etc",
            "root",
            "home/user",
            "mnt",
            "var",
        ] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
            .unwrap_or_else(|e| panic!("copy {BUSYBOX}: {e}"));
        for a in applets() {
            let _ = symlink("busybox", rootfs.join("bin").join(a));
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nuser:x:1000:\nextra:x:2000:user\n",
        )
        .unwrap();
        std::fs::write(rootfs.join("etc/hostname"), "bundle\n").unwrap();
        let tag = unique("e2e");
        let config = default_config(&format!("{CGROUP_PARENT}/{tag}"));
        Bundle {
            dir,
            config,
            tag,
            write_config: true,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }
    /// The cgroupsPath of this bundle (absolute, e.g. `/hull-e2e/e2e-123-4`).
    pub fn cgroups_path(&self) -> String {
        self.config["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Write config.json (unless `write_config` was turned off).
    pub fn write(&self) {
        if self.write_config {
            std::fs::write(
                self.config_path(),
                serde_json::to_vec_pretty(&self.config).unwrap(),
            )
            .expect("write config.json");
        }
    }

    /// Set a value by JSON pointer (`/process/cwd`), creating missing objects on the way.
    pub fn set(&mut self, pointer: &str, v: Value) -> &mut Self {
        let mut cur = &mut self.config;
        let parts: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if let Value::Array(a) = cur {
                let idx: usize = p.parse().expect("array index");
                if last {
                    a[idx] = v;
                    return self;
                }
                cur = &mut a[idx];
                continue;
            }
            if !cur.is_object() {
                *cur = json!({});
            }
            let obj = cur.as_object_mut().unwrap();
            if last {
                obj.insert(p.clone(), v);
                return self;
            }
            cur = obj.entry(p.clone()).or_insert_with(|| json!({}));
        }
        self
    }

    /// Remove a value by JSON pointer (no-op when absent).
    pub fn remove(&mut self, pointer: &str) -> &mut Self {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        if let Some(p) = self.config.pointer_mut(parent) {
            match p {
                Value::Object(o) => {
                    o.remove(key);
                }
                Value::Array(a) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        self
    }

    /// process.args.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }
    /// process.args = ["sh", "-c", script].
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }
    /// Append environment variables (`K=V`).
    pub fn env(&mut self, vars: &[&str]) -> &mut Self {
        let env = self.config["process"]["env"].as_array_mut().unwrap();
        for v in vars {
            env.push(json!(v));
        }
        self
    }
    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.set("/process/cwd", json!(cwd))
    }
    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.set("/process/terminal", json!(on))
    }
    pub fn hostname(&mut self, h: &str) -> &mut Self {
        self.set("/hostname", json!(h))
    }
    pub fn domainname(&mut self, d: &str) -> &mut Self {
        self.set("/domainname", json!(d))
    }
    pub fn readonly_root(&mut self, ro: bool) -> &mut Self {
        self.set("/root/readonly", json!(ro))
    }
    /// process.user.
    pub fn user(&mut self, uid: u32, gid: u32, additional: &[u32]) -> &mut Self {
        let mut u = json!({"uid": uid, "gid": gid});
        if !additional.is_empty() {
            u["additionalGids"] = json!(additional);
        }
        self.set("/process/user", u)
    }
    /// Add (or replace) an rlimit.
    pub fn rlimit(&mut self, kind: &str, soft: u64, hard: u64) -> &mut Self {
        let rl = self.config["process"]["rlimits"].as_array_mut().unwrap();
        rl.retain(|r| r["type"] != kind);
        rl.push(json!({"type": kind, "soft": soft, "hard": hard}));
        self
    }
    /// Set all capability sets (bounding, effective, permitted, ambient) to `caps`.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        self.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps}),
        )
    }
    pub fn no_new_privileges(&mut self, on: bool) -> &mut Self {
        self.set("/process/noNewPrivileges", json!(on))
    }
    /// Add a namespace (`path` to join an existing one); replaces one of the same type.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        let ns = self.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != kind);
        let mut n = json!({"type": kind});
        if let Some(p) = path {
            n["path"] = json!(p);
        }
        ns.push(n);
        self
    }
    pub fn without_namespace(&mut self, kind: &str) -> &mut Self {
        let ns = self.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != kind);
        self
    }
    /// Append a mount.
    pub fn mount(&mut self, dest: &str, typ: &str, source: &str, options: &[&str]) -> &mut Self {
        let mut m = json!({"destination": dest, "type": typ, "source": source});
        if !options.is_empty() {
            m["options"] = json!(options);
        }
        self.config["mounts"].as_array_mut().unwrap().push(m);
        self
    }
    /// Remove the mount(s) with this destination.
    pub fn without_mount(&mut self, dest: &str) -> &mut Self {
        self.config["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| m["destination"] != dest);
        self
    }
    /// Bind-mount a host path.
    pub fn bind(&mut self, host: &Path, dest: &str, options: &[&str]) -> &mut Self {
        let mut o = vec!["bind"];
        o.extend_from_slice(options);
        self.mount(dest, "bind", host.to_str().unwrap(), &o)
    }
    /// Merge keys into linux.resources.
    pub fn resources(&mut self, r: Value) -> &mut Self {
        let res = self.config["linux"]["resources"].as_object_mut().unwrap();
        for (k, v) in r.as_object().expect("resources object") {
            res.insert(k.clone(), v.clone());
        }
        self
    }
    /// Append a hook of `kind` (prestart, createRuntime, createContainer, startContainer,
    /// poststart, poststop).
    pub fn hook(&mut self, kind: &str, hook: Value) -> &mut Self {
        if !self.config["hooks"].is_object() {
            self.config["hooks"] = json!({});
        }
        let hooks = self.config["hooks"].as_object_mut().unwrap();
        hooks
            .entry(kind)
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(hook);
        self
    }
    pub fn cgroups_path_set(&mut self, p: &str) -> &mut Self {
        self.set("/linux/cgroupsPath", json!(p))
    }
    pub fn annotation(&mut self, k: &str, v: &str) -> &mut Self {
        if !self.config["annotations"].is_object() {
            self.config["annotations"] = json!({});
        }
        self.config["annotations"][k] = json!(v);
        self
    }
    /// A user namespace mapping container 0..size to host `host_id`.. (uid and gid).
    pub fn userns(&mut self, host_id: u32, size: u32) -> &mut Self {
        self.namespace("user", None);
        self.set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": host_id, "size": size}]),
        );
        self.set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": host_id, "size": size}]),
        )
    }
}

impl Drop for Bundle {
    /// Belt and braces: if a runtime left this bundle's cgroup behind, kill what is in it
    /// (only processes of this unique cgroup, i.e. this test's container) and rmdir it.
    fn drop(&mut self) {
        let cg = self.cgroups_path();
        if cg.is_empty() || !cg.starts_with(CGROUP_PARENT) {
            return;
        }
        for d in crate::check::cgroup_dirs(&cg) {
            if !d.exists() {
                continue;
            }
            for _ in 0..100 {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                let _ = std::fs::write(d.join("freezer.state"), "THAWED");
                for p in pids {
                    crate::util::signal(p, libc::SIGKILL);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// The default config, shaped like `runc spec` but with terminal false and a cgroupsPath.
pub fn default_config(cgroups_path: &str) -> Value {
    let (_, hard) = crate::util::nofile_limits();
    let nofile = hard.min(1024);
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "hull-e2e",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}
