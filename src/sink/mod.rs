//! Sinks: what delivers events from a channel to the outside world.
//!
//! Each sink runs in a supervised [`SinkRunner`] actor: take up to `batch_size` events from its
//! channel in a transaction, hand them to the [`Sink`], and commit the take only once the sink has
//! handed them over (written to the OS, fsynced where promised); on failure the take is rolled
//! back, so the events return to the head of the channel, and the sink is restarted with capped
//! exponential backoff. A panic is contained the same way.

pub mod file_roll;
pub mod hdfs;
pub mod http;
pub mod logger;
pub mod null;

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;
use serde::Deserialize;
use tokio::sync::watch;

use crate::channel::{ChannelError, ChannelHandle};
use crate::event::{body_bytes, Event};
use crate::metrics::SinkCounters;
use crate::supervision::{panic_message, IsIdle, Restarts};

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
}

impl SinkKind {
    /// Problems with the options that need no other component; empty when fine.
    pub fn validate(&self) -> Vec<String> {
        match self {
            SinkKind::Logger(_) | SinkKind::Null(_) => Vec::new(),
            SinkKind::FileRoll(c) => c.validate(),
            SinkKind::Hdfs(c) => c.validate(),
            SinkKind::Http(c) => c.validate(),
        }
    }

    /// Resolves relative paths against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            SinkKind::FileRoll(c) => c.dir = crate::topology::resolve(base, &c.dir),
            SinkKind::Hdfs(c) => c.base = base.to_path_buf(),
            SinkKind::Http(c) => c.resolve_paths(base),
            SinkKind::Logger(_) | SinkKind::Null(_) => {}
        }
    }

    /// Builds a fresh sink (on start and on every restart).
    ///
    /// # Errors
    /// When the output cannot be opened.
    pub fn build(&self, name: &str, counters: Arc<SinkCounters>) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            SinkKind::Logger(c) => Box::new(logger::LoggerSink::new(name, c.clone())),
            SinkKind::Null(_) => Box::new(null::NullSink),
            SinkKind::FileRoll(c) => Box::new(file_roll::FileRollSink::new(c.clone(), counters)?),
            SinkKind::Hdfs(c) => Box::new(hdfs::HdfsSink::new(c.clone(), counters)?),
            SinkKind::Http(c) => Box::new(http::HttpSink::new(name, c.clone(), counters)?),
        })
    }

    /// Where the sink's output goes, for the run summary.
    pub fn output(&self) -> String {
        match self {
            SinkKind::Logger(_) => "the log (stderr)".into(),
            SinkKind::Null(_) => "nowhere (discarded)".into(),
            SinkKind::FileRoll(c) => c.dir.display().to_string(),
            SinkKind::Hdfs(c) => c.output(),
            SinkKind::Http(c) => c.url.clone(),
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

/// The supervised actor that drains one channel into one sink.
pub struct SinkRunner {
    name: String,
    channel: ChannelHandle,
    batch_size: usize,
    factory: SinkFactory,
    counters: Arc<SinkCounters>,
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
        SinkRunner {
            name: name.into(),
            channel,
            batch_size,
            factory,
            counters,
            stop,
            restarts: Restarts::default(),
            idle: false,
        }
    }
}

impl Actor for SinkRunner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.idle = false;
        let delay = self.restarts.delay();
        let work = drain(
            self.channel.clone(),
            self.batch_size,
            self.factory.clone(),
            self.counters.clone(),
            self.stop.clone(),
            delay,
        );
        let delivered_before = self.counters.drain_success.get();
        let fut = async move {
            let result = std::panic::AssertUnwindSafe(work).catch_unwind().await;
            result.unwrap_or_else(|p| Err(SinkError::Panic(panic_message(p))))
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            let _span = tracing::info_span!("sink", name = %act.name).entered();
            match result {
                Ok(()) => act.idle = true,
                Err(e) => {
                    let progressed = act.counters.drain_success.get() > delivered_before;
                    act.restarts.failed(progressed, &act.counters.restarts, "sink", &e);
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

/// The take / deliver / commit loop, until the agent stops and the channel is drained.
async fn drain(
    channel: ChannelHandle,
    batch_size: usize,
    factory: SinkFactory,
    counters: Arc<SinkCounters>,
    mut stop: watch::Receiver<Option<Instant>>,
    delay: Duration,
) -> Result<(), SinkError> {
    if !delay.is_zero() {
        tokio::select! {
            _ = actix_rt::time::sleep(delay) => {}
            _ = stop.wait_for(Option::is_some) => {}
        }
    }
    let mut sink = factory()?;
    loop {
        let stopping = *stop.borrow();
        if matches!(stopping, Some(deadline) if Instant::now() >= deadline) {
            break;
        }
        let wait = if stopping.is_some() { Duration::ZERO } else { TAKE_WAIT };
        let txn = channel.take(batch_size, wait).await?;
        let n = txn.events.len();
        if n == 0 {
            counters.batch_empty.inc();
            if stopping.is_some() {
                break;
            }
            sink.idle().await?;
            continue;
        }
        if n == batch_size {
            counters.batch_complete.inc();
        } else {
            counters.batch_underflow.inc();
        }
        counters.drain_attempt.add(n as u64);
        match sink.deliver(&txn.events).await {
            Ok(()) => {
                let bytes = body_bytes(&txn.events);
                channel.commit(txn).await?;
                counters.drain_success.add(n as u64);
                counters.bytes_delivered.add(bytes);
            }
            Err(e) => {
                counters.rollbacks.inc();
                let _ = channel.rollback(txn).await;
                return Err(e);
            }
        }
    }
    sink.close().await
}
