//! Linux Security Module labels: `process.apparmorProfile`, `process.selinuxLabel` and
//! `linux.mountLabel`.
//!
//! - [`Host::probe`] finds out which LSMs the running kernel has enabled; [`check_process`]
//!   and [`check_spec`] refuse, at `create`/`exec` time, a label for an LSM the host lacks
//!   (a label silently not applied would be a container running unconfined).
//! - [`apply_exec_labels`] writes the labels the next `execve` takes on, right before it:
//!   AppArmor's `exec <profile>` to `attr/apparmor/exec` (kernels >= 5.1 with LSM stacking),
//!   falling back to `attr/exec`; SELinux's label to `attr/exec`. The attribute directory is
//!   a parameter ([`AttrDir`]): `/proc/self/attr`, checked to be on a real procfs before
//!   anything is written through it (CVE-2019-16884 was an AppArmor label written into a
//!   fake `/proc` the container supplied), or a plain directory in unit tests.
//! - [`label_mounts`] adds SELinux's `context="<mountLabel>"` option to the mounts that take
//!   one (tmpfs, devpts, mqueue and other non-bind, non-proc/sysfs/cgroup filesystems).

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

/// Where the kernel exposes a process's LSM attributes.
pub const PROC_SELF_ATTR: &str = "/proc/self/attr";

#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// A label was requested for an LSM the host does not have enabled.
    #[error("{field} {value:?} was requested but {lsm} is not enabled on this host{hint}")]
    NotEnabled {
        field: &'static str,
        value: String,
        lsm: &'static str,
        /// How hull decided (empty or starting with a space).
        hint: &'static str,
    },
    /// The label cannot be written as one attribute value.
    #[error("{field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Writing the attribute failed (e.g. the profile is not loaded).
    #[error("{field} {value:?}: writing {path:?}: {source}")]
    Write {
        field: &'static str,
        value: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The attribute file is not on a procfs.
    #[error("{field} {value:?}: {path:?} is not on a procfs: refusing to write the label")]
    NotProcfs {
        field: &'static str,
        value: String,
        path: PathBuf,
    },
}

/// The LSMs the running kernel has enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Host {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Host {
    /// AppArmor: `/sys/module/apparmor/parameters/enabled` says `Y` (runc's test).
    /// SELinux: selinuxfs is mounted (`/sys/fs/selinux/enforce` exists), as libselinux's
    /// `is_selinux_enabled` decides.
    pub fn probe() -> Self {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'));
        let selinux = ["/sys/fs/selinux/enforce", "/selinux/enforce"]
            .iter()
            .any(|p| Path::new(p).exists());
        Host { apparmor, selinux }
    }
}

const APPARMOR_HINT: &str = " (/sys/module/apparmor/parameters/enabled is not Y)";
const SELINUX_HINT: &str = " (selinuxfs is not mounted at /sys/fs/selinux)";

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Refuse labels of `process` (config.json's or an exec'd one) the host cannot apply.
pub fn check_process(process: &Process, host: Host) -> Result<(), LsmError> {
    if let Some(p) = nonempty(process.apparmor_profile()) {
        if !host.apparmor {
            return Err(LsmError::NotEnabled {
                field: "process.apparmorProfile",
                value: p.to_string(),
                lsm: "AppArmor",
                hint: APPARMOR_HINT,
            });
        }
        check_value("process.apparmorProfile", p)?;
    }
    if let Some(l) = nonempty(process.selinux_label()) {
        if !host.selinux {
            return Err(LsmError::NotEnabled {
                field: "process.selinuxLabel",
                value: l.to_string(),
                lsm: "SELinux",
                hint: SELINUX_HINT,
            });
        }
        check_value("process.selinuxLabel", l)?;
    }
    Ok(())
}

