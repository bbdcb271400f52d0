//! Bind mounts of host paths in a VM container. Only the rootfs is shared into the guest
//! (one virtiofsd), so each host source is bind-mounted on the host side, in the VMM's
//! private mount namespace before virtiofsd starts, onto `<rootfs>/.hull-vm-binds/<index>`:
//! virtiofsd's sandbox takes the rootfs with its submounts, and the guest sees the source's
//! content there. The guest's copy of the config then binds that staged path onto the
//! mount's destination, in the config's order (after the guest's own tmpfs mounts, so
//! Docker's `/dev/shm` and CRI's `/dev/termination-log` land on top of the guest's `/dev`),
//! and masks the staging directory. Read-only, nosuid, nodev, noexec of the host-side bind
//! hold in the guest, because virtiofsd makes the calls on the host. The staged mounts
//! vanish with the VMM's mount namespace; `delete` removes the empty mountpoints.

use std::path::{Path, PathBuf};

use hull_inside::rootfs::mounts::{Ctx, Entry};
use hull_inside::rootfs::{open_rootfs, RootfsError, RootfsPlan};
use oci_spec::runtime::{Mount, Spec};

/// The staging directory, relative to the rootfs.
pub const STAGE_DIR: &str = ".hull-vm-binds";

/// True when the mount is a bind mount (of a host path, as every bind source is).
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Host side: bind-mounts every bind source of `spec` onto its staging mountpoint in the
/// rootfs (created by descriptor, never leaving the rootfs), with the mount's own options.
/// Runs in the VMM's private mount namespace.
pub fn stage(spec: &Spec, rootfs: &Path, bundle: &Path) -> Result<(), RootfsError> {
    let binds: Vec<(usize, &Mount)> = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, m)| is_bind(m))
        .collect();
    if binds.is_empty() {
        return Ok(());
    }
    let plan = RootfsPlan {
        spec,
        rootfs,
        bundle,
        no_pivot: true,
        in_user_ns: false,
    };
    let ctx = Ctx::new(open_rootfs(rootfs)?, &plan)?;
    for (index, m) in binds {
        let mut e = Entry::from_spec(index, m);
        e.dest = staged(index);
        ctx.mount_entry(&e)?;
    }
    Ok(())
}

/// The staging mountpoint of `mounts[index]`, inside the container.
fn staged(index: usize) -> PathBuf {
    Path::new("/").join(STAGE_DIR).join(index.to_string())
}

/// Guest side of the config (`guest_config`'s JSON): every bind mount's source becomes its
/// staged path in the guest's view of the share, and the staging directory is masked.
pub fn rewrite_guest_config(spec: &Spec, config: &mut serde_json::Value) {
    let staged_any = spec.mounts().iter().flatten().any(is_bind);
    if !staged_any {
        return;
    }
    if let Some(mounts) = config.get_mut("mounts").and_then(|m| m.as_array_mut()) {
        for (index, (m, json)) in spec
            .mounts()
            .iter()
            .flatten()
            .zip(mounts.iter_mut())
            .enumerate()
        {
            if is_bind(m) {
                let src = Path::new(hull_agent_protocol::GUEST_ROOTFS_DIR)
                    .join(STAGE_DIR)
                    .join(index.to_string());
                json["source"] = serde_json::Value::String(src.display().to_string());
            }
        }
    }
    let mask = serde_json::Value::String(format!("/{STAGE_DIR}"));
    if let Some(linux) = config.get_mut("linux").and_then(|l| l.as_object_mut()) {
        match linux.get_mut("maskedPaths").and_then(|m| m.as_array_mut()) {
            Some(list) => list.push(mask),
            None => {
                linux.insert("maskedPaths".into(), serde_json::Value::Array(vec![mask]));
            }
        }
    }
}

/// After the VMM is gone: removes the staging mountpoints (empty files and directories
/// hull made) from the rootfs. Missing is fine; anything else is logged, not fatal.
pub fn remove_stage(rootfs: &Path) {
    let dir = rootfs.join(STAGE_DIR);
    // remove_dir_all does not follow a symlink put in the directory's place.
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), "removing the bind staging directory: {e}"),
    }
}
