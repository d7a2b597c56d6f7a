//! The channel protocol: the messages a channel actor answers, transactions and errors.
//!
//! A channel is a bounded queue of events between sources and sinks. Sources (through their
//! channel selector) send [`Put`]: a batch that is committed atomically, all events or none.
//! Sinks send [`Take`] and get a [`TakeTxn`] holding up to `max` events; the events stay in the
//! channel until the sink sends [`Commit`], and a [`Rollback`] (or a transaction dropped without
//! either, because its sink died) puts them back at the head of the channel. The implementations,
//! [`memory`], [`rocksdb`] and [`spillable`] (memory in front of a `RocksDb` overflow), are siblings beneath this module.

pub mod memory;
pub mod rocksdb;
pub mod spillable;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
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
    /// The storage failed; `kind` says how (the reactions depend on it: a full disk refuses puts,
    /// corruption sets the directory aside and salvages it, a held lock is retried).
    #[error("channel storage at {} failed ({kind}): {status}", path.display())]
    Storage {
        /// What kind of failure.
        kind: StorageErrorKind,
        /// The file or directory concerned (the channel's directory when RocksDB names none).
        path: PathBuf,
        /// The storage's own words: the RocksDB status (`"IO error: ..."`, `"Corruption: ..."`)
        /// or the OS error.
        status: String,
    },
    /// The channel actor is gone or closing.
    #[error("channel is closed")]
    Closed,
    /// An encryption key of a `RocksDb` channel is missing, wrong or unknown
    /// ([`rocksdb::crypt`]).
    #[error("channel \"{channel}\": encryption key \"{key_id}\" ({problem}): {detail}")]
    Key {
        /// The channel's name.
        channel: String,
        /// The key id concerned (empty when a sealed value's header is cut).
        key_id: String,
        /// What is wrong.
        problem: KeyProblem,
        /// In words, with the key file's path where there is one.
        detail: String,
    },
}

/// What is wrong with an encryption key ([`ChannelError::Key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyProblem {
    /// The key file is missing, unreadable, readable by others or not 32 bytes of key.
    File,
    /// Stored values are sealed under a key id that is not among `keys` (or `active` is not).
    Unknown,
    /// Values do not authenticate under the key: the wrong key file, or damage (a single value
    /// that does not authenticate is corruption and is dead-lettered).
    Authentication,
    /// Stored values are sealed, but the channel has no `encryption` option.
    NoEncryption,
    /// A sealed value's header is cut or of another version.
    Malformed,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProblem::File => "key file",
            KeyProblem::Unknown => "unknown key",
            KeyProblem::Authentication => "authentication failed",
            KeyProblem::NoEncryption => "no encryption configured",
            KeyProblem::Malformed => "malformed sealed value",
        })
    }
}

/// How a channel's storage failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageErrorKind {
    /// The file system is full (`ENOSPC`, RocksDB's "No space left on device").
    NoSpace,
    /// Stored data failed a checksum or does not parse (RocksDB `Corruption`, a torn or flipped
    /// WAL record, a garbage MANIFEST, a missing CURRENT beside data files, an undecodable event).
    Corruption,
    /// Another process (or another channel of this one) holds the database's `LOCK` file.
    Lock,
    /// The OS refused access (`EACCES`, `EPERM`, `EROFS`).
    PermissionDenied,
    /// Any other I/O failure.
    Io,
    /// The storage refused a request as invalid (RocksDB `InvalidArgument`, `NotSupported`, ...).
    Invalid,
}

impl std::fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageErrorKind::NoSpace => "no space",
            StorageErrorKind::Corruption => "corruption",
            StorageErrorKind::Lock => "lock held",
            StorageErrorKind::PermissionDenied => "permission denied",
            StorageErrorKind::Io => "I/O",
            StorageErrorKind::Invalid => "invalid",
        })
    }
}

impl StorageErrorKind {
    /// The kind of a RocksDB status, from its code ([`::rocksdb::Error::kind`]) and, for I/O
    /// errors, the OS error RocksDB quotes ("No space left on device", "Resource temporarily
    /// unavailable" on `LOCK`, "Permission denied", ...).
    pub fn of_rocksdb(e: &::rocksdb::Error) -> Self {
        Self::of_status(e.kind(), e.as_ref())
    }

    /// The kind of a RocksDB status given as its code and its words.
    pub fn of_status(code: ::rocksdb::ErrorKind, status: &str) -> Self {
        use ::rocksdb::ErrorKind as K;
        match code {
            K::Corruption => StorageErrorKind::Corruption,
            K::InvalidArgument | K::NotSupported | K::NotFound => StorageErrorKind::Invalid,
            _ => Self::of_message(status),
        }
    }

