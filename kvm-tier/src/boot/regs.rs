//! The boot vCPU's entry state: identity page tables, GDT, control
//! registers, segments and general registers for long mode (Linux 64-bit
//! boot protocol, flat payloads) or 32-bit protected mode (PVH).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{kvm_segment_from_gdt, CODE32, CODE64, DATA, TSS};
use super::{BootEntry, EntryMode};
use crate::layout::{
    BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PD_COUNT, PML4_ADDR, PVH_INFO_ADDR,
    ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_2MIB_PAGE: u64 = 0x80;

/// Errors writing the boot CPU state into guest memory.
#[derive(Debug, Error)]
#[error("writing {what} to guest memory: {source}")]
pub struct RegsError {
    what: &'static str,
    source: vm_memory::GuestMemoryError,
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    val: T,
    addr: u64,
    what: &'static str,
) -> Result<(), RegsError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| RegsError { what, source })
}

/// Identity-maps the first 4 GiB with 2 MiB pages (covers the kernel, the
/// boot structures and the MMIO gap).
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    write(mem, PDPT_ADDR | PTE_PRESENT_RW, PML4_ADDR, "PML4")?;
    for d in 0..PD_COUNT {
        let pd = PD_ADDR + d * 0x1000;
        write(mem, pd | PTE_PRESENT_RW, PDPT_ADDR + d * 8, "PDPT")?;
        for i in 0..512u64 {
            let phys = ((d * 512 + i) << 21) | PDE_2MIB_PAGE | PTE_PRESENT_RW;
            write(mem, phys, pd + i * 8, "page directory")?;
        }
    }
    Ok(())
}

/// Writes the GDT and IDT for `mode` and returns the segment registers,
/// control registers and descriptor tables in `sregs`.
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    sregs: &mut kvm_sregs,
) -> Result<(), RegsError> {
    let code = match mode {
        EntryMode::Long64 => CODE64,
        EntryMode::Pvh32 => CODE32,
    };
    let gdt = [0u64, code, DATA, TSS];
    for (i, e) in gdt.iter().enumerate() {
        write(mem, *e, GDT_ADDR + i as u64 * 8, "GDT")?;
    }
    write(mem, 0u64, IDT_ADDR, "IDT")?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;

    let data = kvm_segment_from_gdt(DATA, 2);
    sregs.cs = kvm_segment_from_gdt(code, 1);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment_from_gdt(TSS, 3);

    match mode {
        EntryMode::Long64 => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// The general registers at entry.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.entry.0,
        ..Default::default()
    };
    match entry.mode {
        EntryMode::Long64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_ADDR;
        }
        EntryMode::Pvh32 => {
            regs.rbx = PVH_INFO_ADDR;
        }
    }
    regs
}

/// The x87/SSE state at entry (default control words).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KernelKind;
    use crate::memory::create_guest_memory;

    #[test]
    fn long_mode_state() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let mut s = kvm_sregs::default();
        setup_sregs(&mem, EntryMode::Long64, &mut s).unwrap();
        assert_eq!(s.cr3, PML4_ADDR);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_eq!(s.cs.l, 1);
        // 0xd000_0000 (the MMIO gap) is identity-mapped.
        let pd_index = 0xd000_0000u64 >> 21;
        let pde: u64 = mem.read_obj(GuestAddress(PD_ADDR + pd_index * 8)).unwrap();
        assert_eq!(pde & !0xfff, 0xd000_0000);
        let gdt1: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 8)).unwrap();
        assert_eq!(gdt1, CODE64);
        let r = boot_regs(&BootEntry {
            entry: GuestAddress(0x100000),
            mode: EntryMode::Long64,
            kind: KernelKind::Flat64,
        });
        assert_eq!((r.rip, r.rsi, r.rflags), (0x100000, ZERO_PAGE_ADDR, 2));
    }

    #[test]
    fn pvh_state() {
        let mem = create_guest_memory(32 << 20).unwrap();
        let mut s = kvm_sregs::default();
        setup_sregs(&mem, EntryMode::Pvh32, &mut s).unwrap();
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
        let r = boot_regs(&BootEntry {
            entry: GuestAddress(0x1000000),
            mode: EntryMode::Pvh32,
            kind: KernelKind::Elf,
        });
        assert_eq!(r.rbx, PVH_INFO_ADDR);
    }
}
