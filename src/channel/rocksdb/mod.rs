//! The `RocksDb` channel: a durable queue in its own RocksDB instance (Flume's file channel, on
//! RocksDB).
//!
//! A put is one RocksDB `WriteBatch`, written by the channel's writer thread; with `sync: true` it
//! is fsynced before the put is acknowledged, and concurrent puts share one fsync (group commit).
//! A take marks sequence numbers in flight; a commit deletes them with range deletions; a rollback,
//! a dropped transaction or a restart makes them available again. The queue's state (next
//! sequence number, available and in-flight ranges) lives in memory ([`queue`]) and is read from
//! the key index when the channel opens ([`index`]: a few records, no stored event), so takes
//! never iterate over tombstones and a backlog of any size opens at once; recently put events
//! stay in a cache bounded in events and bytes, so a sink that keeps up never reads the disk. No
//! RocksDB call runs on the actor's event loop ([`store`]).
//!
//! Memory is bounded in bytes: the event cache (`cache_bytes`), the puts waiting for the writer
//! thread (`writer_queue_bytes`), the memtables (`write_buffer_bytes` times `write_buffers` per
//! channel, and all channels of the agent together under `rocksdb_memory`'s
//! `write_buffer_bytes`), and the block cache the agent's channels share ([`budget`]).

pub mod budget;
pub mod crypt;
mod index;
mod queue;
pub mod salvage;
mod store;
pub mod tools;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;

pub use self::budget::RocksDbMemory;
use self::crypt::Keys;
pub use self::crypt::{Aes256GcmConfig, EncryptionConfig};
use self::queue::{Cache, QueueState};
pub use self::salvage::SalvageReport;
pub use self::store::{dead_letters, DeadLetter};
use self::store::{Opened, Tuning, WriteOp, Writer, Written};
use super::memory::event_bytes;
use super::{
    await_parked, ChannelError, ChannelHandle, Close, Commit, ParkedQueue, Put, Rollback, Size, StorageErrorKind, Take,
    TakeTxn, TxnId, PARK_TICK,
};
use crate::config::duration;
use crate::event::Event;
use crate::metrics::{ChannelCounters, ComponentState};
use crate::supervision::{restart_backoff, HEALTHY_PERIOD};

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
    /// Most bytes (bodies plus header names and values) of the events kept in that cache; the
    /// oldest leave first. Default 4194304 (4 MiB).
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: u64,
    /// Bytes of one RocksDB memtable: puts are gathered in it before they are flushed to a table
    /// file (most events are taken and deleted before). Default 4194304 (4 MiB).
    #[serde(default = "default_write_buffer_bytes")]
    pub write_buffer_bytes: u64,
    /// Most memtables of the channel: the one written and those being flushed (RocksDB's
    /// `max_write_buffer_number`). Default 2; at least 2.
    #[serde(default = "default_write_buffers")]
    pub write_buffers: u32,
    /// Most bytes of puts handed to the writer thread and not yet written; more puts wait (and
    /// are refused as full after `keep_alive`). Default 4194304 (4 MiB).
    #[serde(default = "default_writer_queue_bytes")]
    pub writer_queue_bytes: u64,
    /// How long a put waits for room before it is refused. Default `"3s"`.
    #[serde(default = "default_keep_alive", with = "duration")]
    pub keep_alive: Duration,
    /// Most bytes the channel's directory may use on disk (`DiskBytes`); at the bound puts are
    /// refused as full (back-pressure) while takes and commits go on. Default: none.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Puts are refused as full while the file system holding `dir` has fewer free bytes (as
    /// Flume's file channel `minimumRequiredSpace`). Default 524288000 (500 MiB); 0 turns it off.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Encryption at rest: `Some(Aes256Gcm(keys: {"2026-12": "keys/2026-12.key"}, active:
    /// "2026-12"))` seals every stored value carrying event content with AES-256-GCM under the
    /// active key; values under the other keys stay readable ([`crypt`]). Default `None`.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
}

impl RocksDbConfig {
    /// The channel's own memtable options.
    pub(crate) fn tuning(&self) -> Tuning {
        Tuning { write_buffer_bytes: self.write_buffer_bytes, write_buffers: self.write_buffers }
    }

