//! Sources: what reads the outside world into batches of events.
//!
//! Each source runs as a supervised [`SourceActor`]: it reads its input, builds batches (at most
//! `batch_size` events, put when full or `linger` after the batch's first event), and hands each
//! batch to [`SourceContext::put`], which runs the interceptors and routes the batch through the
//! channel selector. `put` returns only when every required channel committed; only then does the
//! source acknowledge its input (an "OK" line, a position file, a completed spool file). A source
//! that fails or panics is restarted by its supervisor with capped exponential backoff and resumes
//! from its last acknowledged position.

pub mod avro;
pub mod conn_limits;
pub mod datagram;
pub mod exec;
pub mod file_input;
pub mod http;
pub mod kafka;
pub mod lines;
pub mod netcat;
pub mod netcat_udp;
pub mod sequence_generator;
pub mod spool_dir;
pub mod syslog;
pub mod taildir;
pub mod thrift;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use serde::Deserialize;
use tokio::sync::watch;

use crate::channel::{ChannelError, StorageErrorKind};
use crate::config::duration;
use crate::event::{body_bytes, Event};
use crate::interceptor::{InterceptorChain, InterceptorConfig};
use crate::metrics::{ComponentState, SourceCounters};
use crate::selector::{Route, RouteUntil, Selector, SelectorConfig};
use crate::supervision::{panic_message, IsIdle, Restarts};

/// A source as written in a topology: its kind and options, and how it is wired.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source kind and its options, e.g. `Netcat(bind: "127.0.0.1:44444")`.
    pub kind: SourceKind,
    /// The channels this source puts into (at least one).
    pub channels: Vec<String>,
    /// How events are spread over `channels`. Default `Replicating(optional: [])`.
    #[serde(default)]
    pub selector: SelectorConfig,
    /// Interceptors run on every batch, in order. Default `[]`.
    #[serde(default)]
    pub interceptors: Vec<InterceptorConfig>,
    /// Most events per put transaction. Default 1000; at most each channel's transaction capacity.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a batch may gather events: a source puts a batch when it holds `batch_size` events
    /// or `linger` after its first event was read, whichever comes first (a deadline from the
    /// batch's first event, as Kafka's `linger.ms` and Vector's batch `timeout_secs`; not an idle
    /// time between reads). The longest an event waits in a source's partial batch. With the
    /// default `"0s"`, a batch is put as soon as nothing more is readable, unless the
    /// connection's earlier batches are still being put: then it gathers what arrives until they
    /// are all answered or it is full (as Kafka's `linger.ms` 0), so a trickle is put at once and
    /// batches grow with the load ([`lines::Room`]).
    #[serde(default = "default_linger", with = "duration")]
    pub linger: Duration,
}

fn default_batch_size() -> usize {
    1000
}
fn default_linger() -> Duration {
    Duration::ZERO
}

/// The kind of a source and its options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub enum SourceKind {
    /// Lines from TCP connections.
    Netcat(netcat::NetcatConfig),
    /// Generated events `0`, `1`, `2`, ...
    SequenceGenerator(sequence_generator::SequenceGeneratorConfig),
    /// Lines a command writes to its standard output.
    Exec(exec::ExecConfig),
    /// Complete files dropped into a directory.
    SpoolDir(spool_dir::SpoolDirConfig),
    /// Lines appended to files matching globs.
    Taildir(taildir::TaildirConfig),
    /// Syslog messages on TCP connections (octet-counted or LF-framed).
    SyslogTcp(syslog::tcp::SyslogTcpConfig),
    /// Syslog messages, one per UDP datagram.
    SyslogUdp(syslog::udp::SyslogUdpConfig),
    /// UDP datagrams, one event each.
    NetcatUdp(netcat_udp::NetcatUdpConfig),
    /// Events posted to an HTTP server.
    Http(http::HttpConfig),
    /// Records of Kafka topics, read as a member of a consumer group.
    Kafka(kafka::KafkaSourceConfig),
    /// Flume's Avro RPC (`append`, `appendBatch`), as Flume's `avro` source.
    Avro(avro::AvroSourceConfig),
    /// Flume's Thrift RPC (`ThriftSourceProtocol`), from Flume's Thrift sink or Thrift clients.
    Thrift(thrift::ThriftSourceConfig),
}

