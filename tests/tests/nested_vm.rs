//! hull-vmm with a real guest kernel (Debian's cloud kernel), in the nested test host
//! (`hull_tests::nested`): one L1 boot runs every scenario below as a step, each step boots
//! one or more L2 guests with `hull-vmm` (seccomp filters on, as shipped). Where the host's
//! own KVM boots Linux the same steps run on the host. The tests share that one run.
//!
//! L2's /init (built here) loads the virtio, virtio-fs, vsock and pvpanic modules, then runs
//! the scenario named by `hull.scenario=` on its command line; the scenario prints
//! `@@l2 ...` lines on the serial console, which the step captures.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hull_tests::nested::{
    guest_kernel, shared_run, GuestKernel, Initramfs, Mode, Plan, Report, Skip,
};

const L2_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev; mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t tmpfs tmp /tmp
for m in $(cat /mods/order); do [ -f /mods/$m.ko ] && insmod /mods/$m.ko; done
say() { echo "@@l2 $*"; }
# Guest-time stamps of the phases, for seeing where a slow run spends its time.
at() { echo "@@l2 at $(cut -d' ' -f1 /proc/uptime) $*"; }
s=$(sed -n 's/.*hull\.scenario=\([a-z0-9_-]*\).*/\1/p' /proc/cmdline)
say scenario $s
. /scenarios/$s.sh
say end $s
reboot -f
"#;

/// The L2 scenarios (sourced by /init; `say` prints a marker line).
const L2_SCENARIOS: &[(&str, &str)] = &[
    (
        "main",
        r#"
say userspace-echo
say cpus $(nproc) online $(cat /sys/devices/system/cpu/online)
dmesg | grep -E 'WARNING|BUG|PCI: Fatal|Unhandled|Call Trace|cut here' | while read l; do say bad-log $l; done
for d in /sys/bus/virtio/devices/*; do
  [ -e $d ] && say virtio $(basename $d) device=$(cat $d/device) driver=$(basename $(readlink $d/driver 2>/dev/null) 2>/dev/null)
done
say ready-for-input
if read -t 30 line; then say got-input "$line"; else say no-input; fi
at fs-start
if mount -t virtiofs hullfs /mnt; then
  say fs-mounted
  say fs-read $(cat /mnt/hello.txt)
  say fs-exec $(/mnt/busybox echo ran-from-share)
  say fs-big-md5 $(md5sum /mnt/big | cut -d' ' -f1)
  at fs-big-read
  cp /mnt/big /mnt/big-copy && say fs-copied
  at fs-big-copied
  mkdir /mnt/small; i=0
  while [ $i -lt 500 ]; do echo $i > /mnt/small/f$i; i=$((i+1)); done
  say fs-small $(ls /mnt/small | wc -l)
  at fs-small-done
  echo from-l2 > /mnt/written.txt
  cd /; umount /mnt && say fs-umounted
else
  say fs-mount-failed
fi
"#,
    ),
    (
        "poweroff",
        r#"
say cpus $(nproc) mem $(sed -n 's/MemTotal: *//p' /proc/meminfo)
poweroff -f
"#,
    ),
    (
        "panic",
        r#"
say cpus $(nproc) online $(cat /sys/devices/system/cpu/online) mem $(sed -n 's/MemTotal: *//p' /proc/meminfo)
say pvpanic $(ls /sys/bus/platform/drivers/pvpanic-mmio 2>/dev/null | grep -c QEMU0001)
echo c > /proc/sysrq-trigger
"#,
    ),
    (
        "vsock",
        r#"
hull-vsock-probe listen-vsock 5000 > /tmp/srv.log 2>&1 &
srv=$!
i=0; while ! grep -q listening /tmp/srv.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
say vsock-listening
hull-vsock-probe --no-hash connect-vsock 2 6000 send:16M recv:16M > /tmp/cli.log 2>&1
say guest-initiated rc=$?
sed 's/^/@@l2 guest-cli /' /tmp/cli.log
wait $srv
say guest-server rc=$?
sed 's/^/@@l2 guest-srv /' /tmp/srv.log
"#,
    ),
    (
        "hang",
        r#"
say hanging
while true; do sleep 1000; done
"#,
    ),
];

