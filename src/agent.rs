//! The running agent: builds the actor graph of a topology, supervises it, and shuts it down.
//!
//! Channels run on the agent's own arbiter (RocksDB work on their own threads), sources and their
//! selectors on a "sources" arbiter, sink runners on a "sinks" arbiter, so that reading and writing
//! use both cores. A sink in no sink group runs in its own runner; the sinks of a group run in one
//! runner under the group's sink processor. Shutdown goes in the order that loses nothing: sources
//! stop reading and finish their in-flight puts; sinks drain their channels (until empty or the
//! drain deadline) and close; channels flush and close.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::channel::memory::MemoryChannel;
use crate::channel::{ChannelError, ChannelHandle, Close, Size};
use crate::interceptor::InterceptorChain;
use crate::metrics::{ComponentCounters, Metrics};
use crate::selector::Selector;
use crate::sink::group::Member;
use crate::sink::{SinkFactory, SinkRunner};
use crate::source::{SourceActor, SourceContext, SourceProgress};
use crate::supervision::IsIdle;
use crate::topology::{ChannelConfig, Monitoring, Topology};

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
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions { once: false, drain_timeout: Duration::from_secs(10), progress: false, strict: false }
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
    /// Signal handlers could not be installed.
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
}

/// A started agent.
pub struct RunningAgent {
    topology: Topology,
    /// The agent's counters.
    pub metrics: Arc<Metrics>,
    channels: BTreeMap<String, ChannelHandle>,
    sources: Vec<Addr<SourceActor>>,
    sinks: Vec<Addr<SinkRunner>>,
    source_stop: watch::Sender<bool>,
    sink_stop: watch::Sender<Option<Instant>>,
    ended: Arc<Mutex<BTreeSet<String>>>,
    progress: BTreeMap<String, Arc<SourceProgress>>,
    arbiters: Vec<Arbiter>,
    server: Option<actix_web::dev::ServerHandle>,
    options: AgentOptions,
}

/// Starts every component of `topology`. Must be called inside a running actix `System`.
///
/// # Errors
/// When a component cannot be built, monitoring cannot listen, or (with
/// [`AgentOptions::strict`]) a channel cannot be opened.
pub async fn start(topology: Topology, options: AgentOptions) -> Result<RunningAgent, AgentError> {
    let metrics = Metrics::new();
    let mut channels = BTreeMap::new();
    for (name, config) in &topology.channels {
        let counters = metrics.channel(name);
        let handle = match config {
            ChannelConfig::Memory(c) => ChannelHandle::new(name, MemoryChannel::new(c.clone(), counters).start()),
            ChannelConfig::RocksDb(c) => crate::channel::rocksdb::start(name, c.clone(), counters, options.strict)
                .await
                .map_err(|source| AgentError::Channel { name: name.clone(), source })?,
        };
        channels.insert(name.clone(), handle);
    }

    let sources_arbiter = Arbiter::new();
    let sinks_arbiter = Arbiter::new();
    let (source_stop, source_stop_rx) = watch::channel(false);
    let (sink_stop, sink_stop_rx) = watch::channel(None);
    let ended: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    let mut sinks = Vec::new();
    let grouped: BTreeSet<&String> = topology.sink_groups.values().flat_map(|g| &g.sinks).collect();
    let member = |name: &String| {
        let config = &topology.sinks[name];
        let counters = metrics.sink(name);
        let in_group = grouped.contains(name);
        let (name, kind, batch_size) = (name.clone(), config.kind.clone(), config.batch_size);
        // Called on the sinks arbiter: a factory is not `Send`.
        move || {
            let factory: SinkFactory = {
                let (name, kind, counters) = (name.clone(), kind.clone(), counters.clone());
                std::rc::Rc::new(move || kind.build(&name, counters.clone(), in_group))
            };
            Member { name: name.clone(), batch_size, factory, counters: counters.clone() }
        }
    };
    for (name, config) in topology.sinks.iter().filter(|(name, _)| !grouped.contains(name)) {
        let channel = channels[&config.channel].clone();
        let (name, stop, member) = (name.clone(), sink_stop_rx.clone(), member(name));
        sinks.push(Supervisor::start_in_arbiter(&sinks_arbiter.handle(), move |_| {
            let m = member();
            SinkRunner::new(&name, channel, m.batch_size, m.factory, m.counters, stop)
        }));
    }
    for (name, group) in &topology.sink_groups {
        // Validation makes every sink of a group drain the same channel.
        let channel = channels[&topology.sinks[&group.sinks[0]].channel].clone();
        let members: Vec<_> = group.sinks.iter().map(member).collect();
        let (name, processor, stop) = (name.clone(), group.processor.clone(), sink_stop_rx.clone());
        sinks.push(Supervisor::start_in_arbiter(&sinks_arbiter.handle(), move |_| {
            let members = members.iter().map(|m| m()).collect();
            SinkRunner::group(&name, channel, members, processor, stop)
        }));
    }

    let mut sources = Vec::new();
    let mut progress = BTreeMap::new();
    for (name, config) in &topology.sources {
        let counters = metrics.source(name);
        let interceptors = InterceptorChain::build(&config.interceptors)
            .map_err(|message| AgentError::Build { component: format!("source \"{name}\""), message })?;
        let targets: BTreeMap<String, ChannelHandle> =
            config.channels.iter().map(|c| (c.clone(), channels[c].clone())).collect();
        let selector_config = config.selector.clone();
        let selector_counters = counters.clone();
        let selector = Selector::start_in_arbiter(&sources_arbiter.handle(), move |_| {
            Selector::new(selector_config, targets, selector_counters)
        });
        let end: Arc<dyn Fn() + Send + Sync> = {
            let (ended, name) = (ended.clone(), name.clone());
            Arc::new(move || {
                ended.lock().expect("end set lock is never poisoned").insert(name.clone());
            })
        };
        let ctx = SourceContext::new(
            name,
            config.batch_size,
            config.linger,
            counters,
            selector,
            Arc::new(interceptors),
            source_stop_rx.clone(),
            end,
        )
        .with_once(options.once);
        progress.insert(name.clone(), ctx.progress());
        let kind = config.kind.clone();
        sources.push(Supervisor::start_in_arbiter(&sources_arbiter.handle(), move |_| SourceActor::new(kind, ctx)));
    }

    let server = match &topology.monitoring {
        Some(Monitoring::Http { bind }) => Some(serve_metrics(bind, metrics.clone(), topology.agent.clone())?),
        None => None,
    };
    tracing::info!(
        agent = %topology.agent,
        sources = topology.sources.len(),
        channels = topology.channels.len(),
        sinks = topology.sinks.len(),
        sink_groups = topology.sink_groups.len(),
        "agent started"
    );
    Ok(RunningAgent {
        topology,
        metrics,
        channels,
        sources,
        sinks,
        source_stop,
        sink_stop,
        ended,
        progress,
        arbiters: vec![sources_arbiter, sinks_arbiter],
        server,
        options,
    })
}

