//! The per-thread seccomp filters, installed in forked children: calls a
//! thread kind needs pass, anything else kills the process with SIGSYS.
//! (The guest tests run with the filters on, so they show the VMM's
//! threads need nothing more.)

use hull_kvm::seccomp::{filter, install, kvm_ioctls};
use hull_kvm::ThreadKind;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exited(i32),
    Killed(i32),
}

/// Forks; the child installs the filter for `kind`, runs `f` (raw system
/// calls only: no allocation after fork) and exits with its result.
fn in_child(kind: ThreadKind, f: fn() -> i32) -> Outcome {
    let prog = filter(kind).expect("filter builds");
    // SAFETY: the child only installs a prebuilt filter and makes raw
    // system calls before _exit; the parent waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match install(kind, &prog) {
            Ok(()) => f(),
            Err(_) => 99,
        };
        // SAFETY: ends the forked child without running the parent's
        // destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    if libc::WIFSIGNALED(status) {
        Outcome::Killed(libc::WTERMSIG(status))
    } else {
        Outcome::Exited(libc::WEXITSTATUS(status))
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

// The probes: each returns 0 when the call went through to the kernel.

fn kvm_run_on_a_bad_fd() -> i32 {
    // SAFETY: an ioctl on an invalid fd only fails.
    let r = unsafe { libc::ioctl(-1, kvm_ioctls::KVM_RUN as _, 0) };
    if r == -1 && errno() == libc::EBADF {
        0
    } else {
        1
    }
}

fn write_and_dup() -> i32 {
    // SAFETY: raw calls on stderr, which the child inherited.
    unsafe {
        if libc::write(2, c"".as_ptr().cast(), 0) != 0 {
            return 3;
        }
        let dup = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 0);
        if dup < 0 {
            return 4;
        }
        libc::close(dup);
    }
    0
}

/// Opening a file must fail with EACCES (exit 0), not succeed (exit 7).
fn open_a_file() -> i32 {
    // SAFETY: a valid NUL-terminated path; the fd (if any) is leaked by a
    // child that exits at once.
    let fd = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    if fd >= 0 {
        return 7;
    }
    // SAFETY: reads this thread's errno.
    if unsafe { *libc::__errno_location() } != libc::EACCES {
        return 8;
    }
    // SAFETY: same, through openat.
    let fd = unsafe { libc::openat(libc::AT_FDCWD, c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    if fd >= 0 {
        return 7;
    }
    0
}

fn unix_socket() -> i32 {
    // SAFETY: creates and closes a socket.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return 5;
    }
    // SAFETY: closes the fd just made.
    unsafe { libc::close(fd) };
    0
}

fn inet_socket() -> i32 {
    // SAFETY: creates a socket (the filter refuses it).
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    0
}

fn other_kvm_ioctl() -> i32 {
    // KVM_CREATE_VM on a bad fd: refused by the filter before the kernel
    // would say EBADF.
    // SAFETY: an ioctl on an invalid fd.
    unsafe { libc::ioctl(-1, 0xae01 as _, 0) };
    0
}

fn executable_mapping() -> i32 {
    // SAFETY: maps one anonymous page (the filter refuses PROT_EXEC).
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    0
}

fn plain_mapping() -> i32 {
    // SAFETY: maps and unmaps one anonymous page.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 6;
        }
        libc::munmap(p, 4096);
    }
    0
}

fn fork_again() -> i32 {
    // SAFETY: raw fork syscall (the filter refuses it).
    unsafe { libc::syscall(libc::SYS_fork) };
    0
}

fn kill_another_process() -> i32 {
    // SAFETY: signal 0 to pid 1 only checks.
    unsafe { libc::kill(1, 0) };
    0
}

