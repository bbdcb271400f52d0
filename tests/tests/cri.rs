//! hull under containerd's CRI plugin (Debian's containerd 1.6, private to each test), the
//! way kubelet drives it: RunPodSandbox, CreateContainer, StartContainer, ExecSync,
//! ContainerStats, ContainerStatus, StopContainer, RemoveContainer, StopPodSandbox,
//! RemovePodSandbox, through the CRI handler
//! * `hull`: containerd's runc shim with hull as `BinaryName`, and
//! * `hull-shim`: hull's own shim, `io.containerd.hull.v2`.
//!
//! Pods use the host network, so no CNI is needed; the sandbox ("pause") image is a
//! busybox `sleep` made locally. Afterwards nothing may be left: no pod, container,
//! process, mount, cgroup, state directory or shim.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hull_tests::bundle::CGROUP_PARENT;
use hull_tests::containerd::cri::{
    self, CriClient, CONTAINER_EXITED, CONTAINER_RUNNING, SANDBOX_NOTREADY, SANDBOX_READY,
};
use hull_tests::containerd::{
    self, Containerd, CriOptions, Options, CRI_HANDLER_HULL_SHIM, CRI_HANDLER_RUNC_SHIM,
};
use hull_tests::oci_image::{self, OciImage};
use hull_tests::skip::skipped;
use hull_tests::{cgroup_dirs, mountinfo, parse_mountinfo, unique, wait_until};

const SHIM_BIN: &str = "containerd-shim-hull-v2";

