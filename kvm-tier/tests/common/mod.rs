//! Helpers for tests that run small guests: KVM and assembler probes, and
//! a GNU `as` wrapper producing flat 64-bit payloads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why guest tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm is missing".into());
    }
    if let Err(e) = hull_kvm::kvm_available() {
        return Some(e);
    }
    for tool in ["as", "objcopy", "ld"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!(
                "`{tool}` (Debian package binutils) is not installed"
            ));
        }
    }
    None
}

/// Returns early from a test, printing why, when guests cannot run here.
#[macro_export]
macro_rules! require_guest_env {
    () => {
        if let Some(reason) = common::skip_reason() {
            println!("skipped: {reason}");
            return;
        }
    };
}

/// Macros shared by the guest programs.
pub const PRELUDE: &str = r#"
    .code64
    .text
    .globl _start
    .set SERIAL, 0x3f8
    .set BOOT_TIMER, 0x440
    .set DEBUG_EXIT, 0xf4
    .set I8042_CMD, 0x64

    .macro outb port, val
        mov $\port, %dx
        mov $\val, %al
        out %al, %dx
    .endm

    /* Ends the VM through the debug-exit port with code `code`. */
    .macro exit_with code
        mov $\code, %al
        mov $DEBUG_EXIT, %dx
        out %al, %dx
    99: jmp 99b
    .endm

    /* Compare `reg` with `imm`; on mismatch exit with `code`. */
    .macro expect reg, imm, code
        cmp $\imm, \reg
        je 98f
        exit_with \code
    98:
    .endm
"#;

/// Guest code writing `s` to the serial port, byte by byte.
pub fn print_str(s: &str) -> String {
    s.bytes()
        .map(|b| format!("    outb SERIAL, {b}\n"))
        .collect()
}

/// Assembles `body` (after [`PRELUDE`]) into a flat binary in `dir`.
pub fn assemble(dir: &Path, name: &str, body: &str) -> PathBuf {
    let src = dir.join(format!("{name}.s"));
    let obj = dir.join(format!("{name}.o"));
    let bin = dir.join(format!("{name}.bin"));
    std::fs::write(&src, format!("{PRELUDE}\n_start:\n{body}\n")).unwrap();
    let out = Command::new("as")
        .args(["--64", "-o"])
        .arg(&obj)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&obj)
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "objcopy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Assembles `source` as is (no prelude) and links it into an x86-64 ELF
/// executable with `.text` at `text_addr`, entry `_start`.
pub fn assemble_elf(dir: &Path, name: &str, source: &str, text_addr: u64) -> PathBuf {
    let src = dir.join(format!("{name}.s"));
    let obj = dir.join(format!("{name}.o"));
    let elf = dir.join(format!("{name}.elf"));
    std::fs::write(&src, source).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("as").args(["--64", "-o"]).arg(&obj).arg(&src));
    run(Command::new("ld")
        .args(["-m", "elf_x86_64", "-e", "_start"])
        .arg(format!("-Ttext={text_addr:#x}"))
        .arg("-o")
        .arg(&elf)
        .arg(&obj));
    elf
}

/// A configuration running `payload` as a flat 64-bit guest.
pub fn flat_config(payload: &Path, serial: &Path) -> hull_kvm::VmConfig {
    let mut cfg = hull_kvm::VmConfig::new(payload);
    cfg.kernel_format = hull_kvm::KernelFormat::Flat64;
    cfg.mem_mib = 32;
    cfg.serial = hull_kvm::SerialOutput::File(serial.to_path_buf());
    cfg
}

/// An uncompressed newc cpio archive of (path, mode, contents), written by hull-kvm's own
/// initramfs builder (directories and symlinks by their mode's file type).
pub fn cpio_newc(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut fs = hull_kvm::initramfs::Initramfs::new();
    for (name, mode, data) in entries {
        match mode & 0o170000 {
            0o040000 => {
                fs.dir(name);
            }
            0o120000 => {
                fs.symlink(name, &String::from_utf8_lossy(data));
            }
            _ => {
                fs.bytes(name, data.clone(), *mode);
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir for the archive");
    let out = dir.path().join("initramfs.cpio");
    fs.write_cpio(&out).expect("writing the archive");
    std::fs::read(&out).expect("reading the archive back")
}

/// A guest kernel for the boot probe: `$HULL_TEST_KERNEL`, else the newest
/// `/boot/vmlinuz-*`.
pub fn find_guest_kernel() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HULL_TEST_KERNEL") {
        return Some(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The virtiofsd to test with: `$HULL_VIRTIOFSD`, else the cache that
/// `kvm-tier/tools/install-virtiofsd` fills; `Err` says why there is none.
pub fn find_virtiofsd() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("HULL_VIRTIOFSD").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("$HULL_VIRTIOFSD ({}) is not a file", p.display()))
        };
    }
    let cached = PathBuf::from(hull_kvm::config::VIRTIOFSD_PATHS[0]);
    if cached.is_file() {
        return Ok(cached);
    }
    Err(format!(
        "virtiofsd not found: set $HULL_VIRTIOFSD or run kvm-tier/tools/install-virtiofsd (fills {})",
        cached.display()
    ))
}

/// The sandbox virtiofsd can use here: its namespaces as root, none otherwise.
pub fn virtiofsd_sandbox() -> hull_kvm::FsSandbox {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        hull_kvm::FsSandbox::Namespace
    } else {
        hull_kvm::FsSandbox::None
    }
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// A FUSE_INIT request (fuse_in_header + fuse_init_in, protocol 7.31).
pub fn fuse_init_request(unique: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(104);
    r.extend_from_slice(&104u32.to_le_bytes()); // len
    r.extend_from_slice(&26u32.to_le_bytes()); // FUSE_INIT
    r.extend_from_slice(&unique.to_le_bytes());
    r.extend_from_slice(&[0u8; 24]); // nodeid, uid, gid, pid, extlen, padding
    r.extend_from_slice(&7u32.to_le_bytes()); // major
    r.extend_from_slice(&31u32.to_le_bytes()); // minor
    r.resize(104, 0);
    r
}
