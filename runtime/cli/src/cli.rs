//! The runc-compatible command line: parse flags, call the library, print what runc prints.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use oci_spec::runtime::{Capability, LinuxResources, Process};

use crate::logging::{self, LogFormat};
use hull_runtime::container::{ContainerState, CreateOptions, Error, Runtime};
use hull_runtime::exec::ExecOptions;

#[derive(Debug, Parser)]
#[command(
    name = "hull",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0"),
    about = "An OCI container runtime (runc-compatible command line)"
)]
struct Cli {
    /// Directory holding the state of containers.
    #[arg(long, global = true, default_value = "/run/hull")]
    root: PathBuf,
    /// Write log lines to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log debug lines too.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd to manage cgroups (cgroupsPath as slice:prefix:name).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Run without root privileges: true, false or auto.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// The criu binary `checkpoint` and `restore` use.
    #[arg(long, global = true, default_value = "criu")]
    criu: PathBuf,
    /// Give every container this isolation: `vm` runs each in its own micro-VM (for clients
    /// that cannot set the io.hull.isolation annotation, e.g. as a Docker runtime's
    /// runtimeArgs); a config annotated otherwise is refused.
    #[arg(long, global = true, value_parser = parse_isolation)]
    isolation: Option<hull_specs::Isolation>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write the container init's pid to this file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// AF_UNIX socket that receives the pty master when process.terminal is set.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root.
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a session keyring for the container.
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass this many extra descriptors (from 3 on) to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Container id.
    id: String,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
            stdio: None,
            isolation: None,
        }
    }
}

fn parse_isolation(v: &str) -> Result<hull_specs::Isolation, String> {
    hull_specs::annotations::parse_isolation(v).map_err(|_| format!("{v:?} is not vm or container"))
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// A process.json with the whole process to run (other process flags are ignored).
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Return once the process is started.
    #[arg(short, long)]
    detach: bool,
    /// Write the process's pid to this file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// AF_UNIX socket that receives the pty master when a terminal is allocated.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable (NAME=value); repeatable.
    #[arg(short, long)]
    env: Vec<String>,
    /// uid[:gid] to run as.
    #[arg(short, long)]
    user: Option<String>,
    /// An additional group id; repeatable.
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Add a capability (e.g. CAP_NET_ADMIN); repeatable.
    #[arg(short, long)]
    cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    no_new_privs: bool,
    /// AppArmor profile for the process.
    #[arg(long)]
    apparmor: Option<String>,
    /// SELinux label for the process.
    #[arg(long)]
    process_label: Option<String>,
    /// Pass this many extra descriptors (from 3 on) to the process.
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Container id.
    id: String,
    /// The command and its arguments (when --process is not given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct UpdateArgs {
    /// LinuxResources JSON from this file, or `-` for stdin.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    /// Memory limit (bytes, or with a k/m/g suffix; -1 for unlimited).
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<i64>,
    /// Memory soft limit.
    #[arg(long, value_parser = parse_bytes)]
    memory_reservation: Option<i64>,
    /// Memory plus swap limit.
    #[arg(long, value_parser = parse_bytes)]
    memory_swap: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// CPU CFS quota in microseconds (-1 for none).
    #[arg(long)]
    cpu_quota: Option<i64>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    cpu_period: Option<u64>,
    /// CPU realtime period in microseconds.
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds.
    #[arg(long)]
    cpu_rt_runtime: Option<i64>,
    /// CPUs the container may use (e.g. 0-1).
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use.
    #[arg(long)]
    cpuset_mems: Option<String>,
    /// Maximum number of processes (-1 for no limit; 0 leaves it unchanged, as runc 1.1:
    /// every resource value of 0 means "not set").
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Block I/O weight (1-1000 on cgroup v1, 1-10000 on v2; 0 = unchanged).
    #[arg(long)]
    blkio_weight: Option<u16>,
    id: String,
}

