//! Shifting a rootfs's ownership into a partition's user-namespace id range: container id
//! `i < size` becomes host id `base + i`, for owners, file capabilities (`rootid`) and
//! POSIX ACL entries.
//!
//! The walk works on descriptors (`O_PATH|O_NOFOLLOW`, `fchownat(AT_EMPTY_PATH)`), never
//! follows symlinks and stays on the root's filesystem. xattrs and modes are set through
//! `/proc/self/fd/N`, which reaches the inode an `O_PATH` descriptor holds. The capability
//! and ACL encodings are done by hand: no well-kept crate shifts them.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

const CAP_XATTR: &str = "security.capability";
const ACL_XATTRS: [&str; 2] = ["system.posix_acl_access", "system.posix_acl_default"];

#[derive(Debug, thiserror::Error)]
pub enum IdShiftError {
    #[error("{path:?}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path:?}: {what} {id} is outside the {size} ids a partition maps")]
    Unmappable {
        path: PathBuf,
        what: &'static str,
        id: u32,
        size: u32,
    },
    #[error("{path:?}: malformed {xattr} xattr ({len} bytes)")]
    BadXattr {
        path: PathBuf,
        xattr: &'static str,
        len: usize,
    },
    #[error("id range {base}+{size} overflows 32-bit ids")]
    Range { base: u32, size: u32 },
}

pub type Result<T> = std::result::Result<T, IdShiftError>;

/// What [`shift_tree`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShiftStats {
    pub entries: u64,
    pub caps: u64,
    pub acls: u64,
}

struct Shift {
    base: u32,
    size: u32,
    dev: u64,
    /// Inodes with several links, so each is shifted once.
    seen: HashSet<u64>,
    stats: ShiftStats,
}

/// Chowns every entry under `root` (itself included) from container ids to host ids
/// `base..base+size`. Ids `>= size` cannot be mapped and stop the walk with an error
/// naming the path; entries already shifted stay shifted.
pub fn shift_tree(root: &Path, base: u32, size: u32) -> Result<ShiftStats> {
    if base.checked_add(size).is_none() {
        return Err(IdShiftError::Range { base, size });
    }
    let fd = nix::fcntl::open(root, path_flags(), Mode::empty()).map_err(sys("opening", root))?;
    let st = nix::sys::stat::fstat(&fd).map_err(sys("fstat", root))?;
    let mut shift = Shift {
        base,
        size,
        dev: st.st_dev,
        seen: HashSet::new(),
        stats: ShiftStats::default(),
    };
    shift.entry(fd, &st, root)?;
    tracing::info!(root = %root.display(), base, size, stats = ?shift.stats, "shifted ids");
    Ok(shift.stats)
}

