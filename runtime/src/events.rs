//! `events`: runc's event stream for a container — `{"type":"stats","id","data"}` every
//! interval and `{"type":"oom","id"}` when the kernel's OOM killer acts in its cgroup.
//! OOM is seen through the v1 memory controller's eventfd (`cgroup.event_control`), or on
//! cgroup2 by the `oom_kill` counter of `memory.events` growing.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::cgroups::ContainerCgroup;
use crate::container::{load_state, status_of, Error, Runtime, Status};
use crate::state::ContainerDir;

/// Where OOM kills of the container are noticed.
enum OomWatch {
    /// v1: an eventfd the kernel signals on each OOM in the memory cgroup.
    EventFd(OwnedFd),
    /// cgroup2: the `oom_kill` count in `memory.events`, compared each tick.
    Counter {
        file: PathBuf,
        last: u64,
    },
    None,
}

impl OomWatch {
    fn new(cg: &ContainerCgroup) -> Self {
        if let Some(dir) = cg.dirs.get("memory") {
            if let Some(fd) = v1_eventfd(dir) {
                return OomWatch::EventFd(fd);
            }
        }
        if let Some(dir) = cg.dirs.get("unified") {
            let file = dir.join("memory.events");
            if let Some(last) = oom_kill_count(&file) {
                return OomWatch::Counter { file, last };
            }
        }
        OomWatch::None
    }
}

/// Register an eventfd for `memory.oom_control` of the v1 memory cgroup `dir`.
fn v1_eventfd(dir: &std::path::Path) -> Option<OwnedFd> {
    let control = std::fs::File::open(dir.join("memory.oom_control")).ok()?;
    // SAFETY: eventfd returns a new descriptor or -1; it takes no pointers.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor we now own.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    std::fs::write(dir.join("cgroup.event_control"), line).ok()?;
    // The registration lives as long as the eventfd; `control` may be closed now.
    Some(efd)
}

fn oom_kill_count(file: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

fn stats_line(id: &str, cg: &ContainerCgroup) -> Result<String, Error> {
    let stats = cg.stats()?;
    Ok(serde_json::json!({ "type": "stats", "id": id, "data": stats }).to_string())
}

fn oom_line(id: &str) -> String {
    serde_json::json!({ "type": "oom", "id": id }).to_string()
}

impl Runtime {
    /// Write events of container `id` to `out`: one stats event with `once`, else stats
    /// every `interval` and OOM events as they happen, until the container stops.
    pub fn events(
        &self,
        id: &str,
        once: bool,
        interval: Duration,
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        hull_specs::validate_container_id(id)?;
        if interval.is_zero() {
            return Err(Error::Usage("--interval must be greater than 0".into()));
        }
        let (saved, cg) = {
            let dir = ContainerDir::open(&self.root, id)?;
            let saved = load_state(&dir)?;
            if status_of(&dir, &saved) == Status::Stopped {
                return Err(Error::NotRunning);
            }
            let cg = saved.cgroup.clone().ok_or_else(|| {
                Error::Usage(format!("container \"{id}\" has no cgroup: no events"))
            })?;
            (saved, cg)
        };
        let write = |out: &mut dyn Write, line: String| {
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .map_err(|e| Error::Io {
                    what: "writing events".into(),
                    source: e,
                })
        };
        if once {
            return write(out, stats_line(id, &cg)?);
        }
        let mut watch = OomWatch::new(&cg);
        let timeout = PollTimeout::try_from(interval).unwrap_or(PollTimeout::MAX);
        loop {
            if !crate::container::process_alive(saved.pid, saved.pid_start_time) {
                return Ok(());
            }
            let mut oom = false;
            match &mut watch {
                OomWatch::EventFd(fd) => {
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, timeout) {
                        Ok(n) if n > 0 => {
                            let mut buf = [0u8; 8];
                            oom = nix::unistd::read(fd.as_fd(), &mut buf).is_ok();
                        }
                        Ok(_) | Err(nix::Error::EINTR) => {}
                        Err(source) => {
                            return Err(Error::Sys {
                                what: "poll OOM eventfd".into(),
                                source,
                            })
                        }
                    }
                }
                OomWatch::Counter { file, last } => {
                    std::thread::sleep(interval);
                    if let Some(now) = oom_kill_count(file) {
                        oom = now > *last;
                        *last = now;
                    }
                }
                OomWatch::None => std::thread::sleep(interval),
            }
            if oom {
                write(out, oom_line(id))?;
                continue;
            }
            match stats_line(id, &cg) {
                Ok(line) => write(out, line)?,
                // The container may have gone between the liveness check and the read.
                Err(e) if !crate::container::process_alive(saved.pid, saved.pid_start_time) => {
                    tracing::debug!("{e}");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_have_runc_envelope() {
        let v: serde_json::Value = serde_json::from_str(&oom_line("c1")).unwrap();
        assert_eq!(v["type"], "oom");
        assert_eq!(v["id"], "c1");
    }

    #[test]
    fn oom_kill_counter_is_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(oom_kill_count(&f), Some(1));
        std::fs::write(&f, "low 0\n").unwrap();
        assert_eq!(oom_kill_count(&f), None);
    }
}
