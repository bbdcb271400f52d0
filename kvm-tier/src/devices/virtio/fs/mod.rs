//! virtio-fs through vhost-user: the guest's queues are served by a
//! `virtiofsd` the VMM starts for the shared directory.
//!
//! `daemon` runs and stops virtiofsd, `frontend` speaks the vhost-user
//! protocol to it (features, memory table, vrings), `device` is the
//! virtio device the transport sees (config space with the tag, kicks
//! forwarded to the back-end, interrupts raised by the back-end through the
//! device's irqfd).

pub mod daemon;
pub mod device;
pub mod frontend;

use std::path::PathBuf;

use thiserror::Error;

pub use daemon::Virtiofsd;
pub use device::FsDevice;
pub use frontend::FsFrontend;

/// The virtio device id of a file-system device.
pub const VIRTIO_ID_FS: u32 = 26;

/// Why the virtio-fs device or its daemon could not be set up.
#[derive(Debug, Error)]
pub enum FsError {
    /// The private socket directory could not be made.
    #[error("creating a private directory for the virtiofsd socket under {dir}: {source}")]
    SocketDir {
        /// The parent directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The vhost-user socket could not be bound or connected.
    #[error("vhost-user socket {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// virtiofsd could not be started.
    #[error("starting virtiofsd {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A vhost-user request failed.
    #[error("vhost-user {step}: {source}")]
    Protocol {
        /// The request.
        step: &'static str,
        /// The cause.
        source: vhost::Error,
    },
    /// The back-end lacks a feature the device needs.
    #[error("the vhost-user back-end does not offer {0}")]
    MissingFeature(&'static str),
    /// The back-end serves fewer queues than the device has.
    #[error("the vhost-user back-end serves {got} queues; {need} are needed")]
    TooFewQueues {
        /// Queues served.
        got: u64,
        /// Queues needed.
        need: usize,
    },
    /// Guest memory cannot be shared (a region without a file).
    #[error("guest memory cannot be shared with the back-end: {0}")]
    Memory(String),
    /// An eventfd could not be created.
    #[error("creating an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}
