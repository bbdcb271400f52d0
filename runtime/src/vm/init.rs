//! `hull vm-init`: the init of a VM container, which becomes its VMM.
//!
//! It talks to `hull create` over the same sync socket and at the same moments as
//! `hull init` (plan, cgroup joined, mounts ready, ready, start), but where `hull init`
//! sets up the rootfs and execs the workload, this boots the guest in process and waits
//! for its agent before Ready (so a guest that cannot boot fails `create`), and after
//! `start` hands the workload to the agent and relays its stdio, signals and exit status.
//! Its own exit status is the workload's; a guest that ends without one gives
//! [`EXIT_GUEST_FAILED`](super::EXIT_GUEST_FAILED) and the reason on stderr.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hull_agent_protocol::client::{self, Agent, ClientError, Control};
use hull_agent_protocol::{ExitStatus, Role, WindowSize, AGENT_VSOCK_PORT};
use hull_inside::init::SocketCoordinator;
use hull_inside::sequence::{Coordinator, InitError, Plan, System};
use hull_inside::sync::{InitPlan, INIT_FD_ENV};
use hull_inside::system::LiveSystem;
use hull_kvm::{ExitReason, SerialOutput, Vm, VmConfig, VsockConfig};

use super::{VmPlan, EXIT_GUEST_FAILED, GUEST_CMDLINE, PLAN_ENV, ROOTFS_TAG};

/// Entry point of `hull vm-init`. Never returns.
pub fn run() -> ! {
    let fd = std::env::var(INIT_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    let vm_plan = std::env::var(PLAN_ENV)
        .ok()
        .and_then(|v| serde_json::from_str::<VmPlan>(&v).ok());
    let (Some(fd), Some(vm_plan)) = (fd, vm_plan) else {
        eprintln!(
            "hull vm-init: started without its plan: hull vm-init is started by hull create only"
        );
        exit_now(1);
    };
    std::env::remove_var(INIT_FD_ENV);
    std::env::remove_var(PLAN_ENV);
    // SAFETY: the parent placed our end of the sync socket at this descriptor for us alone.
    let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut coord = SocketCoordinator::new(sock);
    match boot_and_run(&mut coord, &vm_plan) {
        Ok(status) => exit_now(status),
        Err(e) => {
            if !coord.report_error(&e) {
                eprintln!("hull: VM container: {e}");
            }
            exit_now(if matches!(e, InitError::Invalid(_)) {
                EXIT_GUEST_FAILED
            } else {
                1
            });
        }
    }
}

fn exit_now(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: _exit never returns; nothing of ours needs running at exit.
    unsafe { libc::_exit(code) }
}

fn failed(what: impl std::fmt::Display) -> InitError {
    InitError::Invalid(what.to_string())
}

/// The sequence: the sandbox, the guest, Ready, start, the workload's life.
fn boot_and_run(coord: &mut SocketCoordinator, vp: &VmPlan) -> Result<i32, InitError> {
    let (_socket_dir, socket) = super::reachable_socket(&vp.socket).map_err(failed)?;
    let vp = &VmPlan {
        socket,
        ..vp.clone()
    };
    let mut sys = LiveSystem;
    sys.new_session()?;
    let plan = match coord.plan()? {
        Plan::Create(p) => p,
        Plan::Exec(_) => return Err(failed("exec in a VM container goes through its agent")),
    };
    coord.prepare_start(&plan)?;
    sys.enter_namespaces(&plan)?;
    coord.cgroup_joined()?;
    // The VMM always has a mount namespace of its own (a VM container cannot join one, and
    // clone made it): nothing it mounts, the staged host binds, may propagate to the host.
    let own_mount_ns = plan
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount && n.path().is_none()
            })
        });
    if !own_mount_ns {
        return Err(failed("a VM container needs a mount namespace of its own"));
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| failed(format!("making the VMM's mounts private: {e}")))?;
    super::binds::stage(&plan.spec, &plan.rootfs, &plan.bundle)?;
    let state_json = coord.mounts_ready()?;
    let terminal = plan
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal {
        sys.setup_console(plan.console_fd)?;
        // The guest's pty does the line discipline; ours only carries bytes.
        make_raw(0);
    }
    let forwarded = block_forwarded_signals()?;
    let mut vm =
        Vm::start(&vm_config(vp, &plan)).map_err(|e| failed(format!("starting the VM: {e}")))?;
    let conn = wait_for_agent(&mut vm, vp)?;
    // From Ready on, the VMM outlives `hull create`: drop the parent-death signal it was
    // cloned with (which took it down if create died half-way).
    nix::sys::prctl::set_pdeathsig(None)
        .map_err(|e| failed(format!("clearing the parent-death signal: {e}")))?;
    coord.ready()?;
    coord.wait_for_start()?;
    let process = plan
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| failed("config.json: process is missing"))?;
    let req = super::process_spec(
        process,
        Some(super::guest_config(&plan.spec)),
        plan.seccomp.as_ref(),
        state_json,
    )
    .map_err(failed)?;
    let session = conn
        .start(Role::Init, &req)
        .map_err(|e| guest_error(&mut vm, vp, "starting the container process", e))?;
    let control = session.control();
    spawn_signal_forwarder(forwarded, control.clone(), terminal)?;
    if terminal {
        send_window_size(&control);
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("agent-relay".into())
        .spawn(move || {
            let stdin: Box<dyn std::io::Read + Send> = Box::new(dup_file(0));
            let (mut out, mut err) = (dup_file(1), dup_file(2));
            let _ = tx.send(session.run(Some(stdin), &mut out, &mut err));
        })
        .map_err(|e| failed(format!("starting the stdio relay: {e}")))?;
    supervise(&mut vm, vp, &rx)
}

