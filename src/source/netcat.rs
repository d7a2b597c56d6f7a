//! `Netcat`: one event per line received on TCP connections, as Flume's netcat source.
//!
//! Each connection is read on its own task. Up to [`PIPELINE`] batches of a connection are being
//! put at once; with `ack_every_event`, the `OK` lines of a batch are written once it committed,
//! in the order the lines were read. All connections together hold at most
//! `max_in_flight_bytes` read and not yet committed ([`ReadBudget`](super::conn_limits::ReadBudget)).

use std::collections::BTreeMap;

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::conn_limits::{accept_error_is_transient, Admission, ConnectionLimits, Held, ACCEPT_RETRY};
use super::lines::{read_batch, to_events, LineBuffer, ReadEnd, Unanswered};
use super::{SourceContext, SourceError};
use crate::event::Event;
use crate::tls::server::TlsEndpoint;
use crate::tls::TlsServerConfig;

/// `Netcat(bind: "127.0.0.1:44444", max_line_length: 512, ack_every_event: true,
/// max_connections: 1024, idle_timeout: "5m")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetcatConfig {
    /// `host:port` to listen on (Flume's `bind` and `port`).
    pub bind: String,
    /// Longest body in bytes; longer lines are cut to it, flagged with header `truncated: "true"`
    /// and counted in `EventMalformedCount` (Flume's `max-line-length`). Default 512.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Answer `OK` per event once its put committed (Flume's `ack-every-event`). Default `true`.
    #[serde(default = "default_ack")]
    pub ack_every_event: bool,
    /// Accept TLS connections only, with this certificate (and with `client_ca`, mutual TLS);
    /// see [`TlsServerConfig`]. Default `None` (plain TCP).
    #[serde(default, deserialize_with = "crate::tls::server_option")]
    pub tls: Option<TlsServerConfig>,
    /// Most connections open at once; further ones are accepted and closed at once, and counted
    /// in `ConnectionRefusedCount`. Default 1024.
    #[serde(default = "super::conn_limits::default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (counted in
    /// `ConnectionIdleClosedCount`). Default `"5m"`.
    #[serde(default = "super::conn_limits::default_idle_timeout", with = "crate::config::duration")]
    pub idle_timeout: std::time::Duration,
    /// Most bytes read from all connections together whose puts have not answered yet; at it,
    /// connections stop reading until puts commit (see
    /// [`ReadBudget`](crate::source::conn_limits::ReadBudget)). Default 4 MiB (4,194,304).
    #[serde(default = "super::conn_limits::default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
}

fn default_max_line_length() -> usize {
    512
}
fn default_ack() -> bool {
    true
}

impl NetcatConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = crate::config::check_address(&self.bind) {
            problems.push(format!("bind address {:?} is not host:port (e.g. \"127.0.0.1:44444\"): {why}", self.bind));
        }
        if self.max_line_length == 0 {
            problems.push("max_line_length must be positive".into());
        }
        problems.extend(self.tls.iter().flat_map(TlsServerConfig::validate));
        problems.extend(super::conn_limits::check(self.max_connections, self.idle_timeout, self.max_in_flight_bytes));
        problems
    }
}

/// Accepts connections until the agent stops; each connection is read on its own task.
///
/// # Errors
/// When the address cannot be bound or accepting fails.
pub async fn run(config: NetcatConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let bind = config.bind.clone();
    let tls = tls_endpoint(config.tls.as_ref(), &ctx)?;
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        max_in_flight_bytes: config.max_in_flight_bytes,
    };
    accept(&bind, &ctx, limits, "listening", move |stream, ctx| {
        let (config, tls) = (config.clone(), tls.clone());
        async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    connection(reader, writer, None, &config, &ctx).await
                }
                Some(tls) => match tls.handshake(stream).await {
                    Some((stream, subject)) => {
                        let (reader, writer) = tokio::io::split(stream);
                        connection(reader, writer, subject.as_ref(), &config, &ctx).await
                    }
                    None => Ok(()),
                },
            }
        }
    })
    .await
}

