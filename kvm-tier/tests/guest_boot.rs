//! Small guests through the real boot path: assembled flat payloads are
//! loaded at the kernel load address and entered in long mode with the page
//! tables, GDT, registers and zero page a Linux kernel gets.

mod common;

use std::time::Duration;

use hull_kvm::{ExitReason, Vm};

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn hello_boot_timer_and_i8042_reset() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "outb BOOT_TIMER, 123\n{}\noutb I8042_CMD, 0xfe\n1: jmp 1b\n",
        common::print_str("hello\n")
    );
    let bin = common::assemble(dir.path(), "hello", &body);
    let serial = dir.path().join("serial.log");
    let mut vm = Vm::start(&common::flat_config(&bin, &serial)).expect("VM starts");
    let reason = vm.wait_timeout(TIMEOUT).expect("guest exits in time");
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(std::fs::read_to_string(&serial).unwrap(), "hello\n");
    let boot = vm.boot_time().expect("boot-timer port was hit");
    let setup = vm.timings().setup;
    assert!(
        setup <= boot,
        "set-up {setup:?} ends before the first guest instruction {boot:?}"
    );
    println!(
        "measured: Vm::start -> vCPU thread start {} us; Vm::start -> first guest instruction (boot-timer port) {} us",
        setup.as_micros(),
        boot.as_micros()
    );
}

#[test]
fn guest_reads_zero_page_cmdline_and_e820() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    // rsi points at the zero page: echo the command line (cmd_line_ptr at
    // 0x228) to the serial port, then exit with the e820 entry count (0x1e8).
    let bin = common::assemble(
        dir.path(),
        "cmdline",
        r#"
        mov 0x228(%rsi), %ebx
        mov $SERIAL, %dx
    1:  movb (%rbx), %al
        test %al, %al
        jz 2f
        out %al, %dx
        inc %rbx
        jmp 1b
    2:  cmpl $0x53726448, 0x202(%rsi)    /* "HdrS" */
        je 3f
        exit_with 0xee
    3:  movzbl 0x1e8(%rsi), %eax
        mov $DEBUG_EXIT, %dx
        out %al, %dx
    4:  jmp 4b
    "#,
    );
    let serial = dir.path().join("serial.log");
    let mut cfg = common::flat_config(&bin, &serial);
    cfg.cmdline = "console=ttyS0 hull.test=zero-page".into();
    let mut vm = Vm::start(&cfg).expect("VM starts");
    let reason = vm.wait_timeout(TIMEOUT).expect("guest exits in time");
    assert_eq!(reason, ExitReason::DebugExit(2), "two e820 RAM entries");
    assert_eq!(std::fs::read_to_string(&serial).unwrap(), cfg.cmdline);
}

#[test]
fn guest_initramfs_is_placed_and_readable() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"INITRD!\0").unwrap();
    // Print the initramfs (ramdisk_image at 0x218) up to its NUL.
    let bin = common::assemble(
        dir.path(),
        "initrd",
        r#"
        mov 0x218(%rsi), %ebx
        mov $SERIAL, %dx
    1:  movb (%rbx), %al
        test %al, %al
        jz 2f
        out %al, %dx
        inc %rbx
        jmp 1b
    2:  exit_with 0x7
    "#,
    );
    let serial = dir.path().join("serial.log");
    let mut cfg = common::flat_config(&bin, &serial);
    cfg.initramfs = Some(initrd);
    let mut vm = Vm::start(&cfg).expect("VM starts");
    assert_eq!(vm.wait_timeout(TIMEOUT), Some(ExitReason::DebugExit(7)));
    assert_eq!(std::fs::read_to_string(&serial).unwrap(), "INITRD!");
}

#[test]
fn two_vcpus_start_and_stop() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    // The boot vCPU spins; the second one waits for SIPI. stop() must kick
    // both out of KVM_RUN and join them.
    let bin = common::assemble(dir.path(), "spin", "outb BOOT_TIMER, 123\n1: jmp 1b");
    let serial = dir.path().join("serial.log");
    let mut cfg = common::flat_config(&bin, &serial);
    cfg.vcpus = 2;
    let mut vm = Vm::start(&cfg).expect("VM starts");
    let t = std::time::Instant::now();
    while vm.boot_time().is_none() && t.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(vm.boot_time().is_some(), "guest ran");
    assert_eq!(
        vm.wait_timeout(Duration::from_millis(50)),
        None,
        "guest still runs"
    );
    assert_eq!(vm.stop(), ExitReason::Stopped);
}