/// Waits for the workload's status while watching the VM and virtiofsd: either ending
/// first ends the container.
fn supervise(
    vm: &mut Vm,
    vp: &VmPlan,
    rx: &mpsc::Receiver<Result<ExitStatus, ClientError>>,
) -> Result<i32, InitError> {
    let virtiofsd = vm.virtiofsd_pid();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(status)) => {
                // The agent powers the guest off once the workload is gone.
                if vm.wait_timeout(Duration::from_secs(10)).is_none() {
                    vm.stop();
                }
                return Ok(status.shell_code());
            }
            Ok(Err(e)) => return Err(guest_error(vm, vp, "relaying the container process", e)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(guest_error(
                    vm,
                    vp,
                    "relaying the container process",
                    ClientError::Closed("relay"),
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(pid) = virtiofsd.filter(|p| child_exited(*p)) {
            vm.stop();
            return Err(failed(format!(
                "virtiofsd (pid {pid}), which serves the container's rootfs to the guest, ended; the VM was stopped"
            )));
        }
        if let Some(reason) = vm.wait_timeout(Duration::ZERO) {
            // The relay may still be writing the last output.
            if let Ok(Ok(status)) = rx.recv_timeout(Duration::from_secs(2)) {
                return Ok(status.shell_code());
            }
            return Err(failed(format!(
                "the guest ended ({}) before the container process reported its status{}",
                describe(&reason),
                console_tail(vp)
            )));
        }
    }
}

fn vm_config(vp: &VmPlan, plan: &InitPlan) -> VmConfig {
    let mut cfg = VmConfig::new(&vp.kernel);
    cfg.initramfs = Some(vp.initramfs.clone());
    cfg.cmdline = format!("{} {GUEST_CMDLINE}", hull_kvm::DEFAULT_CMDLINE);
    cfg.mem_mib = vp.memory_mib;
    cfg.vcpus = vp.vcpus;
    cfg.shared_dir = Some(plan.rootfs.clone());
    cfg.virtiofs.binary = Some(vp.virtiofsd.clone());
    cfg.virtiofs.tag = ROOTFS_TAG.into();
    cfg.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: vp.socket.clone(),
    });
    cfg.serial = SerialOutput::File(vp.console_log.clone());
    cfg
}

