//! Sinks: what delivers events from a channel to the outside world.
//!
//! Each sink runs in a supervised [`SinkRunner`] actor: take up to `batch_size` events from its
//! channel in a transaction, hand them to the [`Sink`], and commit the take only once the sink has
//! handed them over (written to the OS, fsynced where promised); on failure the take is rolled
//! back, so the events return to the head of the channel, and the sink is restarted with capped
//! exponential backoff. A panic is contained the same way. The sinks of a sink group run in one
//! runner, whose sink processor ([`group`]) chooses the sink of each batch and sends a failed
//! batch to another sink.

pub mod avro;
pub mod file_roll;
pub mod group;
pub mod hdfs;
pub mod http;
pub mod kafka;
pub mod logger;
pub mod null;
pub mod recovery;
pub mod thrift;

use std::future::Future;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::Instrument;

use crate::channel::{ChannelError, ChannelHandle};
use crate::event::{body_bytes, Event};
use crate::metrics::{ComponentState, SinkCounters};
use crate::supervision::{panic_message, IsIdle, Restarts};
use group::SinkProcessorConfig;
use group::{Choice, Member, Processor, Verdict};

/// A sink as written in a topology: its kind and options, and the channel it drains.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink kind and its options, e.g. `FileRoll(dir: "out")`.
    pub kind: SinkKind,
    /// The channel this sink takes from.
    pub channel: String,
    /// Most events per take transaction. Default 1000; at most the channel's transaction capacity.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    1000
}

/// The kind of a sink and its options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub enum SinkKind {
    /// Logs events through the agent's log.
    Logger(logger::LoggerConfig),
    /// Discards events.
    Null(null::NullConfig),
    /// Appends bodies to files in a directory, rolled on an interval.
    FileRoll(file_roll::FileRollConfig),
    /// Writes bucketed, rolled files under a path with escapes, as Flume's HDFS sink.
    Hdfs(hdfs::HdfsConfig),
    /// Posts each batch to an HTTP server (another agent's `Http` source, or Flume's).
    Http(http::HttpSinkConfig),
    /// Produces each event as a Kafka record (idempotent, `acks=all`).
    Kafka(kafka::KafkaSinkConfig),
    /// Sends each batch as one `appendBatch` call of Flume's Avro RPC, as Flume's `avro` sink.
    Avro(avro::AvroSinkConfig),
    /// Sends each batch as one `appendBatch` call of Flume's Thrift RPC (a `Thrift` source, Flume's).
    Thrift(thrift::ThriftSinkConfig),
}

impl SinkKind {
    /// Problems with the options that need no other component; empty when fine.
    pub fn validate(&self) -> Vec<String> {
        match self {
            SinkKind::Logger(_) | SinkKind::Null(_) => Vec::new(),
            SinkKind::FileRoll(c) => c.validate(),
            SinkKind::Hdfs(c) => c.validate(),
            SinkKind::Http(c) => c.validate(),
            SinkKind::Kafka(c) => c.validate(),
            SinkKind::Avro(c) => c.validate(),
            SinkKind::Thrift(c) => c.validate(),
        }
    }

    /// Resolves relative paths against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            SinkKind::FileRoll(c) => c.dir = crate::config::resolve(base, &c.dir),
            SinkKind::Hdfs(c) => c.base = base.to_path_buf(),
            SinkKind::Http(c) => c.resolve_paths(base),
            SinkKind::Kafka(c) => c.resolve_paths(base),
            SinkKind::Avro(c) => c.resolve_paths(base),
            SinkKind::Thrift(c) => c.resolve_paths(base),
            SinkKind::Logger(_) | SinkKind::Null(_) => {}
        }
    }

    /// Builds a fresh sink (on start and on every restart). `in_group` says whether the sink is a
    /// member of a sink group: an `Http` sink in a group gives a batch it cannot post back to the
    /// group at once (which then tries another sink) instead of retrying it itself.
    ///
    /// # Errors
    /// When the output cannot be opened.
    pub fn build(&self, name: &str, counters: Arc<SinkCounters>, in_group: bool) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkKind::Logger(c) => Box::new(logger::LoggerSink::new(name, c.clone())),
            SinkKind::Null(_) => Box::new(null::NullSink),
            SinkKind::FileRoll(c) => Box::new(file_roll::FileRollSink::new(c.clone(), counters)?),
            SinkKind::Hdfs(c) => Box::new(hdfs::HdfsSink::new(c.clone(), counters)?),
            SinkKind::Http(c) => Box::new(http::HttpSink::new(name, c.clone(), counters)?.in_group(in_group)),
            SinkKind::Kafka(c) => Box::new(kafka::KafkaSink::new(name, c.clone(), counters)?),
            SinkKind::Avro(c) => Box::new(avro::AvroSink::new(name, c.clone(), counters)?),
            SinkKind::Thrift(c) => Box::new(thrift::ThriftSink::new(name, c.clone(), counters)?),
        })
    }

    /// Where the sink's output goes, for the run summary.
    pub fn output(&self) -> String {
        match self {
            SinkKind::Logger(_) => "the log (stderr)".into(),
            SinkKind::Null(_) => "nowhere (discarded)".into(),
            SinkKind::FileRoll(c) => crate::config::normalize(&c.dir).display().to_string(),
            SinkKind::Hdfs(c) => c.output(),
            SinkKind::Http(c) => c.shown_url(),
            SinkKind::Kafka(c) => format!("Kafka topic {} at {}", c.topic, c.brokers),
            SinkKind::Avro(c) => c.address(),
            SinkKind::Thrift(c) => c.output(),
        }
    }
}

