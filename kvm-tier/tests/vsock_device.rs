//! Host-side tests of the vsock device: its worker driven through
//! `virtio-queue` on test guest memory, with real unix sockets on the host
//! side, including malformed descriptor chains from a hostile guest.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hull_kvm::devices::virtio::vsock::device::VsockWorker;
use hull_kvm::devices::virtio::vsock::muxer::Muxer;
use hull_kvm::devices::virtio::vsock::packet::{op, VsockHeader, HDR_SIZE};
use hull_kvm::devices::virtio::VirtioInterrupt;
use hull_kvm::devices::IrqLine;
use hull_kvm::memory::{create_guest_memory, GuestMemoryMmap};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress};

const MEM_SIZE: u64 = 16 << 20;
const GUEST_CID: u64 = 3;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const RXQ_ADDR: u64 = 0x10000;
const TXQ_ADDR: u64 = 0x20000;
const EVQ_ADDR: u64 = 0x30000;
const QSIZE: u16 = 16;

struct Harness<'a> {
    mem: &'a GuestMemoryMmap,
    rx: MockSplitQueue<'a, GuestMemoryMmap>,
    tx: MockSplitQueue<'a, GuestMemoryMmap>,
    ev: MockSplitQueue<'a, GuestMemoryMmap>,
    worker: VsockWorker,
    irq: Arc<VirtioInterrupt>,
    /// Next free descriptor slot of each queue.
    rx_next: u16,
    tx_next: u16,
    /// Next free buffer address.
    buf_next: u64,
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMemoryMmap, uds: &Path) -> Self {
        let rx = MockSplitQueue::create(mem, GuestAddress(RXQ_ADDR), QSIZE);
        let tx = MockSplitQueue::create(mem, GuestAddress(TXQ_ADDR), QSIZE);
        let ev = MockSplitQueue::create(mem, GuestAddress(EVQ_ADDR), QSIZE);
        let irq = Arc::new(VirtioInterrupt::new(IrqLine::new(5).unwrap()));
        let muxer = Muxer::new(GUEST_CID, uds.to_path_buf()).unwrap();
        let worker = VsockWorker::new(
            mem.clone(),
            rx.create_queue().unwrap(),
            tx.create_queue().unwrap(),
            muxer,
            irq.clone(),
        )
        .with_event_queue(ev.create_queue().unwrap());
        Self {
            mem,
            rx,
            tx,
            ev,
            worker,
            irq,
            rx_next: 0,
            tx_next: 0,
            buf_next: 0x100000,
        }
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let a = self.buf_next;
        self.buf_next += len.div_ceil(0x1000).max(1) * 0x1000;
        a
    }

    /// Offers one device-writable buffer on the RX queue.
    fn give_rx(&mut self, len: u32) -> u64 {
        let addr = self.alloc(len.into());
        let d = RawDescriptor::from(Descriptor::new(addr, len, F_WRITE, 0));
        self.rx.add_desc_chains(&[d], self.rx_next).unwrap();
        self.rx_next += 1;
        addr
    }

    /// Places raw descriptors (as given: flags and next untouched) on the
    /// TX queue; the first one is the head.
    fn push_tx_raw(&mut self, descs: &[Descriptor]) {
        let raw: Vec<RawDescriptor> = descs.iter().map(|d| RawDescriptor::from(*d)).collect();
        self.tx.add_desc_chains(&raw, self.tx_next).unwrap();
        self.tx_next += descs.len() as u16;
    }

    /// Sends a well-formed packet from the guest.
    fn send(&mut self, hdr: VsockHeader, data: &[u8]) {
        let addr = self.alloc((HDR_SIZE + data.len()) as u64);
        self.mem.write_obj(hdr, GuestAddress(addr)).unwrap();
        self.mem
            .write_slice(data, GuestAddress(addr + HDR_SIZE as u64))
            .unwrap();
        let d = Descriptor::new(addr, (HDR_SIZE + data.len()) as u32, 0, 0);
        self.push_tx_raw(&[d]);
    }

    fn used(&self, q: &MockSplitQueue<'a, GuestMemoryMmap>) -> (u16, Vec<(u32, u32)>) {
        let base = q.used_addr();
        let idx: u16 = self.mem.read_obj(base.unchecked_add(2)).unwrap();
        let elems = (0..idx)
            .map(|i| {
                let e = base.unchecked_add(4 + 8 * u64::from(i));
                (
                    self.mem.read_obj(e).unwrap(),
                    self.mem.read_obj(e.unchecked_add(4)).unwrap(),
                )
            })
            .collect();
        (idx, elems)
    }

    fn read_packet(&self, addr: u64) -> (VsockHeader, Vec<u8>) {
        let hdr: VsockHeader = self.mem.read_obj(GuestAddress(addr)).unwrap();
        let mut data = vec![0u8; hdr.len as usize];
        self.mem
            .read_slice(&mut data, GuestAddress(addr + HDR_SIZE as u64))
            .unwrap();
        (hdr, data)
    }

    /// Runs the worker until `cond` holds (host sockets are asynchronous).
    fn process_until(&mut self, mut cond: impl FnMut(&Self) -> bool) {
        for _ in 0..500 {
            self.worker.process();
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("condition not reached");
    }

    fn rx_used(&self) -> u16 {
        self.used(&self.rx).0
    }
}

