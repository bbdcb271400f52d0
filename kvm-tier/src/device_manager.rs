//! Device placement: owns the port-I/O and MMIO buses while a VM is built,
//! hands out virtio-mmio slots and their IRQs, wires irqfds and ioeventfds,
//! and keeps the list of placed virtio-mmio devices that ACPI and the
//! kernel command line describe.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kvm_ioctls::{IoEventAddress, VmFd};
use thiserror::Error;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

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
use crate::devices::virtio::VirtioDevice;
use crate::devices::{Bus, BusError, IrqLine, SharedDevice};
use crate::exit::ExitSignal;
use crate::layout::{self, ports};
use crate::memory::GuestMemoryMmap;

/// Why a device could not be created or placed.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// The configuration asks for something this host lacks.
    #[error("invalid VM configuration: {0}")]
    Config(#[from] ConfigError),
    /// A device could not be created.
    #[error("creating the {what} device: {source}")]
    Create {
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
    /// An irqfd could not be registered with KVM.
    #[error("KVM_IRQFD ({what}): {source}")]
    Irqfd {
        /// Which device.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// The virtio-fs device or its virtiofsd could not be set up.
    #[error("setting up virtio-fs for {dir}: {source}")]
    Fs {
        /// The shared directory.
        dir: std::path::PathBuf,
        /// The cause.
        source: FsError,
    },
    /// No virtio-mmio slot (IRQ) left for a device.
    #[error("no interrupt line left for the {0} device")]
    OutOfIrqs(&'static str),
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

/// The KVM calls device placement needs; a trait so that placement can be
/// tested without `/dev/kvm`.
pub trait InterruptWiring {
    /// Routes `evt` to `gsi` (KVM_IRQFD).
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), kvm_ioctls::Error>;
    /// Signals `evt` on a guest write of `datamatch` at MMIO `addr`
    /// (KVM_IOEVENTFD).
    fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), kvm_ioctls::Error>;
}

impl InterruptWiring for VmFd {
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), kvm_ioctls::Error> {
        VmFd::register_irqfd(self, evt, gsi)
    }

    fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), kvm_ioctls::Error> {
        VmFd::register_ioevent(self, evt, &IoEventAddress::Mmio(addr), datamatch)
    }
}

/// The `n`th virtio-mmio slot: its window and GSI, or `None` past the last
/// IRQ.
pub fn mmio_slot(n: usize) -> Option<(GuestAddress, u32)> {
    let irq = layout::VIRTIO_IRQ_BASE.checked_add(u32::try_from(n).ok()?)?;
    if irq > layout::IRQ_MAX {
        return None;
    }
    let base = layout::VIRTIO_MMIO_BASE + n as u64 * layout::VIRTIO_MMIO_SIZE;
    Some((GuestAddress(base), irq))
}

/// Places devices on the buses while a VM is built.
#[derive(Debug, Default)]
pub struct DeviceManager {
    pio: Bus,
    mmio: Bus,
    mmio_devices: Vec<MmioDeviceInfo>,
}

impl DeviceManager {
    /// No devices yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps a legacy device at ports `[port, port + len)`.
    pub fn add_pio(
        &mut self,
        what: &'static str,
        device: SharedDevice,
        port: u16,
        len: u64,
    ) -> Result<(), DeviceError> {
        self.pio
            .insert(device, u64::from(port), len)
            .map_err(|source| DeviceError::Bus { what, source })
    }

    /// Puts `device` behind a virtio-mmio transport in the next free slot:
    /// its IRQ gets an irqfd, its queues ioeventfds on QUEUE_NOTIFY.
    pub fn add_virtio_mmio(
        &mut self,
        vm: &dyn InterruptWiring,
        mem: &GuestMemoryMmap,
        device: Box<dyn VirtioDevice>,
        what: &'static str,
    ) -> Result<MmioDeviceInfo, DeviceError> {
        let (base, irq) = mmio_slot(self.mmio_devices.len()).ok_or(DeviceError::OutOfIrqs(what))?;
        let line = IrqLine::new(irq).map_err(|source| DeviceError::Create { what, source })?;
        vm.register_irqfd(line.eventfd(), irq)
            .map_err(|source| DeviceError::Irqfd { what, source })?;
        let info = MmioDeviceInfo {
            device_id: device.device_type(),
            base,
            size: layout::VIRTIO_MMIO_SIZE,
            irq,
        };
        let notify = base.0 + crate::devices::virtio::mmio::regs::QUEUE_NOTIFY;
        for (queue, evt) in device.queue_eventfds() {
            if let Err(e) = vm.register_ioevent(evt, notify, u32::from(queue)) {
                // The transport still forwards notifications, with a VM exit.
                tracing::warn!(what, queue, error = %e, "KVM_IOEVENTFD refused");
            }
        }
        let transport = MmioTransport::new(mem.clone(), device, line);
        self.mmio
            .insert(Arc::new(Mutex::new(transport)), base.0, info.size)
            .map_err(|source| DeviceError::Bus { what, source })?;
        self.mmio_devices.push(info);
        Ok(info)
    }

