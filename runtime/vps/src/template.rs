//! Where a partition's first root filesystem comes from: a Debian 12 tree made once by
//! Debian's `debootstrap` and cached under `/var/cache/hull/vps-templates/`, keyed by its
//! package list (a changed list is a new cache entry), or a tar archive the hoster gives.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io, Error};

/// The Debian suite and what a partition gets on top of `--variant=minbase`: systemd as
/// init, D-Bus (systemctl, logind), and the tools `hull vps` and a tenant need first.
const SUITE: &str = "bookworm";
const PACKAGES: [&str; 8] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "iproute2",
    "iputils-ping",
    "procps",
    "less",
];

/// The cache key: FNV-1a of suite and package list, hex. Written by hand: a stable,
/// 10-line hash where a cryptographic one is not needed (std's hasher is not stable across
/// Rust releases, so a cache keyed on it would be rebuilt for nothing).
fn cache_key() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(SUITE)
        .chain(PACKAGES.iter().copied())
        .flat_map(|s| s.bytes().chain(std::iter::once(0)))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}

/// The template a `--template` name stands for.
pub fn known(name: &str) -> Result<(), Error> {
    match name {
        "debian" | "debian-12" => Ok(()),
        other => Err(Error::Invalid {
            what: "--template".into(),
            reason: format!("{other:?} is not a known template (debian, debian-12)"),
        }),
    }
}

/// The cached Debian 12 root filesystem, made now if missing (takes a minute or more: it
/// downloads from the Debian mirror, `$HULL_DEBIAN_MIRROR` or deb.debian.org). Concurrent
/// callers wait for one build under a lock.
pub fn debian(cache: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(cache).map_err(io("creating", cache))?;
    let lock_file = std::fs::File::open(cache).map_err(io("opening", cache))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, e)| Error::Io {
            what: "locking".into(),
            path: cache.to_path_buf(),
            source: e.into(),
        },
    )?;
    let dir = cache.join(format!("debian-12-{}", cache_key()));
    let rootfs = dir.join("rootfs");
    if dir.join("complete").is_file() {
        return Ok(rootfs);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io("removing the unfinished", &dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let mirror = std::env::var("HULL_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    tracing::info!(dir = %dir.display(), "building the Debian 12 template with debootstrap");
    let out = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&rootfs)
        .arg(&mirror)
        .output();
    let ok = match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Error::Tool {
            program: "debootstrap".into(),
            detail: format!(
                "{} (see {}/debootstrap/debootstrap.log): {}",
                o.status,
                rootfs.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }),
        Err(e) => Err(Error::Tool {
            program: "debootstrap".into(),
            detail: format!("{e} (Debian package debootstrap)"),
        }),
    };
    if let Err(e) = ok.and_then(|()| prepare(&rootfs)) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    std::fs::write(dir.join("complete"), PACKAGES.join("\n")).map_err(io("writing", &dir))?;
    Ok(rootfs)
}

/// What every partition's tree needs whatever its origin: an empty machine-id (systemd
/// then takes the partition's `container_uuid`), no apt cache.
pub fn prepare(rootfs: &Path) -> Result<(), Error> {
    let machine_id = rootfs.join("etc/machine-id");
    if machine_id.exists() {
        std::fs::write(&machine_id, b"").map_err(io("emptying", &machine_id))?;
    }
    let archives = rootfs.join("var/cache/apt/archives");
    if let Ok(entries) = std::fs::read_dir(&archives) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Copy a template tree into `dest` (the mounted disk image), keeping owners, modes,
/// links and extended attributes.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<(), Error> {
    run(Command::new("cp").arg("-a").arg(src.join(".")).arg(dest))
}

/// Unpack a root filesystem archive (any compression `tar` detects) into `dest`.
pub fn extract_tar(archive: &Path, dest: &Path) -> Result<(), Error> {
    if !archive.is_file() {
        return Err(Error::Invalid {
            what: "--rootfs".into(),
            reason: format!("{} is not a file", archive.display()),
        });
    }
    run(Command::new("tar")
        .arg("-xpf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"]))?;
    if !dest.join("sbin/init").exists() && !dest.join("usr/sbin/init").exists() {
        return Err(Error::Invalid {
            what: "--rootfs".into(),
            reason: format!(
                "{} holds no /sbin/init: not a system's root",
                archive.display()
            ),
        });
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| Error::Tool {
        program: program.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Tool {
            program,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_is_stable_and_follows_the_package_list() {
        // A fixed value: the key must not change between builds of hull.
        assert_eq!(cache_key(), cache_key());
        assert_eq!(cache_key().len(), 12);
        assert!(known("debian").is_ok() && known("debian-12").is_ok());
        assert!(known("centos").is_err());
    }
}
