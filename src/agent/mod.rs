//! The running agent: builds the actor graph of a topology, supervises it, and shuts it down.
//!
//! Channels run on the agent's own arbiter (RocksDB work on their own threads), sources and their
//! selectors on a "sources" arbiter, sink runners on a "sinks" arbiter, so that reading and writing
//! use both cores. A sink in no sink group runs in its own runner; the sinks of a group run in one
//! runner under the group's sink processor. Shutdown goes in the order that loses nothing: sources
//! stop reading and finish their in-flight puts; sinks drain their channels (until empty or the
//! drain deadline) and close; channels flush and close.

pub mod diff;
mod running;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::channel::ChannelError;
use crate::metrics::{ComponentCounters, Metrics};
use crate::topology::Topology;

pub use running::{start, RunningAgent};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Stop by itself once every source reached the end of its input and every channel is drained.
    pub once: bool,
    /// On shutdown, how long sinks may keep draining their channels. Default 10 s.
    pub drain_timeout: Duration,
    /// Show progress on stderr while running (a live line on a terminal, a log line otherwise).
    pub progress: bool,
    /// Fail to start when a channel cannot open (`flumen run --strict`). Default `false`: the
    /// agent starts, the failed channel is reported, back-pressures its sources and retries opening
    /// with backoff while the other flows run.
    pub strict: bool,
    /// Reload when the topology file changes (`flumen run --watch`), besides on SIGHUP.
    pub watch: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            once: false,
            drain_timeout: Duration::from_secs(10),
            progress: false,
            strict: false,
            watch: false,
        }
    }
}

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A channel could not be opened (only with [`AgentOptions::strict`]).
    #[error("channel \"{name}\": {source}")]
    Channel {
        /// The channel's name.
        name: String,
        /// What went wrong.
        source: ChannelError,
    },
    /// A component could not be built.
    #[error("{component}: {message}")]
    Build {
        /// The component, as `source "r1"`.
        component: String,
        /// What went wrong.
        message: String,
    },
    /// The metrics server could not listen.
    #[error("monitoring on {bind}: {source}")]
    Monitoring {
        /// The address.
        bind: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A reload could not be applied (the agent goes on with what it ran).
    #[error("reload: {0}")]
    Reload(String),
    /// The topology file cannot be watched (`run --watch`).
    #[error("watching the topology file: {0}")]
    Watch(notify::Error),
    /// Signal handlers could not be installed.
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
}

pub(crate) fn serve_metrics(
    bind: &str,
    metrics: Arc<Metrics>,
    agent: String,
) -> Result<actix_web::dev::ServerHandle, AgentError> {
    crate::monitoring::serve(bind, &agent, metrics)
        .map_err(|source| AgentError::Monitoring { bind: bind.into(), source })
}

/// Runs `topology` until SIGINT/SIGTERM (or, with `once`, until every source ended and every
/// channel drained), then shuts down gracefully. A second signal exits the process at once
/// (status 130); durable channels still hold every event not yet delivered.
///
/// SIGHUP, and with [`AgentOptions::watch`] a change of the topology file (debounced by
/// [`WATCH_DEBOUNCE`]), reload the file ([`reload`]).
///
/// # Errors
/// When the agent cannot start.
pub async fn run(topology: Topology, options: AgentOptions) -> Result<Summary, AgentError> {
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel(16);
    let _watcher = match options.watch {
        true => Some(watch_file(&topology.file, changed_tx).map_err(AgentError::Watch)?),
        false => None,
    };
    let once = options.once;
    let progress = options.progress;
    let mut agent = start(topology, options).await?;
    crate::service::ready();
    let progress = progress.then(|| spawn_progress(agent.metrics.clone()));
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                break;
            }
            _ = hup.recv() => reload(&mut agent, "SIGHUP").await,
            Some(()) = changed.recv() => {
                // Editors write a file in several steps: wait for a quiet spell.
                while let Ok(Some(())) = actix_rt::time::timeout(WATCH_DEBOUNCE, changed.recv()).await {}
                reload(&mut agent, "the file changed").await;
            }
            _ = agent.finished(), if once => {
                tracing::info!("every source reached its end and every channel is drained");
                break;
            }
        }
    }
    crate::service::stopping();
    actix_rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting now; durable channels keep what was not delivered");
        std::process::exit(130);
    });
    let summary = agent.shutdown().await;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok(summary)
}