    /// The virtio-mmio devices placed so far, in slot order.
    pub fn mmio_devices(&self) -> &[MmioDeviceInfo] {
        &self.mmio_devices
    }

    /// The finished buses (port I/O, MMIO), shared with the vCPUs.
    pub fn into_buses(self) -> (Arc<Bus>, Arc<Bus>) {
        (Arc::new(self.pio), Arc::new(self.mmio))
    }
}

/// What the VM keeps of its devices besides the buses.
#[derive(Debug)]
pub struct DeviceHandles {
    /// Copies console input into the UART.
    pub serial_input: Option<SerialInputPump>,
    /// Serves the shared directory.
    pub virtiofsd: Option<Virtiofsd>,
    /// Resets the vsock transport when written.
    pub vsock_reset: Option<EventFd>,
}

/// The shared state the legacy devices report into.
#[derive(Debug, Clone)]
pub struct DeviceContext {
    /// Where devices that end the VM say why.
    pub exit: Arc<ExitSignal>,
    /// When `Vm::start` began, for the boot timer.
    pub start: Instant,
    /// Set by the boot timer on the guest's write.
    pub boot_time: Arc<OnceLock<Duration>>,
    /// The device threads' seccomp filter.
    pub filter: Option<seccompiler::BpfProgram>,
}

impl DeviceManager {
    /// Creates and places every device `cfg` asks for: the legacy devices
    /// on port I/O, then virtio-fs and vsock in the MMIO gap.
    pub fn create_devices(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        cfg: &VmConfig,
        ctx: &DeviceContext,
    ) -> Result<DeviceHandles, DeviceError> {
        let serial_input = self.add_legacy_devices(vm, cfg, ctx)?;
        let mut virtiofsd = None;
        let mut vsock_reset = None;
        if let Some(dir) = &cfg.shared_dir {
            let (daemon, dev) = start_virtio_fs(cfg, dir, ctx.filter.clone())?;
            virtiofsd = Some(daemon);
            let info = self.add_virtio_mmio(vm, mem, Box::new(dev), "virtio-fs")?;
            tracing::debug!(
                ?info,
                us = ctx.start.elapsed().as_micros() as u64,
                "virtio-fs device placed"
            );
        }
        if let Some(vsock) = &cfg.vsock {
            let err = |source| DeviceError::Create {
                what: "vsock",
                source,
            };
            let dev = VsockDevice::new(vsock.guest_cid, vsock.uds_path.clone(), ctx.filter.clone())
                .map_err(err)?;
            vsock_reset = Some(dev.reset_handle().map_err(err)?);
            let info = self.add_virtio_mmio(vm, mem, Box::new(dev), "vsock")?;
            tracing::debug!(?info, "vsock device placed");
        }
        Ok(DeviceHandles {
            serial_input,
            virtiofsd,
            vsock_reset,
        })
    }

    /// The UART (with its irqfd and input pump) and the fixed-port devices.
    fn add_legacy_devices(
        &mut self,
        vm: &VmFd,
        cfg: &VmConfig,
        ctx: &DeviceContext,
    ) -> Result<Option<SerialInputPump>, DeviceError> {
        let err = |source| DeviceError::Create {
            what: "serial",
            source,
        };
        let serial_irq = IrqLine::new(ports::SERIAL_COM1_IRQ).map_err(err)?;
        vm.register_irqfd(serial_irq.eventfd(), serial_irq.gsi())
            .map_err(|source| DeviceError::Irqfd {
                what: "serial",
                source,
            })?;
        let out = open_output(&cfg.serial).map_err(err)?;
        let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, out)));
        let serial_input = start_serial_input(cfg, &serial, ctx.filter.clone())?;
        let exit = &ctx.exit;
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
                Arc::new(Mutex::new(BootTimer::new(ctx.start, ctx.boot_time.clone()))),
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
            self.add_pio(what, dev, port, len)?;
        }
        Ok(serial_input)
    }
}

