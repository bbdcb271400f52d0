//! `hull spec`: the default configuration, as `runc spec` and `runc spec --rootless` write it.
//!
//! Differences from Debian's runc 1.1.5 (deliberate):
//! - `hostname` is `"hull"`;
//! - capabilities are only in `bounding`, `effective` and `permitted` (runc 1.1 also fills
//!   `ambient`, which newer runc dropped: ambient capabilities survive `execve` of unprivileged
//!   binaries, which is not a safe default);
//! - a `cgroup` namespace is created (runc >= 1.2 does the same; it is what cgroup v2 hosts
//!   expect, and it hides the host's cgroup paths);
//! - rootless: no `/sys/fs/cgroup` mount (hull cannot create a cgroup there) and the cgroup
//!   namespace is kept;
//! - `linux.seccomp` is the default profile of containerd and Docker
//!   ([`crate::seccomp_default`]), gated on the spec's bounding set — `runc spec` writes
//!   none, but every container containerd, Docker or podman starts gets it. Rootless specs
//!   get it too: with `noNewPrivileges` loading a filter needs no privilege, and rootless
//!   Docker and podman apply the same profile;
//! - `linux.resources.pids.limit` is [`DEFAULT_PIDS_LIMIT`] (runc writes none): a fork bomb
//!   in one container cannot exhaust the host's pids. Not in rootless specs, whose cgroup
//!   hull usually cannot create (runc's rootless rule: no cgroup, so no limits).
//!
//! Kept from runc: the capability set (`CAP_AUDIT_WRITE`, `CAP_KILL`,
//! `CAP_NET_BIND_SERVICE`), the masked and read-only paths, `noNewPrivileges`, a read-only
//! root, a deny-all device cgroup.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, Linux, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespace, LinuxNamespaceType,
    LinuxPids, Spec,
};

use crate::bundle::CONFIG_FILE;
use crate::json::spec_to_pretty_json;
use crate::seccomp_default::default_seccomp;
use crate::SpecError;

/// The hostname of a default container.
pub const DEFAULT_HOSTNAME: &str = "hull";

/// `linux.resources.pids.limit` of a default (not rootless) container.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// The default spec: a shell on a read-only `rootfs`, like `runc spec`. With `rootless`,
/// a user namespace maps container root to host `uid`/`gid` and everything that needs real
/// root on the host (network namespace, sysfs, devpts `gid=5`, cgroups) is dropped or
/// replaced, like `runc spec --rootless`.
pub fn default_spec(rootless: bool, uid: u32, gid: u32) -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some(DEFAULT_HOSTNAME.to_string()));
    spec.set_annotations(None);

    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
        let mut caps = LinuxCapabilities::default();
        caps.set_inheritable(None);
        caps.set_ambient(None);
        process.set_capabilities(Some(caps));
    }
    let bounding: Vec<Capability> = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .map(|c| c.bounding().iter().flatten().copied().collect())
        .unwrap_or_default();

    if let Some(linux) = spec.linux_mut() {
        let mut deny_all = LinuxDeviceCgroup::default();
        deny_all.set_allow(false);
        deny_all.set_access(Some("rwm".to_string()));
        if let Some(res) = linux.resources_mut() {
            res.set_devices(Some(vec![deny_all]));
            let mut pids = LinuxPids::default();
            pids.set_limit(DEFAULT_PIDS_LIMIT);
            res.set_pids(Some(pids));
        }
        linux.set_seccomp(Some(default_seccomp(&bounding)));
        if rootless {
            linux.set_resources(None);
            // Container root (0) to host uid/gid, size 1.
            let mapped = Linux::rootless(uid, gid);
            linux.set_uid_mappings(mapped.uid_mappings().clone());
            linux.set_gid_mappings(mapped.gid_mappings().clone());
            if let Some(ns) = linux.namespaces_mut() {
                ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
                let mut user = LinuxNamespace::default();
                user.set_typ(LinuxNamespaceType::User);
                ns.push(user);
            }
        }
    }

    if rootless {
        if let Some(mounts) = spec.mounts_mut() {
            mounts.retain(|m| m.typ().as_deref() != Some("cgroup"));
            for m in mounts.iter_mut() {
                if m.typ().as_deref() == Some("devpts") {
                    if let Some(opts) = m.options_mut() {
                        opts.retain(|o| o != "gid=5");
                    }
                }
                if m.typ().as_deref() == Some("sysfs") {
                    m.set_typ(Some("none".to_string()));
                    m.set_source(Some("/sys".into()));
                    m.set_options(Some(
                        ["rbind", "nosuid", "noexec", "nodev", "ro"]
                            .map(String::from)
                            .to_vec(),
                    ));
                }
            }
        }
    }
    spec
}

