//! `SyslogTcp`: syslog messages on TCP connections, framed by octet counting or by LF (RFC 6587),
//! as Flume's `syslogtcp` source.

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::frame::SyslogFrames;
use crate::event::Event;
use crate::source::lines::{read_batch, ReadEnd};
use crate::source::netcat::{accept, commit_in_order};
use crate::source::{SourceContext, SourceError};

/// `SyslogTcp(bind: "0.0.0.0:5140", max_message_length: 2500, keep_fields: false)`.
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
}

impl SyslogTcpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        super::check(&self.bind, "max_message_length", self.max_message_length)
    }
}

/// Accepts connections until the agent stops; each connection is read on its own task.
///
/// # Errors
/// When the address cannot be bound or accepting fails.
pub async fn run(config: SyslogTcpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let bind = config.bind.clone();
    accept(&bind, &ctx, "listening for syslog over TCP", move |stream, ctx| {
        let config = config.clone();
        async move { connection(stream, &config, &ctx).await }
    })
    .await
}

/// Reads one connection: batches of messages, put (up to [`PIPELINE`](crate::source::netcat::PIPELINE) at once, in order) while the
/// next ones are read. Nothing is written back: syslog over TCP has no acknowledgements.
async fn connection(stream: TcpStream, config: &SyslogTcpConfig, ctx: &SourceContext) -> Result<(), SourceError> {
    let _ = stream.set_nodelay(true);
    let (mut reader, _writer) = stream.into_split();
    let (batches, to_put) = mpsc::channel::<Vec<Event>>(1);
    let reading = async move {
        let mut frames = SyslogFrames::new(config.max_message_length);
        loop {
            let (messages, end) = read_batch(&mut frames, &mut reader, ctx.batch_size, ctx.linger, ctx)
                .await
                .map_err(SourceError::io("read from connection"))?;
            if !messages.is_empty() && batches.send(super::to_events(messages, config.keep_fields, ctx)).await.is_err()
            {
                // The putting side stopped on a failed put; it reports the error.
                return Ok(());
            }
            // Once the agent stops, read no more (as Netcat): the puts in flight finish first.
            if end != ReadEnd::More || ctx.is_stopping() {
                return Ok(());
            }
        }
    };
    let putting = commit_in_order(to_put, None, ctx);
    let (read, put) = futures_util::join!(reading, putting);
    put.and(read)
}
