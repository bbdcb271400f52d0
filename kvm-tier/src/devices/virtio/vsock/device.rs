//! The vsock virtio device: its queues, configuration space and the worker
//! thread that moves packets between the queues and the [`Muxer`].

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::packet::{read_tx, rx_capacity, write_rx};
use super::VIRTIO_ID_VSOCK;
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, INT_USED_RING,
};
use crate::memory::GuestMemoryMmap;

/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// Transmit queue.
pub const TX_QUEUE: usize = 1;
/// Event queue (transport reset events; unused).
pub const EVT_QUEUE: usize = 2;
const QUEUE_SIZES: [u16; 3] = [256, 256, 256];

/// Moves packets between the guest's queues and the muxer.
#[derive(Debug)]
pub struct VsockWorker {
    mem: GuestMemoryMmap,
    rxq: Queue,
    txq: Queue,
    muxer: Muxer,
    interrupt: Arc<VirtioInterrupt>,
}

impl VsockWorker {
    /// A worker over activated queues.
    pub fn new(
        mem: GuestMemoryMmap,
        rxq: Queue,
        txq: Queue,
        muxer: Muxer,
        interrupt: Arc<VirtioInterrupt>,
    ) -> Self {
        Self {
            mem,
            rxq,
            txq,
            muxer,
            interrupt,
        }
    }

    /// The muxer (for tests).
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    /// Takes every chain from the TX queue; malformed chains are returned
    /// used with length 0 and dropped. Returns whether any chain was used.
    pub fn process_tx(&mut self) -> bool {
        let mut used = false;
        while let Some(chain) = self.txq.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            match read_tx(chain, &self.mem) {
                Ok(pkt) => self.muxer.handle_guest_packet(pkt),
                Err(e) => tracing::warn!(error = %e, "dropping malformed vsock TX chain"),
            }
            if let Err(e) = self.txq.add_used(&self.mem, head, 0) {
                tracing::warn!(error = ?e, "vsock TX used ring update failed");
            }
            used = true;
        }
        used
    }

    /// Fills RX chains with packets for the guest. Returns whether any chain
    /// was used.
    pub fn process_rx(&mut self) -> bool {
        let mut used = false;
        while self.muxer.wants_rx() {
            let Some(chain) = self.rxq.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let cap = match rx_capacity(&chain, &self.mem) {
                Ok(cap) => cap,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping malformed vsock RX chain");
                    let _ = self.rxq.add_used(&self.mem, head, 0);
                    used = true;
                    continue;
                }
            };
            let Some(pkt) = self.muxer.pop_rx(cap) else {
                // Nothing after all: give the chain back.
                let prev = Wrapping(self.rxq.next_avail()) - Wrapping(1);
                self.rxq.set_next_avail(prev.0);
                break;
            };
            let len = match write_rx(chain, &self.mem, &pkt) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "vsock RX write failed; packet dropped");
                    0
                }
            };
            if let Err(e) = self.rxq.add_used(&self.mem, head, len) {
                tracing::warn!(error = ?e, "vsock RX used ring update failed");
            }
            used = true;
        }
        used
    }

    /// One round: TX, host sockets, RX; raises the interrupt if needed.
    pub fn process(&mut self) {
        let tx = self.process_tx();
        self.muxer.poll_host();
        let rx = self.process_rx();
        if tx || rx {
            self.interrupt.signal(INT_USED_RING);
        }
    }

    fn run(mut self, kick: &EventFd, stop: &EventFd) -> Muxer {
        loop {
            self.process();
            let mut fds: Vec<libc::pollfd> = vec![
                pollfd(stop.as_raw_fd(), libc::POLLIN),
                pollfd(kick.as_raw_fd(), libc::POLLIN),
            ];
            fds.extend(
                self.muxer
                    .poll_fds()
                    .into_iter()
                    .map(|(fd, ev)| pollfd(fd, ev)),
            );
            if let Err(e) = poll(&mut fds, -1) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "vsock poll failed; device stops");
                    break;
                }
            }
            if fds[0].revents != 0 {
                break;
            }
            if fds[1].revents != 0 {
                let _ = kick.read();
            }
        }
        self.muxer
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> std::io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the
    // given length; the return value is checked.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

struct Running {
    thread: JoinHandle<Muxer>,
    kick: EventFd,
    stop: EventFd,
}

/// The vsock device.
pub struct VsockDevice {
    config: [u8; 8],
    muxer: Option<Muxer>,
    running: Option<Running>,
}

impl VsockDevice {
    /// A device for guest `cid`, listening on `uds_path`.
    pub fn new(cid: u64, uds_path: PathBuf) -> std::io::Result<Self> {
        Ok(Self {
            config: cid.to_le_bytes(),
            muxer: Some(Muxer::new(cid, uds_path)?),
            running: None,
        })
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.write(1);
            match r.thread.join() {
                Ok(m) => self.muxer = Some(m),
                Err(_) => tracing::error!("vsock thread panicked"),
            }
        }
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        crate::devices::virtio::VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        tracing::debug!(offset, "guest wrote read-only vsock config");
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let mut queues = ctx.queues.into_iter();
        let rxq = queues
            .next()
            .filter(|q| q.ready())
            .ok_or(ActivateError::QueueNotReady(RX_QUEUE))?;
        let txq = queues
            .next()
            .filter(|q| q.ready())
            .ok_or(ActivateError::QueueNotReady(TX_QUEUE))?;
        let Some(muxer) = self.muxer.take() else {
            return Err(ActivateError::Io(std::io::Error::other(
                "vsock device already active",
            )));
        };
        let kick = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let worker = VsockWorker::new(ctx.mem, rxq, txq, muxer, ctx.interrupt);
        let (k, s) = (kick.try_clone()?, stop.try_clone()?);
        let thread = std::thread::Builder::new()
            .name("hull-vsock".into())
            .spawn(move || worker.run(&k, &s))?;
        self.running = Some(Running { thread, kick, stop });
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if let Some(r) = &self.running {
            if usize::from(index) != EVT_QUEUE {
                let _ = r.kick.write(1);
            }
        }
    }

    fn reset(&mut self) {
        self.stop();
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        self.stop();
    }
}
