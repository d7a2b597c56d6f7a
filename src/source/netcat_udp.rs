//! `NetcatUdp`: one event per UDP datagram, as Flume's `netcatudp` source.
//!
//! The body is the datagram without one trailing LF or CRLF. See [`crate::source::datagram`] for
//! batching and what UDP does under back-pressure.

use serde::Deserialize;

use super::lines::to_events;
use super::{datagram, SourceContext, SourceError};

/// `NetcatUdp(bind: "127.0.0.1:44445", max_line_length: 65507, receive_buffer_bytes: None)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetcatUdpConfig {
    /// `host:port` to receive datagrams on (Flume's `bind` and `port`).
    pub bind: String,
    /// Longest body in bytes; longer datagrams are cut to it, flagged `truncated: "true"` and
    /// counted in `EventMalformedCount`. Default 65507 (the largest UDP payload: nothing is cut).
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// The socket's receive buffer in bytes (`SO_RCVBUF`; Linux caps it at
    /// `net.core.rmem_max`): datagrams wait there while a put is slow, and the kernel drops what
    /// does not fit. Default `None`: the system's default (`net.core.rmem_default`).
    #[serde(default)]
    pub receive_buffer_bytes: Option<usize>,
}

fn default_max_line_length() -> usize {
    datagram::MAX_DATAGRAM
}

impl NetcatUdpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = super::syslog::check(&self.bind, "max_line_length", self.max_line_length);
        problems.extend(datagram::check(self.max_line_length, self.receive_buffer_bytes));
        problems
    }
}

/// Receives datagrams until the agent stops.
///
/// # Errors
/// When the address cannot be bound, receiving fails, or a put fails for good.
pub async fn run(config: NetcatUdpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    datagram::run(&config.bind, config.max_line_length, config.receive_buffer_bytes, ctx, to_events).await
}
