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

/// Drop this process's mappings of its read-only image pages, and the calling thread's
/// stack pages below its current frame (see [`release_stack_below_frame`]). Returns how
/// many bytes of address range were released. Safe from any thread at any time: the
/// image pages are clean file pages that fault back in on their next use.
pub fn release() -> usize {
    // The stack first: the code that finds its bounds is then released with the rest.
    let stack = release_stack_below_frame();
    let image: usize = read_only_spans()
        .into_iter()
        .filter(|&s| advise(s, libc::MADV_DONTNEED))
        .map(|s| s.end - s.start)
        .sum();
    stack + image
}

/// What is kept below the caller's frame: room for madvise's own frames and a signal
/// handler, far more than they use.
const STACK_KEEP: usize = 16 * 1024;

/// A lifecycle call runs deep (tens of KiB of stack), and the ttrpc worker thread that ran
/// it would keep those pages for the shim's whole life. MADV_DONTNEED the calling thread's
/// stack from its lowest address up to STACK_KEEP below this frame: nothing live is there,
/// and a later call that reaches it gets zeroed pages. Returns the bytes released.
#[inline(never)]
pub fn release_stack_below_frame() -> usize {
    let Some(lo) = current_stack_low() else {
        return 0;
    };
    let marker = 0u8;
    let frame = std::hint::black_box(&marker) as *const u8 as usize;
    let page = page_size();
    let top = frame.saturating_sub(STACK_KEEP) / page * page;
    let lo = lo.div_ceil(page) * page;
    if top <= lo {
        return 0;
    }
    // SAFETY: [lo, top) is this thread's own stack, STACK_KEEP bytes and more below the
    // current frame: no live data is there, and the pages refault as zeroed memory.
    let rc = unsafe { libc::madvise(lo as *mut c_void, top - lo, libc::MADV_DONTNEED) };
    if rc == 0 {
        top - lo
    } else {
        0
    }
}

/// The lowest address of the calling thread's stack, from glibc.
fn current_stack_low() -> Option<usize> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: pthread_getattr_np initialises `attr` when it returns 0; it is destroyed
    // below after the stack bounds are read.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
        return None;
    }
    let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: `attr` was initialised by pthread_getattr_np above.
    let rc = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) };
    // SAFETY: as above; destroyed exactly once.
    unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
    (rc == 0 && !addr.is_null()).then_some(addr as usize)
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

    /// Touches `kib` KiB of stack in one frame, then returns.
    #[inline(never)]
    fn deep(kib: usize) -> u8 {
        let mut buf = [0u8; 256 * 1024];
        for i in (0..kib * 1024).step_by(4096) {
            buf[i] = 1;
        }
        std::hint::black_box(&mut buf)[0]
    }

    #[test]
    fn the_dead_stack_below_the_callers_frame_is_released() {
        std::thread::spawn(|| {
            let here = 0u8;
            let sp = &here as *const u8 as usize;
            let lo = current_stack_low().expect("thread stack bounds");
            assert!(lo < sp);
            let stack = [Span { start: lo, end: sp }];
            assert_eq!(deep(256), 1);
            let before = resident_kib_in(&stack);
            let released = release_stack_below_frame();
            let after = resident_kib_in(&stack);
            assert!(released > 0);
            assert!(
                before >= 256 && after + 200 < before,
                "stack {before} KiB resident before, {after} after"
            );
            // The released part is usable again.
            assert_eq!(deep(256), 1);
        })
        .join()
        .expect("thread");
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
