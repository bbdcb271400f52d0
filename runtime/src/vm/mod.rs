//! VM containers (`io.hull.isolation=vm`), the host side.
//!
//! `create` builds the container's sandbox as for any container (namespaces, the cgroup
//! with its limits, the state directory), but the init it starts is `hull vm-init`
//! ([`init`]): instead of becoming the workload, it boots the guest (hull-kvm, in process),
//! shares the rootfs in through virtiofsd, waits for the guest agent, and from `start` on
//! relays the workload's stdio, signals and exit status over vsock. To containerd, runc's
//! shim and `hull` itself it is an ordinary container whose init pid is the VMM.
//!
//! What the VM tier cannot carry out is refused here by name (see also
//! `hull_specs::vm::check_vm_supported`); nothing falls back to the shared kernel.

pub mod binds;
pub mod exec;
pub mod init;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hull_kvm::guest_image::{GuestImage, GuestImageError, DEFAULT_IMAGE_DIR};
use hull_specs::vm::VmSize;
use hull_specs::{Spec, SpecError};
use serde::{Deserialize, Serialize};

/// The environment variable that carries the [`VmPlan`] from `create` to `hull vm-init`.
pub const PLAN_ENV: &str = "_HULL_VM_PLAN";
/// Overrides where the guest image is looked for ([`DEFAULT_IMAGE_DIR`]).
pub const IMAGE_DIR_ENV: &str = "HULL_VM_IMAGE_DIR";
/// Overrides how long `create` waits for the guest agent, in seconds.
pub const BOOT_TIMEOUT_ENV: &str = "HULL_VM_BOOT_TIMEOUT";
/// How long `create` waits for the guest agent by default. Generous: under the nested test
/// host (emulated CPU) a boot takes seconds; on real KVM it takes well under one.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 90;
/// The hybrid-vsock socket of the VMM, in the container's state directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The guest's serial console, in the state directory (boot failures quote its tail).
pub const CONSOLE_LOG: &str = "guest-console.log";
/// The virtio-fs tag of the rootfs share (the agent mounts it).
pub const ROOTFS_TAG: &str = "hull-root";
/// The guest's kernel command line beyond hull-kvm's defaults: quiet for speed.
pub const GUEST_CMDLINE: &str = "quiet";
/// Status of a VM container whose guest ended without reporting the workload's status
/// (kernel panic, VMM or virtiofsd fault); the reason goes to the container's stderr.
pub const EXIT_GUEST_FAILED: i32 = 255;

