//! VM containers (`io.hull.isolation=vm`) end to end, in the nested test host
//! (`hull_tests::nested`; directly on the host where its KVM boots Linux): the real `hull`
//! CLI, the guest image built from Debian's cloud kernel and `hull-agent`, virtiofsd, and a
//! busybox bundle. One L1 boot per lane runs every scenario below as a step; the tests
//! share that one run and check each step's output.

use std::sync::OnceLock;

use hull_tests::nested::{shared_run, Plan, Report, Skip};
use hull_tests::Bundle;

use hull_tests::nested::vm_containers::{self, Binaries, PRELUDE};

/// `hull run`: output, chosen exit status, a kernel of its own, stdin, and rootfs writes.
const STEP_RUN: &str = r#"
mkb plain; mkb run
hull run --bundle plain plain-$$ > plain.out 2>&1; echo "plain-exit $?"
echo "host-boot-id $(cat /proc/sys/kernel/random/boot_id)"
hull run --keep --bundle run run-$$ > run.out 2> run.err; echo "run-exit $?"
cat run.out; sed 's/^/stderr: /' run.err
echo "host-sees $(cat run/rootfs/written-by-guest 2>/dev/null)"
echo "state-after $(status run-$$)"
hull delete run-$$; leftovers run-$$
mkb stdin
echo "line-from-host" | hull run --bundle stdin stdin-$$ > stdin.out 2>&1; echo "stdin-exit $?"
sed 's/^/stdin: /' stdin.out
hull delete stdin-$$ 2>/dev/null; hull delete plain-$$ 2>/dev/null; true
"#;

