//! A running micro-VM: KVM objects, memory, devices, vCPU threads; its start,
//! wait and teardown.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use thiserror::Error;
use vm_memory::GuestAddress;

use crate::acpi::{self, AcpiError};
use crate::boot::{self, BootError};
use crate::config::{ConfigError, SerialInput, VmConfig};
use crate::devices::acpi_sleep::AcpiSleep;
use crate::devices::boot_timer::BootTimer;
use crate::devices::debug_exit::DebugExit;
use crate::devices::i8042::I8042;
use crate::devices::pci_host::PciHostBridge;
use crate::devices::pvpanic::PvPanic;
use crate::devices::serial::{open_output, SerialDevice};
use crate::devices::serial_input::SerialInputPump;
use crate::devices::virtio::fs::{FsDevice, FsError, FsFrontend, Virtiofsd};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::vsock::VsockDevice;
use crate::devices::{Bus, BusError, IrqLine, SharedDevice};
use crate::exit::{ExitReason, ExitSignal};
use crate::layout::{self, ports};
use crate::memory::{self, GuestMemoryMmap, MemoryError};
use crate::seccomp::{SeccompError, ThreadFilters};
use crate::vcpu::{Vcpu, VcpuError, VcpuHandle};

/// Why a VM could not start.
#[derive(Debug, Error)]
pub enum VmError {
    /// The configuration was refused.
    #[error("invalid VM configuration: {0}")]
    Config(#[from] ConfigError),
    /// `/dev/kvm` cannot be opened.
    #[error("opening /dev/kvm: {0}")]
    KvmOpen(kvm_ioctls::Error),
    /// A VM-level KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// Guest memory set-up failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel loading failed.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// vCPU set-up failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A device could not be created.
    #[error("creating the {what} device: {source}")]
    Device {
        /// Which device.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A device could not be placed on a bus.
    #[error("placing the {what} device: {source}")]
    Bus {
        /// Which device.
        what: &'static str,
        /// The cause.
        source: BusError,
    },
    /// The virtio-fs device or its virtiofsd could not be set up.
    #[error("setting up virtio-fs for {dir}: {source}")]
    Fs {
        /// The shared directory.
        dir: std::path::PathBuf,
        /// The cause.
        source: FsError,
    },
    /// The seccomp filters could not be built.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// No IRQ left for a device.
    #[error("no interrupt line left for the {0} device")]
    OutOfIrqs(&'static str),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// A virtio-mmio device as the guest's firmware tables must describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// The device's virtio id.
    pub device_id: u32,
    /// Base of its register window.
    pub base: GuestAddress,
    /// Window size.
    pub size: u64,
    /// Its GSI.
    pub irq: u32,
}

/// Set-up costs measured by [`Vm::start`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimings {
    /// From `Vm::start` to the boot vCPU's thread being spawned (right
    /// before its first KVM_RUN).
    pub setup: Duration,
}

/// A started VM. Dropping it stops the VM and joins its threads.
pub struct Vm {
    // Field order matters for drop: threads are stopped in Drop::drop, then
    // the VM fd closes before the memory mapping goes away.
    vcpus: Vec<VcpuHandle>,
    // Stopped after the vCPUs (and with them the device and its vhost-user
    // connection) are gone.
    // The buses own the devices: dropped here, on the API thread, after
    // the vCPUs, not on whichever vCPU thread ends last.
    _buses: (Arc<Bus>, Arc<Bus>),
    _serial_input: Option<SerialInputPump>,
    virtiofsd: Option<Virtiofsd>,
    vsock_reset: Option<vmm_sys_util::eventfd::EventFd>,
    exit: Arc<ExitSignal>,
    boot_time: Arc<OnceLock<Duration>>,
    timings: StartTimings,
    mmio_devices: Vec<MmioDeviceInfo>,
    _vm: VmFd,
    mem: GuestMemoryMmap,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("vcpus", &self.vcpus.len())
            .field("exit", &self.exit.reason())
            .field("mmio_devices", &self.mmio_devices)
            .finish()
    }
}

/// Whether this host can run VMs at all (`/dev/kvm` opens).
pub fn kvm_available() -> Result<(), String> {
    Kvm::new()
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm unusable: {e}"))
}

impl Vm {
    /// Validates `cfg`, builds the VM and starts its vCPUs.
    pub fn start(cfg: &VmConfig) -> Result<Vm, VmError> {
        let t0 = Instant::now();
        let kind = cfg.validate()?;
        let kvm = Kvm::new().map_err(VmError::KvmOpen)?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        crate::cpuid::hide_pmu(&vm);

        tracing::debug!(
            us = t0.elapsed().as_micros() as u64,
            "VM, irqchip and PIT created"
        );
        let mem = memory::create_guest_memory(u64::from(cfg.mem_mib) << 20)?;
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "guest memory mapped");
        memory::register_with_kvm(&vm, &mem)?;
        tracing::debug!(
            us = t0.elapsed().as_micros() as u64,
            "guest memory registered"
        );

