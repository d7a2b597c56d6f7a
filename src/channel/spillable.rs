//! The `Spillable` channel: an in-memory queue in front of a durable `RocksDb` overflow (Flume's
//! `SpillableMemoryChannel`, flume-ng-channels/flume-spillable-memory-channel).
//!
//! Events stay in memory while there is room (`memory_capacity` events, `byte_capacity` bytes);
//! when the sinks fall behind and memory stays full for `overflow_timeout`, puts go to the
//! overflow, a [`RocksDbChannel`](super::rocksdb::RocksDbChannel) actor of its own on the
//! overflow's `dir`, until memory has room again. Takes come in put order across both, following
//! Flume's drain order: the available events as a queue of memory events and runs of overflow
//! events (n events in memory, then m in the overflow, ...), a take handing out the head, from
//! memory and at most one run of the overflow. A take transaction's rollback returns its events
//! to the head, in their order, as in the `Memory` channel.
//!
//! **What was only in memory is lost when the process dies** (SIGKILL, a crash, a power cut), as
//! in Flume; what was in the overflow survives and is delivered after the restart. On a clean stop
//! (or a reload that reopens the channel) the events in memory are first put into the overflow,
//! after the overflow's own events, so that nothing is lost then.
//!
//! The overflow is a full `RocksDb` channel: its `sync`, `cache_events`, `max_bytes`,
//! `min_free_bytes` and `encryption` options, its salvage of a damaged directory, its dead-letter
//! store and `flumen channel inspect DIR` work as on any `RocksDb` channel. Its own counters are
//! those of the channel `NAME.overflow`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::memory::event_bytes;
use super::rocksdb::RocksDbConfig;
use super::{
    await_parked, ChannelError, ChannelHandle, Close, Commit, ParkedQueue, Put, Rollback, Size, Take, TakeTxn, TxnId,
    PARK_TICK,
};
use crate::config::duration;
use crate::event::Event;
use crate::metrics::{ChannelCounters, ComponentState};

/// Options of a `Spillable` channel: `Spillable(memory_capacity: 10000, byte_capacity:
/// 16777216, overflow_timeout: "3s", overflow_deactivation_threshold: 5, overflow: RocksDb(dir:
/// "data/c1-overflow", capacity: 100000000))`.
///
/// The transaction capacity (most events in one put or take) is the overflow's
/// `transaction_capacity`, and the wait of a put for room in a full overflow its `keep_alive`
/// (Flume: "any file channel property", the keep-alive managed by the spillable channel).
/// Flume's `avgEventSize` and `byteCapacityBufferPercentage` have no counterpart: `byte_capacity`
/// counts the header bytes itself.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpillableConfig {
    /// Most events in memory at once, available plus taken-but-uncommitted (Flume's
    /// `memoryCapacity`). Default 10000; 0 sends every put to the overflow.
    #[serde(default = "default_memory_capacity")]
    pub memory_capacity: u64,
    /// Most bytes in memory at once: bodies plus header keys and values, as the `Memory`
    /// channel's `byte_capacity` (Flume's `byteCapacity`). Default 16777216 (16 MiB).
    #[serde(default = "super::memory::default_byte_capacity")]
    pub byte_capacity: u64,
    /// How long a put waits for room in memory before it goes to the overflow (Flume's
    /// `overflowTimeout`). Once a put spilled, puts that find memory full go to the overflow at
    /// once, until the deactivation threshold. Default `"3s"`.
    #[serde(default = "default_overflow_timeout", with = "duration")]
    pub overflow_timeout: Duration,
    /// Percent of `memory_capacity` free, after a take commits, at which puts that find memory
    /// full wait `overflow_timeout` again before spilling (Flume's
    /// `overflowDeactivationThreshold`). Default 5; 0 to 100.
    #[serde(default = "default_deactivation_threshold")]
    pub overflow_deactivation_threshold: u8,
    /// The durable overflow: `RocksDb(dir: ..., capacity: ..., ...)` with every option of a
    /// `RocksDb` channel; its `capacity` is Flume's `overflowCapacity`.
    pub overflow: OverflowConfig,
}

/// The overflow store of a `Spillable` channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub enum OverflowConfig {
    /// A `RocksDb` channel's options: `RocksDb(dir: "data/c1-overflow")`.
    RocksDb(RocksDbConfig),
}

