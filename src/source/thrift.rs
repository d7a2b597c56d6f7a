//! `Thrift`: Flume's Thrift source. Serves Flume's `ThriftSourceProtocol` (`append` and
//! `appendBatch` of `ThriftFlumeEvent { headers, body }`, answering a `Status`) over the framed
//! transport, in the compact (Flume's default) or binary protocol; see [`crate::codec::thrift`].
//! Flume's Thrift sink, Flume's `ThriftRpcClient`, and clients in any language built from Flume's
//! `flume.thrift` send to it.
//!
//! Each connection is served on its own task, one call after the other, as Thrift clients send
//! them. A call is checked whole before anything is put (a malformed event puts nothing), then
//! put `batch_size` events at a time with [`SourceContext::put_until`]; the answer is `OK` only
//! once every event of the call committed, `FAILED` when a channel stayed full for `put_timeout`
//! (or the agent is stopping; the client sends the call again). When a call of more than
//! `batch_size` events fails after some of its batches committed, resending it duplicates those.
//!
//! Bad input — a frame over `max_frame_bytes` (refused from its length, before anything is
//! allocated), a connection that ends inside a frame, a message in another protocol, a malformed
//! struct, a container declaring more elements than its frame has bytes — puts nothing: the
//! connection is closed, logged, and counted in `EventMalformedCount`. A call of a method the
//! service does not have is answered with a `TApplicationException` (`UnknownMethod`) and the
//! connection goes on. A connection holds at most one frame and one batch of decoded events.
//!
//! Counters as Flume's Thrift and Avro sources: `AppendReceivedCount` / `AppendAcceptedCount`
//! per `append` call, `AppendBatchReceivedCount` / `AppendBatchAcceptedCount` per put batch,
//! `EventReceivedCount` / `EventAcceptedCount`, `OpenConnectionCount`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use thrift::ApplicationErrorKind;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn_limits::ConnectionLimits;
use super::netcat::{accept, tls_endpoint, with_subject};
use super::{SourceContext, SourceError};
use crate::channel::ChannelError;
use crate::codec::thrift::{
    call_header, encode_exception, encode_reply, read_frame, write_frame, CallReader, Method, Protocol, Status,
    ThriftError, DEFAULT_MAX_FRAME_BYTES,
};
use crate::config::duration;
use crate::event::Event;
use crate::tls::TlsServerConfig;

/// `Thrift(bind: "127.0.0.1:4141", protocol: Compact, put_timeout: "5s", max_connections: 1024,
/// idle_timeout: "5m", max_frame_bytes: 16384000, tls: None)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThriftSourceConfig {
    /// `host:port` to listen on (Flume's `bind` and `port`).
    pub bind: String,
    /// The Thrift protocol clients speak: `Compact` or `Binary` (Flume's `protocol`: `compact`,
    /// `binary`). Default `Compact`, as Flume.
    #[serde(default)]
    pub protocol: Protocol,
    /// How long a call waits for room in a full channel before it is answered `FAILED`.
    /// Default `"5s"`.
    #[serde(default = "default_put_timeout", with = "duration")]
    pub put_timeout: Duration,
    /// Most connections open at once; further ones are accepted and closed at once, and counted
    /// in `ConnectionRefusedCount` (Flume's `threads` bounds the same). Default 1024.
    #[serde(default = "super::conn_limits::default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (counted in
    /// `ConnectionIdleClosedCount`). Default `"5m"`.
    #[serde(default = "super::conn_limits::default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Largest frame in bytes (one call with its events); a connection sending a larger one is
    /// closed. Default 16384000, the Thrift libraries' default frame limit.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Accept TLS connections only, with this certificate (and with `client_ca`, mutual TLS);
    /// see [`TlsServerConfig`] (Flume's `ssl`, `keystore`). Default `None` (plain TCP).
    #[serde(default, deserialize_with = "crate::tls::server_option")]
    pub tls: Option<TlsServerConfig>,
}

fn default_put_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_frame_bytes() -> usize {
    DEFAULT_MAX_FRAME_BYTES
}

