//! The one error type of this crate.
//!
//! Every message about the bundle's configuration starts with `config.json:` and names the
//! offending field in JSON path form (`linux.namespaces[2]`, `mounts[3].destination`), so
//! that the line containerd shows to a user points at what to fix.

use std::path::PathBuf;

/// Everything that can be wrong with a bundle, a container id or a signal name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not JSON, or does not have the shape of an OCI runtime config.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A value of the wrong type or an unknown name (namespace, rlimit, capability, seccomp
    /// action, device type) at a known place in the document.
    #[error("{}: {field}: {source}", path.display())]
    JsonField {
        path: PathBuf,
        /// The JSON path of the value (`process.args`, `linux.namespaces[2].type`).
        field: String,
        #[source]
        source: serde_json::Error,
    },

    /// `write_default_spec` found a file where it would write.
    #[error("{}: file already exists, refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },

    /// A required field is absent.
    #[error("config.json: {field}: required field is missing")]
    Missing { field: String },

    /// A field that must have content is empty.
    #[error("config.json: {field}: must not be empty")]
    Empty { field: String },

    /// `ociVersion` is not a SemVer 2.0.0 version of major 1.
    #[error("config.json: ociVersion {version:?}: {reason}")]
    OciVersion { version: String, reason: String },

    /// A path that must be absolute is relative.
    #[error("config.json: {field} {value:?} is not an absolute path{hint}")]
    NotAbsolute {
        field: String,
        value: String,
        /// Extra words (e.g. runc's wording), empty or starting with a space.
        hint: String,
    },

    /// A path has a `..` component where none is allowed.
    #[error("config.json: {field} {value:?} must not contain a \"..\" component")]
    DotDot { field: String, value: String },

    /// A string handed to the kernel contains a NUL byte.
    #[error("config.json: {field}: contains a NUL byte")]
    Nul { field: String },

    /// `root.path` cannot be resolved.
    #[error("config.json: root.path: rootfs {} cannot be accessed: {source}", path.display())]
    Rootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `root.path` is not a directory.
    #[error("config.json: root.path: rootfs {} is not a directory", path.display())]
    RootfsNotDir { path: PathBuf },

    /// The same thing is listed twice (namespace type, rlimit type).
    #[error("config.json: {field}: duplicate {what} (already given at {first})")]
    Duplicate {
        field: String,
        what: String,
        first: String,
    },

    /// A new user namespace without the id mappings it needs.
    #[error("config.json: {field}: namespace \"user\" has no {mappings}")]
    UserNsWithoutMappings {
        field: String,
        mappings: &'static str,
    },

    /// Id mappings but no user namespace to apply them to.
    #[error(
        "config.json: {field}: id mappings need a user namespace, but linux.namespaces has none"
    )]
    MappingsWithoutUserNs { field: String },

    /// A setting that only makes sense inside a namespace the config does not have.
    #[error("config.json: {field}: unable to set {what} without a private {ns} namespace")]
    NeedsNamespace {
        field: String,
        what: String,
        ns: &'static str,
    },

    /// A number outside its allowed range.
    #[error("config.json: {field}: {value} is out of range ({range})")]
    OutOfRange {
        field: String,
        value: i128,
        range: &'static str,
    },

    /// A soft rlimit above its hard limit.
    #[error("config.json: {field}: soft limit {soft} is greater than hard limit {hard}")]
    RlimitSoftAboveHard { field: String, soft: u64, hard: u64 },

    /// `linux.resources.memory.swap` below `limit` (swap is memory+swap, as in cgroup v1).
    #[error(
        "config.json: linux.resources.memory.swap: {swap} is less than linux.resources.memory.limit {limit} (swap is the memory+swap limit)"
    )]
    SwapBelowLimit { limit: i64, swap: i64 },

    /// The `io.hull.isolation` annotation has an unknown value.
    #[error(
        "config.json: annotations[\"io.hull.isolation\"]: {value:?} is not \"vm\" or \"container\""
    )]
    Isolation { value: String },

    /// A feature hull does not implement (rather than silently ignoring it).
    #[error("config.json: {field}: {what} is not supported by hull")]
    Unsupported { field: String, what: String },

    /// Any other rule on one field.
    #[error("config.json: {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// A container id that runc would refuse.
    #[error("invalid container id {id:?}: {reason}")]
    ContainerId { id: String, reason: &'static str },

    /// A signal that is neither a number in 1..=64 nor a known name.
    #[error("invalid signal {input:?}: {reason}")]
    Signal { input: String, reason: String },
}

impl SpecError {
    /// The JSON path of the offending field, for errors about config.json.
    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Missing { field }
            | SpecError::Empty { field }
            | SpecError::NotAbsolute { field, .. }
            | SpecError::DotDot { field, .. }
            | SpecError::Nul { field }
            | SpecError::Duplicate { field, .. }
            | SpecError::UserNsWithoutMappings { field, .. }
            | SpecError::MappingsWithoutUserNs { field }
            | SpecError::NeedsNamespace { field, .. }
            | SpecError::OutOfRange { field, .. }
            | SpecError::RlimitSoftAboveHard { field, .. }
            | SpecError::Unsupported { field, .. }
            | SpecError::Invalid { field, .. }
            | SpecError::JsonField { field, .. } => Some(field),
            SpecError::OciVersion { .. } => Some("ociVersion"),
            SpecError::Rootfs { .. } | SpecError::RootfsNotDir { .. } => Some("root.path"),
            SpecError::SwapBelowLimit { .. } => Some("linux.resources.memory.swap"),
            SpecError::Isolation { .. } => Some("annotations[\"io.hull.isolation\"]"),
            SpecError::Io { .. }
            | SpecError::Json { .. }
            | SpecError::AlreadyExists { .. }
            | SpecError::ContainerId { .. }
            | SpecError::Signal { .. } => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let e = SpecError::UserNsWithoutMappings {
            field: "linux.namespaces[2]".into(),
            mappings: "uidMappings",
        };
        assert_eq!(
            e.to_string(),
            "config.json: linux.namespaces[2]: namespace \"user\" has no uidMappings"
        );
        assert_eq!(e.field(), Some("linux.namespaces[2]"));
        let e = SpecError::NotAbsolute {
            field: "mounts[3].destination".into(),
            value: "tmp".into(),
            hint: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "config.json: mounts[3].destination \"tmp\" is not an absolute path"
        );
    }

    #[test]
    fn io_errors_name_the_file() {
        let e = SpecError::AlreadyExists {
            path: "/b/config.json".into(),
        };
        assert!(e.to_string().starts_with("/b/config.json: "));
        assert_eq!(e.field(), None);
    }
}
