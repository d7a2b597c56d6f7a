//! `Static`: a fixed header, as Flume's `StaticInterceptor`.

use serde::Deserialize;

use super::{default_true, set_header, Intercept};
use crate::event::Event;

/// `Static(key: "dc", value: "eu-1", preserve_existing: true)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// The header name.
    pub key: String,
    /// The header value.
    pub value: String,
    /// Keep a value the event already has. Default `true` (as Flume).
    #[serde(default = "default_true")]
    pub preserve_existing: bool,
}

impl Intercept for StaticConfig {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        set_header(batch, &self.key, self.preserve_existing, || self.value.clone());
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_header_and_keeps_existing_values() {
        let config = StaticConfig { key: "dc".into(), value: "eu-1".into(), preserve_existing: true };
        let mut batch = vec![Event::new("x"), Event::new("y").with_header("dc", "us-2")];
        config.intercept(&mut batch);
        assert_eq!(batch[0].headers["dc"], "eu-1");
        assert_eq!(batch[1].headers["dc"], "us-2");
    }
}
