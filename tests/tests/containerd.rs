//! hull under a real containerd (Debian's 1.6, private to each test): an image made
//! locally and imported, then every `ctr task` operation through
//! * containerd's own runc shim driving hull as its `BinaryName`
//!   (`ctr run --runtime io.containerd.runc.v2 --runc-binary <hull>`), and
//! * hull's shim, `containerd-shim-hull-v2`, found on containerd's PATH
//!   (`ctr run --runtime io.containerd.hull.v2`).
//!
//! Afterwards nothing may be left: no process, mount, cgroup or state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hull_tests::bundle::CGROUP_PARENT;
use hull_tests::containerd::{self, Containerd, Options};
use hull_tests::oci_image::{self, OciImage};
use hull_tests::skip::skipped;
use hull_tests::{cgroup_dirs, mountinfo, unique, wait_until};

const SHIM_BIN: &str = "containerd-shim-hull-v2";

/// Which shim drives hull.
enum Via {
    /// containerd-shim-runc-v2 with hull as BinaryName.
    RuncShim { hull: PathBuf },
    /// containerd-shim-hull-v2.
    HullShim,
}

struct Env {
    cd: Containerd,
    image: OciImage,
    via: Via,
}

/// Where `containerd-shim-hull-v2` was built: `$HULL_SHIM_DIR`, else next to the hull binary
/// under test, else the workspace's target/debug.
fn target_dir() -> PathBuf {
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

/// A private containerd with the busybox image imported, or None (skipped) when this
/// machine cannot run it.
fn env(test: &str, via: Via) -> Option<Env> {
    if let Some(r) = containerd::skip_reason() {
        skipped(&r);
        return None;
    }
    let mut opts = Options::default();
    match &via {
        Via::RuncShim { hull } => {
            assert!(hull.exists(), "{hull:?} missing: build it first");
        }
        Via::HullShim => {
            let shim = target_dir().join(SHIM_BIN);
            assert!(
                shim.exists(),
                "{shim:?} missing: build it first (cargo build -p hull-shim)"
            );
            opts.path_prepend.push(target_dir());
        }
    }
    let cd = Containerd::start(&opts).unwrap_or_else(|e| panic!("{test}: {e}"));
    let image = oci_image::busybox_image(&unique("hull-busybox")).expect("build image");
    cd.import(&image.tar).assert_ok();
    let listed = cd.ctr(&["image", "ls", "-q"]);
    assert!(listed.stdout.contains(&image.name), "{listed}");
    Some(Env { cd, image, via })
}

impl Env {
    fn runtime_args(&self) -> Vec<String> {
        match &self.via {
            Via::RuncShim { hull } => vec![
                "--runtime".into(),
                "io.containerd.runc.v2".into(),
                "--runc-binary".into(),
                hull.display().to_string(),
                "--runc-root".into(),
                self.cd.runc_root().display().to_string(),
            ],
            Via::HullShim => vec!["--runtime".into(), "io.containerd.hull.v2".into()],
        }
    }

    fn cgroup(&self, id: &str) -> String {
        format!("{CGROUP_PARENT}/{}-{id}", self.cd.namespace)
    }

    /// `ctr run [extra] --fifo-dir --cgroup <runtime> IMAGE ID ARGS...`
    fn run_args(&self, extra: &[&str], id: &str, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend([
            "--fifo-dir".into(),
            self.cd.fifo_dir().display().to_string(),
            "--cgroup".into(),
            self.cgroup(id),
        ]);
        v.extend(self.runtime_args());
        v.push(self.image.name.clone());
        v.push(id.into());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn ctr(&self, args: &[String]) -> containerd::CtrOut {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cd.ctr(&a)
    }

    /// The status column of `ctr task ls` for `id`.
    fn task_status(&self, id: &str) -> Option<String> {
        let out = self.cd.ctr(&["task", "ls"]);
        out.stdout.lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }

    fn wait_task_status(&self, id: &str, want: &str) -> bool {
        wait_until(Duration::from_secs(20), || {
            self.task_status(id).as_deref() == Some(want)
        })
    }

    /// The one shim serving our running container is the expected binary; prints its
    /// VmRSS (the per-container memory cost of the shim).
    fn check_shim_binary(&self) {
        let want = match self.via {
            Via::RuncShim { .. } => "containerd-shim-runc-v2",
            Via::HullShim => SHIM_BIN,
        };
        let shims = self.cd.shim_pids();
        assert_eq!(shims.len(), 1, "shims: {shims:?}");
        let exe = std::fs::read_link(format!("/proc/{}/exe", shims[0])).unwrap_or_default();
        assert!(exe.ends_with(want), "shim {exe:?} is not {want}");
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", shims[0])).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap_or("VmRSS: ?");
        eprintln!("{want} serving 1 running container: {rss}");
    }

    /// Where the runtime keeps the container's state.
    fn state_dirs(&self, id: &str) -> Vec<PathBuf> {
        let mut v = vec![self.cd.task_dir(id)];
        if matches!(self.via, Via::RuncShim { .. }) {
            v.push(self.cd.runc_root().join(&self.cd.namespace).join(id));
        }
        v
    }

    /// Nothing of container `id` is left: processes `pids`, mounts, cgroup, state dirs,
    /// and (after a grace period) no shim of this containerd.
    fn assert_nothing_left(&self, id: &str, pids: &[i32]) {
        let mut left = Vec::new();
        let gone = wait_until(Duration::from_secs(10), || {
            pids.iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
        });
        if !gone {
            left.push(format!("processes still alive among {pids:?}"));
        }
        let task_dir = self.cd.task_dir(id).display().to_string();
        for m in hull_tests::parse_mountinfo(&mountinfo()) {
            if m.mount_point.starts_with(&task_dir) {
                left.push(format!("mount {}", m.mount_point));
            }
        }
        for d in cgroup_dirs(&self.cgroup(id)) {
            if d.exists() {
                left.push(format!("cgroup {d:?}"));
            }
        }
        for d in self.state_dirs(id) {
            if d.exists() {
                left.push(format!("state dir {d:?}"));
            }
        }
        if !wait_until(Duration::from_secs(10), || self.cd.shim_pids().is_empty()) {
            left.push(format!("shim processes {:?}", self.cd.shim_pids()));
        }
        assert!(
            left.is_empty(),
            "leftovers of {id}: {left:#?}\ncontainerd log:\n{}",
            self.cd.log_tail()
        );
    }
}

/// A container that prints and exits with a chosen status, which `ctr run` exits with.
fn exit_status_is_seen(e: &Env) {
    let id = unique("exit");
    let out = e.ctr(&e.run_args(
        &["--rm"],
        &id,
        &[
            "sh",
            "-c",
            "echo hello-from-hull; echo to-stderr >&2; exit 7",
        ],
    ));
    assert_eq!(out.code(), 7, "{out}\n{}", e.cd.log_tail());
    assert!(out.stdout.contains("hello-from-hull"), "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    // A terminal container: output through the pty.
    let id2 = unique("tty");
    let args = e.run_args(&["--rm", "-t"], &id2, &["sh", "-c", "tty; exit 5"]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = e.cd.ctr_tty(&a, b"", Duration::from_secs(60));
    assert_eq!(code, 5, "{text}\n{}", e.cd.log_tail());
    assert!(text.contains("/dev/pts/"), "{text}");
    e.assert_nothing_left(&id, &[]);
    e.assert_nothing_left(&id2, &[]);
}

/// run -d, exec (with and without a tty), ps, pause/resume, metrics, kill TERM, task
/// delete (status seen), container delete; then a second one killed with KILL.
fn task_operations(e: &Env) {
    let id = unique("ops");
    // Busybox sh as pid 1 ignores TERM unless trapped.
    let script = "trap 'exit 42' TERM; echo started; while true; do sleep 0.1; done";
    e.ctr(&e.run_args(&["-d"], &id, &["sh", "-c", script]))
        .assert_ok();
    assert!(
        e.wait_task_status(&id, "RUNNING"),
        "{:?}\n{}",
        e.task_status(&id),
        e.cd.log_tail()
    );

    e.check_shim_binary();

    let fifo_dir = e.cd.fifo_dir().display().to_string();
    let out = e.exec_sh(&id, "plain", "echo exec-out; echo exec-err >&2; exit 3");
    assert_eq!(out.code(), 3, "{out}");
    assert!(out.stdout.contains("exec-out"), "{out}");
    assert!(out.stderr.contains("exec-err"), "{out}");

    let (code, text) = e.cd.ctr_tty(
        &[
            "task",
            "exec",
            "--fifo-dir",
            &fifo_dir,
            "-t",
            "--exec-id",
            "tty",
            &id,
            "sh",
            "-c",
            "tty; exit 4",
        ],
        b"",
        Duration::from_secs(60),
    );
    assert_eq!(code, 4, "{text}\n{}", e.cd.log_tail());
    assert!(text.contains("/dev/pts/"), "{text}");

    let ps = e.cd.ctr(&["task", "ps", &id]);
    ps.assert_ok();
    let pids: Vec<i32> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!pids.is_empty(), "{ps}");

    e.cd.ctr(&["task", "pause", &id]).assert_ok();
    assert!(
        e.wait_task_status(&id, "PAUSED"),
        "{:?}",
        e.task_status(&id)
    );
    e.cd.ctr(&["task", "resume", &id]).assert_ok();
    assert!(
        e.wait_task_status(&id, "RUNNING"),
        "{:?}",
        e.task_status(&id)
    );

    let metrics = e.cd.ctr(&["task", "metrics", &id]);
    metrics.assert_ok();
    assert!(
        metrics.stdout.contains("pids.current") && metrics.stdout.contains("memory"),
        "{metrics}"
    );

    e.cd.ctr(&["task", "kill", "-s", "SIGTERM", &id])
        .assert_ok();
    assert!(
        e.wait_task_status(&id, "STOPPED"),
        "{:?}",
        e.task_status(&id)
    );
    let del = e.cd.ctr(&["task", "delete", &id]);
    del.assert_ok();
    // ctr reports a non-zero exit status of the deleted task as a warning.
    assert!(del.stderr.contains("exit code 42"), "{del}");
    e.cd.ctr(&["container", "delete", &id]).assert_ok();
    e.assert_nothing_left(&id, &pids);

    let id2 = unique("kill");
    e.ctr(&e.run_args(&["-d"], &id2, &["sleep", "1000"]))
        .assert_ok();
    assert!(
        e.wait_task_status(&id2, "RUNNING"),
        "{:?}",
        e.task_status(&id2)
    );
    let pids2: Vec<i32> =
        e.cd.ctr(&["task", "ps", &id2])
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
    e.cd.ctr(&["task", "kill", "-s", "SIGKILL", &id2])
        .assert_ok();
    assert!(
        e.wait_task_status(&id2, "STOPPED"),
        "{:?}",
        e.task_status(&id2)
    );
    let del = e.cd.ctr(&["task", "delete", &id2]);
    del.assert_ok();
    assert!(del.stderr.contains("exit code 137"), "{del}");
    e.cd.ctr(&["container", "delete", &id2]).assert_ok();
    e.assert_nothing_left(&id2, &pids2);
}

fn runc_shim() -> Via {
    Via::RuncShim {
        hull: hull_tests::runtime::bin_path(),
    }
}

#[test]
fn containerd_imports_the_busybox_image() {
    let Some(e) = env("import", runc_shim()) else {
        return;
    };
    let out = e.cd.ctr(&["image", "check"]);
    out.assert_ok();
    assert!(out.stdout.contains("complete"), "{out}");
}

#[test]
fn containerd_runc_shim_exit_status() {
    let Some(e) = env("runc-shim-exit", runc_shim()) else {
        return;
    };
    exit_status_is_seen(&e);
}

#[test]
fn containerd_runc_shim_task_operations() {
    let Some(e) = env("runc-shim-ops", runc_shim()) else {
        return;
    };
    task_operations(&e);
}

#[test]
fn containerd_hull_shim_exit_status() {
    let Some(e) = env("hull-shim-exit", Via::HullShim) else {
        return;
    };
    exit_status_is_seen(&e);
}

#[test]
fn containerd_hull_shim_task_operations() {
    let Some(e) = env("hull-shim-ops", Via::HullShim) else {
        return;
    };
    task_operations(&e);
}

impl Env {
    /// The pids `ctr task ps` lists for `id`.
    fn task_pids(&self, id: &str) -> Vec<i32> {
        self.cd
            .ctr(&["task", "ps", id])
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

/// Item 4 of issue 9: real-time signals through `ctr task kill`, to the init
/// (`SIGRTMIN+3`, what `docker stop` sends to a systemd image) and to an exec (`SIGRTMAX`).
/// Each process traps its signal and exits with its number.
fn realtime_signals(e: &Env) {
    let id = unique("rt");
    // pid 1 only gets signals it handles; `wait` returns as soon as the trap fires.
    e.ctr(&e.run_args(
        &["-d"],
        &id,
        &["sh", "-c", "trap 'exit 37' 37; sleep 1000 & wait"],
    ))
    .assert_ok();
    assert!(
        e.wait_task_status(&id, "RUNNING"),
        "{:?}\n{}",
        e.task_status(&id),
        e.cd.log_tail()
    );
    assert!(
        wait_until(Duration::from_secs(20), || e.task_pids(&id).len() == 2),
        "init's sleep never started: {:?}",
        e.task_pids(&id)
    );
    let fifo_dir = e.cd.fifo_dir().display().to_string();
    let mut exec = e.cd.ctr_cmd();
    exec.args([
        "task",
        "exec",
        "--fifo-dir",
        &fifo_dir,
        "--exec-id",
        "rt",
        &id,
        "sh",
        "-c",
        // The sleep outlives the exec's shell: it must not hold the exec's stdout, or
        // `ctr task exec` waits for it (see the report on issue 9).
        "trap 'exit 64' 64; sleep 1000 >/dev/null 2>&1 & wait",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut exec = exec.spawn().expect("spawn ctr task exec");
    let started = wait_until(Duration::from_secs(30), || e.task_pids(&id).len() == 4);
    let pids = e.task_pids(&id);
    if !started {
        let _ = exec.kill();
        let _ = exec.wait();
        panic!("the exec's sleep never started: {pids:?}");
    }
    let k =
        e.cd.ctr(&["task", "kill", "--exec-id", "rt", "-s", "SIGRTMAX", &id]);
    if !k.ok() {
        let _ = exec.kill();
        let _ = exec.wait();
    }
    k.assert_ok();
    let st = hull_tests::util::wait_child(&mut exec, Duration::from_secs(30));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(64),
        "exec after SIGRTMAX: {st:?}\n{}",
        e.cd.log_tail()
    );
    e.cd.ctr(&["task", "kill", "-s", "SIGRTMIN+3", &id])
        .assert_ok();
    assert!(
        e.wait_task_status(&id, "STOPPED"),
        "{:?}",
        e.task_status(&id)
    );
    let del = e.cd.ctr(&["task", "delete", &id]);
    del.assert_ok();
    assert!(del.stderr.contains("exit code 37"), "{del}");
    e.cd.ctr(&["container", "delete", &id]).assert_ok();
    e.assert_nothing_left(&id, &pids);
}

/// Item 10 of issue 9: a container killed by its memory cgroup's OOM killer exits 137 and
/// the shim publishes `/tasks/oom` for it (as containerd's runc shim does).
fn oom_event(e: &Env) {
    let events = e.cd.events();
    // `ctr events` has subscribed once it shows a namespace made after it started (a fixed
    // sleep is not enough on a loaded machine).
    let probe = unique("probe");
    let subscribed = (0..50).any(|_| {
        let ns = format!("{probe}-sub");
        let _ = e.cd.ctr(&["namespaces", "create", &ns]);
        let seen = events.wait_for(&["/namespaces/create", &ns], Duration::from_millis(200));
        let _ = e.cd.ctr(&["namespaces", "remove", &ns]);
        seen
    });
    assert!(
        subscribed,
        "ctr events never subscribed:\n{}",
        events.text()
    );
    let id = unique("oom");
    // The string doubles until the 32 MiB limit stops it (the host has no swap to use).
    let out = e.ctr(&e.run_args(
        &["--rm", "--memory-limit", "33554432"],
        &id,
        &[
            "sh",
            "-c",
            "x=0123456789abcdef; while true; do x=$x$x; done",
        ],
    ));
    assert_eq!(out.code(), 137, "{out}\n{}", e.cd.log_tail());
    assert!(
        events.wait_for(&["/tasks/oom", &id], Duration::from_secs(10)),
        "no /tasks/oom event for {id}; events:\n{}\ncontainerd log:\n{}",
        events.text(),
        e.cd.log_tail()
    );
    e.assert_nothing_left(&id, &[]);
}

/// The JSON number at `path` (`"memory.usage.limit"`) of `ctr task metrics --format json`.
fn metric(v: &serde_json::Value, path: &str) -> u64 {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// Item 10 of issue 9: `ctr task metrics` carries what containerd's runc shim sends for the
/// same container (cgroup v1 here: `io.containerd.cgroups.v1.Metrics`). ctr leaves zero
/// fields out of its JSON, so each field checked must be there and plausible.
fn metrics_are_complete(e: &Env) {
    let id = unique("metrics");
    let limit: u64 = 64 << 20;
    let limit_s = limit.to_string();
    // Some user CPU time (a busy loop), page cache (a file), children that exit (pages
    // uncharged), then idle with three processes (only ever three at the end).
    let script = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
                  dd if=/dev/zero of=/tmp/f bs=64k count=16 2>/dev/null; \
                  cat /tmp/f > /dev/null; sleep 1000 & sleep 1000 & wait";
    e.ctr(&e.run_args(
        &["-d", "--memory-limit", &limit_s],
        &id,
        &["sh", "-c", script],
    ))
    .assert_ok();
    assert!(
        e.wait_task_status(&id, "RUNNING"),
        "{:?}\n{}",
        e.task_status(&id),
        e.cd.log_tail()
    );
    // The loop is over once the shell runs its two `sleep` children.
    assert!(
        wait_until(Duration::from_secs(90), || e.task_pids(&id).len() == 3),
        "the container never reached its sleeps: {:?}",
        e.task_pids(&id)
    );
    let pids = e.task_pids(&id);
    let out = e.cd.ctr(&["task", "metrics", "--format", "json", &id]);
    out.assert_ok();
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|err| panic!("{err}: {out}"));
    eprintln!("ctr task metrics --format json:\n{}", out.stdout);
    let mut missing = Vec::new();
    let mut want = |what: &str, ok: bool| {
        if !ok {
            missing.push(what.to_string());
        }
    };
    // cgroup v1 fields (io.containerd.cgroups.v1.Metrics).
    want("pids.current", metric(&v, "pids.current") == 3);
    want("cpu.usage.total", metric(&v, "cpu.usage.total") > 0);
    want("cpu.usage.user", metric(&v, "cpu.usage.user") > 0);
    let per_cpu: u64 = v["cpu"]["usage"]["per_cpu"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    want("cpu.usage.per_cpu", per_cpu > 0);
    want(
        "memory.usage.limit",
        metric(&v, "memory.usage.limit") == limit,
    );
    want("memory.usage.usage", metric(&v, "memory.usage.usage") > 0);
    want("memory.usage.max", metric(&v, "memory.usage.max") > 0);
    want(
        "memory.hierarchical_memory_limit",
        metric(&v, "memory.hierarchical_memory_limit") == limit,
    );
    want("memory.rss", metric(&v, "memory.rss") > 0);
    want("memory.cache", metric(&v, "memory.cache") > 0);
    // ctr's JSON names (Go's): pgpgin is `pg_pg_in`.
    want("memory.pg_pg_in", metric(&v, "memory.pg_pg_in") > 0);
    want("memory.pg_pg_out", metric(&v, "memory.pg_pg_out") > 0);
    want("memory.pg_fault", metric(&v, "memory.pg_fault") > 0);
    for f in [
        "total_cache",
        "total_rss",
        "total_pg_pg_in",
        "total_pg_pg_out",
        "total_pg_fault",
        "total_active_anon",
        "total_inactive_file",
    ] {
        let total = metric(&v, &format!("memory.{f}"));
        // A leaf cgroup: the hierarchical total is at least the local counter.
        let local = metric(&v, &format!("memory.{}", &f["total_".len()..]));
        want(&format!("memory.{f}"), total > 0 && total >= local);
    }
    let mem = cgroup_dirs(&e.cgroup(&id))
        .into_iter()
        .find(|d| d.join("memory.stat").exists());
    let has = |file: &str| mem.as_ref().is_some_and(|d| d.join(file).exists());
    if has("memory.memsw.limit_in_bytes") {
        want(
            "memory.hierarchical_swap_limit",
            metric(&v, "memory.hierarchical_swap_limit") >= limit,
        );
        want("memory.swap.limit", metric(&v, "memory.swap.limit") > 0);
        want("memory.swap.usage", metric(&v, "memory.swap.usage") > 0);
    } else {
        eprintln!("skipped: swap fields: this kernel has no memory.memsw.* (swap accounting off)");
    }
    if has("memory.kmem.tcp.limit_in_bytes") {
        want(
            "memory.kernel_tcp.limit",
            metric(&v, "memory.kernel_tcp.limit") > 0,
        );
    } else {
        eprintln!("skipped: memory.kernel_tcp: this kernel has no memory.kmem.tcp.*");
    }
    if has("memory.kmem.limit_in_bytes") {
        want("memory.kernel.limit", metric(&v, "memory.kernel.limit") > 0);
    }
    assert!(
        missing.is_empty(),
        "metrics lack {missing:?}:\n{}",
        out.stdout
    );
    e.cd.ctr(&["task", "kill", "-s", "SIGKILL", &id])
        .assert_ok();
    assert!(
        e.wait_task_status(&id, "STOPPED"),
        "{:?}",
        e.task_status(&id)
    );
    e.cd.ctr(&["task", "delete", &id]).assert_ok();
    e.cd.ctr(&["container", "delete", &id]).assert_ok();
    e.assert_nothing_left(&id, &pids);
}

#[test]
fn containerd_runc_shim_realtime_signals() {
    let Some(e) = env("runc-shim-rt", runc_shim()) else {
        return;
    };
    realtime_signals(&e);
}

#[test]
fn containerd_hull_shim_realtime_signals() {
    let Some(e) = env("hull-shim-rt", Via::HullShim) else {
        return;
    };
    realtime_signals(&e);
}

/// The reference: containerd's runc shim watches the cgroup hull made.
#[test]
fn containerd_runc_shim_oom_event() {
    let Some(e) = env("runc-shim-oom", runc_shim()) else {
        return;
    };
    oom_event(&e);
}

#[test]
fn containerd_hull_shim_oom_event() {
    let Some(e) = env("hull-shim-oom", Via::HullShim) else {
        return;
    };
    oom_event(&e);
}

/// The reference: containerd's runc shim reads the cgroup hull made.
#[test]
fn containerd_runc_shim_metrics() {
    let Some(e) = env("runc-shim-metrics", runc_shim()) else {
        return;
    };
    metrics_are_complete(&e);
}

#[test]
fn containerd_hull_shim_metrics() {
    let Some(e) = env("hull-shim-metrics", Via::HullShim) else {
        return;
    };
    metrics_are_complete(&e);
}

impl Env {
    /// The pid of the shim serving task `id`: the parent of its init.
    fn shim_of(&self, id: &str) -> i32 {
        let init = *self
            .task_pids(id)
            .first()
            .unwrap_or_else(|| panic!("no pids for task {id}"));
        let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no parent in /proc/{init}/stat: {stat:?}"))
    }

    /// `ctr task exec --exec-id EXEC_ID ID sh -c SCRIPT`, without a terminal.
    fn exec_sh(&self, id: &str, exec_id: &str, script: &str) -> containerd::CtrOut {
        let fifo_dir = self.cd.fifo_dir().display().to_string();
        self.cd.ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            &fifo_dir,
            "--exec-id",
            exec_id,
            id,
            "sh",
            "-c",
            script,
        ])
    }

    /// Kills task `id`, waits until it stopped, deletes task and container.
    fn remove(&self, id: &str) {
        self.cd.ctr(&["task", "kill", "-s", "KILL", id]).assert_ok();
        assert!(
            self.wait_task_status(id, "STOPPED"),
            "{:?}",
            self.task_status(id)
        );
        self.cd.ctr(&["task", "delete", id]).assert_ok();
        self.cd.ctr(&["container", "delete", id]).assert_ok();
    }
}

/// Shim grouping: containers whose config.json names the same group (here the CRI sandbox
/// id that every container of a pod carries) share one shim process, which serves each on
/// its own and exits after the last is deleted; a container outside the group gets a shim
/// of its own.
#[test]
fn containerd_hull_shim_serves_the_containers_of_a_pod_from_one_process() {
    let Some(e) = env("hull-shim-group", Via::HullShim) else {
        return;
    };
    let annotation = format!("io.kubernetes.cri.sandbox-id={}", unique("pod"));
    let (a, b, c) = (unique("grp-a"), unique("grp-b"), unique("grp-c"));
    for id in [&a, &b] {
        e.ctr(&e.run_args(&["-d", "--annotation", &annotation], id, &["sleep", "1000"]))
            .assert_ok();
        assert!(e.wait_task_status(id, "RUNNING"), "{:?}", e.task_status(id));
    }
    e.ctr(&e.run_args(&["-d"], &c, &["sleep", "1000"]))
        .assert_ok();
    assert!(e.wait_task_status(&c, "RUNNING"), "{:?}", e.task_status(&c));
    let pod_shim = e.shim_of(&a);
    assert_eq!(
        e.shim_of(&b),
        pod_shim,
        "the pod's two containers share a shim"
    );
    assert_ne!(
        e.shim_of(&c),
        pod_shim,
        "a container outside the pod has its own"
    );
    let mut shims = e.cd.shim_pids();
    shims.sort();
    let mut want = vec![pod_shim, e.shim_of(&c)];
    want.sort();
    assert_eq!(shims, want, "two shim processes for three containers");

    // One container of the pod goes; the other keeps running and is served as before.
    e.remove(&a);
    assert_eq!(e.task_status(&b).as_deref(), Some("RUNNING"));
    assert_eq!(e.shim_of(&b), pod_shim);
    let out = e.exec_sh(&b, "x", "exit 7");
    assert_eq!(out.code(), 7, "{out}");
    assert!(
        Path::new(&format!("/proc/{pod_shim}")).exists(),
        "the pod's shim outlives one of its containers"
    );

    // The last one goes: so does the pod's shim; the other shim stays.
    e.remove(&b);
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pod_shim}"
        ))
        .exists()),
        "the pod's shim {pod_shim} outlived its last container"
    );
    assert_eq!(e.task_status(&c).as_deref(), Some("RUNNING"));
    e.remove(&c);
}
