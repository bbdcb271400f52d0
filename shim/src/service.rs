//! The task service (containerd's `containerd.task.v2.Task`) on the hull runtime library:
//! every request is a library call, no CLI is run. One shim serves the containers of one
//! group (one pod, see [`crate::shim`]; else one container) and their execs; their state
//! lives in [`Tasks`] under one lock, with a condition variable for `Wait`. Exits come from
//! [`crate::exits`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use containerd_shim::api;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};
use hull_runtime::cgroups::ContainerCgroup;
use hull_runtime::exec::ExecOptions;
use hull_runtime::{CreateOptions, Runtime};

use crate::error::{Result, ShimError};
use crate::events::{self, Events};
use crate::process::{timestamp, Container, Process};
use crate::rootfs;
use crate::stdio::{self, ConsoleSocket, ProcessIo, StdioPaths};
use crate::working_set;

/// How often the OOM watcher checks that its container still exists.
const OOM_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The state every request and the exit monitor share.
#[derive(Default)]
pub struct Tasks {
    /// The containers this shim serves, by id.
    pub containers: std::collections::BTreeMap<String, Container>,
}

pub struct Shared {
    pub tasks: Mutex<Tasks>,
    /// Notified whenever a process exits (for `Wait`).
    pub exited: Condvar,
}

#[derive(Clone)]
pub struct Service {
    pub shared: Arc<Shared>,
    pub events: Arc<Events>,
    pub exit: Arc<ExitSignal>,
}

/// Where the runtime keeps the state of a container whose bundle is `bundle`: inside the
/// bundle, so it lives and goes with the task's directory (and `shim delete`, run in the
/// bundle, finds it).
pub fn runtime_for(bundle: &Path) -> Runtime {
    Runtime {
        root: bundle.join("hull-state"),
        systemd_cgroup: false,
        rootless: false,
        // `/proc/self/exe init`: main() hands `init` to the runtime first thing.
        init_binary: None,
    }
}

impl Service {
    pub fn new(events: Events, exit: Arc<ExitSignal>) -> Service {
        Service {
            shared: Arc::new(Shared {
                tasks: Mutex::new(Tasks::default()),
                exited: Condvar::new(),
            }),
            events: Arc::new(events),
            exit,
        }
    }

    pub fn lock(&self) -> Result<MutexGuard<'_, Tasks>> {
        self.shared
            .tasks
            .lock()
            .map_err(|_| ShimError::Precondition("shim state lock poisoned".into()))
    }
}

fn container<'a>(tasks: &'a mut Tasks, id: &str) -> Result<&'a mut Container> {
    tasks
        .containers
        .get_mut(id)
        .ok_or_else(|| ShimError::NoContainer(id.to_string()))
}

fn process<'a>(c: &'a mut Container, exec_id: &str) -> Result<&'a mut Process> {
    let id = c.id.clone();
    c.process_mut(exec_id).ok_or_else(|| ShimError::NoProcess {
        id,
        exec_id: exec_id.to_string(),
    })
}

fn u32_pid(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}

/// The stdio of a new process: pipes, or (terminal) a console socket to receive the pty on.
enum NewStdio {
    Pipes(stdio::ChildStdio, ProcessIo),
    Console(stdio::ChildStdio, ConsoleSocket),
}

impl NewStdio {
    fn new(paths: &StdioPaths) -> Result<NewStdio> {
        if paths.terminal {
            Ok(NewStdio::Console(
                ProcessIo::null_stdio()?,
                ConsoleSocket::new()?,
            ))
        } else {
            let (child, pio) = ProcessIo::pipes(paths)?;
            Ok(NewStdio::Pipes(child, pio))
        }
    }
    fn child_fds(&self) -> [std::os::fd::RawFd; 3] {
        match self {
            NewStdio::Pipes(c, _) | NewStdio::Console(c, _) => c.raw(),
        }
    }
    fn console_path(&self) -> Option<PathBuf> {
        match self {
            NewStdio::Console(_, s) => Some(s.path.clone()),
            NewStdio::Pipes(..) => None,
        }
    }
    /// After the process exists: our copies of its fds go, the pty relay starts.
    fn finish(self, paths: &StdioPaths) -> Result<ProcessIo> {
        match self {
            NewStdio::Pipes(child, pio) => {
                drop(child);
                Ok(pio)
            }
            NewStdio::Console(child, sock) => {
                drop(child);
                let master = sock.receive()?;
                ProcessIo::console(master, paths)
            }
        }
    }
}

