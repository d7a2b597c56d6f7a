//! Limits on the connections of a TCP source (`Netcat`, `SyslogTcp`): how many may be open at
//! once, and how long one may send nothing.
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

/// Problems with `max_connections` and `idle_timeout`.
pub fn check(max_connections: usize, idle_timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
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
}

/// Counts the open connections of one accept loop and admits new ones while under the limit.
#[derive(Debug)]
pub struct Admission {
    limits: ConnectionLimits,
    open: Arc<AtomicUsize>,
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
        Admission { limits, open: Arc::default() }
    }

    /// Admits the connection from `peer` (a permit, and the context its connection task runs
    /// with: `ctx` with the idle timeout), or refuses it at the limit (`None`: the caller drops
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
