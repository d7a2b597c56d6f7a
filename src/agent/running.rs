//! The running graph: every component's actor, stop signal and wiring, keyed by name, and the one
//! code path that both starts an agent and reloads it, [`RunningAgent::apply`].
//!
//! The shape is Vector's `topology::running` (handles keyed by component name, a stop signal per
//! component, changed sources stopped before sinks are detached, only added or changed pieces
//! built); what flumen hands from the old graph to the new one is its channels, with what they
//! hold and their sinks' take transactions, and its unchanged sources with their connections.
//! Starting an agent is applying its topology to an empty one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;

use super::diff::{sink_units, Diff, SinkUnit};
use super::{AgentError, AgentOptions};
use crate::channel::memory::{MemoryChannel, Reconfigure};
use crate::channel::spillable::{self, SpillableChannel};
use crate::channel::{ChannelHandle, Close, Size};
use crate::interceptor::InterceptorChain;
use crate::metrics::Metrics;
use crate::selector::Selector;
use crate::sink::group::Member;
use crate::sink::{SinkFactory, SinkRunner};
use crate::source::{Pipeline, PipelineHandle, SourceActor, SourceConfig, SourceContext, SourceKind, SourceProgress};
use crate::supervision::IsIdle;
use crate::topology::{ChannelConfig, Monitoring, Topology};

/// A running source: its actor, its own stop signal, and the pipeline a reload can swap.
struct RunningSource {
    addr: Addr<SourceActor>,
    stop: watch::Sender<bool>,
    pipeline: PipelineHandle,
    progress: Arc<SourceProgress>,
}

/// A running channel: the handle sources and sinks use, and (for `Memory` and `Spillable`) the
/// actor to reconfigure in place.
struct RunningChannel {
    handle: ChannelHandle,
    memory: Option<Addr<MemoryChannel>>,
    spillable: Option<Addr<SpillableChannel>>,
}

/// A running sink unit (a sink in no group, or a sink group): its runner and its own stop signal.
struct RunningUnit {
    unit: SinkUnit,
    addr: Addr<SinkRunner>,
    stop: watch::Sender<Option<Instant>>,
}

/// A started agent.
pub struct RunningAgent {
    /// What runs now: updated component by component as [`RunningAgent::apply`] goes, so that a
    /// failed apply can be rolled back by applying the previous topology (the flipped diff).
    topology: Topology,
    /// The agent's counters.
    pub metrics: Arc<Metrics>,
    channels: BTreeMap<String, RunningChannel>,
    sources: BTreeMap<String, RunningSource>,
    units: BTreeMap<String, RunningUnit>,
    ended: Arc<Mutex<BTreeSet<String>>>,
    sources_arbiter: Arbiter,
    sinks_arbiter: Arbiter,
    server: Option<actix_web::dev::ServerHandle>,
    options: AgentOptions,
}

/// Starts every component of `topology`. Must be called inside a running actix `System`.
///
/// # Errors
/// When a component cannot be built, monitoring cannot listen, or (with
/// [`AgentOptions::strict`]) a channel cannot be opened.
pub async fn start(topology: Topology, options: AgentOptions) -> Result<RunningAgent, AgentError> {
    let empty = Topology {
        agent: topology.agent.clone(),
        monitoring: None,
        rocksdb_memory: topology.rocksdb_memory,
        sources: BTreeMap::new(),
        channels: BTreeMap::new(),
        sinks: BTreeMap::new(),
        sink_groups: BTreeMap::new(),
        file: topology.file.clone(),
    };
    let mut agent = RunningAgent {
        topology: empty,
        metrics: Metrics::new(),
        channels: BTreeMap::new(),
        sources: BTreeMap::new(),
        units: BTreeMap::new(),
        ended: Arc::default(),
        sources_arbiter: Arbiter::new(),
        sinks_arbiter: Arbiter::new(),
        server: None,
        options,
    };
    agent.apply(topology).await?;
    let t = &agent.topology;
    tracing::info!(
        agent = %t.agent,
        sources = t.sources.len(),
        channels = t.channels.len(),
        sinks = t.sinks.len(),
        sink_groups = t.sink_groups.len(),
        "agent started"
    );
    Ok(agent)
}

