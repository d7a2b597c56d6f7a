//! The `Memory` channel: a bounded in-memory queue. Fast; loses its contents if the process dies.
//!
//! As Flume's memory channel: `capacity` bounds the events held (available plus taken and not yet
//! committed), `byte_capacity` the bytes of their bodies and headers (Flume's `byteCapacity`),
//! `transaction_capacity` bounds one put or take, and a put waits up to `keep_alive` for room
//! (in events and in bytes) before it is refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Deserialize;

use super::{
    await_parked, ChannelError, Close, Commit, ParkedQueue, Put, Rollback, Size, Take, TakeTxn, TxnId, PARK_TICK,
};
use crate::config::duration;
use crate::event::Event;
use crate::metrics::{ChannelCounters, ComponentState};

/// Options of a `Memory` channel: `Memory(capacity: 10000, transaction_capacity: 1000,
/// byte_capacity: 16777216, keep_alive: "3s")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Most events held at once, available plus taken-but-uncommitted (Flume's `capacity`).
    /// Default 10000.
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// Most events in one put or take (Flume's `transactionCapacity`). Default 1000; at most
    /// `capacity`.
    #[serde(default = "default_transaction_capacity")]
    pub transaction_capacity: u64,
    /// How long a put waits for room before it is refused (Flume's `keep-alive`). Default `"3s"`.
    #[serde(default = "default_keep_alive", with = "duration")]
    pub keep_alive: Duration,
    /// Most bytes held at once: the bodies plus the header keys and values of the events held,
    /// available plus taken-but-uncommitted (Flume's `byteCapacity`, which counts bodies only). A
    /// put beyond it waits like one beyond `capacity`; a single put larger than it is let in when
    /// the channel is empty (it could never fit otherwise). Default 16777216 (16 MiB, what Flume's
    /// 80 % of its default 20 MB heap comes to): a fixed bound, the same on every machine, that
    /// `capacity` alone does not give (10,000 events of 1 MiB are 10 GB). Memory per event beyond these bytes (about 80 bytes) is not counted.
    #[serde(default = "default_byte_capacity")]
    pub byte_capacity: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            capacity: default_capacity(),
            transaction_capacity: default_transaction_capacity(),
            keep_alive: default_keep_alive(),
            byte_capacity: default_byte_capacity(),
        }
    }
}

fn default_capacity() -> u64 {
    10_000
}
fn default_transaction_capacity() -> u64 {
    1_000
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(3)
}
/// The default `byte_capacity`: 16 MiB.
pub fn default_byte_capacity() -> u64 {
    16 * 1024 * 1024
}

/// The bytes of an event that `byte_capacity` counts: its body and its header keys and values.
pub fn event_bytes(e: &Event) -> u64 {
    (e.body.len() + e.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()) as u64
}

fn batch_bytes(events: &[Event]) -> u64 {
    events.iter().map(event_bytes).sum()
}

/// The memory channel actor.
pub struct MemoryChannel {
    config: MemoryConfig,
    counters: Arc<ChannelCounters>,
    queue: VecDeque<Event>,
    in_flight: HashMap<TxnId, (Vec<Event>, u64)>,
    held_in_flight: u64,
    /// [`event_bytes`] of the events held (queued and in flight).
    held_bytes: u64,
    next_txn: TxnId,
    puts: ParkedQueue<Vec<Event>, ()>,
    takes: ParkedQueue<usize, TakeTxn>,
    closed: bool,
}

impl MemoryChannel {
    /// A memory channel with `config`, reporting to `counters`.
    pub fn new(config: MemoryConfig, counters: Arc<ChannelCounters>) -> Self {
        counters.capacity.set(config.capacity);
        counters.byte_capacity.set(config.byte_capacity);
        MemoryChannel {
            config,
            counters,
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            held_in_flight: 0,
            held_bytes: 0,
            next_txn: 1,
            puts: ParkedQueue::default(),
            takes: ParkedQueue::default(),
            closed: false,
        }
    }

    fn held(&self) -> u64 {
        self.queue.len() as u64 + self.held_in_flight
    }

    fn fits(&self, events: &[Event]) -> bool {
        self.held() + events.len() as u64 <= self.config.capacity
            && (self.held_bytes == 0 || self.held_bytes + batch_bytes(events) <= self.config.byte_capacity)
    }

    fn commit_put(&mut self, events: Vec<Event>) {
        self.counters.put_success.add(events.len() as u64);
        self.held_bytes += batch_bytes(&events);
        self.queue.extend(events);
        self.show_size();
    }

