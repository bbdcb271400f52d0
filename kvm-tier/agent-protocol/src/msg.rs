//! The messages of the protocol and the checks every decoded message passes.
//!
//! Control messages travel as JSON inside a control frame: the process description carries the
//! OCI `Process` object through unchanged, which a hand-rolled binary encoding would have to
//! re-invent. serde rejects unknown fields, duplicate fields, wrong types, bad UTF-8 and trailing
//! bytes; [`HostMsg::validate`] and [`GuestMsg::validate`] then check ranges and sizes.
//! Stdio bytes never go through JSON: they are data frames (see [`crate::frame`]).

use serde::{Deserialize, Serialize};

/// Highest signal number Linux delivers (`SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;
/// Longest error message the peer may send, in bytes.
pub const MAX_ERROR_LEN: usize = 4096;
/// Most pids one `Pids` answer may carry.
pub const MAX_PIDS: usize = 16 * 1024;
/// Most argv / env entries in a process description.
pub const MAX_ARGS: usize = 4096;
/// Longest single string (argument, env entry, path) in a process description.
pub const MAX_STRING_LEN: usize = 64 * 1024;
/// Most supplementary groups (the kernel's `NGROUPS_MAX` is larger; nobody needs that many).
pub const MAX_GROUPS: usize = 1024;
/// Longest software name in a hello.
pub const MAX_SOFTWARE_LEN: usize = 128;
/// The longest container state JSON a start request may carry.
pub const MAX_STATE_JSON: usize = 64 * 1024;

/// A rule a decoded (or to-be-encoded) message broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("signal {0} is out of range 1..={MAX_SIGNAL}")]
    Signal(i32),
    #[error("exit code {0} is out of range 0..=255")]
    ExitCode(i32),
    #[error("window size {rows}x{cols}: rows and columns must both be at least 1")]
    WindowSize { rows: u16, cols: u16 },
    #[error("pid 0 is not a process")]
    Pid,
    #[error("{field}: {len} entries, at most {max} allowed")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field}: {len} bytes, at most {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} contains a NUL byte")]
    Nul { field: &'static str },
    #[error("{field} must be an absolute path, got {value:?}")]
    NotAbsolute { field: &'static str, value: String },
    #[error("args must name at least the program")]
    NoArgs,
    #[error("env entry {0:?} has no '='")]
    EnvWithoutEquals(String),
    #[error("rlimit {kind:?}: soft limit {soft} above hard limit {hard}")]
    RlimitSoftAboveHard {
        kind: RlimitType,
        soft: u64,
        hard: u64,
    },
    #[error("rlimit {0:?} given twice")]
    DuplicateRlimit(RlimitType),
    #[error("the OCI process, config and seccomp filter must be JSON objects")]
    OciNotObject,
    #[error("empty data frame")]
    EmptyData,
}

/// A protocol version; peers must have the same `major`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The first message each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub version: Version,
    /// Free text naming the sender, e.g. `hull-agent 0.1.0`; for logs only.
    pub software: String,
}

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ExitStatus {
    Exited { code: i32 },
    Signaled { signal: i32 },
}

impl ExitStatus {
    /// The status a shell (and containerd) reports: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Exited { code } => code,
            ExitStatus::Signaled { signal } => 128 + signal,
        }
    }
}

/// Which process of the container a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The container's main process: when it ends, the guest powers off.
    Init,
    /// A `hull exec` process.
    Exec,
}

/// The resource of an rlimit, named as in the OCI runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RlimitType {
    #[serde(rename = "RLIMIT_AS")]
    As,
    #[serde(rename = "RLIMIT_CORE")]
    Core,
    #[serde(rename = "RLIMIT_CPU")]
    Cpu,
    #[serde(rename = "RLIMIT_DATA")]
    Data,
    #[serde(rename = "RLIMIT_FSIZE")]
    Fsize,
    #[serde(rename = "RLIMIT_LOCKS")]
    Locks,
    #[serde(rename = "RLIMIT_MEMLOCK")]
    Memlock,
    #[serde(rename = "RLIMIT_MSGQUEUE")]
    Msgqueue,
    #[serde(rename = "RLIMIT_NICE")]
    Nice,
    #[serde(rename = "RLIMIT_NOFILE")]
    Nofile,
    #[serde(rename = "RLIMIT_NPROC")]
    Nproc,
    #[serde(rename = "RLIMIT_RSS")]
    Rss,
    #[serde(rename = "RLIMIT_RTPRIO")]
    Rtprio,
    #[serde(rename = "RLIMIT_RTTIME")]
    Rttime,
    #[serde(rename = "RLIMIT_SIGPENDING")]
    Sigpending,
    #[serde(rename = "RLIMIT_STACK")]
    Stack,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: RlimitType,
    pub soft: u64,
    pub hard: u64,
}

