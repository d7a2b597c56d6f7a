//! `Null`: discards every event, as Flume's null sink (for tests and benchmarks).

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::event::Event;

/// `Null()`: no options.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct NullConfig {}

/// The null sink.
pub struct NullSink;

impl Sink for NullSink {
    fn deliver<'a>(&'a mut self, _: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}
