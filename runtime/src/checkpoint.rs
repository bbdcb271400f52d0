//! `checkpoint` and `restore` with CRIU (the `criu` binary, as runc's `--criu`).
//!
//! Every call first runs `criu check`: when CRIU cannot work on this kernel the command fails
//! before touching the container, with an error that names the kernel and what CRIU
//! reported (e.g. CRIU 3.17 on Linux 6.18 stops at "vdso: Unexpected rt vDSO area
//! bounds": the kernel's `[vvar_vclock]` mapping is unknown to it).
//!
//! * `checkpoint` dumps the container's process tree (`criu dump --tree <init>`) into
//!   `--image-path` with the container's bind mounts declared external, saves the targets of
//!   init's fds 0-2 as `descriptors.json` (as runc does), and unless `--leave-running` (or
//!   `--pre-dump`) removes the container, whose processes CRIU has ended.
//! * `restore` creates the container's state dir from the bundle, has CRIU recreate the tree
//!   from the images as hull's child (`--restore-detached --restore-sibling`), maps the bind
//!   mounts to their sources and init's pipes/sockets on fds 0-2 to hull's own fds 0-2
//!   (`--inherit-fd`), records the restored init and its cgroup, writes `--pid-file`, and
//!   unless `--detach` waits for the container like `run` does. Restoring a container with
//!   a terminal is not supported yet.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::Pid;

use crate::cgroups::ContainerCgroup;
use crate::container::{self, status_of, Error, Runtime, Status};
use crate::process::process_start_time;
use crate::state::{self, ContainerDir, SavedState};

/// The file (in the image dir) holding the targets of init's fds 0-2 at checkpoint time.
pub const DESCRIPTORS_FILE: &str = "descriptors.json";
const DUMP_LOG: &str = "dump.log";
const RESTORE_LOG: &str = "restore.log";
const RESTORE_PIDFILE: &str = "restore.pid";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Runtime(Box<Error>),
    #[error(
        "{op}: the criu binary {criu:?} was not found: install CRIU (Debian package `criu`) \
         or name it with --criu"
    )]
    CriuMissing { op: &'static str, criu: PathBuf },
    #[error("{op}: CRIU cannot work on this kernel ({kernel}): `criu check` failed: {reason}")]
    CriuUnusable {
        op: &'static str,
        kernel: String,
        reason: String,
    },
    #[error("{op}: `criu {action}` failed ({status}); the end of its log {log:?}:\n{tail}")]
    Criu {
        op: &'static str,
        action: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{op}: {what}: {source}")]
    Io {
        op: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {what}")]
    Unsupported { op: &'static str, what: String },
}

impl From<Error> for CheckpointError {
    fn from(e: Error) -> Self {
        CheckpointError::Runtime(Box::new(e))
    }
}

impl CheckpointError {
    /// The error as the CLI reports it (the runtime's own errors keep their form, which
    /// carries the strings containerd matches).
    pub fn into_runtime_error(self) -> Error {
        match self {
            CheckpointError::Runtime(e) => *e,
            other => Error::Usage(other.to_string()),
        }
    }
}

/// `--manage-cgroups-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupsMode {
    #[default]
    Soft,
    Full,
    Strict,
    Ignore,
}

impl CgroupsMode {
    fn as_str(self) -> &'static str {
        match self {
            CgroupsMode::Soft => "soft",
            CgroupsMode::Full => "full",
            CgroupsMode::Strict => "strict",
            CgroupsMode::Ignore => "ignore",
        }
    }
}

/// Options both commands share (runc's names).
#[derive(Debug, Clone, Default)]
pub struct CriuOptions {
    /// The criu binary (`--criu`, default `criu` on PATH).
    pub criu: PathBuf,
    pub image_path: PathBuf,
    /// Where CRIU writes its logs and temporary files (default: the image path).
    pub work_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub auto_dedup: bool,
    pub manage_cgroups_mode: CgroupsMode,
    /// Namespaces (e.g. `network`) CRIU should leave empty instead of dumping/restoring.
    pub empty_ns: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    pub criu: CriuOptions,
    pub parent_path: Option<PathBuf>,
    pub leave_running: bool,
    pub pre_dump: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub criu: CriuOptions,
    pub bundle: PathBuf,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    /// containerd's `-no-subreaper`: do not become a subreaper while waiting.
    pub no_subreaper: bool,
    pub no_pivot: bool,
    pub lsm_profile: Option<String>,
    pub lsm_mount_context: Option<String>,
}

/// The kernel release (`uname -r`).
fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown kernel".into())
}

