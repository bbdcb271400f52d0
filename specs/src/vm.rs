//! What a VM container (`io.hull.isolation=vm`) gets and what it cannot have.
//!
//! The guest's memory and vCPUs follow the container's cgroup limits (the VMM and virtiofsd
//! run inside that cgroup, so their own overhead is taken out of the memory limit), unless
//! `io.hull.vm.memory_mib` / `io.hull.vm.vcpus` say otherwise. Configurations the VM tier
//! cannot carry out are refused here by field name, never ignored.

use oci_spec::runtime::{LinuxResources, Spec};

use crate::SpecError;

/// Guest memory in MiB (overrides the memory limit's share).
pub const VM_MEMORY_MIB: &str = "io.hull.vm.memory_mib";
/// Guest vCPUs (overrides the CPU limit's share).
pub const VM_VCPUS: &str = "io.hull.vm.vcpus";

/// `hull features` lists, under this annotation key, what a VM container refuses.
pub const UNSUPPORTED_KEY: &str = "io.hull.vm.unsupported";
/// What `create` refuses for a VM container (see [`check_vm_supported`] and the runtime's
/// host-side checks), by config field or option.
pub const UNSUPPORTED: &[&str] = &[
    "process.apparmorProfile",
    "process.selinuxLabel",
    "linux.mountLabel",
    "hooks.createContainer",
    "hooks.startContainer",
    "linux.uidMappings",
    "linux.gidMappings",
    "linux.namespaces[].path",
    "linux.namespaces[type=user]",
    "linux.devices",
    "linux.intelRdt",
    "linux.seccomp.listenerPath",
    "--preserve-fds",
    "checkpoint",
    "restore",
];

/// What the VMM and virtiofsd themselves need inside the container's memory limit (their
/// measured RSS is ~3 MiB and a few MiB; the rest is headroom for page tables and buffers).
pub const VMM_OVERHEAD_MIB: u64 = 48;
/// Guest memory when neither the annotation nor a memory limit says.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// The least memory the guest kernel and agent boot in.
pub const MIN_MEMORY_MIB: u64 = 96;
/// The most vCPUs one VM container gets (the VMM's own ceiling).
pub const MAX_VCPUS: u32 = 32;

/// The size of a VM container's guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Guest vCPUs.
    pub vcpus: u32,
}

fn field(key: &str) -> String {
    format!("annotations[{key:?}]")
}

fn annotation<'a>(spec: &'a Spec, key: &str) -> Option<&'a str> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn parse_number(spec: &Spec, key: &str) -> Result<Option<u64>, SpecError> {
    annotation(spec, key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| SpecError::invalid(field(key), format!("{v:?} is not a whole number")))
        })
        .transpose()
}

/// The guest's size for `spec` on a host with `host_cpus` CPUs.
pub fn vm_size(spec: &Spec, host_cpus: u32) -> Result<VmSize, SpecError> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    Ok(VmSize {
        memory_mib: memory_mib(spec, resources)?,
        vcpus: vcpus(spec, resources, host_cpus.max(1))?,
    })
}

fn memory_mib(spec: &Spec, resources: Option<&LinuxResources>) -> Result<u64, SpecError> {
    const MIB: i64 = 1 << 20;
    // A limit of -1 (or none) is "unlimited".
    let limit_mib = resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| (l / MIB) as u64);
    let asked = parse_number(spec, VM_MEMORY_MIB)?;
    let mib = match (asked, limit_mib) {
        (Some(m), Some(limit)) if m + VMM_OVERHEAD_MIB > limit => {
            return Err(SpecError::invalid(
                field(VM_MEMORY_MIB),
                format!(
                    "{m} MiB of guest memory plus the VMM's {VMM_OVERHEAD_MIB} MiB does not fit in linux.resources.memory.limit ({limit} MiB)"
                ),
            ))
        }
        (Some(m), _) => m,
        (None, Some(limit)) => {
            let m = limit.saturating_sub(VMM_OVERHEAD_MIB);
            if m < MIN_MEMORY_MIB {
                return Err(SpecError::invalid(
                    "linux.resources.memory.limit",
                    format!(
                        "{limit} MiB leaves {m} MiB for a VM container's guest after the VMM's {VMM_OVERHEAD_MIB} MiB; it needs at least {MIN_MEMORY_MIB} MiB"
                    ),
                ));
            }
            m
        }
        (None, None) => DEFAULT_MEMORY_MIB,
    };
    if mib < MIN_MEMORY_MIB {
        return Err(SpecError::invalid(
            field(VM_MEMORY_MIB),
            format!("{mib} MiB is below the {MIN_MEMORY_MIB} MiB a guest needs to boot"),
        ));
    }
    Ok(mib)
}

