//! For the fuzz targets in `kvm-tier/fuzz/` and their corpus replay
//! (`tests/fuzz_corpus.rs`) only: the code a target runs on one input, so that both run the
//! same. Not an API.
//!
//! `vsock_queue`: a hostile guest's TX/RX queue: the input is guest memory holding the descriptor table,
//! the available ring and the buffers; every chain popped goes through the vsock packet
//! parser (`read_tx`) and the RX path (`rx_capacity`, `write_rx`), as `VsockWorker` does.
//!
//! Layout: byte 0 picks the queue size (1 << (b & 3)) and event-idx (b & 0x80); the rest
//! is copied to guest memory from address 0. Memory is two 32 KiB regions with a 32 KiB
//! hole between them; the descriptor table is at 0x0, the available ring at 0x80 and the
//! used ring at 0xc0 (so small inputs hold whole queues; buffers usually start at 0x200).

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::virtio::vsock::packet::{read_tx, rx_capacity, write_rx};
use crate::memory::GuestMemoryMmap;

/// Size of each of the two guest memory regions.
const REGION: usize = 0x8000;
/// Where the second region starts (after a hole as large as a region).
const SECOND: u64 = 0x10000;

/// Runs one fuzz input; see the module documentation for its layout.
pub fn vsock_queue(data: &[u8]) {
    let Some((&sel, image)) = data.split_first() else {
        return;
    };
    let Ok(mem) =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), REGION), (GuestAddress(SECOND), REGION)])
    else {
        return;
    };
    let first = &image[..image.len().min(REGION)];
    let _ = mem.write_slice(first, GuestAddress(0));
    if image.len() > REGION {
        let second = &image[REGION..image.len().min(2 * REGION)];
        let _ = mem.write_slice(second, GuestAddress(SECOND));
    }
    let size = 1u16 << (sel & 3);
    let Ok(mut q) = Queue::new(256) else { return };
    q.set_size(size);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(0x80), Some(0));
    q.set_used_ring_address(Some(0xc0), Some(0));
    q.set_event_idx(sel & 0x80 != 0);
    q.set_ready(true);
    if !q.is_valid(&mem) {
        return;
    }
    // More pops than the queue holds: the avail index is guest-controlled.
    for _ in 0..(2 * usize::from(size) + 2) {
        let Some(chain) = q.pop_descriptor_chain(&mem) else {
            break;
        };
        let head = chain.head_index();
        let pkt = read_tx(chain.clone(), &mem).unwrap_or_default();
        let mut len = 0;
        if let Ok(cap) = rx_capacity(&chain, &mem) {
            let mut reply = pkt;
            reply.data.truncate(cap);
            reply.hdr.len = reply.data.len() as u32;
            len = write_rx(chain, &mem, &reply).unwrap_or(0);
        }
        let _ = q.add_used(&mem, head, len);
        let _ = q.needs_notification(&mem);
    }
}
