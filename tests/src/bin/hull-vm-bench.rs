//! `hull-vm-bench`: hull-vmm's boot figures with a real guest kernel, measured inside the
//! nested test host (or on the host when its KVM boots Linux), side by side with QEMU's
//! `microvm` machine (KVM-accelerated, same kernel and initramfs) when QEMU can run there.
//!
//! Run it through `tests/bench/run-vm` (builds hull-vmm in release mode). Everything inside
//! L1 is emulated by TCG, so absolute times there are meaningless; read the ratios.
//!
//! Per round, interleaved (hull, then QEMU):
//! * `launch→exit`: wall time from starting the VMM process to its exit, the guest's /init
//!   having rebooted at once (kernel boot + init + reset + teardown);
//! * hull only, from hull-vmm's own report: `Vm::start`→first `KVM_RUN` (the guest's
//!   first instruction) and `Vm::start`→/init (the boot-timer port write);
//! * RSS beyond guest memory: the resident size of every mapping of the VMM process except
//!   the 256 MiB guest RAM mapping (`/proc/PID/smaps`), while the guest sits in /init.
//!
//! With `--containers`: `hull run` of `/bin/true` in a plain container and in a VM container
//! (`io.hull.isolation=vm`: boot, agent, virtio-fs rootfs, exit, teardown), interleaved, in
//! the same L1; the figure is the VM/plain ratio of the medians.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hull_tests::nested::{guest_kernel, Initramfs, Mode, Plan};

const INIT: &str = r#"#!/bin/busybox sh
/bin/hull-boot-timer
/bin/busybox mount -t proc proc /proc
case "$(/bin/busybox cat /proc/cmdline)" in
  *bench=rss*) echo "@@l2 in-init"; /bin/busybox sleep 30 ;;
esac
/bin/busybox reboot -f
"#;

const PRELUDE: &str = r#"
K=$NEST/nested/l2/vmlinuz; I=$NEST/nested/l2/initrd.cpio
CMD="console=ttyS0 reboot=k panic=-1 pci=conf1 quiet"
now() { cut -d' ' -f1 /proc/uptime; }
hull() { $NEST/nested/bin/hull-vmm --kernel $K --initramfs $I --mem 256 --serial-out serial-$1.log --cmdline "$CMD $2" --timeout-ms 120000; }
QEMU_OK=0
[ -x $NEST/nested/bin/qemu-system-x86_64 ] && QEMU_OK=1
qemu() { $NEST/nested/bin/qemu-system-x86_64 -L $NEST/nested/qemu-data -M microvm,acpi=on,rtc=on -enable-kvm -cpu host \
  -object memory-backend-memfd,id=mem,size=256M -m 256 -machine memory-backend=mem \
  -nodefaults -no-user-config -display none -no-reboot -serial file:qserial-$1.log \
  -kernel $K -initrd $I -append "$CMD $2"; }
# In the background, `exec` makes $! the VMM's own pid (for its RSS).
hull_exec() { exec $NEST/nested/bin/hull-vmm --kernel $K --initramfs $I --mem 256 --serial-out serial-$1.log --cmdline "$CMD $2" --timeout-ms 120000; }
qemu_exec() { exec $NEST/nested/bin/qemu-system-x86_64 -L $NEST/nested/qemu-data -M microvm,acpi=on,rtc=on -enable-kvm -cpu host \
  -object memory-backend-memfd,id=mem,size=256M -m 256 -machine memory-backend=mem \
  -nodefaults -no-user-config -display none -no-reboot -serial file:qserial-$1.log \
  -kernel $K -initrd $I -append "$CMD $2"; }
