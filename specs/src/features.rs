//! `hull features`: the runtime-spec `features.md` document, truthful for hull today.

use oci_spec::runtime::Capability;
use serde_json::{json, Value};

use crate::annotations::{ISOLATION, USERNS};
use crate::json::{to_pretty_ordered, FEATURES_KEY_ORDER};

/// The oldest runtime-spec version hull accepts.
pub const OCI_VERSION_MIN: &str = "1.0.0";
/// The newest runtime-spec version whose fields hull parses (oci-spec 0.10 types).
pub const OCI_VERSION_MAX: &str = "1.2.0";

/// Hook kinds hull runs.
pub const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Mount options hull's mount code understands, sorted (`tmpcopyup` is not supported yet).
pub const MOUNT_OPTIONS: [&str; 38] = [
    "async",
    "atime",
    "bind",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// Namespaces hull can create or join.
pub const NAMESPACES: [&str; 8] = [
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
];

/// seccomp actions hull's filter compiler handles (runtime/src/seccomp.rs), sorted.
pub const SECCOMP_ACTIONS: [&str; 9] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// Argument operators, sorted.
pub const SECCOMP_OPERATORS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// Architectures a filter may name, sorted. libseccomp (>= 2.5; Debian 12 has 2.5.4) puts
/// only architectures of the native byte order into one filter, so a little-endian hull
/// lists the little-endian ones (LOONGARCH64, M68K, SH need libseccomp 2.6).
pub const SECCOMP_ARCHS: &[&str] = if cfg!(target_endian = "little") {
    &[
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
    ]
} else {
    &[
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
    ]
};

/// Filter flags hull knows (runc's order). `SECCOMP_FILTER_FLAG_TSYNC` is accepted and
/// ignored, as runc does (the container init is single-threaded).
pub const SECCOMP_KNOWN_FLAGS: [&str; 4] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// Filter flags hull can apply: all it knows, since hull loads the program with
/// `seccomp(2)` itself (not through libseccomp's loader). The kernel must know them too
/// (LOG: 4.14, SPEC_ALLOW: 4.17, WAIT_KILLABLE_RECV: 5.19); `create` refuses one the running
/// kernel lacks, naming it. `hull_runtime::seccomp::supported_flags` probes the kernel.
pub const SECCOMP_SUPPORTED_FLAGS: [&str; 4] = SECCOMP_KNOWN_FLAGS;

/// The kernel number of a capability. The match is exhaustive on purpose: a capability
/// added to oci-spec fails the build here until it is placed.
pub fn capability_number(c: Capability) -> u8 {
    match c {
        Capability::Chown => 0,
        Capability::DacOverride => 1,
        Capability::DacReadSearch => 2,
        Capability::Fowner => 3,
        Capability::Fsetid => 4,
        Capability::Kill => 5,
        Capability::Setgid => 6,
        Capability::Setuid => 7,
        Capability::Setpcap => 8,
        Capability::LinuxImmutable => 9,
        Capability::NetBindService => 10,
        Capability::NetBroadcast => 11,
        Capability::NetAdmin => 12,
        Capability::NetRaw => 13,
        Capability::IpcLock => 14,
        Capability::IpcOwner => 15,
        Capability::SysModule => 16,
        Capability::SysRawio => 17,
        Capability::SysChroot => 18,
        Capability::SysPtrace => 19,
        Capability::SysPacct => 20,
        Capability::SysAdmin => 21,
        Capability::SysBoot => 22,
        Capability::SysNice => 23,
        Capability::SysResource => 24,
        Capability::SysTime => 25,
        Capability::SysTtyConfig => 26,
        Capability::Mknod => 27,
        Capability::Lease => 28,
        Capability::AuditWrite => 29,
        Capability::AuditControl => 30,
        Capability::Setfcap => 31,
        Capability::MacOverride => 32,
        Capability::MacAdmin => 33,
        Capability::Syslog => 34,
        Capability::WakeAlarm => 35,
        Capability::BlockSuspend => 36,
        Capability::AuditRead => 37,
        Capability::Perfmon => 38,
        Capability::Bpf => 39,
        Capability::CheckpointRestore => 40,
    }
}

/// Every capability oci-spec knows, in kernel order.
pub const CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// `CAP_CHOWN` etc., as config.json spells them.
pub fn capability_name(c: Capability) -> String {
    // oci-spec's serde names are the spec's spelling (its Display drops the prefix).
    match serde_json::to_value(c) {
        Ok(Value::String(s)) => s,
        _ => format!("CAP_{c}"),
    }
}

/// The features document.
pub fn features() -> Value {
    let caps: Vec<String> = CAPABILITIES.iter().map(|c| capability_name(*c)).collect();
    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": &HOOKS[..],
        "mountOptions": &MOUNT_OPTIONS[..],
        "linux": {
            "namespaces": &NAMESPACES[..],
            "capabilities": caps,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false,
            },
            "seccomp": {
                "enabled": true,
                "actions": &SECCOMP_ACTIONS[..],
                "operators": &SECCOMP_OPERATORS[..],
                "archs": SECCOMP_ARCHS,
                "knownFlags": &SECCOMP_KNOWN_FLAGS[..],
                "supportedFlags": &SECCOMP_SUPPORTED_FLAGS[..],
            },
            // Implemented (runtime/src/lsm.rs); whether this host has the LSM enabled is
            // checked at create, which refuses a label it cannot apply.
            "apparmor": { "enabled": true },
            "selinux": { "enabled": true },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } },
        },
        "annotations": {
            ISOLATION: "container",
            USERNS: "auto",
            crate::vm::VM_MEMORY_MIB: crate::vm::DEFAULT_MEMORY_MIB.to_string(),
            crate::vm::VM_VCPUS: "1",
            crate::vm::UNSUPPORTED_KEY: crate::vm::UNSUPPORTED.join(","),
        },
        "potentiallyUnsafeConfigAnnotations": [],
    })
}

