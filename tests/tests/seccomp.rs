//! `linux.seccomp` from inside the container: each action, argument conditions, the default
//! profile of `hull spec`, a profile loaded without noNewPrivileges, bad profiles failing
//! `create`, and `SCMP_ACT_NOTIFY` with a small seccomp agent in the test.

use hull_tests::{assert_no_leftovers, hull_only, setup, skip_if, Bundle};
use serde_json::{json, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

/// A profile: `default` for everything, plus the given rules.
fn profile(default: &str, rules: Value) -> Value {
    json!({"defaultAction": default, "syscalls": rules})
}

fn seccomp(b: &mut Bundle, p: Value) -> &mut Bundle {
    b.set("/linux/seccomp", p)
}

#[test]
fn blocked_syscall_returns_eperm_by_default() {
    let Some(rt) = setup("sc-eperm") else { return };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]),
        ),
    );
    b.readonly_root(false)
        .sh("mkdir /tmp/x 2>&1; echo rc=$?; test -d /tmp/x && echo exists || echo absent");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("Operation not permitted"), "{o}");
    assert!(
        o.stdout.contains("rc=1") && o.stdout.contains("absent"),
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn errno_ret_is_the_configured_errno() {
    let Some(rt) = setup("sc-errnoret") else {
        return;
    };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        ),
    );
    b.readonly_root(false).sh("mkdir /tmp/x 2>&1; echo rc=$?");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("Function not implemented"), "{o}");
    assert!(o.stdout.contains("rc=1"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn default_errno_ret_applies_to_the_default_action() {
    let Some(rt) = setup("sc-deferrno") else {
        return;
    };
    hull_only!(rt, "runc spec writes no seccomp profile");
    let mut b = Bundle::new();
    // Everything but what sh and mkdir need fails with EXDEV (18).
    let mut p = hull_spec_profile(&rt);
    p["defaultErrnoRet"] = json!(18);
    p["syscalls"]
        .as_array_mut()
        .expect("syscalls")
        .iter_mut()
        .for_each(|r| {
            if let Some(n) = r["names"].as_array_mut() {
                n.retain(|n| n != "mkdir" && n != "mkdirat");
            }
        });
    seccomp(&mut b, p);
    b.readonly_root(false).sh("mkdir /tmp/x 2>&1; echo rc=$?");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("cross-device link"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn kill_process_kills_with_sigsys() {
    let Some(rt) = setup("sc-kill") else { return };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]),
        ),
    );
    b.args(&["mkdir", "/tmp/x"]);
    let o = rt.run_bundle(&b);
    assert_eq!(o.code(), 128 + libc::SIGSYS, "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn kill_thread_and_trap_end_a_single_threaded_process() {
    let Some(rt) = setup("sc-killthread") else {
        return;
    };
    for (action, code) in [
        ("SCMP_ACT_KILL", 128 + libc::SIGSYS),
        ("SCMP_ACT_KILL_THREAD", 128 + libc::SIGSYS),
        ("SCMP_ACT_TRAP", 128 + libc::SIGSYS),
    ] {
        let mut b = Bundle::new();
        seccomp(
            &mut b,
            profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["mkdir", "mkdirat"], "action": action}]),
            ),
        );
        b.args(&["mkdir", "/tmp/x"]);
        let o = rt.run_bundle(&b);
        assert_eq!(o.code(), code, "{action}: {o}");
        assert_no_leftovers(&rt, &b);
    }
}

#[test]
fn log_allows() {
    let Some(rt) = setup("sc-log") else { return };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_LOG"}]),
        ),
    );
    b.readonly_root(false)
        .sh("mkdir /tmp/x && test -d /tmp/x && echo made; grep -c . /proc/self/status >/dev/null; grep '^Seccomp:' /proc/self/status");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("made"), "{o}");
    assert!(o.stdout.contains("Seccomp:\t2"), "filter mode: {o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn filter_flags_are_applied() {
    let Some(rt) = setup("sc-flags") else { return };
    hull_only!(rt, "runc 1.1 supports no seccomp flags");
    let mut b = Bundle::new();
    let mut p = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]),
    );
    p["flags"] = json!([
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC"
    ]);
    seccomp(&mut b, p);
    // SPEC_ALLOW: the filter leaves Speculative Store Bypass alone, so the process's
    // mitigation state is not forced to "thread force mitigated" by seccomp.
    b.sh(
        "mkdir /tmp/x 2>/dev/null; echo rc=$?; grep '^Speculation_Store_Bypass:' /proc/self/status",
    );
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.starts_with("rc=1\n"), "{o}");
    assert!(!o.stdout.contains("thread force mitigated"), "{o}");
    assert_no_leftovers(&rt, &b);
    // Control without SPEC_ALLOW: when seccomp forces the mitigation on this CPU, the check
    // above was meaningful.
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]),
        ),
    );
    b.sh("grep '^Speculation_Store_Bypass:' /proc/self/status");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    if !o.stdout.contains("force mitigated") {
        eprintln!(
            "note: seccomp does not force SSB mitigation here: {}",
            o.out()
        );
    }
    assert_no_leftovers(&rt, &b);
}

