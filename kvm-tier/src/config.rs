//! The VM configuration as given by a caller, and its validation.
//!
//! Validation happens before any KVM object is created so that a user error
//! (a missing kernel, too little memory, a socket path that cannot be bound)
//! is reported with its cause instead of a KVM failure later on.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Smallest guest memory accepted, in MiB: room for the boot structures, a
/// kernel and a small initramfs.
pub const MIN_MEM_MIB: u32 = 16;
/// Largest guest memory accepted, in MiB (1 TiB).
pub const MAX_MEM_MIB: u32 = 1 << 20;
/// Largest vCPU count accepted (APIC ids are 8-bit in the MADT we write).
pub const MAX_VCPUS: u8 = 254;
/// Longest kernel command line, in bytes, without the NUL terminator.
pub const MAX_CMDLINE_LEN: usize = 4095;
/// `sun_path` holds 108 bytes including the NUL terminator.
pub const MAX_UNIX_PATH_LEN: usize = 107;
/// The lowest context id a guest may have (0-2 are reserved by virtio-vsock).
pub const MIN_GUEST_CID: u64 = 3;

/// What the file given as `kernel` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelFormat {
    /// Detect a bzImage or an ELF `vmlinux` from the file's header.
    #[default]
    Auto,
    /// A flat 64-bit payload: copied to the kernel load address and entered
    /// there in long mode, with the same page tables, registers and zero page
    /// that a Linux kernel gets. Used by tests and tiny firmware-less guests.
    Flat64,
}

/// The kernel kind found by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// A bzImage (x86 boot protocol, "HdrS" at offset 0x202).
    BzImage,
    /// An ELF `vmlinux`.
    Elf,
    /// A flat 64-bit payload (see [`KernelFormat::Flat64`]).
    Flat64,
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialOutput {
    /// Discard the console output.
    #[default]
    Sink,
    /// The VMM's standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

/// Where the guest's serial console input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialInput {
    /// No input.
    #[default]
    None,
    /// The VMM's standard input.
    Stdin,
    /// A file, FIFO or terminal, opened non-blocking at start.
    File(PathBuf),
}

/// The hybrid vsock device: a guest context id and the host unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id (>= 3).
    pub guest_cid: u64,
    /// The host unix socket. The VMM listens on it for host-initiated
    /// connections (`CONNECT <port>\n`); guest-initiated connections to host
    /// port `P` reach `<uds_path>_<P>`.
    pub uds_path: PathBuf,
}

/// How virtiofsd confines itself (its `--sandbox` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsSandbox {
    /// New mount, PID and network namespaces with the shared directory as
    /// its root (needs root or user namespaces).
    #[default]
    Namespace,
    /// `chroot` into the shared directory (needs root).
    Chroot,
    /// No sandbox (tests, unprivileged hosts without user namespaces).
    None,
}

impl FsSandbox {
    /// The value of virtiofsd's `--sandbox` option.
    pub fn as_arg(self) -> &'static str {
        match self {
            FsSandbox::Namespace => "namespace",
            FsSandbox::Chroot => "chroot",
            FsSandbox::None => "none",
        }
    }
}

/// The longest virtio-fs tag (the `tag` field of the device's config space).
pub const MAX_FS_TAG_LEN: usize = 36;

/// Where virtiofsd is looked for when [`VirtiofsOptions::binary`] is unset,
/// after `$HULL_VIRTIOFSD`: the cache `kvm-tier/tools/install-virtiofsd`
/// fills, then the paths distributions use.
pub const VIRTIOFSD_PATHS: &[&str] = &[
    "/var/cache/hull/virtiofsd/bin/virtiofsd",
    "/usr/libexec/virtiofsd",
    "/usr/lib/qemu/virtiofsd",
    "/usr/bin/virtiofsd",
];