impl SpillableConfig {
    /// The defaults, with an overflow in `dir`.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        SpillableConfig {
            memory_capacity: default_memory_capacity(),
            byte_capacity: super::memory::default_byte_capacity(),
            overflow_timeout: default_overflow_timeout(),
            overflow_deactivation_threshold: default_deactivation_threshold(),
            overflow: OverflowConfig::RocksDb(RocksDbConfig::new(dir)),
        }
    }

    /// The overflow's `RocksDb` options.
    pub fn rocksdb(&self) -> &RocksDbConfig {
        match &self.overflow {
            OverflowConfig::RocksDb(c) => c,
        }
    }

    /// The overflow's `RocksDb` options, to change.
    pub fn rocksdb_mut(&mut self) -> &mut RocksDbConfig {
        match &mut self.overflow {
            OverflowConfig::RocksDb(c) => c,
        }
    }

    /// Most events in one put or take: the overflow's `transaction_capacity`.
    pub fn transaction_capacity(&self) -> u64 {
        self.rocksdb().transaction_capacity
    }

    /// Most events held: `memory_capacity` plus the overflow's `capacity`.
    pub fn capacity(&self) -> u64 {
        self.memory_capacity.saturating_add(self.rocksdb().capacity)
    }
}

fn default_memory_capacity() -> u64 {
    10_000
}
fn default_overflow_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_deactivation_threshold() -> u8 {
    5
}

/// How often the channel compares its count of the overflow's events with the overflow's own
/// (events found when it opened, after a restart, or lost to dead-lettering).
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// One entry of the drain order: an event in memory, or a run of events in the overflow (the
/// next ones the overflow hands out, since it, too, hands out its oldest first and takes rolled
/// back events back at its head).
#[derive(Debug)]
enum Entry {
    Memory(Event),
    Overflow(u64),
}

/// A take transaction: its events as they were in the drain order (memory events, and runs of
/// the overflow's), and the overflow's own transaction holding the overflow runs' events.
#[derive(Debug, Default)]
struct Txn {
    segments: Vec<Entry>,
    overflow: Option<TxnId>,
}

impl Txn {
    fn memory_len(&self) -> u64 {
        self.segments.iter().filter(|e| matches!(e, Entry::Memory(_))).count() as u64
    }
    fn overflow_len(&self) -> u64 {
        self.segments.iter().map(|e| if let Entry::Overflow(n) = e { *n } else { 0 }).sum()
    }
    fn len(&self) -> u64 {
        self.memory_len() + self.overflow_len()
    }
    fn memory_bytes(&self) -> u64 {
        self.segments.iter().map(|e| if let Entry::Memory(e) = e { event_bytes(e) } else { 0 }).sum()
    }

    /// Shortens the overflow runs by `n` events, from the last one (events the overflow no longer
    /// had).
    fn shorten_overflow(&mut self, mut n: u64) {
        for e in self.segments.iter_mut().rev() {
            if let Entry::Overflow(m) = e {
                let k = (*m).min(n);
                *m -= k;
                n -= k;
            }
        }
        self.segments.retain(|e| !matches!(e, Entry::Overflow(0)));
    }
}

/// A put handed to the overflow, answered in the order puts were handed over.
struct Spill {
    ticket: u64,
    n: u64,
    result: Option<Result<(), ChannelError>>,
    reply: oneshot::Sender<Result<(), ChannelError>>,
}

/// The spillable channel actor.
pub struct SpillableChannel {
    name: String,
    config: SpillableConfig,
    counters: Arc<ChannelCounters>,
    overflow: ChannelHandle,
    /// The available events in the order they are taken: the oldest first.
    order: VecDeque<Entry>,
    /// Memory events in `order`.
    memory_queued: u64,
    /// Memory events taken and not yet committed.
    memory_in_flight: u64,
    /// [`event_bytes`] of the memory events held (queued and in flight).
    memory_bytes: u64,
    /// Overflow events in `order`.
    overflow_queued: u64,
    /// Overflow events taken (or being taken) and not yet committed.
    overflow_taken: u64,
    txns: HashMap<TxnId, Txn>,
    next_txn: TxnId,
    spills: VecDeque<Spill>,
    next_ticket: u64,
    /// Puts handed to the overflow so far (to tell whether a size answer is current).
    spill_generation: u64,
    /// Once a put spilled: puts that find memory full spill at once.
    activated: bool,
    puts: ParkedQueue<Vec<Event>, ()>,
    takes: ParkedQueue<usize, TakeTxn>,
    closed: bool,
}