rss() { # PID: resident kB of every mapping but the 256 MiB of guest RAM, then VmRSS
  awk '/^[0-9a-f]+-[0-9a-f]+ /{n++} /^Size:/{sz=$2} /^Rss:/{if (sz != 262144) o+=$2; else g+=$2}
       END{print o, "(guest RAM resident", g, "kB)"}' /proc/$1/smaps; }
wait_kmsg() { i=0; while ! grep -q "$1" "$2" 2>/dev/null; do i=$((i+1)); [ $i -gt 600 ] && return 1; sleep 0.1; done; }
"#;

fn round_script(i: usize) -> String {
    format!(
        r#"{PRELUDE}
t0=$(now); hull r{i} "" > hull-{i}.log 2>&1; rc=$?; t1=$(now)
echo "hull launch-exit $t0 $t1 rc=$rc"
cat hull-{i}.log
grep -i -E 'boot-timer|ioperm|error' serial-r{i}.log
if [ $QEMU_OK = 1 ]; then
  t0=$(now); qemu r{i} "" > qemu-{i}.log 2>&1; rc=$?; t1=$(now)
  echo "qemu launch-exit $t0 $t1 rc=$rc"
  cat qemu-{i}.log
fi
"#
    )
}

const RSS_SCRIPT: &str = r#"
hull_exec rss bench=rss > hull-rss.log 2>&1 &
p=$!
if wait_kmsg '@@l2 in-init' serial-rss.log; then echo "hull rss-kb $(rss $p)"; fi
kill $p; wait $p
if [ $QEMU_OK = 1 ]; then
  qemu_exec rss bench=rss > qemu-rss.log 2>&1 &
  p=$!
  if wait_kmsg '@@l2 in-init' qserial-rss.log; then echo "qemu rss-kb $(rss $p)"; else echo "qemu rss: guest never reached init"; cat qemu-rss.log; fi
  kill $p; wait $p
fi
"#;

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn main() -> ExitCode {
    let mut rounds = 3usize;
    let mut vmm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/hull-vmm");
    let mut containers = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--containers" {
            containers = true;
            continue;
        }
        match (a.as_str(), args.next()) {
            ("--rounds", Some(n)) => match n.parse() {
                Ok(n) if n > 0 => rounds = n,
                _ => return usage(&format!("--rounds needs a positive number, got {n:?}")),
            },
            ("--vmm", Some(p)) => vmm = PathBuf::from(p),
            _ => return usage(&format!("unknown argument {a:?}")),
        }
    }
    let result = if containers {
        run_containers(rounds)
    } else {
        run(rounds, &vmm)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hull-vm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "hull-vm-bench: {msg}\nusage: hull-vm-bench [--rounds N] [--vmm PATH] [--containers]"
    );
    ExitCode::from(2)
}

