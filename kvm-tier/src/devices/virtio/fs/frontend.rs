//! The vhost-user frontend of the virtio-fs device: feature and protocol
//! negotiation when the device is created, then the memory table and the
//! vrings when the guest driver activates it.

use std::os::unix::net::UnixStream;

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::FsError;
use crate::devices::virtio::VIRTIO_F_VERSION_1;
use crate::memory::GuestMemoryMmap;

/// Descriptors may point to indirect tables.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// used_event / avail_event notification suppression.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Virtio features the VMM lets the guest see, if the back-end offers them.
/// Everything else (e.g. IOMMU platform access, packed rings the transport
/// cannot describe) stays hidden.
const GUEST_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;

/// Protocol features the frontend uses when the back-end has them.
fn wanted_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

fn proto(step: &'static str) -> impl FnOnce(vhost::Error) -> FsError {
    move |source| FsError::Protocol { step, source }
}

/// A negotiated connection to a vhost-user virtio-fs back-end.
pub struct FsFrontend {
    fe: Frontend,
    backend_features: u64,
    protocol: VhostUserProtocolFeatures,
    queues: usize,
    /// Queues whose vrings the back-end is serving.
    started: Vec<usize>,
}

impl std::fmt::Debug for FsFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsFrontend")
            .field(
                "backend_features",
                &format_args!("{:#x}", self.backend_features),
            )
            .field("protocol", &self.protocol)
            .field("queues", &self.queues)
            .field("started", &self.started)
            .finish()
    }
}

impl FsFrontend {
    /// Takes ownership of the back-end over `stream` and negotiates what
    /// does not depend on the guest: virtio features offered, protocol
    /// features, the queue count.
    pub fn connect(stream: UnixStream, queues: usize) -> Result<Self, FsError> {
        let mut fe = Frontend::from_stream(stream, queues as u64);
        fe.set_owner().map_err(proto("SET_OWNER"))?;
        let backend_features = fe.get_features().map_err(proto("GET_FEATURES"))?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(FsError::MissingFeature("VIRTIO_F_VERSION_1"));
        }
        let mut protocol = VhostUserProtocolFeatures::empty();
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let offered = fe
                .get_protocol_features()
                .map_err(proto("GET_PROTOCOL_FEATURES"))?;
            protocol = offered & wanted_protocol();
            fe.set_protocol_features(protocol)
                .map_err(proto("SET_PROTOCOL_FEATURES"))?;
            if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                // Every request is acknowledged: errors surface where they happen.
                fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
        }
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let got = fe.get_queue_num().map_err(proto("GET_QUEUE_NUM"))?;
            if got < queues as u64 {
                return Err(FsError::TooFewQueues { got, need: queues });
            }
        }
        tracing::debug!(
            features = format_args!("{backend_features:#x}"),
            ?protocol,
            "vhost-user back-end negotiated"
        );
        Ok(Self {
            fe,
            backend_features,
            protocol,
            queues,
            started: Vec::new(),
        })
    }

    /// The virtio features to offer the guest.
    pub fn guest_features(&self) -> u64 {
        self.backend_features & GUEST_FEATURES
    }

    /// The back-end's own virtio feature bits.
    pub fn backend_features(&self) -> u64 {
        self.backend_features
    }

    /// The protocol features in use.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// Whether vrings are started.
    pub fn is_started(&self) -> bool {
        !self.started.is_empty()
    }

    fn uses_protocol_features(&self) -> bool {
        self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
    }

    /// Sends the acked features and the memory table, then starts a vring
    /// for each ready queue: size, host addresses of its rings, base, the
    /// call eventfd (the device's irqfd) and its kick eventfd.
    pub fn start(
        &mut self,
        acked_features: u64,
        mem: &GuestMemoryMmap,
        queues: &[Queue],
        call: &EventFd,
        kicks: &[EventFd],
    ) -> Result<(), FsError> {
        let mut features = acked_features & self.guest_features();
        if self.uses_protocol_features() {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.fe
            .set_features(features)
            .map_err(proto("SET_FEATURES"))?;
        self.fe
            .set_mem_table(&memory_table(mem)?)
            .map_err(proto("SET_MEM_TABLE"))?;
        for (index, (q, kick)) in queues.iter().zip(kicks).enumerate().take(self.queues) {
            if !q.ready() {
                continue;
            }
            self.start_vring(index, q, mem, call, kick)?;
            self.started.push(index);
        }
        Ok(())
    }

    fn start_vring(
        &mut self,
        index: usize,
        q: &Queue,
        mem: &GuestMemoryMmap,
        call: &EventFd,
        kick: &EventFd,
    ) -> Result<(), FsError> {
        let host = |gpa: u64, what: &str| {
            mem.get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|e| FsError::Memory(format!("queue {index} {what} at {gpa:#x}: {e}")))
        };
        let config = VringConfigData {
            queue_max_size: q.max_size(),
            queue_size: q.size(),
            flags: 0,
            desc_table_addr: host(q.desc_table(), "descriptor table")?,
            used_ring_addr: host(q.used_ring(), "used ring")?,
            avail_ring_addr: host(q.avail_ring(), "available ring")?,
            log_addr: None,
        };
        self.fe
            .set_vring_num(index, q.size())
            .map_err(proto("SET_VRING_NUM"))?;
        self.fe
            .set_vring_addr(index, &config)
            .map_err(proto("SET_VRING_ADDR"))?;
        self.fe
            .set_vring_base(index, q.next_avail())
            .map_err(proto("SET_VRING_BASE"))?;
        self.fe
            .set_vring_call(index, call)
            .map_err(proto("SET_VRING_CALL"))?;
        self.fe
            .set_vring_kick(index, kick)
            .map_err(proto("SET_VRING_KICK"))?;
        if self.uses_protocol_features() {
            self.fe
                .set_vring_enable(index, true)
                .map_err(proto("SET_VRING_ENABLE"))?;
        }
        tracing::debug!(index, size = q.size(), "vhost-user vring started");
        Ok(())
    }

    /// Stops every started vring (the guest reset the device); returns the
    /// back-end's next available index for each.
    pub fn stop(&mut self) -> Vec<(usize, Result<u32, FsError>)> {
        let mut out = Vec::new();
        for index in std::mem::take(&mut self.started) {
            if self.uses_protocol_features() {
                if let Err(e) = self.fe.set_vring_enable(index, false) {
                    tracing::warn!(index, error = %e, "vhost-user SET_VRING_ENABLE(0) failed");
                }
            }
            let base = self
                .fe
                .get_vring_base(index)
                .map_err(proto("GET_VRING_BASE"));
            out.push((index, base));
        }
        out
    }
}

/// The memory table: every guest RAM region with its memfd and offset.
pub fn memory_table(mem: &GuestMemoryMmap) -> Result<Vec<VhostUserMemoryRegionInfo>, FsError> {
    mem.iter()
        .map(|region| {
            VhostUserMemoryRegionInfo::from_guest_region(region).map_err(|e| {
                FsError::Memory(format!("region at {:#x}: {e}", region.start_addr().0))
            })
        })
        .collect()
}