fn guest_hdr(op: u16, guest_port: u32, host_port: u32, len: u32) -> VsockHeader {
    VsockHeader {
        src_cid: GUEST_CID,
        dst_cid: 2,
        src_port: guest_port,
        dst_port: host_port,
        len,
        type_: 1,
        op,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 0,
    }
}

#[test]
fn host_initiated_connection_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);

    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    let rx0 = h.give_rx(4096);
    h.process_until(|h| h.rx_used() == 1);
    let (req, _) = h.read_packet(rx0);
    assert_eq!(
        ({ req.op }, { req.dst_port }, { req.dst_cid }, {
            req.src_cid
        }),
        (op::REQUEST, 52, GUEST_CID, 2)
    );
    let host_port = req.src_port;
    assert_ne!(h.irq.status() & 1, 0, "used-ring interrupt raised");

    h.send(guest_hdr(op::RESPONSE, 52, host_port, 0), b"");
    h.worker.process();
    let mut reader = BufReader::new(host.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {host_port}\n"));

    host.write_all(b"from host").unwrap();
    let rx1 = h.give_rx(4096);
    h.process_until(|h| h.rx_used() == 2);
    let (rw, data) = h.read_packet(rx1);
    assert_eq!({ rw.op }, op::RW);
    assert_eq!(data, b"from host");
    let (_, used) = h.used(&h.rx);
    assert_eq!(
        used[1].1 as usize,
        HDR_SIZE + 9,
        "used length counts header and payload"
    );

    h.send(guest_hdr(op::RW, 52, host_port, 10), b"from guest");
    h.worker.process();
    let mut buf = [0u8; 10];
    reader.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from guest");

    // The host closes: the guest is told with a SHUTDOWN.
    drop(reader);
    drop(host);
    let rx2 = h.give_rx(4096);
    h.process_until(|h| h.rx_used() == 3);
    assert_eq!({ h.read_packet(rx2).0.op }, op::SHUTDOWN);
    h.send(guest_hdr(op::RST, 52, host_port, 0), b"");
    h.worker.process();
    assert_eq!(h.worker.muxer().connection_count(), 0);
}

#[test]
fn guest_initiated_connection_reaches_port_socket() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let listener = UnixListener::bind(dir.path().join("v.sock_5000")).unwrap();
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);

    let rx0 = h.give_rx(4096);
    h.send(guest_hdr(op::REQUEST, 777, 5000, 0), b"");
    h.process_until(|h| h.rx_used() == 1);
    let (resp, _) = h.read_packet(rx0);
    assert_eq!(
        ({ resp.op }, { resp.dst_port }, { resp.src_port }),
        (op::RESPONSE, 777, 5000)
    );
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h.send(guest_hdr(op::RW, 777, 5000, 3), b"abc");
    h.worker.process();
    let mut b = [0u8; 3];
    peer.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"abc");

    // No listener on port 6000: the guest gets a reset.
    let rx1 = h.give_rx(4096);
    h.send(guest_hdr(op::REQUEST, 778, 6000, 0), b"");
    h.process_until(|h| h.rx_used() == 2);
    assert_eq!({ h.read_packet(rx1).0.op }, op::RST);
    assert_eq!(h.worker.muxer().connection_count(), 1);
}