/// Starts a `Spillable` channel `name`: its overflow (a `RocksDb` channel actor reporting to
/// `overflow_counters`, opened as [`super::rocksdb::start`] opens one) and the channel actor in
/// front of it, in the current arbiter.
///
/// # Errors
/// Only with `strict`: [`ChannelError::Storage`] when the overflow cannot be opened.
pub async fn start(
    name: &str,
    config: SpillableConfig,
    counters: Arc<ChannelCounters>,
    overflow_counters: Arc<ChannelCounters>,
    strict: bool,
) -> Result<(ChannelHandle, Addr<SpillableChannel>), ChannelError> {
    let overflow = super::rocksdb::start(name, config.rocksdb().clone(), overflow_counters, strict).await?;
    let addr = SpillableChannel::new(name, config, counters, overflow).start();
    Ok((ChannelHandle::new(name, addr.clone()), addr))
}

impl SpillableChannel {
    /// A spillable channel with `config`, reporting to `counters`, in front of the running
    /// `overflow` channel.
    pub fn new(name: &str, config: SpillableConfig, counters: Arc<ChannelCounters>, overflow: ChannelHandle) -> Self {
        counters.capacity.set(config.capacity());
        counters.byte_capacity.set(config.byte_capacity);
        SpillableChannel {
            name: name.into(),
            config,
            counters,
            overflow,
            order: VecDeque::new(),
            memory_queued: 0,
            memory_in_flight: 0,
            memory_bytes: 0,
            overflow_queued: 0,
            overflow_taken: 0,
            txns: HashMap::new(),
            next_txn: 1,
            spills: VecDeque::new(),
            next_ticket: 0,
            spill_generation: 0,
            activated: false,
            puts: ParkedQueue::default(),
            takes: ParkedQueue::default(),
            closed: false,
        }
    }

    fn memory_held(&self) -> u64 {
        self.memory_queued + self.memory_in_flight
    }

    fn overflow_held(&self) -> u64 {
        self.overflow_queued + self.overflow_taken
    }

    fn held(&self) -> u64 {
        self.memory_held() + self.overflow_held()
    }

    fn available(&self) -> u64 {
        self.memory_queued + self.overflow_queued
    }

    /// Appends `n` overflow events to the drain order.
    fn push_overflow_back(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.overflow_queued += n;
        match self.order.back_mut() {
            Some(Entry::Overflow(m)) => *m += n,
            _ => self.order.push_back(Entry::Overflow(n)),
        }
    }

    /// Puts `n` overflow events at the head of the drain order.
    fn push_overflow_front(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.overflow_queued += n;
        match self.order.front_mut() {
            Some(Entry::Overflow(m)) => *m += n,
            _ => self.order.push_front(Entry::Overflow(n)),
        }
    }

