//! `RegexExtractor`: capture groups of the body into headers, as Flume's `RegexExtractorInterceptor`.

use regex::bytes::Regex;
use serde::Deserialize;

use super::Intercept;
use crate::event::Event;

/// `RegexExtractor(regex: "\\b(INFO|WARN|ERROR)\\b", headers: ["level"])`.
///
/// Capture group *i* (1-based) goes to `headers[i-1]` (Flume's `serializers`); a body that does
/// not match, or a group that did not take part, leaves the header unset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexExtractorConfig {
    /// The regex matched against the body; the first match counts.
    pub regex: String,
    /// Header names for capture groups 1, 2, ...
    pub headers: Vec<String>,
}

/// A built `RegexExtractor` interceptor.
pub struct RegexExtractor {
    regex: Regex,
    headers: Vec<String>,
}

impl RegexExtractorConfig {
    /// Compiles the regex and checks there is a group for every header.
    ///
    /// # Errors
    /// When `regex` is invalid, or has fewer capture groups than `headers` names.
    pub fn build(&self) -> Result<RegexExtractor, String> {
        let regex = Regex::new(&self.regex).map_err(|e| format!("RegexExtractor regex: {e}"))?;
        let groups = regex.captures_len() - 1;
        if self.headers.is_empty() {
            return Err("RegexExtractor headers is empty".into());
        }
        if groups < self.headers.len() {
            return Err(format!(
                "RegexExtractor regex has {groups} capture groups but {} headers are named",
                self.headers.len()
            ));
        }
        Ok(RegexExtractor { regex, headers: self.headers.clone() })
    }
}

impl Intercept for RegexExtractor {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        for event in batch.iter_mut() {
            let Some(caps) = self.regex.captures(&event.body) else { continue };
            for (i, name) in self.headers.iter().enumerate() {
                if let Some(m) = caps.get(i + 1) {
                    event.headers.insert(name.clone(), String::from_utf8_lossy(m.as_bytes()).into_owned());
                }
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_level_of_real_lines() {
        let config =
            RegexExtractorConfig { regex: r"\b(INFO|WARN|ERROR|FATAL)\b".into(), headers: vec!["level".into()] };
        let mut batch = vec![
            Event::new("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating"),
            Event::new("[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6"),
        ];
        config.build().unwrap().intercept(&mut batch);
        assert_eq!(batch[0].headers["level"], "INFO");
        assert!(!batch[1].headers.contains_key("level"));
    }

    #[test]
    fn too_few_groups_is_an_error() {
        let config = RegexExtractorConfig { regex: "(a)".into(), headers: vec!["x".into(), "y".into()] };
        assert!(config.build().is_err());
    }
}
