//! virtio-vsock in userspace ("hybrid vsock"): guest stream connections are
//! bridged to host unix sockets.
//!
//! * Host to guest: the host connects to `uds_path` and writes
//!   `CONNECT <port>\n`; the device opens a connection to the guest's port
//!   and answers `OK <host_port>\n` once the guest accepts.
//! * Guest to host: a guest connection to host port `P` (CID 2) is bridged
//!   to the unix socket `<uds_path>_<P>`.

pub mod device;
pub mod muxer;
pub mod packet;

pub use device::VsockDevice;

/// virtio device id of vsock.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// The host's context id.
pub const HOST_CID: u64 = 2;
