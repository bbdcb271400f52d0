use super::*;
use serde_json::json;

fn profile(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("a valid LinuxSeccomp")
}

fn compile_err(v: serde_json::Value) -> String {
    match compile(&profile(v)) {
        Ok(f) => panic!("compiled: {f:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "linux.seccomp.syscalls[1].args[0].index: 6 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]}),
            "linux.seccomp.syscalls[0].errnoRet: 70000 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 99999}),
            "linux.seccomp.defaultErrnoRet: 99999 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath: is required when a rule uses SCMP_ACT_NOTIFY",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x.sock", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["read"], "action": "SCMP_ACT_LOG"},
                {"names": ["mkdir"], "action": "SCMP_ACT_TRAP"},
                {"names": ["write", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.syscalls[3].action: SCMP_ACT_NOTIFY cannot be used for \"sendmsg\"",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid", ""], "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names[1]: empty string",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": [], "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names: is empty",
        ),
    ];
    for (v, want) in cases {
        let e = compile_err(v.clone());
        assert!(e.starts_with(want), "{v}\n  got:  {e}\n  want: {want}");
    }
}

#[test]
fn unknown_flag_names_are_rejected_when_the_config_is_parsed() {
    // oci-spec's types refuse an unknown flag, action, operator or arch while parsing
    // config.json, naming the value.
    let e = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}))
    .expect_err("unknown flag");
    assert!(e.to_string().contains("SECCOMP_FILTER_FLAG_BOGUS"), "{e}");
}

#[test]
fn arch_libseccomp_cannot_mix_is_a_clear_error() {
    if cfg!(target_endian = "little") {
        let e = compile_err(json!({"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_S390X"]}));
        assert!(
            e.starts_with("linux.seccomp.architectures[1]: SCMP_ARCH_S390X cannot be filtered"),
            "{e}"
        );
    }
}

#[test]
fn arch_libseccomp_lacks_is_a_clear_error() {
    let newer = libseccomp::ScmpVersion::current()
        .map(|v| (v.major, v.minor) >= (2, 6))
        .unwrap_or(true);
    if newer {
        eprintln!("skipped: libseccomp >= 2.6 knows LOONGARCH64");
        return;
    }
    let e = compile_err(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_LOONGARCH64"]}));
    assert!(
        e.starts_with("linux.seccomp.architectures[1]: SCMP_ARCH_LOONGARCH64 cannot be filtered"),
        "{e}"
    );
}

#[test]
fn every_arch_features_lists_compiles() {
    for a in hull_specs::features::SECCOMP_ARCHS {
        let f = compile(&profile(json!({"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": [a], "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})));
        assert!(f.is_ok(), "{a}: {f:?}");
    }
}

#[test]
fn every_action_and_operator_compiles() {
    for a in hull_specs::features::SECCOMP_ACTIONS {
        let v = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x.sock",
            "syscalls": [{"names": ["mkdir"], "action": a}]});
        let f = compile(&profile(v)).unwrap_or_else(|e| panic!("{a}: {e}"));
        let want = usize::from(a != "SCMP_ACT_ALLOW");
        assert_eq!(f.rules().len(), want, "{a}");
        assert_eq!(f.listener().is_some(), a == "SCMP_ACT_NOTIFY", "{a}");
    }
    for op in hull_specs::features::SECCOMP_OPERATORS {
        let v = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["personality"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 8, "valueTwo": 8, "op": op}]}]});
        let f = compile(&profile(v)).unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(f.rules()[0].conditions.len(), 1, "{op}");
    }
}

#[test]
fn a_rules_conditions_are_built() {
    let f = compile(&profile(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 2, "op": "SCMP_CMP_LE"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_NE"},
                  {"index": 1, "value": 15, "op": "SCMP_CMP_NE"}]}
    ]})))
    .expect("compiles");
    let r = f.rules();
    assert_eq!(r[0].name, "personality");
    assert_eq!(r[0].action, ScmpAction::Allow);
    assert_eq!(
        r[0].conditions,
        [ScmpArgCompare::new(0, ScmpCompareOp::Equal, 8)]
    );
    assert_eq!(
        r[1].conditions,
        [ScmpArgCompare::new(
            0,
            ScmpCompareOp::MaskedEqual(2_114_060_288),
            0
        )]
    );
    // Two different arguments: one rule, ANDed.
    assert_eq!(r[2].name, "socket");
    assert_eq!(r[2].conditions.len(), 2);
    // The same argument twice: two rules (runc's rule).
    assert_eq!(r[3].name, "kill");
    assert_eq!(r[4].name, "kill");
    assert_eq!(r[3].conditions.len() + r[4].conditions.len(), 2);
    assert_eq!(r.len(), 5);
    assert!(!f.is_empty());
}

