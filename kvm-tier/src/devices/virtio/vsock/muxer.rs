//! The connection table of the hybrid vsock device: guest stream
//! connections on one side, host unix sockets on the other.
//!
//! Everything here is non-blocking; the device's thread polls the fds
//! [`Muxer::poll_fds`] lists and calls [`Muxer::poll_host`], and feeds guest
//! packets to [`Muxer::handle_guest_packet`] and takes packets for the guest
//! from [`Muxer::pop_rx`].

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::packet::{op, shutdown, Packet, VsockHeader, MAX_PKT_DATA, TYPE_STREAM};
use super::HOST_CID;

/// Receive buffer each connection advertises to the guest.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// Longest `CONNECT <port>\n` line accepted.
const MAX_HANDSHAKE: usize = 32;
/// First local port handed to host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// Most concurrent connections.
const MAX_CONNS: usize = 1024;
/// Most control packets waiting for guest receive buffers: a guest that
/// floods requests without reading replies cannot grow VMM memory.
pub const MAX_PENDING_CONTROL: usize = 4096;

/// A connection's identity: the host-side port and the guest-side port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Port on the host side (CID 2).
    pub host_port: u32,
    /// Port on the guest side.
    pub guest_port: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE.
    AwaitingGuest,
    /// Data flows.
    Established,
    /// The host side closed; SHUTDOWN sent, waiting for the guest's RST.
    HostClosed,
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    state: State,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Bytes from the guest written to the host stream.
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_sent: u32,
    /// Guest data the host stream has not taken yet.
    pending: Vec<u8>,
}

impl Conn {
    fn new(stream: UnixStream, state: State) -> Self {
        Self {
            stream,
            state,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            pending: Vec::new(),
        }
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Handshake {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// Parses `CONNECT <port>\n`.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let rest = s.strip_prefix("CONNECT ")?.strip_suffix('\n')?;
    let rest = rest.strip_suffix('\r').unwrap_or(rest);
    rest.trim().parse().ok()
}

/// The connection table.
#[derive(Debug)]
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    handshakes: Vec<Handshake>,
    conns: HashMap<ConnKey, Conn>,
    control: VecDeque<Packet>,
    next_host_port: u32,
}

fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            // A stale socket from an earlier run; never remove anything else.
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        r => r,
    }
}

