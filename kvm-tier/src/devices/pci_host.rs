//! PCI configuration mechanism #1 (ports 0xcf8–0xcff) with nothing on the bus but a host
//! bridge at 00:00.0.
//!
//! The machine has no PCI devices, but Linux on x86 prints `PCI: Fatal: No config space
//! access function found` (arch/x86/pci/init.c) whenever it finds no config-space access at
//! all, and `pci=off` disables every access method, so it cannot silence that. With this
//! bridge the kernel's type-1 probe and sanity check pass (a host bridge class on bus 0);
//! with ACPI and no `PNP0A03` root in the DSDT, the kernel enumerates no bus behind it.
//! Written by hand: a read-only config space of one function, far smaller than pulling in
//! a PCI crate.

use super::BusDevice;

/// The address register (0xcf8) enable bit.
const ENABLE: u32 = 1 << 31;
/// Red Hat, Inc. — the vendor id QEMU and other open VMMs use for their own devices.
const VENDOR_ID: u16 = 0x1b36;
/// Device id of a PCIe host bridge under that vendor.
const DEVICE_ID: u16 = 0x0008;
/// Class code: bridge (0x06), host bridge (0x00).
const CLASS_HOST_BRIDGE: u32 = 0x0600_0000;

/// The host bridge and its config-space ports.
#[derive(Debug, Default)]
pub struct PciHostBridge {
    address: u32,
}

impl PciHostBridge {
    /// A bridge with the address register cleared.
    pub fn new() -> Self {
        Self::default()
    }

    /// The 32-bit config register at `reg` (dword aligned) of the selected function.
    fn config_dword(&self, reg: u32) -> u32 {
        let bus = (self.address >> 16) & 0xff;
        let devfn = (self.address >> 8) & 0xff;
        if self.address & ENABLE == 0 || bus != 0 || devfn != 0 {
            // No function: reads as all ones, as on real hardware.
            return u32::MAX;
        }
        match reg {
            0x00 => u32::from(DEVICE_ID) << 16 | u32::from(VENDOR_ID),
            // Class code, revision 0.
            0x08 => CLASS_HOST_BRIDGE,
            // Header type 0, single function; everything else reads as zero.
            _ => 0,
        }
    }
}

impl BusDevice for PciHostBridge {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset < 4 {
            // The address register (Linux reads it back whole to detect type 1).
            self.address.to_le_bytes()
        } else {
            let reg = self.address & 0xfc;
            self.config_dword(reg).to_le_bytes()
        };
        let start = (offset % 4) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = value.get(start + i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only whole-dword writes to the address register count; byte writes such as the
        // type-2 probe's `outb(0x01, 0xcfb)` and config-space writes are ignored.
        if offset == 0 && data.len() == 4 {
            let mut v = [0u8; 4];
            v.copy_from_slice(data);
            self.address = u32::from_le_bytes(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inl(d: &mut PciHostBridge, off: u64) -> u32 {
        let mut b = [0u8; 4];
        d.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn type1_probe_and_host_bridge() {
        let mut d = PciHostBridge::new();
        d.write(3, &[1]); // outb(0x01, 0xcfb): ignored
        d.write(0, &ENABLE.to_le_bytes());
        assert_eq!(inl(&mut d, 0), ENABLE, "the address register reads back");
        assert_eq!(inl(&mut d, 4), 0x0008_1b36);
        d.write(0, &(ENABLE | 0x08).to_le_bytes());
        assert_eq!(inl(&mut d, 4) >> 16, 0x0600, "class: host bridge");
        // Word read of the class at 0x0a.
        let mut w = [0u8; 2];
        d.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0600);
        // Any other device, another bus, or the enable bit clear: nothing there.
        d.write(0, &(ENABLE | 1 << 11).to_le_bytes());
        assert_eq!(inl(&mut d, 4), u32::MAX);
        d.write(0, &(ENABLE | 1 << 16).to_le_bytes());
        assert_eq!(inl(&mut d, 4), u32::MAX);
        d.write(0, &0u32.to_le_bytes());
        assert_eq!(inl(&mut d, 4), u32::MAX);
    }
}