/// The process a session starts, already reduced to what a plain launcher needs; the full OCI
/// `Process` object rides along in `oci` for the container-side set-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub console_size: Option<WindowSize>,
    /// Root directory to enter (chroot) before exec; `None` = the agent's own root.
    #[serde(default)]
    pub root: Option<String>,
    /// The OCI runtime-spec `Process` object, untouched.
    #[serde(default)]
    pub oci: Option<serde_json::Value>,
    /// The container's whole OCI config (role `init` of a VM container): the agent sets the
    /// container up inside the guest from it (mounts, namespaces, hostname, masked paths).
    #[serde(default)]
    pub container: Option<serde_json::Value>,
    /// The container's seccomp filter, compiled by the host (hull-inside's `Compiled`).
    #[serde(default)]
    pub seccomp: Option<serde_json::Value>,
    /// The container's state JSON (for hooks and a seccomp agent).
    #[serde(default)]
    pub state_json: Option<String>,
}

impl ProcessSpec {
    /// A spec that runs `args` as root in `/` with a plain `PATH`.
    pub fn simple<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        ProcessSpec {
            args: args.into_iter().map(Into::into).collect(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            rlimits: Vec::new(),
            terminal: false,
            console_size: None,
            root: None,
            oci: None,
            container: None,
            seccomp: None,
            state_json: None,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.args.is_empty() {
            return Err(ValidationError::NoArgs);
        }
        count("args", self.args.len(), MAX_ARGS)?;
        count("env", self.env.len(), MAX_ARGS)?;
        count("additional_gids", self.additional_gids.len(), MAX_GROUPS)?;
        count("rlimits", self.rlimits.len(), 64)?;
        for a in &self.args {
            c_string("args", a)?;
        }
        for e in &self.env {
            c_string("env", e)?;
            if !e.contains('=') {
                return Err(ValidationError::EnvWithoutEquals(e.clone()));
            }
        }
        absolute("cwd", &self.cwd)?;
        if let Some(root) = &self.root {
            absolute("root", root)?;
        }
        for (i, r) in self.rlimits.iter().enumerate() {
            if r.soft > r.hard {
                return Err(ValidationError::RlimitSoftAboveHard {
                    kind: r.kind,
                    soft: r.soft,
                    hard: r.hard,
                });
            }
            if self.rlimits[..i].iter().any(|o| o.kind == r.kind) {
                return Err(ValidationError::DuplicateRlimit(r.kind));
            }
        }
        if let Some(ws) = &self.console_size {
            window(ws)?;
        }
        for v in [&self.oci, &self.container, &self.seccomp]
            .into_iter()
            .flatten()
        {
            if !v.is_object() {
                return Err(ValidationError::OciNotObject);
            }
        }
        if let Some(s) = &self.state_json {
            length("state_json", s, MAX_STATE_JSON)?;
        }
        Ok(())
    }
}

/// Host → guest. Everything but `Stdin` is a control frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMsg {
    Hello(Hello),
    /// Start the session's process (at most once per connection).
    Start {
        role: Role,
        process: Box<ProcessSpec>,
    },
    /// List the pids of all workload processes, then close.
    Ps,
    /// Deliver a signal to the session's process.
    Signal {
        signal: i32,
    },
    /// New terminal size (terminal sessions only).
    Resize(WindowSize),
    /// No more stdin: the process sees EOF.
    CloseStdin,
    /// Power the guest off.
    Shutdown,
    /// Bytes for the process's stdin (a data frame, stream 0).
    #[serde(skip)]
    Stdin(Vec<u8>),
}

