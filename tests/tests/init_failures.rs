//! The container's init under real clients' configs: process set-up failures fail `create`
//! (not the started container), seccomp allow-lists written before `close_range` existed,
//! a strict profile that forbids `setgroups`, loopback up in a new network namespace, and
//! the caller's inherited descriptors never held by a created container.

use hull_tests::runtime::Io;
use hull_tests::util::{nofile_limits, wait_until};
use hull_tests::{assert_no_leftovers, setup, skip_if, Bundle};
use serde_json::{json, Value};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What busybox (sh, echo, cat, id, sleep) needs, plus the syscalls every runtime needs
/// after the filter is loaded without noNewPrivileges (the user switch) and Go's runtime
/// needs (so the same profile runs under runc). No `close_range`: profiles written before
/// Linux 5.9 (older Docker defaults) do not list it.
const BUSYBOX_SYSCALLS: &[&str] = &[
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clock_gettime",
    "clock_nanosleep",
    "clone",
    "close",
    "dup",
    "dup2",
    "dup3",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_wait",
    "execve",
    "execveat",
    "faccessat",
    "faccessat2",
    "access",
    "exit",
    "exit_group",
    "fchdir",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpid",
    "getppid",
    "getrandom",
    "gettid",
    "getuid",
    "ioctl",
    "lseek",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "pipe2",
    "prctl",
    "prlimit64",
    "read",
    "readlink",
    "readlinkat",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sched_yield",
    "sendfile",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setresgid",
    "setresuid",
    "setuid",
    "sigaltstack",
    "stat",
    "statfs",
    "statx",
    "tgkill",
    "uname",
    "wait4",
    "write",
    "writev",
];

/// `defaultAction: SCMP_ACT_ERRNO` with only [`BUSYBOX_SYSCALLS`] allowed, minus `without`.
fn allow_list(without: &[&str]) -> Value {
    let names: Vec<&str> = BUSYBOX_SYSCALLS
        .iter()
        .copied()
        .filter(|n| !without.contains(n))
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
    })
}

// ---------------------------------------------------------------------------------------------
// Item 5: process set-up failures fail `create`

/// The first capability (up to cap_last_cap) this process's bounding set lacks.
fn cap_missing_from_host_bounding_set() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let bnd = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    let bnd = u64::from_str_radix(bnd.trim(), 16).ok()?;
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (0..=last).find(|c| bnd & (1u64 << c) == 0)
}

/// `CAP_SYS_RESOURCE` for 24 and so on (only the ones a host is likely to lack).
fn cap_name(n: u32) -> Option<&'static str> {
    Some(match n {
        21 => "CAP_SYS_ADMIN",
        24 => "CAP_SYS_RESOURCE",
        25 => "CAP_SYS_TIME",
        16 => "CAP_SYS_MODULE",
        17 => "CAP_SYS_RAWIO",
        22 => "CAP_SYS_BOOT",
        _ => return None,
    })
}

#[track_caller]
fn assert_create_fails_cleanly(rt: &hull_tests::Runtime, b: &Bundle, want: &[&str]) {
    let id = rt.id();
    let o = rt.create(&id, b);
    o.assert_fail();
    for w in want {
        o.assert_error_contains(w);
    }
    assert!(
        !o.errors().contains("closed the connection"),
        "a second, misleading error line: {o}"
    );
    // Nothing half-created: the id does not exist.
    let st = rt.state(&id);
    st.assert_fail().assert_error_contains("does not exist");
    assert_no_leftovers(rt, b);
}

#[test]
fn rlimit_above_the_hard_limit_fails_create() {
    let Some(rt) = setup("initf-rlimit") else {
        return;
    };
    let (_, hard) = nofile_limits();
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    skip_if!(
        hard >= nr_open,
        "the hard RLIMIT_NOFILE is already at nr_open"
    );
    // SAFETY: geteuid has no preconditions.
    let has_sys_resource = {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|v| v & (1 << 24) != 0)
    };
    skip_if!(
        has_sys_resource,
        "this root has CAP_SYS_RESOURCE: raising a hard limit would succeed"
    );
    let mut b = Bundle::new();
    b.rlimit("RLIMIT_NOFILE", hard + 1, hard + 1)
        .args(&["true"]);
    let mut want = vec!["rlimit"];
    if !rt.is_runc() {
        want.push("process.rlimits[0]");
    }
    assert_create_fails_cleanly(&rt, &b, &want);
}

