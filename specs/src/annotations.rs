//! hull's own annotations (keys under `io.hull.`).

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

/// The isolation mode the spec asks for; [`Isolation::Container`] when not annotated.
pub fn isolation(spec: &Spec) -> Result<Isolation, SpecError> {
    match spec.annotations().as_ref().and_then(|a| a.get(ISOLATION)) {
        None => Ok(Isolation::Container),
        Some(v) => parse_isolation(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
}