/// Why a sink could not deliver a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or address.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The channel failed.
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    /// The sink panicked.
    #[error("panicked: {0}")]
    Panic(String),
    /// Flume's Avro RPC failed: no connection, a broken or timed-out call, or an answer other
    /// than `OK` (see [`crate::codec::avro::AvroErrorKind`]).
    #[error("Avro RPC to {address}: {source}")]
    Avro {
        /// `avro://host:port`.
        address: String,
        /// What went wrong.
        source: crate::codec::avro::AvroError,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl SinkError {
    /// An [`SinkError::Io`] saying what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SinkError {
        let what = what.into();
        move |source| SinkError::Io { what, source }
    }
}

/// A sink's output. One instance lives on one thread; a restart builds a new one.
pub trait Sink {
    /// Hands `events` (oldest first) to the output; resolves once the output holds them (written
    /// to the OS, or fsynced where the sink promises it). The take is committed only after `Ok`.
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>>;

    /// Called when a take found the channel empty (time-based rolls happen here). Default: nothing.
    fn idle(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }

    /// Flushes and closes the output (on shutdown).
    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Builds a sink: on start and on every restart.
pub type SinkFactory = Rc<dyn Fn() -> Result<Box<dyn Sink>, SinkError>>;

/// How long an idle sink waits on an empty channel before it looks again (and rolls by time).
pub const TAKE_WAIT: Duration = Duration::from_millis(100);

/// The supervised actor that drains one channel into one sink, or into the sinks of a sink group
/// under its sink processor (as Flume's `SinkRunner` running a `SinkProcessor`).
///
/// Before every take the [`Processor`] chooses the sink the batch is for; the runner takes up to
/// that sink's `batch_size` events, hands them to it and commits the take once it delivered. A
/// failed delivery rolls the take back; under the `Default` processor (a sink in no group) the
/// runner then fails and its supervisor restarts it with backoff, while a group's processor
/// rebuilds the failed sink later and the events are taken again for another sink.
pub struct SinkRunner {
    name: String,
    channel: ChannelHandle,
    members: Vec<Member>,
    /// `None`: the `Default` processor over one sink.
    processor: Option<SinkProcessorConfig>,
    stop: watch::Receiver<Option<Instant>>,
    restarts: Restarts,
    idle: bool,
}

impl SinkRunner {
    /// A runner taking `batch_size` events at a time from `channel` into sinks made by `factory`.
    ///
    /// `stop` turns `Some(deadline)` when the agent stops: the runner then drains the channel
    /// until it is empty or the deadline passes, closes the sink and goes idle.
    pub fn new(
        name: &str,
        channel: ChannelHandle,
        batch_size: usize,
        factory: SinkFactory,
        counters: Arc<SinkCounters>,
        stop: watch::Receiver<Option<Instant>>,
    ) -> Self {
        let member = Member { name: name.into(), batch_size, factory, counters };
        SinkRunner {
            name: name.into(),
            channel,
            members: vec![member],
            processor: None,
            stop,
            restarts: Restarts::default(),
            idle: false,
        }
    }