/// How the shared directory is served (only used with `shared_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtiofsOptions {
    /// The virtiofsd binary; `None` searches `$HULL_VIRTIOFSD`, then
    /// [`VIRTIOFSD_PATHS`].
    pub binary: Option<PathBuf>,
    /// The tag the guest mounts (`mount -t virtiofs <tag> /mnt`).
    pub tag: String,
    /// virtiofsd's own sandbox.
    pub sandbox: FsSandbox,
    /// virtiofsd's `--log-level` (its lines go to the VMM's log).
    pub log_level: String,
}

impl Default for VirtiofsOptions {
    fn default() -> Self {
        Self {
            binary: None,
            tag: String::from("hullfs"),
            sandbox: FsSandbox::Namespace,
            log_level: String::from("error"),
        }
    }
}

impl VirtiofsOptions {
    /// The virtiofsd binary to run, if one can be found.
    pub fn find_binary(&self) -> Option<PathBuf> {
        if let Some(b) = &self.binary {
            return Some(b.clone());
        }
        if let Some(p) = std::env::var_os("HULL_VIRTIOFSD").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        VIRTIOFSD_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A micro-VM to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Number of vCPUs, 1..=254.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// The kernel image.
    pub kernel: PathBuf,
    /// How to read `kernel`.
    pub kernel_format: KernelFormat,
    /// An optional initramfs.
    pub initramfs: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// A host directory shared with the guest over virtio-fs, served by a
    /// virtiofsd the VMM starts and stops.
    pub shared_dir: Option<PathBuf>,
    /// How `shared_dir` is served.
    pub virtiofs: VirtiofsOptions,
    /// The userspace vsock device.
    pub vsock: Option<VsockConfig>,
    /// The serial console.
    pub serial: SerialOutput,
    /// The serial console's input.
    pub serial_input: SerialInput,
    /// seccomp filters for the VMM's vCPU and device threads.
    pub seccomp: crate::seccomp::SeccompLevel,
    /// Also announce the virtio-mmio devices on the kernel command line
    /// (`virtio_mmio.device=<size>@<base>:<irq>`), for kernels built with
    /// `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES`; ACPI describes them anyway.
    /// Off by default: a kernel that also reads ACPI would probe each twice.
    pub mmio_cmdline_devices: bool,
}

/// The kernel command line for hull's machine, used unless the caller
/// gives one: the console on COM1; `reboot=k` resets through the i8042 (the
/// FADT's reset register too); `panic=-1` reboots at once on a panic (the
/// pvpanic device reports the panic first, so the VM ends with
/// [`crate::ExitReason::Panic`]); `pci=conf1`: the only PCI is a host bridge
/// behind configuration mechanism #1 (no devices, no root bridge in ACPI, so
/// nothing is enumerated), and the kernel need not look for PCI BIOS, type 2
/// or MMCONFIG access. (`pci=off` would leave the kernel printing `PCI:
/// Fatal: No config space access function found`.)
/// A given command line is used unchanged; this one is the recommended base.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=conf1";

impl VmConfig {
    /// A configuration with one vCPU, 128 MiB and a serial console on stdout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            vcpus: 1,
            mem_mib: 128,
            kernel: kernel.into(),
            kernel_format: KernelFormat::Auto,
            initramfs: None,
            cmdline: String::from(DEFAULT_CMDLINE),
            shared_dir: None,
            virtiofs: VirtiofsOptions::default(),
            vsock: None,
            serial: SerialOutput::Stdout,
            serial_input: SerialInput::None,
            seccomp: crate::seccomp::SeccompLevel::Enforce,
            mmio_cmdline_devices: false,
        }
    }

    /// Checks the configuration against the host's files and the VMM's
    /// limits; returns the kernel kind found.
    pub fn validate(&self) -> Result<KernelKind, ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpuCount {
                count: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        if self.mem_mib < MIN_MEM_MIB {
            return Err(ConfigError::MemoryTooSmall {
                mib: self.mem_mib,
                min: MIN_MEM_MIB,
            });
        }
        if self.mem_mib > MAX_MEM_MIB {
            return Err(ConfigError::MemoryTooLarge {
                mib: self.mem_mib,
                max: MAX_MEM_MIB,
            });
        }
        if self.cmdline.len() > MAX_CMDLINE_LEN {
            return Err(ConfigError::CmdlineTooLong {
                len: self.cmdline.len(),
                max: MAX_CMDLINE_LEN,
            });
        }
        if self.cmdline.bytes().any(|b| b == 0 || !b.is_ascii()) {
            return Err(ConfigError::CmdlineInvalid);
        }
        let kind = detect_kernel(&self.kernel, self.kernel_format)?;
        if let Some(initrd) = &self.initramfs {
            let meta = std::fs::metadata(initrd).map_err(|source| ConfigError::Initramfs {
                path: initrd.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(ConfigError::NotAFile(initrd.clone()));
            }
        }
        if let Some(dir) = &self.shared_dir {
            if !dir.is_dir() {
                return Err(ConfigError::SharedDirNotADirectory(dir.clone()));
            }
            let tag = &self.virtiofs.tag;
            if tag.is_empty() || tag.len() > MAX_FS_TAG_LEN || tag.bytes().any(|b| b == 0) {
                return Err(ConfigError::FsTag {
                    tag: tag.clone(),
                    max: MAX_FS_TAG_LEN,
                });
            }
            match self.virtiofs.find_binary() {
                Some(b) if is_executable(&b) => {}
                Some(b) => return Err(ConfigError::VirtiofsdNotExecutable(b)),
                None => return Err(ConfigError::VirtiofsdMissing),
            }
        }
        if let Some(vsock) = &self.vsock {
            if vsock.guest_cid < MIN_GUEST_CID || vsock.guest_cid > u64::from(u32::MAX) {
                return Err(ConfigError::InvalidCid(vsock.guest_cid));
            }
            // Guest-initiated connections use `<path>_<port>`: leave room for
            // the longest port suffix ("_4294967295").
            let longest = vsock.uds_path.as_os_str().len() + 11;
            if longest > MAX_UNIX_PATH_LEN {
                return Err(ConfigError::SocketPathTooLong {
                    path: vsock.uds_path.clone(),
                    len: longest,
                    max: MAX_UNIX_PATH_LEN,
                });
            }
            let parent = vsock
                .uds_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(ConfigError::SocketDirMissing(parent.to_path_buf()));
            }
        }
        if let SerialInput::File(path) = &self.serial_input {
            if !path.exists() {
                return Err(ConfigError::SerialInputMissing(path.clone()));
            }
        }
        if let SerialOutput::File(path) = &self.serial {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(ConfigError::SerialDirMissing(parent.to_path_buf()));
            }
        }
        Ok(kind)
    }
}

