//! hull-vmm: runs one micro-VM from command-line flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hull_kvm::launch::append_cmdline;
use hull_kvm::{
    FsSandbox, KernelFormat, Launch, LaunchExit, SeccompLevel, SerialInput, SerialOutput,
    ThreadKind, VirtiofsOptions, Vm, VmConfig, VsockConfig,
};

const EXIT_STATUSES: &str = "\
Exit status:
  0    the guest reset the machine (reboot; also a panic without the pvpanic driver)
  3    the guest powered off (ACPI S5, e.g. poweroff)
  4    the guest kernel panicked (reported by its pvpanic driver)
  N    the guest wrote N to the debug-exit port 0xf4
  1    the VM failed: triple fault, KVM error, a vCPU that halted for good
  2    the configuration was refused or the VM could not be set up
  124  --timeout-ms passed

The --cmdline default is the recommended command line for this machine.";

/// Run one hull micro-VM.
#[derive(Debug, Parser)]
#[command(name = "hull-vmm", version, after_help = EXIT_STATUSES)]
struct Args {
    /// Kernel image: a bzImage or an ELF vmlinux.
    #[arg(long)]
    kernel: PathBuf,
    /// Treat the kernel as a flat 64-bit payload entered at 1 MiB in long mode.
    #[arg(long)]
    flat: bool,
    /// Initramfs (cpio archive).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Kernel command line, used as given (the default is the recommended one).
    #[arg(long, default_value = hull_kvm::DEFAULT_CMDLINE)]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    mem: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Serial console output file ("-" for stdout, "none" to discard).
    #[arg(long, default_value = "-")]
    serial_out: String,
    /// Serial console input: "-" for stdin, or a file/FIFO/terminal path.
    #[arg(long)]
    serial_in: Option<String>,
    /// Host directory shared with the guest over virtio-fs (served by virtiofsd).
    #[arg(long)]
    shared_dir: Option<PathBuf>,
    /// The virtio-fs tag the guest mounts.
    #[arg(long, default_value = "hullfs")]
    fs_tag: String,
    /// virtiofsd binary (default: $HULL_VIRTIOFSD, then the usual paths).
    #[arg(long)]
    virtiofsd: Option<PathBuf>,
    /// virtiofsd's sandbox: namespace, chroot or none.
    #[arg(long, default_value = "namespace", value_parser = parse_sandbox)]
    fs_sandbox: FsSandbox,
    /// Host unix socket of the vsock device.
    #[arg(long)]
    vsock_socket: Option<PathBuf>,
    /// Guest CID of the vsock device.
    #[arg(long, default_value_t = 3)]
    vsock_cid: u64,
    /// Also list the virtio-mmio devices on the kernel command line.
    #[arg(long)]
    mmio_cmdline_devices: bool,
    /// Run without seccomp filters (debugging).
    #[arg(long)]
    no_seccomp: bool,
    /// SIGUSR1 resets the vsock transport (every connection dropped, the
    /// guest told with a TRANSPORT_RESET event); for tests.
    #[arg(long)]
    vsock_reset_signal: bool,
    /// Stop the VM after this many milliseconds (exit status 124).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Words added to the end of the command line (e.g. a parameter for the guest's init),
    /// keeping the default or `--cmdline` in front of them.
    #[arg(long)]
    append: Option<String>,
}

fn parse_sandbox(s: &str) -> Result<FsSandbox, String> {
    match s {
        "namespace" => Ok(FsSandbox::Namespace),
        "chroot" => Ok(FsSandbox::Chroot),
        "none" => Ok(FsSandbox::None),
        _ => Err(format!("unknown sandbox {s:?}: namespace, chroot or none")),
    }
}

