//! `linux.resources`: values the cgroup files would refuse, or that would escape them.

use super::paths;
use crate::{Spec, SpecError};

/// `cpu.cfs_period_us` bounds (1 ms ..= 1 s), and the smallest non-default quota.
const CFS_PERIOD_MIN: u64 = 1_000;
const CFS_PERIOD_MAX: u64 = 1_000_000;
const CFS_QUOTA_MIN: i64 = 1_000;

/// Checks `linux.resources`.
pub(super) fn check(spec: &Spec) -> Result<(), SpecError> {
    match spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        Some(res) => validate_resources(res),
        None => Ok(()),
    }
}

/// Checks a `LinuxResources` on its own: `linux.resources` of a bundle, or what `update`
/// is given (field names are `linux.resources.*` either way).
pub fn validate_resources(res: &oci_spec::runtime::LinuxResources) -> Result<(), SpecError> {
    if let Some(mem) = res.memory() {
        for (name, v) in [
            ("limit", mem.limit()),
            ("reservation", mem.reservation()),
            ("swap", mem.swap()),
            ("kernel", mem.kernel()),
            ("kernelTCP", mem.kernel_tcp()),
        ] {
            if let Some(v) = v {
                if v < -1 {
                    return Err(SpecError::OutOfRange {
                        field: format!("linux.resources.memory.{name}"),
                        value: v.into(),
                        range: "-1 (unlimited) or a byte count",
                    });
                }
            }
        }
        if let (Some(limit), Some(swap)) = (mem.limit(), mem.swap()) {
            if limit > 0 && swap > 0 && swap < limit {
                return Err(SpecError::SwapBelowLimit { limit, swap });
            }
        }
        if let Some(s) = mem.swappiness() {
            // u64::MAX is Go's uint64(-1): "unset".
            if s > 100 && s != u64::MAX {
                return Err(SpecError::OutOfRange {
                    field: "linux.resources.memory.swappiness".into(),
                    value: s.into(),
                    range: "0..=100",
                });
            }
        }
    }

    if let Some(cpu) = res.cpu() {
        // A period of 0 means "not set" (runc's reading), i.e. the kernel default 100 ms.
        if let Some(p) = cpu.period() {
            if p != 0 && !(CFS_PERIOD_MIN..=CFS_PERIOD_MAX).contains(&p) {
                return Err(SpecError::OutOfRange {
                    field: "linux.resources.cpu.period".into(),
                    value: p.into(),
                    range: "0 (default) or 1000..=1000000 microseconds",
                });
            }
        }
        if let Some(q) = cpu.quota() {
            if q != -1 && q != 0 && q < CFS_QUOTA_MIN {
                return Err(SpecError::OutOfRange {
                    field: "linux.resources.cpu.quota".into(),
                    value: q.into(),
                    range: "-1 (unlimited), 0 (not set) or >= 1000 microseconds",
                });
            }
        }
    }

    for (i, d) in res.devices().iter().flatten().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        if let Some(access) = d.access() {
            if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(SpecError::invalid(
                    format!("{field}.access"),
                    format!("{access:?} may only contain 'r', 'w' and 'm'"),
                ));
            }
        }
        for (name, v) in [("major", d.major()), ("minor", d.minor())] {
            if let Some(v) = v {
                if v < -1 {
                    return Err(SpecError::OutOfRange {
                        field: format!("{field}.{name}"),
                        value: v.into(),
                        range: "-1 (any) or a device number",
                    });
                }
            }
        }
    }

    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        if h.page_size().is_empty() {
            return Err(SpecError::Empty {
                field: format!("linux.resources.hugepageLimits[{i}].pageSize"),
            });
        }
        if h.page_size().contains('/') || h.page_size().contains('\0') {
            return Err(SpecError::invalid(
                format!("linux.resources.hugepageLimits[{i}].pageSize"),
                format!("{:?} is not a page size", h.page_size()),
            ));
        }
    }

    // `unified` keys are file names in the container's cgroup directory.
    if let Some(unified) = res.unified() {
        let mut keys: Vec<_> = unified.keys().collect();
        keys.sort();
        for k in keys {
            let field = format!("linux.resources.unified[{k:?}]");
            if k.is_empty() {
                return Err(SpecError::Empty { field });
            }
            paths::no_nul_str(&field, k)?;
            if k.contains('/') || k == "." || k == ".." {
                return Err(SpecError::invalid(
                    field,
                    "must name a file in the cgroup directory (no '/', not \".\" or \"..\")",
                ));
            }
            if let Some(v) = unified.get(k) {
                paths::no_nul_str(&field, v)?;
            }
        }
    }
    Ok(())
}