fn run(rounds: usize, vmm: &Path) -> Result<(), String> {
    let kernel = guest_kernel()?;
    if !vmm.is_file() {
        return Err(format!(
            "{} missing (cargo build --release -p hull-kvm)",
            vmm.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut l2 = Initramfs::new();
    l2.file("bin/busybox", Path::new("/bin/busybox"), 0o755)
        .dir("proc")
        .dir("dev");
    l2.bytes("init", INIT, 0o755);
    let timer = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hull-boot-timer")))
        .filter(|p| p.is_file())
        .ok_or("hull-boot-timer missing next to hull-vm-bench (tests/bench/run-vm builds it)")?;
    l2.binary("bin/hull-boot-timer", &timer)
        .map_err(|e| e.to_string())?;
    let initrd = dir.path().join("bench-initrd.cpio");
    l2.write_cpio(&initrd).map_err(|e| e.to_string())?;

    let host = hull_tests::nested::host_kvm_boots_linux();
    let mut plan = Plan::new();
    plan.payload
        .binary("nested/bin/hull-vmm", vmm)
        .map_err(|e| e.to_string())?;
    plan.payload
        .file("nested/l2/vmlinuz", &kernel.vmlinuz, 0o644)
        .file("nested/l2/initrd.cpio", &initrd, 0o644);
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    let bios = Path::new("/usr/share/qemu/bios-microvm.bin");
    let qemu_note = if qemu.is_file() && bios.is_file() {
        plan.payload
            .binary("nested/bin/qemu-system-x86_64", qemu)
            .map_err(|e| e.to_string())?;
        plan.payload
            .file("nested/qemu-data/bios-microvm.bin", bios, 0o644);
        // The option ROM QEMU loads a -kernel with.
        let rom = Path::new("/usr/share/qemu/linuxboot_dma.bin");
        if rom.is_file() {
            plan.payload
                .file("nested/qemu-data/linuxboot_dma.bin", rom, 0o644);
        }
        None
    } else {
        Some("QEMU or its bios-microvm.bin is missing: hull only")
    };
    for i in 0..rounds {
        plan.step(
            &format!("round{i}"),
            Duration::from_secs(300),
            &round_script(i),
        );
    }
    plan.step(
        "rss",
        Duration::from_secs(200),
        &format!("{PRELUDE}{RSS_SCRIPT}"),
    );
    let report = plan.run(host).map_err(|s| format!("cannot run: {}", s.0))?;

    let mut launch: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut setup = Vec::new();
    let mut to_init = Vec::new();
    for i in 0..rounds {
        let s = report.step(&format!("round{i}"));
        for line in s.output.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                [who, "launch-exit", t0, t1, rc] => {
                    let idx = usize::from(*who == "qemu");
                    if *rc != "rc=0" {
                        eprintln!(
                            "hull-vm-bench: round {i}: {who} ended with {rc}:\n{}",
                            s.output
                        );
                        continue;
                    }
                    if let (Ok(a), Ok(b)) = (t0.parse::<f64>(), t1.parse::<f64>()) {
                        launch[idx].push((b - a) * 1000.0);
                    }
                }
                ["hull-vmm:", "VM", "set-up", "took", us, "us"] => {
                    if let Ok(us) = us.parse::<f64>() {
                        setup.push(us / 1000.0);
                    }
                }
                _ => {
                    if let Some(us) = line
                        .strip_prefix("hull-vmm: guest boot time ")
                        .and_then(|r| r.strip_suffix(" us (boot-timer port)"))
                    {
                        if let Ok(us) = us.trim().parse::<f64>() {
                            to_init.push(us / 1000.0);
                        }
                    }
                }
            }
        }
    }
    let rss = |who: &str| {
        report.step("rss").output.lines().find_map(|l| {
            l.strip_prefix(&format!("{who} rss-kb "))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
    };
    let fmt =
        |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.0} {unit}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    let (hl, ql) = (median(launch[0].clone()), median(launch[1].clone()));
    let (hr, qr) = (rss("hull"), rss("qemu"));
    let place = match report.mode {
        Mode::Nested => {
            "inside the nested test host (L1 under QEMU TCG: only ratios mean anything)"
        }
        Mode::Host => "on this host's KVM",
    };
    println!("hull-vm-bench: {rounds} rounds, medians, {place}");
    if let Some(n) = qemu_note {
        println!("note: {n}");
    }
    println!();
    println!("| figure | hull-vmm | QEMU microvm | hull/QEMU |");
    println!("|---|---|---|---|");
    println!(
        "| launch → guest /init → reset → exit | {} | {} | {} |",
        fmt(hl, "ms"),
        fmt(ql, "ms"),
        ratio(hl, ql)
    );
    println!(
        "| Vm::start → first KVM_RUN (set-up) | {} | – | – |",
        fmt(median(setup), "ms")
    );
    println!(
        "| Vm::start → guest /init (boot timer) | {} | – | – |",
        fmt(median(to_init), "ms")
    );
    println!(
        "| RSS beyond guest memory, guest in /init | {} | {} | {} |",
        fmt(hr, "KiB"),
        fmt(qr, "KiB"),
        ratio(hr, qr)
    );
    println!();
    println!("wall time of the whole run: {:?}", report.wall);
    if std::env::var_os("HULL_VM_BENCH_VERBOSE").is_some() {
        for (name, s) in &report.steps {
            eprintln!("--- step {name}: status {:?}\n{}", s.status, s.output);
        }
    }
    Ok(())
}

/// `--containers`: `hull run /bin/true`, plain and in a VM, `rounds` times each, interleaved.
fn run_containers(rounds: usize) -> Result<(), String> {
    use hull_tests::nested::vm_containers::{self, Binaries, PRELUDE};
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut plain = hull_tests::Bundle::new();
    plain.args(&["/bin/true"]);
    let mut vm = hull_tests::Bundle::new();
    vm.args(&["/bin/true"])
        .annotation("io.hull.isolation", "vm")
        .readonly_root(false);
    let bins = Binaries::of_profile("release");
    let mut plan = vm_containers::plan(&bins, &[("plain", plain), ("vm", vm)], dir.path())
        .map_err(|s| format!("cannot run: {}", s.0))?;
    let script = format!(
        r#"{PRELUDE}
mkb plain; mkb vm
now() {{ cut -d' ' -f1 /proc/uptime; }}
i=0
while [ $i -lt {rounds} ]; do
  for kind in plain vm; do
    t0=$(now); hull run --bundle $kind $kind-$i > $kind-$i.log 2>&1; rc=$?; t1=$(now)
    echo "run $kind $t0 $t1 rc=$rc"
    [ $rc = 0 ] || cat $kind-$i.log
  done
  i=$((i+1))
done
"#
    );
    plan.step(
        "containers",
        Duration::from_secs(120 + 60 * rounds as u64),
        &script,
    );
    let host = hull_tests::nested::host_kvm_boots_linux();
    let report = plan.run(host).map_err(|s| format!("cannot run: {}", s.0))?;
    let out = &report.step("containers").output;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let ["run", kind, t0, t1, "rc=0"] = w.as_slice() {
            if let (Ok(a), Ok(b)) = (t0.parse::<f64>(), t1.parse::<f64>()) {
                times[usize::from(*kind == "vm")].push((b - a) * 1000.0);
            }
        }
    }
    if times.iter().any(|t| t.len() < rounds) {
        return Err(format!("not every run succeeded:\n{out}"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (p, v) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "hull run /bin/true ({:?}, medians of {rounds}): plain container {p:.0} ms, VM container {v:.0} ms, VM/plain {:.1}",
        report.mode,
        v / p
    );
    Ok(())
}
