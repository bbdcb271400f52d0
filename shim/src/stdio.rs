//! A process's stdio as containerd hands it over: FIFO paths (or `file://` URIs) for
//! stdin, stdout and stderr.
//!
//! * Without a terminal, stdout and stderr are the FIFOs themselves, opened read-write so
//!   opening never blocks and writing never fails for want of a reader (as the runc shim
//!   keeps a reader open); stdin goes through a pipe fed by a small relay thread, so
//!   `CloseIO` can close the process's stdin.
//! * With a terminal, the pty master arrives on a console socket the shim listens on, and
//!   two relay threads copy stdin → master and master → stdout.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{io, Result, ShimError};

/// Relay threads do little: small stacks keep the shim's memory per container low.
const RELAY_STACK: usize = 64 * 1024;

/// The stdio containerd asked for.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What the shim keeps of a process's stdio once it runs.
#[derive(Default)]
pub struct ProcessIo {
    /// Where stdin is written to (a pipe or the pty master); dropping it closes stdin.
    stdin: Arc<Mutex<Option<File>>>,
    /// The pty master, for resizing.
    console: Option<File>,
    /// Fires when the output relay has copied everything (terminal processes).
    output_done: Option<Receiver<()>>,
}

/// The three descriptors the runtime gives the process; ours are closed once it has them.
pub struct ChildStdio {
    fds: [OwnedFd; 3],
}

impl ChildStdio {
    pub fn raw(&self) -> [RawFd; 3] {
        [
            self.fds[0].as_raw_fd(),
            self.fds[1].as_raw_fd(),
            self.fds[2].as_raw_fd(),
        ]
    }
}

fn dev_null(write: bool) -> Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(io("opening /dev/null"))
}

/// Open an output destination: a FIFO read-write, a `file://` URI or plain file for append.
fn open_output(path: &str) -> Result<File> {
    if path.is_empty() {
        return dev_null(true);
    }
    if path.starts_with("binary://") {
        return Err(ShimError::NotImplemented("binary:// log URIs"));
    }
    let file = path.strip_prefix("file://").unwrap_or(path);
    let is_fifo = std::fs::metadata(file)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    let mut o = OpenOptions::new();
    if is_fifo {
        o.read(true).write(true);
    } else {
        o.append(true).create(true);
    }
    o.open(file).map_err(io(format!("opening {file}")))
}

fn spawn_relay(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(RELAY_STACK)
        .spawn(f)
        .map(|_| ())
        .map_err(io(format!("starting the {name} thread")))
}

/// Copy the stdin FIFO into `sink` until EOF, then drop `sink` (the process sees EOF).
fn relay_stdin(path: String, sink: Arc<Mutex<Option<File>>>) -> Result<()> {
    spawn_relay("stdin", move || {
        // Blocks until containerd's client opens the FIFO for writing.
        if let Ok(mut fifo) = File::open(&path) {
            let mut buf = [0u8; 8192];
            loop {
                let n = match fifo.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut guard = match sink.lock() {
                    Ok(g) => g,
                    Err(_) => break,
                };
                let written = guard.as_mut().map(|w| w.write_all(&buf[..n]).is_ok());
                if written != Some(true) {
                    break;
                }
            }
        }
        if let Ok(mut g) = sink.lock() {
            g.take();
        }
    })
}

impl ProcessIo {
    /// Stdio of a process without a terminal.
    pub fn pipes(paths: &StdioPaths) -> Result<(ChildStdio, ProcessIo)> {
        let pio = ProcessIo::default();
        let stdin: OwnedFd = if paths.stdin.is_empty() {
            dev_null(false)?.into()
        } else {
            let (r, w) = nix::unistd::pipe().map_err(|e| ShimError::Sys {
                what: "stdin pipe".into(),
                source: e,
            })?;
            *pio.stdin.lock().map_err(|_| poisoned())? = Some(File::from(w));
            relay_stdin(paths.stdin.clone(), pio.stdin.clone())?;
            r
        };
        let stdout: OwnedFd = open_output(&paths.stdout)?.into();
        let stderr: OwnedFd = if paths.stderr.is_empty() || paths.stderr == paths.stdout {
            stdout.try_clone().map_err(io("dup stdout"))?
        } else {
            open_output(&paths.stderr)?.into()
        };
        Ok((
            ChildStdio {
                fds: [stdin, stdout, stderr],
            },
            pio,
        ))
    }