/// Why a VM container cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The config asks for something the VM tier cannot do.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// No usable guest image.
    #[error("VM container: {source} (image directory {}, {IMAGE_DIR_ENV} names another)", .dir.display())]
    Image {
        /// What is wrong with the image.
        source: GuestImageError,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The host has no usable KVM.
    #[error("VM container: this host cannot run VMs: {0}")]
    NoKvm(String),
    /// virtiofsd, which shares the rootfs in, is missing.
    #[error("VM container: virtiofsd not found (set HULL_VIRTIOFSD, or install it: kvm-tier/tools/install-virtiofsd)")]
    NoVirtiofsd,
    /// The directory of the agent's socket cannot be opened.
    #[error("VM container: the agent socket's directory {}: {source}", .dir.display())]
    SocketDir {
        /// The state directory.
        dir: PathBuf,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// A `create` option the VM tier cannot honour.
    #[error("VM container: {0}")]
    Unsupported(String),
}

/// The longest vsock port suffix the VMM appends to the socket path (`_4294967295`).
const PORT_SUFFIX_MAX: usize = 11;

/// A path that reaches the unix socket `path` however deep its directory is: `path` itself
/// when it fits a socket address (with room for the VMM's port suffix), else the same file
/// through a descriptor of its directory, `/proc/self/fd/N/NAME`. containerd's state
/// directories with 64-character ids make paths far longer than the 107 bytes an address
/// holds. The descriptor (if any) must stay open while the path is used.
pub(crate) fn reachable_socket(path: &Path) -> Result<(Option<OwnedFd>, PathBuf), VmError> {
    if path.as_os_str().len() + PORT_SUFFIX_MAX <= hull_kvm::config::MAX_UNIX_PATH_LEN {
        return Ok((None, path.to_path_buf()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or(path.as_os_str());
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|source| VmError::SocketDir {
            dir: dir.to_path_buf(),
            source,
        })?
        .into();
    let short = Path::new("/proc/self/fd")
        .join(fd.as_raw_fd().to_string())
        .join(name);
    Ok((Some(fd), short))
}

/// What `hull vm-init` needs beyond the ordinary init plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPlan {
    /// The guest kernel (bzImage).
    pub kernel: PathBuf,
    /// The guest initramfs (hull-agent and its modules).
    pub initramfs: PathBuf,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Guest vCPUs.
    pub vcpus: u8,
    /// The VMM's hybrid-vsock socket.
    pub socket: PathBuf,
    /// The guest's serial console log.
    pub console_log: PathBuf,
    /// virtiofsd.
    pub virtiofsd: PathBuf,
    /// How long to wait for the agent, in milliseconds.
    pub boot_timeout_ms: u64,
}

/// Where the guest image is: `$HULL_VM_IMAGE_DIR`, else [`DEFAULT_IMAGE_DIR`].
pub fn image_dir() -> PathBuf {
    std::env::var_os(IMAGE_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_IMAGE_DIR), PathBuf::from)
}

/// The guest image in [`image_dir`], checked to be complete.
pub fn load_image() -> Result<GuestImage, VmError> {
    let dir = image_dir();
    GuestImage::load(&dir).map_err(|source| VmError::Image { source, dir })
}

/// `hull vm-image build`: the image from `kernel` (default: the newest unpacked cloud
/// kernel) and `agent` (default: `hull-agent` next to the running binary) into `out`
/// (default: [`image_dir`]).
pub fn build_image(
    kernel: Option<&Path>,
    agent: Option<&Path>,
    out: Option<&Path>,
) -> Result<GuestImage, VmError> {
    use hull_kvm::guest_image::{self, GuestKernel, ImageSpec};
    let dir = out.map_or_else(image_dir, Path::to_path_buf);
    let image_err = |source| VmError::Image {
        source,
        dir: dir.clone(),
    };
    let kernel = match kernel {
        Some(k) => GuestKernel::at(k),
        None => GuestKernel::find_in(Path::new(guest_image::KERNEL_CACHE)),
    }
    .map_err(image_err)?;
    let agent = match agent {
        Some(a) => a.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("hull-agent")))
            .filter(|a| a.is_file())
            .ok_or_else(|| {
                VmError::Unsupported(
                    "hull-agent not found next to hull: build it (cargo build -p hull-agent) or give --agent".into(),
                )
            })?,
    };
    let spec = ImageSpec {
        kernel,
        agent,
        modules: guest_image::AGENT_MODULES
            .iter()
            .map(|m| m.to_string())
            .collect(),
    };
    guest_image::build(&spec, &dir).map_err(image_err)
}