impl RunningAgent {
    /// The topology the agent runs.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Turns the running graph into `new`'s, touching only what differs ([`Diff`]), and answers
    /// what was done. In order: the pipelines of sources to rewire are taken (their puts in
    /// flight finish first; new puts wait); changed and removed sources stop (finishing their
    /// puts and acknowledgements); reopened channels' sinks finish their batch and the channels
    /// are closed; new, replaced and reopened channels open, resized ones are reconfigured;
    /// rewired sources get their new pipelines and go on; changed and removed sinks finish their
    /// batch (those of removed or replaced channels drain them, up to the drain timeout) and stop;
    /// removed and replaced channels close; new and changed sinks, then sources, start.
    ///
    /// # Errors
    /// [`AgentError::Reload`] when a rewired source's puts did not finish within the drain
    /// timeout (nothing was changed then); a component that cannot be built, monitoring that
    /// cannot listen, a channel that cannot open under `strict` (the caller rolls back by
    /// applying the previous topology).
    pub async fn apply(&mut self, new: Topology) -> Result<Diff, AgentError> {
        let diff = Diff::between(&self.topology, &new);
        // Resized in place: open RocksDb channels use the new budget at once.
        crate::channel::rocksdb::budget::apply(&new.rocksdb_memory);
        self.topology.rocksdb_memory = new.rocksdb_memory;
        for (resource, from, to) in &diff.moved {
            tracing::info!(%resource, from = %from, to = %to, "passes from one source to another: the old one stops first");
        }

        // Rewired sources: wait for their puts in flight, hold new ones until the swap.
        let mut held = Vec::new();
        for name in &diff.rewired {
            let pipeline = self.sources[name].pipeline.clone();
            match actix_rt::time::timeout(self.options.drain_timeout, pipeline.write_owned()).await {
                Ok(guard) => held.push((name.clone(), guard)),
                Err(_) => {
                    return Err(AgentError::Reload(format!(
                        "source \"{name}\": its puts in flight did not finish within the drain timeout ({:?}); nothing was changed",
                        self.options.drain_timeout
                    )))
                }
            }
        }

        for name in &diff.sources.changed {
            if let Some(bind) = same_tcp_listener(&self.topology.sources[name].kind, &new.sources[name].kind) {
                crate::source::netcat::hand_over(bind);
            }
        }
        let stopping: Vec<String> = diff.sources.stopping().cloned().collect();
        self.stop_sources(&stopping, &diff.sources.removed).await;

        for name in &diff.reopened {
            let units: Vec<String> =
                self.units.iter().filter(|(_, u)| &u.unit.channel == name).map(|(n, _)| n.clone()).collect();
            self.stop_units(&units, |_| Duration::ZERO).await;
            if let Some(old) = self.channels.remove(name) {
                let _ = old.handle.close.send(Close).await;
            }
            self.topology.channels.remove(name);
        }
        let mut retired: BTreeMap<String, RunningChannel> = BTreeMap::new();
        for name in diff.channels.removed.iter().chain(&diff.replaced) {
            if let Some(old) = self.channels.remove(name) {
                retired.insert(name.clone(), old);
            }
            self.topology.channels.remove(name);
        }
        for name in diff.channels.added.iter().chain(&diff.replaced).chain(&diff.reopened) {
            let config = new.channels[name].clone();
            let channel = self.open_channel(name, &config).await?;
            self.channels.insert(name.clone(), channel);
            self.topology.channels.insert(name.clone(), config);
        }
        for name in &diff.resized {
            if let (Some(ChannelConfig::Memory(c)), Some(memory)) =
                (new.channels.get(name), self.channels.get(name).and_then(|c| c.memory.as_ref()))
            {
                memory.do_send(Reconfigure(c.clone()));
                self.topology.channels.insert(name.clone(), new.channels[name].clone());
            }
            if let (Some(ChannelConfig::Spillable(c)), Some(addr)) =
                (new.channels.get(name), self.channels.get(name).and_then(|c| c.spillable.as_ref()))
            {
                addr.do_send(spillable::Reconfigure(c.clone()));
                self.topology.channels.insert(name.clone(), new.channels[name].clone());
            }
        }

        for (name, mut guard) in held {
            let config = &new.sources[&name];
            *guard = self.pipeline(&name, config)?;
            self.topology.sources.insert(name, config.clone());
        }

        let new_units = sink_units(&new);
        let stopping: Vec<String> = diff.units.stopping().filter(|u| self.units.contains_key(*u)).cloned().collect();
        let drain = self.options.drain_timeout;
        self.stop_units(&stopping, |unit| if retired.contains_key(&unit.channel) { drain } else { Duration::ZERO })
            .await;
        for (_, channel) in retired {
            let _ = channel.handle.close.send(Close).await;
        }
        for name in &diff.channels.removed {
            self.metrics.remove(&format!("CHANNEL.{name}"));
            self.metrics.remove(&format!("CHANNEL.{name}.overflow"));
        }
        for name in self.topology.sinks.keys().filter(|k| !new.sinks.contains_key(*k)) {
            self.metrics.remove(&format!("SINK.{name}"));
        }
        self.topology.sinks = new.sinks.clone();
        self.topology.sink_groups = new.sink_groups.clone();
        for name in diff.units.added.iter().chain(&diff.units.changed) {
            let unit = new_units[name].clone();
            self.start_unit(name, unit);
        }

        for name in diff.sources.added.iter().chain(&diff.sources.changed) {
            let config = new.sources[name].clone();
            self.start_source(name, &config)?;
            self.topology.sources.insert(name.clone(), config);
        }

        if diff.monitoring {
            if let Some(server) = self.server.take() {
                server.stop(true).await;
            }
            self.topology.monitoring = None;
            if let Some(Monitoring::Http { bind }) = &new.monitoring {
                self.server = Some(super::serve_metrics(bind, self.metrics.clone(), new.agent.clone())?);
            }
        }
        self.topology.monitoring = new.monitoring;
        self.topology.agent = new.agent;
        self.topology.file = new.file;
        Ok(diff)
    }

