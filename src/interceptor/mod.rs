//! Interceptors: plain functions on a batch, run inside the source before the channel selector.
//!
//! As Flume's interceptors, each one adds, changes or removes headers, or filters events out.
//! A source's `interceptors: [...]` list runs in order. Events filtered out are counted in the
//! source's `EventDroppedByFilterCount`, never dropped silently.

mod host;
mod regex_extractor;
mod regex_filter;
mod remove_header;
mod static_header;
mod timestamp;
mod uuid;

use serde::Deserialize;

pub use host::HostConfig;
pub use regex_extractor::RegexExtractorConfig;
pub use regex_filter::RegexFilterConfig;
pub use remove_header::RemoveHeaderConfig;
pub use static_header::StaticConfig;
pub use timestamp::TimestampConfig;
pub use uuid::UuidConfig;

use crate::event::Event;

/// One interceptor in a source's `interceptors: [...]` list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub enum InterceptorConfig {
    /// Adds the time of interception in milliseconds since the epoch (Flume's `timestamp`).
    Timestamp(TimestampConfig),
    /// Adds the agent's host name or IP address (Flume's `host`).
    Host(HostConfig),
    /// Adds a fixed header (Flume's `static`).
    Static(StaticConfig),
    /// Removes headers by name, list or regex (Flume's `remove_header`).
    RemoveHeader(RemoveHeaderConfig),
    /// Keeps (or drops) events whose body matches a regex (Flume's `regex_filter`).
    RegexFilter(RegexFilterConfig),
    /// Copies regex capture groups of the body into headers (Flume's `regex_extractor`).
    RegexExtractor(RegexExtractorConfig),
    /// Adds a random UUID (Flume's `UUIDInterceptor`).
    Uuid(UuidConfig),
}

/// A built interceptor.
pub trait Intercept: Send + Sync {
    /// Changes `batch` in place; returns how many events it removed.
    fn intercept(&self, batch: &mut Vec<Event>) -> u64;
}

impl InterceptorConfig {
    /// Builds the interceptor.
    ///
    /// # Errors
    /// A message when a regex does not compile or an option is out of range.
    pub fn build(&self) -> Result<Box<dyn Intercept>, String> {
        Ok(match self {
            InterceptorConfig::Timestamp(c) => Box::new(c.clone()),
            InterceptorConfig::Host(c) => Box::new(c.build()?),
            InterceptorConfig::Static(c) => Box::new(c.clone()),
            InterceptorConfig::RemoveHeader(c) => Box::new(c.build()?),
            InterceptorConfig::RegexFilter(c) => Box::new(c.build()?),
            InterceptorConfig::RegexExtractor(c) => Box::new(c.build()?),
            InterceptorConfig::Uuid(c) => Box::new(c.clone()),
        })
    }
}

/// A source's interceptors, in order.
#[derive(Default)]
pub struct InterceptorChain(Vec<Box<dyn Intercept>>);

impl InterceptorChain {
    /// Builds every interceptor of `configs`.
    ///
    /// # Errors
    /// The first interceptor that does not build.
    pub fn build(configs: &[InterceptorConfig]) -> Result<Self, String> {
        configs.iter().map(InterceptorConfig::build).collect::<Result<Vec<_>, _>>().map(InterceptorChain)
    }

    /// Runs every interceptor on `batch`; returns how many events were filtered out.
    pub fn apply(&self, batch: &mut Vec<Event>) -> u64 {
        self.0.iter().map(|i| i.intercept(batch)).sum()
    }
}

/// Sets `key` to `value()` on every event, keeping existing values when `preserve_existing`.
pub(crate) fn set_header(batch: &mut [Event], key: &str, preserve_existing: bool, mut value: impl FnMut() -> String) {
    for event in batch {
        if preserve_existing && event.headers.contains_key(key) {
            continue;
        }
        event.headers.insert(key.to_string(), value());
    }
}

fn default_true() -> bool {
    true
}