#[test]
fn capability_the_host_cannot_grant_fails_create() {
    let Some(rt) = setup("initf-cap") else { return };
    let missing = cap_missing_from_host_bounding_set().and_then(cap_name);
    let Some(cap) = missing else {
        hull_tests::skip::skipped("the host's bounding set has every capability");
        return;
    };
    let mut b = Bundle::new();
    for set in ["bounding", "effective", "permitted"] {
        b.set(
            &format!("/process/capabilities/{set}"),
            json!(["CAP_KILL", cap]),
        );
    }
    b.args(&["true"]);
    let mut want = vec![];
    if !rt.is_runc() {
        want.push("process.capabilities");
        want.push(cap);
    }
    assert_create_fails_cleanly(&rt, &b, &want);
}

#[test]
fn user_switch_and_capabilities_happen_before_start() {
    let Some(rt) = setup("initf-before-start") else {
        return;
    };
    // After create, init already runs as the container's user with its capabilities
    // (runc: only the execve remains after start).
    let mut b = Bundle::new();
    // No capabilities at all: init must still open the exec fifo after dropping them.
    b.user(1000, 1000, &[2000])
        .set("/process/capabilities", json!({}))
        .args(&["sleep", "30"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    let pid = rt.state_json(&id)["pid"].as_i64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("Gid"), "1000 1000 1000 1000", "{status}");
    assert_eq!(field("Groups"), "2000", "{status}");
    assert_eq!(field("CapEff"), "0000000000000000", "{status}");
    assert_eq!(field("CapPrm"), "0000000000000000", "{status}");
    assert_eq!(field("CapBnd"), "0000000000000000", "{status}");
    rt.start(&id).assert_ok();
    assert!(
        wait_until(Duration::from_secs(10), || rt.status(&id).as_deref()
            == Some("running")
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")),
        "the container did not start: {:?}",
        rt.status(&id)
    );
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn start_container_hooks_run_with_the_container_credentials() {
    let Some(rt) = setup("initf-hook-creds") else {
        return;
    };
    // runc: the user switch and capabilities precede the wait for `start`, so the
    // startContainer hooks (run in the container after it) see the container's user.
    let mut b = Bundle::new();
    b.readonly_root(false)
        .user(1000, 1000, &[])
        .hook(
            "startContainer",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "id -u > /tmp/hook-uid"]}),
        )
        .sh("cat /tmp/hook-uid");
    std::fs::create_dir_all(b.rootfs().join("tmp")).expect("mkdir tmp");
    std::fs::set_permissions(
        b.rootfs().join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod tmp");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "1000", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn failed_create_prints_one_error() {
    let Some(rt) = setup("initf-one-error") else {
        return;
    };
    // The parent fails (an impossible cpuset) while init waits for its plan: the parent
    // reports the error; init must not add a line of its own.
    let mut b = Bundle::new();
    b.resources(json!({"cpu": {"cpus": "999"}})).args(&["true"]);
    for _ in 0..50 {
        let id = rt.id();
        let o = rt.create(&id, &b);
        o.assert_fail();
        assert!(
            !o.errors().contains("closed the connection"),
            "a second, misleading error line: {o}"
        );
    }
    assert_no_leftovers(&rt, &b);
}

// ---------------------------------------------------------------------------------------------
// Item 6: allow-list profiles without close_range

#[test]
fn allow_list_without_close_range_runs() {
    let Some(rt) = setup("initf-closerange") else {
        return;
    };
    for nnp in [true, false] {
        let mut b = Bundle::new();
        b.set("/linux/seccomp", allow_list(&["close_range"]))
            .no_new_privileges(nnp)
            .sh("echo hi; grep Seccomp: /proc/self/status");
        let o = rt.run_bundle(&b);
        o.assert_ok();
        assert_eq!(o.stdout, "hi\nSeccomp:\t2\n", "noNewPrivileges {nnp}: {o}");
        assert_no_leftovers(&rt, &b);
    }
}

#[test]
fn exec_with_allow_list_without_close_range() {
    let Some(rt) = setup("initf-closerange-exec") else {
        return;
    };
    for nnp in [true, false] {
        let mut b = Bundle::new();
        b.set("/linux/seccomp", allow_list(&["close_range"]))
            .no_new_privileges(nnp)
            .args(&["sleep", "30"]);
        let id = rt.start_running(&b);
        let o = rt.exec(&id, &["sh", "-c", "echo from-exec"]);
        o.assert_ok();
        assert_eq!(o.stdout, "from-exec\n", "noNewPrivileges {nnp}: {o}");
        rt.delete_force(&id).assert_ok();
        assert_no_leftovers(&rt, &b);
    }
}

/// An execve that fails after the sync socket is shut down (a script whose interpreter is
/// missing) is reported on stderr with status 1, not a silent SIGPIPE death: the profile
/// has no `sendto`, so a report on the socket would need a plain `write`.
#[test]
fn failed_execve_under_an_allow_list_is_reported() {
    let Some(rt) = setup("initf-badexec") else {
        return;
    };
    hull_tests::hull_only!(&rt, "the message wording is hull's");
    let mut b = Bundle::new();
    b.set("/linux/seccomp", allow_list(&["sendto"]))
        .without_namespace("pid")
        .args(&["sleep", "30"]);
    hull_tests::write_script(&b.rootfs().join("bad.sh"), "echo unreachable");
    let script = std::fs::read_to_string(b.rootfs().join("bad.sh")).unwrap();
    std::fs::write(
        b.rootfs().join("bad.sh"),
        script.replace("#!/bin/sh", "#!/bin/nonexistent"),
    )
    .unwrap();
    let id = rt.start_running(&b);
    let o = rt.exec(&id, &["/bad.sh"]);
    assert_eq!(o.code(), 1, "{o}");
    o.assert_error_contains("exec");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

// ---------------------------------------------------------------------------------------------
// Item 12: a failure after the filter is loaded

#[test]
fn profile_without_setgroups_fails_with_a_message() {
    let Some(rt) = setup("initf-setgroups") else {
        return;
    };
    let mut b = Bundle::new();
    b.set("/linux/seccomp", allow_list(&["setgroups"]))
        .no_new_privileges(false)
        .args(&["true"]);
    let id = rt.id();
    let o = rt.run(&id, &b);
    o.assert_fail();
    assert_ne!(o.code(), 139, "init crashed: {o}");
    assert!(o.code() < 128, "killed by a signal: {o}");
    o.assert_error_contains("setgroups");
    o.assert_error_contains("operation not permitted");
    if !rt.is_runc() {
        o.assert_error_contains("seccomp");
    }
    assert_no_leftovers(&rt, &b);

    // ... and it is `create` that fails (nothing left after it).
    assert_create_fails_cleanly(&rt, &b, &["setgroups"]);
}

#[test]
fn failure_that_cannot_be_reported_still_exits_cleanly() {
    let Some(rt) = setup("initf-nowrite") else {
        return;
    };
    // Neither setgroups nor write (nor sendto): init can report its error nowhere. It
    // used to panic on the failed write to stderr, and the abort path (also filtered)
    // ended in SIGSEGV (exit 139) in release builds, a panic exit (101) in debug builds.
    let mut b = Bundle::new();
    b.set("/linux/seccomp", allow_list(&["setgroups", "write"]))
        .no_new_privileges(false)
        .args(&["true"]);
    let id = rt.id();
    let o = rt.run(&id, &b);
    o.assert_fail();
    assert!(o.code() < 128, "killed by a signal: {o}");
    assert_ne!(o.code(), 101, "init panicked: {o}");
    assert!(
        !o.errors().contains("exit status 101") && !o.errors().contains("SIGSEGV"),
        "init panicked or crashed: {o}"
    );
    if !rt.is_runc() {
        o.assert_error_contains("could not report");
        o.assert_error_contains("linux.seccomp");
    }
    assert_no_leftovers(&rt, &b);
}

// ---------------------------------------------------------------------------------------------
// Item 9: loopback

#[test]
fn loopback_is_up_in_a_new_network_namespace() {
    let Some(rt) = setup("initf-lo") else { return };
    let mut b = Bundle::new();
    b.readonly_root(false)
        .sh("cat /sys/class/net/lo/operstate; \
         sleep 10 | nc -l -p 12345 127.0.0.1 >/tmp/got & p=$!; \
         i=0; while [ $i -lt 30 ]; do \
           echo ping | nc 127.0.0.1 12345 2>/dev/null && break; \
           i=$((i+1)); usleep 100000; done; \
         j=0; while [ ! -s /tmp/got ] && [ $j -lt 30 ]; do usleep 100000; j=$((j+1)); done; \
         kill $p 2>/dev/null; echo \"got:$(cat /tmp/got)\"");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"unknown"), "lo is not up: {o}");
    assert_eq!(lines.last(), Some(&"got:ping"), "nothing on 127.0.0.1: {o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn loopback_of_a_joined_network_namespace_is_left_alone() {
    let Some(rt) = setup("initf-lo-joined") else {
        return;
    };
    skip_if!(
        !std::path::Path::new("/usr/bin/unshare").exists(),
        "unshare(1) missing"
    );
    // runc sets lo up only in a network namespace it creates.
    let holder = hull_tests::ChildGuard::spawn(
        std::process::Command::new("/usr/bin/unshare")
            .args(["--net", "sleep", "120"])
            .stdout(std::process::Stdio::null()),
    );
    let nspath = format!("/proc/{}/ns/net", holder.pid());
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_link(&nspath)
                .is_ok_and(|t| t.display().to_string() != hull_tests::host_ns("net"))
        }),
        "unshare --net helper did not get its own netns"
    );
    let mut b = Bundle::new();
    b.namespace("network", Some(&nspath))
        .sh("cat /sys/class/net/lo/operstate");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "down", "{o}");
    drop(holder);
    assert_no_leftovers(&rt, &b);
}

