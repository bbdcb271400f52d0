//! Differential runs: the same bundle through runc (the behaviour reference) and the binary
//! under test; what a user sees must match. Skipped when the binary under test is runc.

use hull_tests::check::parse_mountinfo;
use hull_tests::runtime::{bin_is_runc, RUNC};
use hull_tests::{assert_no_leftovers, setup, wait_until, Bundle, Runtime};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// (runtime under test, runc), or None (skipped) when that comparison is meaningless.
fn pair(test: &str) -> Option<(Runtime, Runtime)> {
    let rt = setup(test)?;
    if rt.is_runc() {
        hull_tests::skip::skipped("differential: the binary under test is runc itself");
        return None;
    }
    if !Path::new(RUNC).exists() || !bin_is_runc(Path::new(RUNC)) {
        hull_tests::skip::skipped(&format!("differential: {RUNC} not installed"));
        return None;
    }
    let runc = Runtime::with_bin(Path::new(RUNC), &format!("{test}-runc"));
    Some((rt, runc))
}

/// Run the bundle through both, one after the other (they share its cgroupsPath).
fn run_both(rt: &Runtime, runc: &Runtime, b: &Bundle) -> (hull_tests::Out, hull_tests::Out) {
    let want = runc.run_bundle(b);
    assert_no_leftovers(runc, b);
    let got = rt.run_bundle(b);
    assert_no_leftovers(rt, b);
    (got, want)
}

#[track_caller]
fn same_output(rt: &Runtime, runc: &Runtime, b: &Bundle) {
    let (got, want) = run_both(rt, runc, b);
    assert_eq!(
        got.code(),
        want.code(),
        "exit codes differ\nhull: {got}\nrunc: {want}"
    );
    assert_eq!(
        got.stdout, want.stdout,
        "stdout differs\nhull: {got}\nrunc: {want}"
    );
}

#[test]
fn exit_codes_and_output() {
    let Some((rt, runc)) = pair("diff-exit") else {
        return;
    };
    let mut b = Bundle::new();
    for script in [
        "echo hi; exit 7",
        "exit 0",
        "echo err >&2; exit 255",
        "kill -9 $$; sleep 1",
    ] {
        b.sh(script);
        same_output(&rt, &runc, &b);
    }
    b.args(&["/bin/false"]);
    same_output(&rt, &runc, &b);
}

#[test]
fn process_view() {
    let Some((rt, runc)) = pair("diff-proc") else {
        return;
    };
    let mut b = Bundle::new();
    b.hostname("diff-host")
        .cwd("/tmp")
        .env(&["A=1"])
        .user(1000, 1000, &[2000]);
    b.sh(
        "hostname; pwd; id; umask; ulimit -n; ulimit -Hn; env | sort; \
         grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; echo $$; \
         cat /proc/self/oom_score_adj; ls /dev | sort",
    );
    same_output(&rt, &runc, &b);
}

#[test]
fn cgroup_values_inside() {
    let Some((rt, runc)) = pair("diff-cgroup") else {
        return;
    };
    let mut b = Bundle::new();
    b.resources(json!({
        "memory": {"limit": 33554432},
        "pids": {"limit": 99},
        "cpu": {"shares": 256, "quota": 30000, "period": 100000}
    }));
    b.sh(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max \
         /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us \
         /sys/fs/cgroup/cpu/cpu.cfs_period_us; ls /sys/fs/cgroup | sort",
    );
    same_output(&rt, &runc, &b);
}

/// (mount point, fs type, key per-mount options) of the container's mount table.
fn normalised_mounts(text: &str) -> BTreeSet<String> {
    parse_mountinfo(text)
        .into_iter()
        .map(|m| {
            let mut opts: Vec<&str> = m
                .mount_options
                .iter()
                .map(String::as_str)
                .filter(|o| ["ro", "rw", "nosuid", "nodev", "noexec"].contains(o))
                .collect();
            opts.sort();
            format!("{} {} {}", m.mount_point, m.fstype, opts.join(","))
        })
        .collect()
}

