//! `hull-vsock-probe`: exercises a vsock path end to end, in a guest (`AF_VSOCK`) or on the host
//! (hull-vmm's hybrid vsock unix sockets).
//!
//! ```text
//! hull-vsock-probe [OPTIONS] listen-vsock PORT             guest: serve on AF_VSOCK PORT (any CID)
//! hull-vsock-probe [OPTIONS] listen-hybrid UDS_PREFIX PORT  host: serve guest-initiated connections
//!                                                          on the unix socket UDS_PREFIX_PORT
//! hull-vsock-probe [OPTIONS] connect-vsock CID PORT OP...   guest: connect to CID:PORT (host: CID 2)
//! hull-vsock-probe [OPTIONS] connect-hybrid UDS PORT OP...  host: connect to hull-vmm's socket UDS,
//!                                                          write `CONNECT PORT\n`, expect `OK <n>\n`
//! ```
//!
//! Client operations, each on its own connection, run in order (`--jobs K`: each one on K
//! connections at once). `N` is a byte count with an optional `K`, `M` or `G` suffix (binary):
//!
//! * `send:N`: send N pattern bytes (request `RECV N`); the server verifies them and answers
//!   `OK N <sha256|->`, the client compares the hash with its own.
//! * `recv:N`: request `SEND N`; the server sends N pattern bytes and closes; the client verifies
//!   them, then expects EOF.
//! * `echo:N`: request `ECHO`; send N pattern bytes while reading them back, half-close, expect
//!   N verified bytes then EOF.
//! * `hold`: request `HOLD`; wait until the peer ends the connection; ok on EOF or reset (prints
//!   which). For tests that kill the peer or reset the transport.
//! * `refused`: the connection must be refused (vsock: `ECONNREFUSED`/`ECONNRESET`; hybrid: the
//!   socket closes before `OK`).
//! * `quit`: request `QUIT`: the server stops accepting and exits once its connections end.
//!
//! Server (`listen-*`): serves each connection on its own thread; the first line is the request
//! (`ECHO`, `SEND N [hash|nohash]`, `RECV N [hash|nohash]`, `HOLD`, `QUIT`). `--count C`: exit after
//! C connections ended. The server exits non-zero if any connection failed.
//!
//! Options: `--timeout SECS` (default 120): any single read or write blocked that long fails
//! the operation (nothing hangs forever); `--no-hash`: verify the pattern only, no SHA-256 (for
//! throughput); `--jobs K`; `--count C`.
//!
//! Data is a deterministic pattern (splitmix64 of the 8-byte word index), verified byte for
//! byte by the receiver; a mismatch reports its offset. Output: one line per operation or
//! served connection on stdout, e.g. `vsock-probe: ok send 67108864 bytes sha=… 12.3 MiB/s`,
//! or `vsock-probe: FAIL recv 67108864: connection reset after 1234 bytes` (also on stdout,
//! one `write` per line, so `> /dev/kmsg` keeps lines whole). Exit status: 0 all ok, 1 a
//! failure, 2 bad usage.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;
const MAX_LINE: usize = 128;

/// Everything that can go wrong, by kind.
#[derive(Debug)]
enum ProbeError {
    /// Bad command line.
    Usage(String),
    /// A system call failed (with what we were doing).
    Io { what: String, source: io::Error },
    /// The peer ended the stream early.
    Eof { what: String, after: u64 },
    /// The peer broke the protocol.
    Protocol(String),
    /// Received data differs from the pattern.
    Mismatch { offset: u64 },
    /// Hashes of both sides differ.
    HashMismatch { ours: String, theirs: String },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Usage(m) => write!(f, "usage: {m}"),
            ProbeError::Io { what, source } => {
                let kind = match source.raw_os_error() {
                    Some(libc::ECONNRESET) => "connection reset",
                    Some(libc::EAGAIN) => "timed out",
                    Some(libc::ECONNREFUSED) => "connection refused",
                    Some(libc::EPIPE) => "broken pipe",
                    _ => "error",
                };
                write!(f, "{what}: {kind} ({source})")
            }
            ProbeError::Eof { what, after } => {
                write!(f, "{what}: unexpected EOF after {after} bytes")
            }
            ProbeError::Protocol(m) => write!(f, "protocol: {m}"),
            ProbeError::Mismatch { offset } => {
                write!(f, "data differs from the pattern at offset {offset}")
            }
            ProbeError::HashMismatch { ours, theirs } => {
                write!(f, "sha256 mismatch: ours {ours}, peer {theirs}")
            }
        }
    }
}

