//! hull's own annotations (keys under `io.hull.`).

use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType};

use crate::{Spec, SpecError};

/// Selects how a container is isolated: `"container"` (shared kernel, the default when the
/// annotation is absent) or `"vm"` (a per-container KVM micro-VM).
pub const ISOLATION: &str = "io.hull.isolation";

/// The value of [`ISOLATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Namespaces, cgroups and the rest on the host kernel.
    #[default]
    Container,
    /// The workload runs in a KVM micro-VM jailed by the container sandbox.
    Vm,
}

impl Isolation {
    /// The annotation value naming this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "container",
            Isolation::Vm => "vm",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses an [`ISOLATION`] value: exactly `"vm"` or `"container"`.
pub fn parse_isolation(value: &str) -> Result<Isolation, SpecError> {
    match value {
        "container" => Ok(Isolation::Container),
        "vm" => Ok(Isolation::Vm),
        _ => Err(SpecError::Isolation {
            value: value.to_string(),
        }),
    }
}

/// The runtime was told to give every container `want` (`hull --isolation vm`, e.g. as a
/// Docker runtime's `runtimeArgs`): the annotation is set to it, and a config that asks for
/// another mode is refused rather than silently changed.
pub fn require_isolation(spec: &mut Spec, want: Isolation) -> Result<(), SpecError> {
    let asked = isolation(spec)?;
    let annotated = spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(ISOLATION));
    if annotated && asked != want {
        return Err(SpecError::invalid(
            format!("annotations[{ISOLATION:?}]"),
            format!("{asked:?} asked for, but the runtime runs with --isolation {want}"),
        ));
    }
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ISOLATION.to_string(), want.as_str().to_string());
    spec.set_annotations(Some(annotations));
    Ok(())
}

/// The isolation mode the spec asks for; [`Isolation::Container`] when not annotated.
pub fn isolation(spec: &Spec) -> Result<Isolation, SpecError> {
    match spec.annotations().as_ref().and_then(|a| a.get(ISOLATION)) {
        None => Ok(Isolation::Container),
        Some(v) => parse_isolation(v),
    }
}

/// `"true"`: the container's cgroup is delegated to it (crun's `run.oci.delegate-cgroup`,
/// systemd's `Delegate=`): in every hierarchy its directory and the files that create
/// children and move processes (`cgroup.procs`, `tasks`, `cgroup.subtree_control`, ...) are
/// owned by the host ids the container's root maps to, so a systemd inside a user namespace
/// can manage its own subtree. Limits files stay the host's. Without a user namespace the
/// container's root is the host's root and nothing changes.
pub const CGROUP_DELEGATE: &str = "io.hull.cgroup.delegate";

/// True when the spec asks for [`CGROUP_DELEGATE`]; `"false"` or absent is false, any other
/// value an error.
pub fn cgroup_delegate(spec: &Spec) -> Result<bool, SpecError> {
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CGROUP_DELEGATE))
    {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" => Ok(false),
        Some(v) => Err(SpecError::invalid(
            format!("annotations[{CGROUP_DELEGATE:?}]"),
            format!("{v:?} is not \"true\" or \"false\""),
        )),
    }
}

/// The host uid and gid the container's root (id 0) maps to, from `linux.uidMappings` and
/// `linux.gidMappings`; None without a mapping for 0.
pub fn root_host_ids(spec: &Spec) -> Option<(u32, u32)> {
    let linux = spec.linux().as_ref()?;
    let host = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps?
            .iter()
            .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    };
    Some((
        host(linux.uid_mappings().as_ref())?,
        host(linux.gid_mappings().as_ref())?,
    ))
}

/// `"auto"`: the container gets a user namespace of its own with a 65,536-id range that no
/// other live container under the same `--root` shares (Incus' "isolated idmap"). The
/// runtime picks the range; files in the rootfs appear owned by root in the container only
/// if they are owned by the range's first host id (`chown` the rootfs, or use a rootfs
/// owned by that id).
pub const USERNS: &str = "io.hull.userns";

/// The number of ids (uids and gids) a [`USERNS`]`=auto` container gets.
pub const USERNS_AUTO_SIZE: u32 = 65536;

fn userns_field() -> String {
    format!("annotations[{USERNS:?}]")
}

