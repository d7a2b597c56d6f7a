//! `SyslogTcp` and `SyslogUdp`: syslog messages (RFC 5424 or RFC 3164) as events, as Flume's
//! `syslogtcp` and `syslogudp` sources.
//!
//! Each message becomes one event whose body is the message's MSG part and whose headers are its
//! header fields (see [`parse`]). A message that does not parse is kept whole as the body, flagged
//! `syslog_invalid: "true"` and counted in `EventMalformedCount`; a message over
//! `max_message_length` is cut, flagged `truncated: "true"` and counted too. Nothing is dropped.
//! One LF (or CRLF) that ends a message is not part of the body (syslog-ng puts one at the end of
//! every octet-counted message).
//! Syslog has no acknowledgements: TCP messages are read while earlier batches are put, and UDP
//! datagrams that arrive while the channel is full wait in the socket's buffer (and are lost by the
//! kernel when it overflows, as with any UDP receiver).

pub mod frame;
pub mod parse;
pub mod tcp;
pub mod udp;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::Event;
use crate::source::lines::Line;
use crate::source::SourceContext;

/// The default `max_message_length` in bytes (Flume's syslog `eventSize`).
pub const DEFAULT_MAX_MESSAGE_LENGTH: usize = 2500;

pub(crate) fn default_max_message_length() -> usize {
    DEFAULT_MAX_MESSAGE_LENGTH
}

/// Turns framed messages into events; flags and counts cut and unparsable ones. With
/// `keep_fields` the body is the whole message as received (Flume's `keepFields = all`), else its
/// MSG part.
pub fn to_events(messages: Vec<Line>, keep_fields: bool, ctx: &SourceContext) -> Vec<Event> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (mut invalid, mut cut) = (0, 0);
    let events = messages
        .into_iter()
        .map(|m| {
            let whole = m.body.clone();
            let (mut event, parsed) = parse::to_event(m.body, now_ms);
            if keep_fields {
                event.body = whole;
            } else {
                event.body = without_line_end(event.body);
            }
            if m.truncated {
                cut += 1;
                event.headers.insert("truncated".into(), "true".into());
            }
            if !parsed {
                invalid += 1;
            }
            if m.truncated || !parsed {
                ctx.counters.malformed.inc();
            }
            event
        })
        .collect();
    if invalid > 0 || cut > 0 {
        tracing::warn!(source = %ctx.name, invalid, cut, "kept syslog messages that did not parse or were cut");
    }
    events
}

/// MSG without one final LF or CRLF: syslog-ng ends every octet-counted message (RFC 5425) with
/// one inside the count, which is framing, not text of the message.
fn without_line_end(mut msg: bytes::Bytes) -> bytes::Bytes {
    if msg.ends_with(b"\n") {
        msg.truncate(msg.len() - 1);
        if msg.ends_with(b"\r") {
            msg.truncate(msg.len() - 1);
        }
    }
    msg
}

/// Problems with a `bind` address and a positive length option.
pub(crate) fn check(bind: &str, length_name: &str, length: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(why) = crate::config::check_address(bind) {
        problems.push(format!("bind address {bind:?} is not host:port (e.g. \"0.0.0.0:5140\"): {why}"));
    }
    if length == 0 {
        problems.push(format!("{length_name} must be positive"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::tcp::SyslogTcpConfig;
    use super::udp::SyslogUdpConfig;
    use crate::source::netcat_udp::NetcatUdpConfig;
    use crate::source::SourceKind;

    fn parse(ron_text: &str) -> Result<SourceKind, ron::error::SpannedError> {
        ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
            .from_str(ron_text)
    }

    fn kind(ron_text: &str) -> SourceKind {
        parse(ron_text).unwrap_or_else(|e| panic!("{ron_text}: {e}"))
    }

    #[test]
    fn options_default_as_documented() {
        let tcp = kind(r#"SyslogTcp(bind: "0.0.0.0:5140")"#);
        assert_eq!(
            tcp,
            SourceKind::SyslogTcp(SyslogTcpConfig {
                bind: "0.0.0.0:5140".into(),
                max_message_length: 2500,
                keep_fields: false,
                tls: None,
                max_connections: 1024,
                idle_timeout: std::time::Duration::from_secs(300),
                max_in_flight_bytes: 4 << 20,
            })
        );
        let udp = kind(r#"SyslogUdp(bind: "0.0.0.0:5140")"#);
        assert_eq!(
            udp,
            SourceKind::SyslogUdp(SyslogUdpConfig {
                bind: "0.0.0.0:5140".into(),
                max_message_length: 2500,
                keep_fields: false,
                receive_buffer_bytes: None
            })
        );
        let netcat = kind(r#"NetcatUdp(bind: "127.0.0.1:44445")"#);
        assert_eq!(
            netcat,
            SourceKind::NetcatUdp(NetcatUdpConfig {
                bind: "127.0.0.1:44445".into(),
                max_line_length: 65_507,
                receive_buffer_bytes: None
            })
        );
        for k in [tcp, udp, netcat] {
            assert!(k.validate().is_empty(), "{k:?}");
            assert!(!k.is_finite(), "{k:?} never ends");
        }
    }

    #[test]
    fn the_tls_option_is_written_as_in_topologies() {
        let SourceKind::SyslogTcp(tcp) =
            kind(r#"SyslogTcp(bind: "127.0.0.1:6514", tls: Some(TlsServer(cert: "s.pem", key: "s.key")))"#)
        else {
            panic!("not SyslogTcp")
        };
        let tls = tcp.tls.as_ref().expect("tls is set");
        assert_eq!((tls.cert.to_str(), tls.client_ca.as_ref()), (Some("s.pem"), None));
        let problems = tcp.validate();
        assert!(problems.len() == 1 && problems[0].starts_with("tls cert: cannot read s.pem"), "{problems:?}");
    }

    #[test]
    fn bad_options_are_reported() {
        let problems =
            kind(r#"SyslogUdp(bind: "nowhere", max_message_length: 70000, receive_buffer_bytes: Some(0))"#).validate();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(kind(r#"SyslogTcp(bind: "127.0.0.1:5140", max_message_length: 0)"#).validate().len(), 1);
        let limits = kind(r#"SyslogTcp(bind: "127.0.0.1:5140", max_connections: 0, idle_timeout: "0s")"#).validate();
        assert_eq!(limits, ["max_connections must be positive", "idle_timeout must be positive"]);
        assert_eq!(kind(r#"NetcatUdp(bind: "127.0.0.1:99999")"#).validate().len(), 1);
        assert!(parse(r#"SyslogTcp(bind: "127.0.0.1:5140", port: 5140)"#).is_err());
    }
}
