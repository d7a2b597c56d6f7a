//! The `RocksDb` channel: a durable queue in its own RocksDB instance (Flume's file channel, on
//! RocksDB).
//!
//! A put is one RocksDB `WriteBatch`, written by the channel's writer thread; with `sync: true` it
//! is fsynced before the put is acknowledged, and concurrent puts share one fsync (group commit).
//! A take marks sequence numbers in flight; a commit deletes them with range deletions; a rollback,
//! a dropped transaction or a restart makes them available again. The queue's state (next
//! sequence number, available and in-flight ranges) lives in memory ([`queue`]) and is rebuilt by
//! one scan when the channel opens, so takes never iterate over tombstones; recently put events
//! stay in a bounded cache, so a sink that keeps up never reads the disk. No RocksDB call runs on
//! the actor's event loop ([`store`]).

mod queue;
mod store;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;

use self::queue::{Cache, QueueState};
use self::store::{Opened, WriteOp, Writer, Written};
use super::{
    await_parked, ChannelError, ChannelHandle, Close, Commit, ParkedQueue, Put, Rollback, Size, Take, TakeTxn, TxnId,
    PARK_TICK,
};
use crate::event::Event;
use crate::metrics::ChannelCounters;
use crate::supervision::restart_backoff;
use crate::topology::duration;

/// Options of a `RocksDb` channel: `RocksDb(dir: "data/c1", capacity: 10000000, sync: true)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RocksDbConfig {
    /// The RocksDB directory, owned by this channel alone; relative to the topology file's folder.
    pub dir: PathBuf,
    /// Most events held at once, available plus taken-but-uncommitted. Default 1000000.
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// Most events in one put or take. Default 10000; at most `capacity`.
    #[serde(default = "default_transaction_capacity")]
    pub transaction_capacity: u64,
    /// Whether a put is fsynced before it is acknowledged (concurrent puts share one fsync).
    /// Default `true`.
    #[serde(default = "default_sync")]
    pub sync: bool,
    /// Most recently put events kept in memory so a sink that keeps up never reads the disk.
    /// Default 100000 events.
    #[serde(default = "default_cache_events")]
    pub cache_events: usize,
    /// How long a put waits for room before it is refused. Default `"3s"`.
    #[serde(default = "default_keep_alive", with = "duration")]
    pub keep_alive: Duration,
}

fn default_capacity() -> u64 {
    1_000_000
}
fn default_transaction_capacity() -> u64 {
    10_000
}
fn default_sync() -> bool {
    true
}
fn default_cache_events() -> usize {
    100_000
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(3)
}

/// How often the channel measures its size on disk.
const DISK_BYTES_INTERVAL: Duration = Duration::from_secs(2);

/// Opens the channel's RocksDB (off the event loop) and starts its supervised actor in the
/// current arbiter.
///
/// # Errors
/// [`ChannelError::Storage`] when the database cannot be opened (in use by another process,
/// unreadable, corrupt).
pub async fn start(
    name: &str,
    config: RocksDbConfig,
    counters: Arc<ChannelCounters>,
) -> Result<ChannelHandle, ChannelError> {
    Ok(ChannelHandle::new(name, start_actor(name, config, counters).await?))
}

/// As [`start`], answering the actor's address (which also takes [`Restart`]).
///
/// # Errors
/// As [`start`].
pub async fn start_actor(
    name: &str,
    config: RocksDbConfig,
    counters: Arc<ChannelCounters>,
) -> Result<Addr<RocksDbChannel>, ChannelError> {
    let dir = config.dir.clone();
    let opened = actix_rt::task::spawn_blocking(move || store::open(&dir))
        .await
        .map_err(|e| ChannelError::Storage(format!("open: {e}")))??;
    tracing::info!(channel = %name, dir = %config.dir.display(), events = opened.queue.held(), "RocksDb channel opened");
    let channel = RocksDbChannel::new(name, config, counters, opened);
    Ok(Supervisor::start(move |_| channel))
}

