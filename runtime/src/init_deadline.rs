//! How long `create` and `start` wait on a container's init. Both hold the container's
//! lock while they wait, and `kill` and `delete --force` of that id wait for the lock: an
//! init that hangs (a mount on a dead NFS server, a createContainer or startContainer hook
//! that never returns) must not block them forever. Past the limit the command fails, and
//! a `create` undoes everything it made.

use std::time::Duration;

/// Overrides the limit, in seconds; `0` waits without limit.
pub const ENV: &str = "HULL_INIT_TIMEOUT";
/// The limit without the variable: generous for any init, hooks included.
pub const DEFAULT: Duration = Duration::from_secs(300);

/// The limit for one container; `extra` is added (a VM container's boot timeout: its init
/// is the VMM, which waits that long for the guest). None: no limit.
pub fn limit(extra: Duration) -> Option<Duration> {
    match std::env::var(ENV).ok().map(|v| v.trim().parse::<u64>()) {
        Some(Ok(0)) => None,
        Some(Ok(secs)) => Some(Duration::from_secs(secs) + extra),
        Some(Err(_)) => {
            tracing::warn!("{ENV} is not a number of seconds: using {DEFAULT:?}");
            Some(DEFAULT + extra)
        }
        None => Some(DEFAULT + extra),
    }
}

/// The error text for an init that did not answer within `limit`.
pub fn exceeded(what: &str, limit: Duration) -> String {
    format!(
        "container init did not {what} within {} s (set {ENV} to wait longer, 0 for no limit)",
        limit.as_secs()
    )
}
