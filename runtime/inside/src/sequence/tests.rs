//! The sequence's order, and its end at each coordination moment, with a scripted
//! coordinator and a system that only records: no root, no namespaces.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;

type Log = Rc<RefCell<Vec<String>>>;

/// Answers each moment from its script; fails the one named in `fail_at`.
struct Scripted {
    log: Log,
    plan: Option<Plan>,
    fail_at: Option<&'static str>,
}

impl Scripted {
    fn step(&mut self, moment: &'static str) -> Result<(), InitError> {
        self.log.borrow_mut().push(moment.to_string());
        if self.fail_at == Some(moment) {
            return Err(InitError::Invalid(format!("injected at {moment}")));
        }
        Ok(())
    }
}

impl Coordinator for Scripted {
    fn plan(&mut self) -> Result<Plan, InitError> {
        self.step("plan")?;
        self.plan
            .take()
            .ok_or_else(|| InitError::Invalid("plan asked twice".into()))
    }
    fn prepare_start(&mut self, _: &InitPlan) -> Result<(), InitError> {
        self.step("prepare_start")
    }
    fn cgroup_joined(&mut self) -> Result<(), InitError> {
        self.step("cgroup_joined")
    }
    fn mounts_ready(&mut self) -> Result<String, InitError> {
        self.step("mounts_ready")?;
        Ok(r#"{"id":"c1"}"#.into())
    }
    fn ready(&mut self) -> Result<(), InitError> {
        self.step("ready")
    }
    fn wait_for_start(&mut self) -> Result<(), InitError> {
        self.step("wait_for_start")
    }
    fn report_error(&mut self, _: &InitError) -> bool {
        self.log.borrow_mut().push("report_error".into());
        true
    }
}

/// Records each step in the same log; the exec "fails" with a marker error.
struct Recording {
    log: Log,
}

impl Recording {
    fn rec(&mut self, step: impl Into<String>) -> Result<(), InitError> {
        self.log.borrow_mut().push(step.into());
        Ok(())
    }
}

const EXECED: &str = "exec'd (recorded)";

impl System for Recording {
    fn new_session(&mut self) -> Result<(), InitError> {
        self.rec("new_session")
    }
    fn prepare_seccomp(&mut self, c: Compiled, v: &str) -> Result<Prepared, InitError> {
        self.rec("prepare_seccomp")?;
        // A filter without a listener: nothing is connected.
        Ok(seccomp::prepare_compiled(c, v)?)
    }
    fn enter_namespaces(&mut self, _: &InitPlan) -> Result<(), InitError> {
        self.rec("enter_namespaces")
    }
    fn bring_up_loopback(&mut self) -> Result<(), InitError> {
        self.rec("bring_up_loopback")
    }
    fn join_session_keyring(&mut self, id: &str) {
        let _ = self.rec(format!("join_session_keyring {id}"));
    }
    fn set_host_and_domain_name(&mut self, _: &Spec) -> Result<(), InitError> {
        self.rec("set_host_and_domain_name")
    }
    fn prepare_rootfs(
        &mut self,
        _: &rootfs::RootfsPlan,
        _: i32,
        cgroup_joined: &mut dyn FnMut() -> Result<(), rootfs::RootfsError>,
    ) -> Result<(), InitError> {
        self.rec("prepare_rootfs")?;
        cgroup_joined()?;
        self.rec("unshare_cgroup_ns")
    }
    fn run_hooks(&mut self, kind: &str, _: &[Hook], state: &[u8]) -> Result<(), InitError> {
        let state: serde_json::Value = serde_json::from_slice(state)
            .map_err(|e| InitError::Invalid(format!("{kind} hooks got no state JSON: {e}")))?;
        self.rec(format!("run_hooks {kind} id={}", state["id"]))
    }
    fn enter_rootfs(&mut self, _: &rootfs::RootfsPlan) -> Result<(), InitError> {
        self.rec("enter_rootfs")
    }
    fn write_sysctls(&mut self, _: &Spec) -> Result<(), InitError> {
        self.rec("write_sysctls")
    }
    fn setup_console(&mut self, fd: Option<i32>) -> Result<(), InitError> {
        self.rec(format!("setup_console {fd:?}"))
    }
    fn mount_console(&mut self) -> Result<(), InitError> {
        self.rec("mount_console")
    }
    fn finish_rootfs(&mut self, _: &rootfs::RootfsPlan) -> Result<(), InitError> {
        self.rec("finish_rootfs")
    }
    fn enter_cwd(&mut self, cwd: &Path, create_missing: bool) -> Result<(), InitError> {
        self.rec(format!(
            "enter_cwd {} create={create_missing}",
            cwd.display()
        ))
    }
    fn container_env(&mut self, process: &Process) -> Vec<String> {
        let _ = self.rec("container_env");
        process.env().clone().unwrap_or_default()
    }
    fn find_executable(
        &mut self,
        arg0: &str,
        _: &[String],
        _: &Path,
    ) -> Result<PathBuf, InitError> {
        self.rec(format!("find_executable {arg0}"))?;
        Ok(PathBuf::from("/bin").join(arg0))
    }
    fn close_fds_on_exec(&mut self, first: i32) -> Result<(), InitError> {
        self.rec(format!("close_fds_on_exec {first}"))
    }
    fn apply_exec_labels(&mut self, _: &Process) -> Result<(), InitError> {
        self.rec("apply_exec_labels")
    }
    fn apply_process(
        &mut self,
        _: &Process,
        _: Option<&LinuxPersonality>,
        seccomp: Option<Prepared>,
        _: &str,
    ) -> Result<Option<Prepared>, InitError> {
        self.rec("apply_process")?;
        Ok(seccomp)
    }
    fn clear_parent_death_signal(&mut self) -> Result<(), InitError> {
        self.rec("clear_parent_death_signal")
    }
    fn activate_seccomp(&mut self, _: Prepared, _: &str) -> Result<(), InitError> {
        self.rec("activate_seccomp")
    }
    fn enter_container(&mut self, _: &ExecPlan) -> Result<Option<Prepared>, InitError> {
        self.rec("enter_container")?;
        Ok(None)
    }
    fn exec(&mut self, exec: &ExecArgs) -> InitError {
        let _ = self.rec(format!("exec {exec:?}"));
        InitError::Invalid(EXECED.into())
    }
}

/// A container with every optional step: a new network namespace, a terminal, both kinds
/// of hooks run inside, and a seccomp filter (no_new_privs: loaded last).
fn create_plan() -> InitPlan {
    let spec: Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": true, "cwd": "/work", "user": {"uid": 0, "gid": 0},
                    "args": ["sh", "-c", "true"], "env": ["PATH=/bin"],
                    "noNewPrivileges": true},
        "root": {"path": "rootfs"},
        "hooks": {"createContainer": [{"path": "/bin/true"}],
                  "startContainer": [{"path": "/bin/true"}]},
        "linux": {"namespaces": [{"type": "network"}, {"type": "mount"}]}
    }))
    .expect("a valid spec");
    InitPlan {
        id: "c1".into(),
        spec,
        rootfs: "/bundle/rootfs".into(),
        bundle: "/bundle".into(),
        fifo: "/run/hull/c1/exec.fifo".into(),
        no_pivot: false,
        no_new_keyring: false,
        console_fd: Some(7),
        preserve_fds: 1,
        join_user: None,
        unshare_flags: 0,
        in_user_ns: false,
        seccomp: Some(Compiled::new(
            &[libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            }],
            0,
            None,
        )),
    }
}