#[test]
fn mount_table() {
    let Some((rt, runc)) = pair("diff-mounts") else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let mut b = Bundle::new();
    b.mount("/mnt/t", "tmpfs", "tmpfs", &["size=1m", "nodev"]);
    b.bind(host.path(), "/data", &["ro"]);
    b.args(&["cat", "/proc/self/mountinfo"]);
    let (got, want) = run_both(&rt, &runc, &b);
    got.assert_ok();
    want.assert_ok();
    let (g, w) = (
        normalised_mounts(&got.stdout),
        normalised_mounts(&want.stdout),
    );
    let missing: Vec<_> = w.difference(&g).collect();
    let extra: Vec<_> = g.difference(&w).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "mount tables differ\nonly in runc: {missing:#?}\nonly in hull: {extra:#?}"
    );
}

#[test]
fn state_fields() {
    let Some((rt, runc)) = pair("diff-state") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]).annotation("org.example.k", "v");
    let mut states: Vec<(Value, Value, Vec<i64>)> = vec![];
    for r in [&rt, &runc] {
        let id = r.id();
        r.create(&id, &b).assert_ok();
        let created = r.state_json(&id);
        r.start(&id).assert_ok();
        assert!(wait_until(T, || r.ps_pids(&id).len() == 1));
        let running = r.state_json(&id);
        let ps = r.ps_pids(&id);
        r.delete_force(&id).assert_ok();
        assert_no_leftovers(r, &b);
        states.push((created, running, ps));
    }
    let (h, u) = (&states[0], &states[1]);
    for (hs, us) in [(&h.0, &u.0), (&h.1, &u.1)] {
        let hk: BTreeSet<&String> = hs.as_object().unwrap().keys().collect();
        let uk: BTreeSet<&String> = us.as_object().unwrap().keys().collect();
        assert_eq!(hk, uk, "state keys differ\nhull: {hs}\nrunc: {us}");
        for k in ["status", "bundle", "rootfs", "owner", "annotations"] {
            assert_eq!(hs[k], us[k], "state.{k} differs\nhull: {hs}\nrunc: {us}");
        }
        assert!(hs["pid"].as_i64().unwrap() > 0);
    }
    assert_eq!(
        h.2.len(),
        u.2.len(),
        "ps --format json: hull {:?} runc {:?}",
        h.2,
        u.2
    );
}

#[test]
fn list_output_shape() {
    let Some((rt, runc)) = pair("diff-list") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let mut outs = vec![];
    for r in [&rt, &runc] {
        let id = r.id();
        r.create(&id, &b).assert_ok();
        let table = r.list(&[]);
        let json: Value = serde_json::from_str(r.list(&["--format", "json"]).out()).unwrap();
        let header = table.stdout.lines().next().unwrap_or("").to_string();
        let keys: BTreeSet<String> = json[0].as_object().unwrap().keys().cloned().collect();
        r.delete_force(&id).assert_ok();
        assert_no_leftovers(r, &b);
        outs.push((
            header.split_whitespace().collect::<Vec<_>>().join(" "),
            keys,
        ));
    }
    assert_eq!(outs[0], outs[1], "list output shape differs (hull, runc)");
}

#[test]
fn errors_for_missing_container() {
    let Some((rt, runc)) = pair("diff-missing") else {
        return;
    };
    for args in [&["state"][..], &["delete"], &["kill"], &["start"], &["ps"]] {
        let mut outs = vec![];
        for r in [&rt, &runc] {
            let id = r.id();
            let mut a = args.to_vec();
            a.push(&id);
            if args[0] == "kill" {
                a.push("KILL");
            }
            outs.push(r.call(&a));
        }
        assert!(
            !outs[0].ok() && !outs[1].ok(),
            "{} of a missing container",
            args[0]
        );
        assert!(outs[1].errors().contains("does not exist"), "{}", outs[1]);
        outs[0].assert_error_contains("does not exist");
    }
    // `delete --force` asks for the id to be gone: a missing one is success, silently
    // (podman and the shims call it after a failed create).
    for r in [&rt, &runc] {
        let id = r.id();
        let out = r.call(&["delete", "--force", &id]);
        out.assert_ok();
        assert!(out.errors().trim().is_empty(), "{out}");
    }
}

