//! Flume's Thrift RPC on the wire: the `ThriftSourceProtocol` of Flume's `flume.thrift`
//! (`append`, `appendBatch` of `ThriftFlumeEvent { headers, body }`, answering a `Status`) in the
//! compact or binary protocol over the framed transport. The `Thrift` source and sink use it.
//!
//! The IDL this module speaks (Flume's `flume-ng-sdk/src/main/thrift/flume.thrift`):
//!
//! ```text
//! struct ThriftFlumeEvent { 1: required map<string, string> headers, 2: required binary body }
//! enum Status { OK, FAILED, ERROR, UNKNOWN }
//! service ThriftSourceProtocol {
//!   Status append(1: ThriftFlumeEvent event),
//!   Status appendBatch(1: list<ThriftFlumeEvent> events),
//! }
//! ```
//!
//! Each message travels in one frame of the framed transport (Thrift's `TFramedTransport`, which
//! Flume's `TFastFramedTransport` speaks): a 4-byte big-endian length, then that many bytes. The
//! frames are read and written here, asynchronously, with a hard limit checked before anything is
//! allocated; the messages inside a frame are read and written by the Apache `thrift` crate's
//! `TCompactInputProtocol` / `TBinaryInputProtocol` (and their output protocols) over the frame's
//! bytes in memory. Every container a message declares (the list of events, a map of headers,
//! a string) is checked against the bytes left in its frame before it is read, so a declared list
//! of 2^31 events in a 20-byte frame is refused at once, without allocating for it.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use bytes::Bytes;
use serde::Deserialize;
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol, TFieldIdentifier,
    TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier, TMessageType, TOutputProtocol,
    TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind, TConfiguration};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::event::{Event, Headers};

/// The method name of a single event's call.
pub const APPEND: &str = "append";
/// The method name of a batch's call.
pub const APPEND_BATCH: &str = "appendBatch";

/// The default largest frame in bytes: 16384000, the Apache Thrift libraries' default
/// `max_frame_size` (`TConfiguration.DEFAULT_MAX_FRAME_SIZE`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16_384_000;

/// The Thrift protocol of the messages in the frames (Flume's `protocol` property: `compact`, the
/// default, or `binary`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    /// Thrift's compact protocol (`TCompactProtocol`), Flume's default.
    #[default]
    Compact,
    /// Thrift's binary protocol (`TBinaryProtocol`); strict (versioned) messages are written,
    /// strict and old-style ones are read.
    Binary,
}

/// Flume's `Status`: what a `ThriftSourceProtocol` call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The events were committed to the channels (0).
    Ok,
    /// The events were not committed (a full channel); the client sends them again (1).
    Failed,
    /// A server error (2).
    Error,
    /// Anything else (3, and values outside the enum).
    Unknown,
}

impl Status {
    /// The enum's value on the wire.
    pub fn value(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Failed => 1,
            Status::Error => 2,
            Status::Unknown => 3,
        }
    }

    /// The status of a value on the wire (`Unknown` for values outside the enum).
    pub fn of(value: i32) -> Status {
        match value {
            0 => Status::Ok,
            1 => Status::Failed,
            2 => Status::Error,
            _ => Status::Unknown,
        }
    }
}

