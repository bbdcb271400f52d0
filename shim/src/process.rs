//! What the shim knows of each process it serves: the container's init and its execs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use hull_runtime::cgroups::ContainerCgroup;
use oci_spec::runtime::Process as ProcessSpec;

use crate::stdio::{ProcessIo, StdioPaths};

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// The exit status, 128+signal when killed.
    pub status: u32,
    pub at: SystemTime,
}

impl Exit {
    pub fn timestamp(&self) -> Timestamp {
        timestamp(self.at)
    }
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// One process: the init (`exec_id` empty) or an exec.
pub struct Process {
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// 0 until the process exists (init: after Create; exec: after Start).
    pub pid: i32,
    /// `pid` pinned as soon as it is known, so that `Kill` never signals a process that got
    /// the pid after this one was reaped (the reaper frees it before the exit is recorded).
    pub pidfd: Option<hull_runtime::process::PidFd>,
    pub started: bool,
    pub exit: Option<Exit>,
    pub io: Option<ProcessIo>,
    /// The process spec of an exec, kept from Exec until Start.
    pub spec: Option<ProcessSpec>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            stdio,
            pid: 0,
            pidfd: None,
            started: false,
            exit: None,
            io: None,
            spec: None,
        }
    }

    pub fn running(&self) -> bool {
        self.pid > 0 && self.exit.is_none()
    }

    /// Records the process's pid and pins it with a pidfd.
    pub fn set_pid(&mut self, pid: i32) {
        self.pid = pid;
        self.pidfd = hull_runtime::process::PidFd::open(pid, 0).ok().flatten();
    }

    /// Signals the process through its pidfd (ESRCH once it is gone).
    pub fn signal(&self, signal: i32) -> Result<(), nix::Error> {
        match &self.pidfd {
            Some(fd) => fd.signal(signal),
            None => Err(nix::Error::ESRCH),
        }
    }
}

/// The container this shim serves, with its execs by exec id.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// The rootfs the shim mounted from the request's mounts (unmounted on Delete).
    pub mounted_rootfs: Option<PathBuf>,
    /// The container's cgroup, read once after create: `state` asks its freezer whether
    /// the container is paused instead of loading the saved state on every call.
    pub cgroup: Option<ContainerCgroup>,
}

impl Container {
    /// The process `exec_id` names ("" is init).
    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// The process with host pid `pid` that has not exited yet.
    pub fn by_pid_mut(&mut self, pid: i32) -> Option<&mut Process> {
        if self.init.pid == pid && self.init.exit.is_none() {
            return Some(&mut self.init);
        }
        self.execs
            .values_mut()
            .find(|p| p.pid == pid && p.exit.is_none())
    }
}
