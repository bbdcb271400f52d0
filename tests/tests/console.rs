//! `process.terminal = true` with `--console-socket`: the runtime sends the pty master over
//! an AF_UNIX socket (one message, SCM_RIGHTS with exactly one fd).

use hull_tests::console::{read_until, write_fd, ConsoleSocket};
use hull_tests::{assert_no_leftovers, setup, Bundle};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn console_socket_receives_pty_master() {
    let Some(rt) = setup("console") else { return };
    let mut b = Bundle::new();
    b.terminal(true).args(&["sh"]);
    let sock = ConsoleSocket::new(rt.scratch());
    let id = rt.id();
    rt.create_with(&id, &b, &["--console-socket", sock.path.to_str().unwrap()])
        .assert_ok();
    let msg = sock.receive(T);
    assert_eq!(msg.fds.len(), 1, "SCM_RIGHTS must carry exactly one fd");
    let master = &msg.fds[0];
    // The fd is a pty master (/dev/ptmx or /dev/pts/ptmx).
    let link = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(master)
    ))
    .unwrap();
    assert!(
        link.to_string_lossy().ends_with("ptmx"),
        "received fd is {link:?}, not a pty master"
    );

    rt.start(&id).assert_ok();
    write_fd(master, b"tty; echo hi-$((6*7)); exit\n");
    let out = read_until(master, "hi-42", T);
    assert!(out.contains("hi-42"), "pty output: {out:?}");
    assert!(
        out.contains("/dev/pts/0"),
        "tty inside must be /dev/pts/0: {out:?}"
    );
    assert!(
        rt.wait_status(&id, "stopped", T),
        "sh did not exit after `exit`"
    );
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn terminal_stdio_are_the_pty() {
    let Some(rt) = setup("console-stdio") else {
        return;
    };
    let mut b = Bundle::new();
    b.terminal(true);
    b.sh("for f in 0 1 2; do readlink /proc/self/fd/$f; done; stty size 2>/dev/null; echo done");
    let sock = ConsoleSocket::new(rt.scratch());
    let id = rt.id();
    rt.create_with(&id, &b, &["--console-socket", sock.path.to_str().unwrap()])
        .assert_ok();
    let msg = sock.receive(T);
    assert_eq!(msg.fds.len(), 1);
    rt.start(&id).assert_ok();
    let out = read_until(&msg.fds[0], "done", T);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines[..3],
        ["/dev/pts/0", "/dev/pts/0", "/dev/pts/0"],
        "{out:?}"
    );
    assert!(rt.wait_status(&id, "stopped", T));
    rt.delete(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn terminal_without_console_socket_fails_for_create() {
    let Some(rt) = setup("console-missing") else {
        return;
    };
    let mut b = Bundle::new();
    b.terminal(true);
    let id = rt.id();
    let o = rt.create(&id, &b);
    o.assert_fail().assert_error_contains("console");
    rt.state(&id).assert_fail();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn console_socket_without_terminal_fails() {
    let Some(rt) = setup("console-noterm") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["true"]);
    let sock = ConsoleSocket::new(rt.scratch());
    let id = rt.id();
    let o = rt.create_with(&id, &b, &["--console-socket", sock.path.to_str().unwrap()]);
    o.assert_fail().assert_error_contains("console");
    assert_no_leftovers(&rt, &b);
}

/// runc binds the container's pty over `/dev/console` (systemd and getty write there);
/// an exec'd process does not re-bind it.
#[test]
fn dev_console_is_the_pty() {
    let Some(rt) = setup("console-dev") else {
        return;
    };
    let mut b = Bundle::new();
    b.terminal(true).args(&["sleep", "30"]);
    b.sh(
        "echo console=$(stat -L -c %t:%T /dev/console) stdin=$(stat -L -c %t:%T /proc/self/fd/0); \
          echo mounts=$(grep -c ' /dev/console ' /proc/self/mountinfo); echo done; sleep 30",
    );
    let sock = ConsoleSocket::new(rt.scratch());
    let id = rt.id();
    rt.create_with(&id, &b, &["--console-socket", sock.path.to_str().unwrap()])
        .assert_ok();
    let msg = sock.receive(T);
    rt.start(&id).assert_ok();
    let out = read_until(&msg.fds[0], "done", T);
    let field = |k: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let (console, stdin) = (field("console="), field("stdin="));
    assert!(!console.is_empty() && console == stdin, "{out:?}");
    assert_eq!(field("mounts="), "1", "{out:?}");
    let o = rt.call(&[
        "exec",
        &id,
        "grep",
        "-c",
        " /dev/console ",
        "/proc/self/mountinfo",
    ]);
    assert_eq!(o.stdout.trim(), "1", "exec must not bind it again: {o}");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}
