//! Wire formats of event batches: how an HTTP request body (and a file of exported events) holds
//! its events. The `Http` source reads them, the `Http` sink writes them.
//!
//! `FlumeJson` is Flume's `JSONHandler` format; `Ndjson` the same objects one per line; `Lines`
//! bare bodies; `Events` flumen's binary codec ([`Event::encode`]).

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Headers};

/// How a request body holds its events (the `Http` source reads, the `Http` sink writes them).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: a JSON array of `{"headers": {"k": "v"}, "body": "text"}` objects, as
    /// Flume's `JSONHandler` (both fields optional; the body is text, UTF-8).
    #[default]
    FlumeJson,
    /// `application/x-ndjson`: one such JSON object per line (empty lines are skipped).
    Ndjson,
    /// `text/plain`: one event per line, without its line ending (LF, or CRLF); no headers.
    Lines,
    /// `application/x-flumen-events`: events in flumen's binary codec
    /// ([`Event::encode`]), one after the other; headers and bodies of any bytes travel intact.
    Events,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::FlumeJson => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Lines => "text/plain; charset=utf-8",
            Format::Events => "application/x-flumen-events",
        }
    }

    /// The format a `Content-Type` names (parameters such as `charset` are ignored), if any.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Format::FlumeJson),
            "application/x-ndjson" | "application/jsonl" => Some(Format::Ndjson),
            "text/plain" => Some(Format::Lines),
            "application/x-flumen-events" => Some(Format::Events),
            _ => None,
        }
    }

    /// Reads the events of a request body.
    ///
    /// # Errors
    /// [`MalformedBody`] saying where the body is wrong (JSON line and column, NDJSON line, or
    /// the codec's error with the event's index).
    pub fn decode(self, body: Bytes) -> Result<Vec<Event>, MalformedBody> {
        match self {
            Format::FlumeJson => {
                let events: Vec<JsonEvent> =
                    serde_json::from_slice(&body).map_err(|e| MalformedBody(format!("JSON: {e}")))?;
                Ok(events.into_iter().map(JsonEvent::into_event).collect())
            }
            Format::Ndjson => {
                let mut events = Vec::new();
                for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let event: JsonEvent = serde_json::from_slice(line)
                        .map_err(|e| MalformedBody(format!("NDJSON line {}: {e}", i + 1)))?;
                    events.push(event.into_event());
                }
                Ok(events)
            }
            Format::Lines => {
                let mut events = Vec::new();
                let mut start = 0;
                while start < body.len() {
                    let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
                    let line_end = if end > start && body[end - 1] == b'\r' { end - 1 } else { end };
                    events.push(Event::new(body.slice(start..line_end)));
                    start = end + 1;
                }
                Ok(events)
            }
            Format::Events => {
                let mut rest = body;
                let mut events = Vec::new();
                while !rest.is_empty() {
                    let event = Event::decode(&mut rest)
                        .map_err(|e| MalformedBody(format!("event {} of the body: {e}", events.len())))?;
                    events.push(event);
                }
                Ok(events)
            }
        }
    }

    /// Writes `events` as a request body of this format.
    ///
    /// JSON formats carry bodies as text: a body that is not UTF-8 has its invalid bytes replaced
    /// by U+FFFD (use `Events` to carry any bytes). `Lines` carries the bodies only.
    pub fn encode(self, events: &[Event]) -> Bytes {
        match self {
            Format::FlumeJson => {
                let json: Vec<JsonEventRef<'_>> = events.iter().map(JsonEventRef::of).collect();
                serde_json::to_vec(&json).expect("string maps and strings always serialize").into()
            }
            Format::Ndjson => {
                let mut out = Vec::with_capacity(events.iter().map(|e| e.body.len() + 32).sum());
                for e in events {
                    serde_json::to_writer(&mut out, &JsonEventRef::of(e)).expect("writing to a Vec never fails");
                    out.push(b'\n');
                }
                out.into()
            }
            Format::Lines => {
                let mut out = BytesMut::with_capacity(events.iter().map(|e| e.body.len() + 1).sum());
                for e in events {
                    out.extend_from_slice(&e.body);
                    out.extend_from_slice(b"\n");
                }
                out.freeze()
            }
            Format::Events => {
                let mut out = BytesMut::with_capacity(events.iter().map(Event::encoded_len).sum());
                for e in events {
                    e.encode(&mut out);
                }
                out.freeze()
            }
        }
    }
}

