use super::*;
use std::fs;
use std::path::Path;

fn hook(path: &str, args: &[&str], env: &[String], timeout: Option<i64>) -> Hook {
    let mut h = Hook::default();
    h.set_path(PathBuf::from(path));
    if !args.is_empty() {
        h.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    }
    h.set_env(Some(env.to_vec()));
    h.set_timeout(timeout);
    h
}

/// `sh -c SCRIPT` with `OUT=<out>` as its only environment variable.
fn sh(script: &str, out: &Path, timeout: Option<i64>) -> Hook {
    hook(
        "/bin/sh",
        &["sh", "-c", script],
        &[format!("OUT={}", out.display())],
        timeout,
    )
}

const STATE: &[u8] =
    br#"{"ociVersion":"1.2.0","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#;

fn pid_gone(pid: i32) -> bool {
    // Gone, or a zombie about to be reaped by init: wait briefly for either.
    for _ in 0..100 {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) if s[s.rfind(')').unwrap() + 2..].starts_with('Z') => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    false
}

#[test]
fn state_arrives_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("state.json");
    run_hooks("createRuntime", &[sh(r#"cat > "$OUT""#, &out, None)], STATE).unwrap();
    assert_eq!(fs::read(&out).unwrap(), STATE);
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    assert_eq!(v["id"], "c1");
}

#[test]
fn large_state_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big");
    let big = vec![b'x'; 1 << 20];
    run_hooks("prestart", &[sh(r#"cat > "$OUT""#, &out, Some(10))], &big).unwrap();
    assert_eq!(fs::read(&out).unwrap().len(), big.len());
}

#[test]
fn hook_that_ignores_stdin_does_not_block() {
    let big = vec![b'x'; 1 << 20];
    let t = Instant::now();
    run_hooks("poststart", &[hook("/bin/true", &[], &[], None)], &big).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn env_is_exactly_the_hooks_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("environ");
    let h = hook(
        "/bin/sh",
        &["sh", "-c", r#"cat /proc/$$/environ > "$OUT""#],
        &[
            format!("OUT={}", out.display()),
            "A=1".into(),
            "B=x=y".into(),
            "EMPTY=".into(),
        ],
        None,
    );
    run_hooks("createContainer", &[h], STATE).unwrap();
    let environ = fs::read(&out).unwrap();
    let mut vars: Vec<&[u8]> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .collect();
    vars.sort();
    let want = format!("OUT={}", out.display());
    let mut expected: Vec<&[u8]> = vec![b"A=1", b"B=x=y", b"EMPTY=", want.as_bytes()];
    expected.sort();
    assert_eq!(vars, expected);
}

#[test]
fn no_env_means_empty_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("environ");
    let script = format!("cat /proc/$$/environ > {}", out.display());
    let mut h = hook("/bin/sh", &["sh", "-c", &script], &[], None);
    h.set_env(None);
    run_hooks("startContainer", &[h], STATE).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"");
}

#[test]
fn args_and_argv0_are_passed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmdline");
    let h = hook(
        "/bin/sh",
        &[
            "my-argv0",
            "-c",
            r#"tr '\0' ' ' < /proc/$$/cmdline > "$OUT""#,
            "x",
            "two words",
        ],
        &[format!("OUT={}", out.display())],
        None,
    );
    run_hooks("prestart", &[h], STATE).unwrap();
    let cmdline = fs::read_to_string(&out).unwrap();
    assert_eq!(
        cmdline,
        r#"my-argv0 -c tr '\0' ' ' < /proc/$$/cmdline > "$OUT" x two words "#
    );
}

#[test]
fn without_args_argv0_is_the_path() {
    // sh with no arguments reads its script from stdin, which is where the "state" goes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmdline");
    let script = format!("tr '\\0' ' ' < /proc/$$/cmdline > {}\n", out.display());
    run_hooks(
        "prestart",
        &[hook("/bin/sh", &[], &[], None)],
        script.as_bytes(),
    )
    .unwrap();
    assert_eq!(fs::read_to_string(&out).unwrap(), "/bin/sh ");
}

#[test]
fn failing_exit_names_kind_index_path_and_stderr() {
    let err = run_hooks(
        "createRuntime",
        &[hook("/bin/false", &[], &[], None)],
        STATE,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"createRuntime hook [0] "/bin/false" exited with status 1"#
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ran");
    let hooks = [
        sh(r#"touch "$OUT""#, &out, None),
        sh(
            "echo to-stdout; echo 'oops: it broke' >&2; exit 3",
            &out,
            None,
        ),
        sh(r#"rm "$OUT""#, &out, None),
    ];
    let err = run_hooks("poststop", &hooks, STATE).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"poststop hook [1] "/bin/sh" exited with status 3: oops: it broke (stdout: to-stdout)"#
    );
    assert!(matches!(
        err,
        HookError::Exit {
            code: 3,
            index: 1,
            ..
        }
    ));
    assert!(out.exists(), "the hook after the failing one must not run");
}

#[test]
fn stderr_capture_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let h = sh(
        "head -c 100000 /dev/zero | tr '\\0' e >&2; exit 1",
        &dir.path().join("unused"),
        Some(10),
    );
    let err = run_hooks("prestart", &[h], STATE).unwrap_err();
    let HookError::Exit { stderr, .. } = &err else {
        panic!("{err}")
    };
    assert!(stderr.len() <= CAPTURE_LIMIT + 20, "{}", stderr.len());
    assert!(stderr.ends_with("...(truncated)"));
}

#[test]
fn killed_by_signal() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_hooks(
        "prestart",
        &[sh("kill -TERM $$", &dir.path().join("unused"), None)],
        STATE,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"prestart hook [0] "/bin/sh" was killed by signal 15"#
    );
}

#[test]
fn timeout_kills_and_reaps_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pid");
    let h = sh(r#"echo $$ > "$OUT"; exec sleep 10"#, &out, Some(1));
    let t = Instant::now();
    let err = run_hooks("createRuntime", &[h], STATE).unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, HookError::Timeout { timeout: 1, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        r#"createRuntime hook [0] "/bin/sh" timed out after 1s (killed)"#
    );
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1800),
        "{took:?}"
    );
    let pid: i32 = fs::read_to_string(&out).unwrap().trim().parse().unwrap();
    // Reaped by us: not even a zombie is left.
    assert!(
        fs::metadata(format!("/proc/{pid}")).is_err(),
        "pid {pid} left"
    );
}

