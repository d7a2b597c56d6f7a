//! Model-based property tests of both channels: random puts, takes, commits, rollbacks, dropped
//! transactions and (for RocksDb) close-and-reopen, compared after every step with a plain queue.
//!
//! The model: a FIFO of event ids; a take hands out the front; a commit forgets a transaction; a
//! rollback (or a dropped transaction) puts its events back at the front; a reopen makes every
//! uncommitted take available again, in put order. A put that does not fit is refused as `Full`.

use std::collections::VecDeque;
use std::time::Duration;

use flumen::channel::memory::{MemoryChannel, MemoryConfig};
use flumen::channel::rocksdb::{self, RocksDbConfig};
use flumen::channel::{ChannelError, ChannelHandle, Close, Put, Size, TakeTxn};
use flumen::event::Event;
use flumen::metrics::Metrics;
use proptest::prelude::*;

const CAPACITY: u64 = 40;
const TXN_CAPACITY: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Take(usize),
    Commit(usize),
    Rollback(usize),
    Drop(usize),
    Reopen,
}

fn ops(reopen: bool) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (1..=TXN_CAPACITY as usize).prop_map(Op::Put),
        4 => (1..=TXN_CAPACITY as usize).prop_map(Op::Take),
        3 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Rollback),
        1 => any::<usize>().prop_map(Op::Drop),
        (if reopen { 1 } else { 0 }) => Just(Op::Reopen),
    ];
    prop::collection::vec(op, 1..80)
}

/// Real log lines, numbered so that every event is unique.
fn lines() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/data/loghub/OpenSSH_2k.log"))
        .expect("the Loghub samples are in the repository");
    text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
}

fn event(id: u64, lines: &[String]) -> Event {
    Event::new(format!("{id} {}", lines[id as usize % lines.len()])).with_header("id", id.to_string())
}

fn id_of(e: &Event) -> u64 {
    e.headers["id"].parse().expect("every event has a numeric id")
}

#[derive(Default)]
struct Model {
    available: VecDeque<u64>,
    open: Vec<(TakeTxn, Vec<u64>)>,
    next_id: u64,
}

impl Model {
    fn held(&self) -> u64 {
        (self.available.len() + self.open.iter().map(|(_, ids)| ids.len()).sum::<usize>()) as u64
    }
}

async fn run(ops: Vec<Op>, open: impl Fn() -> futures_util::future::LocalBoxFuture<'static, ChannelHandle>) {
    let lines = lines();
    let mut ch = open().await;
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(n) => {
                let events: Vec<Event> = (m.next_id..m.next_id + n as u64).map(|i| event(i, &lines)).collect();
                let result = ch.put.send(Put { events }).await.unwrap();
                if m.held() + n as u64 <= CAPACITY {
                    assert_eq!(result, Ok(()), "step {step}: {op:?}");
                    m.available.extend(m.next_id..m.next_id + n as u64);
                    m.next_id += n as u64;
                } else {
                    assert_eq!(result, Err(ChannelError::Full { capacity: CAPACITY }), "step {step}: {op:?}");
                }
            }
            Op::Take(max) => {
                let txn = ch.take(max, Duration::ZERO).await.unwrap();
                let expected: Vec<u64> = m.available.drain(..max.min(m.available.len())).collect();
                let got: Vec<u64> = txn.events.iter().map(id_of).collect();
                assert_eq!(got, expected, "step {step}: {op:?}");
                for e in &txn.events {
                    assert_eq!(*e, event(id_of(e), &lines), "step {step}: body and headers survive");
                }
                if !expected.is_empty() {
                    m.open.push((txn, expected));
                }
            }
            Op::Commit(i) | Op::Rollback(i) | Op::Drop(i) if !m.open.is_empty() => {
                let (txn, ids) = m.open.remove(i % m.open.len());
                match op {
                    Op::Commit(_) => ch.commit(txn).await.unwrap(),
                    Op::Rollback(_) => ch.rollback(txn).await.unwrap(),
                    _ => drop(txn),
                }
                if !matches!(op, Op::Commit(_)) {
                    for id in ids.into_iter().rev() {
                        m.available.push_front(id);
                    }
                }
            }
            Op::Commit(_) | Op::Rollback(_) | Op::Drop(_) => {}
            Op::Reopen => {
                ch.close.send(Close).await.unwrap();
                for (mut txn, ids) in m.open.drain(..) {
                    txn.disarm();
                    m.available.extend(ids);
                }
                m.available.make_contiguous().sort_unstable();
                ch = open().await;
            }
        }
        assert_eq!(ch.size.send(Size).await.unwrap(), m.held(), "step {step}: size after {op:?}");
    }
    // Drain what is left: exactly the model's available events, in its order.
    let mut rest = Vec::new();
    loop {
        let txn = ch.take(TXN_CAPACITY as usize, Duration::ZERO).await.unwrap();
        if txn.events.is_empty() {
            break;
        }
        rest.extend(txn.events.iter().map(id_of));
        ch.commit(txn).await.unwrap();
    }
    assert_eq!(rest, Vec::from(m.available.clone()));
    for (txn, _) in m.open.drain(..) {
        ch.commit(txn).await.unwrap();
    }
    assert_eq!(ch.size.send(Size).await.unwrap(), 0);
    ch.close.send(Close).await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_channel_behaves_as_a_queue(ops in ops(false)) {
        actix_rt::System::new().block_on(run(ops, || {
            Box::pin(async {
                let config = MemoryConfig {
                    capacity: CAPACITY,
                    transaction_capacity: TXN_CAPACITY,
                    keep_alive: Duration::from_millis(5),
                    ..MemoryConfig::default()
                };
                ChannelHandle::new("c1", actix::Actor::start(MemoryChannel::new(config, Metrics::new().channel("c1"))))
            })
        }));
    }

    #[test]
    fn rocksdb_channel_behaves_as_a_queue_across_reopens(ops in ops(true), cache in 1usize..20) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c1");
        actix_rt::System::new().block_on(run(ops, move || {
            let config = RocksDbConfig {
                dir: path.clone(),
                capacity: CAPACITY,
                transaction_capacity: TXN_CAPACITY,
                sync: false,
                cache_events: cache,
                keep_alive: Duration::from_millis(5),
                max_bytes: None,
                min_free_bytes: 0,
                encryption: None,
                ..RocksDbConfig::new(&path)
            };
            Box::pin(async move { rocksdb::start("c1", config, Metrics::new().channel("c1"), true).await.unwrap() })
        }));
    }
}