    async fn open_channel(&self, name: &str, config: &ChannelConfig) -> Result<RunningChannel, AgentError> {
        let counters = self.metrics.channel(name);
        Ok(match config {
            ChannelConfig::Memory(c) => {
                let addr = MemoryChannel::new(c.clone(), counters).start();
                RunningChannel { handle: ChannelHandle::new(name, addr.clone()), memory: Some(addr), spillable: None }
            }
            ChannelConfig::RocksDb(c) => {
                let handle = crate::channel::rocksdb::start(name, c.clone(), counters, self.options.strict)
                    .await
                    .map_err(|source| AgentError::Channel { name: name.into(), source })?;
                RunningChannel { handle, memory: None, spillable: None }
            }
            ChannelConfig::Spillable(c) => {
                let overflow = self.metrics.channel(&format!("{name}.overflow"));
                let (handle, addr) = spillable::start(name, c.clone(), counters, overflow, self.options.strict)
                    .await
                    .map_err(|source| AgentError::Channel { name: name.into(), source })?;
                RunningChannel { handle, memory: None, spillable: Some(addr) }
            }
        })
    }

    /// A new pipeline for source `name`: its interceptor chain and a selector over its channels
    /// as they run now.
    fn pipeline(&self, name: &str, config: &SourceConfig) -> Result<Pipeline, AgentError> {
        let counters = self.metrics.source(name);
        let interceptors = InterceptorChain::build(&config.interceptors)
            .map_err(|message| AgentError::Build { component: format!("source \"{name}\""), message })?;
        let targets: BTreeMap<String, ChannelHandle> = config
            .channels
            .iter()
            .filter_map(|c| self.channels.get(c).map(|r| (c.clone(), r.handle.clone())))
            .collect();
        let selector_config = config.selector.clone();
        let selector = Selector::start_in_arbiter(&self.sources_arbiter.handle(), move |_| {
            Selector::new(selector_config, targets, counters)
        });
        Ok(Pipeline { interceptors: Arc::new(interceptors), selector })
    }

