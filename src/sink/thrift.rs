//! `Thrift`: Flume's Thrift sink. Sends each taken batch as one `appendBatch` call of Flume's
//! `ThriftSourceProtocol` (see [`crate::codec::thrift`]) to a Flume `thrift` source, a flumen
//! `Thrift` source, or any server built from Flume's `flume.thrift`, over the framed transport in
//! the compact (Flume's default) or binary protocol, plain or TLS.
//!
//! The take is committed only when the server answers `OK` (which a Thrift source says only once
//! the events are committed to its channels): delivery across the hop is at-least-once. Any other
//! answer (`FAILED`, `ERROR`, `UNKNOWN`, an exception), a connection that cannot be opened within
//! `connect_timeout`, or no answer within `request_timeout` fails the delivery: the connection is
//! closed (counted in `ConnectionFailedCount`), the take is rolled back, and the sink is rebuilt
//! by its supervisor after a capped exponential backoff (100 ms doubling to 30 s), reconnecting;
//! in a `Failover` or `LoadBalance` sink group the group's processor hands the batch to another
//! sink. A batch that timed out may have been committed by the server: its resend duplicates it.
//! One connection is kept open between batches, as Flume's `ThriftRpcClient` does; when the server
//! closed it in the meantime (its idle timeout, a restart), the batch is sent again at once, once,
//! on a new connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Sink, SinkError};
use crate::codec::thrift::{decode_reply, encode_call, read_frame, write_frame, Method, Protocol, Status, ThriftError};
use crate::config::duration;
use crate::event::Event;
use crate::metrics::SinkCounters;
use crate::tls::TlsClientConfig;

/// `Thrift(hostname: "collector", port: 4141, protocol: Compact, connect_timeout: "20s",
/// request_timeout: "20s", tls: None)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThriftSinkConfig {
    /// The host name or address of the Thrift source (Flume's `hostname`).
    pub hostname: String,
    /// Its port (Flume's `port`).
    pub port: u16,
    /// The Thrift protocol the source speaks: `Compact` or `Binary` (Flume's `protocol`). Default
    /// `Compact`, as Flume.
    #[serde(default)]
    pub protocol: Protocol,
    /// How long connecting (and the TLS handshake) may take (Flume's `connect-timeout`).
    /// Default `"20s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long the server may take to answer a call (Flume's `request-timeout`). Default `"20s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Speak TLS, checking the server's certificate against `ca` (or the system's roots), with
    /// `cert` and `key` for mutual TLS: `Some(TlsClient(ca: Some("ca.pem")))` (Flume's `ssl`,
    /// `truststore`). The certificate must be valid for `hostname` (or `server_name`).
    /// Default `None` (plain TCP).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(20)
}

/// The largest answer frame read: a reply is a few bytes, an exception a message.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

impl ThriftSinkConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.hostname.trim().is_empty() {
            problems.push("hostname is empty".into());
        }
        if self.port == 0 {
            problems.push("port must be between 1 and 65535".into());
        }
        if self.connect_timeout.is_zero() {
            problems.push("connect_timeout must be positive".into());
        }
        if self.request_timeout.is_zero() {
            problems.push("request_timeout must be positive".into());
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.validate());
        }
        problems
    }

    /// Resolves the `tls` files against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }

    /// Where the sink sends, for the run summary.
    pub fn output(&self) -> String {
        let scheme = if self.tls.is_some() { "thrift+tls" } else { "thrift" };
        format!("{scheme}://{}:{} ({:?})", self.hostname, self.port, self.protocol)
    }
}

/// A connection, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Connection for T {}

/// The Thrift sink.
pub struct ThriftSink {
    name: String,
    config: ThriftSinkConfig,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    counters: Arc<SinkCounters>,
    connection: Option<Box<dyn Connection>>,
    seqid: i32,
}

