//! The channel protocol: the messages a channel actor answers, transactions and errors.
//!
//! A channel is a bounded queue of events between sources and sinks. Sources (through their
//! channel selector) send [`Put`]: a batch that is committed atomically, all events or none.
//! Sinks send [`Take`] and get a [`TakeTxn`] holding up to `max` events; the events stay in the
//! channel until the sink sends [`Commit`], and a [`Rollback`] (or a transaction dropped without
//! either, because its sink died) puts them back at the head of the channel. The implementations,
//! [`memory`] and [`rocksdb`], are siblings beneath this module.

pub mod memory;
pub mod rocksdb;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::event::Event;

/// Identifies one take transaction within its channel.
pub type TxnId = u64;

/// Why a channel refused a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// The channel stayed full for the put's whole wait: retry later (back-pressure, not a failure).
    #[error("channel is full ({capacity} events)")]
    Full {
        /// The channel's capacity in events.
        capacity: u64,
    },
    /// A put or take asked for more events than one transaction may hold.
    #[error("transaction of {requested} events exceeds the channel's transaction capacity of {max}")]
    TooLarge {
        /// The channel's transaction capacity (or capacity) in events.
        max: u64,
        /// The number of events asked for.
        requested: u64,
    },
    /// A commit or rollback named a transaction the channel does not hold (already settled, or
    /// lost in a channel restart, after which its events are available again).
    #[error("unknown transaction {0}")]
    UnknownTxn(TxnId),
    /// The storage failed (RocksDb I/O error); the actor restarts.
    #[error("channel storage failed: {0}")]
    Storage(String),
    /// The channel actor is gone or closing.
    #[error("channel is closed")]
    Closed,
}

impl From<MailboxError> for ChannelError {
    fn from(_: MailboxError) -> Self {
        ChannelError::Closed
    }
}

/// Commits `events` to the channel atomically.
///
/// Waits up to the channel's `keep_alive` for room; answers [`ChannelError::Full`] if there is
/// still none, so the caller backs off and retries without reading more input.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ChannelError>")]
pub struct Put {
    /// The batch; the channel holds all of it or none of it.
    pub events: Vec<Event>,
}

/// Takes up to `max` events in a new transaction.
///
/// If the channel is empty, waits up to `wait` for events, then answers an empty transaction.
#[derive(Message, Debug)]
#[rtype(result = "Result<TakeTxn, ChannelError>")]
pub struct Take {
    /// The most events to hand out (the sink's `batch_size`).
    pub max: usize,
    /// How long to wait for events when the channel is empty.
    pub wait: Duration,
}

/// Forgets the events of a take transaction: they were delivered.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ChannelError>")]
pub struct Commit {
    /// The transaction to commit.
    pub txn: TxnId,
}

/// Returns the events of a take transaction to the head of the channel.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), ChannelError>")]
pub struct Rollback {
    /// The transaction to roll back.
    pub txn: TxnId,
}

/// Asks how many events the channel holds, available plus taken but not committed.
#[derive(Message, Debug)]
#[rtype(result = "u64")]
pub struct Size;

/// Flushes and closes the channel's storage; later requests answer [`ChannelError::Closed`].
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Close;

/// A take transaction: the events handed to a sink, held by the channel until committed.
///
/// Dropping a `TakeTxn` that was neither committed nor rolled back rolls it back, so a sink that
/// dies (or panics) mid-delivery loses nothing: its events return to the head of the channel.
#[derive(Debug)]
pub struct TakeTxn {
    /// The events taken, oldest first (empty when the channel had nothing).
    pub events: Vec<Event>,
    guard: Option<TxnGuard>,
}

#[derive(Debug)]
struct TxnGuard {
    id: TxnId,
    rollback: Recipient<Rollback>,
}

impl Drop for TxnGuard {
    fn drop(&mut self) {
        self.rollback.do_send(Rollback { txn: self.id });
    }
}

impl TakeTxn {
    /// An empty transaction: nothing to commit.
    pub fn empty() -> Self {
        TakeTxn { events: Vec::new(), guard: None }
    }

    /// A transaction `id` holding `events`, rolled back through `rollback` if dropped unsettled.
    pub fn new(id: TxnId, events: Vec<Event>, rollback: Recipient<Rollback>) -> Self {
        TakeTxn { events, guard: Some(TxnGuard { id, rollback }) }
    }

    /// The transaction id (`None` for an empty take).
    pub fn id(&self) -> Option<TxnId> {
        self.guard.as_ref().map(|g| g.id)
    }