/// CRIU options `checkpoint` and `restore` share (runc's flags).
#[derive(Debug, clap::Args)]
struct CriuArgs {
    /// Directory for the CRIU image files.
    #[arg(long, default_value = "checkpoint")]
    image_path: PathBuf,
    /// Directory for CRIU's logs and temporary files (default: the image path).
    #[arg(long)]
    work_path: Option<PathBuf>,
    /// Allow open TCP connections.
    #[arg(long)]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long)]
    ext_unix_sk: bool,
    /// Allow shell jobs (a terminal shared with the caller).
    #[arg(long)]
    shell_job: bool,
    /// Handle file locks.
    #[arg(long)]
    file_locks: bool,
    /// How CRIU handles cgroups.
    #[arg(long, value_enum, default_value = "soft")]
    manage_cgroups_mode: ManageCgroupsMode,
    /// Leave this namespace empty instead of checkpointing/restoring it (repeatable).
    #[arg(long)]
    empty_ns: Vec<String>,
    /// Deduplicate pages against the parent images.
    #[arg(long)]
    auto_dedup: bool,
    /// Lazy migration through a page server (not supported).
    #[arg(long)]
    lazy_pages: bool,
}

/// `--manage-cgroups-mode` as clap parses it: the library's `CgroupsMode` does not link clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ManageCgroupsMode {
    Soft,
    Full,
    Strict,
    Ignore,
}

impl From<ManageCgroupsMode> for hull_runtime::checkpoint::CgroupsMode {
    fn from(m: ManageCgroupsMode) -> Self {
        use hull_runtime::checkpoint::CgroupsMode;
        match m {
            ManageCgroupsMode::Soft => CgroupsMode::Soft,
            ManageCgroupsMode::Full => CgroupsMode::Full,
            ManageCgroupsMode::Strict => CgroupsMode::Strict,
            ManageCgroupsMode::Ignore => CgroupsMode::Ignore,
        }
    }
}

impl CriuArgs {
    fn options(
        &self,
        criu: &std::path::Path,
    ) -> Result<hull_runtime::checkpoint::CriuOptions, Error> {
        if self.lazy_pages {
            return Err(Error::Usage("--lazy-pages is not supported by hull".into()));
        }
        if !self.empty_ns.is_empty() {
            return Err(Error::Usage(
                "--empty-ns is not supported by hull yet".into(),
            ));
        }
        Ok(hull_runtime::checkpoint::CriuOptions {
            criu: criu.to_path_buf(),
            image_path: self.image_path.clone(),
            work_path: self.work_path.clone(),
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            shell_job: self.shell_job,
            file_locks: self.file_locks,
            auto_dedup: self.auto_dedup,
            manage_cgroups_mode: self.manage_cgroups_mode.into(),
            empty_ns: self.empty_ns.clone(),
        })
    }
}

#[derive(Debug, clap::Args)]
struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Images of a previous (pre-)dump, relative to the image path.
    #[arg(long)]
    parent_path: Option<PathBuf>,
    /// Keep the container running after the checkpoint.
    #[arg(long)]
    leave_running: bool,
    /// Only dump memory (the container keeps running), for a later incremental dump.
    #[arg(long)]
    pre_dump: bool,
    /// CRIU page server address (not supported).
    #[arg(long)]
    page_server: Option<String>,
    /// Fd to which CRIU reports when the dump is done (not supported).
    #[arg(long)]
    status_fd: Option<i32>,
    id: String,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Return once the container is restored.
    #[arg(short, long)]
    detach: bool,
    /// Write the restored init's pid to this file.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// AF_UNIX socket for the pty master (restoring a terminal is not supported yet).
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Do not become a subreaper while waiting (containerd sends `-no-subreaper`).
    #[arg(long)]
    no_subreaper: bool,
    /// Accepted for runc compatibility (CRIU restores the mount namespace itself).
    #[arg(long)]
    no_pivot: bool,
    /// LSM profile of the restored process (`apparmor:NAME` or `selinux:LABEL`).
    #[arg(long)]
    lsm_profile: Option<String>,
    /// SELinux mount context of the restored mounts.
    #[arg(long)]
    lsm_mount_context: Option<String>,
    id: String,
}

