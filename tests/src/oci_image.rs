//! OCI image layout tars made locally (there is no registry on the test machines): the
//! busybox rootfs of [`crate::Bundle`] as one uncompressed layer, with `oci-layout`,
//! `index.json`, an image manifest and an image config, every blob named by its sha256.
//! `ctr image import` takes the result as is.

use crate::bundle::Bundle;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// An image layout tar in its own temp dir (removed on drop).
pub struct OciImage {
    /// The image name as `ctr` knows it after import (`docker.io/library/NAME:latest`).
    pub name: String,
    /// The layout tar.
    pub tar: PathBuf,
    /// `sha256:...` of the manifest.
    pub manifest_digest: String,
    _dir: TempDir,
}

/// A content-addressed blob.
struct Blob {
    digest: String,
    size: usize,
}

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn add_blob(layout: &mut tar::Builder<fs::File>, data: &[u8]) -> std::io::Result<Blob> {
    let digest = sha256(data);
    let hex = digest.trim_start_matches("sha256:");
    add_file(layout, &format!("blobs/sha256/{hex}"), data)?;
    Ok(Blob {
        digest,
        size: data.len(),
    })
}

fn add_file(layout: &mut tar::Builder<fs::File>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    layout.append_data(&mut h, path, data)
}

fn add_dir(layout: &mut tar::Builder<fs::File>, path: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mtime(0);
    layout.append_data(&mut h, path, std::io::empty())
}

/// A tar of the directory `rootfs` (its contents at the archive's root, symlinks kept).
pub fn layer_tar(rootfs: &Path) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_dir_all(".", rootfs)?;
    b.into_inner()
}

/// The image config: `cmd` as the default command, busybox's PATH.
pub fn image_config(diff_id: &str, cmd: &[&str]) -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "hull-tests oci_image", "comment": "busybox-static rootfs" }],
    })
}

/// Write an OCI image layout tar holding `rootfs` as its single layer, named `name`
/// (a short name like `hull-busybox`; containerd gets `docker.io/library/NAME:latest`).
pub fn build_image(rootfs: &Path, name: &str, cmd: &[&str]) -> std::io::Result<OciImage> {
    let dir = tempfile::Builder::new()
        .prefix("hull-e2e-image-")
        .tempdir()?;
    let tar_path = dir.path().join(format!("{name}.oci.tar"));
    let mut layout = tar::Builder::new(fs::File::create(&tar_path)?);

    let full_name = format!("docker.io/library/{name}:latest");
    let layer_data = layer_tar(rootfs)?;
    add_file(
        &mut layout,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    add_dir(&mut layout, "blobs")?;
    add_dir(&mut layout, "blobs/sha256")?;
    let layer = add_blob(&mut layout, &layer_data)?;
    drop(layer_data);
    let config_data = serde_json::to_vec(&image_config(&layer.digest, cmd))?;
    let config = add_blob(&mut layout, &config_data)?;
    let manifest_data = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest, "size": config.size },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size }],
    }))?;
    let manifest = add_blob(&mut layout, &manifest_data)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": full_name,
                "org.opencontainers.image.ref.name": "latest",
            },
        }],
    });
    add_file(&mut layout, "index.json", &serde_json::to_vec(&index)?)?;
    layout.into_inner()?.flush()?;
    Ok(OciImage {
        name: full_name,
        tar: tar_path,
        manifest_digest: manifest.digest,
        _dir: dir,
    })
}

/// The busybox rootfs every test bundle has, as an image whose default command is `sh`.
pub fn busybox_image(name: &str) -> std::io::Result<OciImage> {
    let bundle = Bundle::new();
    build_image(&bundle.rootfs(), name, &["sh"])
}

/// The command of [`pause_image`]: sleeps until killed (CRI stops a sandbox with SIGKILL).
pub const PAUSE_CMD: &[&str] = &["/sleep", "999999999"];

/// A tiny stand-in for Kubernetes' `pause` image, CRI's `sandbox_image`: a rootfs holding
/// only busybox-static as `/sleep` (busybox picks the applet from argv[0]) and the empty
/// directories the runtime mounts on.
pub fn pause_image(name: &str) -> std::io::Result<OciImage> {
    let dir = tempfile::Builder::new()
        .prefix("hull-e2e-pause-")
        .tempdir()?;
    let rootfs = dir.path().join("rootfs");
    for sub in ["dev", "proc", "sys", "etc"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    fs::copy(crate::skip::BUSYBOX, rootfs.join("sleep"))?;
    build_image(&rootfs, name, PAUSE_CMD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_tar_has_the_oci_files_and_matching_digests() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::write(rootfs.join("bin/hello"), b"hi").unwrap();
        std::os::unix::fs::symlink("hello", rootfs.join("bin/hi")).unwrap();
        let img = build_image(&rootfs, "unit", &["sh"]).unwrap();
        let mut ar = tar::Archive::new(fs::File::open(&img.tar).unwrap());
        let mut files = std::collections::BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            files.insert(path, data);
        }
        assert!(files.contains_key("oci-layout"));
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(digest, img.manifest_digest);
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                if !hex.is_empty() {
                    assert_eq!(sha256(data), format!("sha256:{hex}"));
                }
            }
        }
        let manifest = &files[&format!("blobs/sha256/{}", &digest[7..])];
        let manifest: Value = serde_json::from_slice(manifest).unwrap();
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let mut layer_ar = tar::Archive::new(&files[&format!("blobs/sha256/{}", &layer[7..])][..]);
        let names: Vec<String> = layer_ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.ends_with("bin/hello")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("bin/hi")), "{names:?}");
    }
}