/// Stops the channel actor as a failed write does, so that its supervisor restarts it: the
/// database is closed and opened again, and the queue rebuilt from it. Transactions taken before
/// are forgotten, their events available again; puts in flight are answered `Closed`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Restart;

/// A put handed to the writer thread, waiting for its [`Written`] answer.
struct PendingPut {
    first: u64,
    n: u64,
    reply: oneshot::Sender<Result<(), ChannelError>>,
}

/// The RocksDb channel actor.
pub struct RocksDbChannel {
    name: String,
    config: RocksDbConfig,
    counters: Arc<ChannelCounters>,
    /// The open database and its writer; `None` while (re)opening and after [`Close`].
    store: Option<(Arc<rocksdb::DB>, Writer)>,
    /// The database of the previous start, closed before a restart opens it again.
    closing: Option<(Arc<rocksdb::DB>, Writer)>,
    /// Opened by [`start`], installed when the actor starts.
    opened: Option<Opened>,
    queue: QueueState,
    cache: Cache,
    next_seq: u64,
    /// Incremented at every (re)opening; answers of the writer of an older one are ignored.
    epoch: u64,
    pending: VecDeque<PendingPut>,
    pending_len: u64,
    puts: ParkedQueue<Vec<Event>, ()>,
    takes: ParkedQueue<usize, TakeTxn>,
    next_txn: TxnId,
    restarts: u32,
    closed: bool,
}

impl RocksDbChannel {
    fn new(name: &str, config: RocksDbConfig, counters: Arc<ChannelCounters>, opened: Opened) -> Self {
        counters.capacity.set(config.capacity);
        RocksDbChannel {
            name: name.into(),
            cache: Cache::new(config.cache_events),
            config,
            counters,
            store: None,
            closing: None,
            opened: Some(opened),
            queue: QueueState::default(),
            next_seq: 0,
            epoch: 0,
            pending: VecDeque::new(),
            pending_len: 0,
            puts: ParkedQueue::default(),
            takes: ParkedQueue::default(),
            next_txn: 1,
            restarts: 0,
            closed: false,
        }
    }

    /// Takes over a freshly opened database: its keys are the queue, a new writer serves it.
    fn install(&mut self, opened: Opened, ctx: &mut Context<Self>) {
        self.epoch += 1;
        let Opened { db, queue, next_seq } = opened;
        self.queue = queue;
        self.next_seq = next_seq;
        self.cache = Cache::new(self.config.cache_events);
        let writer = Writer::start(&self.name, db.clone(), self.config.sync, ctx.address().recipient(), self.epoch);
        self.store = Some((db, writer));
        self.update_size();
        self.serve_parked(ctx);
    }

    fn update_size(&self) {
        self.counters.size.set(self.queue.held());
    }

    fn fits(&self, n: usize) -> bool {
        self.queue.held() + self.pending_len + n as u64 <= self.config.capacity
    }

    /// Hands a put to the writer thread; `reply` is answered when it is on disk.
    fn submit(&mut self, events: Vec<Event>, reply: oneshot::Sender<Result<(), ChannelError>>) {
        let Some((_, writer)) = &self.store else {
            let _ = reply.send(Err(ChannelError::Closed));
            return;
        };
        let (first, n) = (self.next_seq, events.len() as u64);
        if !writer.send(WriteOp::Put { first, events }) {
            let _ = reply.send(Err(ChannelError::Storage("the writer thread has stopped".into())));
            return;
        }
        self.next_seq += n;
        self.pending_len += n;
        self.pending.push_back(PendingPut { first, n, reply });
    }

