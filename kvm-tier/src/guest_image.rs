//! The guest image of a VM container: Debian's cloud kernel and an initramfs holding the
//! guest agent (the guest's PID 1) and the kernel modules it loads.
//!
//! The kernel comes from the `linux-image-cloud-amd64` package, unpacked (not installed: the
//! host's own boot set-up is left alone) under [`KERNEL_CACHE`]. Debian's package ships no
//! `modules.dep` (depmod writes it at install time), so the load order is computed here from
//! each module's `.modinfo` `depends=` field.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};
use thiserror::Error;

use crate::initramfs::{Initramfs, InitramfsError};

/// Where `dev/guest-kernel` (and the README's set-up) unpack the cloud kernel package.
pub const KERNEL_CACHE: &str = "/var/cache/hull/guest-kernel";

/// Where `hull vm-image build` writes the image, and where VM containers look for it.
pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/hull/vm-image";

/// The modules a VM container's guest needs, by module name: the virtio-mmio transport,
/// virtio-fs for the rootfs, virtio-vsock for the agent's channel, pvpanic so a guest panic
/// ends the VMM with its own status.
pub const AGENT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtiofs",
    "vmw_vsock_virtio_transport",
    "pvpanic_mmio",
];

/// Inside the initramfs: the modules, and the file naming them in load order (one file name
/// per line, relative to [`MODULES_DIR`]).
pub const MODULES_DIR: &str = "hull/modules";
/// See [`MODULES_DIR`].
pub const MODULES_ORDER: &str = "hull/modules/order";

/// Errors finding the kernel, resolving modules or writing the image; each names the file.
#[derive(Debug, Error)]
pub enum GuestImageError {
    /// No kernel where one was looked for.
    #[error("no guest kernel: {0}")]
    NoKernel(String),
    /// The kernel image is not named `vmlinuz-<version>`, so its modules cannot be found.
    #[error("{}: a guest kernel must be named vmlinuz-<version> (its modules are found by that version)", .0.display())]
    KernelName(PathBuf),
    /// The kernel's modules are not next to it.
    #[error("no modules for kernel {version}: looked in {looked}")]
    NoModules {
        /// The kernel version.
        version: String,
        /// The directories tried.
        looked: String,
    },
    /// A module the guest needs is not in the kernel's module tree.
    #[error("kernel module {name} not found under {} (compressed modules are not supported)", .dir.display())]
    NoModule {
        /// The module name.
        name: String,
        /// The module tree searched.
        dir: PathBuf,
    },
    /// A module file could not be parsed for its dependencies.
    #[error("{}: reading the module's .modinfo: {}", .0.display(), .1)]
    ModInfo(PathBuf, String),
    /// Modules depend on each other in a circle (a broken module tree).
    #[error("kernel modules depend on each other in a circle: {0}")]
    DependencyCycle(String),
    /// Reading or writing a file failed.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// Packing the initramfs failed.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The image directory lacks a file of the image.
    #[error("VM guest image incomplete: {} is missing (run `hull vm-image build`)", .0.display())]
    Incomplete(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GuestImageError + '_ {
    move |e| GuestImageError::Io(path.to_path_buf(), e)
}

/// A guest kernel and its module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// The kernel version (`vmlinuz-<version>`).
    pub version: String,
    /// `lib/modules/<version>`.
    pub modules: PathBuf,
}

