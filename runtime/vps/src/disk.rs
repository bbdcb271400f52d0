//! A partition's root disk: a sparse file holding an ext4 filesystem, loop-mounted.
//!
//! The file's size is the tenant's hard limit (a full filesystem gives `ENOSPC`); it can
//! grow online (`LOOP_SET_CAPACITY`, then `resize2fs` on the mounted device). The
//! filesystem tools are Debian's e2fsprogs (`mkfs.ext4`, `resize2fs`, `e2fsck`).
//!
//! Loop devices are set up with the kernel's ioctls by hand: the `loopdev-3` crate
//! generates its bindings with bindgen (libclang at build time) for the same handful of
//! ioctls. Devices are attached with `LO_FLAGS_AUTOCLEAR`, so the kernel frees one when
//! its filesystem is unmounted. An image is never attached twice: two ext4 mounts of one
//! file would corrupt it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// The smallest image [`DiskImage::create`] makes: room for ext4's metadata and journal
/// plus a minimal system.
pub const MIN_SIZE: u64 = 64 << 20;
/// Image sizes are whole ext4 blocks.
pub const BLOCK_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// ext4's online resize ioctl needs CAP_SYS_RESOURCE.
    #[error("growing {path:?} while it is mounted needs CAP_SYS_RESOURCE, which hull does not have on this host: grow it while it is stopped")]
    OnlineGrowNeedsCapability { path: PathBuf },
    #[error("{path:?}: {size} bytes is below the minimum image size of {MIN_SIZE} bytes (64 MiB)")]
    TooSmall { path: PathBuf, size: u64 },
    #[error("{path:?}: {size} bytes is not a multiple of the {BLOCK_SIZE}-byte block size")]
    Unaligned { path: PathBuf, size: u64 },
    #[error("{path:?}: a disk image already exists there")]
    Exists { path: PathBuf },
    #[error("{path:?}: cannot shrink a disk image from {current} to {requested} bytes")]
    Shrink {
        path: PathBuf,
        current: u64,
        requested: u64,
    },
    #[error("{path:?}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("running {program} (Debian package e2fsprogs) on {path:?}: {source}")]
    Tool {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed on {path:?} ({status}): {stderr}")]
    ToolFailed {
        program: &'static str,
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
    #[error("no free loop device after {attempts} attempts (others kept taking them)")]
    NoFreeLoop { attempts: u32 },
    #[error("{path:?} is attached to {device:?} (mounted somewhere); unmount it first")]
    InUse { path: PathBuf, device: PathBuf },
    #[error("{path:?} is not the image mounted at {target:?}")]
    NotMountedAt { path: PathBuf, target: PathBuf },
    #[error("{device:?} still holds its disk image after unmounting {target:?}")]
    StillAttached { device: PathBuf, target: PathBuf },
}

pub type Result<T> = std::result::Result<T, DiskError>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_owned();
    move |source| DiskError::Io { op, path, source }
}

fn sys_err(op: &'static str, path: &Path) -> impl FnOnce(Errno) -> DiskError {
    let err = io_err(op, path);
    move |e| err(e.into())
}

/// A disk image file (it need not be mounted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImage {
    path: PathBuf,
}

/// An image mounted by [`DiskImage::mount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub target: PathBuf,
    /// `/dev/loopN`; released by the kernel when `target` is unmounted.
    pub loop_device: PathBuf,
}

/// What `/proc/self/mountinfo` says is mounted at a path (the topmost mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: PathBuf,
    pub fstype: String,
}

/// Filesystem usage of a mounted image, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub total: u64,
}

impl DiskImage {
    /// An existing image file.
    pub fn open(path: impl Into<PathBuf>) -> Result<DiskImage> {
        let path = path.into();
        fs::symlink_metadata(&path).map_err(io_err("opening disk image", &path))?;
        Ok(DiskImage { path })
    }

