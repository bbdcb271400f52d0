//! The shim's `tracing` output goes to the `log` FIFO containerd reads in the bundle (it
//! shows up in containerd's log). Nothing is written to stdout or stderr: containerd reads
//! the `start` action's combined output as the shim's address.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Mutex;

pub fn init() {
    let is_fifo = std::fs::metadata("log")
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        return;
    }
    // Non-blocking open fails (ENXIO) instead of hanging when nobody reads the FIFO.
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
    else {
        return;
    };
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking));
    let debug = std::env::args().any(|a| a == "-debug" || a == "--debug");
    let level = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_max_level(level)
        .with_ansi(false)
        .try_init();
}
