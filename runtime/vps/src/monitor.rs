//! The monitor: one small process per running partition (`hull-vps monitor NAME`, started
//! detached by `hull vps start`), so a partition outlives the command that started it. It
//! creates and starts the partition's container as its own child, holds the console pty
//! (appending everything to `console.log` and relaying it to `hull vps console`), receives
//! systemd's readiness on a notify socket, reaps, carries out `stop` (SIGRTMIN+3, then
//! SIGKILL after the timeout) and restarts the partition by its restart policy.
//!
//! Its socket (`/run/hull-vps/NAME/monitor.sock`, root only) takes one line per connection:
//! `attach` (reply `ok`, then console bytes both ways), `stop` (reply `stopped` once the
//! partition is down) or `status` (reply: the status JSON).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use hull_runtime::container::{CreateOptions, Runtime};

use crate::config::{PartitionConfig, RestartPolicy};
use crate::paths::{Dirs, PartitionPaths};
use crate::{disk, io, spec, Error};

/// systemd's "halt" request (its manual "Container Interface").
pub const SIGRTMIN_PLUS_3: i32 = 37;
/// The console log is cut in half (the older half dropped) beyond this size.
const CONSOLE_LOG_MAX: u64 = 1 << 20;
/// A partition that needs more restarts than this within [`CRASH_WINDOW`] is left stopped.
const CRASH_LIMIT: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// A command line longer than this is refused.
const MAX_COMMAND: usize = 64;

/// What a partition is doing, as its monitor last wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        })
    }
}

/// `/run/hull-vps/NAME/status.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub monitor_pid: i32,
    /// The partition's PID 1 as seen on the host (0 when not running).
    pub init_pid: i32,
    /// When the running partition was started, seconds since the epoch.
    pub since: u64,
    /// systemd said READY=1 (boot finished).
    pub ready: bool,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// systemd's last STATUS= text, or why the monitor gave up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Status {
    pub fn load(paths: &PartitionPaths) -> Option<Status> {
        let text = std::fs::read_to_string(&paths.status).ok()?;
        serde_json::from_str(&text).ok()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the partition's PID 1 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Whether the monitor boots the partition again after PID 1 ended by itself. In a pid
/// namespace the kernel turns `reboot(2)` into the death of PID 1 by SIGHUP (restart) and
/// `poweroff`/`halt` into SIGINT.
pub fn restart_wanted(policy: RestartPolicy, exit: Exit) -> bool {
    match exit {
        Exit::Signal(libc::SIGHUP) => true,
        Exit::Signal(libc::SIGINT) => false,
        Exit::Code(0) => policy == RestartPolicy::Always,
        _ => policy != RestartPolicy::No,
    }
}

/// A command read from the monitor socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Attach,
    Stop,
    Status,
}

pub fn parse_command(line: &str) -> Result<Command, String> {
    match line.trim_end_matches(['\n', '\r']) {
        "attach" => Ok(Command::Attach),
        "stop" => Ok(Command::Stop),
        "status" => Ok(Command::Status),
        other => Err(format!(
            "unknown command {:?} (attach, stop, status)",
            other.chars().take(MAX_COMMAND).collect::<String>()
        )),
    }
}

/// The monitor of one partition.
struct Monitor {
    paths: PartitionPaths,
    /// lxcfs's mount point, when it serves this host.
    lxcfs: Option<std::path::PathBuf>,
    runtime: Runtime,
    id: String,
    status: Status,
    log: File,
    listener: UnixListener,
    notify: UnixDatagram,
    signals: SignalFd,
    /// `hull vps console` sessions.
    attached: Vec<UnixStream>,
    /// `hull vps stop` callers, answered when the partition is down.
    stop_waiters: Vec<UnixStream>,
    stop_requested: bool,
    kill_at: Option<Instant>,
    restarts_at: Vec<Instant>,
}

/// One running boot of the partition.
struct Boot {
    pid: Pid,
    exited: hull_runtime::process::PidFd,
    master: Option<OwnedFd>,
    /// The pty's other end, held so the master does not read EIO whenever no process in
    /// the partition has its console open (systemd opens it per message).
    _peer: Option<OwnedFd>,
}

