//! `hull vps ...`: the partition manager's command line (the work is in `hull_vps`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use hull_vps::config::{Resources, RestartPolicy, Size};
use hull_vps::manager::{CreateRequest, SetRequest, Source};
use hull_vps::Manager;

#[derive(Debug, Subcommand)]
pub enum VpsCommand {
    /// Create a partition: a disk image with a root filesystem and its partition.toml.
    Create(CreateArgs),
    /// List partitions: state, addresses, uptime, memory and disk use.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one partition's state (JSON).
    Status { name: String },
    /// Start a partition (its monitor keeps it running after this command exits).
    Start {
        /// The partition to start (not with --all-autostart).
        name: Option<String>,
        /// Start every partition marked autostart (for the host's boot).
        #[arg(long, conflicts_with = "name")]
        all_autostart: bool,
        /// Return only once systemd inside reports that booting finished.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a partition cleanly (SIGRTMIN+3 to its systemd), killing what is left after
    /// its stop_timeout.
    Stop { name: String },
    /// Stop and start a partition.
    Restart {
        name: String,
        #[arg(long)]
        wait: bool,
    },
    /// Run a command (a login shell by default) in a running partition, as its root.
    Enter {
        name: String,
        /// The command and its arguments.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Attach to a running partition's console; Ctrl-] detaches.
    Console { name: String },
    /// Change a partition's limits and settings; a running partition gets them at once.
    Set(SetArgs),
    /// Resource accounting (held, max held, limit, failures), like OpenVZ's beancounters.
    Stats {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a partition and remove it with its disk.
    Destroy { name: String },
    /// Mark a partition to start with the host (on) or not (off).
    Autostart {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        value: String,
    },
    /// The per-partition monitor (started by `start`; not for direct use).
    #[command(hide = true)]
    Monitor { name: String },
}

fn parse_size(s: &str) -> Result<Size, String> {
    s.parse()
}

fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    match s {
        "no" => Ok(RestartPolicy::No),
        "on-failure" => Ok(RestartPolicy::OnFailure),
        "always" => Ok(RestartPolicy::Always),
        other => Err(format!("{other:?}: expected no, on-failure or always")),
    }
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Relative CPU weight (1024 = one share).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// CPU time as a number of CPUs (e.g. 1.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// CPUs it may run on (e.g. 0-1).
    #[arg(long)]
    cpuset: Option<String>,
    /// Memory limit (e.g. 512M, 2G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<Size>,
    /// Swap on top of the memory limit.
    #[arg(long, value_parser = parse_size)]
    swap: Option<Size>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pids: Option<i64>,
    /// Block I/O weight (10-1000).
    #[arg(long)]
    io_weight: Option<u16>,
    /// Read bandwidth limit of a host device: "MAJOR:MINOR RATE" (repeatable).
    #[arg(long)]
    io_read_bps: Vec<String>,
    /// Write bandwidth limit of a host device: "MAJOR:MINOR RATE" (repeatable).
    #[arg(long)]
    io_write_bps: Vec<String>,
    /// What to do when it stops by itself: no, on-failure, always.
    #[arg(long, value_parser = parse_restart)]
    restart: Option<RestartPolicy>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    name: String,
    /// A template: debian (Debian 12, made with debootstrap and cached).
    #[arg(long, conflicts_with = "rootfs", required_unless_present = "rootfs")]
    template: Option<String>,
    /// A root filesystem archive (tar, any compression) instead of a template.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Size of its disk (a hard limit).
    #[arg(long, value_parser = parse_size, default_value = "4G")]
    disk: Size,
    /// Host name inside (default: the partition's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Start it with the host (hull vps start --all-autostart).
    #[arg(long)]
    autostart: bool,
    /// Its network: none (loopback only), bridge (a port of --bridge), routed (/32s).
    #[arg(long, value_parser = ["none", "bridge", "routed"], default_value = "none")]
    net: String,
    /// bridge mode: the existing host bridge.
    #[arg(long)]
    bridge: Option<String>,
    /// An IPv4 address with prefix (repeatable); routed mode: /32.
    #[arg(long)]
    ip: Vec<String>,
    /// bridge mode: the default route's gateway.
    #[arg(long)]
    gateway: Option<String>,
    /// Limit of its outgoing traffic, Mbit/s (policed on the host).
    #[arg(long)]
    egress_mbit: Option<u32>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    name: String,
    /// Grow its disk to this size, online.
    #[arg(long, value_parser = parse_size)]
    disk: Option<Size>,
    #[arg(long)]
    hostname: Option<String>,
    /// Seconds `stop` waits before killing.
    #[arg(long)]
    stop_timeout: Option<u64>,
    #[command(flatten)]
    limits: LimitArgs,
}

fn human(bytes: u64) -> String {
    let mut v = bytes as f64;
    for unit in ["B", "K", "M", "G", "T"] {
        if v < 1024.0 {
            return if unit == "B" {
                format!("{bytes}B")
            } else {
                format!("{v:.1}{unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1}P")
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Run a `hull vps` command; returns the exit status.
pub fn execute(cmd: &VpsCommand) -> Result<i32, hull_vps::Error> {
    let m = Manager::default();
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("hull"));
    match cmd {
        VpsCommand::Create(a) => {
            let source = match (&a.template, &a.rootfs) {
                (Some(t), _) => Source::Template(t.clone()),
                (None, Some(p)) => Source::Tar(p.clone()),
                (None, None) => Source::Template("debian".into()),
            };
            let l = &a.limits;
            let resources = Resources {
                cpu_shares: l.cpu_shares,
                cpus: l.cpus,
                cpuset: l.cpuset.clone(),
                memory: l.memory,
                swap: l.swap,
                pids: l.pids,
                io_weight: l.io_weight,
                io_read_bps: l.io_read_bps.clone(),
                io_write_bps: l.io_write_bps.clone(),
                disk: a.disk,
            };
            let cfg = m.create(&CreateRequest {
                name: a.name.clone(),
                source,
                hostname: a.hostname.clone(),
                resources,
                autostart: a.autostart,
                restart: l.restart.unwrap_or_default(),
                network: hull_vps::network::NetworkConfig {
                    mode: match a.net.as_str() {
                        "bridge" => hull_vps::network::NetworkMode::Bridge,
                        "routed" => hull_vps::network::NetworkMode::Routed,
                        _ => hull_vps::network::NetworkMode::None,
                    },
                    bridge: a.bridge.clone(),
                    addresses: a.ip.clone(),
                    gateway: a.gateway.clone(),
                    egress_mbit: a.egress_mbit,
                },
            })?;
            println!(
                "partition {} created: disk {}, ids {}..{} (config {})",
                cfg.name,
                cfg.resources.disk,
                cfg.id_base,
                u64::from(cfg.id_base) + 65536,
                m.dirs.partition(&cfg.name).config.display()
            );
        }
        VpsCommand::List { json } => {
            let list = m.list()?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<16} {:<9} {:<18} {:<9} {:<19} {:<17} AUTOSTART",
                    "NAME", "STATE", "IP", "UPTIME", "MEMORY", "DISK"
                );
                for p in list {
                    let mem = match (p.memory_used, p.memory_limit) {
                        (Some(u), Some(l)) => format!("{}/{}", human(u), human(l)),
                        (Some(u), None) => human(u),
                        (None, Some(l)) => format!("-/{}", human(l)),
                        (None, None) => "-".into(),
                    };
                    let disk = match p.disk_used {
                        Some(u) => format!("{}/{}", human(u), human(p.disk_size)),
                        None => format!("-/{}", human(p.disk_size)),
                    };
                    let ips = if p.ips.is_empty() {
                        "-".into()
                    } else {
                        p.ips.join(",")
                    };
                    let state = if p.state == "running" && !p.ready {
                        "booting".to_string()
                    } else {
                        p.state.clone()
                    };
                    println!(
                        "{:<16} {:<9} {:<18} {:<9} {:<19} {:<17} {}",
                        p.name,
                        state,
                        ips,
                        p.uptime.map(uptime).unwrap_or_else(|| "-".into()),
                        mem,
                        disk,
                        if p.autostart { "on" } else { "off" }
                    );
                }
            }
        }
        VpsCommand::Status { name } => {
            let info = m.info(name)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&info).unwrap_or_default()
            );
        }
        VpsCommand::Start {
            name,
            all_autostart,
            wait,
        } => {
            if *all_autostart {
                let failed = m.start_autostart(&exe);
                for (n, e) in &failed {
                    eprintln!("hull vps: {n}: {e}");
                }
                return Ok(i32::from(!failed.is_empty()));
            }
            let Some(name) = name else {
                return Err(hull_vps::Error::Invalid {
                    what: "start".into(),
                    reason: "name a partition, or give --all-autostart".into(),
                });
            };
            m.start(name, &exe, *wait)?;
        }
        VpsCommand::Stop { name } => m.stop(name)?,
        VpsCommand::Restart { name, wait } => m.restart(name, &exe, *wait)?,
        VpsCommand::Enter { name, command } => return m.enter(name, command),
        VpsCommand::Console { name } => m.console(name)?,
        VpsCommand::Set(a) => {
            let l = &a.limits;
            let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
            m.set(
                &a.name,
                &SetRequest {
                    cpu_shares: l.cpu_shares,
                    cpus: l.cpus,
                    cpuset: l.cpuset.clone(),
                    memory: l.memory,
                    swap: l.swap,
                    pids: l.pids,
                    io_weight: l.io_weight,
                    io_read_bps: list(&l.io_read_bps),
                    io_write_bps: list(&l.io_write_bps),
                    disk: a.disk,
                    hostname: a.hostname.clone(),
                    restart: l.restart,
                    stop_timeout: a.stop_timeout,
                },
            )?;
        }
        VpsCommand::Stats { name, json } => {
            let rows = m.stats(name)?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else {
                print!("{}", hull_vps::stats::render(&rows));
            }
        }
        VpsCommand::Destroy { name } => m.destroy(name)?,
        VpsCommand::Autostart { name, value } => m.set_autostart(name, value == "on")?,
        VpsCommand::Monitor { name } => hull_vps::monitor::run(&m.dirs, name)?,
    }
    Ok(0)
}
