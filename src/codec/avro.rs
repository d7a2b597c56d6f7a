//! Flume's Avro RPC on the wire: the `AvroSourceProtocol` of Flume's `flume.avdl` (namespace
//! `org.apache.flume.source.avro`), the Avro IPC handshake, and Netty's framing of calls
//! (serial number, buffer count, length-prefixed buffers). The `Avro` source and sink use it.
//!
//! The layers, from the socket up (the Avro specification's "Protocol Wire Format", and Avro's
//! Java `NettyTransceiver` / `NettyServer` that Flume's `avro` source and sink run on):
//!
//! - Optional compression ([`Inflater`], [`Deflater`]): Flume's `compression-type = deflate` is one
//!   zlib stream over the whole connection in each direction, flushed (`Z_SYNC_FLUSH`) after
//!   every frame (Netty's `JZlibEncoder` / `JZlibDecoder` in Flume's pipeline).
//! - Netty frames ([`read_frame`], [`encode_frame`]): a big-endian `i32` serial number, an `i32`
//!   buffer count, then each buffer as an `i32` length and its bytes. An answer carries the serial
//!   of its call. The buffers of a frame together are one Avro IPC message. [`FrameLimits`] bound
//!   what a frame may declare; every limit is checked before anything is allocated, and a frame's
//!   bytes are held only as they arrive.
//! - The handshake ([`HandshakeRequest`], [`HandshakeResponse`]): on a Netty connection it comes
//!   with the first call only; the client names its protocol by the MD5 hash of the protocol's
//!   text, and sends the text itself only after the server answered `NONE` (it did not know the
//!   hash). Clients that handshake on every call (Python's `avro.ipc`) are recognised by a message
//!   starting with the client hash of the connection ([`ServerSession`]).
//! - Calls ([`Call`], [`Response`]): call metadata (`map<bytes>`), the message name, the
//!   parameters; an answer is its metadata, an error flag, then the `Status` or the error (the
//!   union `["string"]`).
//!
//! Every datum is encoded and decoded by the `apache-avro` crate with the schemas below.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use apache_avro::types::Value;
use apache_avro::Schema;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::event::{Event, Headers};

/// Flume's `AvroSourceProtocol` as Avro protocol JSON: what `flume.avdl` compiles to.
///
/// Its MD5 hash ([`protocol_hash`]) is what this side sends as its protocol's hash in a handshake.
pub const PROTOCOL: &str = concat!(
    r#"{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro","#,
    r#""types":[{"type":"enum","name":"Status","symbols":["OK","FAILED","UNKNOWN"]},"#,
    r#"{"type":"record","name":"AvroFlumeEvent","fields":[{"name":"headers","type":{"type":"map","values":"string"}},"#,
    r#"{"name":"body","type":"bytes"}]}],"#,
    r#""messages":{"append":{"request":[{"name":"event","type":"AvroFlumeEvent"}],"response":"Status"},"#,
    r#""appendBatch":{"request":[{"name":"events","type":{"type":"array","items":"AvroFlumeEvent"}}],"response":"Status"}}}"#
);

/// The protocol's full name.
pub const PROTOCOL_NAME: &str = "org.apache.flume.source.avro.AvroSourceProtocol";

/// An MD5 hash: how the handshake names a protocol (16 bytes).
pub type Md5 = [u8; 16];

/// The MD5 hash of `text` (the Avro IPC handshake's name of a protocol: the hash of its JSON).
pub fn md5(text: &str) -> Md5 {
    use md5::Digest;
    md5::Md5::digest(text.as_bytes()).into()
}

/// The MD5 hash of [`PROTOCOL`].
pub fn protocol_hash() -> Md5 {
    static HASH: LazyLock<Md5> = LazyLock::new(|| md5(PROTOCOL));
    *HASH
}

const EVENT_SCHEMA: &str = r#"{"type":"record","name":"AvroFlumeEvent","namespace":"org.apache.flume.source.avro",
 "fields":[{"name":"headers","type":{"type":"map","values":"string"}},{"name":"body","type":"bytes"}]}"#;
const STATUS_SCHEMA: &str =
    r#"{"type":"enum","name":"Status","namespace":"org.apache.flume.source.avro","symbols":["OK","FAILED","UNKNOWN"]}"#;
const HANDSHAKE_REQUEST_SCHEMA: &str = r#"{"type":"record","name":"HandshakeRequest","namespace":"org.apache.avro.ipc",
 "fields":[{"name":"clientHash","type":{"type":"fixed","name":"MD5","size":16}},
  {"name":"clientProtocol","type":["null","string"]},{"name":"serverHash","type":"MD5"},
  {"name":"meta","type":["null",{"type":"map","values":"bytes"}]}]}"#;
const HANDSHAKE_RESPONSE_SCHEMA: &str = r#"{"type":"record","name":"HandshakeResponse","namespace":"org.apache.avro.ipc",
 "fields":[{"name":"match","type":{"type":"enum","name":"HandshakeMatch","symbols":["BOTH","CLIENT","NONE"]}},
  {"name":"serverProtocol","type":["null","string"]},
  {"name":"serverHash","type":["null",{"type":"fixed","name":"MD5","size":16}]},
  {"name":"meta","type":["null",{"type":"map","values":"bytes"}]}]}"#;

