//! Checks that need the whole topology: names, channel use, shared directories, sizes.
//!
//! Each [`Problem`] names its component and a [`Step`] path to the value it is about;
//! [`super::load`] turns that into the file's line:column. Components that did not decode are
//! passed as [`Broken`]: they count as existing, and the checks that would need their options are
//! skipped, so one mistake does not bring a cascade of others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::locate::Step;
use super::{ChannelConfig, Monitoring, Topology};
use crate::selector::SelectorConfig;
use crate::sink::group::SinkProcessorConfig;

/// One problem: the component (`kind` is `"source"`, `"channel"`, `"sink"`, `"sink group"`,
/// `"agent"` or `"monitoring"`), the path inside it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// What the component is: `"source"`, `"channel"`, ..., `"agent"`, `"monitoring"`.
    pub kind: &'static str,
    /// The component's name (the agent's for `"agent"`, empty for `"monitoring"`).
    pub name: String,
    /// Where in the component the problem is; empty for the whole component.
    pub path: Vec<Step>,
    /// What is wrong.
    pub message: String,
}

/// Names of the components that are in the file but did not decode.
#[derive(Debug, Default)]
pub(super) struct Broken {
    /// Sources that did not decode.
    pub sources: BTreeSet<String>,
    /// Channels that did not decode.
    pub channels: BTreeSet<String>,
    /// Sinks that did not decode.
    pub sinks: BTreeSet<String>,
    /// Sink groups that did not decode.
    pub sink_groups: BTreeSet<String>,
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, kind: &'static str, name: &str, path: Vec<Step>, message: impl Into<String>) {
        self.0.push(Problem { kind, name: name.to_string(), path, message: message.into() });
    }
}

fn item(name: &str) -> Step {
    Step::Item(name.to_string())
}

/// Every problem in `t`; empty when it is valid.
pub(super) fn validate(t: &Topology, broken: &Broken) -> Vec<Problem> {
    let mut p = Problems(Vec::new());

    if t.agent.trim().is_empty() {
        p.add("agent", &t.agent, vec![Step::Field("agent")], "the agent name is empty");
    }
    if let Some(Monitoring::Http { bind }) = &t.monitoring {
        if let Err(why) = crate::config::check_address(bind) {
            p.add(
                "monitoring",
                "",
                vec![Step::Field("bind")],
                format!("bind address {bind:?} is not host:port (e.g. \"127.0.0.1:41414\"): {why}"),
            );
        }
    }
    if t.sources.is_empty() && broken.sources.is_empty() {
        p.add("agent", &t.agent, vec![Step::Field("sources")], "the topology has no source");
    }

    channels(t, &mut p);
    let used = sources(t, broken, &mut p);
    let drained = sinks(t, broken, &mut p);

    for name in t.channels.keys() {
        if broken.sources.is_empty() && !used.contains(name.as_str()) {
            p.add("channel", name, vec![], "no source puts into this channel (list it in a source's `channels`)");
        }
        if broken.sinks.is_empty() && !drained.contains(name.as_str()) {
            p.add("channel", name, vec![], "no sink drains this channel (name it in a sink's `channel`)");
        }
    }

    sink_groups(t, broken, &mut p);
    resources(t, &mut p);
    p.0
}

/// Two sources (or a source and the monitoring server) holding one port or path.
fn resources(t: &Topology, p: &mut Problems) {
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    if let Some(Monitoring::Http { bind }) = &t.monitoring {
        held.insert(format!("tcp {bind}"), "the monitoring server".into());
    }
    for (name, src) in &t.sources {
        for r in src.kind.resources() {
            match held.get(&r) {
                Some(other) => {
                    let field = match &src.kind {
                        crate::source::SourceKind::SpoolDir(_) => Step::Field("dir"),
                        crate::source::SourceKind::Taildir(_) => Step::Field("position_file"),
                        _ => Step::Field("bind"),
                    };
                    p.add(
                        "source",
                        name,
                        vec![Step::Field("kind"), field],
                        format!("{r} is already held by {other}: two components cannot hold one address or path"),
                    );
                }
                None => {
                    held.insert(r, format!("source \"{name}\""));
                }
            }
        }
    }
}

