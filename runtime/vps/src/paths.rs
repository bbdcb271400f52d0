//! Where partitions live on the host. The defaults can be moved with environment variables
//! (`HULL_VPS_DIR`, `HULL_VPS_RUN`, `HULL_VPS_CACHE`), which the tests use to keep their
//! partitions apart from the host's.

use std::path::{Path, PathBuf};

/// The host directories of `hull vps`.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Persistent: one directory per partition.
    pub data: PathBuf,
    /// Runtime state (tmpfs): monitors' sockets and status; hull's container state root.
    pub run: PathBuf,
    /// Cached templates (debootstrap results).
    pub cache: PathBuf,
}

impl Default for Dirs {
    fn default() -> Self {
        let env = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Dirs {
            data: env("HULL_VPS_DIR", "/var/lib/hull/vps"),
            run: env("HULL_VPS_RUN", "/run/hull-vps"),
            cache: env("HULL_VPS_CACHE", "/var/cache/hull/vps-templates"),
        }
    }
}

/// The files of one partition.
#[derive(Debug, Clone)]
pub struct PartitionPaths {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub disk: PathBuf,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub console_log: PathBuf,
    pub run: PathBuf,
    pub socket: PathBuf,
    pub notify_dir: PathBuf,
    pub status: PathBuf,
}

impl Dirs {
    pub fn partition(&self, name: &str) -> PartitionPaths {
        let dir = self.data.join(name);
        let run = self.run.join(name);
        PartitionPaths {
            name: name.to_string(),
            config: dir.join("partition.toml"),
            disk: dir.join("disk.img"),
            root: dir.join("root"),
            bundle: dir.join("bundle"),
            console_log: dir.join("console.log"),
            socket: run.join("monitor.sock"),
            notify_dir: run.join("notify"),
            status: run.join("status.json"),
            run,
            dir,
        }
    }

    /// hull's `--root` for the partitions' containers.
    pub fn containers(&self) -> PathBuf {
        self.run.join("containers")
    }

    /// The container id of a partition.
    pub fn container_id(name: &str) -> String {
        format!("vps-{name}")
    }

    /// Names of every partition (directories holding a partition.toml), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.data)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("partition.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }
}

/// The notify socket's path inside the partition.
pub const NOTIFY_IN_PARTITION: &str = "/run/host/notify";

/// `path` made absolute against the current directory (bundles want absolute roots).
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