/// What went wrong with a Thrift frame or message.
#[derive(Debug, thiserror::Error)]
pub enum ThriftError {
    /// Reading or writing the connection failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The connection ended inside a frame (its length prefix or its bytes).
    #[error("connection closed inside a frame: {got} of {expected} bytes read")]
    Truncated {
        /// Bytes the frame (or its 4-byte length) should have had.
        expected: u64,
        /// Bytes read before the end.
        got: u64,
    },
    /// A frame declared a length over the limit (refused before anything was allocated).
    #[error("frame of {len} bytes is over max_frame_bytes ({max})")]
    FrameTooLarge {
        /// The declared length (an unsigned 32-bit number).
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A container (the list of events, a map of headers) declares more elements than the bytes
    /// left in its frame could hold.
    #[error("{what} declares {count} elements but only {left} bytes are left in the frame")]
    ContainerTooLarge {
        /// Which container.
        what: &'static str,
        /// The declared number of elements.
        count: i64,
        /// The bytes left in the frame.
        left: usize,
    },
    /// A string or container longer than its frame, or of a negative size (the protocol
    /// library's check).
    #[error("size limit: {0}")]
    SizeLimit(String),
    /// The message is not in the configured protocol (another protocol, another version).
    #[error("not a {protocol:?} protocol message: {message}")]
    WrongProtocol {
        /// The configured protocol.
        protocol: Protocol,
        /// The protocol library's words.
        message: String,
    },
    /// The message does not decode as a `ThriftSourceProtocol` message (a malformed struct, a
    /// missing required field, a field of the wrong type, bytes after the message).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A call of a method `ThriftSourceProtocol` does not have.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The server answered with a `TApplicationException`.
    #[error("the server answered an exception ({kind:?}): {message}")]
    Application {
        /// The exception's type.
        kind: ApplicationErrorKind,
        /// The exception's message.
        message: String,
    },
    /// A reply that does not answer the call sent (another method name or sequence number, or
    /// not a reply).
    #[error("unexpected answer: {0}")]
    UnexpectedReply(String),
}

/// The kind of a [`ThriftError`], for counting and for deciding what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThriftErrorKind {
    /// I/O on the connection.
    Io,
    /// The input ended inside a frame.
    Truncated,
    /// A frame or a container over a limit.
    TooLarge,
    /// Another protocol than the configured one.
    WrongProtocol,
    /// Bytes that do not decode.
    Malformed,
    /// A method the service does not have.
    UnknownMethod,
    /// The peer answered an exception or something else than the reply expected.
    Remote,
}

impl ThriftError {
    /// The error's kind.
    pub fn kind(&self) -> ThriftErrorKind {
        match self {
            ThriftError::Io { .. } => ThriftErrorKind::Io,
            ThriftError::Truncated { .. } => ThriftErrorKind::Truncated,
            ThriftError::FrameTooLarge { .. } | ThriftError::ContainerTooLarge { .. } | ThriftError::SizeLimit(_) => {
                ThriftErrorKind::TooLarge
            }
            ThriftError::WrongProtocol { .. } => ThriftErrorKind::WrongProtocol,
            ThriftError::Malformed(_) => ThriftErrorKind::Malformed,
            ThriftError::UnknownMethod(_) => ThriftErrorKind::UnknownMethod,
            ThriftError::Application { .. } | ThriftError::UnexpectedReply(_) => ThriftErrorKind::Remote,
        }
    }

    fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ThriftError {
        move |source| ThriftError::Io { what, source }
    }
}

/// A `thrift` crate error met while decoding: a bad version header is the wrong protocol,
/// running out of bytes or any other protocol error a malformed message.
fn decode_error(protocol: Protocol, e: thrift::Error) -> ThriftError {
    match e {
        thrift::Error::Protocol(p) if p.kind == thrift::ProtocolErrorKind::BadVersion => {
            ThriftError::WrongProtocol { protocol, message: p.message }
        }
        thrift::Error::Protocol(p)
            if matches!(p.kind, thrift::ProtocolErrorKind::SizeLimit | thrift::ProtocolErrorKind::NegativeSize) =>
        {
            ThriftError::SizeLimit(p.message)
        }
        thrift::Error::Protocol(p) => ThriftError::Malformed(p.message),
        thrift::Error::Transport(t) => ThriftError::Malformed(format!("message ends early: {}", t.message)),
        other => ThriftError::Malformed(other.to_string()),
    }
}