type Result<T> = std::result::Result<T, ProbeError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ProbeError {
    let what = what.into();
    move |source| ProbeError::Io { what, source }
}

/// Prints one whole line with a single write.
fn say(line: &str) {
    let mut s = String::with_capacity(line.len() + 14);
    s.push_str("vsock-probe: ");
    s.push_str(line);
    s.push('\n');
    let _ = io::stdout().lock().write_all(s.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Sockets

/// A connected stream socket (AF_VSOCK or AF_UNIX).
struct Sock(OwnedFd);

impl Sock {
    fn vsock_connect(cid: u32, port: u32) -> io::Result<Sock> {
        let fd = vsock_socket()?;
        let addr = vsock_addr(cid, port);
        // SAFETY: `addr` is a valid sockaddr_vm of the given length; `fd` is open.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Sock(fd))
    }

    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: `tv` is a valid timeval of the given size.
            let r = unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: plain syscall on an open fd.
        if unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn try_clone(&self) -> io::Result<Sock> {
        Ok(Sock(self.0.try_clone()?))
    }
}

impl Read for &Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let r = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for &Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
            // SAFETY: `buf` is valid for reads of its length.
            let r = unsafe {
                libc::send(
                    self.0.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all zeroes is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

/// A listening socket of either kind.
enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

impl Listener {
    fn vsock(port: u32) -> io::Result<Listener> {
        let fd = vsock_socket()?;
        let addr = vsock_addr(libc::VMADDR_CID_ANY, port);
        // SAFETY: valid sockaddr_vm of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        // SAFETY: plain syscall on an open fd.
        if r < 0 || unsafe { libc::listen(fd.as_raw_fd(), 128) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Listener::Vsock(fd))
    }

    fn raw_fd(&self) -> i32 {
        match self {
            Listener::Vsock(fd) => fd.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// Waits up to `ms` for a connection to accept (`Ok(false)`: none yet).
    fn ready(&self, ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(r > 0)
    }

    fn accept(&self) -> io::Result<Sock> {
        match self {
            Listener::Vsock(fd) => loop {
                // SAFETY: null address pointers are allowed; the result is checked.
                let r = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        libc::SOCK_CLOEXEC,
                    )
                };
                if r >= 0 {
                    // SAFETY: `r` is a new descriptor that nothing else owns.
                    return Ok(Sock(unsafe { OwnedFd::from_raw_fd(r) }));
                }
                let e = io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            },
            Listener::Unix(l) => l.accept().map(|(s, _)| Sock(OwnedFd::from(s))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data pattern

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pattern bytes at stream offsets `off..`.
fn fill(off: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = off + i as u64;
        *b = splitmix64(pos / 8).to_le_bytes()[(pos % 8) as usize];
    }
}

/// The first offset where `buf` differs from the pattern at `off`.
fn check(off: u64, buf: &[u8]) -> Option<u64> {
    let mut want = vec![0u8; buf.len()];
    fill(off, &mut want);
    buf.iter()
        .zip(&want)
        .position(|(a, b)| a != b)
        .map(|i| off + i as u64)
}

struct Hasher(Option<Sha256>);

impl Hasher {
    fn new(on: bool) -> Self {
        Hasher(on.then(Sha256::new))
    }
    fn update(&mut self, d: &[u8]) {
        if let Some(h) = &mut self.0 {
            h.update(d);
        }
    }
    fn finish(self) -> String {
        match self.0 {
            Some(h) => h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            None => "-".into(),
        }
    }
}

/// Sends `n` pattern bytes; returns the hash.
fn send_pattern(s: &Sock, n: u64, hash: bool) -> Result<String> {
    let mut h = Hasher::new(hash);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < n {
        let len = (n - off).min(CHUNK as u64) as usize;
        fill(off, &mut buf[..len]);
        h.update(&buf[..len]);
        (&mut &*s)
            .write_all(&buf[..len])
            .map_err(io_err(format!("send after {off} bytes")))?;
        off += len as u64;
    }
    Ok(h.finish())
}

/// Receives and verifies exactly `n` pattern bytes; returns the hash.
fn recv_pattern(s: &Sock, n: u64, hash: bool) -> Result<String> {
    let mut h = Hasher::new(hash);
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < n {
        let want = (n - off).min(CHUNK as u64) as usize;
        let got = (&mut &*s)
            .read(&mut buf[..want])
            .map_err(io_err(format!("receive after {off} bytes")))?;
        if got == 0 {
            return Err(ProbeError::Eof {
                what: "receive".into(),
                after: off,
            });
        }
        if let Some(offset) = check(off, &buf[..got]) {
            return Err(ProbeError::Mismatch { offset });
        }
        h.update(&buf[..got]);
        off += got as u64;
    }
    Ok(h.finish())
}

/// Expects the peer to end the stream with no more data.
fn expect_eof(s: &Sock) -> Result<()> {
    let mut b = [0u8; 1];
    match (&mut &*s).read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err(ProbeError::Protocol("data after the expected end".into())),
        Err(e) => Err(io_err("waiting for EOF")(e)),
    }
}

/// Reads one `\n`-terminated line byte by byte (nothing past it is consumed).
fn read_line(s: &Sock) -> Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = (&mut &*s).read(&mut b).map_err(io_err("read line"))?;
        if n == 0 {
            return Err(ProbeError::Eof {
                what: "read line".into(),
                after: line.len() as u64,
            });
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > MAX_LINE {
            return Err(ProbeError::Protocol("line too long".into()));
        }
    }
    String::from_utf8(line).map_err(|_| ProbeError::Protocol("line is not UTF-8".into()))
}

fn write_line(s: &Sock, line: &str) -> Result<()> {
    (&mut &*s)
        .write_all(format!("{line}\n").as_bytes())
        .map_err(io_err("write line"))
}

fn mib_s(n: u64, t: Duration) -> String {
    let secs = t.as_secs_f64().max(1e-6);
    format!("{:.1} MiB/s", n as f64 / (1024.0 * 1024.0) / secs)
}

// ---------------------------------------------------------------------------------------------
// Server

fn parse_hash_flag(w: Option<&str>) -> Result<bool> {
    match w {
        None | Some("hash") => Ok(true),
        Some("nohash") => Ok(false),
        Some(o) => Err(ProbeError::Protocol(format!("bad hash flag {o:?}"))),
    }
}

/// Serves one connection; returns a description of what was done.
fn serve(s: &Sock, quit: &AtomicBool) -> Result<String> {
    let req = read_line(s)?;
    let words: Vec<&str> = req.split_whitespace().collect();
    let t0 = Instant::now();
    match words.as_slice() {
        ["ECHO"] => {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = (&mut &*s)
                    .read(&mut buf)
                    .map_err(io_err(format!("echo receive after {total} bytes")))?;
                if n == 0 {
                    break;
                }
                (&mut &*s)
                    .write_all(&buf[..n])
                    .map_err(io_err(format!("echo send after {total} bytes")))?;
                total += n as u64;
            }
            s.shutdown_write().map_err(io_err("shutdown"))?;
            Ok(format!("echo {total} bytes"))
        }
        ["SEND", n, rest @ ..] => {
            let n: u64 = n
                .parse()
                .map_err(|_| ProbeError::Protocol(format!("bad size in {req:?}")))?;
            let sha = send_pattern(s, n, parse_hash_flag(rest.first().copied())?)?;
            s.shutdown_write().map_err(io_err("shutdown"))?;
            Ok(format!(
                "sent {n} bytes sha={sha} {}",
                mib_s(n, t0.elapsed())
            ))
        }
        ["RECV", n, rest @ ..] => {
            let n: u64 = n
                .parse()
                .map_err(|_| ProbeError::Protocol(format!("bad size in {req:?}")))?;
            let r = recv_pattern(s, n, parse_hash_flag(rest.first().copied())?);
            let sha = match r {
                Ok(sha) => sha,
                Err(e) => {
                    let _ = write_line(s, &format!("ERR {e}"));
                    return Err(e);
                }
            };
            let el = t0.elapsed();
            write_line(s, &format!("OK {n} {sha}"))?;
            expect_eof(s)?;
            Ok(format!("received {n} bytes sha={sha} {}", mib_s(n, el)))
        }
        ["HOLD"] => hold_until_closed(s, t0),
        ["QUIT"] => {
            quit.store(true, Ordering::SeqCst);
            write_line(s, "OK quit")?;
            Ok("quit".into())
        }
        _ => {
            let _ = write_line(s, "ERR unknown request");
            Err(ProbeError::Protocol(format!("unknown request {req:?}")))
        }
    }
}

/// Reads and discards until the peer ends the connection; says whether by EOF or reset.
fn hold_until_closed(mut s: impl Read, t0: Instant) -> Result<String> {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                return Ok(format!(
                    "hold ended by eof after {:.1}s",
                    t0.elapsed().as_secs_f64()
                ))
            }
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                return Ok(format!(
                    "hold ended by reset after {:.1}s",
                    t0.elapsed().as_secs_f64()
                ))
            }
            Err(e) => return Err(io_err("hold")(e)),
        }
    }
}

