//! LSM labels (`process.apparmorProfile`, `process.selinuxLabel`, `linux.mountLabel`,
//! `hull exec --apparmor/--process-label`): on a host without the LSM, create and exec
//! fail with an error naming the field, and leave nothing behind. (The label writing itself
//! is unit-tested against a fake attr directory in `runtime/src/lsm.rs`.)

use hull_tests::{assert_no_leftovers, hull_only, setup, Bundle};
use serde_json::json;
use std::path::Path;

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
}

fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

#[test]
fn apparmor_profile_without_apparmor_fails_create() {
    let Some(rt) = setup("lsm-apparmor") else {
        return;
    };
    if apparmor_enabled() {
        eprintln!(
            "skipped: AppArmor is enabled on this host (the error path needs a host without it)"
        );
        return;
    }
    let mut b = Bundle::new();
    b.set("/process/apparmorProfile", json!("hull-e2e-profile"));
    b.args(&["true"]);
    let id = rt.id();
    let o = rt.create(&id, &b);
    o.assert_fail();
    if !rt.is_runc() {
        o.assert_error_contains("process.apparmorProfile")
            .assert_error_contains("AppArmor is not enabled");
    }
    assert!(rt.status(&id).is_none(), "create left a container: {o}");
    assert_no_leftovers(&rt, &b);
}

#[test]
fn selinux_label_and_mount_label_without_selinux_fail_create() {
    let Some(rt) = setup("lsm-selinux") else {
        return;
    };
    if selinux_enabled() {
        eprintln!("skipped: SELinux is enabled on this host");
        return;
    }
    for (pointer, field) in [
        ("/process/selinuxLabel", "process.selinuxLabel"),
        ("/linux/mountLabel", "linux.mountLabel"),
    ] {
        let mut b = Bundle::new();
        b.set(pointer, json!("system_u:system_r:container_t:s0:c1,c2"));
        b.args(&["true"]);
        let o = rt.run_bundle(&b);
        o.assert_fail();
        if !rt.is_runc() {
            o.assert_error_contains(field)
                .assert_error_contains("SELinux is not enabled");
        }
        assert_no_leftovers(&rt, &b);
    }
}

#[test]
fn exec_with_a_label_on_a_host_without_the_lsm_fails() {
    let Some(rt) = setup("lsm-exec") else { return };
    hull_only!(rt, "hull's error wording");
    if apparmor_enabled() || selinux_enabled() {
        eprintln!("skipped: an LSM is enabled on this host");
        return;
    }
    let mut b = Bundle::new();
    b.args(&["sleep", "60"]);
    let id = rt.start_running(&b);
    let o = rt.call(&["exec", "--apparmor", "hull-e2e", &id, "true"]);
    o.assert_fail()
        .assert_error_contains("process.apparmorProfile");
    let o = rt.call(&[
        "exec",
        "--process-label",
        "system_u:system_r:container_t:s0",
        &id,
        "true",
    ]);
    o.assert_fail()
        .assert_error_contains("process.selinuxLabel");
    // Without labels exec still works, and the container is unharmed.
    rt.exec(&id, &["true"]).assert_ok();
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    rt.delete_force(&id).assert_ok();
    assert_no_leftovers(&rt, &b);
}

#[test]
fn features_report_apparmor_and_selinux_support() {
    let Some(rt) = setup("lsm-features") else {
        return;
    };
    hull_only!(rt, "runc's features depend on its build");
    let o = rt.call(&["features"]);
    o.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("features JSON");
    assert_eq!(v["linux"]["apparmor"]["enabled"], json!(true), "{o}");
    assert_eq!(v["linux"]["selinux"]["enabled"], json!(true), "{o}");
    assert_eq!(v["annotations"]["io.hull.userns"], json!("auto"), "{o}");
}