#[test]
fn bad_handshakes_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);
    for line in [&b"HELLO 1\n"[..], b"CONNECT abc\n", &[b'x'; 100][..]] {
        let mut s = UnixStream::connect(&uds).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(line).unwrap();
        h.worker.process();
        h.worker.process();
        let mut buf = [0u8; 1];
        let r = s.read(&mut buf);
        let closed = matches!(r, Ok(0))
            || matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "connection closed for {line:?}: {r:?}");
    }
    h.give_rx(4096);
    h.worker.process();
    assert_eq!(h.rx_used(), 0, "nothing was sent to the guest");
    assert_eq!(h.worker.muxer().connection_count(), 0);
}

#[test]
fn packets_with_wrong_addresses_get_reset() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);
    let rx0 = h.give_rx(4096);
    let mut hdr = guest_hdr(op::REQUEST, 1, 2, 0);
    hdr.src_cid = 99; // spoofed source
    h.send(hdr, b"");
    h.worker.process();
    assert_eq!(h.rx_used(), 1);
    assert_eq!({ h.read_packet(rx0).0.op }, op::RST);
    assert_eq!(h.worker.muxer().connection_count(), 0);
}

#[test]
fn malformed_tx_chains_are_rejected_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let listener = UnixListener::bind(dir.path().join("v.sock_9")).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);
    let good = h.alloc(4096);
    mem.write_obj(guest_hdr(op::REQUEST, 1, 9, 0), GuestAddress(good))
        .unwrap();
    let lying = h.alloc(4096);
    mem.write_obj(guest_hdr(op::REQUEST, 1, 9, 1000), GuestAddress(lying))
        .unwrap();
    let huge = h.alloc(4096);
    mem.write_obj(guest_hdr(op::RW, 1, 9, 1 << 20), GuestAddress(huge))
        .unwrap();

    let cases: Vec<(&str, Vec<Descriptor>)> = vec![
        (
            "address past the end of memory",
            vec![Descriptor::new(MEM_SIZE + 0x1000, 44, 0, 0)],
        ),
        (
            "buffer straddling the end of memory",
            vec![Descriptor::new(MEM_SIZE - 20, 44, 0, 0)],
        ),
        (
            "length overflowing the address space",
            vec![Descriptor::new(u64::MAX - 10, 44, 0, 0)],
        ),
        (
            "length of 4 GiB - 1",
            vec![Descriptor::new(good, u32::MAX, 0, 0)],
        ),
        ("header cut short", vec![Descriptor::new(good, 20, 0, 0)]),
        (
            "payload length larger than the chain",
            vec![Descriptor::new(lying, 44 + 10, 0, 0)],
        ),
        (
            "payload length over the limit",
            vec![Descriptor::new(huge, 4096, 0, 0)],
        ),
        (
            "device-writable only",
            vec![Descriptor::new(good, 44, F_WRITE, 0)],
        ),
        (
            "descriptor loop",
            // Slots are relative to where the chain is placed: the harness
            // fills next indices as absolute ones, so compute them.
            vec![],
        ),
        (
            "next index past the queue",
            vec![Descriptor::new(good, 44, F_NEXT, QSIZE + 5)],
        ),
    ];
    for (what, descs) in cases {
        let before = h.used(&h.tx).0;
        if descs.is_empty() {
            // A two-descriptor loop at the current slots.
            let a = h.tx_next;
            h.push_tx_raw(&[
                Descriptor::new(good, 20, F_NEXT, a + 1),
                Descriptor::new(good + 20, 24, F_NEXT, a),
            ]);
        } else {
            h.push_tx_raw(&descs);
        }
        h.worker.process();
        let (idx, used) = h.used(&h.tx);
        assert_eq!(idx, before + 1, "{what}: the chain is consumed");
        assert_eq!(used.last().unwrap().1, 0, "{what}: used length 0");
        assert_eq!(
            h.worker.muxer().connection_count(),
            0,
            "{what}: no connection"
        );
        assert!(listener.accept().is_err(), "{what}: host saw nothing");
    }
    // The device still works after all that.
    let rx = h.give_rx(4096);
    h.send(guest_hdr(op::REQUEST, 1, 9, 0), b"");
    h.process_until(|h| h.rx_used() == 1);
    assert_eq!({ h.read_packet(rx).0.op }, op::RESPONSE);
}

