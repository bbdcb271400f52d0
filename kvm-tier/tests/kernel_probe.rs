//! The probe: boot a real Linux kernel (Debian's cloud kernel) with a tiny
//! busybox initramfs through hull's VMM. Where KVM can boot it, the guest
//! must reach its init, which hits the boot-timer port and reboots. Where
//! it cannot (the nested PVM hypervisor), the test says so and is skipped.

mod common;

use std::path::Path;
use std::time::Duration;

use hull_kvm::{ExitReason, SerialOutput, Vm, VmConfig};

const INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox echo hull-probe: init reached
/bin/busybox printf '\\173' | /bin/busybox dd of=/dev/port bs=1 seek=1088 count=1 2>/dev/null
/bin/busybox reboot -f
";

/// How long a boot may take; shorter where KVM is known not to boot Linux.
fn boot_timeout() -> Duration {
    if known_incapable_kvm().is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    }
}

/// Why this host's KVM cannot boot a standard kernel, if it is known not to.
fn known_incapable_kvm() -> Option<&'static str> {
    Path::new("/sys/module/kvm_pvm").exists().then_some(
        "KVM here is the nested PVM hypervisor (kvm_pvm), which cannot run a standard Linux kernel",
    )
}

#[test]
fn debian_kernel_reaches_init() {
    if !Path::new("/dev/kvm").exists() {
        println!("skipped: /dev/kvm is missing");
        return;
    }
    let Some(kernel) = common::find_guest_kernel() else {
        println!(
            "skipped: no guest kernel (install linux-image-cloud-amd64 or set HULL_TEST_KERNEL)"
        );
        return;
    };
    let Ok(busybox) = std::fs::read("/bin/busybox") else {
        println!("skipped: /bin/busybox missing (Debian package busybox-static)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.cpio");
    let cpio = common::cpio_newc(&[
        ("bin", 0o040755, vec![]),
        ("dev", 0o040755, vec![]),
        ("bin/busybox", 0o100755, busybox),
        ("init", 0o100755, INIT.as_bytes().to_vec()),
    ]);
    std::fs::write(&initrd, cpio).unwrap();
    let serial = dir.path().join("serial.log");
    let mut cfg = VmConfig::new(&kernel);
    cfg.mem_mib = 256;
    cfg.initramfs = Some(initrd);
    cfg.cmdline = "console=ttyS0 reboot=k panic=-1 quiet".into();
    cfg.serial = SerialOutput::File(serial.clone());

    let mut vm = Vm::start(&cfg).expect("the kernel loads and the VM starts");
    let timeout = boot_timeout();
    let reason = vm.wait_timeout(timeout);
    let boot = vm.boot_time();
    let reason = reason.unwrap_or_else(|| vm.stop());
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    // Debian's cloud kernel has no /dev/port, so the boot-timer write may not happen;
    // init's echo on the console (userspace serial output) is the proof.
    if console.contains("hull-probe: init reached") {
        assert_eq!(reason, ExitReason::Reset, "init rebooted through the i8042");
        match boot {
            Some(t) => println!(
                "measured: {} booted to init in {} ms",
                kernel.display(),
                t.as_millis()
            ),
            None => println!("measured: {} reached init", kernel.display()),
        }
        return;
    }
    let what = format!(
        "{} did not reach init within {timeout:?} (exit: {reason:?}; {} bytes of console output)",
        kernel.display(),
        console.len()
    );
    match known_incapable_kvm() {
        Some(why) => println!("skipped: {why}; {what}"),
        None => panic!("{what}\nconsole:\n{console}"),
    }
}