/// Connects to the agent once it listens; a guest that ends or stays silent until the
/// deadline is a `create` error quoting its console.
fn wait_for_agent(vm: &mut Vm, vp: &VmPlan) -> Result<Agent, InitError> {
    let deadline = Instant::now() + Duration::from_millis(vp.boot_timeout_ms);
    loop {
        // Until the agent listens, the VMM refuses the port: try again shortly.
        if let Ok(stream) =
            client::connect_hybrid(&vp.socket, AGENT_VSOCK_PORT, Duration::from_millis(500))
        {
            return Agent::hello(stream, client::HANDSHAKE_TIMEOUT).map_err(|e| {
                vm.stop();
                failed(format!("the guest agent: {e}"))
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        if let Some(reason) = vm.wait_timeout(Duration::ZERO) {
            return Err(failed(format!(
                "the guest did not boot: it ended ({}) before its agent answered{}",
                describe(&reason),
                console_tail(vp)
            )));
        }
        if Instant::now() >= deadline {
            vm.stop();
            return Err(failed(format!(
                "the guest agent did not answer within {} s ({} to wait longer){}",
                vp.boot_timeout_ms / 1000,
                super::BOOT_TIMEOUT_ENV,
                console_tail(vp)
            )));
        }
    }
}

/// A relay failure, explained by what happened to the VM when that is known.
fn guest_error(vm: &mut Vm, vp: &VmPlan, what: &str, e: ClientError) -> InitError {
    let reason = vm.wait_timeout(Duration::from_millis(500));
    match reason {
        Some(r) => failed(format!(
            "{what}: the guest ended ({}){}",
            describe(&r),
            console_tail(vp)
        )),
        None => {
            vm.stop();
            failed(format!("{what}: {e}"))
        }
    }
}

fn describe(reason: &ExitReason) -> String {
    match reason {
        ExitReason::Panic => "the guest kernel panicked".into(),
        ExitReason::PowerOff => "powered off".into(),
        ExitReason::Reset => "reset".into(),
        ExitReason::Stopped => "stopped by hull".into(),
        other => format!("{other:?}"),
    }
}

/// The last lines of the guest's console, for error messages.
fn console_tail(vp: &VmPlan) -> String {
    let text = std::fs::read(&vp.console_log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return format!(
            "; the guest console ({}) is empty: the kernel did not start",
            vp.console_log.display()
        );
    }
    let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
    format!("; guest console: {tail}")
}

fn child_exited(pid: u32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::StillAlive)
    )
}

pub(super) fn dup_file(fd: i32) -> File {
    // SAFETY: dup of one of our standard descriptors; the new one is ours to own. A failed
    // dup (-1) gives a File whose reads and writes fail, which the relay treats as closed.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: `new` is a fresh descriptor we own (or -1, see above).
    unsafe { File::from_raw_fd(new) }
}

pub(super) fn make_raw(fd: i32) {
    use nix::sys::termios;
    // SAFETY: fd 0 stays open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Ok(mut t) = termios::tcgetattr(fd) {
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(fd, termios::SetArg::TCSANOW, &t);
    }
}

pub(super) fn send_window_size(control: &Control) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
        let _ = control.resize(WindowSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
        });
    }
}

/// The signals delivered to this process that go to the workload instead: all but the
/// ones that cannot be caught, the synchronous faults, SIGCHLD (ours: virtiofsd), SIGPIPE,
/// glibc's two internal ones and the VMM's vCPU kick (SIGRTMIN). A raw `sigset_t`: nix's
/// signal type has no real-time signals.
#[derive(Clone, Copy)]
pub(super) struct Forwarded(libc::sigset_t);

impl Forwarded {
    fn new() -> Self {
        // SAFETY: sigemptyset initialises the set we own.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::sigemptyset(&mut set) };
        let kick = libc::SIGRTMIN();
        let skip = [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGCHLD,
            libc::SIGPIPE,
            32,
            33,
            kick,
        ];
        for n in (1..=libc::SIGRTMAX()).filter(|n| !skip.contains(n)) {
            // SAFETY: sigaddset on a set we own, with a signal number in range.
            unsafe { libc::sigaddset(&mut set, n) };
        }
        Forwarded(set)
    }

    #[cfg(test)]
    fn contains(&self, n: i32) -> bool {
        // SAFETY: sigismember reads the set we own.
        unsafe { libc::sigismember(&self.0, n) == 1 }
    }

    /// The next of these signals sent to the process (they must be blocked).
    fn wait(&self) -> Option<i32> {
        let mut sig = 0;
        // SAFETY: sigwait reads our set and writes the signal number into `sig`.
        let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
        (rc == 0).then_some(sig)
    }
}

/// Blocks the forwarded signals in this thread before any other thread exists, so every
/// VMM thread inherits the mask and only the forwarder takes them.
pub(super) fn block_forwarded_signals() -> Result<Forwarded, InitError> {
    let set = Forwarded::new();
    // SAFETY: pthread_sigmask with a set we own; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(failed(format!(
            "blocking the signals to forward: {}",
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    // SAFETY: ignoring SIGPIPE: a closed stdout must not kill the VMM mid-relay.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    Ok(set)
}

pub(super) fn spawn_signal_forwarder(
    set: Forwarded,
    control: Control,
    terminal: bool,
) -> Result<(), InitError> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Some(n) = set.wait() {
                let sent = if n == libc::SIGWINCH && terminal {
                    send_window_size(&control);
                    Ok(())
                } else {
                    control.signal(n)
                };
                if sent.is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| failed(format!("starting the signal forwarder: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_set_leaves_the_vmm_its_own_signals() {
        let set = Forwarded::new();
        for n in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGWINCH,
        ] {
            assert!(set.contains(n), "{n}");
        }
        for n in [libc::SIGKILL, libc::SIGCHLD, libc::SIGSEGV, libc::SIGPIPE] {
            assert!(!set.contains(n), "{n}");
        }
        assert!(!set.contains(libc::SIGRTMIN()), "the vCPU kick");
        assert!(set.contains(libc::SIGRTMIN() + 3), "systemd's stop signal");
        assert!(set.contains(libc::SIGRTMAX()));
    }
}