    /// What is wrong with the memory options, as `(option, why)`, for validation.
    pub fn memory_problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.cache_events == 0 {
            out.push(("cache_events", "cache_events must be positive".to_string()));
        }
        if self.write_buffer_bytes < 64 << 10 {
            out.push((
                "write_buffer_bytes",
                format!("write_buffer_bytes ({}) must be at least 65536 (64 KiB)", self.write_buffer_bytes),
            ));
        }
        if self.write_buffers < 2 {
            out.push((
                "write_buffers",
                format!(
                    "write_buffers ({}) must be at least 2: one written while another is flushed",
                    self.write_buffers
                ),
            ));
        }
        if self.writer_queue_bytes == 0 {
            out.push(("writer_queue_bytes", "writer_queue_bytes must be positive".to_string()));
        }
        out
    }

    /// The defaults for a channel in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RocksDbConfig {
            dir: dir.into(),
            capacity: default_capacity(),
            transaction_capacity: default_transaction_capacity(),
            sync: default_sync(),
            cache_events: default_cache_events(),
            cache_bytes: default_cache_bytes(),
            write_buffer_bytes: default_write_buffer_bytes(),
            write_buffers: default_write_buffers(),
            writer_queue_bytes: default_writer_queue_bytes(),
            keep_alive: default_keep_alive(),
            max_bytes: None,
            min_free_bytes: default_min_free_bytes(),
            encryption: None,
        }
    }
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
fn default_cache_bytes() -> u64 {
    4 << 20
}
fn default_write_buffer_bytes() -> u64 {
    4 << 20
}
fn default_write_buffers() -> u32 {
    2
}
fn default_writer_queue_bytes() -> u64 {
    4 << 20
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(3)
}
fn default_min_free_bytes() -> u64 {
    500 << 20
}

/// How often the channel measures its size on disk and the free space of its file system.
const SPACE_INTERVAL: Duration = Duration::from_secs(1);

/// Below this size on disk a drained channel is not compacted.
const COMPACT_MIN_BYTES: u64 = 16 << 20;

/// Opens the channel's RocksDB (off the event loop) and starts its supervised actor in the
/// current arbiter. A damaged directory is set aside and salvaged first ([`salvage`]).
///
/// When the database cannot be opened (its `LOCK` held by another process, permission denied,
/// damaged beyond salvage), the channel still starts, failed: puts wait and are answered
/// [`ChannelError::Full`] (back-pressure: nothing is acknowledged), takes find it empty, and it
/// tries to open again with capped exponential backoff ([`restart_backoff`]) until it succeeds,
/// counting `ChannelOpenFailureCount` and holding the `ChannelFailed` gauge at 1 meanwhile. With
/// `strict`, it does not start.
///
/// # Errors
/// Only with `strict`: [`ChannelError::Storage`] when the database cannot be opened.
pub async fn start(
    name: &str,
    config: RocksDbConfig,
    counters: Arc<ChannelCounters>,
    strict: bool,
) -> Result<ChannelHandle, ChannelError> {
    Ok(ChannelHandle::new(name, start_actor(name, config, counters, strict).await?))
}

/// As [`start`], answering the actor's address (which also takes [`Restart`]).
///
/// # Errors
/// As [`start`].
pub async fn start_actor(
    name: &str,
    config: RocksDbConfig,
    counters: Arc<ChannelCounters>,
    strict: bool,
) -> Result<Addr<RocksDbChannel>, ChannelError> {
    let mut channel = RocksDbChannel::new(name, config, counters, None);
    if strict {
        // Salvaging included: a salvage is not a failure.
        let (opened, keys) = open_off_loop(&channel.name, &channel.config).await?;
        channel.opened = Some(opened);
        channel.keys = keys;
    } else {
        let (dir, owner, encryption, tuning) = (
            channel.config.dir.clone(),
            channel.name.clone(),
            channel.config.encryption.clone(),
            channel.config.tuning(),
        );
        let checked = actix_rt::task::spawn_blocking(move || {
            let keys = Keys::load(&owner, encryption.as_ref())?;
            store::open_checked(&dir, &keys, &tuning).map(|opened| (opened, keys))
        })
        .await;
        match checked {
            Ok(Ok((opened, keys))) => {
                channel.opened = Some(opened);
                channel.keys = keys;
            }
            // Damaged: the actor salvages it in the background, the other flows start meanwhile.
            Ok(Err(e)) if e.storage_kind() == Some(StorageErrorKind::Corruption) => {
                tracing::error!(channel = %name, dir = %channel.config.dir.display(), error = %e, "RocksDb channel directory is damaged; salvaging it in the background");
            }
            Ok(Err(e)) => channel.open_failed(&e),
            Err(e) => channel.open_failed(&ChannelError::storage(
                StorageErrorKind::Io,
                &channel.config.dir,
                format!("the open task failed: {e}"),
            )),
        }
    }
    Ok(Supervisor::start(move |_| channel))
}

