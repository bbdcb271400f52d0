//! hull-vmm: runs one micro-VM from command-line flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hull_kvm::{ExitReason, KernelFormat, SerialOutput, Vm, VmConfig, VsockConfig};

/// Run one hull micro-VM.
#[derive(Debug, Parser)]
#[command(name = "hull-vmm", version)]
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
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
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
    /// Host unix socket of the vsock device.
    #[arg(long)]
    vsock_socket: Option<PathBuf>,
    /// Guest CID of the vsock device.
    #[arg(long, default_value_t = 3)]
    vsock_cid: u64,
    /// Stop the VM after this many milliseconds (exit status 124).
    #[arg(long)]
    timeout_ms: Option<u64>,
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
        cmdline: args.cmdline,
        shared_dir: None,
        vsock: args.vsock_socket.map(|uds_path| VsockConfig {
            guest_cid: args.vsock_cid,
            uds_path,
        }),
        serial,
    };
    let mut vm = match Vm::start(&cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("hull-vmm: {e}");
            return ExitCode::from(2);
        }
    };
    let reason = match args.timeout_ms {
        Some(ms) => match vm.wait_timeout(std::time::Duration::from_millis(ms)) {
            Some(r) => r,
            None => {
                vm.stop();
                eprintln!("hull-vmm: timed out after {ms} ms");
                report(&vm);
                return ExitCode::from(124);
            }
        },
        None => vm.wait(),
    };
    report(&vm);
    eprintln!("hull-vmm: VM exited: {reason:?}");
    match reason {
        ExitReason::Reset | ExitReason::Stopped => ExitCode::SUCCESS,
        ExitReason::DebugExit(code) => ExitCode::from(code),
        _ => ExitCode::from(1),
    }
}