/// The schemas of everything on the wire, parsed once.
struct Schemas {
    event: Schema,
    events: Schema,
    status: Schema,
    handshake_request: Schema,
    handshake_response: Schema,
    meta: Schema,
    string: Schema,
    boolean: Schema,
    errors: Schema,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let parse = |s: &str| Schema::parse_str(s).expect("the built-in schemas parse");
    Schemas {
        event: parse(EVENT_SCHEMA),
        events: parse(&format!(r#"{{"type":"array","items":{EVENT_SCHEMA}}}"#)),
        status: parse(STATUS_SCHEMA),
        handshake_request: parse(HANDSHAKE_REQUEST_SCHEMA),
        handshake_response: parse(HANDSHAKE_RESPONSE_SCHEMA),
        meta: parse(r#"{"type":"map","values":"bytes"}"#),
        string: parse(r#""string""#),
        boolean: parse(r#""boolean""#),
        errors: parse(r#"["string"]"#),
    }
});

/// Compression of an Avro RPC connection (Flume's `compression-type`).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, PartialEq, Eq)]
pub enum Compression {
    /// None.
    #[default]
    None,
    /// A zlib stream in each direction, flushed after every frame.
    Deflate,
}

/// What went wrong, in kinds a caller reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroErrorKind {
    /// The byte stream broke the framing: a frame over a limit, truncated, a corrupt zlib stream.
    Framing,
    /// The peer speaks another protocol than Flume's `AvroSourceProtocol`, or broke the handshake.
    Handshake,
    /// A datum (handshake record, call, parameters, answer) did not decode.
    Malformed,
    /// The socket failed or closed, or an answer did not come in time.
    Io,
    /// The server answered `FAILED` (or `UNKNOWN`): it did not take the batch.
    Refused,
}

/// An error of Flume's Avro RPC.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// A frame declared more buffers than its limit allows (or a negative count).
    #[error("a frame declares {count} buffers (at most {max})")]
    TooManyBuffers {
        /// The declared count.
        count: i64,
        /// The limit.
        max: usize,
    },
    /// A frame's buffers declared more bytes than `max_frame_bytes` (or a negative length).
    #[error(
        "a frame declares a buffer of {length} bytes, over max_frame_bytes ({max}) with the frame's other buffers"
    )]
    FrameTooLarge {
        /// The declared length of the buffer.
        length: i64,
        /// The limit, in bytes.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the connection ended inside a frame ({got} of its bytes read)")]
    Truncated {
        /// Bytes of the frame read before the end.
        got: usize,
    },
    /// The zlib stream of `compression_type: Deflate` is corrupt.
    #[error("corrupt deflate stream: {0}")]
    Deflate(String),
    /// The peer's protocol is not Flume's `AvroSourceProtocol` (or not compatible with it).
    #[error("another protocol: {0}")]
    OtherProtocol(String),
    /// The handshake went wrong (an unknown protocol hash twice, an answer without a handshake).
    #[error("handshake: {0}")]
    Handshake(String),
    /// A datum did not decode as its schema says.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded (`"handshake request"`, `"appendBatch parameters"`, ...).
        what: &'static str,
        /// apache-avro's error, or what was wrong.
        detail: String,
    },
    /// Reading or writing the socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// No answer came within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The server answered a call with `FAILED` or `UNKNOWN`: its channel did not take the
    /// events (full, or closed); send them again later.
    #[error("the server answered {0:?}: it did not take the events")]
    Refused(Status),
    /// The peer answered a call with an Avro error (a system error string).
    #[error("the server answered with an error: {0}")]
    Remote(String),
}

impl AvroError {
    /// The error's kind.
    pub fn kind(&self) -> AvroErrorKind {
        match self {
            AvroError::TooManyBuffers { .. }
            | AvroError::FrameTooLarge { .. }
            | AvroError::Truncated { .. }
            | AvroError::Deflate(_) => AvroErrorKind::Framing,
            AvroError::OtherProtocol(_) | AvroError::Handshake(_) => AvroErrorKind::Handshake,
            AvroError::Malformed { .. } | AvroError::Remote(_) => AvroErrorKind::Malformed,
            AvroError::Io { .. } | AvroError::Timeout(_) => AvroErrorKind::Io,
            AvroError::Refused(_) => AvroErrorKind::Refused,
        }
    }

    fn malformed(what: &'static str) -> impl FnOnce(apache_avro::Error) -> AvroError {
        move |e| AvroError::Malformed { what, detail: e.to_string() }
    }

    /// An [`AvroError::Io`] saying what was being done.
    pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> AvroError {
        move |source| AvroError::Io { what, source }
    }
}

fn decode(schema: &Schema, input: &mut &[u8], what: &'static str) -> Result<Value, AvroError> {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .and_then(|reader| reader.read_value(input))
        .map_err(AvroError::malformed(what))
}

fn encode(schema: &Schema, value: Value, out: &mut Vec<u8>) {
    // Every value is built here for its schema (the round-trip tests check it): no validation pass.
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .validate(false)
        .build()
        .and_then(|writer| writer.write_value(out, value))
        .expect("values built here match their schemas");
}

fn bad(what: &'static str, detail: impl Into<String>) -> AvroError {
    AvroError::Malformed { what, detail: detail.into() }
}

/// Call or handshake metadata: `map<bytes>`.
pub type Meta = HashMap<String, Vec<u8>>;

fn meta_value(meta: &Meta) -> Value {
    Value::Map(meta.iter().map(|(k, v)| (k.clone(), Value::Bytes(v.clone()))).collect())
}

fn meta_of(value: Value, what: &'static str) -> Result<Meta, AvroError> {
    let Value::Map(map) = value else { return Err(bad(what, "metadata is not a map")) };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::Bytes(b) => Ok((k, b)),
            _ => Err(bad(what, "metadata value is not bytes")),
        })
        .collect()
}