/// Shell functions every step starts with.
const PRELUDE: &str = r#"
VMM=$NEST/nested/bin/hull-vmm
export HULL_VIRTIOFSD=$NEST/nested/bin/virtiofsd
BOOT="--kernel $NEST/nested/l2/vmlinuz --initramfs $NEST/nested/l2/initrd.cpio"
# wait_for FILE PATTERN SECONDS [PID]: until PATTERN is in FILE; fails early if PID ended.
wait_for() { i=0; while ! grep -q "$2" "$1" 2>/dev/null; do
  i=$((i+1)); [ $i -gt $(($3 * 10)) ] && return 1
  [ -n "$4" ] && ! kill -0 $4 2>/dev/null && return 1
  sleep 0.1; done; }
show() { echo "--- $1"; cat "$1" 2>/dev/null; echo "--- end"; }
"#;

const STEP_MAIN: &str = r#"
mkdir share; echo hello-from-l1 > share/hello.txt; cp /bin/busybox share/busybox
dd if=/dev/urandom of=share/big bs=1M count=32 2>/dev/null
mkfifo in
$VMM $BOOT --append "quiet hull.scenario=main" --mem 256 --serial-out serial.log --serial-in in \
  --shared-dir $PWD/share --fs-tag hullfs --vsock-socket $PWD/v.sock --vsock-cid 3 --timeout-ms 150000 > vmm.log 2>&1 &
vmm=$!
exec 3<>in
wait_for serial.log '@@l2 ready-for-input' 90 $vmm && echo hello-from-host >&3
wait $vmm; echo "vmm-exit $?"
echo "host-big-md5 $(md5sum share/big | cut -d' ' -f1)"
echo "host-copy-md5 $(md5sum share/big-copy 2>/dev/null | cut -d' ' -f1)"
echo "host-written $(cat share/written.txt 2>/dev/null)"
echo "host-small $(ls share/small 2>/dev/null | wc -l)"
show serial.log; show vmm.log
"#;

const STEP_VSOCK: &str = r#"
P=$NEST/nested/bin/hull-vsock-probe
$P --count 2 listen-hybrid $PWD/v.sock 6000 > host-listener.log 2>&1 &
lst=$!
$VMM $BOOT --append "quiet hull.scenario=vsock" --mem 256 --serial-out serial.log \
  --vsock-socket $PWD/v.sock --vsock-cid 3 --vsock-reset-signal --timeout-ms 150000 > vmm.log 2>&1 &
vmm=$!
wait_for serial.log '@@l2 vsock-listening' 90 $vmm || echo never-listened
$P --no-hash connect-hybrid $PWD/v.sock 5000 send:64M recv:64M; echo "host-big rc=$?"
$P --jobs 4 connect-hybrid $PWD/v.sock 5000 echo:1M; echo "host-jobs rc=$?"
$P connect-hybrid $PWD/v.sock 5001 refused; echo "host-refused rc=$?"
$P connect-hybrid $PWD/v.sock 5000 hold > hold.log 2>&1 &
h=$!
sleep 1; kill -USR1 $vmm
wait $h; echo "host-reset rc=$?"; cat hold.log
$P connect-hybrid $PWD/v.sock 5000 echo:64K; echo "host-after-reset rc=$?"
$P connect-hybrid $PWD/v.sock 5000 quit; echo "host-quit rc=$?"
wait $vmm; echo "vmm-exit $?"
wait $lst; echo "host-listener rc=$?"
show host-listener.log; show serial.log; show vmm.log
"#;

const STEP_POWEROFF: &str = r#"
$VMM $BOOT --append "quiet hull.scenario=poweroff" --mem 128 --serial-out serial.log --timeout-ms 60000 > vmm.log 2>&1
echo "vmm-exit $?"
show serial.log; show vmm.log
"#;

