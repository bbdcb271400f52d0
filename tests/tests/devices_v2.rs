//! Device control on a cgroup-v2-only host: the eBPF device program. This machine is
//! hybrid, so each scenario runs in a private mount namespace where a cgroup2 hierarchy is
//! mounted on /sys/fs/cgroup: hull sees a v2-only host (device programs need no cgroup2
//! controller). The container has CAP_MKNOD, as containerd's defaults give it: making a
//! node is allowed, opening a device the rules do not allow fails with EPERM.

use hull_tests::{hull_only, setup, skip_if, Bundle};
use serde_json::json;
use std::process::Command;

/// Makes the nodes and says which could be opened.
/// kmsg (c 1:11) stands for any host device outside the allowlist: it exists everywhere.
const PROBE: &str = "for d in kmsg:1:11 null:1:3 fuse:10:229; do \
    n=${d%%:*}; mm=${d#*:}; mknod /tmp/$n c ${mm%:*} ${mm#*:} 2>/dev/null; \
    if (exec 3</tmp/$n) 2>/tmp/err; then echo $n-open; \
    else echo $n-denied $(cat /tmp/err); fi; rm -f /tmp/$n; done";

fn bundle(devices: serde_json::Value, args: &[&str]) -> Bundle {
    let mut b = Bundle::new();
    b.args(args)
        .capabilities(&["CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_SETUID"])
        .mount("/tmp", "tmpfs", "tmpfs", &["rw"])
        .resources(json!({ "devices": devices }));
    b
}

/// Runs `script` as root in a private mount namespace whose /sys/fs/cgroup is cgroup2.
fn in_v2_only(script: &str) -> Option<String> {
    let full = format!(
        "mount --make-rprivate / && umount -R -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup || {{ echo no-cgroup2; exit 0; }}\n{script}"
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &full])
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("no-cgroup2") {
        return None;
    }
    Some(text)
}

#[test]
fn denied_devices_cannot_be_opened_allowed_ones_can_and_update_replaces_the_rules() {
    let Some(rt) = setup("devices-v2") else {
        return;
    };
    hull_only!(rt, "hull's eBPF device program");
    skip_if!(!nix::unistd::geteuid().is_root(), "needs root");
    let hull = format!("{} --root {}", rt.bin.display(), rt.root().display());
    // Containerd's usual list: deny all, then the defaults (no fuse).
    let defaults = json!([{"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]);
    let plain = bundle(defaults.clone(), &["sh", "-c", PROBE]);
    plain.write();
    // fuse allowed by the config.
    let mut with_fuse = defaults.as_array().cloned().unwrap_or_default();
    with_fuse.push(json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}));
    let fuse = bundle(json!(with_fuse), &["sleep", "60"]);
    fuse.write();
    let deny_fuse = rt.scratch().join("deny-fuse.json");
    std::fs::write(
        &deny_fuse,
        json!({"devices": [{"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"}]})
            .to_string(),
    )
    .unwrap();
    let (a, b) = (rt.id(), rt.id());
    let script = format!(
        r#"H="{hull}"
$H run --bundle {plain} {a} 2>&1 | sed 's/^/plain: /'
$H run -d --bundle {fuse} {b} > /dev/null 2> /tmp/hull-devices-v2-{b}.err; echo "fuse-run $?"
sed 's/^/fuse-run: /' /tmp/hull-devices-v2-{b}.err; rm -f /tmp/hull-devices-v2-{b}.err
$H exec {b} sh -c '{probe}' 2>&1 | sed 's/^/before: /'
$H update --resources {deny} {b}; echo "update $?"
$H exec {b} sh -c '{probe}' 2>&1 | sed 's/^/after: /'
$H delete --force {b}; $H delete --force {a} 2>/dev/null
ls -d /sys/fs/cgroup/hull-e2e/*{b}* 2>/dev/null | sed 's/^/left: /'
"#,
        plain = plain.path().display(),
        fuse = fuse.path().display(),
        deny = deny_fuse.display(),
        probe = PROBE.replace('\'', r"'\''"),
    );
    let Some(out) = in_v2_only(&script) else {
        eprintln!("skipped: cgroup2 cannot be mounted in a private mount namespace here");
        return;
    };
    let has = |l: &str| out.lines().any(|x| x.trim() == l);
    assert!(out.contains("plain: kmsg-denied"), "{out}");
    assert!(has("plain: null-open"), "{out}");
    assert!(out.contains("plain: fuse-denied"), "{out}");
    assert!(
        out.contains("Operation not permitted"),
        "EPERM from the program\n{out}"
    );
    assert!(has("fuse-run 0"), "{out}");
    assert!(has("before: fuse-open"), "{out}");
    assert!(out.contains("before: kmsg-denied"), "{out}");
    assert!(has("update 0"), "{out}");
    assert!(
        out.contains("after: fuse-denied"),
        "update replaced the program\n{out}"
    );
    assert!(has("after: null-open"), "{out}");
    assert!(!out.contains("left: "), "{out}");
}
