//! Freezing and thawing a cgroup: v1 `freezer.state`, or cgroup2 `cgroup.freeze` (also used
//! on hybrid hosts without a v1 freezer), waiting until the kernel reports the new state.

use std::path::Path;
use std::time::{Duration, Instant};

use super::fsutil::{self, Ctx};
use super::CgroupError;

/// How long to wait for FROZEN/THAWED before giving up.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The freezer interface found for a cgroup.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

pub(crate) fn set(path: &str, freezer: Freezer<'_>, frozen: bool) -> Result<(), CgroupError> {
    match freezer {
        Freezer::V1(dir) => set_v1(path, dir, frozen),
        Freezer::V2(dir) => set_v2(path, dir, frozen),
    }
}

fn set_v1(path: &str, dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let ctx = Ctx {
        path,
        controller: "freezer",
    };
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let start = Instant::now();
    let mut round = 0u32;
    let mut since_rethaw = 0u32;
    loop {
        // A freeze can stay in FREEZING (e.g. a task in vfork or D state); thawing and
        // freezing again now and then gets it going, as runc does.
        if frozen && since_rethaw >= 50 {
            since_rethaw = 0;
            fsutil::write(ctx, dir, "freezer.state", "THAWED")?;
        }
        fsutil::write(ctx, dir, "freezer.state", want)?;
        if fsutil::read(ctx, dir, "freezer.state")? == want {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            if frozen {
                let _ = fsutil::write(ctx, dir, "freezer.state", "THAWED");
            }
            return Err(timeout(path, "freezer", want, start));
        }
        round += 1;
        since_rethaw += 1;
        std::thread::sleep(backoff(round));
    }
}

fn set_v2(path: &str, dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let ctx = Ctx {
        path,
        controller: "cgroup2 freeze",
    };
    fsutil::write(ctx, dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        let events = fsutil::read(ctx, dir, "cgroup.events")?;
        if events.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            if frozen {
                let _ = fsutil::write(ctx, dir, "cgroup.freeze", "0");
            }
            return Err(timeout(path, "cgroup2 freeze", want, start));
        }
        round += 1;
        std::thread::sleep(backoff(round));
    }
}

fn backoff(round: u32) -> Duration {
    Duration::from_micros(u64::from(round.min(10)) * 1000)
}

fn timeout(path: &str, controller: &str, state: &'static str, start: Instant) -> CgroupError {
    CgroupError::FreezeTimeout {
        path: path.to_string(),
        controller: controller.to_string(),
        state,
        waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}