/// The agent's start request for `process`: the fields a plain launcher needs, the OCI
/// process itself, and for the container's own process its whole (guest) config, the
/// compiled seccomp filter and the state JSON.
pub fn process_spec(
    process: &oci_spec::runtime::Process,
    container: Option<serde_json::Value>,
    seccomp: Option<&hull_inside::seccomp::Compiled>,
    state_json: String,
) -> Result<hull_agent_protocol::ProcessSpec, String> {
    use hull_agent_protocol::{ProcessSpec, Rlimit, WindowSize};
    let user = process.user();
    let rlimits = process
        .rlimits()
        .iter()
        .flatten()
        .map(|r| {
            let kind = serde_json::to_value(r.typ())
                .and_then(serde_json::from_value)
                .map_err(|e| format!("process.rlimits: {e}"))?;
            Ok(Rlimit {
                kind,
                soft: r.soft(),
                hard: r.hard(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let spec = ProcessSpec {
        args: process.args().clone().unwrap_or_default(),
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().display().to_string(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        rlimits,
        terminal: process.terminal().unwrap_or(false),
        console_size: process.console_size().as_ref().and_then(|b| {
            let (rows, cols) = (
                u16::try_from(b.height()).ok()?,
                u16::try_from(b.width()).ok()?,
            );
            (rows > 0 && cols > 0).then_some(WindowSize { rows, cols })
        }),
        root: None,
        oci: Some(serde_json::to_value(process).map_err(|e| format!("process: {e}"))?),
        container,
        seccomp: seccomp
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| format!("seccomp filter: {e}"))?,
        state_json: Some(state_json),
    };
    spec.validate()
        .map_err(|e| format!("the process for the guest: {e}"))?;
    Ok(spec)
}

/// The container's init is the VMM: it opens `/dev/kvm` (char 10:232) and nothing else of
/// the host's devices (the workload runs in the guest with the guest's own). Where device
/// rules are enforced (a v1 devices hierarchy, or cgroup v2's eBPF program) that one device
/// is allowed after the config's rules (a later rule wins). A hybrid host without a v1
/// devices hierarchy enforces none, and refuses allow rules beyond the defaults: nothing is
/// added there.
pub fn allow_kvm_device(resources: &mut Option<oci_spec::runtime::LinuxResources>) {
    let v1 = Path::new("/sys/fs/cgroup/devices/devices.allow").exists();
    let v2_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !v1 && !v2_only {
        return;
    }
    let mut kvm = oci_spec::runtime::LinuxDeviceCgroup::default();
    kvm.set_allow(true);
    kvm.set_typ(Some(oci_spec::runtime::LinuxDeviceType::C));
    kvm.set_major(Some(10));
    kvm.set_minor(Some(232));
    kvm.set_access(Some("rwm".into()));
    let r = resources.get_or_insert_with(Default::default);
    let mut rules = r.devices().clone().unwrap_or_default();
    rules.push(kvm);
    r.set_devices(Some(rules));
}

/// Whether `spec` asks for the VM tier.
pub fn wanted(spec: &Spec) -> Result<bool, SpecError> {
    Ok(hull_specs::annotations::isolation(spec)? == hull_specs::Isolation::Vm)
}

/// Everything checked before anything is created: the config, the image, KVM, virtiofsd.
pub fn plan(spec: &Spec, state_dir: &Path, preserve_fds: i32) -> Result<VmPlan, VmError> {
    hull_specs::vm::check_vm_supported(spec)?;
    check_host_side(spec)?;
    if preserve_fds > 0 {
        return Err(VmError::Unsupported(
            "--preserve-fds: descriptors cannot be passed into the guest".into(),
        ));
    }
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let VmSize { memory_mib, vcpus } = hull_specs::vm::vm_size(spec, host_cpus)?;
    let image = load_image()?;
    hull_kvm::kvm_available().map_err(VmError::NoKvm)?;
    // The PVM nested hypervisor runs small guests but not a standard Linux kernel (KVM
    // emulation failures): say so now instead of waiting out the boot timeout.
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(VmError::NoKvm(
            "/dev/kvm is the PVM nested hypervisor (module kvm_pvm), which cannot boot a standard Linux guest".into(),
        ));
    }
    let virtiofsd = hull_kvm::VirtiofsOptions::default()
        .find_binary()
        .ok_or(VmError::NoVirtiofsd)?;
    let socket = state_dir.join(AGENT_SOCKET);
    let boot_timeout_ms = std::env::var(BOOT_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_BOOT_TIMEOUT_SECS)
        .saturating_mul(1000);
    Ok(VmPlan {
        kernel: image.kernel,
        initramfs: image.initramfs,
        memory_mib: u32::try_from(memory_mib)
            .map_err(|_| VmError::Unsupported(format!("{memory_mib} MiB of guest memory")))?,
        vcpus: u8::try_from(vcpus).map_err(|_| VmError::Unsupported(format!("{vcpus} vCPUs")))?,
        socket,
        console_log: state_dir.join(CONSOLE_LOG),
        virtiofsd,
        boot_timeout_ms,
    })
}

/// What only the host side can tell is impossible: a seccomp notify agent (a host socket).
fn check_host_side(spec: &Spec) -> Result<(), VmError> {
    let listener = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .and_then(|s| s.listener_path().as_ref());
    if listener.is_some() {
        return Err(VmError::Spec(SpecError::Invalid {
            field: "linux.seccomp.listenerPath".into(),
            reason: "a seccomp notify agent on the host (not supported in a VM container)".into(),
        }));
    }
    Ok(())
}

/// The config the guest agent carries out: the container's own, minus what the host side
/// already did or owns (hooks, cgroup placement and limits: the VMM is held to them).
pub fn guest_config(spec: &Spec) -> serde_json::Value {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    binds::rewrite_guest_config(spec, &mut v);
    if let Some(o) = v.as_object_mut() {
        o.remove("hooks");
    }
    if let Some(linux) = v.get_mut("linux").and_then(|l| l.as_object_mut()) {
        for k in ["resources", "cgroupsPath", "seccomp"] {
            linux.remove(k);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_socket_in_a_deep_directory_is_reached_through_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let short = tmp.path().join("agent.sock");
        let (fd, path) = reachable_socket(&short).unwrap();
        assert!(fd.is_none());
        assert_eq!(path, short);
        // containerd: <state>/io.containerd.runtime.v2.task/<ns>/<64-char id>/...
        let deep = tmp.path().join("x".repeat(64)).join("y".repeat(64));
        std::fs::create_dir_all(&deep).unwrap();
        let long = deep.join("agent.sock");
        assert!(
            std::os::unix::net::UnixListener::bind(&long).is_err(),
            "too long to bind"
        );
        let (fd, path) = reachable_socket(&long).unwrap();
        assert!(fd.is_some());
        assert!(path.as_os_str().len() + PORT_SUFFIX_MAX <= hull_kvm::config::MAX_UNIX_PATH_LEN);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
        assert!(long.exists(), "the socket is where the state dir has it");
        let gone = tmp.path().join("missing").join("z".repeat(120));
        assert!(matches!(
            reachable_socket(&gone),
            Err(VmError::SocketDir { .. })
        ));
    }

    fn spec(v: serde_json::Value) -> Spec {
        let mut base = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
            "annotations": {"io.hull.isolation": "vm"}});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            for (k, val) in o {
                b.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn notify_agents_are_refused_by_field_and_host_binds_are_not() {
        check_host_side(&spec(json!({"mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind"]},
            {"destination": "/x", "source": "/srv", "options": ["bind", "ro"]}
        ]})))
        .unwrap();
        let e = check_host_side(&spec(json!({"linux": {"seccomp": {
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}}})))
        .unwrap_err()
        .to_string();
        assert!(e.contains("linux.seccomp.listenerPath"), "{e}");
        check_host_side(&spec(json!({"mounts": [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}]})))
        .unwrap();
    }

    #[test]
    fn the_guest_binds_staged_sources_and_masks_the_stage() {
        let s = spec(json!({
            "mounts": [
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]},
                {"destination": "/dev/shm", "source": "/var/lib/x/shm", "options": ["bind"]}
            ],
            "linux": {"maskedPaths": ["/proc/kcore"]}
        }));
        let g = guest_config(&s);
        let root = hull_agent_protocol::GUEST_ROOTFS_DIR;
        assert_eq!(g["mounts"][0]["source"], json!("tmpfs"));
        assert_eq!(
            g["mounts"][1]["source"],
            json!(format!("{root}/.hull-vm-binds/1"))
        );
        assert_eq!(g["mounts"][1]["options"], json!(["rbind", "ro"]));
        assert_eq!(g["mounts"][1]["destination"], json!("/etc/hosts"));
        assert_eq!(
            g["mounts"][2]["source"],
            json!(format!("{root}/.hull-vm-binds/2"))
        );
        assert_eq!(
            g["linux"]["maskedPaths"],
            json!(["/proc/kcore", "/.hull-vm-binds"])
        );
        // Without binds nothing is masked or rewritten.
        let plain = guest_config(&spec(json!({"linux": {}})));
        assert!(plain["linux"].get("maskedPaths").is_none());
    }

    #[test]
    fn the_guest_gets_no_hooks_and_no_host_cgroup_settings() {
        let s = spec(json!({
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"]},
            "linux": {"cgroupsPath": "/x", "resources": {"pids": {"limit": 5}},
                      "seccomp": {"defaultAction": "SCMP_ACT_ALLOW"},
                      "maskedPaths": ["/proc/kcore"]}
        }));
        let g = guest_config(&s);
        assert!(g.get("hooks").is_none());
        assert!(g["linux"].get("resources").is_none());
        assert!(g["linux"].get("cgroupsPath").is_none());
        assert!(g["linux"].get("seccomp").is_none());
        assert_eq!(g["linux"]["maskedPaths"], json!(["/proc/kcore"]));
        assert_eq!(g["process"]["args"], json!(["sh"]));
    }

    #[test]
    fn a_missing_image_is_named_with_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var(IMAGE_DIR_ENV, dir.path().join("none"));
        let e = plan(&spec(json!({})), dir.path(), 0)
            .unwrap_err()
            .to_string();
        std::env::remove_var(IMAGE_DIR_ENV);
        assert!(
            e.contains("hull vm-image build") && e.contains("none"),
            "{e}"
        );
        let e = plan(&spec(json!({})), dir.path(), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--preserve-fds"), "{e}");
    }
}
