//! What changes between the running topology and a new one, component by component.
//!
//! The shape is Vector's `config::diff` (`ConfigDiff`: components to add, change and remove,
//! compared by name and options), with what flumen keeps across a reload on top: a source whose
//! only change is its interceptors, selector or channel list keeps running and gets a new
//! pipeline ([`Diff::rewired`]); a `Memory` channel whose options changed keeps its actor and what
//! it holds ([`Diff::resized`]); a `RocksDb` channel whose options changed but not its `dir` is
//! closed and reopened on the same directory ([`Diff::reopened`]); a `Spillable` channel is resized
//! when only its memory options changed, else reopened on the same overflow `dir`. Sinks run in units (a sink in no
//! group, or a whole sink group, under one runner), so sinks are compared unit by unit.

use std::collections::{BTreeMap, BTreeSet};

use crate::sink::group::SinkProcessorConfig;
use crate::sink::SinkConfig;
use crate::topology::{ChannelConfig, Topology};

/// Components of one kind, by name, sorted into what a reload does with them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// In the new topology only: started.
    pub added: BTreeSet<String>,
    /// In both, with other options: stopped and started again (or, for channels, see [`Diff`]).
    pub changed: BTreeSet<String>,
    /// In the old topology only: stopped.
    pub removed: BTreeSet<String>,
    /// In both, the same: left running untouched.
    pub kept: BTreeSet<String>,
}

impl Changes {
    fn of<T>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>, same: impl Fn(&T, &T) -> bool) -> Self {
        let mut c = Changes::default();
        for (name, o) in old {
            match new.get(name) {
                None => c.removed.insert(name.clone()),
                Some(n) if same(o, n) => c.kept.insert(name.clone()),
                Some(_) => c.changed.insert(name.clone()),
            };
        }
        c.added = new.keys().filter(|n| !old.contains_key(*n)).cloned().collect();
        c
    }

    /// Whether nothing is added, changed or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// The changed and removed names: what stops.
    pub fn stopping(&self) -> impl Iterator<Item = &String> {
        self.changed.iter().chain(&self.removed)
    }

    /// The added and changed names: what starts.
    pub fn starting(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.changed)
    }
}

/// What runs one or more sinks: a sink in no group, or a sink group with its members.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkUnit {
    /// The channel the unit's sinks drain.
    pub channel: String,
    /// The unit's sinks by name (one for a sink in no group), in the group's order.
    pub sinks: Vec<(String, SinkConfig)>,
    /// The group's sink processor; `None` for a sink in no group (Flume's `default` processor).
    pub processor: Option<SinkProcessorConfig>,
}

/// The sink units of `t`, keyed `sink NAME` or `sink group NAME` (as the component is named in
/// logs, so that a sink and a group of the same name cannot collide).
pub fn sink_units(t: &Topology) -> BTreeMap<String, SinkUnit> {
    let grouped: BTreeSet<&String> = t.sink_groups.values().flat_map(|g| &g.sinks).collect();
    let mut units = BTreeMap::new();
    for (name, sink) in t.sinks.iter().filter(|(n, _)| !grouped.contains(n)) {
        let unit =
            SinkUnit { channel: sink.channel.clone(), sinks: vec![(name.clone(), sink.clone())], processor: None };
        units.insert(format!("sink \"{name}\""), unit);
    }
    for (name, group) in &t.sink_groups {
        let sinks: Vec<(String, SinkConfig)> =
            group.sinks.iter().filter_map(|s| t.sinks.get(s).map(|c| (s.clone(), c.clone()))).collect();
        // Validation makes every sink of a group drain the same channel.
        let Some((_, first)) = sinks.first() else { continue };
        let unit =
            SinkUnit { channel: first.channel.clone(), sinks: sinks.clone(), processor: Some(group.processor.clone()) };
        units.insert(format!("sink group \"{name}\""), unit);
    }
    units
}

