//! User namespaces with several ranges, and rootless hull: a test user (created here with
//! `useradd`, with its own lines in /etc/subuid and /etc/subgid, all removed afterwards)
//! runs `hull spec --rootless` and busybox containers with `--root` in a directory it owns;
//! mappings beyond its own id go through `newuidmap`/`newgidmap` (Debian's uidmap).

use hull_tests::{assert_no_leftovers, hull_only, setup, Bundle};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// Serialises this file's edits of /etc/subuid and /etc/subgid.
static ETC: Mutex<()> = Mutex::new(());

/// Several ranges, written by root directly.
#[test]
fn several_id_ranges_as_root() {
    let Some(rt) = setup("userns-ranges") else {
        return;
    };
    let mut b = Bundle::new();
    b.namespace("user", None);
    let maps = json!([
        {"containerID": 0, "hostID": 300000, "size": 1000},
        {"containerID": 1000, "hostID": 400000, "size": 64536}
    ]);
    b.set("/linux/uidMappings", maps.clone());
    b.set("/linux/gidMappings", maps);
    b.without_mount("/sys/fs/cgroup");
    std::fs::set_permissions(b.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    b.sh("cat /proc/self/uid_map /proc/self/gid_map; ls /sys/kernel >/dev/null && echo sys-ok");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    let lines: Vec<String> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "0 300000 1000",
            "1000 400000 64536",
            "0 300000 1000",
            "1000 400000 64536",
            "sys-ok"
        ],
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

/// A user namespace without a network namespace of its own cannot mount sysfs: `/sys` is
/// then bind-mounted from the host (read-only as asked), as runc does.
#[test]
fn sysfs_falls_back_to_a_bind_mount_in_a_user_namespace_without_netns() {
    let Some(rt) = setup("userns-sysfs") else {
        return;
    };
    let mut b = Bundle::new();
    b.userns(500000, 65536);
    b.without_namespace("network")
        .without_mount("/sys/fs/cgroup");
    std::fs::set_permissions(b.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    b.sh("ls /sys/kernel >/dev/null && echo sys-ok; grep ' /sys ' /proc/self/mountinfo | cut -d' ' -f6");
    let o = rt.run_bundle(&b);
    o.assert_ok();
    assert!(o.stdout.contains("sys-ok"), "{o}");
    assert!(
        o.stdout
            .lines()
            .nth(1)
            .unwrap_or("")
            .split(',')
            .any(|f| f == "ro"),
        "{o}"
    );
    assert_no_leftovers(&rt, &b);
}

/// A throw-away user with subordinate id ranges; removed (user, /etc/sub{u,g}id lines, files
/// we created) on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    sub_base: u32,
    home: PathBuf,
    created_files: Vec<PathBuf>,
}

impl TestUser {
    fn create() -> Option<TestUser> {
        let _g = ETC.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("hulle2e{}", std::process::id() % 100000);
        let name = format!(
            "{name}{}",
            hull_tests::unique("u").rsplit('-').next().unwrap_or("0")
        );
        let ok = Command::new("useradd")
            .args(["-M", "-N", "-s", "/bin/false", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let id = |flag: &str| -> u32 {
            let o = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let sub_base = 1_500_000_000 + (std::process::id() % 10000) * 65536;
        let mut u = TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
            sub_base,
            home: PathBuf::new(),
            created_files: vec![],
        };
        for f in ["/etc/subuid", "/etc/subgid"] {
            if !Path::new(f).exists() {
                u.created_files.push(PathBuf::from(f));
            }
            let mut text = std::fs::read_to_string(f).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{}:{}:65536\n", u.name, u.sub_base));
            std::fs::write(f, text).unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let home = tempfile::Builder::new()
            .prefix("hull-e2e-rootless-")
            .tempdir()
            .unwrap()
            .keep();
        std::os::unix::fs::chown(&home, Some(u.uid), Some(u.gid)).unwrap();
        u.home = home;
        Some(u)
    }

    /// Run `hull <args>` as this user (stdout/stderr to files, with a deadline).
    fn hull(&self, args: &[&str]) -> (bool, String, String) {
        let n = hull_tests::unique("o");
        let (po, pe) = (
            self.home.join(format!("{n}.out")),
            self.home.join(format!("{n}.err")),
        );
        let mut c = Command::new(hull_tests::runtime::bin_path());
        c.arg("--root")
            .arg(self.home.join("root"))
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&po).unwrap())
            .stderr(std::fs::File::create(&pe).unwrap());
        let mut child = c.spawn().expect("spawn hull as the test user");
        let st = hull_tests::util::wait_child(&mut child, Duration::from_secs(60));
        let out = std::fs::read_to_string(&po).unwrap_or_default();
        let err = std::fs::read_to_string(&pe).unwrap_or_default();
        (st.is_some_and(|s| s.success()), out, err)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _g = ETC.lock().unwrap_or_else(|e| e.into_inner());
        // Containers first (as the user), then the user and only our own lines.
        if let Ok(ids) = std::fs::read_dir(self.home.join("root")) {
            for id in ids.flatten() {
                let id = id.file_name().to_string_lossy().into_owned();
                let _ = self.hull(&["delete", "--force", &id]);
            }
        }
        let _ = Command::new("userdel").arg(&self.name).status();
        let mine = format!("{}:{}:65536", self.name, self.sub_base);
        for f in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(text) = std::fs::read_to_string(f) {
                let rest: String = text
                    .lines()
                    .filter(|l| *l != mine)
                    .map(|l| format!("{l}\n"))
                    .collect();
                let created = self.created_files.iter().any(|c| c == Path::new(f));
                if rest.is_empty() && created {
                    let _ = std::fs::remove_file(f);
                } else {
                    let _ = std::fs::write(f, rest);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A bundle the test user can use: `hull spec --rootless` run by the user in a bundle
/// directory it owns, with the runc-style rootfs of the test suite.
fn rootless_bundle(u: &TestUser, script: &str) -> Bundle {
    let mut b = Bundle::new();
    std::fs::set_permissions(b.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(b.path(), Some(u.uid), Some(u.gid)).unwrap();
    let (ok, out, err) = u.hull(&["spec", "--rootless", "--bundle", b.path().to_str().unwrap()]);
    assert!(ok, "hull spec --rootless as {}: {out}{err}", u.name);
    let text = std::fs::read_to_string(b.config_path()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": u.uid, "size": 1}])
    );
    assert!(
        v["linux"]["resources"]["pids"].is_null(),
        "no pids limit rootless"
    );
    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(["sh", "-c", script]);
    b.config = v;
    b
}

fn run_as(u: &TestUser, b: &Bundle) -> (bool, String, String) {
    b.write();
    let id = hull_tests::unique("e2e-rootless");
    let r = u.hull(&["run", "--bundle", b.path().to_str().unwrap(), &id]);
    let _ = u.hull(&["delete", "--force", &id]);
    r
}

#[test]
fn rootless_user_runs_busybox_with_hull_spec_rootless() {
    let Some(rt) = setup("rootless") else { return };
    hull_only!(rt, "the rootless flow is tested on hull");
    let Some(u) = TestUser::create() else {
        eprintln!("skipped: useradd failed");
        return;
    };
    let script = "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/setgroups; \
                  ls /sys/kernel >/dev/null && echo sys-ok; grep '^Seccomp:' /proc/self/status";
    let b = rootless_bundle(&u, script);
    let (ok, out, err) = run_as(&u, &b);
    assert!(ok, "rootless run failed:\n{out}\n{err}");
    let l: Vec<String> = out
        .lines()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(l[0], "0", "{out}");
    assert_eq!(l[1], "0", "{out}");
    assert_eq!(l[2], format!("0 {} 1", u.uid), "{out}");
    assert!(out.contains("sys-ok"), "/sys bind-mounted: {out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // setgroups is denied: the gid map was written by the unprivileged hull itself.
    assert_eq!(l[3], "deny", "{out}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn rootless_several_ranges_through_newuidmap() {
    let Some(rt) = setup("rootless-ranges") else {
        return;
    };
    hull_only!(rt, "the rootless flow is tested on hull");
    if !Path::new("/usr/bin/newuidmap").exists() {
        eprintln!("skipped: newuidmap missing (Debian package uidmap)");
        return;
    }
    let Some(u) = TestUser::create() else {
        eprintln!("skipped: useradd failed");
        return;
    };
    let mut b = rootless_bundle(
        &u,
        "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups",
    );
    let maps = |own: u32| {
        json!([
            {"containerID": 0, "hostID": own, "size": 1},
            {"containerID": 1, "hostID": u.sub_base, "size": 65536}
        ])
    };
    b.set("/linux/uidMappings", maps(u.uid));
    b.set("/linux/gidMappings", maps(u.gid));
    let (ok, out, err) = run_as(&u, &b);
    assert!(
        ok,
        "rootless run with subordinate ranges failed:\n{out}\n{err}"
    );
    let l: Vec<String> = out
        .lines()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        l,
        [
            format!("0 {} 1", u.uid),
            format!("1 {} 65536", u.sub_base),
            format!("0 {} 1", u.gid),
            format!("1 {} 65536", u.sub_base),
            "allow".to_string(),
        ],
        "{out}"
    );
    assert_no_leftovers(&rt, &b);
}
