//! The rest of `linux`: id mappings, time offsets, sysctls, cgroups path, device nodes,
//! rootfs propagation, masked and read-only paths.

use std::path::{Component, Path};

use oci_spec::runtime::{LinuxDeviceType, LinuxIdMapping, LinuxNamespaceType};

use super::{paths, NamespaceSet};
use crate::{Spec, SpecError};

/// Checks `linux` (namespaces were checked when `ns` was built).
pub(super) fn check(spec: &Spec, ns: &NamespaceSet) -> Result<(), SpecError> {
    check_id_mappings(spec, ns)?;
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    check_time_offsets(spec, ns)?;
    check_sysctl(spec, ns)?;

    if let Some(p) = linux.cgroups_path() {
        paths::no_nul("linux.cgroupsPath", p)?;
        paths::no_dotdot("linux.cgroupsPath", p)?;
    }

    for (i, d) in linux.devices().iter().flatten().enumerate() {
        let field = format!("linux.devices[{i}]");
        let pf = format!("{field}.path");
        let p = d.path();
        paths::absolute(&pf, p, "")?;
        paths::no_nul(&pf, p)?;
        paths::no_dotdot(&pf, p)?;
        if !under_dev(p) {
            return Err(SpecError::invalid(
                pf,
                format!("{:?} is not under /dev", paths::show(p)),
            ));
        }
        if d.typ() == LinuxDeviceType::A {
            return Err(SpecError::invalid(
                format!("{field}.type"),
                "\"a\" is not a device node type (c, b, u or p)",
            ));
        }
        if d.typ() != LinuxDeviceType::P {
            for (name, v) in [("major", d.major()), ("minor", d.minor())] {
                if v < 0 {
                    return Err(SpecError::OutOfRange {
                        field: format!("{field}.{name}"),
                        value: v.into(),
                        range: "must not be negative",
                    });
                }
            }
        }
        if let Some(mode) = d.file_mode() {
            // Permission bits, optionally with the file type bits of this device's type
            // (some callers pass st_mode as is; runc ORs the type bits in either way).
            let type_bits = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => 0o020000,
                LinuxDeviceType::B => 0o060000,
                LinuxDeviceType::P => 0o010000,
                LinuxDeviceType::A => 0,
            };
            let fmt = mode & !0o7777;
            if fmt != 0 && fmt != type_bits {
                return Err(SpecError::OutOfRange {
                    field: format!("{field}.fileMode"),
                    value: mode.into(),
                    range: "permission bits 0..=0o7777, plus only this device type's S_IFMT bits",
                });
            }
        }
    }

    if let Some(p) = linux.rootfs_propagation() {
        const KNOWN: [&str; 9] = [
            "",
            "private",
            "rprivate",
            "slave",
            "rslave",
            "shared",
            "rshared",
            "unbindable",
            "runbindable",
        ];
        if !KNOWN.contains(&p.as_str()) {
            return Err(SpecError::invalid(
                "linux.rootfsPropagation",
                format!("{p:?} is not one of {}", KNOWN[1..].join(", ")),
            ));
        }
    }

    for (name, list) in [
        ("maskedPaths", linux.masked_paths()),
        ("readonlyPaths", linux.readonly_paths()),
    ] {
        for (i, p) in list.iter().flatten().enumerate() {
            let field = format!("linux.{name}[{i}]");
            paths::absolute(&field, Path::new(p), "")?;
            paths::no_nul_str(&field, p)?;
        }
    }
    Ok(())
}

/// `/dev/<something>`, lexically.
fn under_dev(p: &Path) -> bool {
    let mut c = p.components();
    c.next() == Some(Component::RootDir)
        && c.next() == Some(Component::Normal("dev".as_ref()))
        && c.next().is_some()
}