    /// Starts a take of up to `max` events: from the cache, or from the disk for what it lacks.
    fn take_now(
        &mut self,
        max: usize,
        ctx: &mut Context<Self>,
    ) -> LocalBoxFuture<'static, Result<TakeTxn, ChannelError>> {
        let id = self.next_txn;
        self.next_txn += 1;
        let seqs = self.queue.take(id, max as u64);
        if seqs.is_empty() {
            return Box::pin(async { Ok(TakeTxn::empty()) });
        }
        let mut events: Vec<Option<Event>> = Vec::with_capacity(max);
        let mut missing: Vec<std::ops::Range<u64>> = Vec::new();
        for seq in seqs.iter().flat_map(Clone::clone) {
            let cached = self.cache.take(seq);
            if cached.is_none() {
                match missing.last_mut() {
                    Some(r) if r.end == seq => r.end += 1,
                    _ => missing.push(seq..seq + 1),
                }
            }
            events.push(cached);
        }
        self.counters.take_success.add(events.len() as u64);
        self.update_size();
        // From here on, dropping the transaction (a failed read, a taker gone) rolls it back.
        let mut txn = TakeTxn::new(id, Vec::new(), ctx.address().recipient());
        if missing.is_empty() {
            txn.events = events.into_iter().flatten().collect();
            return Box::pin(async move { Ok(txn) });
        }
        let db = self.store.as_ref().map(|(db, _)| db.clone());
        Box::pin(async move {
            let db = db.ok_or(ChannelError::Closed)?;
            let read = actix_rt::task::spawn_blocking(move || store::read(&db, &missing))
                .await
                .map_err(|e| ChannelError::Storage(format!("read: {e}")))??;
            let mut read = read.into_iter();
            txn.events = events
                .into_iter()
                .map(|e| e.or_else(|| read.next()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ChannelError::Storage("a read returned fewer events than asked".into()))?;
            Ok(txn)
        })
    }

    /// Serves parked puts (in order, while they fit) and parked takes (while events are available).
    fn serve_parked(&mut self, ctx: &mut Context<Self>) {
        if self.store.is_none() {
            return;
        }
        while let Some(p) = self.puts.0.front() {
            if p.reply.is_closed() {
                self.puts.0.pop_front();
                continue;
            }
            if !self.fits(p.request.len()) {
                break;
            }
            let p = self.puts.0.pop_front().expect("front exists");
            self.submit(p.request, p.reply);
        }
        while self.queue.available() > 0 {
            let Some(p) = self.takes.0.pop_front() else { break };
            if p.reply.is_closed() {
                continue;
            }
            let take = self.take_now(p.request, ctx);
            ctx.spawn(
                async move {
                    // If the taker left meanwhile, the transaction comes back and is dropped:
                    // that rolls it back.
                    let _ = p.reply.send(take.await);
                }
                .into_actor(self),
            );
        }
    }

    /// Answers every waiting put and take with `error`, as the database goes away.
    fn fail_waiting(&mut self, error: impl Fn() -> ChannelError) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(error()));
        }
        self.pending_len = 0;
        self.puts.fail_all(&error);
        self.takes.fail_all(&error);
    }
}

impl Actor for RocksDbChannel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        ctx.run_interval(PARK_TICK, |act, _| {
            let now = Instant::now();
            let capacity = act.config.capacity;
            act.puts.expire(now, |_| Err(ChannelError::Full { capacity }));
            act.takes.expire(now, |_| Ok(TakeTxn::empty()));
        });
        ctx.run_interval(DISK_BYTES_INTERVAL, |act, _| {
            let (dir, counters) = (act.config.dir.clone(), act.counters.clone());
            actix_rt::spawn(async move {
                if let Ok(bytes) = actix_rt::task::spawn_blocking(move || store::dir_bytes(&dir)).await {
                    counters.disk_bytes.set(bytes);
                }
            });
        });
        if self.closed {
            return;
        }
        if let Some(opened) = self.opened.take() {
            self.install(opened, ctx);
            return;
        }
        // A restart: let the old writer finish (its deletes included), close the database, and
        // open it again after a backoff; `wait` holds every message until then.
        let (dir, delay) = (self.config.dir.clone(), restart_backoff(self.restarts));
        let closing = self.closing.take();
        ctx.wait(
            async move {
                if let Some((db, writer)) = closing {
                    let _ = actix_rt::task::spawn_blocking(move || {
                        writer.finish();
                        drop(db);
                    })
                    .await;
                }
                actix_rt::time::sleep(delay).await;
                actix_rt::task::spawn_blocking(move || store::open(&dir))
                    .await
                    .unwrap_or_else(|e| Err(ChannelError::Storage(format!("open: {e}"))))
            }
            .into_actor(self)
            .map(|opened, act, ctx| match opened {
                Ok(opened) => {
                    tracing::info!(channel = %act.name, events = opened.queue.held(), "RocksDb channel reopened");
                    act.install(opened, ctx);
                }
                Err(e) => {
                    tracing::error!(channel = %act.name, error = %e, "RocksDb channel could not reopen; retrying");
                    ctx.stop();
                }
            }),
        );
    }
}

