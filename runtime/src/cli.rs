//! The runc-compatible command line: parse flags, call the library, print what runc prints.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::container::{ContainerState, CreateOptions, Error, Runtime};
use crate::logging::{self, LogFormat};

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
        }
    }
}

#[derive(Debug, Subcommand)]
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
}

/// Parse, run, and return the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
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

fn execute(cli: &Cli) -> Result<i32, Error> {
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
    };
    let mut out = std::io::stdout().lock();
    let wr = |e: std::io::Error| Error::Io {
        what: "writing to stdout".into(),
        source: e,
    };
    match &cli.command {
        Command::Create(args) => {
            rt.create(&args.id, &args.options())?;
        }
        Command::Start { id } => rt.start(id)?,
        Command::Run {
            create,
            detach,
            keep,
        } => return rt.run(&create.id, &create.options(), *detach, *keep),
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
        Command::Features => {
            writeln!(out, "{}", hull_specs::features::features_pretty_json()).map_err(wr)?;
        }
    }
    Ok(0)
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
    use crate::container::Status;

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