// Each subcommand's arguments are built only when it is the one invoked: building all
// of them cost every command ~270 KiB of heap (~70 page faults) and 5% of `run`'s CPU.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Create a container and leave it waiting for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container, wait for it and exit with its status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container is started.
        #[arg(short, long)]
        detach: bool,
        /// Do not delete the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change the resource limits of a running container.
    Update(UpdateArgs),
    /// Print the container's stats (and OOM events) as JSON lines.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Time between stats events (e.g. 5s, 500ms, 1m).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: std::time::Duration,
        id: String,
    },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (number or name, default SIGTERM) to a container.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything hull made for it.
    Delete {
        /// Kill the container first if it is running.
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Print only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        id: String,
        /// Arguments for ps(1) in table format (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A spec for running without root.
        #[arg(long = "rootless", id = "spec_rootless")]
        rootless: bool,
    },
    /// Print what this runtime supports (runtime-spec features document).
    Features,
    /// Checkpoint a running container with CRIU.
    Checkpoint(CheckpointArgs),
    /// Restore a container from a CRIU checkpoint.
    Restore(RestoreArgs),
    /// The guest image VM containers (io.hull.isolation=vm) boot.
    #[command(name = "vm-image", subcommand)]
    VmImage(VmImageCommand),
    /// VPS partitions: long-lived system containers with their own disk, limits and console
    /// (runs `hull-vps`, installed next to hull).
    #[command(disable_help_flag = true)]
    Vps {
        /// `hull-vps`'s command line (`hull vps --help` lists it).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum VmImageCommand {
    /// Assemble the guest image: Debian's cloud kernel and an initramfs with hull-agent and
    /// the kernel modules it loads.
    Build {
        /// The guest kernel, named vmlinuz-<version> with its modules in
        /// ../lib/modules/<version> or /lib/modules/<version> [default: the newest in
        /// /var/cache/hull/guest-kernel/boot, where dev/guest-kernel unpacks
        /// linux-image-cloud-amd64].
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// The hull-agent binary [default: hull-agent next to this hull].
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Where to write the image [default: $HULL_VM_IMAGE_DIR, else /var/lib/hull/vm-image].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print where the guest image is and whether it is complete.
    Show,
}

/// containerd's runc shim passes `-no-subreaper` to `restore` with ONE dash (Go's flag
/// syntax); clap only knows `--no-subreaper`. When the command line does not parse as is
/// and has that single-dash flag, parse it again with the flag spelled `--no-subreaper`,
/// and keep the result only for `restore` (a literal `-no-subreaper` elsewhere, e.g. an
/// `exec` argument, is left alone because such command lines already parse).
fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let err = match Cli::try_parse_from(&args) {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    let single = std::ffi::OsStr::new("-no-subreaper");
    if !args.iter().any(|a| a == single) {
        return Err(err);
    }
    let fixed = args.iter().map(|a| {
        if a == single {
            std::ffi::OsString::from("--no-subreaper")
        } else {
            a.clone()
        }
    });
    match Cli::try_parse_from(fixed) {
        Ok(cli) if matches!(cli.command, Command::Restore(_)) => Ok(cli),
        _ => Err(err),
    }
}

/// Parse, run, and return the process exit status.
pub fn main() -> i32 {
    let cli = match parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("hull: opening --log {:?}: {e}", cli.log);
        return 1;
    }
    match execute(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = e.to_string();
            tracing::error!("{msg}");
            if cli.log.is_some() {
                eprintln!("hull: {msg}");
            }
            1
        }
    }
}

/// `hull vps ARGS`: execs `hull-vps ARGS`, the binary installed next to this one (else the
/// one on PATH). Returns only if that fails.
fn exec_vps(debug: bool, args: &[std::ffi::OsString]) -> Error {
    use std::os::unix::process::CommandExt;
    let sibling = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hull-vps")))
        .filter(|p| p.exists());
    let program = sibling.unwrap_or_else(|| PathBuf::from("hull-vps"));
    let e = std::process::Command::new(&program)
        .arg0("hull-vps")
        .args(debug.then_some("--debug"))
        .args(args)
        .exec();
    Error::Usage(format!(
        "vps: cannot run {}: {e} (install hull-vps next to hull)",
        program.display()
    ))
}

