//! The host side of the protocol, used by the VMM process (`hull create/start`) and `hull exec`.
//!
//! One connection carries one request: a session ([`Agent::start`]), a pid list
//! ([`Agent::ps`]) or a power-off ([`Agent::shutdown`]). Everything the agent sends passes the
//! frame decoder's limits; the hybrid-vsock and hello handshakes run under a timeout.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::{self, FrameReader, ReadError, WriteError, STREAM_STDIN};
use crate::msg::{ExitStatus, GuestMsg, Hello, HostMsg, ProcessSpec, Role, WindowSize};
use crate::PROTOCOL_VERSION;

/// Default limit for connect and hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("hybrid vsock handshake for port {port}: {reason}")]
    Hybrid { port: u32, reason: String },
    #[error("agent speaks protocol {theirs}, we speak {ours}")]
    Version { ours: String, theirs: String },
    #[error("agent error: {0}")]
    Agent(String),
    #[error("unexpected message from the agent during {during}: {msg}")]
    Unexpected { during: &'static str, msg: String },
    #[error("agent closed the connection during {0}")]
    Closed(&'static str),
    #[error("{during}: {source}")]
    Read {
        during: &'static str,
        source: ReadError,
    },
    #[error("{during}: {source}")]
    Write {
        during: &'static str,
        source: WriteError,
    },
    #[error("socket setup: {0}")]
    Socket(#[source] io::Error),
}

type Writer = Arc<Mutex<UnixStream>>;

/// The read side with an optional deadline for the whole exchange, not per read: an agent that
/// trickles bytes (or sends endless messages) cannot stretch a handshake past its timeout.
struct Conn {
    stream: UnixStream,
    deadline: Option<Instant>,
}

impl Conn {
    fn set_deadline(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.deadline = timeout.map(|t| Instant::now() + t);
        if timeout.is_none() {
            self.stream
                .set_read_timeout(None)
                .map_err(ClientError::Socket)?;
        }
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        (&self.stream).read(buf)
    }
}

type Reader = FrameReader<Conn, GuestMsg>;

fn send(w: &Writer, msg: &HostMsg, during: &'static str) -> Result<(), ClientError> {
    // A poisoned lock only means another sender panicked mid-write; the stream is still usable
    // or will fail with an I/O error of its own.
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    frame::write_msg(&mut *s, msg).map_err(|source| ClientError::Write { during, source })
}

/// Connect to the VMM's hybrid-vsock unix socket and ask for guest `port`.
pub fn connect_hybrid(uds: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ClientError> {
    let s = UnixStream::connect(uds).map_err(|source| ClientError::Connect {
        path: uds.display().to_string(),
        source,
    })?;
    let fail = |reason: String| ClientError::Hybrid { port, reason };
    s.set_read_timeout(Some(timeout))
        .map_err(ClientError::Socket)?;
    s.set_write_timeout(Some(timeout))
        .map_err(ClientError::Socket)?;
    (&s).write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    // Byte by byte, so nothing after the newline (the agent's frames) is consumed here.
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match (&s).read(&mut b) {
            Ok(0) => return Err(fail("closed before answering (nothing listening?)".into())),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= 32 => return Err(fail("answer line too long".into())),
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e.to_string())),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let ok = text
        .strip_prefix("OK ")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    if !ok {
        return Err(fail(format!("unexpected answer {text:?}")));
    }
    s.set_read_timeout(None).map_err(ClientError::Socket)?;
    s.set_write_timeout(None).map_err(ClientError::Socket)?;
    Ok(s)
}

/// A connection after a successful hello.
pub struct Agent {
    reader: Reader,
    writer: Writer,
    peer: Hello,
    timeout: Duration,
}

impl Agent {
    /// Exchange hellos over an already connected stream; fails after `timeout` of silence.
    pub fn hello(stream: UnixStream, timeout: Duration) -> Result<Agent, ClientError> {
        stream
            .set_write_timeout(Some(timeout))
            .map_err(ClientError::Socket)?;
        let writer = Arc::new(Mutex::new(stream.try_clone().map_err(ClientError::Socket)?));
        let mut reader = FrameReader::new(Conn {
            stream,
            deadline: None,
        });
        reader.get_mut().set_deadline(Some(timeout))?;
        let ours = Hello {
            version: PROTOCOL_VERSION,
            software: format!("hull {}", env!("CARGO_PKG_VERSION")),
        };
        send(&writer, &HostMsg::Hello(ours), "hello")?;
        let peer = match next(&mut reader, "hello")? {
            GuestMsg::Hello(h) => h,
            other => return Err(unexpected("hello", other)),
        };
        if peer.version.major != PROTOCOL_VERSION.major {
            return Err(ClientError::Version {
                ours: PROTOCOL_VERSION.to_string(),
                theirs: peer.version.to_string(),
            });
        }
        Ok(Agent {
            reader,
            writer,
            peer,
            timeout,
        })
    }

    /// What the agent said about itself.
    pub fn peer(&self) -> &Hello {
        &self.peer
    }

    /// Start a process; returns once the agent reports it running (or within the timeout).
    pub fn start(mut self, role: Role, process: &ProcessSpec) -> Result<Session, ClientError> {
        let msg = HostMsg::Start {
            role,
            process: Box::new(process.clone()),
        };
        self.reader.get_mut().set_deadline(Some(self.timeout))?;
        send(&self.writer, &msg, "start")?;
        let pid = match next(&mut self.reader, "start")? {
            GuestMsg::Started { pid } => pid,
            other => return Err(unexpected("start", other)),
        };
        // From here on silence is normal: the process may run for days without output.
        self.reader.get_mut().set_deadline(None)?;
        let s = &self.reader.get_ref().stream;
        s.set_write_timeout(None).map_err(ClientError::Socket)?;
        Ok(Session {
            reader: self.reader,
            writer: self.writer,
            pid,
            terminal: process.terminal,
        })
    }

    /// The pids of all workload processes in the guest.
    pub fn ps(mut self) -> Result<Vec<u32>, ClientError> {
        self.reader.get_mut().set_deadline(Some(self.timeout))?;
        send(&self.writer, &HostMsg::Ps, "ps")?;
        match next(&mut self.reader, "ps")? {
            GuestMsg::Pids { pids } => Ok(pids),
            other => Err(unexpected("ps", other)),
        }
    }

    /// Ask the guest to power off; returns when the agent acknowledged.
    pub fn shutdown(mut self) -> Result<(), ClientError> {
        self.reader.get_mut().set_deadline(Some(self.timeout))?;
        send(&self.writer, &HostMsg::Shutdown, "shutdown")?;
        match next(&mut self.reader, "shutdown")? {
            GuestMsg::ShuttingDown => Ok(()),
            other => Err(unexpected("shutdown", other)),
        }
    }

    /// The handshake timeout this connection was made with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The next message; any `Error` from the agent ends the exchange.
fn next(reader: &mut Reader, during: &'static str) -> Result<GuestMsg, ClientError> {
    match reader.read_msg() {
        Ok(Some(GuestMsg::Error { message, .. })) => Err(ClientError::Agent(message)),
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(ClientError::Closed(during)),
        Err(source) => Err(ClientError::Read { during, source }),
    }
}

fn unexpected(during: &'static str, msg: GuestMsg) -> ClientError {
    let msg = match msg {
        GuestMsg::Stdout(d) | GuestMsg::Stderr(d) => format!("{} bytes of output", d.len()),
        m => format!("{m:?}"),
    };
    ClientError::Unexpected { during, msg }
}

/// A running process in the guest.
pub struct Session {
    reader: Reader,
    writer: Writer,
    pid: u32,
    terminal: bool,
}

/// Sends signals, resizes and stdin EOF to a session; cheap to clone, usable from any thread
/// (e.g. the VMM process's signal-forwarding thread).
#[derive(Clone)]
pub struct Control {
    writer: Writer,
}

impl Control {
    pub fn signal(&self, signal: i32) -> Result<(), ClientError> {
        send(&self.writer, &HostMsg::Signal { signal }, "signal")
    }

    pub fn resize(&self, size: WindowSize) -> Result<(), ClientError> {
        send(&self.writer, &HostMsg::Resize(size), "resize")
    }

    pub fn close_stdin(&self) -> Result<(), ClientError> {
        send(&self.writer, &HostMsg::CloseStdin, "close stdin")
    }
}

impl Session {
    /// The process's pid in the guest.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    pub fn control(&self) -> Control {
        Control {
            writer: self.writer.clone(),
        }
    }

    /// Relay stdio until the process exits; returns its status.
    ///
    /// `stdin` is copied on a thread of its own (EOF → the process sees EOF; `None` → EOF at
    /// once). That thread is not joined: a stdin that never ends must not keep us from
    /// returning the exit status. Output that cannot be written (e.g. a closed pipe) is dropped
    /// so the process is never blocked by it.
    pub fn run(
        mut self,
        stdin: Option<Box<dyn Read + Send>>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<ExitStatus, ClientError> {
        match stdin {
            Some(input) => {
                let w = self.writer.clone();
                thread::Builder::new()
                    .name(format!("stdin-{}", self.pid))
                    .spawn(move || pump_stdin(input, &w))
                    .map_err(ClientError::Socket)?;
            }
            // A process that already exited has closed the connection's write side; its exit
            // status is still there to read.
            None => {
                let _ = self.control().close_stdin();
            }
        }
        let (mut out_ok, mut err_ok) = (true, true);
        loop {
            let msg = match self.reader.read_msg() {
                Ok(Some(GuestMsg::Error {
                    message,
                    fatal: true,
                })) => return Err(ClientError::Agent(message)),
                // Non-fatal: the agent refused one of our requests (e.g. a signal after the
                // process exited); the session goes on.
                Ok(Some(GuestMsg::Error { fatal: false, .. })) => continue,
                Ok(Some(m)) => m,
                Ok(None) => return Err(ClientError::Closed("session")),
                Err(source) => {
                    return Err(ClientError::Read {
                        during: "session",
                        source,
                    })
                }
            };
            match msg {
                GuestMsg::Stdout(d) => out_ok = out_ok && stdout.write_all(&d).is_ok(),
                GuestMsg::Stderr(d) => err_ok = err_ok && stderr.write_all(&d).is_ok(),
                GuestMsg::Exit { status } => {
                    let _ = stdout.flush();
                    let _ = stderr.flush();
                    return Ok(status);
                }
                other => return Err(unexpected("session", other)),
            }
        }
    }
}

fn pump_stdin(mut input: Box<dyn Read + Send>, w: &Writer) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut frame = Vec::with_capacity(buf.len() + 16);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        frame.clear();
        if frame::encode_data(STREAM_STDIN, &buf[..n], &mut frame).is_err() {
            break;
        }
        let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
        if s.write_all(&frame).is_err() {
            return;
        }
    }
    let _ = send(w, &HostMsg::CloseStdin, "close stdin");
}

#[cfg(test)]
mod tests;
