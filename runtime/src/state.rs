//! The state store: one directory per container under `--root`, holding `state.json`
//! (written atomically), the `exec.fifo` that blocks init until `start`, and a lock file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::ContainerCgroup;

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    #[error("container \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--pid-file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What hull remembers about a container between commands. Everything `delete --force`
/// needs is here, so it works from this file alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    /// Host pid of the container's init; 0 until it exists.
    pub pid: i32,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to detect pid reuse.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
    /// False while `create` is still setting the container up ("creating").
    pub ready: bool,
    pub cgroup: Option<ContainerCgroup>,
    /// The validated config the container was created from: `start`, `exec` and `delete`
    /// use it (hooks, process defaults) without reading the bundle again.
    pub config: oci_spec::runtime::Spec,
}

/// The directory of one container, locked for the lifetime of this value.
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
    _lock: File,
}

/// Take an exclusive `flock` on `file`, waiting for other hull commands on the same id.
fn lock_exclusive(file: &File, path: &Path) -> Result<(), StateError> {
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(io_err(path)(err));
        }
    }
}

/// Lock the directory itself (its own descriptor), so taking the lock never creates a
/// file in a directory another command may be deleting.
fn open_lock(dir: &Path) -> Result<File, StateError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(io_err(dir))?;
    lock_exclusive(&file, dir)?;
    Ok(file)
}

