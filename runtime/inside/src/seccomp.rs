//! Loading `linux.seccomp` inside the container: the filter arrives precompiled (a
//! classic-BPF program, compiled with libseccomp on the host by `hull_runtime::seccomp`),
//! so nothing here links libseccomp.
//!
//! [`load`] installs the program with `seccomp(SECCOMP_SET_MODE_FILTER)`, as the last step
//! before `execve` (or, when `noNewPrivileges` is false, just before the user switch drops
//! `CAP_SYS_ADMIN`, which loading a filter without no_new_privs needs — runc's order).
//!
//! `SCMP_ACT_NOTIFY`: the listener's AF_UNIX socket (`listenerPath`, `@name` for an abstract
//! one) is connected by [`prepare_compiled`] while the host path is still reachable (before
//! the pivot, as the container's root before the user switch); after loading, one message is
//! sent on it whose payload is runc's `ContainerProcessState` JSON (`ociVersion`,
//! `fds: ["seccompFd"]`, `pid`, `metadata` = `listenerMetadata`, `state`) and whose
//! SCM_RIGHTS carries the notify descriptor — the protocol of runc's seccomp agents.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The name runc's agents look for in `ContainerProcessState.fds`.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

#[derive(Debug, thiserror::Error)]
pub enum SeccompLoadError {
    /// A system call failed.
    #[error("{what}: {errno}")]
    Sys { what: String, errno: nix::Error },
    /// Talking to the seccomp agent at `listenerPath` failed.
    #[error("linux.seccomp.listenerPath {path:?}: {what}: {source}")]
    Listener {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, SeccompLoadError>;

/// `listenerPath` and `listenerMetadata` of a profile that uses `SCMP_ACT_NOTIFY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub path: PathBuf,
    pub metadata: Option<String>,
}

/// A compiled filter in the form that crosses processes (from `create` to init) and is
/// kept in the cache: the BPF program, the `seccomp(2)` flags and the notify listener.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compiled {
    /// `sock_filter` instructions packed as `code | jt << 16 | jf << 24 | k << 32`.
    program: Vec<u64>,
    flags: u64,
    listener_path: Option<PathBuf>,
    listener_metadata: Option<String>,
}

impl Compiled {
    /// Pack a program for the trip to init (and the cache).
    pub fn new(
        program: &[libc::sock_filter],
        flags: libc::c_ulong,
        listener: Option<&Listener>,
    ) -> Compiled {
        let pack = |i: &libc::sock_filter| {
            u64::from(i.code) | u64::from(i.jt) << 16 | u64::from(i.jf) << 24 | u64::from(i.k) << 32
        };
        Compiled {
            program: program.iter().map(pack).collect(),
            flags,
            listener_path: listener.map(|l| l.path.clone()),
            listener_metadata: listener.and_then(|l| l.metadata.clone()),
        }
    }
}

/// A filter ready to load: the unpacked BPF program, its `seccomp(2)` flags and listener.
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
    listener: Option<Listener>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .field("listener", &self.listener)
            .finish()
    }
}

impl Filter {
    /// The filter of a [`Compiled`] program.
    pub fn from_compiled(c: Compiled) -> Filter {
        let unpack = |w: &u64| libc::sock_filter {
            code: *w as u16,
            jt: (*w >> 16) as u8,
            jf: (*w >> 24) as u8,
            k: (*w >> 32) as u32,
        };
        Filter {
            program: c.program.iter().map(unpack).collect(),
            flags: c.flags as libc::c_ulong,
            listener: c.listener_path.map(|path| Listener {
                path,
                metadata: c.listener_metadata,
            }),
        }
    }

    pub fn to_compiled(&self) -> Compiled {
        Compiled::new(&self.program, self.flags, self.listener.as_ref())
    }
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }
    /// The `seccomp(2)` flags `load` passes (`SECCOMP_FILTER_FLAG_*`).
    pub fn flags(&self) -> libc::c_ulong {
        self.flags
    }
    /// Whether the filter has an `SCMP_ACT_NOTIFY` rule (and so a listener).
    pub fn listener(&self) -> Option<&Listener> {
        self.listener.as_ref()
    }
}