    /// Forgets up to `n` overflow events nearest the head; answers how many.
    fn forget_overflow(&mut self, n: u64) -> u64 {
        let mut left = n;
        let mut i = 0;
        while left > 0 && i < self.order.len() {
            if let Entry::Overflow(m) = &mut self.order[i] {
                let k = (*m).min(left);
                *m -= k;
                left -= k;
                self.overflow_queued -= k;
                if *m == 0 {
                    self.order.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        n - left
    }

    fn show_size(&self) {
        if self.closed {
            // The counters may already be those of the channel reopened in its place.
            return;
        }
        self.counters.size.set(self.held());
        self.counters.size_bytes.set(self.memory_bytes);
        self.counters.memory_size.set(self.memory_held());
        self.counters.overflow_size.set(self.overflow_held());
    }

    /// Whether `events` fit in memory now.
    fn fits_memory(&self, events: &[Event]) -> bool {
        let bytes: u64 = events.iter().map(event_bytes).sum();
        self.memory_held() + events.len() as u64 <= self.config.memory_capacity
            && (self.memory_bytes == 0 || self.memory_bytes + bytes <= self.config.byte_capacity)
    }

    /// Whether a put of `n` events that does not fit memory goes to the overflow without waiting.
    fn spills_at_once(&self, n: usize) -> bool {
        self.activated || self.config.overflow_timeout.is_zero() || n as u64 > self.config.memory_capacity
    }

    fn put_memory(&mut self, events: Vec<Event>) {
        self.counters.put_success.add(events.len() as u64);
        for e in events {
            self.memory_bytes += event_bytes(&e);
            self.memory_queued += 1;
            self.order.push_back(Entry::Memory(e));
        }
        self.show_size();
    }

    /// Hands `events` to the overflow; `reply` is answered once it committed them (in the order
    /// puts were handed over, so the numbers follow the overflow's own order).
    fn spill(&mut self, events: Vec<Event>, reply: oneshot::Sender<Result<(), ChannelError>>, ctx: &mut Context<Self>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.spill_generation += 1;
        let n = events.len() as u64;
        self.spills.push_back(Spill { ticket, n, result: None, reply });
        let sent = self.overflow.put.send(Put { events });
        ctx.spawn(async move { sent.await.unwrap_or(Err(ChannelError::Closed)) }.into_actor(self).map(
            move |result, act, ctx| {
                if let Some(s) = act.spills.iter_mut().find(|s| s.ticket == ticket) {
                    s.result = Some(result);
                }
                act.settle_spills(ctx);
            },
        ));
    }

    /// Answers the spills at the front whose overflow put is answered.
    fn settle_spills(&mut self, ctx: &mut Context<Self>) {
        while self.spills.front().is_some_and(|s| s.result.is_some()) {
            let s = self.spills.pop_front().expect("front exists");
            match s.result.expect("answered") {
                Ok(()) => {
                    self.push_overflow_back(s.n);
                    self.counters.put_success.add(s.n);
                    let _ = s.reply.send(Ok(()));
                }
                // Memory and overflow full: the channel's capacity is both.
                Err(ChannelError::Full { .. }) => {
                    let _ = s.reply.send(Err(ChannelError::Full { capacity: self.config.capacity() }));
                }
                Err(e) => {
                    let _ = s.reply.send(Err(e));
                }
            }
        }
        self.show_size();
        self.serve_parked(ctx);
    }

    /// Takes up to `max` events from the head of the drain order (memory events and overflow
    /// runs; the overflow's in one take of the overflow) and answers the transaction through
    /// `reply`.
    fn take_now(&mut self, max: usize, reply: oneshot::Sender<Result<TakeTxn, ChannelError>>, ctx: &mut Context<Self>) {
        let mut want = max as u64;
        let mut txn = Txn::default();
        while want > 0 {
            match self.order.front_mut() {
                None => break,
                Some(Entry::Overflow(m)) => {
                    let k = (*m).min(want);
                    *m -= k;
                    if *m == 0 {
                        self.order.pop_front();
                    }
                    self.overflow_queued -= k;
                    want -= k;
                    txn.segments.push(Entry::Overflow(k));
                }
                Some(Entry::Memory(_)) => {
                    let entry = self.order.pop_front().expect("front exists");
                    self.memory_queued -= 1;
                    want -= 1;
                    txn.segments.push(entry);
                }
            }
        }
        self.memory_in_flight += txn.memory_len();
        let overflow_n = txn.overflow_len();
        if overflow_n == 0 {
            let _ = self.answer_take(txn, Vec::new(), reply, ctx);
            return;
        }
        self.overflow_taken += overflow_n;
        let taken = self.overflow.take.send(Take { max: overflow_n as usize, wait: Duration::ZERO });
        ctx.spawn(async move { taken.await.unwrap_or(Err(ChannelError::Closed)) }.into_actor(self).map(
            move |result, act, ctx| {
                let mut txn = txn;
                match result {
                    Ok(mut overflow_txn) => match overflow_txn.disarm() {
                        Some(id) => {
                            let got = overflow_txn.events.len() as u64;
                            if got < overflow_n {
                                // Dead-lettered by the overflow (unreadable): gone.
                                tracing::warn!(channel = %act.name, asked = overflow_n, got, "the overflow handed out fewer events than it held");
                                act.overflow_taken -= overflow_n - got;
                                txn.shorten_overflow(overflow_n - got);
                            }
                            txn.overflow = Some(id);
                            let events = std::mem::take(&mut overflow_txn.events);
                            let _ = act.answer_take(txn, events, reply, ctx);
                        }
                        None => {
                            // Not open, or restarting: the events stay where they were.
                            act.put_back(txn);
                            let _ = reply.send(Ok(TakeTxn::empty()));
                        }
                    },
                    Err(e) => {
                        act.put_back(txn);
                        tracing::warn!(channel = %act.name, error = %e, "a take from the overflow failed");
                        let _ = reply.send(Err(e));
                    }
                }
                act.show_size();
            },
        ));
    }

    /// Answers `txn` (the events of its overflow runs being `overflow_events`, in order) through
    /// `reply`; a taker gone meanwhile rolls it back.
    fn answer_take(
        &mut self,
        txn: Txn,
        overflow_events: Vec<Event>,
        reply: oneshot::Sender<Result<TakeTxn, ChannelError>>,
        ctx: &mut Context<Self>,
    ) -> bool {
        let n = txn.len();
        if n == 0 {
            return reply.send(Ok(TakeTxn::empty())).is_ok();
        }
        let mut events = Vec::with_capacity(n as usize);
        let mut from_overflow = overflow_events.into_iter();
        for segment in &txn.segments {
            match segment {
                Entry::Memory(e) => events.push(e.clone()),
                Entry::Overflow(k) => events.extend(from_overflow.by_ref().take(*k as usize)),
            }
        }
        let id = self.next_txn;
        self.next_txn += 1;
        self.txns.insert(id, txn);
        self.counters.take_success.add(n);
        self.show_size();
        match reply.send(Ok(TakeTxn::new(id, events, ctx.address().recipient()))) {
            Ok(()) => true,
            Err(Ok(mut taken)) => {
                taken.disarm();
                self.rollback(id);
                false
            }
            Err(Err(_)) => false,
        }
    }

    /// Puts the events of `txn` back at the head of the drain order, in their order.
    fn put_back(&mut self, txn: Txn) {
        self.memory_in_flight -= txn.memory_len();
        self.overflow_taken -= txn.overflow_len();
        for segment in txn.segments.into_iter().rev() {
            match segment {
                Entry::Memory(e) => {
                    self.memory_queued += 1;
                    self.order.push_front(Entry::Memory(e));
                }
                Entry::Overflow(n) => self.push_overflow_front(n),
            }
        }
    }

    /// Puts a transaction's events back at the head, in the order it had them.
    fn rollback(&mut self, id: TxnId) -> bool {
        let Some(mut txn) = self.txns.remove(&id) else { return false };
        self.counters.rollback.add(txn.len());
        if let Some(overflow_txn) = txn.overflow.take() {
            self.overflow.rollback.do_send(Rollback { txn: overflow_txn });
        }
        self.put_back(txn);
        self.show_size();
        true
    }

    /// Serves parked puts (in order, while they fit in memory) and parked takes (while events
    /// are available).
    fn serve_parked(&mut self, ctx: &mut Context<Self>) {
        if self.closed {
            return;
        }
        while let Some(p) = self.puts.0.front() {
            if p.reply.is_closed() {
                self.puts.0.pop_front();
                continue;
            }
            if self.fits_memory(&p.request) {
                let p = self.puts.0.pop_front().expect("front exists");
                self.put_memory(p.request);
                let _ = p.reply.send(Ok(()));
            } else if self.spills_at_once(p.request.len()) {
                let p = self.puts.0.pop_front().expect("front exists");
                self.spill(p.request, p.reply, ctx);
            } else {
                break;
            }
        }
        while self.available() > 0 {
            let Some(p) = self.takes.0.pop_front() else { break };
            if p.reply.is_closed() {
                continue;
            }
            self.take_now(p.request, p.reply, ctx);
        }
    }

    /// Puts that waited `overflow_timeout` for memory go to the overflow (and, from now on,
    /// puts that find memory full go there at once); takes that waited long enough get nothing.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.takes.expire(now, |_| Ok(TakeTxn::empty()));
        if self.puts.0.front().is_some_and(|p| p.deadline <= now && !p.reply.is_closed()) {
            if !self.activated {
                tracing::info!(channel = %self.name, memory = self.memory_held(), "memory is full: puts spill to the overflow");
            }
            self.activated = true;
        }
        self.serve_parked(ctx);
    }

    /// Compares the overflow's count of events with this channel's, when no put to it is under
    /// way: events found when it opened (or back after its restart) are numbered below the
    /// others, to be taken first; events it no longer has are forgotten.
    fn sync_overflow(&mut self, ctx: &mut Context<Self>) {
        if !self.spills.is_empty() || self.closed {
            return;
        }
        let (generation, ours) = (self.spill_generation, self.overflow_held());
        let size = self.overflow.size.send(Size);
        ctx.spawn(async move { size.await.ok() }.into_actor(self).map(move |theirs, act, ctx| {
            let Some(theirs) = theirs else { return };
            if act.spill_generation != generation || !act.spills.is_empty() || act.overflow_held() != ours {
                return;
            }
            if theirs > ours {
                let n = theirs - ours;
                tracing::info!(channel = %act.name, events = n, "events found in the overflow; they are taken first");
                act.push_overflow_front(n);
            } else if theirs < ours {
                let gone = act.forget_overflow(ours - theirs);
                if gone > 0 {
                    tracing::warn!(channel = %act.name, events = gone, "events are no longer in the overflow (dead-lettered)");
                }
            }
            act.show_size();
            act.serve_parked(ctx);
        }));
    }
}

impl Actor for SpillableChannel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.counters.state.set(ComponentState::Running);
        ctx.set_mailbox_capacity(256);
        self.show_size();
        ctx.run_interval(PARK_TICK, |act, ctx| act.tick(ctx));
        self.sync_overflow(ctx);
        ctx.run_interval(SYNC_INTERVAL, |act, ctx| act.sync_overflow(ctx));
    }
}