    fn start_source(&mut self, name: &str, config: &SourceConfig) -> Result<(), AgentError> {
        let counters = self.metrics.source(name);
        let Pipeline { interceptors, selector } = self.pipeline(name, config)?;
        let (stop, stop_rx) = watch::channel(false);
        self.ended.lock().expect("end set lock is never poisoned").remove(name);
        let end: Arc<dyn Fn() + Send + Sync> = {
            let (ended, name) = (self.ended.clone(), name.to_string());
            Arc::new(move || {
                ended.lock().expect("end set lock is never poisoned").insert(name.clone());
            })
        };
        let ctx =
            SourceContext::new(name, config.batch_size, config.linger, counters, selector, interceptors, stop_rx, end)
                .with_once(self.options.once);
        let (pipeline, progress) = (ctx.pipeline(), ctx.progress());
        let kind = config.kind.clone();
        let addr = Supervisor::start_in_arbiter(&self.sources_arbiter.handle(), move |_| SourceActor::new(kind, ctx));
        self.sources.insert(name.to_string(), RunningSource { addr, stop, pipeline, progress });
        Ok(())
    }

    /// Stops sources as on shutdown (they stop reading, finish their puts in flight and their
    /// acknowledgements), waiting up to the drain timeout; forgets the counters of `removed` ones.
    async fn stop_sources(&mut self, names: &[String], removed: &BTreeSet<String>) {
        let stopped: Vec<(String, RunningSource)> =
            names.iter().filter_map(|n| self.sources.remove(n).map(|s| (n.clone(), s))).collect();
        for (_, s) in &stopped {
            let _ = s.stop.send(true);
        }
        let addrs: Vec<Addr<SourceActor>> = stopped.iter().map(|(_, s)| s.addr.clone()).collect();
        wait_idle(&addrs, self.options.drain_timeout).await;
        let mut ended = self.ended.lock().expect("end set lock is never poisoned");
        for (name, _) in &stopped {
            self.topology.sources.remove(name);
            ended.remove(name);
            if removed.contains(name) {
                self.metrics.remove(&format!("SOURCE.{name}"));
            }
        }
        // Dropping the last address ends each idle actor (its supervisor does not restart it).
    }

    /// Starts the runner of sink unit `name`.
    fn start_unit(&mut self, name: &str, unit: SinkUnit) {
        let Some(channel) = self.channels.get(&unit.channel).map(|c| c.handle.clone()) else {
            tracing::error!(unit = %name, channel = %unit.channel, "the channel of a sink is not running; the sink is not started");
            return;
        };
        let in_group = unit.processor.is_some();
        let members: Vec<_> = unit
            .sinks
            .iter()
            .map(|(sink, config)| {
                let counters = self.metrics.sink(sink);
                let (sink, kind, batch_size) = (sink.clone(), config.kind.clone(), config.batch_size);
                // Called on the sinks arbiter: a factory is not `Send`.
                move || {
                    let factory: SinkFactory = {
                        let (sink, kind, counters) = (sink.clone(), kind.clone(), counters.clone());
                        std::rc::Rc::new(move || kind.build(&sink, counters.clone(), in_group))
                    };
                    Member { name: sink.clone(), batch_size, factory, counters: counters.clone() }
                }
            })
            .collect();
        let (stop, stop_rx) = watch::channel(None);
        let label = unit.sinks.first().map(|(n, _)| n.clone()).unwrap_or_default();
        let group = name.strip_prefix("sink group \"").map(|n| n.trim_end_matches('"').to_string());
        let processor = unit.processor.clone();
        let addr = Supervisor::start_in_arbiter(&self.sinks_arbiter.handle(), move |_| {
            let mut members: Vec<Member> = members.iter().map(|m| m()).collect();
            match (group, processor) {
                (Some(group), Some(processor)) => SinkRunner::group(&group, channel, members, processor, stop_rx),
                _ => {
                    let m = members.remove(0);
                    SinkRunner::new(&label, channel, m.batch_size, m.factory, m.counters, stop_rx)
                }
            }
        });
        self.units.insert(name.to_string(), RunningUnit { unit, addr, stop });
    }

