//! The boot information a kernel reads: the Linux zero page with its e820
//! map, or the PVH `hvm_start_info` with its memory map.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend};

use super::{low_ram_end, BootError};
use crate::layout::{
    CMDLINE_ADDR, EBDA_START, HIMEM_START, MMIO_GAP_END, PVH_INFO_ADDR, PVH_MEMMAP_ADDR,
    PVH_MODLIST_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `loadflags` bit: the kernel may use the heap up to heap_end_ptr.
const CAN_USE_HEAP: u8 = 0x80;

/// The guest RAM as (start, length) ranges, the way e820 reports it:
/// conventional memory below the EBDA, then from 1 MiB, then above 4 GiB.
pub fn ram_map(mem: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    let mut map = vec![(0, EBDA_START)];
    let low_end = low_ram_end(mem);
    if low_end > HIMEM_START {
        map.push((HIMEM_START, low_end - HIMEM_START));
    }
    let last = mem.last_addr().raw_value() + 1;
    if last > MMIO_GAP_END {
        map.push((MMIO_GAP_END, last - MMIO_GAP_END));
    }
    map
}

/// Writes the zero page for the Linux 64-bit boot protocol.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    cmdline_size: u32,
    initrd: Option<(GuestAddress, u64)>,
    rsdp: Option<GuestAddress>,
) -> Result<(), BootError> {
    let mut params = boot_params {
        acpi_rsdp_addr: rsdp.map_or(0, |a| a.raw_value()),
        ..Default::default()
    };
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_size;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    for (i, (addr, size)) in ram_map(mem).into_iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        };
        params.e820_entries = (i + 1) as u8;
    }
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )?;
    Ok(())
}

/// Writes `hvm_start_info`, its module list and memory map (PVH boot).
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<(GuestAddress, u64)>,
    rsdp: Option<GuestAddress>,
) -> Result<(), BootError> {
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        rsdp_paddr: rsdp.map_or(0, |a| a.raw_value()),
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        ..Default::default()
    };
    let memmap: Vec<hvm_memmap_table_entry> = ram_map(mem)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    info.memmap_entries = memmap.len() as u32;
    let mut modules = Vec::new();
    if let Some((addr, size)) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_ADDR;
        modules.push(hvm_modlist_entry {
            paddr: addr.raw_value(),
            size,
            ..Default::default()
        });
    }
    let mut bp = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
    bp.set_sections(&memmap, GuestAddress(PVH_MEMMAP_ADDR));
    if !modules.is_empty() {
        bp.set_modules(&modules, GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn zero_page_holds_cmdline_initrd_and_e820() {
        let mem = create_guest_memory(64 << 20).unwrap();
        write_zero_page(
            &mem,
            None,
            12,
            Some((GuestAddress(0x200_0000), 4096)),
            Some(GuestAddress(0xe0000)),
        )
        .unwrap();
        let bp: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let hdr = bp.hdr;
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.boot_flag }, KERNEL_BOOT_FLAG_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 12);
        assert_eq!({ hdr.ramdisk_image }, 0x200_0000);
        assert_eq!({ hdr.ramdisk_size }, 4096);
        assert_eq!(bp.e820_entries, 2);
        assert_eq!({ bp.acpi_rsdp_addr }, 0xe0000);
        let e1 = bp.e820_table[1];
        assert_eq!(
            ({ e1.addr }, { e1.size }),
            (HIMEM_START, (64 << 20) - HIMEM_START)
        );
    }

    #[test]
    fn pvh_start_info_is_written() {
        let mem = create_guest_memory(64 << 20).unwrap();
        write_pvh_start_info(&mem, None, Some(GuestAddress(0xe0000))).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 2);
        assert_eq!(info.nr_modules, 0);
        assert_eq!(info.rsdp_paddr, 0xe0000);
    }
}
