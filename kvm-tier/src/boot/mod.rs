//! Direct kernel boot: load the kernel, initramfs and command line into guest
//! memory, write the boot information the kernel reads, and describe the
//! entry state the vCPUs get.

pub mod gdt;
pub mod params;
pub mod regs;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{self, KernelLoader, PvhBootCapability};
use thiserror::Error;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::config::{KernelKind, VmConfig};
use crate::layout::{CMDLINE_ADDR, CMDLINE_MAX_SIZE, HIMEM_START, MMIO_GAP_START};
use crate::memory::{prefault_while, GuestMemoryMmap};

/// How the boot vCPU enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with identity paging; `rsi` points at the zero page
    /// (Linux 64-bit boot protocol; also flat payloads).
    Long64,
    /// 32-bit protected mode, paging off; `rbx` points at `hvm_start_info`
    /// (PVH boot protocol).
    Pvh32,
}

/// Where and how the guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// The first instruction's guest-physical address.
    pub entry: GuestAddress,
    /// The CPU mode at entry.
    pub mode: EntryMode,
    /// What was loaded.
    pub kind: KernelKind,
}

/// Kernel loading failures.
#[derive(Debug, Error)]
pub enum BootError {
    /// The kernel or initramfs cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// linux-loader refused the kernel.
    #[error("loading kernel {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: loader::Error,
    },
    /// The kernel's boot protocol is too old.
    #[error(
        "bzImage boot protocol {0:#x} is too old; 2.12 (0x20c) or newer is needed for 64-bit entry"
    )]
    OldBootProtocol(u16),
    /// A flat payload does not fit below the MMIO gap.
    #[error("payload of {size} bytes does not fit in guest memory at {addr:#x}")]
    PayloadTooLarge {
        /// Its size.
        size: u64,
        /// Where it would go.
        addr: u64,
    },
    /// The initramfs does not fit.
    #[error("initramfs of {size} bytes does not fit in guest memory above the kernel (ends at {kernel_end:#x})")]
    InitramfsTooLarge {
        /// Its size.
        size: u64,
        /// The kernel end.
        kernel_end: u64,
    },
    /// The command line was refused.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Writing a boot structure failed.
    #[error("writing {what} to guest memory: {source}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// The cause.
        source: vm_memory::GuestMemoryError,
    },
    /// The boot configurator refused the boot parameters.
    #[error("writing boot parameters: {0}")]
    Configurator(#[from] linux_loader::configurator::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// End of the RAM below the MMIO gap.
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    let last = mem.last_addr().raw_value() + 1;
    last.min(MMIO_GAP_START)
}

/// Loads everything the guest needs to boot and returns the entry state.
/// `rsdp` is where the ACPI tables start, if they were written.
pub fn load(
    mem: &GuestMemoryMmap,
    cfg: &VmConfig,
    kind: KernelKind,
    rsdp: Option<GuestAddress>,
) -> Result<BootEntry, BootError> {
    let path = cfg.kernel.as_path();
    let mut file = File::open(path).map_err(io_err(path))?;
    let load_err = |source| BootError::Load {
        path: path.to_path_buf(),
        source,
    };

    let (entry, header, kernel_end, mode) = match kind {
        KernelKind::BzImage => {
            // The protected-mode kernel (the file less its few KiB of real-mode setup)
            // goes to HIMEM_START.
            let size = file.metadata().map_err(io_err(path))?.len();
            let r = prefault_while(mem, GuestAddress(HIMEM_START), size, || {
                loader::BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
            })
            .map_err(load_err)?;
            let hdr = r.setup_header.unwrap_or_default();
            if hdr.version < 0x20c {
                return Err(BootError::OldBootProtocol(hdr.version));
            }
            // The 64-bit entry point is 0x200 past the protected-mode code.
            (
                r.kernel_load.unchecked_add(0x200),
                Some(hdr),
                r.kernel_end,
                EntryMode::Long64,
            )
        }
        KernelKind::Elf => {
            let r = loader::Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(pvh) => {
                    (pvh, None, r.kernel_end, EntryMode::Pvh32)
                }
                _ => (r.kernel_load, None, r.kernel_end, EntryMode::Long64),
            }
        }
        KernelKind::Flat64 => {
            let size = file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
            file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
            let end = HIMEM_START
                .checked_add(size)
                .filter(|e| *e <= low_ram_end(mem));
            let Some(end) = end else {
                return Err(BootError::PayloadTooLarge {
                    size,
                    addr: HIMEM_START,
                });
            };
            let buf = std::fs::read(path).map_err(io_err(path))?;
            mem.write_slice(&buf, GuestAddress(HIMEM_START))
                .map_err(|source| BootError::Write {
                    what: "payload",
                    source,
                })?;
            (GuestAddress(HIMEM_START), None, end, EntryMode::Long64)
        }
    };

    let initrd = match &cfg.initramfs {
        Some(p) => Some(load_initramfs(mem, p, kernel_end, header.as_ref())?),
        None => None,
    };

    let mut cmdline =
        Cmdline::new(CMDLINE_MAX_SIZE as usize).map_err(|e| BootError::Cmdline(e.to_string()))?;
    if !cfg.cmdline.is_empty() {
        cmdline
            .insert_str(&cfg.cmdline)
            .map_err(|e| BootError::Cmdline(e.to_string()))?;
    }
    loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmdline_size = cfg.cmdline.len() as u32 + 1;

    match mode {
        EntryMode::Long64 => params::write_zero_page(mem, header, cmdline_size, initrd, rsdp)?,
        EntryMode::Pvh32 => params::write_pvh_start_info(mem, initrd, rsdp)?,
    }
    tracing::debug!(entry = entry.0, ?mode, ?kind, kernel_end, "kernel loaded");
    Ok(BootEntry { entry, mode, kind })
}

/// Places the initramfs as high as the kernel allows, page-aligned, above
/// the kernel's end. Returns (address, size).
fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    header: Option<&setup_header>,
) -> Result<(GuestAddress, u64), BootError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let size = file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    // initrd_addr_max is the highest address the initrd may *end* at (inclusive).
    let max_end = header
        .map(|h| u64::from(h.initrd_addr_max) + 1)
        .filter(|m| *m > 1)
        .unwrap_or(0x3800_0000);
    let top = low_ram_end(mem).min(max_end);
    let too_large = BootError::InitramfsTooLarge { size, kernel_end };
    let start = top.checked_sub(size).map(|s| s & !0xfff).ok_or(too_large)?;
    if start < kernel_end {
        return Err(BootError::InitramfsTooLarge { size, kernel_end });
    }
    let len =
        usize::try_from(size).map_err(|_| BootError::InitramfsTooLarge { size, kernel_end })?;
    prefault_while(mem, GuestAddress(start), size, || {
        mem.read_exact_volatile_from(GuestAddress(start), &mut file, len)
    })
    .map_err(|source| BootError::Write {
        what: "initramfs",
        source,
    })?;
    Ok((GuestAddress(start), size))
}