fn exec_plan() -> ExecPlan {
    ExecPlan {
        id: "c1".into(),
        process: serde_json::from_value(serde_json::json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["ls"]}))
        .expect("a valid process"),
        join_user: None,
        join_mount: "/proc/1/ns/mnt".into(),
        console_fd: None,
        preserve_fds: 0,
        personality: None,
        seccomp: None,
        oci_version: "1.0.2".into(),
        state_json: "{}".into(),
    }
}

/// Run the sequence for `plan`, failing at `fail_at`: the error and every step taken.
fn run_scripted(plan: Plan, fail_at: Option<&'static str>) -> (InitError, Vec<String>) {
    let log = Log::default();
    let mut coord = Scripted {
        log: log.clone(),
        plan: Some(plan),
        fail_at,
    };
    let mut sys = Recording { log: log.clone() };
    let err = run(&mut coord, &mut sys);
    let steps = log.borrow().clone();
    (err, steps)
}

const CREATE_STEPS: &[&str] = &[
    "new_session",
    "plan",
    "prepare_start",
    "prepare_seccomp",
    "enter_namespaces",
    "bring_up_loopback",
    "join_session_keyring c1",
    "set_host_and_domain_name",
    "prepare_rootfs",
    "cgroup_joined",
    "unshare_cgroup_ns",
    "mounts_ready",
    r#"run_hooks createContainer id="c1""#,
    "enter_rootfs",
    "write_sysctls",
    "setup_console Some(7)",
    "mount_console",
    "finish_rootfs",
    "enter_cwd /work create=true",
    "container_env",
    "find_executable sh",
    "close_fds_on_exec 4",
    "apply_exec_labels",
    "apply_process",
    "clear_parent_death_signal",
    "ready",
    "wait_for_start",
    r#"run_hooks startContainer id="c1""#,
    "activate_seccomp",
];

