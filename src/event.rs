//! Events and batches. Their binary codec is [`crate::codec::events`].
//!
//! An [`Event`] is what flows through an agent: ordered string headers plus an opaque body. Bodies
//! are [`Bytes`], so cloning a batch to replicate it into several channels shares the bodies
//! instead of copying them. Events always travel in batches (`Vec<Event>`), never one by one.

use std::collections::BTreeMap;

use bytes::Bytes;

pub use crate::codec::events::CodecError;

/// Event headers: string keys to string values, ordered by key (as Flume's `Map<String, String>`).
pub type Headers = BTreeMap<String, String>;

/// One event: headers plus an opaque body (a log line without its line ending, a datagram, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// Headers set by the source and by interceptors (`host`, `timestamp`, `file`, ...).
    pub headers: Headers,
    /// The payload, shared (not copied) when the event is cloned.
    pub body: Bytes,
}

impl Event {
    /// An event with no headers.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Event { headers: Headers::new(), body: body.into() }
    }

    /// Adds or replaces a header, returning the event (builder style).
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// The total body bytes of a batch.
pub fn body_bytes(batch: &[Event]) -> u64 {
    batch.iter().map(|e| e.body.len() as u64).sum()
}