const STEP_PANIC: &str = r#"
$VMM $BOOT --append "quiet hull.scenario=panic" --mem 1024 --vcpus 2 --serial-out serial.log --timeout-ms 60000 > vmm.log 2>&1
echo "vmm-exit $?"
show serial.log; show vmm.log
"#;

const STEP_HANG: &str = r#"
mkdir share
$VMM $BOOT --append "quiet hull.scenario=hang" --mem 128 --serial-out serial.log --shared-dir $PWD/share --timeout-ms 60000 > vmm.log 2>&1 &
vmm=$!
wait_for serial.log '@@l2 hanging' 60 $vmm || echo never-hung
for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in *virtiofsd*) echo "virtiofsd-before ${p#/proc/}";; esac; done
kill -9 $vmm; wait $vmm; echo "vmm-exit $?"
sleep 1
for p in /proc/[0-9]*; do case "$(readlink $p/exe)" in *virtiofsd*) echo "virtiofsd-after ${p#/proc/}";; esac; done
show serial.log; show vmm.log
"#;

fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/debug")
        .join(name)
}

/// L2's initramfs.
fn l2_initramfs(kernel: &GuestKernel, probe: &Path, dir: &Path) -> Result<PathBuf, String> {
    let mut p = Initramfs::new();
    p.file("bin/busybox", Path::new("/bin/busybox"), 0o755);
    p.binary("bin/hull-vsock-probe", probe)
        .map_err(|e| e.to_string())?;
    for d in [
        "dev", "proc", "sys", "tmp", "mnt", "sbin", "usr/bin", "usr/sbin",
    ] {
        p.dir(d);
    }
    // The VM tier's own module set and load order (from each module's .modinfo), as a VM
    // container's guest image gets it.
    let mut order = String::new();
    let modules = kernel
        .modules_in_load_order(hull_kvm::guest_image::AGENT_MODULES)
        .map_err(|e| e.to_string())?;
    for path in modules {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("module file name {}", path.display()))?;
        p.file(&format!("mods/{stem}.ko"), &path, 0o644);
        order.push_str(stem);
        order.push('\n');
    }
    p.bytes("mods/order", order, 0o644);
    p.bytes("init", L2_INIT, 0o755);
    for (name, body) in L2_SCENARIOS {
        p.bytes(&format!("scenarios/{name}.sh"), *body, 0o644);
    }
    let out = dir.join("l2-initrd.cpio");
    p.write_cpio(&out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn build_plan() -> Result<Plan, Skip> {
    let kernel = guest_kernel().map_err(Skip)?;
    let vmm = workspace_bin("hull-vmm", "HULL_VMM");
    if !vmm.is_file() {
        panic!("{} missing: cargo build --workspace --bins", vmm.display());
    }
    // virtiofsd as hull-vmm finds it ($HULL_VIRTIOFSD, the install-virtiofsd cache, ...).
    let virtiofsd = hull_kvm::VirtiofsOptions::default()
        .find_binary()
        .ok_or_else(|| Skip("virtiofsd missing: run kvm-tier/tools/install-virtiofsd".into()))?;
    let probe = workspace_bin("hull-vsock-probe", "HULL_VSOCK_PROBE");
    if !probe.is_file() {
        panic!(
            "{} missing: cargo build --workspace --bins",
            probe.display()
        );
    }
    // Kept for the life of the process: the payload refers to files in it.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path();
    let l2 = l2_initramfs(&kernel, &probe, dir).map_err(Skip)?;
    let mut plan = Plan::new();
    plan.payload
        .binary_stripped("nested/bin/hull-vmm", &vmm, dir)
        .and_then(|p| p.binary("nested/bin/virtiofsd", &virtiofsd))
        .and_then(|p| p.binary_stripped("nested/bin/hull-vsock-probe", &probe, dir))
        .map_err(|e| Skip(e.to_string()))?;
    plan.payload
        .file("nested/l2/vmlinuz", &kernel.vmlinuz, 0o644)
        .file("nested/l2/initrd.cpio", &l2, 0o644);
    // Two lanes (two L1s, one per host core), about equally long.
    plan.steps(
        PRELUDE,
        &[
            (0, "main", 170, STEP_MAIN),
            (0, "poweroff", 70, STEP_POWEROFF),
            (0, "hang", 70, STEP_HANG),
            (1, "vsock", 170, STEP_VSOCK),
            (1, "panic", 70, STEP_PANIC),
        ],
    );
    Ok(plan)
}

/// The one run all tests share.
fn report() -> Option<&'static Report> {
    static REPORT: OnceLock<Result<Report, Skip>> = OnceLock::new();
    shared_run(&REPORT, "nested_vm", build_plan)
}

