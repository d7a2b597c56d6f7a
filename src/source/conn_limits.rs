//! Limits on the connections of a TCP source (`Netcat`, `SyslogTcp`): how many may be open at
//! once, how long one may send nothing, and how many bytes all of them together may hold between
//! reading and commit (`max_in_flight_bytes`, see [`ReadBudget`]).
//!
//! A connection over `max_connections` is accepted and closed at once, and counted in the
//! source's `ConnectionRefusedCount` (the open ones are its `OpenConnectionCount`, Flume's source
//! gauge). A connection that sends no byte for `idle_timeout` is closed (counted in
//! `ConnectionIdleClosedCount`), as a line reader's end of input: what it sent is put and
//! acknowledged. An accept that fails for want of file descriptors is retried after a pause
//! instead of failing the source.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::SourceContext;
use crate::metrics::SourceCounters;

/// The default `max_connections`: 1024.
pub fn default_max_connections() -> usize {
    1024
}

/// The default `idle_timeout`: five minutes (a syslog or netcat client that stays connected and
/// sends nothing for longer is gone or stuck; one that is not reconnects).
pub fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

/// The default `max_in_flight_bytes`: 4 MiB.
pub fn default_max_in_flight_bytes() -> usize {
    4 << 20
}

/// Problems with `max_connections`, `idle_timeout` and `max_in_flight_bytes`.
pub fn check(max_connections: usize, idle_timeout: Duration, max_in_flight_bytes: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if max_in_flight_bytes == 0 {
        problems.push("max_in_flight_bytes must be positive".into());
    }
    if max_connections == 0 {
        problems.push("max_connections must be positive".into());
    }
    if idle_timeout.is_zero() {
        problems.push("idle_timeout must be positive".into());
    }
    problems
}

/// The connection limits of one TCP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a connection may send nothing before it is closed.
    pub idle_timeout: Duration,
    /// Most bytes read from all connections together and not yet committed ([`ReadBudget`]).
    pub max_in_flight_bytes: usize,
}

/// The bytes a source read from its connections whose puts have not answered yet, bounded
/// across all of them (as Fluent Bit's `Mem_Buf_Limit` pauses an input): once the source holds
/// `limit` bytes, a connection with a partial batch puts it, and one without reads nothing more
/// until puts answer and give bytes back. The senders then wait in their socket buffers and TCP
/// flow control, as behind a full channel, instead of every connection's batches piling up in
/// the agent. Bytes are counted as read from the socket (line ends and cut remainders included),
/// held by the batch they went into ([`Held`]) until its put answered or failed. One read past
/// the limit may land per connection (the check is before a read): the overshoot is at most a
/// read's room each, [`MIN_READ`](super::lines::MIN_READ) for a connection that was waiting.
#[derive(Debug)]
pub struct ReadBudget {
    limit: usize,
    used: AtomicUsize,
    freed: tokio::sync::Notify,
}

impl ReadBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Arc<ReadBudget> {
        Arc::new(ReadBudget { limit: limit.max(1), used: AtomicUsize::new(0), freed: tokio::sync::Notify::new() })
    }

    /// Whether the bytes held reached the limit.
    pub fn is_spent(&self) -> bool {
        self.used.load(Ordering::SeqCst) >= self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Returns once the bytes held are below the limit.
    pub async fn below_limit(&self) {
        loop {
            // Registered before the check: a release between the check and the wait wakes it.
            let freed = self.freed.notified();
            if !self.is_spent() {
                return;
            }
            freed.await;
        }
    }

    fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
    }

    fn give_back(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::SeqCst);
        if before >= self.limit && before - bytes < self.limit {
            self.freed.notify_waiters();
        }
    }
}

/// The bytes of one batch held in a [`ReadBudget`] (none without a budget), given back when it
/// is dropped: after the batch's put answered, failed or was cancelled.
#[derive(Debug, Default)]
pub struct Held {
    budget: Option<Arc<ReadBudget>>,
    bytes: usize,
}

impl Held {
    /// Nothing held yet, in `budget` (`None`: not bounded, only counted).
    pub fn new(budget: Option<Arc<ReadBudget>>) -> Held {
        Held { budget, bytes: 0 }
    }

    /// Adds `bytes` just read.
    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
        if let Some(b) = &self.budget {
            b.take(bytes);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.bytes);
        }
    }
}

/// Counts the open connections of one accept loop and admits new ones while under the limit.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    open: Arc<AtomicUsize>,
    budget: Arc<ReadBudget>,
}

/// One admitted connection; dropping it (the connection ended) makes room for another.
#[derive(Debug)]
pub struct Permit {
    open: Arc<AtomicUsize>,
    counters: Arc<SourceCounters>,
}

impl Admission {
    /// An admission for `limits`, with no connection open.
    pub fn new(limits: ConnectionLimits) -> Self {
        Admission { limits, open: Arc::default(), budget: ReadBudget::new(limits.max_in_flight_bytes) }
    }

    /// Admits the connection from `peer` (a permit, and the context its connection task runs
    /// with: `ctx` with the idle timeout and the source's [`ReadBudget`]), or refuses it at the limit (`None`: the caller drops
    /// the stream, closing it; counted, and logged for the first and every 1000th refusal).
    pub fn admit(&self, ctx: &SourceContext, peer: std::net::SocketAddr) -> Option<(Permit, SourceContext)> {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        if open > self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::SeqCst);
            let refused = ctx.counters.connection_refused.get();
            ctx.counters.connection_refused.inc();
            if refused.is_multiple_of(1000) {
                tracing::warn!(source = %ctx.name, %peer, max_connections = self.limits.max_connections, refused = refused + 1, "over max_connections: connection refused");
            }
            return None;
        }
        ctx.counters.open_connections.set(open as u64);
        let mut conn_ctx = ctx.clone();
        conn_ctx.idle_timeout = Some(self.limits.idle_timeout);
        conn_ctx.read_budget = Some(self.budget.clone());
        Some((Permit { open: self.open.clone(), counters: ctx.counters.clone() }, conn_ctx))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let open = self.open.fetch_sub(1, Ordering::SeqCst) - 1;
        self.counters.open_connections.set(open as u64);
    }
}

/// Whether a failed `accept` is worth retrying after a pause rather than failing the source:
/// out of file descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), or a connection
/// that went away before it was accepted.
pub fn accept_error_is_transient(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
        || matches!(e.kind(), std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset)
}

/// The pause after a transient accept failure.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);
