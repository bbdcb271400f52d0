//! Turning the fstab-style `options` of an OCI mount into `mount(2)` flags (pure code).
//!
//! The table follows runc's `specconv`: each known option either sets or clears one `MS_*`
//! flag; propagation options are collected separately (they need their own `mount(2)` call
//! after the mount exists); the recursive `r*` attributes go to `mount_setattr(2)`; anything
//! else is passed to the filesystem as the data string.

use libc::c_ulong;

/// `MOUNT_ATTR_*` from `<linux/mount.h>` (used by the recursive `r*` options).
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;
pub const MOUNT_ATTR__ATIME: u64 = 0x0000_0070;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0000_0000;
pub const MOUNT_ATTR_NOATIME: u64 = 0x0000_0010;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x0000_0020;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x0000_0080;
pub const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// The atime "enum" flags (mutually exclusive).
pub const MS_ATIME_ENUM: c_ulong = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;
/// Every atime-related flag.
pub const MS_ATIME_ALL: c_ulong = MS_ATIME_ENUM | libc::MS_NODIRATIME;
/// Flags the kernel locks on mounts inherited into a less privileged user namespace.
pub const MS_LOCKABLE: c_ulong =
    libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOSUID | MS_ATIME_ALL;

/// Recursive mount attributes (`rro`, `rnosuid`, ...) applied with `mount_setattr(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecAttr {
    pub set: u64,
    /// Attributes to clear; includes `MOUNT_ATTR__ATIME` when an atime option was given.
    pub clear: u64,
}

/// The parsed `options` of one mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags to set.
    pub flags: c_ulong,
    /// `MS_*` flags the user explicitly asked to clear (`rw`, `suid`, `exec`, ...).
    pub cleared: c_ulong,
    /// Propagation changes (`MS_PRIVATE`, `MS_SHARED | MS_REC`, ...), applied in order after
    /// the mount.
    pub propagation: Vec<c_ulong>,
    /// Recursive attributes, if any `r*` attribute option was given.
    pub rec_attr: Option<RecAttr>,
    /// Everything else, comma-joined, for the filesystem.
    pub data: String,
    /// `tmpcopyup`: copy the directory's previous contents into the new tmpfs.
    pub tmpcopyup: bool,
    /// `idmap` / `ridmap` was requested (not supported yet).
    pub idmap: bool,
}

impl MountOptions {
    /// A bind mount (`bind` or `rbind` given).
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }

    /// A recursive bind mount (`rbind`).
    pub fn is_rec(&self) -> bool {
        self.flags & libc::MS_REC != 0
    }

    /// The data string, or `None` when empty.
    pub fn data(&self) -> Option<&str> {
        (!self.data.is_empty()).then_some(self.data.as_str())
    }
}

/// `(clears, flag)` for every known flag option.
fn flag_option(opt: &str) -> Option<(bool, c_ulong)> {
    Some(match opt {
        "defaults" => (false, 0),
        "ro" => (false, libc::MS_RDONLY),
        "rw" => (true, libc::MS_RDONLY),
        "nosuid" => (false, libc::MS_NOSUID),
        "suid" => (true, libc::MS_NOSUID),
        "nodev" => (false, libc::MS_NODEV),
        "dev" => (true, libc::MS_NODEV),
        "noexec" => (false, libc::MS_NOEXEC),
        "exec" => (true, libc::MS_NOEXEC),
        "sync" => (false, libc::MS_SYNCHRONOUS),
        "async" => (true, libc::MS_SYNCHRONOUS),
        "dirsync" => (false, libc::MS_DIRSYNC),
        "remount" => (false, libc::MS_REMOUNT),
        "mand" => (false, libc::MS_MANDLOCK),
        "nomand" => (true, libc::MS_MANDLOCK),
        "noatime" => (false, libc::MS_NOATIME),
        "atime" => (true, libc::MS_NOATIME),
        "nodiratime" => (false, libc::MS_NODIRATIME),
        "diratime" => (true, libc::MS_NODIRATIME),
        "relatime" => (false, libc::MS_RELATIME),
        "norelatime" => (true, libc::MS_RELATIME),
        "strictatime" => (false, libc::MS_STRICTATIME),
        "nostrictatime" => (true, libc::MS_STRICTATIME),
        "lazytime" => (false, libc::MS_LAZYTIME),
        "nolazytime" => (true, libc::MS_LAZYTIME),
        "iversion" => (false, libc::MS_I_VERSION),
        "noiversion" => (true, libc::MS_I_VERSION),
        "silent" => (false, libc::MS_SILENT),
        "loud" => (true, libc::MS_SILENT),
        "nosymfollow" => (false, libc::MS_NOSYMFOLLOW),
        "symfollow" => (true, libc::MS_NOSYMFOLLOW),
        "bind" => (false, libc::MS_BIND),
        "rbind" => (false, libc::MS_BIND | libc::MS_REC),
        _ => return None,
    })
}

