//! A small guest drives a virtio-fs device whose queues a real virtiofsd
//! serves: it finds the device, reads the tag, negotiates, sets up both
//! queues and sends one FUSE_INIT request, then checks the reply.

mod common;

use std::time::Duration;

use hull_kvm::{ExitReason, VirtiofsOptions, Vm};

/// Exits 100 on success, else the number of the failed step.
const GUEST: &str = r#"
    .set MMIO, 0xd0000000
    .set HQ, 0x200000
    .set RQ, 0x210000
    .set REQ, 0x220000
    .set REPLY, 0x221000

    .macro setup_queue index, base
        movl $\index, 0x30(%rbx)
        mov 0x34(%rbx), %eax
        expect %eax, 256, 9
        movl $16, 0x38(%rbx)
        movl $\base, 0x80(%rbx)
        movl $0, 0x84(%rbx)
        movl $(\base + 0x1000), 0x90(%rbx)
        movl $0, 0x94(%rbx)
        movl $(\base + 0x2000), 0xa0(%rbx)
        movl $0, 0xa4(%rbx)
        movl $1, 0x44(%rbx)
    .endm

    mov $MMIO, %ebx
    mov (%rbx), %eax
    expect %eax, 0x74726976, 1
    mov 8(%rbx), %eax
    expect %eax, 26, 2
    /* Config: tag "hullfs" then num_request_queues = 1 at offset 36. */
    mov 0x100(%rbx), %eax
    expect %eax, 0x6c6c7568, 3
    movzwl 0x104(%rbx), %eax
    expect %eax, 0x7366, 4
    mov 0x124(%rbx), %eax
    expect %eax, 1, 5

    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    /* VERSION_1 must be offered; accept only it. */
    movl $1, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    and $1, %eax
    expect %eax, 1, 6
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 0xb, 7

    setup_queue 0, HQ
    setup_queue 1, RQ

    /* FUSE_INIT: in header (40 bytes) + init_in (64 bytes). */
    mov $REQ, %edi
    movl $104, (%rdi)
    movl $26, 4(%rdi)
    movq $0x55, 8(%rdi)
    movl $7, 40(%rdi)
    movl $31, 44(%rdi)
    /* desc 0: request, NEXT -> desc 1: reply buffer, WRITE */
    mov $RQ, %edi
    movq $REQ, (%rdi)
    movl $104, 8(%rdi)
    movw $1, 12(%rdi)
    movw $1, 14(%rdi)
    movq $REPLY, 16(%rdi)
    movl $4096, 24(%rdi)
    movw $2, 28(%rdi)
    mov $(RQ + 0x1000), %edi
    movw $0, 4(%rdi)
    movw $1, 2(%rdi)

    /* DRIVER_OK: the VMM hands the vrings to virtiofsd. */
    movl $0xf, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 0xf, 8
    movl $1, 0x50(%rbx)

    /* Wait for the used ring (bounded). */
    mov $(RQ + 0x2000), %edi
    mov $2000000000, %rcx
10: movzwl 2(%rdi), %eax
    cmp $1, %eax
    je 11f
    dec %rcx
    jnz 10b
    exit_with 10
11:
    mov $REPLY, %esi
    mov 4(%rsi), %eax
    expect %eax, 0, 11
    mov 8(%rsi), %eax
    expect %eax, 0x55, 12
    mov 16(%rsi), %eax
    expect %eax, 7, 13
    /* The back-end raised the irqfd; the status shows a used buffer. */
    mov 0x60(%rbx), %eax
    and $1, %eax
    expect %eax, 1, 14
    /* Reset: the VMM stops the vrings; the status reads 0 again. */
    movl $0, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 0, 15
    exit_with 100
"#;

#[test]
fn guest_sends_fuse_init_through_virtio_fs_to_virtiofsd() {
    require_guest_env!();
    let binary = match common::find_virtiofsd() {
        Ok(p) => p,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let bin = common::assemble(dir.path(), "virtiofs", GUEST);
    let serial = dir.path().join("serial.log");
    let mut cfg = common::flat_config(&bin, &serial);
    cfg.shared_dir = Some(shared.path().to_path_buf());
    cfg.virtiofs = VirtiofsOptions {
        binary: Some(binary),
        sandbox: common::virtiofsd_sandbox(),
        ..VirtiofsOptions::default()
    };
    let mut vm = Vm::start(&cfg).expect("VM starts");
    println!("VM set-up with virtiofsd: {:?}", vm.timings().setup);
    assert_eq!(vm.mmio_devices().len(), 1);
    assert_eq!(vm.mmio_devices()[0].device_id, 26);
    let pid = vm.virtiofsd_pid().expect("virtiofsd runs");
    let reason = vm
        .wait_timeout(Duration::from_secs(20))
        .expect("guest exits in time");
    assert_eq!(
        reason,
        ExitReason::DebugExit(100),
        "guest check failed (code = step)"
    );
    drop(vm);
    // SAFETY: kill with signal 0 only checks the pid.
    let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
    assert!(!alive, "virtiofsd {pid} is stopped and reaped at teardown");
}
