//! `hull-vps`: the VPS partition manager (`hull vps ARGS` execs `hull-vps ARGS`). Its own
//! binary so that `hull`, exec'd twice per container start, carries none of its code.

// See main.rs: the runtime's error type is returned as it is.
#![allow(clippy::result_large_err)]

use clap::Parser;

mod logging;
mod vps;

/// hull's VPS partition manager: long-lived system containers with their own disk, limits
/// and console.
#[derive(Debug, Parser)]
#[command(name = "hull vps", bin_name = "hull vps", version)]
struct VpsCli {
    /// Log debug messages too.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: vps::VpsCommand,
}

fn main() {
    // The monitor creates the partition's container, whose init re-execs this binary.
    hull_runtime::run_internal_role();
    let cli = VpsCli::parse();
    if let Err(e) = logging::init(None, logging::LogFormat::Text, cli.debug) {
        eprintln!("hull vps: setting up logging: {e}");
        std::process::exit(1);
    }
    let code = match vps::execute(&cli.command) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    };
    std::process::exit(code);
}