/// Reads the kernel's header and tells what it is.
pub fn detect_kernel(path: &Path, format: KernelFormat) -> Result<KernelKind, ConfigError> {
    let mut file = File::open(path).map_err(|source| ConfigError::Kernel {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| ConfigError::Kernel {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile(path.to_path_buf()));
    }
    if meta.len() == 0 {
        return Err(ConfigError::NotAKernel {
            path: path.to_path_buf(),
            why: "the file is empty",
        });
    }
    if format == KernelFormat::Flat64 {
        return Ok(KernelKind::Flat64);
    }
    let mut head = [0u8; 0x206];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ConfigError::Kernel {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let head = &head[..got];
    if head.starts_with(b"\x7fELF") {
        // EI_CLASS 2 = 64-bit, e_machine 62 = x86-64.
        if head.len() >= 20 && head[4] == 2 && head[18] == 62 && head[19] == 0 {
            return Ok(KernelKind::Elf);
        }
        return Err(ConfigError::NotAKernel {
            path: path.to_path_buf(),
            why: "an ELF file that is not x86-64",
        });
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(KernelKind::BzImage);
    }
    Err(ConfigError::NotAKernel {
        path: path.to_path_buf(),
        why: "neither a bzImage (no \"HdrS\" at 0x202) nor an x86-64 ELF",
    })
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// vCPU count out of range.
    #[error("{count} vCPUs requested; between 1 and {max} are supported")]
    VcpuCount {
        /// What was asked.
        count: u8,
        /// The limit.
        max: u8,
    },
    /// Not enough memory.
    #[error("guest memory of {mib} MiB is too small; at least {min} MiB are needed")]
    MemoryTooSmall {
        /// What was asked.
        mib: u32,
        /// The limit.
        min: u32,
    },
    /// Too much memory.
    #[error("guest memory of {mib} MiB is too large; at most {max} MiB are supported")]
    MemoryTooLarge {
        /// What was asked.
        mib: u32,
        /// The limit.
        max: u32,
    },
    /// The command line does not fit.
    #[error("kernel command line of {len} bytes is too long; at most {max} bytes")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The command line has a NUL or a non-ASCII byte.
    #[error("kernel command line holds a NUL or non-ASCII byte")]
    CmdlineInvalid,
    /// The kernel cannot be opened or read.
    #[error("kernel {path}: {source}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel file is no kernel.
    #[error("{path} is not a kernel: {why}")]
    NotAKernel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// A path that must name a regular file does not.
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    /// The initramfs cannot be opened.
    #[error("initramfs {path}: {source}")]
    Initramfs {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The shared directory is missing.
    #[error("shared directory {0} does not exist or is not a directory")]
    SharedDirNotADirectory(PathBuf),
    /// Bad guest CID.
    #[error("vsock guest CID {0} is invalid; it must be between 3 and 2^32-1")]
    InvalidCid(u64),
    /// The vsock socket path cannot be bound.
    #[error("vsock socket path {path} is too long: with a port suffix it needs {len} bytes, a unix socket path holds at most {max}")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length with the longest port suffix.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The vsock socket's directory is missing.
    #[error("directory {0} of the vsock socket does not exist")]
    SocketDirMissing(PathBuf),
    /// The serial output file's directory is missing.
    #[error("directory {0} of the serial output file does not exist")]
    SerialDirMissing(PathBuf),
    /// The serial input file does not exist.
    #[error("serial input {0} does not exist")]
    SerialInputMissing(PathBuf),
    /// The virtio-fs tag is empty, too long or holds a NUL.
    #[error("virtio-fs tag {tag:?} is invalid: it needs 1 to {max} bytes and no NUL")]
    FsTag {
        /// The tag.
        tag: String,
        /// The longest tag.
        max: usize,
    },
    /// No virtiofsd was found for the shared directory.
    #[error("a shared directory needs virtiofsd: set $HULL_VIRTIOFSD or run kvm-tier/tools/install-virtiofsd")]
    VirtiofsdMissing,
    /// The virtiofsd given is not an executable file.
    #[error("virtiofsd {0} is not an executable file")]
    VirtiofsdNotExecutable(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    fn fake_bzimage(dir: &Path) -> PathBuf {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        write_file(dir, "bzImage", &img)
    }

    #[test]
    fn detects_bzimage_elf_and_rejects_others() {
        let d = tempfile::tempdir().unwrap();
        let bz = fake_bzimage(d.path());
        assert_eq!(
            detect_kernel(&bz, KernelFormat::Auto).unwrap(),
            KernelKind::BzImage
        );

        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[18] = 62;
        let e = write_file(d.path(), "vmlinux", &elf);
        assert_eq!(
            detect_kernel(&e, KernelFormat::Auto).unwrap(),
            KernelKind::Elf
        );

        elf[18] = 183; // aarch64
        let e = write_file(d.path(), "vmlinux-arm", &elf);
        assert!(matches!(
            detect_kernel(&e, KernelFormat::Auto),
            Err(ConfigError::NotAKernel { .. })
        ));

        let t = write_file(d.path(), "text", b"#!/bin/sh\necho hi\n");
        let err = detect_kernel(&t, KernelFormat::Auto).unwrap_err();
        assert!(matches!(err, ConfigError::NotAKernel { .. }), "{err}");
        assert!(err.to_string().contains("is not a kernel"));
        // The same bytes are accepted as an explicit flat payload.
        assert_eq!(
            detect_kernel(&t, KernelFormat::Flat64).unwrap(),
            KernelKind::Flat64
        );

        let empty = write_file(d.path(), "empty", b"");
        assert!(matches!(
            detect_kernel(&empty, KernelFormat::Flat64),
            Err(ConfigError::NotAKernel { .. })
        ));
    }

    #[test]
    fn missing_kernel_and_directory_kernel() {
        let d = tempfile::tempdir().unwrap();
        let cfg = VmConfig::new(d.path().join("nope"));
        let err = cfg.validate().unwrap_err();
        assert!(matches!(err, ConfigError::Kernel { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
        let cfg = VmConfig::new(d.path());
        assert!(matches!(cfg.validate(), Err(ConfigError::NotAFile(_))));
    }

    #[test]
    fn limits() {
        let d = tempfile::tempdir().unwrap();
        let base = VmConfig::new(fake_bzimage(d.path()));
        assert_eq!(base.validate().unwrap(), KernelKind::BzImage);

        let mut c = base.clone();
        c.mem_mib = 8;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MemoryTooSmall { mib: 8, .. })
        ));
        c.mem_mib = MAX_MEM_MIB + 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MemoryTooLarge { .. })
        ));

        let mut c = base.clone();
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::VcpuCount { .. })));
        c.vcpus = 255;
        assert!(matches!(c.validate(), Err(ConfigError::VcpuCount { .. })));

        let mut c = base.clone();
        c.cmdline = "a".repeat(MAX_CMDLINE_LEN + 1);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CmdlineTooLong { .. })
        ));
        c.cmdline = "console=ttyS0\0evil".into();
        assert!(matches!(c.validate(), Err(ConfigError::CmdlineInvalid)));

        let mut c = base.clone();
        c.initramfs = Some(d.path().join("missing.cpio"));
        assert!(matches!(c.validate(), Err(ConfigError::Initramfs { .. })));

        let mut c = base.clone();
        c.shared_dir = Some(d.path().join("nodir"));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SharedDirNotADirectory(_))
        ));
        c.shared_dir = Some(d.path().to_path_buf());
        c.virtiofs.binary = Some(d.path().join("no-virtiofsd"));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::VirtiofsdNotExecutable(_))
        ));
        c.virtiofs.binary = Some("/bin/sh".into());
        assert!(c.validate().is_ok());
        c.virtiofs.tag = "x".repeat(MAX_FS_TAG_LEN + 1);
        assert!(matches!(c.validate(), Err(ConfigError::FsTag { .. })));
        c.virtiofs.tag = String::new();
        assert!(matches!(c.validate(), Err(ConfigError::FsTag { .. })));

        let mut c = base.clone();
        c.serial = SerialOutput::File(d.path().join("no/such/dir/serial.log"));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SerialDirMissing(_))
        ));
    }

    #[test]
    fn vsock_socket_checks() {
        let d = tempfile::tempdir().unwrap();
        let mut c = VmConfig::new(fake_bzimage(d.path()));
        c.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: d.path().join("v.sock"),
        });
        assert!(c.validate().is_ok());

        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(100)));
        c.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: long,
        });
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::SocketPathTooLong { .. }));
        assert!(err.to_string().contains("too long"));

        c.vsock = Some(VsockConfig {
            guest_cid: 2,
            uds_path: d.path().join("v.sock"),
        });
        assert!(matches!(c.validate(), Err(ConfigError::InvalidCid(2))));

        c.vsock = Some(VsockConfig {
            guest_cid: 3,
            uds_path: d.path().join("missing/v.sock"),
        });
        assert!(matches!(
            c.validate(),
            Err(ConfigError::SocketDirMissing(_))
        ));
    }
}