/// What `criu check` printed, reduced to its error messages ("Error (file:line): msg" →
/// "msg"), without the generic "exited, status=1" lines of its probes.
pub fn check_failure_reason(output: &str) -> String {
    let mut msgs: Vec<String> = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        let msg = match line.strip_prefix("Error (") {
            Some(rest) => rest.split_once("): ").map(|(_, m)| m).unwrap_or(rest),
            None => continue,
        };
        if msg.starts_with("exited, status=") || msgs.iter().any(|m| m == msg) {
            continue;
        }
        msgs.push(msg.to_string());
    }
    if msgs.is_empty() {
        let last = output
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no output");
        return last.to_string();
    }
    msgs.truncate(4);
    msgs.join("; ")
}

/// `criu check`: Ok when CRIU can work here, else why not.
pub fn criu_check(op: &'static str, criu: &Path) -> Result<(), CheckpointError> {
    let out = Command::new(criu)
        .arg("check")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CheckpointError::CriuMissing {
                op,
                criu: criu.to_path_buf(),
            },
            _ => CheckpointError::Io {
                op,
                what: format!("running {criu:?} check"),
                source: e,
            },
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Err(CheckpointError::CriuUnusable {
        op,
        kernel: kernel_release(),
        reason: check_failure_reason(&text),
    })
}

fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// `--ext-mount-map` pairs: bind mounts (dump: dest→dest; restore: dest→source) and masked
/// files (covered with /dev/null).
pub fn external_mounts(spec: &hull_specs::Spec, restore: bool) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if !is_bind(m) {
            continue;
        }
        let dest = m.destination().to_string_lossy().into_owned();
        let src = match (restore, m.source()) {
            (true, Some(s)) => s.to_string_lossy().into_owned(),
            _ => dest.clone(),
        };
        v.push((dest, src));
    }
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten() {
            // Masked directories get a tmpfs, which CRIU dumps; files get /dev/null binds.
            if p.starts_with("/proc/") && !p.ends_with('/') && !masked_is_dir(p) {
                let src = if restore { "/dev/null" } else { p.as_str() };
                v.push((p.clone(), src.to_string()));
            }
        }
    }
    v
}

