//! `SyslogTcp`: syslog messages on TCP connections, framed by octet counting or by LF (RFC 6587),
//! as Flume's `syslogtcp` source.

use serde::Deserialize;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use super::frame::SyslogFrames;
use crate::event::Event;
use crate::source::conn_limits::{ConnectionLimits, Held};
use crate::source::lines::{read_batch, ReadEnd, Unanswered};
use crate::source::netcat::{accept, commit_in_order, tls_endpoint, with_subject};
use crate::source::{SourceContext, SourceError};
use crate::tls::TlsServerConfig;

/// `SyslogTcp(bind: "0.0.0.0:5140", max_message_length: 2500, keep_fields: false,
/// max_connections: 1024, idle_timeout: "5m")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogTcpConfig {
    /// `host:port` to listen on (Flume's `host` and `port`).
    pub bind: String,
    /// Longest message in bytes (after the octet count, without the LF); longer ones are cut to it,
    /// flagged `truncated: "true"` and counted in `EventMalformedCount` (Flume's `eventSize`).
    /// Default 2500.
    #[serde(default = "super::default_max_message_length")]
    pub max_message_length: usize,
    /// Make the body the whole message, header fields included, instead of its MSG part (Flume's
    /// `keepFields = all`); the headers are set either way. Default `false`.
    #[serde(default)]
    pub keep_fields: bool,
    /// Accept TLS connections only (RFC 5425: octet-counted messages over TLS), with this
    /// certificate (and with `client_ca`, mutual TLS); see [`TlsServerConfig`]. Default `None`
    /// (plain TCP).
    #[serde(default, deserialize_with = "crate::tls::server_option")]
    pub tls: Option<TlsServerConfig>,
    /// Most connections open at once; further ones are accepted and closed at once, and counted
    /// in `ConnectionRefusedCount`. Default 1024.
    #[serde(default = "crate::source::conn_limits::default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (counted in
    /// `ConnectionIdleClosedCount`). Default `"5m"`.
    #[serde(default = "crate::source::conn_limits::default_idle_timeout", with = "crate::config::duration")]
    pub idle_timeout: std::time::Duration,
    /// Most bytes read from all connections together whose puts have not answered yet; at it,
    /// connections stop reading until puts commit (see
    /// [`ReadBudget`](crate::source::conn_limits::ReadBudget)). Default 4 MiB (4,194,304).
    #[serde(default = "crate::source::conn_limits::default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
}

impl SyslogTcpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = super::check(&self.bind, "max_message_length", self.max_message_length);
        problems.extend(self.tls.iter().flat_map(TlsServerConfig::validate));
        problems.extend(crate::source::conn_limits::check(
            self.max_connections,
            self.idle_timeout,
            self.max_in_flight_bytes,
        ));
        problems
    }
}

/// Accepts connections until the agent stops; each connection is read on its own task.
///
/// # Errors
/// When the address cannot be bound or accepting fails.
pub async fn run(config: SyslogTcpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let bind = config.bind.clone();
    let tls = tls_endpoint(config.tls.as_ref(), &ctx)?;
    let what = if tls.is_some() { "listening for syslog over TLS (RFC 5425)" } else { "listening for syslog over TCP" };
    let limits = ConnectionLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        max_in_flight_bytes: config.max_in_flight_bytes,
    };
    accept(&bind, &ctx, limits, what, move |stream, ctx| {
        let (config, tls) = (config.clone(), tls.clone());
        async move {
            let _ = stream.set_nodelay(true);
            match tls {
                // Read from the whole stream: syslog writes nothing back (and the writing half
                // stays open for the connection's life).
                None => connection(stream, None, &config, &ctx).await,
                Some(tls) => match tls.handshake(stream).await {
                    Some((stream, subject)) => connection(stream, subject.as_ref(), &config, &ctx).await,
                    None => Ok(()),
                },
            }
        }
    })
    .await
}

/// Reads one connection: batches of messages, put (up to [`PIPELINE`](crate::source::netcat::PIPELINE) at once, in order) while the
/// next ones are read; each event gets the `subject` header, if any. Nothing is written back:
/// syslog over TCP has no acknowledgements.
async fn connection<R: AsyncRead + Unpin>(
    mut reader: R,
    subject: Option<&(String, String)>,
    config: &SyslogTcpConfig,
    ctx: &SourceContext,
) -> Result<(), SourceError> {
    let (batches, to_put) = mpsc::channel::<(Vec<Event>, Held)>(1);
    let unanswered = &Unanswered::default();
    let reading = async move {
        let mut frames = SyslogFrames::new(config.max_message_length);
        loop {
            let mut held = Held::new(ctx.read_budget.clone());
            let (messages, end) = read_batch(&mut frames, &mut reader, ctx.batch_size, unanswered, &mut held, ctx)
                .await
                .map_err(SourceError::io("read from connection"))?;
            if !messages.is_empty() {
                unanswered.handed_on();
                let events = with_subject(super::to_events(messages, config.keep_fields, ctx), subject);
                if batches.send((events, held)).await.is_err() {
                    // The putting side stopped on a failed put; it reports the error.
                    return Ok(());
                }
            }
            // Once the agent stops, read no more (as Netcat): the puts in flight finish first.
            if end != ReadEnd::More || ctx.is_stopping() {
                return Ok(());
            }
        }
    };
    let putting = commit_in_order(to_put, None::<tokio::io::Sink>, unanswered, ctx);
    let (read, put) = futures_util::join!(reading, putting);
    put.and(read)
}