#[test]
fn unknown_syscalls_are_skipped_and_redundant_rules_dropped() {
    let f = compile(&profile(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "no_such_syscall_hull", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}
        ]}),
    ))
    .expect("compiles");
    assert_eq!(f.skipped(), ["no_such_syscall_hull"]);
    let names: Vec<&str> = f.rules().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["read", "write"], "mkdir ERRNO = default: dropped");
}

#[test]
fn errno_ret_defaults_and_actions() {
    assert_eq!(
        action(LinuxSeccompAction::ScmpActErrno, None, "x").ok(),
        Some(ScmpAction::Errno(libc::EPERM))
    );
    assert_eq!(
        action(LinuxSeccompAction::ScmpActErrno, Some(38), "x").ok(),
        Some(ScmpAction::Errno(38))
    );
    assert_eq!(
        action(LinuxSeccompAction::ScmpActTrace, None, "x").ok(),
        Some(ScmpAction::Trace(1))
    );
    assert_eq!(
        action(LinuxSeccompAction::ScmpActKill, None, "x").ok(),
        Some(ScmpAction::KillThread)
    );
    assert_eq!(
        action(LinuxSeccompAction::ScmpActKillProcess, None, "x").ok(),
        Some(ScmpAction::KillProcess)
    );
}

#[test]
fn flags() {
    let f = compile(&profile(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC",
                  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]})));
    let Ok(f) = f else {
        eprintln!("skipped: kernel lacks a flag: {f:?}");
        return;
    };
    // TSYNC ignored; WAIT_KILLABLE_RECV only with a listener.
    assert_eq!(f.flags(), libc::SECCOMP_FILTER_FLAG_LOG);
    let f = compile(&profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    ))
    .expect("compiles");
    assert_eq!(
        f.flags(),
        libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
            | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    );
    let supported = supported_flags();
    assert!(supported.contains(&"SECCOMP_FILTER_FLAG_TSYNC".to_string()));
}

#[test]
fn default_profile_compiles() {
    use oci_spec::runtime::Capability;
    for caps in [
        vec![],
        vec![
            Capability::AuditWrite,
            Capability::Kill,
            Capability::NetBindService,
        ],
        hull_specs::features::CAPABILITIES.to_vec(),
    ] {
        let p = hull_specs::seccomp_default::default_seccomp(&caps);
        let f = compile(&p).unwrap_or_else(|e| panic!("{caps:?}: {e}"));
        assert!(f.rules().len() > 300, "{}", f.rules().len());
        eprintln!(
            "default profile ({} caps): {} rules, {} BPF instructions, skipped: {:?}",
            caps.len(),
            f.rules().len(),
            f.len(),
            f.skipped()
        );
    }
}

/// Fork a child, load `f` there (with no_new_privs), run `body`, and return how it ended.
fn in_child(f: &Filter, body: fn() -> i32) -> nix::sys::wait::WaitStatus {
    use nix::unistd::{fork, ForkResult};
    // The program as init loads it, unpacked before the fork (the child allocates nothing).
    let f = hull_inside::seccomp::Filter::from_compiled(f.to_compiled());
    // SAFETY: the child only makes raw system calls (prctl, seccomp, the body's) and _exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // SAFETY: plain syscalls; the child never returns to the test harness.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let code = match hull_inside::seccomp::load(&f) {
                    Ok(_) => body(),
                    Err(_) => 200,
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
    }
}

fn errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

#[test]
fn loaded_filter_returns_the_errno_and_kills() {
    use nix::sys::wait::WaitStatus;
    let f = compile(&profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}
        ]}),
    ))
    .expect("compiles");
    let mkdir = || {
        // SAFETY: a NUL-terminated literal path.
        let rc = unsafe { libc::mkdir(c"/nonexistent-dir/hull-seccomp-test".as_ptr(), 0o700) };
        if rc < 0 {
            errno()
        } else {
            0
        }
    };
    let st = in_child(&f, mkdir);
    assert_eq!(st, WaitStatus::Exited(st.pid().expect("pid"), libc::ENOSYS));

    let st = in_child(&f, || {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() };
        0
    });
    assert!(
        matches!(
            st,
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ),
        "{st:?}"
    );

    // personality(8) is refused, personality(0xffffffff) (a query) is not.
    let st = in_child(&f, || {
        // SAFETY: personality with a persona value; the child exits right after.
        let q = unsafe { libc::personality(0xffff_ffff) };
        // SAFETY: as above.
        let r = unsafe { libc::personality(8) };
        if q >= 0 && r < 0 {
            errno()
        } else {
            0
        }
    });
    assert_eq!(st, WaitStatus::Exited(st.pid().expect("pid"), libc::EPERM));
}