#[test]
fn create_runs_every_step_in_runcs_order_and_ends_in_the_exec() {
    let (err, steps) = run_scripted(Plan::Create(Box::new(create_plan())), None);
    assert_eq!(err.to_string(), EXECED);
    let (exec, before) = steps.split_last().expect("steps");
    assert_eq!(before, CREATE_STEPS);
    assert!(
        exec.starts_with("exec ") && exec.contains("/bin/sh"),
        "{exec}"
    );
}

#[test]
fn create_skips_the_optional_steps_when_the_plan_has_none() {
    let mut plan = create_plan();
    plan.no_new_keyring = true;
    plan.seccomp = None;
    let mut spec = plan.spec.clone();
    spec.set_hooks(None);
    let mut process = spec.process().clone().expect("process");
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().expect("linux");
    linux.set_namespaces(None);
    spec.set_linux(Some(linux));
    plan.spec = spec;
    let (err, steps) = run_scripted(Plan::Create(Box::new(plan)), None);
    assert_eq!(err.to_string(), EXECED);
    for skipped in [
        "prepare_seccomp",
        "bring_up_loopback",
        "join_session_keyring c1",
        "run_hooks",
        "setup_console",
        "mount_console",
        "activate_seccomp",
    ] {
        assert!(
            !steps.iter().any(|s| s.starts_with(skipped)),
            "{skipped} ran: {steps:?}"
        );
    }
}

#[test]
fn a_failure_at_each_coordination_moment_ends_the_create_sequence_there() {
    for moment in [
        "plan",
        "prepare_start",
        "cgroup_joined",
        "mounts_ready",
        "ready",
        "wait_for_start",
    ] {
        let (err, steps) = run_scripted(Plan::Create(Box::new(create_plan())), Some(moment));
        assert!(
            err.to_string().contains(&format!("injected at {moment}")),
            "{moment}: {err}"
        );
        assert_eq!(
            steps.last().map(String::as_str),
            Some(moment),
            "nothing may run after a failed {moment}: {steps:?}"
        );
        let expected = CREATE_STEPS
            .iter()
            .position(|s| *s == moment)
            .expect("a moment of the create sequence");
        assert_eq!(steps, CREATE_STEPS[..=expected], "{moment}");
        // Reporting the error is the driver's job, not the sequence's.
        assert!(!steps.iter().any(|s| s == "report_error"), "{moment}");
    }
}

#[test]
fn a_missing_process_fails_before_anything_is_touched() {
    let mut plan = create_plan();
    plan.spec.set_process(None);
    let (err, steps) = run_scripted(Plan::Create(Box::new(plan)), None);
    assert_eq!(err.to_string(), "config.json: process is missing");
    assert_eq!(steps, ["new_session", "plan"]);
}

#[test]
fn exec_joins_the_container_then_reports_ready_once() {
    let (err, steps) = run_scripted(Plan::Exec(Box::new(exec_plan())), None);
    assert_eq!(err.to_string(), EXECED);
    let (exec, before) = steps.split_last().expect("steps");
    assert_eq!(
        before,
        [
            "new_session",
            "plan",
            "cgroup_joined",
            "enter_container",
            "enter_cwd / create=false",
            "container_env",
            "find_executable ls",
            "apply_exec_labels",
            "close_fds_on_exec 3",
            "apply_process",
            "clear_parent_death_signal",
            "ready",
        ]
    );
    assert!(exec.contains("/bin/ls"), "{exec}");
}

#[test]
fn a_failure_at_ready_ends_the_exec_sequence_there() {
    let (err, steps) = run_scripted(Plan::Exec(Box::new(exec_plan())), Some("ready"));
    assert_eq!(err.to_string(), "injected at ready");
    assert_eq!(steps.last().map(String::as_str), Some("ready"));
}