// ---------------------------------------------------------------------------------------------
// Item 11: inherited descriptors

/// A pipe: (read end, write end), both close-on-exec here.
fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both are fresh descriptors owned by nobody else.
    unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

/// Reads `r` to EOF; true if EOF came within `timeout`.
fn eof_within(r: File, timeout: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = r;
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(());
    });
    rx.recv_timeout(timeout).is_ok()
}

/// The pipe inode of `f` (`pipe:[N]`).
fn pipe_link(f: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn fd_links(pid: i64) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let l = std::fs::read_link(e.path()).ok()?;
                    Some((n, l.to_string_lossy().into_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn created_container_does_not_hold_inherited_fds() {
    let Some(rt) = setup("initf-fds") else { return };
    let mut b = Bundle::new();
    b.args(&["true"]);
    let (r, w) = pipe();
    let link = pipe_link(&w);
    let (r2, w2) = pipe();
    let link2 = pipe_link(&w2);
    let id = rt.id();
    b.write();
    let pid_file = rt.pid_file(&id);
    let mut c = rt.cmd(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    c.stdin(std::process::Stdio::null());
    let started = Instant::now();
    let o = rt.exec_cmd(
        c,
        Io {
            extra_fds: vec![(9, w), (251, w2)],
            ..Default::default()
        },
    );
    o.assert_ok();
    assert!(
        eof_within(r, Duration::from_secs(5)),
        "fd 9 of `create` is still open somewhere {:?} after create returned: {o}",
        started.elapsed()
    );
    assert!(eof_within(r2, Duration::from_secs(5)), "fd 251: {o}");
    let pid = rt.state_json(&id)["pid"].as_i64().expect("pid");
    let fds = fd_links(pid);
    assert!(
        !fds.iter().any(|(_, l)| *l == link || *l == link2),
        "init holds the caller's pipe: {fds:?}"
    );
    // Only stdio and the runtime's own descriptors: hull's sync socket and exec fifo (runc
    // also has Go's epoll descriptor and its pipe).
    assert!(fds.len() <= 7, "init holds unexpected fds: {fds:?}");
    if !rt.is_runc() {
        let own: Vec<&(i32, String)> = fds.iter().filter(|(n, _)| *n > 2).collect();
        assert!(
            own.len() == 2
                && own
                    .iter()
                    .all(|(_, l)| l.ends_with("/exec.fifo") || l.starts_with("socket:")),
            "init holds unexpected fds: {fds:?}"
        );
    }
    rt.start(&id).assert_ok();
    assert!(wait_until(Duration::from_secs(10), || rt
        .status(&id)
        .as_deref()
        == Some("stopped")));
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn preserved_fds_survive_but_others_do_not() {
    let Some(rt) = setup("initf-fds-preserve") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh("ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; cat <&3");
    let extra = rt.scratch().join("fd3");
    std::fs::write(&extra, "from-fd-3\n").unwrap();
    let (r, w) = pipe();
    let id = rt.id();
    let o = rt.run_with(
        &id,
        &b,
        &["--preserve-fds", "1"],
        Io {
            extra_fds: vec![(3, File::open(&extra).unwrap()), (9, w)],
            ..Default::default()
        },
    );
    o.assert_ok();
    // 0-2, 3, and the directory `ls` reads.
    assert_eq!(o.stdout, "0 1 2 3 4 \nfrom-fd-3\n", "{o}");
    assert!(eof_within(r, Duration::from_secs(5)), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn exec_detach_does_not_hold_inherited_fds() {
    let Some(rt) = setup("initf-fds-exec") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "30"]);
    let id = rt.start_running(&b);
    let (r, w) = pipe();
    let link = pipe_link(&w);
    let pid_file = rt.scratch().join("exec.pid");
    let c = rt.cmd(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "20",
    ]);
    let o = rt.exec_cmd(
        c,
        Io {
            extra_fds: vec![(9, w)],
            ..Default::default()
        },
    );
    o.assert_ok();
    assert!(
        eof_within(r, Duration::from_secs(5)),
        "the detached exec process holds fd 9: {o}"
    );
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let fds = fd_links(pid);
    assert!(!fds.iter().any(|(_, l)| *l == link), "{fds:?}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

/// `hull ARGS` with `HULL_INIT_TIMEOUT=2`.
fn with_init_timeout(rt: &hull_tests::Runtime, args: &[&str]) -> hull_tests::Out {
    let mut c = rt.cmd(args);
    c.env("HULL_INIT_TIMEOUT", "2");
    rt.exec_cmd(c, Io::default())
}

#[test]
fn a_hung_init_fails_create_after_the_deadline_and_leaves_nothing() {
    let Some(rt) = setup("init-deadline-create") else {
        return;
    };
    skip_if!(rt.is_runc(), "hull's own init deadline");
    let mut b = Bundle::new();
    // createContainer runs in init, during create: a hook that never returns hangs init.
    b.hook(
        "createContainer",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 600"]}),
    );
    b.write();
    let id = rt.id();
    let began = Instant::now();
    let o = with_init_timeout(
        &rt,
        &["create", "--bundle", b.path().to_str().unwrap(), &id],
    );
    assert_ne!(o.code(), 0, "{o}");
    o.assert_error_contains("within 2 s");
    assert!(began.elapsed() < Duration::from_secs(20), "{o}");
    assert!(rt.state(&id).code() != 0, "the id must not exist");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn a_hung_start_gives_up_and_delete_force_still_works() {
    let Some(rt) = setup("init-deadline-start") else {
        return;
    };
    skip_if!(rt.is_runc(), "hull's own init deadline");
    let mut b = Bundle::new();
    b.args(&["true"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    // An init that never takes the start (stopped here; stuck in the kernel elsewhere).
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let began = Instant::now();
    let o = with_init_timeout(&rt, &["start", &id]);
    assert_ne!(o.code(), 0, "{o}");
    o.assert_error_contains("did not start the container process within 2 s");
    assert!(began.elapsed() < Duration::from_secs(20), "{o}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}
