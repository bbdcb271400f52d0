//! The vsock virtio device: its queues, configuration space and the worker
//! thread that moves packets between the queues and the [`Muxer`].

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use seccompiler::BpfProgram;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::packet::{read_tx, rx_capacity, write_rx};
use super::VIRTIO_ID_VSOCK;
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, INT_USED_RING,
};
use crate::memory::GuestMemoryMmap;
use crate::seccomp::{self, ThreadKind};

/// Queue indices.
pub const RX_QUEUE: usize = 0;
/// Transmit queue.
pub const TX_QUEUE: usize = 1;
/// Event queue (transport reset events).
pub const EVT_QUEUE: usize = 2;
/// `virtio_vsock_event.id` of a transport reset.
pub const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: u32 = 0;
const QUEUE_SIZES: [u16; 3] = [256, 256, 256];

/// Moves packets between the guest's queues and the muxer.
#[derive(Debug)]
pub struct VsockWorker {
    mem: GuestMemoryMmap,
    rxq: Queue,
    txq: Queue,
    muxer: Muxer,
    interrupt: Arc<VirtioInterrupt>,
    evq: Option<Queue>,
    reset_pending: bool,
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
            evq: None,
            reset_pending: false,
        }
    }

    /// Adds the event queue, through which transport resets are announced.
    pub fn with_event_queue(mut self, evq: Queue) -> Self {
        self.evq = Some(evq);
        self
    }

    /// Resets the transport: every connection is dropped and the guest is
    /// told with a TRANSPORT_RESET event (as soon as it has an event buffer
    /// in the event queue).
    pub fn request_transport_reset(&mut self) {
        self.muxer.reset_transport();
        self.reset_pending = true;
    }

    /// Whether a reset event still waits for an event buffer.
    pub fn reset_pending(&self) -> bool {
        self.reset_pending
    }

    /// Writes a pending reset event into the event queue. Returns whether a
    /// chain was used.
    pub fn process_events(&mut self) -> bool {
        if !self.reset_pending {
            return false;
        }
        let Some(evq) = self.evq.as_mut() else {
            tracing::warn!("vsock transport reset without an event queue; guest not told");
            self.reset_pending = false;
            return false;
        };
        let mut used = false;
        while let Some(chain) = evq.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            let written = chain
                .writer(&self.mem)
                .map_err(|e| e.to_string())
                .and_then(|mut w| {
                    w.write_obj(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.to_le())
                        .map_err(|e| e.to_string())
                });
            let len = match written {
                Ok(()) => 4,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping malformed vsock event chain");
                    0
                }
            };
            if let Err(e) = evq.add_used(&self.mem, head, len) {
                tracing::warn!(error = ?e, "vsock event used ring update failed");
            }
            used = true;
            if len == 4 {
                self.reset_pending = false;
                break;
            }
        }
        used
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

    /// One round: TX, host sockets, RX; raises the interrupt if a queue
    /// with new used buffers wants one (the driver suppresses interrupts
    /// while its workers drain a queue).
    pub fn process(&mut self) {
        let tx = self.process_tx() && wants_interrupt(&mut self.txq, &self.mem);
        self.muxer.poll_host();
        let rx = self.process_rx() && wants_interrupt(&mut self.rxq, &self.mem);
        let ev = self.process_events();
        if tx || rx || ev {
            self.interrupt.signal(INT_USED_RING);
        }
    }

    /// Whether the guest offered RX buffers not used yet.
    fn rx_room(&self) -> bool {
        match self
            .rxq
            .avail_idx(&self.mem, std::sync::atomic::Ordering::Acquire)
        {
            Ok(idx) => idx.0 != self.rxq.next_avail(),
            // A corrupt ring: poll anyway; process_rx deals with it.
            Err(_) => true,
        }
    }

    fn run(mut self, kick: &EventFd, stop: &EventFd, reset: &EventFd) -> Muxer {
        loop {
            self.process();
            let mut fds: Vec<libc::pollfd> = vec![
                pollfd(stop.as_raw_fd(), libc::POLLIN),
                pollfd(kick.as_raw_fd(), libc::POLLIN),
                pollfd(reset.as_raw_fd(), libc::POLLIN),
            ];
            fds.extend(
                self.muxer
                    .poll_fds(self.rx_room())
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
            if fds[2].revents != 0 {
                let _ = reset.read();
                self.request_transport_reset();
            }
        }
        self.muxer
    }
}

