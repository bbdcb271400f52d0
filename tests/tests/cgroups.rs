//! cgroups (v1 hierarchies here; the tests read whichever v1 controller mount holds each
//! controller): limits read back on the host while running and from inside, membership of
//! every container process, removal after delete.

use hull_tests::check::{cgroup_dir, cgroup_dirs, cgroup_v1_mount};
use hull_tests::{assert_no_leftovers, read_cgroup, setup, skip_if, wait_until, Bundle};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn v1_available(ctrls: &[&str]) -> Option<String> {
    ctrls
        .iter()
        .find(|c| cgroup_v1_mount(c).is_none())
        .map(|c| format!("no cgroup v1 {c} hierarchy"))
}

#[test]
fn limits_visible_on_host_and_inside() {
    let Some(rt) = setup("cg-limits") else { return };
    let missing = v1_available(&["memory", "pids", "cpu", "cpuset"]);
    skip_if!(missing.is_some(), "{}", missing.unwrap());
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = if ncpu > 1 { "1" } else { "0" };
    let mut b = Bundle::new();
    b.resources(json!({
        "memory": {"limit": 64 * 1024 * 1024},
        "pids": {"limit": 42},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": cpus}
    }));
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let cg = b.cgroups_path();
    // On the host, while running.
    assert_eq!(
        read_cgroup("memory", &cg, "memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(read_cgroup("pids", &cg, "pids.max"), "42");
    assert_eq!(read_cgroup("cpu", &cg, "cpu.shares"), "512");
    assert_eq!(read_cgroup("cpu", &cg, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read_cgroup("cpu", &cg, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cgroup("cpuset", &cg, "cpuset.cpus"), cpus);
    // The cpuset confines the container's init.
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    let affinity = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        .unwrap();
    assert_eq!(affinity, cpus, "container not confined to cpuset");
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn limits_read_inside_the_container() {
    let Some(rt) = setup("cg-inside") else { return };
    let missing = v1_available(&["memory", "pids", "cpu"]);
    skip_if!(missing.is_some(), "{}", missing.unwrap());
    let mut b = Bundle::new();
    b.resources(json!({
        "memory": {"limit": 48 * 1024 * 1024},
        "pids": {"limit": 17},
        "cpu": {"shares": 300, "quota": 20000, "period": 100000}
    }));
    b.sh(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
         /sys/fs/cgroup/cpu/cpu.cfs_period_us",
    );
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let v: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(v, ["50331648", "17", "300", "20000", "100000"], "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn pids_limit_is_enforced() {
    let Some(rt) = setup("cg-pids") else { return };
    let missing = v1_available(&["pids"]);
    skip_if!(missing.is_some(), "{}", missing.unwrap());
    let mut b = Bundle::new();
    b.resources(json!({"pids": {"limit": 5}}));
    // sh + 4 sleeps fit; the 5th fork fails (busybox sh then exits 2).
    b.sh("for i in 1 2 3 4 5 6 7 8; do sleep 30 & echo forked $i; done; echo all-forked");
    let o = rt.run_bundle(&b);
    let forked = o.stdout.lines().filter(|l| l.starts_with("forked")).count();
    assert_eq!(forked, 4, "pids.max 5 not enforced: {o}");
    assert!(!o.stdout.contains("all-forked"), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn memory_limit_is_enforced() {
    let Some(rt) = setup("cg-oom") else { return };
    let missing = v1_available(&["memory"]);
    skip_if!(missing.is_some(), "{}", missing.unwrap());
    let mut b = Bundle::new();
    b.resources(json!({"memory": {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}}));
    b.mount("/big", "tmpfs", "tmpfs", &["size=256m"]);
    // Filling tmpfs charges memory to the cgroup: the writer is OOM-killed or write fails.
    b.sh("head -c 67108864 /dev/zero > /big/fill; echo rc=$?");
    let o = rt.run_bundle(&b);
    assert!(
        !o.stdout.contains("rc=0"),
        "wrote 64 MiB under a 16 MiB limit: {o}"
    );
    // Either the writer died (rc=137 printed) or the whole container was OOM-killed.
    assert!(o.code() == 137 || o.stdout.contains("rc="), "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn all_container_processes_are_in_the_cgroup() {
    let Some(rt) = setup("cg-procs") else { return };
    let mut b = Bundle::new();
    b.sh("sleep 60 & sleep 61 & exec sleep 62");
    let id = rt.start_running(&b);
    assert!(
        wait_until(T, || rt.ps_pids(&id).len() == 3),
        "3 processes expected"
    );
    let ps: BTreeSet<i64> = rt.ps_pids(&id).into_iter().collect();
    let cg = b.cgroups_path();
    let dirs = cgroup_dirs(&cg);
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert!(d.is_dir(), "cgroup {d:?} missing while running");
        let procs: BTreeSet<i64> = std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        assert_eq!(procs, ps, "cgroup.procs of {d:?} != ps");
    }
    rt.delete_force(&id).assert_ok();
    for d in &dirs {
        assert!(wait_until(T, || !d.exists()), "{d:?} left after delete");
    }
    assert_no_leftovers(&rt, &b);
}

#[test]
fn cgroup_dir_created_at_create_and_removed_at_delete() {
    let Some(rt) = setup("cg-life") else { return };
    let missing = v1_available(&["memory"]);
    skip_if!(missing.is_some(), "{}", missing.unwrap());
    let mut b = Bundle::new();
    b.args(&["true"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    let d = cgroup_dir("memory", &b.cgroups_path());
    assert!(d.is_dir(), "{d:?} not created by create");
    let pid = rt.state_json(&id)["pid"].as_i64().unwrap();
    let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "init not in {d:?}: {procs}"
    );
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "stopped", T));
    rt.delete(&id).assert_ok();
    assert!(!d.exists(), "{d:?} left after delete");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn relative_cgroups_path_and_default() {
    let Some(rt) = setup("cg-default") else {
        return;
    };
    // No cgroupsPath: the runtime picks one (runc: /<id>); it must still be removed.
    let mut b = Bundle::new();
    b.remove("/linux/cgroupsPath");
    b.args(&["cat", "/proc/self/cgroup"]);
    let id = rt.id();
    let o = rt.run(&id, &b);
    o.assert_ok();
    let mem = o
        .stdout
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .unwrap_or_else(|| panic!("no memory line: {o}"));
    let path = mem.splitn(3, ':').nth(2).unwrap().to_string();
    assert!(
        path.contains(&id),
        "default cgroup path {path} does not name the container"
    );
    assert!(
        !cgroup_dir("memory", &path).exists(),
        "default cgroup {path} left behind"
    );
}

/// What Docker Engine 20.10 puts in `linux.resources` for a plain `docker run` (recorded
/// from dockerd's config.json: `cpu.shares: 0`, `blockIO.weight: 0`, `disableOOMKiller:
/// false`), plus every other field in its "0 = not set" form (runc skips them all). The
/// host here has no blkio.weight, so the zero weight must not be checked against the kernel.
#[test]
fn zero_valued_resources_mean_not_set() {
    let Some(rt) = setup("cg-zeros") else { return };
    let missing = v1_available(&["memory", "pids", "cpu", "cpuset", "blkio"]);
    skip_if!(missing.is_some(), "{}", missing.unwrap());
    let mut b = Bundle::new();
    b.resources(json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
            {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"}
        ],
        "memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0, "kernelTCP": 0,
                   "swappiness": u64::MAX, "disableOOMKiller": false},
        "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0,
                "realtimePeriod": 0, "cpus": "", "mems": ""},
        "pids": {"limit": 0},
        "blockIO": {"weight": 0, "leafWeight": 0,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 0, "leafWeight": 0}]},
        "network": {"classID": 0}
    }));
    b.args(&["sleep", "60"]);
    let id = rt.id();
    let out = rt.create(&id, &b);
    out.assert_ok();
    assert!(
        !out.errors().contains("kernel"),
        "a zero kernel memory limit is not a deprecated setting: {out}"
    );
    rt.start(&id).assert_ok();
    let cg = b.cgroups_path();
    // Nothing was written: the kernel's defaults of a fresh cgroup.
    assert_eq!(read_cgroup("cpu", &cg, "cpu.shares"), "1024");
    assert_eq!(read_cgroup("cpu", &cg, "cpu.cfs_quota_us"), "-1");
    assert_eq!(read_cgroup("cpu", &cg, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cgroup("pids", &cg, "pids.max"), "max");
    let unlimited = read_cgroup("memory", "/", "memory.limit_in_bytes");
    assert_eq!(
        read_cgroup("memory", &cg, "memory.limit_in_bytes"),
        unlimited
    );
    assert_eq!(
        read_cgroup("memory", &cg, "memory.soft_limit_in_bytes"),
        unlimited
    );
    assert_eq!(
        read_cgroup("cpuset", &cg, "cpuset.cpus"),
        read_cgroup("cpuset", "/", "cpuset.cpus")
    );
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}
