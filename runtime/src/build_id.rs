//! The running binary's identity, for caches whose contents depend on hull's code (the
//! seccomp filter cache): the GNU build ID the linker put in the executable, read from its
//! program headers in memory (no file access, every `create` pays for it), or, for a binary
//! linked without one, the executable file's device, inode, size and modification time.
//! The ELF note walk is written here: it is a dozen lines, not worth a parser crate.

use std::sync::OnceLock;

/// `NT_GNU_BUILD_ID`.
const NT_GNU_BUILD_ID: u32 = 3;

/// This process's binary identity (hex build ID, or `file:` + metadata); computed once.
pub fn current() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| match main_program_build_id() {
        Some(id) => id.iter().map(|b| format!("{b:02x}")).collect(),
        None => file_identity(),
    })
}

fn file_identity() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/exe") {
        Ok(m) => format!(
            "file:{}:{}:{}:{}.{}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ),
        // Nothing to tell builds apart by: a cache keyed on this never matches another
        // process's entries.
        Err(_) => format!("unknown:{}", std::process::id()),
    }
}

/// The build ID in a sequence of ELF notes (a `PT_NOTE` segment), if there is one.
fn find_build_id(mut notes: &[u8]) -> Option<Vec<u8>> {
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let pad = |n: usize| n.checked_add(3).map(|v| v & !3);
    while notes.len() >= 12 {
        let namesz = word(notes, 0)? as usize;
        let descsz = word(notes, 4)? as usize;
        let kind = word(notes, 8)?;
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = 12usize.checked_add(pad(namesz)?)?;
        let desc_end = desc_start.checked_add(descsz)?;
        if kind == NT_GNU_BUILD_ID && notes.get(12..name_end)? == b"GNU\0" {
            return notes.get(desc_start..desc_end).map(<[u8]>::to_vec);
        }
        notes = notes.get(desc_start.checked_add(pad(descsz)?)?..)?;
    }
    None
}

/// The build ID of the main program, from its `PT_NOTE` segments as loaded.
fn main_program_build_id() -> Option<Vec<u8>> {
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: the callback only reads the program headers and note segments the loader
    // reports for the first object (the main program), and stops the walk after it.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            (&mut found as *mut Option<Vec<u8>>).cast(),
        );
    }
    found
}

/// `dl_iterate_phdr` callback: looks at the first object only, then stops the walk.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and `data`
    // is the `Option<Vec<u8>>` main_program_build_id handed it.
    let (info, found) = unsafe { (&*info, &mut *data.cast::<Option<Vec<u8>>>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers of the loaded object.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    for h in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
        let start = (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize);
        // SAFETY: a PT_NOTE segment of a loaded object lies in its mapped memory, p_memsz
        // bytes from its load address.
        let notes = unsafe { std::slice::from_raw_parts(start as *const u8, h.p_memsz as usize) };
        if let Some(id) = find_build_id(notes) {
            *found = Some(id);
            break;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn the_build_id_note_is_found_among_others_and_garbage_is_not_read_past() {
        let mut notes = note(b"GNU\0", 1, &[0; 16]); // NT_GNU_ABI_TAG
        notes.extend(note(b"stapsdt\0", 3, &[9; 5]));
        notes.extend(note(b"GNU\0", NT_GNU_BUILD_ID, &[0xab, 0xcd, 0xef]));
        assert_eq!(find_build_id(&notes), Some(vec![0xab, 0xcd, 0xef]));
        assert_eq!(find_build_id(&notes[..notes.len() - 4]), None, "truncated");
        let mut huge = note(b"GNU\0", NT_GNU_BUILD_ID, &[1]);
        huge[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(find_build_id(&huge), None);
        assert_eq!(find_build_id(&[]), None);
    }

    #[test]
    fn the_test_binary_has_a_stable_identity_matching_readelf() {
        let id = current();
        assert!(!id.is_empty());
        assert_eq!(id, current());
        // Debian's linker adds a build ID by default: then it is what readelf prints.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        if let Ok(out) = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().find(|l| l.contains("Build ID:")) {
                assert_eq!(line.split_whitespace().last(), Some(id));
            }
        }
    }
}
