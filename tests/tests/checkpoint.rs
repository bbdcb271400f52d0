//! `checkpoint` / `restore` through CRIU (Debian's `criu`). A busybox counter container is
//! checkpointed (which ends it), then restored from the images, and must count on from
//! where it was.
//!
//! When `criu check` fails on this kernel (Debian 12's CRIU 3.17 does not know the
//! `[vvar_vclock]` mapping of recent kernels such as 6.18), hull must refuse both commands up front with an error naming
//! the kernel and CRIU's reason, leave the container running, and the real round trip is
//! skipped with that reason.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hull_tests::skip::skipped;
use hull_tests::{assert_no_leftovers, hull_only, setup, wait_until, Bundle};

const CRIU: &str = "/usr/sbin/criu";
const T: Duration = Duration::from_secs(10);

/// None when `criu check` passes here, else CRIU's output.
fn criu_unusable() -> Option<String> {
    match Command::new(CRIU).arg("check").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("cannot run {CRIU}: {e}")),
    }
}

fn read_count(rootfs: &Path) -> u64 {
    std::fs::read_to_string(rootfs.join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn checkpoint_and_restore_a_counter() {
    let Some(rt) = setup("checkpoint") else {
        return;
    };
    hull_only!(rt, "the error checked when CRIU cannot work is hull's");
    if !Path::new(CRIU).exists() {
        skipped(&format!(
            "{CRIU} missing: install Debian's criu (dev/install-deps)"
        ));
        return;
    }
    let mut b = Bundle::new();
    b.readonly_root(false)
        .sh("i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.05; done");
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "running", T), "container never ran");
    assert!(
        wait_until(T, || read_count(&b.rootfs()) >= 3),
        "the counter does not count"
    );
    let images = rt.scratch().join("images");
    let work = rt.scratch().join("criu-work");
    let (images_s, work_s) = (images.display().to_string(), work.display().to_string());
    let checkpoint = rt.call(&[
        "checkpoint",
        "--image-path",
        &images_s,
        "--work-path",
        &work_s,
        &id,
    ]);

    if let Some(output) = criu_unusable() {
        // hull must say why, before touching the container.
        checkpoint
            .assert_fail()
            .assert_error_contains("CRIU cannot work on this kernel")
            .assert_error_contains("criu check");
        let reason = hull_runtime::checkpoint::check_failure_reason(&output);
        checkpoint.assert_error_contains(&reason);
        assert_eq!(
            rt.status(&id).as_deref(),
            Some("running"),
            "a refused checkpoint must leave the container running"
        );
        // restore parses containerd's single-dash `-no-subreaper` and fails the same way.
        let bundle = b.path().display().to_string();
        rt.call(&[
            "restore",
            "--image-path",
            &images_s,
            "--work-path",
            &work_s,
            "--detach",
            "-no-subreaper",
            "--bundle",
            &bundle,
            &format!("{id}-restored"),
        ])
        .assert_fail()
        .assert_error_contains("CRIU cannot work on this kernel");
        assert!(
            !rt.root().join(format!("{id}-restored")).exists(),
            "a refused restore left state"
        );
        rt.call(&["delete", "--force", &id]).assert_ok();
        assert_no_leftovers(&rt, &b);
        skipped(&format!(
            "real checkpoint/restore: CRIU cannot work on this kernel: {reason}"
        ));
        return;
    }

    checkpoint.assert_ok();
    // The checkpoint ended the container and removed it.
    rt.state(&id).assert_fail();
    let at_checkpoint = read_count(&b.rootfs());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_count(&b.rootfs()),
        at_checkpoint,
        "the counter went on after the checkpoint"
    );
    let bundle = b.path().display().to_string();
    rt.call(&[
        "restore",
        "--image-path",
        &images_s,
        "--work-path",
        &work_s,
        "--detach",
        "-no-subreaper",
        "--bundle",
        &bundle,
        &id,
    ])
    .assert_ok();
    assert_eq!(rt.status(&id).as_deref(), Some("running"));
    assert!(
        wait_until(T, || read_count(&b.rootfs()) > at_checkpoint + 2),
        "the restored counter does not go on from {at_checkpoint}"
    );
    rt.call(&["delete", "--force", &id]).assert_ok();
    assert_no_leftovers(&rt, &b);
}