fn run_server(l: Listener, opts: &Opts, name: &str) -> Result<bool> {
    let quit = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    say(&format!("listening {name}"));
    let mut threads = Vec::new();
    let mut accepted = 0usize;
    loop {
        if quit.load(Ordering::SeqCst) || opts.count.is_some_and(|c| accepted >= c) {
            break;
        }
        match l.ready(200) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                say(&format!("FAIL poll: {e}"));
                failed.store(true, Ordering::SeqCst);
                break;
            }
        }
        let s = match l.accept() {
            Ok(s) => s,
            Err(e) => {
                say(&format!("FAIL accept: {e}"));
                failed.store(true, Ordering::SeqCst);
                break;
            }
        };
        accepted += 1;
        if let Err(e) = s.set_timeout(opts.timeout) {
            say(&format!("FAIL set timeout: {e}"));
        }
        let (quit, failed) = (quit.clone(), failed.clone());
        let id = accepted;
        threads.push(std::thread::spawn(move || match serve(&s, &quit) {
            Ok(what) => say(&format!("ok served #{id} {what}")),
            Err(e) => {
                say(&format!("FAIL served #{id}: {e}"));
                failed.store(true, Ordering::SeqCst);
            }
        }));
        // Forget finished threads so a long-running server does not accumulate them.
        threads.retain(|t| !t.is_finished());
    }
    for t in threads {
        if t.join().is_err() {
            failed.store(true, Ordering::SeqCst);
        }
    }
    Ok(!failed.load(Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Clone, Copy, Debug)]
