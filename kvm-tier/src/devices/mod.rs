//! Devices and the buses vCPU exits are dispatched on.

pub mod acpi_sleep;
pub mod boot_timer;
pub mod bus;
pub mod debug_exit;
pub mod i8042;
pub mod pci_host;
pub mod pvpanic;
pub mod serial;
pub mod serial_input;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError, SharedDevice};

use std::io;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// An interrupt line: an eventfd registered with KVM as an irqfd.
#[derive(Debug)]
pub struct IrqLine {
    evt: EventFd,
    gsi: u32,
}

impl IrqLine {
    /// A new line for `gsi` (register [`IrqLine::eventfd`] with KVM).
    pub fn new(gsi: u32) -> io::Result<Self> {
        Ok(Self {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            gsi,
        })
    }

    /// The eventfd behind the line.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }

    /// The GSI.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Raises the interrupt (edge).
    pub fn trigger(&self) -> io::Result<()> {
        self.evt.write(1)
    }
}

impl Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        IrqLine::trigger(self)
    }
}