/// [`check_process`] for `process`, and `linux.mountLabel`.
pub fn check_spec(spec: &Spec, host: Host) -> Result<(), LsmError> {
    if let Some(p) = spec.process() {
        check_process(p, host)?;
    }
    if let Some(l) = mount_label(spec) {
        if !host.selinux {
            return Err(LsmError::NotEnabled {
                field: "linux.mountLabel",
                value: l.to_string(),
                lsm: "SELinux",
                hint: SELINUX_HINT,
            });
        }
        check_value("linux.mountLabel", l)?;
        // It goes inside `context="..."`.
        if l.contains('"') {
            return Err(LsmError::Invalid {
                field: "linux.mountLabel",
                value: l.to_string(),
                reason: "must not contain a double quote",
            });
        }
    }
    Ok(())
}

/// A label is one line of text: no NUL, no newline.
fn check_value(field: &'static str, v: &str) -> Result<(), LsmError> {
    if v.contains(['\0', '\n']) {
        return Err(LsmError::Invalid {
            field,
            value: v.to_string(),
            reason: "contains a NUL byte or a newline",
        });
    }
    Ok(())
}

fn mount_label(spec: &Spec) -> Option<&str> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.mount_label().as_deref())
        .filter(|l| !l.is_empty())
}

/// A directory of LSM attribute files (`exec`, `apparmor/exec`, ...).
#[derive(Debug, Clone)]
pub struct AttrDir {
    pub path: PathBuf,
    /// Check with `fstatfs` that each file opened is on a procfs before writing it.
    pub require_procfs: bool,
    /// Open the files in a private procfs instance instead of under `path` (see
    /// [`crate::procfs`]): what init does for its own `/proc/self/attr`.
    pub private_procfs: bool,
}

impl AttrDir {
    /// `/proc/self/attr`, verified to be procfs.
    pub fn proc_self() -> Self {
        AttrDir {
            path: PathBuf::from(PROC_SELF_ATTR),
            require_procfs: true,
            private_procfs: true,
        }
    }

    /// Write `value` to `name` under this directory (one `write`, as the kernel wants).
    fn write(&self, field: &'static str, label: &str, name: &str, value: &str) -> WriteResult {
        let path = self.path.join(name);
        let err = |source| LsmError::Write {
            field,
            value: label.to_string(),
            path: path.clone(),
            source,
        };
        let opened = if self.private_procfs {
            crate::procfs::PrivateProc::shared()
                .and_then(|p| p.open_write(&format!("self/attr/{name}")))
                .map_err(std::io::Error::from)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
        };
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return WriteResult::Missing,
            Err(e) => return WriteResult::Err(err(e)),
        };
        if self.require_procfs {
            let on_proc = nix::sys::statfs::fstatfs(f.as_fd())
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
            if !on_proc {
                return WriteResult::Err(LsmError::NotProcfs {
                    field,
                    value: label.to_string(),
                    path,
                });
            }
        }
        match f.write_all(value.as_bytes()) {
            Ok(()) => WriteResult::Done,
            Err(e) => WriteResult::Err(err(e)),
        }
    }
}

enum WriteResult {
    Done,
    Missing,
    Err(LsmError),
}

/// Set the labels `process` asks for on the next `execve` of this process. Call it last
/// before the privilege drop (user switch, capabilities, no_new_privs) that precedes the
/// `execve`: the attributes only take effect at `execve`, and a confined or unprivileged
/// process may no longer be allowed to choose its exec label.
pub fn apply_exec_labels(dir: &AttrDir, process: &Process) -> Result<(), LsmError> {
    if let Some(profile) = nonempty(process.apparmor_profile()) {
        const FIELD: &str = "process.apparmorProfile";
        check_value(FIELD, profile)?;
        let cmd = format!("exec {profile}");
        // The AppArmor-specific file first (LSM stacking, Linux >= 5.1), then the shared one.
        match dir.write(FIELD, profile, "apparmor/exec", &cmd) {
            WriteResult::Done => {}
            WriteResult::Err(e) => return Err(e),
            WriteResult::Missing => match dir.write(FIELD, profile, "exec", &cmd) {
                WriteResult::Done => {}
                WriteResult::Err(e) => return Err(e),
                WriteResult::Missing => return Err(missing(dir, FIELD, profile, "exec")),
            },
        }
    }
    if let Some(label) = nonempty(process.selinux_label()) {
        const FIELD: &str = "process.selinuxLabel";
        check_value(FIELD, label)?;
        match dir.write(FIELD, label, "exec", label) {
            WriteResult::Done => {}
            WriteResult::Err(e) => return Err(e),
            WriteResult::Missing => return Err(missing(dir, FIELD, label, "exec")),
        }
    }
    Ok(())
}