impl Handler<Put> for SpillableChannel {
    type Result = ResponseFuture<Result<(), ChannelError>>;

    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) -> Self::Result {
        let n = msg.events.len();
        self.counters.put_attempt.add(n as u64);
        let max = self.config.transaction_capacity();
        let answer = if self.closed {
            Err(ChannelError::Closed)
        } else if n as u64 > max {
            Err(ChannelError::TooLarge { max, requested: n as u64 })
        } else if n == 0 {
            Ok(())
        } else if self.puts.0.is_empty() && self.fits_memory(&msg.events) {
            self.put_memory(msg.events);
            self.serve_parked(ctx);
            Ok(())
        } else if self.puts.0.is_empty() && self.spills_at_once(n) {
            let (reply, rx) = oneshot::channel();
            self.spill(msg.events, reply, ctx);
            return Box::pin(await_parked(rx));
        } else {
            let rx = self.puts.park(msg.events, self.config.overflow_timeout);
            return Box::pin(await_parked(rx));
        };
        Box::pin(async move { answer })
    }
}

impl Handler<Take> for SpillableChannel {
    type Result = ResponseFuture<Result<TakeTxn, ChannelError>>;

    fn handle(&mut self, msg: Take, ctx: &mut Context<Self>) -> Self::Result {
        self.counters.take_attempt.add(msg.max as u64);
        let max = self.config.transaction_capacity();
        let answer = if self.closed {
            Err(ChannelError::Closed)
        } else if msg.max as u64 > max {
            Err(ChannelError::TooLarge { max, requested: msg.max as u64 })
        } else if self.available() > 0 || msg.wait.is_zero() {
            let (reply, rx) = oneshot::channel();
            self.take_now(msg.max, reply, ctx);
            return Box::pin(await_parked(rx));
        } else {
            return Box::pin(await_parked(self.takes.park(msg.max, msg.wait)));
        };
        Box::pin(async move { answer })
    }
}

