//! `linux.namespaces`: one entry per type, absolute paths, and a lookup used by the rules
//! that depend on which namespaces the container has.

use oci_spec::runtime::LinuxNamespaceType;

use super::paths;
use crate::{Spec, SpecError};

/// The spec name of a namespace type, as written in `config.json`.
pub fn namespace_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

/// One listed namespace: where it is in the list, and the path to join (None: create it).
#[derive(Debug, Clone)]
pub struct NamespaceEntry {
    pub index: usize,
    pub typ: LinuxNamespaceType,
    pub path: Option<std::path::PathBuf>,
}

/// The namespaces of a spec, checked for duplicates and path syntax.
#[derive(Debug, Clone, Default)]
pub struct NamespaceSet {
    entries: Vec<NamespaceEntry>,
}

impl NamespaceSet {
    /// Checks `linux.namespaces` (no duplicate types; each `path`, if set, non-empty,
    /// absolute, without NUL) and builds the set.
    pub fn from_spec(spec: &Spec) -> Result<Self, SpecError> {
        let list = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
        let mut entries: Vec<NamespaceEntry> = Vec::new();
        for (i, ns) in list.into_iter().flatten().enumerate() {
            let field = format!("linux.namespaces[{i}]");
            if let Some(first) = entries.iter().find(|e| e.typ == ns.typ()) {
                return Err(SpecError::Duplicate {
                    field,
                    what: format!("namespace type {:?}", namespace_name(ns.typ())),
                    first: format!("linux.namespaces[{}]", first.index),
                });
            }
            if let Some(p) = ns.path() {
                let pf = format!("{field}.path");
                if p.as_os_str().is_empty() {
                    return Err(SpecError::Empty { field: pf });
                }
                paths::absolute(&pf, p, "")?;
                paths::no_nul(&pf, p)?;
            }
            entries.push(NamespaceEntry {
                index: i,
                typ: ns.typ(),
                path: ns.path().clone(),
            });
        }
        Ok(NamespaceSet { entries })
    }

    /// The entry for a type, if listed.
    pub fn get(&self, t: LinuxNamespaceType) -> Option<&NamespaceEntry> {
        self.entries.iter().find(|e| e.typ == t)
    }

    /// Listed (created or joined): the container does not share the runtime's.
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.get(t).is_some()
    }

    /// Listed without a path: the runtime creates it.
    pub fn is_new(&self, t: LinuxNamespaceType) -> bool {
        self.get(t).is_some_and(|e| e.path.is_none())
    }

    /// All entries in list order.
    pub fn entries(&self) -> &[NamespaceEntry] {
        &self.entries
    }
}