fn channels(t: &Topology, p: &mut Problems) {
    for (name, ch) in &t.channels {
        if let ChannelConfig::Spillable(c) = ch {
            spillable(name, c, p);
            continue;
        }
        let (capacity, txn) = channel_limits(ch);
        if capacity == 0 {
            p.add("channel", name, vec![Step::Field("capacity")], "capacity must be positive");
        }
        if txn == 0 {
            p.add("channel", name, vec![Step::Field("transaction_capacity")], "transaction_capacity must be positive");
        } else if capacity > 0 && txn > capacity {
            p.add(
                "channel",
                name,
                vec![Step::Field("transaction_capacity")],
                format!("transaction_capacity ({txn}) exceeds capacity ({capacity})"),
            );
        }
        if let ChannelConfig::Memory(c) = ch {
            if c.byte_capacity == 0 {
                p.add("channel", name, vec![Step::Field("byte_capacity")], "byte_capacity must be positive");
            }
        }
        if let ChannelConfig::RocksDb(c) = ch {
            for (option, message) in c.memory_problems() {
                p.add("channel", name, vec![Step::Field(option)], message);
            }
            for (key_id, message) in c.encryption.iter().flat_map(|e| e.problems()) {
                let path = match key_id {
                    Some(id) => vec![Step::Field("encryption"), Step::Field("keys"), Step::Key(id)],
                    None => vec![Step::Field("encryption"), Step::Field("active")],
                };
                p.add("channel", name, path, message);
            }
        }
    }
    let mut dirs: BTreeMap<PathBuf, &str> = BTreeMap::new();
    for (name, ch) in &t.channels {
        let (c, at) = match ch {
            ChannelConfig::RocksDb(c) => (Some(c), vec![Step::Field("dir")]),
            ChannelConfig::Spillable(s) => (Some(s.rocksdb()), vec![Step::Field("overflow"), Step::Field("dir")]),
            ChannelConfig::Memory(_) => (None, vec![]),
        };
        if let Some(c) = c {
            let dir = lexically_normal(&c.dir);
            if let Some(other) = dirs.get(&dir) {
                p.add(
                    "channel",
                    name,
                    at,
                    format!(
                        "dir {} is already the dir of channel \"{other}\": each RocksDb channel and Spillable overflow needs its own",
                        dir.display()
                    ),
                );
            } else {
                dirs.insert(dir, name);
            }
        }
    }
}