impl Supervised for RocksDbChannel {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.restarts = self.restarts.saturating_add(1);
        self.counters.restarts.inc();
        self.fail_waiting(|| ChannelError::Closed);
        // `started` lets the old writer finish and releases the database before opening it again.
        self.closing = self.store.take();
    }
}

impl Handler<Written> for RocksDbChannel {
    type Result = ();

    fn handle(&mut self, msg: Written, ctx: &mut Context<Self>) {
        if msg.epoch != self.epoch {
            return;
        }
        for (first, events) in msg.puts {
            let Some(p) = self.pending.pop_front() else { break };
            debug_assert_eq!(p.first, first, "the writer answers puts in order");
            self.pending_len -= p.n;
            match &msg.result {
                Ok(()) => {
                    self.queue.append(first..first + p.n);
                    self.cache.insert(first, events);
                    self.counters.put_success.add(p.n);
                    let _ = p.reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = p.reply.send(Err(ChannelError::Storage(e.clone())));
                }
            }
        }
        self.update_size();
        if let Err(e) = msg.result {
            tracing::error!(channel = %self.name, error = %e, "RocksDb channel failed a write; restarting it");
            ctx.stop();
            return;
        }
        self.serve_parked(ctx);
    }
}

impl Handler<Restart> for RocksDbChannel {
    type Result = ();

    fn handle(&mut self, _: Restart, ctx: &mut Context<Self>) {
        tracing::warn!(channel = %self.name, "restart requested");
        ctx.stop();
    }
}

impl Handler<Put> for RocksDbChannel {
    type Result = ResponseFuture<Result<(), ChannelError>>;

    fn handle(&mut self, msg: Put, _: &mut Context<Self>) -> Self::Result {
        let n = msg.events.len();
        self.counters.put_attempt.add(n as u64);
        let answer = if self.closed {
            Err(ChannelError::Closed)
        } else if n as u64 > self.config.transaction_capacity {
            Err(ChannelError::TooLarge { max: self.config.transaction_capacity, requested: n as u64 })
        } else if n == 0 {
            Ok(())
        } else if self.puts.0.is_empty() && self.fits(n) && self.store.is_some() {
            let (reply, rx) = oneshot::channel();
            self.submit(msg.events, reply);
            return Box::pin(await_parked(rx));
        } else {
            return Box::pin(await_parked(self.puts.park(msg.events, self.config.keep_alive)));
        };
        Box::pin(async move { answer })
    }
}

impl Handler<Take> for RocksDbChannel {
    type Result = ResponseFuture<Result<TakeTxn, ChannelError>>;

    fn handle(&mut self, msg: Take, ctx: &mut Context<Self>) -> Self::Result {
        self.counters.take_attempt.add(msg.max as u64);
        if self.closed {
            return Box::pin(async { Err(ChannelError::Closed) });
        }
        if msg.max as u64 > self.config.transaction_capacity {
            let max = self.config.transaction_capacity;
            return Box::pin(async move { Err(ChannelError::TooLarge { max, requested: msg.max as u64 }) });
        }
        if self.queue.available() > 0 || msg.wait.is_zero() {
            self.take_now(msg.max, ctx)
        } else {
            Box::pin(await_parked(self.takes.park(msg.max, msg.wait)))
        }
    }
}

impl Handler<Commit> for RocksDbChannel {
    type Result = Result<(), ChannelError>;

