use super::*;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

// ---------------------------------------------------------------------------------------------
// helpers

fn write_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn process_from_json(json: &str) -> Process {
    serde_json::from_str(json).unwrap()
}

fn is_root() -> bool {
    if Uid::effective().is_root() {
        true
    } else {
        eprintln!("skipped: needs root");
        false
    }
}

/// `/proc/self/status` field (e.g. "CapBnd"), trimmed.
fn status_field(name: &str) -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("{name} not in /proc/self/status"))
}

fn status_hex(name: &str) -> u64 {
    u64::from_str_radix(&status_field(name), 16).unwrap()
}

/// Field `n` (1-based, as in proc(5)) of `/proc/self/stat`.
fn stat_field(n: usize) -> String {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(n - 3).unwrap().to_string()
}

fn child_exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the forked child at once, without running the parent's atexit
    // handlers or unwinding into the test harness.
    unsafe { libc::_exit(code) }
}

fn fork_child() -> ForkResult {
    // SAFETY: the child only runs the test body (which allocates, fine with glibc's fork
    // handlers) and then `_exit`s; it never returns into the test harness.
    unsafe { fork() }.expect("fork")
}

/// Run `body` in a forked child (the changes it makes must not leak into the test process)
/// and return its verdict: `Err(message)` from the child, or a crash.
fn in_child(
    body: impl FnOnce() -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    match fork_child() {
        ForkResult::Child => {
            drop(rd);
            let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let (code, msg) = match verdict {
                Ok(Ok(())) => (0, String::new()),
                Ok(Err(m)) => (1, m),
                Err(p) => (
                    2,
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into()),
                ),
            };
            let mut f = fs::File::from(wr);
            let _ = f.write_all(msg.as_bytes());
            drop(f);
            child_exit(code)
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            fs::File::from(rd).read_to_string(&mut msg).unwrap();
            match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, 0) => Ok(()),
                WaitStatus::Exited(_, code) => Err(format!("child exited {code}: {msg}")),
                other => Err(format!("child ended with {other:?}: {msg}")),
            }
        }
    }
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

// ---------------------------------------------------------------------------------------------
// find_executable

fn env(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|s| s.to_string()).collect()
}

#[test]
fn find_executable_searches_path_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    write_file(&a.join("tool"), "", 0o644); // not executable: skipped
    write_file(&b.join("tool"), "", 0o755);
    fs::create_dir(a.join("dir")).unwrap(); // a directory: skipped
    write_file(&b.join("dir"), "", 0o700);
    let e = env(&[&format!("PATH={}:{}", a.display(), b.display())]);
    assert_eq!(
        find_executable("tool", &e, Path::new("/")).unwrap(),
        b.join("tool")
    );
    assert_eq!(
        find_executable("dir", &e, Path::new("/")).unwrap(),
        b.join("dir")
    );
    let err = find_executable("nope", &e, Path::new("/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"exec: "nope": executable file not found in $PATH"#
    );
}

#[test]
fn find_executable_last_path_wins_and_empty_element_is_cwd() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("tool"), "", 0o755);
    let e = env(&["PATH=/nonexistent", "PATH=/nonexistent2:"]);
    assert_eq!(
        find_executable("tool", &e, dir.path()).unwrap(),
        dir.path().join(".").join("tool")
    );
    // PATH present but empty: nothing is searched (Go's LookPath).
    assert!(matches!(
        find_executable("tool", &env(&["PATH="]), dir.path()),
        Err(ProcessSetupError::ExecNotFound { .. })
    ));
    assert!(matches!(
        find_executable("", &e, dir.path()),
        Err(ProcessSetupError::ExecNotFound { .. })
    ));
}

#[test]
fn find_executable_uses_default_path_without_path_in_env() {
    // /bin/sh exists on every machine this runs on.
    let found = find_executable("sh", &env(&["TERM=xterm"]), Path::new("/")).unwrap();
    assert!(found.ends_with("sh"), "{found:?}");
    assert!(DEFAULT_PATH.split(':').any(|d| found.starts_with(d)));
}

