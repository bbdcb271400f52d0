//! hull under Docker Engine (Debian's `docker.io` 20.10): a private `dockerd` per test with
//! hull as its default runtime (`--add-runtime hull=… --default-runtime hull`), the busybox
//! rootfs `docker import`ed (see `hull_tests::docker`). Each test drives the docker client
//! as a user would and checks what the container saw, what Docker reports, and the cgroup
//! files on the host.

use std::time::Duration;

use hull_tests::docker::{Docker, RUNTIME};
use hull_tests::{unique, wait_until};

/// The script of a long-running container that exits 9 on SIGTERM.
const TRAP_TERM: &str = "trap 'exit 9' TERM; echo started; while true; do sleep 0.1; done";

fn status(d: &Docker, name: &str) -> String {
    d.inspect(name, "{{.State.Status}}")
}

fn wait_status(d: &Docker, name: &str, want: &str) -> bool {
    wait_until(Duration::from_secs(20), || status(d, name) == want)
}

#[test]
fn docker_run_with_default_options_prints_and_exits_with_status() {
    let Some(d) = Docker::start() else {
        return;
    };
    let info = d.call(&["info", "--format", "{{.DefaultRuntime}}"]);
    assert_eq!(info.assert_ok().text(), RUNTIME, "{info}");

    let out = d.run(
        &["--rm"],
        &[
            "sh",
            "-c",
            "echo hello-from-hull-docker; echo to-stderr >&2; exit 7",
        ],
    );
    assert_eq!(out.code, 7, "{out}\n{}", d.daemon_log());
    assert!(out.stdout.contains("hello-from-hull-docker"), "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    assert_eq!(d.run(&["--rm"], &["true"]).code, 0);
    assert_eq!(d.run(&["--rm"], &["false"]).code, 1);
    // A missing command is Docker's 127, reported at start.
    let missing = d.run(&["--rm"], &["/no/such/binary"]);
    assert_ne!(missing.code, 0, "{missing}");
    d.assert_nothing_left();
}

#[test]
fn docker_run_options_read_only_caps_user_pids_network_none() {
    let Some(d) = Docker::start() else {
        return;
    };
    let ro = d.run(
        &["--rm", "--read-only"],
        &[
            "sh",
            "-c",
            "touch /probe && echo wrote; grep ' / ' /proc/mounts",
        ],
    );
    assert_eq!(ro.code, 0, "{ro}");
    assert!(!ro.stdout.contains("wrote"), "root not read-only: {ro}");
    assert!(
        ro.stdout.contains(" ro,") || ro.stdout.contains(" ro "),
        "{ro}"
    );

    let caps = d.run(
        &["--rm", "--cap-drop", "ALL"],
        &["sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"],
    );
    caps.assert_ok();
    for l in caps.stdout.lines() {
        assert!(l.ends_with("0000000000000000"), "a capability kept: {caps}");
    }

    let user = d.run(
        &["--rm", "--user", "1000:1001"],
        &["sh", "-c", "id -u; id -g"],
    );
    user.assert_ok();
    assert_eq!(
        user.stdout.split_whitespace().collect::<Vec<_>>(),
        ["1000", "1001"]
    );

    // --network none: a new network namespace whose loopback is up, as under runc.
    let lo = d.run(
        &["--rm", "--network", "none"],
        &[
            "sh",
            "-c",
            "cat /sys/class/net/lo/operstate; ip -4 addr show lo",
        ],
    );
    lo.assert_ok();
    assert!(lo.stdout.starts_with("unknown"), "loopback down: {lo}");
    assert!(
        lo.stdout.contains("127.0.0.1"),
        "loopback without address: {lo}"
    );

    // --pids-limit reaches the pids cgroup.
    let name = unique("dk-pids");
    d.run(
        &["-d", "--name", &name, "--pids-limit", "20"],
        &["sleep", "1000"],
    )
    .assert_ok();
    let id = d.id_of(&name);
    assert_eq!(
        d.cgroup_file("pids", &id, "pids.max").as_deref(),
        Some("20")
    );
    d.call(&["rm", "--force", &name]).assert_ok();
    d.assert_nothing_left();
}

#[test]
fn docker_detached_exec_top_stats_pause_update_stop() {
    let Some(d) = Docker::start() else {
        return;
    };
    let name = unique("dk");
    let run = d.run(&["-d", "--name", &name], &["sh", "-c", TRAP_TERM]);
    run.assert_ok();
    let id = run.text().to_string();
    assert!(
        d.hull_roots()
            .iter()
            .any(|r| r.join(&id).join("state.json").exists()),
        "hull does not hold {id}: roots {:?}",
        d.hull_roots()
    );
    assert!(wait_until(Duration::from_secs(10), || d
        .call(&["logs", &name])
        .stdout
        .contains("started")));

    let exec = d.call(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 4",
    ]);
    assert_eq!(exec.code, 4, "{exec}");
    assert!(exec.stdout.contains("exec-out"), "{exec}");
    assert!(exec.stderr.contains("exec-err"), "{exec}");
    let tty = d.call(&["exec", "-t", &name, "tty"]);
    tty.assert_ok();
    assert!(
        tty.stdout.contains("/dev/pts/"),
        "exec -t without a pty: {tty}"
    );

    let top = d.call(&["top", &name]);
    top.assert_ok();
    assert!(
        top.stdout.contains("sleep") || top.stdout.contains("sh -c"),
        "{top}"
    );

    let stats = d.call(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.PIDs}} {{.MemUsage}}",
        &name,
    ]);
    stats.assert_ok();
    let pids: u64 = stats
        .text()
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert!(pids >= 1, "no pids in stats: {stats}");
    assert!(
        !stats.stdout.contains("0B / 0B"),
        "no memory in stats: {stats}"
    );

    d.call(&["pause", &name]).assert_ok();
    assert_eq!(status(&d, &name), "paused");
    assert_eq!(
        d.cgroup_file("freezer", &id, "freezer.state").as_deref(),
        Some("FROZEN")
    );
    d.call(&["unpause", &name]).assert_ok();
    assert_eq!(status(&d, &name), "running");
    assert_eq!(
        d.cgroup_file("freezer", &id, "freezer.state").as_deref(),
        Some("THAWED")
    );

    // What `docker update` sends: zeros for everything not asked for.
    let upd = d.call(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "-1",
        "--cpus",
        "0.5",
        "--pids-limit",
        "40",
        &name,
    ]);
    upd.assert_ok();
    assert_eq!(
        d.cgroup_file("memory", &id, "memory.limit_in_bytes")
            .as_deref(),
        Some("67108864")
    );
    assert_eq!(
        d.cgroup_file("pids", &id, "pids.max").as_deref(),
        Some("40")
    );
    let quota: i64 = d
        .cgroup_file("cpu", &id, "cpu.cfs_quota_us")
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let period: i64 = d
        .cgroup_file("cpu", &id, "cpu.cfs_period_us")
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    assert!(
        period > 0 && quota * 2 == period,
        "--cpus 0.5: quota {quota} period {period}"
    );

    // Graceful stop: the trap runs, the exit status is the script's.
    d.call(&["stop", "--time", "10", &name]).assert_ok();
    assert_eq!(d.inspect(&name, "{{.State.ExitCode}}"), "9");
    d.call(&["rm", &name]).assert_ok();
    d.assert_nothing_left();
}