/// Reads the key files (at every attempt, so a key file put right is found) and runs
/// [`store::open`] on the blocking pool.
async fn open_off_loop(name: &str, config: &RocksDbConfig) -> Result<(Opened, Keys), ChannelError> {
    let (dir, name, encryption, tuning) =
        (config.dir.clone(), name.to_string(), config.encryption.clone(), config.tuning());
    let path = dir.clone();
    actix_rt::task::spawn_blocking(move || {
        let keys = Keys::load(&name, encryption.as_ref())?;
        store::open(&dir, &keys, &tuning).map(|opened| (opened, keys))
    })
    .await
    .unwrap_or_else(|e| Err(ChannelError::storage(StorageErrorKind::Io, &path, format!("the open task failed: {e}"))))
}

/// Salvages the channel directory `dir` offline (`flumen channel salvage DIR`): when it does not
/// open cleanly because of damage, it is set aside and what is readable salvaged, as the channel
/// does when it opens. Answers `None` when there was no damage (nothing is changed), else the
/// report.
///
/// `keys` open (and seal again) the values of an encrypted channel.
///
/// # Errors
/// [`ChannelError::Storage`] when the directory cannot be opened for another reason (`Lock`: an
/// agent runs it; `PermissionDenied`; `Io`) or cannot be salvaged; [`ChannelError::Key`] when
/// `keys` cannot read it.
pub fn salvage_dir(dir: &std::path::Path, keys: &Keys) -> Result<Option<(SalvageReport, u64)>, ChannelError> {
    if !dir.is_dir() {
        return Err(ChannelError::storage(StorageErrorKind::Io, dir, "not a directory"));
    }
    let opened = store::open(dir, keys, &Tuning::default())?;
    Ok(opened.salvage.map(|r| (r, opened.queue.held())))
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
    /// Bytes of its events ([`event_bytes`]).
    bytes: u64,
    reply: oneshot::Sender<Result<(), ChannelError>>,
}

/// The RocksDb channel actor.
pub struct RocksDbChannel {
    name: String,
    config: RocksDbConfig,
    /// The keys of the last opening: values are sealed and opened with them.
    keys: Keys,
    counters: Arc<ChannelCounters>,
    /// The open database and its writer; `None` while (re)opening and after [`Close`].
    store: Option<(Arc<rocksdb::DB>, Writer)>,
    /// The database of the previous start, closed before a restart opens it again.
    closing: Option<(Arc<rocksdb::DB>, Writer)>,
    /// Opened by [`start`], installed when the actor starts.
    opened: Option<Opened>,
    /// Consecutive failed attempts to open the database.
    open_failures: u32,
    /// Until the actor first started.
    first_start: bool,
    queue: QueueState,
    cache: Cache,
    next_seq: u64,
    /// Incremented at every (re)opening; answers of the writer of an older one are ignored.
    epoch: u64,
    pending: VecDeque<PendingPut>,
    pending_len: u64,
    /// Bytes of the puts handed to the writer and not yet answered.
    pending_bytes: u64,
    puts: ParkedQueue<Vec<Event>, ()>,
    takes: ParkedQueue<usize, TakeTxn>,
    next_txn: TxnId,
    /// Consecutive restarts (reset after [`HEALTHY_PERIOD`] without one): the reopening backoff.
    restarts: u32,
    /// When the channel last restarted.
    last_restart: Option<Instant>,
    closed: bool,
    /// Why puts are refused (`max_bytes` reached, too little free space, a write that found the
    /// disk full), or `None`.
    space: Option<String>,
    /// A write failed for want of space; puts stay refused until the file system has room again.
    write_no_space: bool,
    /// Events deleted (committed) since the last compaction.
    deleted_since_compaction: u64,
    compacting: bool,
}

/// The result of a periodic space check.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct SpaceChecked {
    disk_bytes: u64,
    free_bytes: Option<u64>,
}