fn optional_meta(meta: &Option<Meta>) -> Value {
    match meta {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(m) => Value::Union(1, Box::new(meta_value(m))),
    }
}

fn fixed_md5(value: Value, what: &'static str) -> Result<Md5, AvroError> {
    match value {
        Value::Fixed(16, bytes) => Ok(bytes.try_into().expect("16 bytes")),
        _ => Err(bad(what, "hash is not a 16-byte fixed")),
    }
}

fn record_fields(value: Value, what: &'static str) -> Result<Vec<Value>, AvroError> {
    match value {
        Value::Record(fields) => Ok(fields.into_iter().map(|(_, v)| v).collect()),
        _ => Err(bad(what, "not a record")),
    }
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, v) => *v,
        v => v,
    }
}

/// The handshake a client sends before a call (Avro's `org.apache.avro.ipc.HandshakeRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The hash of the client's protocol.
    pub client_hash: Md5,
    /// The client's protocol text; sent after the server answered `NONE`.
    pub client_protocol: Option<String>,
    /// The hash of the protocol the client believes the server speaks.
    pub server_hash: Md5,
    /// Handshake metadata.
    pub meta: Option<Meta>,
}

impl HandshakeRequest {
    /// Appends the record's binary encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let protocol = match &self.client_protocol {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(p) => Value::Union(1, Box::new(Value::String(p.clone()))),
        };
        let value = Value::Record(vec![
            ("clientHash".into(), Value::Fixed(16, self.client_hash.to_vec())),
            ("clientProtocol".into(), protocol),
            ("serverHash".into(), Value::Fixed(16, self.server_hash.to_vec())),
            ("meta".into(), optional_meta(&self.meta)),
        ]);
        encode(&SCHEMAS.handshake_request, value, out);
    }

    /// Decodes a record from the front of `input` (which is advanced past it).
    ///
    /// # Errors
    /// [`AvroError::Malformed`].
    pub fn decode(input: &mut &[u8]) -> Result<Self, AvroError> {
        const WHAT: &str = "handshake request";
        let mut fields = record_fields(decode(&SCHEMAS.handshake_request, input, WHAT)?, WHAT)?.into_iter();
        let mut next = || fields.next().ok_or_else(|| bad(WHAT, "missing field"));
        let client_hash = fixed_md5(next()?, WHAT)?;
        let client_protocol = match unwrap_union(next()?) {
            Value::String(s) => Some(s),
            _ => None,
        };
        let server_hash = fixed_md5(next()?, WHAT)?;
        let meta = match unwrap_union(next()?) {
            Value::Null => None,
            m => Some(meta_of(m, WHAT)?),
        };
        Ok(HandshakeRequest { client_hash, client_protocol, server_hash, meta })
    }
}

/// How far the server knows the client's protocol (Avro's `HandshakeMatch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMatch {
    /// Both sides know each other's protocol.
    Both,
    /// The server knows the client's protocol, the client had the server's hash wrong: the
    /// answer carries the server's protocol.
    Client,
    /// The server does not know the client's hash: the client must send its protocol text. The
    /// call was not run.
    None,
}

/// The server's answer to a [`HandshakeRequest`] (Avro's `org.apache.avro.ipc.HandshakeResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The match.
    pub matched: HandshakeMatch,
    /// The server's protocol text, unless the match is `BOTH`.
    pub server_protocol: Option<String>,
    /// The server's protocol hash, unless the match is `BOTH`.
    pub server_hash: Option<Md5>,
    /// Handshake metadata.
    pub meta: Option<Meta>,
}

impl HandshakeResponse {
    /// Appends the record's binary encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (index, symbol) = match self.matched {
            HandshakeMatch::Both => (0, "BOTH"),
            HandshakeMatch::Client => (1, "CLIENT"),
            HandshakeMatch::None => (2, "NONE"),
        };
        let protocol = match &self.server_protocol {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(p) => Value::Union(1, Box::new(Value::String(p.clone()))),
        };
        let hash = match &self.server_hash {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(h) => Value::Union(1, Box::new(Value::Fixed(16, h.to_vec()))),
        };
        let value = Value::Record(vec![
            ("match".into(), Value::Enum(index, symbol.into())),
            ("serverProtocol".into(), protocol),
            ("serverHash".into(), hash),
            ("meta".into(), optional_meta(&self.meta)),
        ]);
        encode(&SCHEMAS.handshake_response, value, out);
    }

    /// Decodes a record from the front of `input` (which is advanced past it).
    ///
    /// # Errors
    /// [`AvroError::Malformed`].
    pub fn decode(input: &mut &[u8]) -> Result<Self, AvroError> {
        const WHAT: &str = "handshake response";
        let mut fields = record_fields(decode(&SCHEMAS.handshake_response, input, WHAT)?, WHAT)?.into_iter();
        let mut next = || fields.next().ok_or_else(|| bad(WHAT, "missing field"));
        let matched = match next()? {
            Value::Enum(0, _) => HandshakeMatch::Both,
            Value::Enum(1, _) => HandshakeMatch::Client,
            Value::Enum(2, _) => HandshakeMatch::None,
            _ => return Err(bad(WHAT, "match is not BOTH, CLIENT or NONE")),
        };
        let server_protocol = match unwrap_union(next()?) {
            Value::String(s) => Some(s),
            _ => None,
        };
        let server_hash = match unwrap_union(next()?) {
            Value::Null => None,
            h => Some(fixed_md5(h, WHAT)?),
        };
        let meta = match unwrap_union(next()?) {
            Value::Null => None,
            m => Some(meta_of(m, WHAT)?),
        };
        Ok(HandshakeResponse { matched, server_protocol, server_hash, meta })
    }
}