impl ThriftSourceConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = crate::config::check_address(&self.bind) {
            problems.push(format!("bind address {:?} is not host:port (e.g. \"127.0.0.1:4141\"): {why}", self.bind));
        }
        if self.put_timeout.is_zero() {
            problems.push("put_timeout must be positive".into());
        }
        if self.max_frame_bytes < 16 || self.max_frame_bytes > i32::MAX as usize {
            problems.push(format!("max_frame_bytes must be between 16 and {} bytes", i32::MAX));
        }
        problems.extend(self.tls.iter().flat_map(TlsServerConfig::validate));
        problems.extend(super::conn_limits::check(self.max_connections, self.idle_timeout, usize::MAX));
        problems
    }
}

/// Accepts connections until the agent stops; each connection is served on its own task.
///
/// # Errors
/// When the address cannot be bound, accepting fails, or the `tls` files cannot be used.
pub async fn run(config: ThriftSourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let bind = config.bind.clone();
    let tls = tls_endpoint(config.tls.as_ref(), &ctx)?;
    // Its reading is bounded by its own frame limits, not by a read budget.
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        max_in_flight_bytes: usize::MAX,
    };
    let what = format!("listening for Thrift calls ({:?} protocol)", config.protocol);
    accept(&bind, &ctx, limits, &what, move |stream, ctx| {
        let (config, tls) = (config.clone(), tls.clone());
        async move {
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            match tls {
                None => serve(stream, None, &peer, &config, &ctx).await,
                Some(tls) => match tls.handshake(stream).await {
                    Some((stream, subject)) => serve(stream, subject.as_ref(), &peer, &config, &ctx).await,
                    None => Ok(()),
                },
            }
        }
    })
    .await
}

/// What to do after a call was handled.
enum Next {
    /// Write this reply and read the next call.
    Reply(Vec<u8>),
    /// Write this reply and close the connection.
    ReplyAndClose(Vec<u8>),
    /// Close the connection without a reply (bad input).
    Close,
}

/// Serves the calls of one connection until it closes, is idle for `idle_timeout`, sends bad
/// input, or the agent stops.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    subject: Option<&(String, String)>,
    peer: &str,
    config: &ThriftSourceConfig,
    ctx: &SourceContext,
) -> Result<(), SourceError> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let idle = ctx.idle_timeout.unwrap_or(config.idle_timeout);
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle, read_frame(&mut reader, config.max_frame_bytes)) => frame,
            _ = ctx.stopping() => return Ok(()),
        };
        let frame = match frame {
            Err(_) => {
                ctx.counters.connection_idle_closed.inc();
                tracing::info!(source = %ctx.name, %peer, idle_timeout = ?idle, "connection sent nothing for idle_timeout: closed");
                return Ok(());
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(frame))) => frame,
            Ok(Err(ThriftError::Io { what, source })) => {
                tracing::debug!(source = %ctx.name, %peer, error = %source, "{what} failed: connection closed");
                return Ok(());
            }
            Ok(Err(e)) => {
                bad_input(ctx, peer, &e);
                return Ok(());
            }
        };
        let (reply, close) = match handle(frame, subject, peer, config, ctx).await {
            Next::Reply(reply) => (reply, false),
            Next::ReplyAndClose(reply) => (reply, true),
            Next::Close => return Ok(()),
        };
        write_frame(&mut writer, &reply).await.map_err(|e| match e {
            ThriftError::Io { source, .. } => SourceError::io(format!("answer {peer}"))(source),
            other => SourceError::Stopped(other.to_string()),
        })?;
        if close || ctx.is_stopping() {
            return Ok(());
        }
    }
}

/// Logs and counts input that closes its connection.
fn bad_input(ctx: &SourceContext, peer: &str, e: &ThriftError) {
    ctx.counters.malformed.inc();
    tracing::warn!(source = %ctx.name, %peer, kind = ?e.kind(), error = %e, "bad Thrift input: connection closed, nothing put");
}

