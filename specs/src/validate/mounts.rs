//! `mounts[i]`: absolute destinations without `..`, a source where the mount needs one,
//! a type where the mount needs one, well-formed options.

use super::paths;
use crate::{Spec, SpecError};

/// Filesystem types backed by a device or a remote share: `source` names it.
const NEEDS_SOURCE: [&str; 16] = [
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "ntfs", "ntfs3", "iso9660",
    "squashfs", "erofs", "f2fs", "nfs", "nfs4", "cifs",
];

/// Whether a mount is a bind mount: `type` `"bind"` or a `bind`/`rbind` option.
pub fn is_bind(typ: Option<&str>, options: &[String]) -> bool {
    typ == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind")
}

/// Checks `mounts`.
pub(super) fn check(spec: &Spec) -> Result<(), SpecError> {
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = format!("mounts[{i}]");
        let dest = m.destination();
        let df = format!("{field}.destination");
        if dest.as_os_str().is_empty() {
            return Err(SpecError::Empty { field: df });
        }
        paths::no_nul(&df, dest)?;
        let hint = format!(" (mount destination {} is not absolute)", paths::show(dest));
        paths::absolute(&df, dest, &hint)?;
        paths::no_dotdot(&df, dest)?;

        let options = m.options().as_deref().unwrap_or_default();
        for (j, o) in options.iter().enumerate() {
            let of = format!("{field}.options[{j}]");
            if o.is_empty() {
                return Err(SpecError::Empty { field: of });
            }
            paths::no_nul_str(&of, o)?;
            if o == "idmap" || o == "ridmap" {
                return Err(SpecError::Unsupported {
                    field: of,
                    what: "idmapped mounts".into(),
                });
            }
        }
        if m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty())
            || m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty())
        {
            return Err(SpecError::Unsupported {
                field,
                what: "idmapped mounts (uidMappings/gidMappings on a mount)".into(),
            });
        }

        let typ = m.typ().as_deref().filter(|t| !t.is_empty());
        if let Some(t) = typ {
            paths::no_nul_str(&format!("{field}.type"), t)?;
        }
        let source = m.source().as_deref().filter(|s| !s.as_os_str().is_empty());
        if let Some(s) = source {
            paths::no_nul(&format!("{field}.source"), s)?;
        }
        if is_bind(typ, options) {
            if source.is_none() {
                return Err(SpecError::invalid(
                    format!("{field}.source"),
                    format!("a bind mount on {} needs a source", paths::show(dest)),
                ));
            }
            continue;
        }
        let Some(t) = typ else {
            return Err(SpecError::invalid(
                format!("{field}.type"),
                format!(
                    "mount on {} is not a bind mount and has no filesystem type",
                    paths::show(dest)
                ),
            ));
        };
        if source.is_none() && NEEDS_SOURCE.contains(&t) {
            return Err(SpecError::invalid(
                format!("{field}.source"),
                format!("a {t} mount needs a source"),
            ));
        }
    }
    Ok(())
}