/// create/start/exec/kill of a long-running VM container.
const STEP_EXEC: &str = r#"
mkb sleeper
hull create --bundle sleeper sleeper-$$ > create.out 2>&1; echo "create-exit $?"; cat create.out
echo "status-created $(status sleeper-$$)"
hull start sleeper-$$; echo "start-exit $?"
wait_file sleeper/rootfs/started 60 && echo "workload-started"
hull exec sleeper-$$ sh -c 'echo exec-out $(cat /proc/sys/kernel/random/boot_id); exit 3'; echo "exec-exit $?"
echo "exec-stdin" | hull exec sleeper-$$ sh -c 'read l; echo exec-got $l'; echo "exec-stdin-exit $?"
hull exec -t sleeper-$$ tty > tty.out 2>&1 < /dev/null; echo "exec-tty-exit $?"
# Detached (as runc's shim execs): the relay outlives `hull exec`.
hull exec -d sleeper-$$ sh -c 'sleep 1; touch /exec-detached'; echo "exec-detach-exit $?"
wait_file sleeper/rootfs/exec-detached 30 && echo "exec-detached ran"
sed 's/^/exec-tty: /' tty.out
echo "ps $(hull ps sleeper-$$ 2>&1 | tail -n +2 | wc -l)"
hull events --stats sleeper-$$ > events.out 2>&1; echo "events-exit $?"
grep -q '"type":"stats"' events.out && echo "events-stats yes"
hull pause sleeper-$$ 2> pause.err; echo "pause-exit $?"; sed 's/^/pause: /' pause.err
echo "status-paused $(status sleeper-$$)"
c1=$(cat sleeper/rootfs/count); sleep 2; c2=$(cat sleeper/rootfs/count)
[ "$c1" = "$c2" ] && echo "paused-count still"
hull resume sleeper-$$; echo "resume-exit $?"
echo "status-resumed $(status sleeper-$$)"
i=0; while [ "$(cat sleeper/rootfs/count)" = "$c2" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ "$(cat sleeper/rootfs/count)" != "$c2" ] && echo "resumed-count moves"
hull kill sleeper-$$ TERM; echo "kill-exit $?"
i=0; while [ "$(status sleeper-$$)" = running ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "status-after-term $(status sleeper-$$)"
echo "trap-ran $(cat sleeper/rootfs/got-term 2>/dev/null)"
hull delete sleeper-$$; echo "delete-exit $?"; leftovers sleeper-$$
mkb stubborn
hull run -d --bundle stubborn stubborn-$$ > /dev/null 2>&1; echo "stubborn-run $?"
wait_file stubborn/rootfs/started 60
hull kill stubborn-$$ KILL
i=0; while [ "$(status stubborn-$$)" = running ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "status-after-kill $(status stubborn-$$)"
hull delete stubborn-$$; leftovers stubborn-$$
mkb forced
hull run -d --bundle forced forced-$$ > /dev/null 2>&1
wait_file forced/rootfs/started 60
hull delete --force forced-$$; echo "force-delete-exit $?"; leftovers forced-$$
"#;

/// The memory limit holds the guest: MemTotal inside is below the container's limit.
const STEP_LIMITS: &str = r#"
mkb limited
hull run --bundle limited limited-$$ > limited.out 2>&1; echo "limited-exit $?"
cat limited.out
hull delete limited-$$ 2>/dev/null; true
"#;

/// Faults: the VMM killed, virtiofsd killed, the guest kernel panicking.
const STEP_FAULTS: &str = r#"
for f in vmm virtiofsd; do
  mkb fault-$f
  hull run -d --bundle fault-$f fault-$f-$$ > /dev/null 2>&1
  wait_file fault-$f/rootfs/started 60
  pid=$(hull state fault-$f-$$ | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
  if [ $f = vmm ]; then kill -9 $pid; else
    for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in *virtiofsd) kill -9 ${p#/proc/};; esac; done
  fi
  i=0; while [ "$(status fault-$f-$$)" = running ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  echo "fault-$f-status $(status fault-$f-$$)"
  hull delete --force fault-$f-$$; echo "fault-$f-delete $?"; leftovers fault-$f-$$
done
mkb panic
hull run --bundle panic panic-$$ > panic.out 2>&1; echo "panic-exit $?"
sed 's/^/panic: /' panic.out | tail -n 3
hull delete --force panic-$$; leftovers panic-$$
"#;

/// Bind mounts of host paths (Docker's and CRI's /etc files, volumes, /dev/shm): staged on
/// the host, bound in the guest; read-only holds; nothing staged is left after delete.
const STEP_BINDS: &str = r#"
mkdir -p /tmp/binds/dir; echo from-host > /tmp/binds/file; : > /tmp/binds/term
mkb binds
hull run --bundle binds binds-$$ > binds.out 2>&1; echo "binds-exit $?"
sed 's/^/binds: /' binds.out
echo "host-dir $(cat /tmp/binds/dir/out 2>/dev/null)"
echo "host-term $(cat /tmp/binds/term)"
echo "host-file $(cat /tmp/binds/file)"
hull delete binds-$$ 2>/dev/null
[ -e binds/rootfs/.hull-vm-binds ] && echo "left: staging dir"
leftovers binds-$$
mkb badbind
hull run --bundle badbind badbind-$$ > badbind.out 2>&1; echo "badbind-exit $?"
sed 's/^/badbind: /' badbind.out
[ -e badbind/rootfs/.hull-vm-binds ] && echo "left: staging dir"
leftovers badbind-$$
"#;

/// A guest that cannot be had is a clear `create` error with nothing left behind.
const STEP_ERRORS: &str = r#"
mkb noimage
HULL_VM_IMAGE_DIR=/nonexistent hull run --bundle noimage noimage-$$ > noimage.out 2>&1; echo "noimage-exit $?"
sed 's/^/noimage: /' noimage.out; leftovers noimage-$$
"#;

/// Both containerd paths: `ctr run` through runc's shim with hull as its runc binary
/// (`--runc-binary`, containerd's `BinaryName`) and through `containerd-shim-hull-v2`.
const STEP_CTR: &str = r#"
[ -x $NEST/nested/bin/containerd ] || { echo "ctr-skip"; exit 0; }
D=/run/hull-ctrd; mkdir -p $D
containerd --config $NEST/nested/containerd/config.toml > $D/log 2>&1 &
cpid=$!
wait_file $D/sock 60 || { echo "containerd did not start"; tail -n 20 $D/log; }
C="ctr -a $D/sock -n hull-vm"
$C image import --snapshotter native --all-platforms $NEST/nested/containerd/busybox.tar > import.out 2>&1
echo "import-exit $?"; sed 's/^/import: /' import.out
echo "host-boot-id $(cat /proc/sys/kernel/random/boot_id)"
for via in runc hull; do
  if [ $via = runc ]; then rt="--runtime io.containerd.runc.v2 --runc-binary $(command -v hull)"
  else rt="--runtime io.containerd.hull.v2"; fi
  $C run --rm --snapshotter native $rt --annotation io.hull.isolation=vm IMAGE ctr-$via-$$ \
    sh -c 'echo guest-boot-id $(cat /proc/sys/kernel/random/boot_id); echo to-stderr >&2; exit 5' > ctr-$via.out 2>&1
  echo "ctr-$via-exit $?"; sed "s/^/ctr-$via: /" ctr-$via.out
  $C containers ls -q | grep -q ctr-$via-$$ && echo "left: containerd container ctr-$via-$$"
  # A long-running one: exec, pause/resume, TERM, delete.
  t=ctrd-$via-$$
  $C run -d --snapshotter native $rt --annotation io.hull.isolation=vm IMAGE $t \
    sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done' > run-d.out 2>&1 || cat run-d.out
  $C task exec --exec-id e1 $t sh -c 'echo exec-boot-id $(cat /proc/sys/kernel/random/boot_id); exit 4' > exec.out 2>&1
  echo "$t-exec $?"; sed "s/^/$t-exec: /" exec.out
  $C task pause $t; echo "$t-pause $?"
  echo "$t-paused $($C task ls | grep $t | tr -s ' ' | cut -d' ' -f3)"
  $C task resume $t; echo "$t-resume $?"
  $C task kill -s TERM $t; echo "$t-kill $?"
  i=0; while [ "$($C task ls | grep $t | tr -s ' ' | cut -d' ' -f3)" = RUNNING ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  echo "$t-after-term $($C task ls | grep $t | tr -s ' ' | cut -d' ' -f3)"
  $C task delete $t > /dev/null; echo "$t-delete $?"; $C container delete $t
  $C containers ls -q | grep -q $t && echo "left: containerd container $t"
done
ls /run/containerd/runc/hull-vm 2>/dev/null | sed 's/^/left: runc-shim state /'
kill $cpid; wait $cpid
leftovers ctr-
tail -n 30 $D/log | sed 's/^/containerd: /'
"#;

/// Docker with hull registered as a runtime that gives every container a VM
/// (`runtimeArgs: ["--isolation", "vm"]`): Docker's own bind mounts (/etc/hosts, hostname,
/// resolv.conf, /dev/shm) included.
const STEP_DOCKER: &str = r#"
[ -x $NEST/nested/bin/dockerd ] || { echo "docker-skip"; exit 0; }
D=/run/hull-docker; mkdir -p $D/data $D/exec $D/bin
# dockerd insists on a `runc` for its default runtime: hull is one.
ln -s "$(command -v hull)" $D/bin/runc; export PATH=$D/bin:$PATH
echo '{"runtimes": {"hull-vm": {"path": "'$(command -v hull)'", "runtimeArgs": ["--isolation", "vm"]}}}' > $D/daemon.json
dockerd --data-root $D/data --exec-root $D/exec --pidfile $D/pid --host unix://$D/sock \
  --bridge none --iptables=false --ip6tables=false --ip-masq=false --storage-driver vfs \
  --config-file $D/daemon.json > $D/log 2>&1 &
dpid=$!
DK="docker -H unix://$D/sock"
i=0; until $DK version > /dev/null 2>&1; do i=$((i+1)); [ $i -gt 240 ] && break; sleep 0.5; done
$DK import $NEST/nested/docker/busybox.tar hull-vm-busybox:latest > /dev/null; echo "docker-import $?"
echo "host-boot-id $(cat /proc/sys/kernel/random/boot_id)"
$DK run --rm --network none --runtime hull-vm hull-vm-busybox:latest \
  sh -c 'echo guest-boot-id $(cat /proc/sys/kernel/random/boot_id); echo hostname-file $(cat /etc/hostname); echo shm $(touch /dev/shm/x && echo ok); exit 6' > docker.out 2>&1
echo "docker-exit $?"; sed 's/^/docker: /' docker.out
$DK run -d --name dvm-$$ --network none --runtime hull-vm hull-vm-busybox:latest \
  sh -c 'trap "exit 0" TERM; while true; do sleep 0.2; done' > /dev/null 2> run-d.err || cat run-d.err
$DK exec dvm-$$ sh -c 'exit 3'; echo "docker-exec $?"
$DK stop -t 20 dvm-$$ > /dev/null; echo "docker-stop $?"
echo "docker-stopped $($DK inspect --format '{{.State.ExitCode}}' dvm-$$)"
$DK rm dvm-$$ > /dev/null; echo "docker-rm $?"
kill $dpid; wait $dpid
grep -q "$D" /proc/mounts && echo "left: mount under $D"
leftovers dvm-
tail -n 20 $D/log | sed 's/^/dockerd: /'
"#;

/// podman with hull as its runtime and the annotation on the command line; podman's own
/// bind mounts (/etc/hosts, /etc/resolv.conf, /etc/hostname, /run/.containerenv) included.
const STEP_PODMAN: &str = r#"
[ -x $NEST/nested/bin/podman ] || { echo "podman-skip"; exit 0; }
P=/run/hull-podman; mkdir -p $P/root $P/runroot $P/tmp $P/net /etc/containers /dev/shm /var/tmp
# podman and conmon do not pass hull's environment on: the image and virtiofsd go where
# an installation has them (`hull vm-image build`, kvm-tier/tools/install-virtiofsd).
mkdir -p /var/lib/hull /var/cache/hull/virtiofsd/bin
ln -sfn $NEST/nested/vm-image /var/lib/hull/vm-image
ln -sf $NEST/nested/bin/virtiofsd /var/cache/hull/virtiofsd/bin/virtiofsd
# podman's locks are POSIX shared memory.
grep -q ' /dev/shm ' /proc/mounts || mount -t tmpfs shm /dev/shm
printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/root"\nrunroot = "%s/runroot"\n' $P $P > $P/storage.conf
printf '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\nconmon_path = ["%s"]\n[containers]\nlog_driver = "k8s-file"\n' $(command -v conmon) > $P/containers.conf
echo '{"default": [{"type": "insecureAcceptAnything"}]}' > /etc/containers/policy.json
export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf
PM="podman --root $P/root --runroot $P/runroot --tmpdir $P/tmp --network-config-dir $P/net --storage-driver vfs --events-backend file --cgroup-manager cgroupfs --runtime $(command -v hull)"
$PM load -i $NEST/nested/containerd/busybox.tar > load.out 2>&1; echo "podman-load $?"; tail -n 3 load.out | sed 's/^/load: /'
img=$($PM images -q | head -n 1)
echo "host-boot-id $(cat /proc/sys/kernel/random/boot_id)"
$PM run --rm --network none --annotation io.hull.isolation=vm $img \
  sh -c 'echo guest-boot-id $(cat /proc/sys/kernel/random/boot_id); echo hosts $(grep -c . /etc/hosts); exit 4' > podman.out 2>&1
echo "podman-exit $?"; sed 's/^/podman: /' podman.out
$PM ps -a -q | sed 's/^/left: podman container /'
leftovers pvm-
"#;

/// The bundle templates: `config.json` of each, the process as the scenario needs it.
fn bundles() -> Vec<(&'static str, Bundle)> {
    let vm = |sh: &str| {
        let mut b = Bundle::new();
        // Writable: the scenarios leave marks in the rootfs for the host to see.
        b.sh(sh)
            .annotation("io.hull.isolation", "vm")
            .readonly_root(false);
        b
    };
    let mut plain = Bundle::new();
    plain.sh("true");
    let mut limited =
        vm("echo mem-total $(sed -n 's/MemTotal: *\\([0-9]*\\).*/\\1/p' /proc/meminfo)");
    limited.resources(serde_json::json!({"memory": {"limit": 268435456}}));
    let mut panic = vm("echo c > /proc/sysrq-trigger; sleep 30");
    panic
        .capabilities(&["CAP_SYS_ADMIN", "CAP_KILL"])
        .set("/linux/maskedPaths", serde_json::json!([]))
        .set("/linux/readonlyPaths", serde_json::json!([]));
    let mut binds = vm(
        "echo file $(cat /etc/from-host); echo guest-wrote > /data/out; \
         echo term > /dev/termination-log; \
         if echo x > /etc/from-host 2>/dev/null; then echo ro broken; else echo ro holds; fi; \
         echo stage-entries $(ls -A /.hull-vm-binds | wc -l)",
    );
    binds
        .mount(
            "/etc/from-host",
            "bind",
            "/tmp/binds/file",
            &["rbind", "ro"],
        )
        .mount("/data", "bind", "/tmp/binds/dir", &["rbind", "rw"])
        .mount(
            "/dev/termination-log",
            "bind",
            "/tmp/binds/term",
            &["rbind", "rw"],
        );
    let mut badbind = vm("echo must-not-run");
    badbind.mount("/x", "bind", "/nonexistent/source", &["rbind"]);
    let sleeper = vm(
        "trap 'echo yes > /got-term; exit 0' TERM; touch /started; n=0; while true; do n=$((n+1)); echo $n > /count; sleep 0.2; done",
    );
    vec![
        ("plain", plain),
        (
            "run",
            vm("echo guest-boot-id $(cat /proc/sys/kernel/random/boot_id); echo to-stderr >&2; echo written > /written-by-guest; exit 7"),
        ),
        ("stdin", vm("read l; echo got $l")),
        ("sleeper", sleeper),
        ("stubborn", vm("trap '' TERM; touch /started; while true; do sleep 1; done")),
        ("forced", vm("touch /started; while true; do sleep 1; done")),
        ("fault-vmm", vm("touch /started; while true; do sleep 1; done")),
        ("fault-virtiofsd", vm("touch /started; while true; do ls / > /dev/null; sleep 0.2; done")),
        ("limited", limited),
        ("panic", panic),
        ("noimage", vm("echo must-not-run")),
        ("binds", binds),
        ("badbind", badbind),
    ]
}

fn build_plan() -> Result<Plan, Skip> {
    // Kept for the life of the process: the payload refers to files in it.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path();
    let bins = Binaries::of_profile("debug");
    for b in [&bins.hull, &bins.agent] {
        assert!(
            b.is_file(),
            "{} missing: cargo build --workspace --bins",
            b.display()
        );
    }
    let mut plan = vm_containers::plan(&bins, &bundles(), dir)?;
    match vm_containers::add_containerd(&mut plan, &bins.shim, dir) {
        Ok(()) => {
            if let Err(Skip(why)) = vm_containers::add_docker(&mut plan, dir) {
                let _ = DOCKER_SKIP.set(why);
            }
            if let Err(Skip(why)) = vm_containers::add_podman(&mut plan) {
                let _ = PODMAN_SKIP.set(why);
            }
        }
        Err(Skip(why)) => {
            let _ = PODMAN_SKIP.set(why.clone());
            let _ = DOCKER_SKIP.set(why.clone());
            let _ = CONTAINERD_SKIP.set(why);
        }
    }
    plan.steps(
        PRELUDE,
        &[
            (0, "run", 240, STEP_RUN),
            (0, "limits", 90, STEP_LIMITS),
            (0, "errors", 30, STEP_ERRORS),
            (0, "binds", 90, STEP_BINDS),
            (1, "docker", 240, STEP_DOCKER),
            (0, "podman", 180, STEP_PODMAN),
            (1, "exec", 300, STEP_EXEC),
            (1, "faults", 240, STEP_FAULTS),
            (
                0,
                "ctr",
                240,
                &STEP_CTR.replace("IMAGE", vm_containers::CONTAINERD_IMAGE),
            ),
        ],
    );
    Ok(plan)
}

/// Why the nested host has no containerd, if it has none.
static CONTAINERD_SKIP: OnceLock<String> = OnceLock::new();
/// Why the nested host has no Docker, if it has none.
static DOCKER_SKIP: OnceLock<String> = OnceLock::new();
/// Why the nested host has no podman, if it has none.
static PODMAN_SKIP: OnceLock<String> = OnceLock::new();

/// The one run all tests share.
fn report() -> Option<&'static Report> {
    static REPORT: OnceLock<Result<Report, Skip>> = OnceLock::new();
    shared_run(&REPORT, "vm_containers", build_plan)
}

/// The rest of the first line of `out` that starts with `key`.
fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key).map(str::trim))
}

fn lines<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
        .collect()
}