impl GuestKernel {
    /// The kernel at `vmlinuz` (named `vmlinuz-<version>`), its modules in
    /// `../lib/modules/<version>` (an unpacked package tree) or `/lib/modules/<version>`.
    pub fn at(vmlinuz: &Path) -> Result<Self, GuestImageError> {
        let name = vmlinuz
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let version = name
            .strip_prefix("vmlinuz-")
            .filter(|v| !v.is_empty() && !v.contains('/'))
            .ok_or_else(|| GuestImageError::KernelName(vmlinuz.to_path_buf()))?;
        if !vmlinuz.is_file() {
            return Err(GuestImageError::NoKernel(format!(
                "{} is not a file",
                vmlinuz.display()
            )));
        }
        let mut looked = Vec::new();
        if let Some(root) = vmlinuz.parent().and_then(Path::parent) {
            looked.push(root.join("lib/modules").join(version));
            looked.push(root.join("usr/lib/modules").join(version));
        }
        looked.push(Path::new("/lib/modules").join(version));
        let modules = looked.iter().find(|p| p.is_dir()).cloned().ok_or_else(|| {
            GuestImageError::NoModules {
                version: version.to_string(),
                looked: looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?;
        Ok(Self {
            vmlinuz: vmlinuz.to_path_buf(),
            version: version.to_string(),
            modules,
        })
    }

    /// The newest `vmlinuz-*` in `<cache>/boot` (the unpacked cloud kernel package).
    pub fn find_in(cache: &Path) -> Result<Self, GuestImageError> {
        let boot = cache.join("boot");
        let mut found: Vec<PathBuf> = fs::read_dir(&boot)
            .map_err(|e| {
                GuestImageError::NoKernel(format!(
                    "{}: {e} (unpack linux-image-cloud-amd64 there: dev/guest-kernel)",
                    boot.display()
                ))
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .collect();
        found.sort();
        let newest = found.pop().ok_or_else(|| {
            GuestImageError::NoKernel(format!("no vmlinuz-* in {}", boot.display()))
        })?;
        Self::at(&newest)
    }

    /// The file of module `name` (`-` and `_` are the same in module names), uncompressed.
    pub fn module(&self, name: &str) -> Result<PathBuf, GuestImageError> {
        self.module_index()?
            .remove(&module_name(name))
            .ok_or_else(|| GuestImageError::NoModule {
                name: name.to_string(),
                dir: self.modules.clone(),
            })
    }

    /// Every `.ko` under the module tree, by module name.
    fn module_index(&self) -> Result<BTreeMap<String, PathBuf>, GuestImageError> {
        let mut index = BTreeMap::new();
        let mut dirs = vec![self.modules.join("kernel")];
        while let Some(dir) = dirs.pop() {
            for e in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(p);
                } else if let Some(stem) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    index.insert(module_name(stem), p);
                }
            }
        }
        Ok(index)
    }

    /// `names` and everything they depend on, each once, dependencies first: the order in
    /// which the guest must load them.
    pub fn modules_in_load_order(&self, names: &[&str]) -> Result<Vec<PathBuf>, GuestImageError> {
        let index = self.module_index()?;
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in names {
            let mut visiting = Vec::new();
            visit(
                &module_name(name),
                &index,
                &self.modules,
                &mut visiting,
                &mut done,
                &mut order,
            )?;
        }
        Ok(order)
    }
}

/// Depth-first: a module's dependencies are pushed before it.
fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    dir: &Path,
    visiting: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<PathBuf>,
) -> Result<(), GuestImageError> {
    if done.contains(name) {
        return Ok(());
    }
    if visiting.iter().any(|v| v == name) {
        visiting.push(name.to_string());
        return Err(GuestImageError::DependencyCycle(visiting.join(" -> ")));
    }
    let path = index.get(name).ok_or_else(|| GuestImageError::NoModule {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    })?;
    visiting.push(name.to_string());
    for dep in module_depends(path)? {
        visit(&dep, index, dir, visiting, done, order)?;
    }
    visiting.pop();
    done.insert(name.to_string());
    order.push(path.clone());
    Ok(())
}

/// Module names use `_` where file names may use `-`.
fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn module_depends(ko: &Path) -> Result<Vec<String>, GuestImageError> {
    let data = fs::read(ko).map_err(io_err(ko))?;
    let bad = |e: String| GuestImageError::ModInfo(ko.to_path_buf(), e);
    let file = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let info = section.data().map_err(|e| bad(e.to_string()))?;
    Ok(parse_depends(info))
}

/// `.modinfo` is a run of NUL-terminated `key=value` strings.
fn parse_depends(modinfo: &[u8]) -> Vec<String> {
    let mut deps = Vec::new();
    for field in modinfo.split(|b| *b == 0) {
        if let Some(v) = field.strip_prefix(b"depends=") {
            let v = String::from_utf8_lossy(v);
            deps.extend(v.split(',').filter(|d| !d.is_empty()).map(module_name));
        }
    }
    deps
}

/// What goes into a VM container's guest image.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The guest kernel (its bzImage is copied next to the initramfs).
    pub kernel: GuestKernel,
    /// The `hull-agent` binary: the initramfs' `/init`.
    pub agent: PathBuf,
    /// Module names to load (their dependencies are added).
    pub modules: Vec<String>,
}

/// A built guest image: the files a VM container boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initramfs: PathBuf,
}

impl GuestImage {
    /// The kernel's file name in an image directory.
    pub const KERNEL: &'static str = "vmlinuz";
    /// The initramfs' file name in an image directory.
    pub const INITRAMFS: &'static str = "initramfs.cpio";

    /// The image in `dir`, checked to be complete.
    pub fn load(dir: &Path) -> Result<Self, GuestImageError> {
        let image = Self {
            kernel: dir.join(Self::KERNEL),
            initramfs: dir.join(Self::INITRAMFS),
        };
        for f in [&image.kernel, &image.initramfs] {
            if !f.is_file() {
                return Err(GuestImageError::Incomplete(f.clone()));
            }
        }
        Ok(image)
    }
}