impl ThriftSink {
    /// A sink sending to `config.hostname:config.port` (it connects on its first batch).
    ///
    /// # Errors
    /// When the `tls` files cannot be used or the host name is not a valid TLS server name.
    pub fn new(name: &str, config: ThriftSinkConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let client =
                    crate::tls::client::client_config(tls, false).map_err(|e| SinkError::Other(format!("tls: {e}")))?;
                let name = rustls::pki_types::ServerName::try_from(config.hostname.clone())
                    .map_err(|e| SinkError::Other(format!("tls: hostname {:?}: {e}", config.hostname)))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(client)), name))
            }
        };
        Ok(ThriftSink { name: name.into(), config, tls, counters, connection: None, seqid: 0 })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.config.hostname, self.config.port)
    }

    /// Opens the connection (and its TLS session), within `connect_timeout`.
    async fn connect(&self) -> Result<Box<dyn Connection>, SinkError> {
        let address = self.address();
        let io = |what: &str| SinkError::io(format!("{what} {address}"));
        let connecting = async {
            let stream = TcpStream::connect(address.as_str()).await.map_err(io("connect to"))?;
            let _ = stream.set_nodelay(true);
            Ok::<_, SinkError>(match &self.tls {
                None => Box::new(stream) as Box<dyn Connection>,
                Some((connector, name)) => {
                    Box::new(connector.connect(name.clone(), stream).await.map_err(io("TLS handshake with"))?)
                }
            })
        };
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(connected) => connected,
            Err(_) => Err(SinkError::Other(format!(
                "connect to {address}: not connected within {} (connect_timeout)",
                humantime::format_duration(self.config.connect_timeout)
            ))),
        }
    }

    /// Sends one call and reads its answer on the open connection. An error comes with whether
    /// the server closed the connection (an I/O error or the end of the input before any answer).
    async fn call(&mut self, events: &[Event]) -> Result<Status, (SinkError, bool)> {
        self.seqid = self.seqid.wrapping_add(1);
        let seqid = self.seqid;
        let protocol = self.config.protocol;
        let message = encode_call(protocol, Method::AppendBatch, seqid, events);
        let address = self.address();
        let timeout = self.config.request_timeout;
        let conn = self.connection.as_mut().expect("connected before a call");
        let exchange = async {
            write_frame(conn, &message).await?;
            match read_frame(conn, MAX_REPLY_BYTES).await? {
                Some(frame) => decode_reply(protocol, frame, Method::AppendBatch.name(), seqid),
                None => Err(ThriftError::Truncated { expected: 4, got: 0 }),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => {
                let closed = matches!(e, ThriftError::Io { .. } | ThriftError::Truncated { got: 0, .. });
                Err((SinkError::Other(format!("appendBatch to {address}: {e}")), closed))
            }
            Err(_) => Err((
                SinkError::Other(format!(
                    "appendBatch to {address}: no answer within {} (request_timeout)",
                    humantime::format_duration(timeout)
                )),
                false,
            )),
        }
    }

    /// Opens the connection if none is open; answers whether it was opened now.
    async fn ensure_connected(&mut self) -> Result<bool, SinkError> {
        if self.connection.is_some() {
            return Ok(false);
        }
        match self.connect().await {
            Ok(conn) => {
                self.connection = Some(conn);
                self.counters.connection_created.inc();
                tracing::debug!(sink = %self.name, address = %self.address(), "connected");
                Ok(true)
            }
            Err(e) => {
                self.counters.connection_failed.inc();
                Err(e)
            }
        }
    }

    fn drop_connection(&mut self) {
        if self.connection.take().is_some() {
            self.counters.connection_closed.inc();
        }
    }
}

impl Sink for ThriftSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut fresh = self.ensure_connected().await?;
            let failed = loop {
                match self.call(events).await {
                    Ok(Status::Ok) => return Ok(()),
                    Ok(status) => {
                        break SinkError::Other(format!(
                            "{} answered {status:?} to appendBatch of {} events",
                            self.address(),
                            events.len()
                        ))
                    }
                    // A connection kept open since an earlier batch that the server closed in
                    // the meantime (its idle timeout, a restart): once, at once, on a new one.
                    Err((e, true)) if !fresh => {
                        tracing::debug!(sink = %self.name, error = %e, "the kept connection was closed by the server; reconnecting");
                        self.drop_connection();
                        fresh = self.ensure_connected().await?;
                    }
                    Err((e, _)) => break e,
                }
            };
            // A failed call leaves the connection in an unknown state (an answer may still come):
            // the next batch goes on a new one.
            self.counters.connection_failed.inc();
            self.drop_connection();
            Err(failed)
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.drop_connection();
            Ok(())
        })
    }
}

impl Drop for ThriftSink {
    fn drop(&mut self) {
        self.drop_connection();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ThriftSinkConfig {
        ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
            .from_str(text)
            .unwrap()
    }

    #[test]
    fn defaults_are_flumes_and_bad_options_are_named() {
        let c = parse(r#"(hostname: "collector", port: 4141)"#);
        assert_eq!(c.protocol, Protocol::Compact);
        assert_eq!((c.connect_timeout, c.request_timeout), (Duration::from_secs(20), Duration::from_secs(20)));
        assert!(c.tls.is_none() && c.validate().is_empty());
        assert_eq!(c.output(), "thrift://collector:4141 (Compact)");
        let c = parse(r#"(hostname: " ", port: 0, request_timeout: "0s")"#);
        let problems = c.validate().join("; ");
        for word in ["hostname", "port", "request_timeout"] {
            assert!(problems.contains(word), "{problems}");
        }
    }
}