#[test]
fn docker_real_time_signals_stop_signal_and_stop_timeout() {
    let Some(d) = Docker::start() else {
        return;
    };
    // kill -s RTMIN+3 reaches the container's init (which has a handler for 37).
    let a = unique("dk-rt");
    let script = "trap 'exit 3' 37; echo ready; while true; do sleep 0.1; done";
    d.run(&["-d", "--name", &a], &["sh", "-c", script])
        .assert_ok();
    assert!(wait_until(Duration::from_secs(10), || d
        .call(&["logs", &a])
        .stdout
        .contains("ready")));
    let kill = d.call(&["kill", "--signal", "RTMIN+3", &a]);
    kill.assert_ok();
    assert!(wait_status(&d, &a, "exited"), "{}", status(&d, &a));
    assert_eq!(d.inspect(&a, "{{.State.ExitCode}}"), "3");

    // An image stop signal of SIGRTMIN+3 (every systemd container) is what `stop` sends.
    let b = unique("dk-stopsig");
    let script = "trap 'exit 5' 37; echo ready; while true; do sleep 0.1; done";
    d.run(
        &["-d", "--name", &b, "--stop-signal", "SIGRTMIN+3"],
        &["sh", "-c", script],
    )
    .assert_ok();
    assert!(wait_until(Duration::from_secs(10), || d
        .call(&["logs", &b])
        .stdout
        .contains("ready")));
    d.call(&["stop", "--time", "10", &b]).assert_ok();
    assert_eq!(d.inspect(&b, "{{.State.ExitCode}}"), "5");

    // A container that ignores SIGTERM is killed when the stop timeout passes.
    let c = unique("dk-stubborn");
    let script = "trap '' TERM; echo ready; while true; do sleep 0.1; done";
    d.run(&["-d", "--name", &c], &["sh", "-c", script])
        .assert_ok();
    assert!(wait_until(Duration::from_secs(10), || d
        .call(&["logs", &c])
        .stdout
        .contains("ready")));
    d.call(&["stop", "--time", "1", &c]).assert_ok();
    assert_eq!(d.inspect(&c, "{{.State.ExitCode}}"), "137");

    d.call(&["rm", &a, &b, &c]).assert_ok();
    d.assert_nothing_left();
}