/// How long the topology file must stay unchanged before `run --watch` reloads it.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(500);

/// Watches the folder of `file` (editors and `mv` replace a file rather than write it in place)
/// and sends `()` on `changed` for every event naming `file`.
fn watch_file(
    file: &std::path::Path,
    changed: tokio::sync::mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = file.parent().map_or_else(|| std::path::PathBuf::from("."), std::path::Path::to_path_buf);
    let name = file.file_name().map(std::ffi::OsStr::to_os_string);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let touches = |p: &std::path::PathBuf| p.file_name().map(std::ffi::OsStr::to_os_string) == name;
            if !event.kind.is_access() && event.paths.iter().any(touches) {
                let _ = changed.try_send(());
            }
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tracing::info!(file = %file.display(), "watching the topology file: a change reloads it");
    Ok(watcher)
}

/// Reloads `agent` from its topology file, as SIGHUP does.
///
/// The file is loaded and validated first: an invalid file changes nothing (the agent goes on;
/// every problem is logged as `FILE:LINE:COL: COMPONENT: message` and `ReloadFailureCount`
/// counts it). A valid one is applied component by component ([`RunningAgent::apply`]); when
/// applying fails, the previous topology is applied again (the flipped diff) and the failure is
/// counted. A successful reload counts `ReloadSuccessCount`, sets `LastReloadTime` and logs what
/// was started, restarted, rewired, stopped and kept. Before all that, every source with `tls`
/// re-reads its certificate files ([`crate::tls::server::reload_all`]), whatever the topology
/// file holds.
pub async fn reload(agent: &mut RunningAgent, why: &str) {
    let file = agent.topology().file.clone();
    tracing::info!(file = %file.display(), "reloading: {why}");
    crate::service::reloading();
    let _ready_again = ReadyAgain;
    // Sources the reload keeps as they are re-read their certificate files here (those it
    // starts or restarts read them anew).
    crate::tls::server::reload_all(why);
    let counters = agent.metrics.clone();
    let new = match crate::topology::load(&file) {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("{e}");
            }
            counters.agent.reload_failure.inc();
            tracing::error!(
                problems = errors.0.len(),
                "reload refused: the file is invalid; the agent goes on unchanged"
            );
            return;
        }
    };
    let old = agent.topology().clone();
    let started = Instant::now();
    match agent.apply(new).await {
        Ok(diff) => {
            counters.agent.reload_success.inc();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            counters.agent.last_reload.set(now.as_millis() as u64);
            if diff.is_empty() {
                tracing::info!("reloaded: nothing changed");
            } else {
                tracing::info!(took = ?started.elapsed(), "reloaded: {}", diff.describe());
            }
        }
        Err(e) => {
            counters.agent.reload_failure.inc();
            tracing::error!(error = %e, "reload failed; going back to the previous topology");
            match agent.apply(old).await {
                Ok(diff) if !diff.is_empty() => tracing::warn!("rolled back: {}", diff.describe()),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "rolling back failed too; the agent runs what it could start"),
            }
        }
    }
}

fn spawn_progress(metrics: Arc<Metrics>) -> indicatif::ProgressBar {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::hidden() };
    let shown = bar.clone();
    actix_rt::spawn(async move {
        let started = Instant::now();
        let mut last_log = Instant::now();
        loop {
            let t = Totals::of(&metrics);
            let line = format!(
                "{:>6.1}s  received {}  delivered {}  in channels {}  filtered {}",
                started.elapsed().as_secs_f64(),
                t.received,
                t.delivered,
                t.in_channels,
                t.filtered
            );
            if terminal {
                shown.set_message(line);
                shown.tick();
            } else if last_log.elapsed() >= Duration::from_secs(10) {
                tracing::info!("{line}");
                last_log = Instant::now();
            }
            if shown.is_finished() {
                return;
            }
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        }
    });
    bar
}

/// Tells the service manager the agent is ready again once a reload ended, however it ended.
struct ReadyAgain;

impl Drop for ReadyAgain {
    fn drop(&mut self) {
        crate::service::ready();
    }
}

