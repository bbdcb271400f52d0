//! The nested test host set up for VM containers (`io.hull.isolation=vm`): the `hull`
//! binary, virtiofsd, the guest image (Debian's cloud kernel and `hull-agent`), a busybox
//! rootfs and bundle templates, plus shell helpers for the steps. Used by the end-to-end
//! tests (`tests/tests/vm_containers.rs`) and the benchmark (`hull-vm-bench --containers`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{guest_kernel, Plan, Skip};
use crate::Bundle;

/// Shell helpers every step gets. `mkb NAME` copies the bundle template NAME (its
/// config.json and the shared busybox rootfs) to ./NAME.
pub const PRELUDE: &str = r#"
export PATH=$NEST/nested/bin:$PATH HULL_VIRTIOFSD=$NEST/nested/bin/virtiofsd
export HULL_VM_IMAGE_DIR=$NEST/nested/vm-image
if [ -z "$NEST" ] && ! grep -q cgroup2 /proc/mounts; then
  mount -t cgroup2 none /sys/fs/cgroup
  echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control
  # A terminal for `exec -t` (hull's side of the console lives in the VMM's namespaces).
  mkdir -p /dev/pts; mount -t devpts -o ptmxmode=0666 devpts /dev/pts
fi
mkb() { mkdir -p $1; cp $NEST/nested/bundles/$1/config.json $1/; cp -a $NEST/nested/rootfs $1/rootfs; }
# wait_for FILE PATTERN SECONDS: until PATTERN is in FILE.
wait_for() { i=0; while ! grep -q "$2" "$1" 2>/dev/null; do
  i=$((i+1)); [ $i -gt $(($3 * 10)) ] && return 1; sleep 0.1; done; }
# wait_file FILE SECONDS: until FILE exists.
wait_file() { i=0; while [ ! -e "$1" ]; do
  i=$((i+1)); [ $i -gt $(($2 * 10)) ] && return 1; sleep 0.1; done; }
# status ID: the container's status from `hull state`.
status() { hull state $1 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }
# leftovers ID: what a deleted container must not leave (state, cgroup, processes, mounts).
leftovers() {
  [ -e /run/hull/$1 ] && echo "left: state dir"
  find /sys/fs/cgroup -name "*$1*" -type d 2>/dev/null | sed 's/^/left: cgroup /'
  grep -q "$1" /proc/mounts && echo "left: mount"
  for p in /proc/[0-9]*; do
    case "$(readlink $p/exe 2>/dev/null)" in *hull*|*virtiofsd*) echo "left: process $(cat $p/cmdline | tr '\0' ' ')";; esac
  done
  true
}
"#;

/// The binaries that go into the nested host.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `hull`.
    pub hull: PathBuf,
    /// `hull-agent`, the guest's PID 1.
    pub agent: PathBuf,
    /// `containerd-shim-hull-v2`.
    pub shim: PathBuf,
}

impl Binaries {
    /// The workspace's builds of `profile` (`debug` or `release`).
    pub fn of_profile(profile: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(profile);
        Binaries {
            hull: dir.join("hull"),
            agent: dir.join("hull-agent"),
            shim: dir.join("containerd-shim-hull-v2"),
        }
    }
}

/// A plan holding everything VM containers need, and the bundle templates as
/// `$NEST/nested/bundles/NAME/config.json` (`mkb NAME` in a step copies one). Files live in
/// `dir` until the plan has run.
pub fn plan(bins: &Binaries, templates: &[(&str, Bundle)], dir: &Path) -> Result<Plan, Skip> {
    let kernel = guest_kernel().map_err(Skip)?;
    let virtiofsd = hull_kvm::VirtiofsOptions::default()
        .find_binary()
        .ok_or_else(|| Skip("virtiofsd missing: run kvm-tier/tools/install-virtiofsd".into()))?;
    let (hull, agent) = (&bins.hull, &bins.agent);
    for b in [hull, agent] {
        if !b.is_file() {
            return Err(Skip(format!(
                "{} missing: cargo build --workspace --bins",
                b.display()
            )));
        }
    }
    // Debug info off: a smaller initramfs boots faster under the emulated CPU.
    let stripped = dir.join("hull-agent");
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(agent)
        .arg(&stripped)
        .status()
        .is_ok_and(|s| s.success());
    let spec = hull_kvm::guest_image::ImageSpec {
        kernel,
        agent: if ok { stripped } else { agent.clone() },
        modules: hull_kvm::guest_image::AGENT_MODULES
            .iter()
            .map(|m| m.to_string())
            .collect(),
    };
    let image = hull_kvm::guest_image::build(&spec, &dir.join("vm-image"))
        .map_err(|e| Skip(format!("building the guest image: {e}")))?;
    let mut plan = Plan::new();
    plan.payload
        .binary_stripped("nested/bin/hull", hull, dir)
        .and_then(|p| p.binary("nested/bin/virtiofsd", &virtiofsd))
        .map_err(|e| Skip(e.to_string()))?;
    plan.payload
        .file("nested/vm-image/vmlinuz", &image.kernel, 0o644)
        .file("nested/vm-image/initramfs.cpio", &image.initramfs, 0o644);
    // The payload reads files when it is packed, after the bundles' temp dirs are gone:
    // the rootfs is copied into the run's own dir, the configs go in as bytes.
    if let Some((_, b)) = templates.first() {
        let rootfs = dir.join("rootfs");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(b.rootfs())
            .arg(&rootfs)
            .status()
            .is_ok_and(|s| s.success());
        assert!(copied, "copying the busybox rootfs");
        plan.payload
            .tree("nested/rootfs", &rootfs)
            .map_err(|e| Skip(e.to_string()))?;
    }
    for (name, b) in templates {
        b.write();
        let config = std::fs::read(b.config_path()).expect("bundle config");
        plan.payload
            .bytes(&format!("nested/bundles/{name}/config.json"), config, 0o644);
    }
    Ok(plan)
}

