//! virtio devices and their transport.

pub mod fs;
pub mod mmio;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use thiserror::Error;
use virtio_queue::Queue;

use super::IrqLine;
use crate::memory::GuestMemoryMmap;

/// Feature bit: the device complies with virtio 1.x (mandatory for mmio v2).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The guest gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Interrupt status bit: a used buffer was added to a queue.
pub const INT_USED_RING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt: the status register the driver reads and acks, and
/// the line raised when a bit is set.
#[derive(Debug)]
pub struct VirtioInterrupt {
    status: AtomicU32,
    sticky: AtomicU32,
    line: IrqLine,
}

impl VirtioInterrupt {
    /// An interrupt raised through `line`.
    pub fn new(line: IrqLine) -> Self {
        Self {
            status: AtomicU32::new(0),
            sticky: AtomicU32::new(0),
            line,
        }
    }

    /// Sets `bits` in the interrupt status and raises the line.
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.line.trigger() {
            tracing::warn!(error = %e, gsi = self.line.gsi(), "raising virtio interrupt failed");
        }
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst) | self.sticky.load(Ordering::SeqCst)
    }

    /// Clears acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Makes the status register always show `bits`, acked or not.
    ///
    /// For devices served outside the VMM (vhost-user): their back-end
    /// signals the line's eventfd directly, so the VMM never learns when
    /// to set the bit; reporting it always makes the driver look at its
    /// queues on every interrupt, which is harmless.
    pub fn set_sticky(&self, bits: u32) {
        self.sticky.store(bits, Ordering::SeqCst);
    }

    /// Clears every status bit, sticky ones included (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.sticky.store(0, Ordering::SeqCst);
    }

    /// A duplicate of the line's eventfd, for a back-end that raises the
    /// interrupt itself (a vhost-user vring call fd, registered with KVM as
    /// an irqfd).
    pub fn line_eventfd(&self) -> std::io::Result<vmm_sys_util::eventfd::EventFd> {
        self.line.eventfd().try_clone()
    }
}

/// What a device gets when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The queues, validated against guest memory.
    pub queues: Vec<Queue>,
    /// Features the driver accepted.
    pub acked_features: u64,
    /// The device's interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
}

/// Why a device refused to activate.
#[derive(Debug, Error)]
pub enum ActivateError {
    /// A queue the device needs is not set up.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// Host resources (threads, sockets) could not be set up.
    #[error("device set-up: {0}")]
    Io(#[from] std::io::Error),
    /// The device's back-end refused the set-up.
    #[error("device back-end: {0}")]
    Backend(String),
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (e.g. 19 for vsock).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// The features offered (must include [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with its queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// The driver notified queue `index`.
    fn queue_notify(&mut self, index: u16);
    /// The driver reset the device: stop using queues and memory.
    fn reset(&mut self);
    /// Eventfds KVM may signal itself when the driver notifies a queue
    /// (ioeventfds on the notify register, matched on the queue index):
    /// such notifications then reach the device's worker or back-end
    /// without an exit to the VMM, and [`VirtioDevice::queue_notify`] is
    /// not called for them. Signals may come before activation.
    fn queue_eventfds(&self) -> Vec<(u16, &vmm_sys_util::eventfd::EventFd)> {
        Vec::new()
    }
}

/// Reads `data.len()` bytes at `offset` of `config`, zero past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(off) = usize::try_from(offset) else {
        return;
    };
    if off >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - off);
    data[..n].copy_from_slice(&config[off..off + n]);
}