fn serve_metrics(bind: &str, metrics: Arc<Metrics>, agent: String) -> Result<actix_web::dev::ServerHandle, AgentError> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(move || {
        let (json, prom, agent) = (metrics.clone(), metrics.clone(), agent.clone());
        App::new()
            .route(
                "/metrics",
                web::get().to(move || {
                    let body = json.to_json().to_string();
                    async move { HttpResponse::Ok().content_type("application/json").body(body) }
                }),
            )
            .route(
                "/metrics/prometheus",
                web::get().to(move || {
                    let body = prom.to_prometheus(&agent);
                    async move { HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body) }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(bind)
    .map_err(|source| AgentError::Monitoring { bind: bind.into(), source })?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%bind, "metrics served at /metrics and /metrics/prometheus");
    Ok(handle)
}

impl RunningAgent {
    /// The topology the agent runs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether every source reached the end of its input and has no put in flight (never, with
    /// an endless source). A source that puts again after its end, or restarts, is not at its end.
    pub fn sources_ended(&self) -> bool {
        let ended = self.ended.lock().expect("end set lock is never poisoned");
        self.topology.sources.iter().all(|(name, s)| {
            s.kind.is_finite() && ended.contains(name) && self.progress.get(name).is_some_and(|p| p.is_idle_at_end())
        })
    }

    /// Puts started by all sources so far.
    fn puts_started(&self) -> u64 {
        self.progress.values().map(|p| p.snapshot().puts_started).sum()
    }

    /// Events held by all channels together.
    pub async fn channel_sizes(&self) -> u64 {
        let mut total = 0;
        for ch in self.channels.values() {
            total += ch.size.send(Size).await.unwrap_or(0);
        }
        total
    }

    /// Resolves once nothing is left to do: every source is at its end with no put in flight,
    /// and every channel holds nothing (no event available, no take transaction of a sink
    /// outstanding), on two checks 50 ms apart with no put started in between.
    pub async fn finished(&self) {
        let mut quiet_since: Option<u64> = None;
        loop {
            let puts = self.puts_started();
            let done = self.sources_ended() && self.channel_sizes().await == 0 && self.sources_ended();
            quiet_since = match (done, quiet_since) {
                (true, Some(before)) if before == puts => return,
                (true, _) => Some(puts),
                (false, _) => None,
            };
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the agent without losing anything acknowledged: sources first, then sinks (after
    /// draining for at most the drain timeout), then channels. Returns the run's summary.
    pub async fn shutdown(self) -> Summary {
        tracing::info!("stopping: sources first");
        let _ = self.source_stop.send(true);
        wait_idle(&self.sources, self.options.drain_timeout).await;
        tracing::info!("sources stopped; sinks drain their channels");
        let _ = self.sink_stop.send(Some(Instant::now() + self.options.drain_timeout));
        wait_idle(&self.sinks, self.options.drain_timeout + Duration::from_secs(5)).await;
        for ch in self.channels.values() {
            let _ = ch.close.send(Close).await;
        }
        if let Some(server) = &self.server {
            server.stop(true).await;
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        tracing::info!("agent stopped");
        Summary::new(&self.topology, &self.metrics)
    }
}

async fn wait_idle<A>(actors: &[Addr<A>], timeout: Duration)
where
    A: Actor<Context = Context<A>> + Handler<IsIdle>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        for a in actors {
            if !a.send(IsIdle).await.unwrap_or(true) {
                all = false;
                break;
            }
        }
        if all || Instant::now() >= deadline {
            if !all {
                tracing::warn!("some components did not finish in time");
            }
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `topology` until SIGINT/SIGTERM (or, with `once`, until every source ended and every
/// channel drained), then shuts down gracefully. A second signal exits the process at once
/// (status 130); durable channels still hold every event not yet delivered.
///
/// # Errors
/// When the agent cannot start.
pub async fn run(topology: Topology, options: AgentOptions) -> Result<Summary, AgentError> {
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let once = options.once;
    let progress = options.progress;
    let agent = start(topology, options).await?;
    crate::service::ready();
    let progress = progress.then(|| spawn_progress(agent.metrics.clone()));
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = agent.finished(), if once => tracing::info!("every source reached its end and every channel is drained"),
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