/// The workload (lines `said`, prefixed by the step) ran in a kernel of its own: it printed
/// a `guest-boot-id` that is not L1's `host-boot-id`.
fn assert_own_kernel(out: &str, said: &[&str], what: &str) {
    let host = value(out, "host-boot-id").unwrap_or_default();
    let guest = said
        .iter()
        .find_map(|l| l.strip_prefix("guest-boot-id "))
        .unwrap_or_default();
    assert!(
        !guest.is_empty() && guest != host,
        "{what}: guest boot id {guest:?}, L1's {host:?}\n{out}"
    );
}

fn no_leftovers(out: &str, step: &str) {
    let left: Vec<&str> = out.lines().filter(|l| l.starts_with("left:")).collect();
    assert!(left.is_empty(), "[{step}] left behind: {left:?}\n{out}");
}

#[test]
fn run_prints_output_exits_with_status_in_a_kernel_of_its_own() {
    let Some(r) = report() else { return };
    let s = r.step("run");
    let out = &s.output;
    assert_eq!(
        value(out, "plain-exit"),
        Some("0"),
        "a plain container in L1\n{out}"
    );
    assert_eq!(value(out, "run-exit"), Some("7"), "{out}\n{}", r.dmesg);
    let guest = value(out, "guest-boot-id").unwrap_or_default();
    let host = value(out, "host-boot-id").unwrap_or_default();
    assert!(
        !guest.is_empty() && guest != host,
        "guest boot id {guest:?} vs host {host:?}\n{out}"
    );
    assert!(lines(out, "stderr:").contains(&"to-stderr"), "{out}");
    assert!(
        !out.contains("guest-boot-id to-stderr"),
        "stdout and stderr mixed\n{out}"
    );
    assert_eq!(value(out, "host-sees"), Some("written"), "{out}");
    assert_eq!(value(out, "state-after"), Some("stopped"), "{out}");
    no_leftovers(out, "run");
}