    fn show_size(&self) {
        self.counters.size.set(self.held());
        self.counters.size_bytes.set(self.held_bytes);
    }

    fn take_now(&mut self, max: usize, ctx: &mut Context<Self>) -> TakeTxn {
        let n = max.min(self.queue.len());
        if n == 0 {
            return TakeTxn::empty();
        }
        let events: Vec<Event> = self.queue.drain(..n).collect();
        let id = self.next_txn;
        self.next_txn += 1;
        self.in_flight.insert(id, (events.clone(), batch_bytes(&events)));
        self.held_in_flight += n as u64;
        self.counters.take_success.add(n as u64);
        TakeTxn::new(id, events, ctx.address().recipient())
    }

    /// Serves parked puts (in order, while they fit) and parked takes (while events are available).
    fn serve_parked(&mut self, ctx: &mut Context<Self>) {
        while let Some(p) = self.puts.0.front() {
            if p.reply.is_closed() {
                self.puts.0.pop_front();
                continue;
            }
            if !self.fits(&p.request) {
                break;
            }
            let p = self.puts.0.pop_front().expect("front exists");
            self.commit_put(p.request);
            let _ = p.reply.send(Ok(()));
        }
        while !self.queue.is_empty() {
            let Some(p) = self.takes.0.pop_front() else { break };
            if p.reply.is_closed() {
                continue;
            }
            let txn = self.take_now(p.request, ctx);
            if let Err(Ok(mut txn)) = p.reply.send(Ok(txn)) {
                // The taker left between our check and the send: put the events back.
                if let Some(id) = txn.disarm() {
                    self.rollback(id);
                }
            }
        }
    }

    fn rollback(&mut self, id: TxnId) -> bool {
        match self.in_flight.remove(&id) {
            Some((events, _)) => {
                self.held_in_flight -= events.len() as u64;
                self.counters.rollback.add(events.len() as u64);
                for e in events.into_iter().rev() {
                    self.queue.push_front(e);
                }
                true
            }
            None => false,
        }
    }
}

impl Actor for MemoryChannel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.counters.state.set(ComponentState::Running);
        ctx.set_mailbox_capacity(256);
        ctx.run_interval(PARK_TICK, |act, _| {
            let now = Instant::now();
            let capacity = act.config.capacity;
            act.puts.expire(now, |_| Err(ChannelError::Full { capacity }));
            act.takes.expire(now, |_| Ok(TakeTxn::empty()));
        });
    }
}

impl Handler<Put> for MemoryChannel {
    type Result = ResponseFuture<Result<(), ChannelError>>;

    fn handle(&mut self, msg: Put, ctx: &mut Context<Self>) -> Self::Result {
        let n = msg.events.len();
        self.counters.put_attempt.add(n as u64);
        let answer = if self.closed {
            Err(ChannelError::Closed)
        } else if n as u64 > self.config.transaction_capacity {
            Err(ChannelError::TooLarge { max: self.config.transaction_capacity, requested: n as u64 })
        } else if self.puts.0.is_empty() && self.fits(&msg.events) {
            self.commit_put(msg.events);
            self.serve_parked(ctx);
            Ok(())
        } else {
            let rx = self.puts.park(msg.events, self.config.keep_alive);
            return Box::pin(await_parked(rx));
        };
        Box::pin(async move { answer })
    }
}

impl Handler<Take> for MemoryChannel {
    type Result = ResponseFuture<Result<TakeTxn, ChannelError>>;

    fn handle(&mut self, msg: Take, ctx: &mut Context<Self>) -> Self::Result {
        self.counters.take_attempt.add(msg.max as u64);
        let answer = if self.closed {
            Err(ChannelError::Closed)
        } else if msg.max as u64 > self.config.transaction_capacity {
            Err(ChannelError::TooLarge { max: self.config.transaction_capacity, requested: msg.max as u64 })
        } else if !self.queue.is_empty() || msg.wait.is_zero() {
            Ok(self.take_now(msg.max, ctx))
        } else {
            let rx = self.takes.park(msg.max, msg.wait);
            return Box::pin(await_parked(rx));
        };
        Box::pin(async move { answer })
    }
}

impl Handler<Commit> for MemoryChannel {
    type Result = Result<(), ChannelError>;

    fn handle(&mut self, msg: Commit, ctx: &mut Context<Self>) -> Self::Result {
        let (events, bytes) = self.in_flight.remove(&msg.txn).ok_or(ChannelError::UnknownTxn(msg.txn))?;
        self.held_in_flight -= events.len() as u64;
        self.held_bytes -= bytes;
        self.show_size();
        self.serve_parked(ctx);
        Ok(())
    }
}