/// The slave end of pty master `master` (TIOCGPTPEER: by descriptor, as the pty lives in
/// the partition's own devpts instance, which has no path here).
fn pty_peer(master: &OwnedFd) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor (or -1);
    // `master` is a valid open descriptor for the duration of the call.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a non-negative return is a descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `hull-vps monitor NAME`: run partition `name` until it is stopped. Returns when it is.
pub fn run(dirs: &Dirs, name: &str) -> Result<(), Error> {
    // A name from the command line becomes paths: checked like every other command's.
    crate::config::validate_name(name)?;
    let paths = dirs.partition(name);
    std::fs::create_dir_all(&paths.run).map_err(io("creating", &paths.run))?;
    // Search-only for others: the partition's init (an unprivileged host id) resolves the
    // notify directory's bind source through it; the monitor socket itself is root's.
    std::fs::set_permissions(&paths.run, std::fs::Permissions::from_mode(0o711))
        .map_err(io("chmod", &paths.run))?;
    // One monitor per partition: the lock lives as long as this process.
    let lock_path = paths.run.join("monitor.lock");
    let lock_file = File::create(&lock_path).map_err(io("creating", &lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| Error::WrongState {
            name: name.into(),
            state: "running".into(),
            hint: "its monitor is already running".into(),
        })?;

    // Before the signal mask below: lxcfs would inherit it.
    let lxcfs = match crate::lxcfs::ensure() {
        Ok(dir) => Some(dir),
        Err(e) => {
            tracing::warn!("/proc inside shows the host's figures: {e}");
            None
        }
    };

    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| monitor_err(name, format!("sigprocmask: {e}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| monitor_err(name, format!("signalfd: {e}")))?;

    let _ = std::fs::remove_file(&paths.socket);
    let listener = UnixListener::bind(&paths.socket).map_err(io("binding", &paths.socket))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod", &paths.socket))?;
    listener
        .set_nonblocking(true)
        .map_err(io("configuring", &paths.socket))?;
    let notify = notify_socket(&paths)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(&paths.console_log)
        .map_err(io("opening", &paths.console_log))?;

    let runtime = Runtime {
        root: dirs.containers(),
        systemd_cgroup: false,
        rootless: false,
        init_binary: None,
    };
    let mut m = Monitor {
        lxcfs,
        id: Dirs::container_id(name),
        paths,
        runtime,
        status: Status {
            state: State::Starting,
            monitor_pid: std::process::id() as i32,
            init_pid: 0,
            since: 0,
            ready: false,
            restarts: 0,
            last_exit: None,
            message: None,
        },
        log,
        listener,
        notify,
        signals,
        attached: Vec::new(),
        stop_waiters: Vec::new(),
        stop_requested: false,
        kill_at: None,
        restarts_at: Vec::new(),
    };
    m.save();
    let outcome = m.serve();
    if let Err(e) = &outcome {
        m.status.message = Some(e.to_string());
    }
    m.shut_down(outcome.is_err());
    outcome
}

fn monitor_err(name: &str, detail: String) -> Error {
    Error::Monitor {
        name: name.into(),
        detail,
    }
}

/// The datagram socket systemd reports readiness to, in a directory bound into the
/// partition, writable by the partition's root (a host id of its range). Host users can
/// reach it too (the run directory is searchable); the monitor checks each sender.
fn notify_socket(paths: &PartitionPaths) -> Result<UnixDatagram, Error> {
    std::fs::create_dir_all(&paths.notify_dir).map_err(io("creating", &paths.notify_dir))?;
    std::fs::set_permissions(&paths.notify_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &paths.notify_dir))?;
    let path = paths.notify_dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).map_err(io("binding", &path))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(io("chmod", &path))?;
    sock.set_nonblocking(true)
        .map_err(io("configuring", &path))?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(|e| io("configuring", &path)(e.into()))?;
    Ok(sock)
}

impl Monitor {
    fn save(&self) {
        let tmp = self.paths.status.with_extension("json.tmp");
        let ok = serde_json::to_vec(&self.status)
            .map_err(std::io::Error::other)
            .and_then(|body| std::fs::write(&tmp, body))
            .and_then(|()| std::fs::rename(&tmp, &self.paths.status));
        if let Err(e) = ok {
            tracing::warn!("writing {}: {e}", self.paths.status.display());
        }
    }

    /// Boot, wait, and boot again while the restart policy says so.
    fn serve(&mut self) -> Result<(), Error> {
        loop {
            let cfg = PartitionConfig::load(&self.paths.config)?;
            let mut boot = self.boot(&cfg)?;
            self.status.state = State::Running;
            self.status.init_pid = boot.pid.as_raw();
            self.status.since = now();
            self.status.ready = false;
            self.status.message = None;
            self.save();
            let exit = self.watch(&mut boot, &cfg)?;
            self.status.last_exit = Some(exit.to_string());
            self.status.init_pid = 0;
            if let Err(e) = self.runtime.delete(&self.id, true) {
                tracing::warn!("deleting container {}: {e}", self.id);
            }
            if let Err(e) = crate::network::teardown(&self.paths.name) {
                tracing::warn!("removing the network of {}: {e}", self.paths.name);
            }
            tracing::info!(partition = %self.paths.name, %exit, "partition stopped");
            if self.stop_requested || !restart_wanted(cfg.restart, exit) {
                return Ok(());
            }
            let t = Instant::now();
            self.restarts_at
                .retain(|r| t.duration_since(*r) < CRASH_WINDOW);
            if self.restarts_at.len() >= CRASH_LIMIT {
                self.status.state = State::Failed;
                return Err(monitor_err(
                    &self.paths.name,
                    format!(
                        "restarted {CRASH_LIMIT} times within {} s; left stopped (last: {exit})",
                        CRASH_WINDOW.as_secs()
                    ),
                ));
            }
            self.restarts_at.push(t);
            self.status.restarts += 1;
            self.status.state = State::Starting;
            self.save();
        }
    }

    /// Mount the disk, write the bundle, create and start the container.
    fn boot(&mut self, cfg: &PartitionConfig) -> Result<Boot, Error> {
        let p = &self.paths;
        if !crate::manager::mounted(&p.root) {
            disk::DiskImage::open(&p.disk)?.mount(&p.root)?;
        }
        let spec = spec::build(cfg, &p.root, &p.notify_dir, self.lxcfs.as_deref())?;
        std::fs::create_dir_all(&p.bundle).map_err(io("creating", &p.bundle))?;
        let config = p.bundle.join("config.json");
        let body = serde_json::to_vec_pretty(&spec).map_err(|e| Error::Invalid {
            what: "generated config".into(),
            reason: e.to_string(),
        })?;
        std::fs::write(&config, body).map_err(io("writing", &config))?;
        // A container left by a monitor that died (a crash, a kill -9) goes first.
        if self.runtime.state(&self.id).is_ok() {
            let _ = self.runtime.delete(&self.id, true);
        }
        let null = File::open("/dev/null").map_err(io("opening", "/dev/null"))?;
        let fd = null.as_raw_fd();
        let created = self.runtime.create_with_console(
            &self.id,
            &CreateOptions {
                bundle: p.bundle.clone(),
                stdio: Some([fd, fd, fd]),
                ..Default::default()
            },
        )?;
        let exited = hull_runtime::process::PidFd::open(created.pid.as_raw(), 0)
            .ok()
            .flatten()
            .ok_or_else(|| monitor_err(&p.name, "the partition's init vanished".into()))?;
        // The network goes into the partition's namespace before systemd starts.
        if let Err(e) = crate::network::setup(&p.name, &cfg.network, created.pid.as_raw()) {
            let _ = self.runtime.delete(&self.id, true);
            let _ = waitpid(created.pid, None);
            let _ = crate::network::teardown(&p.name);
            return Err(e.into());
        }
        if let Err(e) = self.runtime.start(&self.id) {
            let _ = crate::network::teardown(&p.name);
            let _ = self.runtime.delete(&self.id, true);
            let _ = waitpid(created.pid, None);
            return Err(e.into());
        }
        tracing::info!(partition = %p.name, pid = created.pid.as_raw(), "partition started");
        let peer = created.console_master.as_ref().and_then(pty_peer);
        Ok(Boot {
            pid: created.pid,
            exited,
            master: created.console_master,
            _peer: peer,
        })
    }

    /// Serve the console, the socket and the signals until PID 1 ends.
    fn watch(&mut self, boot: &mut Boot, cfg: &PartitionConfig) -> Result<Exit, Error> {
        let mut master_open = boot.master.is_some();
        loop {
            if let Some(exit) = reap(boot.pid) {
                if let Some(m) = &boot.master {
                    // What is still buffered; the held peer keeps the master open, so stop
                    // at the first empty read.
                    let _ = nix::fcntl::fcntl(
                        m.as_fd(),
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                    while master_open && self.pump_console(m.as_fd()) == Pumped::Data {}
                }
                return Ok(exit);
            }
            if let Some(at) = self.kill_at {
                if Instant::now() >= at {
                    tracing::warn!(partition = %self.paths.name, "stop timeout: killing");
                    let _ = self.runtime.kill(&self.id, libc::SIGKILL, true);
                    self.kill_at = None;
                }
            }
            let timeout = match self.kill_at {
                Some(at) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
                }
                None => PollTimeout::NONE,
            };
            let mut fds = vec![
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(boot.exited.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.notify.as_fd(), PollFlags::POLLIN),
            ];
            if let (Some(m), true) = (&boot.master, master_open) {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            let first_client = fds.len();
            for c in &self.attached {
                fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(monitor_err(&self.paths.name, format!("poll: {e}"))),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let signo = info.ssi_signo as i32;
                    if signo == libc::SIGTERM || signo == libc::SIGINT {
                        // The host shuts down, or someone asked the monitor to stop.
                        self.request_stop(boot, cfg);
                    }
                }
            }
            if ready[2] {
                self.accept(boot, cfg);
            }
            if ready[3] {
                self.read_notify();
            }
            if master_open && ready.get(4).copied().unwrap_or(false) {
                if let Some(m) = &boot.master {
                    master_open = self.pump_console(m.as_fd()) != Pumped::Closed;
                }
            }
            // Keyboard input of attached consoles goes to the pty.
            let mut gone = Vec::new();
            for (i, c) in self.attached.iter_mut().enumerate() {
                if !ready.get(first_client + i).copied().unwrap_or(false) {
                    continue;
                }
                let mut buf = [0u8; 4096];
                match c.read(&mut buf) {
                    Ok(0) => gone.push(i),
                    Ok(n) => {
                        if let Some(m) = &boot.master {
                            let _ = write_all_fd(m.as_fd(), &buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(i),
                }
            }
            for i in gone.into_iter().rev() {
                self.attached.remove(i);
            }
        }
    }

    fn request_stop(&mut self, boot: &Boot, cfg: &PartitionConfig) {
        if self.stop_requested {
            return;
        }
        self.stop_requested = true;
        self.status.state = State::Stopping;
        self.save();
        tracing::info!(partition = %self.paths.name, "stopping (SIGRTMIN+3)");
        if let Err(e) = boot.exited.signal(SIGRTMIN_PLUS_3) {
            tracing::warn!("signalling the partition's init: {e}");
        }
        self.kill_at = Some(Instant::now() + Duration::from_secs(cfg.stop_timeout));
    }

    /// Read one command from a new connection and act on it.
    fn accept(&mut self, boot: &Boot, cfg: &PartitionConfig) {
        let Ok((stream, _)) = self.listener.accept() else {
            return;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_COMMAND as u64 + 1)).read_line(&mut line);
        let mut stream = stream;
        if read.is_err() || line.len() > MAX_COMMAND {
            let _ = stream.write_all(b"error: command line too long or not sent\n");
            return;
        }
        match parse_command(&line) {
            Ok(Command::Status) => {
                let body = serde_json::to_string(&self.status).unwrap_or_default();
                let _ = writeln!(stream, "{body}");
            }
            Ok(Command::Stop) => {
                self.request_stop(boot, cfg);
                self.stop_waiters.push(stream);
            }
            Ok(Command::Attach) => {
                if stream.write_all(b"ok\n").is_err() {
                    return;
                }
                // The last lines of the console, so the screen is not blank.
                let _ = stream.write_all(&self.console_tail(2048));
                let _ = stream.set_nonblocking(true);
                self.attached.push(stream);
            }
            Err(e) => {
                let _ = writeln!(stream, "error: {e}");
            }
        }
    }

    /// Readiness from systemd. The socket is reachable from the host too (see
    /// [`notify_socket`]): only datagrams whose sender (SCM_CREDENTIALS, checked by the
    /// kernel) is in the partition's pid namespace count.
    fn read_notify(&mut self) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
        let mut buf = [0u8; 4096];
        let partition_ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.status.init_pid));
        loop {
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let Ok(msg) = recvmsg::<()>(
                self.notify.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) else {
                break;
            };
            let n = msg.bytes;
            let sender = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                    _ => None,
                })
            });
            let inside = sender.is_some_and(|pid| {
                let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
                matches!((&ns, &partition_ns), (Ok(a), Ok(b)) if a == b)
            });
            if !inside {
                tracing::debug!(
                    ?sender,
                    "notify datagram from outside the partition ignored"
                );
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            for line in text.lines() {
                if line == "READY=1" {
                    self.status.ready = true;
                } else if let Some(s) = line.strip_prefix("STATUS=") {
                    self.status.message = Some(s.chars().take(200).collect());
                }
            }
            self.save();
        }
    }

    /// Copy what the pty has to the log and the attached consoles.
    fn pump_console(&mut self, master: std::os::fd::BorrowedFd<'_>) -> Pumped {
        let mut buf = [0u8; 8192];
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(nix::Error::EIO) => Pumped::Closed,
            Ok(n) => {
                let data = &buf[..n];
                self.append_log(data);
                self.attached.retain_mut(|c| match c.write(data) {
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                Pumped::Data
            }
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => Pumped::Nothing,
            Err(_) => Pumped::Closed,
        }
    }

    fn append_log(&mut self, data: &[u8]) {
        let _ = self.log.write_all(data);
        let len = self.log.metadata().map(|m| m.len()).unwrap_or(0);
        if len > CONSOLE_LOG_MAX {
            // Keep the newer half.
            let keep = self.console_tail(CONSOLE_LOG_MAX / 2);
            if self.log.set_len(0).is_ok() {
                let _ = self.log.write_all(&keep);
            }
        }
    }

    fn console_tail(&mut self, max: u64) -> Vec<u8> {
        let len = self.log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut f = match File::open(&self.paths.console_log) {
            Ok(f) => f,
            Err(_) => return Vec::new(),
        };
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
        let mut out = Vec::new();
        let _ = f.read_to_end(&mut out);
        out
    }

    /// The partition is down (or could not start): unmount its disk, answer `stop`
    /// callers, record the final state.
    fn shut_down(&mut self, failed: bool) {
        if self.runtime.state(&self.id).is_ok() {
            let _ = self.runtime.delete(&self.id, true);
        }
        let _ = crate::network::teardown(&self.paths.name);
        if crate::manager::mounted(&self.paths.root) {
            if let Err(e) = disk::unmount(&self.paths.root, false) {
                tracing::warn!("unmounting {}: {e}", self.paths.root.display());
                let _ = disk::unmount(&self.paths.root, true);
            }
        }
        if self.status.state != State::Failed {
            self.status.state = if failed {
                State::Failed
            } else {
                State::Stopped
            };
        }
        self.status.init_pid = 0;
        self.save();
        for mut w in self.stop_waiters.drain(..) {
            let _ = w.write_all(b"stopped\n");
        }
        let _ = std::fs::remove_file(&self.paths.socket);
        let _ = std::fs::remove_dir_all(&self.paths.notify_dir);
    }
}

