//! `hull vm-exec`: one more process in a VM container.
//!
//! `hull exec` spawns it exactly as it spawns `hull init` for an ordinary container (in the
//! container's namespaces and cgroup, with the caller's stdio or a console), so the pid
//! file, `--detach`, the console socket and the exit status work unchanged; instead of
//! becoming the process, it asks the guest agent to start it and relays its stdio, signals
//! and status. Ready is reported once the agent has started the process.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use hull_agent_protocol::client::{self, Agent};
use hull_agent_protocol::{Role, AGENT_VSOCK_PORT};
use hull_inside::sequence::System;
use hull_inside::sync::{self, ExecPlan, FromInit, ToInit, INIT_FD_ENV};
use hull_inside::system::LiveSystem;

use super::init::{
    block_forwarded_signals, dup_file, make_raw, send_window_size, spawn_signal_forwarder,
};
use super::EXIT_GUEST_FAILED;

/// Carries the agent's socket path from `hull exec` to `hull vm-exec`.
pub const SOCKET_ENV: &str = "_HULL_VM_AGENT_SOCKET";

/// Entry point of `hull vm-exec`. Never returns.
pub fn run() -> ! {
    let fd = std::env::var(INIT_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    let socket = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
    let (Some(fd), Some(socket)) = (fd, socket) else {
        eprintln!(
            "hull vm-exec: started without its plan: hull vm-exec is started by hull exec only"
        );
        exit_now(1);
    };
    std::env::remove_var(INIT_FD_ENV);
    std::env::remove_var(SOCKET_ENV);
    // SAFETY: the parent placed our end of the sync socket at this descriptor for us alone.
    let mut sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    match start(&mut sock, &socket) {
        Ok(code) => exit_now(code),
        Err((msg, ready)) => {
            if ready || sync::send(&mut sock, &FromInit::Error(msg.clone())).is_err() {
                eprintln!("hull: exec in VM container: {msg}");
            }
            exit_now(if ready { EXIT_GUEST_FAILED } else { 1 });
        }
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns; nothing of ours needs running at exit.
    unsafe { libc::_exit(code) }
}

/// Ok: the process's status. Err: the message, and whether Ready was already sent.
fn start(sock: &mut UnixStream, socket: &std::path::Path) -> Result<i32, (String, bool)> {
    let pre = |e: &dyn std::fmt::Display| (e.to_string(), false);
    let plan: ExecPlan = match sync::recv::<ToInit>(sock).map_err(|e| pre(&e))? {
        ToInit::Exec(p) => *p,
        other => return Err((format!("unexpected message {other:?}"), false)),
    };
    let mut sys = LiveSystem;
    sys.new_session().map_err(|e| pre(&e))?;
    let terminal = plan.process.terminal().unwrap_or(false);
    if terminal {
        sys.setup_console(plan.console_fd).map_err(|e| pre(&e))?;
        make_raw(0);
    }
    let forwarded = block_forwarded_signals().map_err(|e| pre(&e))?;
    let (_socket_dir, socket) = super::reachable_socket(socket).map_err(|e| pre(&e))?;
    let conn = client::connect_hybrid(&socket, AGENT_VSOCK_PORT, client::HANDSHAKE_TIMEOUT)
        .and_then(|s| Agent::hello(s, client::HANDSHAKE_TIMEOUT))
        .map_err(|e| pre(&format!("connecting to the guest agent: {e}")))?;
    let req = super::process_spec(
        &plan.process,
        None,
        plan.seccomp.as_ref(),
        plan.state_json.clone(),
    )
    .map_err(|e| pre(&e))?;
    let session = conn.start(Role::Exec, &req).map_err(|e| pre(&e))?;
    // From Ready on, the relay outlives `hull exec --detach` (runc's shim execs that way):
    // drop the parent-death signal it was cloned with.
    nix::sys::prctl::set_pdeathsig(None)
        .map_err(|e| pre(&format!("clearing the parent-death signal: {e}")))?;
    sync::send(sock, &FromInit::Ready).map_err(|e| pre(&e))?;
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let control = session.control();
    spawn_signal_forwarder(forwarded, control.clone(), terminal)
        .map_err(|e| (e.to_string(), true))?;
    if terminal {
        send_window_size(&control);
    }
    let stdin: Box<dyn std::io::Read + Send> = Box::new(dup_file(0));
    let (mut out, mut err) = (dup_file(1), dup_file(2));
    session
        .run(Some(stdin), &mut out, &mut err)
        .map(|s| s.shell_code())
        .map_err(|e| (e.to_string(), true))
}