impl Muxer {
    /// Listens on `uds_path` for host-initiated connections.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> io::Result<Self> {
        let listener = bind(&uds_path)?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            guest_cid,
            uds_path,
            listener,
            handshakes: Vec::new(),
            conns: HashMap::new(),
            control: VecDeque::new(),
            next_host_port: FIRST_HOST_PORT,
        })
    }

    /// Number of control packets waiting for the guest.
    pub fn pending_control(&self) -> usize {
        self.control.len()
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Forgets every guest connection (a transport reset: the guest drops
    /// its side too): their host sockets close and queued control packets
    /// for them are discarded. The listener and pending `CONNECT` lines
    /// stay.
    pub fn reset_transport(&mut self) {
        let n = self.conns.len();
        self.conns.clear();
        self.control.clear();
        tracing::debug!(connections = n, "vsock transport reset");
    }

    fn header(&self, key: ConnKey, op: u16) -> VsockHeader {
        VsockHeader {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.host_port,
            dst_port: key.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt: self.conns.get(&key).map_or(0, |c| c.fwd_cnt),
        }
    }

    fn queue_control(&mut self, key: ConnKey, op: u16, flags: u32) {
        let mut hdr = self.header(key, op);
        hdr.flags = flags;
        if self.control.len() >= MAX_PENDING_CONTROL {
            tracing::warn!(
                op,
                "vsock control queue full; guest is not reading, packet dropped"
            );
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.fwd_cnt_sent = c.fwd_cnt;
        }
        self.control.push_back(Packet {
            hdr,
            data: Vec::new(),
        });
    }

    fn reset(&mut self, key: ConnKey) {
        self.conns.remove(&key);
        self.queue_control(key, op::RST, 0);
    }

    /// Handles one packet from the guest's TX queue.
    pub fn handle_guest_packet(&mut self, pkt: Packet) {
        let h = pkt.hdr;
        let key = ConnKey {
            host_port: h.dst_port,
            guest_port: h.src_port,
        };
        let (op, src_cid, dst_cid, type_) = (h.op, h.src_cid, h.dst_cid, h.type_);
        if src_cid != self.guest_cid || dst_cid != HOST_CID || type_ != TYPE_STREAM {
            tracing::debug!(
                src_cid,
                dst_cid,
                type_,
                "vsock packet with bad address or type"
            );
            if op != op::RST {
                self.queue_control(key, op::RST, 0);
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match op {
            op::REQUEST => self.guest_connect(key, h),
            op::RESPONSE => match self.conns.get_mut(&key) {
                Some(c) if c.state == State::AwaitingGuest => {
                    c.state = State::Established;
                    let line = format!("OK {}\n", key.host_port);
                    if c.stream.write_all(line.as_bytes()).is_err() {
                        self.reset(key);
                    }
                }
                _ => self.reset(key),
            },
            op::RW => self.guest_data(key, pkt.data),
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.queue_control(key, op::CREDIT_UPDATE, 0);
                } else {
                    self.queue_control(key, op::RST, 0);
                }
            }
            op::SHUTDOWN => {
                let flags = h.flags;
                if flags & (shutdown::RCV | shutdown::SEND) == shutdown::RCV | shutdown::SEND {
                    self.reset(key);
                } else if flags & shutdown::SEND != 0 {
                    if let Some(c) = self.conns.get_mut(&key) {
                        let _ = c.flush();
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                    }
                }
            }
            op::RST => {
                self.conns.remove(&key);
            }
            other => {
                tracing::debug!(op = other, "unknown vsock op");
                self.reset(key);
            }
        }
    }

    fn guest_connect(&mut self, key: ConnKey, h: VsockHeader) {
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNS {
            self.queue_control(key, op::RST, 0);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.host_port));
        let stream = UnixStream::connect(&path).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match stream {
            Ok(s) => {
                let mut c = Conn::new(s, State::Established);
                c.peer_buf_alloc = h.buf_alloc;
                c.peer_fwd_cnt = h.fwd_cnt;
                self.conns.insert(key, c);
                self.queue_control(key, op::RESPONSE, 0);
            }
            Err(e) => {
                tracing::debug!(port = key.host_port, error = %e, "no host listener for guest connection");
                self.queue_control(key, op::RST, 0);
            }
        }
    }

    fn guest_data(&mut self, key: ConnKey, data: Vec<u8>) {
        let Some(c) = self.conns.get_mut(&key) else {
            self.queue_control(key, op::RST, 0);
            return;
        };
        if c.state != State::Established && c.state != State::HostClosed {
            self.reset(key);
            return;
        }
        // The guest must respect the credit we advertised.
        if c.pending.len() + data.len() > CONN_BUF_ALLOC as usize {
            tracing::warn!(?key, "guest overran its vsock credit");
            self.reset(key);
            return;
        }
        c.pending.extend_from_slice(&data);
        if c.flush().is_err() {
            self.reset(key);
            return;
        }
        if c.fwd_cnt.wrapping_sub(c.fwd_cnt_sent) > CONN_BUF_ALLOC / 4 {
            self.queue_control(key, op::CREDIT_UPDATE, 0);
        }
    }

    /// Accepts host connections, reads handshakes, flushes pending data.
    pub fn poll_host(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_ok() && self.handshakes.len() < MAX_CONNS {
                        self.handshakes.push(Handshake {
                            stream: s,
                            buf: Vec::new(),
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "vsock accept failed");
                    break;
                }
            }
        }
        let handshakes = std::mem::take(&mut self.handshakes);
        for mut hs in handshakes {
            match read_handshake(&mut hs) {
                Ok(None) => self.handshakes.push(hs),
                Ok(Some(port)) => self.host_connect(hs.stream, port),
                Err(e) => tracing::debug!(error = %e, "vsock handshake refused"),
            }
        }
        let mut broken = Vec::new();
        for (key, c) in &mut self.conns {
            if !c.pending.is_empty() && c.flush().is_err() {
                broken.push(*key);
            }
        }
        for key in broken {
            self.reset(key);
        }
    }

    fn host_connect(&mut self, stream: UnixStream, guest_port: u32) {
        if self.conns.len() >= MAX_CONNS {
            return;
        }
        let mut key = ConnKey {
            host_port: self.next_host_port,
            guest_port,
        };
        while self.conns.contains_key(&key) {
            key.host_port = key.host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        }
        self.next_host_port = key.host_port.wrapping_add(1).max(FIRST_HOST_PORT);
        self.conns
            .insert(key, Conn::new(stream, State::AwaitingGuest));
        self.queue_control(key, op::REQUEST, 0);
    }

    /// Whether a packet may be ready for the guest (control packets, or
    /// established connections that might have data).
    pub fn wants_rx(&self) -> bool {
        !self.control.is_empty()
            || self
                .conns
                .values()
                .any(|c| c.state == State::Established && c.peer_credit() > 0)
    }

    /// The next packet for the guest, with at most `max_data` payload bytes.
    pub fn pop_rx(&mut self, max_data: usize) -> Option<Packet> {
        if let Some(p) = self.control.pop_front() {
            return Some(p);
        }
        let max_data = max_data.min(MAX_PKT_DATA);
        let mut closed = None;
        let mut out = None;
        for (key, c) in &mut self.conns {
            if c.state != State::Established {
                continue;
            }
            let want = (c.peer_credit() as usize).min(max_data);
            if want == 0 {
                continue;
            }
            let mut buf = vec![0u8; want];
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    closed = Some(*key);
                    break;
                }
                Ok(n) => {
                    buf.truncate(n);
                    c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                    c.fwd_cnt_sent = c.fwd_cnt;
                    out = Some((*key, buf));
                    break;
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = Some(*key);
                    break;
                }
            }
        }
        if let Some((key, data)) = out {
            let mut hdr = self.header(key, op::RW);
            hdr.len = data.len() as u32;
            return Some(Packet { hdr, data });
        }
        if let Some(key) = closed {
            if let Some(c) = self.conns.get_mut(&key) {
                c.state = State::HostClosed;
            }
            let mut hdr = self.header(key, op::SHUTDOWN);
            hdr.flags = shutdown::RCV | shutdown::SEND;
            return Some(Packet {
                hdr,
                data: Vec::new(),
            });
        }
        None
    }

    /// The fds the device thread should poll, with `POLLIN`/`POLLOUT` wanted.
    pub fn poll_fds(&self) -> Vec<(RawFd, i16)> {
        let mut v = vec![(self.listener.as_raw_fd(), libc::POLLIN)];
        v.extend(
            self.handshakes
                .iter()
                .map(|h| (h.stream.as_raw_fd(), libc::POLLIN)),
        );
        for c in self.conns.values() {
            let mut ev = 0;
            if c.state == State::Established && c.peer_credit() > 0 {
                ev |= libc::POLLIN;
            }
            if !c.pending.is_empty() {
                ev |= libc::POLLOUT;
            }
            if ev != 0 {
                v.push((c.stream.as_raw_fd(), ev));
            }
        }
        v
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // Remove our listening socket (only if it still is a socket).
        if std::fs::symlink_metadata(&self.uds_path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

fn read_handshake(hs: &mut Handshake) -> io::Result<Option<u32>> {
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing past the newline (the first payload) is eaten.
    loop {
        match hs.stream.read(&mut byte) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => {
                hs.buf.push(byte[0]);
                if byte[0] == b'\n' {
                    return parse_connect(&hs.buf)
                        .map(Some)
                        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "bad CONNECT line"));
                }
                if hs.buf.len() > MAX_HANDSHAKE {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "CONNECT line too long",
                    ));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_line() {
        assert_eq!(parse_connect(b"CONNECT 52\n"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r\n"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967296\n"), None);
        assert_eq!(parse_connect(b"CONNECT x\n"), None);
        assert_eq!(parse_connect(b"connect 1\n"), None);
        assert_eq!(parse_connect(b"CONNECT 1"), None);
    }
}