impl SourceKind {
    /// Problems with the options that need no other component; empty when fine.
    pub fn validate(&self) -> Vec<String> {
        match self {
            SourceKind::Netcat(c) => c.validate(),
            SourceKind::SequenceGenerator(_) => Vec::new(),
            SourceKind::Exec(c) => c.validate(),
            SourceKind::SpoolDir(c) => c.validate(),
            SourceKind::Taildir(c) => c.validate(),
            SourceKind::SyslogTcp(c) => c.validate(),
            SourceKind::SyslogUdp(c) => c.validate(),
            SourceKind::NetcatUdp(c) => c.validate(),
            SourceKind::Http(c) => c.validate(),
            SourceKind::Kafka(c) => c.validate(),
            SourceKind::Avro(c) => c.validate(),
            SourceKind::Thrift(c) => c.validate(),
        }
    }

    /// Resolves relative paths against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            SourceKind::SpoolDir(c) => c.resolve_paths(base),
            SourceKind::Taildir(c) => c.resolve_paths(base),
            SourceKind::Exec(c) => c.resolve_paths(base),
            SourceKind::Http(c) => c.resolve_paths(base),
            SourceKind::Kafka(c) => c.resolve_paths(base),
            SourceKind::Netcat(netcat::NetcatConfig { tls: Some(tls), .. })
            | SourceKind::SyslogTcp(syslog::tcp::SyslogTcpConfig { tls: Some(tls), .. })
            | SourceKind::Avro(avro::AvroSourceConfig { tls: Some(tls), .. })
            | SourceKind::Thrift(thrift::ThriftSourceConfig { tls: Some(tls), .. }) => tls.resolve_paths(base),
            SourceKind::Netcat(_)
            | SourceKind::SequenceGenerator(_)
            | SourceKind::SyslogTcp(_)
            | SourceKind::SyslogUdp(_)
            | SourceKind::NetcatUdp(_)
            | SourceKind::Avro(_)
            | SourceKind::Thrift(_) => {}
        }
    }

    /// What the source holds while it runs, that no other source may hold at the same time (as
    /// Vector's `resources()`): `"tcp HOST:PORT"` and `"udp HOST:PORT"` it binds, `"path P"` of
    /// the spool directory or position file it owns. Validation refuses two sources holding one;
    /// a reload stops the old holder before the new one starts.
    pub fn resources(&self) -> Vec<String> {
        match self {
            SourceKind::Netcat(c) => vec![format!("tcp {}", c.bind)],
            SourceKind::SyslogTcp(c) => vec![format!("tcp {}", c.bind)],
            SourceKind::Http(c) => vec![format!("tcp {}", c.bind)],
            SourceKind::Avro(c) => vec![format!("tcp {}", c.bind)],
            SourceKind::Thrift(c) => vec![format!("tcp {}", c.bind)],
            SourceKind::SyslogUdp(c) => vec![format!("udp {}", c.bind)],
            SourceKind::NetcatUdp(c) => vec![format!("udp {}", c.bind)],
            SourceKind::SpoolDir(c) => vec![format!("path {}", c.dir.display())],
            SourceKind::Taildir(c) => vec![format!("path {}", c.position_file.display())],
            SourceKind::SequenceGenerator(_) | SourceKind::Exec(_) | SourceKind::Kafka(_) => Vec::new(),
        }
    }

    /// Whether the source can reach the end of its input (and so end `run --once`).
    pub fn is_finite(&self) -> bool {
        !matches!(
            self,
            SourceKind::Netcat(_)
                | SourceKind::SyslogTcp(_)
                | SourceKind::SyslogUdp(_)
                | SourceKind::NetcatUdp(_)
                | SourceKind::Http(_)
                | SourceKind::Kafka(_)
                | SourceKind::Avro(_)
                | SourceKind::Thrift(_)
        )
    }

    /// Runs the source until its input ends (`Ok`) or it fails (`Err`).
    ///
    /// Sources that never end return `Ok` only once `ctx` says the agent is stopping.
    pub fn run(&self, ctx: SourceContext) -> LocalBoxFuture<'static, Result<(), SourceError>> {
        match self.clone() {
            SourceKind::Netcat(c) => netcat::run(c, ctx).boxed_local(),
            SourceKind::SequenceGenerator(c) => sequence_generator::run(c, ctx).boxed_local(),
            SourceKind::Exec(c) => exec::run(c, ctx).boxed_local(),
            SourceKind::SpoolDir(c) => spool_dir::run(c, ctx).boxed_local(),
            SourceKind::Taildir(c) => taildir::run(c, ctx).boxed_local(),
            SourceKind::SyslogTcp(c) => syslog::tcp::run(c, ctx).boxed_local(),
            SourceKind::SyslogUdp(c) => syslog::udp::run(c, ctx).boxed_local(),
            SourceKind::NetcatUdp(c) => netcat_udp::run(c, ctx).boxed_local(),
            SourceKind::Http(c) => http::run(c, ctx).boxed_local(),
            SourceKind::Kafka(c) => kafka::run(c, ctx).boxed_local(),
            SourceKind::Avro(c) => avro::run(c, ctx).boxed_local(),
            SourceKind::Thrift(c) => thrift::run(c, ctx).boxed_local(),
        }
    }
}

