//! Running one VM to its end, as `hull-vmm` does and as a VM container's
//! init does in-process: start, confine the waiting thread, wait (with an
//! optional timeout), and map the end to an exit status.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::config::{SerialOutput, VirtiofsOptions, VmConfig, VsockConfig};
use crate::exit::{ExitReason, StopHandle};
use crate::seccomp::{SeccompError, SeccompLevel, ThreadKind};
use crate::vm::{Vm, VmError};

/// Exit status: the configuration was refused or the VM could not be set up.
pub const STATUS_SETUP: u8 = 2;
/// Exit status: the timeout passed.
pub const STATUS_TIMEOUT: u8 = 124;

/// A host directory shared with the guest over virtio-fs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsShare {
    /// The host directory (served by virtiofsd, found as
    /// [`VirtiofsOptions::find_binary`] finds it).
    pub dir: PathBuf,
    /// The tag the guest mounts.
    pub tag: String,
}

/// What a VM container needs to run its VM.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Kernel image: a bzImage or an ELF vmlinux.
    pub kernel: PathBuf,
    /// Initramfs (cpio archive).
    pub initramfs: Option<PathBuf>,
    /// Words added after [`crate::DEFAULT_CMDLINE`].
    pub cmdline_append: Option<String>,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// The virtio-fs share, if any.
    pub share: Option<FsShare>,
    /// Host unix socket of a hybrid vsock device (guest CID 3), if any.
    pub vsock_socket: Option<PathBuf>,
    /// Where the serial console goes.
    pub serial: SerialOutput,
    /// Stop the VM after this long ([`LaunchExit::TimedOut`]).
    pub timeout: Option<Duration>,
    /// Seccomp filters for the VMM's threads, the caller's included.
    pub seccomp: SeccompLevel,
}

impl LaunchOptions {
    /// 128 MiB, one vCPU, no share, no vsock, console discarded, no
    /// timeout, seccomp enforced.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initramfs: None,
            cmdline_append: None,
            mem_mib: 128,
            vcpus: 1,
            share: None,
            vsock_socket: None,
            serial: SerialOutput::Sink,
            timeout: None,
            seccomp: SeccompLevel::Enforce,
        }
    }

    /// The VM configuration these options describe.
    pub fn vm_config(&self) -> VmConfig {
        let mut cfg = VmConfig::new(&self.kernel);
        cfg.initramfs = self.initramfs.clone();
        cfg.cmdline = append_cmdline(&cfg.cmdline, self.cmdline_append.as_deref());
        cfg.mem_mib = self.mem_mib;
        cfg.vcpus = self.vcpus;
        if let Some(share) = &self.share {
            cfg.shared_dir = Some(share.dir.clone());
            cfg.virtiofs = VirtiofsOptions {
                tag: share.tag.clone(),
                ..VirtiofsOptions::default()
            };
        }
        cfg.vsock = self.vsock_socket.clone().map(|uds_path| VsockConfig {
            guest_cid: 3,
            uds_path,
        });
        cfg.serial = self.serial.clone();
        cfg.seccomp = self.seccomp;
        cfg
    }
}

/// `base` followed by `extra` (as `hull-vmm --append` does).
pub fn append_cmdline(base: &str, extra: Option<&str>) -> String {
    match extra {
        Some(extra) => format!("{base} {extra}"),
        None => base.to_string(),
    }
}

/// Why a launch ended without the guest ending it.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// The VM could not be set up (or its configuration was refused).
    #[error(transparent)]
    Start(#[from] VmError),
    /// The waiting thread could not be confined.
    #[error(transparent)]
    Confine(#[from] SeccompError),
}

impl LaunchError {
    /// The exit status for it (2: set-up failed).
    pub fn status(&self) -> u8 {
        STATUS_SETUP
    }
}

/// How a launched VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchExit {
    /// The guest (or a [`StopHandle`]) ended it.
    Guest(ExitReason),
    /// The timeout passed; the VM was stopped.
    TimedOut(Duration),
}

impl LaunchExit {
    /// The exit status documented in kvm-tier/README.md: 0 reset (or
    /// stopped by the host), 3 poweroff, 4 panic, N debug-exit, 1 failure,
    /// 124 timeout.
    pub fn status(&self) -> u8 {
        match self {
            LaunchExit::TimedOut(_) => STATUS_TIMEOUT,
            LaunchExit::Guest(reason) => match reason {
                ExitReason::Reset | ExitReason::Stopped => 0,
                ExitReason::PowerOff => 3,
                ExitReason::Panic => 4,
                ExitReason::DebugExit(code) => *code,
                ExitReason::Halted
                | ExitReason::Shutdown
                | ExitReason::SystemEvent(_)
                | ExitReason::VcpuError(_) => 1,
            },
        }
    }
}

