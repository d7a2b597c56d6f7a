//! `Netcat`: one event per line received on TCP connections, as Flume's netcat source.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::lines::{read_batch, to_events, LineBuffer, ReadEnd};
use super::{SourceContext, SourceError};

/// `Netcat(bind: "127.0.0.1:44444", max_line_length: 512, ack_every_event: true)`.
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
        if let Err(why) = crate::topology::check_address(&self.bind) {
            problems.push(format!("bind address {:?} is not host:port (e.g. \"127.0.0.1:44444\"): {why}", self.bind));
        }
        if self.max_line_length == 0 {
            problems.push("max_line_length must be positive".into());
        }
        problems
    }
}

/// Accepts connections until the agent stops; each connection is read on its own task.
///
/// # Errors
/// When the address cannot be bound or accepting fails.
pub async fn run(config: NetcatConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let listener = TcpListener::bind(&config.bind).await.map_err(SourceError::io(format!("bind {}", config.bind)))?;
    tracing::info!(source = %ctx.name, bind = %config.bind, "listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted.map_err(SourceError::io(format!("accept on {}", config.bind)))?;
                let (config, ctx) = (config.clone(), ctx.clone());
                actix_rt::spawn(async move {
                    if let Err(e) = connection(stream, &config, &ctx).await {
                        tracing::warn!(source = %ctx.name, %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = ctx.stopping() => return Ok(()),
        }
    }
}

/// Reads one connection: batches of lines, put, then (optionally) one `OK` per event.
async fn connection(stream: TcpStream, config: &NetcatConfig, ctx: &SourceContext) -> Result<(), SourceError> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut lb = LineBuffer::new(config.max_line_length);
    let mut acks = Vec::new();
    loop {
        let (lines, end) = read_batch(&mut lb, &mut reader, ctx.batch_size, ctx.linger, ctx)
            .await
            .map_err(SourceError::io("read from connection"))?;
        let n = lines.len();
        if n > 0 {
            ctx.put(to_events(lines, ctx)).await?;
            if config.ack_every_event {
                acks.clear();
                acks.extend(std::iter::repeat_n(*b"OK\n", n).flatten());
                writer.write_all(&acks).await.map_err(SourceError::io("write acknowledgements"))?;
            }
        }
        if end != ReadEnd::More {
            let _ = writer.shutdown().await;
            return Ok(());
        }
    }
}
