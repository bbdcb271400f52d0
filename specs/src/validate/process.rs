//! `process`: required for `create`, with an executable command, an absolute cwd and sane
//! user, rlimits and OOM score.

use super::paths;
use crate::{Spec, SpecError};

/// Checks `process`.
pub(super) fn check(spec: &Spec) -> Result<(), SpecError> {
    let process = spec.process().as_ref().ok_or_else(|| SpecError::Missing {
        field: "process".into(),
    })?;

    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::Empty {
            field: "process.args".into(),
        });
    }
    for (i, arg) in args.iter().enumerate() {
        paths::no_nul_str(&format!("process.args[{i}]"), arg)?;
    }
    if args[0].is_empty() {
        return Err(SpecError::Empty {
            field: "process.args[0]".into(),
        });
    }

    let cwd = process.cwd();
    if cwd.as_os_str().is_empty() {
        return Err(SpecError::Empty {
            field: "process.cwd".into(),
        });
    }
    paths::absolute("process.cwd", cwd, "")?;
    paths::no_nul("process.cwd", cwd)?;

    for (i, e) in process.env().iter().flatten().enumerate() {
        paths::env_entry(&format!("process.env[{i}]"), e)?;
    }

    let user = process.user();
    // (uid_t)-1 and (gid_t)-1 mean "no change" to setresuid(2) and friends.
    if user.uid() == u32::MAX {
        return Err(SpecError::invalid(
            "process.user.uid",
            "4294967295 ((uid_t)-1) is not a valid user id",
        ));
    }
    if user.gid() == u32::MAX {
        return Err(SpecError::invalid(
            "process.user.gid",
            "4294967295 ((gid_t)-1) is not a valid group id",
        ));
    }
    for (i, g) in user.additional_gids().iter().flatten().enumerate() {
        if *g == u32::MAX {
            return Err(SpecError::invalid(
                format!("process.user.additionalGids[{i}]"),
                "4294967295 ((gid_t)-1) is not a valid group id",
            ));
        }
    }
    if let Some(umask) = user.umask() {
        if umask > 0o777 {
            return Err(SpecError::OutOfRange {
                field: "process.user.umask".into(),
                value: umask.into(),
                range: "0..=0o777",
            });
        }
    }

    let rlimits = process.rlimits().as_deref().unwrap_or_default();
    for (i, r) in rlimits.iter().enumerate() {
        let field = format!("process.rlimits[{i}]");
        if let Some(j) = rlimits[..i].iter().position(|o| o.typ() == r.typ()) {
            return Err(SpecError::Duplicate {
                field,
                what: format!("rlimit {}", rlimit_name(r.typ())),
                first: format!("process.rlimits[{j}]"),
            });
        }
        if r.soft() > r.hard() {
            return Err(SpecError::RlimitSoftAboveHard {
                field,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
    }

    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::OutOfRange {
                field: "process.oomScoreAdj".into(),
                value: adj.into(),
                range: "-1000..=1000",
            });
        }
    }

    if let Some(io) = process.io_priority() {
        if !(0..=7).contains(&io.priority()) {
            return Err(SpecError::OutOfRange {
                field: "process.ioPriority.priority".into(),
                value: io.priority().into(),
                range: "0..=7",
            });
        }
    }
    Ok(())
}

/// `RLIMIT_NOFILE` and friends, as written in `config.json`.
pub fn rlimit_name(t: oci_spec::runtime::PosixRlimitType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{t:?}"))
}
