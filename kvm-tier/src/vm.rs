//! A running micro-VM: KVM objects, memory, devices, vCPU threads; its start,
//! wait and teardown.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use thiserror::Error;
use vm_memory::GuestAddress;

use crate::acpi::{self, AcpiError};
use crate::boot::{self, BootError};
use crate::config::{ConfigError, VmConfig};
use crate::devices::boot_timer::BootTimer;
use crate::devices::debug_exit::DebugExit;
use crate::devices::i8042::I8042;
use crate::devices::serial::{open_output, SerialDevice};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::vsock::VsockDevice;
use crate::devices::{Bus, BusError, IrqLine, SharedDevice};
use crate::exit::{ExitReason, ExitSignal};
use crate::layout::{self, ports};
use crate::memory::{self, GuestMemoryMmap, MemoryError};
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
        let legacy: [(&'static str, SharedDevice, u16, u64); 4] = [
            (
                "serial",
                Arc::new(Mutex::new(SerialDevice::new(serial_irq, out))),
                ports::SERIAL_COM1,
                8,
            ),
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
        ];
        for (what, dev, port, len) in legacy {
            pio.insert(dev, u64::from(port), len)
                .map_err(|source| VmError::Bus { what, source })?;
        }

        // virtio-mmio devices.
        let mut mmio_devices = Vec::new();
        if let Some(vsock) = &cfg.vsock {
            let dev =
                VsockDevice::new(vsock.guest_cid, vsock.uds_path.clone()).map_err(|source| {
                    VmError::Device {
                        what: "vsock",
                        source,
                    }
                })?;
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
        let entry = boot::load(&mem, cfg, kind, Some(rsdp))?;
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
            match vcpu.spawn(pio.clone(), mmio.clone(), exit.clone()) {
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