impl Handler<Rollback> for MemoryChannel {
    type Result = Result<(), ChannelError>;

    fn handle(&mut self, msg: Rollback, ctx: &mut Context<Self>) -> Self::Result {
        if !self.rollback(msg.txn) {
            return Err(ChannelError::UnknownTxn(msg.txn));
        }
        self.serve_parked(ctx);
        Ok(())
    }
}

impl Handler<Size> for MemoryChannel {
    type Result = u64;

    fn handle(&mut self, _: Size, _: &mut Context<Self>) -> u64 {
        self.held()
    }
}

impl Handler<Close> for MemoryChannel {
    type Result = ();

    fn handle(&mut self, _: Close, _: &mut Context<Self>) {
        self.counters.state.set(ComponentState::Stopped);
        self.closed = true;
        self.puts.fail_all(|| ChannelError::Closed);
        self.takes.fail_all(|| ChannelError::Closed);
    }
}

/// New options for a running `Memory` channel (a reload that changed only its options): what it
/// holds stays. Over a lowered `capacity` or `byte_capacity` it keeps every event it holds and
/// refuses puts (they wait, back-pressure) until its sinks took it below the new bounds; a raised
/// one lets parked puts in.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Reconfigure(pub MemoryConfig);

impl Handler<Reconfigure> for MemoryChannel {
    type Result = ();