/// Flume's `Status`: the answer to `append` and `appendBatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The events were committed to the channel.
    Ok,
    /// They were not (a full channel, a failed put): send them again.
    Failed,
    /// Unknown.
    Unknown,
}

impl Status {
    fn index(self) -> u32 {
        match self {
            Status::Ok => 0,
            Status::Failed => 1,
            Status::Unknown => 2,
        }
    }
}

/// A call of `AvroSourceProtocol`.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `Status append(AvroFlumeEvent event)`.
    Append(Event),
    /// `Status appendBatch(array<AvroFlumeEvent> events)`.
    AppendBatch(Vec<Event>),
    /// A message the protocol does not have (answered with an error).
    Unknown(String),
}

fn event_value(e: &Event) -> Value {
    Value::Record(vec![
        ("headers".into(), Value::Map(e.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())),
        ("body".into(), Value::Bytes(e.body.to_vec())),
    ])
}

fn event_of(value: Value, what: &'static str) -> Result<Event, AvroError> {
    let mut fields = record_fields(value, what)?.into_iter();
    let (Some(Value::Map(headers)), Some(Value::Bytes(body))) = (fields.next(), fields.next()) else {
        return Err(bad(what, "not an AvroFlumeEvent"));
    };
    let headers = headers
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(bad(what, "a header value is not a string")),
        })
        .collect::<Result<Headers, _>>()?;
    Ok(Event { headers, body: Bytes::from(body) })
}

/// An `AvroFlumeEvent` as apache-avro's schema-aware serializer writes it (no `Value` tree).
#[derive(serde::Serialize)]
#[serde(rename = "AvroFlumeEvent")]
struct EventOut<'a> {
    headers: &'a Headers,
    #[serde(with = "apache_avro::serde::bytes")]
    body: &'a [u8],
}

/// An `AvroFlumeEvent` as apache-avro's schema-aware deserializer reads it.
#[derive(serde::Deserialize)]
#[serde(rename = "AvroFlumeEvent")]
struct EventIn {
    headers: Headers,
    #[serde(with = "apache_avro::serde::bytes")]
    body: Vec<u8>,
}

/// Appends the encoding of an `appendBatch(events)` call (empty call metadata) to `out`.
pub fn encode_append_batch(events: &[Event], out: &mut Vec<u8>) {
    encode(&SCHEMAS.meta, Value::Map(HashMap::new()), out);
    encode(&SCHEMAS.string, Value::String("appendBatch".into()), out);
    let events: Vec<EventOut<'_>> = events.iter().map(|e| EventOut { headers: &e.headers, body: &e.body }).collect();
    apache_avro::writer::datum::GenericDatumWriter::builder(&SCHEMAS.events)
        .validate(false)
        .build()
        .and_then(|writer| writer.write_ser(out, &events))
        .expect("events match their schema");
}

/// Appends the encoding of an `append(event)` call (empty call metadata) to `out`.
pub fn encode_append(event: &Event, out: &mut Vec<u8>) {
    encode(&SCHEMAS.meta, Value::Map(HashMap::new()), out);
    encode(&SCHEMAS.string, Value::String("append".into()), out);
    encode(&SCHEMAS.event, event_value(event), out);
}

/// Decodes a call (metadata, message name, parameters) from `input`.
///
/// # Errors
/// [`AvroError::Malformed`] when a part does not decode, or bytes are left after the parameters.
pub fn decode_call(input: &mut &[u8]) -> Result<Call, AvroError> {
    meta_of(decode(&SCHEMAS.meta, input, "call metadata")?, "call metadata")?;
    let Value::String(name) = decode(&SCHEMAS.string, input, "message name")? else {
        return Err(bad("message name", "not a string"));
    };
    let call = match name.as_str() {
        "append" => Call::Append(event_of(decode(&SCHEMAS.event, input, "append parameters")?, "append parameters")?),
        "appendBatch" => {
            let events: Vec<EventIn> = apache_avro::reader::datum::GenericDatumReader::builder(&SCHEMAS.events)
                .build()
                .and_then(|reader| reader.read_deser(input))
                .map_err(AvroError::malformed("appendBatch parameters"))?;
            Call::AppendBatch(
                events.into_iter().map(|e| Event { headers: e.headers, body: Bytes::from(e.body) }).collect(),
            )
        }
        _ => return Ok(Call::Unknown(name)),
    };
    if !input.is_empty() {
        return Err(bad("call", format!("{} bytes after the parameters", input.len())));
    }
    Ok(call)
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The message's `Status`.
    Status(Status),
    /// An error (Avro's system error: a string).
    Error(String),
}