/// A stand-in for `criu` (given with `--criu`) that logs its argv and does the visible part
/// of each action: `check` passes, `dump` ends the tree it was given, `restore` starts a
/// `sleep` in the container's cgroup and writes its pid to `--pidfile`. It checks hull's
/// side of checkpoint/restore (argv, descriptors.json, state, pid file, cgroup, cleanup)
/// everywhere, whether or not the real CRIU works on the kernel.
fn fake_criu(dir: &Path, cgroup: &str) -> std::path::PathBuf {
    let path = dir.join("fake-criu");
    let calls = dir.join("calls");
    hull_tests::write_script(
        &path,
        &format!(
            r#"echo "$*" >> {calls}
cmd=$1; shift
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree=$2; shift ;;
    --pidfile) pidfile=$2; shift ;;
  esac
  shift
done
case "$cmd" in
  check) exit 0 ;;
  dump) kill -KILL "$tree"; exit 0 ;;
  restore)
    setsid /bin/sleep 1000 </dev/null >/dev/null 2>&1 &
    pid=$!
    for d in /sys/fs/cgroup/*/; do
      [ -e "$d/cgroup.procs" ] || continue
      mkdir -p "$d{cgroup}" && echo $pid > "$d{cgroup}/cgroup.procs" 2>/dev/null
    done
    grep -q ':memory:{cgroup}$' /proc/$pid/cgroup || exit 1
    echo $pid > "$pidfile"
    exit 0 ;;
esac
exit 1
"#,
            calls = calls.display(),
        ),
    );
    path
}

#[test]
fn checkpoint_and_restore_steps_with_a_stand_in_criu() {
    let Some(rt) = setup("checkpoint-fake") else {
        return;
    };
    hull_only!(rt, "--criu takes hull's stand-in");
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let id = rt.id();
    rt.create(&id, &b).assert_ok();
    rt.start(&id).assert_ok();
    assert!(rt.wait_status(&id, "running", T), "container never ran");
    let init: i32 = rt.state_json(&id)["pid"].as_i64().unwrap_or(0) as i32;
    let criu = fake_criu(rt.scratch(), &b.cgroups_path());
    let criu_s = criu.display().to_string();
    let images = rt.scratch().join("images");
    let images_s = images.display().to_string();

    rt.call(&[
        "--criu",
        &criu_s,
        "checkpoint",
        "--image-path",
        &images_s,
        "--tcp-established",
        &id,
    ])
    .assert_ok();
    // The dump ended the container; hull removed it.
    rt.state(&id).assert_fail();
    let calls = std::fs::read_to_string(rt.scratch().join("calls")).unwrap_or_default();
    let rootfs = b.rootfs().canonicalize().unwrap_or_else(|_| b.rootfs());
    let want = format!(
        "dump --tree {init} --root {} --images-dir {images_s} --work-dir {images_s} \
         --log-file dump.log -v4 --manage-cgroups=soft --tcp-established",
        rootfs.display()
    );
    assert!(calls.lines().any(|l| l == "check"), "{calls}");
    assert!(
        calls.lines().any(|l| l.starts_with(&want)),
        "{want}\n{calls}"
    );
    let desc: Vec<String> =
        serde_json::from_slice(&std::fs::read(images.join("descriptors.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(desc.len(), 3, "{desc:?}");

    let bundle = b.path().display().to_string();
    let pid_file = rt.scratch().join("restored.pid");
    let pid_file_s = pid_file.display().to_string();
    rt.call(&[
        "--criu",
        &criu_s,
        "restore",
        "--image-path",
        &images_s,
        "--detach",
        "--pid-file",
        &pid_file_s,
        "-no-subreaper",
        "--bundle",
        &bundle,
        &id,
    ])
    .assert_ok();
    let calls = std::fs::read_to_string(rt.scratch().join("calls")).unwrap_or_default();
    let want = format!(
        "restore --root {} --restore-detached --restore-sibling --pidfile {images_s}/restore.pid",
        rootfs.display()
    );
    assert!(
        calls.lines().any(|l| l.starts_with(&want)),
        "{want}\n{calls}"
    );
    let st = rt.state_json(&id);
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "{st}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap_or_default(),
        pid.to_string()
    );
    rt.call(&["delete", "--force", &id]).assert_ok();
    assert!(
        wait_until(T, || !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .is_empty()),
        "the restored process {pid} outlived delete --force"
    );
    assert_no_leftovers(&rt, &b);

    // A restore that lands in another cgroup than the container's is refused: hull must
    // never adopt a foreign cgroup (kill --all and delete act on all of it).
    let other_dir = rt.scratch().join("other");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let other_cgroup = format!("{}-other", b.cgroups_path());
    let other = fake_criu(&other_dir, &other_cgroup);
    let out = rt.call(&[
        "--criu",
        &other.display().to_string(),
        "restore",
        "--image-path",
        &images_s,
        "--detach",
        "--bundle",
        &bundle,
        &id,
    ]);
    out.assert_fail()
        .assert_error_contains("not the container's");
    assert!(
        !rt.root().join(&id).exists(),
        "a refused restore left state"
    );
    let mut stray = Vec::new();
    for d in hull_tests::cgroup_dirs(&other_cgroup) {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        stray.extend(procs.split_whitespace().map(str::to_string));
    }
    let dead = wait_until(T, || {
        stray.iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        })
    });
    for d in hull_tests::cgroup_dirs(&other_cgroup) {
        let _ = std::fs::remove_dir(d);
    }
    assert!(dead, "the refused restore left processes {stray:?}");
}
