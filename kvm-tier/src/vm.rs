//! A running micro-VM: KVM objects, memory, devices, vCPU threads; its start,
//! wait and teardown.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use thiserror::Error;

use crate::acpi::{self, AcpiError};
use crate::boot::{self, BootError};
use crate::config::{ConfigError, VmConfig};
pub use crate::device_manager::MmioDeviceInfo;
use crate::device_manager::{DeviceContext, DeviceError, DeviceManager};
use crate::devices::serial_input::SerialInputPump;
use crate::devices::virtio::fs::Virtiofsd;
use crate::devices::Bus;
use crate::exit::{ExitReason, ExitSignal, StopHandle};
use crate::layout;
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
    /// A device could not be created or placed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The seccomp filters could not be built.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
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
        let vm = create_vm(&kvm)?;
        let mem = memory::create_guest_memory(u64::from(cfg.mem_mib) << 20)?;
        tracing::debug!(us = t0.elapsed().as_micros() as u64, "guest memory mapped");
        memory::register_with_kvm(&vm, &mem)?;
        tracing::debug!(
            us = t0.elapsed().as_micros() as u64,
            "guest memory registered"
        );
        // After the memory: the first memory slot's SRCU grace period waited 4-11 ms (on
        // the development host) for one that making the irqchip or PIT starts; in this
        // order each costs about 0.1 ms.
        create_irqchip_and_pit(&vm)?;
        tracing::debug!(
            us = t0.elapsed().as_micros() as u64,
            "irqchip and PIT created"
        );

        let filters = ThreadFilters::new(cfg.seccomp)?;
        let exit = Arc::new(ExitSignal::new());
        let boot_time = Arc::new(OnceLock::new());
        let ctx = DeviceContext {
            exit: exit.clone(),
            start: t0,
            boot_time: boot_time.clone(),
            filter: filters.device.clone(),
        };
        let mut devices = DeviceManager::new();
        let handles = devices.create_devices(&vm, &mem, cfg, &ctx)?;
        let mmio_devices = devices.mmio_devices().to_vec();

        // The MSR filter's ioctl waits for an SRCU grace period (14 ms here, more than the
        // rest of the set-up): it runs on a thread while the tables and the kernel are
        // written, after the devices (whose event fd registrations would queue behind that
        // grace period) and before any vCPU exists. (Set while the vCPUs ran, a CI run's
        // nested host, Linux 6.1's KVM, froze in the lane that starts VMs through Docker;
        // as before that change, it is set before the vCPUs exist.)
        let entry = std::thread::scope(|s| {
            let msr_filter = s.spawn(|| crate::cpuid::filter_legacy_perf_msrs(&vm));
            let entry = (|| -> Result<_, VmError> {
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
                Ok(entry)
            })();
            if msr_filter.join().is_err() {
                tracing::warn!("the MSR filter thread panicked");
            }
            tracing::debug!(us = t0.elapsed().as_micros() as u64, "MSR filter set");
            entry
        })?;
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
        let (pio, mmio) = devices.into_buses();
        let (vcpus, timings) =
            spawn_vcpus(ready, (pio.clone(), mmio.clone()), &exit, &filters, t0)?;
        tracing::info!(
            setup_us = timings.setup.as_micros() as u64,
            vcpus = cfg.vcpus,
            mem_mib = cfg.mem_mib,
            "VM started"
        );
        Ok(Vm {
            vcpus,
            _buses: (pio, mmio),
            _serial_input: handles.serial_input,
            virtiofsd: handles.virtiofsd,
            vsock_reset: handles.vsock_reset,
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

    /// A handle that stops this VM from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle::new(self.exit.clone())
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

/// The VM with its TSS and identity map; the PMU disabled (before any vCPU).
fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    // The MSR filter half is set by `Vm::start`, on a thread, before the vCPUs exist.
    crate::cpuid::hide_pmu(&vm);
    Ok(vm)
}

/// The in-kernel irqchip and PIT (before any vCPU).
fn create_irqchip_and_pit(vm: &VmFd) -> Result<(), VmError> {
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))
}

/// Starts each vCPU's thread; on a failure the ones started are stopped.
fn spawn_vcpus(
    ready: Vec<Vcpu>,
    (pio, mmio): (Arc<Bus>, Arc<Bus>),
    exit: &Arc<ExitSignal>,
    filters: &ThreadFilters,
    t0: Instant,
) -> Result<(Vec<VcpuHandle>, StartTimings), VmError> {
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
    Ok((vcpus, timings))
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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

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