enum Op {
    Send(u64),
    Recv(u64),
    Echo(u64),
    Hold,
    Refused,
    Quit,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Send(n) => write!(f, "send {n}"),
            Op::Recv(n) => write!(f, "recv {n}"),
            Op::Echo(n) => write!(f, "echo {n}"),
            Op::Hold => write!(f, "hold"),
            Op::Refused => write!(f, "refused"),
            Op::Quit => write!(f, "quit"),
        }
    }
}

fn parse_size(s: &str) -> Result<u64> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| ProbeError::Usage(format!("bad size {s:?}")))
}

fn parse_op(s: &str) -> Result<Op> {
    let (name, arg) = match s.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (s, None),
    };
    let size = || {
        arg.ok_or_else(|| ProbeError::Usage(format!("{name} needs :N")))
            .and_then(parse_size)
    };
    Ok(match name {
        "send" => Op::Send(size()?),
        "recv" => Op::Recv(size()?),
        "echo" => Op::Echo(size()?),
        "hold" => Op::Hold,
        "refused" => Op::Refused,
        "quit" => Op::Quit,
        _ => return Err(ProbeError::Usage(format!("unknown operation {s:?}"))),
    })
}

#[derive(Clone)]
enum Target {
    Vsock { cid: u32, port: u32 },
    Hybrid { uds: String, port: u32 },
}

