//! Channel benchmarks: put/take/commit throughput of both channels on batches of 1,000 Loghub
//! lines, the RocksDb channel with and without fsync, with concurrent puts (group commit), and
//! after long churn (deleted keys piling up must not slow takes down), the Spillable channel in
//! memory and through its overflow; plus the event codec.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flumen::channel::memory::{MemoryChannel, MemoryConfig};
use flumen::channel::rocksdb::{self, RocksDbConfig};
use flumen::channel::spillable;
use flumen::channel::{ChannelHandle, Close, Put};
use flumen::event::Event;
use flumen::metrics::Metrics;

const BATCH: usize = 1000;

fn loghub_batch() -> Vec<Event> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/data/loghub");
    let mut lines = Vec::new();
    for f in ["HDFS_2k.log", "OpenSSH_2k.log"] {
        let text = std::fs::read_to_string(dir.join(f)).expect("the Loghub samples are in the repository");
        lines.extend(text.lines().map(|l| l.trim_end_matches('\r').to_string()));
    }
    lines.into_iter().take(BATCH).map(Event::new).collect()
}

fn rocks_config(dir: &Path, sync: bool) -> RocksDbConfig {
    RocksDbConfig {
        dir: dir.to_path_buf(),
        capacity: 10_000_000,
        transaction_capacity: BATCH as u64,
        sync,
        cache_events: 100_000,
        keep_alive: Duration::from_secs(3),
        max_bytes: None,
        min_free_bytes: 0,
        encryption: None,
        ..RocksDbConfig::new(dir)
    }
}

/// `rounds` times: `writers` concurrent puts of one batch each, then take and commit them all.
async fn cycle(ch: &ChannelHandle, batch: &[Event], rounds: u64, writers: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..rounds {
        let puts = (0..writers).map(|_| ch.put.send(Put { events: batch.to_vec() }));
        for r in futures_util::future::join_all(puts).await {
            r.expect("channel alive").expect("put fits");
        }
        for _ in 0..writers {
            let txn = ch.take(BATCH, Duration::ZERO).await.expect("take");
            assert_eq!(txn.events.len(), BATCH);
            ch.commit(txn).await.expect("commit");
        }
    }
    start.elapsed()
}

fn channels(c: &mut Criterion) {
    let batch = loghub_batch();
    let mut group = c.benchmark_group("channel");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("memory put+take+commit", |b| {
        b.iter_custom(|iters| {
            actix_rt::System::new().block_on(async {
                let config = MemoryConfig { capacity: 100_000, transaction_capacity: BATCH as u64, ..mem_defaults() };
                let ch = ChannelHandle::new(
                    "c1",
                    actix::Actor::start(MemoryChannel::new(config, Metrics::new().channel("c1"))),
                );
                cycle(&ch, &batch, iters, 1).await
            })
        })
    });
    for (sync, writers) in [(false, 1), (true, 1), (true, 4)] {
        let id = BenchmarkId::new("rocksdb put+take+commit", format!("sync={sync} concurrent_puts={writers}"));
        group.throughput(Throughput::Elements((BATCH * writers) as u64));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("temp dir");
                actix_rt::System::new().block_on(async {
                    let ch = rocksdb::start("c1", rocks_config(dir.path(), sync), Metrics::new().channel("c1"), true)
                        .await
                        .unwrap();
                    let took = cycle(&ch, &batch, iters, writers).await;
                    ch.close.send(Close).await.unwrap();
                    took
                })
            })
        });
    }
    // The Spillable channel: all in memory, and all through its overflow (memory_capacity 0).
    for (memory_capacity, sync, writers) in [(100_000, true, 1), (0, false, 1), (0, true, 1), (0, true, 4)] {
        let id = BenchmarkId::new(
            "spillable put+take+commit",
            format!("memory_capacity={memory_capacity} sync={sync} concurrent_puts={writers}"),
        );
        group.throughput(Throughput::Elements((BATCH * writers) as u64));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("temp dir");
                actix_rt::System::new().block_on(async {
                    let config = spillable::SpillableConfig {
                        memory_capacity,
                        overflow: spillable::OverflowConfig::RocksDb(rocks_config(dir.path(), sync)),
                        ..spillable::SpillableConfig::new(dir.path())
                    };
                    let metrics = Metrics::new();
                    let (ch, _) =
                        spillable::start("c1", config, metrics.channel("c1"), metrics.channel("c1.overflow"), true)
                            .await
                            .unwrap();
                    let took = cycle(&ch, &batch, iters, writers).await;
                    ch.close.send(Close).await.unwrap();
                    took
                })
            })
        });
    }
    group.finish();
}

fn mem_defaults() -> MemoryConfig {
    MemoryConfig {
        capacity: 10_000,
        transaction_capacity: 1_000,
        keep_alive: Duration::from_secs(3),
        ..MemoryConfig::default()
    }
}

/// Take throughput of a RocksDb channel that must read from disk (no cache), fresh and after
/// 2,000,000 events went through it: equal speeds mean tombstones are not scanned.
fn churn(c: &mut Criterion) {
    let batch = loghub_batch();
    let mut group = c.benchmark_group("rocksdb churn");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(BATCH as u64));
    for churned in [0u64, 2_000] {
        group.bench_function(BenchmarkId::new("disk take after batches", churned), |b| {
            let dir = tempfile::tempdir().expect("temp dir");
            let sys = actix_rt::System::new();
            let ch = sys.block_on(async {
                let mut config = rocks_config(dir.path(), false);
                config.cache_events = 1;
                let ch = rocksdb::start("c1", config, Metrics::new().channel("c1"), true).await.unwrap();
                cycle(&ch, &batch, churned, 1).await;
                ch
            });
            b.iter_custom(|iters| sys.block_on(cycle(&ch, &batch, iters, 1)));
            sys.block_on(async { ch.close.send(Close).await.unwrap() });
        });
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    let batch = loghub_batch();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("encode+decode", |b| {
        let mut buf = bytes::BytesMut::new();
        b.iter(|| {
            buf.clear();
            for e in &batch {
                e.encode(&mut buf);
            }
            let mut bytes = buf.split().freeze();
            let mut n = 0;
            while !bytes.is_empty() {
                Event::decode(&mut bytes).expect("decodes");
                n += 1;
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, channels, churn, codec);
criterion_main!(benches);