/// Everything a reload does, computed before anything is touched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Sources; `changed` are those whose kind, options, `batch_size` or `linger` changed:
    /// they stop reading, finish their puts and acknowledgements, and start with the new options.
    pub sources: Changes,
    /// Kept sources that get a new pipeline between two batches: their interceptors, selector or
    /// channel list changed, or one of their channels is reopened or replaced.
    pub rewired: BTreeSet<String>,
    /// Channels by name; `changed` is split into [`Diff::resized`], [`Diff::reopened`] and
    /// [`Diff::replaced`].
    pub channels: Changes,
    /// Changed `Memory` channels staying `Memory`, and `Spillable` ones whose overflow options are
    /// unchanged: reconfigured in place, keeping what they hold,
    /// their sources and sinks untouched.
    pub resized: BTreeSet<String>,
    /// Changed `RocksDb` channels with the same `dir`: their sinks finish their batch and stop, the
    /// database is closed and opened again with the new options, keeping its events.
    pub reopened: BTreeSet<String>,
    /// Changed channels of another kind or another `dir`: a new channel under the old name. The
    /// old one is handled as removed (its sinks drain it up to the drain timeout; a durable one
    /// keeps the rest on disk), the new one as added.
    pub replaced: BTreeSet<String>,
    /// Sink units (see [`sink_units`]); a unit whose channel is reopened or replaced is `changed`.
    pub units: Changes,
    /// Whether the monitoring server's address changed (it is restarted).
    pub monitoring: bool,
    /// Ports and paths that pass from a stopping source to a starting one (`resource`, from,
    /// to), as Vector's resource conflicts: the old holder is always stopped before the new starts.
    pub moved: Vec<(String, String, String)>,
}

impl Diff {
    /// What turns `old` into `new`.
    pub fn between(old: &Topology, new: &Topology) -> Diff {
        let sources = Changes::of(&old.sources, &new.sources, |a, b| {
            a.kind == b.kind && a.batch_size == b.batch_size && a.linger == b.linger
        });
        let channels = Changes::of(&old.channels, &new.channels, PartialEq::eq);
        let (mut resized, mut reopened, mut replaced) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for name in &channels.changed {
            match (&old.channels[name], &new.channels[name]) {
                (ChannelConfig::Memory(_), ChannelConfig::Memory(_)) => resized.insert(name.clone()),
                (ChannelConfig::RocksDb(a), ChannelConfig::RocksDb(b)) if a.dir == b.dir => {
                    reopened.insert(name.clone())
                }
                // Only memory options changed: in place; other overflow options: reopened (the
                // events in memory are put into the overflow when it closes).
                (ChannelConfig::Spillable(a), ChannelConfig::Spillable(b)) if a.overflow == b.overflow => {
                    resized.insert(name.clone())
                }
                (ChannelConfig::Spillable(a), ChannelConfig::Spillable(b)) if a.rocksdb().dir == b.rocksdb().dir => {
                    reopened.insert(name.clone())
                }
                _ => replaced.insert(name.clone()),
            };
        }
        let renewed = |ch: &String| reopened.contains(ch) || replaced.contains(ch);
        let rewired = sources
            .kept
            .iter()
            .filter(|name| {
                let (a, b) = (&old.sources[*name], &new.sources[*name]);
                a.interceptors != b.interceptors
                    || a.selector != b.selector
                    || a.channels != b.channels
                    || b.channels.iter().any(renewed)
            })
            .cloned()
            .collect();
        let (old_units, new_units) = (sink_units(old), sink_units(new));
        let mut units = Changes::of(&old_units, &new_units, PartialEq::eq);
        let stale: Vec<String> = units.kept.iter().filter(|u| renewed(&new_units[*u].channel)).cloned().collect();
        for u in stale {
            units.kept.remove(&u);
            units.changed.insert(u);
        }
        let mut moved = Vec::new();
        let held: BTreeMap<String, &String> = sources
            .stopping()
            .flat_map(|name| old.sources[name].kind.resources().into_iter().map(move |r| (r, name)))
            .collect();
        for name in sources.starting() {
            for r in new.sources[name].kind.resources() {
                if let Some(from) = held.get(&r).filter(|from| **from != name) {
                    moved.push((r, (*from).clone(), name.clone()));
                }
            }
        }
        Diff {
            sources,
            rewired,
            channels,
            resized,
            reopened,
            replaced,
            units,
            monitoring: old.monitoring != new.monitoring,
            moved,
        }
    }

