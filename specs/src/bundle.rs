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
    // Parse the text again (not the Value) so that type errors carry line and column.
    serde_json::from_slice(bytes).map_err(json_err)
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
