//! `Avro`: sends each taken batch as one `appendBatch` call of Flume's Avro RPC
//! (`AvroSourceProtocol`), as Flume's `avro` sink: to a Flume agent's `avro` source or a flumen
//! agent's `Avro` source.
//!
//! One connection at a time, opened on the first batch (within `connect_timeout`) and kept. The
//! handshake goes with the first call of a connection only, as Java's `NettyTransceiver` does;
//! when the server answers `NONE` (it does not know this side's protocol hash) the call is sent
//! again with the protocol's text. The take is committed only once the server answered `OK`
//! (which Flume's and flumen's sources answer after their channel committed): delivery across the
//! hop is at-least-once. Any other outcome fails the delivery and the take is rolled back: a
//! `FAILED` answer (the connection is kept), a connection that cannot be made, breaks, or sends
//! no answer within `request_timeout` (the connection is closed). A lone sink is then restarted by
//! its supervisor with capped exponential backoff and connects anew; in a `Failover` or
//! `LoadBalance` group the processor gives the batch to another sink. A retry after a timeout may
//! deliver a batch twice.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Sink, SinkError};
use crate::codec::avro::{
    check_protocol, decode_response, encode_append_batch, encode_frame, protocol_hash, read_frame, AvroError,
    Compression, Deflater, FrameLimits, HandshakeMatch, HandshakeRequest, HandshakeResponse, Inflater, Md5, Response,
    Status, PROTOCOL,
};
use crate::config::duration;
use crate::event::Event;
use crate::metrics::SinkCounters;
use crate::tls::TlsClientConfig;

/// `Avro(hostname: "collector", port: 4141, compression_type: None, compression_level: 6,
/// connect_timeout: "20s", request_timeout: "20s", tls: None)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AvroSinkConfig {
    /// The host of the `avro` source (Flume's `hostname`).
    pub hostname: String,
    /// Its port (Flume's `port`).
    pub port: u16,
    /// `Deflate`: both directions are zlib streams (Flume's `compression-type = deflate`; the
    /// source must have it too). Default `None`.
    #[serde(default)]
    pub compression_type: Compression,
    /// The zlib level with `Deflate`, 0 (none) to 9 (smallest) (Flume's `compression-level`).
    /// Default 6.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    /// How long connecting (the TLS handshake included) may take. Default `"20s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long a call may wait for its answer; then the connection is closed and the batch
    /// rolled back. Default `"20s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Speak TLS, with this CA (or the system's roots), client certificate and server name; see
    /// [`TlsClientConfig`] (Flume's `ssl`, `truststore`). Default `None` (plain TCP).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
}

fn default_compression_level() -> u32 {
    6
}
fn default_timeout() -> Duration {
    Duration::from_secs(20)
}

/// The largest answer frame read: answers are a few dozen bytes (plus a protocol's text).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

impl AvroSinkConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.hostname.trim().is_empty() {
            problems.push("hostname is empty".into());
        }
        if self.port == 0 {
            problems.push("port must be positive".into());
        }
        if self.compression_level > 9 {
            problems.push(format!("compression_level {} is not 0 to 9", self.compression_level));
        }
        if self.connect_timeout.is_zero() {
            problems.push("connect_timeout must be positive".into());
        }
        if self.request_timeout.is_zero() {
            problems.push("request_timeout must be positive".into());
        }
        problems.extend(self.tls.iter().flat_map(TlsClientConfig::validate));
        problems
    }

    /// Resolves the `tls` files against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    /// Where the sink sends to, for the run summary.
    pub fn address(&self) -> String {
        format!("avro://{}:{}", self.hostname, self.port)
    }
}

/// One open connection: its halves, its serial numbers, whether its handshake is done.
struct Connection {
    reader: Box<dyn AsyncRead + Unpin>,
    writer: Box<dyn AsyncWrite + Unpin>,
    deflater: Option<Deflater>,
    serial: i32,
    handshaken: bool,
}

/// The Avro sink.
pub struct AvroSink {
    config: AvroSinkConfig,
    name: String,
    counters: Arc<SinkCounters>,
    tls: Option<tokio_rustls::TlsConnector>,
    connection: Option<Connection>,
    /// The server's protocol hash, once a handshake answer gave it.
    server_hash: Option<Md5>,
}