fn execute(cli: &Cli) -> Result<i32, Error> {
    if let Command::Vps { args } = &cli.command {
        return Err(exec_vps(cli.debug, args));
    }
    if cli.systemd_cgroup && !std::path::Path::new("/run/systemd/system").exists() {
        return Err(Error::Usage(
            "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system)".into(),
        ));
    }
    let rootless = match cli.rootless.as_deref() {
        None | Some("auto") => !nix::unistd::geteuid().is_root(),
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(Error::Usage(format!(
                "--rootless: expected true, false or auto, got {other:?}"
            )))
        }
    };
    let rt = Runtime {
        root: cli.root.clone(),
        systemd_cgroup: cli.systemd_cgroup,
        rootless,
        init_binary: None,
    };
    let mut out = std::io::stdout().lock();
    let wr = |e: std::io::Error| Error::Io {
        what: "writing to stdout".into(),
        source: e,
    };
    match &cli.command {
        Command::Create(args) => {
            rt.create(
                &args.id,
                &CreateOptions {
                    isolation: cli.isolation,
                    ..args.options()
                },
            )?;
        }
        Command::Start { id } => rt.start(id)?,
        Command::Run {
            create,
            detach,
            keep,
        } => {
            let opts = CreateOptions {
                isolation: cli.isolation,
                ..create.options()
            };
            return rt.run(&create.id, &opts, *detach, *keep);
        }
        Command::Exec(args) => {
            let base = rt.state_config(&args.id)?.process().clone();
            let process = exec_process(args, base)?;
            return rt.exec(
                &args.id,
                &ExecOptions {
                    process,
                    detach: args.detach,
                    pid_file: args.pid_file.clone(),
                    console_socket: args.console_socket.clone(),
                    preserve_fds: args.preserve_fds,
                    stdio: None,
                },
            );
        }
        Command::Pause { id } => rt.pause(id)?,
        Command::Resume { id } => rt.resume(id)?,
        Command::Update(args) => rt.update(&args.id, &update_resources(args)?)?,
        Command::Events {
            stats,
            interval,
            id,
        } => rt.events(id, *stats, *interval, &mut out)?,
        Command::State { id } => {
            let st = rt.state(id)?;
            writeln!(out, "{}", to_pretty_json(&st)).map_err(wr)?;
        }
        Command::Kill { all, id, signal } => {
            let sig = hull_specs::signal::parse_signal(signal)?;
            rt.kill(id, sig, *all)?;
        }
        Command::Delete { force, id } => rt.delete(id, *force)?,
        Command::List { format, quiet } => {
            let list = rt.list()?;
            if *quiet {
                for c in &list {
                    writeln!(out, "{}", c.id).map_err(wr)?;
                }
            } else if format == "json" {
                writeln!(out, "{}", serde_json::to_string(&list).unwrap_or_default())
                    .map_err(wr)?;
            } else {
                write!(out, "{}", list_table(&list)).map_err(wr)?;
            }
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            let pids = rt.pids(id)?;
            if format == "json" {
                writeln!(out, "{}", serde_json::to_string(&pids).unwrap_or_default())
                    .map_err(wr)?;
            } else {
                write!(out, "{}", ps_table(&pids, ps_args)?).map_err(wr)?;
            }
        }
        Command::Spec { bundle, rootless } => {
            let uid = nix::unistd::geteuid().as_raw();
            let gid = nix::unistd::getegid().as_raw();
            hull_specs::defaults::write_default_spec(bundle, *rootless, uid, gid)?;
        }
        Command::VmImage(VmImageCommand::Build {
            kernel,
            agent,
            out: dir,
        }) => {
            let image =
                hull_runtime::vm::build_image(kernel.as_deref(), agent.as_deref(), dir.as_deref())?;
            writeln!(
                out,
                "kernel: {}\ninitramfs: {}",
                image.kernel.display(),
                image.initramfs.display()
            )
            .map_err(wr)?;
        }
        // Dispatched before the runtime is set up (above).
        Command::Vps { .. } => {}
        Command::VmImage(VmImageCommand::Show) => {
            let image = hull_runtime::vm::load_image()?;
            writeln!(
                out,
                "kernel: {}\ninitramfs: {}",
                image.kernel.display(),
                image.initramfs.display()
            )
            .map_err(wr)?;
        }
        Command::Features => {
            writeln!(out, "{}", hull_specs::features::features_pretty_json()).map_err(wr)?;
        }
        Command::Checkpoint(args) => {
            if args.page_server.is_some() || args.status_fd.is_some() {
                return Err(Error::Usage(
                    "--page-server and --status-fd are not supported by hull".into(),
                ));
            }
            let opts = hull_runtime::checkpoint::CheckpointOptions {
                criu: args.criu.options(&cli.criu)?,
                parent_path: args.parent_path.clone(),
                leave_running: args.leave_running,
                pre_dump: args.pre_dump,
            };
            hull_runtime::checkpoint::checkpoint(&rt, &args.id, &opts)
                .map_err(hull_runtime::checkpoint::CheckpointError::into_runtime_error)?;
        }
        Command::Restore(args) => {
            let opts = hull_runtime::checkpoint::RestoreOptions {
                criu: args.criu.options(&cli.criu)?,
                bundle: args.bundle.clone(),
                detach: args.detach,
                pid_file: args.pid_file.clone(),
                console_socket: args.console_socket.clone(),
                no_subreaper: args.no_subreaper,
                no_pivot: args.no_pivot,
                lsm_profile: args.lsm_profile.clone(),
                lsm_mount_context: args.lsm_mount_context.clone(),
            };
            return hull_runtime::checkpoint::restore(&rt, &args.id, &opts)
                .map_err(hull_runtime::checkpoint::CheckpointError::into_runtime_error);
        }
    }
    Ok(0)
}