impl RocksDbChannel {
    fn new(name: &str, config: RocksDbConfig, counters: Arc<ChannelCounters>, opened: Option<Opened>) -> Self {
        counters.capacity.set(config.capacity);
        RocksDbChannel {
            name: name.into(),
            keys: Keys::plain(name),
            cache: Cache::new(config.cache_events, config.cache_bytes),
            config,
            counters,
            store: None,
            closing: None,
            opened,
            open_failures: 0,
            first_start: true,
            queue: QueueState::default(),
            next_seq: 0,
            epoch: 0,
            pending: VecDeque::new(),
            pending_len: 0,
            pending_bytes: 0,
            puts: ParkedQueue::default(),
            takes: ParkedQueue::default(),
            next_txn: 1,
            restarts: 0,
            last_restart: None,
            closed: false,
            space: None,
            write_no_space: false,
            deleted_since_compaction: 0,
            compacting: false,
        }
    }

    /// Records a failed open: logged with the channel, its directory and the error's kind,
    /// counted, and the `ChannelFailed` gauge set until an open succeeds.
    fn open_failed(&mut self, e: &ChannelError) {
        self.open_failures = self.open_failures.saturating_add(1);
        self.counters.open_failures.inc();
        self.counters.failed.set(1);
        self.counters.state.set_because(ComponentState::Failed, e);
        let kind = e.storage_kind().map_or_else(|| "other".to_string(), |k| k.to_string());
        tracing::error!(
            channel = %self.name,
            dir = %self.config.dir.display(),
            kind = %kind,
            error = %e,
            attempt = self.open_failures,
            retry_in = ?restart_backoff(self.open_failures),
            "RocksDb channel cannot open; its sources wait (puts answered full), its sinks find it empty; retrying"
        );
    }

    /// Opens the database after `delay` (first letting the writer of the previous opening finish
    /// and closing it), without holding the mailbox: meanwhile puts wait and are refused as full,
    /// takes find the channel empty. A failed open is retried with capped exponential backoff.
    ///
    /// With `hold` (a restart's reopen) the mailbox is held until this attempt ends, as a restart
    /// is meant to be brief; a failed attempt's retries never hold it.
    fn open_later(
        &mut self,
        closing: Option<(Arc<rocksdb::DB>, Writer)>,
        delay: Duration,
        hold: bool,
        ctx: &mut Context<Self>,
    ) {
        let (name, config) = (self.name.clone(), self.config.clone());
        let attempt = async move {
                if let Some((db, writer)) = closing {
                    let _ = actix_rt::task::spawn_blocking(move || {
                        writer.finish();
                        drop(db);
                    })
                    .await;
                }
                actix_rt::time::sleep(delay).await;
                open_off_loop(&name, &config).await
            }
            .into_actor(self)
            .map(|opened, act, ctx| {
                if act.closed {
                    return;
                }
                match opened {
                    Ok((opened, keys)) => {
                        tracing::info!(channel = %act.name, events = opened.queue.held(), failed_attempts = act.open_failures, "RocksDb channel (re)opened");
                        act.keys = keys;
                        act.install(opened, ctx);
                    }
                    Err(e) => {
                        act.open_failed(&e);
                        act.open_later(None, restart_backoff(act.open_failures), false, ctx);
                    }
                }
            });
        if hold {
            ctx.wait(attempt);
        } else {
            ctx.spawn(attempt);
        }
    }

    /// Takes over a freshly opened database: its keys are the queue, a new writer serves it.
    fn install(&mut self, opened: Opened, ctx: &mut Context<Self>) {
        self.epoch += 1;
        self.open_failures = 0;
        self.counters.failed.set(0);
        self.counters.state.set_unless_stopping(ComponentState::Running);
        let Opened { db, queue, next_seq, index, salvage, disk_bytes } = opened;
        self.counters.disk_bytes.set(disk_bytes);
        if let Some(report) = salvage {
            self.counters.damaged.inc();
            self.counters.salvaged.add(report.salvaged);
            self.counters.dead_letter.add(report.dead_lettered);
            tracing::error!(
                channel = %self.name,
                dir = %self.config.dir.display(),
                damaged_copy = %report.damaged_copy.display(),
                salvaged = report.salvaged,
                dead_lettered = report.dead_lettered,
                unreadable_spans = report.unreadable.len(),
                repaired = report.repaired,
                cause = %report.cause,
                "RocksDb channel was damaged: {report}"
            );
        }
        tracing::info!(channel = %self.name, dir = %self.config.dir.display(), events = queue.held(), "RocksDb channel opened");
        self.queue = queue;
        self.next_seq = next_seq;
        self.cache = Cache::new(self.config.cache_events, self.config.cache_bytes);
        let writer = Writer::start(
            &self.name,
            db.clone(),
            self.config.dir.clone(),
            self.config.sync,
            ctx.address().recipient(),
            self.epoch,
            self.keys.clone(),
            index,
        );
        self.store = Some((db, writer));
        self.update_size();
        self.serve_parked(ctx);
    }