/// Where `containerd-shim-hull-v2` was built (as in tests/containerd.rs).
fn shim_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HULL_SHIM_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let next_to_hull = hull_tests::runtime::bin_path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if next_to_hull.join(SHIM_BIN).exists() {
        return next_to_hull;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

struct Env {
    client: CriClient,
    busybox: OciImage,
    _pause: OciImage,
    /// The pods' cgroup parent (removed at the end).
    cgroup_parent: String,
    logs: PathBuf,
    cd: Containerd,
}

impl Drop for Env {
    /// Whatever a failed test left: removed through CRI before containerd goes.
    fn drop(&mut self) {
        if let Ok(ids) = self.client.list_containers() {
            for id in ids {
                let _ = self.client.stop_container(&id, 0);
                let _ = self.client.remove_container(&id);
            }
        }
        if let Ok(ids) = self.client.list_pod_sandbox() {
            for id in ids {
                let _ = self.client.stop_pod_sandbox(&id);
                let _ = self.client.remove_pod_sandbox(&id);
            }
        }
        for d in cgroup_dirs(&self.cgroup_parent) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A private containerd with CRI and both images imported, or None (skipped).
fn env(test: &str) -> Option<Env> {
    if let Some(r) = containerd::skip_reason() {
        skipped(&r);
        return None;
    }
    let hull = hull_tests::runtime::bin_path();
    assert!(hull.exists(), "{hull:?} missing: build it first");
    let shim = shim_dir().join(SHIM_BIN);
    assert!(
        shim.exists(),
        "{shim:?} missing: build it first (cargo build -p hull-shim)"
    );
    let pause = oci_image::pause_image(&unique("hull-pause")).expect("build pause image");
    let busybox = oci_image::busybox_image(&unique("hull-busybox")).expect("build image");
    let opts = Options {
        path_prepend: vec![shim_dir()],
        ..Options::default()
    }
    .with_cri(CriOptions {
        hull,
        sandbox_image: pause.name.clone(),
    });
    let cd = Containerd::start(&opts).unwrap_or_else(|e| panic!("{test}: {e}"));
    cd.import(&pause.tar).assert_ok();
    cd.import(&busybox.tar).assert_ok();
    let client = CriClient::new(&cd.address);
    // The CRI service answers "not initialized yet" for a moment after containerd starts.
    let mut last = None;
    let ready = wait_until(Duration::from_secs(30), || {
        match client.list_pod_sandbox() {
            Ok(_) => true,
            Err(e) => {
                last = Some(e.to_string());
                false
            }
        }
    });
    assert!(
        ready,
        "{test}: the CRI service never answered: {last:?}\ncontainerd log:\n{}",
        cd.log_tail()
    );
    let logs = cd.scratch().join("pod-logs");
    std::fs::create_dir_all(&logs).expect("mkdir pod logs");
    Some(Env {
        client,
        busybox,
        _pause: pause,
        cgroup_parent: format!("{CGROUP_PARENT}/{}", unique("cri")),
        logs,
        cd,
    })
}

impl Env {
    #[track_caller]
    fn ok<T>(&self, what: &str, r: Result<T, cri::CriError>) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e}\ncontainerd log:\n{}", self.cd.log_tail()))
    }

    /// One shim serves the pod and it is the expected binary, and with the runc shim hull
    /// (whose state dirs are under the handler's `Root`) holds the containers `ids`.
    fn assert_driven_by_hull(&self, handler: &str, ids: &[&str]) {
        let want = if handler == CRI_HANDLER_HULL_SHIM {
            SHIM_BIN
        } else {
            "containerd-shim-runc-v2"
        };
        let shims = self.cd.shim_pids();
        // Both shims group by the CRI sandbox id: one process serves the pod's sandbox and
        // its containers.
        assert_eq!(shims.len(), 1, "shims of one pod: {shims:?}");
        for pid in shims {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            assert!(exe.ends_with(want), "shim {pid} is {exe:?}, not {want}");
        }
        if handler == CRI_HANDLER_RUNC_SHIM {
            let root = self.cd.runc_root().join(containerd::CRI_NAMESPACE);
            for id in ids {
                let state = root.join(id).join("state.json");
                assert!(state.exists(), "{state:?} missing: hull does not hold {id}");
            }
        }
    }

    /// Nothing of the pod `pod` and container `ctr` is left.
    fn assert_nothing_left(&self, pod: &str, ctr: &str) {
        let mut left = Vec::new();
        match self.client.list_containers() {
            Ok(ids) if ids.is_empty() => {}
            other => left.push(format!("containers: {other:?}")),
        }
        match self.client.list_pod_sandbox() {
            Ok(ids) if ids.is_empty() => {}
            other => left.push(format!("pod sandboxes: {other:?}")),
        }
        for id in [pod, ctr] {
            for m in parse_mountinfo(&mountinfo()) {
                if m.mount_point.contains(id) {
                    left.push(format!("mount {}", m.mount_point));
                }
            }
            for d in cgroup_dirs(&format!("{}/{id}", self.cgroup_parent)) {
                if d.exists() {
                    left.push(format!("cgroup {d:?}"));
                }
            }
            for d in [
                self.cd.task_dir(id),
                self.cd.runc_root().join(containerd::CRI_NAMESPACE).join(id),
            ] {
                if d.exists() {
                    left.push(format!("state dir {d:?}"));
                }
            }
        }
        if !wait_until(Duration::from_secs(10), || self.cd.shim_pids().is_empty()) {
            left.push(format!("shim processes {:?}", self.cd.shim_pids()));
        }
        assert!(
            left.is_empty(),
            "leftovers: {left:#?}\ncontainerd log:\n{}",
            self.cd.log_tail()
        );
    }
}

/// The whole kubelet-style life of one pod with one container through `handler`.
fn pod_lifecycle(e: &Env, handler: &str) {
    let name = unique("pod");
    let sandbox_config = cri::pod_sandbox_config(&name, &e.logs, &e.cgroup_parent);
    let pod = e.ok(
        "RunPodSandbox",
        e.client.run_pod_sandbox(&sandbox_config, handler),
    );
    let (state, got_handler) = e.ok("PodSandboxStatus", e.client.pod_sandbox_status(&pod));
    assert_eq!(state, SANDBOX_READY);
    assert_eq!(got_handler, handler);

    // The container prints, then runs until TERM, which it answers with status 7.
    let script = "echo hello-from-cri; trap 'exit 7' TERM; while true; do sleep 0.1; done";
    let config = cri::container_config("main", &e.busybox.name, &["sh", "-c", script], "main.log");
    let ctr = e.ok(
        "CreateContainer",
        e.client.create_container(&pod, &config, &sandbox_config),
    );
    e.ok("StartContainer", e.client.start_container(&ctr));
    let st = e.ok("ContainerStatus", e.client.container_status(&ctr));
    assert_eq!(st.state, CONTAINER_RUNNING, "{st:?}");
    e.assert_driven_by_hull(handler, &[&pod, &ctr]);

    let out = e.ok(
        "ExecSync",
        e.client.exec_sync(
            &ctr,
            &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
            30,
        ),
    );
    assert_eq!(out.exit_code, 3, "{out:?}");
    assert_eq!(out.stdout, "exec-out\n", "{out:?}");
    assert_eq!(out.stderr, "exec-err\n", "{out:?}");
    // The container shares the sandbox's PID namespace: the pause process is pid 1.
    let ps = e.ok(
        "ExecSync ps",
        e.client.exec_sync(&ctr, &["cat", "/proc/1/cmdline"], 30),
    );
    assert_eq!(ps.exit_code, 0, "{ps:?}");
    assert!(ps.stdout.starts_with("/sleep"), "{ps:?}");

    let stats = e.ok("ContainerStats", e.client.container_stats(&ctr));
    assert_eq!(stats.id, ctr, "{stats:?}");
    assert!(stats.memory_working_set.is_some_and(|m| m > 0), "{stats:?}");
    assert!(stats.cpu_usage_core_nanos.is_some(), "{stats:?}");

    eprintln!("{handler}: pod {pod}, container {ctr}: {stats:?}");
    e.ok("StopContainer", e.client.stop_container(&ctr, 10));
    let st = e.ok("ContainerStatus", e.client.container_status(&ctr));
    assert_eq!(st.state, CONTAINER_EXITED, "{st:?}");
    assert_eq!(st.exit_code, 7, "{st:?}");
    let log = std::fs::read_to_string(e.logs.join("main.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains(" stdout ") && l.ends_with("hello-from-cri")),
        "container log: {log:?}"
    );

    e.ok("RemoveContainer", e.client.remove_container(&ctr));
    e.ok("StopPodSandbox", e.client.stop_pod_sandbox(&pod));
    let (state, _) = e.ok("PodSandboxStatus", e.client.pod_sandbox_status(&pod));
    assert_eq!(state, SANDBOX_NOTREADY);
    e.ok("RemovePodSandbox", e.client.remove_pod_sandbox(&pod));
    e.assert_nothing_left(&pod, &ctr);
}

#[test]
fn cri_version_and_runtime_handlers() {
    let Some(e) = env("cri-version") else {
        return;
    };
    let (name, version, api) = e.ok("Version", e.client.version());
    assert_eq!(name, "containerd");
    assert!(version.starts_with("1.6"), "{version}");
    assert_eq!(api, "v1");
    // An unknown handler is refused with containerd's message.
    let config = cri::pod_sandbox_config(&unique("pod"), &e.logs, &e.cgroup_parent);
    match e.client.run_pod_sandbox(&config, "no-such-handler") {
        Err(cri::CriError::Status { message, .. }) => {
            assert!(message.contains("no-such-handler"), "{message}")
        }
        other => panic!("expected an error for an unknown handler, got {other:?}"),
    }
}

#[test]
fn cri_pod_lifecycle_runc_shim() {
    let Some(e) = env("cri-runc-shim") else {
        return;
    };
    pod_lifecycle(&e, CRI_HANDLER_RUNC_SHIM);
}

#[test]
fn cri_pod_lifecycle_hull_shim() {
    let Some(e) = env("cri-hull-shim") else {
        return;
    };
    pod_lifecycle(&e, CRI_HANDLER_HULL_SHIM);
}