/// Checks the sources; answers the channels they put into.
fn sources<'t>(t: &'t Topology, broken: &Broken, p: &mut Problems) -> BTreeSet<&'t str> {
    let mut used = BTreeSet::new();
    for (name, src) in &t.sources {
        if src.channels.is_empty() {
            p.add(
                "source",
                name,
                vec![Step::Field("channels")],
                "channels is empty: a source needs at least one channel",
            );
        }
        let mut seen = BTreeSet::new();
        for ch in &src.channels {
            used.insert(ch.as_str());
            if !seen.insert(ch) {
                p.add("source", name, vec![Step::Field("channels")], format!("channel \"{ch}\" is listed twice"));
            }
            match t.channels.get(ch) {
                None if broken.channels.contains(ch) => {}
                None => p.add(
                    "source",
                    name,
                    vec![Step::Field("channels"), item(ch)],
                    format!("channel \"{ch}\" does not exist"),
                ),
                Some(c) if src.batch_size as u64 > channel_limits(c).1 => p.add(
                    "source",
                    name,
                    vec![Step::Field("batch_size")],
                    format!(
                        "batch_size ({}) exceeds the transaction_capacity ({}) of channel \"{ch}\"",
                        src.batch_size,
                        channel_limits(c).1
                    ),
                ),
                Some(_) => {}
            }
        }
        if src.batch_size == 0 {
            p.add("source", name, vec![Step::Field("batch_size")], "batch_size must be positive");
        }
        let listed: BTreeSet<&String> = src.channels.iter().collect();
        let mut outside = |what: &str, path: &[Step], chans: &[String]| {
            for c in chans {
                if !listed.contains(c) {
                    let mut path = [&[Step::Field("selector")], path].concat();
                    path.push(item(c));
                    p.add(
                        "source",
                        name,
                        path,
                        format!("selector {what} channel \"{c}\" is not among the source's channels"),
                    );
                }
            }
        };
        match &src.selector {
            SelectorConfig::Replicating { optional } => outside("optional", &[Step::Field("optional")], optional),
            SelectorConfig::Multiplexing { header, mapping, optional, default } => {
                for (value, chans) in mapping {
                    outside(&format!("mapping {value:?}"), &[Step::Field("mapping"), Step::Key(value.clone())], chans);
                }
                for (value, chans) in optional {
                    outside(
                        &format!("optional {value:?}"),
                        &[Step::Field("optional"), Step::Key(value.clone())],
                        chans,
                    );
                }
                outside("default", &[Step::Field("default")], default);
                if header.is_empty() {
                    p.add(
                        "source",
                        name,
                        vec![Step::Field("selector"), Step::Field("header")],
                        "multiplexing selector header is empty",
                    );
                }
            }
        }
        for message in src.kind.validate() {
            p.add("source", name, vec![Step::Field("kind"), Step::Mentioned(message.clone())], message);
        }
        for (i, interceptor) in src.interceptors.iter().enumerate() {
            if let Err(message) = interceptor.build() {
                let path = vec![Step::Field("interceptors"), Step::Index(i), Step::Mentioned(message.clone())];
                p.add("source", name, path, message);
            }
        }
    }
    used
}

/// Checks the sinks; answers the channels they drain.
fn sinks<'t>(t: &'t Topology, broken: &Broken, p: &mut Problems) -> BTreeSet<&'t str> {
    let mut drained = BTreeSet::new();
    for (name, sink) in &t.sinks {
        drained.insert(sink.channel.as_str());
        match t.channels.get(&sink.channel) {
            None if broken.channels.contains(&sink.channel) => {}
            None => p.add(
                "sink",
                name,
                vec![Step::Field("channel")],
                format!("channel \"{}\" does not exist", sink.channel),
            ),
            Some(c) if sink.batch_size as u64 > channel_limits(c).1 => p.add(
                "sink",
                name,
                vec![Step::Field("batch_size")],
                format!(
                    "batch_size ({}) exceeds the transaction_capacity ({}) of channel \"{}\"",
                    sink.batch_size,
                    channel_limits(c).1,
                    sink.channel
                ),
            ),
            Some(_) => {}
        }
        if sink.batch_size == 0 {
            p.add("sink", name, vec![Step::Field("batch_size")], "batch_size must be positive");
        }
        for message in sink.kind.validate() {
            p.add("sink", name, vec![Step::Field("kind"), Step::Mentioned(message.clone())], message);
        }
    }
    drained
}

