//! The protocol spoken between hull's host side (inside the VMM process) and `hull-agent`, the
//! guest's PID 1, over one vsock stream per session.
//!
//! * [`frame`]: the length-prefixed frame codec (header, limits, incremental decoder, encoder).
//! * [`msg`]: the typed messages in each direction and their validation.
//! * [`client`]: the host side: hybrid-vsock connect, hello, start a process, pump its stdio.
//!
//! This crate depends on no other hull crate, so both the runtime and the agent can use it.

pub mod client;
pub mod frame;
pub mod msg;

pub use frame::{DecodeError, Decoder, EncodeError, FrameReader};
pub use msg::{
    ExitStatus, GuestMsg, Hello, HostMsg, ProcessSpec, Rlimit, RlimitType, Role, ValidationError,
    Version, WindowSize,
};

/// The vsock port the agent listens on in the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Where the agent mounts the container's rootfs share in the guest (the host names paths
/// in the share relative to it).
pub const GUEST_ROOTFS_DIR: &str = "/run/hull/root";

/// The protocol version this crate speaks. Peers must agree on `major`; `minor` only adds.
pub const PROTOCOL_VERSION: Version = Version { major: 1, minor: 0 };