/// The process `exec` runs: a process.json as is, or the container's own process with
/// the command and the flags laid over it (runc's rules).
fn exec_process(args: &ExecArgs, base: Option<Process>) -> Result<Process, Error> {
    if let Some(path) = &args.process {
        let data = std::fs::read(path).map_err(|e| Error::Io {
            what: format!("--process {path:?}"),
            source: e,
        })?;
        return hull_specs::parse_json_naming_field(&data)
            .map_err(|e| Error::Usage(format!("--process {path:?}: {e}")));
    }
    if args.command.is_empty() {
        return Err(Error::Usage(
            "exec: give a command after the container id, or --process".into(),
        ));
    }
    let mut p = base.unwrap_or_default();
    p.set_args(Some(args.command.clone()));
    p.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        p.set_cwd(cwd.clone());
    }
    if !args.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &args.env {
            let name = kv.split('=').next().unwrap_or_default();
            if name.is_empty() || !kv.contains('=') {
                return Err(Error::Usage(format!("--env {kv:?} is not NAME=value")));
            }
            env.retain(|e| e.split('=').next() != Some(name));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    let mut user = p.user().clone();
    if let Some(spec) = &args.user {
        let mut parts = spec.splitn(2, ':');
        let parse = |s: Option<&str>| -> Result<Option<u32>, Error> {
            s.map(|v| {
                v.parse::<u32>()
                    .map_err(|_| Error::Usage(format!("--user {spec:?}: expected uid[:gid]")))
            })
            .transpose()
        };
        if let Some(uid) = parse(parts.next())? {
            user.set_uid(uid);
        }
        if let Some(gid) = parse(parts.next())? {
            user.set_gid(gid);
        }
    }
    if !args.additional_gids.is_empty() {
        user.set_additional_gids(Some(args.additional_gids.clone()));
    }
    p.set_user(user);
    if !args.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let cap: Capability =
                serde_json::from_value(serde_json::Value::String(if name.starts_with("CAP_") {
                    name.clone()
                } else {
                    format!("CAP_{name}")
                }))
                .map_err(|_| Error::Usage(format!("--cap {name:?}: unknown capability")))?;
            let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (b, e, p) = (
                with(caps.bounding()),
                with(caps.effective()),
                with(caps.permitted()),
            );
            caps.set_bounding(b).set_effective(e).set_permitted(p);
        }
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = &args.apparmor {
        p.set_apparmor_profile(Some(profile.clone()));
    }
    if let Some(label) = &args.process_label {
        p.set_selinux_label(Some(label.clone()));
    }
    Ok(p)
}