fn missing(dir: &AttrDir, field: &'static str, value: &str, name: &str) -> LsmError {
    LsmError::Write {
        field,
        value: value.to_string(),
        path: dir.path.join(name),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

/// Filesystems whose mounts take SELinux's `context=` option (runc labels every mount but
/// binds, proc, sysfs and cgroup ones; mqueue gets it too, the kernel accepts it).
fn takes_context(typ: &str, options: &[String]) -> bool {
    let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    !bind && !matches!(typ, "" | "proc" | "sysfs" | "cgroup" | "cgroup2" | "none")
}

/// `spec` with `context="<linux.mountLabel>"` added to the options of the mounts that take
/// it, or None when there is no mount label (or SELinux is not enabled: [`check_spec`]
/// refused that at create already). The quotes keep an MCS level's commas inside the
/// option (`s0:c1,c2`).
pub fn label_mounts(spec: &Spec, host: Host) -> Option<Spec> {
    let label = mount_label(spec)?;
    if !host.selinux {
        return None;
    }
    let mut out = spec.clone();
    let mounts = out.mounts_mut().as_mut()?;
    for m in mounts.iter_mut() {
        let typ = m.typ().clone().unwrap_or_default();
        let mut opts = m.options().clone().unwrap_or_default();
        if !takes_context(&typ, &opts) || opts.iter().any(|o| o.starts_with("context=")) {
            continue;
        }
        opts.push(format!("context=\"{label}\""));
        m.set_options(Some(opts));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).expect("process parses")
    }

    fn fake_attr(with_apparmor_dir: bool) -> (tempfile::TempDir, AttrDir) {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join("exec"), "").expect("exec");
        if with_apparmor_dir {
            std::fs::create_dir(t.path().join("apparmor")).expect("mkdir");
            std::fs::write(t.path().join("apparmor/exec"), "").expect("apparmor/exec");
        }
        let dir = AttrDir {
            path: t.path().to_path_buf(),
            require_procfs: false,
            private_procfs: false,
        };
        (t, dir)
    }

    const AA: &str =
        r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"apparmorProfile":"hull-default"}"#;
    const SE: &str = r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"selinuxLabel":"system_u:system_r:container_t:s0:c1,c2"}"#;

    #[test]
    fn apparmor_goes_to_the_apparmor_file_when_present() {
        let (t, dir) = fake_attr(true);
        apply_exec_labels(&dir, &process(AA)).expect("applied");
        let aa = std::fs::read_to_string(t.path().join("apparmor/exec")).expect("read");
        assert_eq!(aa, "exec hull-default");
        assert_eq!(
            std::fs::read_to_string(t.path().join("exec"))
                .ok()
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn apparmor_falls_back_to_the_shared_exec_file() {
        let (t, dir) = fake_attr(false);
        apply_exec_labels(&dir, &process(AA)).expect("applied");
        let exec = std::fs::read_to_string(t.path().join("exec")).expect("read");
        assert_eq!(exec, "exec hull-default");
    }

    #[test]
    fn selinux_label_is_written_verbatim() {
        let (t, dir) = fake_attr(true);
        apply_exec_labels(&dir, &process(SE)).expect("applied");
        let exec = std::fs::read_to_string(t.path().join("exec")).expect("read");
        assert_eq!(exec, "system_u:system_r:container_t:s0:c1,c2");
        assert_eq!(
            std::fs::read_to_string(t.path().join("apparmor/exec"))
                .ok()
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn nothing_requested_writes_nothing() {
        let (t, dir) = fake_attr(true);
        let p =
            process(r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"apparmorProfile":""}"#);
        apply_exec_labels(&dir, &p).expect("nothing to do");
        assert_eq!(
            std::fs::read_to_string(t.path().join("exec"))
                .ok()
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn a_missing_attr_dir_names_the_field_and_path() {
        let dir = AttrDir {
            path: PathBuf::from("/nonexistent-hull-attr"),
            require_procfs: false,
            private_procfs: false,
        };
        let e = apply_exec_labels(&dir, &process(SE)).expect_err("no such dir");
        let msg = e.to_string();
        assert!(msg.contains("process.selinuxLabel"), "{msg}");
        assert!(msg.contains("/nonexistent-hull-attr/exec"), "{msg}");
    }

    #[test]
    fn a_fake_attr_dir_is_refused_when_procfs_is_required() {
        let (_t, mut dir) = fake_attr(true);
        dir.require_procfs = true;
        let e = apply_exec_labels(&dir, &process(AA)).expect_err("not procfs");
        assert!(matches!(e, LsmError::NotProcfs { .. }), "{e}");
        assert!(e.to_string().contains("process.apparmorProfile"), "{e}");
    }

    #[test]
    fn a_symlinked_attr_file_is_not_followed() {
        let (t, dir) = fake_attr(false);
        let target = t.path().join("target");
        std::fs::write(&target, "").expect("target");
        std::fs::remove_file(t.path().join("exec")).expect("rm");
        std::os::unix::fs::symlink(&target, t.path().join("exec")).expect("symlink");
        assert!(apply_exec_labels(&dir, &process(AA)).is_err());
        assert_eq!(std::fs::read_to_string(&target).ok().as_deref(), Some(""));
    }

    #[test]
    fn labels_for_missing_lsms_are_refused_naming_the_field() {
        let none = Host::default();
        let e = check_process(&process(AA), none).expect_err("no apparmor");
        assert!(e.to_string().contains("process.apparmorProfile"), "{e}");
        assert!(e.to_string().contains("AppArmor is not enabled"), "{e}");
        let e = check_process(&process(SE), none).expect_err("no selinux");
        assert!(e.to_string().contains("process.selinuxLabel"), "{e}");
        let both = Host {
            apparmor: true,
            selinux: true,
        };
        check_process(&process(AA), both).expect("apparmor ok");
        check_process(&process(SE), both).expect("selinux ok");
        let bad = process(
            r#"{"cwd":"/","user":{"uid":0,"gid":0},"args":["sh"],"apparmorProfile":"a\nb"}"#,
        );
        assert!(matches!(
            check_process(&bad, both),
            Err(LsmError::Invalid { .. })
        ));
    }

    fn spec_with_mount_label() -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
                {"destination": "/data", "type": "none", "source": "/d", "options": ["rbind"]}
            ],
            "linux": {"mountLabel": "system_u:object_r:container_file_t:s0:c1,c2"}
        }))
        .expect("spec parses")
    }

    #[test]
    fn mount_label_needs_selinux() {
        let spec = spec_with_mount_label();
        let e = check_spec(&spec, Host::default()).expect_err("no selinux");
        assert!(e.to_string().contains("linux.mountLabel"), "{e}");
        assert!(label_mounts(&spec, Host::default()).is_none());
    }

    #[test]
    fn mount_label_becomes_a_context_option() {
        let spec = spec_with_mount_label();
        let host = Host {
            apparmor: false,
            selinux: true,
        };
        check_spec(&spec, host).expect("ok with selinux");
        let labeled = label_mounts(&spec, host).expect("labeled");
        let ctx = "context=\"system_u:object_r:container_file_t:s0:c1,c2\"".to_string();
        let has = |dest: &str| {
            labeled
                .mounts()
                .iter()
                .flatten()
                .find(|m| m.destination() == Path::new(dest))
                .and_then(|m| m.options().clone())
                .unwrap_or_default()
                .contains(&ctx)
        };
        for d in ["/dev", "/dev/pts", "/dev/mqueue"] {
            assert!(has(d), "{d}");
        }
        for d in ["/proc", "/sys", "/data"] {
            assert!(!has(d), "{d}");
        }
        // Parsed as mount data, quotes and commas intact.
        let dev = labeled
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/dev"))
            .and_then(|m| m.options().clone())
            .unwrap_or_default();
        let opts = crate::rootfs::mount_options::parse(&dev);
        assert_eq!(opts.data().unwrap_or(""), ctx);
    }
}
