//! Skip helpers. Rust's harness has no runtime "skip", so a skipped test prints
//! `skipped: <reason>` on stderr (visible with `--nocapture`) and returns early.

use crate::runtime::Runtime;
use std::path::Path;

/// Path of the busybox-static binary used to build every rootfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// Print the skip line. Tests call it and then `return`.
pub fn skipped(reason: &str) {
    eprintln!("skipped: {reason}");
}

/// Why e2e tests cannot run on this machine, if they cannot.
pub fn env_skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: e2e tests need root (namespaces, cgroups, mounts)".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} missing: install Debian's busybox-static"
        ));
    }
    None
}

/// Standard prelude of an e2e test: `let Some(rt) = setup("name") else { return };`.
/// Prints `skipped: ...` and returns None when not root or busybox is missing.
/// Panics (the test FAILS) when the binary under test is missing.
pub fn setup(test: &str) -> Option<Runtime> {
    if let Some(r) = env_skip_reason() {
        skipped(&r);
        return None;
    }
    Some(Runtime::new(test))
}

/// `HULL_E2E_FORCE_HULL_ONLY=1` runs hull-only tests against runc too (to re-check that
/// runc still lacks the feature).
pub fn force_hull_only() -> bool {
    std::env::var_os("HULL_E2E_FORCE_HULL_ONLY").is_some_and(|v| v == "1")
}

/// Return early from a test, printing `skipped: <reason>`, when `cond` holds.
#[macro_export]
macro_rules! skip_if {
    ($cond:expr, $($reason:tt)+) => {
        if $cond {
            $crate::skip::skipped(&format!($($reason)+));
            return;
        }
    };
}

/// Return early (skipped) when the binary under test is runc: the test covers a
/// hull-only feature or a behaviour runc 1.1 gets wrong.
#[macro_export]
macro_rules! hull_only {
    ($rt:expr) => {
        if $rt.is_runc() && !$crate::skip::force_hull_only() {
            $crate::skip::skipped("hull-only feature");
            return;
        }
    };
    ($rt:expr, $($why:tt)+) => {
        if $rt.is_runc() && !$crate::skip::force_hull_only() {
            $crate::skip::skipped(&format!("hull-only feature: {}", format!($($why)+)));
            return;
        }
    };
}