/// Install `filter` on the calling thread. Returns the notify descriptor when the filter has
/// an `SCMP_ACT_NOTIFY` rule. Without no_new_privs this needs `CAP_SYS_ADMIN`.
/// Makes exactly one system call on success (async-signal-safe: usable after `fork`).
pub fn load(filter: &Filter) -> Result<Option<OwnedFd>> {
    let prog = libc::sock_fprog {
        len: filter.program.len() as libc::c_ushort,
        filter: filter.program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to `len` instructions that outlive the call; the kernel copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            filter.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        let errno = nix::Error::last();
        let hint = match errno {
            nix::Error::EACCES => " (loading a filter without noNewPrivileges needs CAP_SYS_ADMIN)",
            _ => "",
        };
        return Err(SeccompLoadError::Sys {
            what: format!("loading the seccomp filter{hint}"),
            errno,
        });
    }
    if filter.flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER the kernel returns a new descriptor (close-on-exec).
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as i32) }));
    }
    Ok(None)
}

/// Connect to a listener: a path, or `@name` for an abstract socket (of init's network
/// namespace).
pub fn connect_listener(path: &Path) -> Result<UnixStream> {
    let err = |what| {
        let path = path.to_path_buf();
        move |source| SeccompLoadError::Listener { path, what, source }
    };
    let bytes = path.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
            .map_err(err("abstract socket name"))?;
        return UnixStream::connect_addr(&addr).map_err(err("connecting to the seccomp agent"));
    }
    UnixStream::connect(path).map_err(err("connecting to the seccomp agent"))
}

/// runc's `ContainerProcessState` for the agent, from the runtime state JSON the parent sent
/// for the hooks (`id`, host `pid`, `bundle`, `annotations`); the status is `running`.
pub fn process_state_json(state_json: &str, oci_version: &str, metadata: Option<&str>) -> String {
    let mut state: serde_json::Value =
        serde_json::from_str(state_json).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(o) = state.as_object_mut() {
        o.insert("status".into(), "running".into());
        o.entry("ociVersion").or_insert_with(|| oci_version.into());
        if o.get("annotations")
            .is_some_and(|a| a.as_object().is_some_and(|m| m.is_empty()))
        {
            o.remove("annotations");
        }
    }
    let pid = state.get("pid").cloned().unwrap_or(0.into());
    let mut doc = serde_json::json!({
        "ociVersion": oci_version,
        "fds": [SECCOMP_FD_NAME],
        "pid": pid,
        "state": state,
    });
    if let Some(m) = metadata.filter(|m| !m.is_empty()) {
        doc["metadata"] = m.into();
    }
    doc.to_string()
}

/// Send the notify descriptor and the process state to the agent, in one message.
pub fn send_to_listener(sock: &UnixStream, path: &Path, state: &str, fd: &OwnedFd) -> Result<()> {
    crate::terminal::send_fd(sock.as_fd(), state, fd.as_fd()).map_err(|e| {
        SeccompLoadError::Listener {
            path: path.to_path_buf(),
            what: "sending the notify descriptor",
            source: std::io::Error::other(e.to_string()),
        }
    })
}

/// A filter compiled for init, with its agent connection when it notifies.
#[derive(Debug)]
pub struct Prepared {
    filter: Filter,
    agent: Option<UnixStream>,
    oci_version: String,
}

/// Make a filter compiled by the parent ready to load: connect to its agent (a profile that
/// uses `SCMP_ACT_NOTIFY`). Call it before the pivot (the listener's path is a host path)
/// and before reporting Ready.
pub fn prepare_compiled(compiled: Compiled, oci_version: &str) -> Result<Prepared> {
    let filter = Filter::from_compiled(compiled);
    tracing::debug!("seccomp: {filter:?}");
    let agent = match filter.listener() {
        Some(l) => Some(connect_listener(&l.path)?),
        None => None,
    };
    Ok(Prepared {
        filter,
        agent,
        oci_version: oci_version.to_string(),
    })
}

impl Prepared {
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Load the filter and, when it notifies, hand its descriptor and the process state
    /// (built from `state_json`, the runtime state of the container) to the agent.
    pub fn activate(self, state_json: &str) -> Result<()> {
        let notify = load(&self.filter)?;
        if let (Some(fd), Some(sock), Some(l)) = (notify, &self.agent, self.filter.listener()) {
            let state = process_state_json(state_json, &self.oci_version, l.metadata.as_deref());
            send_to_listener(sock, &l.path, &state, &fd)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn process_state_is_runcs_container_process_state() {
        let s = process_state_json(
            r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":4242,"bundle":"/b","annotations":{}}"#,
            "1.0.2",
            Some("meta"),
        );
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(
            v,
            json!({"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": 4242, "metadata": "meta",
                   "state": {"ociVersion": "1.0.2", "id": "c1", "status": "running", "pid": 4242,
                             "bundle": "/b"}})
        );
        let none = process_state_json("{}", "1.0.2", None);
        assert!(!none.contains("metadata"), "{none}");
    }
}
