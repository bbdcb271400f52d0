//! Container lifecycle through the CLI: run, create/start/state/kill/delete, list, ps,
//! pid file, stdio, --preserve-fds, and cleanup after a killed `create`.

use hull_tests::runtime::Io;
use hull_tests::util::{signal, wait_child, write_script};
use hull_tests::{assert_no_leftovers, setup, wait_until, Bundle};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn run_prints_output_and_exits_with_status() {
    let Some(rt) = setup("run-status") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh("echo hi; exit 7");
    let o = rt.run_bundle(&b);
    assert_eq!(o.code(), 7, "{o}");
    assert_eq!(o.stdout, "hi\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn run_true_and_false() {
    let Some(rt) = setup("run-truefalse") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["true"]);
    rt.run_bundle(&b).assert_ok();
    b.args(&["false"]);
    assert_eq!(rt.run_bundle(&b).code(), 1);
    assert_no_leftovers(&rt, &b);
}

#[test]
fn run_killed_by_sigkill_exits_137() {
    let Some(rt) = setup("run-137") else { return };
    let mut b = Bundle::new();
    // Foreground `run`, container SIGKILLed from outside: `run` exits 128+9.
    b.args(&["sleep", "60"]);
    let id = rt.id();
    b.write();
    let mut c = rt.cmd(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    assert!(rt.wait_status(&id, "running", T), "container never ran");
    rt.kill(&id, "KILL").assert_ok();
    let st = wait_child(&mut child, T).expect("run did not exit after SIGKILL");
    assert_eq!(
        st.code(),
        Some(137),
        "run exit status after SIGKILL: {st:?}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn create_start_kill_delete_and_state_fields() {
    let Some(rt) = setup("lifecycle") else { return };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"])
        .annotation("org.example.e2e", "yes");
    let id = rt.id();
    rt.create(&id, &b).assert_ok();

    let s = rt.state_json(&id);
    assert_eq!(s["status"], "created", "{s}");
    assert_eq!(s["id"], id.as_str());
    let pid = s["pid"].as_i64().expect("pid");
    assert!(pid > 0, "{s}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} not alive"
    );
    assert!(
        s["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{s}"
    );
    let bundle = b.path().canonicalize().unwrap();
    assert_eq!(
        s["bundle"].as_str().map(std::path::PathBuf::from),
        Some(bundle.clone()),
        "{s}"
    );
    // rootfs: absolute path of the bundle's rootfs.
    assert_eq!(
        s["rootfs"].as_str().map(std::path::PathBuf::from),
        Some(bundle.join("rootfs")),
        "{s}"
    );
    let created = s["created"].as_str().expect("created");
    assert_rfc3339_nanos(created);
    assert_eq!(s["owner"], "", "owner is empty for root: {s}");
    assert_eq!(s["annotations"]["org.example.e2e"], "yes", "{s}");

    // pid file: the number only, no newline, equal to state.pid.
    let pf = std::fs::read_to_string(rt.pid_file(&id)).expect("pid file");
    assert_eq!(pf, pid.to_string(), "pid file content");

    rt.start(&id).assert_ok();
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    assert_eq!(rt.state_json(&id)["pid"].as_i64(), Some(pid));

    // start twice fails: the container is not in the created state.
    rt.start(&id).assert_fail();

    rt.kill(&id, "KILL").assert_ok();
    assert!(rt.wait_status(&id, "stopped", T), "not stopped after KILL");
    let s = rt.state_json(&id);
    assert_eq!(s["pid"], 0, "pid must be 0 when stopped: {s}");

    rt.delete(&id).assert_ok();
    let o = rt.state(&id);
    o.assert_fail().assert_error_contains("does not exist");
    assert_no_leftovers(&rt, &b);
}

fn assert_rfc3339_nanos(s: &str) {
    // 2024-01-02T03:04:05.123456789Z or with +hh:mm offset; fraction of 1..9 digits, nanos.
    let ok = s.len() >= 20
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[7] == b'-'
        && s.as_bytes()[10] == b'T'
        && s.as_bytes()[13] == b':'
        && s.as_bytes()[16] == b':';
    assert!(ok, "created is not RFC 3339: {s}");
    let rest = &s[19..];
    let frac = rest.strip_prefix('.').unwrap_or("");
    let digits = frac.chars().take_while(char::is_ascii_digit).count();
    assert!(digits >= 1, "created has no sub-second part: {s}");
    let tz = &frac[digits..];
    assert!(
        tz == "Z" || (tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-'))),
        "{s}"
    );
}

#[test]
fn kill_signal_spellings() {
    let Some(rt) = setup("kill-spellings") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    for sig in ["9", "KILL", "SIGKILL"] {
        let id = rt.start_running(&b);
        rt.kill(&id, sig).assert_ok();
        assert!(
            rt.wait_status(&id, "stopped", T),
            "kill {sig} did not stop the container"
        );
        rt.delete(&id).assert_ok();
    }
    assert_no_leftovers(&rt, &b);
}

#[test]
fn kill_default_signal_is_sigterm_and_handled() {
    let Some(rt) = setup("kill-term") else { return };
    let mut b = Bundle::new();
    // A trap makes pid 1 honour SIGTERM.
    b.sh("trap 'exit 0' TERM; while true; do sleep 0.05; done");
    let id = rt.start_running(&b);
    // Give sh a moment to install the trap: poll until it runs a sleep child.
    wait_until(T, || rt.ps_pids(&id).len() > 1);
    rt.call(&["kill", &id]).assert_ok();
    assert!(
        rt.wait_status(&id, "stopped", T),
        "kill (default TERM) did not stop it"
    );
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn kill_all_reaches_every_process() {
    let Some(rt) = setup("kill-all") else { return };
    let mut b = Bundle::new();
    // pid 1 ignores TERM (no handler in its own pid ns); its children do not.
    b.sh("sleep 60 & sleep 60 & wait; exit 3");
    let id = rt.start_running(&b);
    assert!(
        wait_until(T, || rt.ps_pids(&id).len() == 3),
        "children did not start"
    );
    rt.kill(&id, "TERM").assert_ok();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        rt.status(&id).as_deref(),
        Some("running"),
        "pid 1 must ignore TERM"
    );
    rt.kill_all(&id, "KILL").assert_ok();
    assert!(
        rt.wait_status(&id, "stopped", T),
        "kill --all KILL did not stop it"
    );
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn kill_stopped_container_fails() {
    let Some(rt) = setup("kill-stopped") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["true"]);
    let id = rt.start_running(&b);
    assert!(rt.wait_status(&id, "stopped", T));
    rt.kill(&id, "KILL")
        .assert_fail()
        .assert_error_contains("not running");
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn delete_running_needs_force() {
    let Some(rt) = setup("delete-force") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    rt.delete(&id).assert_fail();
    assert_eq!(
        rt.status(&id).as_deref(),
        Some("running"),
        "failed delete must not stop it"
    );
    rt.delete_force(&id).assert_ok();
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert!(
        wait_until(T, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z"))),
        "init still alive after delete --force"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn delete_force_of_created_container() {
    let Some(rt) = setup("delete-created") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    rt.delete_force(&id).assert_ok();
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn delete_missing_container_fails() {
    let Some(rt) = setup("delete-missing") else {
        return;
    };
    let id = rt.id();
    rt.delete(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    rt.kill(&id, "KILL")
        .assert_fail()
        .assert_error_contains("does not exist");
}

#[test]
fn list_table_json_and_quiet() {
    let Some(rt) = setup("list") else { return };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let a = rt.id();
    rt.create(&a, &b).assert_ok();
    let mut b2 = Bundle::new();
    b2.args(&["sleep", "60"]);
    let r = rt.start_running(&b2);

    let o = rt.list(&[]);
    o.assert_ok();
    let mut lines = o.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{o}"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let row = |id: &str| rows.iter().find(|r| r[0] == id).cloned();
    assert_eq!(
        row(&a).map(|r| r[2].clone()).as_deref(),
        Some("created"),
        "{o}"
    );
    assert_eq!(
        row(&r).map(|r| r[2].clone()).as_deref(),
        Some("running"),
        "{o}"
    );
    assert_eq!(
        row(&r).map(|r| r[3].clone()),
        Some(b2.path().canonicalize().unwrap().display().to_string())
    );

    let o = rt.list(&["-q"]);
    let mut ids: Vec<&str> = o.stdout.lines().collect();
    ids.sort();
    let mut want = vec![a.as_str(), r.as_str()];
    want.sort();
    assert_eq!(ids, want, "{o}");

    let o = rt.list(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(o.out()).unwrap_or_else(|e| panic!("{e}: {o}"));
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 2, "{o}");
    for c in arr {
        for k in ["id", "pid", "status", "bundle", "created"] {
            assert!(c.get(k).is_some(), "list json lacks {k}: {c}");
        }
    }
    let rj = arr.iter().find(|c| c["id"] == r.as_str()).unwrap();
    assert_eq!(rj["status"], "running");
    assert_eq!(rj["pid"], rt.state_json(&r)["pid"]);

    rt.delete_force(&a).assert_ok();
    rt.delete_force(&r).assert_ok();
    let o = rt.list(&["-q"]);
    assert_eq!(o.out(), "", "{o}");
    assert_no_leftovers(&rt, &b);
    assert_no_leftovers(&rt, &b2);
}

#[test]
fn list_empty_root() {
    let Some(rt) = setup("list-empty") else {
        return;
    };
    let o = rt.list(&["--format", "json"]);
    o.assert_ok();
    let v: serde_json::Value =
        serde_json::from_str(o.out()).unwrap_or_else(|e| panic!("list json ({e}): {o}"));
    // runc prints `null` for no containers; `[]` is equally fine.
    assert!(
        v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
        "{o}"
    );
}

#[test]
fn ps_json_and_table() {
    let Some(rt) = setup("ps") else { return };
    let mut b = Bundle::new();
    b.sh("sleep 60 & exec sleep 61");
    let id = rt.start_running(&b);
    let init = rt.state_json(&id)["pid"].as_i64().unwrap();
    assert!(
        wait_until(T, || rt.ps_pids(&id).len() == 2),
        "want 2 processes"
    );
    let pids = rt.ps_pids(&id);
    assert!(pids.contains(&init), "ps json {pids:?} lacks init {init}");

    let o = rt.ps(&id, &[]);
    o.assert_ok();
    let header = o.stdout.lines().next().unwrap_or("");
    assert!(header.contains("PID") && header.contains("CMD"), "{o}");
    assert!(o.stdout.contains("sleep 61"), "{o}");
    assert!(o.stdout.contains(&init.to_string()), "{o}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn run_detach() {
    let Some(rt) = setup("run-detach") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.id();
    let o = rt.run_with(&id, &b, &["--detach"], Default::default());
    o.assert_ok();
    assert_eq!(rt.status(&id).as_deref(), Some("running"), "{o}");
    rt.kill(&id, "KILL").assert_ok();
    assert!(rt.wait_status(&id, "stopped", T));
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn stdio_passed_through() {
    let Some(rt) = setup("stdio") else { return };
    let mut b = Bundle::new();
    b.sh("read line; echo \"got:$line\"; echo to-stderr >&2; cat");
    let id = rt.id();
    let o = rt.run_with(
        &id,
        &b,
        &[],
        Io {
            stdin: Some(b"first\nrest\n"),
            ..Default::default()
        },
    );
    o.assert_ok();
    assert_eq!(o.stdout, "got:first\nrest\n", "{o}");
    assert!(o.stderr.contains("to-stderr"), "{o}");
    assert_no_leftovers(&rt, &b);
}

/// containerd's way: the fds given to `create` become the container's stdio, used after
/// `start` even though `create` has exited.
#[test]
fn create_stdio_reaches_the_container() {
    let Some(rt) = setup("create-stdio") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh("cat; echo to-err >&2; echo done");
    b.write();
    let dir = rt.scratch();
    std::fs::write(dir.join("in"), "input-line\n").unwrap();
    let id = rt.id();
    let pf = rt.pid_file(&id);
    let mut c = rt.cmd(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pf.to_str().unwrap(),
        &id,
    ]);
    c.stdin(std::fs::File::open(dir.join("in")).unwrap())
        .stdout(std::fs::File::create(dir.join("out")).unwrap())
        .stderr(std::fs::File::create(dir.join("err")).unwrap());
    let mut child = c.spawn().unwrap();
    let st = wait_child(&mut child, Duration::from_secs(60)).expect("create timed out");
    assert!(
        st.success(),
        "create failed: {}",
        std::fs::read_to_string(dir.join("err")).unwrap()
    );
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "stopped", T));
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap(),
        "input-line\ndone\n"
    );
    assert!(std::fs::read_to_string(dir.join("err"))
        .unwrap()
        .contains("to-err"));
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn preserve_fds_passes_fd3() {
    let Some(rt) = setup("preserve-fds") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh("cat <&3");
    let extra = rt.scratch().join("fd3");
    std::fs::write(&extra, "from-fd-3\n").unwrap();
    let id = rt.id();
    let f = std::fs::File::open(&extra).unwrap();
    let o = rt.run_with(
        &id,
        &b,
        &["--preserve-fds", "1"],
        Io {
            extra_fds: vec![(3, f)],
            ..Default::default()
        },
    );
    o.assert_ok();
    assert_eq!(o.stdout, "from-fd-3\n", "{o}");

    // Without --preserve-fds, fd 3 is not passed.
    let f = std::fs::File::open(&extra).unwrap();
    let id = rt.id();
    let o = rt.run_with(
        &id,
        &b,
        &[],
        Io {
            extra_fds: vec![(3, f)],
            ..Default::default()
        },
    );
    assert_ne!(o.code(), 0, "fd 3 leaked into the container: {o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn create_twice_same_id_fails() {
    let Some(rt) = setup("create-twice") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    let pid = rt.state_json(&id)["pid"].clone();
    rt.create(&id, &b)
        .assert_fail()
        .assert_error_contains("already exists");
    // The first container is untouched.
    let s = rt.state_json(&id);
    assert_eq!(s["status"], "created");
    assert_eq!(s["pid"], pid);
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn state_and_start_of_missing_container() {
    let Some(rt) = setup("start-missing") else {
        return;
    };
    let id = rt.id();
    rt.start(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
}

/// `create` SIGKILLed while a createRuntime hook runs: `delete --force` must clean up
/// everything (state, cgroup, init process).
#[test]
fn delete_force_after_create_killed_halfway() {
    let Some(rt) = setup("create-killed") else {
        return;
    };
    hull_tests::hull_only!(
        rt,
        "runc 1.1 leaves the half-created container's cgroup behind when `create` is SIGKILLed during a createRuntime hook"
    );
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let marker = rt.scratch().join("hook-started");
    let hook = rt.scratch().join("slow-hook.sh");
    write_script(
        &hook,
        &format!("echo $$ > {}\nexec sleep 30", marker.display()),
    );
    b.hook(
        "createRuntime",
        serde_json::json!({"path": hook.to_str().unwrap()}),
    );
    b.write();
    let id = rt.id();
    let pf = rt.pid_file(&id);
    let mut child = rt.spawn(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pf.to_str().unwrap(),
        &id,
    ]);
    let started = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| s.ends_with('\n'))
    });
    let hook_pid: i32 = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    signal(hook_pid, libc::SIGKILL); // our own hook process
    assert!(started, "createRuntime hook never ran");

    rt.delete_force(&id).assert_ok();
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn delete_kills_what_outlives_init_in_the_cgroup() {
    let Some(rt) = setup("delete-leftovers") else {
        return;
    };
    let mut b = Bundle::new();
    // Without a pid namespace, init's children survive it in the container's cgroup.
    b.without_namespace("pid");
    b.sh("sleep 60 >/dev/null 2>&1 & exit 0");
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "stopped", T), "init did not exit");
    rt.call(&["delete", &id]).assert_ok();
    assert_no_leftovers(&rt, &b);
}

/// What a `create` SIGKILLed before it saved its state leaves: the id's directory holding
/// only `exec.fifo`.
fn leave_early_create_debris(rt: &hull_tests::Runtime, id: &str) -> std::path::PathBuf {
    let dir = rt.root().join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = std::ffi::CString::new(dir.join("exec.fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o622) }, 0);
    dir
}

/// The id's existence is one fact: after a `create` killed before it saved its state,
/// `state`, `list`, `create` and `delete` agree that the id does not exist.
#[test]
fn early_killed_create_leaves_no_half_existing_id() {
    let Some(rt) = setup("create-debris") else {
        return;
    };
    hull_tests::hull_only!(
        rt,
        "runc 1.1 says such an id does not exist (state, list) and already exists (create)"
    );
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.id();
    let dir = leave_early_create_debris(&rt, &id);
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    let l = rt.list(&["-q"]);
    l.assert_ok();
    assert!(!l.stdout.lines().any(|l| l == id), "list shows it: {l}");
    // The id is free: create takes it over.
    rt.create(&id, &b).assert_ok();
    assert_eq!(rt.status(&id).as_deref(), Some("created"));
    rt.delete_force(&id).assert_ok();
    assert!(!dir.exists());

    // delete removes the debris; without --force it says the id does not exist (runc).
    leave_early_create_debris(&rt, &id);
    rt.delete(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert!(!dir.exists(), "delete left the debris");
    leave_early_create_debris(&rt, &id);
    rt.delete_force(&id).assert_ok();
    assert!(!dir.exists(), "delete --force left the debris");
    assert_no_leftovers(&rt, &b);
}

/// `create` SIGKILLed at increasing delays from its start: whatever it left, `state`,
/// `list` and a second `create` agree on whether the id exists, and `delete --force`
/// cleans up.
#[test]
fn create_killed_at_any_moment_is_consistent() {
    let Some(rt) = setup("create-kill-early") else {
        return;
    };
    hull_tests::hull_only!(
        rt,
        "runc 1.1 says a half-created id does not exist (state, list) and already exists (create)"
    );
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    b.write();
    for i in 0..12u64 {
        let id = rt.id();
        let pf = rt.pid_file(&id);
        let mut child = rt.spawn(&[
            "create",
            "--bundle",
            b.path().to_str().unwrap(),
            "--pid-file",
            pf.to_str().unwrap(),
            &id,
        ]);
        std::thread::sleep(Duration::from_micros(i * i * 40));
        let _ = child.kill();
        let _ = child.wait();
        let state = rt.state(&id);
        let listed = rt.list(&["-q"]).stdout.lines().any(|l| l == id);
        assert_eq!(state.ok(), listed, "[{i}] state and list disagree: {state}");
        let again = rt.create(&id, &b);
        if state.ok() {
            again.assert_fail().assert_error_contains("already exists");
        } else {
            state.assert_error_contains("does not exist");
            again.assert_ok();
        }
        rt.delete_force(&id).assert_ok();
        rt.state(&id)
            .assert_fail()
            .assert_error_contains("does not exist");
    }
    assert_no_leftovers(&rt, &b);
}

/// A pid-1 shell that exits with the number of the real-time signal it receives (pid 1
/// only receives signals it has a handler for).
const RT_TRAPS: &str = "trap 'exit 34' 34; trap 'exit 37' 37; trap 'exit 63' 63; \
                        trap 'exit 64' 64; while true; do sleep 0.05; done";

/// Foreground `hull run` of `b` under a fresh id, once the container runs its loop.
fn spawn_run_with_traps(rt: &hull_tests::Runtime, b: &Bundle) -> (String, std::process::Child) {
    let id = rt.id();
    b.write();
    let mut c = rt.cmd(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = c.spawn().unwrap();
    assert!(rt.wait_status(&id, "running", T), "container never ran");
    // The traps are in place once sh runs its first `sleep`.
    assert!(
        wait_until(T, || rt.ps_pids(&id).len() > 1),
        "the container's loop never started"
    );
    (id, child)
}

/// Item 4 of issue 9: `kill` takes real-time signals by number (34..=64) and by every
/// name form (`RTMIN+3`, `SIGRTMIN+3`, `rtmin+3`, `RTMIN`, `RTMAX`, `RTMAX-1`), and the
/// container's init receives exactly that signal (its trap exits with the number).
#[test]
fn kill_realtime_signals_by_number_and_name() {
    let Some(rt) = setup("kill-rt") else { return };
    let mut b = Bundle::new();
    b.sh(RT_TRAPS);
    let mut cases = vec![("37", 37), ("34", 34), ("64", 64)];
    // runc 1.1 takes only numbers for real-time signals (x/sys/unix knows no RT names).
    if !rt.is_runc() || hull_tests::skip::force_hull_only() {
        cases.extend([
            ("RTMIN+3", 37),
            ("SIGRTMIN+3", 37),
            ("rtmin+3", 37),
            ("RTMIN", 34),
            ("SIGRTMIN", 34),
            ("RTMAX", 64),
            ("RTMAX-1", 63),
        ]);
    }
    for (sig, want) in cases {
        let (id, mut child) = spawn_run_with_traps(&rt, &b);
        let o = rt.kill(&id, sig);
        if !o.ok() {
            rt.kill(&id, "KILL");
            let _ = wait_child(&mut child, T);
        }
        o.assert_ok();
        let st = wait_child(&mut child, T).expect("run did not exit after the signal");
        assert_eq!(st.code(), Some(want), "kill {sig}: run exited {st:?}");
    }
    assert_no_leftovers(&rt, &b);
}

/// `kill --all` with a real-time signal reaches every process of the container.
#[test]
fn kill_all_realtime_signal() {
    let Some(rt) = setup("kill-all-rt") else {
        return;
    };
    let mut b = Bundle::new();
    // The children have no handler: the default action of a real-time signal ends them.
    b.sh("sleep 60 & sleep 60 & wait; exit 3");
    let id = rt.start_running(&b);
    assert!(
        wait_until(T, || rt.ps_pids(&id).len() == 3),
        "children did not start"
    );
    rt.kill_all(&id, "37").assert_ok();
    assert!(
        rt.wait_status(&id, "stopped", T),
        "kill --all 37 did not stop it"
    );
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

/// Real-time signals sent to a foreground `run` are forwarded to the container (as runc
/// forwards every signal), not acted on by `run` itself.
#[test]
fn run_forwards_realtime_signals() {
    let Some(rt) = setup("run-forward-rt") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh(RT_TRAPS);
    let mut cases = vec![(37, 37), (libc::SIGRTMAX(), 64)];
    // runc 1.1 (Go) is itself killed by SIGRTMIN (34) instead of forwarding it.
    if !rt.is_runc() || hull_tests::skip::force_hull_only() {
        cases.push((libc::SIGRTMIN(), 34));
    }
    for (sig, want) in cases {
        let (id, mut child) = spawn_run_with_traps(&rt, &b);
        signal(child.id() as i32, sig);
        let st = wait_child(&mut child, T);
        if st.is_none() {
            rt.kill(&id, "KILL");
            let _ = wait_child(&mut child, T);
        }
        let st = st.expect("run did not exit after the forwarded signal");
        assert_eq!(st.code(), Some(want), "signal {sig} to run: exited {st:?}");
    }
    assert_no_leftovers(&rt, &b);
}

/// `hull run` passes on every signal a container may care about, as runc does (not only
/// INT/TERM/HUP/QUIT/USR1/USR2): SIGALRM, SIGPWR, SIGVTALRM, SIGXCPU.
#[test]
fn run_forwards_standard_signals_beyond_the_usual_ones() {
    let Some(rt) = setup("run-forward-std") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh(
        "trap 'exit 14' ALRM; trap 'exit 30' PWR; trap 'exit 26' VTALRM; \
          trap 'exit 24' XCPU; while true; do sleep 0.05; done",
    );
    for sig in [libc::SIGALRM, libc::SIGPWR, libc::SIGVTALRM, libc::SIGXCPU] {
        let (id, mut child) = spawn_run_with_traps(&rt, &b);
        signal(child.id() as i32, sig);
        let st = wait_child(&mut child, T);
        if st.is_none() {
            rt.kill(&id, "KILL");
            let _ = wait_child(&mut child, T);
        }
        let st = st.expect("run did not exit after the forwarded signal");
        assert_eq!(st.code(), Some(sig), "signal {sig} to run: exited {st:?}");
    }
    assert_no_leftovers(&rt, &b);
}