/// Whether masked path `p` is a directory on the host's /proc (as in the container's).
fn masked_is_dir(p: &str) -> bool {
    std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

fn push_common(args: &mut Vec<String>, o: &CriuOptions, log: &str) {
    let work = o.work_path.clone().unwrap_or_else(|| o.image_path.clone());
    args.extend([
        "--images-dir".into(),
        o.image_path.display().to_string(),
        "--work-dir".into(),
        work.display().to_string(),
        "--log-file".into(),
        log.into(),
        "-v4".into(),
        format!("--manage-cgroups={}", o.manage_cgroups_mode.as_str()),
    ]);
    for (flag, on) in [
        ("--tcp-established", o.tcp_established),
        ("--ext-unix-sk", o.ext_unix_sk),
        ("--shell-job", o.shell_job),
        ("--file-locks", o.file_locks),
        ("--auto-dedup", o.auto_dedup),
    ] {
        if on {
            args.push(flag.into());
        }
    }
}

/// The argv (after the binary) of `criu dump`/`criu pre-dump` for init `pid`.
pub fn dump_args(
    opts: &CheckpointOptions,
    pid: i32,
    rootfs: &Path,
    spec: &hull_specs::Spec,
) -> Vec<String> {
    let mut a = vec![
        if opts.pre_dump { "pre-dump" } else { "dump" }.to_string(),
        "--tree".into(),
        pid.to_string(),
        "--root".into(),
        rootfs.display().to_string(),
    ];
    push_common(&mut a, &opts.criu, DUMP_LOG);
    if opts.leave_running && !opts.pre_dump {
        a.push("--leave-running".into());
    }
    if let Some(p) = &opts.parent_path {
        a.extend(["--prev-images-dir".into(), p.display().to_string()]);
    }
    if opts.pre_dump {
        a.push("--track-mem".into());
    }
    for (dest, src) in external_mounts(spec, false) {
        a.extend(["--ext-mount-map".into(), format!("{dest}:{src}")]);
    }
    a
}

/// The argv (after the binary) of `criu restore`; `inherit` are `--inherit-fd` values.
pub fn restore_args(
    opts: &RestoreOptions,
    rootfs: &Path,
    spec: &hull_specs::Spec,
    pidfile: &Path,
    inherit: &[String],
) -> Vec<String> {
    let mut a = vec![
        "restore".to_string(),
        "--root".into(),
        rootfs.display().to_string(),
        "--restore-detached".into(),
        "--restore-sibling".into(),
        "--pidfile".into(),
        pidfile.display().to_string(),
    ];
    push_common(&mut a, &opts.criu, RESTORE_LOG);
    for (dest, src) in external_mounts(spec, true) {
        a.extend(["--ext-mount-map".into(), format!("{dest}:{src}")]);
    }
    for i in inherit {
        a.extend(["--inherit-fd".into(), i.clone()]);
    }
    if let Some(p) = &opts.lsm_profile {
        a.extend(["--lsm-profile".into(), p.clone()]);
    }
    if let Some(c) = &opts.lsm_mount_context {
        a.extend(["--lsm-mount-context".into(), c.clone()]);
    }
    a
}

/// `--inherit-fd fd[N]:RES` for each of init's fds 0-2 that was a pipe or socket (not a
/// path CRIU can reopen): hull's fd N takes its place.
pub fn inherit_fds(descriptors: &[String]) -> Vec<String> {
    descriptors
        .iter()
        .enumerate()
        .take(3)
        .filter(|(_, d)| !d.starts_with('/') && !d.is_empty())
        .map(|(i, d)| format!("fd[{i}]:{d}"))
        .collect()
}

/// Namespaces joined by path that CRIU would have to be told about: not supported yet.
fn refuse_joined_namespaces(
    op: &'static str,
    spec: &hull_specs::Spec,
) -> Result<(), CheckpointError> {
    let joined: Vec<String> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .filter(|n| n.path().is_some())
        .map(|n| format!("{:?}", n.typ()).to_lowercase())
        .collect();
    if joined.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Unsupported {
            op,
            what: format!(
                "the container joins existing namespaces ({}): checkpoint/restore of such \
                 containers is not supported yet",
                joined.join(", ")
            ),
        })
    }
}

/// The last lines of a CRIU log.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn run_criu(
    op: &'static str,
    action: &'static str,
    criu: &Path,
    args: &[String],
    log: PathBuf,
    inherit_stdio: bool,
) -> Result<(), CheckpointError> {
    let mut cmd = Command::new(criu);
    cmd.args(args);
    if !inherit_stdio {
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
    }
    let status = cmd.status().map_err(|e| CheckpointError::Io {
        op,
        what: format!("running {criu:?} {action}"),
        source: e,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(CheckpointError::Criu {
        op,
        action,
        status: status.to_string(),
        tail: log_tail(&log),
        log,
    })
}

fn mkdir(op: &'static str, dir: &Path) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| CheckpointError::Io {
        op,
        what: format!("creating {dir:?}"),
        source: e,
    })
}

/// `checkpoint ID`.
pub fn checkpoint(rt: &Runtime, id: &str, opts: &CheckpointOptions) -> Result<(), CheckpointError> {
    const OP: &str = "checkpoint";
    hull_specs::validate_container_id(id).map_err(Error::from)?;
    let dir = ContainerDir::open(&rt.root, id).map_err(Error::from)?;
    let saved = container::load_state(&dir)?;
    let status = status_of(&dir, &saved);
    match status {
        Status::Running => {}
        Status::Stopped => return Err(Error::NotRunning.into()),
        status => {
            return Err(Error::WrongStatus {
                op: OP,
                id: id.into(),
                status,
            }
            .into())
        }
    }
    if opts.leave_running && opts.pre_dump {
        return Err(CheckpointError::Unsupported {
            op: OP,
            what: "--pre-dump always leaves the container running: drop --leave-running".into(),
        });
    }
    refuse_joined_namespaces(OP, &saved.config)?;
    criu_check(OP, &opts.criu.criu)?;

    mkdir(OP, &opts.criu.image_path)?;
    let work = opts
        .criu
        .work_path
        .clone()
        .unwrap_or_else(|| opts.criu.image_path.clone());
    mkdir(OP, &work)?;
    let descriptors: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{}/fd/{fd}", saved.pid))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let desc_path = opts.criu.image_path.join(DESCRIPTORS_FILE);
    let json = serde_json::to_vec(&descriptors).unwrap_or_default();
    state::write_atomic(&desc_path, &json, 0o600).map_err(Error::from)?;

    let args = dump_args(opts, saved.pid, &saved.rootfs, &saved.config);
    tracing::debug!(?args, "criu");
    let action = if opts.pre_dump { "pre-dump" } else { "dump" };
    run_criu(
        OP,
        action,
        &opts.criu.criu,
        &args,
        work.join(DUMP_LOG),
        false,
    )?;
    if !opts.leave_running && !opts.pre_dump {
        drop(dir);
        rt.delete(id, true)?;
    }
    Ok(())
}