/// Appends the encoding of an answer (empty metadata, error flag, status or error) to `out`.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) {
    encode(&SCHEMAS.meta, Value::Map(HashMap::new()), out);
    match response {
        Response::Status(s) => {
            encode(&SCHEMAS.boolean, Value::Boolean(false), out);
            let symbol = ["OK", "FAILED", "UNKNOWN"][s.index() as usize];
            encode(&SCHEMAS.status, Value::Enum(s.index(), symbol.into()), out);
        }
        Response::Error(e) => {
            encode(&SCHEMAS.boolean, Value::Boolean(true), out);
            encode(&SCHEMAS.errors, Value::Union(0, Box::new(Value::String(e.clone()))), out);
        }
    }
}

/// Decodes an answer from `input`.
///
/// # Errors
/// [`AvroError::Malformed`].
pub fn decode_response(input: &mut &[u8]) -> Result<Response, AvroError> {
    const WHAT: &str = "answer";
    meta_of(decode(&SCHEMAS.meta, input, WHAT)?, WHAT)?;
    match decode(&SCHEMAS.boolean, input, WHAT)? {
        Value::Boolean(false) => match decode(&SCHEMAS.status, input, WHAT)? {
            Value::Enum(0, _) => Ok(Response::Status(Status::Ok)),
            Value::Enum(1, _) => Ok(Response::Status(Status::Failed)),
            Value::Enum(_, _) => Ok(Response::Status(Status::Unknown)),
            _ => Err(bad(WHAT, "status is not an enum")),
        },
        Value::Boolean(true) => match unwrap_union(decode(&SCHEMAS.errors, input, WHAT)?) {
            Value::String(s) => Ok(Response::Error(s)),
            _ => Err(bad(WHAT, "error is not a string")),
        },
        _ => Err(bad(WHAT, "error flag is not a boolean")),
    }
}

/// Checks that a client's protocol text is Flume's `AvroSourceProtocol`: the same full name, and
/// each of `append` and `appendBatch` it declares with the same parameter and answer schemas (in
/// Avro's parsing canonical form, so formatting, docs and parameter names do not matter).
///
/// # Errors
/// [`AvroError::OtherProtocol`] saying what differs.
pub fn check_protocol(text: &str) -> Result<(), AvroError> {
    let other = |why: String| AvroError::OtherProtocol(why);
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| other(format!("not protocol JSON: {e}")))?;
    let name = json.get("protocol").and_then(|v| v.as_str()).unwrap_or_default();
    let namespace = json.get("namespace").and_then(|v| v.as_str()).unwrap_or_default();
    let full =
        if name.contains('.') || namespace.is_empty() { name.to_string() } else { format!("{namespace}.{name}") };
    if full != PROTOCOL_NAME {
        return Err(other(format!("protocol {full:?}, not {PROTOCOL_NAME}")));
    }
    let types: HashMap<String, serde_json::Value> = json
        .get("types")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_string();
            let mut t = t.clone();
            if t.get("namespace").is_none() && !name.contains('.') {
                t["namespace"] = serde_json::Value::String(namespace.to_string());
            }
            let short = name.rsplit('.').next().unwrap_or(&name).to_string();
            Some([(short, t.clone()), (format!("{namespace}.{name}"), t.clone()), (name, t)])
        })
        .flatten()
        .collect();
    let ours: [(&str, &Schema, &Schema); 2] =
        [("append", &SCHEMAS.event, &SCHEMAS.status), ("appendBatch", &SCHEMAS.events, &SCHEMAS.status)];
    let messages = json.get("messages").and_then(|m| m.as_object());
    for (message, request, response) in ours {
        let Some(m) = messages.and_then(|m| m.get(message)) else { continue };
        let params = m.get("request").and_then(|r| r.as_array()).cloned().unwrap_or_default();
        let [param] = params.as_slice() else {
            return Err(other(format!("{message} takes {} parameters, not 1", params.len())));
        };
        let same = |given: &serde_json::Value, ours: &Schema| -> bool {
            let resolved = resolve(given, &types);
            Schema::parse(&resolved).is_ok_and(|s| s.canonical_form() == ours.canonical_form())
        };
        if !same(param.get("type").unwrap_or(&serde_json::Value::Null), request) {
            return Err(other(format!("{message}'s parameter is not {}", request.canonical_form())));
        }
        if !same(m.get("response").unwrap_or(&serde_json::Value::Null), response) {
            return Err(other(format!("{message}'s answer is not {}", response.canonical_form())));
        }
    }
    Ok(())
}

/// `schema` with the protocol's named types it refers to written out in place.
fn resolve(schema: &serde_json::Value, types: &HashMap<String, serde_json::Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match schema {
        J::String(name) => types.get(name).map_or_else(|| schema.clone(), |t| resolve(t, types)),
        J::Array(items) => J::Array(items.iter().map(|i| resolve(i, types)).collect()),
        J::Object(map) => J::Object(
            map.iter()
                .map(|(k, v)| match k.as_str() {
                    "items" | "values" | "type" => (k.clone(), resolve(v, types)),
                    "fields" => (
                        k.clone(),
                        J::Array(
                            v.as_array()
                                .into_iter()
                                .flatten()
                                .map(|f| {
                                    let mut f = f.clone();
                                    if let Some(t) = f.get("type") {
                                        f["type"] = resolve(t, types);
                                    }
                                    f
                                })
                                .collect(),
                        ),
                    ),
                    _ => (k.clone(), v.clone()),
                })
                .collect(),
        ),
        _ => schema.clone(),
    }
}

