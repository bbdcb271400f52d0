//! `io.hull.userns=auto`: each annotated container gets its own user namespace with a
//! 65,536-id range no other live container under the same `--root` shares; a deleted
//! container's range is reused. Ranges start at host id 1,000,000 (hull's default pool), so
//! the first container of a fresh `--root` gets 1,000,000.

use hull_tests::{assert_no_leftovers, hull_only, setup, Bundle};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;

const BASE: u32 = 1_000_000;
const SIZE: u32 = 65536;

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
    let mut bundles = vec![auto_bundle(), auto_bundle(), auto_bundle()];
    // The first range of a fresh --root is BASE: owning the rootfs with it makes the files
    // root's inside (the documented rule; hull does not chown).
    chown_tree(&bundles[0].rootfs(), BASE);
    let ida = rt.start_running(&bundles[0]);
    let idb = rt.start_running(&bundles[1]);
    let pid = |id: &str| rt.state_json(id)["pid"].as_i64().expect("pid");
    let (pa, pb) = (pid(&ida), pid(&idb));
    let (ma, mb) = (read_map(pa, "uid_map"), read_map(pb, "uid_map"));
    assert_eq!(ma, vec![(0, BASE, SIZE)], "first container");
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