impl Handler<Commit> for SpillableChannel {
    type Result = Result<(), ChannelError>;

    fn handle(&mut self, msg: Commit, ctx: &mut Context<Self>) -> Self::Result {
        let mut txn = self.txns.remove(&msg.txn).ok_or(ChannelError::UnknownTxn(msg.txn))?;
        let taken = txn.memory_len();
        self.memory_in_flight -= taken;
        self.memory_bytes -= txn.memory_bytes();
        if let Some(overflow_txn) = txn.overflow.take() {
            let n = txn.overflow_len();
            self.overflow_taken -= n;
            let committed = self.overflow.commit.send(Commit { txn: overflow_txn });
            ctx.spawn(async move { committed.await.unwrap_or(Err(ChannelError::Closed)) }.into_actor(self).map(
                move |result, act, _| {
                    if let Err(ChannelError::UnknownTxn(_)) = result {
                        // The overflow restarted and has these events available again: they
                        // are delivered once more (at least once).
                        act.push_overflow_front(n);
                        act.show_size();
                    }
                },
            ));
        }
        let capacity = self.config.memory_capacity;
        if self.activated && capacity > 0 {
            let free = capacity.saturating_sub(self.memory_held()) * 100 / capacity;
            if free >= u64::from(self.config.overflow_deactivation_threshold) {
                tracing::info!(channel = %self.name, free_percent = free, "memory has room again: puts stay in memory");
                self.activated = false;
            }
        }
        self.show_size();
        self.serve_parked(ctx);
        Ok(())
    }
}

