//! The guest-physical address map of an x86-64 hull micro-VM.
//!
//! Low memory holds the boot structures (GDT, zero page, page tables,
//! command line); the kernel is loaded at 1 MiB; a gap below 4 GiB is left
//! for MMIO devices (virtio-mmio windows) and the LAPIC/IOAPIC; guest RAM
//! that does not fit below the gap continues at 4 GiB.

/// The GDT.
pub const GDT_ADDR: u64 = 0x500;
/// The (empty) IDT.
pub const IDT_ADDR: u64 = 0x520;
/// The zero page (Linux `boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer (grows down, below the page tables).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// PML4 of the identity page tables.
pub const PML4_ADDR: u64 = 0x9000;
/// The single PDPT.
pub const PDPT_ADDR: u64 = 0xa000;
/// The four page directories (2 MiB pages) mapping the first 4 GiB.
pub const PD_ADDR: u64 = 0xb000;
/// Number of page directories: 4 x 1 GiB identity-mapped.
pub const PD_COUNT: u64 = 4;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Room for the command line (the boot protocol caps it well below this).
pub const CMDLINE_MAX_SIZE: u64 = 0x10000;
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the BIOS area, where the RSDP is searched for.
pub const ACPI_START: u64 = 0xe0000;
/// End of the BIOS area.
pub const BIOS_END: u64 = 0x100000;
/// Where kernels (and flat payloads) are loaded; also "high memory" start.
pub const HIMEM_START: u64 = 0x100000;
/// Start of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the MMIO gap.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First virtio-mmio device window.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First GSI handed to virtio-mmio devices (0-4 are the PIT, i8042, serial).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last GSI usable for devices on the IOAPIC (24 pins).
pub const IRQ_MAX: u32 = 23;
/// KVM's TSS (three pages) just below the LAPIC/IOAPIC area.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// KVM's identity map page for real-mode emulation.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Legacy I/O ports.
pub mod ports {
    /// COM1 (16550), 8 registers.
    pub const SERIAL_COM1: u16 = 0x3f8;
    /// Its IRQ.
    pub const SERIAL_COM1_IRQ: u32 = 4;
    /// i8042 data port.
    pub const I8042_DATA: u16 = 0x60;
    /// i8042 command/status port (data + 4).
    pub const I8042_COMMAND: u16 = 0x64;
    /// The boot-timer port: the guest writes [`BOOT_TIMER_MAGIC`] when its
    /// init starts (a byte write from a guest with I/O privilege).
    pub const BOOT_TIMER: u16 = 0x440;
    /// The value the boot-timer port expects.
    pub const BOOT_TIMER_MAGIC: u8 = 123;
    /// The debug-exit port: a write ends the VM with the value as exit code
    /// (as QEMU's isa-debug-exit). For tests and tiny guests.
    pub const DEBUG_EXIT: u16 = 0xf4;
    /// The pvpanic device (`QEMU0001`, one byte, at QEMU's port).
    pub const PVPANIC: u16 = 0x505;
    /// PCI configuration mechanism #1 (address 0xcf8, data 0xcfc).
    pub const PCI_CONFIG: u16 = 0xcf8;
    /// The hardware-reduced ACPI sleep control register (FADT
    /// `SLEEP_CONTROL_REG`); the sleep status register follows it.
    pub const ACPI_SLEEP_CONTROL: u16 = 0x600;
    /// The ACPI sleep status register (FADT `SLEEP_STATUS_REG`).
    pub const ACPI_SLEEP_STATUS: u16 = 0x601;
}

/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initramfs).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
