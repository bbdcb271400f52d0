//! Mounts: tmpfs options, bind ro/rw, rbind, /dev contents, linux.devices, maskedPaths,
//! readonlyPaths, root.readonly, /proc and /sys, symlinked destinations that escape.

use hull_tests::check::{parse_mountinfo, MountEntry};
use hull_tests::{assert_no_leftovers, setup, Bundle, HostMount};
use serde_json::json;

fn inside_mounts(o: &str) -> Vec<MountEntry> {
    parse_mountinfo(o)
}

#[test]
fn tmpfs_with_size_and_mode() {
    let Some(rt) = setup("mnt-tmpfs") else { return };
    let mut b = Bundle::new();
    b.mount(
        "/mnt/t",
        "tmpfs",
        "tmpfs",
        &["nosuid", "nodev", "size=1m", "mode=1770"],
    );
    b.sh("stat -c %a /mnt/t; touch /mnt/t/f && echo writable; cat /proc/self/mountinfo");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let mut l = o.stdout.lines();
    assert_eq!(l.next(), Some("1770"), "{o}");
    assert_eq!(l.next(), Some("writable"), "{o}");
    let m = inside_mounts(&o.stdout);
    let t = m
        .iter()
        .find(|m| m.mount_point == "/mnt/t")
        .unwrap_or_else(|| panic!("no /mnt/t: {o}"));
    assert_eq!(t.fstype, "tmpfs");
    assert!(t.has("size=1024k"), "{t:?}");
    assert!(t.has("nosuid") && t.has("nodev"), "{t:?}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn bind_mounts_ro_and_rw() {
    let Some(rt) = setup("mnt-bind") else { return };
    let host = tempfile::tempdir().unwrap();
    let ro = host.path().join("ro");
    let rw = host.path().join("rw");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("file"), "ro-content\n").unwrap();
    let mut b = Bundle::new();
    b.bind(&ro, "/data/ro", &["ro"])
        .bind(&rw, "/data/rw", &["rw"]);
    b.sh(
        "cat /data/ro/file; touch /data/ro/new 2>/dev/null && echo ro-writable || echo ro-denied; \
         echo hello > /data/rw/out && echo rw-ok",
    );
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "ro-content\nro-denied\nrw-ok\n", "{o}");
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "hello\n");
    assert!(!ro.join("new").exists());
    assert_no_leftovers(&rt, &b);
}

