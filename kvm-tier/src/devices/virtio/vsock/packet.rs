//! vsock packets: the 44-byte header and its payload, read from and written
//! to guest descriptor chains with every guest-given length checked.

use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::ByteValued;

use crate::memory::GuestMemoryMmap;

/// Stream sockets: the only type supported.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload accepted in one packet (the Linux driver sends at most 64 KiB).
pub const MAX_PKT_DATA: usize = 64 * 1024;

/// Packet operations.
pub mod op {
    #![allow(missing_docs)]
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flags.
pub mod shutdown {
    /// The peer will receive no more data.
    pub const RCV: u32 = 1;
    /// The peer will send no more data.
    pub const SEND: u32 = 2;
}

/// `struct virtio_vsock_hdr`, little endian, packed.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockHeader {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

// SAFETY: a packed struct of integers: every byte pattern is a valid value
// and it has no padding.
unsafe impl ByteValued for VsockHeader {}

/// Size of the header on the wire.
pub const HDR_SIZE: usize = std::mem::size_of::<VsockHeader>();
const _: () = assert!(HDR_SIZE == 44);

/// A packet with its payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// The header (`len` equals `data.len()`).
    pub hdr: VsockHeader,
    /// The payload.
    pub data: Vec<u8>,
}

/// Why a descriptor chain was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// The chain loops or is longer than the queue.
    #[error("descriptor chain loops or is longer than the queue")]
    ChainLoop,
    /// A descriptor points outside guest memory (or the chain overflows).
    #[error("descriptor chain is not within guest memory: {0}")]
    BadChain(String),
    /// Too few readable bytes for a header.
    #[error("descriptor chain holds {0} readable bytes, fewer than a vsock header")]
    ShortHeader(usize),
    /// The header's length does not match the payload.
    #[error("header announces {announced} payload bytes, the chain holds {available}")]
    BadLength {
        /// What the header says.
        announced: u32,
        /// What the chain holds.
        available: usize,
    },
    /// The payload is larger than accepted.
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(u32),
    /// The chain's writable part cannot hold the packet.
    #[error("receive buffer of {have} bytes cannot hold {need}")]
    NoRoom {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// Refuses chains the queue's ttl cut short: a loop, or one longer than the
/// queue (the chain iterator stops there silently).
fn check_terminates(chain: &Chain<'_>) -> Result<(), PacketError> {
    let last: Option<Descriptor> = chain.clone().last();
    match last {
        Some(d) if d.has_next() => Err(PacketError::ChainLoop),
        _ => Ok(()),
    }
}

/// Reads a packet the guest sent on the TX queue.
pub fn read_tx(chain: Chain<'_>, mem: &GuestMemoryMmap) -> Result<Packet, PacketError> {
    check_terminates(&chain)?;
    let mut reader = chain
        .reader(mem)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    let available = reader.available_bytes();
    if available < HDR_SIZE {
        return Err(PacketError::ShortHeader(available));
    }
    let hdr: VsockHeader = reader
        .read_obj()
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    let announced = hdr.len;
    let len = announced as usize;
    if len > MAX_PKT_DATA {
        return Err(PacketError::TooLarge(announced));
    }
    let available = reader.available_bytes();
    if len > available {
        return Err(PacketError::BadLength {
            announced,
            available,
        });
    }
    let mut data = vec![0u8; len];
    std::io::Read::read_exact(&mut reader, &mut data)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    Ok(Packet { hdr, data })
}

/// How many payload bytes an RX chain can take after the header (0 if it
/// cannot hold a header, or is malformed).
pub fn rx_capacity(chain: &Chain<'_>, mem: &GuestMemoryMmap) -> Result<usize, PacketError> {
    check_terminates(chain)?;
    let writer = chain
        .clone()
        .writer(mem)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    let have = writer.available_bytes();
    if have < HDR_SIZE {
        return Err(PacketError::NoRoom {
            need: HDR_SIZE,
            have,
        });
    }
    Ok(have - HDR_SIZE)
}

/// Writes `pkt` into an RX chain; returns the bytes written.
pub fn write_rx(chain: Chain<'_>, mem: &GuestMemoryMmap, pkt: &Packet) -> Result<u32, PacketError> {
    check_terminates(&chain)?;
    let mut writer = chain
        .writer(mem)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    let need = HDR_SIZE + pkt.data.len();
    let have = writer.available_bytes();
    if have < need {
        return Err(PacketError::NoRoom { need, have });
    }
    writer
        .write_obj(pkt.hdr)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    std::io::Write::write_all(&mut writer, &pkt.data)
        .map_err(|e| PacketError::BadChain(e.to_string()))?;
    Ok(need as u32)
}
