//! The default seccomp profile: the allowlist containerd and Docker apply to every container
//! unless told otherwise, written out in Rust.
//!
//! - Everything not listed fails with `EPERM` (`defaultAction: SCMP_ACT_ERRNO`).
//! - One big list of harmless system calls is allowed.
//! - `socket` is allowed for every address family but `AF_ALG` and `AF_VSOCK` (three
//!   single-condition rules, see [`socket_rules`]); `personality` only for the personas
//!   programs really ask for (`PER_LINUX`, `PER_LINUX32`, `UNAME26` and their mix, and the
//!   `0xffffffff` query).
//! - Groups gated on a capability are allowed only when the process's bounding set has it:
//!   e.g. `mount`, `umount2`, `unshare`, `setns`, `bpf`, `clone3` with `CAP_SYS_ADMIN`,
//!   `chroot` with `CAP_SYS_CHROOT`, `ptrace` & co. with `CAP_SYS_PTRACE`.
//! - Without `CAP_SYS_ADMIN`, `clone` is allowed only when its flags ask for no new namespace
//!   (a `MASKED_EQ` condition on the flags argument), and `clone3` — whose flags live in
//!   memory a filter cannot read — fails with `ENOSYS` so that libc falls back to `clone`.
//! - Architectures: the native one and its compat ABIs (x86_64: x86 and x32).
//!
//! Differences from containerd: no kernel-version probe (containerd allows
//! `ptrace`/`process_vm_*` only from Linux 4.8 on; hull needs a newer kernel anyway), and the
//! architecture is the one hull was built for.

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// System calls every container may make.
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // containerd adds these for kernels >= 4.8 (seccomp is checked before ptrace there).
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// System calls of the architecture hull was built for.
pub fn arch_specific() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["arch_prctl", "modify_ldt"]
    } else if cfg!(target_arch = "x86") {
        &["modify_ldt"]
    } else if cfg!(any(target_arch = "arm", target_arch = "aarch64")) {
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]
    } else if cfg!(target_arch = "powerpc64") {
        &["sync_file_range2", "swapcontext"]
    } else if cfg!(target_arch = "s390x") {
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ]
    } else if cfg!(target_arch = "riscv64") {
        &["riscv_flush_icache", "riscv_hwprobe"]
    } else {
        &[]
    }
}

/// The architectures of the profile: the native one and its compat ABIs (containerd's).
pub fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64]
    } else if cfg!(target_arch = "s390x") {
        vec![Arch::ScmpArchS390, Arch::ScmpArchS390x]
    } else if cfg!(target_arch = "riscv64") {
        vec![Arch::ScmpArchRiscv64]
    } else if cfg!(target_arch = "loongarch64") {
        vec![Arch::ScmpArchLoongarch64]
    } else {
        vec![]
    }
}

/// Capability-gated groups: allowed only when the bounding set has the capability.
pub const CAPABILITY_GATED: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// `personality` values a container may ask for: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (query the current persona).
pub const PERSONALITIES: [u64; 5] = [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// `CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET | CLONE_NEWCGROUP`: the namespace flags `clone` may not carry without
/// CAP_SYS_ADMIN.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000 | 0x0200_0000;

const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const ENOSYS: u32 = 38;

fn syscall(names: &[&str], action: LinuxSeccompAction, args: Vec<LinuxSeccompArg>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| (*n).to_string()).collect());
    s.set_action(action);
    if !args.is_empty() {
        s.set_args(Some(args));
    }
    s
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Cannot fail: every field has a default.
    b.build().unwrap_or_default()
}

fn allow(names: &[&str]) -> LinuxSyscall {
    syscall(names, LinuxSeccompAction::ScmpActAllow, vec![])
}

/// `socket` for every family but AF_ALG (38) and AF_VSOCK (40): `< 38`, `== 39`, `> 40`.
/// Three rules of one condition each, because conditions on the same argument in one rule
/// become separate (ORed) rules in runc and hull.
pub fn socket_rules() -> Vec<LinuxSyscall> {
    [
        (LinuxSeccompOperator::ScmpCmpLt, AF_ALG),
        (LinuxSeccompOperator::ScmpCmpEq, AF_ALG + 1),
        (LinuxSeccompOperator::ScmpCmpGt, AF_VSOCK),
    ]
    .into_iter()
    .map(|(op, v)| {
        syscall(
            &["socket"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, op, v, None)],
        )
    })
    .collect()
}

