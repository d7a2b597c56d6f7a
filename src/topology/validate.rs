//! Checks that need the whole topology: names, channel use, shared directories, sizes.
//!
//! Each problem is `(component kind, component name, message)`; [`super::load`] adds the file and
//! the component's line:column.

use std::collections::{BTreeMap, BTreeSet};

use super::{ChannelConfig, Monitoring, SinkProcessorConfig, Topology};
use crate::selector::SelectorConfig;

type Problem = (&'static str, String, String);

/// Every problem in `t`; empty when it is valid.
pub(super) fn validate(t: &Topology) -> Vec<Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut p = |kind: &'static str, name: &str, message: String| problems.push((kind, name.to_string(), message));

    if t.agent.trim().is_empty() {
        p("agent", "", "the agent name is empty".into());
    }
    if let Some(Monitoring::Http { bind }) = &t.monitoring {
        if bind.parse::<std::net::SocketAddr>().is_err() {
            p(
                "agent",
                &t.agent,
                format!("monitoring bind address {bind:?} is not host:port (e.g. \"127.0.0.1:41414\")"),
            );
        }
    }
    if t.sources.is_empty() {
        p("agent", &t.agent, "the topology has no source".into());
    }

    for (name, ch) in &t.channels {
        let (capacity, txn) = channel_limits(ch);
        if capacity == 0 {
            p("channel", name, "capacity must be positive".into());
        }
        if txn == 0 {
            p("channel", name, "transaction_capacity must be positive".into());
        } else if txn > capacity {
            p("channel", name, format!("transaction_capacity ({txn}) exceeds capacity ({capacity})"));
        }
        if let ChannelConfig::RocksDb(c) = ch {
            if c.cache_events == 0 {
                p("channel", name, "cache_events must be positive".into());
            }
        }
    }
    let mut dirs: BTreeMap<std::path::PathBuf, &str> = BTreeMap::new();
    for (name, ch) in &t.channels {
        if let ChannelConfig::RocksDb(c) = ch {
            if let Some(other) = dirs.insert(c.dir.clone(), name) {
                p("channel", name, format!("dir {} is already the dir of channel \"{other}\"", c.dir.display()));
            }
        }
    }

    let mut used: BTreeSet<&str> = BTreeSet::new();
    for (name, src) in &t.sources {
        if src.channels.is_empty() {
            p("source", name, "channels is empty: a source needs at least one channel".into());
        }
        for ch in &src.channels {
            used.insert(ch);
            match t.channels.get(ch) {
                None => p("source", name, format!("channel \"{ch}\" does not exist")),
                Some(c) if src.batch_size as u64 > channel_limits(c).1 => p(
                    "source",
                    name,
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
            p("source", name, "batch_size must be positive".into());
        }
        let listed: BTreeSet<&String> = src.channels.iter().collect();
        let outside = |what: &str, chans: &[String], p: &mut dyn FnMut(&'static str, &str, String)| {
            for c in chans {
                if !listed.contains(c) {
                    p("source", name, format!("selector {what} channel \"{c}\" is not among the source's channels"));
                }
            }
        };
        match &src.selector {
            SelectorConfig::Replicating { optional } => outside("optional", optional, &mut p),
            SelectorConfig::Multiplexing { header, mapping, optional, default } => {
                if header.is_empty() {
                    p("source", name, "multiplexing selector header is empty".into());
                }
                for (value, chans) in mapping {
                    outside(&format!("mapping {value:?}"), chans, &mut p);
                }
                for (value, chans) in optional {
                    outside(&format!("optional {value:?}"), chans, &mut p);
                }
                outside("default", default, &mut p);
            }
        }
        for message in src.kind.validate() {
            p("source", name, message);
        }
        for i in &src.interceptors {
            if let Err(message) = i.build() {
                p("source", name, message);
            }
        }
    }

    let mut drained: BTreeSet<&str> = BTreeSet::new();
    for (name, sink) in &t.sinks {
        drained.insert(&sink.channel);
        match t.channels.get(&sink.channel) {
            None => p("sink", name, format!("channel \"{}\" does not exist", sink.channel)),
            Some(c) if sink.batch_size as u64 > channel_limits(c).1 => p(
                "sink",
                name,
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
            p("sink", name, "batch_size must be positive".into());
        }
        for message in sink.kind.validate() {
            p("sink", name, message);
        }
    }

    for name in t.channels.keys() {
        if !used.contains(name.as_str()) {
            p("channel", name, "no source puts into this channel".into());
        }
        if !drained.contains(name.as_str()) {
            p("channel", name, "no sink drains this channel".into());
        }
    }

    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, group) in &t.sink_groups {
        if group.sinks.is_empty() {
            p("sink group", name, "a sink group needs at least one sink".into());
        }
        for s in &group.sinks {
            if !t.sinks.contains_key(s) {
                p("sink group", name, format!("sink \"{s}\" does not exist"));
            }
            if let Some(other) = member_of.insert(s, name) {
                if other != name {
                    p("sink group", name, format!("sink \"{s}\" already belongs to sink group \"{other}\""));
                } else {
                    p("sink group", name, format!("sink \"{s}\" is listed twice"));
                }
            }
        }
        if let SinkProcessorConfig::Failover { priority, .. } = &group.processor {
            for s in priority.keys() {
                if !group.sinks.contains(s) {
                    p("sink group", name, format!("priority names sink \"{s}\", which is not in the group"));
                }
            }
        }
    }
    problems
}

/// `(capacity, transaction_capacity)` of a channel, in events.
pub(crate) fn channel_limits(c: &ChannelConfig) -> (u64, u64) {
    match c {
        ChannelConfig::Memory(m) => (m.capacity, m.transaction_capacity),
        ChannelConfig::RocksDb(r) => (r.capacity, r.transaction_capacity),
    }
}