#[test]
fn malformed_rx_chains_are_skipped_and_the_packet_kept() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);
    let mut host = UnixStream::connect(&uds).unwrap();
    host.write_all(b"CONNECT 7\n").unwrap();

    // Too small for a header, read-only, and outside memory.
    let small = h.alloc(16);
    let bad = [
        Descriptor::new(small, 16, F_WRITE, 0),
        Descriptor::new(small, 4096, 0, 0),
        Descriptor::new(MEM_SIZE, 4096, F_WRITE, 0),
    ];
    for d in bad {
        h.rx.add_desc_chains(&[RawDescriptor::from(d)], h.rx_next)
            .unwrap();
        h.rx_next += 1;
    }
    let good = h.give_rx(4096);
    h.process_until(|h| h.rx_used() == 4);
    let (_, used) = h.used(&h.rx);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>()[..3], [0, 0, 0]);
    assert_eq!(
        { h.read_packet(good).0.op },
        op::REQUEST,
        "request delivered in the good buffer"
    );
}

#[test]
fn corrupt_avail_index_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);
    // avail.idx far ahead of what the queue can hold.
    mem.write_obj(1000u16, h.tx.avail_addr().unchecked_add(2))
        .unwrap();
    mem.write_obj(1000u16, h.rx.avail_addr().unchecked_add(2))
        .unwrap();
    let _host = UnixStream::connect(&uds).and_then(|mut s| s.write_all(b"CONNECT 1\n").map(|_| s));
    for _ in 0..3 {
        h.worker.process();
    }
    assert_eq!(h.used(&h.tx).0, 0);
}

#[test]
fn request_flood_without_rx_buffers_is_bounded() {
    use hull_kvm::devices::virtio::vsock::muxer::MAX_PENDING_CONTROL;
    use hull_kvm::devices::virtio::vsock::packet::Packet;
    let dir = tempfile::tempdir().unwrap();
    let mut m = Muxer::new(GUEST_CID, dir.path().join("v.sock")).unwrap();
    // Requests to a port nobody listens on each earn a reset.
    for port in 0..(MAX_PENDING_CONTROL as u32 + 100) {
        m.handle_guest_packet(Packet {
            hdr: guest_hdr(op::REQUEST, port, 1, 0),
            data: vec![],
        });
    }
    assert_eq!(m.pending_control(), MAX_PENDING_CONTROL);
}

#[test]
fn transport_reset_drops_connections_and_tells_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let mem = create_guest_memory(MEM_SIZE).unwrap();
    let mut h = Harness::new(&mem, &uds);

    let mut host = UnixStream::connect(&uds).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    let rx0 = h.give_rx(4096);
    h.process_until(|h| h.rx_used() == 1);
    let host_port = h.read_packet(rx0).0.src_port;
    h.send(guest_hdr(op::RESPONSE, 52, host_port, 0), b"");
    h.worker.process();
    let mut reader = BufReader::new(host.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {host_port}\n"));
    assert_eq!(h.worker.muxer().connection_count(), 1);

    h.worker.request_transport_reset();
    assert_eq!(h.worker.muxer().connection_count(), 0);
    // The host side sees its connection closed.
    line.clear();
    assert_eq!(reader.read_line(&mut line).unwrap(), 0, "EOF after reset");

    // No event buffer yet: the event waits.
    h.worker.process();
    assert!(h.worker.reset_pending());
    // A read-only event buffer is malformed: consumed with length 0.
    let bad = h.alloc(4);
    h.ev.add_desc_chains(&[RawDescriptor::from(Descriptor::new(bad, 4, 0, 0))], 0)
        .unwrap();
    h.worker.process();
    assert!(h.worker.reset_pending());
    assert_eq!(h.used(&h.ev), (1, vec![(0, 0)]));
    // A proper one receives the TRANSPORT_RESET event (id 0).
    let good = h.alloc(4);
    mem.write_obj(0xffff_ffffu32, GuestAddress(good)).unwrap();
    h.ev.add_desc_chains(
        &[RawDescriptor::from(Descriptor::new(good, 4, F_WRITE, 0))],
        1,
    )
    .unwrap();
    h.irq.ack(u32::MAX);
    h.worker.process();
    assert!(!h.worker.reset_pending());
    assert_eq!(h.used(&h.ev), (2, vec![(0, 0), (1, 4)]));
    assert_eq!(mem.read_obj::<u32>(GuestAddress(good)).unwrap(), 0);
    assert_ne!(h.irq.status() & 1, 0, "the guest is interrupted");
}