/// `linux.uidMappings` / `linux.gidMappings` against the user namespace, and the process
/// ids against the mappings.
fn check_id_mappings(spec: &Spec, ns: &NamespaceSet) -> Result<(), SpecError> {
    let linux = spec.linux().as_ref();
    let uid_maps = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or_default();
    let gid_maps = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or_default();

    match ns.get(LinuxNamespaceType::User) {
        None => {
            for (name, maps) in [("uidMappings", uid_maps), ("gidMappings", gid_maps)] {
                if !maps.is_empty() {
                    return Err(SpecError::MappingsWithoutUserNs {
                        field: format!("linux.{name}"),
                    });
                }
            }
            return Ok(());
        }
        // io.hull.userns=auto: the runtime fills in the mappings at create.
        Some(user) if user.path.is_none() && !crate::annotations::userns_auto(spec)? => {
            for (name, maps) in [("uidMappings", uid_maps), ("gidMappings", gid_maps)] {
                if maps.is_empty() {
                    return Err(SpecError::UserNsWithoutMappings {
                        field: format!("linux.namespaces[{}]", user.index),
                        mappings: name,
                    });
                }
            }
        }
        Some(_) => {} // Joined: its mappings are the ones it already has.
    }

    for (name, maps) in [("uidMappings", uid_maps), ("gidMappings", gid_maps)] {
        for (i, m) in maps.iter().enumerate() {
            let field = format!("linux.{name}[{i}]");
            if m.size() == 0 {
                return Err(SpecError::invalid(
                    format!("{field}.size"),
                    "must be greater than 0",
                ));
            }
            for (what, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
                if u64::from(start) + u64::from(m.size()) > 1 << 32 {
                    return Err(SpecError::invalid(
                        field.clone(),
                        format!(
                            "{what} {start} + size {} exceeds the 32-bit id range",
                            m.size()
                        ),
                    ));
                }
            }
        }
    }

    // With mappings given, the process must run as mapped ids, or setuid/setgroups fail.
    let Some(process) = spec.process() else {
        return Ok(());
    };
    let user = process.user();
    let mapped = |maps: &[LinuxIdMapping], id: u32| {
        maps.iter().any(|m| {
            id >= m.container_id()
                && u64::from(id) < u64::from(m.container_id()) + u64::from(m.size())
        })
    };
    if !uid_maps.is_empty() && !mapped(uid_maps, user.uid()) {
        return Err(SpecError::invalid(
            "process.user.uid",
            format!("{} is not mapped by linux.uidMappings", user.uid()),
        ));
    }
    if !gid_maps.is_empty() {
        if !mapped(gid_maps, user.gid()) {
            return Err(SpecError::invalid(
                "process.user.gid",
                format!("{} is not mapped by linux.gidMappings", user.gid()),
            ));
        }
        for (i, g) in user.additional_gids().iter().flatten().enumerate() {
            if !mapped(gid_maps, *g) {
                return Err(SpecError::invalid(
                    format!("process.user.additionalGids[{i}]"),
                    format!("{g} is not mapped by linux.gidMappings"),
                ));
            }
        }
    }
    Ok(())
}

/// `linux.timeOffsets`: need a time namespace the runtime creates (offsets can only be
/// written before any process enters it); keys `monotonic`/`boottime`; nanosecs < 1e9.
fn check_time_offsets(spec: &Spec, ns: &NamespaceSet) -> Result<(), SpecError> {
    let Some(offsets) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    else {
        return Ok(());
    };
    if offsets.is_empty() {
        return Ok(());
    }
    match ns.get(LinuxNamespaceType::Time) {
        None => {
            return Err(SpecError::NeedsNamespace {
                field: "linux.timeOffsets".into(),
                what: "time offsets".into(),
                ns: "time",
            })
        }
        Some(e) if e.path.is_some() => {
            return Err(SpecError::invalid(
                "linux.timeOffsets",
                format!(
                    "offsets cannot be set on a joined time namespace (linux.namespaces[{}].path is set)",
                    e.index
                ),
            ))
        }
        Some(_) => {}
    }
    let mut keys: Vec<_> = offsets.keys().collect();
    keys.sort();
    for k in keys {
        let field = format!("linux.timeOffsets[{k:?}]");
        if k != "monotonic" && k != "boottime" {
            return Err(SpecError::invalid(
                field,
                "only the \"monotonic\" and \"boottime\" clocks have offsets",
            ));
        }
        if let Some(ns) = offsets.get(k).and_then(|o| o.nanosecs()) {
            if ns >= 1_000_000_000 {
                return Err(SpecError::OutOfRange {
                    field: format!("{field}.nanosecs"),
                    value: ns.into(),
                    range: "0..1000000000",
                });
            }
        }
    }
    Ok(())
}

/// The IPC namespace's sysctls (besides `fs.mqueue.*`), as runc lists them.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// `linux.sysctl`: well-formed dotted keys, each in a namespace the container has (runc's
/// rules: IPC, network and UTS sysctls; anything else would change the host).
fn check_sysctl(spec: &Spec, ns: &NamespaceSet) -> Result<(), SpecError> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    let mut keys: Vec<_> = map.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("linux.sysctl[{key:?}]");
        if key.is_empty() {
            return Err(SpecError::Empty { field });
        }
        paths::no_nul_str(&field, key)?;
        if let Some(v) = map.get(key) {
            paths::no_nul_str(&field, v)?;
        }
        if key.contains('/') {
            return Err(SpecError::invalid(
                field,
                "keys are dotted names (net.ipv4.ip_forward), '/' is not allowed",
            ));
        }
        if key.split('.').any(str::is_empty) {
            return Err(SpecError::invalid(
                field,
                "key has an empty component (leading, trailing or doubled '.')",
            ));
        }
        let needs = |t: LinuxNamespaceType, name: &'static str| {
            if ns.has(t) {
                Ok(())
            } else {
                Err(SpecError::NeedsNamespace {
                    field: field.clone(),
                    what: format!("sysctl {key:?}"),
                    ns: name,
                })
            }
        };
        if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            needs(LinuxNamespaceType::Ipc, "IPC")?;
        } else if key.starts_with("net.") {
            needs(LinuxNamespaceType::Network, "network")?;
        } else if key == "kernel.domainname" {
            needs(LinuxNamespaceType::Uts, "UTS")?;
        } else if key == "kernel.hostname" {
            needs(LinuxNamespaceType::Uts, "UTS")?;
            if spec.hostname().as_deref().is_some_and(|h| !h.is_empty()) {
                return Err(SpecError::invalid(
                    field,
                    "conflicts with the \"hostname\" field; set only one",
                ));
            }
        } else {
            return Err(SpecError::invalid(
                field,
                format!("sysctl {key:?} is not in a separate kernel namespace"),
            ));
        }
    }
    Ok(())
}