/// Where containerd keeps everything in the nested host (`$CTRD/sock` is its socket).
pub const CONTAINERD_DIR: &str = "/run/hull-ctrd";

/// The image the containerd steps run, as `ctr` names it after import.
pub const CONTAINERD_IMAGE: &str = "docker.io/library/hull-vm-busybox:latest";

/// Adds containerd, `ctr` and runc's shim (Debian's containerd package), `shim` (hull's
/// `containerd-shim-hull-v2`), containerd's config as `nested/containerd/config.toml` and
/// the busybox image as `nested/containerd/busybox.tar`, for steps that run VM containers
/// through containerd. Skip when the package or the shim is missing.
pub fn add_containerd(plan: &mut Plan, shim: &Path, dir: &Path) -> Result<(), Skip> {
    if let Some(r) = crate::containerd::skip_reason() {
        return Err(Skip(r));
    }
    let runc_shim = Path::new("/usr/bin/containerd-shim-runc-v2");
    for b in [shim, runc_shim] {
        if !b.is_file() {
            return Err(Skip(format!("{} missing", b.display())));
        }
    }
    let image = crate::oci_image::busybox_image("hull-vm-busybox")
        .map_err(|e| Skip(format!("building the busybox image: {e}")))?;
    // The payload reads its files when it is packed, after the image's temp dir is gone.
    let tar = dir.join("busybox-image.tar");
    std::fs::copy(&image.tar, &tar).map_err(|e| Skip(format!("copying the image: {e}")))?;
    let ctrd = Path::new(CONTAINERD_DIR);
    let config = crate::containerd::config_toml(ctrd, &ctrd.join("sock"));
    plan.payload
        .binary(
            "nested/bin/containerd",
            Path::new(crate::containerd::CONTAINERD),
        )
        .and_then(|p| p.binary("nested/bin/ctr", Path::new(crate::containerd::CTR)))
        .and_then(|p| p.binary("nested/bin/containerd-shim-runc-v2", runc_shim))
        .and_then(|p| p.binary_stripped("nested/bin/containerd-shim-hull-v2", shim, dir))
        .map_err(|e| Skip(e.to_string()))?;
    plan.payload
        .bytes("nested/containerd/config.toml", config, 0o644)
        .file("nested/containerd/busybox.tar", &tar, 0o644);
    Ok(())
}

/// Adds Docker's daemon and client (Debian's docker.io; the step registers hull as runtime
/// `hull-vm` with `runtimeArgs: --isolation vm`, as a Docker user would: Docker 20.10 cannot
/// set annotations), and the busybox rootfs as `nested/docker/busybox.tar` for
/// `docker import`.
/// Needs [`add_containerd`]'s binaries (dockerd starts its own containerd). Skip when the
/// package is missing.
pub fn add_docker(plan: &mut Plan, dir: &Path) -> Result<(), Skip> {
    if let Some(r) = crate::docker::skip_reason() {
        return Err(Skip(r));
    }
    let bundle = crate::Bundle::new();
    let tar = dir.join("busybox-rootfs.tar");
    let layer = crate::oci_image::layer_tar(&bundle.rootfs())
        .map_err(|e| Skip(format!("the busybox rootfs tar: {e}")))?;
    std::fs::write(&tar, layer).map_err(|e| Skip(format!("{}: {e}", tar.display())))?;
    plan.payload
        .binary("nested/bin/dockerd", Path::new(crate::docker::DOCKERD))
        .and_then(|p| p.binary("nested/bin/docker", Path::new(crate::docker::DOCKER)))
        .map_err(|e| Skip(e.to_string()))?;
    plan.payload.file("nested/docker/busybox.tar", &tar, 0o644);
    Ok(())
}

/// Adds podman and conmon (Debian's podman) for a step that runs VM containers through
/// podman (`--runtime hull`, `--annotation io.hull.isolation=vm`); the image is
/// [`add_containerd`]'s OCI archive. Skip when the package is missing.
pub fn add_podman(plan: &mut Plan) -> Result<(), Skip> {
    let (podman, conmon) = (Path::new("/usr/bin/podman"), Path::new("/usr/bin/conmon"));
    for b in [podman, conmon] {
        if !b.is_file() {
            return Err(Skip(format!(
                "{} missing: install Debian's podman (dev/install-deps)",
                b.display()
            )));
        }
    }
    plan.payload
        .binary("nested/bin/podman", podman)
        .and_then(|p| p.binary("nested/bin/conmon", conmon))
        .map_err(|e| Skip(e.to_string()))?;
    Ok(())
}