fn vcpus(
    spec: &Spec,
    resources: Option<&LinuxResources>,
    host_cpus: u32,
) -> Result<u32, SpecError> {
    let cap = host_cpus.min(MAX_VCPUS);
    if let Some(n) = parse_number(spec, VM_VCPUS)? {
        if n == 0 || n > u64::from(cap) {
            return Err(SpecError::invalid(
                field(VM_VCPUS),
                format!("{n} is not between 1 and {cap} (this host's CPUs, at most {MAX_VCPUS})"),
            ));
        }
        return Ok(n as u32);
    }
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    // A CFS quota of 150000 per 100000 is 1.5 CPUs: the guest gets 2 vCPUs and the cgroup
    // still holds the VMM to 1.5 CPUs of time.
    let from_quota = cpu.and_then(|c| match (c.quota(), c.period()) {
        (Some(q), Some(p)) if q > 0 && p > 0 => Some((q as u64).div_ceil(p)),
        (Some(q), None) if q > 0 => Some((q as u64).div_ceil(100_000)),
        _ => None,
    });
    let from_cpuset = cpu.and_then(|c| c.cpus().as_deref()).and_then(cpuset_count);
    let n = match (from_quota, from_cpuset) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => 1,
    };
    Ok(n.clamp(1, u64::from(cap)) as u32)
}