    fn handle(&mut self, Reconfigure(config): Reconfigure, ctx: &mut Context<Self>) {
        self.counters.capacity.set(config.capacity);
        self.counters.byte_capacity.set(config.byte_capacity);
        self.config = config;
        self.serve_parked(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelHandle;
    use crate::metrics::Metrics;

    fn lines(n: usize) -> Vec<Event> {
        (0..n).map(|i| Event::new(format!("081109 2036{i:02} 148 INFO dfs.DataNode: block blk_{i}"))).collect()
    }

    fn config(capacity: u64, transaction_capacity: u64) -> MemoryConfig {
        MemoryConfig {
            capacity,
            transaction_capacity,
            keep_alive: Duration::from_millis(50),
            ..MemoryConfig::default()
        }
    }

    #[actix_rt::test]
    async fn put_take_commit_and_rollback_keep_order() {
        let metrics = Metrics::new();
        let addr = MemoryChannel::new(config(100, 10), metrics.channel("c1")).start();
        let ch = ChannelHandle::new("c1", addr.clone());
        addr.send(Put { events: lines(5) }).await.unwrap().unwrap();
        let txn = ch.take(3, Duration::ZERO).await.unwrap();
        assert_eq!(txn.events, lines(5)[..3]);
        ch.rollback(txn).await.unwrap();
        let txn = ch.take(10, Duration::ZERO).await.unwrap();
        assert_eq!(txn.events, lines(5));
        ch.commit(txn).await.unwrap();
        assert_eq!(addr.send(Size).await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn dropped_transaction_rolls_back() {
        let addr = MemoryChannel::new(config(100, 10), Metrics::new().channel("c1")).start();
        let ch = ChannelHandle::new("c1", addr.clone());
        addr.send(Put { events: lines(4) }).await.unwrap().unwrap();
        drop(ch.take(4, Duration::ZERO).await.unwrap());
        let txn = ch.take(10, Duration::from_secs(5)).await.unwrap();
        assert_eq!(txn.events, lines(4));
    }

    #[actix_rt::test]
    async fn full_channel_refuses_after_keep_alive_and_accepts_after_commit() {
        let addr = MemoryChannel::new(config(6, 6), Metrics::new().channel("c1")).start();
        let ch = ChannelHandle::new("c1", addr.clone());
        addr.send(Put { events: lines(6) }).await.unwrap().unwrap();
        assert_eq!(addr.send(Put { events: lines(1) }).await.unwrap(), Err(ChannelError::Full { capacity: 6 }));
        let parked = addr.send(Put { events: lines(2) });
        let txn = ch.take(3, Duration::ZERO).await.unwrap();
        ch.commit(txn).await.unwrap();
        parked.await.unwrap().unwrap();
        assert_eq!(addr.send(Size).await.unwrap(), 5);
    }

    #[actix_rt::test]
    async fn take_waits_for_a_put() {
        let addr = MemoryChannel::new(config(10, 10), Metrics::new().channel("c1")).start();
        let ch = ChannelHandle::new("c1", addr.clone());
        let waiting = ch.take(5, Duration::from_secs(10));
        let put = addr.send(Put { events: lines(2) });
        let (txn, put) = futures_util::join!(waiting, put);
        put.unwrap().unwrap();
        assert_eq!(txn.unwrap().events, lines(2));
    }

    #[actix_rt::test]
    async fn oversized_transactions_are_refused() {
        let addr = MemoryChannel::new(config(100, 4), Metrics::new().channel("c1")).start();
        assert_eq!(
            addr.send(Put { events: lines(5) }).await.unwrap(),
            Err(ChannelError::TooLarge { max: 4, requested: 5 })
        );
    }

    /// `n` events of `body_len` bytes each with the header `host: web-1` (9 bytes).
    fn sized(n: usize, body_len: usize) -> Vec<Event> {
        (0..n).map(|i| Event::new(format!("{i:0body_len$}")).with_header("host", "web-1")).collect()
    }

    #[actix_rt::test]
    async fn byte_capacity_counts_bodies_and_headers_and_makes_puts_wait() {
        let metrics = Metrics::new();
        let counters = metrics.channel("c1");
        let config = MemoryConfig { byte_capacity: 1000, ..config(1000, 100) };
        let addr = MemoryChannel::new(config, counters.clone()).start();
        let ch = ChannelHandle::new("c1", addr.clone());
        // 9 events of 91 + 9 bytes: 900 bytes held, far below 1000 events.
        addr.send(Put { events: sized(9, 91) }).await.unwrap().unwrap();
        assert_eq!((counters.size.get(), counters.size_bytes.get(), counters.byte_capacity.get()), (9, 900, 1000));
        // 2 more (200 bytes) would be 1100: refused after keep_alive, as a full channel.
        assert_eq!(addr.send(Put { events: sized(2, 91) }).await.unwrap(), Err(ChannelError::Full { capacity: 1000 }));
        // Exactly to the bound fits.
        addr.send(Put { events: sized(1, 91) }).await.unwrap().unwrap();
        // A parked put gets in once a take commits and frees its bytes.
        let parked = addr.send(Put { events: sized(3, 91) });
        let txn = ch.take(3, Duration::ZERO).await.unwrap();
        assert_eq!(counters.size_bytes.get(), 1000, "taken but uncommitted bytes are still held");
        ch.commit(txn).await.unwrap();
        parked.await.unwrap().unwrap();
        assert_eq!((counters.size.get(), counters.size_bytes.get()), (10, 1000));
    }

    #[actix_rt::test]
    async fn a_put_larger_than_byte_capacity_gets_into_an_empty_channel() {
        let addr =
            MemoryChannel::new(MemoryConfig { byte_capacity: 100, ..config(100, 10) }, Metrics::new().channel("c1"))
                .start();
        addr.send(Put { events: sized(1, 500) }).await.unwrap().unwrap();
        assert_eq!(addr.send(Put { events: sized(1, 1) }).await.unwrap(), Err(ChannelError::Full { capacity: 100 }));
    }

    #[actix_rt::test]
    async fn a_reload_lowering_byte_capacity_keeps_what_is_held_and_makes_puts_wait() {
        let metrics = Metrics::new();
        let counters = metrics.channel("c1");
        let addr = MemoryChannel::new(config(1000, 100), counters.clone()).start();
        let ch = ChannelHandle::new("c1", addr.clone());
        addr.send(Put { events: sized(5, 91) }).await.unwrap().unwrap();
        addr.send(Reconfigure(MemoryConfig { byte_capacity: 300, ..config(1000, 100) })).await.unwrap();
        assert_eq!(counters.byte_capacity.get(), 300);
        assert_eq!(addr.send(Size).await.unwrap(), 5, "nothing held is dropped");
        assert_eq!(addr.send(Put { events: sized(1, 91) }).await.unwrap(), Err(ChannelError::Full { capacity: 1000 }));
        let parked = addr.send(Put { events: sized(1, 91) });
        let txn = ch.take(3, Duration::ZERO).await.unwrap();
        ch.commit(txn).await.unwrap();
        parked.await.unwrap().unwrap();
        // Raised again: parked puts get in.
        let parked = addr.send(Put { events: sized(5, 91) });
        addr.send(Reconfigure(config(1000, 100))).await.unwrap();
        parked.await.unwrap().unwrap();
        assert_eq!(addr.send(Size).await.unwrap(), 8);
    }
}
