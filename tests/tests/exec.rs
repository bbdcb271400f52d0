//! `exec`: a new process in a running container — namespaces, cgroup, user, env, cwd,
//! exit status, --detach with a pid file, --process FILE, a tty through --console-socket,
//! and refusals for stopped containers and bad process.json files.

use hull_tests::console::{read_until, write_fd, ConsoleSocket};
use hull_tests::{assert_no_leftovers, setup, Bundle};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn running(rt: &hull_tests::Runtime, b: &mut Bundle) -> String {
    b.args(&["sleep", "60"]);
    let id = rt.id();
    rt.create(&id, b).assert_ok();
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "running", T), "container never ran");
    id
}

#[test]
fn exec_joins_namespaces_and_returns_the_exit_status() {
    let Some(rt) = setup("exec-basic") else {
        return;
    };
    let mut b = Bundle::new();
    b.hostname("exec-host");
    let id = running(&rt, &mut b);
    let o = rt.call(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; echo pid=$$; readlink /proc/1/exe; exit 5",
    ]);
    assert_eq!(o.code(), 5, "{o}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "exec-host", "{o}");
    // Same pid namespace as init (which is pid 1), so the exec'd shell is not pid 1.
    assert!(lines[1].starts_with("pid=") && lines[1] != "pid=1", "{o}");
    assert_eq!(lines[2], "/bin/busybox", "{o}");
    // Same mount namespace: the host's files are not visible.
    let o = rt.call(&["exec", &id, "cat", "/etc/debian_version"]);
    assert_ne!(o.code(), 0, "the host root is visible from exec: {o}");
    rt.call(&["delete", "--force", &id]).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn exec_joins_by_descriptor_and_hands_the_process_only_its_stdio() {
    // The namespace descriptors hull passes to exec's init (user, mount) must not reach
    // the process: only 0-2 and the directory `ls` itself opens.
    let Some(rt) = setup("exec-fds") else {
        return;
    };
    let mut b = Bundle::new();
    let id = running(&rt, &mut b);
    let o = rt.call(&["exec", &id, "ls", "/proc/self/fd"]);
    assert_eq!(o.code(), 0, "{o}");
    let fds: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{o}");
    // Init's mount namespace: one exec sees what another wrote in its /dev/shm.
    rt.call(&["exec", &id, "sh", "-c", "echo mark > /dev/shm/m"])
        .assert_ok();
    let o = rt.call(&["exec", &id, "cat", "/dev/shm/m"]);
    assert_eq!(o.stdout.trim(), "mark", "{o}");
    rt.call(&["delete", "--force", &id]).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn exec_process_is_in_the_container_cgroup() {
    let Some(rt) = setup("exec-cgroup") else {
        return;
    };
    let mut b = Bundle::new();
    let id = running(&rt, &mut b);
    let pid_file = rt.pid_file(&format!("{id}-exec"));
    rt.call(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "30",
    ])
    .assert_ok();
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!pid.ends_with('\n'), "pid file has a newline: {pid:?}");
    let o = rt.call(&["ps", "--format", "json", &id]);
    o.assert_ok();
    let pids: Vec<i64> = serde_json::from_str(o.out()).unwrap();
    assert!(
        pids.contains(&pid.parse::<i64>().unwrap()),
        "exec'd pid {pid} not among the container's {pids:?}"
    );
    // Every hierarchy (the process joins the v1 ones itself, through files hull opened).
    let state: serde_json::Value = serde_json::from_str(rt.call(&["state", &id]).out()).unwrap();
    let init = state["pid"].as_i64().expect("init pid");
    let cgroups = |p: &str| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(
        cgroups(&pid),
        cgroups(&init.to_string()),
        "exec'd {pid} vs init {init}"
    );
    rt.call(&["delete", "--force", &id]).assert_ok();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true),
        "exec'd process survived delete --force"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn exec_flags_set_user_env_and_cwd() {
    let Some(rt) = setup("exec-flags") else {
        return;
    };
    let mut b = Bundle::new();
    b.env(&["PATH=/bin", "KEEP=1"]);
    let id = running(&rt, &mut b);
    let o = rt.call(&[
        "exec",
        "--user",
        "1000:2000",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "id -u; id -g; echo $FOO $KEEP; pwd",
    ]);
    o.assert_ok();
    assert_eq!(o.stdout, "1000\n2000\nbar 1\n/tmp\n", "{o}");
    rt.call(&["delete", "--force", &id]).assert_ok();
}

#[test]
fn exec_process_json() {
    let Some(rt) = setup("exec-process-json") else {
        return;
    };
    let mut b = Bundle::new();
    let id = running(&rt, &mut b);
    let file = rt.scratch().join("process.json");
    std::fs::write(
        &file,
        r#"{"terminal":false,"user":{"uid":0,"gid":0},"args":["sh","-c","echo from-json $X"],
            "env":["PATH=/bin","X=y"],"cwd":"/"}"#,
    )
    .unwrap();
    let o = rt.call(&["exec", "--process", file.to_str().unwrap(), &id]);
    o.assert_ok();
    assert_eq!(o.stdout, "from-json y\n", "{o}");
    std::fs::write(&file, r#"{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}"#).unwrap();
    rt.call(&["exec", "--process", file.to_str().unwrap(), &id])
        .assert_fail()
        .assert_error_contains("args");
    std::fs::write(&file, "{not json").unwrap();
    rt.call(&["exec", "--process", file.to_str().unwrap(), &id])
        .assert_fail();
    rt.call(&["delete", "--force", &id]).assert_ok();
}

#[test]
fn exec_with_console_socket_gets_a_tty() {
    let Some(rt) = setup("exec-tty") else {
        return;
    };
    let mut b = Bundle::new();
    let id = running(&rt, &mut b);
    let sock = ConsoleSocket::new(rt.scratch());
    let o = rt.call(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        sock.path.to_str().unwrap(),
        &id,
        "sh",
    ]);
    o.assert_ok();
    let got = sock.receive(T);
    write_fd(&got.fds[0], b"tty; echo marker-$((40+2))\n");
    let text = read_until(&got.fds[0], "marker-42", T);
    assert!(text.contains("/dev/pts/"), "no pty inside: {text:?}");
    write_fd(&got.fds[0], b"exit\n");
    rt.call(&["delete", "--force", &id]).assert_ok();
}

#[test]
fn exec_into_a_stopped_or_missing_container_fails() {
    let Some(rt) = setup("exec-stopped") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["true"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "stopped", T));
    rt.call(&["exec", &id, "true"]).assert_fail();
    rt.call(&["delete", &id]).assert_ok();
    rt.call(&["exec", "no-such-container", "true"])
        .assert_fail()
        .assert_error_contains("does not exist");
}