        let filters = ThreadFilters::new(cfg.seccomp)?;
        let exit = Arc::new(ExitSignal::new());
        let boot_time = Arc::new(OnceLock::new());
        let mut pio = Bus::new();
        let mut mmio = Bus::new();

        // Legacy devices.
        let serial_irq =
            IrqLine::new(ports::SERIAL_COM1_IRQ).map_err(|source| VmError::Device {
                what: "serial",
                source,
            })?;
        vm.register_irqfd(serial_irq.eventfd(), serial_irq.gsi())
            .map_err(kvm_err("KVM_IRQFD (serial)"))?;
        let out = open_output(&cfg.serial).map_err(|source| VmError::Device {
            what: "serial",
            source,
        })?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, out)));
        let serial_input = start_serial_input(cfg, &serial, filters.device.clone())?;
        let legacy: [(&'static str, SharedDevice, u16, u64); 7] = [
            ("serial", serial, ports::SERIAL_COM1, 8),
            (
                "i8042",
                Arc::new(Mutex::new(I8042::new(exit.clone()))),
                ports::I8042_DATA,
                5,
            ),
            (
                "boot-timer",
                Arc::new(Mutex::new(BootTimer::new(t0, boot_time.clone()))),
                ports::BOOT_TIMER,
                1,
            ),
            (
                "debug-exit",
                Arc::new(Mutex::new(DebugExit::new(exit.clone()))),
                ports::DEBUG_EXIT,
                1,
            ),
            (
                "pvpanic",
                Arc::new(Mutex::new(PvPanic::new(exit.clone()))),
                ports::PVPANIC,
                1,
            ),
            (
                "pci-config",
                Arc::new(Mutex::new(PciHostBridge::new())),
                ports::PCI_CONFIG,
                8,
            ),
            (
                "acpi-sleep",
                Arc::new(Mutex::new(AcpiSleep::new(exit.clone()))),
                ports::ACPI_SLEEP_CONTROL,
                2,
            ),
        ];
        for (what, dev, port, len) in legacy {
            pio.insert(dev, u64::from(port), len)
                .map_err(|source| VmError::Bus { what, source })?;
        }

        // virtio-mmio devices.
        let mut mmio_devices = Vec::new();
        let mut virtiofsd = None;
        let mut vsock_reset = None;
        if let Some(dir) = &cfg.shared_dir {
            let (daemon, dev) = start_virtio_fs(cfg, dir, filters.device.clone())?;
            virtiofsd = Some(daemon);
            let info = add_mmio_device(
                &vm,
                &mem,
                &mut mmio,
                &mut mmio_devices,
                Box::new(dev),
                "virtio-fs",
            )?;
            tracing::debug!(
                ?info,
                us = t0.elapsed().as_micros() as u64,
                "virtio-fs device placed"
            );
        }
        if let Some(vsock) = &cfg.vsock {
            let dev = VsockDevice::new(
                vsock.guest_cid,
                vsock.uds_path.clone(),
                filters.device.clone(),
            )
            .map_err(|source| VmError::Device {
                what: "vsock",
                source,
            })?;
            vsock_reset = Some(dev.reset_handle().map_err(|source| VmError::Device {
                what: "vsock",
                source,
            })?);
            let info = add_mmio_device(
                &vm,
                &mem,
                &mut mmio,
                &mut mmio_devices,
                Box::new(dev),
                "vsock",
            )?;
            tracing::debug!(?info, "vsock device placed");
        }

        let rsdp = acpi::write_tables(&mem, cfg.vcpus, &mmio_devices)?;
        tracing::debug!(
            us = t0.elapsed().as_micros() as u64,
            "devices placed, ACPI written"
        );
        let entry = if cfg.mmio_cmdline_devices && !mmio_devices.is_empty() {
            let mut with_devices = cfg.clone();
            with_devices.cmdline = cmdline_with_devices(&cfg.cmdline, &mmio_devices);
            boot::load(&mem, &with_devices, kind, Some(rsdp))?
        } else {
            boot::load(&mem, cfg, kind, Some(rsdp))?
        };
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "kernel loaded");
        // vCPUs.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut ready = Vec::new();
        for index in 0..cfg.vcpus {
            let fd = vm
                .create_vcpu(u64::from(index))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let vcpu = Vcpu::new(fd, index);
            vcpu.configure(&supported, cfg.vcpus, &mem, (index == 0).then_some(&entry))?;
            ready.push(vcpu);
        }
        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);
        let mut timings = StartTimings::default();
        let mut vcpus = Vec::new();
        for vcpu in ready {
            if vcpus.is_empty() {
                timings.setup = t0.elapsed();
            }
            match vcpu.spawn(
                pio.clone(),
                mmio.clone(),
                exit.clone(),
                filters.vcpu.clone(),
            ) {
                Ok(h) => vcpus.push(h),
                Err(e) => {
                    exit.request(ExitReason::Stopped);
                    for h in &mut vcpus {
                        h.stop_and_join();
                    }
                    return Err(e.into());
                }
            }
        }
        tracing::info!(
            setup_us = timings.setup.as_micros() as u64,
            vcpus = cfg.vcpus,
            mem_mib = cfg.mem_mib,
            "VM started"
        );
        Ok(Vm {
            vcpus,
            _buses: (pio, mmio),
            _serial_input: serial_input,
            virtiofsd,
            vsock_reset,
            exit,
            boot_time,
            timings,
            mmio_devices,
            _vm: vm,
            mem,
        })
    }

    /// Waits until the VM ends and returns why; threads are joined.
    pub fn wait(&mut self) -> ExitReason {
        let reason = self.exit.wait(None).unwrap_or(ExitReason::Stopped);
        self.join_vcpus();
        reason
    }

    /// Like [`Vm::wait`] with a deadline; `None` if the VM still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitReason> {
        let reason = self.exit.wait(Some(timeout))?;
        self.join_vcpus();
        Some(reason)
    }

    /// Stops the VM (if it still runs) and returns the exit reason.
    pub fn stop(&mut self) -> ExitReason {
        self.exit.request(ExitReason::Stopped);
        self.wait()
    }

    /// Time from `Vm::start` to the guest's boot-timer write, if it happened.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_time.get().copied()
    }

    /// Costs measured during start.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// The virtio-mmio devices placed, as firmware tables must list them.
    pub fn mmio_devices(&self) -> &[MmioDeviceInfo] {
        &self.mmio_devices
    }

    /// Resets the vsock transport: every vsock connection is dropped and
    /// the guest gets a TRANSPORT_RESET event (it then drops its sockets
    /// too). Returns false without a vsock device.
    pub fn vsock_transport_reset(&self) -> bool {
        match &self.vsock_reset {
            Some(evt) => evt.write(1).is_ok(),
            None => false,
        }
    }

    /// A handle that resets the vsock transport when written (1), for a
    /// thread other than the one owning the `Vm` (e.g. a signal handler
    /// thread); `None` without a vsock device.
    pub fn vsock_reset_handle(&self) -> Option<vmm_sys_util::eventfd::EventFd> {
        self.vsock_reset.as_ref().and_then(|e| e.try_clone().ok())
    }

    /// The pid of the virtiofsd serving the shared directory, if any.
    pub fn virtiofsd_pid(&self) -> Option<u32> {
        self.virtiofsd.as_ref().map(Virtiofsd::pid)
    }

    /// The guest memory (for tests and debugging).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    fn join_vcpus(&mut self) {
        for h in &mut self.vcpus {
            h.stop_and_join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.exit.request(ExitReason::Stopped);
        self.join_vcpus();
    }
}

