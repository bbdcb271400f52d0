//! Small checks on paths and strings shared by the rules.

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::SpecError;

pub(crate) fn show(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub(crate) fn no_nul(field: &str, p: &Path) -> Result<(), SpecError> {
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(SpecError::Nul {
            field: field.into(),
        });
    }
    Ok(())
}

pub(crate) fn no_nul_str(field: &str, s: &str) -> Result<(), SpecError> {
    if s.as_bytes().contains(&0) {
        return Err(SpecError::Nul {
            field: field.into(),
        });
    }
    Ok(())
}

/// Absolute, or an error naming the field; `hint` is appended to the message.
pub(crate) fn absolute(field: &str, p: &Path, hint: &str) -> Result<(), SpecError> {
    if !p.is_absolute() {
        return Err(SpecError::NotAbsolute {
            field: field.into(),
            value: show(p),
            hint: hint.into(),
        });
    }
    Ok(())
}

pub(crate) fn has_dotdot(p: &Path) -> bool {
    p.components().any(|c| c == Component::ParentDir)
}

pub(crate) fn no_dotdot(field: &str, p: &Path) -> Result<(), SpecError> {
    if has_dotdot(p) {
        return Err(SpecError::DotDot {
            field: field.into(),
            value: show(p),
        });
    }
    Ok(())
}

/// `NAME=value` with a non-empty name and no NUL.
pub(crate) fn env_entry(field: &str, e: &str) -> Result<(), SpecError> {
    no_nul_str(field, e)?;
    match e.split_once('=') {
        Some((name, _)) if !name.is_empty() => Ok(()),
        Some(_) => Err(SpecError::invalid(
            field,
            format!("{e:?} has an empty variable name"),
        )),
        None => Err(SpecError::invalid(
            field,
            format!("{e:?} is not of the form NAME=value"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert!(no_nul("f", Path::new("/a")).is_ok());
        assert!(no_nul("f", Path::new("/a\0b")).is_err());
        assert!(no_nul_str("f", "a\0").is_err());
        assert!(absolute("f", Path::new("/a"), "").is_ok());
        assert!(absolute("f", Path::new("a"), "").is_err());
        assert!(no_dotdot("f", Path::new("/a/b..c/..d")).is_ok());
        assert!(no_dotdot("f", Path::new("/a/../b")).is_err());
        assert!(no_dotdot("f", Path::new("..")).is_err());
        assert!(env_entry("f", "A=b").is_ok());
        assert!(env_entry("f", "A=").is_ok());
        assert!(env_entry("f", "A==b").is_ok());
        assert!(env_entry("f", "A").is_err());
        assert!(env_entry("f", "=b").is_err());
        assert!(env_entry("f", "A=\0").is_err());
    }
}