#[test]
fn stdin_reaches_the_workload() {
    let Some(r) = report() else { return };
    let out = &r.step("run").output;
    assert_eq!(value(out, "stdin-exit"), Some("0"), "{out}");
    let got: Vec<&str> = lines(out, "stdin:")
        .into_iter()
        .filter(|l| !l.contains("level="))
        .collect();
    assert_eq!(got, vec!["got line-from-host"], "{out}");
}

#[test]
fn create_start_exec_and_term() {
    let Some(r) = report() else { return };
    let out = &r.step("exec").output;
    assert_eq!(value(out, "create-exit"), Some("0"), "{out}");
    assert_eq!(value(out, "status-created"), Some("created"), "{out}");
    assert!(out.contains("workload-started"), "{out}");
    assert_eq!(value(out, "exec-exit"), Some("3"), "{out}");
    assert!(
        value(out, "exec-out").is_some_and(|v| !v.is_empty()),
        "{out}"
    );
    assert_eq!(value(out, "exec-got"), Some("exec-stdin"), "{out}");
    assert_eq!(value(out, "exec-tty-exit"), Some("0"), "{out}");
    assert_eq!(value(out, "exec-detach-exit"), Some("0"), "{out}");
    assert_eq!(value(out, "exec-detached"), Some("ran"), "{out}");
    let tty = lines(out, "exec-tty:");
    assert!(
        tty.first().is_some_and(|t| t.starts_with("/dev/pts/")),
        "{out}"
    );
    assert_eq!(value(out, "events-exit"), Some("0"), "{out}");
    assert_eq!(value(out, "events-stats"), Some("yes"), "{out}");
    assert_eq!(value(out, "status-after-term"), Some("stopped"), "{out}");
    assert_eq!(value(out, "trap-ran"), Some("yes"), "{out}");
    assert_eq!(value(out, "delete-exit"), Some("0"), "{out}");
    no_leftovers(out, "exec");
}

