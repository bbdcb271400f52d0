//! `ociVersion`: a SemVer 2.0.0 version whose major is 1.

use crate::SpecError;

/// A parsed SemVer version (pre-release and build metadata kept as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemVer {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Option<String>,
    pub build: Option<String>,
}

fn numeric(part: &str, what: &str) -> Result<u64, String> {
    if part.is_empty() {
        return Err(format!("{what} version is empty"));
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} version {part:?} is not a number"));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(format!("{what} version {part:?} has a leading zero"));
    }
    part.parse()
        .map_err(|_| format!("{what} version {part:?} is too large"))
}

fn identifiers(s: &str, what: &str, numeric_no_leading_zero: bool) -> Result<(), String> {
    for id in s.split('.') {
        if id.is_empty() {
            return Err(format!("{what} has an empty identifier"));
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{what} identifier {id:?} has invalid characters"));
        }
        if numeric_no_leading_zero
            && id.len() > 1
            && id.starts_with('0')
            && id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("{what} identifier {id:?} has a leading zero"));
        }
    }
    Ok(())
}

/// Parses a SemVer 2.0.0 version string.
pub fn parse_semver(s: &str) -> Result<SemVer, String> {
    let (rest, build) = match s.split_once('+') {
        Some((r, b)) => {
            identifiers(b, "build metadata", false)?;
            (r, Some(b.to_string()))
        }
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => {
            identifiers(p, "pre-release", true)?;
            (c, Some(p.to_string()))
        }
        None => (rest, None),
    };
    let mut parts = core.split('.');
    let (Some(major), Some(minor), Some(patch), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not of the form MAJOR.MINOR.PATCH".to_string());
    };
    Ok(SemVer {
        major: numeric(major, "major")?,
        minor: numeric(minor, "minor")?,
        patch: numeric(patch, "patch")?,
        pre,
        build,
    })
}

/// `ociVersion` must be SemVer with major version 1 (what hull implements).
pub fn check_oci_version(version: &str) -> Result<SemVer, SpecError> {
    let fail = |reason: String| SpecError::OciVersion {
        version: version.to_string(),
        reason,
    };
    let v = parse_semver(version).map_err(|r| fail(format!("not a SemVer 2.0.0 version: {r}")))?;
    if v.major != 1 {
        return Err(fail(format!(
            "major version {} is not supported (hull implements runtime-spec 1.x)",
            v.major
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        for v in [
            "1.0.0",
            "1.0.2-dev",
            "1.1.0",
            "1.2.0",
            "1.0.0-rc.1",
            "1.0.0-rc5+build.7",
            "1.0.0+dirty",
            "1.99.0",
        ] {
            assert!(check_oci_version(v).is_ok(), "{v}");
        }
        let v = parse_semver("1.0.2-dev").expect("parses");
        assert_eq!((v.major, v.minor, v.patch), (1, 0, 2));
        assert_eq!(v.pre.as_deref(), Some("dev"));
    }

    #[test]
    fn rejected() {
        for v in [
            "",
            "abc",
            "1",
            "1.0",
            "1.0.0.0",
            "2.0.0",
            "0.9.0",
            "01.0.0",
            "1.00.0",
            "1.0.x",
            "1.0.0-",
            "1.0.0-a..b",
            "1.0.0-01",
            "1.0.0+",
            "1.0.0-a_b",
            " 1.0.0",
            "v1.0.0",
            "1.0.0-é",
        ] {
            let e = check_oci_version(v).expect_err(v);
            assert!(e.to_string().starts_with("config.json: ociVersion"), "{e}");
        }
    }
}
