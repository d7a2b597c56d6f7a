//! `RemoveHeader`: removes headers, as Flume's `RemoveHeaderInterceptor`.

use regex::Regex;
use serde::Deserialize;

use super::Intercept;
use crate::event::Event;

/// `RemoveHeader(name: Some("tmp"), from_list: Some("a,b"), list_separator: ",", matching: Some("^x-"))`.
///
/// Every header named by any of the three options is removed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemoveHeaderConfig {
    /// One header name (Flume's `withName`). Default none.
    pub name: Option<String>,
    /// Several names separated by `list_separator` (Flume's `fromList`). Default none.
    pub from_list: Option<String>,
    /// Separator of `from_list`, a regex (Flume's `fromListSeparator`). Default `"\\s*,\\s*"`.
    pub list_separator: String,
    /// A regex; every header whose name matches is removed (Flume's `matching`). Default none.
    pub matching: Option<String>,
}

impl Default for RemoveHeaderConfig {
    fn default() -> Self {
        RemoveHeaderConfig { name: None, from_list: None, list_separator: r"\s*,\s*".into(), matching: None }
    }
}

/// A built `RemoveHeader` interceptor.
pub struct RemoveHeader {
    names: Vec<String>,
    matching: Option<Regex>,
}

impl RemoveHeaderConfig {
    /// Compiles the regexes.
    ///
    /// # Errors
    /// When `list_separator` or `matching` is not a valid regex.
    pub fn build(&self) -> Result<RemoveHeader, String> {
        let sep = Regex::new(&self.list_separator).map_err(|e| format!("RemoveHeader list_separator: {e}"))?;
        let mut names: Vec<String> = self.name.iter().cloned().collect();
        if let Some(list) = &self.from_list {
            names.extend(sep.split(list).filter(|s| !s.is_empty()).map(str::to_string));
        }
        let matching =
            self.matching.as_deref().map(Regex::new).transpose().map_err(|e| format!("RemoveHeader matching: {e}"))?;
        Ok(RemoveHeader { names, matching })
    }
}

impl Intercept for RemoveHeader {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        for event in batch.iter_mut() {
            for n in &self.names {
                event.headers.remove(n);
            }
            if let Some(re) = &self.matching {
                event.headers.retain(|k, _| !re.is_match(k));
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_by_name_list_and_regex() {
        let config = RemoveHeaderConfig {
            name: Some("a".into()),
            from_list: Some("b, c".into()),
            matching: Some("^x-".into()),
            ..Default::default()
        };
        let mut batch = vec![Event::new("l")
            .with_header("a", "1")
            .with_header("b", "2")
            .with_header("c", "3")
            .with_header("x-trace", "4")
            .with_header("keep", "5")];
        config.build().unwrap().intercept(&mut batch);
        assert_eq!(batch[0].headers.keys().collect::<Vec<_>>(), vec!["keep"]);
    }
}