#[test]
fn bind_mount_of_a_file() {
    let Some(rt) = setup("mnt-bindfile") else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let f = host.path().join("resolv.conf");
    std::fs::write(&f, "nameserver 192.0.2.1\n").unwrap();
    let mut b = Bundle::new();
    b.bind(&f, "/etc/resolv.conf", &["ro"]);
    b.args(&["cat", "/etc/resolv.conf"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "nameserver 192.0.2.1\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn rbind_carries_submounts_bind_does_not() {
    let Some(rt) = setup("mnt-rbind") else { return };
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("src");
    let sub = src.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let _m = HostMount::tmpfs(&sub, "size=64k");
    std::fs::write(sub.join("in-sub"), "sub\n").unwrap();
    let mut b = Bundle::new();
    b.mount("/r", "bind", src.to_str().unwrap(), &["rbind", "ro"]);
    b.mount("/n", "bind", src.to_str().unwrap(), &["bind", "ro"]);
    b.sh("cat /r/sub/in-sub; ls /n/sub | wc -l");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "sub\n0\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn dev_has_the_default_devices() {
    let Some(rt) = setup("mnt-dev") else { return };
    let mut b = Bundle::new();
    b.sh(
        "for d in null zero full random urandom tty ptmx; do test -c /dev/$d && echo $d; done; \
         for l in fd stdin stdout stderr; do readlink /dev/$l; done; \
         test -d /dev/pts && test -d /dev/shm && test -d /dev/mqueue && echo dirs; \
         echo x > /dev/null && head -c 4 /dev/zero | wc -c",
    );
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(
        o.stdout,
        "null\nzero\nfull\nrandom\nurandom\ntty\nptmx\n/proc/self/fd\n/proc/self/fd/0\n\
         /proc/self/fd/1\n/proc/self/fd/2\ndirs\n4\n",
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn linux_devices_entry_is_created() {
    let Some(rt) = setup("mnt-devices") else {
        return;
    };
    let mut b = Bundle::new();
    b.set(
        "/linux/devices",
        json!([{"path": "/dev/e2e-null", "type": "c", "major": 1, "minor": 3,
                "fileMode": 0o640, "uid": 0, "gid": 0}]),
    );
    b.resources(json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
    ]}));
    b.sh("stat -c '%F %t %T %a' /dev/e2e-null; echo x > /dev/e2e-null && echo written");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "character special file 1 3 640\nwritten\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

/// A FIFO in `linux.devices` (as runc: the node is made, no device cgroup rule is added).
#[test]
fn linux_devices_fifo_is_created() {
    let Some(rt) = setup("mnt-fifo") else {
        return;
    };
    let mut b = Bundle::new();
    b.set(
        "/linux/devices",
        json!([
            {"path": "/dev/e2e-null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
            {"path": "/dev/e2e-fifo", "type": "p", "fileMode": 0o640}
        ]),
    );
    b.sh("test -p /dev/e2e-fifo && stat -c '%F %a' /dev/e2e-fifo");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout, "fifo 640\n", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn device_cgroup_denies_unlisted_device() {
    let Some(rt) = setup("mnt-devdeny") else {
        return;
    };
    let mut b = Bundle::new();
    // A device node for /dev/mem-like major 1 minor 1 ("mem") is created but not allowed.
    b.set(
        "/linux/devices",
        json!([{"path": "/dev/e2e-mem", "type": "c", "major": 1, "minor": 1, "fileMode": 0o600}]),
    );
    b.sh("head -c 1 /dev/e2e-mem >/dev/null 2>&1 && echo readable || echo denied");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "denied", "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn masked_paths_are_empty() {
    let Some(rt) = setup("mnt-masked") else {
        return;
    };
    let mut b = Bundle::new();
    std::fs::write(b.rootfs().join("etc/secret"), "top-secret\n").unwrap();
    std::fs::create_dir_all(b.rootfs().join("var/private")).unwrap();
    std::fs::write(b.rootfs().join("var/private/key"), "k\n").unwrap();
    let mut masked: Vec<serde_json::Value> =
        b.config["linux"]["maskedPaths"].as_array().unwrap().clone();
    masked.push(json!("/etc/secret"));
    masked.push(json!("/var/private"));
    masked.push(json!("/does/not/exist"));
    b.set("/linux/maskedPaths", json!(masked));
    // A default masked /proc file this kernel has.
    let procfile = [
        "/proc/kcore",
        "/proc/timer_list",
        "/proc/keys",
        "/proc/sched_debug",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("/proc/keys");
    b.sh(&format!(
        "wc -c < /etc/secret; ls -A /var/private | wc -l; wc -c < {procfile}; ls /sys/firmware | wc -l"
    ));
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let counts: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(counts, ["0", "0", "0", "0"], "{o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn readonly_paths_are_read_only() {
    let Some(rt) = setup("mnt-ropaths") else {
        return;
    };
    let mut b = Bundle::new();
    b.readonly_root(false);
    let mut ro: Vec<serde_json::Value> = b.config["linux"]["readonlyPaths"]
        .as_array()
        .unwrap()
        .clone();
    ro.push(json!("/home"));
    b.set("/linux/readonlyPaths", json!(ro));
    b.sh(
        "touch /home/x 2>/dev/null && echo home-writable || echo home-ro; \
         touch /root/x && echo root-ok; \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo procsys-writable || echo procsys-ro; \
         ls /proc/sys/kernel/hostname >/dev/null && echo procsys-visible",
    );
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(
        o.stdout, "home-ro\nroot-ok\nprocsys-ro\nprocsys-visible\n",
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn root_readonly() {
    let Some(rt) = setup("mnt-rootro") else {
        return;
    };
    let mut b = Bundle::new();
    b.sh("touch /x 2>/dev/null && echo writable || echo readonly; grep -c ' / / ' /proc/self/mountinfo >/dev/null; cat /proc/self/mountinfo");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout.lines().next(), Some("readonly"), "{o}");
    let m = parse_mountinfo(&o.stdout);
    let root = m
        .iter()
        .rev()
        .find(|m| m.mount_point == "/")
        .expect("root mount");
    assert!(root.readonly(), "{root:?}");

    b.readonly_root(false);
    b.sh("touch /x && echo writable");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.out(), "writable", "{o}");
    assert!(
        b.rootfs().join("x").exists(),
        "write did not reach the rootfs"
    );
    assert_no_leftovers(&rt, &b);
}

#[test]
fn proc_and_sys_are_mounted() {
    let Some(rt) = setup("mnt-procsys") else {
        return;
    };
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/mountinfo"]);
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let m = parse_mountinfo(&o.stdout);
    let find = |p: &str| m.iter().rev().find(|e| e.mount_point == p).cloned();
    let want = [
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
    ];
    for (p, t) in want {
        let e = find(p).unwrap_or_else(|| panic!("{p} not mounted: {o}"));
        assert_eq!(e.fstype, t, "{p}: {e:?}");
    }
    let sys = find("/sys").unwrap();
    assert!(
        sys.readonly() && sys.has("nosuid") && sys.has("noexec") && sys.has("nodev"),
        "{sys:?}"
    );
    let shm = find("/dev/shm").unwrap();
    assert!(shm.has("size=65536k") && shm.has("nodev"), "{shm:?}");
    let pts = find("/dev/pts").unwrap();
    assert!(pts.has("ptmxmode=666") && pts.has("mode=620"), "{pts:?}");
    // cgroup v1 controllers appear under /sys/fs/cgroup, read-only.
    let mem = find("/sys/fs/cgroup/memory").unwrap_or_else(|| panic!("no memory cgroup: {o}"));
    assert!(mem.readonly(), "{mem:?}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn symlink_destination_escaping_rootfs_stays_inside() {
    let Some(rt) = setup("mnt-escape") else {
        return;
    };
    let outside = tempfile::Builder::new()
        .prefix("hull-e2e-outside-")
        .tempdir()
        .unwrap();
    let target = outside.path().canonicalize().unwrap();
    let mut b = Bundle::new();
    // rootfs/evil -> ../../../../../../../../<outside dir>: outside the rootfs when followed
    // naively on the host; must resolve to <rootfs>/<outside dir>.
    let rel = format!(
        "{}{}",
        "../".repeat(16),
        target.display().to_string().trim_start_matches('/')
    );
    std::os::unix::fs::symlink(&rel, b.rootfs().join("evil")).unwrap();
    b.mount("/evil", "tmpfs", "tmpfs", &["size=128k"]);
    b.readonly_root(false);
    b.sh("echo inside > /evil/marker && echo wrote; cat /proc/self/mountinfo");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert_eq!(o.stdout.lines().next(), Some("wrote"), "{o}");
    // Nothing reached the host directory.
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "mount escaped the rootfs"
    );
    // The tmpfs is mounted at the in-rootfs resolution of the symlink.
    let m = parse_mountinfo(&o.stdout);
    let want = target.display().to_string();
    assert!(
        m.iter()
            .any(|e| e.mount_point == want && e.fstype == "tmpfs"),
        "tmpfs not at {want} inside the container: {o}"
    );
    assert!(b.rootfs().join(want.trim_start_matches('/')).is_dir());
    assert_no_leftovers(&rt, &b);
}

#[test]
fn mount_propagation_does_not_leak_to_host() {
    let Some(rt) = setup("mnt-noleak") else {
        return;
    };
    let mut b = Bundle::new();
    b.mount("/mnt/leak", "tmpfs", "tmpfs", &["size=64k"]);
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let bp = b.path().display().to_string();
    for e in parse_mountinfo(&hull_tests::mountinfo()) {
        assert!(
            !e.mount_point.starts_with(&bp),
            "container mount visible on host: {e:?}"
        );
    }
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}
