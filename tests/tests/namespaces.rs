//! Namespaces: uts (hostname, domainname), pid, net, ipc, mount, cgroup, user (with
//! mappings), joining an existing netns or mount namespace by path, time offsets, sysctl.

use hull_tests::{assert_no_leftovers, host_ns, setup, skip_if, wait_until, Bundle, ChildGuard};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn hostname_set() {
    let Some(rt) = setup("ns-uts") else { return };
    let mut b = Bundle::new();
    b.hostname("box-e2e");
    b.sh("hostname; cat /proc/sys/kernel/hostname; readlink /proc/self/ns/uts");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l[..2], ["box-e2e", "box-e2e"], "{o}");
    assert_ne!(l[2], host_ns("uts"));
    assert_no_leftovers(&rt, &b);
}

#[test]
fn domainname_set() {
    let Some(rt) = setup("ns-domain") else { return };
    hull_tests::hull_only!(rt, "runc 1.1 ignores the domainname field");
    let mut b = Bundle::new();
    b.hostname("box-e2e").domainname("example.test");
    b.sh("cat /proc/sys/kernel/domainname");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "example.test\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn pid_namespace_sh_is_pid1() {
    let Some(rt) = setup("ns-pid") else { return };
    let mut b = Bundle::new();
    b.sh("echo $$; ps -o pid,comm | wc -l");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "1", "{o}");
    // header + sh + ps + wc: nothing of the host is visible
    let n: usize = lines[1].trim().parse().unwrap();
    assert!(
        n <= 4,
        "host processes visible in the container's pid ns: {o}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn net_namespace_has_only_lo() {
    let Some(rt) = setup("ns-net") else { return };
    let mut b = Bundle::new();
    b.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ls /sys/class/net");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "lo\nlo\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn namespaces_differ_from_host() {
    let Some(rt) = setup("ns-differ") else { return };
    let mut b = Bundle::new();
    b.namespace("cgroup", None);
    let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    b.sh(&kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}"))
        .collect::<Vec<_>>()
        .join(";"));
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let inside: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{o}");
    for (k, got) in kinds.iter().zip(inside) {
        assert!(got.starts_with(&format!("{k}:[")), "{k}: {got}");
        assert_ne!(got, host_ns(k), "{k} namespace is the host's");
    }
    assert_no_leftovers(&rt, &b);
}

#[test]
fn without_a_namespace_the_host_one_is_kept() {
    let Some(rt) = setup("ns-shared") else { return };
    let mut b = Bundle::new();
    b.without_namespace("ipc");
    b.sh("readlink /proc/self/ns/ipc; readlink /proc/self/ns/cgroup");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let l: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(l, [host_ns("ipc"), host_ns("cgroup")], "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn cgroup_namespace_root_is_container_cgroup() {
    let Some(rt) = setup("ns-cgroup") else { return };
    let mut b = Bundle::new();
    b.namespace("cgroup", None);
    b.sh("cat /proc/self/cgroup");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("memory:/"), "{o}");
    for l in o.stdout.lines() {
        let path = l.splitn(3, ':').nth(2).unwrap_or("");
        assert_eq!(path, "/", "cgroup ns root must hide the host path: {o}");
    }
    assert_no_leftovers(&rt, &b);
}

#[test]
fn user_namespace_with_mappings() {
    let Some(rt) = setup("ns-user") else { return };
    let mut b = Bundle::new();
    b.userns(100000, 65536);
    // sysfs and cgroup need ownership of more than a fresh userns has: keep the test about ids.
    b.without_mount("/sys/fs/cgroup").without_mount("/sys");
    b.set("/linux/maskedPaths", serde_json::json!(["/proc/kcore"]));
    b.sh("id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; readlink /proc/self/ns/user");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let l: Vec<String> = o
        .stdout
        .lines()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(l[0], "0", "{o}");
    assert_eq!(l[1], "0", "{o}");
    assert_eq!(l[2], "0 100000 65536", "uid_map: {o}");
    assert_eq!(l[3], "0 100000 65536", "gid_map: {o}");
    assert_ne!(l[4], host_ns("user"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn user_namespace_process_owned_by_mapped_uid_on_host() {
    let Some(rt) = setup("ns-user-host") else {
        return;
    };
    let mut b = Bundle::new();
    b.userns(200000, 65536);
    b.without_mount("/sys/fs/cgroup").without_mount("/sys");
    b.set("/linux/maskedPaths", serde_json::json!([]));
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "200000"),
        "{uid_line}"
    );
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn join_existing_net_namespace_by_path() {
    let Some(rt) = setup("ns-join") else { return };
    skip_if!(
        !std::path::Path::new("/usr/bin/unshare").exists(),
        "unshare(1) missing"
    );
    let holder = ChildGuard::spawn(
        Command::new("/usr/bin/unshare")
            .args(["--net", "sleep", "120"])
            .stdout(Stdio::null()),
    );
    let nspath = format!("/proc/{}/ns/net", holder.pid());
    let target = std::sync::Mutex::new(String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let t = std::fs::read_link(&nspath)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            *target.lock().unwrap() = t.clone();
            !t.is_empty() && t != host_ns("net")
        }),
        "unshare --net helper did not get its own netns"
    );
    let target = target.into_inner().unwrap();
    let mut b = Bundle::new();
    b.namespace("network", Some(&nspath));
    b.sh("readlink /proc/self/ns/net");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), target, "{o}");
    drop(holder);
    assert_no_leftovers(&rt, &b);
}