/// `cmdline` followed by one `virtio_mmio.device=<size>@<base>:<irq>` per
/// device (the syntax of `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`).
pub fn cmdline_with_devices(cmdline: &str, devices: &[MmioDeviceInfo]) -> String {
    let mut out = cmdline.trim_end().to_string();
    for d in devices {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!(
            "virtio_mmio.device={:#x}@{:#x}:{}",
            d.size, d.base.0, d.irq
        ));
    }
    out
}

/// Opens the console input and starts copying it into the UART.
fn start_serial_input(
    cfg: &VmConfig,
    serial: &Arc<Mutex<SerialDevice>>,
    filter: Option<seccompiler::BpfProgram>,
) -> Result<Option<SerialInputPump>, VmError> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| VmError::Device {
        what: "serial input",
        source,
    };
    let input: std::fs::File = match &cfg.serial_input {
        SerialInput::None => return Ok(None),
        SerialInput::Stdin => std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(err)?
            .into(),
        SerialInput::File(p) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p)
            .map_err(err)?,
    };
    SerialInputPump::spawn(input, serial.clone(), filter)
        .map(Some)
        .map_err(err)
}

/// Starts virtiofsd for `dir` and negotiates with it.
fn start_virtio_fs(
    cfg: &VmConfig,
    dir: &std::path::Path,
    filter: Option<seccompiler::BpfProgram>,
) -> Result<(Virtiofsd, FsDevice), VmError> {
    let fs_err = |source| VmError::Fs {
        dir: dir.to_path_buf(),
        source,
    };
    let binary = cfg
        .virtiofs
        .find_binary()
        .ok_or(VmError::Config(ConfigError::VirtiofsdMissing))?;
    let (daemon, stream) =
        Virtiofsd::spawn(&binary, dir, &cfg.virtiofs, &std::env::temp_dir(), filter)
            .map_err(fs_err)?;
    let frontend = FsFrontend::connect(stream, 2).map_err(fs_err)?;
    let dev = FsDevice::new(frontend, &cfg.virtiofs.tag).map_err(fs_err)?;
    Ok((daemon, dev))
}

