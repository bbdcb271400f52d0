//! Small file operations on a cgroup filesystem, each error carrying path and controller.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::CgroupError;

/// Context for errors: the cgroup path (as the user knows it) and the hierarchy key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub path: &'a str,
    pub controller: &'a str,
}

impl Ctx<'_> {
    pub fn io(&self, op: &'static str, file: &Path, source: std::io::Error) -> CgroupError {
        CgroupError::Io {
            path: self.path.to_string(),
            controller: self.controller.to_string(),
            op,
            file: file.to_path_buf(),
            source,
        }
    }
}

/// Writes `value` to `dir/file` (no create, no truncate semantics needed on cgroupfs).
pub(crate) fn write(ctx: Ctx<'_>, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let p = dir.join(file);
    tracing::debug!(file = %p.display(), value, "cgroup write");
    std::fs::write(&p, value).map_err(|e| ctx.io("write", &p, e))
}

/// Reads `dir/file`, trimmed.
pub(crate) fn read(ctx: Ctx<'_>, dir: &Path, file: &str) -> Result<String, CgroupError> {
    let p = dir.join(file);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| ctx.io("read", &p, e))
}

/// Creates `dir` and its missing ancestors below `mountpoint`, one level at a time.
/// Returns the directories it created, outermost first.
pub(crate) fn mkdir_tracked(
    ctx: Ctx<'_>,
    mountpoint: &Path,
    dir: &Path,
) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = dir.strip_prefix(mountpoint).unwrap_or(dir);
    let mut cur = mountpoint.to_path_buf();
    let mut created = Vec::new();
    for comp in rel.components() {
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => created.push(cur.clone()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                // Undo our part before reporting.
                for d in created.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                return Err(ctx.io("create directory", &cur, e));
            }
        }
    }
    Ok(created)
}

/// Removes the cgroup `dir` and any child cgroups (deepest first), retrying on EBUSY for a
/// short while (tasks may still be exiting). A missing directory is fine.
pub(crate) fn remove_cgroup_dir(ctx: Ctx<'_>, dir: &Path) -> Result<(), CgroupError> {
    // rmdir first: a container's cgroup rarely has children, so listing it every time
    // would be wasted work on the delete path.
    let mut delay = Duration::from_millis(10);
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // cgroupfs says EBUSY for child cgroups and live tasks; other filesystems (as in
            // the unit tests' fake trees) say ENOTEMPTY.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY))
                    && attempts < 6 =>
            {
                // Child cgroups are removed first; otherwise tasks may still be exiting.
                if !remove_children(ctx, dir)? {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                attempts += 1;
            }
            Err(e) => return Err(ctx.io("remove directory", dir, e)),
        }
    }
}

/// Remove the child cgroups of `dir`; true if there were any.
fn remove_children(ctx: Ctx<'_>, dir: &Path) -> Result<bool, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(ctx.io("list", dir, e)),
    };
    let mut any = false;
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_dir(ctx, &entry.path())?;
            any = true;
        }
    }
    Ok(any)
}

/// Write each of `lines` to `dir/file` with its own `write(2)` on one open descriptor
/// (cgroup v1 `devices.allow`/`deny` take one rule per write).
pub(crate) struct LineWriter<'a> {
    ctx: Ctx<'a>,
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl<'a> LineWriter<'a> {
    pub(crate) fn new(ctx: Ctx<'a>, dir: &Path, file: &str) -> Self {
        Self {
            ctx,
            path: dir.join(file),
            file: None,
        }
    }

    pub(crate) fn write(&mut self, line: &str) -> Result<(), CgroupError> {
        use std::io::Write;
        tracing::debug!(file = %self.path.display(), line, "cgroup write");
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .map_err(|e| self.ctx.io("open", &self.path, e))?;
                self.file.insert(f)
            }
        };
        file.write_all(line.as_bytes())
            .map_err(|e| self.ctx.io("write", &self.path, e))
    }
}

/// Every pid listed in `cgroup.procs` of `dir` and of its descendants. Missing dir → empty.
pub(crate) fn procs_recursive(
    ctx: Ctx<'_>,
    dir: &Path,
    out: &mut Vec<i32>,
) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    match std::fs::read_to_string(&procs) {
        Ok(s) => out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ctx.io("read", &procs, e)),
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ctx.io("list", dir, e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            procs_recursive(ctx, &entry.path(), out)?;
        }
    }
    Ok(())
}
