//! The agent's server: one thread per connection, one request per connection (a session, a
//! pid list or a power-off). A session's process is started through the [`Launcher`], its
//! stdio relayed by a thread per direction, and its exit status sent once the process has been
//! reaped and its output drained (or a grace period passed: a background child may hold the
//! output open for ever).
//!
//! A protocol violation ends only the connection it happened on (with a fatal `Error` first);
//! a well-formed request in the wrong place gets a non-fatal `Error` and the session goes on.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hull_agent_protocol::frame::{
    self, FrameReader, ReadError, WriteError, STREAM_STDERR, STREAM_STDOUT,
};
use hull_agent_protocol::{
    ExitStatus, GuestMsg, Hello, HostMsg, ProcessSpec, Role, PROTOCOL_VERSION,
};

use crate::launcher::{ChildStdio, LaunchError, Launcher};
use crate::listener::Listener;
use crate::pty;
use crate::reaper::Reaper;

/// Why the guest should power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The container's main process ended (its status was already sent to the host).
    MainExited(ExitStatus),
    /// The host asked.
    Requested,
}

/// What happens on shutdown: power off in the guest, record it in tests.
pub trait ShutdownHook: Send + Sync {
    fn shutdown(&self, reason: ShutdownReason);
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a new connection may take to send its hello and request.
    pub request_timeout: Duration,
    /// How long to wait for output to reach EOF after the process exited.
    pub stdio_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_timeout: Duration::from_secs(30),
            stdio_grace: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("writing to the host: {0}")]
    Write(#[from] WriteError),
    #[error("the host closed the connection before sending a request")]
    Closed,
    #[error("protocol version {theirs} is not supported; this agent speaks {ours}")]
    Version { theirs: String, ours: String },
    #[error("expected a hello first, got {0}")]
    NoHello(&'static str),
    #[error("{0} before any process was started on this connection")]
    NotStarted(&'static str),
    #[error("the container's init process was already started")]
    InitTaken,
    #[error("cannot start the process: {0}")]
    Launch(#[from] LaunchError),
    #[error("setting up the process's stdio: {0}")]
    Stdio(#[source] io::Error),
    #[error("socket: {0}")]
    Socket(#[source] io::Error),
}

fn kind(m: &HostMsg) -> &'static str {
    match m {
        HostMsg::Hello(_) => "hello",
        HostMsg::Start { .. } => "start",
        HostMsg::Ps => "ps",
        HostMsg::Signal { .. } => "signal",
        HostMsg::Resize(_) => "resize",
        HostMsg::CloseStdin => "close_stdin",
        HostMsg::Shutdown => "shutdown",
        HostMsg::Stdin(_) => "stdin data",
    }
}

type Writer = Arc<Mutex<UnixStream>>;

fn send(w: &Writer, msg: &GuestMsg) -> Result<(), WriteError> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    frame::write_msg(&mut *s, msg)
}

fn complain(w: &Writer, message: impl Into<String>) -> Result<(), WriteError> {
    send(
        w,
        &GuestMsg::Error {
            message: message.into(),
            fatal: false,
        },
    )
}

pub struct Server {
    launcher: Box<dyn Launcher>,
    hook: Arc<dyn ShutdownHook>,
    config: ServerConfig,
    init_started: AtomicBool,
    reaper: &'static Reaper,
}

impl Server {
    pub fn new(
        launcher: impl Launcher + 'static,
        hook: impl ShutdownHook + 'static,
        config: ServerConfig,
    ) -> Arc<Server> {
        Arc::new(Server {
            launcher: Box::new(launcher),
            hook: Arc::new(hook),
            config,
            init_started: AtomicBool::new(false),
            reaper: Reaper::global(),
        })
    }

    /// Accept and serve connections until the listener fails for good.
    pub fn serve(self: &Arc<Self>, listener: &dyn Listener) -> io::Result<()> {
        loop {
            let stream = match listener.accept() {
                Ok(s) => s,
                Err(e) if transient(&e) => {
                    tracing::warn!("accept: {e}");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let me = Arc::clone(self);
            if let Err(e) = thread::Builder::new()
                .name("conn".into())
                .spawn(move || me.serve_connection(stream))
            {
                tracing::warn!("cannot start a connection thread: {e}");
            }
        }
    }

    /// Serve one connection to its end.
    pub fn serve_connection(&self, stream: UnixStream) {
        let writer = match stream.try_clone() {
            Ok(w) => Arc::new(Mutex::new(w)),
            Err(e) => return tracing::warn!("connection: {e}"),
        };
        let mut reader = FrameReader::new(stream);
        if let Err(e) = self.converse(&mut reader, &writer) {
            tracing::info!("connection ends: {e}");
            let _ = send(
                &writer,
                &GuestMsg::Error {
                    message: e.to_string(),
                    fatal: true,
                },
            );
            let _ = reader.get_ref().shutdown(Shutdown::Both);
        }
    }

    fn converse(
        &self,
        reader: &mut FrameReader<UnixStream, HostMsg>,
        writer: &Writer,
    ) -> Result<(), ConnError> {
        let sock = reader.get_ref();
        sock.set_read_timeout(Some(self.config.request_timeout))
            .map_err(ConnError::Socket)?;
        match reader.read_msg()?.ok_or(ConnError::Closed)? {
            HostMsg::Hello(h) if h.version.major == PROTOCOL_VERSION.major => {}
            HostMsg::Hello(h) => {
                return Err(ConnError::Version {
                    theirs: h.version.to_string(),
                    ours: PROTOCOL_VERSION.to_string(),
                })
            }
            other => return Err(ConnError::NoHello(kind(&other))),
        }
        let ours = Hello {
            version: PROTOCOL_VERSION,
            software: format!("hull-agent {}", env!("CARGO_PKG_VERSION")),
        };
        send(writer, &GuestMsg::Hello(ours))?;
        let request = reader.read_msg()?.ok_or(ConnError::Closed)?;
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(ConnError::Socket)?;
        match request {
            HostMsg::Start { role, process } => self.session(role, &process, reader, writer),
            HostMsg::Ps => {
                let pids = crate::ps::descendants(std::process::id());
                send(writer, &GuestMsg::Pids { pids })?;
                Ok(())
            }
            HostMsg::Shutdown => {
                send(writer, &GuestMsg::ShuttingDown)?;
                self.hook.shutdown(ShutdownReason::Requested);
                Ok(())
            }
            other => Err(ConnError::NotStarted(kind(&other))),
        }
    }

    fn session(
        &self,
        role: Role,
        spec: &ProcessSpec,
        reader: &mut FrameReader<UnixStream, HostMsg>,
        writer: &Writer,
    ) -> Result<(), ConnError> {
        if role == Role::Init && self.init_started.swap(true, Ordering::SeqCst) {
            return Err(ConnError::InitTaken);
        }
        let started = self.start(spec);
        let (pid, exit_rx, io) = match started {
            Ok(s) => s,
            Err(e) => {
                if role == Role::Init {
                    self.init_started.store(false, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        send(writer, &GuestMsg::Started { pid: pid as u32 })?;
        let program = spec.args.first().map(String::as_str).unwrap_or_default();
        tracing::info!(pid, ?role, program, "started");

        let (done_tx, done_rx) = mpsc::channel();
        let outputs = io.outputs.len();
        for (stream, file) in io.outputs {
            let (w, done) = (writer.clone(), done_tx.clone());
            spawn("stdout", move || pump_output(stream, file, &w, &done));
        }
        let (stdin_tx, stdin_rx) = mpsc::sync_channel::<Vec<u8>>(16);
        let terminal = spec.terminal;
        spawn("stdin", move || pump_stdin(io.stdin, stdin_rx, terminal));

        let finished = Arc::new(AtomicBool::new(false));
        let (w, done, grace) = (writer.clone(), finished.clone(), self.config.stdio_grace);
        let hook = (role == Role::Init).then(|| self.hook.clone());
        spawn("exit", move || {
            let Ok(status) = exit_rx.recv() else { return };
            let deadline = Instant::now() + grace;
            for _ in 0..outputs {
                let left = deadline.saturating_duration_since(Instant::now());
                if done_rx.recv_timeout(left).is_err() {
                    break;
                }
            }
            done.store(true, Ordering::SeqCst);
            tracing::info!(pid, ?status, "exited");
            let _ = send(&w, &GuestMsg::Exit { status });
            let _ = w
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .shutdown(Shutdown::Both);
            // Only after the exit status went out: the hook may power the guest off.
            if let Some(hook) = hook {
                hook.shutdown(ShutdownReason::MainExited(status));
            }
        });
        self.relay_host(pid, io.master.as_ref(), reader, writer, stdin_tx, &finished)
    }

    fn start(&self, spec: &ProcessSpec) -> Result<(i32, Receiver<ExitStatus>, HostIo), ConnError> {
        let (child, host) = make_stdio(spec).map_err(ConnError::Stdio)?;
        let (pid, rx) = self.reaper.spawn(|| self.launcher.launch(spec, child))?;
        Ok((pid, rx, host))
    }

    /// Handle what the host sends during a session until it closes or the session ends.
    fn relay_host(
        &self,
        pid: i32,
        master: Option<&OwnedFd>,
        reader: &mut FrameReader<UnixStream, HostMsg>,
        writer: &Writer,
        stdin_tx: SyncSender<Vec<u8>>,
        finished: &AtomicBool,
    ) -> Result<(), ConnError> {
        let mut stdin_tx = Some(stdin_tx);
        loop {
            let msg = match reader.read_msg() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                // After the exit status the waiter shut the socket down; that is no error.
                Err(_) if finished.load(Ordering::SeqCst) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match msg {
                HostMsg::Stdin(data) => match &stdin_tx {
                    // A send error means the process stopped reading stdin: drop the data.
                    Some(tx) => {
                        let _ = tx.send(data);
                    }
                    None => complain(writer, "stdin data after close_stdin")?,
                },
                HostMsg::CloseStdin => stdin_tx = None,
                HostMsg::Signal { signal } => match self.reaper.signal(pid, signal) {
                    Ok(true) => {}
                    Ok(false) => {
                        complain(writer, format!("signal {signal}: the process has exited"))?
                    }
                    Err(e) => complain(writer, format!("signal {signal}: {e}"))?,
                },
                HostMsg::Resize(size) => match master {
                    Some(m) => {
                        if let Err(e) = pty::set_window_size(m.as_fd(), size) {
                            complain(writer, format!("resize: {e}"))?;
                        }
                    }
                    None => complain(writer, "resize: not a terminal session")?,
                },
                HostMsg::Start { .. } => complain(
                    writer,
                    "a process already runs on this connection; open a new connection per process",
                )?,
                m @ (HostMsg::Hello(_) | HostMsg::Ps | HostMsg::Shutdown) => complain(
                    writer,
                    format!(
                        "{} is only valid as the first request of a connection",
                        kind(&m)
                    ),
                )?,
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EINTR
                | libc::ECONNABORTED
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EPROTO
        )
    )
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    // Failing to start a relay thread leaves that stream unrelayed; the session still ends.
    if let Err(e) = thread::Builder::new().name(name.into()).spawn(f) {
        tracing::warn!("cannot start {name} thread: {e}");
    }
}

/// The agent's ends of a session's stdio.
struct HostIo {
    /// Output streams and where they come from.
    outputs: Vec<(u8, File)>,
    stdin: File,
    /// The pty master, for resizes (terminal sessions only).
    master: Option<OwnedFd>,
}

fn make_stdio(spec: &ProcessSpec) -> io::Result<(ChildStdio, HostIo)> {
    if spec.terminal {
        let p = pty::open_pty()?;
        if let Some(size) = spec.console_size {
            pty::set_window_size(p.master.as_fd(), size)?;
        }
        let child = ChildStdio {
            stdin: p.slave.try_clone()?,
            stdout: p.slave.try_clone()?,
            stderr: p.slave,
            terminal: true,
        };
        let host = HostIo {
            outputs: vec![(STREAM_STDOUT, File::from(p.master.try_clone()?))],
            stdin: File::from(p.master.try_clone()?),
            master: Some(p.master),
        };
        return Ok((child, host));
    }
    let (in_r, in_w) = pty::pipe()?;
    let (out_r, out_w) = pty::pipe()?;
    let (err_r, err_w) = pty::pipe()?;
    let child = ChildStdio {
        stdin: in_r,
        stdout: out_w,
        stderr: err_w,
        terminal: false,
    };
    let host = HostIo {
        outputs: vec![
            (STREAM_STDOUT, File::from(out_r)),
            (STREAM_STDERR, File::from(err_r)),
        ],
        stdin: File::from(in_w),
        master: None,
    };
    Ok((child, host))
}

/// Copy one output stream into data frames until EOF (or EIO: a pty whose slave is closed).
fn pump_output(stream: u8, mut src: File, w: &Writer, done: &Sender<()>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut frame = Vec::with_capacity(buf.len() + 16);
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        frame.clear();
        if frame::encode_data(stream, &buf[..n], &mut frame).is_err() {
            break;
        }
        let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
        if s.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = done.send(());
}

/// Feed stdin data to the process; when the host closes stdin, close the pipe (or, on a
/// terminal, type the EOF character: the master must stay open for the output).
fn pump_stdin(mut dst: File, rx: Receiver<Vec<u8>>, terminal: bool) {
    for data in rx.iter() {
        if dst.write_all(&data).is_err() {
            return;
        }
    }
    if terminal {
        let _ = dst.write_all(&[0x04]);
    }
}
