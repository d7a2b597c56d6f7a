//! The topology: the RON model of one agent, its loading, and its validation.
//!
//! A topology file describes one agent's sources, channels, sinks and sink groups and how they
//! are wired (see the README's component reference). [`load`] reads and checks a file and answers
//! a [`Topology`] whose relative paths are resolved against the file's folder, or every problem
//! found, each naming the file, line:column and component.

mod load;
mod locate;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::channel::memory::MemoryConfig;
use crate::channel::rocksdb::RocksDbConfig;
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
    /// `GET /metrics/prometheus`.
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

/// A sink processor, as Flume's `processor.type`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum SinkProcessorConfig {
    /// Every batch goes to the live sink of highest priority; a failed sink is penalised and its
    /// batch goes to the next live sink (Flume's `failover` processor).
    Failover {
        /// Sink name to priority (higher wins); a sink not named has priority 0, and equal
        /// priorities go in name order.
        #[serde(default)]
        priority: BTreeMap<String, i64>,
        /// Longest penalty of a failed sink: 1 s after its first consecutive failure, doubling per
        /// further one, at most this. Default `"30s"`.
        #[serde(default = "default_max_penalty", with = "duration")]
        max_penalty: std::time::Duration,
    },
    /// Batches are spread over the sinks; a failed batch goes to another sink (Flume's
    /// `load_balance` processor).
    LoadBalance {
        /// `RoundRobin` or `Random`. Default `RoundRobin`.
        #[serde(default)]
        selector: LoadBalanceSelector,
        /// Whether a failed sink is left out for a while (1 s after its first consecutive failure,
        /// doubling per further one, at most `max_backoff`). Default `false`: it stays in turn, and
        /// when every sink failed in a row the group is restarted with backoff.
        #[serde(default)]
        backoff: bool,
        /// Longest back-off of a failed sink. Default `"30s"`.
        #[serde(default = "default_max_penalty", with = "duration")]
        max_backoff: std::time::Duration,
    },
}

/// How a `LoadBalance` processor picks the next sink.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum LoadBalanceSelector {
    /// In turn.
    #[default]
    RoundRobin,
    /// At random.
    Random,
}

fn default_max_penalty() -> std::time::Duration {
    std::time::Duration::from_secs(30)
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

/// Checks that `address` is `host:port`: an IP address or a host name, then a port from 0 to
/// 65535 (IPv6 addresses in brackets: `"[::1]:44444"`). Host names are looked up only when the
/// component starts.
///
/// # Errors
/// What is wrong with it, in words.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("it has no :port".into());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.starts_with('[') || host.contains(':') || host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{host:?} is not an IP address (IPv6 goes in brackets: \"[::1]:44444\")"));
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("{host:?} is not an IP address"));
    }
    if !labels.into_iter().all(label) {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok(())
}

/// Resolves `path` against `base` unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["127.0.0.1:44444", "0.0.0.0:0", "[::1]:41414", "localhost:44444", "collector-1.example.org:80"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost:http",
            ":44444",
            "::1:44444",
            "bad_host:1",
            "[::1:80",
            "256.0.0.1:80",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}

/// Serde helpers for durations written as strings: `"250ms"`, `"30s"`, `"5m"` (humantime).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes a humantime duration string.
    ///
    /// # Errors
    /// A serde error naming the string when it does not parse.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("bad duration {text:?} ({e}); write e.g. \"250ms\", \"30s\", \"5m\""))
        })
    }
}