/// A propagation option (`private`, `rshared`, ...) as `MS_*` flags; also the values of
/// `linux.rootfsPropagation`.
pub fn propagation_flags(opt: &str) -> Option<c_ulong> {
    Some(match opt {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// `(clears, MOUNT_ATTR_*)` for the recursive attribute options.
fn rec_attr_option(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (false, MOUNT_ATTR_RDONLY),
        "rrw" => (true, MOUNT_ATTR_RDONLY),
        "rnosuid" => (false, MOUNT_ATTR_NOSUID),
        "rsuid" => (true, MOUNT_ATTR_NOSUID),
        "rnodev" => (false, MOUNT_ATTR_NODEV),
        "rdev" => (true, MOUNT_ATTR_NODEV),
        "rnoexec" => (false, MOUNT_ATTR_NOEXEC),
        "rexec" => (true, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (false, MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (true, MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

/// The recursive atime options, which select one value of the atime "enum".
fn rec_atime_option(opt: &str) -> Option<u64> {
    Some(match opt {
        "rrelatime" => MOUNT_ATTR_RELATIME,
        "rnoatime" => MOUNT_ATTR_NOATIME,
        "rstrictatime" => MOUNT_ATTR_STRICTATIME,
        // runc maps the negative forms to "not set"; the kernel needs one enum value, so
        // they fall back to relatime, the kernel default.
        "rnorelatime" | "ratime" | "rnostrictatime" => MOUNT_ATTR_RELATIME,
        _ => return None,
    })
}

/// Parse the options of one mount. Later options win over earlier ones (`ro,rw` is rw).
pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut out = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_ref();
        if let Some((clear, flag)) = flag_option(opt) {
            if clear {
                out.flags &= !flag;
                out.cleared |= flag;
            } else {
                out.flags |= flag;
                out.cleared &= !flag;
            }
        } else if let Some(p) = propagation_flags(opt) {
            out.propagation.push(p);
        } else if let Some((clear, attr)) = rec_attr_option(opt) {
            let ra = out.rec_attr.get_or_insert_with(RecAttr::default);
            if clear {
                ra.set &= !attr;
                ra.clear |= attr;
            } else {
                ra.set |= attr;
                ra.clear &= !attr;
            }
        } else if let Some(atime) = rec_atime_option(opt) {
            let ra = out.rec_attr.get_or_insert_with(RecAttr::default);
            ra.clear |= MOUNT_ATTR__ATIME;
            ra.set = (ra.set & !MOUNT_ATTR__ATIME) | atime;
        } else if opt == "tmpcopyup" {
            out.tmpcopyup = true;
        } else if opt == "idmap" || opt == "ridmap" {
            out.idmap = true;
        } else if !opt.is_empty() {
            data.push(opt);
        }
    }
    out.data = data.join(",");
    out
}

/// `statvfs(2)`'s `f_flag` (`ST_*`) as the matching `MS_*` flags.
pub fn statvfs_to_ms(st_flags: u64) -> c_ulong {
    const ST_NOSYMFOLLOW: u64 = 0x2000;
    let table: [(u64, c_ulong); 10] = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_MANDLOCK, libc::MS_MANDLOCK),
        (libc::ST_SYNCHRONOUS, libc::MS_SYNCHRONOUS),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (ST_NOSYMFOLLOW, libc::MS_NOSYMFOLLOW),
    ];
    let mut flags = 0;
    for (st, ms) in table {
        if st_flags & st == st {
            flags |= ms;
        }
    }
    // MS_STRICTATIME is not reported by statfs: no other atime flag means strictatime.
    if flags & MS_ATIME_ENUM == 0 {
        flags |= libc::MS_STRICTATIME;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_set_and_clear() {
        let o = parse(&["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(
            o.flags,
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV | libc::MS_RDONLY
        );
        assert_eq!(o.cleared, 0);
        assert!(o.data.is_empty());
        assert_eq!(o.data(), None);

        let o = parse(&["ro", "rw", "suid", "exec", "dev"]);
        assert_eq!(o.flags, 0);
        assert_eq!(
            o.cleared,
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV
        );

        // The last one wins.
        let o = parse(&["rw", "ro"]);
        assert_eq!(o.flags, libc::MS_RDONLY);
        assert_eq!(o.cleared, 0);
    }

    #[test]
    fn every_flag_pair() {
        let pairs: [(&str, &str, c_ulong); 13] = [
            ("sync", "async", libc::MS_SYNCHRONOUS),
            ("mand", "nomand", libc::MS_MANDLOCK),
            ("noatime", "atime", libc::MS_NOATIME),
            ("nodiratime", "diratime", libc::MS_NODIRATIME),
            ("relatime", "norelatime", libc::MS_RELATIME),
            ("strictatime", "nostrictatime", libc::MS_STRICTATIME),
            ("lazytime", "nolazytime", libc::MS_LAZYTIME),
            ("iversion", "noiversion", libc::MS_I_VERSION),
            ("silent", "loud", libc::MS_SILENT),
            ("nosuid", "suid", libc::MS_NOSUID),
            ("nodev", "dev", libc::MS_NODEV),
            ("noexec", "exec", libc::MS_NOEXEC),
            ("nosymfollow", "symfollow", libc::MS_NOSYMFOLLOW),
        ];
        for (set, clear, flag) in pairs {
            let o = parse(&[set]);
            assert_eq!((o.flags, o.cleared), (flag, 0), "{set}");
            let o = parse(&[clear]);
            assert_eq!((o.flags, o.cleared), (0, flag), "{clear}");
        }
        assert_eq!(parse(&["dirsync"]).flags, libc::MS_DIRSYNC);
        assert_eq!(parse(&["remount"]).flags, libc::MS_REMOUNT);
        assert_eq!(parse(&["defaults"]), MountOptions::default());
    }

    #[test]
    fn bind_and_rbind() {
        let o = parse(&["bind"]);
        assert!(o.is_bind() && !o.is_rec());
        let o = parse(&["rbind", "ro"]);
        assert!(o.is_bind() && o.is_rec());
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert!(!parse(&["ro"]).is_bind());
    }

    #[test]
    fn propagation_is_separate_and_ordered() {
        let o = parse(&["rbind", "rprivate", "shared", "slave", "runbindable"]);
        assert_eq!(
            o.propagation,
            vec![
                libc::MS_PRIVATE | libc::MS_REC,
                libc::MS_SHARED,
                libc::MS_SLAVE,
                libc::MS_UNBINDABLE | libc::MS_REC
            ]
        );
        assert_eq!(o.flags, libc::MS_BIND | libc::MS_REC);
        assert_eq!(
            propagation_flags("rslave"),
            Some(libc::MS_SLAVE | libc::MS_REC)
        );
        assert_eq!(propagation_flags("private"), Some(libc::MS_PRIVATE));
        assert_eq!(propagation_flags("unbindable"), Some(libc::MS_UNBINDABLE));
        assert_eq!(
            propagation_flags("rshared"),
            Some(libc::MS_SHARED | libc::MS_REC)
        );
        assert_eq!(propagation_flags("bogus"), None);
    }

    #[test]
    fn unknown_options_become_data() {
        let o = parse(&["nosuid", "mode=755", "size=65536k", "strictatime"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        let o = parse(&["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]);
        assert_eq!(o.data(), Some("newinstance,ptmxmode=0666,mode=0620,gid=5"));
        assert_eq!(o.flags, 0);
    }

    #[test]
    fn special_options() {
        let o = parse(&["tmpcopyup", "mode=1777"]);
        assert!(o.tmpcopyup);
        assert_eq!(o.data, "mode=1777");
        assert!(parse(&["idmap"]).idmap);
        assert!(parse(&["ridmap"]).idmap);
    }

    #[test]
    fn recursive_attributes() {
        let o = parse(&["rbind", "rro", "rnosuid", "rnoexec"]);
        let ra = o.rec_attr.expect("rec attrs");
        assert_eq!(
            ra.set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
        );
        assert_eq!(ra.clear, 0);
        let ra = parse(&["rro", "rrw"]).rec_attr.expect("rec attrs");
        assert_eq!((ra.set, ra.clear), (0, MOUNT_ATTR_RDONLY));
        let ra = parse(&["rnoatime"]).rec_attr.expect("rec attrs");
        assert_eq!((ra.set, ra.clear), (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME));
        assert_eq!(parse(&["ro"]).rec_attr, None);
    }

    #[test]
    fn statvfs_flags_translate() {
        let f = statvfs_to_ms(libc::ST_RDONLY | libc::ST_NOSUID | libc::ST_RELATIME);
        assert_eq!(f, libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_RELATIME);
        assert_eq!(
            statvfs_to_ms(libc::ST_NODEV),
            libc::MS_NODEV | libc::MS_STRICTATIME
        );
        assert_eq!(statvfs_to_ms(libc::ST_NOATIME), libc::MS_NOATIME);
    }
}
