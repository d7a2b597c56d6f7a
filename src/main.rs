//! The `flumen` command line: parse arguments, call the library, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flumen::agent::{self, AgentOptions};
use flumen::topology;

/// flumen: moves events from sources through channels to sinks, losing nothing acknowledged.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent a topology describes, until Ctrl-C / SIGTERM (or, with --once, until its
    /// inputs end and its channels are drained).
    Run {
        /// Stop once every source reached the end of its input and every channel is drained.
        #[arg(long)]
        once: bool,
        /// On shutdown, how long sinks may keep draining their channels (e.g. "10s").
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        drain_timeout: Duration,
        /// Do not show progress on stderr.
        #[arg(long)]
        quiet: bool,
        /// The topology file (RON).
        topology: PathBuf,
    },
    /// Check a topology: exit 0, or print every problem (file:line:column: component: message).
    Validate {
        /// The topology file (RON).
        topology: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FLUMEN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Validate { topology } => match topology::load(&topology) {
            Ok(t) => {
                println!(
                    "{}: agent \"{}\" is valid ({} sources, {} channels, {} sinks)",
                    topology.display(),
                    t.agent,
                    t.sources.len(),
                    t.channels.len(),
                    t.sinks.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Run { once, drain_timeout, quiet, topology } => {
            let t = match topology::load(&topology) {
                Ok(t) => t,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let options = AgentOptions { once, drain_timeout, progress: !quiet };
            let system = actix_rt::System::new();
            match system.block_on(agent::run(t, options)) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flumen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
