//! `hull-agent`: the guest side of the VM tier, written so that everything except the PID-1
//! boot steps (in the binary) runs as an ordinary host process under test.
//!
//! * [`server`]: accepts connections and serves one session per connection.
//! * [`launcher`]: how a process is started ([`launcher::Launcher`], plain fork/exec).
//! * [`reaper`]: the only place that waits for children, orphans included.
//! * [`listener`]: where connections come from (unix socket in tests, AF_VSOCK in the guest).
//! * [`pty`], [`ps`]: terminals and the process list.

pub mod inside;
pub mod launcher;
pub mod listener;
pub mod ps;
pub mod pty;
pub mod reaper;
pub mod server;

pub use launcher::{ChildStdio, LaunchError, Launcher, PlainLauncher};
pub use listener::{Listener, VsockListener};
pub use server::{Server, ServerConfig, ShutdownHook, ShutdownReason};