/// Writes [`default_spec`] to `bundle_dir/config.json` as runc does (tab-indented JSON in
/// runtime-spec key order); refuses to overwrite an existing file. Returns the file's path.
pub fn write_default_spec(
    bundle_dir: &Path,
    rootless: bool,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, SpecError> {
    let path = bundle_dir.join(CONFIG_FILE);
    let text = spec_to_pretty_json(&default_spec(rootless, uid, gid))?;
    let io_err = |source| SpecError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                SpecError::AlreadyExists { path: path.clone() }
            } else {
                io_err(source)
            }
        })?;
    file.write_all(text.as_bytes()).map_err(io_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::spec_to_value;
    use serde_json::{json, Value};

    const RUNC_SPEC: &str = include_str!("testdata/runc-1.1.5-spec.json");
    const RUNC_ROOTLESS: &str = include_str!("testdata/runc-1.1.5-spec-rootless.json");

    fn value(spec: &Spec) -> Value {
        spec_to_value(spec).expect("serializes")
    }

    /// Applies hull's documented differences to runc's output.
    fn runc_with_hull_differences(runc: &str, rootless: bool) -> Value {
        let mut v: Value = serde_json::from_str(runc).expect("runc fixture parses");
        v["hostname"] = json!("hull");
        if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
            caps.remove("ambient");
            caps.remove("inheritable");
        }
        if let Some(ns) = v["linux"]["namespaces"].as_array_mut() {
            // Before the user namespace that runc appends in rootless mode.
            let at = ns
                .iter()
                .position(|n| n["type"] == "user")
                .unwrap_or(ns.len());
            ns.insert(at, json!({"type": "cgroup"}));
        }
        if rootless {
            if let Some(m) = v["mounts"].as_array_mut() {
                m.retain(|m| m["type"] != "cgroup");
            }
        } else {
            v["linux"]["resources"]["pids"] = json!({"limit": DEFAULT_PIDS_LIMIT});
        }
        // The default seccomp profile for runc's default bounding set.
        let bounding: Vec<Capability> =
            serde_json::from_value(v["process"]["capabilities"]["bounding"].clone())
                .expect("runc's bounding set parses");
        v["linux"]["seccomp"] =
            serde_json::to_value(default_seccomp(&bounding)).expect("profile serializes");
        v
    }

    #[test]
    fn matches_runc_spec_but_for_documented_differences() {
        assert_eq!(
            value(&default_spec(false, 0, 0)),
            runc_with_hull_differences(RUNC_SPEC, false)
        );
    }

    #[test]
    fn rootless_matches_runc_spec_rootless_but_for_documented_differences() {
        assert_eq!(
            value(&default_spec(true, 0, 0)),
            runc_with_hull_differences(RUNC_ROOTLESS, true)
        );
    }

    #[test]
    fn brief_checklist() {
        let v = value(&default_spec(false, 1000, 1000));
        assert_eq!(v["process"]["terminal"], json!(true));
        assert_eq!(v["process"]["args"], json!(["sh"]));
        assert_eq!(v["process"]["cwd"], json!("/"));
        assert_eq!(v["process"]["noNewPrivileges"], json!(true));
        assert_eq!(
            v["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(
            v["linux"]["resources"],
            json!({"devices": [{"allow": false, "access": "rwm"}], "pids": {"limit": 4096}})
        );
        assert!(v["linux"]["uidMappings"].is_null());
        assert_eq!(v["mounts"].as_array().map(Vec::len), Some(7));
        assert_eq!(v["linux"]["maskedPaths"].as_array().map(Vec::len), Some(10));
        assert_eq!(
            v["linux"]["readonlyPaths"].as_array().map(Vec::len),
            Some(5)
        );
        assert!(v.get("annotations").is_none());
    }

    #[test]
    fn default_seccomp_profile_in_both_flavours() {
        for rootless in [false, true] {
            let v = value(&default_spec(rootless, 1000, 1000));
            let sc = &v["linux"]["seccomp"];
            assert_eq!(sc["defaultAction"], json!("SCMP_ACT_ERRNO"), "{rootless}");
            let allowed: Vec<&str> = sc["syscalls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["action"] == "SCMP_ACT_ALLOW")
                .flat_map(|c| c["names"].as_array().into_iter().flatten())
                .filter_map(|n| n.as_str())
                .collect();
            assert!(allowed.contains(&"mkdir") && allowed.contains(&"execve"));
            // The default bounding set has no CAP_SYS_ADMIN.
            assert!(!allowed.contains(&"mount") && !allowed.contains(&"unshare"));
        }
    }

    #[test]
    fn rootless_maps_the_given_ids() {
        let v = value(&default_spec(true, 1000, 1001));
        assert_eq!(
            v["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": 1000, "size": 1}])
        );
        assert_eq!(
            v["linux"]["gidMappings"],
            json!([{"containerID": 0, "hostID": 1001, "size": 1}])
        );
        let types: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(types, ["pid", "ipc", "uts", "mount", "cgroup", "user"]);
        assert!(v["linux"].get("resources").is_none());
        let sys = v["mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["destination"] == "/sys")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            sys,
            json!({"destination": "/sys", "type": "none", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        );
    }

    #[test]
    fn defaults_pass_validation() {
        for rootless in [false, true] {
            let spec = default_spec(rootless, 1000, 1000);
            crate::validate_spec(&spec).expect("default spec is valid");
        }
    }

    #[test]
    fn write_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_default_spec(dir.path(), false, 0, 0).expect("first write");
        assert_eq!(path, dir.path().join("config.json"));
        let text = std::fs::read_to_string(&path).expect("readable");
        assert!(text.starts_with("{\n\t\"ociVersion\": \"1.0.2-dev\",\n\t\"process\": {"));
        let back: Spec = serde_json::from_str(&text).expect("parses back");
        assert_eq!(back, default_spec(false, 0, 0));

        let e = write_default_spec(dir.path(), true, 0, 0).expect_err("second write");
        assert!(matches!(e, SpecError::AlreadyExists { .. }));
        assert!(
            e.to_string().contains(&*path.to_string_lossy()),
            "names the file: {e}"
        );
        // Untouched.
        assert_eq!(std::fs::read_to_string(&path).ok(), Some(text));
    }

    #[test]
    fn write_into_missing_dir_fails_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = write_default_spec(&dir.path().join("nope"), false, 0, 0).expect_err("no dir");
        assert!(matches!(e, SpecError::Io { .. }));
        assert!(e.to_string().contains("nope/config.json"), "{e}");
    }

    #[test]
    fn written_text_matches_runc_layout() {
        // Same bytes as runc for the parts that do not differ: compare a rootless spec
        // (no ambient list to remove) with runc's text after the documented edits.
        let ours = spec_to_pretty_json(&default_spec(false, 0, 0)).expect("prints");
        let theirs = crate::json::to_pretty_ordered(
            &runc_with_hull_differences(RUNC_SPEC, false),
            crate::json::SPEC_KEY_ORDER,
        );
        assert_eq!(ours, theirs);
        // And runc's own text is reproduced byte for byte by the printer.
        let runc: Value = serde_json::from_str(RUNC_SPEC).expect("parses");
        assert_eq!(
            crate::json::to_pretty_ordered(&runc, crate::json::SPEC_KEY_ORDER),
            RUNC_SPEC
        );
    }
}
