//! A small guest drives the virtio-mmio transport of the vsock device:
//! register probing, feature negotiation, queue set-up, then a real
//! virtqueue round trip with a host process on the unix socket.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use hull_kvm::{ExitReason, Vm, VsockConfig};

const TIMEOUT: Duration = Duration::from_secs(20);

/// virtio-mmio probing and negotiation, queue set-up, then: receive the
/// host's connection REQUEST, answer RESPONSE, receive "ping", send "pong".
const GUEST: &str = r#"
    .set MMIO, 0xd0000000
    .set RXQ_DESC, 0x200000
    .set RXQ_AVAIL, 0x201000
    .set RXQ_USED, 0x202000
    .set TXQ_DESC, 0x210000
    .set TXQ_AVAIL, 0x211000
    .set TXQ_USED, 0x212000
    .set RXBUF0, 0x220000
    .set RXBUF1, 0x221000
    .set TXBUF0, 0x230000
    .set TXBUF1, 0x231000

    /* A vsock header from the guest (CID 3, port 1234) to host port r12d. */
    .macro tx_header buf, op, len, fwd
        mov $\buf, %edi
        movq $3, (%rdi)
        movq $2, 8(%rdi)
        movl $1234, 16(%rdi)
        mov %r12d, 20(%rdi)
        movl $\len, 24(%rdi)
        movw $1, 28(%rdi)
        movw $\op, 30(%rdi)
        movl $0, 32(%rdi)
        movl $65536, 36(%rdi)
        movl $\fwd, 40(%rdi)
    .endm

    .macro desc table, index, addr, len, flags
        mov $\table, %edi
        movq $\addr, (\index * 16)(%rdi)
        movl $\len, (\index * 16 + 8)(%rdi)
        movw $\flags, (\index * 16 + 12)(%rdi)
        movw $0, (\index * 16 + 14)(%rdi)
    .endm

    .macro wait_used ring, count
        mov $\ring, %edi
    97: movzwl 2(%rdi), %eax
        cmp $\count, %eax
        jb 97b
    .endm

    .macro setup_queue index, descs, avail, used
        movl $\index, 0x30(%rbx)
        mov 0x34(%rbx), %eax
        expect %eax, 256, 9
        movl $8, 0x38(%rbx)
        movl $\descs, 0x80(%rbx)
        movl $0, 0x84(%rbx)
        movl $\avail, 0x90(%rbx)
        movl $0, 0x94(%rbx)
        movl $\used, 0xa0(%rbx)
        movl $0, 0xa4(%rbx)
        movl $1, 0x44(%rbx)
        mov 0x44(%rbx), %eax
        expect %eax, 1, 10
    .endm

    outb BOOT_TIMER, 123
    mov $MMIO, %ebx
    mov (%rbx), %eax
    expect %eax, 0x74726976, 1
    mov 4(%rbx), %eax
    expect %eax, 2, 2
    mov 8(%rbx), %eax
    expect %eax, 19, 3

    /* ACKNOWLEDGE, DRIVER */
    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    /* Features: VERSION_1 (bit 32) offered, nothing in the low word. */
    movl $1, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    expect %eax, 1, 4
    movl $0, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    expect %eax, 0, 5
    /* First try to accept a feature that is not offered: refused. */
    movl $0, 0x24(%rbx)
    movl $0x10000000, 0x20(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 3, 20
    /* Reset, then negotiate properly. */
    movl $0, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 0, 21
    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 0xb, 6
    /* Config space: guest_cid = 3 (le64). */
    mov 0x100(%rbx), %eax
    expect %eax, 3, 7
    mov 0x104(%rbx), %eax
    expect %eax, 0, 8

    setup_queue 0, RXQ_DESC, RXQ_AVAIL, RXQ_USED
    setup_queue 1, TXQ_DESC, TXQ_AVAIL, TXQ_USED

    /* Two device-writable receive buffers. */
    desc RXQ_DESC, 0, RXBUF0, 4096, 2
    desc RXQ_DESC, 1, RXBUF1, 4096, 2
    mov $RXQ_AVAIL, %edi
    movw $0, 4(%rdi)
    movw $1, 6(%rdi)
    movw $2, 2(%rdi)

    /* DRIVER_OK */
    movl $0xf, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    expect %eax, 0xf, 11
    movl $0, 0x50(%rbx)

    /* The host's connection request. */
    wait_used RXQ_USED, 1
    mov $RXBUF0, %esi
    movzwl 30(%rsi), %eax
    expect %eax, 1, 12
    mov 20(%rsi), %eax
    expect %eax, 1234, 13
    mov 8(%rsi), %eax
    expect %eax, 3, 14
    mov 16(%rsi), %r12d

    tx_header TXBUF0, 2, 0, 0
    desc TXQ_DESC, 0, TXBUF0, 44, 0
    mov $TXQ_AVAIL, %edi
    movw $0, 4(%rdi)
    movw $1, 2(%rdi)
    movl $1, 0x50(%rbx)

    /* "ping" from the host. */
    wait_used RXQ_USED, 2
    mov $RXBUF1, %esi
    movzwl 30(%rsi), %eax
    expect %eax, 5, 15
    mov 24(%rsi), %eax
    expect %eax, 4, 16
    mov 44(%rsi), %eax
    expect %eax, 0x676e6970, 17

    /* "pong" back, header and payload in one descriptor. */
    tx_header TXBUF1, 5, 4, 4
    movl $0x676e6f70, 44(%rdi)
    desc TXQ_DESC, 1, TXBUF1, 48, 0
    mov $TXQ_AVAIL, %edi
    movw $1, 6(%rdi)
    movw $2, 2(%rdi)
    movl $1, 0x50(%rbx)
    wait_used TXQ_USED, 2

    /* The interrupt status shows used buffers; ack it. */
    mov 0x60(%rbx), %eax
    and $1, %eax
    expect %eax, 1, 18
    movl $1, 0x64(%rbx)
    mov 0x60(%rbx), %eax
    expect %eax, 0, 19
    exit_with 100
"#;

#[test]
fn guest_drives_virtio_mmio_vsock_round_trip() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let bin = common::assemble(dir.path(), "virtio", GUEST);
    let serial = dir.path().join("serial.log");
    let uds = dir.path().join("vsock.sock");
    let mut cfg = common::flat_config(&bin, &serial);
    cfg.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    });
    let mut vm = Vm::start(&cfg).expect("VM starts");
    assert_eq!(vm.mmio_devices().len(), 1);
    assert_eq!(vm.mmio_devices()[0].device_id, 19);

    let mut host = UnixStream::connect(&uds).expect("vsock socket listens");
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    let mut reader = BufReader::new(host.try_clone().unwrap());
    let mut line = String::new();
    let t = Instant::now();
    let got = reader.read_line(&mut line);
    if got.is_err() {
        let reason = vm.wait_timeout(Duration::from_millis(100));
        panic!(
            "no OK line after {:?}: {got:?}; VM: {reason:?}",
            t.elapsed()
        );
    }
    assert!(line.starts_with("OK "), "{line:?}");
    let port: u32 = line[3..].trim().parse().unwrap();
    assert!(port >= 1 << 30);
    host.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    reader.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");
    let reason = vm.wait_timeout(TIMEOUT).expect("guest exits in time");
    assert_eq!(
        reason,
        ExitReason::DebugExit(100),
        "guest check failed (code = step)"
    );
    drop(vm);
    assert!(!uds.exists(), "the vsock socket is removed at teardown");
}