/// What is wrong with a request body, in words (answered with `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed body: {0}")]
pub struct MalformedBody(pub String);

/// One event of Flume's JSON format.
#[derive(Deserialize)]
struct JsonEvent {
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: String,
}

impl JsonEvent {
    fn into_event(self) -> Event {
        Event { headers: self.headers, body: Bytes::from(self.body) }
    }
}

#[derive(Serialize)]
struct JsonEventRef<'a> {
    headers: &'a Headers,
    body: std::borrow::Cow<'a, str>,
}

impl<'a> JsonEventRef<'a> {
    fn of(e: &'a Event) -> Self {
        JsonEventRef { headers: &e.headers, body: String::from_utf8_lossy(&e.body) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APACHE: &str = "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok /etc/httpd/conf/workers2.properties";
    const SSH: &str = "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!";

    fn batch() -> Vec<Event> {
        vec![Event::new(APACHE).with_header("host", "web-1").with_header("level", "notice"), Event::new(SSH)]
    }

    #[test]
    fn every_format_round_trips_headers_and_text_bodies() {
        for format in [Format::FlumeJson, Format::Ndjson, Format::Events] {
            assert_eq!(format.decode(format.encode(&batch())).unwrap(), batch(), "{format:?}");
        }
        let bodies: Vec<Event> = batch().into_iter().map(|e| Event::new(e.body)).collect();
        assert_eq!(Format::Lines.decode(Format::Lines.encode(&batch())).unwrap(), bodies);
    }

    #[test]
    fn flume_json_reads_flume_handler_bodies() {
        let body = format!(r#"[{{"headers": {{"host": "web-1"}}, "body": "{APACHE}"}}, {{"body": "{SSH}"}}]"#);
        let events = Format::FlumeJson.decode(body.into()).unwrap();
        assert_eq!(events, vec![Event::new(APACHE).with_header("host", "web-1"), Event::new(SSH)]);
    }

    #[test]
    fn lines_drop_line_endings_and_keep_an_unterminated_last_line() {
        let events = Format::Lines.decode(format!("{APACHE}\r\n\n{SSH}").into()).unwrap();
        assert_eq!(events, vec![Event::new(APACHE), Event::new(""), Event::new(SSH)]);
    }

    #[test]
    fn malformed_bodies_say_where() {
        let e = Format::FlumeJson.decode(format!(r#"[{{"body": "{APACHE}"}}"#).into()).unwrap_err();
        assert!(e.0.contains("line 1"), "{e}");
        let e = Format::Ndjson.decode(format!("{{\"body\": \"{SSH}\"}}\n{{\"body\": 7}}\n").into()).unwrap_err();
        assert!(e.0.starts_with("NDJSON line 2"), "{e}");
        let mut events = Format::Events.encode(&batch()).to_vec();
        events.truncate(events.len() - 3);
        let e = Format::Events.decode(events.into()).unwrap_err();
        assert!(e.0.starts_with("event 1 of the body"), "{e}");
    }

    #[test]
    fn content_types_pick_formats() {
        assert_eq!(Format::from_content_type("application/json; charset=UTF-8"), Some(Format::FlumeJson));
        assert_eq!(Format::from_content_type("Text/Plain"), Some(Format::Lines));
        assert_eq!(Format::from_content_type("application/x-ndjson"), Some(Format::Ndjson));
        assert_eq!(Format::from_content_type("application/x-flumen-events"), Some(Format::Events));
        assert_eq!(Format::from_content_type("application/x-www-form-urlencoded"), None);
    }
}