/// The cgroup `pid` is in: its memory (v1) or unified path.
fn cgroup_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut unified = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    unified
}

/// `restore ID`: returns the exit status for the CLI (0 with `--detach`).
pub fn restore(rt: &Runtime, id: &str, opts: &RestoreOptions) -> Result<i32, CheckpointError> {
    const OP: &str = "restore";
    hull_specs::validate_container_id(id).map_err(Error::from)?;
    let bundle = hull_specs::load_bundle(&opts.bundle).map_err(Error::from)?;
    let spec = &bundle.spec;
    crate::container::refuse_vm(spec, "restore")?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal || opts.console_socket.is_some() {
        return Err(CheckpointError::Unsupported {
            op: OP,
            what: "restoring a container with a terminal (--console-socket) is not supported yet"
                .into(),
        });
    }
    refuse_joined_namespaces(OP, spec)?;
    // CRIU puts the restored tasks back into the cgroups they were dumped from
    // (--manage-cgroups); that must be this container's cgroup, which is checked below.
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let expected_cgroup = ContainerCgroup::resolve(
        cgroups_path.as_ref().and_then(|p| p.to_str()),
        id,
        rt.systemd_cgroup,
    )
    .map_err(Error::from)?;
    criu_check(OP, &opts.criu.criu)?;
    let desc_path = opts.criu.image_path.join(DESCRIPTORS_FILE);
    let descriptors: Vec<String> = match std::fs::read(&desc_path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| CheckpointError::Unsupported {
            op: OP,
            what: format!("{desc_path:?} is not valid: {e}"),
        })?,
        Err(e) => {
            return Err(CheckpointError::Io {
                op: OP,
                what: format!("reading {desc_path:?} (is --image-path a hull checkpoint?)"),
                source: e,
            })
        }
    };
    let work = opts
        .criu
        .work_path
        .clone()
        .unwrap_or_else(|| opts.criu.image_path.clone());
    mkdir(OP, &work)?;
    let pidfile = work.join(RESTORE_PIDFILE);
    let _ = std::fs::remove_file(&pidfile);

    let dir = ContainerDir::create(&rt.root, id).map_err(Error::from)?;
    if !opts.detach && !opts.no_subreaper {
        // The restored tree is our child (--restore-sibling); its orphans come to us too.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes this process's attribute.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let args = restore_args(
        opts,
        &bundle.rootfs,
        spec,
        &pidfile,
        &inherit_fds(&descriptors),
    );
    tracing::debug!(?args, "criu");
    if let Err(e) = run_criu(
        OP,
        "restore",
        &opts.criu.criu,
        &args,
        work.join(RESTORE_LOG),
        true,
    ) {
        let _ = dir.remove();
        return Err(e);
    }
    let pid: i32 = match std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        Some(p) => p,
        None => {
            let _ = dir.remove();
            return Err(CheckpointError::Unsupported {
                op: OP,
                what: format!("criu restore left no pid in {pidfile:?}"),
            });
        }
    };
    // Never adopt a cgroup that is not the container's (e.g. hull's own, with
    // --manage-cgroups-mode ignore): `kill --all` and `delete` act on every process in it.
    let actual = cgroup_of(pid);
    let same = |a: &str| a.trim_end_matches('/') == expected_cgroup.trim_end_matches('/');
    if !actual.as_deref().is_some_and(same) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = dir.remove();
        return Err(CheckpointError::Unsupported {
            op: OP,
            what: format!(
                "CRIU restored the container's init (pid {pid}, killed) into cgroup {actual:?}, \
                 not the container's {expected_cgroup:?}: restore with the cgroupsPath it was \
                 checkpointed with, and a --manage-cgroups-mode other than ignore"
            ),
        });
    }
    let cgroup = Some(ContainerCgroup::load(&expected_cgroup).map_err(Error::from)?);
    let saved = SavedState {
        oci_version: spec.version().clone(),
        id: id.to_string(),
        pid,
        pid_start_time: process_start_time(pid).unwrap_or(0),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        annotations: spec.annotations().clone().unwrap_or_default(),
        ready: true,
        cgroup,
        config: spec.clone(),
    };
    dir.save(&saved).map_err(Error::from)?;
    if let Some(pid_file) = &opts.pid_file {
        state::write_pid_file(pid_file, pid).map_err(Error::from)?;
    }
    drop(dir);
    if opts.detach {
        return Ok(0);
    }
    let code = crate::wait::wait_for_container(Pid::from_raw(pid), None).map_err(Error::from)?;
    if let Err(e) = rt.delete(id, true) {
        tracing::warn!("deleting container \"{id}\" after restore: {e}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK_OUTPUT: &str = "\
Error (criu/util.c:642): exited, status=1
Error (criu/util.c:642): exited, status=1
Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
";

    #[test]
    fn criu_check_output_is_reduced_to_its_reasons() {
        let r = check_failure_reason(CHECK_OUTPUT);
        assert!(
            r.starts_with("vdso: Unexpected rt vDSO area bounds; "),
            "{r}"
        );
        assert!(!r.contains("exited, status"), "{r}");
        assert_eq!(check_failure_reason("\nsomething odd\n"), "something odd");
    }

    #[test]
    fn missing_criu_is_named() {
        let e = criu_check("checkpoint", Path::new("/nonexistent/criu")).unwrap_err();
        assert!(matches!(e, CheckpointError::CriuMissing { .. }), "{e}");
        assert!(e.to_string().contains("criu"), "{e}");
    }

    fn spec_with_bind() -> hull_specs::Spec {
        let mut spec = hull_specs::Spec::default();
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination("/data")
                .source("/srv/data")
                .typ("bind")
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        spec
    }

    #[test]
    fn dump_and_restore_argv() {
        let spec = spec_with_bind();
        let opts = CheckpointOptions {
            criu: CriuOptions {
                criu: "criu".into(),
                image_path: "/img".into(),
                work_path: Some("/work".into()),
                tcp_established: true,
                file_locks: true,
                ..Default::default()
            },
            leave_running: true,
            ..Default::default()
        };
        let a = dump_args(&opts, 42, Path::new("/b/rootfs"), &spec);
        let s = a.join(" ");
        assert!(
            s.starts_with("dump --tree 42 --root /b/rootfs --images-dir /img --work-dir /work"),
            "{s}"
        );
        assert!(s.contains("--manage-cgroups=soft"), "{s}");
        assert!(
            s.contains("--tcp-established") && s.contains("--file-locks"),
            "{s}"
        );
        assert!(s.contains("--leave-running"), "{s}");
        assert!(!s.contains("--shell-job"), "{s}");
        assert!(s.contains("--ext-mount-map /data:/data"), "{s}");

        let ropts = RestoreOptions {
            criu: opts.criu.clone(),
            ..Default::default()
        };
        let inherit = inherit_fds(&["/dev/null".into(), "pipe:[123]".into(), "socket:[9]".into()]);
        assert_eq!(inherit, vec!["fd[1]:pipe:[123]", "fd[2]:socket:[9]"]);
        let r = restore_args(
            &ropts,
            Path::new("/b/rootfs"),
            &spec,
            Path::new("/work/restore.pid"),
            &inherit,
        )
        .join(" ");
        assert!(
            r.starts_with("restore --root /b/rootfs --restore-detached --restore-sibling"),
            "{r}"
        );
        assert!(r.contains("--ext-mount-map /data:/srv/data"), "{r}");
        assert!(r.contains("--inherit-fd fd[1]:pipe:[123]"), "{r}");
    }

    #[test]
    fn pre_dump_tracks_memory_and_never_leaves_running_flag() {
        let opts = CheckpointOptions {
            criu: CriuOptions {
                image_path: "/img".into(),
                ..Default::default()
            },
            pre_dump: true,
            parent_path: Some("../prev".into()),
            ..Default::default()
        };
        let s = dump_args(&opts, 7, Path::new("/r"), &hull_specs::Spec::default()).join(" ");
        assert!(s.starts_with("pre-dump --tree 7"), "{s}");
        assert!(
            s.contains("--track-mem") && s.contains("--prev-images-dir ../prev"),
            "{s}"
        );
        assert!(!s.contains("--leave-running"), "{s}");
    }
}
