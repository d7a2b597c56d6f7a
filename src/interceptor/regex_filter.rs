//! `RegexFilter`: keeps or drops events by a regex on the body, as Flume's `RegexFilteringInterceptor`.

use regex::bytes::Regex;
use serde::Deserialize;

use super::Intercept;
use crate::event::Event;

/// `RegexFilter(regex: "ERROR|WARN", exclude_events: false)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexFilterConfig {
    /// The regex matched against the body (Flume's `regex`).
    pub regex: String,
    /// `false`: keep only matching events; `true`: drop matching events (Flume's `excludeEvents`).
    /// Default `false`.
    #[serde(default)]
    pub exclude_events: bool,
}

/// A built `RegexFilter` interceptor.
pub struct RegexFilter {
    regex: Regex,
    exclude: bool,
}

impl RegexFilterConfig {
    /// Compiles the regex.
    ///
    /// # Errors
    /// When `regex` is not a valid regex.
    pub fn build(&self) -> Result<RegexFilter, String> {
        let regex = Regex::new(&self.regex).map_err(|e| format!("RegexFilter regex: {e}"))?;
        Ok(RegexFilter { regex, exclude: self.exclude_events })
    }
}

impl Intercept for RegexFilter {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        let before = batch.len();
        batch.retain(|e| self.regex.is_match(&e.body) != self.exclude);
        (before - batch.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Vec<Event> {
        vec![
            Event::new("2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774] - Notification time out: 3200"),
            Event::new("2015-07-29 19:04:12,394 - WARN  [RecvWorker:188978561024:QuorumCnxManager$RecvWorker@765] - Interrupting SendWorker"),
        ]
    }

    #[test]
    fn keeps_or_excludes_matches_and_counts_the_rest() {
        let mut b = batch();
        let dropped =
            RegexFilterConfig { regex: " WARN ".into(), exclude_events: false }.build().unwrap().intercept(&mut b);
        assert_eq!((dropped, b.len()), (1, 1));
        assert!(b[0].body.starts_with(b"2015-07-29 19:04:12"));
        let mut b = batch();
        let dropped =
            RegexFilterConfig { regex: " WARN ".into(), exclude_events: true }.build().unwrap().intercept(&mut b);
        assert_eq!((dropped, b.len()), (1, 1));
        assert!(b[0].body.starts_with(b"2015-07-29 17:41:44"));
    }
}