#[test]
fn docker_memory_limit_oom_kill_is_reported() {
    let Some(d) = Docker::start() else {
        return;
    };
    let name = unique("dk-oom");
    // `tail` of an endless line keeps all of it: memory grows until the OOM killer.
    let out = d.run(
        &["--name", &name, "--memory", "32m", "--memory-swap", "32m"],
        &["tail", "/dev/zero"],
    );
    assert_eq!(out.code, 137, "{out}");
    assert_eq!(d.inspect(&name, "{{.State.OOMKilled}}"), "true");
    d.call(&["rm", &name]).assert_ok();
    d.assert_nothing_left();
}

#[test]
fn docker_run_interactive_through_a_pty() {
    let Some(d) = Docker::start() else {
        return;
    };
    if !std::path::Path::new("/usr/bin/script").exists() {
        hull_tests::skip::skipped("/usr/bin/script missing (util-linux's bsdutils)");
        return;
    }
    // `script` gives the docker client a terminal, as a person at a shell has.
    let docker = d.cmd();
    let mut line = format!("{}", docker.get_program().to_string_lossy());
    for a in docker.get_args() {
        line.push(' ');
        line.push_str(&a.to_string_lossy());
    }
    line.push_str(&format!(
        " run --rm -it {} sh -c 'tty; echo interactive-ok; exit 6'",
        d.image
    ));
    let mut cmd = std::process::Command::new("/usr/bin/script");
    for (k, v) in docker.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = hull_tests::client::run_captured(
        cmd,
        &["-qefc", &line, "/dev/null"],
        d.dir(),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 6, "{out}");
    assert!(out.stdout.contains("/dev/pts/0"), "{out}");
    assert!(out.stdout.contains("interactive-ok"), "{out}");
    d.assert_nothing_left();
}

#[test]
fn docker_set_up_failures_fail_create_with_exit_125() {
    let Some(d) = Docker::start() else {
        return;
    };
    // Raising a hard limit needs CAP_SYS_RESOURCE, which root here lacks: runc fails
    // `create` (Docker's 125), and so must hull, not the started container.
    let name = unique("dk-ulimit");
    let out = d.run(
        &["--name", &name, "--ulimit", "nofile=99999999:99999999"],
        &["echo", "must-not-run"],
    );
    assert_eq!(out.code, 125, "{out}");
    assert!(!out.stdout.contains("must-not-run"), "{out}");
    assert!(
        out.stderr.contains("rlimit") || out.stderr.contains("RLIMIT"),
        "{out}"
    );
    assert_eq!(status(&d, &name), "created");
    d.call(&["rm", &name]).assert_ok();
    d.assert_nothing_left();
}