/// Why a source stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading or writing the outside world failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or address.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A channel refused a put for good (closed, or a batch over its transaction capacity).
    #[error("put failed: {0}")]
    Put(#[from] ChannelError),
    /// The agent is stopping; the batch was not put.
    #[error("the agent is stopping")]
    Stopping,
    /// The source panicked.
    #[error("panicked: {0}")]
    Panic(String),
    /// An option that can only be checked once the source runs is wrong (a glob that does not
    /// split into folder and pattern, a Kafka client configuration librdkafka refuses).
    #[error("{0}")]
    Config(String),
    /// A `SpoolDir` file or its progress failed (I/O, a completed name taken, a file changed
    /// while it was read).
    #[error(transparent)]
    SpoolDir(#[from] spool_dir::SpoolDirError),
    /// The `Taildir` position file could not be read or written.
    #[error(transparent)]
    Position(#[from] taildir::PositionFileError),
    /// The Kafka client failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done (`"create the Kafka consumer"`, `"read from Kafka"`).
        what: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// The TLS material of the `tls` option could not be used.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A server the source runs (`Http`) stopped by itself.
    #[error("{0}")]
    Stopped(String),
}

impl SourceError {
    /// An [`SourceError::Io`] saying what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SourceError {
        let what = what.into();
        move |source| SourceError::Io { what, source }
    }

    /// A [`SourceError::Kafka`] saying what was being done.
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> SourceError {
        let what = what.into();
        move |source| SourceError::Kafka { what, source }
    }

    /// The kind of storage failure behind the error, where there is one (the reaction to a
    /// fault depends on it): an I/O error's kind, a channel's storage kind; `None` for the rest.
    pub fn storage_kind(&self) -> Option<StorageErrorKind> {
        match self {
            SourceError::Io { source, .. } => Some(StorageErrorKind::of_io(source)),
            SourceError::Put(e) => e.storage_kind(),
            SourceError::SpoolDir(spool_dir::SpoolDirError::Io { source, .. }) => Some(StorageErrorKind::of_io(source)),
            SourceError::Position(taildir::PositionFileError::Io { source, .. }) => {
                Some(StorageErrorKind::of_io(source))
            }
            SourceError::Position(_) => Some(StorageErrorKind::Corruption),
            _ => None,
        }
    }
}

/// What a running source uses to deliver batches and to learn that the agent is stopping.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name in the topology.
    pub name: String,
    /// Most events per put.
    pub batch_size: usize,
    /// How long after its first event a partial batch is put ([`SourceConfig::linger`]).
    pub linger: Duration,
    /// The source's counters.
    pub counters: Arc<SourceCounters>,
    /// How long a connection's reader waits for a byte before it ends the connection (a TCP
    /// source's `idle_timeout`, set for each connection's task); `None`: without bound.
    pub idle_timeout: Option<Duration>,
    /// The bytes all connections of a TCP source may hold between reading and commit (its
    /// `max_in_flight_bytes`, shared by the contexts of its connections); `None`: without bound.
    pub read_budget: Option<Arc<conn_limits::ReadBudget>>,
    pipeline: PipelineHandle,
    stop: watch::Receiver<bool>,
    end: Arc<dyn Fn() + Send + Sync>,
    progress: Arc<SourceProgress>,
    once: bool,
}