#[test]
fn trace_without_a_tracer_fails_the_call_with_enosys() {
    let Some(rt) = setup("sc-trace") else { return };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_TRACE", "errnoRet": 5}]),
        ),
    );
    b.readonly_root(false)
        .sh("mkdir /tmp/x 2>&1; echo rc=$?; test -d /tmp/x && echo exists || echo absent");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    // No tracer: the kernel fails the call with ENOSYS.
    assert!(o.stdout.contains("Function not implemented"), "{o}");
    assert!(o.stdout.contains("absent"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn arg_condition_personality() {
    let Some(rt) = setup("sc-args") else { return };
    let mut b = Bundle::new();
    // personality(PER_LINUX32 = 8) fails with ENOSYS; personality(PER_LINUX = 0) is allowed.
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                    "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]),
        ),
    );
    b.sh("linux64 true && echo linux64-ok; linux32 true 2>&1; echo rc32=$?");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("linux64-ok"), "{o}");
    assert!(o.stdout.contains("Function not implemented"), "{o}");
    assert!(o.stdout.contains("rc32=1"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn operators_from_inside() {
    let Some(rt) = setup("sc-ops") else { return };
    // Each rule makes personality(arg) fail with a distinct errno when its condition holds;
    // `linux32` asks for 8, `linux64` for 0.
    let cases = [
        ("SCMP_CMP_NE", 0u64, None, true, false),
        ("SCMP_CMP_LT", 8, None, false, true),
        ("SCMP_CMP_LE", 8, None, true, true),
        ("SCMP_CMP_EQ", 8, None, true, false),
        ("SCMP_CMP_GE", 8, None, true, false),
        ("SCMP_CMP_GT", 0, None, true, false),
        ("SCMP_CMP_MASKED_EQ", 0x8, Some(0x8), true, false),
    ];
    for (op, value, two, blocks32, blocks64) in cases {
        let mut b = Bundle::new();
        let mut arg = json!({"index": 0, "value": value, "op": op});
        if let Some(t) = two {
            arg["valueTwo"] = json!(t);
        }
        seccomp(
            &mut b,
            profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                        "args": [arg]}]),
            ),
        );
        b.sh("linux32 true 2>/dev/null; echo r32=$?; linux64 true 2>/dev/null; echo r64=$?");
        let o = rt.run_bundle(&b);
        o.assert_ok();
        let want = format!("r32={}\nr64={}", u8::from(blocks32), u8::from(blocks64));
        assert_eq!(o.out(), want, "{op}: {o}");
        assert_no_leftovers(&rt, &b);
    }
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let Some(rt) = setup("sc-unknown") else {
        return;
    };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["no_such_syscall_hull", "mkdir", "mkdirat"],
                    "action": "SCMP_ACT_ERRNO"}]),
        ),
    );
    b.sh("mkdir /tmp/x 2>/dev/null; echo rc=$?");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "rc=1", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn without_no_new_privileges_the_filter_is_loaded_before_the_user_switch() {
    let Some(rt) = setup("sc-nonnp") else { return };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        ),
    );
    b.no_new_privileges(false)
        .user(1000, 1000, &[])
        .sh("id -u; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; mkdir /tmp/x 2>&1; true");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let out = o.out();
    assert!(out.starts_with("1000\n"), "{o}");
    assert!(out.contains("NoNewPrivs:\t0"), "{o}");
    assert!(out.contains("Seccomp:\t2"), "{o}");
    assert!(out.contains("Function not implemented"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn bad_profiles_fail_create_naming_the_field() {
    let Some(rt) = setup("sc-bad") else { return };
    hull_only!(rt, "hull's error messages");
    let cases = [
        (
            profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                       {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]),
            ),
            "linux.seccomp.syscalls[1].args[0].index",
        ),
        (
            profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]),
            ),
            "linux.seccomp.listenerPath",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "linux.seccomp.defaultAction",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}),
            "SECCOMP_FILTER_FLAG_BOGUS",
        ),
        (json!({"defaultAction": "SCMP_ACT_BOGUS"}), "SCMP_ACT_BOGUS"),
    ];
    for (p, want) in cases {
        let mut b = Bundle::new();
        seccomp(&mut b, p);
        b.args(&["true"]);
        let id = rt.id();
        let o = rt.create(&id, &b);
        o.assert_fail().assert_error_contains(want);
        assert_no_leftovers(&rt, &b);
    }
}