/// The default profile for a process whose bounding set is `caps`.
pub fn default_seccomp(caps: &[Capability]) -> LinuxSeccomp {
    let mut syscalls = vec![allow(ALLOWED)];
    syscalls.extend(socket_rules());
    for p in PERSONALITIES {
        syscalls.push(syscall(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, p, None)],
        ));
    }
    let arch_calls = arch_specific();
    if !arch_calls.is_empty() {
        syscalls.push(allow(arch_calls));
    }
    for (cap, names) in CAPABILITY_GATED {
        if caps.contains(cap) {
            syscalls.push(allow(names));
        }
    }
    if !caps.contains(&Capability::SysAdmin) {
        // s390 passes the flags as the second argument of clone.
        let flags_arg = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        syscalls.push(syscall(
            &["clone"],
            LinuxSeccompAction::ScmpActAllow,
            vec![arg(
                flags_arg,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
            )],
        ));
        let mut clone3 = syscall(&["clone3"], LinuxSeccompAction::ScmpActErrno, vec![]);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    }

    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    let archs = architectures();
    if !archs.is_empty() {
        s.set_architectures(Some(archs));
    }
    s.set_syscalls(Some(syscalls));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|c| c.action() == LinuxSeccompAction::ScmpActAllow && c.args().is_none())
            .flat_map(|c| c.names().clone())
            .collect()
    }

    #[test]
    fn errno_by_default_with_the_big_allowlist() {
        let s = default_seccomp(&[]);
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), None, "EPERM is the default errno");
        let allowed = names(&s);
        for n in [
            "read",
            "write",
            "execve",
            "mkdir",
            "openat",
            "exit_group",
            "ptrace",
        ] {
            assert!(allowed.iter().any(|a| a == n), "{n}");
        }
        for n in [
            "mount", "umount2", "unshare", "setns", "bpf", "reboot", "chroot",
        ] {
            assert!(
                !allowed.iter().any(|a| a == n),
                "{n} must need a capability"
            );
        }
        assert!(ALLOWED.len() > 350, "{}", ALLOWED.len());
    }

    #[test]
    fn no_duplicates_in_the_allowlist() {
        let mut v: Vec<&str> = ALLOWED.to_vec();
        v.sort_unstable();
        let n = v.len();
        v.dedup();
        assert_eq!(v.len(), n);
    }

    #[test]
    fn capability_gates() {
        let s = default_seccomp(&[Capability::SysAdmin, Capability::SysChroot]);
        let allowed = names(&s);
        for n in [
            "mount", "unshare", "setns", "clone", "clone3", "chroot", "umount2",
        ] {
            assert!(allowed.iter().any(|a| a == n), "{n}");
        }
        assert!(!allowed.iter().any(|a| a == "reboot"));
        // No clone mask / clone3 ENOSYS with CAP_SYS_ADMIN.
        assert!(!s
            .syscalls()
            .iter()
            .flatten()
            .any(|c| c.action() == LinuxSeccompAction::ScmpActErrno));
    }

    #[test]
    fn clone_without_sys_admin_masks_namespace_flags() {
        let s = default_seccomp(&[Capability::Kill]);
        let v = serde_json::to_value(&s).expect("serializes");
        let calls = v["syscalls"].as_array().cloned().unwrap_or_default();
        let clone = calls
            .iter()
            .find(|c| c["names"] == json!(["clone"]))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            clone["args"],
            json!([{"index": if cfg!(target_arch = "s390x") { 1 } else { 0 },
                    "value": 2_114_060_288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        let clone3 = calls
            .iter()
            .find(|c| c["names"] == json!(["clone3"]))
            .cloned()
            .unwrap_or_default();
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
    }

    #[test]
    fn personality_and_socket_conditions() {
        let s = default_seccomp(&[]);
        let v = serde_json::to_value(&s).expect("serializes");
        let calls = v["syscalls"].as_array().cloned().unwrap_or_default();
        let pers: Vec<u64> = calls
            .iter()
            .filter(|c| c["names"] == json!(["personality"]))
            .filter_map(|c| c["args"][0]["value"].as_u64())
            .collect();
        assert_eq!(pers, PERSONALITIES);
        let sock: Vec<(String, u64)> = calls
            .iter()
            .filter(|c| c["names"] == json!(["socket"]))
            .map(|c| {
                (
                    c["args"][0]["op"].as_str().unwrap_or("").to_string(),
                    c["args"][0]["value"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            sock,
            [
                ("SCMP_CMP_LT".to_string(), 38),
                ("SCMP_CMP_EQ".to_string(), 39),
                ("SCMP_CMP_GT".to_string(), 40)
            ]
        );
    }

    #[test]
    fn round_trips_through_json() {
        let s = default_seccomp(&[Capability::AuditWrite, Capability::Kill]);
        let text = serde_json::to_string(&s).expect("serializes");
        let back: LinuxSeccomp = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, s);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_architectures() {
        let s = default_seccomp(&[]);
        assert_eq!(
            s.architectures().clone().unwrap_or_default(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert!(names(&s).iter().any(|n| n == "arch_prctl"));
    }
}