    /// Whether the reload changes nothing.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.rewired.is_empty()
            && self.channels.is_empty()
            && self.units.is_empty()
            && !self.monitoring
    }

    /// One line for the log: what is started, restarted, rewired, stopped and kept.
    pub fn describe(&self) -> String {
        let list = |set: &BTreeSet<String>| set.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        let mut part = |what: &str, kind: &str, set: &BTreeSet<String>| {
            if !set.is_empty() {
                parts.push(format!("{what} {kind} [{}]", list(set)));
            }
        };
        part("started", "sources", &self.sources.added);
        part("restarted", "sources", &self.sources.changed);
        part("rewired", "sources", &self.rewired);
        part("stopped", "sources", &self.sources.removed);
        part("kept", "sources", &self.sources.kept);
        part("started", "channels", &self.channels.added);
        part("resized", "channels", &self.resized);
        part("reopened", "channels", &self.reopened);
        part("replaced", "channels", &self.replaced);
        part("stopped", "channels", &self.channels.removed);
        part("kept", "channels", &self.channels.kept);
        part("started", "sinks", &self.units.added);
        part("restarted", "sinks", &self.units.changed);
        part("stopped", "sinks", &self.units.removed);
        part("kept", "sinks", &self.units.kept);
        if self.monitoring {
            parts.push("restarted monitoring".into());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"(
        agent: "a1",
        sources: {
            "r1": (kind: Netcat(bind: "127.0.0.1:44444"), channels: ["c1"]),
            "r2": (kind: Netcat(bind: "127.0.0.1:44445"), channels: ["c2"]),
        },
        channels: {
            "c1": Memory(capacity: 1000),
            "c2": RocksDb(dir: "/tmp/flumen-diff-c2"),
        },
        sinks: {
            "k1": (kind: Null(), channel: "c1"),
            "k2": (kind: Null(), channel: "c2"),
        },
    )"#;

    fn diff(new: &str) -> Diff {
        let load = |text: &str| {
            let file = std::path::Path::new("t.ron");
            crate::topology::load_str(text, file, std::path::Path::new("/tmp")).unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, b) = (load(BASE), load(new));
        Diff::between(&a, &b)
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let d = diff(BASE);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.sources.kept.len(), 2);
        assert_eq!(d.units.kept.len(), 2);
    }

    #[test]
    fn a_memory_capacity_is_a_resize_and_touches_no_source_or_sink() {
        let d = diff(&BASE.replace("capacity: 1000", "capacity: 5000"));
        assert_eq!(d.resized, BTreeSet::from(["c1".to_string()]));
        assert!(d.rewired.is_empty() && d.units.changed.is_empty() && d.sources.changed.is_empty(), "{d:?}");
    }

    #[test]
    fn rocksdb_options_reopen_and_a_new_dir_replaces() {
        let d =
            diff(&BASE.replace(
                r#"RocksDb(dir: "/tmp/flumen-diff-c2")"#,
                r#"RocksDb(dir: "/tmp/flumen-diff-c2", sync: false)"#,
            ));
        assert_eq!(d.reopened, BTreeSet::from(["c2".to_string()]));
        assert_eq!(d.rewired, BTreeSet::from(["r2".to_string()]));
        assert_eq!(d.units.changed, BTreeSet::from(["sink \"k2\"".to_string()]));
        let d = diff(&BASE.replace("/tmp/flumen-diff-c2", "/tmp/flumen-diff-c3"));
        assert_eq!(d.replaced, BTreeSet::from(["c2".to_string()]));
        assert!(d.reopened.is_empty());
    }

    #[test]
    fn interceptors_rewire_options_restart() {
        let d = diff(&BASE.replace(
            r#"channels: ["c1"]),"#,
            r#"channels: ["c1"], interceptors: [Static(key: "tier", value: "edge")]),"#,
        ));
        assert_eq!(d.rewired, BTreeSet::from(["r1".to_string()]));
        assert!(d.sources.changed.is_empty());
        let d = diff(&BASE.replace(r#"bind: "127.0.0.1:44444")"#, r#"bind: "127.0.0.1:44446")"#));
        assert_eq!(d.sources.changed, BTreeSet::from(["r1".to_string()]));
        assert!(d.rewired.is_empty());
    }

    #[test]
    fn a_port_passing_to_another_source_is_seen() {
        let new = BASE.replace(
            r#""r1": (kind: Netcat(bind: "127.0.0.1:44444")"#,
            r#""r9": (kind: Netcat(bind: "127.0.0.1:44444")"#,
        );
        let d = diff(&new);
        assert_eq!(d.sources.removed, BTreeSet::from(["r1".to_string()]));
        assert_eq!(d.sources.added, BTreeSet::from(["r9".to_string()]));
        assert_eq!(d.moved, vec![("tcp 127.0.0.1:44444".to_string(), "r1".to_string(), "r9".to_string())]);
    }
}