impl Target {
    /// Connects; `Ok(None)` means the connection was refused.
    fn connect(&self, timeout: Duration) -> Result<Option<Sock>> {
        match self {
            Target::Vsock { cid, port } => match Sock::vsock_connect(*cid, *port) {
                Ok(s) => {
                    s.set_timeout(timeout).map_err(io_err("set timeout"))?;
                    Ok(Some(s))
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNREFUSED | libc::ECONNRESET)
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(io_err(format!("connect to {cid}:{port}"))(e)),
            },
            Target::Hybrid { uds, port } => {
                let u = UnixStream::connect(uds).map_err(io_err(format!("connect to {uds}")))?;
                let s = Sock(OwnedFd::from(u));
                s.set_timeout(timeout).map_err(io_err("set timeout"))?;
                write_line(&s, &format!("CONNECT {port}"))?;
                let line = match read_line(&s) {
                    Ok(l) => l,
                    Err(ProbeError::Eof { .. }) => return Ok(None),
                    Err(ProbeError::Io { source, .. })
                        if source.raw_os_error() == Some(libc::ECONNRESET) =>
                    {
                        return Ok(None)
                    }
                    Err(e) => return Err(e),
                };
                let ok = line
                    .strip_prefix("OK ")
                    .is_some_and(|n| n.trim().parse::<u32>().is_ok());
                if !ok {
                    return Err(ProbeError::Protocol(format!("handshake answer {line:?}")));
                }
                Ok(Some(s))
            }
        }
    }
}

fn run_op(t: &Target, op: Op, opts: &Opts) -> Result<String> {
    let s = match t.connect(opts.timeout)? {
        Some(s) => s,
        None if matches!(op, Op::Refused) => return Ok("refused as expected".into()),
        None => return Err(ProbeError::Protocol("connection refused".into())),
    };
    let hash = if opts.hash { "hash" } else { "nohash" };
    let t0 = Instant::now();
    match op {
        Op::Refused => Err(ProbeError::Protocol(
            "connection was accepted, expected a refusal".into(),
        )),
        Op::Send(n) => {
            write_line(&s, &format!("RECV {n} {hash}"))?;
            let ours = send_pattern(&s, n, opts.hash)?;
            let line = read_line(&s)?;
            let el = t0.elapsed();
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("OK"), Some(m), Some(theirs)) if m == n.to_string() => {
                    if theirs != ours {
                        return Err(ProbeError::HashMismatch {
                            ours,
                            theirs: theirs.into(),
                        });
                    }
                }
                _ => return Err(ProbeError::Protocol(format!("server answered {line:?}"))),
            }
            s.shutdown_write().map_err(io_err("shutdown"))?;
            expect_eof(&s)?;
            Ok(format!("send {n} bytes sha={ours} {}", mib_s(n, el)))
        }
        Op::Recv(n) => {
            write_line(&s, &format!("SEND {n} {hash}"))?;
            let sha = recv_pattern(&s, n, opts.hash)?;
            let el = t0.elapsed();
            expect_eof(&s)?;
            Ok(format!("recv {n} bytes sha={sha} {}", mib_s(n, el)))
        }
        Op::Echo(n) => {
            write_line(&s, "ECHO")?;
            let w = s.try_clone().map_err(io_err("dup"))?;
            let hash = opts.hash;
            let sender = std::thread::spawn(move || -> Result<()> {
                send_pattern(&w, n, hash)?;
                w.shutdown_write().map_err(io_err("shutdown"))
            });
            let got = recv_pattern(&s, n, opts.hash);
            let sent = sender
                .join()
                .map_err(|_| ProbeError::Protocol("sender thread panicked".into()))?;
            sent?;
            let sha = got?;
            expect_eof(&s)?;
            Ok(format!(
                "echo {n} bytes sha={sha} {}",
                mib_s(2 * n, t0.elapsed())
            ))
        }
        Op::Hold => {
            write_line(&s, "HOLD")?;
            hold_until_closed(&s, t0)
        }
        Op::Quit => {
            write_line(&s, "QUIT")?;
            let line = read_line(&s)?;
            if line != "OK quit" {
                return Err(ProbeError::Protocol(format!("server answered {line:?}")));
            }
            Ok("quit".into())
        }
    }
}

