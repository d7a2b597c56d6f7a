//! `SyslogUdp`: one syslog message per UDP datagram (RFC 5426), as Flume's `syslogudp` source.

use serde::Deserialize;

use crate::source::{datagram, SourceContext, SourceError};

/// `SyslogUdp(bind: "0.0.0.0:5140", max_message_length: 2500, keep_fields: false, receive_buffer_bytes: None)`.
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
    /// Make the body the whole message, header fields included, instead of its MSG part (Flume's
    /// `keepFields = all`); the headers are set either way. Default `false`.
    #[serde(default)]
    pub keep_fields: bool,
    /// The socket's receive buffer in bytes (`SO_RCVBUF`; Linux caps it at
    /// `net.core.rmem_max`): datagrams wait there while a put is slow, and the kernel drops what
    /// does not fit. Default `None`: the system's default (`net.core.rmem_default`).
    #[serde(default)]
    pub receive_buffer_bytes: Option<usize>,
}

impl SyslogUdpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = super::check(&self.bind, "max_message_length", self.max_message_length);
        problems.extend(datagram::check(self.max_message_length, self.receive_buffer_bytes));
        problems
    }
}

/// Receives syslog datagrams until the agent stops.
///
/// # Errors
/// When the address cannot be bound, receiving fails, or a put fails for good.
pub async fn run(config: SyslogUdpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let keep_fields = config.keep_fields;
    let to_events = move |messages, ctx: &SourceContext| super::to_events(messages, keep_fields, ctx);
    datagram::run(&config.bind, config.max_message_length, config.receive_buffer_bytes, ctx, to_events).await
}
