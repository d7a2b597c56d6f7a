//! Supervision: a sink whose deliveries fail on some batches and panic on others is restarted
//! (with backoff) by its supervisor; its takes are rolled back, and every Loghub line still
//! reaches the real `FileRoll` output exactly once, in order.

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::{Actor, Supervisor};
use flumen::channel::memory::{MemoryChannel, MemoryConfig};
use flumen::channel::rocksdb::{self, RocksDbConfig};
use flumen::channel::{ChannelHandle, Put};
use flumen::event::Event;
use flumen::metrics::Metrics;
use flumen::sink::file_roll::{FileRollConfig, FileRollSink};
use flumen::sink::{Sink, SinkError, SinkFactory, SinkRunner};
use futures_util::future::LocalBoxFuture;
use support::*;

/// A real `FileRoll` sink behind a fault: delivery `n` (counted across restarts) fails when
/// `n % 7 == 3` and panics when `n % 11 == 5`, before anything is written.
struct Faulty {
    inner: FileRollSink,
    deliveries: Rc<Cell<u64>>,
    /// Events of the deliveries that failed or panicked.
    refused: Rc<Cell<u64>>,
}

impl Sink for Faulty {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        let n = self.deliveries.get();
        self.deliveries.set(n + 1);
        if n % 11 == 5 || n % 7 == 3 {
            self.refused.set(self.refused.get() + events.len() as u64);
        }
        if n % 11 == 5 {
            panic!("injected panic on delivery {n}");
        }
        if n % 7 == 3 {
            return Box::pin(async move { Err(SinkError::Other(format!("injected failure on delivery {n}"))) });
        }
        self.inner.deliver(events)
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        self.inner.close()
    }
}

async fn run(channel: ChannelHandle, out: std::path::PathBuf, metrics: std::sync::Arc<Metrics>) {
    let input = loghub_lines();
    let counters = metrics.sink("k1");
    let deliveries = Rc::new(Cell::new(0));
    let calls = deliveries.clone();
    let refused = Rc::new(Cell::new(0));
    let refused_events = refused.clone();
    let factory: SinkFactory = {
        let (out, counters) = (out.clone(), counters.clone());
        Rc::new(move || {
            let config = FileRollConfig {
                dir: out.clone(),
                roll_interval: Duration::ZERO,
                prefix: String::new(),
                extension: String::new(),
                in_use_suffix: ".tmp".into(),
                sync: false,
            };
            Ok(Box::new(Faulty {
                inner: FileRollSink::new(config, counters.clone())?,
                deliveries: deliveries.clone(),
                refused: refused.clone(),
            }) as Box<dyn Sink>)
        })
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(None);
    let runner = {
        let (channel, counters) = (channel.clone(), counters.clone());
        Supervisor::start(move |_| SinkRunner::new("k1", channel, 100, factory, counters, stop))
    };
    for chunk in input.chunks(250) {
        let events = chunk.iter().map(|l| Event::new(l.clone())).collect();
        channel.put.send(Put { events }).await.unwrap().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (lines, _) = output_lines(&out);
        if lines.len() >= input.len() {
            let first_difference = lines.iter().zip(&input).position(|(a, b)| a != b);
            assert_eq!(first_difference, None, "every line in order");
            assert_eq!(lines.len(), input.len(), "every line exactly once");
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} lines delivered", lines.len(), input.len());
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let restarts = counters.restarts.get();
    let failed = counters.rollbacks.get();
    let returned = metrics.channel("c1").rollback.get();
    eprintln!(
        "sink restarts: {restarts}, failed deliveries: {failed}, events rolled back: {returned} \
         of {} in failed deliveries",
        refused_events.get()
    );
    let panics = (0..calls.get()).filter(|n| n % 11 == 5).count() as u64;
    let failures = (0..calls.get()).filter(|n| n % 11 != 5 && n % 7 == 3).count() as u64;
    assert!(panics >= 5 && failures >= 5, "injected failures ({failures}) and panics ({panics}) were seen");
    assert_eq!(failed, panics + failures, "a failed or panicked delivery is rolled back");
    assert_eq!(restarts, failed, "failures and panics both restarted the sink");
    assert_eq!(returned, refused_events.get(), "every event of a failed or panicked take went back to the channel");
    drop(runner);
}

#[test]
fn failing_and_panicking_sink_over_memory_channel_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let metrics = Metrics::new();
        let config = MemoryConfig {
            capacity: 20_000,
            transaction_capacity: 1000,
            keep_alive: Duration::from_secs(3),
            ..MemoryConfig::default()
        };
        let channel = ChannelHandle::new("c1", MemoryChannel::new(config, metrics.channel("c1")).start());
        run(channel, tmp.path().join("out"), metrics).await;
    });
}

#[test]
fn failing_and_panicking_sink_over_rocksdb_channel_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let metrics = Metrics::new();
        let config = RocksDbConfig {
            dir: tmp.path().join("c1"),
            capacity: 20_000,
            transaction_capacity: 1000,
            sync: false,
            cache_events: 500,
            keep_alive: Duration::from_secs(3),
            max_bytes: None,
            min_free_bytes: 0,
            encryption: None,
            ..RocksDbConfig::new(tmp.path().join("c1"))
        };
        let channel = rocksdb::start("c1", config, metrics.channel("c1"), true).await.unwrap();
        run(channel, tmp.path().join("out"), metrics).await;
    });
}