/// `linux.seccomp` of `hull spec` (the default profile, gated on the default bounding set).
fn hull_spec_profile(rt: &hull_tests::Runtime) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    rt.call(&["spec", "--bundle", d]).assert_ok();
    let text = std::fs::read_to_string(dir.path().join("config.json")).expect("config.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["linux"]["seccomp"].clone()
}

#[test]
fn default_profile_of_hull_spec() {
    let Some(rt) = setup("sc-default") else {
        return;
    };
    hull_only!(rt, "runc spec writes no seccomp profile");
    let p = hull_spec_profile(&rt);
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO", "{p}");

    // Everyday work goes through.
    let mut b = Bundle::new();
    seccomp(&mut b, p.clone());
    b.readonly_root(false)
        .sh("echo ok; mkdir /tmp/x && echo made; grep '^Seccomp:' /proc/self/status");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "ok\nmade\nSeccomp:\t2", "{o}");
    assert_no_leftovers(&rt, &b);

    // With CAP_SYS_ADMIN in the process but a profile made for the default bounding set,
    // unshare and mount fail (EPERM) although the capability would allow them.
    let script = "unshare -m true 2>&1; echo unshare=$?; \
                  mount -t tmpfs none /mnt 2>&1; echo mount=$?";
    let caps = [
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_ADMIN",
    ];
    let mut b = Bundle::new();
    b.capabilities(&caps).sh(script);
    seccomp(&mut b, p);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("unshare=1"), "{o}");
    assert!(o.stdout.contains("mount=1"), "{o}");
    assert!(
        o.stdout.contains("Operation not permitted") || o.stdout.contains("permission denied"),
        "{o}"
    );
    assert_no_leftovers(&rt, &b);

    // Control: the same process without the profile may do both.
    let mut b = Bundle::new();
    b.capabilities(&caps).sh(script);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("unshare=0"), "{o}");
    assert!(o.stdout.contains("mount=0"), "{o}");
    assert_no_leftovers(&rt, &b);
}

// ---------------------------------------------------------------------------------------
// SCMP_ACT_NOTIFY: a seccomp agent in the test.

/// What the agent saw.
#[derive(Debug, Default)]
struct AgentReport {
    state: Value,
    handled: Vec<i32>,
    error: Option<String>,
}

/// Receive one message: its payload (the state JSON) and the descriptor in SCM_RIGHTS.
fn recv_state_and_fd(sock: &std::os::unix::net::UnixStream) -> Result<(Value, OwnedFd), String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: SCM_RIGHTS gave these descriptors to this process.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let n = msg.bytes;
    let state: Value = serde_json::from_slice(&buf[..n]).map_err(|e| format!("state JSON: {e}"))?;
    if fds.len() != 1 {
        return Err(format!("expected one descriptor, got {}", fds.len()));
    }
    Ok((state, fds.remove(0)))
}

/// Answer notifications on `fd`: each is made to succeed without running (val 0, error 0),
/// until the container has gone (the ioctl fails) or `limit` were answered.
fn answer_notifications(fd: &OwnedFd, limit: usize) -> Result<Vec<i32>, String> {
    // The kernel's sizes may be larger than libc's structs: ask.
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes the struct we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if rc < 0 {
        return Err(format!(
            "SECCOMP_GET_NOTIF_SIZES: {}",
            std::io::Error::last_os_error()
        ));
    }
    let req_len = usize::from(sizes.seccomp_notif).max(std::mem::size_of::<libc::seccomp_notif>());
    let resp_len =
        usize::from(sizes.seccomp_notif_resp).max(std::mem::size_of::<libc::seccomp_notif_resp>());
    let mut handled = Vec::new();
    while handled.len() < limit {
        // u64 words keep the buffers aligned for the structs.
        let mut req = vec![0u64; req_len.div_ceil(8)];
        // SAFETY: the buffer is at least as large as the kernel's seccomp_notif.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                req.as_mut_ptr(),
            )
        };
        if rc < 0 {
            break;
        }
        // SAFETY: the kernel filled a seccomp_notif at the start of the buffer.
        let notif = unsafe { &*(req.as_ptr() as *const libc::seccomp_notif) };
        handled.push(notif.data.nr);
        let mut resp = vec![0u64; resp_len.div_ceil(8)];
        // SAFETY: the buffer is at least as large as seccomp_notif_resp.
        let r = unsafe { &mut *(resp.as_mut_ptr() as *mut libc::seccomp_notif_resp) };
        r.id = notif.id;
        r.val = 0;
        r.error = 0;
        r.flags = 0;
        // SAFETY: as above; the kernel reads the response.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                resp.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(format!(
                "SECCOMP_IOCTL_NOTIF_SEND: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(handled)
}