    fn update_size(&self) {
        self.counters.size.set(self.queue.held());
    }

    /// Whether a put of `n` events of `bytes` bytes can go to the writer now: there is room for
    /// them and the writer's queue is under `writer_queue_bytes` (an empty queue takes any put).
    fn fits(&self, n: usize, bytes: u64) -> bool {
        self.space.is_none()
            && self.queue.held() + self.pending_len + n as u64 <= self.config.capacity
            && (self.pending_bytes == 0 || self.pending_bytes + bytes <= self.config.writer_queue_bytes)
    }

    /// Decides from a space check whether puts are refused; compacts a drained channel.
    fn space_checked(&mut self, msg: SpaceChecked, ctx: &mut Context<Self>) {
        self.counters.disk_bytes.set(msg.disk_bytes);
        let free_ok = msg.free_bytes.is_none_or(|f| f >= self.config.min_free_bytes && f > 0);
        if free_ok {
            self.write_no_space = false;
        }
        let refusal = if let Some(max) = self.config.max_bytes.filter(|&m| msg.disk_bytes >= m) {
            Some(format!("the channel uses {} bytes on disk, max_bytes is {max}", msg.disk_bytes))
        } else if !free_ok {
            Some(format!(
                "the file system has {} bytes free, min_free_bytes is {}",
                msg.free_bytes.unwrap_or(0),
                self.config.min_free_bytes
            ))
        } else if self.write_no_space {
            Some("a write found the disk full".into())
        } else {
            None
        };
        match (&self.space, &refusal) {
            (None, Some(why)) => {
                tracing::warn!(channel = %self.name, dir = %self.config.dir.display(), "refusing puts (full): {why}")
            }
            (Some(_), None) => {
                tracing::info!(channel = %self.name, dir = %self.config.dir.display(), "space again: taking puts")
            }
            _ => {}
        }
        let resumed = self.space.is_some() && refusal.is_none();
        self.space = refusal;
        if resumed {
            self.serve_parked(ctx);
        }
        self.maybe_compact(msg.disk_bytes, ctx);
    }

    /// Reclaims the disk after a drain: once the queue is empty (or deletions far outnumber what
    /// is held), compacts the whole key range, so the range deletions of committed takes and the
    /// values under them leave the disk.
    fn maybe_compact(&mut self, disk_bytes: u64, ctx: &mut Context<Self>) {
        let held = self.queue.held();
        let drained = held == 0 && self.pending_len == 0;
        let mostly_deleted = self.deleted_since_compaction >= 1_000_000 && self.deleted_since_compaction >= 4 * held;
        if self.compacting
            || self.deleted_since_compaction == 0
            || disk_bytes < COMPACT_MIN_BYTES
            || !(drained || mostly_deleted)
        {
            return;
        }
        let Some((db, _)) = &self.store else { return };
        let (db, name, deleted) = (db.clone(), self.name.clone(), self.deleted_since_compaction);
        self.compacting = true;
        self.deleted_since_compaction = 0;
        ctx.spawn(
            async move {
                let started = Instant::now();
                let _ = actix_rt::task::spawn_blocking(move || {
                    db.compact_range::<&[u8], &[u8]>(None, None);
                })
                .await;
                tracing::info!(channel = %name, deleted, elapsed = ?started.elapsed(), "compacted the drained channel");
            }
            .into_actor(self)
            .map(|(), act, _| act.compacting = false),
        );
    }

