//! The device model checked against a reference: QEMU's `microvm` machine
//! (TCG) boots the Debian cloud kernel with a `vhost-user-fs-device` served
//! by virtiofsd; a busybox init loads virtio_mmio/fuse/virtiofs, mounts the
//! share, runs a program from it, and reports what the kernel made of the
//! virtio-mmio devices and ACPI. The test compares that, and QEMU's DSDT,
//! with the DSDT and layout hull-kvm generates for the same device set.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hull_kvm::acpi;
use hull_kvm::device_manager::MmioDeviceInfo;
use hull_kvm::layout;
use vm_memory::GuestAddress;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Modules to load, dependencies first (resolved from `depends=`).
const WANTED: &[&str] = &["virtio_mmio", "virtiofs"];

fn tool_ok(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Everything the check needs, or why it cannot run here.
struct Env {
    kernel: PathBuf,
    modules: PathBuf,
    busybox: Vec<u8>,
    virtiofsd: PathBuf,
}

fn env() -> Result<Env, String> {
    if !tool_ok("qemu-system-x86_64", "--version") {
        return Err("qemu-system-x86_64 missing (Debian package qemu-system-x86)".into());
    }
    if !tool_ok("iasl", "-v") {
        return Err("iasl missing (Debian package acpica-tools)".into());
    }
    let kernel = common::find_guest_kernel()
        .filter(|k| k.is_file())
        .ok_or("no guest kernel: set HULL_TEST_KERNEL=$(dev/guest-kernel)")?;
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or("kernel file is not named vmlinuz-<version>")?;
    // <cache>/boot/vmlinuz-V -> <cache>/lib/modules/V
    let root = kernel
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let modules = root.join("lib/modules").join(version);
    if !modules.is_dir() {
        return Err(format!(
            "modules of {version} missing at {}",
            modules.display()
        ));
    }
    let busybox = std::fs::read("/bin/busybox")
        .map_err(|_| "/bin/busybox missing (Debian package busybox-static)".to_string())?;
    let virtiofsd = common::find_virtiofsd()?;
    Ok(Env {
        kernel,
        modules,
        busybox,
        virtiofsd,
    })
}

/// The module file of `name` under `dir` (uncompressed `.ko` only).
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let file = format!("{name}.ko");
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == file.as_str()) {
                return Some(p);
            }
        }
    }
    None
}

/// The `depends=` list in a module's `.modinfo`.
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// `wanted` and their dependencies, each after what it depends on.
fn load_order(dir: &Path, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
    fn visit(
        dir: &Path,
        name: &str,
        out: &mut Vec<(String, Vec<u8>)>,
        depth: usize,
    ) -> Result<(), String> {
        if out.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        if depth > 16 {
            return Err(format!("module dependency loop at {name}"));
        }
        let path = find_module(dir, name).ok_or(format!("module {name}.ko not found"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for dep in module_depends(&bytes) {
            visit(dir, &dep, out, depth + 1)?;
        }
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), bytes));
        }
        Ok(())
    }
    let mut out = Vec::new();
    for w in wanted {
        visit(dir, w, &mut out, 0)?;
    }
    Ok(out)
}

fn init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t devtmpfs dev /dev
exec >/dev/ttyS0 2>&1 </dev/null
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
echo HULL-INIT
for m in {mods}; do $B insmod /m/$m.ko || echo HULL-INSMOD-FAILED $m; done
$B mkdir -p /mnt
$B mount -t virtiofs hullfs /mnt && echo HULL-MOUNTED
$B sh /mnt/prog.sh
echo HULL-DEVICES-BEGIN
for d in /sys/bus/platform/devices/LNRO0005:*; do
  echo "platform $($B basename $d) driver=$($B basename $($B readlink $d/driver))"
