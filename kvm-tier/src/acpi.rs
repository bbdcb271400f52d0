//! ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) describing the vCPUs, the
//! IOAPIC and the virtio-mmio devices, written into the BIOS area where the
//! guest kernel looks for them.
//!
//! The platform is hardware-reduced ACPI (no PM blocks, no SCI, no legacy
//! PIC for the guest), like Firecracker's and QEMU's microvm. Every device
//! the guest must find is therefore in the DSDT with its resources:
//!
//! * COM1, a `PNP0501` with its ports and an edge-triggered, active-high
//!   GSI 4: without it Linux never maps ISA IRQ 4 (no legacy PIC on a
//!   hardware-reduced platform), `request_irq` fails and user space cannot
//!   open `/dev/ttyS0` or `/dev/console`; with it `8250_pnp` takes the port
//!   over with a mapped interrupt.
//! * the pvpanic device, `QEMU0001` with its I/O port (Linux's
//!   `pvpanic-mmio` takes a port or an MMIO resource);
//! * virtio-mmio devices, `LNRO0005` with their register window and
//!   interrupt: the only way a kernel without
//!   `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` finds them;
//! * `\_S5_` (sleep type [`S5_SLEEP_TYPE`]), which together with the FADT's
//!   sleep control/status registers lets the guest power off.

use acpi_tables::aml::{
    self, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use crate::device_manager::MmioDeviceInfo;
use crate::devices::acpi_sleep::S5_SLEEP_TYPE;
use crate::devices::pvpanic::PVPANIC_HID;
use crate::layout::{ports, ACPI_START, BIOS_END};
use crate::memory::GuestMemoryMmap;

const OEM_ID: [u8; 6] = *b"HULLVM";
const OEM_REVISION: u32 = 1;
/// The LAPIC's MMIO base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// `_HID` of a virtio-mmio device.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// EISA id of a 16550-compatible UART.
pub const SERIAL_HID: &str = "PNP0501";

// IA-PC boot architecture flags (FADT).
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// i8042 command that resets the CPU, used as the FADT reset register.
const I8042_RESET_CMD: u8 = 0xfe;

/// Errors placing the tables.
#[derive(Debug, Error)]
pub enum AcpiError {
    /// The tables do not fit in the BIOS area.
    #[error("ACPI tables need {0} bytes, more than the BIOS area holds")]
    TooLarge(u64),
    /// Writing to guest memory failed.
    #[error("writing ACPI table {table}: {source}")]
    Write {
        /// Which table.
        table: &'static str,
        /// The cause.
        source: vm_memory::GuestMemoryError,
    },
}

/// Already-encoded AML.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// COM1: `PNP0501`, 8 ports at 0x3f8, edge-triggered active-high GSI 4.
fn com1() -> Vec<u8> {
    let base = ports::SERIAL_COM1;
    let io = IO::new(base, base, 1, 8);
    // Edge-triggered, active high, exclusive: the UART's irqfd sends pulses.
    let irq = Interrupt::new(true, true, false, false, ports::SERIAL_COM1_IRQ);
    let crs = ResourceTemplate::new(vec![&io, &irq]);
    let hid = Name::new(Path::new("_HID"), &EISAName::new(SERIAL_HID));
    let uid = Name::new(Path::new("_UID"), &aml::ZERO);
    let ddn = Name::new(Path::new("_DDN"), &"COM1");
    let crs = Name::new(Path::new("_CRS"), &crs);
    bytes(&aml::Device::new(
        Path::new("COM1"),
        vec![&hid, &uid, &ddn, &crs],
    ))
}

/// The pvpanic device: `QEMU0001` with its one I/O port.
fn pvpanic() -> Vec<u8> {
    let port = ports::PVPANIC;
    let io = IO::new(port, port, 1, 1);
    let crs = ResourceTemplate::new(vec![&io]);
    let hid = Name::new(Path::new("_HID"), &PVPANIC_HID);
    let uid = Name::new(Path::new("_UID"), &aml::ZERO);
    let crs = Name::new(Path::new("_CRS"), &crs);
    bytes(&aml::Device::new(Path::new("PEVT"), vec![&hid, &uid, &crs]))
}

/// The DSDT: `\_S5_`, COM1, pvpanic and one `LNRO0005` device per
/// virtio-mmio window.
pub fn dsdt(devices: &[MmioDeviceInfo]) -> Vec<u8> {
    let mut devs = vec![RawAml(com1()), RawAml(pvpanic())];
    for (i, d) in devices.iter().enumerate() {
        let mem = Memory32Fixed::new(true, d.base.0 as u32, d.size as u32);
        // Edge-triggered, active high: irqfd delivers a pulse.
        let irq = Interrupt::new(true, true, false, false, d.irq);
        let crs = ResourceTemplate::new(vec![&mem, &irq]);
        let hid = Name::new(Path::new("_HID"), &VIRTIO_MMIO_HID);
        let uid = Name::new(Path::new("_UID"), &(i as u32));
        let cca = Name::new(Path::new("_CCA"), &aml::ONE);
        let crs = Name::new(Path::new("_CRS"), &crs);
        let path = format!("V{i:03X}");
        let dev = aml::Device::new(Path::new(&path), vec![&hid, &uid, &cca, &crs]);
        devs.push(RawAml(bytes(&dev)));
    }
    let children: Vec<&dyn Aml> = devs.iter().map(|d| d as &dyn Aml).collect();
    // S5 (soft off): SLP_TYP for the sleep control register. One integer
    // is enough on a hardware-reduced platform (no PM1b block).
    let mut body = bytes(&Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&S5_SLEEP_TYPE]),
    ));
    body.extend(bytes(&aml::Scope::new(Path::new("\\_SB_"), children)));
    let mut sdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, *b"HULLDSDT", OEM_REVISION);
    sdt.append_slice(&body);
    sdt.as_slice().to_vec()
}

