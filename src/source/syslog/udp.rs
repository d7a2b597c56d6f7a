//! `SyslogUdp`: one syslog message per UDP datagram (RFC 5426), as Flume's `syslogudp` source.

use serde::Deserialize;

use crate::source::{datagram, SourceContext, SourceError};

/// `SyslogUdp(bind: "0.0.0.0:5140", max_message_length: 2500)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogUdpConfig {
    /// `host:port` to receive datagrams on (Flume's `host` and `port`).
    pub bind: String,
    /// Longest message in bytes (a trailing LF or CRLF of the datagram not counted); longer ones
    /// are cut to it, flagged `truncated: "true"` and counted in `EventMalformedCount`. At most
    /// 65507 (the largest UDP payload). Default 2500.
    #[serde(default = "super::default_max_message_length")]
    pub max_message_length: usize,
}

impl SyslogUdpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        super::check(&self.bind, "max_message_length", self.max_message_length)
    }
}

/// Receives syslog datagrams until the agent stops.
///
/// # Errors
/// When the address cannot be bound, receiving fails, or a put fails for good.
pub async fn run(config: SyslogUdpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    datagram::run(&config.bind, config.max_message_length, ctx, super::to_events).await
}
