//! The `hull-vmm` binary runs one VM from flags; measures its peak RSS.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn hull_vmm_runs_a_flat_guest_and_reports_boot_time() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "outb BOOT_TIMER, 123\n{}\noutb I8042_CMD, 0xfe\n1: jmp 1b\n",
        common::print_str("hello from hull-vmm\n")
    );
    let bin = common::assemble(dir.path(), "hello", &body);
    // Reaped with wait4 below (which also returns the child's own rusage).
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
        .arg("--kernel")
        .arg(&bin)
        .args(["--flat", "--mem", "32", "--timeout-ms", "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    // wait4 rather than Child::wait: it also gives this child's own rusage.
    let mut status = 0;
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: valid out-pointers; the pid is our unwaited child.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, ru.as_mut_ptr()) };
    assert_eq!(pid, child.id() as i32);
    // SAFETY: wait4 succeeded and filled the struct.
    let maxrss_kib = unsafe { ru.assume_init() }.ru_maxrss;
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{stderr}"
    );
    assert_eq!(stdout, "hello from hull-vmm\n");
    assert!(stderr.contains("guest boot time"), "{stderr}");
    assert!(stderr.contains("VM exited: Reset"), "{stderr}");
    println!("measured: hull-vmm peak RSS {maxrss_kib} KiB (32 MiB guest); {stderr}");
}

#[test]
fn hull_vmm_reports_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let not_kernel = dir.path().join("notes.txt");
    std::fs::write(&not_kernel, "just text").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
        .arg("--kernel")
        .arg(&not_kernel)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a kernel"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
        .arg("--kernel")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
        .arg("--kernel")
        .arg(&not_kernel)
        .args(["--flat", "--mem", "4"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("too small"));
}

/// Every device and thread at once under `hull-vmm`, whose main thread is
/// confined by the API filter: the guest echoes its serial input, and the
/// teardown (vsock socket removal, virtiofsd stop) passes the filters.
#[test]
fn hull_vmm_with_every_device_under_seccomp() {
    require_guest_env!();
    let virtiofsd = match common::find_virtiofsd() {
        Ok(p) => p,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let body = r#"
        outb BOOT_TIMER, 123
        /* DTR | RTS: ready to receive (input waits for RTS) */
        mov $0x3fc, %dx
        mov $0x03, %al
        out %al, %dx
    1:  mov $0x3fd, %dx
    2:  in %dx, %al
        test $1, %al
        jz 2b
        mov $0x3f8, %dx
        in %dx, %al
        out %al, %dx
        cmp $0x0a, %al
        jne 1b
        exit_with 42
    "#;
    let bin = common::assemble(dir.path(), "echo", body);
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "echo me\n").unwrap();
    let vsock = dir.path().join("v.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_hull-vmm"))
        .arg("--kernel")
        .arg(&bin)
        .args(["--flat", "--mem", "32", "--timeout-ms", "20000"])
        .arg("--serial-in")
        .arg(&input)
        .arg("--vsock-socket")
        .arg(&vsock)
        .arg("--shared-dir")
        .arg(shared.path())
        .arg("--virtiofsd")
        .arg(&virtiofsd)
        .arg(format!(
            "--fs-sandbox={}",
            common::virtiofsd_sandbox().as_arg()
        ))
        .arg("--mmio-cmdline-devices")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(42),
        "status {:?}: {stderr}",
        out.status
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "echo me\n");
    assert!(!vsock.exists(), "vsock socket removed at teardown");
    println!("{stderr}");
}
