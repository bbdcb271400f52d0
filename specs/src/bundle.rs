//! Loading a bundle: read `config.json`, parse it, validate it, resolve the rootfs.

use std::path::{Path, PathBuf};

use crate::validate::{raw::check_raw, validate};
use crate::{Spec, SpecError};

/// The name of the configuration file in a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// A loaded and validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute, canonical bundle directory.
    pub dir: PathBuf,
    /// Absolute, canonical path of the root filesystem.
    pub rootfs: PathBuf,
    /// The parsed configuration.
    pub spec: Spec,
}

/// Parses `config.json` text (`path` is only used in error messages).
pub fn parse_config(bytes: &[u8], path: &Path) -> Result<Spec, SpecError> {
    let json_err = |source| SpecError::Json {
        path: path.to_path_buf(),
        source,
    };
    let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(json_err)?;
    check_raw(&doc)?;
    // Parse the text again (not the Value) so that type errors carry line and column, and
    // through serde_path_to_error so that they name the field.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = json_field(e.path());
        let source = e.into_inner();
        match field {
            Some(field) => SpecError::JsonField {
                path: path.to_path_buf(),
                field,
                source,
            },
            None => json_err(source),
        }
    })
}

/// Parses a JSON document other than `config.json` (`update`'s resources, `exec`'s
/// process.json) so that a type error names the field: `memory.limit: invalid type: ...`.
pub fn parse_json_naming_field<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| match json_field(e.path()) {
        Some(field) => format!("{field}: {}", e.into_inner()),
        None => e.into_inner().to_string(),
    })
}

/// A serde_path_to_error path in the form error messages use (`linux.namespaces[2].type`),
/// or None for the document itself.
fn json_field(p: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                // Annotation and sysctl keys hold dots: quote them as runc's messages do.
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                } else {
                    out.push_str(&format!("[{key:?}]"));
                }
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Reads and parses `path` as a runtime config, without validating it.
pub fn read_config(path: &Path) -> Result<Spec, SpecError> {
    let bytes = std::fs::read(path).map_err(|source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&bytes, path)
}