/// The FADT: hardware-reduced, DSDT pointer, reset through the i8042,
/// sleep control and status registers (for S5, power off) on their ports.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, *b"HULLFACP", OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup)
        .dsdt_64(dsdt_addr);
    f.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(ports::I8042_COMMAND),
    );
    f.reset_value = I8042_RESET_CMD;
    let byte_port = |port: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            u64::from(port),
        )
    };
    f.sleep_control_reg = byte_port(ports::ACPI_SLEEP_CONTROL);
    f.sleep_status_reg = byte_port(ports::ACPI_SLEEP_STATUS);
    f.iapc_boot_arch =
        (IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_CMOS_RTC_NOT_PRESENT).into();
    bytes(&f.finalize())
}

/// The MADT: one enabled LAPIC per vCPU and the IOAPIC.
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        *b"HULLAPIC",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..vcpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    bytes(&m)
}

/// Writes all tables from [`ACPI_START`] and returns the RSDP's address.
pub fn write_tables(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    devices: &[MmioDeviceInfo],
) -> Result<GuestAddress, AcpiError> {
    let align = |a: u64| (a + 15) & !15;
    let rsdp_addr = ACPI_START;
    let mut next = align(rsdp_addr + Rsdp::len() as u64);
    let dsdt_addr = next;
    let dsdt = dsdt(devices);
    next = align(next + dsdt.len() as u64);
    let fadt_addr = next;
    let fadt = fadt(dsdt_addr);
    next = align(next + fadt.len() as u64);
    let madt_addr = next;
    let madt = madt(vcpus);
    next = align(next + madt.len() as u64);
    let xsdt_addr = next;
    let mut xsdt = XSDT::new(OEM_ID, *b"HULLXSDT", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes(&xsdt);
    let end = xsdt_addr + xsdt.len() as u64;
    if end > BIOS_END {
        return Err(AcpiError::TooLarge(end - ACPI_START));
    }
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    for (table, addr, data) in [
        ("RSDP", rsdp_addr, &rsdp),
        ("DSDT", dsdt_addr, &dsdt),
        ("FADT", fadt_addr, &fadt),
        ("MADT", madt_addr, &madt),
        ("XSDT", xsdt_addr, &xsdt),
    ] {
        mem.write_slice(data, GuestAddress(addr))
            .map_err(|source| AcpiError::Write { table, source })?;
    }
    Ok(GuestAddress(rsdp_addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    fn checksum_ok(t: &[u8]) -> bool {
        t.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn le32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn devices() -> Vec<MmioDeviceInfo> {
        vec![MmioDeviceInfo {
            device_id: 19,
            base: GuestAddress(0xd000_0000),
            size: 0x1000,
            irq: 5,
        }]
    }

    #[test]
    fn tables_are_consistent_and_checksummed() {
        let d = dsdt(&devices());
        assert_eq!(&d[..4], b"DSDT");
        assert_eq!(le32(&d, 4) as usize, d.len());
        assert!(checksum_ok(&d));
        let hid = d.windows(8).any(|w| w == VIRTIO_MMIO_HID.as_bytes());
        assert!(hid, "LNRO0005 in the DSDT");
        let f = fadt(0x1234);
        assert_eq!(&f[..4], b"FACP");
        assert_eq!(le32(&f, 4) as usize, f.len());
        assert!(checksum_ok(&f));
        assert_ne!(le32(&f, 112) & (1 << 20), 0, "hardware-reduced");
        // SLEEP_CONTROL_REG (offset 244) and SLEEP_STATUS_REG (256): byte
        // registers in system I/O space.
        for (off, port) in [
            (244, ports::ACPI_SLEEP_CONTROL),
            (256, ports::ACPI_SLEEP_STATUS),
        ] {
            assert_eq!(f[off], 1, "system I/O");
            assert_eq!(f[off + 1], 8, "8 bits");
            assert_eq!(f[off + 3], 1, "byte access");
            assert_eq!(
                u64::from_le_bytes(f[off + 4..off + 12].try_into().unwrap()),
                u64::from(port)
            );
        }
        let m = madt(3);
        assert!(checksum_ok(&m));
        assert_eq!(m.len(), 44 + 3 * 8 + 12);
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn dsdt_describes_com1_pvpanic_and_s5() {
        let d = dsdt(&[]);
        assert!(checksum_ok(&d));
        // COM1: EISAID("PNP0501") = 0x0105d041, IO(Decode16, 0x3f8, 0x3f8,
        // 1, 8) and an extended interrupt descriptor: consumer,
        // edge-triggered, active high, exclusive, one GSI: 4.
        let com1 = find(&d, b"COM1").expect("COM1 device");
        let pnp0501 = [0x0c, 0x41, 0xd0, 0x05, 0x01];
        assert!(find(&d[com1..], &pnp0501).is_some(), "EISAID(PNP0501)");
        let io = [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08];
        assert!(find(&d[com1..], &io).is_some(), "IO 0x3f8 len 8");
        let irq = [0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00];
        assert!(
            find(&d[com1..], &irq).is_some(),
            "Interrupt(edge, high) {{4}}"
        );
        // pvpanic: _HID "QEMU0001" and IO(Decode16, 0x505, 0x505, 1, 1).
        let pv = find(&d, b"QEMU0001\0").expect("pvpanic _HID");
        let io = [0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01];
        assert!(find(&d[pv..], &io).is_some(), "IO 0x505 len 1");
        // Name(\_S5_, Package(1) {5}).
        let s5 = [b'\\', b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0x0a, 0x05];
        assert!(find(&d, &s5).is_some(), "\\_S5_ package");
    }

    #[test]
    fn tables_land_in_guest_memory() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let rsdp = write_tables(&mem, 2, &devices()).unwrap();
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, rsdp).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        let xsdt: u64 = mem.read_obj(GuestAddress(rsdp.0 + 24)).unwrap();
        let mut x = [0u8; 4];
        mem.read_slice(&mut x, GuestAddress(xsdt)).unwrap();
        assert_eq!(&x, b"XSDT");
    }
}
