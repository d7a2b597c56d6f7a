//! Reading a topology file: RON parsing with positions, per-component decoding, path resolution.
//!
//! The file is parsed in two steps so that every error names its component: first the top level,
//! keeping each component's text as a [`RawValue`]; then each component on its own, so that one
//! bad component does not hide the problems of the others. A decoder's error position is relative
//! to the component's text and is moved back to the file's line:column; problems found by
//! validation point at the value they are about through [`locate`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ron::extensions::Extensions;
use ron::value::RawValue;
use serde::Deserialize;

use super::locate::{self, Anchor, Node, Step};
use super::validate::{self, Broken};
use super::{ChannelConfig, Monitoring, SinkGroupConfig, Topology, TopologyError, TopologyErrors};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "Topology")]
struct RawTopology<'a> {
    agent: String,
    #[serde(default, borrow)]
    monitoring: Option<&'a RawValue>,
    /// Written without `Some(...)`, as the README documents it: present or absent.
    #[serde(default, borrow, deserialize_with = "present")]
    rocksdb_memory: Option<&'a RawValue>,
    #[serde(default, borrow)]
    sources: BTreeMap<String, &'a RawValue>,
    #[serde(default, borrow)]
    channels: BTreeMap<String, &'a RawValue>,
    #[serde(default, borrow)]
    sinks: BTreeMap<String, &'a RawValue>,
    #[serde(default, borrow)]
    sink_groups: BTreeMap<String, &'a RawValue>,
}

/// A field that is given as a plain value (not `Some(value)`): `Some` when present.
fn present<'a, D: serde::Deserializer<'a>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
}

pub(super) fn options() -> ron::Options {
    ron::Options::default().with_default_extension(Extensions::UNWRAP_VARIANT_NEWTYPES)
}

/// Reads, parses and validates the topology file at `path`.
///
/// Relative paths inside it are resolved against the file's folder.
///
/// # Errors
/// Every problem found, each naming the file, line:column and component. A file that cannot be
/// read is one error at line 0, column 0.
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

/// Where the errors of one file are gathered.
struct Report<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<TopologyError>,
}

impl Report<'_> {
    fn push(&mut self, offset: usize, component: Option<String>, message: String) {
        let (line, col) = locate::position_of(self.text, offset);
        self.errors.push(TopologyError { file: self.file.to_path_buf(), line, col, component, message });
    }

    /// A decoder's error at `rel` inside the text that starts at byte `start`.
    fn push_decode(&mut self, root: &Node, start: usize, sub: &str, e: &ron::error::SpannedError, component: String) {
        let offset = start + locate::offset_of(sub, (e.position.line, e.position.col));
        let offset = anchor_of(&e.code).map_or(offset, |what| root.anchor(offset, what));
        self.push(offset, Some(component), describe(&e.code));
    }
}

/// Parses and validates topology `text`, reported as coming from `file`, with relative paths
/// resolved against `base`.
///
/// # Errors
/// Every problem found, each naming `file`, line:column and component, in the order of the file.
pub fn load_str(text: &str, file: &Path, base: &Path) -> Result<Topology, TopologyErrors> {
    let mut report = Report { text, file, errors: Vec::new() };
    let raw: RawTopology = match options().from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = locate::offset_of(text, (e.position.line, e.position.col));
            let component = locate::enclosing_component(text, offset);
            let offset = anchor_of(&e.code).map_or(offset, |what| locate::parse(text).anchor(offset, what));
            report.push(offset, component, describe(&e.code));
            return Err(TopologyErrors(report.errors));
        }
    };
    let root = locate::parse(text);
    duplicates(&root, &mut report);

    let monitoring = raw.monitoring.and_then(|raw| {
        let (start, sub) = raw_start(text, raw);
        options()
            .from_str::<Monitoring>(sub)
            .map_err(|e| report.push_decode(&root, start, sub, &e, "monitoring".into()))
            .ok()
    });
    let rocksdb_memory = raw
        .rocksdb_memory
        .and_then(|raw| {
            let (start, sub) = raw_start(text, raw);
            options()
                .from_str::<crate::channel::rocksdb::RocksDbMemory>(sub)
                .map_err(|e| report.push_decode(&root, start, sub, &e, "rocksdb_memory".into()))
                .ok()
        })
        .unwrap_or_default();
    let mut broken = Broken::default();
    let sources = decode_all::<SourceConfig>(&root, "source", &raw.sources, &mut broken.sources, &mut report);
    let channels = decode_all::<ChannelConfig>(&root, "channel", &raw.channels, &mut broken.channels, &mut report);
    let sinks = decode_all::<SinkConfig>(&root, "sink", &raw.sinks, &mut broken.sinks, &mut report);
    let sink_groups =
        decode_all::<SinkGroupConfig>(&root, "sink group", &raw.sink_groups, &mut broken.sink_groups, &mut report);

    let mut topology = Topology {
        agent: raw.agent,
        monitoring,
        rocksdb_memory,
        sources,
        channels,
        sinks,
        sink_groups,
        file: file.to_path_buf(),
    };
    resolve_paths(&mut topology, base);
    for problem in validate::validate(&topology, &broken) {
        let (prefix, component) = component_path(problem.kind, &problem.name);
        let offset = root.find(&[prefix, problem.path].concat());
        report.push(offset, component, problem.message);
    }
    if report.errors.is_empty() {
        Ok(topology)
    } else {
        report.errors.sort_by_key(|e| (e.line, e.col));
        Err(TopologyErrors(report.errors))
    }
}