/// What a source's batches go through after it read them: its interceptor chain, then its
/// channel selector (with the channels the selector puts into).
pub struct Pipeline {
    /// The source's interceptors, in order.
    pub interceptors: Arc<InterceptorChain>,
    /// The source's channel selector.
    pub selector: Addr<Selector>,
}

/// A source's [`Pipeline`], shared between its context and the agent. Every put holds it for
/// reading from the interceptors to the last channel's commit; a reload takes it for writing to
/// swap interceptors or selector between two batches: the swap waits for the puts in flight,
/// and puts started meanwhile wait for the swap (write-preferring, tokio's `RwLock`).
pub type PipelineHandle = Arc<tokio::sync::RwLock<Pipeline>>;

/// Where a running source stands, for `run --once`: whether it is at the end of its input, and
/// whether a put is in flight. Shared between the source's context and the agent.
#[derive(Debug, Default)]
pub struct SourceProgress {
    at_end: AtomicBool,
    in_flight: AtomicUsize,
    puts_started: AtomicU64,
}

/// A snapshot of [`SourceProgress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// The source said it reached its end and has not put anything since.
    pub at_end: bool,
    /// Puts started and not yet answered.
    pub in_flight: usize,
    /// Puts started since the source was built (a change between two snapshots means activity).
    pub puts_started: u64,
}

impl SourceProgress {
    /// The current state.
    pub fn snapshot(&self) -> ProgressSnapshot {
        // In-flight first: a put raises it before it clears `at_end`.
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        let puts_started = self.puts_started.load(Ordering::SeqCst);
        let at_end = self.at_end.load(Ordering::SeqCst);
        ProgressSnapshot { at_end, in_flight, puts_started }
    }

    /// Whether the source is at its end with nothing in flight.
    pub fn is_idle_at_end(&self) -> bool {
        let s = self.snapshot();
        s.at_end && s.in_flight == 0
    }

    fn not_at_end(&self) {
        self.at_end.store(false, Ordering::SeqCst);
    }
}

/// Lowers the in-flight count of a put when dropped (answered, failed or cancelled).
struct InFlight<'a>(&'a SourceProgress);