#[test]
fn find_executable_with_slash_is_checked_as_is() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("run"), "", 0o755);
    write_file(&dir.path().join("plain"), "", 0o644);
    let e = env(&["PATH=/nonexistent"]);
    // Absolute.
    let abs = dir.path().join("run");
    assert_eq!(
        find_executable(abs.to_str().unwrap(), &e, Path::new("/")).unwrap(),
        abs
    );
    // Relative to cwd.
    assert_eq!(
        find_executable("./run", &e, dir.path()).unwrap(),
        dir.path().join("./run")
    );
    // Missing.
    let err = find_executable("/x/y/z", &e, Path::new("/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"exec: "/x/y/z": stat /x/y/z: no such file or directory"#
    );
    // Not executable, or a directory.
    let err = find_executable("./plain", &e, dir.path()).unwrap_err();
    assert_eq!(err.to_string(), r#"exec: "./plain": permission denied"#);
    let d = dir.path().to_str().unwrap().to_string() + "/";
    assert!(matches!(
        find_executable(&d, &e, Path::new("/")),
        Err(ProcessSetupError::ExecPermission { .. })
    ));
}

#[test]
fn find_executable_follows_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("real"), "", 0o755);
    std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink("missing", dir.path().join("dangling")).unwrap();
    let e = env(&[&format!("PATH={}", dir.path().display())]);
    assert_eq!(
        find_executable("link", &e, Path::new("/")).unwrap(),
        dir.path().join("link")
    );
    assert!(find_executable("dangling", &e, Path::new("/")).is_err());
}

// ---------------------------------------------------------------------------------------------
// conversions and validation (no privileges needed)

#[test]
fn capability_names_convert() {
    use oci_spec::runtime::Capability as Oci;
    for (oci, cap) in [
        (Oci::Kill, caps::Capability::CAP_KILL),
        (Oci::SysAdmin, caps::Capability::CAP_SYS_ADMIN),
        (Oci::DacReadSearch, caps::Capability::CAP_DAC_READ_SEARCH),
        (Oci::NetBindService, caps::Capability::CAP_NET_BIND_SERVICE),
        (Oci::AuditWrite, caps::Capability::CAP_AUDIT_WRITE),
        (Oci::Setpcap, caps::Capability::CAP_SETPCAP),
        (Oci::Bpf, caps::Capability::CAP_BPF),
        (Oci::Perfmon, caps::Capability::CAP_PERFMON),
        (
            Oci::CheckpointRestore,
            caps::Capability::CAP_CHECKPOINT_RESTORE,
        ),
    ] {
        assert_eq!(oci_to_cap(&oci), Some(cap), "{oci:?}");
    }
    assert_eq!(
        cap_from_name("CAP_CHOWN"),
        Some(caps::Capability::CAP_CHOWN)
    );
    assert_eq!(cap_from_name("chown"), Some(caps::Capability::CAP_CHOWN));
    assert_eq!(cap_from_name("CAP_NOPE"), None);
}

#[test]
fn every_oci_capability_in_json_converts() {
    // Every name the caps crate knows must round-trip through oci-spec's serde names.
    for cap in caps::all() {
        let json = format!("\"{cap}\"");
        let oci: oci_spec::runtime::Capability = match serde_json::from_str(&json) {
            Ok(c) => c,
            Err(_) => continue, // newer than oci-spec
        };
        assert_eq!(oci_to_cap(&oci), Some(cap));
    }
}

#[test]
fn cap_set_missing_is_empty_and_unsupported_is_dropped() {
    let supported: CapsHashSet = [caps::Capability::CAP_KILL].into_iter().collect();
    assert!(cap_set("x", None, &supported).is_empty());
    let set: Capabilities = [
        oci_spec::runtime::Capability::Kill,
        oci_spec::runtime::Capability::SysAdmin,
    ]
    .into_iter()
    .collect();
    assert_eq!(cap_set("x", Some(&set), &supported), supported);
}

#[test]
fn rlimit_types_map_to_resources() {
    assert_eq!(
        rlimit_resource(PosixRlimitType::RlimitNofile),
        Resource::RLIMIT_NOFILE
    );
    assert_eq!(
        rlimit_resource(PosixRlimitType::RlimitRttime),
        Resource::RLIMIT_RTTIME
    );
    let p = process_from_json(
        r#"{"cwd":"/","user":{"uid":0,"gid":0},
            "rlimits":[{"type":"RLIMIT_CORE","soft":0,"hard":0},{"type":"RLIMIT_NOFILE","soft":20,"hard":10}]}"#,
    );
    // Rejected before setrlimit, so this does not touch the test process.
    let err = set_rlimit(1, &p.rlimits().as_ref().unwrap()[1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "process.rlimits[1] RLIMIT_NOFILE: soft limit 20 is above hard limit 10"
    );
}

