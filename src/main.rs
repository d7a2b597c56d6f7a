//! The `flumen` command line: parse arguments, call the library, map errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use flumen::agent::{self, AgentOptions};
use flumen::channel::rocksdb::tools;
use flumen::topology;

/// flumen: moves events from sources through channels to sinks, losing nothing acknowledged.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// How log lines on stderr are written: `text` (coloured only on a terminal) or `json` (one
    /// object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: flumen::logging::LogFormat,
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
        /// Exit (status 1, naming the channel) when a channel cannot open, instead of starting
        /// the other flows and retrying the channel.
        #[arg(long)]
        strict: bool,
        /// Reload the topology when its file changes (debounced), as on SIGHUP.
        #[arg(long)]
        watch: bool,
        /// The topology file (RON).
        topology: PathBuf,
    },
    /// Check a topology: exit 0, or print every problem (file:line:column: component: message).
    Validate {
        /// The topology file (RON).
        topology: PathBuf,
    },
    /// Watch a running agent live: every component's rates, fill, errors, restarts and state,
    /// read from its monitoring server every second. Keys: n, i, o, e, r, f sort; q quits.
    Top {
        /// The agent's monitoring server (its topology's `monitoring: Some(Http(bind: ...))`).
        #[arg(long, default_value = "http://127.0.0.1:41414")]
        url: String,
    },
    /// Run topology unit tests: put each test's events through a source's interceptors and channel
    /// selector (nothing started) and check what every channel receives. Exit 0 when every test
    /// passed, 1 printing each failed expectation (file:line:column), 2 for a malformed file.
    Test {
        /// Test files (RON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show live events of a running agent (headers and body, one JSON object a line) leaving its
    /// sources or entering its sinks, read from its monitoring server.
    Tap(flumen::tap::TapArgs),
    /// Turn an Apache Flume agent's properties into a topology (RON): every property that cannot be
    /// carried over is listed on stderr as FILE:LINE: key: why. Exit 0; 2 when a component kind has
    /// no counterpart (a stand-in is written, the rest converted); 1 for a malformed file.
    ImportFlume(flumen::flume_import::ImportArgs),
    /// Inspect or mend a RocksDb channel's directory while no agent runs it.
    Channel {
        #[command(subcommand)]
        command: ChannelCommand,
    },
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Count the events (and their bytes, oldest and newest `timestamp` header, dead letters).
    /// Changes nothing; exit 1 when an agent holds the directory (its LOCK) or it is damaged.
    Inspect {
        #[command(flatten)]
        target: tools::Target,
    },
    /// Read every value and decode every event: exit 0 when healthy, 1 listing what is damaged.
    Verify {
        #[command(flatten)]
        target: tools::Target,
    },
    /// Write the events to stdout as NDJSON, oldest first: {"seq", "headers", "body"} (or
    /// "body_base64" for a body that is not UTF-8). Removes nothing.
    Export {
        #[command(flatten)]
        target: tools::Target,
        /// The dead letters instead: {"seq", "reason", "size", "value_base64"}.
        #[arg(long)]
        dead_letter: bool,
    },
    /// Append the events of NDJSON on stdin (as `export` writes them) after what the channel
    /// holds, in order; all or nothing. Creates DIR when missing.
    Import {
        #[command(flatten)]
        target: tools::Target,
    },
    /// Set a damaged directory aside (DIR.damaged-<UTC time>) and salvage what is readable into a
    /// fresh DIR, as the agent does when it opens the channel; print the counts. Exit 0 (also when
    /// there was no damage), 1 when it cannot (LOCK held by a running agent, ...).
    Salvage {
        #[command(flatten)]
        target: tools::Target,
    },
    /// List the dead letters (values that could not be read or decoded): sequence, size, reason.
    DeadLetters {
        /// The channel's `dir`.
        dir: PathBuf,
        #[command(flatten)]
        keys: tools::KeysArgs,
    },
    /// Write the dead letters to OUT as JSON Lines: {"seq", "reason", "size", "value_hex"}.
    ExportDeadLetters {
        /// The channel's `dir`.
        dir: PathBuf,
        /// The file to write.
        out: PathBuf,
        #[command(flatten)]
        keys: tools::KeysArgs,
    },
}

fn channel_command(command: ChannelCommand) -> Result<ExitCode, tools::ToolError> {
    match command {
        ChannelCommand::Inspect { target } => tools::inspect_cli(&target),
        ChannelCommand::Verify { target } => tools::verify_cli(&target),
        ChannelCommand::Export { target, dead_letter } => tools::export_cli(&target, dead_letter),
        ChannelCommand::Import { target } => tools::import_cli(&target),
        ChannelCommand::Salvage { target } => tools::salvage_cli(&target),
        ChannelCommand::DeadLetters { dir, keys } => tools::dead_letters_cli(&dir, &keys),
        ChannelCommand::ExportDeadLetters { dir, out, keys } => tools::export_dead_letters_cli(&dir, &out, &keys),
    }
}

/// The most malloc arenas the agent's threads share (glibc's `M_ARENA_MAX`), unless the
/// environment sets `MALLOC_ARENA_MAX`. glibc's default is 8 per core: on a small machine every
/// thread that allocates (sources, sinks, RocksDB's writer and flush threads) keeps a heap of its
/// own, and the freed room in each stays resident. Two arenas keep 2-4 MiB less resident on the
/// durable path at no measured cost in events/s (the agent makes 0.06-0.17 allocations per event).
const MALLOC_ARENAS: libc::c_int = 2;

fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any thread starts.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    flumen::logging::init(cli.log_format);
    match cli.command {
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
        Command::Top { url } => match flumen::top::run(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flumen top: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Test { files } => flumen::topology::unit::run(&files),
        Command::Tap(args) => flumen::tap::run(args),
        Command::ImportFlume(args) => flumen::flume_import::run(&args),
        Command::Channel { command } => match channel_command(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("flumen: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { once, drain_timeout, quiet, strict, watch, topology } => {
            let t = match topology::load(&topology) {
                Ok(t) => t,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            let options = AgentOptions { once, drain_timeout, progress: !quiet, strict, watch };
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