/// Reads `dir/config.json`, parses and validates it, and resolves the bundle directory and
/// root filesystem to canonical absolute paths.
pub fn load_bundle(dir: &Path) -> Result<Bundle, SpecError> {
    let canonical = std::fs::canonicalize(dir).map_err(|source| SpecError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let spec = read_config(&canonical.join(CONFIG_FILE))?;
    let rootfs = validate(&spec, &canonical)?;
    Ok(Bundle {
        dir: canonical,
        rootfs,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::write_default_spec;

    fn bundle() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        (dir, path)
    }

    #[test]
    fn loads_a_default_bundle() {
        let (_keep, dir) = bundle();
        write_default_spec(&dir, false, 0, 0).expect("spec written");
        std::fs::create_dir(dir.join("rootfs")).expect("rootfs");
        let b = load_bundle(&dir).expect("loads");
        let canonical = std::fs::canonicalize(&dir).expect("canonical");
        assert_eq!(b.dir, canonical);
        assert_eq!(b.rootfs, canonical.join("rootfs"));
        assert!(b.dir.is_absolute() && b.rootfs.is_absolute());
        assert_eq!(b.spec.hostname().as_deref(), Some("hull"));
        // A non-canonical spelling of the same directory gives the same result.
        let b2 = load_bundle(&dir.join("rootfs").join("..")).expect("loads");
        assert_eq!(b2.dir, canonical);
    }

    #[test]
    fn missing_bundle_or_config_names_the_path() {
        let (_keep, dir) = bundle();
        let e = load_bundle(&dir.join("nope")).expect_err("no bundle");
        assert!(matches!(e, SpecError::Io { .. }));
        assert!(e.to_string().contains("nope"), "{e}");
        let e = load_bundle(&dir).expect_err("no config.json");
        assert!(matches!(e, SpecError::Io { .. }));
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn invalid_json_names_the_file() {
        let (_keep, dir) = bundle();
        std::fs::write(dir.join(CONFIG_FILE), b"{\"ociVersion\": ").expect("write");
        let e = load_bundle(&dir).expect_err("bad JSON");
        assert!(matches!(e, SpecError::Json { .. }));
        assert!(e.to_string().contains("config.json: invalid JSON"), "{e}");
    }

    #[test]
    fn missing_rootfs_is_reported() {
        let (_keep, dir) = bundle();
        write_default_spec(&dir, false, 0, 0).expect("spec written");
        let e = load_bundle(&dir).expect_err("no rootfs");
        assert!(matches!(e, SpecError::Rootfs { .. }), "{e}");
    }

    /// The field a parse error names, and its message.
    fn parse_error(json: &str) -> (Option<String>, String) {
        let e = parse_config(json.as_bytes(), Path::new("config.json")).expect_err("must fail");
        (e.field().map(str::to_string), e.to_string())
    }

    #[test]
    fn type_errors_name_the_field() {
        let cases = [
            (
                r#"{"process": {"args": "sh", "cwd": "/", "user": {"uid": 0, "gid": 0}}}"#,
                "process.args",
                "sh",
            ),
            (
                r#"{"linux": {"namespaces": [{"type": "pid"}, {"type": "bogusns"}]}}"#,
                "linux.namespaces[1].type",
                "bogusns",
            ),
            (
                r#"{"process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "rlimits": [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]}}"#,
                "process.rlimits[0].type",
                "RLIMIT_BOGUS",
            ),
            (
                r#"{"process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "capabilities": {"bounding": ["CAP_KILL", "CAP_BOGUS"]}}}"#,
                "process.capabilities.bounding[1]",
                "CAP_BOGUS",
            ),
            (
                r#"{"linux": {"seccomp": {"defaultAction": "SCMP_ACT_BOGUS"}}}"#,
                "linux.seccomp.defaultAction",
                "SCMP_ACT_BOGUS",
            ),
            (
                r#"{"linux": {"devices": [{"path": "/dev/x", "type": "z"}]}}"#,
                "linux.devices[0].type",
                "z",
            ),
            (
                r#"{"linux": {"resources": {"memory": {"limit": "lots"}}}}"#,
                "linux.resources.memory.limit",
                "lots",
            ),
        ];
        for (json, field, value) in cases {
            let (got, msg) = parse_error(json);
            assert_eq!(got.as_deref(), Some(field), "{msg}");
            assert!(msg.contains(field) && msg.contains(value), "{msg}");
            assert!(msg.starts_with("config.json: "), "{msg}");
        }
    }

    #[test]
    fn type_errors_carry_a_position() {
        let e = parse_config(
            br#"{"ociVersion": "1.0.2", "linux": {"namespaces": [{"type": "bogus"}]}}"#,
            Path::new("config.json"),
        )
        .expect_err("unknown namespace type");
        let msg = e.to_string();
        assert!(msg.contains("bogus") && msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn raw_checks() {
        let p = Path::new("config.json");
        let field = |json: &str| -> Option<String> {
            parse_config(json.as_bytes(), p)
                .err()
                .and_then(|e| e.field().map(str::to_string))
        };
        assert_eq!(field("[]").as_deref(), Some("(document)"));
        assert_eq!(
            field(r#"{"process": {"args": ["sh"], "user": {"uid": 0, "gid": 0}}}"#).as_deref(),
            Some("process.cwd")
        );
        assert_eq!(
            field(r#"{"process": {"args": ["sh"], "cwd": "/"}}"#).as_deref(),
            Some("process.user")
        );
        assert_eq!(field(r#"{"process": 5}"#).as_deref(), Some("process"));
        assert_eq!(
            field(r#"{"linux": {"namespaces": [{"type": "pid"}, {"path": "/x"}]}}"#).as_deref(),
            Some("linux.namespaces[1].type")
        );
        assert_eq!(
            field(r#"{"linux": {"devices": [{"path": "/dev/x", "type": "c", "major": 1}]}}"#)
                .as_deref(),
            Some("linux.devices[0].minor")
        );
        assert_eq!(
            field(r#"{"linux": {"devices": [{"path": "/dev/x", "type": "b", "minor": 1}]}}"#)
                .as_deref(),
            Some("linux.devices[0].major")
        );
        assert_eq!(
            field(r#"{"linux": {"devices": [{"type": "p"}]}}"#).as_deref(),
            Some("linux.devices[0].path")
        );
        assert_eq!(
            field(r#"{"mounts": [{"type": "tmpfs"}]}"#).as_deref(),
            Some("mounts[0].destination")
        );
        // Good cases parse.
        assert!(parse_config(
            br#"{"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
                 "linux": {"devices": [{"path": "/dev/p", "type": "p"},
                                       {"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]},
                 "mounts": [{"destination": "/proc", "type": "proc"}]}"#,
            p
        )
        .is_ok());
        assert!(parse_config(b"{}", p).is_ok());
    }
}