/// The [`TlsEndpoint`] of a TCP source with `tls`, `None` without.
///
/// # Errors
/// When the certificate files cannot be used.
pub(crate) fn tls_endpoint(
    tls: Option<&TlsServerConfig>,
    ctx: &SourceContext,
) -> Result<Option<std::sync::Arc<TlsEndpoint>>, SourceError> {
    Ok(tls.map(|tls| TlsEndpoint::new(tls, &ctx.name, ctx.counters.clone(), false)).transpose()?)
}

/// Sets header `name` to `value` on every event (the client certificate's subject).
pub(crate) fn with_subject(mut events: Vec<Event>, subject: Option<&(String, String)>) -> Vec<Event> {
    if let Some((name, value)) = subject {
        for e in &mut events {
            e.headers.insert(name.clone(), value.clone());
        }
    }
    events
}

/// Accepts TCP connections on `bind` until the agent stops, running `connection` for each on its
/// own task (a connection that ends with an error is logged; the source goes on), within
/// `limits` (see [`conn_limits`](super::conn_limits)).
///
/// # Errors
/// When the address cannot be bound or accepting fails (but for want of file descriptors).
pub(crate) async fn accept<F, Fut>(
    bind: &str,
    ctx: &SourceContext,
    limits: ConnectionLimits,
    what: &str,
    connection: F,
) -> Result<(), SourceError>
where
    F: Fn(TcpStream, SourceContext) -> Fut,
    Fut: std::future::Future<Output = Result<(), SourceError>> + 'static,
{
    let listener = match handed_over(bind) {
        Some(listener) => TcpListener::from_std(listener).map_err(SourceError::io(format!("take over {bind}")))?,
        None => TcpListener::bind(bind).await.map_err(SourceError::io(format!("bind {bind}")))?,
    };
    tracing::info!(source = %ctx.name, %bind, "{what}");
    // Every connection task holds a clone of `open`; once the last one is dropped, `closed`
    // answers `None`: no connection has a put or an acknowledgement in flight any more.
    let (open, mut closed) = mpsc::channel::<()>(1);
    let admission = Admission::new(limits);
    let result = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) if accept_error_is_transient(&e) => {
                        tracing::warn!(source = %ctx.name, %bind, error = %e, "accept failed; retrying");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                    Err(e) => break Err(SourceError::io(format!("accept on {bind}"))(e)),
                };
                let Some((permit, conn_ctx)) = admission.admit(ctx, peer) else { continue };
                let name = ctx.name.clone();
                let work = connection(stream, conn_ctx);
                let open = open.clone();
                actix_rt::spawn(async move {
                    if let Err(e) = work.await {
                        tracing::warn!(source = %name, %peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                    drop(open);
                });
            }
            _ = ctx.stopping() => break Ok(()),
        }
    };
    // Stop listening (or leave the socket to the source restarted on it), then let every
    // connection finish its puts in flight and write their acknowledgements before the source
    // counts as stopped (and the sinks drain the channels).
    keep_for_handover(bind, listener);
    drop(open);
    while closed.recv().await.is_some() {}
    result
}

/// Listening sockets passed from a stopping TCP source to the source a reload starts in its place
/// on the same address: `bind` to the socket, or `None` while the stopping source still has it.
/// Connections that arrive in between wait in the socket's backlog instead of being refused.
static HANDOVER: std::sync::Mutex<BTreeMap<String, Option<std::net::TcpListener>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Asks the `Netcat` or `SyslogTcp` source listening on `bind` to leave its socket, when it
/// stops, to the next such source on `bind` (a reload restarting a source whose `bind` did not
/// change: it does not rebind).
pub fn hand_over(bind: &str) {
    HANDOVER.lock().expect("handover lock is never poisoned").insert(bind.to_string(), None);
}

fn handed_over(bind: &str) -> Option<std::net::TcpListener> {
    HANDOVER.lock().expect("handover lock is never poisoned").remove(bind).flatten()
}