    /// A runner for sink group `name`: its `members` (at least one, in the group's order) all
    /// drain `channel`, and `processor` chooses the member of each batch. `stop` as for
    /// [`SinkRunner::new`]; on stop every member that was built is closed.
    pub fn group(
        name: &str,
        channel: ChannelHandle,
        members: Vec<Member>,
        processor: SinkProcessorConfig,
        stop: watch::Receiver<Option<Instant>>,
    ) -> Self {
        assert!(!members.is_empty(), "validation rejects a sink group without sinks");
        SinkRunner {
            name: name.into(),
            channel,
            members,
            processor: Some(processor),
            stop,
            restarts: Restarts::default(),
            idle: false,
        }
    }

    /// Events delivered by all members together.
    fn delivered(&self) -> u64 {
        self.members.iter().map(|m| m.counters.drain_success.get()).sum()
    }

    fn span(&self) -> tracing::Span {
        match self.processor {
            None => tracing::info_span!("sink", name = %self.name),
            Some(_) => tracing::info_span!("sink_group", name = %self.name),
        }
    }
}

impl Actor for SinkRunner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.idle = false;
        let processor = match &self.processor {
            None => Processor::Default,
            Some(config) => Processor::new(config, &self.members),
        };
        let work =
            drain(self.channel.clone(), self.members.clone(), processor, self.stop.clone(), self.restarts.delay())
                .instrument(self.span());
        let delivered_before = self.delivered();
        let mut stop = self.stop.clone();
        let draining = async move {
            let _ = stop.wait_for(Option::is_some).await;
        };
        ctx.spawn(draining.into_actor(self).map(|(), act, _| {
            if !act.idle {
                for m in &act.members {
                    m.counters.state.set(ComponentState::Draining);
                }
            }
        }));
        let fut = contained(|| work);
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            let _span = act.span().entered();
            match result {
                Ok(()) => act.idle = true,
                Err(e) => {
                    let progressed = act.delivered() > delivered_before;
                    let (first, rest) = act.members.split_first().expect("a runner has at least one sink");
                    let component = if act.processor.is_some() { "sink group" } else { "sink" };
                    act.restarts.failed(progressed, &first.counters.restarts, &first.counters.state, component, &e);
                    for m in rest {
                        m.counters.restarts.inc();
                        m.counters.state.set_because(ComponentState::Restarting, &e);
                    }
                    ctx.stop();
                }
            }
        }));
    }
}

impl Supervised for SinkRunner {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts.restarting();
    }
}

impl Handler<IsIdle> for SinkRunner {
    type Result = bool;

    fn handle(&mut self, _: IsIdle, _: &mut Context<Self>) -> bool {
        self.idle
    }
}

/// Makes and awaits the future `work` returns, turning a panic in either into [`SinkError::Panic`]
/// (a sink may panic as it is called, before it returns its future).
async fn contained<T, F>(work: impl FnOnce() -> F) -> Result<T, SinkError>
where
    F: Future<Output = Result<T, SinkError>>,
{
    let panicked = |p| Err(SinkError::Panic(panic_message(p)));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(fut) => std::panic::AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(panicked),
        Err(p) => panicked(p),
    }
}

/// Waits `delay` (the restart backoff), then runs the take / deliver / commit loop until the
/// agent stops and the channel is drained, and closes every sink that was built.
async fn drain(
    channel: ChannelHandle,
    members: Vec<Member>,
    mut processor: Processor,
    mut stop: watch::Receiver<Option<Instant>>,
    delay: Duration,
) -> Result<(), SinkError> {
    // The backoff holds while the agent stops too (but never past the drain deadline): a sink
    // that keeps failing must not restart in a tight loop during the drain.
    let until = Instant::now() + delay;
    loop {
        let stopping = *stop.borrow();
        let now = Instant::now();
        if now >= until || stopping.is_some_and(|deadline| now >= deadline) {
            break;
        }
        wait_until(until, stopping, &mut stop).await;
    }
    // A lone sink runs once it is built (in the take loop); a group's members all run from here
    // on, whether built yet or standing by.
    if !matches!(processor, Processor::Default) {
        let working = if stop.borrow().is_some() { ComponentState::Draining } else { ComponentState::Running };
        for m in &members {
            m.counters.state.set(working);
        }
    }
    let mut sinks: Vec<Option<Box<dyn Sink>>> = members.iter().map(|_| None).collect();
    take_loop(&channel, &members, &mut processor, &mut sinks, &mut stop).await?;
    for m in &members {
        m.counters.state.set(ComponentState::Stopped);
    }
    let mut closed = Ok(());
    for (member, sink) in members.iter().zip(&mut sinks) {
        if let Some(mut sink) = sink.take() {
            if let Err(e) = contained(|| sink.close()).await {
                tracing::warn!(sink = %member.name, error = %e, "closing the sink failed");
                closed = closed.and(Err(e));
            }
        }
    }
    closed
}