impl AvroSink {
    /// A sink sending to `config.hostname:config.port`; connects on the first batch.
    ///
    /// # Errors
    /// When the `tls` files cannot be used.
    pub fn new(name: &str, config: AvroSinkConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some(tokio_rustls::TlsConnector::from(Arc::new(
                crate::tls::client::client_config(tls, false).map_err(|e| SinkError::Other(format!("tls: {e}")))?,
            ))),
        };
        Ok(AvroSink { config, name: name.into(), counters, tls, connection: None, server_hash: None })
    }

    async fn connect(&self) -> Result<Connection, AvroError> {
        let address = format!("{}:{}", self.config.hostname, self.config.port);
        let stream = TcpStream::connect(&address).await.map_err(AvroError::io("connect"))?;
        let _ = stream.set_nodelay(true);
        let (reader, writer): (Box<dyn AsyncRead + Unpin>, Box<dyn AsyncWrite + Unpin>) = match &self.tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(connector) => {
                let host = self
                    .config
                    .tls
                    .as_ref()
                    .and_then(|t| t.server_name.clone())
                    .unwrap_or(self.config.hostname.clone());
                let name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| AvroError::io("TLS server name")(std::io::Error::other(e)))?;
                let tls = connector.connect(name, stream).await.map_err(AvroError::io("TLS handshake"))?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        let (reader, deflater): (Box<dyn AsyncRead + Unpin>, _) = match self.config.compression_type {
            Compression::None => (reader, None),
            Compression::Deflate => {
                (Box::new(Inflater::new(reader)), Some(Deflater::new(self.config.compression_level)))
            }
        };
        Ok(Connection { reader, writer, deflater, serial: 0, handshaken: false })
    }

    /// Sends `appendBatch(events)` on the open connection and reads its answer (with the
    /// handshake, and its `NONE` round trip, on the connection's first call).
    async fn append_batch(&mut self, events: &[Event]) -> Result<Status, AvroError> {
        let mut call = Vec::new();
        encode_append_batch(events, &mut call);
        let conn = self.connection.as_mut().expect("connected before a call");
        let mut send_protocol = false;
        loop {
            let mut payload = Vec::with_capacity(call.len() + 64);
            if !conn.handshaken {
                HandshakeRequest {
                    client_hash: protocol_hash(),
                    client_protocol: send_protocol.then(|| PROTOCOL.to_string()),
                    server_hash: self.server_hash.unwrap_or_else(protocol_hash),
                    meta: None,
                }
                .encode(&mut payload);
            }
            payload.extend_from_slice(&call);
            conn.serial = conn.serial.wrapping_add(1);
            let mut frame = Vec::with_capacity(payload.len() + 12);
            encode_frame(conn.serial, &payload, &mut frame);
            drop(payload);
            if let Some(d) = &mut conn.deflater {
                let mut wire = Vec::with_capacity(frame.len() / 2);
                d.compress(&frame, &mut wire);
                frame = wire;
            }
            conn.writer.write_all(&frame).await.map_err(AvroError::io("send a call"))?;
            conn.writer.flush().await.map_err(AvroError::io("send a call"))?;
            let answer = read_frame(&mut conn.reader, FrameLimits { max_frame_bytes: MAX_ANSWER_BYTES })
                .await?
                .ok_or_else(|| AvroError::io("read an answer")(std::io::ErrorKind::UnexpectedEof.into()))?;
            if answer.serial != conn.serial {
                return Err(AvroError::Handshake(format!(
                    "an answer with serial {} to call {}",
                    answer.serial, conn.serial
                )));
            }
            let mut input = &answer.payload[..];
            if !conn.handshaken {
                let response = HandshakeResponse::decode(&mut input)?;
                if let Some(text) = &response.server_protocol {
                    check_protocol(text)?;
                }
                if let Some(hash) = response.server_hash {
                    self.server_hash = Some(hash);
                }
                match response.matched {
                    HandshakeMatch::None if send_protocol => {
                        return Err(AvroError::Handshake("the server answered NONE to our protocol's text".into()))
                    }
                    HandshakeMatch::None => {
                        send_protocol = true;
                        continue;
                    }
                    HandshakeMatch::Both | HandshakeMatch::Client => conn.handshaken = true,
                }
            }
            return match decode_response(&mut input)? {
                Response::Status(status) => Ok(status),
                Response::Error(e) => Err(AvroError::Remote(e)),
            };
        }
    }

    fn close_connection(&mut self) {
        if self.connection.take().is_some() {
            self.counters.connection_closed.inc();
        }
    }
}

impl Sink for AvroSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let address = self.config.address();
            // A kept connection the source closed meanwhile (its idle_timeout) fails at once with
            // an I/O error: the batch is then sent again, once, on a new connection.
            let mut reused = self.connection.is_some();
            loop {
                if self.connection.is_none() {
                    match tokio::time::timeout(self.config.connect_timeout, self.connect()).await {
                        Ok(Ok(conn)) => {
                            self.counters.connection_created.inc();
                            self.connection = Some(conn);
                        }
                        Ok(Err(e)) => {
                            self.counters.connection_failed.inc();
                            return Err(SinkError::Avro { address, source: e });
                        }
                        Err(_) => {
                            self.counters.connection_failed.inc();
                            return Err(SinkError::Avro {
                                address,
                                source: AvroError::Timeout(self.config.connect_timeout),
                            });
                        }
                    }
                }
                let answer = tokio::time::timeout(self.config.request_timeout, self.append_batch(events)).await;
                let error = match answer {
                    Ok(Ok(Status::Ok)) => return Ok(()),
                    Ok(Ok(status)) => {
                        tracing::warn!(sink = %self.name, %address, ?status, events = events.len(), "the Avro source did not take the batch; rolling back");
                        return Err(SinkError::Avro { address, source: AvroError::Refused(status) });
                    }
                    Ok(Err(e)) => e,
                    Err(_) => AvroError::Timeout(self.config.request_timeout),
                };
                self.close_connection();
                if reused && matches!(error, AvroError::Io { .. }) {
                    tracing::debug!(sink = %self.name, %address, error = %error, "the kept connection is gone; connecting anew");
                    reused = false;
                    continue;
                }
                self.counters.connection_failed.inc();
                return Err(SinkError::Avro { address, source: error });
            }
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if let Some(mut conn) = self.connection.take() {
                let _ = conn.writer.shutdown().await;
                self.counters.connection_closed.inc();
            }
            Ok(())
        })
    }
}