fn report(vm: &Vm) {
    eprintln!(
        "hull-vmm: VM set-up took {} us",
        vm.timings().setup.as_micros()
    );
    if let Some(t) = vm.boot_time() {
        eprintln!(
            "hull-vmm: guest boot time {} us (boot-timer port)",
            t.as_micros()
        );
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HULL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let serial = match args.serial_out.as_str() {
        "-" => SerialOutput::Stdout,
        "none" => SerialOutput::Sink,
        p => SerialOutput::File(p.into()),
    };
    let cfg = VmConfig {
        vcpus: args.vcpus,
        mem_mib: args.mem,
        kernel: args.kernel,
        kernel_format: if args.flat {
            KernelFormat::Flat64
        } else {
            KernelFormat::Auto
        },
        initramfs: args.initramfs,
        cmdline: append_cmdline(&args.cmdline, args.append.as_deref()),
        shared_dir: args.shared_dir,
        virtiofs: VirtiofsOptions {
            binary: args.virtiofsd,
            tag: args.fs_tag,
            sandbox: args.fs_sandbox,
            ..VirtiofsOptions::default()
        },
        vsock: args.vsock_socket.map(|uds_path| VsockConfig {
            guest_cid: args.vsock_cid,
            uds_path,
        }),
        serial,
        serial_input: match args.serial_in.as_deref() {
            None => SerialInput::None,
            Some("-") => SerialInput::Stdin,
            Some(p) => SerialInput::File(p.into()),
        },
        mmio_cmdline_devices: args.mmio_cmdline_devices,
        seccomp: if args.no_seccomp {
            SeccompLevel::Off
        } else {
            SeccompLevel::Enforce
        },
    };
    // Blocked before any VMM thread exists, so every thread inherits the
    // mask and the signal waits for the signalfd.
    let reset_signal = match args.vsock_reset_signal.then(block_sigusr1).transpose() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("hull-vmm: --vsock-reset-signal: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = args.timeout_ms.map(std::time::Duration::from_millis);
    let mut launch = match Launch::start(&cfg, timeout) {
        Ok(launch) => launch,
        Err(e) => {
            eprintln!("hull-vmm: {e}");
            return ExitCode::from(e.status());
        }
    };
    if let Some(fd) = reset_signal {
        if let Err(e) = spawn_reset_thread(fd, launch.vm().vsock_reset_handle(), !args.no_seccomp) {
            eprintln!("hull-vmm: --vsock-reset-signal: {e}");
            return ExitCode::from(2);
        }
    }
    // From here on this thread only waits for the VM and tears it down.
    let end = match launch.wait() {
        Ok(end) => end,
        Err(e) => {
            eprintln!("hull-vmm: {e}");
            return ExitCode::from(e.status());
        }
    };
    match &end {
        LaunchExit::TimedOut(t) => {
            eprintln!("hull-vmm: timed out after {} ms", t.as_millis());
            report(launch.vm());
        }
        LaunchExit::Guest(reason) => {
            report(launch.vm());
            eprintln!("hull-vmm: VM exited: {reason:?}");
        }
    }
    ExitCode::from(end.status())
}

/// Blocks SIGUSR1 in this thread (and the threads it creates) and returns
/// a signalfd that reads it.
fn block_sigusr1() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset operations on a local set; the results are checked.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::os::fd::OwnedFd::from_raw_fd(fd))
    }
}

/// A thread that resets the vsock transport on each SIGUSR1; it runs under
/// the device threads' seccomp filter (it only reads and writes fds).
fn spawn_reset_thread(
    sigfd: std::os::fd::OwnedFd,
    reset: Option<vmm_sys_util::eventfd::EventFd>,
    confine: bool,
) -> Result<(), String> {
    use std::io::Read;
    let reset = reset.ok_or("the VM has no vsock device")?;
    let filter = if confine {
        Some(hull_kvm::seccomp::filter(ThreadKind::Device).map_err(|e| e.to_string())?)
    } else {
        None
    };
    std::thread::Builder::new()
        .name("hull-vmm-sig".into())
        .spawn(move || {
            if let Some(f) = &filter {
                if let Err(e) = hull_kvm::seccomp::install(ThreadKind::Device, f) {
                    eprintln!("hull-vmm: vsock reset signal not handled: {e}");
                    return;
                }
            }
            let mut sigfd = std::fs::File::from(sigfd);
            let mut info = [0u8; 128]; // struct signalfd_siginfo
            while matches!(sigfd.read(&mut info), Ok(128)) {
                match reset.write(1) {
                    Ok(()) => eprintln!("hull-vmm: vsock transport reset (SIGUSR1)"),
                    Err(e) => eprintln!("hull-vmm: vsock transport reset failed: {e}"),
                }
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}