impl<'a> InFlight<'a> {
    fn start(progress: &'a SourceProgress) -> Self {
        progress.in_flight.fetch_add(1, Ordering::SeqCst);
        progress.puts_started.fetch_add(1, Ordering::SeqCst);
        progress.not_at_end();
        InFlight(progress)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SourceContext {
    /// A context putting through `selector`; `stop` turns true when the agent stops; `end` is
    /// called when the source reached the end of its input.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        batch_size: usize,
        linger: Duration,
        counters: Arc<SourceCounters>,
        selector: Addr<Selector>,
        interceptors: Arc<InterceptorChain>,
        stop: watch::Receiver<bool>,
        end: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        SourceContext {
            name: name.to_string(),
            batch_size,
            linger,
            counters,
            idle_timeout: None,
            read_budget: None,
            pipeline: Arc::new(tokio::sync::RwLock::new(Pipeline { interceptors, selector })),
            stop,
            end,
            progress: Arc::default(),
            once: false,
        }
    }

    /// The same context for an agent run with `--once` (`once: true`): the input is over once a
    /// source reaches its end, so a file's final line without a line ending is an event.
    pub fn with_once(mut self, once: bool) -> Self {
        self.once = once;
        self
    }

    /// Whether the agent runs with `--once`.
    pub fn once(&self) -> bool {
        self.once
    }

    /// The interceptors and selector its batches go through, for the agent to swap on reload.
    pub fn pipeline(&self) -> PipelineHandle {
        self.pipeline.clone()
    }

    /// Where the source stands (at its end, puts in flight), shared with whoever holds it.
    pub fn progress(&self) -> Arc<SourceProgress> {
        self.progress.clone()
    }

    /// Runs the interceptors on `events` and commits them to the channels.
    ///
    /// Returns once every required channel committed its part: only then may the source
    /// acknowledge the input. Waits (back-pressure) while a required channel is full.
    ///
    /// # Errors
    /// [`SourceError::Put`] when a required channel refused for good; the input is then not
    /// acknowledged and the source is restarted.
    pub async fn put(&self, events: Vec<Event>) -> Result<(), SourceError> {
        self.put_routed(events, None).await
    }

    /// As [`SourceContext::put`], but gives up on a required channel that is still full at
    /// `deadline`, answering [`SourceError::Put`] with [`ChannelError::Full`] (a source that can
    /// tell its client to retry, as `Http`'s 503, uses it rather than waiting without bound).
    /// Channels that committed their part before keep it (a retry then duplicates it there).
    ///
    /// # Errors
    /// As [`SourceContext::put`], plus `Full` at the deadline.
    pub async fn put_until(&self, events: Vec<Event>, deadline: Instant) -> Result<(), SourceError> {
        self.put_routed(events, Some(deadline)).await
    }

    async fn put_routed(&self, mut events: Vec<Event>, deadline: Option<Instant>) -> Result<(), SourceError> {
        if events.is_empty() {
            return Ok(());
        }
        let _in_flight = InFlight::start(&self.progress);
        let n = events.len() as u64;
        self.counters.append_batch_received.inc();
        self.counters.event_received.add(n);
        self.counters.bytes_received.add(body_bytes(&events));
        let pipeline = self.pipeline.read().await;
        let dropped = pipeline.interceptors.apply(&mut events);
        if dropped > 0 {
            self.counters.dropped_by_filter.add(dropped);
        }
        if !events.is_empty() {
            crate::tap::leaving_source(&self.name, &events, &self.counters.tap_dropped);
            let kept = events.len() as u64;
            let unrouted = match deadline {
                None => pipeline.selector.send(Route { events }).await,
                Some(deadline) => pipeline.selector.send(RouteUntil { events, deadline }).await,
            }
            .map_err(ChannelError::from)
            .and_then(|answer| answer)
            .inspect_err(|_| self.counters.channel_write_fail.inc())?;
            // Events no channel took (no mapping, no default) are not accepted.
            self.counters.event_accepted.add(kept - unrouted);
        }
        self.counters.append_batch_accepted.inc();
        Ok(())
    }

    /// Whether the agent asked sources to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when the agent asks sources to stop.
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// Says the source reached the end of its input (for `run --once`); it may keep running.
    pub fn reached_end(&self) {
        self.progress.at_end.store(true, Ordering::SeqCst);
        (self.end)();
    }
}

/// The supervised actor running one source.
pub struct SourceActor {
    kind: SourceKind,
    ctx: SourceContext,
    restarts: Restarts,
    idle: bool,
}

impl SourceActor {
    /// An actor that will run `kind` with `ctx`.
    pub fn new(kind: SourceKind, ctx: SourceContext) -> Self {
        SourceActor { kind, ctx, restarts: Restarts::default(), idle: false }
    }
}

impl Actor for SourceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let delay = self.restarts.delay();
        let sctx = self.ctx.clone();
        // A (re)started source is not at its end until it says so again.
        sctx.progress.not_at_end();
        let run = self.kind.run(sctx.clone());
        self.idle = false;
        let accepted_before = self.ctx.counters.append_batch_accepted.get();
        let watched = self.ctx.clone();
        ctx.spawn(async move { watched.stopping().await }.into_actor(self).map(|(), act, _| {
            if !act.idle {
                act.ctx.counters.state.set(ComponentState::Draining);
            }
        }));
        let fut = async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = actix_rt::time::sleep(delay) => {}
                    _ = sctx.stopping() => return Ok(()),
                }
            }
            sctx.counters.state.set_unless_stopping(ComponentState::Running);
            let result = std::panic::AssertUnwindSafe(run).catch_unwind().await;
            result.unwrap_or_else(|p| Err(SourceError::Panic(panic_message(p))))
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            let _span = tracing::info_span!("source", name = %act.ctx.name).entered();
            match result {
                Ok(()) => {
                    act.idle = true;
                    act.ctx.counters.state.set(ComponentState::Stopped);
                    if !act.ctx.is_stopping() {
                        tracing::info!("reached the end of its input");
                    }
                    act.ctx.reached_end();
                }
                Err(_) if act.ctx.is_stopping() => {
                    act.idle = true;
                    act.ctx.counters.state.set(ComponentState::Stopped);
                }
                Err(e) => {
                    let progressed = act.ctx.counters.append_batch_accepted.get() > accepted_before;
                    let counters = &act.ctx.counters;
                    act.restarts.failed(progressed, &counters.restarts, &counters.state, "source", &e);
                    ctx.stop();
                }
            }
        }));
    }
}