/// A started VM that the calling thread will wait for.
#[derive(Debug)]
pub struct Launch {
    vm: Vm,
    timeout: Option<Duration>,
    confine: bool,
}

impl Launch {
    /// Starts the VM `cfg` describes; [`Launch::wait`] stops it after
    /// `timeout`.
    pub fn start(cfg: &VmConfig, timeout: Option<Duration>) -> Result<Launch, LaunchError> {
        let vm = Vm::start(cfg)?;
        Ok(Launch {
            vm,
            timeout,
            confine: cfg.seccomp == SeccompLevel::Enforce,
        })
    }

    /// The running VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// A handle that stops the VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.vm.stop_handle()
    }

    /// Confines the calling thread (it only waits and tears down from
    /// here on), then waits for the VM's end or the timeout.
    pub fn wait(&mut self) -> Result<LaunchExit, LaunchError> {
        if self.confine {
            crate::seccomp::confine_current_thread(ThreadKind::Api)?;
        }
        let Some(timeout) = self.timeout else {
            return Ok(LaunchExit::Guest(self.vm.wait()));
        };
        Ok(match self.vm.wait_timeout(timeout) {
            Some(reason) => LaunchExit::Guest(reason),
            None => {
                self.vm.stop();
                tracing::debug!(ms = timeout.as_millis() as u64, "VM timed out");
                LaunchExit::TimedOut(timeout)
            }
        })
    }
}

/// Starts the VM `opts` describes and waits for its end, on the calling
/// thread. `on_started` gets the stop handle (e.g. for the thread that
/// forwards signals) once the VM runs. Use [`LaunchExit::status`] or
/// [`LaunchError::status`] for the exit status.
pub fn run_to_exit(
    opts: &LaunchOptions,
    on_started: impl FnOnce(StopHandle),
) -> Result<LaunchExit, LaunchError> {
    let mut launch = Launch::start(&opts.vm_config(), opts.timeout)?;
    on_started(launch.stop_handle());
    launch.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_match_the_readme() {
        let guest = |r| LaunchExit::Guest(r).status();
        assert_eq!(guest(ExitReason::Reset), 0);
        assert_eq!(guest(ExitReason::Stopped), 0);
        assert_eq!(guest(ExitReason::PowerOff), 3);
        assert_eq!(guest(ExitReason::Panic), 4);
        assert_eq!(guest(ExitReason::DebugExit(42)), 42);
        assert_eq!(guest(ExitReason::Shutdown), 1);
        assert_eq!(guest(ExitReason::VcpuError("x".into())), 1);
        assert_eq!(LaunchExit::TimedOut(Duration::from_secs(1)).status(), 124);
    }

    #[test]
    fn options_become_a_vm_config() {
        let mut opts = LaunchOptions::new("/k");
        opts.initramfs = Some("/i".into());
        opts.cmdline_append = Some("hull.init=1".into());
        opts.mem_mib = 256;
        opts.vcpus = 2;
        opts.share = Some(FsShare {
            dir: "/rootfs".into(),
            tag: "hullfs".into(),
        });
        opts.vsock_socket = Some("/run/v.sock".into());
        let cfg = opts.vm_config();
        assert_eq!(
            cfg.cmdline,
            format!("{} hull.init=1", crate::DEFAULT_CMDLINE)
        );
        assert_eq!(cfg.mem_mib, 256);
        assert_eq!(cfg.vcpus, 2);
        assert_eq!(cfg.shared_dir, Some(PathBuf::from("/rootfs")));
        assert_eq!(cfg.virtiofs.tag, "hullfs");
        assert_eq!(cfg.vsock.as_ref().map(|v| v.guest_cid), Some(3));
        assert_eq!(cfg.serial, SerialOutput::Sink);
        assert_eq!(cfg.seccomp, SeccompLevel::Enforce);
    }

    #[test]
    fn stop_handle_ends_the_wait() {
        let signal = std::sync::Arc::new(crate::exit::ExitSignal::new());
        let handle = StopHandle::new(signal.clone());
        std::thread::spawn(move || handle.stop());
        assert_eq!(signal.wait(None), Some(ExitReason::Stopped));
    }
}
