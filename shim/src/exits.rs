//! Exits of the processes the shim started. The `containerd-shim` crate makes the shim a
//! child subreaper and reaps every child on SIGCHLD; each exit reaches us through its
//! monitor. An exit is recorded (after the process's output is copied, so a client that
//! sees the exit has all of it), `Wait`ers are woken and `TaskExit` is published.

use std::sync::mpsc::Receiver;
use std::time::{Duration, SystemTime};

use containerd_shim::monitor::{ExitEvent, Subject, Topic};
use containerd_shim::synchronous::monitor::{monitor_subscribe, Subscription};

use crate::error::{io, Result, ShimError};
use crate::events::TaskExit;
use crate::process::Exit;
use crate::service::Service;

/// How long an exit waits for the process's output to be copied.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Subscribe now (before any child can exit) and handle exits on a thread.
pub fn spawn_monitor(svc: Service) -> Result<()> {
    let sub: Subscription = monitor_subscribe(Topic::Pid)
        .map_err(|e| ShimError::Precondition(format!("subscribing to exits: {e}")))?;
    std::thread::Builder::new()
        .name("exits".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            // Keep `sub` alive for the life of the thread.
            let sub = sub;
            for ExitEvent { subject, exit_code } in sub.rx.iter() {
                if let Subject::Pid(pid) = subject {
                    on_exit(&svc, pid, exit_code);
                }
            }
        })
        .map(|_| ())
        .map_err(io("starting the exit monitor"))
}

fn on_exit(svc: &Service, pid: i32, code: i32) {
    // Find the process and take what tells us its output is all copied.
    let found: Option<(String, String, Option<Receiver<()>>)> =
        svc.lock().ok().and_then(|mut t| {
            let (id, p) = t
                .containers
                .iter_mut()
                .find_map(|(id, c)| Some((id.clone(), c.by_pid_mut(pid)?)))?;
            let done = p.io.as_mut().and_then(|io| io.take_output_done());
            Some((id, p.exec_id.clone(), done))
        });
    let Some((id, exec_id, done)) = found else {
        tracing::debug!("reaped pid {pid} (status {code}): not a process we serve");
        return;
    };
    if let Some(rx) = done {
        let _ = rx.recv_timeout(DRAIN_TIMEOUT);
    }
    let exit = Exit {
        status: u32::try_from(code).unwrap_or(255),
        at: SystemTime::now(),
    };
    if let Ok(mut t) = svc.lock() {
        if let Some(p) = t
            .containers
            .get_mut(&id)
            .and_then(|c| c.process_mut(&exec_id))
            .filter(|p| p.pid == pid)
        {
            p.exit = Some(exit);
            if let Some(io) = &p.io {
                io.close_stdin();
            }
        }
    }
    svc.shared.exited.notify_all();
    tracing::info!("process {pid} of {id} (exec {exec_id:?}) exited with {code}");
    svc.events.exit(TaskExit {
        container_id: id.clone(),
        id: if exec_id.is_empty() { id } else { exec_id },
        pid: u32::try_from(pid).unwrap_or(0),
        exit_status: exit.status,
        exited_at: containerd_shim::protos::protobuf::MessageField::some(exit.timestamp()),
        ..Default::default()
    });
}