/// Reads one frame: its 4-byte big-endian length, then its bytes. `Ok(None)` when the input ends
/// before a frame begins (the peer closed the connection between calls).
///
/// The length is checked against `max_frame_bytes` before anything is allocated, and the bytes are
/// read into a buffer that grows as they arrive (at most 64 KiB ahead of them), so a peer that
/// declares a large frame and sends nothing holds no memory.
///
/// # Errors
/// [`ThriftError::FrameTooLarge`], [`ThriftError::Truncated`], [`ThriftError::Io`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, ThriftError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len[got..]).await.map_err(ThriftError::io("read a frame length"))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ThriftError::Truncated { expected: 4, got: got as u64 });
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as u64;
    if len > max_frame_bytes as u64 {
        return Err(ThriftError::FrameTooLarge { len, max: max_frame_bytes });
    }
    let len = len as usize;
    let mut frame = Vec::with_capacity(len.min(64 * 1024));
    let mut limited = reader.take(len as u64);
    loop {
        if frame.len() == frame.capacity() && frame.len() < len {
            frame.reserve((len - frame.len()).min(frame.len().max(64 * 1024)));
        }
        let n = limited.read_buf(&mut frame).await.map_err(ThriftError::io("read a frame"))?;
        if frame.len() == len {
            return Ok(Some(Bytes::from(frame)));
        }
        if n == 0 {
            return Err(ThriftError::Truncated { expected: len as u64, got: frame.len() as u64 });
        }
    }
}

/// Writes `message` as one frame (its length, then its bytes) and flushes.
///
/// # Errors
/// [`ThriftError::Io`]; a message over 4 GiB is [`ThriftError::FrameTooLarge`].
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, message: &[u8]) -> Result<(), ThriftError> {
    let len = u32::try_from(message.len())
        .map_err(|_| ThriftError::FrameTooLarge { len: message.len() as u64, max: u32::MAX as usize })?;
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    writer.write_all(&out).await.map_err(ThriftError::io("write a frame"))?;
    writer.flush().await.map_err(ThriftError::io("write a frame"))
}

/// A reader over a frame's bytes that tells, through `left`, how many bytes are still unread.
struct FrameReader {
    data: Bytes,
    pos: usize,
    left: Rc<Cell<usize>>,
}

impl Read for FrameReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.left.set(self.data.len() - self.pos);
        Ok(n)
    }
}

/// The protocol library's limits for one frame: no string or container longer than the frame.
fn limits(frame_len: usize) -> TConfiguration {
    TConfiguration::builder()
        .max_message_size(Some(frame_len.max(1)))
        .max_frame_size(Some(frame_len.max(1)))
        .max_string_size(Some(frame_len))
        .max_container_size(Some(frame_len))
        .max_recursion_depth(Some(16))
        .build()
        .expect("frame and message size are equal")
}

fn input(protocol: Protocol, frame: Bytes) -> (Box<dyn TInputProtocol>, Rc<Cell<usize>>) {
    let left = Rc::new(Cell::new(frame.len()));
    let config = limits(frame.len());
    let reader = FrameReader { data: frame, pos: 0, left: left.clone() };
    let proto: Box<dyn TInputProtocol> = match protocol {
        Protocol::Compact => Box::new(TCompactInputProtocol::with_config(reader, config)),
        Protocol::Binary => Box::new(TBinaryInputProtocol::with_config(reader, false, config)),
    };
    (proto, left)
}

fn output(protocol: Protocol, out: &mut Vec<u8>) -> Box<dyn TOutputProtocol + '_> {
    match protocol {
        Protocol::Compact => Box::new(TCompactOutputProtocol::new(out)),
        Protocol::Binary => Box::new(TBinaryOutputProtocol::new(out, true)),
    }
}

/// The fewest bytes one element of `ty` takes in `protocol` (for checking a declared count
/// against the bytes left).
fn min_size(protocol: Protocol, ty: TType) -> usize {
    match (protocol, ty) {
        (Protocol::Binary, TType::String) => 4,
        (Protocol::Binary, TType::I32) => 4,
        _ => 1,
    }
}

fn check_count(what: &'static str, count: i32, each: usize, left: usize) -> Result<usize, ThriftError> {
    let count_ok = usize::try_from(count).ok().filter(|&c| c.saturating_mul(each) <= left);
    count_ok.ok_or(ThriftError::ContainerTooLarge { what, count: count.into(), left })
}

/// Which of the service's methods a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `append(1: ThriftFlumeEvent event)`: one event.
    Append,
    /// `appendBatch(1: list<ThriftFlumeEvent> events)`.
    AppendBatch,
}

