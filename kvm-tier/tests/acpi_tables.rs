//! The ACPI tables checked by ACPICA's disassembler (`iasl`, Debian package
//! acpica-tools): each table must parse without errors, and the DSDT must
//! describe the virtio-mmio devices the way Linux's virtio_mmio driver
//! expects (`LNRO0005`, a 32-bit fixed memory window, an interrupt).

use std::process::Command;

use hull_kvm::acpi;
use hull_kvm::device_manager::MmioDeviceInfo;
use vm_memory::GuestAddress;

fn iasl_available() -> bool {
    Command::new("iasl")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn disassemble(dir: &std::path::Path, name: &str, table: &[u8]) -> String {
    let path = dir.join(format!("{name}.dat"));
    std::fs::write(&path, table).unwrap();
    let out = Command::new("iasl")
        .arg("-d")
        .arg(&path)
        .current_dir(dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl -d {name}: {log}");
    assert!(!log.contains("Error"), "iasl -d {name}: {log}");
    std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap()
}

#[test]
fn iasl_accepts_the_tables() {
    if !iasl_available() {
        println!("skipped: iasl missing (Debian package acpica-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
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
    let dsdt = disassemble(dir.path(), "dsdt", &acpi::dsdt(&devices));
    assert!(dsdt.contains("\"LNRO0005\""), "{dsdt}");
    assert!(dsdt.contains("Memory32Fixed (ReadWrite,"), "{dsdt}");
    assert!(dsdt.contains("0xD0001000"), "{dsdt}");
    assert!(
        dsdt.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive"),
        "{dsdt}"
    );
    assert!(dsdt.contains("Device (V001)"), "{dsdt}");
    // COM1 with a mapped GSI, pvpanic, S5.
    assert!(dsdt.contains("EisaId (\"PNP0501\")"), "{dsdt}");
    assert!(
        dsdt.contains("IO (Decode16,\n                    0x03F8,"),
        "{dsdt}"
    );
    assert!(dsdt.contains("\"QEMU0001\""), "{dsdt}");
    assert!(
        dsdt.contains("IO (Decode16,\n                    0x0505,"),
        "{dsdt}"
    );
    assert!(dsdt.contains("Name (\\_S5, Package (0x01)"), "{dsdt}");

    let fadt = disassemble(dir.path(), "facp", &acpi::fadt(0xe0040));
    assert!(fadt.contains("Hardware Reduced (V5) : 1"), "{fadt}");
    assert!(fadt.contains("Value to cause reset : FE"), "{fadt}");

    let madt = disassemble(dir.path(), "apic", &acpi::madt(2));
    assert_eq!(madt.matches("Processor Local APIC").count(), 2, "{madt}");
    assert!(madt.contains("I/O APIC"), "{madt}");
}