/// The path from the top of the file to a component, and how errors name it.
fn component_path(kind: &'static str, name: &str) -> (Vec<Step>, Option<String>) {
    let section = locate::SECTIONS.iter().find(|(_, k)| *k == kind).map(|(s, _)| *s);
    match (kind, section) {
        ("monitoring", _) => (vec![Step::Field("monitoring")], Some("monitoring".into())),
        (_, Some(section)) => {
            (vec![Step::Field(section), Step::Key(name.to_string())], Some(format!("{kind} \"{name}\"")))
        }
        _ => (Vec::new(), Some(format!("{kind} \"{name}\""))),
    }
}

/// A component defined twice in one section: a map decoder would keep the last one silently.
fn duplicates(root: &Node, report: &mut Report<'_>) {
    for (section, kind) in locate::SECTIONS {
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, _) in root.field_value(section).map_or(&[][..], Node::entries) {
            let Some(name) = key.as_str() else { continue };
            if let Some(at) = first.get(name) {
                let (line, col) = locate::position_of(report.text, *at);
                report.push(
                    key.start,
                    Some(format!("{kind} \"{name}\"")),
                    format!("defined twice (first at line {line}, column {col}); names must be unique"),
                );
            } else {
                first.insert(name, key.start);
            }
        }
    }
}

fn decode_all<T: for<'de> Deserialize<'de>>(
    root: &Node,
    kind: &'static str,
    raws: &BTreeMap<String, &RawValue>,
    broken: &mut BTreeSet<String>,
    report: &mut Report<'_>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (name, raw) in raws {
        let (start, sub) = raw_start(report.text, raw);
        match options().from_str::<T>(sub) {
            Ok(value) => {
                out.insert(name.clone(), value);
            }
            Err(e) => {
                broken.insert(name.clone());
                report.push_decode(root, start, sub, &e, format!("{kind} \"{name}\""));
            }
        }
    }
    out
}

/// The byte offset in `text` where `raw`'s text (trimmed of leading white space) starts, and that
/// text.
fn raw_start<'a>(text: &str, raw: &'a RawValue) -> (usize, &'a str) {
    let full = raw.get_ron();
    let trimmed = full.trim_start();
    let offset = (trimmed.as_ptr() as usize).saturating_sub(text.as_ptr() as usize).min(text.len());
    (offset, trimmed)
}

/// What a decoder's error position is about, for the errors whose position can be improved.
pub(super) fn anchor_of(code: &ron::Error) -> Option<Anchor> {
    use ron::Error as E;
    match code {
        E::NoSuchStructField { .. } | E::DuplicateStructField { .. } => Some(Anchor::FieldName),
        E::NoSuchEnumVariant { .. } => Some(Anchor::VariantName),
        E::MissingStructField { .. } => Some(Anchor::StructClose),
        E::Message(_) | E::InvalidValueForType { .. } | E::IntegerOutOfBounds | E::ExpectedDifferentLength { .. } => {
            Some(Anchor::Value)
        }
        _ => None,
    }
}