#[test]
fn triple_fault_is_reported_not_hung() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    // Jump to a non-canonical address: #GP with an empty IDT -> triple fault.
    let bin = common::assemble(
        dir.path(),
        "fault",
        "movabs $0x8000000000000000, %rax\n jmp *%rax",
    );
    let serial = dir.path().join("serial.log");
    let mut vm = Vm::start(&common::flat_config(&bin, &serial)).expect("VM starts");
    let reason = vm.wait_timeout(TIMEOUT).expect("VM ends");
    assert!(
        matches!(reason, ExitReason::Shutdown | ExitReason::VcpuError(_)),
        "{reason:?}"
    );
}

#[test]
fn guest_finds_acpi_tables_through_the_zero_page() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    // acpi_rsdp_addr (zero page 0x70) -> "RSD PTR " -> XSDT (RSDP+24) ->
    // "XSDT" -> first entry (FADT) -> "FACP".
    let bin = common::assemble(
        dir.path(),
        "acpi",
        r#"
        mov 0x70(%rsi), %rbx
        movabs $0x2052545020445352, %rax
        cmp %rax, (%rbx)
        je 1f
        exit_with 1
    1:  mov 24(%rbx), %rcx
        mov (%rcx), %eax
        expect %eax, 0x54445358, 2
        mov 36(%rcx), %rdx
        mov (%rdx), %eax
        expect %eax, 0x50434146, 3
        exit_with 0x42
    "#,
    );
    let serial = dir.path().join("serial.log");
    let mut vm = Vm::start(&common::flat_config(&bin, &serial)).expect("VM starts");
    assert_eq!(vm.wait_timeout(TIMEOUT), Some(ExitReason::DebugExit(0x42)));
}

/// Wraps a flat 64-bit payload into a minimal bzImage: a boot sector with
/// the setup header, one setup sector, then the "protected-mode kernel"
/// whose 64-bit entry (offset 0x200) is the payload.
fn synthetic_bzimage(payload: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; 2 * 512];
    img[0x1f1] = 1; // setup_sects
    img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
    img[0x211] = 1; // loadflags: LOADED_HIGH
    img[0x214..0x218].copy_from_slice(&0x100000u32.to_le_bytes()); // code32_start
    img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    let mut kernel = vec![0xf4u8; 0x200]; // 32-bit entry: never used
    kernel.extend_from_slice(payload);
    img.extend_from_slice(&kernel);
    img
}

#[test]
fn synthetic_bzimage_boots_through_the_64bit_entry() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    // The zero page carries the kernel's own setup header (version 0x20f)
    // with the loader type filled in.
    let flat = common::assemble(
        dir.path(),
        "bz",
        r#"
        movzwl 0x206(%rsi), %eax
        expect %eax, 0x20f, 1
        movzbl 0x210(%rsi), %eax
        expect %eax, 0xff, 2
        mov 0x214(%rsi), %eax
        expect %eax, 0x100000, 3
        outb BOOT_TIMER, 123
        outb I8042_CMD, 0xfe
    1:  jmp 1b
    "#,
    );
    let kernel = dir.path().join("bzImage");
    std::fs::write(&kernel, synthetic_bzimage(&std::fs::read(&flat).unwrap())).unwrap();
    let serial = dir.path().join("serial.log");
    let mut cfg = hull_kvm::VmConfig::new(&kernel);
    cfg.mem_mib = 32;
    cfg.serial = hull_kvm::SerialOutput::File(serial);
    assert_eq!(cfg.validate().unwrap(), hull_kvm::KernelKind::BzImage);
    let mut vm = Vm::start(&cfg).expect("VM starts");
    assert_eq!(vm.wait_timeout(TIMEOUT), Some(ExitReason::Reset));
    assert!(vm.boot_time().is_some());
}

#[test]
fn old_bzimage_protocol_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = synthetic_bzimage(&[0xf4]);
    img[0x206..0x208].copy_from_slice(&0x0206u16.to_le_bytes());
    let kernel = dir.path().join("bzImage-old");
    std::fs::write(&kernel, img).unwrap();
    let mut cfg = hull_kvm::VmConfig::new(&kernel);
    cfg.serial = hull_kvm::SerialOutput::Sink;
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("skipped: /dev/kvm is missing");
        return;
    }
    let err = Vm::start(&cfg).unwrap_err();
    assert!(err.to_string().contains("too old"), "{err}");
}
