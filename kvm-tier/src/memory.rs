//! Guest memory: one memfd, mapped in the VMM and registered with KVM.
//!
//! The memfd (rather than anonymous memory) lets vhost-user backends such as
//! virtiofsd map the same pages: the fd and each region's offset in it are
//! what `VHOST_USER_SET_MEM_TABLE` sends.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// The guest's memory as the VMM sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Guest memory errors.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// memfd_create failed.
    #[error("creating the guest memory memfd: {0}")]
    Memfd(#[source] std::io::Error),
    /// ftruncate failed.
    #[error("sizing the guest memory memfd to {size} bytes: {source}")]
    Truncate {
        /// The size.
        size: u64,
        /// The cause.
        source: std::io::Error,
    },
    /// mmap failed.
    #[error("mapping guest memory region at {addr:#x}: {source}")]
    Mmap {
        /// Guest address of the region.
        addr: u64,
        /// The cause.
        source: vm_memory::mmap::MmapRegionError,
    },
    /// Overlapping or overflowing regions.
    #[error("building the guest memory map: {0}")]
    Regions(String),
    /// KVM refused a memory slot.
    #[error("registering memory slot {slot} with KVM: {source}")]
    KvmSlot {
        /// The slot.
        slot: u32,
        /// The cause.
        source: kvm_ioctls::Error,
    },
}

/// The guest RAM ranges for `size` bytes: below the MMIO gap, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

fn create_memfd(size: u64) -> Result<File, MemoryError> {
    let name = c"hull-guest-ram";
    // SAFETY: `name` is a valid NUL-terminated string; the flags are valid;
    // the return value is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|source| MemoryError::Truncate { size, source })?;
    Ok(file)
}

/// Creates `size` bytes of guest memory backed by one memfd.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let file = Arc::new(create_memfd(size)?);
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (addr, len) in ram_ranges(size) {
        let len_usize = usize::try_from(len)
            .map_err(|_| MemoryError::Regions(format!("region of {len} bytes")))?;
        let mmap = MmapRegion::from_file(FileOffset::from_arc(file.clone(), offset), len_usize)
            .map_err(|source| MemoryError::Mmap {
                addr: addr.0,
                source,
            })?;
        let region = GuestRegionMmap::new(mmap, addr)
            .ok_or_else(|| MemoryError::Regions(format!("region at {:#x} overflows", addr.0)))?;
        regions.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Regions(e.to_string()))
}

/// `MADV_POPULATE_WRITE` (Linux 5.14): fault a range in for writing.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Runs `copy` (which writes `len` bytes at `addr`) while a helper thread
/// faults in the second half of that range, so the two halves' page faults
/// are taken on two CPUs. On the development host a page fault costs a
/// hypervisor exit: copying the 14 MB kernel into fresh memfd pages took 12 ms
/// in one thread and 7.8 ms this way. (2 MiB pages would take far fewer faults,
/// but there the host's free page reporting hands 2 MiB blocks back to the
/// hypervisor, and refaulting those made a VM start after a pause 23-48 ms.)
/// The helper touches only pages of the range given (which the guest uses
/// anyway); if it cannot (an older kernel, a range outside one region),
/// `copy` faults them in itself.
pub fn prefault_while<T>(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: u64,
    copy: impl FnOnce() -> T,
) -> T {
    let half = (len / 2) & !0xfff;
    let Some(range) = host_range(mem, GuestAddress(addr.0.saturating_add(half)), len - half) else {
        return copy();
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            let (ptr, len) = range;
            // SAFETY: [ptr, ptr + len) lies inside one region's live mapping of `mem`, which
            // the scope outlives; MADV_POPULATE_WRITE only faults pages in (it writes nothing).
            let rc = unsafe { libc::madvise(ptr as *mut libc::c_void, len, MADV_POPULATE_WRITE) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                tracing::debug!(error = %e, "guest memory prefault refused");
            }
        });
        copy()
    })
}

/// The host address and length of `len` bytes at `addr`, page-aligned
/// outwards, if they lie inside one region.
fn host_range(mem: &GuestMemoryMmap, addr: GuestAddress, len: u64) -> Option<(usize, usize)> {
    let start = addr.0 & !0xfff;
    let end = addr.0.checked_add(len)?.checked_add(0xfff)? & !0xfff;
    let region = mem.find_region(GuestAddress(start))?;
    let last = region.start_addr().0.checked_add(region.len())?;
    if end > last || end <= start {
        return None;
    }
    let host = region
        .get_host_address(vm_memory::MemoryRegionAddress(
            start - region.start_addr().0,
        ))
        .ok()?;
    Some((host as usize, usize::try_from(end - start).ok()?))
}

/// Registers every region of `mem` with KVM, one slot each.
pub fn register_with_kvm(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| MemoryError::Regions(e.to_string()))?;
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        set_region(vm, r).map_err(|source| MemoryError::KvmSlot { slot, source })?;
    }
    Ok(())
}

fn set_region(vm: &VmFd, r: kvm_userspace_memory_region) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: the host range [userspace_addr, +memory_size) is a live mapping
    // owned by the guest memory object, which the VM keeps alive for as long
    // as the VM fd exists (see `Vm`).
    unsafe { vm.set_user_memory_region(r) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn ranges_split_around_the_mmio_gap() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(
            r[1],
            (GuestAddress(MMIO_GAP_END), (4 << 30) - MMIO_GAP_START)
        );
    }

    #[test]
    fn memory_is_file_backed_and_bounds_checked() {
        let mem = create_guest_memory(32 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        let region = mem.iter().next().unwrap();
        assert!(region.file_offset().is_some(), "memfd-backed");
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(1u32, GuestAddress(32 << 20)).is_err());
        assert!(mem.write_obj(1u32, GuestAddress((32 << 20) - 2)).is_err());
    }

    #[test]
    fn prefault_touches_only_the_second_half_of_the_range_and_never_writes() {
        let mem = create_guest_memory(32 << 20).unwrap();
        mem.write_obj(0x5a5a_u16, GuestAddress(0x30_0000)).unwrap();
        let copied = prefault_while(&mem, GuestAddress(0x10_0000), 0x40_0000, || {
            mem.read_obj::<u16>(GuestAddress(0x30_0000)).unwrap()
        });
        assert_eq!(copied, 0x5a5a, "the prefault leaves contents alone");
        let region = mem.iter().next().unwrap();
        let rss = resident_pages(region.as_ptr() as usize, 32 << 20);
        // 0x30_0000..0x50_0000: 512 pages (the one written before among them).
        assert_eq!(rss, 512, "the range's second half, no more");
        assert_eq!(
            host_range(&mem, GuestAddress(0x10_0000), 32 << 20),
            None,
            "past the end"
        );
    }

    /// Resident pages of the mapping at `addr` (mincore).
    fn resident_pages(addr: usize, len: usize) -> usize {
        let mut vec = vec![0u8; len / 4096];
        // SAFETY: a live mapping of `len` bytes and a vector of one byte per page.
        let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[test]
    fn large_memory_has_two_regions_in_one_file() {
        // Sparse memfd: nothing is touched, so this costs no RAM.
        let mem = create_guest_memory(MMIO_GAP_START + (64 << 20)).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let offs: Vec<u64> = mem
            .iter()
            .map(|r| r.file_offset().unwrap().start())
            .collect();
        assert_eq!(offs, vec![0, MMIO_GAP_START]);
        assert!(
            mem.write_obj(7u8, GuestAddress(MMIO_GAP_START)).is_err(),
            "gap is no RAM"
        );
        mem.write_obj(7u8, GuestAddress(MMIO_GAP_END)).unwrap();
    }
}
