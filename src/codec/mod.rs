//! Wire formats of events, shared by the sources that read them and the sinks that write them.
//!
//! [`Format`]: how an HTTP request body (and a file of exported events) holds its events, read by
//! the `Http` source and written by the `Http` sink. [`avro`]: Flume's Avro RPC (the `Avro` source
//! and sink). [`thrift`]: Flume's Thrift RPC (the `Thrift` source and sink). [`events`]: flumen's
//! binary event codec (the `Events` format, and a `RocksDb` channel's values). [`text`]: a body in
//! JSON text (the NDJSON of `flumen tap` and of the channel tools).
//!
//! `FlumeJson` is Flume's `JSONHandler` format; `Ndjson` the same objects one per line; `Lines`
//! bare bodies; `Events` flumen's binary codec ([`Event::encode`]).

pub mod avro;
pub mod events;
pub mod text;
pub mod thrift;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Headers};

/// The answer header of the `Http` hop saying how many leading events of the request body were
/// committed (`X-Flumen-Committed: 19000`): all of them with `200`, the ones before the failed
/// batch with `503` and `500`. The `Http` source writes it; a client (the `Http` sink) resends the
/// events from that index on.
pub const COMMITTED: &str = "x-flumen-committed";

/// The count an answer's [`COMMITTED`] header gives, if it has a valid one.
pub fn committed_of(headers: &reqwest::header::HeaderMap) -> Option<usize> {
    headers.get(COMMITTED)?.to_str().ok()?.trim().parse().ok()
}

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
        self.decoder(body).collect()
    }

    /// The events of a request body one at a time, decoded as they are asked for: a reader that
    /// puts them in batches holds one batch of decoded events, not the whole body's (an empty
    /// line is one `Lines` event, so 10 MiB of them are ten million events).
    ///
    /// Yields the events in body order, then ends; after a [`MalformedBody`] it ends. `Lines`
    /// bodies and `Events` bodies are zero-copy slices of `body`.
    pub fn decoder(self, body: Bytes) -> Decoder {
        Decoder { format: self, body, pos: 0, index: 0, line: 0, state: DecodeState::Start }
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

/// Where a [`Decoder`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Before the first event (for `FlumeJson`: before the opening `[`).
    Start,
    /// Between events.
    Events,
    /// At the end, or after an error.
    Done,
}

/// The events of one body, decoded one at a time ([`Format::decoder`]).
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    body: Bytes,
    /// Byte offset of what is not decoded yet.
    pos: usize,
    /// Events decoded so far.
    index: usize,
    /// Lines read so far (`Ndjson`).
    line: usize,
    state: DecodeState,
}

impl Iterator for Decoder {
    type Item = Result<Event, MalformedBody>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.state == DecodeState::Done {
            return None;
        }
        let next = match self.format {
            Format::FlumeJson => self.next_json(),
            Format::Ndjson => self.next_ndjson(),
            Format::Lines => self.next_line(),
            Format::Events => self.next_event(),
        };
        match &next {
            Some(Ok(_)) => self.index += 1,
            Some(Err(_)) | None => self.state = DecodeState::Done,
        }
        next
    }
}