#[test]
fn time_namespace_offsets() {
    let Some(rt) = setup("ns-time") else { return };
    skip_if!(
        !std::path::Path::new("/proc/self/ns/time").exists(),
        "kernel lacks time namespaces"
    );
    hull_tests::hull_only!(rt, "runc 1.1 has no time namespace support");
    let mut b = Bundle::new();
    let offset = 10 * 86400;
    b.namespace("time", None);
    b.set(
        "/linux/timeOffsets",
        serde_json::json!({"boottime": {"secs": offset, "nanosecs": 0},
                           "monotonic": {"secs": offset, "nanosecs": 0}}),
    );
    b.sh("cat /proc/uptime; readlink /proc/self/ns/time");
    let host_up = uptime();
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let mut l = o.stdout.lines();
    let inside: f64 = l
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let diff = inside - host_up;
    assert!(
        (offset as f64 - 60.0..offset as f64 + 60.0).contains(&diff),
        "uptime inside {inside}, host {host_up}: {o}"
    );
    assert_ne!(l.next().unwrap_or(""), host_ns("time"));
    assert_no_leftovers(&rt, &b);
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn sysctl_in_net_namespace() {
    let Some(rt) = setup("ns-sysctl") else { return };
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host.trim() == "1" { "0" } else { "1" };
    let mut b = Bundle::new();
    b.set(
        "/linux/sysctl",
        serde_json::json!({"net.ipv4.ip_forward": want}),
    );
    b.args(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), want, "{o}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host,
        "host sysctl changed"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn uts_sysctl_rejected_without_uts_namespace() {
    let Some(rt) = setup("ns-sysctl-bad") else {
        return;
    };
    let mut b = Bundle::new();
    b.without_namespace("uts").remove("/hostname");
    b.set(
        "/linux/sysctl",
        serde_json::json!({"kernel.domainname": "nope"}),
    );
    b.args(&["true"]);
    let o = rt.run_bundle(&b);
    o.assert_fail().assert_error_contains("sysctl");
    assert_no_leftovers(&rt, &b);
}

/// `create` joining a mount namespace by path returns to the caller's working directory:
/// a relative `--pid-file` lands there (as with runc), not in the joined namespace's root.
#[test]
fn joined_mount_namespace_keeps_the_callers_cwd() {
    let Some(rt) = setup("ns-join-mnt-cwd") else {
        return;
    };
    skip_if!(
        !std::path::Path::new("/usr/bin/unshare").exists(),
        "unshare(1) missing"
    );
    let holder = ChildGuard::spawn(
        Command::new("/usr/bin/unshare")
            .args(["-m", "--propagation", "private", "sleep", "120"])
            .stdout(Stdio::null()),
    );
    let nspath = format!("/proc/{}/ns/mnt", holder.pid());
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_link(&nspath).is_ok_and(|t| t.display().to_string() != host_ns("mnt"))
        }),
        "unshare -m helper did not get its own mount namespace"
    );
    let mut b = Bundle::new();
    b.namespace("mount", Some(&nspath));
    b.args(&["sleep", "60"]);
    b.write();
    let id = rt.id();
    let pid_name = format!("{id}.relative.pid");
    let mut c = rt.cmd(&["create", "--bundle", b.path().to_str().unwrap()]);
    c.args(["--pid-file", &pid_name, &id]);
    c.current_dir(rt.scratch());
    let o = rt.exec_cmd(c, hull_tests::runtime::Io::default());
    o.assert_ok();
    let written = rt.scratch().join(&pid_name);
    let stray = std::path::Path::new("/").join(&pid_name);
    let stray_existed = stray.exists();
    let _ = std::fs::remove_file(&stray);
    assert!(!stray_existed, "the pid file went to / instead of the cwd");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap_or_default(),
        rt.state_json(&id)["pid"].to_string(),
        "pid file not in the caller's cwd"
    );
    rt.delete_force(&id).assert_ok();
    drop(holder);
    assert_no_leftovers(&rt, &b);
}