#[test]
fn pause_stops_the_guest_and_resume_lets_it_go_on() {
    let Some(r) = report() else { return };
    let out = &r.step("exec").output;
    assert_eq!(value(out, "pause-exit"), Some("0"), "{out}");
    assert_eq!(value(out, "status-paused"), Some("paused"), "{out}");
    assert_eq!(value(out, "paused-count"), Some("still"), "{out}");
    assert_eq!(value(out, "resume-exit"), Some("0"), "{out}");
    assert_eq!(value(out, "status-resumed"), Some("running"), "{out}");
    assert_eq!(value(out, "resumed-count"), Some("moves"), "{out}");
}

#[test]
fn kill_and_forced_delete_leave_nothing() {
    let Some(r) = report() else { return };
    let out = &r.step("exec").output;
    assert_eq!(value(out, "status-after-kill"), Some("stopped"), "{out}");
    assert_eq!(value(out, "force-delete-exit"), Some("0"), "{out}");
    no_leftovers(out, "exec");
}

#[test]
fn memory_limit_sizes_the_guest() {
    let Some(r) = report() else { return };
    let out = &r.step("limits").output;
    assert_eq!(value(out, "limited-exit"), Some("0"), "{out}");
    let kib: u64 = value(out, "mem-total")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal\n{out}"));
    assert!(
        kib > 64 * 1024 && kib < 256 * 1024,
        "MemTotal {kib} KiB under a 256 MiB limit\n{out}"
    );
}