fn keep_for_handover(bind: &str, listener: TcpListener) {
    let mut map = HANDOVER.lock().expect("handover lock is never poisoned");
    if let Some(slot @ None) = map.get_mut(bind) {
        match listener.into_std() {
            Ok(std) => *slot = Some(std),
            Err(e) => {
                tracing::warn!(%bind, error = %e, "cannot hand the listening socket over; the next source binds anew");
                map.remove(bind);
            }
        }
    }
}

/// Puts one connection may have in flight: reading goes on while earlier batches are being
/// committed, so that a durable channel's fsync serves several batches (group commit).
pub const PIPELINE: usize = 4;

/// Reads one connection (plain or TLS: its two halves): batches of lines, put while the next
/// ones are read, acknowledged in order; each event gets the `subject` header, if any.
async fn connection<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut reader: R,
    writer: W,
    subject: Option<&(String, String)>,
    config: &NetcatConfig,
    ctx: &SourceContext,
) -> Result<(), SourceError> {
    let (batches, committer_rx) = mpsc::channel::<(Vec<Event>, Held)>(1);
    let unanswered = &Unanswered::default();
    let reading = async move {
        let mut lb = LineBuffer::new(config.max_line_length);
        loop {
            let mut held = Held::new(ctx.read_budget.clone());
            let (lines, end) = read_batch(&mut lb, &mut reader, ctx.batch_size, unanswered, &mut held, ctx)
                .await
                .map_err(SourceError::io("read from connection"))?;
            if !lines.is_empty() {
                unanswered.handed_on();
                if batches.send((with_subject(to_events(lines, ctx), subject), held)).await.is_err() {
                    // The committer stopped on a failed put; it reports the error.
                    return Ok(());
                }
            }
            // Once the agent stops, read no more: what is committed is acknowledged, the rest
            // is for the client to send again.
            if end != ReadEnd::More || ctx.is_stopping() {
                return Ok(());
            }
        }
    };
    let committing = commit_in_order(committer_rx, config.ack_every_event.then_some(writer), unanswered, ctx);
    let (read, committed) = futures_util::join!(reading, committing);
    committed.and(read)
}

/// Puts the batches read from one connection, at most [`PIPELINE`] at a time, each with the bytes
/// it holds in the source's read budget (given back once its put answered), counting each batch
/// answered in `unanswered` (what the reader's [`Room`](super::lines::Room) waits for), and (given `acks`,
/// the connection's writing half) writes one `OK` line per event once its batch committed, in the
/// order the batches were read.
///
/// # Errors
/// The first failed put, or a failed write of acknowledgements.
pub(crate) async fn commit_in_order<W: AsyncWrite + Unpin>(
    mut batches: mpsc::Receiver<(Vec<Event>, Held)>,
    mut acks: Option<W>,
    unanswered: &Unanswered,
    ctx: &SourceContext,
) -> Result<(), SourceError> {
    // However this ends (a failed put, a failed write), the reader must not wait for answers.
    struct Closing<'a>(&'a Unanswered);
    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _closing = Closing(unanswered);
    let mut in_flight = FuturesOrdered::new();
    let mut reading = true;
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            batch = batches.recv(), if reading && in_flight.len() < PIPELINE => match batch {
                Some((events, held)) => {
                    let n = events.len();
                    in_flight.push_back(async move {
                        let put = ctx.put(events).await.map(|()| n);
                        // The batch's bytes are the channel's now (or given up): back to the budget.
                        drop(held);
                        put
                    });
                }
                None => reading = false,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let n = done?;
                if let Some(writer) = acks.as_mut() {
                    buf.clear();
                    buf.extend(std::iter::repeat_n(*b"OK\n", n).flatten());
                    writer.write_all(&buf).await.map_err(SourceError::io("write acknowledgements"))?;
                }
                unanswered.answered();
            }
            else => break,
        }
    }
    if let Some(mut writer) = acks {
        let _ = writer.shutdown().await;
    }
    Ok(())
}