    /// Settles the transaction: the caller will send [`Commit`] or [`Rollback`] for `id` itself.
    ///
    /// Returns the id, or `None` for an empty take (nothing to settle).
    pub fn disarm(&mut self) -> Option<TxnId> {
        self.guard.take().map(|g| {
            let id = g.id;
            std::mem::forget(g);
            id
        })
    }
}

/// The addresses of one channel actor, whichever kind it is.
#[derive(Clone)]
pub struct ChannelHandle {
    /// The channel's name in the topology.
    pub name: String,
    /// Where puts go.
    pub put: Recipient<Put>,
    /// Where takes go.
    pub take: Recipient<Take>,
    /// Where commits go.
    pub commit: Recipient<Commit>,
    /// Where rollbacks go.
    pub rollback: Recipient<Rollback>,
    /// Where size queries go.
    pub size: Recipient<Size>,
    /// Where the close request goes.
    pub close: Recipient<Close>,
}

impl ChannelHandle {
    /// The handle of a running channel actor.
    pub fn new<A>(name: &str, addr: Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Put>
            + Handler<Take>
            + Handler<Commit>
            + Handler<Rollback>
            + Handler<Size>
            + Handler<Close>,
    {
        ChannelHandle {
            name: name.to_string(),
            put: addr.clone().recipient(),
            take: addr.clone().recipient(),
            commit: addr.clone().recipient(),
            rollback: addr.clone().recipient(),
            size: addr.clone().recipient(),
            close: addr.recipient(),
        }
    }

    /// Takes up to `max` events, waiting up to `wait` when the channel is empty.
    ///
    /// # Errors
    /// [`ChannelError::Closed`] when the channel actor is gone, or the channel's own error.
    pub async fn take(&self, max: usize, wait: Duration) -> Result<TakeTxn, ChannelError> {
        self.take.send(Take { max, wait }).await?
    }

    /// Commits `txn` (consuming it).
    ///
    /// # Errors
    /// The channel's error; the transaction is then rolled back by the channel.
    pub async fn commit(&self, mut txn: TakeTxn) -> Result<(), ChannelError> {
        match txn.disarm() {
            Some(id) => self.commit.send(Commit { txn: id }).await?,
            None => Ok(()),
        }
    }

    /// Rolls `txn` back (consuming it).
    ///
    /// # Errors
    /// The channel's error.
    pub async fn rollback(&self, mut txn: TakeTxn) -> Result<(), ChannelError> {
        match txn.disarm() {
            Some(id) => self.rollback.send(Rollback { txn: id }).await?,
            None => Ok(()),
        }
    }
}

/// A request parked until the channel can serve it, or until its deadline passes.
pub(crate) struct Parked<R, T> {
    pub request: R,
    pub reply: oneshot::Sender<Result<T, ChannelError>>,
    pub deadline: Instant,
}

/// Requests waiting for room (puts) or for events (takes), oldest first.
pub(crate) struct ParkedQueue<R, T>(pub VecDeque<Parked<R, T>>);

impl<R, T> Default for ParkedQueue<R, T> {
    fn default() -> Self {
        ParkedQueue(VecDeque::new())
    }
}

impl<R, T> ParkedQueue<R, T> {
    /// Parks a request; the returned receiver gets the answer.
    pub fn park(&mut self, request: R, wait: Duration) -> oneshot::Receiver<Result<T, ChannelError>> {
        let (reply, rx) = oneshot::channel();
        self.0.push_back(Parked { request, reply, deadline: Instant::now() + wait });
        rx
    }

    /// Answers every request whose deadline has passed (or whose asker is gone) with `timeout()`.
    pub fn expire(&mut self, now: Instant, timeout: impl Fn(&R) -> Result<T, ChannelError>) {
        let mut kept = VecDeque::with_capacity(self.0.len());
        for p in self.0.drain(..) {
            if p.reply.is_closed() {
                continue;
            }
            if p.deadline <= now {
                let answer = timeout(&p.request);
                let _ = p.reply.send(answer);
            } else {
                kept.push_back(p);
            }
        }
        self.0 = kept;
    }

    /// Answers every parked request with `answer()` (on close).
    pub fn fail_all(&mut self, answer: impl Fn() -> ChannelError) {
        for p in self.0.drain(..) {
            let _ = p.reply.send(Err(answer()));
        }
    }
}

/// How often a channel checks parked requests for expired deadlines.
pub(crate) const PARK_TICK: Duration = Duration::from_millis(10);

/// Awaits a parked request's answer.
pub(crate) async fn await_parked<T>(rx: oneshot::Receiver<Result<T, ChannelError>>) -> Result<T, ChannelError> {
    rx.await.unwrap_or(Err(ChannelError::Closed))
}
