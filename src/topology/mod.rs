//! The topology: the RON model of one agent, its loading, its validation, and its unit tests
//! ([`unit`], `flumen test`).
//!
//! A topology file describes one agent's sources, channels, sinks and sink groups and how they
//! are wired (see the README's component reference). [`load`] reads and checks a file and answers
//! a [`Topology`] whose relative paths are resolved against the file's folder, or every problem
//! found, each naming the file, line:column and component.

mod load;
mod locate;
pub mod unit;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::channel::memory::MemoryConfig;
use crate::channel::rocksdb::RocksDbConfig;
use crate::channel::spillable::SpillableConfig;
use crate::sink::group::SinkProcessorConfig;
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

pub use load::{load, load_str};

/// One agent, as written in a topology file.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The agent's name, used in metrics, logs and `Host`-style headers.
    pub agent: String,
    /// Where metrics are served, if anywhere.
    pub monitoring: Option<Monitoring>,
    /// The memory all `RocksDb` channels of the agent share (memtables, block cache).
    pub rocksdb_memory: crate::channel::rocksdb::RocksDbMemory,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Sinks by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Sink groups by name.
    pub sink_groups: BTreeMap<String, SinkGroupConfig>,
    /// The file the topology was read from (`<string>` when loaded from a string).
    pub file: PathBuf,
}

/// Where the agent serves its metrics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum Monitoring {
    /// `Http(bind: "127.0.0.1:41414")`: Flume-style JSON at `GET /metrics`, Prometheus text at
    /// `GET /metrics/prometheus`, liveness at `GET /health`, readiness at `GET /ready`
    /// ([`crate::monitoring`]).
    Http {
        /// `host:port` to listen on.
        bind: String,
    },
}

/// A channel's kind and options.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub enum ChannelConfig {
    /// A bounded in-memory queue.
    Memory(MemoryConfig),
    /// A durable queue in its own RocksDB instance.
    RocksDb(RocksDbConfig),
    /// An in-memory queue that spills to a `RocksDb` overflow when its sinks fall behind.
    Spillable(SpillableConfig),
}

/// A sink group: several sinks draining one channel under a sink processor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkGroupConfig {
    /// The sinks in the group; each belongs to no other group.
    pub sinks: Vec<String>,
    /// How the group picks the sink for each batch.
    pub processor: SinkProcessorConfig,
}

/// A problem in a topology: where it is and what is wrong.
///
/// Shown as `FILE:LINE:COL: COMPONENT: MESSAGE` (the component is left out when the problem is
/// outside any, e.g. a syntax error at the top level); the lines of a message that has several
/// (a regex error showing the pattern) follow, indented by four spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TopologyError {
    /// The topology file.
    pub file: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column (0 when the file could not be read).
    pub col: usize,
    /// The component concerned, as `source "r1"`, `channel "c1"`, ... when known.
    pub component: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for TopologyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if let Some(component) = &self.component {
            write!(f, "{component}: ")?;
        }
        let mut lines = self.message.lines();
        f.write_str(lines.next().unwrap_or_default())?;
        for line in lines {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// Every problem found in a topology (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct TopologyErrors(pub Vec<TopologyError>);
