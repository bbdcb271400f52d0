//! Console input reaches the guest's UART: a small guest polls the line
//! status register and reads 200 bytes, more than the 64-byte FIFO holds,
//! so the input thread must hold back while the FIFO is full; and none
//! arrives before the guest raises RTS.

mod common;

use std::time::Duration;

use hull_kvm::{ExitReason, SerialInput, Vm};

const GUEST: &str = r#"
    xor %ebx, %ebx
    xor %esi, %esi
    /* the input is held back until RTS: nothing may be there yet */
    mov $0x3fd, %dx
    mov $2000, %ecx
0:  in %dx, %al
    test $1, %al
    jz 4f
    exit_with 3
4:  dec %ecx
    jnz 0b
    /* DTR | RTS */
    mov $0x3fc, %dx
    mov $0x03, %al
    out %al, %dx
1:  mov $0x3fd, %dx
2:  in %dx, %al
    test $1, %al
    jz 2b
    mov $0x3f8, %dx
    in %dx, %al
    inc %ebx
    /* the first byte is 'p' */
    cmp $1, %ebx
    jne 3f
    expect %al, 0x70, 2
3:  cmp $0x5a, %al
    jne 1b
    expect %ebx, 200, 1
    exit_with 100
"#;

#[test]
fn guest_reads_serial_input_beyond_the_fifo_size() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let bin = common::assemble(dir.path(), "serial_in", GUEST);
    let input = dir.path().join("input");
    let mut bytes = b"ping".to_vec();
    bytes.resize(199, b'a');
    bytes.push(b'Z');
    std::fs::write(&input, &bytes).unwrap();
    let mut cfg = common::flat_config(&bin, &dir.path().join("serial.log"));
    cfg.serial_input = SerialInput::File(input);
    let mut vm = Vm::start(&cfg).expect("VM starts");
    let reason = vm
        .wait_timeout(Duration::from_secs(20))
        .expect("guest exits in time");
    assert_eq!(
        reason,
        ExitReason::DebugExit(100),
        "guest check failed (code = step)"
    );
}

#[test]
fn missing_serial_input_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = hull_kvm::VmConfig::new("/nonexistent");
    cfg.serial_input = SerialInput::File(dir.path().join("missing"));
    cfg.kernel_format = hull_kvm::KernelFormat::Flat64;
    let kernel = dir.path().join("k.bin");
    std::fs::write(&kernel, [0xf4u8]).unwrap();
    cfg.kernel = kernel;
    assert!(matches!(
        cfg.validate(),
        Err(hull_kvm::ConfigError::SerialInputMissing(_))
    ));
}