impl Method {
    /// The method's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Method::Append => APPEND,
            Method::AppendBatch => APPEND_BATCH,
        }
    }
}

/// The start of a call: its message header as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHeader {
    /// The method name as sent.
    pub name: String,
    /// The sequence number, echoed in the reply.
    pub seqid: i32,
    /// The method, `None` for a name the service does not have.
    pub method: Option<Method>,
}

/// Reads only the message header of a call frame (to answer an unknown method, or a malformed
/// call, with the name and sequence number it came with).
///
/// # Errors
/// [`ThriftError::WrongProtocol`], [`ThriftError::Malformed`].
pub fn call_header(protocol: Protocol, frame: Bytes) -> Result<CallHeader, ThriftError> {
    let (mut proto, _) = input(protocol, frame);
    let id = proto.read_message_begin().map_err(|e| decode_error(protocol, e))?;
    if !matches!(id.message_type, TMessageType::Call | TMessageType::OneWay) {
        return Err(ThriftError::Malformed(format!("a {} message where a call was expected", id.message_type)));
    }
    let method = match id.name.as_str() {
        APPEND => Some(Method::Append),
        APPEND_BATCH => Some(Method::AppendBatch),
        _ => None,
    };
    Ok(CallHeader { name: id.name, seqid: id.sequence_number, method })
}

/// The events of one `append` or `appendBatch` call, decoded one at a time from its frame.
///
/// Iterate to get the events in order (each `Err` ends the iteration); [`CallReader::finish`]
/// then checks the rest of the message. Decoding a frame twice (once to check all of it, once to
/// put it a batch at a time) keeps at most one batch of decoded events in memory.
pub struct CallReader {
    protocol: Protocol,
    proto: Box<dyn TInputProtocol>,
    left: Rc<Cell<usize>>,
    /// The call's header.
    pub header: CallHeader,
    /// Events not yet read.
    remaining: usize,
    /// Whether the events' field was seen (it is required).
    had_events: bool,
    failed: bool,
}

impl CallReader {
    /// Starts reading a call frame: its message header and its arguments up to the first event.
    ///
    /// # Errors
    /// [`ThriftError::WrongProtocol`], [`ThriftError::Malformed`],
    /// [`ThriftError::ContainerTooLarge`], and [`ThriftError::UnknownMethod`] (use
    /// [`call_header`] to answer it).
    pub fn new(protocol: Protocol, frame: Bytes) -> Result<CallReader, ThriftError> {
        let (mut proto, left) = input(protocol, frame);
        let err = |e| decode_error(protocol, e);
        let id = proto.read_message_begin().map_err(err)?;
        let method = match id.name.as_str() {
            APPEND => Method::Append,
            APPEND_BATCH => Method::AppendBatch,
            _ => return Err(ThriftError::UnknownMethod(id.name)),
        };
        if id.message_type != TMessageType::Call {
            return Err(ThriftError::Malformed(format!("a {} message where a call was expected", id.message_type)));
        }
        let header = CallHeader { name: id.name, seqid: id.sequence_number, method: Some(method) };
        proto.read_struct_begin().map_err(err)?;
        let mut reader = CallReader { protocol, proto, left, header, remaining: 0, had_events: false, failed: false };
        reader.next_args_field()?;
        Ok(reader)
    }

    /// The call's method.
    pub fn method(&self) -> Method {
        self.header.method.expect("a reader is made for known methods only")
    }

