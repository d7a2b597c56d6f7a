//! Reading a topology file: RON parsing with positions, per-component decoding, path resolution.
//!
//! The file is parsed in two steps so that every error names its component: first the top level,
//! keeping each component's text as a [`RawValue`]; then each component on its own. A component's
//! error position is relative to its text, and is moved back to the file's line:column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ron::extensions::Extensions;
use ron::value::RawValue;
use serde::Deserialize;

use super::{validate, ChannelConfig, Monitoring, SinkGroupConfig, Topology, TopologyError, TopologyErrors};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "Topology")]
struct RawTopology<'a> {
    agent: String,
    #[serde(default)]
    monitoring: Option<Monitoring>,
    #[serde(default, borrow)]
    sources: BTreeMap<String, &'a RawValue>,
    #[serde(default, borrow)]
    channels: BTreeMap<String, &'a RawValue>,
    #[serde(default, borrow)]
    sinks: BTreeMap<String, &'a RawValue>,
    #[serde(default, borrow)]
    sink_groups: BTreeMap<String, &'a RawValue>,
}

/// Where each component's definition starts, by `(kind, name)`.
pub(super) type Spans = BTreeMap<(&'static str, String), (usize, usize)>;

fn options() -> ron::Options {
    ron::Options::default().with_default_extension(Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Reads, parses and validates the topology file at `path`.
///
/// Relative paths inside it are resolved against the file's folder.
///
/// # Errors
/// Every problem found, each naming the file, line:column and component.
pub fn load(path: &Path) -> Result<Topology, TopologyErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        TopologyErrors(vec![TopologyError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            component: None,
            message: format!("cannot read the topology file: {e}"),
        }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    load_str(&text, path, &base)
}

/// Parses and validates topology `text`, reported as coming from `file`, with relative paths
/// resolved against `base`.
///
/// # Errors
/// Every problem found, each naming `file`, line:column and component.
pub fn load_str(text: &str, file: &Path, base: &Path) -> Result<Topology, TopologyErrors> {
    let err = |pos: (usize, usize), component: Option<String>, message: String| TopologyError {
        file: file.to_path_buf(),
        line: pos.0,
        col: pos.1,
        component,
        message,
    };
    let raw: RawTopology = options().from_str(text).map_err(|e| {
        let pos = (e.position.line, e.position.col);
        TopologyErrors(vec![err(pos, enclosing_component(text, pos), e.code.to_string())])
    })?;

    let mut errors = Vec::new();
    let mut spans = Spans::new();
    let sources = decode_all::<SourceConfig>(text, "source", &raw.sources, &mut spans, &mut errors, &err);
    let channels = decode_all::<ChannelConfig>(text, "channel", &raw.channels, &mut spans, &mut errors, &err);
    let sinks = decode_all::<SinkConfig>(text, "sink", &raw.sinks, &mut spans, &mut errors, &err);
    let sink_groups =
        decode_all::<SinkGroupConfig>(text, "sink group", &raw.sink_groups, &mut spans, &mut errors, &err);
    if !errors.is_empty() {
        return Err(TopologyErrors(errors));
    }
    let mut topology = Topology {
        agent: raw.agent,
        monitoring: raw.monitoring,
        sources,
        channels,
        sinks,
        sink_groups,
        file: file.to_path_buf(),
    };
    resolve_paths(&mut topology, base);
    let problems = validate::validate(&topology);
    if problems.is_empty() {
        Ok(topology)
    } else {
        Err(TopologyErrors(
            problems
                .into_iter()
                .map(|(kind, name, message)| {
                    let pos = spans.get(&(kind, name.clone())).copied().unwrap_or((1, 1));
                    err(pos, Some(format!("{kind} \"{name}\"")), message)
                })
                .collect(),
        ))
    }
}

fn decode_all<T: for<'de> Deserialize<'de>>(
    text: &str,
    kind: &'static str,
    raws: &BTreeMap<String, &RawValue>,
    spans: &mut Spans,
    errors: &mut Vec<TopologyError>,
    err: &dyn Fn((usize, usize), Option<String>, String) -> TopologyError,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (name, raw) in raws {
        let (start, trimmed) = raw_start(text, raw);
        spans.insert((kind, name.clone()), start);
        match options().from_str::<T>(trimmed) {
            Ok(value) => {
                out.insert(name.clone(), value);
            }
            Err(e) => {
                let pos = shift(start, (e.position.line, e.position.col));
                errors.push(err(pos, Some(format!("{kind} \"{name}\"")), e.code.to_string()));
            }
        }
    }
    out
}

/// The file position where `raw`'s text (trimmed of leading white space) starts, and that text.
fn raw_start<'a>(text: &str, raw: &'a RawValue) -> ((usize, usize), &'a str) {
    let full = raw.get_ron();
    let trimmed = full.trim_start();
    let offset = (trimmed.as_ptr() as usize).saturating_sub(text.as_ptr() as usize).min(text.len());
    (position_of(text, offset), trimmed)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position_of(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Moves a position relative to a component's text to a position in the file.
fn shift(start: (usize, usize), rel: (usize, usize)) -> (usize, usize) {
    if rel.0 <= 1 {
        (start.0, start.1 + rel.1.saturating_sub(1))
    } else {
        (start.0 + rel.0 - 1, rel.1)
    }
}

/// Best effort, for syntax errors found before components are split: the last `"name": Kind(` or
/// `"name": (` opened before `pos`, with the section it sits in.
fn enclosing_component(text: &str, pos: (usize, usize)) -> Option<String> {
    let offset: usize = text.split_inclusive('\n').take(pos.0.saturating_sub(1)).map(str::len).sum::<usize>()
        + text
            .split_inclusive('\n')
            .nth(pos.0.saturating_sub(1))
            .map_or(0, |l| l.char_indices().nth(pos.1.saturating_sub(1)).map_or(l.len(), |(i, _)| i));
    let before = &text[..offset.min(text.len())];
    let component = regex::Regex::new(r#""([^"]+)"\s*:\s*[A-Za-z]*\s*\("#).expect("static regex");
    let section = regex::Regex::new(r"\b(sources|channels|sinks|sink_groups)\s*:").expect("static regex");
    let name = component.captures_iter(before).last()?.get(1)?.as_str().to_string();
    let kind = match section.captures_iter(before).last().map(|c| c.get(1).map_or("", |m| m.as_str()).to_string()) {
        Some(s) if s == "sources" => "source",
        Some(s) if s == "channels" => "channel",
        Some(s) if s == "sinks" => "sink",
        Some(s) if s == "sink_groups" => "sink group",
        _ => return Some(format!("\"{name}\"")),
    };
    Some(format!("{kind} \"{name}\""))
}

fn resolve_paths(topology: &mut Topology, base: &Path) {
    for source in topology.sources.values_mut() {
        source.kind.resolve_paths(base);
    }
    for channel in topology.channels.values_mut() {
        if let ChannelConfig::RocksDb(c) = channel {
            c.dir = super::resolve(base, &c.dir);
        }
    }
    for sink in topology.sinks.values_mut() {
        sink.kind.resolve_paths(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_shift_from_component_to_file() {
        assert_eq!(shift((10, 5), (1, 3)), (10, 7));
        assert_eq!(shift((10, 5), (3, 2)), (12, 2));
        assert_eq!(position_of("ab\ncd", 4), (2, 2));
    }
}
