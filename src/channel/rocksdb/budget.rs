//! The memory every `RocksDb` channel of an agent shares: one RocksDB `WriteBufferManager`
//! bounding all their memtables together, and one block cache (which also holds the tables'
//! index and filter blocks), so that several channels share one budget instead of multiplying it.
//!
//! The budget is the topology's `rocksdb_memory` ([`RocksDbMemory`]); it is set when the agent
//! starts and resized in place on reload ([`apply`]). The channel tools, run outside an agent,
//! use the defaults.

use std::sync::{Mutex, OnceLock};

use rocksdb::{Cache, WriteBufferManager};
use serde::Deserialize;

/// The agent-wide memory of its `RocksDb` channels:
/// `rocksdb_memory: (write_buffer_bytes: 16777216, block_cache_bytes: 8388608)`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RocksDbMemory {
    /// Most bytes of memtables (writes not yet flushed to table files) of all `RocksDb` channels
    /// together: when the memtables being written reach about 90 % of it RocksDB flushes one, and
    /// when all of them reach it, writes wait until a flush frees memory (RocksDB's
    /// `WriteBufferManager` with `allow_stall`). Default 16777216 (16 MiB).
    #[serde(default = "default_write_buffer_bytes")]
    pub write_buffer_bytes: u64,
    /// Bytes of the block cache shared by all `RocksDb` channels: blocks read from table files
    /// (a backlog being delivered), with their index and filter blocks. Default 8388608 (8 MiB).
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: u64,
}

impl Default for RocksDbMemory {
    fn default() -> Self {
        RocksDbMemory {
            write_buffer_bytes: default_write_buffer_bytes(),
            block_cache_bytes: default_block_cache_bytes(),
        }
    }
}

fn default_write_buffer_bytes() -> u64 {
    16 << 20
}
fn default_block_cache_bytes() -> u64 {
    8 << 20
}

/// The shared manager and cache of this process.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Bounds the memtables of every channel together.
    pub write_buffers: WriteBufferManager,
    /// The block cache of every channel.
    pub block_cache: Cache,
}

fn cell() -> &'static Mutex<(RocksDbMemory, Shared)> {
    static SHARED: OnceLock<Mutex<(RocksDbMemory, Shared)>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let m = RocksDbMemory::default();
        Mutex::new((m, build(&m)))
    })
}

fn build(m: &RocksDbMemory) -> Shared {
    let block_cache = Cache::new_lru_cache(m.block_cache_bytes as usize);
    Shared {
        write_buffers: WriteBufferManager::new_write_buffer_manager(m.write_buffer_bytes as usize, true),
        block_cache,
    }
}

/// The manager and cache channels opened from now on use.
pub(crate) fn shared() -> Shared {
    cell().lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
}

/// Sets the agent's budget: resizes the shared manager and cache in place, so channels already
/// open use the new sizes at once.
pub fn apply(m: &RocksDbMemory) {
    let mut guard = cell().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if guard.0 == *m {
        return;
    }
    guard.1.write_buffers.set_buffer_size(m.write_buffer_bytes as usize);
    guard.1.block_cache.set_capacity(m.block_cache_bytes as usize);
    guard.0 = *m;
}

/// The budget in force.
pub fn current() -> RocksDbMemory {
    cell().lock().unwrap_or_else(std::sync::PoisonError::into_inner).0
}