    /// Reads argument fields up to the events (field 1), skipping others, or to the end of the
    /// arguments.
    fn next_args_field(&mut self) -> Result<(), ThriftError> {
        let protocol = self.protocol;
        let err = |e| decode_error(protocol, e);
        loop {
            let field = self.proto.read_field_begin().map_err(err)?;
            if field.field_type == TType::Stop {
                return Ok(());
            }
            match (self.method(), field.id, field.field_type) {
                (_, Some(1), _) if self.had_events => {
                    return Err(ThriftError::Malformed("the events field appears twice".into()));
                }
                (Method::AppendBatch, Some(1), TType::List) => {
                    let list = self.proto.read_list_begin().map_err(err)?;
                    if list.element_type != TType::Struct {
                        return Err(ThriftError::Malformed(format!(
                            "appendBatch's events are a list of {:?}, not of structs",
                            list.element_type
                        )));
                    }
                    self.remaining = check_count("the list of events", list.size, 1, self.left.get())?;
                    self.had_events = true;
                    return Ok(());
                }
                (Method::Append, Some(1), TType::Struct) => {
                    self.remaining = 1;
                    self.had_events = true;
                    return Ok(());
                }
                (_, Some(1), ty) => {
                    return Err(ThriftError::Malformed(format!("the events field has type {ty:?}")));
                }
                (_, _, ty) => {
                    self.proto.skip(ty).map_err(err)?;
                    self.proto.read_field_end().map_err(err)?;
                }
            }
        }
    }

    /// Reads the rest of the message once every event was read: the end of the list and of the
    /// arguments; nothing may follow in the frame.
    ///
    /// # Errors
    /// [`ThriftError::Malformed`] (also when events are left unread or the events field is
    /// missing).
    pub fn finish(mut self) -> Result<(), ThriftError> {
        if self.failed || self.remaining > 0 {
            return Err(ThriftError::Malformed("events left unread".into()));
        }
        if !self.had_events {
            return Err(ThriftError::Malformed(format!("{} without its required events field", self.header.name)));
        }
        let protocol = self.protocol;
        let err = |e| decode_error(protocol, e);
        if self.method() == Method::AppendBatch {
            self.proto.read_list_end().map_err(err)?;
        }
        self.proto.read_field_end().map_err(err)?;
        // Fields after the events are skipped; the second time the events field is refused.
        loop {
            let field = self.proto.read_field_begin().map_err(err)?;
            if field.field_type == TType::Stop {
                break;
            }
            if field.id == Some(1) {
                return Err(ThriftError::Malformed("the events field appears twice".into()));
            }
            self.proto.skip(field.field_type).map_err(err)?;
            self.proto.read_field_end().map_err(err)?;
        }
        self.proto.read_struct_end().map_err(err)?;
        self.proto.read_message_end().map_err(err)?;
        match self.left.get() {
            0 => Ok(()),
            n => Err(ThriftError::Malformed(format!("{n} bytes after the message"))),
        }
    }

    /// Reads one `ThriftFlumeEvent` struct.
    fn read_event(&mut self) -> Result<Event, ThriftError> {
        let protocol = self.protocol;
        let err = |e| decode_error(protocol, e);
        let p = &mut self.proto;
        p.read_struct_begin().map_err(err)?;
        let mut headers: Option<Headers> = None;
        let mut body: Option<Bytes> = None;
        loop {
            let field = p.read_field_begin().map_err(err)?;
            match (field.id, field.field_type) {
                (_, TType::Stop) => break,
                (Some(1), TType::Map) => {
                    let map = p.read_map_begin().map_err(err)?;
                    let each = 2 * min_size(protocol, TType::String);
                    let n = check_count("a map of headers", map.size, each, self.left.get())?;
                    if n > 0 && (map.key_type != Some(TType::String) || map.value_type != Some(TType::String)) {
                        return Err(ThriftError::Malformed("headers are not a map<string, string>".into()));
                    }
                    let mut h = Headers::new();
                    for _ in 0..n {
                        let key = p.read_string().map_err(err)?;
                        let value = p.read_string().map_err(err)?;
                        h.insert(key, value);
                    }
                    p.read_map_end().map_err(err)?;
                    headers = Some(h);
                }
                (Some(2), TType::String) => body = Some(Bytes::from(p.read_bytes().map_err(err)?)),
                (Some(id @ (1 | 2)), ty) => {
                    return Err(ThriftError::Malformed(format!("ThriftFlumeEvent field {id} has type {ty:?}")));
                }
                (_, ty) => p.skip(ty).map_err(err)?,
            }
            p.read_field_end().map_err(err)?;
        }
        p.read_struct_end().map_err(err)?;
        match (headers, body) {
            (Some(headers), Some(body)) => Ok(Event { headers, body }),
            (None, _) => Err(ThriftError::Malformed("ThriftFlumeEvent without its required headers".into())),
            (_, None) => Err(ThriftError::Malformed("ThriftFlumeEvent without its required body".into())),
        }
    }