/// A decoder's error in the words of a topology's author (no Rust type names).
pub(super) fn describe(code: &ron::Error) -> String {
    use ron::Error as E;
    let one_of = |alts: &[&str], what: &str| match alts {
        [] => format!("expected no {what}"),
        [one] => format!("expected `{one}`"),
        _ => format!("expected one of {}", alts.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ")),
    };
    match code {
        E::NoSuchStructField { expected, found, .. } => {
            format!("unknown field `{found}`, {}", one_of(expected, "fields"))
        }
        E::NoSuchEnumVariant { expected, found, outer } => {
            let what = match outer.as_deref() {
                Some("SourceKind") => "source kind",
                Some("SinkKind") => "sink kind",
                Some("ChannelConfig") => "channel kind",
                Some("OverflowConfig") => "overflow kind",
                Some("InterceptorConfig") => "interceptor",
                Some("SelectorConfig") => "channel selector",
                Some("SinkProcessorConfig") => "sink processor",
                Some("Monitoring") => "monitoring kind",
                _ => "variant",
            };
            format!("unknown {what} `{found}`, {}", one_of(expected, "variants"))
        }
        E::MissingStructField { field, .. } => format!("missing field `{field}`"),
        E::DuplicateStructField { field, .. } => format!("field `{field}` is given twice"),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            chars.next().map_or(text.clone(), |c| c.to_lowercase().chain(chars).collect())
        }
    }
}