/// The initramfs contents for `spec`: `/init` (the agent, with its shared libraries; a
/// stripped copy goes to `scratch`), the modules under [`MODULES_DIR`] and their load order
/// in [`MODULES_ORDER`].
pub fn initramfs(spec: &ImageSpec, scratch: &Path) -> Result<Initramfs, GuestImageError> {
    let mut fs = Initramfs::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "mnt"] {
        fs.dir(d);
    }
    // Without debug info (when objcopy is there): the guest unpacks every byte at boot.
    fs.binary_stripped("init", &spec.agent, scratch)?;
    let names: Vec<&str> = spec.modules.iter().map(String::as_str).collect();
    let mut order = String::new();
    for path in spec.kernel.modules_in_load_order(&names)? {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| GuestImageError::KernelName(path.clone()))?
            .to_string();
        fs.file(&format!("{MODULES_DIR}/{file}"), &path, 0o644);
        order.push_str(&file);
        order.push('\n');
    }
    fs.bytes(MODULES_ORDER, order, 0o644);
    Ok(fs)
}

/// Builds the image into `dir` (created if missing): the kernel copied as
/// [`GuestImage::KERNEL`], the initramfs as [`GuestImage::INITRAMFS`]. Each file is written
/// under a temporary name and renamed, so a running VM container never sees half an image.
pub fn build(spec: &ImageSpec, dir: &Path) -> Result<GuestImage, GuestImageError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let image = GuestImage {
        kernel: dir.join(GuestImage::KERNEL),
        initramfs: dir.join(GuestImage::INITRAMFS),
    };
    let tmp_initramfs = dir.join(".initramfs.cpio.tmp");
    let scratch = dir.join(".scratch");
    fs::create_dir_all(&scratch).map_err(io_err(&scratch))?;
    let written = initramfs(spec, &scratch).and_then(|i| Ok(i.write_cpio(&tmp_initramfs)?));
    let _ = fs::remove_dir_all(&scratch);
    written?;
    let tmp_kernel = dir.join(".vmlinuz.tmp");
    fs::copy(&spec.kernel.vmlinuz, &tmp_kernel).map_err(io_err(&spec.kernel.vmlinuz))?;
    fs::rename(&tmp_kernel, &image.kernel).map_err(io_err(&image.kernel))?;
    fs::rename(&tmp_initramfs, &image.initramfs).map_err(io_err(&image.initramfs))?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_field_is_split_and_normalised() {
        let info = b"license=GPL\0depends=virtio,virtio_ring,pvpanic-x\0vermagic=6.1\0";
        assert_eq!(
            parse_depends(info),
            vec!["virtio", "virtio_ring", "pvpanic_x"]
        );
        assert!(parse_depends(b"depends=\0name=x\0").is_empty());
        assert!(parse_depends(b"").is_empty());
    }

    #[test]
    fn kernel_name_must_carry_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("bzImage");
        fs::write(&k, b"x").unwrap();
        let e = GuestKernel::at(&k).unwrap_err();
        assert!(matches!(e, GuestImageError::KernelName(_)), "{e}");
        let k = dir.path().join("boot/vmlinuz-9.9-test");
        fs::create_dir_all(k.parent().unwrap()).unwrap();
        fs::write(&k, b"x").unwrap();
        let e = GuestKernel::at(&k).unwrap_err().to_string();
        assert!(e.contains("no modules for kernel 9.9-test"), "{e}");
        fs::create_dir_all(dir.path().join("lib/modules/9.9-test/kernel")).unwrap();
        let g = GuestKernel::find_in(dir.path()).unwrap();
        assert_eq!(g.version, "9.9-test");
        assert_eq!(g.modules, dir.path().join("lib/modules/9.9-test"));
        let e = g.module("virtiofs").unwrap_err().to_string();
        assert!(e.contains("kernel module virtiofs not found"), "{e}");
    }

    #[test]
    fn an_incomplete_image_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(GuestImage::KERNEL), b"k").unwrap();
        let e = GuestImage::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(GuestImage::INITRAMFS) && e.contains("hull vm-image build"),
            "{e}"
        );
    }

    /// With Debian's cloud kernel unpacked (dev/guest-kernel), the real dependency order.
    #[test]
    fn cloud_kernel_modules_come_dependencies_first() {
        let Ok(kernel) = GuestKernel::find_in(Path::new(KERNEL_CACHE)) else {
            eprintln!("skipped: no guest kernel in {KERNEL_CACHE} (run dev/guest-kernel)");
            return;
        };
        let order = kernel.modules_in_load_order(AGENT_MODULES).unwrap();
        let names: Vec<String> = order
            .iter()
            .map(|p| module_name(p.file_stem().unwrap().to_str().unwrap()))
            .collect();
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} missing from {names:?}"))
        };
        assert!(pos("virtio_ring") < pos("virtio_mmio"), "{names:?}");
        assert!(pos("fuse") < pos("virtiofs"), "{names:?}");
        assert!(
            pos("vsock") < pos("vmw_vsock_virtio_transport_common"),
            "{names:?}"
        );
        assert!(
            pos("vmw_vsock_virtio_transport_common") < pos("vmw_vsock_virtio_transport"),
            "{names:?}"
        );
        assert!(pos("pvpanic") < pos("pvpanic_mmio"), "{names:?}");
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
}
