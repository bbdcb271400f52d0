//! The virtio-fs device as the transport sees it: a config space with the
//! tag, two queues (high priority, requests) whose processing lives in the
//! vhost-user back-end, kicks forwarded to it, interrupts raised by it.

use vmm_sys_util::eventfd::EventFd;

use super::frontend::FsFrontend;
use super::{FsError, VIRTIO_ID_FS};
use crate::config::MAX_FS_TAG_LEN;
use crate::devices::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, INT_USED_RING,
};

/// The high-priority queue (FORGET, INTERRUPT requests).
pub const HIPRIO_QUEUE: usize = 0;
/// The first (and only) request queue.
pub const REQUEST_QUEUE: usize = 1;
/// Number of request queues announced in the config space.
pub const NUM_REQUEST_QUEUES: u32 = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// Size of the config space: `tag[36]`, `num_request_queues: le32`.
pub const CONFIG_LEN: usize = MAX_FS_TAG_LEN + 4;

/// A virtio-fs device served by a vhost-user back-end.
#[derive(Debug)]
pub struct FsDevice {
    frontend: FsFrontend,
    config: [u8; CONFIG_LEN],
    kicks: Vec<EventFd>,
}

impl FsDevice {
    /// A device announcing `tag` over a negotiated back-end.
    pub fn new(frontend: FsFrontend, tag: &str) -> Result<Self, FsError> {
        let mut config = [0u8; CONFIG_LEN];
        let tag = tag.as_bytes();
        let n = tag.len().min(MAX_FS_TAG_LEN);
        config[..n].copy_from_slice(&tag[..n]);
        config[MAX_FS_TAG_LEN..].copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        let kicks = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(FsError::EventFd))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            frontend,
            config,
            kicks,
        })
    }

    /// The vhost-user frontend (for tests and diagnostics).
    pub fn frontend(&self) -> &FsFrontend {
        &self.frontend
    }

    /// The kick eventfd of queue `index` (what a notify write signals).
    pub fn kick(&self, index: usize) -> Option<&EventFd> {
        self.kicks.get(index)
    }
}

impl VirtioDevice for FsDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        self.frontend.guest_features()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::warn!(
            offset,
            len = data.len(),
            "virtio-fs config space is read-only; write ignored"
        );
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if let Some(i) = (0..QUEUE_SIZES.len())
            .find(|&i| !ctx.queues.get(i).is_some_and(virtio_queue::QueueT::ready))
        {
            return Err(ActivateError::QueueNotReady(i));
        }
        let call = ctx.interrupt.line_eventfd()?;
        // The back-end signals the irqfd directly; the status register
        // must then show a used buffer whenever the guest looks.
        ctx.interrupt.set_sticky(INT_USED_RING);
        if let Err(e) = self.frontend.start(
            ctx.acked_features,
            &ctx.mem,
            &ctx.queues,
            &call,
            &self.kicks,
        ) {
            self.frontend.stop();
            return Err(ActivateError::Backend(e.to_string()));
        }
        tracing::debug!(
            features = format_args!("{:#x}", ctx.acked_features),
            "virtio-fs activated"
        );
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        if let Some(kick) = self.kicks.get(usize::from(index)) {
            if let Err(e) = kick.write(1) {
                tracing::warn!(index, error = %e, "virtio-fs kick failed");
            }
        }
    }

    fn queue_eventfds(&self) -> Vec<(u16, &EventFd)> {
        // The kick fds are virtiofsd's: a notification goes from the guest
        // to the back-end through KVM alone.
        (0u16..).zip(self.kicks.iter()).collect()
    }

    fn reset(&mut self) {
        for (index, base) in self.frontend.stop() {
            if let Err(e) = base {
                tracing::warn!(index, error = %e, "stopping a virtio-fs vring failed");
            }
        }
    }
}