    /// How many events are left to read.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for CallReader {
    type Item = Result<Event, ThriftError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let event = self.read_event();
        self.failed = event.is_err();
        Some(event)
    }
}

fn write_event(p: &mut dyn TOutputProtocol, event: &Event) -> thrift::Result<()> {
    p.write_struct_begin(&TStructIdentifier::new("ThriftFlumeEvent"))?;
    p.write_field_begin(&TFieldIdentifier::new("headers", TType::Map, 1))?;
    p.write_map_begin(&TMapIdentifier::new(TType::String, TType::String, event.headers.len() as i32))?;
    for (k, v) in &event.headers {
        p.write_string(k)?;
        p.write_string(v)?;
    }
    p.write_map_end()?;
    p.write_field_end()?;
    p.write_field_begin(&TFieldIdentifier::new("body", TType::String, 2))?;
    p.write_bytes(&event.body)?;
    p.write_field_end()?;
    p.write_field_stop()?;
    p.write_struct_end()
}

/// The message (without its frame length) of an `appendBatch` call carrying `events`, or of an
/// `append` call when `method` is [`Method::Append`] (then `events` holds exactly one event).
pub fn encode_call(protocol: Protocol, method: Method, seqid: i32, events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + events.iter().map(|e| e.encoded_len() + 16).sum::<usize>());
    let mut p = output(protocol, &mut out);
    let written = (|| -> thrift::Result<()> {
        p.write_message_begin(&TMessageIdentifier::new(method.name(), TMessageType::Call, seqid))?;
        p.write_struct_begin(&TStructIdentifier::new(format!("{}_args", method.name())))?;
        match method {
            Method::Append => {
                p.write_field_begin(&TFieldIdentifier::new("event", TType::Struct, 1))?;
                write_event(p.as_mut(), &events[0])?;
            }
            Method::AppendBatch => {
                p.write_field_begin(&TFieldIdentifier::new("events", TType::List, 1))?;
                p.write_list_begin(&TListIdentifier::new(TType::Struct, events.len() as i32))?;
                for e in events {
                    write_event(p.as_mut(), e)?;
                }
                p.write_list_end()?;
            }
        }
        p.write_field_end()?;
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.write_message_end()?;
        p.flush()
    })();
    written.expect("writing to memory does not fail");
    drop(p);
    out
}

/// The message of the reply to call `name` / `seqid`: `{0: Status success}`.
pub fn encode_reply(protocol: Protocol, name: &str, seqid: i32, status: Status) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    let mut p = output(protocol, &mut out);
    let written = (|| -> thrift::Result<()> {
        p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Reply, seqid))?;
        p.write_struct_begin(&TStructIdentifier::new(format!("{name}_result")))?;
        p.write_field_begin(&TFieldIdentifier::new("success", TType::I32, 0))?;
        p.write_i32(status.value())?;
        p.write_field_end()?;
        p.write_field_stop()?;
        p.write_struct_end()?;
        p.write_message_end()?;
        p.flush()
    })();
    written.expect("writing to memory does not fail");
    drop(p);
    out
}

/// The message of a `TApplicationException` answering call `name` / `seqid` (an unknown method:
/// kind `UnknownMethod`; a malformed call: `ProtocolError`), as Thrift's generated processors
/// answer them.
pub fn encode_exception(
    protocol: Protocol,
    name: &str,
    seqid: i32,
    kind: ApplicationErrorKind,
    message: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + name.len() + message.len());
    let mut p = output(protocol, &mut out);
    let written = (|| -> thrift::Result<()> {
        p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Exception, seqid))?;
        thrift::Error::write_application_error_to_out_protocol(&ApplicationError::new(kind, message), p.as_mut())?;
        p.write_message_end()?;
        p.flush()
    })();
    written.expect("writing to memory does not fail");
    drop(p);
    out
}