/// Decodes, puts and answers one call frame.
async fn handle(
    frame: Bytes,
    subject: Option<&(String, String)>,
    peer: &str,
    config: &ThriftSourceConfig,
    ctx: &SourceContext,
) -> Next {
    let protocol = config.protocol;
    // First pass: the whole call decodes; only its first batch is kept.
    let batch_size = ctx.batch_size.max(1);
    let mut reader = match CallReader::new(protocol, frame.clone()) {
        Ok(reader) => reader,
        Err(ThriftError::UnknownMethod(name)) => {
            tracing::warn!(source = %ctx.name, %peer, method = %name, "call of an unknown method: answered with an exception");
            return match call_header(protocol, frame) {
                Ok(h) => Next::Reply(encode_exception(
                    protocol,
                    &h.name,
                    h.seqid,
                    ApplicationErrorKind::UnknownMethod,
                    &format!("Invalid method name: '{}'", h.name),
                )),
                Err(e) => {
                    bad_input(ctx, peer, &e);
                    Next::Close
                }
            };
        }
        Err(e) => {
            bad_input(ctx, peer, &e);
            return Next::Close;
        }
    };
    let (method, name, seqid) = (reader.method(), reader.header.name.clone(), reader.header.seqid);
    let total = reader.remaining();
    let mut first = Vec::with_capacity(total.min(batch_size));
    for event in reader.by_ref() {
        match event {
            Ok(event) if first.len() < batch_size => first.push(event),
            Ok(_) => {}
            Err(e) => {
                bad_input(ctx, peer, &e);
                return Next::Close;
            }
        }
    }
    if let Err(e) = reader.finish() {
        bad_input(ctx, peer, &e);
        return Next::Close;
    }
    if method == Method::Append {
        ctx.counters.append_received.inc();
    }
    let answer = |status| encode_reply(protocol, &name, seqid, status);
    if ctx.is_stopping() {
        return Next::ReplyAndClose(answer(Status::Failed));
    }
    let deadline = Instant::now() + config.put_timeout;
    // The first pass checked the whole call: the second decodes it the same way.
    let mut rest = match total > first.len() {
        true => match CallReader::new(protocol, frame) {
            Ok(rest) => Some(rest.skip(first.len())),
            Err(e) => {
                bad_input(ctx, peer, &e);
                return Next::Close;
            }
        },
        false => None,
    };
    let mut batch = first;
    let mut committed = 0usize;
    while !batch.is_empty() {
        let n = batch.len();
        match ctx.put_until(with_subject(batch, subject), deadline).await {
            Ok(()) => committed += n,
            Err(SourceError::Put(ChannelError::Full { capacity })) => {
                tracing::debug!(source = %ctx.name, %peer, capacity, committed, total, "channel full for put_timeout: answering FAILED");
                return Next::Reply(answer(Status::Failed));
            }
            Err(SourceError::Put(ChannelError::Closed) | SourceError::Stopping) => {
                return Next::ReplyAndClose(answer(Status::Failed));
            }
            Err(e) => {
                tracing::error!(source = %ctx.name, %peer, error = %e, committed, total, "put failed: answering FAILED");
                return Next::Reply(answer(Status::Failed));
            }
        }
        batch = match rest.as_mut().map(|rest| rest.by_ref().take(batch_size).collect::<Result<Vec<Event>, _>>()) {
            None => Vec::new(),
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                bad_input(ctx, peer, &e);
                return Next::Close;
            }
        };
    }
    if method == Method::Append {
        ctx.counters.append_accepted.inc();
    }
    Next::Reply(answer(Status::Ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ThriftSourceConfig {
        ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
            .from_str(text)
            .unwrap()
    }

    #[test]
    fn defaults_are_flumes_and_bad_options_are_named() {
        let c = parse(r#"(bind: "127.0.0.1:4141")"#);
        assert_eq!(c.protocol, Protocol::Compact, "Flume's default protocol");
        assert_eq!(c.put_timeout, Duration::from_secs(5));
        assert_eq!((c.max_connections, c.idle_timeout), (1024, Duration::from_secs(300)));
        assert_eq!(c.max_frame_bytes, 16_384_000);
        assert!(c.tls.is_none() && c.validate().is_empty());
        let c = parse(r#"(bind: "nowhere", protocol: Binary, put_timeout: "0s", max_frame_bytes: 3)"#);
        assert_eq!(c.protocol, Protocol::Binary);
        let problems = c.validate().join("; ");
        for word in ["bind address", "put_timeout", "max_frame_bytes"] {
            assert!(problems.contains(word), "{problems}");
        }
    }
}