fn run_client(t: Target, ops: &[Op], opts: &Opts) -> bool {
    let mut all_ok = true;
    for &op in ops {
        let handles: Vec<_> = (0..opts.jobs)
            .map(|j| {
                let (t, opts) = (t.clone(), opts.clone());
                std::thread::spawn(move || (j, run_op(&t, op, &opts)))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok((j, Ok(what))) if opts.jobs > 1 => say(&format!("ok [{j}] {what}")),
                Ok((_, Ok(what))) => say(&format!("ok {what}")),
                Ok((j, Err(e))) => {
                    say(&format!("FAIL [{j}] {op}: {e}"));
                    all_ok = false;
                }
                Err(_) => {
                    say(&format!("FAIL {op}: thread panicked"));
                    all_ok = false;
                }
            }
        }
    }
    all_ok
}

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Clone)]
struct Opts {
    timeout: Duration,
    hash: bool,
    jobs: usize,
    count: Option<usize>,
}

fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T> {
    s.and_then(|v| v.parse().ok())
        .ok_or_else(|| ProbeError::Usage(format!("{what} needs a number")))
}

fn run(args: &[String]) -> Result<bool> {
    let mut opts = Opts {
        timeout: Duration::from_secs(120),
        hash: true,
        jobs: 1,
        count: None,
    };
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timeout" => {
                opts.timeout = Duration::from_secs(num::<u64>(it.next(), "--timeout")?.max(1))
            }
            "--no-hash" => opts.hash = false,
            "--jobs" => opts.jobs = num::<usize>(it.next(), "--jobs")?.max(1),
            "--count" => opts.count = Some(num(it.next(), "--count")?),
            "-h" | "--help" => {
                return Err(ProbeError::Usage(
                    "see the doc comment of hull-vsock-probe".into(),
                ))
            }
            _ => rest.push(a.clone()),
        }
    }
    let ops = |from: usize| -> Result<Vec<Op>> {
        let v: Vec<Op> = rest[from..]
            .iter()
            .map(|s| parse_op(s))
            .collect::<Result<_>>()?;
        if v.is_empty() {
            return Err(ProbeError::Usage("no operation given".into()));
        }
        Ok(v)
    };
    match rest.first().map(String::as_str) {
        Some("listen-vsock") if rest.len() == 2 => {
            let port = num(rest.get(1), "PORT")?;
            let l =
                Listener::vsock(port).map_err(io_err(format!("listen on vsock port {port}")))?;
            run_server(l, &opts, &format!("vsock port {port}"))
        }
        Some("listen-hybrid") if rest.len() == 3 => {
            let port: u32 = num(rest.get(2), "PORT")?;
            let path = format!("{}_{port}", rest[1]);
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).map_err(io_err(format!("listen on {path}")))?;
            run_server(Listener::Unix(l), &opts, &path)
        }
        Some("connect-vsock") if rest.len() >= 4 => {
            let t = Target::Vsock {
                cid: num(rest.get(1), "CID")?,
                port: num(rest.get(2), "PORT")?,
            };
            Ok(run_client(t, &ops(3)?, &opts))
        }
        Some("connect-hybrid") if rest.len() >= 4 => {
            let t = Target::Hybrid {
                uds: rest[1].clone(),
                port: num(rest.get(2), "PORT")?,
            };
            Ok(run_client(t, &ops(3)?, &opts))
        }
        _ => Err(ProbeError::Usage(
            "hull-vsock-probe [--timeout S] [--no-hash] [--jobs K] [--count C] \
             listen-vsock PORT | listen-hybrid UDS_PREFIX PORT | connect-vsock CID PORT OP... | \
             connect-hybrid UDS PORT OP...   (OP: send:N recv:N echo:N hold refused quit)"
                .into(),
        )),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e @ ProbeError::Usage(_)) => {
            eprintln!("hull-vsock-probe: {e}");
            2
        }
        Err(e) => {
            say(&format!("FAIL {e}"));
            1
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_position_dependent_and_checked() {
        let mut a = vec![0u8; 100];
        fill(0, &mut a);
        let mut b = vec![0u8; 50];
        fill(50, &mut b);
        assert_eq!(&a[50..], &b[..]);
        assert_eq!(check(50, &b), None);
        b[7] ^= 1;
        assert_eq!(check(50, &b), Some(57));
    }

    #[test]
    fn sizes_and_ops_parse() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("12").unwrap(), 12);
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert!(matches!(parse_op("send:1K").unwrap(), Op::Send(1024)));
        assert!(matches!(parse_op("hold").unwrap(), Op::Hold));
        assert!(parse_op("send").is_err());
        assert!(parse_op("nope").is_err());
    }

    #[test]
    fn hybrid_server_and_client_over_unix_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("v.sock").to_string_lossy().into_owned();
        let path = format!("{prefix}_77");
        let l = UnixListener::bind(&path).unwrap();
        let opts = Opts {
            timeout: Duration::from_secs(10),
            hash: true,
            jobs: 2,
            count: None,
        };
        let o = opts.clone();
        let server = std::thread::spawn(move || run_server(Listener::Unix(l), &o, "test").unwrap());
        // The client speaks to the listener directly (no CONNECT handshake): use the vsock
        // request protocol over a plain unix connection.
        let conn = |op: Op| {
            let u = UnixStream::connect(&path).unwrap();
            let s = Sock(OwnedFd::from(u));
            (s, op)
        };
        for op in [Op::Send(300_000), Op::Recv(300_000), Op::Echo(200_000)] {
            let (s, op) = conn(op);
            let hash = "hash";
            match op {
                Op::Send(n) => {
                    write_line(&s, &format!("RECV {n} {hash}")).unwrap();
                    let ours = send_pattern(&s, n, true).unwrap();
                    assert_eq!(read_line(&s).unwrap(), format!("OK {n} {ours}"));
                }
                Op::Recv(n) => {
                    write_line(&s, &format!("SEND {n} {hash}")).unwrap();
                    recv_pattern(&s, n, true).unwrap();
                    expect_eof(&s).unwrap();
                }
                Op::Echo(n) => {
                    write_line(&s, "ECHO").unwrap();
                    let w = s.try_clone().unwrap();
                    let t = std::thread::spawn(move || {
                        send_pattern(&w, n, false).unwrap();
                        w.shutdown_write().unwrap();
                    });
                    recv_pattern(&s, n, false).unwrap();
                    t.join().unwrap();
                    expect_eof(&s).unwrap();
                }
                _ => unreachable!(),
            }
        }
        let (s, _) = conn(Op::Quit);
        write_line(&s, "QUIT").unwrap();
        assert_eq!(read_line(&s).unwrap(), "OK quit");
        drop(s);
        assert!(server.join().unwrap());
    }
}