/// The `@@l2 <key> ...` lines of a step's output, without the prefix.
fn l2_lines<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("@@l2 {key}");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
        .collect()
}

fn value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key).map(str::trim))
}

#[test]
fn serial_console_works_both_ways_for_userspace() {
    let Some(r) = report() else { return };
    let out = &r.step("main").output;
    assert!(
        !l2_lines(out, "userspace-echo").is_empty(),
        "userspace output reaches the console:\n{out}"
    );
    assert_eq!(
        l2_lines(out, "got-input"),
        vec!["hello-from-host"],
        "the guest reads hull-vmm's serial input:\n{out}"
    );
}

#[test]
fn boot_log_is_clean() {
    let Some(r) = report() else { return };
    let out = &r.step("main").output;
    assert!(
        !l2_lines(out, "scenario main").is_empty(),
        "L2 ran its init:\n{out}"
    );
    let bad = l2_lines(out, "bad-log");
    assert!(
        bad.is_empty(),
        "the guest's boot log has warnings caused by the VMM:\n{}",
        bad.join("\n")
    );
    if r.mode == Mode::Nested {
        let noise: Vec<&str> = r
            .dmesg
            .lines()
            .filter(|l| l.contains("Unhandled") || l.contains("unhandled"))
            .collect();
        assert!(
            noise.is_empty(),
            "L1's KVM logged MSR noise from the guests:\n{}",
            noise.join("\n")
        );
    }
}

#[test]
fn virtio_mmio_devices_are_found_through_acpi_and_bound() {
    let Some(r) = report() else { return };
    let out = &r.step("main").output;
    let devs = l2_lines(out, "virtio ");
    // virtio ids: 26 = fs, 19 = vsock.
    for (id, driver) in [
        ("0x001a", "virtiofs"),
        ("0x0013", "vmw_vsock_virtio_transport"),
    ] {
        assert!(
            devs.iter()
                .any(|d| d.contains(&format!("device={id}"))
                    && d.contains(&format!("driver={driver}"))),
            "device {id} bound to {driver}:\n{out}"
        );
    }
}

#[test]
fn virtio_fs_with_the_real_guest_driver() {
    let Some(r) = report() else { return };
    let out = &r.step("main").output;
    assert!(
        !l2_lines(out, "fs-mounted").is_empty(),
        "mount -t virtiofs:\n{out}"
    );
    assert_eq!(l2_lines(out, "fs-read"), vec!["hello-from-l1"], "{out}");
    assert_eq!(l2_lines(out, "fs-exec"), vec!["ran-from-share"], "{out}");
    let host_md5 = value(out, "host-big-md5").expect("host md5");
    assert_eq!(
        l2_lines(out, "fs-big-md5"),
        vec![host_md5],
        "a 32 MiB file reads back intact:\n{out}"
    );
    assert_eq!(
        value(out, "host-copy-md5"),
        Some(host_md5),
        "a 32 MiB file written by the guest is intact"
    );
    assert_eq!(l2_lines(out, "fs-small"), vec!["500"], "{out}");
    assert_eq!(value(out, "host-small"), Some("500"));
    assert_eq!(value(out, "host-written"), Some("from-l2"));
    assert!(
        !l2_lines(out, "fs-umounted").is_empty(),
        "clean unmount:\n{out}"
    );
    assert_eq!(
        value(out, "vmm-exit"),
        Some("0"),
        "reboot after the share was used:\n{out}"
    );
    assert!(
        r.step("main").leftovers.is_empty(),
        "left running: {:?}",
        r.step("main").leftovers
    );
}

