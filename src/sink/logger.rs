//! `Logger`: logs each event through the agent's log at INFO, as Flume's logger sink.

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;

/// `Logger(max_body_bytes: 16)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggerConfig {
    /// How many body bytes are shown (Flume's `maxBytesToLog`). Default 16.
    pub max_body_bytes: usize,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig { max_body_bytes: 16 }
    }
}

/// The logger sink.
pub struct LoggerSink {
    name: String,
    config: LoggerConfig,
}

impl LoggerSink {
    /// A logger sink named `name`.
    pub fn new(name: &str, config: LoggerConfig) -> Self {
        LoggerSink { name: name.into(), config }
    }
}

/// Shows a body the way Flume's `EventHelper.dumpEvent` does: printable text, escapes for the rest.
pub fn show_body(body: &[u8], max: usize) -> String {
    let shown = &body[..body.len().min(max)];
    let mut text: String = shown.escape_ascii().to_string();
    if body.len() > max {
        text.push_str(&format!("… ({} bytes)", body.len()));
    }
    text
}

impl Sink for LoggerSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        for e in events {
            tracing::info!(sink = %self.name, "Event: {{ headers:{:?} body: {} }}", e.headers, show_body(&e.body, self.config.max_body_bytes));
        }
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_and_escaped() {
        assert_eq!(show_body(b"Jun 14 15:16:01 combo sshd", 16), "Jun 14 15:16:01 … (26 bytes)");
        assert_eq!(show_body(b"a\tb", 16), "a\\tb");
    }
}