/// What the server side knows of one connection: whether the handshake is done, and the
/// client's protocol hash (a later message starting with it carries a handshake again, as every
/// message of Python's `avro.ipc` client does).
///
/// `known` is shared by the connections of one source: the client protocol hashes it accepted
/// (with their protocol's text) before, as Avro's Java `Responder` keeps its protocol cache, so
/// that a client reconnecting needs no `NONE` round trip.
#[derive(Debug, Clone, Default)]
pub struct ServerSession {
    client_hash: Option<Md5>,
    known: KnownClients,
}

/// The client protocol hashes a source accepted, shared by its connections (at most
/// [`MAX_KNOWN_CLIENTS`]).
pub type KnownClients = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Md5>>>;

/// Most client protocol hashes a source remembers (each is a protocol text it checked).
pub const MAX_KNOWN_CLIENTS: usize = 1024;

/// What a request's handshake came to.
#[derive(Debug)]
pub enum Handshaken {
    /// The request carried no handshake (an established Netty connection).
    NoHandshake,
    /// It carried one; the call follows, and the answer starts with this handshake response.
    Answer(HandshakeResponse),
    /// The client's hash is unknown and it sent no protocol text: answer this (`NONE`) only;
    /// the client sends the call again with its protocol.
    Retry(HandshakeResponse),
}

impl ServerSession {
    /// A session for a new connection of a source whose accepted client hashes are `known`.
    pub fn new(known: KnownClients) -> Self {
        ServerSession { client_hash: None, known }
    }

    /// Reads the handshake at the front of `input`, if the request has one (the first of a
    /// connection, one after a `NONE`, or one starting with the connection's client hash), and
    /// says how to answer it.
    ///
    /// # Errors
    /// [`AvroError::Malformed`] for a handshake that does not decode; [`AvroError::OtherProtocol`]
    /// for a client protocol that is not `AvroSourceProtocol`.
    pub fn handshake(&mut self, input: &mut &[u8]) -> Result<Handshaken, AvroError> {
        let has = match &self.client_hash {
            None => true,
            Some(hash) => input.starts_with(hash),
        };
        if !has {
            return Ok(Handshaken::NoHandshake);
        }
        let request = HandshakeRequest::decode(input)?;
        let ours = protocol_hash();
        let known = match &request.client_protocol {
            Some(text) => {
                check_protocol(text)?;
                true
            }
            None => {
                request.client_hash == ours
                    || self.client_hash == Some(request.client_hash)
                    || self.known.lock().expect("never poisoned").contains(&request.client_hash)
            }
        };
        if !known {
            return Ok(Handshaken::Retry(HandshakeResponse {
                matched: HandshakeMatch::None,
                server_protocol: Some(PROTOCOL.to_string()),
                server_hash: Some(ours),
                meta: None,
            }));
        }
        self.client_hash = Some(request.client_hash);
        let mut known = self.known.lock().expect("never poisoned");
        if known.len() < MAX_KNOWN_CLIENTS {
            known.insert(request.client_hash);
        }
        drop(known);
        let answer = if request.server_hash == ours {
            HandshakeResponse { matched: HandshakeMatch::Both, server_protocol: None, server_hash: None, meta: None }
        } else {
            HandshakeResponse {
                matched: HandshakeMatch::Client,
                server_protocol: Some(PROTOCOL.to_string()),
                server_hash: Some(ours),
                meta: None,
            }
        };
        Ok(Handshaken::Answer(answer))
    }
}

/// What a frame may declare. Checked as its header and each buffer's length arrive, before any
/// room for them is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most bytes of a frame's buffers together, length prefixes included.
    pub max_frame_bytes: usize,
}

impl FrameLimits {
    /// Most buffers a frame may declare: each takes at least its 4-byte length.
    pub fn max_buffers(&self) -> usize {
        self.max_frame_bytes / 4
    }
}

/// One Netty frame: its serial number and its buffers' bytes, concatenated (one Avro message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The serial number: an answer carries its call's.
    pub serial: i32,
    /// The buffers' bytes, one after the other.
    pub payload: Vec<u8>,
}

/// Bytes of a buffer read (and allocated) at a time: a frame holds only what arrived.
const READ_STEP: usize = 64 * 1024;

/// Reads one frame from `reader`. `Ok(None)`: the stream ended cleanly before a frame began.
///
/// # Errors
/// [`AvroError::TooManyBuffers`], [`AvroError::FrameTooLarge`] (checked before allocating),
/// [`AvroError::Truncated`] when the stream ends inside the frame, [`AvroError::Io`].
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    limits: FrameLimits,
) -> Result<Option<Frame>, AvroError> {
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        let n = reader.read(&mut header[got..]).await.map_err(read_error)?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(AvroError::Truncated { got }) };
        }
        got += n;
    }
    let serial = i32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
    let count = i32::from_be_bytes(header[4..].try_into().expect("4 bytes"));
    if count < 0 || count as usize > limits.max_buffers() {
        return Err(AvroError::TooManyBuffers { count: count.into(), max: limits.max_buffers() });
    }
    let mut payload = Vec::new();
    let mut total = 0usize;
    for _ in 0..count {
        let mut len = [0u8; 4];
        read_exact(reader, &mut len, 8 + total).await?;
        let length = i32::from_be_bytes(len);
        total += 4;
        if length < 0 || total + length as usize > limits.max_frame_bytes {
            return Err(AvroError::FrameTooLarge { length: length.into(), max: limits.max_frame_bytes });
        }
        let mut left = length as usize;
        while left > 0 {
            let step = left.min(READ_STEP);
            let start = payload.len();
            payload.resize(start + step, 0);
            read_exact(reader, &mut payload[start..], 8 + total).await?;
            left -= step;
            total += step;
        }
    }
    Ok(Some(Frame { serial, payload }))
}