/// True if `dir` still names the directory `locked` refers to (not deleted, nor deleted and
/// created again under the same id while we waited for the lock).
fn still_there(dir: &Path, locked: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(dir), locked.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl SavedState {
    /// The hooks of one kind from the saved config.
    pub fn hooks(&self, kind: HookKind) -> &[oci_spec::runtime::Hook] {
        let Some(h) = self.config.hooks().as_ref() else {
            return &[];
        };
        let list = match kind {
            HookKind::Poststart => h.poststart(),
            HookKind::Poststop => h.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

/// The hook kinds run by commands after `create`.
#[derive(Debug, Clone, Copy)]
pub enum HookKind {
    Poststart,
    Poststop,
}

impl ContainerDir {
    /// Create the directory for a new container; fails if the id is taken.
    ///
    /// An id exists exactly when its directory holds `state.json` (what `state`, `list` and
    /// `start` see). A directory without it, once its lock is free, is what a `create`
    /// killed before saving its state left behind (its init died with it, by the
    /// parent-death signal): it is taken over, emptied, as a free id.
    pub fn create(root: &Path, id: &str) -> Result<Self, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(io_err(root))?;
        let path = root.join(id);
        // A few rounds at most: each one lost means another command removed the directory
        // between our mkdir and our lock.
        for _ in 0..8 {
            match fs::DirBuilder::new().mode(0o711).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            // A saved container: taken, said at once (no wait behind a command holding the
            // lock, e.g. a `start` in a slow startContainer hook). Checked again under it.
            if path.join(STATE_FILE).exists() {
                return Err(StateError::AlreadyExists(id.to_string()));
            }
            // Waits for a command working on the id (a create in progress holds the lock
            // until it has saved its state or removed the directory).
            let lock = match open_lock(&path) {
                Err(StateError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue
                }
                other => other?,
            };
            if !still_there(&path, &lock) {
                continue;
            }
            match fs::symlink_metadata(path.join(STATE_FILE)) {
                Ok(_) => return Err(StateError::AlreadyExists(id.to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            clear_dir(&path)?;
            return Ok(Self {
                id: id.to_string(),
                path,
                _lock: lock,
            });
        }
        Err(StateError::AlreadyExists(id.to_string()))
    }

    /// Open and lock an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<Self, StateError> {
        let path = root.join(id);
        if !path.is_dir() {
            return Err(StateError::NotExist(id.to_string()));
        }
        let lock = match open_lock(&path) {
            Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotExist(id.to_string()))
            }
            other => other?,
        };
        // A concurrent delete may have removed it (and a create made it anew) while we
        // waited for the lock.
        if !still_there(&path, &lock) {
            return Err(StateError::NotExist(id.to_string()));
        }
        Ok(Self {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Load `state.json`; `Ok(None)` when a crashed `create` never wrote it.
    pub fn load(&self) -> Result<Option<SavedState>, StateError> {
        let path = self.path.join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Write `state.json` atomically (temporary file, then rename).
    pub fn save(&self, state: &SavedState) -> Result<(), StateError> {
        let data = serde_json::to_vec(state).map_err(|source| StateError::Corrupt {
            path: self.path.join(STATE_FILE),
            source,
        })?;
        write_atomic(&self.path.join(STATE_FILE), &data, 0o600)
    }

    /// Remove the whole directory (consumes the lock with it).
    pub fn remove(self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }
}

/// Remove everything inside `dir` (the leftovers of a `create` that died), keeping `dir`.
fn clear_dir(dir: &Path) -> Result<(), StateError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let res = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(())
}

/// Ids of every container directory under `root`, sorted.
pub fn list_ids(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(root)(e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Write the `--pid-file` (the number only, no newline; atomically); errors name the flag.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), StateError> {
    write_atomic(path, pid.to_string().as_bytes(), 0o644).map_err(|e| match e {
        StateError::Io { source, .. } => StateError::PidFile {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Write `data` to `path` through a temporary sibling and a rename, so readers see either
/// the old or the new content, never a partial one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name no one can predict and that must not exist: a caller-chosen directory (a pid
    // file's) may hold a planted symlink, and threads of one process (a shim) write at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{seq}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> SavedState {
        SavedState {
            oci_version: "1.2.0".into(),
            id: id.into(),
            pid: 42,
            pid_start_time: 7,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00.000000001Z".into(),
            annotations: Default::default(),
            ready: true,
            cgroup: None,
            config: Default::default(),
        }
    }

    #[test]
    fn create_save_load_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ContainerDir::create(tmp.path(), "c1").unwrap();
        assert!(dir.load().unwrap().is_none());
        dir.save(&sample("c1")).unwrap();
        let loaded = dir.load().unwrap().unwrap();
        assert_eq!(loaded.pid, 42);
        assert_eq!(list_ids(tmp.path()).unwrap(), vec!["c1".to_string()]);
        dir.remove().unwrap();
        assert!(list_ids(tmp.path()).unwrap().is_empty());
    }

    #[test]
    fn duplicate_and_missing_ids_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let a = ContainerDir::create(tmp.path(), "dup").unwrap();
        a.save(&sample("dup")).unwrap();
        drop(a);
        let err = ContainerDir::create(tmp.path(), "dup").err().unwrap();
        assert_eq!(err.to_string(), "container \"dup\" already exists");
        let err = ContainerDir::open(tmp.path(), "nope").err().unwrap();
        assert_eq!(err.to_string(), "container \"nope\" does not exist");
    }

    #[test]
    fn a_directory_deleted_while_waiting_for_the_lock_does_not_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let path = ContainerDir::create(tmp.path(), "gone")
            .unwrap()
            .path
            .clone();
        // As a command that waited for the lock while another deleted the container.
        let locked = open_lock(&path).unwrap();
        fs::remove_dir_all(&path).unwrap();
        assert!(!still_there(&path, &locked));
        // Re-created under the same id meanwhile: a different directory.
        let again = ContainerDir::create(tmp.path(), "gone").unwrap();
        assert!(!still_there(&again.path, &locked));
        // Taking the lock creates nothing in the directory.
        assert_eq!(std::fs::read_dir(&again.path).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_left_without_state_is_a_free_id() {
        let tmp = tempfile::tempdir().unwrap();
        // What a `create` SIGKILLed before saving its state leaves.
        let left = tmp.path().join("early");
        fs::create_dir(&left).unwrap();
        fs::write(left.join(EXEC_FIFO), b"").unwrap();
        fs::create_dir(left.join("sub")).unwrap();
        assert!(matches!(
            ContainerDir::open(tmp.path(), "early").unwrap().load(),
            Ok(None)
        ));
        let dir = ContainerDir::create(tmp.path(), "early").expect("the id is free");
        assert_eq!(fs::read_dir(&dir.path).unwrap().count(), 0, "not emptied");
        dir.save(&sample("early")).unwrap();
        drop(dir);
        // With its state saved, the id is taken.
        let err = ContainerDir::create(tmp.path(), "early").err().unwrap();
        assert!(matches!(err, StateError::AlreadyExists(_)), "{err}");
    }

    #[test]
    fn a_create_in_progress_keeps_its_id() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ContainerDir::create(tmp.path(), "busy").unwrap();
        let root = tmp.path().to_path_buf();
        let second = std::thread::spawn(move || ContainerDir::create(&root, "busy").err());
        // The second create waits for the first one's lock ...
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!second.is_finished());
        // ... which saves its state: the id is taken.
        first.save(&sample("busy")).unwrap();
        drop(first);
        let err = second.join().unwrap();
        assert!(matches!(err, Some(StateError::AlreadyExists(_))), "{err:?}");
    }

    #[test]
    fn a_taken_id_is_refused_without_waiting_for_its_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ContainerDir::create(tmp.path(), "taken").unwrap();
        dir.save(&sample("taken")).unwrap();
        drop(dir);
        // Another command (say a `start` in a slow hook) holds the id's lock.
        let held = ContainerDir::open(tmp.path(), "taken").unwrap();
        let root = tmp.path().to_path_buf();
        let second = std::thread::spawn(move || ContainerDir::create(&root, "taken").err());
        let quick = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            second.is_finished()
        });
        drop(held);
        let err = second.join().unwrap();
        assert!(quick, "create waited for the lock of a saved container");
        assert!(matches!(err, Some(StateError::AlreadyExists(_))), "{err:?}");
    }

    #[test]
    fn corrupt_state_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ContainerDir::create(tmp.path(), "c").unwrap();
        fs::write(dir.path.join(STATE_FILE), b"{not json").unwrap();
        let err = dir.load().err().unwrap();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[test]
    fn pid_file_errors_name_the_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("missing").join("init.pid");
        let err = write_pid_file(&p, 7).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("--pid-file {}: ", p.display())),
            "{err}"
        );
        write_pid_file(&tmp.path().join("ok.pid"), 7).unwrap();
        assert_eq!(fs::read(tmp.path().join("ok.pid")).unwrap(), b"7");
    }

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pid");
        write_atomic(&p, b"123", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"123");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