/// Decodes the reply to call `name` / `seqid`: its `Status`.
///
/// # Errors
/// [`ThriftError::Application`] for an exception, [`ThriftError::UnexpectedReply`] for another
/// call's reply, [`ThriftError::Malformed`] / [`ThriftError::WrongProtocol`].
pub fn decode_reply(protocol: Protocol, frame: Bytes, name: &str, seqid: i32) -> Result<Status, ThriftError> {
    let (mut p, _) = input(protocol, frame);
    let err = |e| decode_error(protocol, e);
    let id = p.read_message_begin().map_err(err)?;
    if id.name != name || id.sequence_number != seqid {
        return Err(ThriftError::UnexpectedReply(format!(
            "{} #{} answers {name} #{seqid}",
            id.name, id.sequence_number
        )));
    }
    match id.message_type {
        TMessageType::Reply => {}
        TMessageType::Exception => {
            // The crate's reader expects well-formed fields; read it our way.
            let (kind, message) = read_exception(p.as_mut()).map_err(err)?;
            return Err(ThriftError::Application { kind, message });
        }
        other => return Err(ThriftError::UnexpectedReply(format!("a {other} message answers {name}"))),
    }
    p.read_struct_begin().map_err(err)?;
    let mut status = None;
    loop {
        let field = p.read_field_begin().map_err(err)?;
        match (field.id, field.field_type) {
            (_, TType::Stop) => break,
            (Some(0), TType::I32) => status = Some(Status::of(p.read_i32().map_err(err)?)),
            (_, ty) => p.skip(ty).map_err(err)?,
        }
        p.read_field_end().map_err(err)?;
    }
    p.read_struct_end().map_err(err)?;
    p.read_message_end().map_err(err)?;
    status.ok_or_else(|| ThriftError::Malformed(format!("the reply to {name} has no status")))
}

