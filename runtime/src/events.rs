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

/// What one wait on an [`OomWatcher`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomPoll {
    /// The OOM killer acted in the cgroup (once or more since the last wait).
    Oom,
    /// Nothing within the timeout.
    Quiet,
    /// The cgroup is gone: no OOM can follow.
    Gone,
}

/// Where OOM kills of a container are noticed: the v1 memory controller's eventfd
/// (`cgroup.event_control` on `memory.oom_control`, as runc), else the `oom_kill` count of
/// cgroup2's `memory.events`, woken by inotify when the kernel updates the file.
pub struct OomWatcher(OomWatch);

enum OomWatch {
    /// v1: an eventfd the kernel signals on each OOM in the memory cgroup (and when the
    /// cgroup is removed).
    EventFd { fd: OwnedFd, dir: PathBuf },
    /// cgroup2: the `oom_kill` count in `memory.events`, compared after each change.
    Counter {
        file: PathBuf,
        last: u64,
        notify: Option<OwnedFd>,
    },
}

impl OomWatcher {
    /// A watcher on the container's memory cgroup, or None when it has none to watch.
    pub fn new(cg: &ContainerCgroup) -> Option<Self> {
        if let Some(dir) = cg.dirs.get("memory") {
            if let Some(fd) = v1_eventfd(dir) {
                return Some(OomWatcher(OomWatch::EventFd {
                    fd,
                    dir: dir.clone(),
                }));
            }
        }
        if let Some(dir) = cg.dirs.get("unified") {
            let file = dir.join("memory.events");
            if let Some(last) = oom_kill_count(&file) {
                let notify = inotify_on_modify(&file);
                return Some(OomWatcher(OomWatch::Counter { file, last, notify }));
            }
        }
        None
    }

    /// Wait up to `timeout` for an OOM kill.
    pub fn poll(&mut self, timeout: Duration) -> Result<OomPoll, Error> {
        let wait = timeout;
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match &mut self.0 {
            OomWatch::EventFd { fd, dir } => {
                if !wait_readable(fd.as_fd(), timeout)? {
                    return Ok(OomPoll::Quiet);
                }
                let mut buf = [0u8; 8];
                let _ = nix::unistd::read(fd.as_fd(), &mut buf);
                // The eventfd also fires when the cgroup is removed.
                if dir.join("memory.oom_control").exists() {
                    Ok(OomPoll::Oom)
                } else {
                    Ok(OomPoll::Gone)
                }
            }
            OomWatch::Counter { file, last, notify } => {
                match notify {
                    Some(n) => {
                        if wait_readable(n.as_fd(), timeout)? {
                            let mut buf = [0u8; 4096];
                            while matches!(nix::unistd::read(n.as_fd(), &mut buf), Ok(k) if k > 0) {
                            }
                        }
                    }
                    None => std::thread::sleep(wait),
                }
                let Some(now) = oom_kill_count(file) else {
                    return Ok(OomPoll::Gone);
                };
                let grew = now > *last;
                *last = now;
                Ok(if grew { OomPoll::Oom } else { OomPoll::Quiet })
            }
        }
    }
}

/// Whether `fd` became readable within `timeout`.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: PollTimeout) -> Result<bool, Error> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::Error::EINTR) => Ok(false),
        Err(source) => Err(Error::Sys {
            what: "poll OOM notification".into(),
            source,
        }),
    }
}

/// An inotify descriptor reporting modifications of `file` (non-blocking).
fn inotify_on_modify(file: &std::path::Path) -> Option<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(file.as_os_str().as_bytes()).ok()?;
    // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a valid inotify descriptor and a NUL-terminated path that outlives the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) };
    (wd >= 0).then_some(fd)
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
    /// The cgroup of container `id` as saved at `create` (with its directory in each
    /// hierarchy), for statistics and OOM watching.
    pub fn container_cgroup(&self, id: &str) -> Result<ContainerCgroup, Error> {
        hull_specs::validate_container_id(id)?;
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        saved
            .cgroup
            .ok_or_else(|| Error::Usage(format!("container \"{id}\" has no cgroup")))
    }

    /// The saved state and cgroup of a container that is not stopped.
    fn running_cgroup(
        &self,
        id: &str,
    ) -> Result<(crate::state::SavedState, ContainerCgroup), Error> {
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = load_state(&dir)?;
        if status_of(&dir, &saved) == Status::Stopped {
            return Err(Error::NotRunning);
        }
        let cg = saved
            .cgroup
            .clone()
            .ok_or_else(|| Error::Usage(format!("container \"{id}\" has no cgroup: no events")))?;
        Ok((saved, cg))
    }

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
        let (saved, cg) = self.running_cgroup(id)?;
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
        let mut watch = OomWatcher::new(&cg);
        loop {
            if !crate::process::process_alive(saved.pid, saved.pid_start_time) {
                return Ok(());
            }
            let seen = match &mut watch {
                Some(w) => w.poll(interval)?,
                None => {
                    std::thread::sleep(interval);
                    OomPoll::Quiet
                }
            };
            match seen {
                OomPoll::Oom => {
                    write(out, oom_line(id))?;
                    continue;
                }
                // The cgroup went away with the container: the liveness check ends it.
                OomPoll::Gone => {
                    watch = None;
                    continue;
                }
                OomPoll::Quiet => {}
            }
            match stats_line(id, &cg) {
                Ok(line) => write(out, line)?,
                // The container may have gone between the liveness check and the read.
                Err(e) if !crate::process::process_alive(saved.pid, saved.pid_start_time) => {
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

    /// cgroup2: an `oom_kill` count that grows is one OOM; a missing file ends the watch.
    #[test]
    fn v2_watcher_sees_the_oom_kill_count_grow() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "oom 0\noom_kill 0\n").unwrap();
        let cg = ContainerCgroup {
            path: "/x".into(),
            dirs: [("unified".to_string(), dir.path().to_path_buf())]
                .into_iter()
                .collect(),
            process_leaf: None,
        };
        let mut w = OomWatcher::new(&cg).expect("a watcher on memory.events");
        let t = Duration::from_millis(50);
        assert_eq!(w.poll(t).unwrap(), OomPoll::Quiet);
        std::fs::write(&f, "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(w.poll(t).unwrap(), OomPoll::Oom);
        assert_eq!(w.poll(t).unwrap(), OomPoll::Quiet);
        std::fs::remove_file(&f).unwrap();
        assert_eq!(w.poll(t).unwrap(), OomPoll::Gone);
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