fn resolve_paths(topology: &mut Topology, base: &Path) {
    for source in topology.sources.values_mut() {
        source.kind.resolve_paths(base);
    }
    for channel in topology.channels.values_mut() {
        if let ChannelConfig::RocksDb(c) = channel {
            c.dir = crate::config::resolve(base, &c.dir);
            if let Some(e) = &mut c.encryption {
                e.resolve_paths(base);
            }
        }
        if let ChannelConfig::Spillable(c) = channel {
            let c = c.rocksdb_mut();
            c.dir = crate::config::resolve(base, &c.dir);
            if let Some(e) = &mut c.encryption {
                e.resolve_paths(base);
            }
        }
    }
    for sink in topology.sinks.values_mut() {
        sink.kind.resolve_paths(base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, Path::new("t.ron"), Path::new("/nonexistent-base")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: SequenceGenerator(total: 10), channels: ["c1"], batch_size: 10),
    },
    channels: {
        "c1": Memory(capacity: 100, transaction_capacity: 10),
    },
    sinks: {
        "k1": (kind: Null(), channel: "c1", batch_size: 10),
    },
)"#;

    /// GOOD with its first `from` replaced by `to`.
    fn with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from:?} is not in the topology");
        GOOD.replacen(from, to, 1)
    }

    #[test]
    fn a_good_topology_loads() {
        let t = load_str(GOOD, Path::new("t.ron"), Path::new("/base")).expect("valid");
        assert_eq!((t.sources.len(), t.channels.len(), t.sinks.len()), (1, 1, 1));
    }

    #[test]
    fn rocksdb_memory_is_written_as_documented_and_defaults_when_absent() {
        let text = with(
            r#"agent: "a","#,
            r#"agent: "a", rocksdb_memory: (write_buffer_bytes: 1048576, block_cache_bytes: 2097152),"#,
        );
        let t = load_str(&text, Path::new("t.ron"), Path::new("/base")).expect("valid");
        assert_eq!((t.rocksdb_memory.write_buffer_bytes, t.rocksdb_memory.block_cache_bytes), (1 << 20, 2 << 20));
        let text = with(r#"agent: "a","#, r#"agent: "a", rocksdb_memory: (block_cache_bytes: 2097152),"#);
        let t = load_str(&text, Path::new("t.ron"), Path::new("/base")).expect("valid");
        assert_eq!((t.rocksdb_memory.write_buffer_bytes, t.rocksdb_memory.block_cache_bytes), (16 << 20, 2 << 20));
        let t = load_str(GOOD, Path::new("t.ron"), Path::new("/base")).expect("valid");
        assert_eq!((t.rocksdb_memory.write_buffer_bytes, t.rocksdb_memory.block_cache_bytes), (16 << 20, 8 << 20));
        let e = errors(&with(r#"agent: "a","#, r#"agent: "a", rocksdb_memory: (write_buffer_bytes: "lots"),"#));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.ron:2:"), "{e:?}");
    }

    #[test]
    fn unknown_fields_point_at_their_name() {
        let e = errors(&with("capacity: 100,", "capacity: 100, capacty: 5,"));
        assert_eq!(
            e,
            ["t.ron:7:37: channel \"c1\": unknown field `capacty`, expected one of `capacity`, `transaction_capacity`, `keep_alive`, `byte_capacity`"]
        );
    }

    #[test]
    fn unknown_kinds_point_at_their_name() {
        let e = errors(&with("Null()", "Jms(destination_name: \"x\")"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.ron:10:22: sink \"k1\": unknown sink kind `Jms`, expected one of `Logger`"),
            "{e:?}"
        );
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let e = errors(&with("transaction_capacity: 10)", "transaction_capacity: 10, keep_alive: \"3 fortnights\")"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.ron:7:75: channel \"c1\": bad duration \"3 fortnights\""), "{e:?}");
        let e = errors(&with("total: 10", "total: -1"));
        assert_eq!(e, ["t.ron:4:47: source \"r1\": integer is out of bounds"]);
    }

    #[test]
    fn missing_fields_point_at_their_struct() {
        let e = errors(&with(", channel: \"c1\"", ""));
        // The channel has no sink left, but the sink that did not decode may drain it: one error.
        assert_eq!(e, ["t.ron:10:15: sink \"k1\": missing field `channel`"]);
    }

    #[test]
    fn validation_points_at_the_value_concerned() {
        let e = errors(&with("channels: [\"c1\"]", "channels: [\"c1\", \"c9\"]"));
        assert_eq!(e, ["t.ron:4:69: source \"r1\": channel \"c9\" does not exist"]);
        let e = errors(&with("capacity: 100, transaction_capacity: 10", "capacity: 5, transaction_capacity: 10"));
        assert_eq!(e, ["t.ron:7:57: channel \"c1\": transaction_capacity (10) exceeds capacity (5)"]);
        let e = errors(&with("transaction_capacity: 10)", "transaction_capacity: 10, byte_capacity: 0)"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.ron:7:") && e[0].ends_with("channel \"c1\": byte_capacity must be positive"),
            "{e:?}"
        );
    }

    #[test]
    fn a_broken_component_hides_no_other_problem_and_causes_none() {
        // c1 does not decode: the source and the sink naming it get no "does not exist", and the
        // unrelated problem of the sink is still reported, in the order of the file.
        let text = with("Memory(capacity: 100,", "Memory(capacity: \"lots\",");
        let text = text.replacen("channel: \"c1\", batch_size: 10", "channel: \"c1\", batch_size: 0", 1);
        assert_eq!(
            errors(&text),
            ["t.ron:7:32: channel \"c1\": expected integer", "t.ron:10:57: sink \"k1\": batch_size must be positive"]
        );
    }

    #[test]
    fn components_defined_twice_are_errors() {
        let text = with("    channels: {\n", "    channels: {\n        \"c1\": Memory(),\n");
        assert_eq!(
            errors(&text),
            ["t.ron:8:9: channel \"c1\": defined twice (first at line 7, column 9); names must be unique"]
        );
    }

    #[test]
    fn syntax_errors_name_the_component_they_sit_in() {
        let e = errors(&with("(total: 10),", "(total: 10)"));
        assert_eq!(e, ["t.ron:4:51: source \"r1\": expected comma"]);
        let e = errors(&with("agent: \"a\",", "agent: \"a\", sourcs: {},"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.ron:2:17: unknown field `sourcs`, expected one of `agent`"), "{e:?}");
    }

    #[test]
    fn monitoring_problems_name_monitoring() {
        let e = errors(&with("agent: \"a\",", "agent: \"a\", monitoring: Some(Http(bind: \"localhost\")),"));
        assert_eq!(e, ["t.ron:2:45: monitoring: bind address \"localhost\" is not host:port (e.g. \"127.0.0.1:41414\"): it has no :port"]);
        let e = errors(&with("agent: \"a\",", "agent: \"a\", monitoring: Some(Http(bind: \"127.0.0.1:1\", port: 2)),"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.ron:2:60: monitoring: unknown field `port`"), "{e:?}");
    }

    #[test]
    fn messages_of_several_lines_are_indented() {
        let e = TopologyError {
            file: "t.ron".into(),
            line: 3,
            col: 4,
            component: Some("source \"r1\"".into()),
            message: "regex parse error:\n    (\n    ^\nerror: unclosed group".into(),
        };
        assert_eq!(
            e.to_string(),
            "t.ron:3:4: source \"r1\": regex parse error:\n        (\n        ^\n    error: unclosed group"
        );
    }
}