#[test]
fn io_priority_values() {
    let p: LinuxIOPriority =
        serde_json::from_str(r#"{"class":"IOPRIO_CLASS_IDLE","priority":7}"#).unwrap();
    assert_eq!(io_priority_value(&p).unwrap(), (3 << 13) | 7);
    let p: LinuxIOPriority =
        serde_json::from_str(r#"{"class":"IOPRIO_CLASS_RT","priority":0}"#).unwrap();
    assert_eq!(io_priority_value(&p).unwrap(), 1 << 13);
    let p: LinuxIOPriority =
        serde_json::from_str(r#"{"class":"IOPRIO_CLASS_BE","priority":8}"#).unwrap();
    assert_eq!(
        io_priority_value(&p).unwrap_err().to_string(),
        "process.ioPriority.priority 8: must be between 0 and 7"
    );
}

#[test]
fn sched_attr_from_spec() {
    let s: Scheduler = serde_json::from_str(
        r#"{"policy":"SCHED_DEADLINE","runtime":1000000,"deadline":2000000,"period":3000000,
            "flags":["SCHED_RESET_ON_FORK","SCHED_FLAG_RECLAIM"]}"#,
    )
    .unwrap();
    let a = sched_attr(&s).unwrap();
    assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    assert_eq!(a.size, 56);
    assert_eq!(a.sched_policy, 6);
    assert_eq!(a.sched_flags, 0x3);
    assert_eq!(
        (a.sched_runtime, a.sched_deadline, a.sched_period),
        (1000000, 2000000, 3000000)
    );

    let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_FIFO","priority":0}"#).unwrap();
    assert!(sched_attr(&s)
        .unwrap_err()
        .to_string()
        .contains("must be between 1 and 99"));
    let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_OTHER","nice":20}"#).unwrap();
    assert!(sched_attr(&s).is_err());
    let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_BATCH","runtime":5}"#).unwrap();
    assert!(sched_attr(&s).is_err());
}

#[test]
fn invalid_values_are_rejected_before_any_syscall() {
    assert!(set_umask(0o1000).is_err());
    assert_eq!(
        set_oom_score_adj(1001).unwrap_err().to_string(),
        "process.oomScoreAdj 1001: must be between -1000 and 1000"
    );
}

#[test]
fn setgroups_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("setgroups");
    fs::write(&p, "deny\n").unwrap();
    assert!(!setgroups_allowed_in(&p));
    fs::write(&p, "allow\n").unwrap();
    assert!(setgroups_allowed_in(&p));
    assert!(setgroups_allowed_in(&dir.path().join("missing")));
}

#[test]
fn syscall_error_text() {
    let e = ProcessSetupError::syscall(
        "process.rlimits[1] RLIMIT_NOFILE",
        "setrlimit",
        Errno::EPERM,
    )
    .with_hint(Some("raising a hard limit needs CAP_SYS_RESOURCE".into()));
    assert_eq!(
        e.to_string(),
        "process.rlimits[1] RLIMIT_NOFILE: setrlimit: EPERM (raising a hard limit needs CAP_SYS_RESOURCE)"
    );
    let e = ProcessSetupError::syscall("process.user.uid 5", "setresuid", Errno::EINVAL);
    assert_eq!(
        e.to_string(),
        "process.user.uid 5: setresuid: EINVAL (Invalid argument)"
    );
}

// ---------------------------------------------------------------------------------------------
// root-only: each piece applied in a forked child

#[test]
fn root_rlimit_nofile_soft_lowered() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let (_, hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let json = format!(r#"[{{"type":"RLIMIT_NOFILE","soft":123,"hard":{hard}}}]"#);
        let rl: Vec<PosixRlimit> = serde_json::from_str(&json).unwrap();
        set_rlimits(&rl).map_err(|e| e.to_string())?;
        let got = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        check!(got == (123, hard), "got {got:?}");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_rlimit_raising_hard_limit_names_the_rlimit() {
    if !is_root() {
        return;
    }
    in_child(|| {
        // Make the outcome deterministic: without CAP_SYS_RESOURCE raising a hard limit is EPERM.
        caps::drop(None, CapSet::Effective, caps::Capability::CAP_SYS_RESOURCE).unwrap();
        let (_, hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_CORE).unwrap();
        if hard == libc::RLIM_INFINITY {
            nix::sys::resource::setrlimit(Resource::RLIMIT_CORE, 0, 1000).unwrap();
        }
        let rl: Vec<PosixRlimit> = serde_json::from_str(
            r#"[{"type":"RLIMIT_CORE","soft":0,"hard":0},{"type":"RLIMIT_CORE","soft":0,"hard":1000000}]"#,
        )
        .unwrap();
        let err = set_rlimits(&rl).unwrap_err().to_string();
        check!(
            err.starts_with("process.rlimits[1] RLIMIT_CORE: setrlimit: EPERM (raising a hard limit needs CAP_SYS_RESOURCE"),
            "{err}"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_umask() {
    if !is_root() {
        return;
    }
    in_child(|| {
        set_umask(0o027).map_err(|e| e.to_string())?;
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        check!(old.bits() == 0o027, "umask {:o}", old.bits());
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_oom_score_adj() {
    if !is_root() {
        return;
    }
    in_child(|| {
        set_oom_score_adj(500).map_err(|e| e.to_string())?;
        let v = fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        check!(v.trim() == "500", "oom_score_adj {v}");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_io_priority() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let p: LinuxIOPriority =
            serde_json::from_str(r#"{"class":"IOPRIO_CLASS_BE","priority":6}"#).unwrap();
        set_io_priority(&p).map_err(|e| e.to_string())?;
        // SAFETY: ioprio_get takes two integers and touches no memory of ours.
        let got = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
        check!(got == (2 << 13) | 6, "ioprio {got:#x}");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_scheduler_batch_with_nice() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let s: Scheduler = serde_json::from_str(r#"{"policy":"SCHED_BATCH","nice":7}"#).unwrap();
        set_scheduler(&s).map_err(|e| e.to_string())?;
        check!(stat_field(41) == "3", "policy {}", stat_field(41));
        check!(stat_field(19) == "7", "nice {}", stat_field(19));
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_personality_linux32() {
    if !is_root() {
        return;
    }
    in_child(|| {
        let p: LinuxPersonality = serde_json::from_str(r#"{"domain":"LINUX32"}"#).unwrap();
        set_personality(&p).map_err(|e| e.to_string())?;
        let v = fs::read_to_string("/proc/self/personality").unwrap();
        check!(v.trim() == "00000008", "personality {v}");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_apply_switches_user_and_limits_capabilities() {
    if !is_root() {
        return;
    }
    let p = process_from_json(
        r#"{"cwd":"/","args":["sh"],
            "user":{"uid":1000,"gid":1001,"additionalGids":[20,10],"umask":18},
            "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],
                            "permitted":["CAP_KILL"]},
            "rlimits":[{"type":"RLIMIT_NOFILE","soft":100,"hard":200}],
            "oomScoreAdj":100,
            "noNewPrivileges":true}"#,
    );
    in_child(|| {
        apply(&p).map_err(|e| e.to_string())?;
        let kill = 1u64 << 5;
        check!(
            nix::unistd::getresuid().unwrap()
                == nix::unistd::ResUid {
                    real: Uid::from_raw(1000),
                    effective: Uid::from_raw(1000),
                    saved: Uid::from_raw(1000)
                },
            "uid"
        );
        check!(
            nix::unistd::getresgid().unwrap().effective == Gid::from_raw(1001),
            "gid"
        );
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort();
        check!(groups == [10, 20], "groups {groups:?}");
        check!(
            status_hex("CapBnd") == kill,
            "CapBnd {:#x}",
            status_hex("CapBnd")
        );
        check!(
            status_hex("CapEff") == kill,
            "CapEff {:#x}",
            status_hex("CapEff")
        );
        check!(
            status_hex("CapPrm") == kill,
            "CapPrm {:#x}",
            status_hex("CapPrm")
        );
        check!(
            status_hex("CapInh") == 0,
            "CapInh {:#x}",
            status_hex("CapInh")
        );
        check!(
            status_hex("CapAmb") == 0,
            "CapAmb {:#x}",
            status_hex("CapAmb")
        );
        check!(status_field("NoNewPrivs") == "1", "NoNewPrivs");
        check!(
            nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE).unwrap() == (100, 200),
            "nofile"
        );
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        check!(umask.bits() == 0o022, "umask {:o}", umask.bits());
        check!(
            !nix::sys::prctl::get_keepcaps().unwrap(),
            "PR_SET_KEEPCAPS left set"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_apply_ambient_capabilities_for_non_root() {
    if !is_root() {
        return;
    }
    let all = r#"["CAP_NET_BIND_SERVICE","CAP_CHOWN"]"#;
    let p = process_from_json(&format!(
        r#"{{"cwd":"/","user":{{"uid":1000,"gid":1000}},
            "capabilities":{{"bounding":{all},"effective":{all},"permitted":{all},
                             "inheritable":{all},"ambient":["CAP_NET_BIND_SERVICE"]}}}}"#
    ));
    in_child(|| {
        apply(&p).map_err(|e| e.to_string())?;
        let both = (1u64 << 10) | 1;
        check!(
            status_hex("CapEff") == both,
            "CapEff {:#x}",
            status_hex("CapEff")
        );
        check!(
            status_hex("CapInh") == both,
            "CapInh {:#x}",
            status_hex("CapInh")
        );
        check!(
            status_hex("CapAmb") == 1 << 10,
            "CapAmb {:#x}",
            status_hex("CapAmb")
        );
        check!(status_field("NoNewPrivs") == "0", "NoNewPrivs");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_apply_without_capabilities_drops_everything() {
    if !is_root() {
        return;
    }
    let p = process_from_json(r#"{"cwd":"/","user":{"uid":0,"gid":0}}"#);
    in_child(|| {
        apply(&p).map_err(|e| e.to_string())?;
        check!(nix::unistd::getuid().is_root(), "uid");
        for f in ["CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"] {
            check!(status_hex(f) == 0, "{f} {:#x}", status_hex(f));
        }
        check!(nix::unistd::getgroups().unwrap().is_empty(), "groups");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_apply_ambient_not_in_inheritable_is_skipped_like_runc() {
    if !is_root() {
        return;
    }
    let p = process_from_json(
        r#"{"cwd":"/","user":{"uid":1000,"gid":1000},
            "capabilities":{"bounding":["CAP_KILL"],"permitted":["CAP_KILL"],
                            "ambient":["CAP_KILL"]}}"#,
    );
    in_child(|| {
        check!(apply(&p).is_ok(), "apply failed");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let amb = status.lines().find(|l| l.starts_with("CapAmb:")).unwrap();
        check!(amb.ends_with("0000000000000000"), "{amb}");
        let prm = status.lines().find(|l| l.starts_with("CapPrm:")).unwrap();
        check!(prm.ends_with("0000000000000020"), "{prm}");
        Ok(())
    })
    .unwrap();
}

#[test]
fn root_apply_effective_outside_permitted_fails() {
    if !is_root() {
        return;
    }
    let p = process_from_json(
        r#"{"cwd":"/","user":{"uid":1000,"gid":1000},
            "capabilities":{"bounding":["CAP_KILL","CAP_CHOWN"],"permitted":["CAP_KILL"],
                            "effective":["CAP_KILL","CAP_CHOWN"]}}"#,
    );
    in_child(|| {
        let err = apply(&p).unwrap_err().to_string();
        check!(err.contains("process.capabilities.permitted"), "{err}");
        check!(err.contains("EPERM"), "{err}");
        Ok(())
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// errors after a seccomp filter was loaded

#[test]
fn eperm_after_seccomp_load_points_at_the_profile() {
    let e = ProcessSetupError::syscall("process.user.additionalGids []", "setgroups", Errno::EPERM)
        .after_seccomp_load();
    let msg = e.to_string();
    assert!(msg.contains("setgroups: EPERM"), "{msg}");
    assert!(msg.contains("Operation not permitted"), "{msg}");
    assert!(
        msg.contains("linux.seccomp does not allow setgroups"),
        "{msg}"
    );
    // An existing hint is kept; the call name is cut at its arguments.
    let e = ProcessSetupError::syscall("process.user", "prctl(PR_SET_KEEPCAPS, 1)", Errno::EPERM)
        .with_hint(Some("kept".into()))
        .after_seccomp_load();
    let msg = e.to_string();
    assert!(
        msg.contains("(kept; or linux.seccomp does not allow prctl:"),
        "{msg}"
    );
    // Other errors are left alone.
    let e = ProcessSetupError::syscall("process.user.uid 5", "setresuid", Errno::EINVAL)
        .after_seccomp_load();
    assert!(!e.to_string().contains("seccomp"), "{e}");
}