/// The features document as `hull features` prints it (runc's key order, tab-indented).
pub fn features_pretty_json() -> String {
    to_pretty_ordered(&features(), FEATURES_KEY_ORDER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Features, LinuxNamespaceType};

    #[test]
    fn parses_as_runtime_spec_features() {
        let f: Features = serde_json::from_value(features()).expect("features.md shape");
        assert_eq!(f.oci_version_min(), "1.0.0");
        assert_eq!(f.oci_version_max(), OCI_VERSION_MAX);
        let linux = f.linux().as_ref().expect("linux");
        assert_eq!(linux.namespaces().as_ref().map(Vec::len), Some(8));
        assert_eq!(linux.capabilities().as_ref().map(Vec::len), Some(41));
    }

    #[test]
    fn brief_values() {
        let v = features();
        assert_eq!(v["hooks"], json!(HOOKS));
        assert_eq!(
            v["linux"]["cgroup"],
            json!({"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false})
        );
        for k in ["apparmor", "selinux"] {
            assert_eq!(v["linux"][k], json!({"enabled": true}), "{k}");
        }
        assert_eq!(v["linux"]["intelRdt"], json!({"enabled": false}));
        assert_eq!(
            v["linux"]["mountExtensions"]["idmap"]["enabled"],
            json!(false)
        );
        assert_eq!(
            v["annotations"],
            json!({"io.hull.isolation": "container", "io.hull.userns": "auto",
                "io.hull.vm.memory_mib": "512", "io.hull.vm.vcpus": "1",
                "io.hull.vm.unsupported": crate::vm::UNSUPPORTED.join(",")})
        );
        assert_eq!(v["potentiallyUnsafeConfigAnnotations"], json!([]));
        let opts = v["mountOptions"].as_array().cloned().unwrap_or_default();
        assert!(!opts.contains(&json!("tmpcopyup")));
        for o in [
            "ro",
            "rbind",
            "rprivate",
            "nosuid",
            "strictatime",
            "noiversion",
        ] {
            assert!(opts.contains(&json!(o)), "{o}");
        }
    }

    #[test]
    fn seccomp_section_is_runc_shaped() {
        let v = features();
        let sc = &v["linux"]["seccomp"];
        assert_eq!(sc["enabled"], json!(true));
        let runc: Value = serde_json::from_str(include_str!("testdata/runc-1.1.5-features.json"))
            .expect("fixture");
        let rs = &runc["linux"]["seccomp"];
        // Same actions and operators as runc; archs: those of runc's list that libseccomp
        // can mix with the native one (runc lists every arch it knows), plus RISCV64.
        assert_eq!(sc["actions"], rs["actions"]);
        assert_eq!(sc["operators"], rs["operators"]);
        let runc_archs = rs["archs"].as_array().cloned().unwrap_or_default();
        for a in SECCOMP_ARCHS {
            assert!(
                *a == "SCMP_ARCH_RISCV64" || runc_archs.contains(&json!(a)),
                "{a}"
            );
        }
        assert_eq!(sc["archs"], json!(SECCOMP_ARCHS));
        for list in [&SECCOMP_ACTIONS[..], &SECCOMP_OPERATORS[..], SECCOMP_ARCHS] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, list);
        }
        // Every name parses as the oci-spec type it stands for.
        for a in SECCOMP_ACTIONS {
            serde_json::from_value::<oci_spec::runtime::LinuxSeccompAction>(json!(a))
                .expect("action");
        }
        for o in SECCOMP_OPERATORS {
            serde_json::from_value::<oci_spec::runtime::LinuxSeccompOperator>(json!(o))
                .expect("operator");
        }
        for a in SECCOMP_ARCHS {
            serde_json::from_value::<oci_spec::runtime::Arch>(json!(*a)).expect("arch");
        }
        for f in SECCOMP_KNOWN_FLAGS {
            serde_json::from_value::<oci_spec::runtime::LinuxSeccompFilterFlag>(json!(f))
                .expect("flag");
        }
        let f: Features = serde_json::from_value(v).expect("features.md shape");
        let seccomp = f
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .cloned()
            .expect("seccomp");
        assert_eq!(*seccomp.enabled(), Some(true));
    }

    #[test]
    fn namespaces_are_spec_names() {
        for n in NAMESPACES {
            let t: LinuxNamespaceType =
                serde_json::from_value(json!(n)).expect("a namespace type oci-spec knows");
            assert_eq!(crate::validate::namespace_name(t), n);
        }
    }

    #[test]
    fn capabilities_in_kernel_order_with_prefix() {
        for (i, c) in CAPABILITIES.iter().enumerate() {
            assert_eq!(usize::from(capability_number(*c)), i);
            let name = capability_name(*c);
            assert!(name.starts_with("CAP_"), "{name}");
            let back: Capability = serde_json::from_value(json!(name)).expect("round-trips");
            assert_eq!(back, *c);
        }
        assert_eq!(
            capability_name(Capability::SysTtyConfig),
            "CAP_SYS_TTY_CONFIG"
        );
    }

    #[test]
    fn same_capabilities_and_namespaces_as_runc_plus_time() {
        let runc: Value = serde_json::from_str(include_str!("testdata/runc-1.1.5-features.json"))
            .expect("fixture");
        assert_eq!(
            runc["linux"]["capabilities"],
            features()["linux"]["capabilities"]
        );
        let mut ns = runc["linux"]["namespaces"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ns.push(json!("time"));
        ns.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        assert_eq!(Value::Array(ns), features()["linux"]["namespaces"]);
        // Every option hull lists, runc lists too.
        let runc_opts = runc["mountOptions"].as_array().cloned().unwrap_or_default();
        for o in MOUNT_OPTIONS {
            assert!(runc_opts.contains(&json!(o)), "{o}");
        }
    }

    #[test]
    fn pretty_json_in_runc_order() {
        let s = features_pretty_json();
        assert!(
            s.starts_with("{\n\t\"ociVersionMin\": \"1.0.0\",\n\t\"ociVersionMax\""),
            "{s}"
        );
        let pos = |k: &str| s.find(k).unwrap_or(usize::MAX);
        assert!(pos("\"hooks\"") < pos("\"mountOptions\""));
        assert!(pos("\"mountOptions\"") < pos("\"linux\""));
        assert!(pos("\"linux\"") < pos("\"io.hull.isolation\""));
        assert!(pos("\"v1\"") < pos("\"v2\"") && pos("\"v2\"") < pos("\"systemd\""));
    }
}