/// The number of CPUs in a cpuset list such as `0-3,6`; `None` if it does not parse (the
/// cgroup code reports that).
fn cpuset_count(list: &str) -> Option<u64> {
    let mut n = 0u64;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

fn refuse(field: impl Into<String>, what: &str) -> SpecError {
    SpecError::invalid(field, format!("{what} (not supported in a VM container)"))
}

/// Refuses, by field, what a VM container cannot carry out: the workload runs in a guest
/// kernel that sees only the rootfs share, its own devices and loopback networking.
pub fn check_vm_supported(spec: &Spec) -> Result<(), SpecError> {
    if let Some(p) = spec.process() {
        if p.apparmor_profile().as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(refuse(
                "process.apparmorProfile",
                "the guest kernel has no AppArmor policy",
            ));
        }
        if p.selinux_label().as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(refuse(
                "process.selinuxLabel",
                "the guest kernel has no SELinux policy",
            ));
        }
    }
    if let Some(h) = spec.hooks() {
        if h.create_container().as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(refuse(
                "hooks.createContainer",
                "hooks that run in the container's namespaces would have to run in the guest",
            ));
        }
        if h.start_container().as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(refuse(
                "hooks.startContainer",
                "hooks that run in the container's namespaces would have to run in the guest",
            ));
        }
    }
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    if linux.mount_label().as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(refuse(
            "linux.mountLabel",
            "the guest kernel has no SELinux policy",
        ));
    }
    if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
    {
        return Err(refuse(
            "linux.uidMappings",
            "user-namespace id mappings over a virtio-fs rootfs",
        ));
    }
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        if ns.path().is_some() {
            return Err(refuse(
                format!("linux.namespaces[{i}].path"),
                "joining a host namespace: the workload runs in the guest's own kernel",
            ));
        }
        if ns.typ() == oci_spec::runtime::LinuxNamespaceType::User {
            return Err(refuse(
                format!("linux.namespaces[{i}]"),
                "a user namespace over a virtio-fs rootfs",
            ));
        }
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(refuse(
            "linux.devices",
            "host device nodes cannot be passed into the guest",
        ));
    }
    if linux.intel_rdt().is_some() {
        return Err(refuse("linux.intelRdt", "Intel RDT"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> Spec {
        let mut base = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            for (k, val) in o {
                b.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn err(r: Result<impl std::fmt::Debug, SpecError>) -> String {
        r.expect_err("must be refused").to_string()
    }

    #[test]
    fn defaults_without_limits() {
        let s = spec(json!({}));
        assert_eq!(
            vm_size(&s, 8).unwrap(),
            VmSize {
                memory_mib: DEFAULT_MEMORY_MIB,
                vcpus: 1
            }
        );
    }

    #[test]
    fn memory_limit_minus_overhead_becomes_guest_memory() {
        let s = spec(json!({"linux": {"resources": {"memory": {"limit": 1073741824i64}}}}));
        assert_eq!(vm_size(&s, 2).unwrap().memory_mib, 1024 - VMM_OVERHEAD_MIB);
        let s = spec(json!({"linux": {"resources": {"memory": {"limit": -1}}}}));
        assert_eq!(vm_size(&s, 2).unwrap().memory_mib, DEFAULT_MEMORY_MIB);
        let s = spec(json!({"linux": {"resources": {"memory": {"limit": 100 << 20}}}}));
        let e = err(vm_size(&s, 2));
        assert!(
            e.contains("linux.resources.memory.limit") && e.contains("at least"),
            "{e}"
        );
    }

    #[test]
    fn memory_annotation_must_fit_the_limit() {
        let a = |m: &str, limit: Option<i64>| {
            let mut v = json!({"annotations": {VM_MEMORY_MIB: m}});
            if let Some(l) = limit {
                v["linux"] = json!({"resources": {"memory": {"limit": l}}});
            }
            vm_size(&spec(v), 2)
        };
        assert_eq!(a("200", None).unwrap().memory_mib, 200);
        assert_eq!(a("200", Some(512 << 20)).unwrap().memory_mib, 200);
        let e = err(a("500", Some(512 << 20)));
        assert!(
            e.contains(VM_MEMORY_MIB) && e.contains("does not fit"),
            "{e}"
        );
        let e = err(a("lots", None));
        assert!(e.contains("not a whole number"), "{e}");
        let e = err(a("16", None));
        assert!(e.contains("below"), "{e}");
        let e = err(a("-5", None));
        assert!(e.contains(VM_MEMORY_MIB), "{e}");
    }

    #[test]
    fn vcpus_follow_quota_and_cpuset() {
        let cpu = |c: serde_json::Value| spec(json!({"linux": {"resources": {"cpu": c}}}));
        let v = |s: &Spec, host| vm_size(s, host).unwrap().vcpus;
        assert_eq!(v(&cpu(json!({"quota": 150000, "period": 100000})), 8), 2);
        assert_eq!(v(&cpu(json!({"quota": 50000, "period": 100000})), 8), 1);
        assert_eq!(v(&cpu(json!({"cpus": "0-3,6"})), 8), 5);
        assert_eq!(
            v(
                &cpu(json!({"cpus": "0-3", "quota": 200000, "period": 100000})),
                8
            ),
            2
        );
        assert_eq!(v(&cpu(json!({"quota": 800000, "period": 100000})), 2), 2);
        assert_eq!(v(&cpu(json!({"quota": -1, "period": 100000})), 8), 1);
        assert_eq!(cpuset_count("3-1"), None);
        assert_eq!(cpuset_count("x"), None);
    }

    #[test]
    fn vcpus_annotation_is_bounded_by_the_host() {
        let a = |n: &str| vm_size(&spec(json!({"annotations": {VM_VCPUS: n}})), 4);
        assert_eq!(a("3").unwrap().vcpus, 3);
        for bad in ["0", "5", "x"] {
            let e = err(a(bad));
            assert!(e.contains(VM_VCPUS), "{bad}: {e}");
        }
    }

    #[test]
    fn unsupported_configs_are_refused_by_field() {
        let cases = [
            (
                json!({"process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "apparmorProfile": "x"}}),
                "process.apparmorProfile",
            ),
            (
                json!({"process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "selinuxLabel": "x"}}),
                "process.selinuxLabel",
            ),
            (
                json!({"hooks": {"createContainer": [{"path": "/bin/true"}]}}),
                "hooks.createContainer",
            ),
            (
                json!({"hooks": {"startContainer": [{"path": "/bin/true"}]}}),
                "hooks.startContainer",
            ),
            (json!({"linux": {"mountLabel": "x"}}), "linux.mountLabel"),
            (
                json!({"linux": {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}}),
                "linux.uidMappings",
            ),
            (
                json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}]}}),
                "linux.namespaces[1].path",
            ),
            (
                json!({"linux": {"namespaces": [{"type": "user"}]}}),
                "linux.namespaces[0]",
            ),
            (
                json!({"linux": {"devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]}}),
                "linux.devices",
            ),
        ];
        for (v, f) in cases {
            let e = err(check_vm_supported(&spec(v)));
            assert!(e.contains(f) && e.contains("VM container"), "{f}: {e}");
        }
        let ok = spec(json!({
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["sh"]},
            "hooks": {"prestart": [{"path": "/bin/true"}]},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}]}
        }));
        check_vm_supported(&ok).unwrap();
    }
}