/// True when the spec asks for `io.hull.userns=auto`; an error for any other value.
pub fn userns_auto(spec: &Spec) -> Result<bool, SpecError> {
    match spec.annotations().as_ref().and_then(|a| a.get(USERNS)) {
        None => Ok(false),
        Some(v) if v == "auto" => Ok(true),
        Some(v) => Err(SpecError::invalid(
            userns_field(),
            format!("{v:?} is not a supported value (only \"auto\")"),
        )),
    }
}

/// Give the spec its `io.hull.userns=auto` user namespace: a new user namespace (added to
/// `linux.namespaces` if absent) mapping container ids 0..65536 to host ids
/// `host_base..host_base+65536`, for uids and gids. Refused when the spec brings its own
/// mappings or joins a user namespace, or when the process runs as an id outside the range.
pub fn apply_userns_auto(spec: &mut Spec, host_base: u32) -> Result<(), SpecError> {
    let field = userns_field();
    if u64::from(host_base) + u64::from(USERNS_AUTO_SIZE) > 1 << 32 {
        return Err(SpecError::invalid(
            field,
            format!("host id {host_base} + {USERNS_AUTO_SIZE} exceeds the 32-bit id range"),
        ));
    }
    if let Some(p) = spec.process() {
        let user = p.user();
        let ids = [
            ("process.user.uid", user.uid()),
            ("process.user.gid", user.gid()),
        ];
        let extra = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| ("process.user.additionalGids", *g));
        for (what, id) in ids.into_iter().chain(extra) {
            if id >= USERNS_AUTO_SIZE {
                return Err(SpecError::invalid(
                    what,
                    format!("{id} is outside the 0..{USERNS_AUTO_SIZE} range {USERNS}=auto maps"),
                ));
            }
        }
    }
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    for (name, maps) in [
        ("uidMappings", linux.uid_mappings()),
        ("gidMappings", linux.gid_mappings()),
    ] {
        if maps.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(SpecError::invalid(
                field,
                format!("\"auto\" chooses the id mappings itself: remove linux.{name}"),
            ));
        }
    }
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    match namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
    {
        Some(n) if n.path().is_some() => {
            return Err(SpecError::invalid(
                field,
                "\"auto\" creates a user namespace: it cannot join one by path",
            ))
        }
        Some(_) => {}
        None => {
            let mut user = LinuxNamespace::default();
            user.set_typ(LinuxNamespaceType::User);
            namespaces.push(user);
        }
    }
    linux.set_namespaces(Some(namespaces));
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_base)
        .size(USERNS_AUTO_SIZE)
        .build()
        .map_err(|e| SpecError::invalid(userns_field(), e.to_string()))?;
    linux.set_uid_mappings(Some(vec![map]));
    linux.set_gid_mappings(Some(vec![map]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_runtime_flag_sets_the_isolation_and_refuses_a_contrary_annotation() {
        let mut s = with(None);
        require_isolation(&mut s, Isolation::Vm).unwrap();
        assert_eq!(isolation(&s).unwrap(), Isolation::Vm);
        let mut s = with(Some("vm"));
        require_isolation(&mut s, Isolation::Vm).unwrap();
        assert_eq!(isolation(&s).unwrap(), Isolation::Vm);
        let mut s = with(Some("container"));
        let e = require_isolation(&mut s, Isolation::Vm)
            .unwrap_err()
            .to_string();
        assert!(e.contains(ISOLATION) && e.contains("--isolation vm"), "{e}");
        assert_eq!(
            isolation(&s).unwrap(),
            Isolation::Container,
            "left as it was"
        );
        let mut s = with(Some("bogus"));
        assert!(require_isolation(&mut s, Isolation::Vm).is_err());
    }

    fn with(value: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        let mut a = HashMap::new();
        if let Some(v) = value {
            a.insert(ISOLATION.to_string(), v.to_string());
        }
        a.insert("other".to_string(), "x".to_string());
        spec.set_annotations(Some(a));
        spec
    }

    #[test]
    fn absent_is_container() {
        assert_eq!(isolation(&with(None)).ok(), Some(Isolation::Container));
        let mut spec = Spec::default();
        spec.set_annotations(None);
        assert_eq!(isolation(&spec).ok(), Some(Isolation::Container));
    }

    #[test]
    fn known_values() {
        assert_eq!(isolation(&with(Some("vm"))).ok(), Some(Isolation::Vm));
        assert_eq!(
            isolation(&with(Some("container"))).ok(),
            Some(Isolation::Container)
        );
        assert_eq!(Isolation::Vm.to_string(), "vm");
    }

    #[test]
    fn unknown_values() {
        for v in ["", "VM", "kvm", " vm", "container "] {
            let e = isolation(&with(Some(v))).expect_err(v);
            assert!(e.to_string().contains("io.hull.isolation"), "{e}");
        }
    }

    fn with_userns(value: &str) -> Spec {
        let mut spec = Spec::default();
        let mut a = HashMap::new();
        a.insert(USERNS.to_string(), value.to_string());
        spec.set_annotations(Some(a));
        spec
    }

    #[test]
    fn userns_values() {
        assert!(!userns_auto(&with(None)).expect("absent"));
        assert!(userns_auto(&with_userns("auto")).expect("auto"));
        for v in ["", "Auto", "host", "keep-id"] {
            let e = userns_auto(&with_userns(v)).expect_err(v);
            assert!(e.to_string().contains("io.hull.userns"), "{e}");
        }
    }

    #[test]
    fn auto_adds_the_namespace_and_the_mappings() {
        let mut spec = with_userns("auto");
        apply_userns_auto(&mut spec, 1_065_536).expect("applied");
        let linux = spec.linux().as_ref().expect("linux");
        let users = linux
            .namespaces()
            .iter()
            .flatten()
            .filter(|n| n.typ() == LinuxNamespaceType::User)
            .count();
        assert_eq!(users, 1);
        for maps in [linux.uid_mappings(), linux.gid_mappings()] {
            let m = maps.as_ref().expect("mappings");
            assert_eq!(m.len(), 1);
            assert_eq!(
                (m[0].container_id(), m[0].host_id(), m[0].size()),
                (0, 1_065_536, 65536)
            );
        }
        // Idempotent on the namespace list: a second user namespace is not added.
        let mut again = spec.clone();
        if let Some(l) = again.linux_mut() {
            l.set_uid_mappings(None);
            l.set_gid_mappings(None);
        }
        apply_userns_auto(&mut again, 7).expect("applied again");
        let users = again
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .filter(|n| n.typ() == LinuxNamespaceType::User)
            .count();
        assert_eq!(users, 1);
    }

    #[test]
    fn auto_refuses_conflicts() {
        let mut spec = with_userns("auto");
        apply_userns_auto(&mut spec, 100).expect("first");
        let e = apply_userns_auto(&mut spec, 100).expect_err("has mappings");
        assert!(e.to_string().contains("linux.uidMappings"), "{e}");
        let mut spec = with_userns("auto");
        let e = apply_userns_auto(&mut spec, u32::MAX - 10).expect_err("overflow");
        assert!(e.to_string().contains("io.hull.userns"), "{e}");
        let mut spec = with_userns("auto");
        if let Some(p) = spec.process_mut() {
            let mut u = p.user().clone();
            u.set_uid(70000);
            p.set_user(u);
        }
        let e = apply_userns_auto(&mut spec, 1_000_000).expect_err("uid out of range");
        assert!(e.to_string().contains("process.user.uid"), "{e}");
    }

    #[test]
    fn cgroup_delegate_values_and_root_ids() {
        let spec = |ann: &str, linux: &str| -> Spec {
            serde_json::from_str(&format!(
                r#"{{"ociVersion":"1.2.0","root":{{"path":"r"}},"annotations":{{{ann}}},"linux":{{{linux}}}}}"#
            ))
            .expect("spec")
        };
        assert!(!cgroup_delegate(&spec("", "")).expect("absent"));
        assert!(cgroup_delegate(&spec(r#""io.hull.cgroup.delegate":"true""#, "")).expect("true"));
        assert!(
            !cgroup_delegate(&spec(r#""io.hull.cgroup.delegate":"false""#, "")).expect("false")
        );
        let e = cgroup_delegate(&spec(r#""io.hull.cgroup.delegate":"yes""#, "")).expect_err("yes");
        assert!(e.to_string().contains("io.hull.cgroup.delegate"), "{e}");
        let maps = r#""uidMappings":[{"containerID":1,"hostID":5,"size":9},{"containerID":0,"hostID":7000,"size":65536}],
                      "gidMappings":[{"containerID":0,"hostID":8000,"size":65536}]"#;
        assert_eq!(root_host_ids(&spec("", maps)), Some((7000, 8000)));
        assert_eq!(root_host_ids(&spec("", "")), None);
    }
}