/// Sums over all components.
struct Totals {
    received: u64,
    delivered: u64,
    in_channels: u64,
    filtered: u64,
}

impl Totals {
    fn of(metrics: &Metrics) -> Self {
        let mut t = Totals { received: 0, delivered: 0, in_channels: 0, filtered: 0 };
        for c in metrics.snapshot().values() {
            match c {
                ComponentCounters::Source(s) => {
                    t.received += s.event_received.get();
                    t.filtered += s.dropped_by_filter.get();
                }
                ComponentCounters::Channel(c) => t.in_channels += c.size.get(),
                ComponentCounters::Sink(k) => t.delivered += k.drain_success.get(),
            }
        }
        t
    }
}

/// What a run did, per component, and where the output went.
#[derive(Debug, Clone)]
pub struct Summary {
    /// `"KIND.name"` to `(counter, value)` pairs with Flume's names.
    pub components: BTreeMap<String, Vec<(&'static str, u64)>>,
    /// Sink name to where its output went.
    pub outputs: BTreeMap<String, String>,
}

impl Summary {
    fn new(topology: &Topology, metrics: &Metrics) -> Self {
        let components = metrics.snapshot().into_iter().map(|(k, c)| (k, c.values())).collect();
        let outputs = topology.sinks.iter().map(|(n, s)| (n.clone(), s.kind.output())).collect();
        Summary { components, outputs }
    }

    /// One counter of one component (`"SINK.k1"`, `"EventDrainSuccessCount"`); 0 when absent.
    pub fn get(&self, component: &str, counter: &str) -> u64 {
        self.components.get(component).and_then(|c| c.iter().find(|(n, _)| *n == counter)).map_or(0, |(_, v)| *v)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<22} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "component", "received", "accepted", "filtered", "malformed", "restarts"
        )?;
        for (key, _) in self.components.iter().filter(|(k, _)| k.starts_with("SOURCE.")) {
            let g = |c| self.get(key, c);
            writeln!(
                f,
                "{:<22} {:>10} {:>10} {:>10} {:>10} {:>9}",
                key,
                g("EventReceivedCount"),
                g("EventAcceptedCount"),
                g("EventDroppedByFilterCount"),
                g("EventMalformedCount"),
                g("RestartCount")
            )?;
        }
        writeln!(f, "{:<22} {:>10} {:>10} {:>10} {:>10}", "", "put", "taken", "rolled back", "left")?;
        for (key, _) in self.components.iter().filter(|(k, _)| k.starts_with("CHANNEL.")) {
            let g = |c| self.get(key, c);
            writeln!(
                f,
                "{:<22} {:>10} {:>10} {:>10} {:>10}",
                key,
                g("EventPutSuccessCount"),
                g("EventTakeSuccessCount"),
                g("EventRollbackCount"),
                g("ChannelSize")
            )?;
            if g("ChannelFailed") > 0 {
                writeln!(
                    f,
                    "{:<22} FAILED: its storage did not open ({} failed attempts); see the log",
                    "",
                    g("ChannelOpenFailureCount")
                )?;
            }
            if g("ChannelDamagedCount") > 0 || g("EventDeadLetterCount") > 0 {
                writeln!(
                    f,
                    "{:<22} damaged {} times: {} events salvaged, {} dead-lettered; see the log for the damaged copies",
                    "",
                    g("ChannelDamagedCount"),
                    g("ChannelSalvagedCount"),
                    g("EventDeadLetterCount")
                )?;
            }
        }
        writeln!(f, "{:<22} {:>10} {:>10} {:>9}  output", "", "delivered", "batches", "restarts")?;
        for (key, _) in self.components.iter().filter(|(k, _)| k.starts_with("SINK.")) {
            let g = |c| self.get(key, c);
            let name = key.trim_start_matches("SINK.");
            writeln!(
                f,
                "{:<22} {:>10} {:>10} {:>9}  {}",
                key,
                g("EventDrainSuccessCount"),
                g("BatchCompleteCount") + g("BatchUnderflowCount"),
                g("RestartCount"),
                self.outputs.get(name).map_or("", String::as_str)
            )?;
        }
        Ok(())
    }
}
