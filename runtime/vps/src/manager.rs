//! The operations of `hull vps`: create, start, stop, set, destroy, ... on partitions.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Serialize;

use hull_runtime::container::Runtime;
use hull_runtime::exec::ExecOptions;
use hull_runtime::userns_auto;

use crate::config::{PartitionConfig, Resources, RestartPolicy, Size};
use crate::monitor::{State, Status};
use crate::paths::{Dirs, PartitionPaths};
use crate::{disk, idshift, io, stats, template, Error};

/// Where a new partition's root filesystem comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A named template (`debian`).
    Template(String),
    /// A root filesystem archive.
    Tar(PathBuf),
}

/// `hull vps create`.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: String,
    pub source: Source,
    pub hostname: Option<String>,
    pub resources: Resources,
    pub autostart: bool,
    pub restart: RestartPolicy,
    pub network: crate::network::NetworkConfig,
}

/// Changes of `hull vps set`; None leaves a value as it is.
#[derive(Debug, Clone, Default)]
pub struct SetRequest {
    pub cpu_shares: Option<u64>,
    pub cpus: Option<f64>,
    pub cpuset: Option<String>,
    pub memory: Option<Size>,
    pub swap: Option<Size>,
    pub pids: Option<i64>,
    pub io_weight: Option<u16>,
    pub io_read_bps: Option<Vec<String>>,
    pub io_write_bps: Option<Vec<String>>,
    pub disk: Option<Size>,
    pub hostname: Option<String>,
    pub restart: Option<RestartPolicy>,
    pub stop_timeout: Option<u64>,
}

/// One line of `hull vps list`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub name: String,
    pub state: String,
    pub ready: bool,
    pub autostart: bool,
    pub ips: Vec<String>,
    /// Seconds since the running partition started.
    pub uptime: Option<u64>,
    pub memory_used: Option<u64>,
    pub memory_limit: Option<u64>,
    pub disk_used: Option<u64>,
    pub disk_size: u64,
    pub init_pid: Option<i32>,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The partition manager over the host directories `dirs`.
#[derive(Debug, Clone, Default)]
pub struct Manager {
    pub dirs: Dirs,
}

/// Removes what a failed `create` made.
struct CreateGuard<'a> {
    paths: &'a PartitionPaths,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if crate::manager::mounted(&self.paths.root) {
            let _ = disk::unmount(&self.paths.root, true);
        }
        let _ = std::fs::remove_dir_all(&self.paths.dir);
    }
}

