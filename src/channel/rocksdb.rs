//! The `RocksDb` channel: a durable queue in its own RocksDB instance.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ChannelError, ChannelHandle};
use crate::metrics::ChannelCounters;
use crate::topology::duration;

/// Options of a `RocksDb` channel: `RocksDb(dir: "data/c1", capacity: 10000000, sync: true)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RocksDbConfig {
    /// The RocksDB directory, owned by this channel alone; relative to the topology file's folder.
    pub dir: PathBuf,
    /// Most events held at once, available plus taken-but-uncommitted. Default 1000000.
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// Most events in one put or take. Default 10000; at most `capacity`.
    #[serde(default = "default_transaction_capacity")]
    pub transaction_capacity: u64,
    /// Whether a put is fsynced before it is acknowledged (concurrent puts share one fsync).
    /// Default `true`.
    #[serde(default = "default_sync")]
    pub sync: bool,
    /// Most recently put events kept in memory so a sink that keeps up never reads the disk.
    /// Default 100000 events.
    #[serde(default = "default_cache_events")]
    pub cache_events: usize,
    /// How long a put waits for room before it is refused. Default `"3s"`.
    #[serde(default = "default_keep_alive", with = "duration")]
    pub keep_alive: Duration,
}

fn default_capacity() -> u64 {
    1_000_000
}
fn default_transaction_capacity() -> u64 {
    10_000
}
fn default_sync() -> bool {
    true
}
fn default_cache_events() -> usize {
    100_000
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(3)
}

/// Opens the channel's RocksDB and starts its actor in the current arbiter.
///
/// # Errors
/// [`ChannelError::Storage`] when the database cannot be opened.
pub fn start(
    _name: &str,
    _config: RocksDbConfig,
    _counters: Arc<ChannelCounters>,
) -> Result<ChannelHandle, ChannelError> {
    Err(ChannelError::Storage("the RocksDb channel is being built".into()))
}