    fn handle(&mut self, msg: Commit, ctx: &mut Context<Self>) -> Self::Result {
        let seqs = self.queue.commit(msg.txn).ok_or(ChannelError::UnknownTxn(msg.txn))?;
        if let Some((_, writer)) = &self.store {
            // The delete is not waited for: lost (a crash before it is written), it only brings
            // delivered events back, which at-least-once delivery allows.
            writer.send(WriteOp::Delete(seqs));
        }
        self.update_size();
        self.serve_parked(ctx);
        Ok(())
    }
}

impl Handler<Rollback> for RocksDbChannel {
    type Result = Result<(), ChannelError>;

    fn handle(&mut self, msg: Rollback, ctx: &mut Context<Self>) -> Self::Result {
        let n = self.queue.rollback(msg.txn).ok_or(ChannelError::UnknownTxn(msg.txn))?;
        self.counters.rollback.add(n);
        self.serve_parked(ctx);
        Ok(())
    }
}

impl Handler<Size> for RocksDbChannel {
    type Result = u64;

    fn handle(&mut self, _: Size, _: &mut Context<Self>) -> u64 {
        self.queue.held()
    }
}

impl Handler<Close> for RocksDbChannel {
    type Result = ResponseFuture<()>;

    /// Stops taking requests, lets the writer finish what is queued, syncs the WAL and closes the
    /// database. Puts already handed to the writer are still answered.
    fn handle(&mut self, _: Close, _: &mut Context<Self>) -> Self::Result {
        self.closed = true;
        self.puts.fail_all(|| ChannelError::Closed);
        self.takes.fail_all(|| ChannelError::Closed);
        let store = self.store.take();
        let name = self.name.clone();
        Box::pin(async move {
            let Some((db, writer)) = store else { return };
            let closed = actix_rt::task::spawn_blocking(move || {
                writer.finish();
                let flushed = db.flush_wal(true);
                drop(db);
                flushed
            })
            .await;
            match closed {
                Ok(Ok(())) => tracing::info!(channel = %name, "RocksDb channel closed"),
                Ok(Err(e)) => tracing::error!(channel = %name, error = %e, "RocksDb channel: final WAL sync failed"),
                Err(e) => tracing::error!(channel = %name, error = %e, "RocksDb channel: close failed"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn lines(from: u64, n: u64) -> Vec<Event> {
        (from..from + n)
            .map(|i| Event::new(format!("{i} 081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1")))
            .collect()
    }

    #[actix_rt::test]
    async fn a_restarted_channel_reopens_its_database_and_returns_taken_events() {
        let dir = tempfile::tempdir().unwrap();
        let config = RocksDbConfig {
            dir: dir.path().join("c1"),
            capacity: 1000,
            transaction_capacity: 100,
            sync: true,
            cache_events: 1000,
            keep_alive: Duration::from_millis(50),
        };
        let metrics = Metrics::new();
        let addr = start_actor("c1", config, metrics.channel("c1")).await.unwrap();
        let ch = ChannelHandle::new("c1", addr.clone());
        for i in 0..3 {
            addr.send(Put { events: lines(i * 10, 10) }).await.unwrap().unwrap();
        }
        let delivered = ch.take(10, Duration::ZERO).await.unwrap();
        ch.commit(delivered).await.unwrap();
        let mut taken = ch.take(10, Duration::ZERO).await.unwrap();
        assert_eq!(taken.events, lines(10, 10));

        addr.send(Restart).await.unwrap();
        assert_eq!(addr.send(Size).await.unwrap(), 20, "the committed take stays gone, the open one is back");
        let id = taken.disarm().unwrap();
        assert_eq!(addr.send(Commit { txn: id }).await.unwrap(), Err(ChannelError::UnknownTxn(id)));
        addr.send(Put { events: lines(30, 5) }).await.unwrap().unwrap();
        let all = ch.take(100, Duration::ZERO).await.unwrap();
        let expected: Vec<Event> = lines(10, 20).into_iter().chain(lines(30, 5)).collect();
        assert_eq!(all.events, expected, "FIFO across the restart, nothing lost");
        ch.commit(all).await.unwrap();
        assert_eq!(metrics.channel("c1").restarts.get(), 1);
    }
}