impl Service {
    fn do_create(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        if !req.checkpoint.is_empty() {
            return Err(ShimError::NotImplemented("restore from a checkpoint"));
        }
        let mut tasks = self.lock()?;
        if tasks.containers.contains_key(&req.id) {
            return Err(ShimError::ContainerExists(req.id.clone()));
        }
        let bundle = PathBuf::from(&req.bundle);
        let mounted = rootfs::mount(&bundle, &req.rootfs)?;
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let created = (|| {
            let new_stdio = NewStdio::new(&paths)?;
            let created = runtime_for(&bundle).create(
                &req.id,
                &CreateOptions {
                    bundle: bundle.clone(),
                    pid_file: Some(bundle.join("init.pid")),
                    console_socket: new_stdio.console_path(),
                    stdio: Some(new_stdio.child_fds()),
                    ..Default::default()
                },
            )?;
            let pio = new_stdio.finish(&paths)?;
            Ok::<_, ShimError>((created.pid.as_raw(), pio))
        })();
        let (pid, pio) = match created {
            Ok(v) => v,
            Err(e) => {
                let _ = runtime_for(&bundle).delete(&req.id, true);
                if let Some(m) = &mounted {
                    rootfs::unmount(m);
                }
                return Err(e);
            }
        };
        let mut init = Process::new("", paths.clone());
        init.set_pid(pid);
        init.io = Some(pio);
        let cgroup = runtime_for(&bundle)
            .container_cgroup(&req.id)
            .map_err(|e| tracing::warn!("container {}: no cgroup: {e}", req.id))
            .ok();
        tasks.containers.insert(
            req.id.clone(),
            Container {
                id: req.id.clone(),
                bundle: bundle.clone(),
                init,
                execs: Default::default(),
                mounted_rootfs: mounted,
                cgroup: cgroup.clone(),
            },
        );
        drop(tasks);
        tracing::info!("created container {} (init pid {pid})", req.id);
        if let Some(cg) = cgroup {
            self.watch_oom(&req.id, cg);
        }
        self.events.create(events::TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(events::TaskIO {
                stdin: paths.stdin,
                stdout: paths.stdout,
                stderr: paths.stderr,
                terminal: paths.terminal,
                ..Default::default()
            }),
            pid: u32_pid(pid),
            ..Default::default()
        });
        Ok(u32_pid(pid))
    }

    fn do_start(&self, req: &api::StartRequest) -> Result<u32> {
        let mut tasks = self.lock()?;
        let c = container(&mut tasks, &req.id)?;
        let bundle = c.bundle.clone();
        if req.exec_id.is_empty() {
            if c.init.started {
                return Err(ShimError::Precondition(format!(
                    "container \"{}\" was already started",
                    req.id
                )));
            }
            runtime_for(&bundle).start(&req.id)?;
            c.init.started = true;
            let pid = c.init.pid;
            drop(tasks);
            self.events.start(events::TaskStart {
                container_id: req.id.clone(),
                pid: u32_pid(pid),
                ..Default::default()
            });
            return Ok(u32_pid(pid));
        }
        let p = process(c, &req.exec_id)?;
        if p.started {
            return Err(ShimError::Precondition(format!(
                "exec \"{}\" was already started",
                req.exec_id
            )));
        }
        let spec = p
            .spec
            .clone()
            .ok_or_else(|| ShimError::InvalidArgument("exec has no process spec".into()))?;
        let paths = p.stdio.clone();
        let new_stdio = NewStdio::new(&paths)?;
        let pid_file = bundle.join(format!("exec-{}.pid", req.exec_id));
        runtime_for(&bundle).exec(
            &req.id,
            &ExecOptions {
                process: spec,
                detach: true,
                pid_file: Some(pid_file.clone()),
                console_socket: new_stdio.console_path(),
                preserve_fds: 0,
                stdio: Some(new_stdio.child_fds()),
            },
        )?;
        let pid = stdio::read_pid_file(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        let pid = pid?;
        let pio = new_stdio.finish(&paths)?;
        p.set_pid(pid);
        p.started = true;
        p.io = Some(pio);
        drop(tasks);
        self.events.exec_started(events::TaskExecStarted {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            pid: u32_pid(pid),
            ..Default::default()
        });
        Ok(u32_pid(pid))
    }

    fn do_delete(&self, req: &api::DeleteRequest) -> Result<api::DeleteResponse> {
        let mut tasks = self.lock()?;
        let c = container(&mut tasks, &req.id)?;
        if !req.exec_id.is_empty() {
            let p = process(c, &req.exec_id)?;
            if p.running() {
                return Err(ShimError::Precondition(format!(
                    "exec \"{}\" is running: kill it first",
                    req.exec_id
                )));
            }
            let resp = delete_response(p);
            c.execs.remove(&req.exec_id);
            return Ok(resp);
        }
        if c.init.running() && c.init.started {
            return Err(ShimError::Precondition(format!(
                "container \"{}\" is running: kill it first",
                req.id
            )));
        }
        // Force: a created (never started) container's init is killed.
        match runtime_for(&c.bundle).delete(&req.id, true) {
            Ok(()) => {}
            Err(hull_runtime::container::Error::State(
                hull_runtime::state::StateError::NotExist(_),
            )) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(m) = &c.mounted_rootfs {
            rootfs::unmount(m);
        }
        let resp = delete_response(&c.init);
        tasks.containers.remove(&req.id);
        drop(tasks);
        self.events.delete(events::TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at.clone(),
            ..Default::default()
        });
        Ok(resp)
    }

    fn do_state(&self, req: &api::StateRequest) -> Result<api::StateResponse> {
        let mut tasks = self.lock()?;
        let c = container(&mut tasks, &req.id)?;
        let bundle = c.bundle.clone();
        // Paused is the freezer's state, as `hull state` derives it.
        let paused =
            req.exec_id.is_empty() && c.cgroup.as_ref().is_some_and(ContainerCgroup::is_frozen);
        let p = process(c, &req.exec_id)?;
        let status = if p.exit.is_some() {
            api::Status::STOPPED
        } else if !p.started {
            api::Status::CREATED
        } else if paused {
            api::Status::PAUSED
        } else {
            api::Status::RUNNING
        };
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: bundle.display().to_string(),
            pid: u32_pid(p.pid),
            status: status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: p.exit.map(|e| e.status).unwrap_or(0),
            exited_at: MessageField::from_option(p.exit.map(|e| e.timestamp())),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn do_kill(&self, req: &api::KillRequest) -> Result<()> {
        let signal = i32::try_from(req.signal)
            .map_err(|_| ShimError::InvalidArgument(format!("signal {}", req.signal)))?;
        let mut tasks = self.lock()?;
        let c = container(&mut tasks, &req.id)?;
        let bundle = c.bundle.clone();
        let p = process(c, &req.exec_id)?;
        if p.exit.is_some() && !req.all {
            return Err(ShimError::Finished);
        }
        if req.exec_id.is_empty() {
            return runtime_for(&bundle)
                .kill(&req.id, signal, req.all)
                .map_err(|e| match e {
                    hull_runtime::container::Error::NotRunning => ShimError::Finished,
                    e => e.into(),
                });
        }
        if p.pid <= 0 {
            return Err(ShimError::Precondition(format!(
                "exec \"{}\" was not started",
                req.exec_id
            )));
        }
        hull_runtime::container::check_signal(signal)?;
        p.signal(signal).map_err(|e| match e {
            nix::Error::ESRCH => ShimError::Finished,
            e => crate::error::sys(format!("kill {}", p.pid))(e),
        })
    }

    fn do_exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let spec: oci_spec::runtime::Process = serde_json::from_slice(&req.spec.value)
            .map_err(|e| ShimError::InvalidArgument(format!("exec process spec: {e}")))?;
        hull_runtime::exec::validate_process(&spec)?;
        let mut tasks = self.lock()?;
        let c = container(&mut tasks, &req.id)?;
        if c.init.exit.is_some() {
            return Err(ShimError::Precondition(format!(
                "container \"{}\" is stopped",
                req.id
            )));
        }
        if c.execs.contains_key(&req.exec_id) {
            return Err(ShimError::ExecExists {
                id: req.id.clone(),
                exec_id: req.exec_id.clone(),
            });
        }
        let mut p = Process::new(
            &req.exec_id,
            StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
        );
        p.spec = Some(spec);
        c.execs.insert(req.exec_id.clone(), p);
        drop(tasks);
        self.events.exec_added(events::TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    fn do_wait(&self, req: &api::WaitRequest) -> Result<api::WaitResponse> {
        let mut tasks = self.lock()?;
        loop {
            let c = container(&mut tasks, &req.id)?;
            let p = process(c, &req.exec_id)?;
            if let Some(exit) = p.exit {
                return Ok(api::WaitResponse {
                    exit_status: exit.status,
                    exited_at: MessageField::some(exit.timestamp()),
                    ..Default::default()
                });
            }
            tasks = self
                .shared
                .exited
                .wait(tasks)
                .map_err(|_| ShimError::Precondition("shim state lock poisoned".into()))?;
        }
    }

    fn with_io(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&ProcessIo) -> Result<()>,
    ) -> Result<()> {
        let mut tasks = self.lock()?;
        let c = container(&mut tasks, id)?;
        let p = process(c, exec_id)?;
        match &p.io {
            Some(io) => f(io),
            None => Err(ShimError::Precondition(format!(
                "process \"{exec_id}\" of \"{id}\" has not started"
            ))),
        }
    }

    fn bundle_of(&self, id: &str) -> Result<PathBuf> {
        let mut tasks = self.lock()?;
        Ok(container(&mut tasks, id)?.bundle.clone())
    }

    /// Publish `/tasks/oom` whenever the OOM killer acts in the container's memory cgroup
    /// (as containerd's runc shim does), until the container is deleted or its cgroup goes.
    fn watch_oom(&self, id: &str, cg: ContainerCgroup) {
        let Some(mut watcher) = hull_runtime::events::OomWatcher::new(&cg) else {
            tracing::warn!(
                "no OOM events for {id}: cgroup {} has no memory controller to watch",
                cg.path
            );
            return;
        };
        let svc = self.clone();
        let id = id.to_string();
        let name = id.clone();
        let spawned = std::thread::Builder::new()
            .name("oom".into())
            .stack_size(128 * 1024)
            .spawn(move || loop {
                use hull_runtime::events::OomPoll;
                match watcher.poll(OOM_POLL) {
                    Ok(OomPoll::Oom) => {
                        tracing::info!("OOM killer acted in container {id}");
                        svc.events.oom(events::TaskOOM {
                            container_id: id.clone(),
                            ..Default::default()
                        });
                    }
                    Ok(OomPoll::Quiet) => {
                        let ours = svc
                            .lock()
                            .map(|t| t.containers.contains_key(&id))
                            .unwrap_or(false);
                        if !ours {
                            return;
                        }
                    }
                    Ok(OomPoll::Gone) => return,
                    Err(e) => {
                        tracing::warn!("watching {id} for OOM: {e}");
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no OOM events for {name}: starting the watcher: {e}");
        }
    }

    fn init_pid(&self, id: &str) -> Option<i32> {
        self.lock().ok()?.containers.get(id).map(|c| c.init.pid)
    }
}

fn delete_response(p: &Process) -> api::DeleteResponse {
    api::DeleteResponse {
        pid: u32_pid(p.pid),
        exit_status: p.exit.map(|e| e.status).unwrap_or(0),
        exited_at: MessageField::some(
            p.exit
                .map(|e| e.timestamp())
                .unwrap_or_else(|| timestamp(std::time::SystemTime::now())),
        ),
        ..Default::default()
    }
}

/// The log line of a failed request, then its ttrpc status.
fn reply<T>(what: &str, r: Result<T>) -> TtrpcResult<T> {
    r.map_err(|e| {
        tracing::warn!("{what}: {e}");
        e.into()
    })
}

impl containerd_shim::Task for Service {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        reply("state", self.do_state(&req))
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = reply("create", self.do_create(&req))?;
        // `start` follows at once and runs much of the same code: only the stack goes.
        working_set::release_stack_below_frame();
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let pid = reply("start", self.do_start(&req))?;
        // The process runs and the shim goes back to waiting: let go of the runtime
        // library's code this call mapped in (working_set.rs).
        working_set::release();
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let resp = reply("delete", self.do_delete(&req))?;
        working_set::release();
        Ok(resp)
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let r = self
            .bundle_of(&req.id)
            .and_then(|bundle| Ok(runtime_for(&bundle).pids(&req.id)?));
        let pids = reply("pids", r)?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: u32_pid(pid),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let r = self
            .bundle_of(&req.id)
            .and_then(|b| Ok(runtime_for(&b).pause(&req.id)?));
        reply("pause", r)?;
        self.events.paused(events::TaskPaused {
            container_id: req.id,
            ..Default::default()
        });
        Ok(api::Empty::default())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        let r = self
            .bundle_of(&req.id)
            .and_then(|b| Ok(runtime_for(&b).resume(&req.id)?));
        reply("resume", r)?;
        self.events.resumed(events::TaskResumed {
            container_id: req.id,
            ..Default::default()
        });
        Ok(api::Empty::default())
    }

    fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        reply("checkpoint", Err(ShimError::NotImplemented("checkpoint")))
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        reply("kill", self.do_kill(&req))?;
        Ok(api::Empty::default())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        reply("exec", self.do_exec(&req))?;
        working_set::release_stack_below_frame();
        Ok(api::Empty::default())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<api::Empty> {
        let r = self.with_io(&req.id, &req.exec_id, |io| io.resize(req.width, req.height));
        reply("resize pty", r)?;
        Ok(api::Empty::default())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        if req.stdin {
            let r = self.with_io(&req.id, &req.exec_id, |io| {
                io.close_stdin();
                Ok(())
            });
            reply("close io", r)?;
        }
        Ok(api::Empty::default())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let r = (|| {
            let resources: oci_spec::runtime::LinuxResources =
                serde_json::from_slice(&req.resources.value)
                    .map_err(|e| ShimError::InvalidArgument(format!("update resources: {e}")))?;
            let bundle = self.bundle_of(&req.id)?;
            Ok(runtime_for(&bundle).update(&req.id, &resources)?)
        })();
        reply("update", r)?;
        Ok(api::Empty::default())
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        reply("wait", self.do_wait(&req))
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        let r = (|| {
            let bundle = self.bundle_of(&req.id)?;
            let cg = runtime_for(&bundle).container_cgroup(&req.id)?;
            let mode = hull_runtime::cgroups::ContainerCgroup::host_mode()
                .map_err(hull_runtime::container::Error::from)?;
            crate::metrics::collect(&cg, mode)
        })();
        let any = reply("stats", r)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.init_pid(&req.id).map(u32_pid).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // A grouped shim stays while any container of its group is left.
        let busy = self
            .lock()
            .map(|t| !t.containers.is_empty())
            .unwrap_or(false);
        if busy && !req.now {
            return Ok(api::Empty::default());
        }
        tracing::info!("shutting down");
        self.exit.signal();
        Ok(api::Empty::default())
    }
}