fn add_mmio_device(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    bus: &mut Bus,
    placed: &mut Vec<MmioDeviceInfo>,
    device: Box<dyn crate::devices::virtio::VirtioDevice>,
    what: &'static str,
) -> Result<MmioDeviceInfo, VmError> {
    let n = placed.len() as u64;
    let irq = layout::VIRTIO_IRQ_BASE + placed.len() as u32;
    if irq > layout::IRQ_MAX {
        return Err(VmError::OutOfIrqs(what));
    }
    let base = layout::VIRTIO_MMIO_BASE + n * layout::VIRTIO_MMIO_SIZE;
    let line = IrqLine::new(irq).map_err(|source| VmError::Device { what, source })?;
    vm.register_irqfd(line.eventfd(), irq)
        .map_err(kvm_err("KVM_IRQFD (virtio)"))?;
    let info = MmioDeviceInfo {
        device_id: device.device_type(),
        base: GuestAddress(base),
        size: layout::VIRTIO_MMIO_SIZE,
        irq,
    };
    let notify = base + crate::devices::virtio::mmio::regs::QUEUE_NOTIFY;
    for (queue, evt) in device.queue_eventfds() {
        if let Err(e) = vm.register_ioevent(evt, &IoEventAddress::Mmio(notify), u32::from(queue)) {
            // The transport still forwards notifications, with a VM exit.
            tracing::warn!(what, queue, error = %e, "KVM_IOEVENTFD refused");
        }
    }
    let transport = MmioTransport::new(mem.clone(), device, line);
    bus.insert(
        Arc::new(Mutex::new(transport)),
        base,
        layout::VIRTIO_MMIO_SIZE,
    )
    .map_err(|source| VmError::Bus { what, source })?;
    placed.push(info);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_device_strings() {
        let devices = [
            MmioDeviceInfo {
                device_id: 19,
                base: GuestAddress(0xd000_0000),
                size: 0x1000,
                irq: 5,
            },
            MmioDeviceInfo {
                device_id: 26,
                base: GuestAddress(0xd000_1000),
                size: 0x1000,
                irq: 6,
            },
        ];
        assert_eq!(
            cmdline_with_devices("console=ttyS0 ", &devices),
            "console=ttyS0 virtio_mmio.device=0x1000@0xd0000000:5 \
             virtio_mmio.device=0x1000@0xd0001000:6"
        );
        assert_eq!(
            cmdline_with_devices("", &devices[..1]),
            "virtio_mmio.device=0x1000@0xd0000000:5"
        );
    }
}
