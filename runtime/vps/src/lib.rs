//! `hull vps`: partitions a hoster sells as virtual private servers — long-lived system
//! containers (systemd as PID 1) with their own disk image, id range, limits and console,
//! each kept by a small monitor process. Built on `hull_runtime`'s library API.
//!
//! On the host: `/var/lib/hull/vps/NAME/` holds a partition's `partition.toml`, its disk
//! image `disk.img`, the image's mount point `root/`, the generated OCI bundle and the
//! console log; `/run/hull-vps/NAME/` its monitor's socket, pid and status (gone at
//! reboot, as the partitions are); the containers are in hull's state root
//! `/run/hull-vps/containers` as `vps-NAME`.

pub mod config;
pub mod disk;
pub mod idshift;
pub mod lxcfs;
pub mod manager;
pub mod monitor;
pub mod network;
pub mod paths;
pub mod spec;
pub mod stats;
pub mod template;

use std::path::PathBuf;

pub use manager::Manager;

/// Everything `hull vps` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what} {path:?}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("partition {0:?} does not exist (hull vps list shows them)")]
    NoSuch(String),
    #[error("partition {0:?} already exists")]
    Exists(String),
    #[error("partition {name:?} is {state}: {hint}")]
    WrongState {
        name: String,
        state: String,
        hint: String,
    },
    #[error("{program}: {detail}")]
    Tool { program: String, detail: String },
    #[error("monitor of partition {name:?}: {detail}")]
    Monitor { name: String, detail: String },
    #[error(transparent)]
    Runtime(#[from] Box<hull_runtime::container::Error>),
    #[error(transparent)]
    Userns(#[from] hull_runtime::userns_auto::UsernsError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Shift(#[from] idshift::IdShiftError),
}

impl From<hull_runtime::container::Error> for Error {
    fn from(e: hull_runtime::container::Error) -> Self {
        Error::Runtime(Box::new(e))
    }
}

/// An `Io` error maker for `map_err`.
pub(crate) fn io(
    what: impl Into<String>,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let (what, path) = (what.into(), path.into());
    move |source| Error::Io { what, path, source }
}