    /// Hands a put to the writer thread; `reply` is answered when it is on disk.
    /// `bytes`: of `events` ([`event_bytes`]), counted once by the caller.
    fn submit(&mut self, events: Vec<Event>, bytes: u64, reply: oneshot::Sender<Result<(), ChannelError>>) {
        let Some((_, writer)) = &self.store else {
            let _ = reply.send(Err(ChannelError::Closed));
            return;
        };
        let (first, n) = (self.next_seq, events.len() as u64);
        if !writer.send(WriteOp::Put { first, events }) {
            let _ = reply.send(Err(ChannelError::storage(
                StorageErrorKind::Io,
                &self.config.dir,
                "the writer thread has stopped",
            )));
            return;
        }
        self.next_seq += n;
        self.pending_len += n;
        self.pending_bytes += bytes;
        self.pending.push_back(PendingPut { first, n, bytes, reply });
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
        let (dir, me, counters, name, keys) =
            (self.config.dir.clone(), ctx.address(), self.counters.clone(), self.name.clone(), self.keys.clone());
        Box::pin(async move {
            let db = db.ok_or(ChannelError::Closed)?;
            let path = dir.clone();
            let read =
                actix_rt::task::spawn_blocking(move || store::read(&db, &path, &missing, &keys)).await.map_err(
                    |e| ChannelError::storage(StorageErrorKind::Io, &dir, format!("the read task failed: {e}")),
                )??;
            if !read.dead.is_empty() || !read.gone.is_empty() {
                for (seq, reason) in &read.dead {
                    tracing::error!(channel = %name, seq, reason = %reason, "event moved to the dead-letter store");
                }
                if !read.gone.is_empty() {
                    tracing::warn!(channel = %name, events = read.gone.len(), "passed over events the index still listed that were dead-lettered before");
                }
                let dead: Vec<u64> = read.dead.iter().map(|(s, _)| *s).chain(read.gone.iter().copied()).collect();
                counters.dead_letter.add(read.dead.len() as u64);
                counters.take_success.sub(dead.len() as u64);
                // Before the answer reaches the taker, so before its commit or rollback.
                me.do_send(Forget { txn: id, seqs: dead });
            }
            let dead: std::collections::HashSet<u64> =
                read.dead.iter().map(|(s, _)| *s).chain(read.gone.iter().copied()).collect();
            let mut read = read.events.into_iter();
            let mut out = Vec::with_capacity(events.len());
            for (seq, e) in seqs.iter().flat_map(Clone::clone).zip(events) {
                match e {
                    Some(e) => out.push(e),
                    None if dead.contains(&seq) => {}
                    None => match read.next() {
                        Some((s, e)) if s == seq => out.push(e),
                        _ => {
                            return Err(ChannelError::storage(
                                StorageErrorKind::Corruption,
                                &dir,
                                format!("event {seq} was not read back"),
                            ))
                        }
                    },
                }
            }
            txn.events = out;
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
            let bytes = p.request.iter().map(event_bytes).sum();
            if !self.fits(p.request.len(), bytes) {
                break;
            }
            let p = self.puts.0.pop_front().expect("front exists");
            self.submit(p.request, bytes, p.reply);
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
        self.pending_bytes = 0;
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
        ctx.run_interval(SPACE_INTERVAL, |act, ctx| {
            let (dir, me) = (act.config.dir.clone(), ctx.address());
            actix_rt::spawn(async move {
                let checked = actix_rt::task::spawn_blocking(move || SpaceChecked {
                    disk_bytes: store::dir_bytes(&dir),
                    free_bytes: store::free_bytes(&dir),
                })
                .await;
                if let Ok(checked) = checked {
                    me.do_send(checked);
                }
            });
        });
        if self.closed {
            return;
        }
        if let Some(opened) = self.opened.take() {
            self.first_start = false;
            self.install(opened, ctx);
            return;
        }
        if self.first_start {
            // The first open failed or found damage (in `start`): open (salvaging) in the
            // background, retrying with backoff.
            self.first_start = false;
            self.open_later(None, restart_backoff(self.open_failures), false, ctx);
            return;
        }
        // A restart: let the old writer finish (its deletes included), close the database, and
        // open it again after a backoff.
        let closing = self.closing.take();
        self.open_later(closing, restart_backoff(self.restarts), true, ctx);
    }
}

/// Removes dead-lettered sequence numbers from a take transaction, so that a rollback does not
/// bring them back.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Forget {
    txn: TxnId,
    seqs: Vec<u64>,
}

impl Handler<Forget> for RocksDbChannel {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        self.queue.forget(msg.txn, &msg.seqs);
        if let Some((_, writer)) = &self.store {
            // Out of the key index too (their values left the queue already).
            writer.send(WriteOp::Delete(msg.seqs.iter().map(|&s| s..s + 1).collect()));
        }
        self.update_size();
    }
}

