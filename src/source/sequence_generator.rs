//! `SequenceGenerator`: events whose bodies are `0`, `1`, `2`, ... as Flume's `seq` source.

use serde::Deserialize;

use super::{SourceContext, SourceError};
use crate::event::Event;

/// `SequenceGenerator(total: 1000000)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SequenceGeneratorConfig {
    /// How many events to generate, then the source has reached its end (Flume's `totalEvents`).
    /// Default: endless (2^64 - 1).
    #[serde(default = "default_total")]
    pub total: u64,
}

fn default_total() -> u64 {
    u64::MAX
}

/// Generates `total` events in batches of the source's `batch_size`.
///
/// # Errors
/// When a put fails for good.
pub async fn run(config: SequenceGeneratorConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let mut next = 0u64;
    while next < config.total {
        if ctx.is_stopping() {
            return Ok(());
        }
        let end = next.saturating_add(ctx.batch_size as u64).min(config.total);
        let batch: Vec<Event> = (next..end).map(|i| Event::new(i.to_string())).collect();
        ctx.put(batch).await?;
        next = end;
    }
    Ok(())
}