#[test]
fn faults_end_the_container_and_leave_nothing() {
    let Some(r) = report() else { return };
    let out = &r.step("faults").output;
    for f in ["vmm", "virtiofsd"] {
        assert_eq!(
            value(out, &format!("fault-{f}-status")),
            Some("stopped"),
            "{f}\n{out}"
        );
        assert_eq!(
            value(out, &format!("fault-{f}-delete")),
            Some("0"),
            "{f}\n{out}"
        );
    }
    let panic_exit = value(out, "panic-exit").unwrap_or_default();
    assert!(panic_exit != "0" && !panic_exit.is_empty(), "{out}");
    assert!(out.contains("panic"), "{out}");
    no_leftovers(out, "faults");
}

#[test]
fn missing_image_is_a_clear_create_error() {
    let Some(r) = report() else { return };
    let out = &r.step("errors").output;
    assert_eq!(value(out, "noimage-exit"), Some("1"), "{out}");
    let msg = lines(out, "noimage:").join("\n");
    assert!(
        msg.contains("/nonexistent") && msg.contains("hull vm-image build"),
        "{out}"
    );
    assert!(!out.contains("must-not-run"), "{out}");
    no_leftovers(out, "errors");
}

#[test]
fn containerd_runs_a_vm_container_through_both_shims() {
    let Some(r) = report() else { return };
    let out = &r.step("ctr").output;
    if out.lines().any(|l| l.trim() == "ctr-skip") {
        let why = CONTAINERD_SKIP
            .get()
            .map_or("containerd missing", |s| s.as_str());
        eprintln!("skipped: containerd paths of VM containers: {why}");
        return;
    }
    assert_eq!(value(out, "import-exit"), Some("0"), "{out}");
    let host = value(out, "host-boot-id").unwrap_or_default();
    for via in ["runc", "hull"] {
        assert_eq!(
            value(out, &format!("ctr-{via}-exit")),
            Some("5"),
            "through {via}'s shim\n{out}"
        );
        let said = lines(out, &format!("ctr-{via}:"));
        assert_own_kernel(out, &said, &format!("through {via}'s shim"));
        assert!(said.contains(&"to-stderr"), "{via}\n{out}");
        let t = format!("ctrd-{via}-");
        let key = |k: &str| {
            out.lines()
                .find(|l| {
                    l.starts_with(&t) && l.split_whitespace().next().is_some_and(|w| w.ends_with(k))
                })
                .and_then(|l| l.split_whitespace().nth(1))
        };
        assert_eq!(
            key("-exec"),
            Some("4"),
            "ctr task exec through {via}'s shim\n{out}"
        );
        assert!(
            out.lines().any(|l| l.starts_with(&t)
                && l.contains("-exec: exec-boot-id ")
                && !l.ends_with(host)),
            "{via}\n{out}"
        );
        assert_eq!(key("-pause"), Some("0"), "{via}\n{out}");
        assert_eq!(key("-paused"), Some("PAUSED"), "{via}\n{out}");
        assert_eq!(key("-resume"), Some("0"), "{via}\n{out}");
        assert_eq!(key("-kill"), Some("0"), "{via}\n{out}");
        assert_eq!(key("-after-term"), Some("STOPPED"), "{via}\n{out}");
        assert_eq!(key("-delete"), Some("0"), "{via}\n{out}");
    }
    no_leftovers(out, "ctr");
}