/// Run `b` with its mount namespace joined by path: the namespace of a fresh holder process
/// (`unshare -m`) that mounted a marker tmpfs inside the bundle's rootfs, which the host
/// does not see. Returns the output and the holder's namespace.
/// With `hide_root`, the holder also covers the runtime's `--root` with an empty tmpfs, so
/// the state directory cannot be reached by path from inside that namespace.
fn run_in_joined_mount_ns(
    r: &Runtime,
    b: &mut Bundle,
    hide_root: bool,
) -> (hull_tests::Out, String) {
    use hull_tests::ChildGuard;
    use std::process::{Command, Stdio};
    let marker = b.rootfs().join("marker");
    let mut script = String::new();
    if hide_root {
        std::fs::create_dir_all(r.root()).unwrap();
        script = format!(
            "mount -t tmpfs -o size=64k e2e-hide {} && ",
            r.root().display()
        );
    }
    script.push_str(&format!(
        "mount -t tmpfs -o size=64k e2e-marker {m} && echo joined > {m}/f && exec sleep 120",
        m = marker.display()
    ));
    let holder = ChildGuard::spawn(
        Command::new("/usr/bin/unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null()),
    );
    let pid = holder.pid();
    // /proc/PID/root resolves in the holder's mount namespace.
    let seen = format!("/proc/{pid}/root{}/f", marker.display());
    assert!(
        wait_until(T, || std::fs::read_to_string(&seen)
            .is_ok_and(|s| s == "joined\n")),
        "the holder did not mount its marker"
    );
    let nspath = format!("/proc/{pid}/ns/mnt");
    let ns = std::fs::read_link(&nspath)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    b.namespace("mount", Some(&nspath));
    let o = r.run_bundle(b);
    drop(holder);
    assert!(
        !marker.join("f").exists(),
        "the holder's marker reached the host"
    );
    assert_no_leftovers(r, b);
    (o, ns)
}

/// Joining a mount namespace by path, with runc's semantics: init enters it (the rootfs is
/// then set up inside it), so the container sees what was mounted there, and its
/// /proc/self/ns/mnt is that namespace.
#[test]
fn join_existing_mount_namespace_by_path() {
    let Some((rt, runc)) = pair("diff-join-mnt") else {
        return;
    };
    hull_tests::skip_if!(
        !Path::new("/usr/bin/unshare").exists(),
        "unshare(1) missing"
    );
    let mut b = Bundle::new();
    std::fs::create_dir(b.rootfs().join("marker")).unwrap();
    b.sh("cat /marker/f; readlink /proc/self/ns/mnt; grep -c ' /marker ' /proc/self/mountinfo");
    for hide_root in [false, true] {
        let (want, runc_ns) = run_in_joined_mount_ns(&runc, &mut b, hide_root);
        want.assert_ok();
        assert_eq!(
            want.stdout,
            format!("joined\n{runc_ns}\n1\n"),
            "runc: {want}"
        );
        // The state directory need not be reachable in the joined namespace: runc hands
        // init the exec fifo as a descriptor.
        let (got, ns) = run_in_joined_mount_ns(&rt, &mut b, hide_root);
        assert_eq!(
            got.code(),
            want.code(),
            "hide --root: {hide_root}\nhull: {got}\nrunc: {want}"
        );
        assert_eq!(got.stdout, format!("joined\n{ns}\n1\n"), "hull: {got}");
    }
}