#[test]
fn mmio_devices_can_be_listed_on_the_command_line() {
    require_guest_env!();
    let dir = tempfile::tempdir().unwrap();
    let bin = common::assemble(dir.path(), "spin", "1: jmp 1b\n");
    let mut cfg = common::flat_config(&bin, &dir.path().join("serial.log"));
    cfg.cmdline = "console=ttyS0".into();
    cfg.vsock = Some(VsockConfig {
        guest_cid: 3,
        uds_path: dir.path().join("v.sock"),
    });
    let read_cmdline = |vm: &Vm| {
        let mut buf = vec![0u8; 256];
        vm_memory::Bytes::read_slice(
            vm.memory(),
            &mut buf,
            vm_memory::GuestAddress(hull_kvm::layout::CMDLINE_ADDR),
        )
        .unwrap();
        let end = buf.iter().position(|&b| b == 0).unwrap();
        String::from_utf8(buf[..end].to_vec()).unwrap()
    };
    let mut vm = Vm::start(&cfg).expect("VM starts");
    assert_eq!(read_cmdline(&vm), "console=ttyS0", "off by default");
    vm.stop();
    drop(vm);
    cfg.mmio_cmdline_devices = true;
    let mut vm = Vm::start(&cfg).expect("VM starts");
    assert_eq!(
        read_cmdline(&vm),
        "console=ttyS0 virtio_mmio.device=0x1000@0xd0000000:5"
    );
    vm.stop();
}
