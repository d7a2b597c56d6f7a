//! `NetcatUdp`: one event per UDP datagram, as Flume's `netcatudp` source.
//!
//! The body is the datagram without one trailing LF or CRLF. See [`crate::source::datagram`] for
//! batching and what UDP does under back-pressure.

use serde::Deserialize;

use super::lines::to_events;
use super::{datagram, SourceContext, SourceError};

/// `NetcatUdp(bind: "127.0.0.1:44445", max_line_length: 65507)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetcatUdpConfig {
    /// `host:port` to receive datagrams on (Flume's `bind` and `port`).
    pub bind: String,
    /// Longest body in bytes; longer datagrams are cut to it, flagged `truncated: "true"` and
    /// counted in `EventMalformedCount`. Default 65507 (the largest UDP payload: nothing is cut).
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
}

fn default_max_line_length() -> usize {
    datagram::MAX_DATAGRAM
}

impl NetcatUdpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        super::syslog::check(&self.bind, "max_line_length", self.max_line_length)
    }
}

/// Receives datagrams until the agent stops.
///
/// # Errors
/// When the address cannot be bound, receiving fails, or a put fails for good.
pub async fn run(config: NetcatUdpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    datagram::run(&config.bind, config.max_line_length, ctx, to_events).await
}