/// Guest → host. Everything but `Stdout`/`Stderr` is a control frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestMsg {
    Hello(Hello),
    /// The session's process runs with this pid (in the guest).
    Started {
        pid: u32,
    },
    /// The session's process ended and its output is flushed; the agent closes next.
    Exit {
        status: ExitStatus,
    },
    /// Answer to `Ps`.
    Pids {
        pids: Vec<u32>,
    },
    /// Answer to `Shutdown`.
    ShuttingDown,
    /// Something went wrong; if `fatal`, the agent closes the connection next.
    Error {
        message: String,
        fatal: bool,
    },
    /// Process output (a data frame, stream 1); in terminal mode all output comes here.
    #[serde(skip)]
    Stdout(Vec<u8>),
    /// Process error output (a data frame, stream 2).
    #[serde(skip)]
    Stderr(Vec<u8>),
}

impl HostMsg {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            HostMsg::Hello(h) => hello(h),
            HostMsg::Start { process, .. } => process.validate(),
            HostMsg::Signal { signal } => sig(*signal),
            HostMsg::Resize(ws) => window(ws),
            HostMsg::Stdin(d) => data(d),
            HostMsg::Ps | HostMsg::CloseStdin | HostMsg::Shutdown => Ok(()),
        }
    }
}

impl GuestMsg {
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            GuestMsg::Hello(h) => hello(h),
            GuestMsg::Started { pid } => nonzero_pid(*pid),
            GuestMsg::Exit { status } => match *status {
                ExitStatus::Exited { code } if !(0..=255).contains(&code) => {
                    Err(ValidationError::ExitCode(code))
                }
                ExitStatus::Signaled { signal } => sig(signal),
                ExitStatus::Exited { .. } => Ok(()),
            },
            GuestMsg::Pids { pids } => {
                count("pids", pids.len(), MAX_PIDS)?;
                pids.iter().try_for_each(|p| nonzero_pid(*p))
            }
            GuestMsg::Error { message, .. } => length("message", message, MAX_ERROR_LEN),
            GuestMsg::Stdout(d) | GuestMsg::Stderr(d) => data(d),
            GuestMsg::ShuttingDown => Ok(()),
        }
    }
}

fn hello(h: &Hello) -> Result<(), ValidationError> {
    length("software", &h.software, MAX_SOFTWARE_LEN)
}

fn sig(s: i32) -> Result<(), ValidationError> {
    if (1..=MAX_SIGNAL).contains(&s) {
        Ok(())
    } else {
        Err(ValidationError::Signal(s))
    }
}

fn window(ws: &WindowSize) -> Result<(), ValidationError> {
    if ws.rows == 0 || ws.cols == 0 {
        return Err(ValidationError::WindowSize {
            rows: ws.rows,
            cols: ws.cols,
        });
    }
    Ok(())
}

fn nonzero_pid(p: u32) -> Result<(), ValidationError> {
    if p == 0 {
        Err(ValidationError::Pid)
    } else {
        Ok(())
    }
}

fn data(d: &[u8]) -> Result<(), ValidationError> {
    if d.is_empty() {
        Err(ValidationError::EmptyData)
    } else {
        Ok(())
    }
}

fn count(field: &'static str, len: usize, max: usize) -> Result<(), ValidationError> {
    if len > max {
        Err(ValidationError::TooMany { field, len, max })
    } else {
        Ok(())
    }
}

fn length(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.len() > max {
        Err(ValidationError::TooLong {
            field,
            len: s.len(),
            max,
        })
    } else {
        Ok(())
    }
}

/// A string that will become a C string for execve.
fn c_string(field: &'static str, s: &str) -> Result<(), ValidationError> {
    length(field, s, MAX_STRING_LEN)?;
    if s.contains('\0') {
        return Err(ValidationError::Nul { field });
    }
    Ok(())
}

fn absolute(field: &'static str, s: &str) -> Result<(), ValidationError> {
    c_string(field, s)?;
    if !s.starts_with('/') {
        return Err(ValidationError::NotAbsolute {
            field,
            value: s.to_owned(),
        });
    }
    Ok(())
}