impl Decoder {
    fn skip_whitespace(&mut self) {
        while self.body.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    /// `(line, column)` of byte `pos` of the body, both from 1 (as serde_json counts them).
    fn line_column(&self, pos: usize) -> (usize, usize) {
        let before = &self.body[..pos.min(self.body.len())];
        let line = memchr::memchr_iter(b'\n', before).count() + 1;
        let column = before.len() - memchr::memrchr(b'\n', before).map_or(0, |i| i + 1) + 1;
        (line, column)
    }

    /// A JSON array of event objects, one element at a time (each parsed by serde_json from
    /// where the previous one ended).
    fn next_json(&mut self) -> Option<Result<Event, MalformedBody>> {
        let fail = |d: &Self, what: &str, at: usize| {
            let (line, column) = d.line_column(at);
            Some(Err(MalformedBody(format!("JSON: {what} at line {line} column {column}"))))
        };
        self.skip_whitespace();
        if self.state == DecodeState::Start {
            match self.body.get(self.pos) {
                Some(b'[') => self.pos += 1,
                Some(_) => return fail(self, "expected an array of events", self.pos),
                None => return fail(self, "EOF while parsing a value", self.pos),
            }
            self.state = DecodeState::Events;
            self.skip_whitespace();
            if self.body.get(self.pos) == Some(&b']') {
                self.pos += 1;
                return self.json_end();
            }
        } else {
            match self.body.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return self.json_end();
                }
                Some(_) => return fail(self, "expected `,` or `]`", self.pos),
                None => return fail(self, "EOF while parsing a list", self.pos),
            }
        }
        let start = self.pos;
        let mut stream = serde_json::Deserializer::from_slice(&self.body[start..]).into_iter::<JsonEvent>();
        match stream.next() {
            Some(Ok(event)) => {
                self.pos = start + stream.byte_offset();
                Some(Ok(event.into_event()))
            }
            Some(Err(e)) => {
                // serde_json counts from the element's start; say where in the body.
                let (line, column) = self.line_column(start);
                let (line, column) = if e.line() <= 1 {
                    (line, column + e.column().saturating_sub(1))
                } else {
                    (line + e.line() - 1, e.column())
                };
                let what = e.to_string();
                let what = what.rsplit_once(" at line ").map_or(what.as_str(), |(w, _)| w).to_string();
                Some(Err(MalformedBody(format!("JSON: {what} at line {line} column {column}"))))
            }
            None => fail(self, "EOF while parsing a list", self.body.len()),
        }
    }

    /// After the closing `]`: only whitespace may follow.
    fn json_end(&mut self) -> Option<Result<Event, MalformedBody>> {
        self.skip_whitespace();
        if self.pos < self.body.len() {
            let (line, column) = self.line_column(self.pos);
            return Some(Err(MalformedBody(format!("JSON: trailing characters at line {line} column {column}"))));
        }
        None
    }

    fn next_ndjson(&mut self) -> Option<Result<Event, MalformedBody>> {
        while self.pos < self.body.len() {
            let end = memchr::memchr(b'\n', &self.body[self.pos..]).map_or(self.body.len(), |i| self.pos + i);
            let line = &self.body[self.pos..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            self.pos = end + 1;
            self.line += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(match serde_json::from_slice::<JsonEvent>(line) {
                Ok(event) => Ok(event.into_event()),
                Err(e) => Err(MalformedBody(format!("NDJSON line {}: {e}", self.line))),
            });
        }
        None
    }

    fn next_line(&mut self) -> Option<Result<Event, MalformedBody>> {
        if self.pos >= self.body.len() {
            return None;
        }
        let start = self.pos;
        let end = memchr::memchr(b'\n', &self.body[start..]).map_or(self.body.len(), |i| start + i);
        let line_end = if end > start && self.body[end - 1] == b'\r' { end - 1 } else { end };
        self.pos = end + 1;
        Some(Ok(Event::new(self.body.slice(start..line_end))))
    }

    fn next_event(&mut self) -> Option<Result<Event, MalformedBody>> {
        if self.pos >= self.body.len() {
            return None;
        }
        let mut rest = self.body.slice(self.pos..);
        let before = rest.len();
        match Event::decode(&mut rest) {
            Ok(event) => {
                self.pos += before - rest.len();
                Some(Ok(event))
            }
            Err(e) => Some(Err(MalformedBody(format!("event {} of the body: {e}", self.index)))),
        }
    }
}

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
    fn flume_json_arrays_decode_element_by_element_as_a_whole_parse_would() {
        let two = format!(
            r#" [ {{"body": "{APACHE}"}} ,
 {{"headers": {{"host": "web-1"}}}} ] "#
        );
        let events = Format::FlumeJson.decode(two.into()).unwrap();
        assert_eq!(events, vec![Event::new(APACHE), Event::default().with_header("host", "web-1")]);
        assert_eq!(Format::FlumeJson.decode(" [ ] ".into()).unwrap(), vec![]);
        for (bad, says) in [
            ("", "EOF while parsing a value at line 1 column 1"),
            ("{}", "expected an array of events at line 1 column 1"),
            ("[{},]", "expected value at line 1 column 5"),
            ("[{}] x", "trailing characters at line 1 column 6"),
            ("[{} {}]", "expected `,` or `]` at line 1 column 5"),
            ("[{}", "EOF while parsing a list at line 1 column 4"),
            ("[\n{},\n 7]", "invalid type: integer `7`, expected struct JsonEvent at line 3 column 2"),
        ] {
            let e = Format::FlumeJson.decode(bad.into()).unwrap_err();
            assert_eq!(e.0, format!("JSON: {says}"), "{bad:?}");
        }
    }

    #[test]
    fn the_decoder_yields_events_one_at_a_time() {
        // Ten million empty lines: taking the first three decodes three.
        let body = Bytes::from(vec![b'\n'; 10_000_000]);
        let mut decoder = Format::Lines.decoder(body);
        let first: Vec<Event> = decoder.by_ref().take(3).map(Result::unwrap).collect();
        assert_eq!(first, vec![Event::new(""); 3]);
        assert_eq!(decoder.count(), 9_999_997);
        // After an error it ends.
        let mut decoder = Format::Ndjson.decoder("{}\nnot json\n{}\n".into());
        assert!(decoder.next().unwrap().is_ok());
        assert!(decoder.next().unwrap().unwrap_err().0.starts_with("NDJSON line 2"));
        assert!(decoder.next().is_none());
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
