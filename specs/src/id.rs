//! Container ids: the rules runc applies, so ids round-trip between the two runtimes.

use crate::SpecError;

/// The longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 1024;

/// Checks a container id: non-empty, at most 1024 bytes, only `[A-Za-z0-9_+\-.]`,
/// and not `.` or `..` (the id names a directory under the state root).
pub fn validate_container_id(id: &str) -> Result<(), SpecError> {
    let fail = |reason| {
        Err(SpecError::ContainerId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return fail("must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return fail("longer than 1024 bytes");
    }
    if id == "." || id == ".." {
        return fail("must not be \".\" or \"..\"");
    }
    if id.contains('/') {
        return fail("must not contain '/'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return fail("may only contain letters, digits, '_', '+', '-' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_ids() {
        for id in [
            "a",
            "abc-123",
            "A_b+c.d",
            "...",
            "x..y",
            "-",
            &"a".repeat(1024),
        ] {
            assert!(validate_container_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn bad_ids() {
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a b",
            "a,b",
            "a:b",
            "é",
            "a\0b",
            "a\n",
            &"a".repeat(1025),
        ] {
            let e = validate_container_id(id).expect_err(id);
            assert!(e.to_string().starts_with("invalid container id"), "{e}");
        }
    }
}