/// Takes a batch for the sink the processor chooses, delivers it, commits the take; until the
/// agent stops and the channel is empty (or the drain deadline passed).
///
/// # Errors
/// A channel error, or a sink's error when the processor gives up (always, for `Default`).
async fn take_loop(
    channel: &ChannelHandle,
    members: &[Member],
    processor: &mut Processor,
    sinks: &mut [Option<Box<dyn Sink>>],
    stop: &mut watch::Receiver<Option<Instant>>,
) -> Result<(), SinkError> {
    loop {
        let stopping = *stop.borrow();
        if matches!(stopping, Some(deadline) if Instant::now() >= deadline) {
            return Ok(());
        }
        let k = match processor.choose(Instant::now()) {
            Choice::Sink(k) => k,
            Choice::WaitUntil(until) => {
                wait_until(until, stopping, stop).await;
                continue;
            }
        };
        let member = &members[k];
        if sinks[k].is_none() {
            match contained(|| std::future::ready((member.factory)())).await {
                Ok(sink) => {
                    sinks[k] = Some(sink);
                    let working = if stopping.is_some() { ComponentState::Draining } else { ComponentState::Running };
                    member.counters.state.set(working);
                }
                Err(e) => {
                    failed(processor, member, &mut sinks[k], k, e)?;
                    continue;
                }
            }
        }
        let wait = if stopping.is_some() { Duration::ZERO } else { TAKE_WAIT };
        let txn = channel.take(member.batch_size, wait).await?;
        let n = txn.events.len();
        let counters = &member.counters;
        if n == 0 {
            counters.batch_empty.inc();
            if stopping.is_some() {
                return Ok(());
            }
            for (j, sink) in sinks.iter_mut().enumerate() {
                if let Some(s) = sink {
                    if let Err(e) = contained(|| s.idle()).await {
                        failed(processor, &members[j], sink, j, e)?;
                    }
                }
            }
            continue;
        }
        if n == member.batch_size {
            counters.batch_complete.inc();
        } else {
            counters.batch_underflow.inc();
        }
        counters.drain_attempt.add(n as u64);
        crate::tap::entering_sink(&member.name, &txn.events, &counters.tap_dropped);
        let sink = sinks[k].as_mut().expect("built above");
        match contained(|| sink.deliver(&txn.events)).await {
            Ok(()) => {
                let bytes = body_bytes(&txn.events);
                channel.commit(txn).await?;
                counters.drain_success.add(n as u64);
                counters.bytes_delivered.add(bytes);
                processor.delivered(k);
            }
            Err(e) => {
                counters.rollbacks.inc();
                if let Err(rollback) = channel.rollback(txn).await {
                    // The channel may still hold the take; a restart (with backoff) takes anew.
                    tracing::error!(sink = %member.name, delivery = %e, error = %rollback, "rolling back a failed delivery failed; restarting");
                    return Err(rollback.into());
                }
                failed(processor, member, &mut sinks[k], k, e)?;
            }
        }
    }
}

/// Member `k` failed with `error`: the runner fails (`Default`, or a processor that gives up), or
/// the sink is dropped, to be rebuilt when it is chosen again, and counted as restarted.
fn failed(
    processor: &mut Processor,
    member: &Member,
    sink: &mut Option<Box<dyn Sink>>,
    k: usize,
    error: SinkError,
) -> Result<(), SinkError> {
    match processor.failed(k, Instant::now()) {
        (Verdict::GiveUp, _) => Err(error),
        (Verdict::Continue, left_out_for) => {
            *sink = None;
            member.counters.restarts.inc();
            member.counters.state.set_because(ComponentState::Restarting, &error);
            tracing::warn!(
                sink = %member.name,
                error = %error,
                left_out_for = ?left_out_for,
                "sink failed; the group goes on with its other sinks"
            );
            Ok(())
        }
    }
}

/// Sleeps until `until` (but not past the drain deadline, if stopping), or until the agent starts
/// stopping.
async fn wait_until(until: Instant, stopping: Option<Instant>, stop: &mut watch::Receiver<Option<Instant>>) {
    let sleep = actix_rt::time::sleep_until(stopping.map_or(until, |d| d.min(until)).into());
    if stopping.is_some() {
        sleep.await;
        return;
    }
    tokio::select! {
        _ = sleep => {}
        _ = async {
            if stop.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        } => {}
    }
}