fn sink_groups(t: &Topology, broken: &Broken, p: &mut Problems) {
    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, group) in &t.sink_groups {
        if group.sinks.is_empty() {
            p.add("sink group", name, vec![Step::Field("sinks")], "a sink group needs at least one sink");
        }
        for s in &group.sinks {
            let at = vec![Step::Field("sinks"), item(s)];
            if !t.sinks.contains_key(s) && !broken.sinks.contains(s) {
                p.add("sink group", name, at.clone(), format!("sink \"{s}\" does not exist"));
            }
            match member_of.insert(s, name) {
                Some(other) if other == name => p.add("sink group", name, at, format!("sink \"{s}\" is listed twice")),
                Some(other) => {
                    p.add("sink group", name, at, format!("sink \"{s}\" already belongs to sink group \"{other}\""))
                }
                None => {}
            }
        }
        // Every sink of a group drains one channel: the processor takes from it for them all.
        let mut first: Option<(&str, &str)> = None;
        for s in &group.sinks {
            let Some(sink) = t.sinks.get(s) else { continue };
            match first {
                None => first = Some((s, &sink.channel)),
                Some((k, ch)) if ch != sink.channel => p.add(
                    "sink group",
                    name,
                    vec![Step::Field("sinks"), item(s)],
                    format!(
                        "sink \"{s}\" drains channel \"{}\" but sink \"{k}\" drains \"{ch}\": \
                         the sinks of a group drain one channel",
                        sink.channel
                    ),
                ),
                Some(_) => {}
            }
        }
        let (field, longest) = match &group.processor {
            SinkProcessorConfig::Failover { max_penalty, .. } => ("max_penalty", max_penalty),
            SinkProcessorConfig::LoadBalance { max_backoff, .. } => ("max_backoff", max_backoff),
        };
        if longest.is_zero() {
            p.add(
                "sink group",
                name,
                vec![Step::Field("processor"), Step::Field(field)],
                format!("{field} must be positive: a failed sink is left out for at least a moment"),
            );
        }
        if let SinkProcessorConfig::Failover { priority, .. } = &group.processor {
            for s in priority.keys() {
                if !group.sinks.contains(s) {
                    p.add(
                        "sink group",
                        name,
                        vec![Step::Field("processor"), Step::Field("priority"), Step::KeyOf(s.clone())],
                        format!("priority names sink \"{s}\", which is not in the group"),
                    );
                }
            }
        }
    }
}

/// `path` with `.` and `dir/..` taken out, without looking at the file system (the directory may
/// not exist yet), so that two spellings of one directory compare equal.
pub(super) fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `(capacity, transaction_capacity)` of a channel, in events (a `Spillable` channel's: memory
/// plus overflow capacity, and the overflow's transaction capacity).
pub(crate) fn channel_limits(c: &ChannelConfig) -> (u64, u64) {
    match c {
        ChannelConfig::Memory(m) => (m.capacity, m.transaction_capacity),
        ChannelConfig::RocksDb(r) => (r.capacity, r.transaction_capacity),
        ChannelConfig::Spillable(s) => (s.capacity(), s.transaction_capacity()),
    }
}

/// The checks of a `Spillable` channel: its memory options and its overflow's, as a `RocksDb`
/// channel's (the overflow's `dir` is checked with the other channels' dirs).
fn spillable(name: &str, c: &crate::channel::spillable::SpillableConfig, p: &mut Problems) {
    if c.byte_capacity == 0 {
        p.add("channel", name, vec![Step::Field("byte_capacity")], "byte_capacity must be positive");
    }
    if c.overflow_deactivation_threshold > 100 {
        p.add(
            "channel",
            name,
            vec![Step::Field("overflow_deactivation_threshold")],
            "overflow_deactivation_threshold is a percentage: 0 to 100",
        );
    }
    let o = c.rocksdb();
    let at = |field: &'static str| vec![Step::Field("overflow"), Step::Field(field)];
    if o.capacity == 0 {
        p.add("channel", name, at("capacity"), "the overflow's capacity must be positive");
    }
    if o.transaction_capacity == 0 {
        p.add("channel", name, at("transaction_capacity"), "transaction_capacity must be positive");
    } else if o.capacity > 0 && o.transaction_capacity > o.capacity {
        p.add(
            "channel",
            name,
            at("transaction_capacity"),
            format!(
                "transaction_capacity ({}) exceeds the overflow's capacity ({})",
                o.transaction_capacity, o.capacity
            ),
        );
    }
    for (option, message) in o.memory_problems() {
        p.add("channel", name, at(option), message);
    }
    for (key_id, message) in o.encryption.iter().flat_map(|e| e.problems()) {
        let mut path = at("encryption");
        match key_id {
            Some(id) => path.extend([Step::Field("keys"), Step::Key(id)]),
            None => path.push(Step::Field("active")),
        }
        p.add("channel", name, path, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_directory_are_equal() {
        assert_eq!(lexically_normal(Path::new("/t/./x/../data/q/")), PathBuf::from("/t/data/q"));
        assert_eq!(lexically_normal(Path::new("../var/q")), PathBuf::from("../var/q"));
        assert_ne!(lexically_normal(Path::new("/t/data/q")), lexically_normal(Path::new("/t/data/r")));
    }
}