done
for v in /sys/bus/virtio/devices/*; do echo "virtio $($B basename $v) device=$($B cat $v/device)"; done
$B grep -i lnro0005 /proc/iomem | $B sed 's/^ */iomem /'
$B grep virtio /proc/interrupts | $B sed 's/^ */irq /'
echo HULL-DEVICES-END
echo HULL-DSDT-BEGIN
$B od -An -tx1 -v /sys/firmware/acpi/tables/DSDT
echo HULL-DSDT-END
$B poweroff -f
"#,
        mods = modules.join(" ")
    )
}

fn between<'a>(out: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let a = out.find(begin)? + begin.len();
    let b = out[a..].find(end)? + a;
    Some(&out[a..b])
}

fn disassemble(dir: &Path, name: &str, table: &[u8]) -> String {
    let path = dir.join(format!("{name}.dat"));
    std::fs::write(&path, table).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "iasl -d {name} failed");
    std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap()
}

/// What a DSDT says about one `LNRO0005` device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AcpiVirtio {
    base: u64,
    size: u64,
    irq: u32,
    /// The Interrupt descriptor's flags: (consumer, trigger, polarity, sharing).
    flags: String,
}

/// The `LNRO0005` devices in a disassembled DSDT.
fn virtio_devices(dsl: &str) -> Vec<AcpiVirtio> {
    let mut out = Vec::new();
    for block in dsl.split("Device (").skip(1) {
        if !block.contains("\"LNRO0005\"") {
            continue;
        }
        let num = |s: &str| {
            let s = s.trim().trim_end_matches(',').trim();
            u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
        };
        let mem = block
            .split("Memory32Fixed (ReadWrite,")
            .nth(1)
            .map(|m| m.lines().take(3).map(str::to_string).collect::<Vec<_>>());
        let Some(mem) = mem else { continue };
        let base = mem
            .get(1)
            .and_then(|l| num(l.split("//").next().unwrap_or("")));
        let size = mem
            .get(2)
            .and_then(|l| num(l.split("//").next().unwrap_or("")));
        let Some(irq_part) = block.split("Interrupt (").nth(1) else {
            continue;
        };
        let flags = irq_part.split(')').next().unwrap_or("").replace(' ', "");
        let irq = irq_part
            .split('{')
            .nth(1)
            .and_then(|s| s.split('}').next())
            .and_then(num);
        if let (Some(base), Some(size), Some(irq)) = (base, size, irq) {
            out.push(AcpiVirtio {
                base,
                size,
                irq: irq as u32,
                flags,
            });
        }
    }
    out
}

/// The host's TSC frequency in kHz (TCG's guest TSC runs at the host's).
/// Giving it to the guest skips PIT calibration, which fails now and then
/// under TCG on a loaded host and then leaves the boot stuck.
fn host_tsc_khz() -> u64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(2_000_000, |mhz| (mhz * 1000.0) as u64)
}