fn path_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn sys(op: &'static str, path: &Path) -> impl FnOnce(nix::errno::Errno) -> IdShiftError {
    let path = path.to_owned();
    move |e| IdShiftError::Io {
        op,
        path,
        source: e.into(),
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IdShiftError {
    let path = path.to_owned();
    move |source| IdShiftError::Io { op, path, source }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

impl Shift {
    fn map(&self, path: &Path, what: &'static str, id: u32) -> Result<u32> {
        if id >= self.size {
            return Err(IdShiftError::Unmappable {
                path: path.to_owned(),
                what,
                id,
                size: self.size,
            });
        }
        Ok(self.base + id)
    }

    fn entry(&mut self, fd: OwnedFd, st: &FileStat, path: &Path) -> Result<()> {
        let kind = kind(st);
        let first_visit = kind == SFlag::S_IFDIR || st.st_nlink < 2 || self.seen.insert(st.st_ino);
        if first_visit {
            self.chown(&fd, st, kind, path)?;
        }
        if kind == SFlag::S_IFDIR {
            self.dir(&fd, path)?;
        }
        Ok(())
    }

    fn dir(&mut self, fd: &OwnedFd, path: &Path) -> Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(fd, ".", flags, Mode::empty()).map_err(sys("opening", path))?;
        for entry in dir.iter() {
            let entry = entry.map_err(sys("reading directory", path))?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let child = path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
            let cfd = nix::fcntl::openat(fd, name, path_flags(), Mode::empty())
                .map_err(sys("opening", &child))?;
            let st = nix::sys::stat::fstat(&cfd).map_err(sys("fstat", &child))?;
            // A mount point: another filesystem, not part of this image.
            if st.st_dev != self.dev {
                tracing::debug!(path = %child.display(), "not crossing into another mount");
                continue;
            }
            self.entry(cfd, &st, &child)?;
        }
        Ok(())
    }

    fn chown(&mut self, fd: &OwnedFd, st: &FileStat, kind: SFlag, path: &Path) -> Result<()> {
        let uid = self.map(path, "uid", st.st_uid)?;
        let gid = self.map(path, "gid", st.st_gid)?;
        let proc = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let symlink = kind == SFlag::S_IFLNK;
        // chown drops file capabilities, so read them first.
        let cap = match kind == SFlag::S_IFREG {
            true => get(&proc, CAP_XATTR, path)?,
            false => None,
        };
        nix::unistd::fchownat(
            fd.as_fd(),
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_EMPTY_PATH,
        )
        .map_err(sys("chown", path))?;
        self.stats.entries += 1;
        if symlink {
            return Ok(());
        }
        // chown clears setuid/setgid on non-directories.
        if st.st_mode & 0o6000 != 0 {
            let mode = std::fs::Permissions::from_mode(st.st_mode & 0o7777);
            std::fs::set_permissions(&proc, mode).map_err(io_err("chmod", path))?;
        }
        if let Some(cap) = cap {
            let cap = self.shift_cap(&cap, path)?;
            set(&proc, CAP_XATTR, &cap, path)?;
            self.stats.caps += 1;
        }
        for name in ACL_XATTRS {
            if let Some(mut acl) = get(&proc, name, path)? {
                if self.shift_acl(&mut acl, path, name)? {
                    set(&proc, name, &acl, path)?;
                    self.stats.acls += 1;
                }
            }
        }
        Ok(())
    }

    /// A `vfs_cap_data` as revision 3 with the partition's root as `rootid`.
    fn shift_cap(&self, cap: &[u8], path: &Path) -> Result<Vec<u8>> {
        let bad = || IdShiftError::BadXattr {
            path: path.to_owned(),
            xattr: CAP_XATTR,
            len: cap.len(),
        };
        let magic = u32::from_le_bytes(*cap.first_chunk().ok_or_else(bad)?);
        let flags = magic & 0x00ff_ffff;
        // Revision 1 has one 32-bit set, 2 and 3 two; 3 adds the rootid.
        let (sets, rootid) = match (magic >> 24, cap.len()) {
            (1, 12) => ([&cap[4..12], &[0; 8][..]].concat(), self.base),
            (2, 20) => (cap[4..20].to_vec(), self.base),
            (3, 24) => {
                let old = u32::from_le_bytes([cap[20], cap[21], cap[22], cap[23]]);
                (
                    cap[4..20].to_vec(),
                    self.map(path, "capability rootid", old)?,
                )
            }
            _ => return Err(bad()),
        };
        let mut out = (0x0300_0000 | flags).to_le_bytes().to_vec();
        out.extend_from_slice(&sets);
        out.extend_from_slice(&rootid.to_le_bytes());
        Ok(out)
    }

    /// Shifts the ids of named-user and named-group entries of a `posix_acl_xattr`; false
    /// when it has none.
    fn shift_acl(&self, acl: &mut [u8], path: &Path, xattr: &'static str) -> Result<bool> {
        const USER: u16 = 0x02;
        const GROUP: u16 = 0x08;
        if acl.len() < 4 || !(acl.len() - 4).is_multiple_of(8) || acl[..4] != 2u32.to_le_bytes() {
            return Err(IdShiftError::BadXattr {
                path: path.to_owned(),
                xattr,
                len: acl.len(),
            });
        }
        let mut changed = false;
        for e in acl[4..].chunks_exact_mut(8) {
            let what = match u16::from_le_bytes([e[0], e[1]]) {
                USER => "ACL uid",
                GROUP => "ACL gid",
                _ => continue,
            };
            let id = self.map(path, what, u32::from_le_bytes([e[4], e[5], e[6], e[7]]))?;
            e[4..].copy_from_slice(&id.to_le_bytes());
            changed = true;
        }
        Ok(changed)
    }
}

fn get(proc: &Path, name: &'static str, path: &Path) -> Result<Option<Vec<u8>>> {
    match xattr::get_deref(proc, name) {
        Ok(v) => Ok(v),
        // Filesystems without xattrs (or this namespace) have nothing to shift.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(io_err("reading xattr", path)(e)),
    }
}

fn set(proc: &Path, name: &'static str, value: &[u8], path: &Path) -> Result<()> {
    xattr::set_deref(proc, name, value).map_err(io_err("writing xattr", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    const BASE: u32 = 200_000;
    const SIZE: u32 = 65_536;

    fn owner(path: &Path) -> (u32, u32) {
        let m = fs::symlink_metadata(path).unwrap();
        (m.uid(), m.gid())
    }

    fn lchown(path: &Path, id: u32) {
        std::os::unix::fs::lchown(path, Some(id), Some(id)).unwrap();
    }

    /// A `posix_acl_xattr` with one named user and one named group.
    fn acl(user: u32, group: u32) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 7u16, u32::MAX),
            (0x02, 4, user),
            (0x04, 5, u32::MAX),
            (0x08, 4, group),
            (0x10, 5, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    fn acl_ids(v: &[u8]) -> Vec<u32> {
        v[4..]
            .chunks(8)
            .filter(|e| matches!(u16::from_le_bytes([e[0], e[1]]), 0x02 | 0x08))
            .map(|e| u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
            .collect()
    }

    #[test]
    fn shifts_owners_modes_caps_and_acls() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: not root");
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let target = outside.path().join("target");
        fs::write(&target, b"host file").unwrap();
        fs::create_dir_all(root.join("etc/sub")).unwrap();
        fs::write(root.join("etc/sub/f"), b"x").unwrap();
        fs::write(root.join("user"), b"x").unwrap();
        lchown(&root.join("user"), 1000);
        symlink(&target, root.join("link")).unwrap();
        fs::write(root.join("sudo"), b"x").unwrap();
        fs::set_permissions(root.join("sudo"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(root.join("linked"), b"x").unwrap();
        lchown(&root.join("linked"), 5);
        fs::hard_link(root.join("linked"), root.join("etc/hardlink")).unwrap();
        // v2 capability: effective, permitted = cap_net_raw (13).
        let ping = root.join("ping");
        fs::write(&ping, b"x").unwrap();
        let mut v2 = 0x0200_0001u32.to_le_bytes().to_vec();
        v2.extend_from_slice(&[(1u32 << 13).to_le_bytes(), [0; 4], [0; 4], [0; 4]].concat());
        xattr::set(&ping, CAP_XATTR, &v2).unwrap();
        let acls = xattr::set(root.join("user"), ACL_XATTRS[0], &acl(1000, 2000))
            .and_then(|()| xattr::set(root.join("etc"), ACL_XATTRS[1], &acl(3, 4)));
        if let Err(e) = &acls {
            println!("skipped: ACL part ({e})");
        }

        let stats = shift_tree(root, BASE, SIZE).unwrap();

        // root, etc, etc/sub, etc/sub/f, user, link, sudo, linked (+ its second name), ping
        assert_eq!(stats.entries, 9, "{stats:?}");
        for p in ["", "etc", "etc/sub", "etc/sub/f", "link", "sudo", "ping"] {
            assert_eq!(owner(&root.join(p)), (BASE, BASE), "{p}");
        }
        assert_eq!(owner(&root.join("user")), (BASE + 1000, BASE + 1000));
        assert_eq!(owner(&root.join("etc/hardlink")), (BASE + 5, BASE + 5));
        assert_eq!(owner(&target), (0, 0), "symlink target untouched");
        let mode = fs::metadata(root.join("sudo")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o4755);

        let v3 = xattr::get(&ping, CAP_XATTR).unwrap().unwrap();
        assert_eq!(stats.caps, 1);
        assert_eq!(&v3[..4], &0x0300_0001u32.to_le_bytes());
        assert_eq!(&v3[4..20], &v2[4..]);
        assert_eq!(&v3[20..], &BASE.to_le_bytes());

        if acls.is_ok() {
            assert_eq!(stats.acls, 2);
            let a = xattr::get(root.join("user"), ACL_XATTRS[0])
                .unwrap()
                .unwrap();
            assert_eq!(acl_ids(&a), [BASE + 1000, BASE + 2000]);
            let d = xattr::get(root.join("etc"), ACL_XATTRS[1])
                .unwrap()
                .unwrap();
            assert_eq!(acl_ids(&d), [BASE + 3, BASE + 4]);
        }
    }

    #[test]
    fn stays_on_the_roots_filesystem() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let flags = nix::mount::MsFlags::empty();
        if let Err(e) = nix::mount::mount(Some("tmpfs"), &mnt, Some("tmpfs"), flags, None::<&str>) {
            println!("skipped: cannot mount tmpfs ({e})");
            return;
        }
        fs::write(mnt.join("f"), b"x").unwrap();
        let res = shift_tree(dir.path(), BASE, SIZE);
        let owned = owner(&mnt.join("f"));
        nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert_eq!(res.unwrap().entries, 1);
        assert_eq!(owned, (0, 0));
    }

    #[test]
    fn unmappable_ids_are_refused_with_the_path() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nobody");
        fs::write(&f, b"x").unwrap();
        lchown(&f, 70_000);
        let err = shift_tree(dir.path(), BASE, SIZE).unwrap_err();
        assert!(
            matches!(&err, IdShiftError::Unmappable { path, id: 70_000, .. } if *path == f),
            "{err}"
        );
        assert!(err.to_string().contains("nobody"), "{err}");
        assert!(matches!(
            shift_tree(dir.path(), u32::MAX - 10, SIZE),
            Err(IdShiftError::Range { .. })
        ));
    }

    #[test]
    fn cap_and_acl_encodings() {
        let s = Shift {
            base: BASE,
            size: SIZE,
            dev: 0,
            seen: HashSet::new(),
            stats: ShiftStats::default(),
        };
        let p = Path::new("/x");
        let mut v3 = 0x0300_0000u32.to_le_bytes().to_vec();
        v3.extend_from_slice(&[0xffu8; 16]);
        v3.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            &s.shift_cap(&v3, p).unwrap()[20..],
            &(BASE + 7).to_le_bytes()
        );
        v3[20..].copy_from_slice(&SIZE.to_le_bytes());
        assert!(matches!(
            s.shift_cap(&v3, p),
            Err(IdShiftError::Unmappable { .. })
        ));
        assert!(matches!(
            s.shift_cap(&v3[..22], p),
            Err(IdShiftError::BadXattr { .. })
        ));
        let mut a = acl(1, 2);
        assert!(s.shift_acl(&mut a, p, ACL_XATTRS[0]).unwrap());
        assert_eq!(acl_ids(&a), [BASE + 1, BASE + 2]);
        let mut bad = a[..10].to_vec();
        assert!(s.shift_acl(&mut bad, p, ACL_XATTRS[0]).is_err());
    }
}