    /// Creates a sparse image of `size` bytes holding an empty ext4 filesystem. Nothing is
    /// left behind on failure.
    pub fn create(path: impl Into<PathBuf>, size: u64) -> Result<DiskImage> {
        let path = path.into();
        check_size(&path, size)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => DiskError::Exists { path: path.clone() },
                _ => io_err("creating disk image", &path)(e),
            })?;
        let made = file
            .set_len(size)
            .map_err(io_err("sizing disk image", &path))
            .and_then(|()| {
                drop(file);
                // -T default: mke2fs would pick 1 KiB blocks ("small") for a small image,
                // a poor fit once it has grown to many GiB.
                #[rustfmt::skip]
                let args = ["-q", "-F", "-m", "0", "-T", "default", "-b", "4096",
                            "-E", "lazy_itable_init=1,lazy_journal_init=1"];
                run_tool("mkfs.ext4", &args, &path, &[0])
            });
        if let Err(e) = made {
            if let Err(rm) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %rm, "removing half-made disk image");
            }
            return Err(e);
        }
        tracing::info!(path = %path.display(), size, "created disk image");
        Ok(DiskImage { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image's apparent size: the filesystem's limit.
    pub fn size(&self) -> Result<u64> {
        Ok(self.metadata()?.len())
    }

    /// Bytes the image actually takes on the host.
    pub fn allocated(&self) -> Result<u64> {
        Ok(self.metadata()?.blocks() * 512)
    }

    fn metadata(&self) -> Result<fs::Metadata> {
        fs::metadata(&self.path).map_err(io_err("reading disk image metadata", &self.path))
    }

    /// Attaches the image to a free loop device and mounts its ext4 filesystem at `target`
    /// (default flags plus `noatime`: a system container's root needs suid binaries, and
    /// device access is the device cgroup's business).
    pub fn mount(&self, target: &Path) -> Result<Mounted> {
        if let Some(device) = self.attached()? {
            return Err(DiskError::InUse {
                path: self.path.clone(),
                device,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(io_err("opening disk image", &self.path))?;
        let (device, loop_fd) = attach(&file)?;
        // Mounting takes its own reference; dropping ours then lets autoclear free the
        // device at unmount, or right away if the mount fails.
        nix::mount::mount(
            Some(&device),
            target,
            Some("ext4"),
            MsFlags::MS_NOATIME,
            None::<&str>,
        )
        .map_err(sys_err("mounting disk image", target))?;
        drop(loop_fd);
        tracing::info!(image = %self.path.display(), target = %target.display(), device = %device.display(), "mounted disk image");
        Ok(Mounted {
            target: target.to_owned(),
            loop_device: device,
        })
    }

    /// Whether this image is what is mounted at `target`.
    pub fn is_mounted(&self, target: &Path) -> Result<bool> {
        Ok(self.mounted_device(target)?.is_some())
    }

    fn mounted_device(&self, target: &Path) -> Result<Option<PathBuf>> {
        let Some(entry) = find_mount(target)? else {
            return Ok(None);
        };
        let ours = self.dev_ino()?;
        Ok((loop_backing(&entry.source)? == Some(ours)).then_some(entry.source))
    }

    /// The loop device this image is attached to, if any.
    pub fn attached(&self) -> Result<Option<PathBuf>> {
        let ours = self.dev_ino()?;
        let sys = Path::new("/sys/block");
        for entry in fs::read_dir(sys).map_err(io_err("listing block devices", sys))? {
            let name = entry
                .map_err(io_err("listing block devices", sys))?
                .file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
                continue;
            };
            // The `loop` directory exists only while the device is bound.
            if !sys.join(name).join("loop").exists() {
                continue;
            }
            let device = Path::new("/dev").join(name);
            if loop_backing(&device)? == Some(ours) {
                return Ok(Some(device));
            }
        }
        Ok(None)
    }

    fn dev_ino(&self) -> Result<(u64, u64)> {
        let m = self.metadata()?;
        Ok((m.dev(), m.ino()))
    }

    /// Grows the image to `new_size` bytes. With `mountpoint` (where this image is mounted)
    /// the filesystem grows online; without, the image must not be attached anywhere.
    /// Growing to the current size finishes an interrupted grow. Online growth needs
    /// CAP_SYS_RESOURCE (the kernel's resize ioctl); resize2fs reports its absence.
    pub fn grow(&self, mountpoint: Option<&Path>, new_size: u64) -> Result<()> {
        let current = self.size()?;
        if new_size < current {
            return Err(DiskError::Shrink {
                path: self.path.clone(),
                current,
                requested: new_size,
            });
        }
        check_size(&self.path, new_size)?;
        let device = match mountpoint {
            Some(target) => {
                Some(
                    self.mounted_device(target)?
                        .ok_or_else(|| DiskError::NotMountedAt {
                            path: self.path.clone(),
                            target: target.to_owned(),
                        })?,
                )
            }
            None => match self.attached()? {
                Some(device) => {
                    return Err(DiskError::InUse {
                        path: self.path.clone(),
                        device,
                    })
                }
                None => None,
            },
        };
        // Checked before the file grows: without the capability resize2fs would fail after
        // the image was already extended.
        if device.is_some()
            && !caps::has_cap(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_RESOURCE,
            )
            .unwrap_or(false)
        {
            return Err(DiskError::OnlineGrowNeedsCapability {
                path: self.path.clone(),
            });
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io_err("opening disk image", &self.path))?;
        file.set_len(new_size)
            .map_err(io_err("extending disk image", &self.path))?;
        match device {
            Some(device) => {
                let loop_fd = open_loop(&device)?;
                ioctl::set_capacity(&loop_fd).map_err(sys_err("LOOP_SET_CAPACITY", &device))?;
                run_tool("resize2fs", &[], &device, &[0])?;
            }
            None => {
                // resize2fs (1.47) grows a cleanly unmounted filesystem as it is, but
                // wants a forced check first whenever the filesystem was mounted since its
                // last check (seen with 1.47: "Please run 'e2fsck -f' first"), so `-f -p`:
                // a full but unattended check. e2fsck exits 1 when it fixed something.
                run_tool("e2fsck", &["-f", "-p"], &self.path, &[0, 1])?;
                run_tool("resize2fs", &[], &self.path, &[0])?;
            }
        }
        tracing::info!(path = %self.path.display(), from = current, to = new_size, "grew disk image");
        Ok(())
    }

    /// Removes the image file; refused while it is attached (mounted).
    pub fn destroy(self) -> Result<()> {
        if let Some(device) = self.attached()? {
            return Err(DiskError::InUse {
                path: self.path,
                device,
            });
        }
        fs::remove_file(&self.path).map_err(io_err("removing disk image", &self.path))?;
        tracing::info!(path = %self.path.display(), "destroyed disk image");
        Ok(())
    }
}

fn check_size(path: &Path, size: u64) -> Result<()> {
    if size < MIN_SIZE {
        return Err(DiskError::TooSmall {
            path: path.to_owned(),
            size,
        });
    }
    if !size.is_multiple_of(BLOCK_SIZE) {
        return Err(DiskError::Unaligned {
            path: path.to_owned(),
            size,
        });
    }
    Ok(())
}

/// Runs an e2fsprogs tool on `target` (its last argument); `ok` are the exit codes that
/// mean success.
fn run_tool(program: &'static str, args: &[&str], target: &Path, ok: &[i32]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .arg(target)
        .output()
        .map_err(|source| DiskError::Tool {
            program,
            path: target.to_owned(),
            source,
        })?;
    if !out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Err(DiskError::ToolFailed {
            program,
            path: target.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Unmounts whatever is mounted at `target` (`lazy`: detach it even while busy) and makes
/// sure a loop device under it lets go of its file. Nothing mounted there is not an error.
pub fn unmount(target: &Path, lazy: bool) -> Result<()> {
    let Some(entry) = find_mount(target)? else {
        tracing::debug!(target = %target.display(), "nothing mounted");
        return Ok(());
    };
    let backing = loop_backing(&entry.source)?;
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    nix::mount::umount2(target, flags).map_err(sys_err("unmounting", target))?;
    tracing::info!(target = %target.display(), lazy, "unmounted");
    let Some(backing) = backing else {
        return Ok(());
    };
    let device = entry.source;
    // Autoclear frees the device at the last close, normally within umount itself; a
    // lazily detached mount keeps it until its last user is gone.
    // The kernel releases the device asynchronously, later still while network
    // namespaces are being torn down (seen: over 500 ms): wait up to 5 s.
    let wait_released = |deadline: Instant| -> Result<()> {
        while !lazy && loop_backing(&device)? == Some(backing) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    wait_released(Instant::now() + Duration::from_secs(5))?;
    if loop_backing(&device)? == Some(backing) {
        // On a device still open this only sets autoclear: harmless, and it covers a
        // device attached without it.
        let fd = open_loop(&device)?;
        match ioctl::clear(&fd) {
            Ok(()) | Err(Errno::ENXIO) => {}
            Err(e) => return Err(sys_err("LOOP_CLR_FD", &device)(e)),
        }
        drop(fd);
        wait_released(Instant::now() + Duration::from_secs(5))?;
        if !lazy && loop_backing(&device)? == Some(backing) {
            return Err(DiskError::StillAttached {
                device,
                target: target.to_owned(),
            });
        }
    }
    Ok(())
}

/// The topmost mount at `target`, from `/proc/self/mountinfo`.
pub fn find_mount(target: &Path) -> Result<Option<MountEntry>> {
    let target = fs::canonicalize(target).map_err(io_err("resolving mount point", target))?;
    let info = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(info).map_err(io_err("reading", info))?;
    Ok(parse_mountinfo(&text, &target))
}

fn parse_mountinfo(text: &str, target: &Path) -> Option<MountEntry> {
    // Later lines are mounted on top of earlier ones.
    text.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let source = right.next()?;
        let point = left.split(' ').nth(4)?;
        (Path::new(&unescape(point)) == target).then(|| MountEntry {
            source: PathBuf::from(unescape(source)),
            fstype: fstype.to_owned(),
        })
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |a, c| a.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Usage of the filesystem mounted at `mountpoint`.
pub fn usage(mountpoint: &Path) -> Result<Usage> {
    let st = nix::sys::statvfs::statvfs(mountpoint).map_err(sys_err("statvfs", mountpoint))?;
    let frag = st.fragment_size() as u64;
    Ok(Usage {
        used: (st.blocks() - st.blocks_free()) as u64 * frag,
        total: st.blocks() as u64 * frag,
    })
}

// --- Loop devices ---

const ATTEMPTS: u32 = 16;

fn open_loop(device: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(device)
        .map_err(io_err("opening loop device", device))
}

/// Binds `file` to a free loop device with autoclear; returns it and its open fd (which
/// keeps the device bound until something else opens it).
fn attach(file: &File) -> Result<(PathBuf, File)> {
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = open_loop(ctl_path)?;
    for attempt in 1..=ATTEMPTS {
        let n = ioctl::get_free(&ctl).map_err(sys_err("LOOP_CTL_GET_FREE", ctl_path))?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let loop_fd = open_loop(&device)?;
        match ioctl::bind(&loop_fd, file) {
            Ok(()) => return Ok((device, loop_fd)),
            // Another process took the device between GET_FREE and binding.
            Err(Errno::EBUSY) => {
                tracing::debug!(device = %device.display(), attempt, "loop device taken, retrying");
            }
            Err(e) => return Err(sys_err("binding loop device", &device)(e)),
        }
    }
    Err(DiskError::NoFreeLoop { attempts: ATTEMPTS })
}

/// The (st_dev, st_ino) of the file bound to a loop device; `None` when it is unbound or
/// not a loop device.
fn loop_backing(device: &Path) -> Result<Option<(u64, u64)>> {
    if !device.to_string_lossy().starts_with("/dev/loop") {
        return Ok(None);
    }
    let fd = match File::open(device) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("opening loop device", device)(e)),
    };
    match ioctl::get_status(&fd) {
        Ok(info) => Ok(Some((info.lo_device, info.lo_inode))),
        Err(Errno::ENXIO) => Ok(None),
        Err(e) => Err(sys_err("LOOP_GET_STATUS64", device)(e)),
    }
}

/// Safe wrappers of the loop ioctls (linux/loop.h), which libc does not define.
mod ioctl {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    use nix::errno::Errno;

    const LO_FLAGS_AUTOCLEAR: u32 = 4;

    #[repr(C)]
    pub struct LoopInfo64 {
        pub lo_device: u64,
        pub lo_inode: u64,
        lo_rdevice: u64,
        lo_offset: u64,
        lo_sizelimit: u64,
        lo_number: u32,
        lo_encrypt_type: u32,
        lo_encrypt_key_size: u32,
        lo_flags: u32,
        lo_file_name: [u8; 64],
        lo_crypt_name: [u8; 64],
        lo_encrypt_key: [u8; 32],
        lo_init: [u64; 2],
    }

    #[repr(C)]
    struct LoopConfig {
        fd: u32,
        block_size: u32,
        info: LoopInfo64,
        reserved: [u64; 8],
    }

    fn zeroed_info() -> LoopInfo64 {
        // SAFETY: a plain C struct of integers and byte arrays; all zeroes is valid.
        unsafe { std::mem::zeroed() }
    }

    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
    nix::ioctl_none_bad!(loop_set_capacity, 0x4C07);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

    /// LOOP_CTL_GET_FREE on /dev/loop-control: the number of a free (maybe new) device.
    pub fn get_free(ctl: &File) -> nix::Result<i32> {
        // SAFETY: takes no argument; the fd is open for the call.
        unsafe { loop_ctl_get_free(ctl.as_raw_fd()) }
    }

    /// Binds `file` with autoclear: LOOP_CONFIGURE, or before Linux 5.8 LOOP_SET_FD and
    /// LOOP_SET_STATUS64.
    pub fn bind(dev: &File, file: &File) -> nix::Result<()> {
        let mut info = zeroed_info();
        info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let config = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid loop_config, and both fds are open, for the call.
        match unsafe { loop_configure(dev.as_raw_fd(), &config) } {
            Ok(_) => return Ok(()),
            Err(Errno::EINVAL | Errno::ENOTTY) => {}
            Err(e) => return Err(e),
        }
        // SAFETY: the argument is the backing file's fd, open for the call.
        unsafe { loop_set_fd(dev.as_raw_fd(), file.as_raw_fd()) }?;
        // SAFETY: `config.info` is a valid loop_info64 for the call.
        if let Err(e) = unsafe { loop_set_status64(dev.as_raw_fd(), &config.info) } {
            let _ = clear(dev);
            return Err(e);
        }
        Ok(())
    }

    /// LOOP_CLR_FD: unbinds now, or at the last close while something still has it open.
    pub fn clear(dev: &File) -> nix::Result<()> {
        // SAFETY: takes no argument; the fd is open for the call.
        unsafe { loop_clr_fd(dev.as_raw_fd()) }.map(drop)
    }

    /// LOOP_GET_STATUS64; ENXIO when nothing is bound.
    pub fn get_status(dev: &File) -> nix::Result<LoopInfo64> {
        let mut info = zeroed_info();
        // SAFETY: `info` is a writable loop_info64, and the fd open, for the call.
        unsafe { loop_get_status64(dev.as_raw_fd(), &mut info) }?;
        Ok(info)
    }

    /// LOOP_SET_CAPACITY: re-reads the backing file's size.
    pub fn set_capacity(dev: &File) -> nix::Result<()> {
        // SAFETY: takes no argument; the fd is open for the call.
        unsafe { loop_set_capacity(dev.as_raw_fd()) }.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MIB: u64 = 1 << 20;

    /// Why the loop-mount tests cannot run here, if they cannot.
    fn unsupported() -> Option<&'static str> {
        if !nix::unistd::geteuid().is_root() {
            return Some("not root");
        }
        if !Path::new("/dev/loop-control").exists() {
            return Some("no /dev/loop-control");
        }
        if Command::new("mkfs.ext4").arg("-V").output().is_err() {
            return Some("no mkfs.ext4 (e2fsprogs)");
        }
        None
    }

    /// Unmounts (lazily) whatever a failed test left mounted.
    struct Guard<'a>(&'a Path);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            let _ = unmount(self.0, true);
        }
    }

    fn has_cap(cap: u32) -> bool {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap();
        u64::from_str_radix(eff.trim(), 16).unwrap() & (1 << cap) != 0
    }

    /// Loop devices whose sysfs `backing_file` is `image`.
    fn loops_backing(image: &Path) -> Vec<PathBuf> {
        let image = fs::canonicalize(image).unwrap();
        glob_loops()
            .into_iter()
            .filter(|d| {
                fs::read_to_string(d.join("loop/backing_file"))
                    .is_ok_and(|b| Path::new(b.trim()) == image)
            })
            .collect()
    }

    fn glob_loops() -> Vec<PathBuf> {
        fs::read_dir("/sys/block")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("loop"))
            .collect()
    }

    /// Writes 1 MiB chunks to `path` until the filesystem is full.
    fn fill(path: &Path) -> io::Error {
        let mut f = File::create(path).unwrap();
        let chunk = vec![0xa5u8; MIB as usize];
        loop {
            if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
                return e;
            }
        }
    }

    #[test]
    fn sizes_and_existing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        assert!(matches!(
            DiskImage::create(&p, MIN_SIZE - BLOCK_SIZE),
            Err(DiskError::TooSmall { .. })
        ));
        assert!(matches!(
            DiskImage::create(&p, MIN_SIZE + 1),
            Err(DiskError::Unaligned { .. })
        ));
        assert!(!p.exists());
        fs::write(&p, b"keep").unwrap();
        let err = DiskImage::create(&p, MIN_SIZE).unwrap_err();
        assert!(matches!(err, DiskError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"keep");
    }

    #[test]
    fn mountinfo_parsing() {
        let text = "22 1 252:1 / / rw - ext4 /dev/vda rw\n\
                    30 22 7:3 / /srv/a\\040b rw,noatime shared:1 - ext4 /dev/loop3 rw\n\
                    31 30 0:5 / /srv/a\\040b rw - tmpfs tmpfs rw\n";
        let top = parse_mountinfo(text, Path::new("/srv/a b")).unwrap();
        assert_eq!(top.fstype, "tmpfs");
        let text = text.lines().take(2).collect::<Vec<_>>().join("\n");
        let e = parse_mountinfo(&text, Path::new("/srv/a b")).unwrap();
        assert_eq!(
            (e.source.as_path(), e.fstype.as_str()),
            (Path::new("/dev/loop3"), "ext4")
        );
        assert_eq!(parse_mountinfo(&text, Path::new("/srv")), None);
    }

    #[test]
    fn lifecycle_limit_grow_unmount_destroy() {
        if let Some(why) = unsupported() {
            println!("skipped: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.img");
        let target = dir.path().join("mnt");
        let other = dir.path().join("other");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&other).unwrap();

        let image = DiskImage::create(&path, 64 * MIB).unwrap();
        assert_eq!(image.size().unwrap(), 64 * MIB);
        assert!(image.allocated().unwrap() < 64 * MIB, "sparse");
        assert!(!image.is_mounted(&target).unwrap());

        let _guard = Guard(&target);
        let mounted = image.mount(&target).unwrap();
        assert!(image.is_mounted(&target).unwrap());
        assert_eq!(find_mount(&target).unwrap().unwrap().fstype, "ext4");
        assert_eq!(
            loops_backing(&path),
            vec![Path::new("/sys/block").join(mounted.loop_device.file_name().unwrap())]
        );
        assert!(
            matches!(image.mount(&other), Err(DiskError::InUse { .. })),
            "attached twice"
        );

        // The size is a hard limit.
        fs::write(target.join("hello"), b"hi").unwrap();
        let err = fill(&target.join("big"));
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert_eq!(image.size().unwrap(), 64 * MIB);
        let before = usage(&target).unwrap();
        assert!(
            before.total <= 64 * MIB && before.used > before.total * 9 / 10,
            "{before:?}"
        );

        // Online growth.
        assert!(matches!(
            image.grow(Some(&target), 64 * MIB - BLOCK_SIZE),
            Err(DiskError::Shrink { .. })
        ));
        assert!(matches!(
            image.grow(Some(&target), 64 * MIB + 1),
            Err(DiskError::Unaligned { .. })
        ));
        assert!(matches!(
            image.grow(Some(&other), 96 * MIB),
            Err(DiskError::NotMountedAt { .. })
        ));
        assert!(matches!(
            image.grow(None, 96 * MIB),
            Err(DiskError::InUse { .. })
        ));
        // EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE (24), which some sandboxes drop.
        let mut total = before.total;
        if has_cap(24) {
            image.grow(Some(&target), 96 * MIB).unwrap();
            assert_eq!(image.size().unwrap(), 96 * MIB);
            let after = usage(&target).unwrap();
            assert!(after.total >= total + 30 * MIB, "{before:?} -> {after:?}");
            fs::write(target.join("more"), vec![1u8; 16 * MIB as usize]).unwrap();
            total = after.total;
        } else {
            println!("skipped: online grow (no CAP_SYS_RESOURCE here)");
        }
        assert!(matches!(
            image.clone().destroy(),
            Err(DiskError::InUse { .. })
        ));

        unmount(&target, false).unwrap();
        assert!(!image.is_mounted(&target).unwrap());
        assert_eq!(
            loops_backing(&path),
            Vec::<PathBuf>::new(),
            "loop device released"
        );
        assert_eq!(image.attached().unwrap(), None);
        unmount(&target, false).unwrap();

        // Offline growth keeps the data.
        assert!(matches!(
            image.grow(None, image.size().unwrap() - BLOCK_SIZE),
            Err(DiskError::Shrink { .. })
        ));
        image.grow(None, 128 * MIB).unwrap();
        image.mount(&target).unwrap();
        assert!(usage(&target).unwrap().total >= total + 30 * MIB);
        assert_eq!(fs::read(target.join("hello")).unwrap(), b"hi");
        fs::write(target.join("more2"), vec![1u8; 16 * MIB as usize]).unwrap();
        unmount(&target, true).unwrap();
        assert_eq!(
            loops_backing(&path),
            Vec::<PathBuf>::new(),
            "released after lazy unmount"
        );

        image.destroy().unwrap();
        assert!(!path.exists());
    }
}