#[test]
fn notify_load_returns_a_listener_fd() {
    use nix::sys::wait::WaitStatus;
    let f = compile(&profile(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]}),
    ))
    .expect("compiles");
    let st = in_child(&f, || 0);
    // The child loaded the filter (load succeeded) and exited without calling getppid.
    assert_eq!(st, WaitStatus::Exited(st.pid().expect("pid"), 0));
}

fn small_profile(errno: u32) -> LinuxSeccomp {
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno}]
    }))
    .unwrap()
}

#[test]
fn compiled_programs_round_trip() {
    let filter = compile(&small_profile(38)).unwrap();
    let back = hull_inside::seccomp::Filter::from_compiled(filter.to_compiled());
    assert_eq!(back.to_compiled(), filter.to_compiled());
    assert_eq!(back.len(), filter.len());
    assert_eq!(back.flags(), filter.flags());
}

#[test]
fn the_cache_returns_the_same_program_and_tells_profiles_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = compile_cached(&small_profile(38), &cache).unwrap();
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    let hit = compile_cached(&small_profile(38), &cache).unwrap();
    assert_eq!(hit, first);
    let other = compile_cached(&small_profile(1), &cache).unwrap();
    assert_ne!(
        other, first,
        "a different profile must not reuse the cached program"
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2);
    // Entries whose recorded profile differs from the key (a collision, or a file put there
    // under the right name) are not used: give every entry another key and another program.
    for entry in std::fs::read_dir(&cache).unwrap().flatten() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        v["key"] = json!("another profile");
        v["compiled"] = serde_json::to_value(&other).unwrap();
        std::fs::write(entry.path(), v.to_string()).unwrap();
    }
    let again = compile_cached(&small_profile(38), &cache).unwrap();
    assert_eq!(again, first);
}

#[test]
fn an_unwritable_cache_still_compiles() {
    let again = compile_cached(&small_profile(38), Path::new("/proc/no-such-dir/cache")).unwrap();
    assert_eq!(again, compile(&small_profile(38)).unwrap().to_compiled());
}

/// Rewrites every cache entry (regular file) in `cache` to hold `program` under its own key (what an attacker able
/// to write the cache would do), with `owner` and `mode`.
fn tamper(cache: &Path, program: &Compiled, owner: Option<u32>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(cache).unwrap().flatten() {
        if !entry.file_type().unwrap().is_file() {
            continue;
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        v["compiled"] = serde_json::to_value(program).unwrap();
        std::fs::write(entry.path(), v.to_string()).unwrap();
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(entry.path(), Some(uid), None).unwrap();
        }
    }
}

#[test]
fn cache_entries_others_could_write_are_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let good = compile_cached(&small_profile(38), &cache).unwrap();
    let evil = compile(&small_profile(1)).unwrap().to_compiled();
    assert_ne!(good, evil);
    // Our own, 0600: loaded (the tampering shows: this is what the cache is trusted with).
    tamper(&cache, &evil, None, 0o600);
    assert_eq!(compile_cached(&small_profile(38), &cache).unwrap(), evil);
    // World-writable: not loaded, compiled afresh and stored again safely.
    tamper(&cache, &evil, None, 0o666);
    assert_eq!(compile_cached(&small_profile(38), &cache).unwrap(), good);
    assert_eq!(compile_cached(&small_profile(38), &cache).unwrap(), good);
    if nix::unistd::geteuid().is_root() {
        // Another user's file.
        tamper(&cache, &evil, Some(65534), 0o600);
        assert_eq!(compile_cached(&small_profile(38), &cache).unwrap(), good);
    }
    // A symlink in an entry's place is not followed.
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::rename(&entry, &elsewhere).unwrap();
    tamper(dir.path(), &evil, None, 0o600);
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    assert_eq!(compile_cached(&small_profile(38), &cache).unwrap(), good);
}

#[test]
fn a_cache_directory_others_could_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let first = compile_cached(&small_profile(38), &cache).unwrap();
    assert_eq!(first, compile(&small_profile(38)).unwrap().to_compiled());
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing stored"
    );
    // A symlink to a directory of our own is not used either.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&cache, &link).unwrap();
    compile_cached(&small_profile(38), &link).unwrap();
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "nothing stored"
    );
    compile_cached(&small_profile(38), &cache).unwrap();
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn the_cache_key_names_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    compile_cached(&small_profile(38), &cache).unwrap();
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    let key = v["key"].as_str().unwrap();
    assert!(key.contains(crate::build_id::current()), "{key}");
}
