//! virtio-fs through the vhost-user frontend, against a real virtiofsd:
//! negotiation, memory table, vring set-up, and one FUSE_INIT request
//! through a queue laid out in memfd guest memory (host side, no KVM).

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use hull_kvm::devices::virtio::fs::{FsFrontend, Virtiofsd};
use hull_kvm::devices::virtio::VIRTIO_F_VERSION_1;
use hull_kvm::memory::create_guest_memory;
use hull_kvm::VirtiofsOptions;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

macro_rules! require_virtiofsd {
    () => {
        match common::find_virtiofsd() {
            Ok(p) => p,
            Err(reason) => {
                println!("skipped: {reason}");
                return;
            }
        }
    };
}

fn options(binary: &std::path::Path) -> VirtiofsOptions {
    VirtiofsOptions {
        binary: Some(binary.to_path_buf()),
        sandbox: common::virtiofsd_sandbox(),
        ..VirtiofsOptions::default()
    }
}

/// A split queue of `size` at `base` (descriptors, then avail, then used
/// rings, 4 KiB apart).
fn queue(base: u64, size: u16) -> Queue {
    let mut q = Queue::new(256).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    q.set_ready(true);
    q
}

fn wait_readable(evt: &EventFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: evt.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    n == 1
}

#[test]
fn frontend_negotiates_and_serves_fuse_init_with_virtiofsd() {
    let binary = require_virtiofsd!();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("hello"), b"hi").unwrap();
    let run = tempfile::tempdir().unwrap();
    let (mut daemon, stream) = Virtiofsd::spawn(
        &binary,
        shared.path(),
        &options(&binary),
        run.path(),
        Some(hull_kvm::seccomp::filter(hull_kvm::ThreadKind::Device).unwrap()),
    )
    .expect("virtiofsd starts");
    let pid = daemon.pid();
    let socket = daemon.socket_path().to_path_buf();
    assert!(!socket.exists(), "the socket is removed once connected");
    let marker = socket.parent().unwrap().to_str().unwrap().to_string();

    let mut fe = FsFrontend::connect(stream, 2).expect("negotiation");
    assert_ne!(fe.backend_features() & VIRTIO_F_VERSION_1, 0);
    assert_ne!(fe.guest_features() & VIRTIO_F_VERSION_1, 0);
    assert_eq!(
        fe.guest_features() & (1 << 30),
        0,
        "PROTOCOL_FEATURES is vhost-user's, never the guest's"
    );
    let proto = fe.protocol_features();
    assert!(proto.contains(VhostUserProtocolFeatures::MQ), "{proto:?}");
    assert!(
        proto.contains(VhostUserProtocolFeatures::REPLY_ACK),
        "{proto:?}"
    );

    // Guest memory: a memfd, so virtiofsd maps the same pages.
    let mem = create_guest_memory(32 << 20).unwrap();
    let hiprio = queue(0x10000, 16);
    let req_q = queue(0x20000, 16);
    let (req, reply) = (GuestAddress(0x40000), GuestAddress(0x41000));
    mem.write_slice(&common::fuse_init_request(7), req).unwrap();
    // Descriptor 0: the request (device-readable), chained to 1: the reply
    // buffer (device-writable).
    let d = GuestAddress(0x20000);
    mem.write_obj(req.0, d).unwrap();
    mem.write_obj(104u32, GuestAddress(d.0 + 8)).unwrap();
    mem.write_obj(1u16, GuestAddress(d.0 + 12)).unwrap(); // NEXT
    mem.write_obj(1u16, GuestAddress(d.0 + 14)).unwrap();
    mem.write_obj(reply.0, GuestAddress(d.0 + 16)).unwrap();
    mem.write_obj(4096u32, GuestAddress(d.0 + 24)).unwrap();
    mem.write_obj(2u16, GuestAddress(d.0 + 28)).unwrap(); // WRITE
    mem.write_obj(0u16, GuestAddress(0x21004)).unwrap(); // avail.ring[0] = 0
    mem.write_obj(1u16, GuestAddress(0x21002)).unwrap(); // avail.idx = 1

    let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let kicks = [
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ];
    fe.start(VIRTIO_F_VERSION_1, &mem, &[hiprio, req_q], &call, &kicks)
        .expect("features, memory table and vrings accepted");
    assert!(fe.is_started());
    kicks[1].write(1).unwrap();
    assert!(
        wait_readable(&call, Duration::from_secs(10)),
        "virtiofsd signals the call eventfd"
    );
    let used_idx: u16 = mem.read_obj(GuestAddress(0x22002)).unwrap();
    assert_eq!(used_idx, 1);
    let used_id: u32 = mem.read_obj(GuestAddress(0x22004)).unwrap();
    let used_len: u32 = mem.read_obj(GuestAddress(0x22008)).unwrap();
    assert_eq!(used_id, 0);
    let out_len: u32 = mem.read_obj(reply).unwrap();
    let error: i32 = mem.read_obj(GuestAddress(reply.0 + 4)).unwrap();
    let unique: u64 = mem.read_obj(GuestAddress(reply.0 + 8)).unwrap();
    let major: u32 = mem.read_obj(GuestAddress(reply.0 + 16)).unwrap();
    let minor: u32 = mem.read_obj(GuestAddress(reply.0 + 20)).unwrap();
    assert_eq!(error, 0, "FUSE_INIT succeeded");
    assert_eq!(unique, 7);
    assert_eq!(used_len, out_len);
    assert_eq!(major, 7);
    assert!(minor >= 27, "virtiofsd speaks FUSE 7.{minor}");

    // Stopping the vrings reports where the back-end got to.
    let bases = fe.stop();
    assert_eq!(bases.len(), 2);
    for (index, base) in bases {
        let base = base.expect("GET_VRING_BASE answered");
        assert_eq!(base, u32::from(index == 1), "queue {index}");
    }
    assert!(!fe.is_started());

    drop(fe);
    let status = daemon.stop().expect("virtiofsd reaped");
    println!("virtiofsd {pid} ended: {status:?}");
    assert!(!daemon.is_running());
    assert!(!socket.parent().unwrap().exists(), "private dir removed");
    // The namespace sandbox forks: nothing of it may be left.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !common::processes_mentioning(&marker).is_empty() && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(common::processes_mentioning(&marker), Vec::<u32>::new());
}

#[test]
fn a_daemon_that_dies_at_once_is_an_error_not_a_hang() {
    let _ = require_virtiofsd!();
    let shared = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    // `false` exits at once: the VMM's connection must fail, not block.
    let opts = VirtiofsOptions {
        binary: Some("/bin/false".into()),
        ..VirtiofsOptions::default()
    };
    let t = std::time::Instant::now();
    let res = Virtiofsd::spawn(
        "/bin/false".as_ref(),
        shared.path(),
        &opts,
        run.path(),
        None,
    )
    .and_then(|(_d, s)| FsFrontend::connect(s, 2));
    assert!(res.is_err());
    println!("error: {}", res.unwrap_err());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(std::fs::read_dir(run.path()).unwrap().count(), 0);
}
