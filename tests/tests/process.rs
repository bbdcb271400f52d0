//! The process spec: user/groups, cwd, env, rlimits, capabilities, noNewPrivileges,
//! umask, oomScoreAdj, args with spaces.

use hull_tests::util::nofile_limits;
use hull_tests::{assert_no_leftovers, setup, Bundle};

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn user_uid_gid_and_additional_gids() {
    let Some(rt) = setup("proc-user") else { return };
    let mut b = Bundle::new();
    b.user(1000, 1000, &[2000]);
    b.sh("id -u; id -g; id -G; id -un");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], "1000", "{o}");
    assert_eq!(l[1], "1000", "{o}");
    let groups: Vec<&str> = l[2].split_whitespace().collect();
    assert!(groups.contains(&"2000"), "additionalGids missing: {o}");
    assert!(
        !groups.contains(&"0"),
        "root group leaked into supplementary groups: {o}"
    );
    assert_eq!(l[3], "user", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn non_root_user_cannot_write_root_files() {
    let Some(rt) = setup("proc-nonroot") else {
        return;
    };
    let mut b = Bundle::new();
    b.readonly_root(false).user(1000, 1000, &[]);
    b.sh("touch /etc/x 2>/dev/null && echo wrote || echo denied");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "denied", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn cwd_and_args_with_spaces() {
    let Some(rt) = setup("proc-cwd") else { return };
    let mut b = Bundle::new();
    b.cwd("/tmp");
    b.args(&["sh", "-c", "pwd; echo \"$0|$1\"", "arg zero", "arg one"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "/tmp\narg zero|arg one\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn env_is_exactly_the_spec_env() {
    let Some(rt) = setup("proc-env") else { return };
    let mut b = Bundle::new();
    b.env(&["FOO=bar baz", "EMPTY="]);
    b.args(&["env"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let mut vars: Vec<&str> = o.stdout.lines().collect();
    vars.sort();
    // runc adds HOME when missing; nothing else may appear.
    vars.retain(|v| !v.starts_with("HOME="));
    assert_eq!(
        vars,
        [
            "EMPTY=",
            "FOO=bar baz",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=xterm"
        ],
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn home_is_set_from_passwd() {
    let Some(rt) = setup("proc-home") else { return };
    let mut b = Bundle::new();
    b.user(1000, 1000, &[]);
    b.sh("echo $HOME");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "/home/user", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn rlimit_nofile_soft_below_hard() {
    let Some(rt) = setup("proc-rlimit") else {
        return;
    };
    let (_, hard) = nofile_limits();
    let soft = 321.min(hard);
    let mut b = Bundle::new();
    b.rlimit("RLIMIT_NOFILE", soft, hard);
    b.sh("ulimit -n; ulimit -Hn; grep 'Max open files' /proc/self/limits");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[0], soft.to_string(), "{o}");
    assert_eq!(l[1], hard.to_string(), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn rlimit_lowering_hard_limit_works() {
    let Some(rt) = setup("proc-rlimit-hard") else {
        return;
    };
    let mut b = Bundle::new();
    b.rlimit("RLIMIT_NPROC", 100, 200)
        .rlimit("RLIMIT_NOFILE", 64, 128);
    b.sh("ulimit -u; ulimit -Hu; ulimit -n; ulimit -Hn");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(
        o.stdout.split_whitespace().collect::<Vec<_>>(),
        ["100", "200", "64", "128"],
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn capabilities_default_and_custom() {
    let Some(rt) = setup("proc-caps") else { return };
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/status"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    // CAP_KILL(5) | CAP_NET_BIND_SERVICE(10) | CAP_AUDIT_WRITE(29)
    let want = format!("{:016x}", (1u64 << 5) | (1 << 10) | (1 << 29));
    // (CapAmb is cleared by the kernel on execve as root.)
    for k in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&o.stdout, k), want, "{k}: {o}");
    }
    assert_eq!(status_field(&o.stdout, "CapInh"), "0000000000000000", "{o}");

    b.capabilities(&["CAP_SYS_ADMIN", "CAP_CHOWN"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let want = format!("{:016x}", (1u64 << 21) | 1);
    assert_eq!(status_field(&o.stdout, "CapEff"), want, "{o}");
    assert_eq!(status_field(&o.stdout, "CapBnd"), want, "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn ambient_capabilities_for_non_root_user() {
    let Some(rt) = setup("proc-caps-amb") else {
        return;
    };
    let mut b = Bundle::new();
    b.user(1000, 1000, &[]);
    b.capabilities(&["CAP_NET_BIND_SERVICE"]);
    // An ambient cap must also be inheritable and permitted.
    b.set(
        "/process/capabilities/inheritable",
        serde_json::json!(["CAP_NET_BIND_SERVICE"]),
    );
    b.args(&["cat", "/proc/self/status"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let want = format!("{:016x}", 1u64 << 10);
    for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(status_field(&o.stdout, k), want, "{k}: {o}");
    }
    assert_no_leftovers(&rt, &b);
}

#[test]
fn capabilities_are_enforced() {
    let Some(rt) = setup("proc-caps-enf") else {
        return;
    };
    let mut b = Bundle::new();
    b.readonly_root(false);
    // No CAP_CHOWN: chown of a file to another user fails even for root.
    b.sh("touch /tmp/f; chown 1000 /tmp/f 2>/dev/null && echo chowned || echo denied");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "denied", "{o}");
    b.capabilities(&["CAP_CHOWN"]);
    let o = rt.run_bundle(&b);
    assert_eq!(o.out(), "chowned", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn no_new_privileges() {
    let Some(rt) = setup("proc-nnp") else { return };
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/status"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(status_field(&o.stdout, "NoNewPrivs"), "1", "{o}");
    b.no_new_privileges(false);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(status_field(&o.stdout, "NoNewPrivs"), "0", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn umask() {
    let Some(rt) = setup("proc-umask") else {
        return;
    };
    let mut b = Bundle::new();
    b.set("/process/user/umask", serde_json::json!(0o027));
    b.sh("umask");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "0027", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn default_umask_is_0022() {
    let Some(rt) = setup("proc-umask-def") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh("umask");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "0022", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn oom_score_adj_positive() {
    let Some(rt) = setup("proc-oom") else { return };
    let mut b = Bundle::new();
    b.set("/process/oomScoreAdj", serde_json::json!(123));
    b.args(&["cat", "/proc/self/oom_score_adj"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "123", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn exec_failure_of_missing_binary() {
    let Some(rt) = setup("proc-noexec") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["/bin/does-not-exist"]);
    let id = rt.id();
    // runc fails at create (it checks the path); a runtime may also fail at start: either
    // way `run` fails with a message naming the binary, and nothing is left.
    let o = rt.run(&id, &b);
    o.assert_fail().assert_error_contains("does-not-exist");
    rt.delete_force(&id);
    assert_no_leftovers(&rt, &b);
}

#[test]
fn signals_are_neither_ignored_nor_blocked() {
    let Some(rt) = setup("process-signals") else {
        return;
    };
    let mut b = Bundle::new();
    // cat itself reports: a shell would set up its own signal handling.
    b.args(&["cat", "/proc/self/status"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let mask = |field: &str| {
        let line = o
            .stdout
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or("");
        u64::from_str_radix(line.trim_start_matches(field).trim(), 16)
            .unwrap_or_else(|_| panic!("no {field} in {o}"))
    };
    // SIGPIPE (13) is bit 12: ignored by the Rust runtime in hull, it must not reach the
    // container. (Bits the caller's own environment ignores are passed on, as by runc.)
    assert_eq!(
        mask("SigIgn:") & (1 << 12),
        0,
        "SIGPIPE is ignored in the container"
    );
    assert_eq!(mask("SigBlk:"), 0, "signals are blocked in the container");
}