fn run_qemu(dir: &Path, env: &Env, initrd: &Path, socket: &Path) -> (String, Duration) {
    let cmdline = format!(
        "console=ttyS0 panic=-1 rdinit=/init no_timer_check tsc_early_khz={}",
        host_tsc_khz()
    );
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm,acpi=on,rtc=on,memory-backend=mem"])
        .args(["-m", "256M", "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .arg("-chardev")
        .arg(format!("socket,id=vfs,path={}", socket.display()))
        .args(["-device", "vhost-user-fs-device,chardev=vfs,tag=hullfs"])
        .arg("-kernel")
        .arg(&env.kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(&cmdline)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let out = reader.join().unwrap();
    if !err.trim().is_empty() {
        println!("qemu stderr: {err}");
    }
    (out, took)
}

#[test]
fn qemu_microvm_agrees_with_hulls_acpi_and_device_layout() {
    let env = match env() {
        Ok(e) => e,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let token = format!("tok{}", std::process::id());
    std::fs::write(shared.path().join("token"), &token).unwrap();
    std::fs::write(
        shared.path().join("prog.sh"),
        "echo HULL-FROM-SHARE $(/bin/busybox cat /mnt/token)\n",
    )
    .unwrap();

    // The initramfs: busybox, init, the modules in load order.
    let modules = load_order(&env.modules, WANTED).expect("modules found");
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    println!("module load order: {names:?}");
    let init = init_script(&names);
    let mut entries: Vec<(String, u32, Vec<u8>)> = vec![
        ("bin".into(), 0o040755, vec![]),
        ("bin/busybox".into(), 0o100755, env.busybox.clone()),
        ("dev".into(), 0o040755, vec![]),
        ("proc".into(), 0o040755, vec![]),
        ("sys".into(), 0o040755, vec![]),
        ("m".into(), 0o040755, vec![]),
        ("init".into(), 0o100755, init.into_bytes()),
    ];
    for (n, bytes) in modules {
        entries.push((format!("m/{n}.ko"), 0o100644, bytes));
    }
    let refs: Vec<(&str, u32, Vec<u8>)> = entries
        .iter()
        .map(|(n, m, d)| (n.as_str(), *m, d.clone()))
        .collect();
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, common::cpio_newc(&refs)).unwrap();

    // virtiofsd for QEMU, on a socket QEMU connects to.
    let socket = dir.path().join("vfs.sock");
    let mut vfsd = Command::new(&env.virtiofsd)
        .arg("--socket-path")
        .arg(&socket)
        .arg("--shared-dir")
        .arg(shared.path())
        .arg(format!(
            "--sandbox={}",
            common::virtiofsd_sandbox().as_arg()
        ))
        .arg("--log-level=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("virtiofsd starts");
    let t = Instant::now();
    while !socket.exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (out, took) = run_qemu(dir.path(), &env, &initrd, &socket);
    // SAFETY: signals our own, not yet reaped child.
    unsafe { libc::kill(vfsd.id() as i32, libc::SIGTERM) };
    let _ = vfsd.wait();
    println!("QEMU microvm run took {took:?}");
    let show = || {
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };

    // The guest got through its steps.
    assert!(out.contains("HULL-INIT"), "init not reached:\n{}", show());
    assert!(!out.contains("HULL-INSMOD-FAILED"), "{}", show());
    assert!(
        out.contains("HULL-MOUNTED"),
        "virtio-fs not mounted:\n{}",
        show()
    );
    assert!(
        out.contains(&format!("HULL-FROM-SHARE {token}")),
        "program on the share did not run:\n{}",
        show()
    );

    // What the kernel made of the device.
    let report = between(&out, "HULL-DEVICES-BEGIN", "HULL-DEVICES-END").expect("device report");
    println!("guest report:{report}");
    let lines: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let platform: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("platform "))
        .collect();
    assert_eq!(platform.len(), 1, "one LNRO0005 platform device: {lines:?}");
    assert!(
        platform[0].contains("LNRO0005:00") && platform[0].ends_with("driver=virtio-mmio"),
        "the ACPI device binds to virtio-mmio: {}",
        platform[0]
    );
    let virtio: Vec<&&str> = lines.iter().filter(|l| l.starts_with("virtio ")).collect();
    assert_eq!(virtio.len(), 1, "{lines:?}");
    assert!(
        virtio[0].ends_with("device=0x001a"),
        "virtio-fs id 26: {}",
        virtio[0]
    );
    let iomem = lines
        .iter()
        .find_map(|l| l.strip_prefix("iomem "))
        .expect("iomem window");
    let (range, _) = iomem.split_once(" : ").expect("iomem line");
    let (lo, hi) = range.split_once('-').unwrap();
    let lo = u64::from_str_radix(lo, 16).unwrap();
    let hi = u64::from_str_radix(hi, 16).unwrap();
    let irq_line = lines
        .iter()
        .find_map(|l| l.strip_prefix("irq "))
        .expect("virtio interrupt line");
    // "49:  14  IO-APIC  23-fasteoi  virtio0": the IO-APIC pin and how
    // the kernel programmed it (fasteoi = level, edge = edge).
    let chip = irq_line
        .split_whitespace()
        .skip_while(|w| *w != "IO-APIC")
        .nth(1)
        .expect("an IO-APIC line");
    let (pin, handler) = chip.split_once('-').unwrap();
    let pin: u32 = pin.parse().unwrap();

    // QEMU's DSDT, as the guest saw it.
    let hex = between(&out, "HULL-DSDT-BEGIN", "HULL-DSDT-END").expect("DSDT dump");
    let qemu_dsdt: Vec<u8> = hex
        .split_whitespace()
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    assert_eq!(&qemu_dsdt[..4], b"DSDT");
    let qemu = virtio_devices(&disassemble(dir.path(), "qemu-dsdt", &qemu_dsdt));
    assert_eq!(qemu.len(), 1, "QEMU DSDT: {qemu:?}");
    let q = &qemu[0];

    // The kernel takes the window and the interrupt from _CRS as they are:
    // the assumption hull's layout (window = MmioDeviceInfo, GSI = irqfd
    // line) relies on.
    assert_eq!((lo, hi + 1 - lo), (q.base, q.size), "iomem = _CRS window");
    // The _CRS GSI is an IO-APIC pin (24 pins per IO-APIC; QEMU's microvm
    // puts virtio on a second IO-APIC, GSIs 24-47), and the kernel programs
    // the pin with the trigger mode _CRS declares.
    assert_eq!(q.irq % 24, pin, "GSI {} -> pin {pin}: {irq_line}", q.irq);
    let trigger = q.flags.split(',').nth(1).unwrap_or("").to_string();
    let expected_handler = if trigger == "Level" {
        "fasteoi"
    } else {
        "edge"
    };
    assert_eq!(handler, expected_handler, "{trigger} in _CRS: {irq_line}");

    // hull's DSDT for the same device set.
    let ours_info = MmioDeviceInfo {
        device_id: 26,
        base: GuestAddress(layout::VIRTIO_MMIO_BASE),
        size: layout::VIRTIO_MMIO_SIZE,
        irq: layout::VIRTIO_IRQ_BASE,
    };
    let ours = virtio_devices(&disassemble(
        dir.path(),
        "hull-dsdt",
        &acpi::dsdt(&[ours_info]),
    ));
    assert_eq!(ours.len(), 1, "hull DSDT: {ours:?}");
    let h = &ours[0];
    println!("QEMU microvm: {q:?}\nhull-kvm:     {h:?}");
    assert_eq!(
        (h.base, h.size, h.irq),
        (ours_info.base.0, ours_info.size, ours_info.irq)
    );
    // Same descriptor shape: a consumer, active-high, exclusive interrupt.
    // The trigger mode differs on purpose: QEMU's virtio-mmio raises a
    // level line; hull signals an irqfd, an edge, and says so (as
    // Firecracker does).
    let fields = |f: &str| {
        f.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (qf, hf) = (fields(&q.flags), fields(&h.flags));
    assert_eq!(qf.len(), 4, "{qf:?}");
    assert_eq!(hf.len(), 4, "{hf:?}");
    assert_eq!((&qf[0], &qf[2], &qf[3]), (&hf[0], &hf[2], &hf[3]));
    assert_eq!(hf[1], "Edge");
    // The register window holds the v2 registers and the config space
    // the kernel reads (QEMU: 0x200); hull's windows are page-sized and
    // page-aligned, and its GSIs lie on the IO-APIC's 24 pins, clear of
    // the legacy ones hull uses (COM1 = 4).
    assert!(h.size >= q.size && h.size.is_multiple_of(4096) && h.base.is_multiple_of(4096));
    assert!(h.irq < 24 && h.irq != 4);
    assert!(
        took < Duration::from_secs(30),
        "the QEMU run should take a few seconds, took {took:?}"
    );
}