/// Opens the console input and starts copying it into the UART.
fn start_serial_input(
    cfg: &VmConfig,
    serial: &Arc<Mutex<SerialDevice>>,
    filter: Option<seccompiler::BpfProgram>,
) -> Result<Option<SerialInputPump>, DeviceError> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| DeviceError::Create {
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
) -> Result<(Virtiofsd, FsDevice), DeviceError> {
    let fs_err = |source| DeviceError::Fs {
        dir: dir.to_path_buf(),
        source,
    };
    let binary = cfg
        .virtiofs
        .find_binary()
        .ok_or(DeviceError::Config(ConfigError::VirtiofsdMissing))?;
    let (daemon, stream) =
        Virtiofsd::spawn(&binary, dir, &cfg.virtiofs, &std::env::temp_dir(), filter)
            .map_err(fs_err)?;
    let frontend = FsFrontend::connect(stream, 2).map_err(fs_err)?;
    let dev = FsDevice::new(frontend, &cfg.virtiofs.tag).map_err(fs_err)?;
    Ok((daemon, dev))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::devices::virtio::{ActivateContext, ActivateError};
    use crate::devices::BusDevice;
    use crate::memory::create_guest_memory;

    /// Records what would have been registered with KVM.
    #[derive(Default)]
    struct FakeVm {
        irqfds: RefCell<Vec<u32>>,
        ioevents: RefCell<Vec<(u64, u32)>>,
    }

    impl InterruptWiring for FakeVm {
        fn register_irqfd(&self, _: &EventFd, gsi: u32) -> Result<(), kvm_ioctls::Error> {
            self.irqfds.borrow_mut().push(gsi);
            Ok(())
        }
        fn register_ioevent(
            &self,
            _: &EventFd,
            addr: u64,
            datamatch: u32,
        ) -> Result<(), kvm_ioctls::Error> {
            self.ioevents.borrow_mut().push((addr, datamatch));
            Ok(())
        }
    }

    /// A virtio device with one queue and its notify eventfd.
    struct Dummy(u32, EventFd);

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            self.0
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            0
        }
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: ActivateContext) -> Result<(), ActivateError> {
            Ok(())
        }
        fn queue_notify(&mut self, _: u16) {}
        fn reset(&mut self) {}
        fn queue_eventfds(&self) -> Vec<(u16, &EventFd)> {
            vec![(0, &self.1)]
        }
    }

    fn dummy(id: u32) -> Box<dyn VirtioDevice> {
        Box::new(Dummy(id, EventFd::new(0).unwrap()))
    }

    struct Nop;
    impl BusDevice for Nop {
        fn read(&mut self, _: u64, _: &mut [u8]) {}
        fn write(&mut self, _: u64, _: &[u8]) {}
    }

    #[test]
    fn slots_are_consecutive_windows_with_consecutive_irqs() {
        assert_eq!(
            mmio_slot(0),
            Some((
                GuestAddress(layout::VIRTIO_MMIO_BASE),
                layout::VIRTIO_IRQ_BASE
            ))
        );
        assert_eq!(
            mmio_slot(2),
            Some((
                GuestAddress(layout::VIRTIO_MMIO_BASE + 2 * layout::VIRTIO_MMIO_SIZE),
                layout::VIRTIO_IRQ_BASE + 2
            ))
        );
        let last = (layout::IRQ_MAX - layout::VIRTIO_IRQ_BASE) as usize;
        assert_eq!(mmio_slot(last).map(|s| s.1), Some(layout::IRQ_MAX));
        assert_eq!(mmio_slot(last + 1), None);
        assert_eq!(mmio_slot(usize::MAX), None);
    }

    #[test]
    fn virtio_devices_get_slots_irqfds_and_ioevents_in_order() {
        let vm = FakeVm::default();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut dm = DeviceManager::new();
        let fs = dm.add_virtio_mmio(&vm, &mem, dummy(26), "fs").unwrap();
        let vsock = dm.add_virtio_mmio(&vm, &mem, dummy(19), "vsock").unwrap();
        // What ACPI and the command line are given.
        assert_eq!(dm.mmio_devices(), &[fs, vsock]);
        assert_eq!(fs.device_id, 26);
        assert_eq!(fs.base, GuestAddress(layout::VIRTIO_MMIO_BASE));
        assert_eq!(fs.size, layout::VIRTIO_MMIO_SIZE);
        assert_eq!(vsock.base.0, fs.base.0 + layout::VIRTIO_MMIO_SIZE);
        assert_eq!(vsock.irq, fs.irq + 1);
        assert_eq!(*vm.irqfds.borrow(), vec![fs.irq, vsock.irq]);
        let notify = crate::devices::virtio::mmio::regs::QUEUE_NOTIFY;
        assert_eq!(
            *vm.ioevents.borrow(),
            vec![(fs.base.0 + notify, 0), (vsock.base.0 + notify, 0)]
        );
        let (_, mmio) = dm.into_buses();
        assert!(mmio.resolve(vsock.base.0 + 4, 4).is_some());
    }

    #[test]
    fn running_out_of_irqs_is_refused() {
        let vm = FakeVm::default();
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut dm = DeviceManager::new();
        let slots = (layout::IRQ_MAX - layout::VIRTIO_IRQ_BASE + 1) as usize;
        for _ in 0..slots {
            dm.add_virtio_mmio(&vm, &mem, dummy(1), "x").unwrap();
        }
        assert!(matches!(
            dm.add_virtio_mmio(&vm, &mem, dummy(1), "one-too-many"),
            Err(DeviceError::OutOfIrqs("one-too-many"))
        ));
        assert_eq!(dm.mmio_devices().len(), slots);
    }

    #[test]
    fn overlapping_ports_are_refused() {
        let mut dm = DeviceManager::new();
        dm.add_pio("a", Arc::new(Mutex::new(Nop)), 0x3f8, 8)
            .unwrap();
        let err = dm
            .add_pio("b", Arc::new(Mutex::new(Nop)), 0x3fc, 1)
            .unwrap_err();
        assert!(matches!(
            err,
            DeviceError::Bus {
                what: "b",
                source: BusError::Overlap { .. }
            }
        ));
        dm.add_pio("c", Arc::new(Mutex::new(Nop)), 0x400, 1)
            .unwrap();
    }
}
