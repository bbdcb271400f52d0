//! `io.hull.userns=auto`: each annotated container gets its own user namespace with a
//! 65,536-id range no other live container under the same `--root` shares; a deleted
//! container's range is reused. Ranges come from the subordinate ids of user `hull` in
//! /etc/subuid and /etc/subgid (dev/install-deps adds them), so the first container of a
//! fresh `--root` gets that range's first id.

use hull_tests::{assert_no_leftovers, hull_only, setup, Bundle};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;

const SIZE: u32 = 65536;

/// The first id of user hull's subordinate uid range, or why there is none.
fn pool_base() -> Result<u32, String> {
    let text = std::fs::read_to_string("/etc/subuid").map_err(|e| format!("/etc/subuid: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("hull:")?.split(':').next()?.parse().ok())
        .ok_or_else(|| "/etc/subuid has no range for user hull (dev/install-deps adds it)".into())
}

/// A long-running busybox container asking for `io.hull.userns=auto`. The bundle directory
/// is opened to the range's ids (they are not root on the host).
fn auto_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.annotation("io.hull.userns", "auto");
    // sysfs and the cgroup tree need ownership of more than a fresh user namespace has
    // here; the test is about ids.
    b.without_mount("/sys/fs/cgroup").without_mount("/sys");
    b.args(&["sleep", "60"]);
    std::fs::set_permissions(b.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    b
}

/// (container id, host id, size) lines of /proc/<pid>/uid_map or gid_map.
fn read_map(pid: i64, file: &str) -> Vec<(u32, u32, u32)> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .collect()
}

fn chown_tree(dir: &Path, id: u32) {
    lchown(dir, Some(id), Some(id)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            chown_tree(&p, id);
        } else {
            lchown(&p, Some(id), Some(id)).unwrap();
        }
    }
}

#[test]
fn userns_auto_gives_disjoint_ranges_and_reuses_a_deleted_one() {
    let Some(rt) = setup("userns-auto") else {
        return;
    };
    hull_only!(rt, "io.hull.userns is hull's annotation");
    let base = match pool_base() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mut bundles = vec![auto_bundle(), auto_bundle(), auto_bundle()];
    // The first range of a fresh --root is the pool's first: owning the rootfs with it makes the files
    // root's inside (the documented rule; hull does not chown).
    chown_tree(&bundles[0].rootfs(), base);
    let ida = rt.start_running(&bundles[0]);
    let idb = rt.start_running(&bundles[1]);
    let pid = |id: &str| rt.state_json(id)["pid"].as_i64().expect("pid");
    let (pa, pb) = (pid(&ida), pid(&idb));
    let (ma, mb) = (read_map(pa, "uid_map"), read_map(pb, "uid_map"));
    assert_eq!(ma, vec![(0, base, SIZE)], "first container");
    assert_eq!(read_map(pa, "gid_map"), ma, "gid map = uid map");
    assert_eq!(mb.len(), 1, "{mb:?}");
    let (a, b) = (ma[0].1, mb[0].1);
    assert!(
        a + SIZE <= b || b + SIZE <= a,
        "ranges overlap: {ma:?} {mb:?}"
    );
    assert_eq!(mb[0].2, SIZE);
    assert_ne!(
        std::fs::read_link(format!("/proc/{pa}/ns/user")).ok(),
        std::fs::read_link("/proc/self/ns/user").ok(),
        "not in a user namespace of its own"
    );

    // Inside: root, and the chowned rootfs is root's.
    let o = rt.exec(&ida, &["sh", "-c", "id -u; stat -c %u:%g /bin/busybox"]);
    o.assert_ok();
    assert_eq!(o.out(), "0\n0:0", "{o}");
    // The other container's rootfs is not in its range: nobody's.
    let o = rt.exec(&idb, &["stat", "-c", "%u", "/bin/busybox"]);
    o.assert_ok();
    assert_eq!(o.out(), "65534", "{o}");

    // Delete the first: a third container reuses its range.
    rt.delete_force(&ida).assert_ok();
    let idc = rt.start_running(&bundles[2]);
    let mc = read_map(pid(&idc), "uid_map");
    assert_eq!(mc, vec![(0, a, SIZE)], "the freed range is reused");
    for id in [&idb, &idc] {
        rt.delete_force(id).assert_ok();
    }
    for b in bundles.drain(..) {
        assert_no_leftovers(&rt, &b);
    }
}

#[test]
fn userns_auto_with_own_mappings_is_refused() {
    let Some(rt) = setup("userns-auto-bad") else {
        return;
    };
    hull_only!(rt, "io.hull.userns is hull's annotation");
    let mut b = auto_bundle();
    b.userns(100000, 65536);
    b.args(&["true"]);
    let o = rt.run_bundle(&b);
    o.assert_fail()
        .assert_error_contains("io.hull.userns")
        .assert_error_contains("linux.uidMappings");
    let mut b = auto_bundle();
    b.annotation("io.hull.userns", "keep-id");
    let o = rt.run_bundle(&b);
    o.assert_fail().assert_error_contains("io.hull.userns");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn userns_auto_without_a_pool_is_refused() {
    let Some(rt) = setup("userns-auto-nopool") else {
        return;
    };
    hull_only!(rt, "io.hull.userns is hull's annotation");
    let mut b = auto_bundle();
    b.args(&["true"]);
    b.write();
    let id = rt.id();
    let o = rt
        .cmd(&["run", "--bundle", b.path().to_str().unwrap(), &id])
        .env("HULL_USERNS_AUTO_USER", "hull-test-no-such-pool")
        .output()
        .expect("run hull");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "ran without a pool: {err}");
    assert!(
        err.contains("/etc/subuid") && err.contains("hull-test-no-such-pool"),
        "{err}"
    );
    assert_no_leftovers(&rt, &b);
}