fn spawn_agent(path: &Path) -> std::thread::JoinHandle<AgentReport> {
    let listener = UnixListener::bind(path).expect("bind the agent socket");
    std::thread::spawn(move || {
        let mut report = AgentReport::default();
        let (sock, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                report.error = Some(format!("accept: {e}"));
                return report;
            }
        };
        let (state, fd) = match recv_state_and_fd(&sock) {
            Ok(x) => x,
            Err(e) => {
                report.error = Some(e);
                return report;
            }
        };
        report.state = state;
        match answer_notifications(&fd, 16) {
            Ok(h) => report.handled = h,
            Err(e) => report.error = Some(e),
        }
        report
    })
}

#[test]
fn notify_sends_fd_and_state_to_the_agent() {
    let Some(rt) = setup("sc-notify") else {
        return;
    };
    let sock = rt.scratch().join("agent.sock");
    let agent = spawn_agent(&sock);
    let mut b = Bundle::new();
    let mut p = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]),
    );
    p["listenerPath"] = json!(sock);
    p["listenerMetadata"] = json!("hull-e2e-meta");
    seccomp(&mut b, p);
    // The agent makes mkdir "succeed" without doing it.
    b.readonly_root(false)
        .sh("mkdir /tmp/x && echo made; test -d /tmp/x && echo exists || echo absent");
    let id = rt.id();
    let o = rt.run(&id, &b);
    // Wake the agent in case the container never connected.
    let _ = std::os::unix::net::UnixStream::connect(&sock);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !agent.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    skip_if!(!agent.is_finished(), "agent did not finish: {o}");
    let report = agent.join().expect("agent thread");
    o.assert_ok();
    assert_eq!(report.error, None, "{report:?}\n{o}");
    let st = &report.state;
    assert_eq!(st["fds"], json!(["seccompFd"]), "{st}");
    assert_eq!(st["state"]["id"], json!(id), "{st}");
    assert_eq!(st["metadata"], json!("hull-e2e-meta"), "{st}");
    assert!(st["pid"].as_u64().unwrap_or(0) > 1, "host pid: {st}");
    assert_eq!(st["state"]["pid"], st["pid"], "{st}");
    assert!(st["ociVersion"].is_string(), "{st}");
    assert_eq!(
        st["state"]["bundle"],
        json!(b.path().to_str().unwrap_or_default()),
        "{st}"
    );
    assert!(!report.handled.is_empty(), "no notification: {report:?}");
    assert_eq!(o.out(), "made\nabsent", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn notify_with_no_listener_fails() {
    let Some(rt) = setup("sc-nolistener") else {
        return;
    };
    let mut b = Bundle::new();
    let mut p = profile(
        "SCMP_ACT_ALLOW",
        json!([{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]),
    );
    p["listenerPath"] = json!(rt.scratch().join("nobody-listens.sock"));
    seccomp(&mut b, p);
    b.args(&["true"]);
    let o = rt.run_bundle(&b);
    o.assert_fail();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn exec_processes_get_the_container_filter() {
    let Some(rt) = setup("sc-exec") else { return };
    let mut b = Bundle::new();
    seccomp(
        &mut b,
        profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        ),
    );
    b.readonly_root(false).args(&["sleep", "60"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    rt.start(&id).assert_ok();
    let o = rt.call(&["exec", &id, "sh", "-c", "mkdir /tmp/y 2>&1; echo rc=$?"]);
    o.assert_ok();
    assert!(o.stdout.contains("Function not implemented"), "{o}");
    // The filter is the container's, not a blanket denial: other calls work.
    let o = rt.call(&["exec", &id, "sh", "-c", "touch /tmp/z && echo touched"]);
    o.assert_ok();
    assert_eq!(o.stdout, "touched\n", "{o}");
    rt.call(&["delete", "--force", &id]).assert_ok();
    assert_no_leftovers(&rt, &b);
}
