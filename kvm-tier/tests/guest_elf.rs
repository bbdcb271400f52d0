//! ELF kernels through linux-loader: with a PVH note the guest enters in
//! 32-bit protected mode with `hvm_start_info` in %ebx; without one it
//! enters its ELF entry point in long mode with the zero page in %rsi.

mod common;

use std::time::Duration;

use hull_kvm::{ExitReason, KernelKind, Vm, VmConfig};

const TIMEOUT: Duration = Duration::from_secs(20);

fn run(elf: &std::path::Path, dir: &std::path::Path) -> (ExitReason, String) {
    let serial = dir.join("serial.log");
    let mut cfg = VmConfig::new(elf);
    cfg.mem_mib = 32;
    cfg.serial = hull_kvm::SerialOutput::File(serial.clone());
    assert_eq!(cfg.validate().unwrap(), KernelKind::Elf);
    let mut vm = Vm::start(&cfg).expect("VM starts");
    let reason = vm.wait_timeout(TIMEOUT).expect("guest exits in time");
    (reason, std::fs::read_to_string(serial).unwrap())
}

#[test]
fn elf_with_pvh_note_enters_in_protected_mode() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let elf = common::assemble_elf(
        dir.path(),
        "pvh",
        r#"
        .section .note.Xen, "a", @note
        .p2align 2
        .long 4, 4, 18          /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long pvh_start
        .text
        .code32
    pvh_start:
        mov $0x3f8, %dx
        mov $'P', %al
        out %al, %dx
        cmpl $0x336ec578, (%ebx)     /* hvm_start_info.magic */
        jne 1f
        mov 8(%ebx), %eax            /* flags: 0 */
        mov 24(%ebx), %ecx           /* cmdline_paddr */
        movb (%ecx), %al             /* first command-line byte */
        mov $0x3f8, %dx
        out %al, %dx
        mov $0xf4, %dx
        mov $0x33, %al
        out %al, %dx
    1:  jmp 1b
        .code64
        .globl _start
    _start:                          /* the 64-bit entry must not be used */
        mov $0xf4, %dx
        mov $0x64, %al
        out %al, %dx
    2:  jmp 2b
    "#,
        0x200000,
    );
    let (reason, serial) = run(&elf, dir.path());
    assert_eq!(reason, ExitReason::DebugExit(0x33));
    assert_eq!(
        serial, "Pc",
        "protected-mode entry, then the cmdline's first byte"
    );
}

#[test]
fn elf_without_pvh_note_enters_in_long_mode() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let elf = common::assemble_elf(
        dir.path(),
        "elf64",
        r#"
        .text
        .code64
        .globl _start
    _start:
        cmpl $0x53726448, 0x202(%rsi)    /* zero page "HdrS" */
        jne 1f
        mov $0x3f8, %dx
        mov $'L', %al
        out %al, %dx
        mov $0x64, %dx
        mov $0xfe, %al
        out %al, %dx
    1:  jmp 1b
    "#,
        0x300000,
    );
    let (reason, serial) = run(&elf, dir.path());
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(serial, "L");
}
