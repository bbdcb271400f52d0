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
    /// Data flows (in the directions not shut down).
    Established,
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
    /// The host stream reached EOF (the guest was sent SHUTDOWN(SEND)).
    host_eof: bool,
    /// The guest will send no more: the host stream's write side is shut
    /// once `pending` is written.
    guest_no_send: bool,
    /// The host stream's write side is shut.
    host_write_shut: bool,
    /// The guest will receive no more: the host stream is not read.
    guest_no_rcv: bool,
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
            host_eof: false,
            guest_no_send: false,
            host_write_shut: false,
            guest_no_rcv: false,
        }
    }

    /// Bytes the guest can still take.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the host stream should be read for the guest.
    fn readable(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && !self.guest_no_rcv
            && self.peer_credit() > 0
    }

    /// Whether the guest should be told about freed receive space: it has
    /// not heard of a quarter of its credit. Since this is checked after
    /// every write to the host stream, the guest's view of its credit
    /// never lags more than that behind and a sender waiting for credit is
    /// always woken.
    fn credit_update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CONN_BUF_ALLOC / 4
    }

    /// Writes pending guest data to the host stream, then shuts its write
    /// side if the guest sent its last byte.
    fn flush(&mut self) -> io::Result<()> {
        let written = write_some(&mut self.stream, &mut self.pending)?;
        self.fwd_cnt = self.fwd_cnt.wrapping_add(written as u32);
        if self.pending.is_empty() && self.guest_no_send && !self.host_write_shut {
            self.host_write_shut = true;
            self.stream.shutdown(std::net::Shutdown::Write)?;
        }
        Ok(())
    }
}

/// Writes as much of `buf` as `stream` takes now; removes it from `buf`.
fn write_some(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                buf.drain(..done);
                return Err(e);
            }
        }
    }
    buf.drain(..done);
    Ok(done)
}