    /// Stops sink units: each finishes (commits or rolls back) its current batch, drains its
    /// channel for at most `drain(unit)`, closes its sinks and stops.
    async fn stop_units(&mut self, names: &[String], drain: impl Fn(&SinkUnit) -> Duration) {
        let stopped: Vec<RunningUnit> = names.iter().filter_map(|n| self.units.remove(n)).collect();
        let mut longest = Duration::ZERO;
        for u in &stopped {
            let d = drain(&u.unit);
            longest = longest.max(d);
            let _ = u.stop.send(Some(Instant::now() + d));
        }
        let addrs: Vec<Addr<SinkRunner>> = stopped.iter().map(|u| u.addr.clone()).collect();
        wait_idle(&addrs, longest + Duration::from_secs(5)).await;
    }

    /// Whether every source reached the end of its input and has no put in flight (never, with
    /// an endless source). A source that puts again after its end, or restarts, is not at its end.
    pub fn sources_ended(&self) -> bool {
        let ended = self.ended.lock().expect("end set lock is never poisoned");
        self.topology.sources.iter().all(|(name, s)| {
            s.kind.is_finite()
                && ended.contains(name)
                && self.sources.get(name).is_some_and(|r| r.progress.is_idle_at_end())
        })
    }

    /// Puts started by all sources so far.
    fn puts_started(&self) -> u64 {
        self.sources.values().map(|s| s.progress.snapshot().puts_started).sum()
    }

    /// Events held by all channels together.
    pub async fn channel_sizes(&self) -> u64 {
        let mut total = 0;
        for ch in self.channels.values() {
            total += ch.handle.size.send(Size).await.unwrap_or(0);
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
    pub async fn shutdown(mut self) -> super::Summary {
        tracing::info!("stopping: sources first");
        self.metrics.agent_stopping();
        for s in self.sources.values() {
            let _ = s.stop.send(true);
        }
        let addrs: Vec<Addr<SourceActor>> = self.sources.values().map(|s| s.addr.clone()).collect();
        wait_idle(&addrs, self.options.drain_timeout).await;
        tracing::info!("sources stopped; sinks drain their channels");
        let deadline = Instant::now() + self.options.drain_timeout;
        for u in self.units.values() {
            let _ = u.stop.send(Some(deadline));
        }
        let addrs: Vec<Addr<SinkRunner>> = self.units.values().map(|u| u.addr.clone()).collect();
        wait_idle(&addrs, self.options.drain_timeout + Duration::from_secs(5)).await;
        for ch in self.channels.values() {
            let _ = ch.handle.close.send(Close).await;
        }
        crate::tap::stop();
        if let Some(server) = self.server.take() {
            server.stop(true).await;
        }
        self.sources_arbiter.stop();
        self.sinks_arbiter.stop();
        tracing::info!("agent stopped");
        super::Summary::new(&self.topology, &self.metrics)
    }
}

/// The address a restarted TCP line source keeps listening on: its `bind`, when the old and new
/// options share it (the new source takes over the socket rather than binding again).
fn same_tcp_listener<'a>(old: &SourceKind, new: &'a SourceKind) -> Option<&'a str> {
    fn bind(k: &SourceKind) -> Option<&str> {
        match k {
            SourceKind::Netcat(c) => Some(c.bind.as_str()),
            SourceKind::SyslogTcp(c) => Some(c.bind.as_str()),
            SourceKind::Avro(c) => Some(c.bind.as_str()),
            SourceKind::Thrift(c) => Some(c.bind.as_str()),
            _ => None,
        }
    }
    bind(new).filter(|b| bind(old) == Some(*b))
}

/// Waits until every actor says it is idle, for at most `timeout`.
pub(super) async fn wait_idle<A>(actors: &[Addr<A>], timeout: Duration)
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
