//! `Avro`: Flume's Avro RPC (`AvroSourceProtocol`), as Flume's `avro` source: the receiving end
//! of a tier whose edges are Flume agents with an `avro` sink, flumen agents with an `Avro` sink,
//! or clients of Flume's RPC client SDK.
//!
//! Each connection is read on its own task, one call at a time: a Netty frame
//! ([`crate::codec::avro`]), the handshake it starts with (the first call of a connection, a call
//! after a `NONE` answer, or every call of a client that handshakes each time, as Python's
//! `avro.ipc`), then `append(event)` or `appendBatch(events)`. The events are put through the
//! interceptors and channel selector (`batch_size` events per put); the answer is `OK` only once
//! every event of the call was committed to the required channels, `FAILED` when a channel stayed
//! full for `put_timeout` (or is closed): the client then sends the call again (events committed
//! before, in a call longer than `batch_size`, arrive twice). With `compression_type: Deflate`
//! both directions are one zlib stream each (Flume's `compression-type = deflate`).
//!
//! Bad input closes the connection with a warning, counts `ProtocolErrorCount` and puts nothing of
//! the call: a frame declaring more buffers or bytes than `max_frame_bytes` allows (refused before
//! anything is allocated), a connection ending inside a frame, a corrupt zlib stream, a handshake
//! for another protocol, a datum that does not decode (also counted in `EventMalformedCount`).

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::conn_limits::ConnectionLimits;
use super::netcat::{accept, tls_endpoint, with_subject};
use super::{SourceContext, SourceError};
use crate::channel::ChannelError;
use crate::codec::avro::{
    decode_call, encode_frame, encode_response, read_frame, AvroError, Call, Compression, Deflater, FrameLimits,
    Handshaken, Inflater, KnownClients, Response, ServerSession, Status,
};
use crate::config::duration;
use crate::event::Event;
use crate::tls::TlsServerConfig;

/// `Avro(bind: "0.0.0.0:4141", compression_type: None, put_timeout: "5s", max_connections: 1024,
/// idle_timeout: "5m", max_frame_bytes: 67108864, tls: None)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AvroSourceConfig {
    /// `host:port` to listen on (Flume's `bind` and `port`).
    pub bind: String,
    /// `Deflate`: both directions of every connection are zlib streams (Flume's
    /// `compression-type = deflate`; the clients must compress too). Default `None`.
    #[serde(default)]
    pub compression_type: Compression,
    /// How long a call waits for room in a full channel before it is answered `FAILED`.
    /// Default `"5s"`.
    #[serde(default = "default_put_timeout", with = "duration")]
    pub put_timeout: Duration,
    /// Most connections open at once; further ones are accepted and closed at once, and counted
    /// in `ConnectionRefusedCount`. Default 1024.
    #[serde(default = "super::conn_limits::default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long (or takes longer than this for one frame)
    /// is closed (counted in `ConnectionIdleClosedCount`). Default `"5m"`.
    #[serde(default = "super::conn_limits::default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Most bytes one frame (one call) may hold, its buffers' length prefixes included; a frame
    /// declaring more closes the connection. Bytes; default 67108864 (64 MiB).
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
    64 * 1024 * 1024
}

impl AvroSourceConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = crate::config::check_address(&self.bind) {
            problems.push(format!("bind address {:?} is not host:port (e.g. \"0.0.0.0:4141\"): {why}", self.bind));
        }
        if self.put_timeout.is_zero() {
            problems.push("put_timeout must be positive".into());
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > i32::MAX as usize {
            problems.push(format!("max_frame_bytes must be between 1024 and {} bytes", i32::MAX));
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
pub async fn run(config: AvroSourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let bind = config.bind.clone();
    let tls = tls_endpoint(config.tls.as_ref(), &ctx)?;
    // Its reading is bounded by its own frame limits, not by a read budget.
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        max_in_flight_bytes: usize::MAX,
    };
    let known = KnownClients::default();
    accept(&bind, &ctx, limits, "listening for Avro RPC", move |stream, ctx| {
        let (config, tls, session) = (config.clone(), tls.clone(), ServerSession::new(known.clone()));
        async move {
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr().map_or_else(|_| "?".to_string(), |p| p.to_string());
            match tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    connection(reader, writer, None, &peer, session, &config, &ctx).await
                }
                Some(tls) => match tls.handshake(stream).await {
                    Some((stream, subject)) => {
                        let (reader, writer) = tokio::io::split(stream);
                        connection(reader, writer, subject.as_ref(), &peer, session, &config, &ctx).await
                    }
                    None => Ok(()),
                },
            }
        }
    })
    .await
}

/// Writes answer frames, deflated when the connection is.
struct FrameWriter<W> {
    writer: W,
    deflater: Option<Deflater>,
    frame: Vec<u8>,
    wire: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    async fn send(&mut self, serial: i32, payload: &[u8]) -> Result<(), SourceError> {
        self.frame.clear();
        encode_frame(serial, payload, &mut self.frame);
        let bytes = match &mut self.deflater {
            None => &self.frame,
            Some(d) => {
                self.wire.clear();
                d.compress(&self.frame, &mut self.wire);
                &self.wire
            }
        };
        self.writer.write_all(bytes).await.map_err(SourceError::io("write an Avro answer"))?;
        self.writer.flush().await.map_err(SourceError::io("write an Avro answer"))
    }
}

