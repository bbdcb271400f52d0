//! Broken bundles and bad flags: each fails with a non-zero exit, a clear error (checked on
//! stderr and in the json `--log` containerd reads), and leaves nothing behind under
//! --root, in the cgroup tree or in the mount table.

use hull_tests::{assert_no_leftovers, setup, Bundle, Runtime};
use serde_json::json;

struct Case {
    name: &'static str,
    /// Break the bundle (the Runtime is there for scratch files).
    setup: fn(&mut Bundle, &Runtime),
    /// Substrings any runtime's error must contain (case-insensitive).
    any: &'static [&'static str],
    /// Extra substrings checked only when the binary is hull.
    hull: &'static [&'static str],
    /// runc 1.1 accepts this bundle: the row is checked for hull only.
    hull_only: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "missing config.json",
            setup: |b, _| {
                b.write_config = false;
            },
            any: &["config.json"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "invalid JSON",
            setup: |b, _| {
                b.write_config = false;
                std::fs::write(b.config_path(), "{\"ociVersion\": \"1.0.2\", process: ").unwrap();
            },
            any: &[],
            hull: &["json"],
            hull_only: None,
        },
        Case {
            name: "ociVersion 2.0.0",
            setup: |b, _| {
                b.set("/ociVersion", json!("2.0.0"));
            },
            any: &["2.0.0"],
            hull: &["version"],
            hull_only: Some("runc 1.1 does not check the major ociVersion"),
        },
        Case {
            name: "missing root.path",
            setup: |b, _| {
                b.remove("/root/path");
            },
            any: &["root"],
            hull: &[],
            hull_only: Some(
                "runc 1.1 falls back to the bundle directory when root.path is missing",
            ),
        },
        Case {
            name: "root.path does not exist",
            setup: |b, _| {
                b.set("/root/path", json!("no-such-rootfs"));
            },
            any: &["no-such-rootfs"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "relative mount destination",
            setup: |b, _| {
                b.mount("relative/dir", "tmpfs", "tmpfs", &[]);
            },
            any: &["relative/dir"],
            hull: &[],
            hull_only: Some("runc 1.1 accepts a relative mount destination (with a warning)"),
        },
        Case {
            name: "user namespace without mappings",
            setup: |b, _| {
                b.namespace("user", None);
            },
            any: &["mapping"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "process.args empty",
            setup: |b, _| {
                b.set("/process/args", json!([]));
            },
            any: &["args"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "no process",
            setup: |b, _| {
                b.remove("/process");
            },
            any: &["process"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "relative cwd",
            setup: |b, _| {
                b.cwd("tmp");
            },
            any: &["cwd"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "namespace path not a namespace",
            setup: |b, rt| {
                let f = rt.scratch().join("not-a-ns");
                std::fs::write(&f, "").unwrap();
                b.namespace("network", Some(f.to_str().unwrap()));
            },
            any: &["namespace"],
            hull: &["not-a-ns"],
            hull_only: None,
        },
        Case {
            name: "namespace path missing",
            setup: |b, _| {
                b.namespace("network", Some("/proc/999999999/ns/net"));
            },
            any: &["/proc/999999999/ns/net"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "hostname without uts namespace",
            setup: |b, _| {
                b.without_namespace("uts");
            },
            any: &["hostname"],
            hull: &["uts"],
            hull_only: None,
        },
        Case {
            name: "unknown rlimit",
            setup: |b, _| {
                b.rlimit("RLIMIT_BOGUS", 1, 1);
            },
            any: &["RLIMIT_BOGUS"],
            hull: &["process.rlimits["],
            hull_only: None,
        },
        Case {
            name: "unknown namespace type",
            setup: |b, _| {
                b.namespace("bogusns", None);
            },
            any: &["bogusns"],
            hull: &["linux.namespaces["],
            hull_only: None,
        },
        Case {
            name: "process.args is a string",
            setup: |b, _| {
                b.set("/process/args", json!("echo must-not-run"));
            },
            any: &["process.args"],
            hull: &[],
            hull_only: None,
        },
        Case {
            name: "unknown capability",
            setup: |b, _| {
                b.set(
                    "/process/capabilities/bounding",
                    json!(["CAP_KILL", "CAP_BOGUS"]),
                );
            },
            any: &["CAP_BOGUS"],
            hull: &["process.capabilities.bounding[1]"],
            hull_only: Some("runc 1.1 ignores unknown capabilities with a warning"),
        },
        Case {
            name: "unknown seccomp action",
            setup: |b, _| {
                b.set(
                    "/linux/seccomp",
                    json!({"defaultAction": "SCMP_ACT_BOGUS", "syscalls": []}),
                );
            },
            any: &["SCMP_ACT_BOGUS"],
            hull: &["linux.seccomp.defaultAction"],
            hull_only: None,
        },
        Case {
            name: "unknown device type",
            setup: |b, _| {
                b.set(
                    "/linux/devices",
                    json!([{"path": "/dev/bogus", "type": "z", "major": 1, "minor": 3}]),
                );
            },
            any: &["z"],
            hull: &["linux.devices[0].type"],
            hull_only: None,
        },
        Case {
            name: "memory limit too small for the set-up",
            setup: |b, _| {
                b.resources(json!({"memory": {"limit": 1}}));
            },
            any: &["memory"],
            hull: &["linux.resources.memory.limit"],
            hull_only: None,
        },
        Case {
            name: "VM container with a host device",
            setup: |b, _| {
                b.set("/annotations", json!({"io.hull.isolation": "vm"}));
                b.set(
                    "/linux/devices",
                    json!([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]),
                );
            },
            any: &[],
            hull: &["linux.devices", "VM container"],
            hull_only: Some("runc has no VM tier and ignores hull's annotations"),
        },
        Case {
            name: "unknown mount option",
            setup: |b, _| {
                b.mount("/frob", "tmpfs", "tmpfs", &["frobnicate"]);
            },
            any: &["frobnicate"],
            hull: &["mounts["],
            hull_only: None,
        },
    ]
}

fn check_case(c: &Case, rt: &Runtime, via_run: bool) {
    let mut b = Bundle::new();
    b.args(&["echo", "must-not-run"]);
    (c.setup)(&mut b, rt);
    let id = rt.id();
    let o = if via_run {
        rt.run(&id, &b)
    } else {
        rt.create(&id, &b)
    };
    assert!(!o.ok(), "[{}] accepted: {o}", c.name);
    assert!(
        !o.stdout.contains("must-not-run"),
        "[{}] container ran: {o}",
        c.name
    );
    // Any runtime: the key substrings appear in what the user sees (stderr or json log).
    for n in c.any {
        assert!(
            o.errors().to_lowercase().contains(&n.to_lowercase()),
            "[{}] error output lacks {n:?}: {o}",
            c.name
        );
    }
    // hull: the LAST error line of the json --log (what containerd reports) says it all.
    if !rt.is_runc() {
        let last = o.log_errors.lines().last().unwrap_or("").to_lowercase();
        for n in c.any.iter().chain(c.hull) {
            assert!(
                last.contains(&n.to_lowercase()),
                "[{}] last json --log error line lacks {n:?}: {o}",
                c.name
            );
        }
    }
    assert!(
        !o.log_errors.trim().is_empty(),
        "[{}] no error line in the json --log: {o}",
        c.name
    );
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert_no_leftovers(rt, &b);
}

#[test]
fn broken_bundles_fail_create_cleanly() {
    let Some(rt) = setup("bad-create") else {
        return;
    };
    let rt = rt.json_log();
    let mut skipped = vec![];
    for c in cases() {
        if let Some(why) = c.hull_only {
            if rt.is_runc() && !hull_tests::skip::force_hull_only() {
                skipped.push(format!("[{}] {why}", c.name));
                continue;
            }
        }
        check_case(&c, &rt, false);
    }
    for s in skipped {
        hull_tests::skip::skipped(&format!("hull-only row {s}"));
    }
}

#[test]
fn broken_bundles_fail_run_cleanly() {
    let Some(rt) = setup("bad-run") else { return };
    let rt = rt.json_log();
    for c in cases() {
        if c.hull_only.is_some() && rt.is_runc() {
            continue;
        }
        check_case(&c, &rt, true);
    }
}

#[test]
fn invalid_container_ids() {
    let Some(rt) = setup("bad-id") else { return };
    let rt = rt.json_log();
    let mut b = Bundle::new();
    b.args(&["true"]);
    for id in ["../x", "a/b", "..", ".", "x\ny", "/abs"] {
        let o = rt.create(id, &b);
        assert!(!o.ok(), "id {id:?} accepted: {o}");
        o.assert_error_contains("invalid");
        assert_no_leftovers(&rt, &b);
        // Nothing was created next to the root either (`../x` would land in its parent).
        let parent = rt.root().parent().unwrap();
        for e in std::fs::read_dir(parent).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                ["root", "io", "log.json"].contains(&n.as_str()) || n.ends_with(".pid"),
                "id {id:?}: {n} appeared next to --root"
            );
        }
    }
}

#[test]
fn kill_with_unknown_signal() {
    let Some(rt) = setup("bad-signal") else {
        return;
    };
    let rt = rt.json_log();
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    for sig in ["SIGFOO", "FOO", "999", "-1"] {
        let o = rt.kill(&id, sig);
        assert!(!o.ok(), "kill {sig} accepted: {o}");
        o.assert_error_contains("signal");
    }
    assert_eq!(
        rt.status(&id).as_deref(),
        Some("running"),
        "a rejected kill changed the container"
    );
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn systemd_cgroup_without_systemd() {
    let Some(rt) = setup("bad-systemd") else {
        return;
    };
    hull_tests::skip_if!(
        std::path::Path::new("/run/systemd/system").exists(),
        "systemd is running on this host"
    );
    let mut rt = rt.json_log();
    rt.global_flags(&["--systemd-cgroup"]);
    let mut b = Bundle::new();
    b.args(&["true"]);
    b.cgroups_path_set(&format!("system.slice:hull-e2e:{}", b.tag));
    let id = rt.id();
    let o = rt.create(&id, &b);
    o.assert_fail().assert_error_contains("systemd");
    rt.state(&id).assert_fail();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn unknown_command_and_flag() {
    let Some(rt) = setup("bad-cli") else { return };
    let o = rt.call(&["no-such-command"]);
    assert!(!o.ok(), "{o}");
    let id = rt.id();
    let o = rt.call(&["create", "--no-such-flag", &id]);
    assert!(!o.ok(), "{o}");
    let o = rt.call(&["start"]);
    assert!(!o.ok(), "start without an id: {o}");
}

/// A `--pid-file` that cannot be written: the error names the flag and the path (not "state
/// directory"), and the container is gone.
#[test]
fn unwritable_pid_file_names_the_flag() {
    let Some(rt) = setup("bad-pid-file") else {
        return;
    };
    let rt = rt.json_log();
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.id();
    let pid_file = rt.scratch().join("no-such-dir").join("init.pid");
    b.write();
    let o = rt.call(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    o.assert_fail()
        .assert_error_contains(pid_file.parent().unwrap().to_str().unwrap());
    if !rt.is_runc() {
        let last = o.log_errors.lines().last().unwrap_or("");
        assert!(last.contains("--pid-file"), "flag not named: {o}");
        assert!(!last.contains("state directory"), "mislabelled: {o}");
    }
    rt.state(&id)
        .assert_fail()
        .assert_error_contains("does not exist");
    assert_no_leftovers(&rt, &b);
}

/// Type errors in `update`'s resources and `exec`'s process.json name the field, as
/// config.json's do.
#[test]
fn update_and_exec_json_errors_name_the_field() {
    let Some(rt) = setup("bad-json-field") else {
        return;
    };
    hull_tests::hull_only!(&rt, "runc's messages name only the Go type");
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let o = rt.call_stdin(
        &["update", "--resources", "-", &id],
        br#"{"memory":{"limit":"64m"}}"#,
    );
    o.assert_fail().assert_error_contains("memory.limit");
    let process = rt.scratch().join("process.json");
    std::fs::write(&process, br#"{"cwd":"/","args":"echo hi"}"#).unwrap();
    let o = rt.call(&["exec", "--process", process.to_str().unwrap(), &id]);
    o.assert_fail().assert_error_contains("args: invalid type");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}