/// A connection the guest closed while guest data still waits for the
/// host stream: written out, then the stream closes.
#[derive(Debug)]
struct Draining {
    stream: UnixStream,
    pending: Vec<u8>,
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
    draining: Vec<Draining>,
    control: VecDeque<Packet>,
    next_host_port: u32,
    /// Round-robin position among connections with data for the guest.
    rr: usize,
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
            draining: Vec::new(),
            control: VecDeque::new(),
            next_host_port: FIRST_HOST_PORT,
            rr: 0,
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
        self.draining.clear();
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
            op::SHUTDOWN => self.guest_shutdown(key, h.flags),
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
        let stream = connect_nonblocking(Path::new(&path));
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
        if c.state != State::Established || c.guest_no_send {
            self.reset(key);
            return;
        }
        // The guest must respect the credit we advertised.
        if c.pending.len() + data.len() > CONN_BUF_ALLOC as usize {
            tracing::warn!(?key, "guest overran its vsock credit");
            self.reset(key);
            return;
        }
        if c.pending.is_empty() {
            c.pending = data;
        } else {
            c.pending.extend_from_slice(&data);
        }
        if c.flush().is_err() {
            self.reset(key);
            return;
        }
        if c.credit_update_due() {
            self.queue_control(key, op::CREDIT_UPDATE, 0);
        }
    }

    /// The guest shut down one or both directions.
    fn guest_shutdown(&mut self, key: ConnKey, flags: u32) {
        let Some(c) = self.conns.get_mut(&key) else {
            self.queue_control(key, op::RST, 0);
            return;
        };
        if flags & shutdown::SEND != 0 {
            c.guest_no_send = true;
        }
        if flags & shutdown::RCV != 0 && !c.guest_no_rcv {
            c.guest_no_rcv = true;
            // The host's further writes fail (EPIPE) instead of filling a
            // buffer nobody reads.
            let _ = c.stream.shutdown(std::net::Shutdown::Read);
        }
        if c.guest_no_send && c.guest_no_rcv {
            // Closed on the guest's side: it waits for our RST. Guest data
            // already accepted still goes to the host stream.
            if let Some(mut c) = self.conns.remove(&key) {
                if c.flush().is_ok() && !c.pending.is_empty() {
                    self.drain_later(c.stream, c.pending);
                }
            }
            self.queue_control(key, op::RST, 0);
            return;
        }
        if c.flush().is_err() {
            self.reset(key);
        }
    }

    fn drain_later(&mut self, stream: UnixStream, pending: Vec<u8>) {
        if self.draining.len() >= MAX_CONNS {
            tracing::warn!("too many closing vsock connections; oldest dropped");
            self.draining.remove(0);
        }
        self.draining.push(Draining { stream, pending });
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
        let mut credit = Vec::new();
        for (key, c) in &mut self.conns {
            if c.pending.is_empty() {
                continue;
            }
            if c.flush().is_err() {
                broken.push(*key);
            } else if c.credit_update_due() {
                // The host took data the guest may be waiting to send.
                credit.push(*key);
            }
        }
        for key in broken {
            self.reset(key);
        }
        for key in credit {
            self.queue_control(key, op::CREDIT_UPDATE, 0);
        }
        // Closing connections: kept until their data is written (or the
        // host stream fails); dropping one closes its stream.
        self.draining.retain_mut(|d| {
            write_some(&mut d.stream, &mut d.pending).is_ok() && !d.pending.is_empty()
        });
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
        !self.control.is_empty() || self.conns.values().any(Conn::readable)
    }

    /// The next packet for the guest, with at most `max_data` payload bytes.
    /// Connections with data take turns.
    pub fn pop_rx(&mut self, max_data: usize) -> Option<Packet> {
        if let Some(p) = self.control.pop_front() {
            return Some(p);
        }
        let max_data = max_data.min(MAX_PKT_DATA);
        let n = self.conns.len();
        if n == 0 || max_data == 0 {
            return None;
        }
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        let start = self.rr % n;
        let mut event = None;
        for i in (start..n).chain(0..start) {
            let key = &keys[i];
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if !c.readable() {
                continue;
            }
            let want = (c.peer_credit() as usize).min(max_data);
            let mut buf = vec![0u8; want];
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    event = Some((i, *key, None));
                    break;
                }
                Ok(got) => {
                    buf.truncate(got);
                    c.tx_cnt = c.tx_cnt.wrapping_add(got as u32);
                    c.fwd_cnt_sent = c.fwd_cnt;
                    event = Some((i, *key, Some(Ok(buf))));
                    break;
                }
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    event = Some((i, *key, Some(Err(e))));
                    break;
                }
            }
        }
        let (i, key, what) = event?;
        self.rr = i + 1;
        match what {
            Some(Ok(data)) => {
                let mut hdr = self.header(key, op::RW);
                hdr.len = data.len() as u32;
                Some(Packet { hdr, data })
            }
            Some(Err(e)) => {
                // The host side broke (e.g. its process died): reset.
                tracing::debug!(?key, error = %e, "vsock host stream failed");
                self.conns.remove(&key);
                let mut hdr = self.header(key, op::RST);
                hdr.fwd_cnt = 0;
                Some(Packet {
                    hdr,
                    data: Vec::new(),
                })
            }
            None => {
                // EOF: the host sends no more. If it closed its socket
                // entirely (POLLHUP, not just a half-close), it receives no
                // more either.
                let c = self.conns.get_mut(&key)?;
                c.host_eof = true;
                let mut flags = shutdown::SEND;
                if hung_up(c.stream.as_raw_fd()) {
                    flags |= shutdown::RCV;
                }
                let mut hdr = self.header(key, op::SHUTDOWN);
                hdr.flags = flags;
                Some(Packet {
                    hdr,
                    data: Vec::new(),
                })
            }
        }
    }

    /// The fds the device thread should poll, with `POLLIN`/`POLLOUT`
    /// wanted. Connections are polled for data only if `rx_room` (the guest
    /// offered receive buffers): else their data would wake the thread
    /// with nowhere to put it.
    pub fn poll_fds(&self, rx_room: bool) -> Vec<(RawFd, i16)> {
        let mut v = vec![(self.listener.as_raw_fd(), libc::POLLIN)];
        v.extend(
            self.handshakes
                .iter()
                .map(|h| (h.stream.as_raw_fd(), libc::POLLIN)),
        );
        for c in self.conns.values() {
            let mut ev = 0;
            if rx_room && c.readable() {
                ev |= libc::POLLIN;
            }
            if !c.pending.is_empty() {
                ev |= libc::POLLOUT;
            }
            if ev != 0 {
                v.push((c.stream.as_raw_fd(), ev));
            }
        }
        v.extend(
            self.draining
                .iter()
                .map(|d| (d.stream.as_raw_fd(), libc::POLLOUT)),
        );
        v
    }
}

/// Connects to a unix stream socket without waiting: a host listener whose
/// backlog is full (it stopped accepting) refuses the connection
/// (`EAGAIN`) instead of stalling the device thread, and with it every
/// other connection.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain old data; all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let stream = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un of at least `len` bytes.
    let r = unsafe {
        libc::connect(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Whether the peer of a unix stream closed it entirely.
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLHUP != 0
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
