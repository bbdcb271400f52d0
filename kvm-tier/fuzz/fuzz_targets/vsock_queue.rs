//! A hostile guest's TX/RX queue: the input is guest memory holding the descriptor table,
//! the available ring and the buffers; every chain popped goes through the vsock packet
//! parser (`read_tx`) and the RX path (`rx_capacity`, `write_rx`), as `VsockWorker` does.
//!
//! Layout: byte 0 picks the queue size (1 << (b & 3)) and event-idx (b & 0x80); the rest
//! is copied to guest memory from address 0. Memory is two 32 KiB regions with a 32 KiB
//! hole between them; the descriptor table is at 0x0, the available ring at 0x80 and the
//! used ring at 0xc0 (so small inputs hold whole queues; buffers usually start at 0x200).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hull_kvm::fuzzing::vsock_queue(data);
});
