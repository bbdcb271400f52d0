//! Let go of the code pages a lifecycle call mapped in.
//!
//! A shim lives as long as its container and mostly sleeps in its ttrpc server, but
//! `create`/`start` run a large share of the runtime library once (spec validation,
//! mounts, cgroups, seccomp) and leave most of the binary's code and read-only data mapped:
//! ~6 of the shim's ~7 MiB resident. Those pages are clean copies of the binary's page
//! cache, so dropping this process's mappings of them loses nothing: the page cache keeps
//! them (shared with every other shim and reclaimable like any file page) and the next
//! call that needs a page maps it again with one minor fault.
//!
//! Only segments the program never writes are released: a PT_LOAD without PF_W and
//! outside PT_GNU_RELRO (a static PIE relocates its RELRO data into private anonymous
//! pages, which `MADV_DONTNEED` would reset to the unrelocated file contents). glibc's
//! `dl_iterate_phdr` is the program header walk; nothing here reinvents it.

use std::ffi::{c_int, c_void};

/// A page-aligned address range `[start, end)` of this process's own image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// The read-only and executable spans of the main program, page-aligned inward so that no
/// page that also holds writable data is included.
pub fn read_only_spans() -> Vec<Span> {
    let mut out = Vec::new();
    // SAFETY: the callback only reads the phdr array glibc hands it for the duration of
    // the call and writes into the Vec passed through `data`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect_main_program),
            (&mut out as *mut Vec<Span>).cast(),
        );
    }
    out
}

/// Drop this process's mappings of its read-only image pages; returns how many bytes of
/// address range were released. Safe from any thread at any time: the pages are clean
/// file pages and fault back in on their next use.
pub fn release() -> usize {
    read_only_spans()
        .into_iter()
        .filter(|&s| advise(s, libc::MADV_DONTNEED))
        .map(|s| s.end - s.start)
        .sum()
}

/// madvise `advice` over span `s` of our own read-only image; a failure only costs memory
/// or faults, so it is logged, not returned.
fn advise(s: Span, advice: c_int) -> bool {
    // SAFETY: callers pass spans from read_only_spans(): read-only, file-backed segments of
    // this image, whose contents the advice cannot change.
    let rc = unsafe { libc::madvise(s.start as *mut c_void, s.end - s.start, advice) };
    if rc != 0 {
        tracing::debug!(
            "madvise({advice}) of {:#x}-{:#x}: {}",
            s.start,
            s.end,
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// `dl_iterate_phdr` callback: the first object reported is the main program; collect its
/// releasable spans and stop.
unsafe extern "C" fn collect_main_program(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: glibc passes a valid info pointer for the duration of the callback, and
    // `data` is the `&mut Vec<Span>` read_only_spans passed in.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<Span>>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: dlpi_phdr points at dlpi_phnum program headers owned by the loaded image.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let base = info.dlpi_addr as usize;
    let page = page_size();
    let segment = |p: &libc::Elf64_Phdr| {
        let start = base + p.p_vaddr as usize;
        (start, start + p.p_memsz as usize)
    };
    let relro: Vec<(usize, usize)> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_GNU_RELRO)
        .map(segment)
        .collect();
    for p in phdrs {
        if p.p_type != libc::PT_LOAD || p.p_flags & libc::PF_W != 0 {
            continue;
        }
        let (lo, hi) = segment(p);
        let span = Span {
            start: lo.div_ceil(page) * page,
            end: hi / page * page,
        };
        let overlaps_relro = relro.iter().any(|&(a, b)| span.start < b && a < span.end);
        if span.start < span.end && !overlaps_relro {
            out.push(span);
        }
    }
    1
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident KiB of this process's mappings that lie inside `spans`, from /proc/self/smaps.
    fn resident_kib_in(spans: &[Span]) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
        let mut inside = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = spans.iter().any(|s| a < s.end && s.start < b);
                    continue;
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("Rss:") {
                    kib += v
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        kib
    }

    #[test]
    fn spans_are_the_programs_read_only_code_and_data() {
        let spans = read_only_spans();
        assert!(!spans.is_empty(), "no read-only PT_LOAD segment found");
        let here = spans_are_the_programs_read_only_code_and_data as *const () as usize;
        assert!(
            spans.iter().any(|s| s.start <= here && here < s.end),
            "this function's code ({here:#x}) is in none of {spans:x?}"
        );
        // Static data the program writes must never be in a released span.
        static WRITTEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        WRITTEN.store(1, std::sync::atomic::Ordering::Relaxed);
        let w = &WRITTEN as *const _ as usize;
        assert!(
            spans.iter().all(|s| !(s.start <= w && w < s.end)),
            "{w:#x} in {spans:x?}"
        );
        for s in &spans {
            assert!(s.start % page_size() == 0 && s.end % page_size() == 0 && s.start < s.end);
        }
    }

    #[test]
    fn release_unmaps_code_pages_and_the_program_keeps_running() {
        let spans = read_only_spans();
        let before = resident_kib_in(&spans);
        let released = release();
        let after = resident_kib_in(&spans);
        assert!(released > 0);
        assert!(
            after < before,
            "resident {before} KiB before, {after} KiB after"
        );
        // Code and read-only data fault back in unchanged.
        let v: Vec<String> = (0..100).map(|i| format!("{i:03}")).collect();
        assert_eq!(v.concat().len(), 300);
        assert_eq!(release(), released);
    }
}