#[test]
fn power_off_panic_and_kill_end_the_vmm_distinguishably() {
    let Some(r) = report() else { return };
    let main = &r.step("main").output;
    assert_eq!(
        value(main, "vmm-exit"),
        Some("0"),
        "reboot -f: exit 0\n{main}"
    );
    let off = &r.step("poweroff").output;
    assert_eq!(
        value(off, "vmm-exit"),
        Some("3"),
        "poweroff -f: exit 3\n{off}"
    );
    let panic = &r.step("panic").output;
    assert_eq!(
        value(panic, "vmm-exit"),
        Some("4"),
        "kernel panic: exit 4\n{panic}"
    );
    let hang = &r.step("hang").output;
    assert!(!hang.contains("never-hung"), "{hang}");
    assert!(
        hang.contains("virtiofsd-before"),
        "the hung guest had a virtiofsd:\n{hang}"
    );
    assert_eq!(value(hang, "vmm-exit"), Some("137"), "{hang}");
    assert!(
        !hang.contains("virtiofsd-after"),
        "virtiofsd outlived the killed VMM:\n{hang}"
    );
    for s in ["main", "poweroff", "panic", "hang", "vsock"] {
        assert!(
            r.step(s).leftovers.is_empty(),
            "{s} left running: {:?}",
            r.step(s).leftovers
        );
    }
}

/// The guest's MemTotal in kB from its `@@l2 cpus ... mem N kB` line (0 if missing).
fn guest_mem_kb(out: &str) -> u64 {
    l2_lines(out, "cpus")
        .first()
        .and_then(|l| l.rsplit("mem ").next())
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

#[test]
fn vcpus_and_memory_sizes() {
    let Some(r) = report() else { return };
    let panic = &r.step("panic").output;
    let line = l2_lines(panic, "cpus");
    assert!(
        line.first()
            .is_some_and(|l| l.starts_with("2 online 0-1 mem ")),
        "--vcpus 2 --mem 1024:\n{panic}"
    );
    let kb = guest_mem_kb(panic);
    assert!(kb > 900 * 1024, "a 1 GiB guest sees about 1 GiB: {kb} kB");
    let off = &r.step("poweroff").output;
    let kb = guest_mem_kb(off);
    assert!(
        kb > 80 * 1024 && kb <= 128 * 1024,
        "a 128 MiB guest boots and sees it: {kb} kB\n{off}"
    );
}

#[test]
fn vsock_with_the_real_guest_driver() {
    let Some(r) = report() else { return };
    let out = &r.step("vsock").output;
    assert!(
        !out.contains("never-listened"),
        "the guest's listener came up:\n{out}"
    );
    for (what, key) in [
        ("64 MiB each way, host-initiated", "host-big"),
        ("4 connections at once", "host-jobs"),
        ("a port nobody listens on is refused", "host-refused"),
        ("a transport reset ends an open connection", "host-reset"),
        ("a new connection works after the reset", "host-after-reset"),
        ("the guest server is told to quit", "host-quit"),
        (
            "the host listener served the guest's connections",
            "host-listener",
        ),
    ] {
        assert_eq!(value(out, key), Some("rc=0"), "{what}:\n{out}");
    }
    assert_eq!(
        l2_lines(out, "guest-initiated"),
        vec!["rc=0"],
        "guest-initiated 16 MiB each way:\n{out}"
    );
    assert_eq!(l2_lines(out, "guest-server"), vec!["rc=0"], "{out}");
    // Every transfer was verified byte for byte by the probe; the 64 MiB ones are there.
    for op in ["send", "recv"] {
        let line = format!("vsock-probe: ok {op} 67108864 bytes");
        assert!(out.lines().any(|l| l.starts_with(&line)), "{line}:\n{out}");
    }
    assert_eq!(value(out, "vmm-exit"), Some("0"), "{out}");
}