impl Supervised for SourceActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Handler<IsIdle> for SourceActor {
    type Result = bool;

    fn handle(&mut self, _: IsIdle, _: &mut Context<Self>) -> bool {
        self.idle
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::channel::memory::{MemoryChannel, MemoryConfig};
    use crate::channel::ChannelHandle;
    use crate::metrics::Metrics;

    #[actix_rt::test]
    async fn events_routed_to_no_channel_are_not_accepted() {
        let metrics = Metrics::new();
        let config = MemoryConfig {
            capacity: 100,
            transaction_capacity: 100,
            keep_alive: Duration::from_millis(20),
            ..MemoryConfig::default()
        };
        let info = ChannelHandle::new("info", MemoryChannel::new(config, metrics.channel("info")).start());
        let selector = SelectorConfig::Multiplexing {
            header: "level".into(),
            mapping: BTreeMap::from([("INFO".into(), vec!["info".into()])]),
            optional: BTreeMap::new(),
            default: vec![],
        };
        let counters = metrics.source("r1");
        let selector = Selector::new(selector, BTreeMap::from([("info".to_string(), info)]), counters.clone()).start();
        let (_stop, stop_rx) = watch::channel(false);
        let ctx = SourceContext::new(
            "r1",
            100,
            Duration::from_millis(5),
            counters.clone(),
            selector,
            Arc::new(InterceptorChain::build(&[]).unwrap()),
            stop_rx,
            Arc::new(|| {}),
        );
        let events = vec![
            Event::new("081109 203615 148 INFO dfs.DataNode$PacketResponder: terminating").with_header("level", "INFO"),
            Event::new("081109 203807 222 WARN dfs.DataNode$DataXceiver: exception").with_header("level", "WARN"),
            Event::new("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown"),
        ];
        ctx.put(events).await.unwrap();
        assert_eq!(counters.event_received.get(), 3);
        assert_eq!(counters.unrouted.get(), 2);
        assert_eq!(counters.event_accepted.get(), 1, "only the event a channel committed is accepted");
    }

    #[test]
    fn source_errors_keep_their_storage_kind() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(SourceError::io("write")(full).storage_kind(), Some(StorageErrorKind::NoSpace));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(SourceError::io("open")(denied).storage_kind(), Some(StorageErrorKind::PermissionDenied));
        assert_eq!(SourceError::Put(ChannelError::Closed).storage_kind(), None);
        assert_eq!(SourceError::Config("glob".into()).storage_kind(), None);
    }
}