fn read_error(e: io::Error) -> AvroError {
    if e.kind() == io::ErrorKind::InvalidData {
        AvroError::Deflate(e.to_string())
    } else {
        AvroError::Io { what: "read a frame", source: e }
    }
}

async fn read_exact<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    buf: &mut [u8],
    before: usize,
) -> Result<(), AvroError> {
    let mut got = 0;
    while got < buf.len() {
        let n = reader.read(&mut buf[got..]).await.map_err(read_error)?;
        if n == 0 {
            return Err(AvroError::Truncated { got: before + got });
        }
        got += n;
    }
    Ok(())
}

/// Appends a frame holding `payload` (as one buffer) with `serial` to `out`.
pub fn encode_frame(serial: i32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&serial.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The compressing side of `compression_type: Deflate`: one zlib stream for a connection's
/// direction, sync-flushed after each frame so that the peer can decode it at once.
pub struct Deflater {
    compress: flate2::Compress,
}

impl Deflater {
    /// A zlib stream (with its header) at `level` (0 to 9).
    pub fn new(level: u32) -> Self {
        Deflater { compress: flate2::Compress::new(flate2::Compression::new(level.min(9)), true) }
    }

    /// Compresses `data` and sync-flushes, appending the output to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut input = data;
        loop {
            out.reserve(input.len() / 2 + 1024);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, out, flate2::FlushCompress::Sync)
                .expect("compressing into a vector with room does not fail");
            input = &input[(self.compress.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return;
            }
        }
    }
}

/// The decompressing side of `compression_type: Deflate`: an [`AsyncRead`] of the inflated
/// bytes of the zlib stream `inner` carries. Inflates only into the reader's buffer, so a
/// small input that inflates to much takes no more memory than the caller reads at once. A
/// corrupt stream reads as an `InvalidData` error.
pub struct Inflater<R> {
    inner: R,
    decompress: flate2::Decompress,
    input: Box<[u8]>,
    start: usize,
    end: usize,
    input_ended: bool,
    stream_ended: bool,
}