    /// The kind an OS error stands for.
    pub fn of_io(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StorageErrorKind::NoSpace,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => StorageErrorKind::PermissionDenied,
            Some(libc::EAGAIN) => StorageErrorKind::Lock,
            _ if e.kind() == std::io::ErrorKind::InvalidData => StorageErrorKind::Corruption,
            _ => StorageErrorKind::Io,
        }
    }

    fn of_message(status: &str) -> Self {
        let lower = status.to_ascii_lowercase();
        if lower.contains("no space left") || lower.contains("disk quota exceeded") {
            StorageErrorKind::NoSpace
        } else if (lower.contains("lock")
            && (lower.contains("resource temporarily unavailable") || lower.contains("lock hold")))
            || lower.contains("no locks available")
        {
            StorageErrorKind::Lock
        } else if lower.contains("permission denied")
            || lower.contains("operation not permitted")
            || lower.contains("read-only file system")
        {
            StorageErrorKind::PermissionDenied
        } else if lower.contains("corruption") {
            StorageErrorKind::Corruption
        } else {
            StorageErrorKind::Io
        }
    }
}

impl ChannelError {
    /// A [`ChannelError::Storage`] for a RocksDB error about `path`.
    pub fn rocksdb(path: &Path, e: &::rocksdb::Error) -> Self {
        ChannelError::Storage { kind: StorageErrorKind::of_rocksdb(e), path: path.to_path_buf(), status: e.to_string() }
    }

    /// A [`ChannelError::Storage`] for an OS error about `path`.
    pub fn io(path: &Path, e: &std::io::Error) -> Self {
        ChannelError::Storage { kind: StorageErrorKind::of_io(e), path: path.to_path_buf(), status: e.to_string() }
    }

    /// A [`ChannelError::Storage`] of `kind` about `path`, in words.
    pub fn storage(kind: StorageErrorKind, path: &Path, status: impl Into<String>) -> Self {
        ChannelError::Storage { kind, path: path.to_path_buf(), status: status.into() }
    }

    /// The storage error's kind, if this is one.
    pub fn storage_kind(&self) -> Option<StorageErrorKind> {
        match self {
            ChannelError::Storage { kind, .. } => Some(*kind),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_statuses_map_to_kinds() {
        use ::rocksdb::ErrorKind::{Corruption, IOError, InvalidArgument};
        let cases = [
            (IOError, "IO error: No space left on device: While appending to file: /d/000012.log: No space left on device", StorageErrorKind::NoSpace),
            (IOError, "IO error: While lock file: /d/LOCK: Resource temporarily unavailable", StorageErrorKind::Lock),
            (IOError, "IO error: lock hold by current process, acquire time 1764583200 acquiring thread 1: /d/LOCK: No locks available", StorageErrorKind::Lock),
            (IOError, "IO error: While opening a file for sequentially reading: /d/CURRENT: Permission denied", StorageErrorKind::PermissionDenied),
            (IOError, "IO error: While open a file for appending: /d/000009.log: Read-only file system", StorageErrorKind::PermissionDenied),
            (Corruption, "Corruption: checksum mismatch", StorageErrorKind::Corruption),
            (Corruption, "Corruption: block checksum mismatch: stored = 1, computed = 2  in /d/000010.sst offset 0 size 4011", StorageErrorKind::Corruption),
            (IOError, "IO error: While reading file: /d/000010.sst: Input/output error", StorageErrorKind::Io),
            (InvalidArgument, "Invalid argument: /d/CURRENT: does not exist (create_if_missing is false)", StorageErrorKind::Invalid),
        ];
        for (code, status, kind) in cases {
            assert_eq!(StorageErrorKind::of_status(code, status), kind, "{status}");
        }
    }

    #[test]
    fn a_real_lock_conflict_is_a_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ::rocksdb::Options::default();
        opts.create_if_missing(true);
        let _held = ::rocksdb::DB::open(&opts, dir.path()).unwrap();
        let Err(e) = ::rocksdb::DB::open(&opts, dir.path()) else { panic!("the second open fails") };
        assert_eq!(StorageErrorKind::of_rocksdb(&e), StorageErrorKind::Lock, "{e}");
        let e = ChannelError::rocksdb(dir.path(), &e);
        assert!(e.to_string().contains("LOCK") && e.to_string().contains("lock held"), "status and kind kept: {e}");
    }

    #[test]
    fn os_errors_map_to_kinds() {
        let kind = |errno| StorageErrorKind::of_io(&std::io::Error::from_raw_os_error(errno));
        assert_eq!(kind(libc::ENOSPC), StorageErrorKind::NoSpace);
        assert_eq!(kind(libc::EACCES), StorageErrorKind::PermissionDenied);
        assert_eq!(kind(libc::EROFS), StorageErrorKind::PermissionDenied);
        assert_eq!(kind(libc::EIO), StorageErrorKind::Io);
    }
}
