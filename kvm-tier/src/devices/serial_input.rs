//! Console input: a thread copying bytes from a host file descriptor
//! (stdin, a pipe, a pty, a file) into the UART's receive FIFO, holding
//! back while the FIFO is full or the guest holds RTS down (its driver has
//! not opened the port: see [`super::serial::SerialDevice`]).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use seccompiler::BpfProgram;
use vmm_sys_util::eventfd::EventFd;

use super::serial::SerialDevice;
use crate::seccomp::{self, ThreadKind};

/// How long to wait before retrying when the guest has not drained the
/// FIFO or not raised RTS yet.
const FULL_FIFO_RETRY_MS: i32 = 10;

/// The input thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub struct SerialInputPump {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl SerialInputPump {
    /// Starts copying `input` into `serial`; the thread confines itself
    /// with `filter`.
    pub fn spawn(
        input: File,
        serial: Arc<Mutex<SerialDevice>>,
        filter: Option<BpfProgram>,
    ) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let s = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("hull-serial-in".into())
            .spawn(move || {
                if let Some(f) = &filter {
                    if let Err(e) = seccomp::install(ThreadKind::Device, f) {
                        tracing::error!(error = %e, "serial input not started");
                        return;
                    }
                }
                pump(input, &serial, &s);
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SerialInputPump {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("serial input thread panicked");
            }
        }
    }
}

fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd of the
    // given length; the return value is checked.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn enqueue(serial: &Mutex<SerialDevice>, bytes: &[u8]) -> usize {
    let mut guard = match serial.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.enqueue_input(bytes)
}

/// Copies until `stop` is signalled. After end of input only `stop` is
/// watched.
fn pump(mut input: File, serial: &Mutex<SerialDevice>, stop: &EventFd) {
    let mut pending: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut buf = [0u8; 256];
    loop {
        if !pending.is_empty() {
            let n = enqueue(serial, &pending);
            pending.drain(..n);
        }
        let want_input = !eof && pending.is_empty();
        let mut fds = [
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative fd is ignored by poll.
                fd: if want_input { input.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = if pending.is_empty() {
            -1
        } else {
            FULL_FIFO_RETRY_MS
        };
        if let Err(e) = poll(&mut fds, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "serial input poll failed; input stops");
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            match input.read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serial input read failed; input ends");
                    eof = true;
                }
            }
        }
    }
}