/// What the kernel runs when a timed sleep interrupted by a stop or a freezer trap
/// resumes; called directly (nothing to restart) it fails with EINTR.
fn restart_syscall() -> i32 {
    // SAFETY: restart_syscall takes no arguments.
    let r = unsafe { libc::syscall(libc::SYS_restart_syscall) };
    if r == -1 && errno() == libc::EINTR {
        0
    } else {
        10
    }
}

const SIGSYS: Outcome = Outcome::Killed(libc::SIGSYS);

#[test]
fn every_thread_kind_survives_a_restarted_sleep() {
    // `hull pause` of a VM container froze the VMM and its vsock thread died of SIGSYS.
    for kind in [ThreadKind::Vcpu, ThreadKind::Device, ThreadKind::Api] {
        assert_eq!(
            in_child(kind, restart_syscall),
            Outcome::Exited(0),
            "{kind:?}"
        );
    }
}

#[test]
fn vcpu_filter_allows_kvm_run_and_device_emulation() {
    assert_eq!(
        in_child(ThreadKind::Vcpu, kvm_run_on_a_bad_fd),
        Outcome::Exited(0)
    );
    assert_eq!(
        in_child(ThreadKind::Vcpu, write_and_dup),
        Outcome::Exited(0)
    );
    assert_eq!(
        in_child(ThreadKind::Vcpu, plain_mapping),
        Outcome::Exited(0)
    );
}

#[test]
fn vcpu_filter_refuses_everything_else() {
    assert_eq!(
        in_child(ThreadKind::Vcpu, open_a_file),
        Outcome::Exited(0),
        "open fails with EACCES"
    );
    for (name, probe) in [
        ("socket", unix_socket as fn() -> i32),
        ("other KVM ioctl", other_kvm_ioctl),
        ("PROT_EXEC mmap", executable_mapping),
        ("fork", fork_again),
        ("kill", kill_another_process),
    ] {
        assert_eq!(in_child(ThreadKind::Vcpu, probe), SIGSYS, "{name}");
    }
}

#[test]
fn device_filter_allows_unix_sockets_only() {
    assert_eq!(
        in_child(ThreadKind::Device, unix_socket),
        Outcome::Exited(0)
    );
    assert_eq!(in_child(ThreadKind::Device, inet_socket), SIGSYS);
    assert_eq!(
        in_child(ThreadKind::Device, open_a_file),
        Outcome::Exited(0)
    );
    assert_eq!(in_child(ThreadKind::Device, kvm_run_on_a_bad_fd), SIGSYS);
}

#[test]
fn api_filter_allows_teardown_not_new_work() {
    assert_eq!(
        in_child(ThreadKind::Api, kill_another_process),
        Outcome::Exited(0)
    );
    assert_eq!(in_child(ThreadKind::Api, open_a_file), Outcome::Exited(0));
    assert_eq!(in_child(ThreadKind::Api, kvm_run_on_a_bad_fd), SIGSYS);
    assert_eq!(in_child(ThreadKind::Api, inet_socket), SIGSYS);
}

mod common;

/// (name, seccomp mode) of this process's threads whose name starts with `prefix`.
fn threads(prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.push((comm.trim().to_string(), mode));
    }
    out
}

#[test]
fn vm_threads_run_under_their_filters() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let bin = common::assemble(dir.path(), "spin", "1: jmp 1b\n");
    let mut cfg = common::flat_config(&bin, &dir.path().join("serial.log"));
    cfg.vcpus = 2;
    cfg.vsock = Some(hull_kvm::VsockConfig {
        guest_cid: 3,
        uds_path: dir.path().join("v.sock"),
    });
    let mut vm = hull_kvm::Vm::start(&cfg).expect("VM starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        seen = threads("hull-");
        if seen.len() == 3 && seen.iter().all(|(_, m)| m == "2") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    vm.stop();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("hull-vcpu0".to_string(), "2".to_string()),
            ("hull-vcpu1".to_string(), "2".to_string()),
            ("hull-vsock".to_string(), "2".to_string()),
        ],
        "each VMM thread is in seccomp filter mode (2)"
    );
}
