//! Escape-CVE regressions: each test attempts the attack and asserts it fails.

use hull_tests::{setup, wait_until, Bundle};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// CVE-2019-5736: a container process holding `/proc/<pid>/exe` of a hull process in the
/// container (here the init blocked before `start`, whose image is hull) must not be able
/// to reopen it for writing once that process is gone — that would overwrite the host's
/// hull binary.
#[test]
fn cve_2019_5736_proc_self_exe_cannot_be_written() {
    let Some(rt) = setup("cve-2019-5736") else {
        return;
    };
    if rt.is_runc() {
        eprintln!("skipped: checks hull's read-only exe mount");
        return;
    }
    // A private copy of the binary under test: if the defence ever fails, this copy, not
    // the suite's binary, is what the test could reach.
    let copy = rt.scratch().join("hull-copy");
    std::fs::copy(hull_tests::runtime::bin_path(), &copy).unwrap();
    let rt_copy = hull_tests::Runtime::with_bin(&copy, "cve-2019-5736-copy");
    let mut b = Bundle::new();
    b.args(&["true"]);
    let id = rt_copy.id();
    rt_copy.create(&id, &b).assert_ok();
    let pid = rt_copy.state_json(&id)["pid"].as_i64().unwrap();
    let exe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .expect("O_PATH open of init's exe");
    rt_copy.call(&["kill", &id, "KILL"]).assert_ok();
    assert!(wait_until(T, || rt_copy.status(&id).as_deref() == Some("stopped")));
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&exe));
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&reopen)
        .expect_err("the hull binary was writable through /proc/<pid>/exe");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    rt_copy.call(&["delete", &id]).assert_ok();
    // The copy is intact and still runs.
    let o = std::process::Command::new(&copy)
        .arg("--version")
        .output()
        .unwrap();
    assert!(o.status.success());
}