fn random_uuid() -> Result<String, Error> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io("reading", "/dev/urandom"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Manager {
    /// The runtime the partitions' containers live in.
    pub fn runtime(&self) -> Runtime {
        Runtime {
            root: self.dirs.containers(),
            systemd_cgroup: false,
            rootless: false,
            init_binary: None,
        }
    }

    fn existing(&self, name: &str) -> Result<(PartitionPaths, PartitionConfig), Error> {
        crate::config::validate_name(name)?;
        let paths = self.dirs.partition(name);
        if !paths.config.is_file() {
            return Err(Error::NoSuch(name.into()));
        }
        let cfg = PartitionConfig::load(&paths.config)?;
        Ok((paths, cfg))
    }

    /// `hull vps create`: a disk image with the root filesystem, owned by the partition's
    /// own id range, and its partition.toml. Leaves nothing behind when it fails.
    pub fn create(&self, req: &CreateRequest) -> Result<PartitionConfig, Error> {
        crate::config::validate_name(&req.name)?;
        let template_name = match &req.source {
            Source::Template(t) => {
                template::known(t)?;
                "debian-12".to_string()
            }
            Source::Tar(p) => format!("tar:{}", crate::paths::absolute(p).display()),
        };
        std::fs::create_dir_all(&self.dirs.data).map_err(io("creating", &self.dirs.data))?;
        let paths = self.dirs.partition(&req.name);
        match std::fs::create_dir(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(req.name.clone()))
            }
            Err(e) => return Err(io("creating", &paths.dir)(e)),
        }
        let mut guard = CreateGuard {
            paths: &paths,
            armed: true,
        };
        let id_base = userns_auto::allocate(
            &self.dirs.data,
            &paths.dir,
            userns_auto::Pool::from_system()?,
        )?;
        let cfg = PartitionConfig {
            name: req.name.clone(),
            hostname: req.hostname.clone().unwrap_or_else(|| req.name.clone()),
            template: template_name,
            uuid: random_uuid()?,
            id_base,
            autostart: req.autostart,
            restart: req.restart,
            stop_timeout: 60,
            resources: req.resources.clone(),
            network: req.network.clone(),
        };
        cfg.validate()?;
        let image = disk::DiskImage::create(&paths.disk, cfg.resources.disk.0)?;
        std::fs::create_dir_all(&paths.root).map_err(io("creating", &paths.root))?;
        image.mount(&paths.root)?;
        match &req.source {
            Source::Template(_) => {
                let tree = template::debian(&self.dirs.cache)?;
                template::copy_tree(&tree, &paths.root)?;
            }
            Source::Tar(archive) => template::extract_tar(archive, &paths.root)?,
        }
        template::prepare(&paths.root)?;
        let etc = paths.root.join("etc");
        std::fs::create_dir_all(&etc).map_err(io("creating", &etc))?;
        let hostname = etc.join("hostname");
        std::fs::write(&hostname, format!("{}\n", cfg.hostname))
            .map_err(io("writing", &hostname))?;
        let shifted = idshift::shift_tree(
            &paths.root,
            id_base,
            hull_specs::annotations::USERNS_AUTO_SIZE,
        )?;
        tracing::info!(partition = %cfg.name, ?shifted, "root filesystem owned by the partition's ids");
        disk::unmount(&paths.root, false)?;
        cfg.save(&paths.config)?;
        guard.armed = false;
        Ok(cfg)
    }

    /// The monitor's status, if its monitor still runs.
    fn live_status(&self, paths: &PartitionPaths) -> Option<Status> {
        let st = Status::load(paths)?;
        let alive = st.monitor_pid > 0
            && std::fs::read(format!("/proc/{}/cmdline", st.monitor_pid))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"monitor"));
        alive.then_some(st)
    }

    /// `hull vps start`: start its monitor (detached: a session of its own) with `exe`
    /// (`hull-vps`, run as `hull-vps monitor NAME`), and return once the partition runs — or with the reason it failed.
    /// With `wait_ready`, also wait for systemd's READY=1.
    pub fn start(&self, name: &str, exe: &Path, wait_ready: bool) -> Result<(), Error> {
        // Loaded (and so checked) here for a clear error; the monitor reads it again.
        let (paths, _) = self.existing(name)?;
        if let Some(st) = self.live_status(&paths) {
            return Err(Error::WrongState {
                name: name.into(),
                state: st.state.to_string(),
                hint: "stop it first, or use restart".into(),
            });
        }
        std::fs::create_dir_all(&paths.run).map_err(io("creating", &paths.run))?;
        let _ = std::fs::remove_file(&paths.status);
        let log_path = paths.dir.join("monitor.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("opening", &log_path))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = std::process::Command::new(exe);
        // A daemon: its own session, in /, holding no terminal and no directory of ours.
        cmd.args(["monitor", name])
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(io("starting the monitor", exe))?;
        let limit = Duration::from_secs(if wait_ready { 300 } else { 120 });
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read(&log_path).unwrap_or_default();
                let tail = String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..]);
                let reason = tail
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
                    .to_string();
                return Err(Error::Monitor {
                    name: name.into(),
                    detail: format!(
                        "exited ({status}) before the partition ran: {reason} (log: {})",
                        log_path.display()
                    ),
                });
            }
            if let Some(st) = Status::load(&paths) {
                let up = st.state == State::Running && (!wait_ready || st.ready);
                if up {
                    return Ok(());
                }
            }
            if t0.elapsed() > limit {
                return Err(Error::Monitor {
                    name: name.into(),
                    detail: format!(
                        "the partition did not {} within {} s (log: {}, console: {}); stop it with hull vps stop {name}",
                        if wait_ready { "report ready" } else { "start" },
                        limit.as_secs(),
                        log_path.display(),
                        paths.console_log.display()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `hull vps stop`: ask the monitor for a clean shutdown (SIGRTMIN+3; forced after the
    /// partition's stop_timeout) and wait until it is down. A partition whose monitor died
    /// is cleaned up directly.
    pub fn stop(&self, name: &str) -> Result<(), Error> {
        let (paths, cfg) = self.existing(name)?;
        if self.live_status(&paths).is_none() {
            self.clean_up_after_monitor(&paths);
            return Ok(());
        }
        let mut s =
            UnixStream::connect(&paths.socket).map_err(io("connecting to", &paths.socket))?;
        s.set_read_timeout(Some(Duration::from_secs(cfg.stop_timeout + 60)))
            .map_err(io("configuring", &paths.socket))?;
        s.write_all(b"stop\n")
            .map_err(io("writing to", &paths.socket))?;
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        // The monitor answers "stopped" and exits; EOF without it is a monitor that died.
        let t0 = Instant::now();
        while self.live_status(&paths).is_some() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !reply.starts_with("stopped") {
            self.clean_up_after_monitor(&paths);
        }
        Ok(())
    }

    /// What a dead monitor left: the container, the mount.
    fn clean_up_after_monitor(&self, paths: &PartitionPaths) {
        let rt = self.runtime();
        let id = Dirs::container_id(&paths.name);
        if rt.state(&id).is_ok() {
            if let Err(e) = rt.delete(&id, true) {
                tracing::warn!("deleting {id}: {e}");
            }
        }
        if crate::manager::mounted(&paths.root) {
            let _ = disk::unmount(&paths.root, false).or_else(|_| disk::unmount(&paths.root, true));
        }
        let _ = crate::network::teardown(&paths.name);
        let _ = std::fs::remove_dir_all(&paths.run);
    }

    /// `hull vps restart`.
    pub fn restart(&self, name: &str, exe: &Path, wait_ready: bool) -> Result<(), Error> {
        self.stop(name)?;
        self.start(name, exe, wait_ready)
    }

    /// `hull vps list` / `status`.
    pub fn info(&self, name: &str) -> Result<PartitionInfo, Error> {
        let (paths, cfg) = self.existing(name)?;
        let live = self.live_status(&paths);
        let last = Status::load(&paths);
        let state = match (&live, &last) {
            (Some(st), _) => st.state.to_string(),
            (None, Some(st)) if st.state == State::Failed => "failed".into(),
            _ => "stopped".into(),
        };
        let running = live.as_ref().filter(|s| s.init_pid > 0);
        let (memory_used, memory_limit) = match running {
            Some(_) => self.memory(&cfg.name),
            None => (None, cfg.resources.memory.map(|m| m.0)),
        };
        let disk_used = running
            .and_then(|_| disk::usage(&paths.root).ok())
            .map(|u| u.used);
        Ok(PartitionInfo {
            name: cfg.name.clone(),
            state,
            ready: running.is_some_and(|s| s.ready),
            autostart: cfg.autostart,
            ips: running
                .map(|s| crate::network::addresses(s.init_pid))
                .unwrap_or_default(),
            uptime: running.map(|s| now().saturating_sub(s.since)),
            memory_used,
            memory_limit,
            disk_used,
            disk_size: disk::DiskImage::open(&paths.disk)
                .and_then(|d| d.size())
                .unwrap_or(cfg.resources.disk.0),
            init_pid: running.map(|s| s.init_pid),
            restarts: last.as_ref().map_or(0, |s| s.restarts),
            last_exit: last.as_ref().and_then(|s| s.last_exit.clone()),
            message: last.and_then(|s| s.message),
        })
    }

    pub fn list(&self) -> Result<Vec<PartitionInfo>, Error> {
        self.dirs.names().iter().map(|n| self.info(n)).collect()
    }

    fn cgroup_dirs(&self, name: &str) -> Option<std::collections::BTreeMap<String, PathBuf>> {
        hull_runtime::cgroups::ContainerCgroup::load(&format!("/hull-vps/{name}"))
            .ok()
            .map(|cg| cg.dirs)
    }

    fn memory(&self, name: &str) -> (Option<u64>, Option<u64>) {
        let Some(dirs) = self.cgroup_dirs(name) else {
            return (None, None);
        };
        stats::counters(&dirs)
            .into_iter()
            .find(|c| c.resource == "memory")
            .map_or((None, None), |c| (c.held, c.limit))
    }

    /// `hull vps stats`: the beancounters of a running partition.
    pub fn stats(&self, name: &str) -> Result<Vec<stats::Counter>, Error> {
        let (paths, _) = self.existing(name)?;
        let running = self.live_status(&paths).filter(|s| s.init_pid > 0);
        if running.is_none() {
            return Err(Error::WrongState {
                name: name.into(),
                state: "stopped".into(),
                hint: "accounting exists while it runs".into(),
            });
        }
        let dirs = self.cgroup_dirs(name).ok_or_else(|| Error::Monitor {
            name: name.into(),
            detail: "its cgroup is gone".into(),
        })?;
        let mut rows = stats::counters(&dirs);
        if let Ok(u) = disk::usage(&paths.root) {
            rows.push(stats::disk_counter(u.used, u.total));
        }
        Ok(rows)
    }

    /// `hull vps set`: change the configuration; for a running partition the limits (and a
    /// larger disk) take effect at once.
    pub fn set(&self, name: &str, req: &SetRequest) -> Result<PartitionConfig, Error> {
        let (paths, old) = self.existing(name)?;
        let mut cfg = old.clone();
        let r = &mut cfg.resources;
        macro_rules! opt {
            ($($field:ident),+) => { $(if let Some(v) = &req.$field { r.$field = Some(v.clone()); })+ };
        }
        opt!(cpu_shares, cpus, cpuset, memory, swap, pids, io_weight);
        if let Some(v) = &req.io_read_bps {
            r.io_read_bps = v.clone();
        }
        if let Some(v) = &req.io_write_bps {
            r.io_write_bps = v.clone();
        }
        if let Some(d) = req.disk {
            if d < old.resources.disk {
                return Err(Error::Invalid {
                    what: "--disk".into(),
                    reason: format!(
                        "{d} is smaller than the disk's {}: disks only grow",
                        old.resources.disk
                    ),
                });
            }
            r.disk = d;
        }
        if let Some(h) = &req.hostname {
            cfg.hostname = h.clone();
        }
        if let Some(p) = req.restart {
            cfg.restart = p;
        }
        if let Some(t) = req.stop_timeout {
            cfg.stop_timeout = t;
        }
        cfg.validate()?;
        let running = self.live_status(&paths).is_some_and(|s| s.init_pid > 0);
        if running && cfg.resources != old.resources {
            let mut resources = crate::spec::resources(&cfg.resources)?;
            // Device rules are fixed at create; update leaves them alone anyway.
            resources.set_devices(None);
            self.runtime()
                .update(&Dirs::container_id(name), &resources)?;
        }
        if cfg.resources.disk > old.resources.disk {
            let mountpoint = crate::manager::mounted(&paths.root).then_some(paths.root.as_path());
            disk::DiskImage::open(&paths.disk)?.grow(mountpoint, cfg.resources.disk.0)?;
        }
        cfg.save(&paths.config)?;
        Ok(cfg)
    }

    /// `hull vps autostart on|off`.
    pub fn set_autostart(&self, name: &str, on: bool) -> Result<(), Error> {
        let (paths, mut cfg) = self.existing(name)?;
        cfg.autostart = on;
        cfg.save(&paths.config)
    }

    /// `hull vps start --all-autostart`: every partition marked autostart that is not
    /// running; returns (name, error) for those that failed.
    pub fn start_autostart(&self, exe: &Path) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        for name in self.dirs.names() {
            let Ok((paths, cfg)) = self.existing(&name) else {
                continue;
            };
            if !cfg.autostart || self.live_status(&paths).is_some() {
                continue;
            }
            if let Err(e) = self.start(&name, exe, false) {
                failed.push((name, e));
            }
        }
        failed
    }

    /// `hull vps destroy`: stop it, then remove its disk, configuration and state.
    pub fn destroy(&self, name: &str) -> Result<(), Error> {
        let (paths, _) = self.existing(name)?;
        self.stop(name)?;
        self.clean_up_after_monitor(&paths);
        if crate::manager::mounted(&paths.root) {
            return Err(Error::WrongState {
                name: name.into(),
                state: "mounted".into(),
                hint: format!("{} is still mounted (in use?)", paths.root.display()),
            });
        }
        disk::DiskImage::open(&paths.disk)?.destroy()?;
        std::fs::remove_dir_all(&paths.dir).map_err(io("removing", &paths.dir))?;
        let _ = std::fs::remove_dir_all(&paths.run);
        Ok(())
    }

    /// `hull vps enter`: run `cmd` (a login shell when empty) in all the partition's
    /// namespaces as its root, with a terminal when stdin is one. Returns its exit status.
    pub fn enter(&self, name: &str, cmd: &[String]) -> Result<i32, Error> {
        let (paths, _) = self.existing(name)?;
        if self
            .live_status(&paths)
            .filter(|s| s.init_pid > 0)
            .is_none()
        {
            return Err(Error::WrongState {
                name: name.into(),
                state: "stopped".into(),
                hint: format!("start it first: hull vps start {name}"),
            });
        }
        let args: Vec<String> = if cmd.is_empty() {
            let shell = if paths.root.join("bin/bash").exists() {
                "/bin/bash"
            } else {
                "/bin/sh"
            };
            vec![shell.into(), "-l".into()]
        } else {
            cmd.to_vec()
        };
        let tty = nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false);
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        let caps = crate::spec::capabilities();
        let process: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
            "terminal": tty,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                format!("TERM={term}"),
                "HOME=/root",
                "container=hull",
            ],
            "cwd": "/root",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        }))
        .map_err(|e| Error::Invalid {
            what: "enter".into(),
            reason: e.to_string(),
        })?;
        let code = self.runtime().exec(
            &Dirs::container_id(name),
            &ExecOptions {
                process,
                detach: false,
                pid_file: None,
                console_socket: None,
                preserve_fds: 0,
                stdio: None,
            },
        )?;
        Ok(code)
    }

    /// `hull vps console`: attach this terminal to the partition's console until Ctrl-]
    /// (or the partition stops).
    pub fn console(&self, name: &str) -> Result<(), Error> {
        let (paths, _) = self.existing(name)?;
        if self.live_status(&paths).is_none() {
            return Err(Error::WrongState {
                name: name.into(),
                state: "stopped".into(),
                hint: format!("its log is {}", paths.console_log.display()),
            });
        }
        let mut s =
            UnixStream::connect(&paths.socket).map_err(io("connecting to", &paths.socket))?;
        s.write_all(b"attach\n")
            .map_err(io("writing to", &paths.socket))?;
        let mut ok = [0u8; 3];
        s.read_exact(&mut ok)
            .map_err(io("reading from", &paths.socket))?;
        if &ok != b"ok\n" {
            return Err(Error::Monitor {
                name: name.into(),
                detail: "refused to attach the console".into(),
            });
        }
        eprintln!("Connected to the console of partition {name}. Detach with Ctrl-] (^]).\r");
        let _raw = hull_inside::terminal::RawMode::enable_on_stdin();
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut stdin_open = true;
        loop {
            let mut fds = vec![PollFd::new(s.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    return Err(Error::Monitor {
                        name: name.into(),
                        detail: format!("poll: {e}"),
                    })
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut buf = [0u8; 4096];
            if ready[0] {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                }
            }
            if stdin_open && ready.get(1).copied().unwrap_or(false) {
                match nix::unistd::read(stdin, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let data = &buf[..n];
                        if let Some(i) = data.iter().position(|b| *b == 0x1d) {
                            let _ = s.write_all(&data[..i]);
                            break;
                        }
                        if s.write_all(data).is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let _ = std::io::stdout().flush();
        eprintln!("\r\nDetached from the console of partition {name}.\r");
        Ok(())
    }
}

/// Whether something is mounted at `target`.
pub(crate) fn mounted(target: &Path) -> bool {
    disk::find_mount(target).ok().flatten().is_some()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
