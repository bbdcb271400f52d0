//! The vsock connection table's stream semantics, as the Linux driver
//! (`vmw_vsock_virtio_transport`) relies on them: half-closes in each
//! direction, credit updates when the host stream takes data late, guest
//! data kept when the guest closes, resets when the host side breaks.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use hull_kvm::devices::virtio::vsock::muxer::{Muxer, CONN_BUF_ALLOC};
use hull_kvm::devices::virtio::vsock::packet::{op, shutdown, Packet, VsockHeader};

const GUEST_CID: u64 = 3;
const GUEST_PORT: u32 = 1234;
const HOST_PORT: u32 = 5000;

fn hdr(op: u16, len: u32, flags: u32) -> VsockHeader {
    VsockHeader {
        src_cid: GUEST_CID,
        dst_cid: 2,
        src_port: GUEST_PORT,
        dst_port: HOST_PORT,
        len,
        type_: 1,
        op,
        flags,
        buf_alloc: 1 << 20,
        fwd_cnt: 0,
    }
}

fn guest(m: &mut Muxer, op: u16, data: &[u8], flags: u32) {
    m.handle_guest_packet(Packet {
        hdr: hdr(op, data.len() as u32, flags),
        data: data.to_vec(),
    });
}

/// Every packet the muxer has for the guest right now.
fn to_guest(m: &mut Muxer) -> Vec<Packet> {
    let mut v = Vec::new();
    while let Some(p) = m.pop_rx(4096) {
        v.push(p);
    }
    v
}

/// A guest-initiated connection to `<uds>_5000`, established.
fn connected() -> (tempfile::TempDir, Muxer, UnixStream) {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let listener = UnixListener::bind(dir.path().join(format!("v.sock_{HOST_PORT}"))).unwrap();
    let mut m = Muxer::new(GUEST_CID, uds).unwrap();
    guest(&mut m, op::REQUEST, b"", 0);
    let p = to_guest(&mut m);
    assert_eq!(p.len(), 1);
    assert_eq!({ p[0].hdr.op }, op::RESPONSE);
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (dir, m, peer)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `data` from the guest in 64 KiB packets (within the credit).
fn guest_send(m: &mut Muxer, data: &[u8]) {
    for chunk in data.chunks(64 * 1024) {
        guest(m, op::RW, chunk, 0);
    }
}

/// Reads from `peer` (non-blocking), letting the muxer flush, until EOF.
fn read_all_with_flushes(m: &mut Muxer, peer: &mut UnixStream) -> Vec<u8> {
    peer.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        assert!(
            Instant::now() < deadline,
            "no EOF after {} bytes",
            got.len()
        );
        m.poll_host();
        match peer.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn host_half_close_lets_the_guest_keep_sending() {
    let (_d, mut m, mut peer) = connected();
    peer.write_all(b"request").unwrap();
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let p = to_guest(&mut m);
    assert_eq!({ p[0].hdr.op }, op::RW);
    assert_eq!(p[0].data, b"request");
    let last = p.last().unwrap();
    assert_eq!(
        ({ last.hdr.op }, { last.hdr.flags }),
        (op::SHUTDOWN, shutdown::SEND),
        "a half-close only says the host sends no more"
    );
    guest(&mut m, op::RW, b"answer", 0);
    let mut b = [0u8; 6];
    peer.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"answer");
    // The guest is done too: its write side ends, the host sees EOF.
    guest(&mut m, op::SHUTDOWN, b"", shutdown::SEND);
    assert_eq!(peer.read(&mut b).unwrap(), 0);
    assert_eq!(m.connection_count(), 1);
    guest(&mut m, op::SHUTDOWN, b"", shutdown::SEND | shutdown::RCV);
    assert_eq!({ to_guest(&mut m)[0].hdr.op }, op::RST);
    assert_eq!(m.connection_count(), 0);
}

#[test]
fn host_full_close_says_both_directions() {
    let (_d, mut m, peer) = connected();
    drop(peer);
    let p = to_guest(&mut m);
    assert_eq!(
        ({ p[0].hdr.op }, { p[0].hdr.flags }),
        (op::SHUTDOWN, shutdown::SEND | shutdown::RCV)
    );
}

#[test]
fn guest_close_keeps_data_the_host_has_not_read_yet() {
    let (_d, mut m, mut peer) = connected();
    let data = pattern(CONN_BUF_ALLOC as usize);
    guest_send(&mut m, &data);
    to_guest(&mut m);
    // The guest closes while part of its data still waits for the host:
    // it gets its RST at once, the host still gets every byte, then EOF.
    guest(&mut m, op::SHUTDOWN, b"", shutdown::SEND | shutdown::RCV);
    let p = to_guest(&mut m);
    assert_eq!({ p.last().unwrap().hdr.op }, op::RST);
    assert_eq!(m.connection_count(), 0);
    let got = read_all_with_flushes(&mut m, &mut peer);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "data differs");
}