fn read_exception(p: &mut dyn TInputProtocol) -> thrift::Result<(ApplicationErrorKind, String)> {
    let mut message = String::new();
    let mut kind = ApplicationErrorKind::Unknown;
    p.read_struct_begin()?;
    loop {
        let field = p.read_field_begin()?;
        match (field.id, field.field_type) {
            (_, TType::Stop) => break,
            (Some(1), TType::String) => message = p.read_string()?,
            (Some(2), TType::I32) => {
                kind = ApplicationErrorKind::try_from(p.read_i32()?).unwrap_or(ApplicationErrorKind::Unknown)
            }
            (_, ty) => p.skip(ty)?,
        }
        p.read_field_end()?;
    }
    p.read_struct_end()?;
    Ok((kind, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<Event> {
        vec![
            Event::new("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating")
                .with_header("host", "edge-1"),
            Event::new(Bytes::from_static(b"\x00\xffbinary body")),
            Event::new(""),
        ]
    }

    fn read_all(protocol: Protocol, message: Vec<u8>) -> Result<(CallHeader, Vec<Event>), ThriftError> {
        let mut reader = CallReader::new(protocol, Bytes::from(message))?;
        let got = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        let header = reader.header.clone();
        reader.finish()?;
        Ok((header, got))
    }

    #[test]
    fn calls_round_trip_in_both_protocols() {
        for protocol in [Protocol::Compact, Protocol::Binary] {
            let (header, got) = read_all(protocol, encode_call(protocol, Method::AppendBatch, 7, &events())).unwrap();
            assert_eq!(header, CallHeader { name: "appendBatch".into(), seqid: 7, method: Some(Method::AppendBatch) });
            assert_eq!(got, events());
            let one = &events()[..1];
            let (header, got) = read_all(protocol, encode_call(protocol, Method::Append, -3, one)).unwrap();
            assert_eq!((header.seqid, header.method), (-3, Some(Method::Append)));
            assert_eq!(got, one);
        }
    }

    #[test]
    fn replies_and_exceptions_decode() {
        for protocol in [Protocol::Compact, Protocol::Binary] {
            let reply = encode_reply(protocol, APPEND_BATCH, 9, Status::Failed);
            assert_eq!(decode_reply(protocol, reply.clone().into(), APPEND_BATCH, 9).unwrap(), Status::Failed);
            let other = decode_reply(protocol, reply.into(), APPEND_BATCH, 10).unwrap_err();
            assert_eq!(other.kind(), ThriftErrorKind::Remote, "{other}");
            let exc = encode_exception(protocol, "nope", 2, ApplicationErrorKind::UnknownMethod, "no such method");
            match decode_reply(protocol, exc.into(), "nope", 2) {
                Err(ThriftError::Application { kind: ApplicationErrorKind::UnknownMethod, message }) => {
                    assert_eq!(message, "no such method")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_wrong_protocol_is_named() {
        let binary = encode_call(Protocol::Binary, Method::AppendBatch, 1, &events());
        let e = CallReader::new(Protocol::Compact, binary.into()).err().unwrap();
        assert_eq!(e.kind(), ThriftErrorKind::WrongProtocol, "{e}");
        let compact = encode_call(Protocol::Compact, Method::AppendBatch, 1, &events());
        let e = CallReader::new(Protocol::Binary, compact.into()).err().unwrap();
        assert!(matches!(e.kind(), ThriftErrorKind::WrongProtocol | ThriftErrorKind::Malformed), "{e}");
    }

    #[test]
    fn a_huge_declared_list_is_refused_before_reading() {
        // Compact: message header, args struct, field 1 list of structs with a count of 2^31 - 1.
        let mut m = vec![0x82, 0x21, 0x01, 11];
        m.extend_from_slice(b"appendBatch");
        m.push(0x19); // field delta 1, type list
        m.push(0xfc); // size follows (15 << 4), element type struct (12)
        m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // varint 2^31 - 1
        let e = CallReader::new(Protocol::Compact, m.into()).err().unwrap();
        assert_eq!(e.kind(), ThriftErrorKind::TooLarge, "{e}");
        assert!(e.to_string().contains("2147483647"), "{e}");
    }

    #[test]
    fn truncated_and_malformed_messages_are_errors() {
        for protocol in [Protocol::Compact, Protocol::Binary] {
            let full = encode_call(protocol, Method::AppendBatch, 1, &events());
            for cut in 1..full.len() {
                let r = read_all(protocol, full[..cut].to_vec());
                assert!(r.is_err(), "{protocol:?} cut at {cut} of {} decoded", full.len());
            }
            let mut extra = full.clone();
            extra.push(0);
            assert_eq!(read_all(protocol, extra).unwrap_err().kind(), ThriftErrorKind::Malformed);
        }
        // An event without its body (compact): struct with only an empty headers map.
        let mut m = vec![0x82, 0x21, 0x01, 6];
        m.extend_from_slice(b"append");
        m.extend_from_slice(&[0x1c, 0x1b, 0x00, 0x00, 0x00]);
        let e = read_all(Protocol::Compact, m).unwrap_err();
        assert!(e.to_string().contains("required body"), "{e}");
    }

    #[actix_rt::test]
    async fn frames_are_limited_before_allocation() {
        let mut input: &[u8] = &[0x80, 0, 0, 0];
        let e = read_frame(&mut input, DEFAULT_MAX_FRAME_BYTES).await.unwrap_err();
        assert!(matches!(e, ThriftError::FrameTooLarge { len: 2147483648, .. }), "{e}");
        let mut input: &[u8] = &[0, 0, 0, 10, 1, 2, 3];
        let e = read_frame(&mut input, 100).await.unwrap_err();
        assert!(matches!(e, ThriftError::Truncated { expected: 10, got: 3 }), "{e}");
        let mut input: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut input, 100).await, Err(ThriftError::Truncated { expected: 4, got: 2 })));
        let mut input: &[u8] = &[];
        assert!(read_frame(&mut input, 100).await.unwrap().is_none());
        let mut out = Vec::new();
        write_frame(&mut out, b"abc").await.unwrap();
        let mut input: &[u8] = &out;
        assert_eq!(read_frame(&mut input, 100).await.unwrap().unwrap(), Bytes::from_static(b"abc"));
    }
}