impl Handler<Rollback> for SpillableChannel {
    type Result = Result<(), ChannelError>;

    fn handle(&mut self, msg: Rollback, ctx: &mut Context<Self>) -> Self::Result {
        if !self.rollback(msg.txn) {
            return Err(ChannelError::UnknownTxn(msg.txn));
        }
        self.serve_parked(ctx);
        Ok(())
    }
}

impl Handler<Size> for SpillableChannel {
    type Result = u64;

    fn handle(&mut self, _: Size, _: &mut Context<Self>) -> u64 {
        self.held()
    }
}

impl Handler<Close> for SpillableChannel {
    type Result = ResponseFuture<()>;

    /// Stops taking requests, puts the events in memory (taken and not yet committed, then
    /// available) into the overflow, after its own events, and closes the overflow.
    fn handle(&mut self, _: Close, _: &mut Context<Self>) -> Self::Result {
        self.closed = true;
        self.counters.state.set(ComponentState::Stopped);
        self.puts.fail_all(|| ChannelError::Closed);
        self.takes.fail_all(|| ChannelError::Closed);
        // Taken and not yet committed first (a sink still holding them did not finish its batch;
        // delivered, they may come again: at least once), oldest take first, then the rest.
        let mut ids: Vec<TxnId> = self.txns.keys().copied().collect();
        ids.sort_unstable();
        let mut events: Vec<Event> = ids
            .iter()
            .flat_map(|id| self.txns[id].segments.iter())
            .filter_map(|e| match e {
                Entry::Memory(e) => Some(e.clone()),
                Entry::Overflow(_) => None,
            })
            .collect();
        events.extend(self.order.drain(..).filter_map(|e| match e {
            Entry::Memory(e) => Some(e),
            Entry::Overflow(_) => None,
        }));
        self.memory_queued = 0;
        self.overflow_queued = 0;
        let (overflow, name) = (self.overflow.clone(), self.name.clone());
        let chunk = self.config.transaction_capacity().max(1) as usize;
        Box::pin(async move {
            let total = events.len();
            let mut kept = 0;
            for batch in events.chunks(chunk) {
                match overflow.put.send(Put { events: batch.to_vec() }).await.unwrap_or(Err(ChannelError::Closed)) {
                    Ok(()) => kept += batch.len(),
                    Err(e) => {
                        tracing::error!(channel = %name, error = %e, lost = total - kept, "closing: the events in memory could not all be put into the overflow");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(channel = %name, events = kept, "closing: the events in memory were put into the overflow");
            }
            let _ = overflow.close.send(Close).await;
        })
    }
}

/// New memory options for a running `Spillable` channel whose overflow options are unchanged (a
/// reload): what it holds stays. Over a lowered `memory_capacity` or `byte_capacity` it keeps
/// every event in memory, and puts that find memory full wait or spill as usual.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Reconfigure(pub SpillableConfig);

impl Handler<Reconfigure> for SpillableChannel {
    type Result = ();

    fn handle(&mut self, Reconfigure(config): Reconfigure, ctx: &mut Context<Self>) {
        self.counters.capacity.set(config.capacity());
        self.counters.byte_capacity.set(config.byte_capacity);
        self.config = config;
        self.serve_parked(ctx);
    }
}
