//! `Timestamp`: the time of interception, as Flume's `TimestampInterceptor`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::{set_header, Intercept};
use crate::event::Event;

/// `Timestamp(header: "timestamp", preserve_existing: false)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimestampConfig {
    /// The header to set, to milliseconds since the Unix epoch. Default `"timestamp"`.
    pub header: String,
    /// Keep a value the event already has. Default `false`.
    pub preserve_existing: bool,
}

impl Default for TimestampConfig {
    fn default() -> Self {
        TimestampConfig { header: "timestamp".into(), preserve_existing: false }
    }
}

impl Intercept for TimestampConfig {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()).to_string();
        set_header(batch, &self.header, self.preserve_existing, || millis.clone());
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_every_event_with_epoch_millis() {
        let mut batch = vec![Event::new("a"), Event::new("b").with_header("timestamp", "1")];
        TimestampConfig::default().intercept(&mut batch);
        let t: u128 = batch[0].headers["timestamp"].parse().unwrap();
        assert!(t > 1_600_000_000_000);
        assert_eq!(batch[0].headers["timestamp"], batch[1].headers["timestamp"]);
        let mut kept = vec![Event::new("b").with_header("timestamp", "1")];
        TimestampConfig { preserve_existing: true, ..Default::default() }.intercept(&mut kept);
        assert_eq!(kept[0].headers["timestamp"], "1");
    }
}
