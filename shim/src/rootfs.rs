//! The container's root filesystem from the mounts containerd sends with Create (e.g. an
//! overlay of the image's snapshots), mounted at `<bundle>/rootfs` and unmounted on Delete.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;

use crate::error::{io, Result, ShimError};

/// Mount `mounts` on `<bundle>/rootfs`; None when there are none (a prepared rootfs).
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<Option<PathBuf>> {
    if mounts.is_empty() {
        return Ok(None);
    }
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(io(format!("creating {target:?}")))?;
    for m in mounts {
        if let Err(e) = containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()),
            Some(m.source.as_str()),
            &m.options,
            &target,
        ) {
            unmount(&target);
            return Err(ShimError::Precondition(format!(
                "mounting {} ({}) on {target:?}: {e}",
                m.source, m.type_
            )));
        }
    }
    Ok(Some(target))
}

/// Unmount everything at and below `target` (errors are logged: Delete goes on).
pub fn unmount(target: &Path) {
    let Some(t) = target.to_str() else {
        return;
    };
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH) {
        tracing::warn!("unmounting {target:?}: {e}");
    }
}