/// Serves one connection (plain or TLS: its two halves) until it closes, the agent stops, or it
/// sends bad input (then it is closed, logged and counted; `Ok`, the source goes on).
async fn connection<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: R,
    writer: W,
    subject: Option<&(String, String)>,
    peer: &str,
    mut session: ServerSession,
    config: &AvroSourceConfig,
    ctx: &SourceContext,
) -> Result<(), SourceError> {
    let mut reader: Box<dyn AsyncRead + Unpin> = match config.compression_type {
        Compression::None => Box::new(reader),
        Compression::Deflate => Box::new(Inflater::new(reader)),
    };
    let deflater = (config.compression_type == Compression::Deflate).then(|| Deflater::new(6));
    let mut out = FrameWriter { writer, deflater, frame: Vec::new(), wire: Vec::new() };
    let limits = FrameLimits { max_frame_bytes: config.max_frame_bytes };
    let idle = ctx.idle_timeout.unwrap_or(config.idle_timeout);
    let mut answer = Vec::new();
    loop {
        let frame = tokio::select! {
            read = tokio::time::timeout(idle, read_frame(&mut reader, limits)) => match read {
                Err(_) => {
                    ctx.counters.connection_idle_closed.inc();
                    tracing::debug!(source = %ctx.name, %peer, ?idle, "no call for idle_timeout: closing the connection");
                    return Ok(());
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(frame))) => frame,
                Ok(Err(AvroError::Io { source, .. })) => {
                    tracing::debug!(source = %ctx.name, %peer, error = %source, "connection failed");
                    return Ok(());
                }
                Ok(Err(e)) => return refuse(ctx, peer, &e),
            },
            _ = ctx.stopping() => return Ok(()),
        };
        answer.clear();
        let mut input = &frame.payload[..];
        match session.handshake(&mut input) {
            Err(e) => return refuse(ctx, peer, &e),
            Ok(Handshaken::Retry(none)) => {
                // The client did not send its protocol and its hash is unknown: it sends the
                // call again with its protocol. Nothing of this one is run.
                none.encode(&mut answer);
                out.send(frame.serial, &answer).await?;
                continue;
            }
            Ok(Handshaken::Answer(response)) => response.encode(&mut answer),
            Ok(Handshaken::NoHandshake) => {}
        }
        let call = match decode_call(&mut input) {
            Ok(call) => call,
            Err(e) => {
                ctx.counters.malformed.inc();
                return refuse(ctx, peer, &e);
            }
        };
        let response = match call {
            Call::Append(event) => {
                ctx.counters.append_received.inc();
                let status = put(with_subject(vec![event], subject), config, ctx).await?;
                if status == Status::Ok {
                    ctx.counters.append_accepted.inc();
                }
                Response::Status(status)
            }
            Call::AppendBatch(events) => Response::Status(put(with_subject(events, subject), config, ctx).await?),
            Call::Unknown(name) => {
                tracing::warn!(source = %ctx.name, %peer, message = %name, "a call of a message AvroSourceProtocol does not have");
                Response::Error(format!("unknown message {name:?}"))
            }
        };
        encode_response(&response, &mut answer);
        out.send(frame.serial, &answer).await?;
        if ctx.is_stopping() {
            return Ok(());
        }
    }
}

/// Bad input: logs, counts `ProtocolErrorCount`; the caller closes the connection (the source
/// goes on: `Ok`).
fn refuse(ctx: &SourceContext, peer: &str, e: &AvroError) -> Result<(), SourceError> {
    ctx.counters.protocol_errors.inc();
    tracing::warn!(source = %ctx.name, %peer, kind = ?e.kind(), error = %e, "bad Avro RPC input: closing the connection, nothing of the call was put");
    Ok(())
}

/// Puts the events of one call, `batch_size` at a time, within `put_timeout`: `OK` once all are
/// committed, `FAILED` when a channel stayed full or is closed.
///
/// # Errors
/// A put that failed for good otherwise (the call is answered `FAILED` by closing: the source
/// restarts).
async fn put(events: Vec<Event>, config: &AvroSourceConfig, ctx: &SourceContext) -> Result<Status, SourceError> {
    let total = events.len();
    let deadline = Instant::now() + config.put_timeout;
    let mut events = events.into_iter();
    let mut committed = 0;
    loop {
        let batch: Vec<Event> = events.by_ref().take(ctx.batch_size.max(1)).collect();
        if batch.is_empty() {
            return Ok(Status::Ok);
        }
        let n = batch.len();
        match ctx.put_until(batch, deadline).await {
            Ok(()) => committed += n,
            Err(SourceError::Put(ChannelError::Full { capacity })) => {
                tracing::debug!(source = %ctx.name, capacity, committed, total, "channel full: answering FAILED");
                return Ok(Status::Failed);
            }
            Err(SourceError::Put(ChannelError::Closed) | SourceError::Stopping) => return Ok(Status::Failed),
            Err(e) => {
                tracing::error!(source = %ctx.name, error = %e, committed, total, "put failed");
                return Err(e);
            }
        }
    }
}
