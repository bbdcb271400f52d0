//! OCI hooks: when each kind runs, the state JSON on its stdin, env, timeout, failures.

use hull_tests::{assert_no_leftovers, setup, Bundle, Runtime};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// A host-side hook that saves its stdin to `<dir>/<kind>.json` and appends `kind` to
/// `<dir>/order`.
fn host_hook(dir: &Path, kind: &str) -> Value {
    let d = dir.display();
    json!({"path": "/bin/sh", "args": ["sh", "-c",
        format!("cat > {d}/{kind}.json; echo {kind} >> {d}/order")]})
}

fn order(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("order"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn hook_state(dir: &Path, kind: &str) -> Value {
    let p = dir.join(format!("{kind}.json"));
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{kind} hook output {p:?}: {e}"));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{kind} hook stdin is not JSON ({e}): {s}"))
}

fn hooks_dir(rt: &Runtime) -> std::path::PathBuf {
    let d = rt.scratch().join("hooks");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The state's pid is the host pid; hooks that run inside the container (createContainer,
/// startContainer) may see it from the container's pid namespace (runc passes 1 there).
fn assert_pid(s: &Value, host_pid: i64, kind: &str) {
    let p = s["pid"].as_i64();
    let inside = kind == "createContainer" || kind == "startContainer";
    assert!(
        p == Some(host_pid) || (inside && p == Some(1)),
        "{kind}: pid {p:?}, want {host_pid}: {s}"
    );
}

#[test]
fn every_hook_kind_runs_at_its_moment_with_state() {
    let Some(rt) = setup("hooks-all") else { return };
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    // poststart has its own test below (runc 1.1 runs it at create).
    for k in ["prestart", "createRuntime", "createContainer", "poststop"] {
        b.hook(k, host_hook(&dir, k));
    }
    // startContainer runs inside the container: its path resolves in the container.
    b.bind(&dir, "/hookout", &["rw"]);
    b.hook(
        "startContainer",
        json!({"path": "/bin/sh", "args": ["sh", "-c",
            "cat > /hookout/startContainer.json; echo startContainer >> /hookout/order"]}),
    );
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    let after_create = order(&dir);
    for k in ["prestart", "createRuntime", "createContainer"] {
        assert!(
            after_create.contains(&k.to_string()),
            "{k} did not run at create: {after_create:?}"
        );
    }
    assert!(
        !after_create.iter().any(|k| k == "startContainer"),
        "{after_create:?}"
    );
    let pos = |k: &str| after_create.iter().position(|x| x == k).unwrap();
    assert!(
        pos("createRuntime") < pos("createContainer"),
        "{after_create:?}"
    );
    for k in ["prestart", "createRuntime", "createContainer"] {
        let s = hook_state(&dir, k);
        assert_eq!(s["id"], id.as_str(), "{k}: {s}");
        assert_pid(&s, pid, k);
        assert_eq!(s["status"], "creating", "{k}: {s}");
        assert_eq!(
            s["bundle"].as_str().map(std::path::PathBuf::from),
            Some(b.path().canonicalize().unwrap()),
            "{k}: {s}"
        );
        assert!(s["ociVersion"].is_string(), "{k}: {s}");
    }

    rt.start(&id).assert_ok();
    assert!(hull_tests::wait_until(T, || order(&dir).contains(&"startContainer".to_string())));
    let after_start = order(&dir);
    assert_eq!(after_start[3..], ["startContainer"], "{after_start:?}");
    let s = hook_state(&dir, "startContainer");
    assert_eq!(s["id"], id.as_str(), "{s}");
    assert_pid(&s, pid, "startContainer");
    assert!(!order(&dir).contains(&"poststop".to_string()));

    rt.kill(&id, "KILL").assert_ok();
    assert!(rt.wait_status(&id, "stopped", T));
    assert!(
        !order(&dir).contains(&"poststop".to_string()),
        "poststop ran before delete"
    );
    rt.delete(&id).assert_ok();
    assert_eq!(order(&dir).last().map(String::as_str), Some("poststop"));
    let s = hook_state(&dir, "poststop");
    assert_eq!(s["id"], id.as_str(), "{s}");
    assert_eq!(s["status"], "stopped", "{s}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn poststart_runs_at_start_not_at_create() {
    let Some(rt) = setup("hooks-poststart") else {
        return;
    };
    hull_tests::hull_only!(
        rt,
        "runc 1.1 runs poststart hooks during `create` (fixed in runc 1.2)"
    );
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    b.hook("poststart", host_hook(&dir, "poststart"));
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    assert!(order(&dir).is_empty(), "poststart ran at create");
    rt.start(&id).assert_ok();
    assert!(
        hull_tests::wait_until(T, || order(&dir) == ["poststart"]),
        "{:?}",
        order(&dir)
    );
    let s = hook_state(&dir, "poststart");
    assert_eq!(s["pid"].as_i64(), Some(pid), "{s}");
    assert_eq!(s["status"], "running", "{s}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn poststart_runs_with_state() {
    let Some(rt) = setup("hooks-poststart2") else {
        return;
    };
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    b.hook("poststart", host_hook(&dir, "poststart"));
    let id = rt.start_running(&b);
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    assert_eq!(order(&dir), ["poststart"]);
    let s = hook_state(&dir, "poststart");
    assert_eq!(s["pid"].as_i64(), Some(pid), "{s}");
    assert_eq!(s["id"], id.as_str(), "{s}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn hooks_run_in_order_with_args_and_env() {
    let Some(rt) = setup("hooks-env") else { return };
    let dir = hooks_dir(&rt);
    let d = dir.display();
    let mut b = Bundle::new();
    b.args(&["true"]);
    for n in 1..=3 {
        b.hook(
            "createRuntime",
            json!({"path": "/bin/sh",
                   "args": ["sh", "-c", format!("echo \"$0 $1 $HOOKVAR $PATH\" >> {d}/env"), format!("hook{n}"), "arg1"],
                   "env": [format!("HOOKVAR=v{n}"), "PATH=/custom/path"]}),
        );
    }
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    assert_eq!(
        env,
        "hook1 arg1 v1 /custom/path\nhook2 arg1 v2 /custom/path\nhook3 arg1 v3 /custom/path\n"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    let Some(rt) = setup("hooks-fail") else {
        return;
    };
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    b.hook(
        "createRuntime",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"]}),
    );
    b.hook("poststart", host_hook(&dir, "poststart"));
    let id = rt.id();
    let o = rt.create(&id, &b);
    o.assert_fail();
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert!(order(&dir).is_empty(), "later hooks ran: {:?}", order(&dir));
    assert_no_leftovers(&rt, &b);
}

#[test]
fn failing_prestart_hook_fails_run() {
    let Some(rt) = setup("hooks-prestart-fail") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["echo", "must-not-run"]);
    b.hook("prestart", json!({"path": "/bin/false"}));
    let o = rt.run_bundle(&b);
    o.assert_fail();
    assert!(!o.stdout.contains("must-not-run"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn hook_timeout_is_enforced() {
    let Some(rt) = setup("hooks-timeout") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["true"]);
    b.hook(
        "createRuntime",
        json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}),
    );
    let id = rt.id();
    let t0 = Instant::now();
    let o = rt.create(&id, &b);
    let took = t0.elapsed();
    o.assert_fail();
    assert!(
        took < Duration::from_secs(15),
        "hook timeout of 1s not enforced (took {took:?})"
    );
    rt.state(&id).assert_fail();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn failing_poststop_hook_does_not_fail_delete() {
    let Some(rt) = setup("hooks-poststop") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["true"]);
    b.hook(
        "poststop",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}),
    );
    let id = rt.start_running(&b);
    assert!(rt.wait_status(&id, "stopped", T));
    rt.delete(&id).assert_ok();
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn failing_poststop_hook_later_hooks_still_run() {
    let Some(rt) = setup("hooks-poststop2") else {
        return;
    };
    hull_tests::hull_only!(
        rt,
        "runc 1.1 skips the remaining poststop hooks after one fails"
    );
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.args(&["true"]);
    b.hook(
        "poststop",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}),
    );
    b.hook("poststop", host_hook(&dir, "poststop"));
    let id = rt.start_running(&b);
    assert!(rt.wait_status(&id, "stopped", T));
    rt.delete(&id).assert_ok();
    assert_eq!(
        order(&dir),
        ["poststop"],
        "the poststop hook after the failing one did not run"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn poststop_runs_on_run_exit() {
    let Some(rt) = setup("hooks-run") else { return };
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.sh("exit 4");
    b.hook("poststop", host_hook(&dir, "poststop"));
    let o = rt.run_bundle(&b);
    assert_eq!(o.code(), 4, "{o}");
    assert_eq!(order(&dir), ["poststop"]);
    assert_no_leftovers(&rt, &b);
}

/// A host-side hook gets only its stdio: descriptors `hull create` inherited from its
/// caller (a shim's or a script's pipe) must not reach it, or a hook that leaves a process
/// behind keeps the caller's pipe open. runc's hooks get none either.
#[test]
fn hooks_do_not_inherit_the_callers_descriptors() {
    let Some(rt) = setup("hooks-fds") else { return };
    hull_tests::hull_only!(
        &rt,
        "runc 1.1 passes its caller's inherited descriptors to hooks"
    );
    let dir = hooks_dir(&rt);
    let mut b = Bundle::new();
    b.args(&["true"]);
    for k in ["createRuntime", "prestart"] {
        let d = dir.display();
        b.hook(
            k,
            json!({"path": "/bin/sh", "args": ["sh", "-c",
                format!("ls /proc/$$/fd > {d}/{k}.fds")]}),
        );
    }
    let file = std::fs::File::create(rt.scratch().join("inherited")).unwrap();
    let id = rt.id();
    b.write();
    let c = rt.cmd(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    let o = rt.exec_cmd(
        c,
        hull_tests::runtime::Io {
            extra_fds: vec![(9, file)],
            ..Default::default()
        },
    );
    o.assert_ok();
    for k in ["createRuntime", "prestart"] {
        let fds = std::fs::read_to_string(dir.join(format!("{k}.fds"))).unwrap_or_default();
        let fds: Vec<&str> = fds.split_whitespace().collect();
        assert!(fds.contains(&"0"), "{k} hook listed no fds: {fds:?}");
        assert!(!fds.contains(&"9"), "{k} hook inherited fd 9: {fds:?}");
    }
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}