/// The resources `update` applies: the JSON document (file or stdin) with the flags laid
/// over it.
fn update_resources(args: &UpdateArgs) -> Result<LinuxResources, Error> {
    use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids};
    let mut r: LinuxResources = match &args.resources {
        None => LinuxResources::default(),
        Some(path) => {
            let mut data = Vec::new();
            let what = format!("--resources {path:?}");
            let read = if path.as_os_str() == "-" {
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)
            } else {
                std::fs::File::open(path)
                    .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data))
            };
            read.map_err(|e| Error::Io {
                what: what.clone(),
                source: e,
            })?;
            hull_specs::parse_json_naming_field(&data)
                .map_err(|e| Error::Usage(format!("{what}: {e}")))?
        }
    };
    if args.memory.is_some() || args.memory_reservation.is_some() || args.memory_swap.is_some() {
        let mut m: LinuxMemory = (*r.memory()).unwrap_or_default();
        if let Some(v) = args.memory {
            m.set_limit(Some(v));
        }
        if let Some(v) = args.memory_reservation {
            m.set_reservation(Some(v));
        }
        if let Some(v) = args.memory_swap {
            m.set_swap(Some(v));
        }
        r.set_memory(Some(m));
    }
    let cpu_flags = args.cpu_shares.is_some()
        || args.cpu_quota.is_some()
        || args.cpu_period.is_some()
        || args.cpu_rt_period.is_some()
        || args.cpu_rt_runtime.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if cpu_flags {
        let mut c: LinuxCpu = r.cpu().clone().unwrap_or_default();
        if let Some(v) = args.cpu_shares {
            c.set_shares(Some(v));
        }
        if let Some(v) = args.cpu_quota {
            c.set_quota(Some(v));
        }
        if let Some(v) = args.cpu_period {
            c.set_period(Some(v));
        }
        if let Some(v) = args.cpu_rt_period {
            c.set_realtime_period(Some(v));
        }
        if let Some(v) = args.cpu_rt_runtime {
            c.set_realtime_runtime(Some(v));
        }
        if let Some(v) = &args.cpuset_cpus {
            c.set_cpus(Some(v.clone()));
        }
        if let Some(v) = &args.cpuset_mems {
            c.set_mems(Some(v.clone()));
        }
        r.set_cpu(Some(c));
    }
    if let Some(v) = args.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(v);
        r.set_pids(Some(p));
    }
    if let Some(v) = args.blkio_weight {
        let mut b: LinuxBlockIo = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(v));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// A byte count: digits with an optional k/m/g/t suffix (powers of 1024), or -1.
fn parse_bytes(s: &str) -> Result<i64, String> {
    if s == "-1" {
        return Ok(-1);
    }
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        Some('t') => (&lower[..lower.len() - 1], 40),
        _ => (lower, 0),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512m, 1g, 1048576)"))?;
    n.checked_mul(1i64 << shift)
        .filter(|v| *v >= 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// A duration: a number with a unit ms, s, m or h (e.g. 5s, 500ms).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 5s, 500ms, 1m)");
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        return Err(bad());
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(std::time::Duration::from_millis(
        n.checked_mul(mult_ms).ok_or_else(bad)?,
    ))
}