impl Supervised for RocksDbChannel {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Consecutive restarts only: after a healthy period the backoff starts over.
        let now = Instant::now();
        if self.last_restart.is_some_and(|last| now.duration_since(last) >= HEALTHY_PERIOD) {
            self.restarts = 0;
        }
        self.last_restart = Some(now);
        self.restarts = self.restarts.saturating_add(1);
        self.counters.restarts.inc();
        if self.counters.state.get() != ComponentState::Restarting {
            self.counters.state.set(ComponentState::Restarting);
        }
        self.fail_waiting(|| ChannelError::Closed);
        // `started` lets the old writer finish and releases the database before opening it again;
        // the reopening rebuilds the queue, and transactions taken before are forgotten.
        self.closing = self.store.take();
        self.queue = QueueState::default();
        self.cache = Cache::new(self.config.cache_events, self.config.cache_bytes);
        self.update_size();
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
            self.pending_bytes -= p.bytes;
            match &msg.result {
                Ok(()) => {
                    self.queue.append(first..first + p.n);
                    self.cache.insert(first, events);
                    self.counters.put_success.add(p.n);
                    let _ = p.reply.send(Ok(()));
                }
                // Not stored, so not acknowledged; the source waits and retries (back-pressure).
                Err(e) if e.storage_kind() == Some(StorageErrorKind::NoSpace) => {
                    let _ = p.reply.send(Err(ChannelError::Full { capacity: self.config.capacity }));
                }
                Err(e) => {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
        self.update_size();
        if let Err(e) = &msg.result {
            if e.storage_kind() == Some(StorageErrorKind::NoSpace) {
                // RocksDB stops writing until it recovers by itself once there is room (its
                // SstFileManager polls the free space); takes and reads go on. No restart: that
                // would forget the takes in flight.
                if self.space.is_none() {
                    tracing::warn!(channel = %self.name, error = %e, "the disk is full: refusing puts (full) until there is room");
                }
                self.write_no_space = true;
                self.space = Some("a write found the disk full".into());
                return;
            }
        }
        if let Err(e) = msg.result {
            tracing::error!(channel = %self.name, error = %e, "RocksDb channel failed a write; restarting it");
            self.counters.state.set_because(ComponentState::Restarting, &e);
            ctx.stop();
            return;
        }
        self.serve_parked(ctx);
    }
}

impl Handler<SpaceChecked> for RocksDbChannel {
    type Result = ();

    fn handle(&mut self, msg: SpaceChecked, ctx: &mut Context<Self>) {
        self.space_checked(msg, ctx);
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
        let bytes: u64 = msg.events.iter().map(event_bytes).sum();
        let answer = if self.closed {
            Err(ChannelError::Closed)
        } else if n as u64 > self.config.transaction_capacity {
            Err(ChannelError::TooLarge { max: self.config.transaction_capacity, requested: n as u64 })
        } else if n == 0 {
            Ok(())
        } else if self.puts.0.is_empty() && self.fits(n, bytes) && self.store.is_some() {
            let (reply, rx) = oneshot::channel();
            self.submit(msg.events, bytes, reply);
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
        self.deleted_since_compaction += seqs.iter().map(|r| r.end - r.start).sum::<u64>();
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
        self.counters.state.set(ComponentState::Stopped);
        self.puts.fail_all(|| ChannelError::Closed);
        self.takes.fail_all(|| ChannelError::Closed);
        let store = self.store.take();
        let name = self.name.clone();
        Box::pin(async move {
            let Some((db, writer)) = store else { return };
            let closed = actix_rt::task::spawn_blocking(move || {
                writer.finish();
                // Memtables to table files too, so the next open replays no WAL.
                let flushed = db.flush_wal(true).and_then(|()| db.flush());
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
            capacity: 1000,
            transaction_capacity: 100,
            cache_events: 1000,
            keep_alive: Duration::from_millis(50),
            min_free_bytes: 0,
            ..RocksDbConfig::new(dir.path().join("c1"))
        };
        let metrics = Metrics::new();
        let addr = start_actor("c1", config, metrics.channel("c1"), true).await.unwrap();
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
