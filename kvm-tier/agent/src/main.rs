//! `hull-agent`: PID 1 of a hull micro-VM, or (for development) an ordinary process serving on
//! a unix socket or a vsock port.
//!
//! ```text
//! hull-agent                      as PID 1: boot steps from the kernel command line, serve vsock
//! hull-agent --unix PATH [--root DIR]   serve on a unix socket; exit when init ends
//! hull-agent --vsock PORT [--root DIR]  serve on AF_VSOCK; exit when init ends
//! ```

mod guest;
mod log;

use std::os::unix::net::UnixListener;
use std::process::ExitCode;

use hull_agent::inside::{self, InsideLauncher};
use hull_agent::{
    Listener, PlainLauncher, Server, ServerConfig, ShutdownHook, ShutdownReason, VsockListener,
};

/// In the guest: power off.
struct PowerOff;

impl ShutdownHook for PowerOff {
    fn shutdown(&self, reason: ShutdownReason) {
        tracing::info!(?reason, "powering off");
        guest::power_off()
    }
}

/// Outside a guest: exit with the main process's status.
struct Exit;

impl ShutdownHook for Exit {
    fn shutdown(&self, reason: ShutdownReason) {
        tracing::info!(?reason, "exiting");
        let code = match reason {
            ShutdownReason::MainExited(st) => st.shell_code(),
            ShutdownReason::Requested => 0,
        };
        std::process::exit(code)
    }
}

fn main() -> ExitCode {
    // Re-executed by the launcher to set a container process up (see `inside`).
    if std::env::args().nth(1).as_deref() == Some(inside::CONTAINER_INIT_ARG) {
        inside::container_init();
    }
    if std::process::id() == 1 {
        pid1()
    } else {
        match dev(std::env::args().skip(1).collect()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hull-agent: {e}");
                ExitCode::from(2)
            }
        }
    }
}

fn pid1() -> ExitCode {
    // Off the initramfs first (the container's root can then be entered with pivot_root);
    // this re-executes the agent, and returns in the new one.
    if let Err(e) = guest::leave_initramfs() {
        eprintln!("hull-agent: leaving the initramfs: {e}");
        guest::power_off();
    }
    // /proc is not mounted yet; mount first, then read the command line.
    let mounted = guest::mount_basics();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cfg = guest::BootConfig::from_cmdline(&cmdline);
    log::init(if cfg.debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    });
    let setup = mounted
        .and_then(|()| guest::load_modules(std::path::Path::new("/hull/modules")))
        .and_then(|()| guest::mount_root(&cfg));
    if let Err(e) = setup {
        tracing::error!("boot: {e}");
        guest::power_off();
    }
    let listener = match VsockListener::bind(cfg.port) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("vsock port {}: {e}", cfg.port);
            guest::power_off();
        }
    };
    tracing::info!(port = cfg.port, root = %cfg.root_dir, "serving");
    let server = Server::new(InsideLauncher::default(), PowerOff, ServerConfig::default());
    if let Err(e) = server.serve(&listener) {
        tracing::error!("serving: {e}");
    }
    guest::power_off()
}

fn dev(args: Vec<String>) -> Result<(), String> {
    let mut listener: Option<Box<dyn Listener>> = None;
    let mut root = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--unix" => {
                let p = value()?;
                let l = UnixListener::bind(&p).map_err(|e| format!("{p}: {e}"))?;
                listener = Some(Box::new(l));
            }
            "--vsock" => {
                let port = value()?.parse().map_err(|e| format!("--vsock: {e}"))?;
                listener = Some(Box::new(
                    VsockListener::bind(port).map_err(|e| format!("vsock {port}: {e}"))?,
                ));
            }
            "--root" => root = Some(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the source's doc comment)"
                ))
            }
        }
    }
    let listener = listener.ok_or("give --unix PATH or --vsock PORT")?;
    log::init(tracing::Level::INFO);
    let launcher = PlainLauncher { default_root: root };
    let server = Server::new(launcher, Exit, ServerConfig::default());
    server
        .serve(&*listener)
        .map_err(|e| format!("serving: {e}"))
}
