//! `Uuid`: a random UUID per event, as Flume's `UUIDInterceptor`.

use serde::Deserialize;

use super::{default_true, set_header, Intercept};
use crate::event::Event;

/// `Uuid(header: "id", preserve_existing: true, prefix: "")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UuidConfig {
    /// The header to set. Default `"id"`.
    pub header: String,
    /// Keep a value the event already has. Default `true` (as Flume).
    #[serde(default = "default_true")]
    pub preserve_existing: bool,
    /// Text put before the UUID. Default `""`.
    pub prefix: String,
}

impl Default for UuidConfig {
    fn default() -> Self {
        UuidConfig { header: "id".into(), preserve_existing: true, prefix: String::new() }
    }
}

impl Intercept for UuidConfig {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        set_header(batch, &self.header, self.preserve_existing, || format!("{}{}", self.prefix, uuid::Uuid::new_v4()));
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_gets_a_distinct_id() {
        let mut batch: Vec<Event> = (0..100).map(|i| Event::new(format!("line {i}"))).collect();
        UuidConfig { prefix: "edge-".into(), ..Default::default() }.intercept(&mut batch);
        let ids: std::collections::BTreeSet<_> = batch.iter().map(|e| e.headers["id"].clone()).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|id| id.starts_with("edge-") && id.len() == 41));
    }
}
