//! Deterministic, runc-like JSON output.
//!
//! `serde_json::Value` keeps object keys sorted alphabetically, and oci-spec keeps
//! capabilities in a `HashSet` (random order). These helpers print a document with its keys
//! in the order of the runtime-spec Go structs (what `runc spec` and `runc features` print),
//! capability lists sorted, and tab indentation, so hull's output diffs cleanly against runc's.

use serde::ser::{Serialize, Serializer};
use serde_json::Value;

use crate::{Spec, SpecError};

/// Key order of a `config.json` (runtime-spec `specs.Spec` and its parts). Within the objects
/// `runc spec` prints this is the Go struct's field order (one global rank cannot match every
/// struct: hooks and device nodes print `path` later than Go does); unknown keys follow,
/// alphabetically.
pub const SPEC_KEY_ORDER: &[&str] = &[
    "ociVersion",
    "process",
    "terminal",
    "consoleSize",
    "height",
    "width",
    "user",
    "uid",
    "gid",
    "umask",
    "additionalGids",
    "username",
    "args",
    "commandLine",
    "env",
    "cwd",
    "capabilities",
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
    "rlimits",
    "noNewPrivileges",
    "apparmorProfile",
    "oomScoreAdj",
    "scheduler",
    "selinuxLabel",
    "ioPriority",
    "execCPUAffinity",
    "root",
    "hostname",
    "domainname",
    "mounts",
    "hooks",
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
    "annotations",
    "linux",
    "uidMappings",
    "gidMappings",
    "containerID",
    "hostID",
    "size",
    "sysctl",
    "resources",
    "cgroupsPath",
    "namespaces",
    "devices",
    "allow",
    "destination",
    "type",
    "path",
    "major",
    "minor",
    "access",
    "fileMode",
    "source",
    "options",
    "readonly",
    "hard",
    "soft",
    "timeout",
    "seccomp",
    "rootfsPropagation",
    "maskedPaths",
    "readonlyPaths",
    "mountLabel",
    "intelRdt",
    "personality",
    "timeOffsets",
];

/// Key order of a `features` document (runtime-spec `features.Features`).
pub const FEATURES_KEY_ORDER: &[&str] = &[
    "ociVersionMin",
    "ociVersionMax",
    "hooks",
    "mountOptions",
    "linux",
    "namespaces",
    "capabilities",
    "cgroup",
    "v1",
    "v2",
    "systemd",
    "systemdUser",
    "rdma",
    "seccomp",
    "enabled",
    "actions",
    "operators",
    "archs",
    "knownFlags",
    "supportedFlags",
    "apparmor",
    "selinux",
    "intelRdt",
    "schemata",
    "monitoring",
    "mountExtensions",
    "idmap",
    "netDevices",
    "annotations",
    "potentiallyUnsafeConfigAnnotations",
];

struct Ordered<'a> {
    value: &'a Value,
    order: &'a [&'a str],
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Object(map) => {
                let rank = |k: &str| {
                    self.order
                        .iter()
                        .position(|o| *o == k)
                        .unwrap_or(self.order.len())
                };
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
                serializer.collect_map(entries.into_iter().map(|(k, v)| {
                    (
                        k,
                        Ordered {
                            value: v,
                            order: self.order,
                        },
                    )
                }))
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(|v| Ordered {
                value: v,
                order: self.order,
            })),
            other => other.serialize(serializer),
        }
    }
}

/// Pretty-prints `value` with tabs, ordering object keys by `order`.
pub fn to_pretty_ordered(value: &Value, order: &[&str]) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into memory cannot fail, and the output is UTF-8.
    match (Ordered { value, order }).serialize(&mut ser) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("{{\"error\": {:?}}}", e.to_string()),
    }
}

/// A spec as a JSON value with capability lists sorted (oci-spec keeps them in a `HashSet`).
pub fn spec_to_value(spec: &Spec) -> Result<Value, SpecError> {
    let mut value = serde_json::to_value(spec).map_err(|source| SpecError::Json {
        path: "config.json".into(),
        source,
    })?;
    if let Some(Value::Object(caps)) = value.pointer_mut("/process/capabilities") {
        for set in caps.values_mut() {
            if let Value::Array(list) = set {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    Ok(value)
}

/// A spec as `runc spec` would print it: runtime-spec key order, tab indentation, no
/// trailing newline.
pub fn spec_to_pretty_json(spec: &Spec) -> Result<String, SpecError> {
    Ok(to_pretty_ordered(&spec_to_value(spec)?, SPEC_KEY_ORDER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_follow_the_given_order() {
        let v = json!({"z": 1, "b": [{"soft": 1, "type": "x", "hard": 2}], "ociVersion": "1"});
        let s = to_pretty_ordered(&v, SPEC_KEY_ORDER);
        let oci = s.find("ociVersion").unwrap_or(usize::MAX);
        let b = s.find("\"b\"").unwrap_or(usize::MAX);
        let z = s.find("\"z\"").unwrap_or(usize::MAX);
        assert!(oci < b && b < z, "{s}");
        let t = s.find("type").unwrap_or(usize::MAX);
        let h = s.find("hard").unwrap_or(usize::MAX);
        let so = s.find("soft").unwrap_or(usize::MAX);
        assert!(t < h && h < so, "{s}");
        assert!(s.contains("\n\t\"ociVersion\""), "{s}");
        assert!(!s.ends_with('\n'));
        let back: Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(back, v);
    }

    #[test]
    fn capabilities_are_sorted() {
        let spec = Spec::default();
        let v = spec_to_value(&spec).expect("serializes");
        let b = v
            .pointer("/process/capabilities/bounding")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            b,
            json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
        );
        // Deterministic across calls.
        assert_eq!(
            spec_to_pretty_json(&spec).ok(),
            spec_to_pretty_json(&spec.clone()).ok()
        );
    }
}