    /// The stdio of a terminal process before it has its pty (it must not get ours).
    pub fn null_stdio() -> Result<ChildStdio> {
        Ok(ChildStdio {
            fds: [
                dev_null(false)?.into(),
                dev_null(true)?.into(),
                dev_null(true)?.into(),
            ],
        })
    }

    /// Relay a terminal process's pty `master` to and from its FIFOs.
    pub fn console(master: OwnedFd, paths: &StdioPaths) -> Result<ProcessIo> {
        let master = File::from(master);
        let mut out = open_output(&paths.stdout)?;
        let mut reader = master.try_clone().map_err(io("dup pty master"))?;
        let (tx, rx) = mpsc::channel();
        spawn_relay("console-out", move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every slave descriptor is closed.
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        })?;
        let pio = ProcessIo {
            stdin: Arc::new(Mutex::new(None)),
            console: Some(master.try_clone().map_err(io("dup pty master"))?),
            output_done: Some(rx),
        };
        if !paths.stdin.is_empty() {
            *pio.stdin.lock().map_err(|_| poisoned())? = Some(master);
            relay_stdin(paths.stdin.clone(), pio.stdin.clone())?;
        }
        Ok(pio)
    }

    /// `CloseIO`: the process sees EOF on stdin.
    pub fn close_stdin(&self) {
        if let Ok(mut g) = self.stdin.lock() {
            g.take();
        }
    }

    /// `ResizePty`.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = &self.console else {
            return Err(ShimError::Precondition(
                "the process has no terminal".into(),
            ));
        };
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        set_window_size(master.as_fd(), &ws).map_err(io("TIOCSWINSZ"))
    }

    /// The receiver that fires once all output is copied (terminal processes).
    pub fn take_output_done(&mut self) -> Option<Receiver<()>> {
        self.output_done.take()
    }
}

fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, ws: &libc::winsize) -> std::io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `winsize` from the valid pointer; `fd` is open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const libc::winsize) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn poisoned() -> ShimError {
    ShimError::Precondition("stdio state lock poisoned".into())
}

/// A console socket in a fresh private directory (short path: sun_path is 108 bytes),
/// removed on drop.
pub struct ConsoleSocket {
    dir: PathBuf,
    listener: UnixListener,
    pub path: PathBuf,
}

static CONSOLE_SEQ: AtomicUsize = AtomicUsize::new(0);

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let n = CONSOLE_SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("hull-shim-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io(format!("creating {dir:?}")))?;
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).map_err(io(format!("binding {path:?}")))?;
        listener
            .set_nonblocking(true)
            .map_err(io("console socket"))?;
        Ok(ConsoleSocket {
            dir,
            listener,
            path,
        })
    }

    /// The pty master the runtime sent (it connects and sends before create/exec return).
    pub fn receive(&self) -> Result<OwnedFd> {
        let end = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(io("receiving the pty master")(e)),
            }
        };
        stream
            .set_nonblocking(false)
            .map_err(io("console connection"))?;
        hull_inside::terminal::recv_fd(stream.as_fd())
            .map_err(|e| hull_runtime::container::Error::Terminal(e).into())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Read a pid file the runtime wrote (the number only).
pub fn read_pid_file(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).map_err(io(format!("reading {path:?}")))?;
    text.trim()
        .parse()
        .map_err(|_| ShimError::InvalidArgument(format!("{path:?} holds no pid: {text:?}")))
}