#[test]
fn timeout_also_kills_what_the_hook_started() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pid");
    let h = sh(r#"sleep 10 & echo $! > "$OUT"; wait"#, &out, Some(1));
    let err = run_hooks("createRuntime", &[h], STATE).unwrap_err();
    assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    let pid: i32 = fs::read_to_string(&out).unwrap().trim().parse().unwrap();
    assert!(pid_gone(pid), "background sleep {pid} survived");
}

#[test]
fn background_child_holding_stderr_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pid");
    let h = sh(r#"sleep 5 >&2 & echo $! > "$OUT"; exit 0"#, &out, None);
    let t = Instant::now();
    run_hooks("poststart", &[h], STATE).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let pid: i32 = fs::read_to_string(&out).unwrap().trim().parse().unwrap();
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
}

#[test]
fn missing_path_is_a_spawn_error() {
    let err = run_hooks(
        "createContainer",
        &[
            hook("/bin/true", &[], &[], None),
            hook("/nonexistent/hook", &[], &[], None),
        ],
        STATE,
    )
    .unwrap_err();
    assert!(matches!(err, HookError::Spawn { index: 1, .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(r#"createContainer hook [1] "/nonexistent/hook": cannot run: "#),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");
}

#[test]
fn invalid_timeout_and_env_are_rejected() {
    let err = run_hooks("prestart", &[hook("/bin/true", &[], &[], Some(0))], STATE).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"prestart hook [0] "/bin/true": timeout must be > 0, got 0"#
    );
    let err = run_hooks(
        "prestart",
        &[hook("/bin/true", &[], &["NOEQUALS".into()], None)],
        STATE,
    )
    .unwrap_err();
    assert!(err.to_string().contains(r#"env[0] "NOEQUALS""#), "{err}");
}

#[test]
fn empty_hook_list_is_ok() {
    run_hooks("poststop", &[], STATE).unwrap();
}