#[test]
fn host_bind_mounts_reach_the_guest() {
    let Some(r) = report() else { return };
    let out = &r.step("binds").output;
    assert_eq!(value(out, "binds-exit"), Some("0"), "{out}");
    let said = lines(out, "binds:");
    assert!(said.contains(&"file from-host"), "{out}");
    assert!(said.contains(&"ro holds"), "{out}");
    assert!(
        said.contains(&"stage-entries 0"),
        "staging dir masked\n{out}"
    );
    assert_eq!(value(out, "host-dir"), Some("guest-wrote"), "{out}");
    assert_eq!(value(out, "host-term"), Some("term"), "{out}");
    assert_eq!(value(out, "host-file"), Some("from-host"), "{out}");
    // A missing source is a create error naming the mount.
    assert_eq!(value(out, "badbind-exit"), Some("1"), "{out}");
    let msg = lines(out, "badbind:").join("\n");
    assert!(
        msg.contains("mounts[") && msg.contains("/nonexistent/source"),
        "{out}"
    );
    assert!(!out.contains("must-not-run"), "{out}");
    no_leftovers(out, "binds");
}

#[test]
fn docker_runs_a_vm_container_with_its_own_bind_mounts() {
    let Some(r) = report() else { return };
    let out = &r.step("docker").output;
    if out.lines().any(|l| l.trim() == "docker-skip") {
        let why = DOCKER_SKIP.get().map_or("docker missing", |s| s.as_str());
        eprintln!("skipped: Docker with VM containers: {why}");
        return;
    }
    assert_eq!(value(out, "docker-import"), Some("0"), "{out}");
    assert_eq!(value(out, "docker-exit"), Some("6"), "{out}");
    let said = lines(out, "docker:");
    assert_own_kernel(out, &said, "docker");
    assert!(
        said.iter().any(|l| l
            .strip_prefix("hostname-file ")
            .is_some_and(|h| !h.is_empty())),
        "Docker's /etc/hostname bind\n{out}"
    );
    assert!(said.contains(&"shm ok"), "Docker's /dev/shm bind\n{out}");
    assert_eq!(value(out, "docker-exec"), Some("3"), "{out}");
    assert_eq!(value(out, "docker-stop"), Some("0"), "{out}");
    assert_eq!(
        value(out, "docker-stopped"),
        Some("0"),
        "the TERM trap ran\n{out}"
    );
    assert_eq!(value(out, "docker-rm"), Some("0"), "{out}");
    no_leftovers(out, "docker");
}

#[test]
fn podman_runs_a_vm_container() {
    let Some(r) = report() else { return };
    let out = &r.step("podman").output;
    if out.lines().any(|l| l.trim() == "podman-skip") {
        let why = PODMAN_SKIP.get().map_or("podman missing", |s| s.as_str());
        eprintln!("skipped: podman with VM containers: {why}");
        return;
    }
    assert_eq!(value(out, "podman-load"), Some("0"), "{out}");
    assert_eq!(value(out, "podman-exit"), Some("4"), "{out}");
    let said = lines(out, "podman:");
    assert_own_kernel(out, &said, "podman");
    assert!(
        said.iter()
            .any(|l| l.strip_prefix("hosts ").is_some_and(|n| n != "0")),
        "podman's /etc/hosts bind\n{out}"
    );
    no_leftovers(out, "podman");
}