impl<R> Inflater<R> {
    /// Inflates the zlib stream (with its header) read from `inner`.
    pub fn new(inner: R) -> Self {
        Inflater {
            inner,
            decompress: flate2::Decompress::new(true),
            input: vec![0; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            input_ended: false,
            stream_ended: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Inflater<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.stream_ended {
                return Poll::Ready(Ok(()));
            }
            if this.start < this.end {
                let (before_in, before_out) = (this.decompress.total_in(), this.decompress.total_out());
                let out = buf.initialize_unfilled();
                let status = this
                    .decompress
                    .decompress(&this.input[this.start..this.end], out, flate2::FlushDecompress::None)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let consumed = (this.decompress.total_in() - before_in) as usize;
                let produced = (this.decompress.total_out() - before_out) as usize;
                this.start += consumed;
                buf.advance(produced);
                if status == flate2::Status::StreamEnd {
                    this.stream_ended = true;
                }
                if produced > 0 || this.stream_ended {
                    return Poll::Ready(Ok(()));
                }
                if consumed > 0 && this.start < this.end {
                    continue;
                }
            }
            if this.input_ended {
                // A stream cut short reads as its end; the frame reader reports the truncation.
                return Poll::Ready(Ok(()));
            }
            if this.start > 0 {
                this.input.copy_within(this.start..this.end, 0);
                this.end -= this.start;
                this.start = 0;
            }
            if this.end == this.input.len() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "deflate stream makes no progress",
                )));
            }
            let mut read = ReadBuf::new(&mut this.input[this.end..]);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                this.input_ended = true;
            }
            this.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Event> {
        vec![
            Event::new("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating")
                .with_header("host", "hdfs-1"),
            Event::new(&b"\xff\x00 binary body"[..]),
        ]
    }

    #[test]
    fn calls_and_answers_round_trip() {
        let mut out = Vec::new();
        encode_append_batch(&sample(), &mut out);
        assert_eq!(decode_call(&mut &out[..]).unwrap(), Call::AppendBatch(sample()));
        out.clear();
        encode_append(&sample()[0], &mut out);
        assert_eq!(decode_call(&mut &out[..]).unwrap(), Call::Append(sample()[0].clone()));
        for r in [Response::Status(Status::Ok), Response::Status(Status::Failed), Response::Error("boom".into())] {
            out.clear();
            encode_response(&r, &mut out);
            assert_eq!(decode_response(&mut &out[..]).unwrap(), r);
        }
    }

    #[test]
    fn handshakes_round_trip_and_none_then_client() {
        let req = HandshakeRequest { client_hash: [1; 16], client_protocol: None, server_hash: [2; 16], meta: None };
        let mut out = Vec::new();
        req.encode(&mut out);
        let mut session = ServerSession::default();
        let mut input = &out[..];
        match session.handshake(&mut input).unwrap() {
            Handshaken::Retry(r) => assert_eq!(r.matched, HandshakeMatch::None),
            other => panic!("{other:?}"),
        }
        let req = HandshakeRequest { client_protocol: Some(PROTOCOL.replace(',', ", ")), ..req };
        out.clear();
        req.encode(&mut out);
        encode_append_batch(&sample(), &mut out);
        let mut input = &out[..];
        let Handshaken::Answer(answer) = session.handshake(&mut input).unwrap() else { panic!() };
        assert_eq!(answer.matched, HandshakeMatch::Client);
        assert_eq!(answer.server_hash, Some(protocol_hash()));
        let mut encoded = Vec::new();
        answer.encode(&mut encoded);
        assert_eq!(HandshakeResponse::decode(&mut &encoded[..]).unwrap(), answer);
        assert_eq!(decode_call(&mut input).unwrap(), Call::AppendBatch(sample()));
        // Another connection of the same source knows the client's hash.
        let mut again = ServerSession::new(session.known.clone());
        let mut plain = Vec::new();
        HandshakeRequest { client_protocol: None, server_hash: protocol_hash(), ..req.clone() }.encode(&mut plain);
        let Handshaken::Answer(answer) = again.handshake(&mut &plain[..]).unwrap() else { panic!() };
        assert_eq!(answer.matched, HandshakeMatch::Both);
        // A later message without a handshake.
        out.clear();
        encode_append_batch(&sample(), &mut out);
        let mut input = &out[..];
        assert!(matches!(session.handshake(&mut input).unwrap(), Handshaken::NoHandshake));
    }

    #[test]
    fn other_protocols_are_refused() {
        let other = r#"{"protocol":"Mail","namespace":"example.proto","types":[],"messages":{}}"#;
        assert!(matches!(check_protocol(other), Err(AvroError::OtherProtocol(_))));
        let changed = PROTOCOL.replace(r#""values":"string""#, r#""values":"bytes""#);
        assert!(matches!(check_protocol(&changed), Err(AvroError::OtherProtocol(_))), "{changed}");
        check_protocol(PROTOCOL).unwrap();
    }

    #[actix_rt::test]
    async fn frames_over_the_limits_are_refused_before_allocating() {
        let limits = FrameLimits { max_frame_bytes: 1024 };
        let mut huge_count = Vec::new();
        huge_count.extend_from_slice(&1i32.to_be_bytes());
        huge_count.extend_from_slice(&i32::MAX.to_be_bytes());
        let e = read_frame(&mut &huge_count[..], limits).await.unwrap_err();
        assert!(matches!(e, AvroError::TooManyBuffers { .. }), "{e}");
        let mut huge_len = Vec::new();
        huge_len.extend_from_slice(&1i32.to_be_bytes());
        huge_len.extend_from_slice(&1i32.to_be_bytes());
        huge_len.extend_from_slice(&i32::MAX.to_be_bytes());
        let e = read_frame(&mut &huge_len[..], limits).await.unwrap_err();
        assert!(matches!(e, AvroError::FrameTooLarge { .. }), "{e}");
        let mut frame = Vec::new();
        encode_frame(7, b"hello", &mut frame);
        let got = read_frame(&mut &frame[..], limits).await.unwrap().unwrap();
        assert_eq!((got.serial, &got.payload[..]), (7, &b"hello"[..]));
        let e = read_frame(&mut &frame[..frame.len() - 1], limits).await.unwrap_err();
        assert!(matches!(e, AvroError::Truncated { .. }), "{e}");
        assert!(read_frame(&mut &b""[..], limits).await.unwrap().is_none());
    }

    #[actix_rt::test]
    async fn deflate_streams_decode_frame_by_frame() {
        let mut d = Deflater::new(6);
        let mut wire = Vec::new();
        let mut frame = Vec::new();
        encode_frame(1, b"first frame", &mut frame);
        d.compress(&frame, &mut wire);
        let first_len = wire.len();
        frame.clear();
        encode_frame(2, &[b'x'; 100_000], &mut frame);
        d.compress(&frame, &mut wire);
        let limits = FrameLimits { max_frame_bytes: 1 << 20 };
        // The first frame decodes from its own bytes (sync flush), without the second's.
        let mut r = Inflater::new(&wire[..first_len]);
        assert_eq!(read_frame(&mut r, limits).await.unwrap().unwrap().payload, b"first frame");
        let mut r = Inflater::new(&wire[..]);
        read_frame(&mut r, limits).await.unwrap().unwrap();
        assert_eq!(read_frame(&mut r, limits).await.unwrap().unwrap().payload.len(), 100_000);
        let mut corrupt = wire.clone();
        corrupt[first_len + 3] ^= 0x55;
        corrupt[first_len + 4] ^= 0x55;
        let mut r = Inflater::new(&corrupt[..]);
        let first = read_frame(&mut r, limits).await;
        let second = read_frame(&mut r, limits).await;
        assert!(first.is_err() || matches!(second, Err(AvroError::Deflate(_))), "{first:?} {second:?}");
    }
}