#[test]
fn guest_half_close_shuts_the_host_write_side_after_pending_data() {
    let (_d, mut m, mut peer) = connected();
    let data = pattern(CONN_BUF_ALLOC as usize);
    guest_send(&mut m, &data);
    guest(&mut m, op::SHUTDOWN, b"", shutdown::SEND);
    let got = read_all_with_flushes(&mut m, &mut peer);
    assert!(got == data, "all data before EOF");
    // The other direction still works.
    peer.set_nonblocking(false).unwrap();
    peer.write_all(b"reply").unwrap();
    let p = to_guest(&mut m);
    assert_eq!(
        p.iter().find(|p| p.hdr.op == op::RW).unwrap().data,
        b"reply"
    );
}

#[test]
fn late_host_reads_send_a_credit_update() {
    let (_d, mut m, mut peer) = connected();
    // The host does not read: the guest uses its whole credit.
    let data = pattern(CONN_BUF_ALLOC as usize);
    guest_send(&mut m, &data);
    let before = to_guest(&mut m);
    let told = before
        .iter()
        .filter(|p| p.hdr.op == op::CREDIT_UPDATE)
        .map(|p| p.hdr.fwd_cnt)
        .max()
        .unwrap_or(0);
    assert!(told < CONN_BUF_ALLOC, "some data waits in the VMM");
    // The host reads everything: the guest must hear of the space.
    let mut got = vec![0u8; 0];
    peer.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < data.len() {
        assert!(Instant::now() < deadline);
        m.poll_host();
        match peer.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    m.poll_host();
    let after = to_guest(&mut m);
    let update = after
        .iter()
        .filter(|p| p.hdr.op == op::CREDIT_UPDATE)
        .map(|p| p.hdr.fwd_cnt)
        .max();
    assert!(
        update.is_some_and(|f| CONN_BUF_ALLOC - f < CONN_BUF_ALLOC / 4),
        "credit update after the late writes: {update:?}"
    );
}

#[test]
fn broken_host_stream_resets_the_guest() {
    let (_d, mut m, peer) = connected();
    // The host dies with unread guest data: its side of the stream resets.
    guest(&mut m, op::RW, b"unread", 0);
    drop(peer);
    let p = to_guest(&mut m);
    assert_eq!({ p.last().unwrap().hdr.op }, op::RST);
    assert_eq!(m.connection_count(), 0);
}

#[test]
fn guest_receive_shutdown_makes_host_writes_fail() {
    let (_d, mut m, mut peer) = connected();
    guest(&mut m, op::SHUTDOWN, b"", shutdown::RCV);
    peer.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let chunk = vec![0u8; 65536];
    let mut failed = false;
    for _ in 0..64 {
        if let Err(e) = peer.write(&chunk) {
            assert_eq!(e.kind(), ErrorKind::BrokenPipe);
            failed = true;
            break;
        }
    }
    assert!(
        failed,
        "writes to a connection the guest no longer reads fail"
    );
}

#[test]
fn connections_are_polled_for_data_only_with_rx_room() {
    let (_d, m, _peer) = connected();
    // The listener and the connection.
    assert_eq!(m.poll_fds(true).len(), 2);
    assert_eq!(
        m.poll_fds(false).len(),
        1,
        "only the listener without RX buffers"
    );
}

#[test]
fn a_host_listener_that_stopped_accepting_refuses_instead_of_stalling() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("v.sock");
    let port_path = dir.path().join(format!("v.sock_{HOST_PORT}"));
    // A listener with a tiny backlog that never accepts.
    let listener = UnixListener::bind(&port_path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    // SAFETY: re-listen with backlog 0 on our own, open socket.
    let rc = unsafe { libc::listen(fd, 0) };
    assert_eq!(rc, 0);
    let mut m = Muxer::new(GUEST_CID, uds).unwrap();
    let t0 = Instant::now();
    let mut ops = Vec::new();
    for port in 0..8u32 {
        m.handle_guest_packet(Packet {
            hdr: VsockHeader {
                src_port: GUEST_PORT + port,
                ..hdr(op::REQUEST, 0, 0)
            },
            data: vec![],
        });
        ops.extend(to_guest(&mut m).iter().map(|p| p.hdr.op));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "connects did not wait"
    );
    assert!(ops.contains(&op::RST), "a full backlog refuses: {ops:?}");
}