/// What one read of the console gave.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    Data,
    Nothing,
    Closed,
}

fn reap(pid: Pid) -> Option<Exit> {
    match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(Exit::Signal(sig as i32)),
        Ok(_) => None,
        // Not our child any more (cannot happen for the init we cloned): treat as gone.
        Err(nix::Error::ECHILD) => Some(Exit::Code(255)),
        Err(_) => None,
    }
}

fn write_all_fd(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy() {
        use RestartPolicy::*;
        // reboot inside: always again; poweroff inside: never.
        for p in [No, OnFailure, Always] {
            assert!(restart_wanted(p, Exit::Signal(libc::SIGHUP)));
            assert!(!restart_wanted(p, Exit::Signal(libc::SIGINT)));
        }
        assert!(!restart_wanted(OnFailure, Exit::Code(0)));
        assert!(restart_wanted(Always, Exit::Code(0)));
        assert!(restart_wanted(OnFailure, Exit::Code(1)));
        assert!(restart_wanted(OnFailure, Exit::Signal(libc::SIGKILL)));
        assert!(!restart_wanted(No, Exit::Code(1)));
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("attach\n"), Ok(Command::Attach));
        assert_eq!(parse_command("stop\r\n"), Ok(Command::Stop));
        assert_eq!(parse_command("status"), Ok(Command::Status));
        let e = parse_command("rm -rf /\n").expect_err("unknown");
        assert!(e.contains("unknown command"), "{e}");
    }
}