fn to_pretty_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// runc's `list` table: columns aligned with two spaces of padding.
fn list_table(list: &[ContainerState]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "PID".into(),
        "STATUS".into(),
        "BUNDLE".into(),
        "CREATED".into(),
        "OWNER".into(),
    ]];
    for c in list {
        rows.push([
            c.id.clone(),
            c.pid.to_string(),
            c.status.to_string(),
            c.bundle.display().to_string(),
            c.created.clone(),
            c.owner.clone(),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut s = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        s.push_str(line.join("   ").trim_end());
        s.push('\n');
    }
    s
}

/// runc's `ps` table: ps(1)'s header and the lines of the container's pids.
fn ps_table(pids: &[i32], ps_args: &[String]) -> Result<String, Error> {
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Io {
            what: "running ps".into(),
            source: e,
        })?;
    if !output.status.success() {
        return Err(Error::Usage(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| Error::Usage("ps output has no PID column".into()))?;
    let mut s = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            s.push_str(line);
            s.push('\n');
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_runtime::container::Status;

    #[test]
    fn containerd_argv_parses() {
        let cli = Cli::try_parse_from([
            "hull",
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/s",
            "--no-pivot",
            "--no-new-keyring",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        match cli.command {
            Command::Create(a) => {
                assert_eq!(a.id, "c1");
                assert!(a.no_pivot && a.no_new_keyring);
                assert_eq!(a.pid_file.unwrap(), PathBuf::from("/b/init.pid"));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["hull", "kill", "--all", "c1", "9"]).unwrap();
        assert!(
            matches!(cli.command, Command::Kill { all: true, ref signal, .. } if signal == "9")
        );
        let cli = Cli::try_parse_from(["hull", "delete", "--force", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Delete { force: true, .. }));
        let cli = Cli::try_parse_from(["hull", "ps", "--format", "json", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Ps { ref format, .. } if format == "json"));
    }

    #[test]
    fn containerd_restore_argv_with_single_dash_no_subreaper_parses() {
        // What containerd-shim-runc-v2 (go-runc) sends.
        let cli = parse_args([
            "hull",
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "restore",
            "--image-path",
            "/img",
            "--work-path",
            "/work",
            "--tcp-established",
            "--detach",
            "--pid-file",
            "/b/init.pid",
            "--no-pivot",
            "-no-subreaper",
            "--bundle",
            "/b",
            "c1",
        ])
        .unwrap();
        let Command::Restore(a) = cli.command else {
            panic!("not restore")
        };
        assert!(a.no_subreaper && a.detach && a.no_pivot && a.criu.tcp_established);
        assert_eq!(a.criu.image_path, PathBuf::from("/img"));
        assert_eq!(a.bundle, PathBuf::from("/b"));
        assert_eq!(a.id, "c1");
        // The double-dash spelling works as is; without the flag it is false.
        let cli = parse_args(["hull", "restore", "--no-subreaper", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Restore(ref a) if a.no_subreaper));
        let cli = parse_args(["hull", "restore", "c1"]).unwrap();
        assert!(matches!(cli.command, Command::Restore(ref a) if !a.no_subreaper));
        // A literal `-no-subreaper` argument of exec stays an argument.
        let cli = parse_args(["hull", "exec", "c1", "echo", "-no-subreaper"]).unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(e.command.last().map(String::as_str), Some("-no-subreaper"));
        // Other single-dash long flags are still refused.
        assert!(parse_args(["hull", "restore", "-detach", "c1"]).is_err());
        assert!(parse_args(["hull", "kill", "-no-subreaper", "c1"]).is_err());
    }

    #[test]
    fn containerd_checkpoint_argv_parses() {
        let cli = parse_args([
            "hull",
            "--root",
            "/r",
            "--criu",
            "/usr/sbin/criu",
            "checkpoint",
            "--image-path",
            "/img",
            "--work-path",
            "/work",
            "--leave-running",
            "--ext-unix-sk",
            "--shell-job",
            "--file-locks",
            "--manage-cgroups-mode",
            "full",
            "c1",
        ])
        .unwrap();
        assert_eq!(cli.criu, PathBuf::from("/usr/sbin/criu"));
        let Command::Checkpoint(a) = cli.command else {
            panic!("not checkpoint")
        };
        assert!(a.leave_running && a.criu.ext_unix_sk && a.criu.shell_job && a.criu.file_locks);
        assert_eq!(
            hull_runtime::checkpoint::CgroupsMode::from(a.criu.manage_cgroups_mode),
            hull_runtime::checkpoint::CgroupsMode::Full
        );
        let opts = a.criu.options(&cli.criu).unwrap();
        assert_eq!(opts.work_path, Some(PathBuf::from("/work")));
        assert!(parse_args(["hull", "checkpoint", "--manage-cgroups-mode", "odd", "c1"]).is_err());
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999t").is_err());
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(parse_duration("5s"), Ok(std::time::Duration::from_secs(5)));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn update_flags_build_resources() {
        let cli = Cli::try_parse_from([
            "hull",
            "update",
            "--memory",
            "64m",
            "--pids-limit",
            "20",
            "--cpu-quota",
            "50000",
            "c1",
        ])
        .unwrap();
        let Command::Update(args) = cli.command else {
            panic!("not update")
        };
        let r = update_resources(&args).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 20);
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50000));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Cli::try_parse_from(["hull", "list", "--format", "yaml"]).is_err());
        assert!(Cli::try_parse_from(["hull", "--log-format", "xml", "list"]).is_err());
        assert!(Cli::try_parse_from(["hull", "create"]).is_err());
    }

    #[test]
    fn list_table_aligns_columns() {
        let st = ContainerState {
            oci_version: "1.2.0".into(),
            id: "abc".into(),
            pid: 12,
            status: Status::Running,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "T".into(),
            owner: "root".into(),
            annotations: Default::default(),
        };
        let t = list_table(&[st]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID "));
        assert_eq!(lines[0].find("PID"), lines[1].find("12"));
        assert!(lines[1].contains("running"));
    }
}