/// Whether the driver wants an interrupt for `q`'s new used buffers; on an
/// unreadable ring, yes.
fn wants_interrupt(q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    q.needs_notification(mem).unwrap_or(true)
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

/// What the device thread gets when the driver activates the device.
struct Job {
    mem: GuestMemoryMmap,
    rxq: Queue,
    txq: Queue,
    evq: Option<Queue>,
    interrupt: Arc<VirtioInterrupt>,
}

/// The device's thread. It is created with the device, before any seccomp
/// filter is installed anywhere, installs the device-thread filter, then
/// runs a worker for each activation until the device stops it.
struct DeviceThread {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<()>,
    kick: EventFd,
    stop: EventFd,
    reset: EventFd,
    thread: JoinHandle<Muxer>,
}

impl DeviceThread {
    fn spawn(muxer: Muxer, filter: Option<BpfProgram>) -> std::io::Result<Self> {
        let kick = EventFd::new(libc::EFD_NONBLOCK)?;
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let reset = EventFd::new(libc::EFD_NONBLOCK)?;
        let (k, s, r) = (kick.try_clone()?, stop.try_clone()?, reset.try_clone()?);
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("hull-vsock".into())
            .spawn(move || {
                if let Some(f) = &filter {
                    if let Err(e) = seccomp::install(ThreadKind::Device, f) {
                        // Fail closed: activations find the thread gone.
                        tracing::error!(error = %e, "vsock device thread not started");
                        return muxer;
                    }
                }
                let mut muxer = muxer;
                while let Ok(job) = job_rx.recv() {
                    let _ = s.read();
                    let _ = r.read();
                    let mut worker =
                        VsockWorker::new(job.mem, job.rxq, job.txq, muxer, job.interrupt);
                    if let Some(evq) = job.evq {
                        worker = worker.with_event_queue(evq);
                    }
                    muxer = worker.run(&k, &s, &r);
                    if done_tx.send(()).is_err() {
                        break;
                    }
                }
                muxer
            })?;
        Ok(Self {
            jobs,
            done,
            kick,
            stop,
            reset,
            thread,
        })
    }
}

/// The vsock device.
pub struct VsockDevice {
    config: [u8; 8],
    thread: Option<DeviceThread>,
    active: bool,
}

impl VsockDevice {
    /// A device for guest `cid`, listening on `uds_path`; its thread
    /// confines itself with `filter` (see [`crate::seccomp`]).
    pub fn new(cid: u64, uds_path: PathBuf, filter: Option<BpfProgram>) -> std::io::Result<Self> {
        let muxer = Muxer::new(cid, uds_path)?;
        Ok(Self {
            config: cid.to_le_bytes(),
            thread: Some(DeviceThread::spawn(muxer, filter)?),
            active: false,
        })
    }

    /// A handle that resets the transport when written (see
    /// [`VsockWorker::request_transport_reset`]); ignored while the device
    /// is not active.
    pub fn reset_handle(&self) -> std::io::Result<EventFd> {
        match &self.thread {
            Some(t) => t.reset.try_clone(),
            None => Err(std::io::Error::other("vsock device thread is gone")),
        }
    }

    fn stop(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        if let Some(t) = &self.thread {
            let _ = t.stop.write(1);
            if t.done.recv().is_err() {
                tracing::error!("vsock thread ended unexpectedly");
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
        if self.active {
            return Err(ActivateError::Io(std::io::Error::other(
                "vsock device already active",
            )));
        }
        let thread = self
            .thread
            .as_ref()
            .ok_or_else(|| std::io::Error::other("vsock device thread is gone"))?;
        let evq = queues.next().filter(|q| q.ready());
        let job = Job {
            mem: ctx.mem,
            rxq,
            txq,
            evq,
            interrupt: ctx.interrupt,
        };
        thread
            .jobs
            .send(job)
            .map_err(|_| std::io::Error::other("vsock device thread ended"))?;
        self.active = true;
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if let (true, Some(t)) = (self.active, &self.thread) {
            if usize::from(index) <= EVT_QUEUE {
                let _ = t.kick.write(1);
            }
        }
    }

    fn reset(&mut self) {
        self.stop();
    }

    fn queue_eventfds(&self) -> Vec<(u16, &EventFd)> {
        // Every queue wakes the worker (new event buffers may let a
        // pending reset event through).
        match &self.thread {
            Some(t) => (0u16..).zip([&t.kick; 3]).collect(),
            None => Vec::new(),
        }
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            // Closing the job channel ends the thread; the muxer (and with
            // it the host socket) is dropped here, not on a confined thread.
            drop(t.jobs);
            match t.thread.join() {
                Ok(muxer) => drop(muxer),
                Err(_) => tracing::error!("vsock thread panicked"),
            }
        }
    }
}
