//! The `Spillable` channel: memory in front of a `RocksDb` overflow.
//!
//! - A model test: random puts, takes, commits, rollbacks and dropped transactions against a
//!   plain FIFO (the same model as tests/channel_model.rs), with a memory so small that most
//!   events go through the overflow: takes come in put order across memory and overflow, nothing
//!   is lost or duplicated.
//! - Through the real binary: a sink that falls behind (a `FileRoll` sink whose directory is a
//!   link to a plain file) makes the channel spill; once the sink is mended every Loghub line
//!   arrives, in put order.
//! - SIGKILL while spilled: what the overflow held arrives after the restart, what was only in
//!   memory is lost (Flume's behaviour, the README says so); the control with a memory large
//!   enough that nothing spills loses everything not yet delivered.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flumen::channel::rocksdb::RocksDbConfig;
use flumen::channel::spillable::{self, OverflowConfig, SpillableConfig};
use flumen::channel::{ChannelError, ChannelHandle, Close, Put, Size, TakeTxn};
use flumen::event::Event;
use flumen::metrics::{ChannelCounters, Metrics};
use proptest::prelude::*;
use support::*;

const TXN_CAPACITY: u64 = 10;

fn event(id: u64, lines: &[String]) -> Event {
    Event::new(format!("{id} {}", lines[id as usize % lines.len()])).with_header("id", id.to_string())
}

fn id_of(e: &Event) -> u64 {
    e.headers["id"].parse().expect("every event has a numeric id")
}

fn config(dir: &Path, memory_capacity: u64, overflow_timeout: Duration, overflow_capacity: u64) -> SpillableConfig {
    SpillableConfig {
        memory_capacity,
        overflow_timeout,
        overflow: OverflowConfig::RocksDb(RocksDbConfig {
            capacity: overflow_capacity,
            transaction_capacity: TXN_CAPACITY,
            sync: false,
            cache_events: 4,
            keep_alive: Duration::from_millis(30),
            min_free_bytes: 0,
            ..RocksDbConfig::new(dir.join("overflow"))
        }),
        ..SpillableConfig::new(dir.join("overflow"))
    }
}

/// Starts a spillable channel; answers its handle, its counters and its overflow's.
async fn open(config: SpillableConfig) -> (ChannelHandle, Arc<ChannelCounters>, Arc<ChannelCounters>) {
    let metrics = Metrics::new();
    let (counters, overflow) = (metrics.channel("c1"), metrics.channel("c1.overflow"));
    let (handle, _) = spillable::start("c1", config, counters.clone(), overflow.clone(), true).await.unwrap();
    (handle, counters, overflow)
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    Take(usize),
    Commit(usize),
    Rollback(usize),
    Drop(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (1..=TXN_CAPACITY as usize).prop_map(Op::Put),
        4 => (1..=TXN_CAPACITY as usize).prop_map(Op::Take),
        3 => any::<usize>().prop_map(Op::Commit),
        1 => any::<usize>().prop_map(Op::Rollback),
        1 => any::<usize>().prop_map(Op::Drop),
    ];
    prop::collection::vec(op, 1..80)
}

/// Runs `ops` on a spillable channel and on the model (a FIFO of ids: a take hands out the
/// front, a rollback or a dropped transaction puts its events back at the front, in order),
/// comparing after every step; answers how many events went through the overflow.
async fn run_model(ops: Vec<Op>, config: SpillableConfig) -> u64 {
    let lines = loghub_lines();
    let (ch, counters, overflow) = open(config).await;
    let mut available: VecDeque<u64> = VecDeque::new();
    let mut open_txns: Vec<(TakeTxn, Vec<u64>)> = Vec::new();
    let mut next_id = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Put(n) => {
                let events: Vec<Event> = (next_id..next_id + n as u64).map(|i| event(i, &lines)).collect();
                assert_eq!(ch.put.send(Put { events }).await.unwrap(), Ok(()), "step {step}: {op:?}");
                available.extend(next_id..next_id + n as u64);
                next_id += n as u64;
            }
            Op::Take(max) => {
                let txn = ch.take(max, Duration::ZERO).await.unwrap();
                let expected: Vec<u64> = available.drain(..max.min(available.len())).collect();
                let got: Vec<u64> = txn.events.iter().map(id_of).collect();
                assert_eq!(got, expected, "step {step}: {op:?}");
                for e in &txn.events {
                    assert_eq!(*e, event(id_of(e), &lines), "step {step}: body and headers survive");
                }
                if !expected.is_empty() {
                    open_txns.push((txn, expected));
                }
            }
            Op::Commit(i) | Op::Rollback(i) | Op::Drop(i) if !open_txns.is_empty() => {
                let (txn, ids) = open_txns.remove(i % open_txns.len());
                match op {
                    Op::Commit(_) => ch.commit(txn).await.unwrap(),
                    Op::Rollback(_) => ch.rollback(txn).await.unwrap(),
                    _ => drop(txn),
                }
                if !matches!(op, Op::Commit(_)) {
                    for id in ids.into_iter().rev() {
                        available.push_front(id);
                    }
                }
            }
            Op::Commit(_) | Op::Rollback(_) | Op::Drop(_) => {}
        }
        let held = (available.len() + open_txns.iter().map(|(_, ids)| ids.len()).sum::<usize>()) as u64;
        assert_eq!(ch.size.send(Size).await.unwrap(), held, "step {step}: size after {op:?}");
        assert_eq!(
            counters.memory_size.get() + counters.overflow_size.get(),
            held,
            "step {step}: the gauges add up to what is held"
        );
    }
    let mut rest = Vec::new();
    loop {
        let txn = ch.take(TXN_CAPACITY as usize, Duration::ZERO).await.unwrap();
        if txn.events.is_empty() {
            break;
        }
        rest.extend(txn.events.iter().map(id_of));
        ch.commit(txn).await.unwrap();
    }
    assert_eq!(rest, Vec::from(available), "what is left comes out in the model's order");
    for (txn, _) in open_txns.drain(..) {
        ch.commit(txn).await.unwrap();
    }
    assert_eq!(ch.size.send(Size).await.unwrap(), 0);
    ch.close.send(Close).await.unwrap();
    overflow.put_success.get()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn spillable_channel_behaves_as_a_queue_across_memory_and_overflow(
        ops in ops(),
        memory_capacity in 0u64..12,
        wait in prop_oneof![Just(0u64), Just(15)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), memory_capacity, Duration::from_millis(wait), 100_000);
        actix_rt::System::new().block_on(run_model(ops, config));
    }
}

/// The model test's sequences do go through the overflow: a fixed sequence that overfills
/// memory, with rollbacks across the boundary.
#[test]
fn puts_spill_when_memory_is_full_and_takes_follow_put_order() {
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let lines = loghub_lines();
        let (ch, counters, overflow) = open(config(dir.path(), 6, Duration::from_millis(20), 1000)).await;
        let batch = |from: u64, n: u64| (from..from + n).map(|i| event(i, &lines)).collect::<Vec<_>>();
        ch.put.send(Put { events: batch(0, 4) }).await.unwrap().unwrap();
        ch.put.send(Put { events: batch(4, 2) }).await.unwrap().unwrap();
        assert_eq!((counters.memory_size.get(), counters.overflow_size.get()), (6, 0), "memory first");
        // Memory is full: this put waits overflow_timeout, then spills; the next one at once.
        ch.put.send(Put { events: batch(6, 5) }).await.unwrap().unwrap();
        ch.put.send(Put { events: batch(11, 5) }).await.unwrap().unwrap();
        assert_eq!((counters.memory_size.get(), counters.overflow_size.get()), (6, 10), "spilled");
        assert_eq!(overflow.put_success.get(), 10);
        // A take across memory and overflow, rolled back: the same events again, in order.
        let txn = ch.take(9, Duration::ZERO).await.unwrap();
        assert_eq!(txn.events.iter().map(id_of).collect::<Vec<_>>(), (0..9).collect::<Vec<_>>());
        ch.rollback(txn).await.unwrap();
        let txn = ch.take(8, Duration::ZERO).await.unwrap();
        assert_eq!(txn.events.iter().map(id_of).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        ch.commit(txn).await.unwrap();
        // Memory has room again: puts stay in memory, after the overflow's events.
        ch.put.send(Put { events: batch(16, 3) }).await.unwrap().unwrap();
        assert_eq!(overflow.put_success.get(), 10, "no spill while memory has room");
        let mut got = Vec::new();
        loop {
            let txn = ch.take(10, Duration::ZERO).await.unwrap();
            if txn.events.is_empty() {
                break;
            }
            got.extend(txn.events.iter().map(id_of));
            ch.commit(txn).await.unwrap();
        }
        assert_eq!(got, (8..19).collect::<Vec<_>>());
        assert_eq!((counters.memory_size.get(), counters.overflow_size.get(), counters.size.get()), (0, 0, 0));
    });
}

/// With memory and overflow full, a put is refused as `Full` after overflow_timeout plus the
/// overflow's keep_alive, and gets in once a take commits.
#[test]
fn a_full_channel_refuses_puts_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(async {
        let lines = loghub_lines();
        let (ch, _, _) = open(config(dir.path(), 2, Duration::from_millis(20), 3)).await;
        let batch = |from: u64, n: u64| (from..from + n).map(|i| event(i, &lines)).collect::<Vec<_>>();
        ch.put.send(Put { events: batch(0, 2) }).await.unwrap().unwrap();
        ch.put.send(Put { events: batch(2, 3) }).await.unwrap().unwrap();
        let refused = ch.put.send(Put { events: batch(5, 1) }).await.unwrap();
        assert_eq!(refused, Err(ChannelError::Full { capacity: 5 }));
        let txn = ch.take(3, Duration::ZERO).await.unwrap();
        ch.commit(txn).await.unwrap();
        ch.put.send(Put { events: batch(5, 1) }).await.unwrap().unwrap();
        assert_eq!(ch.size.send(Size).await.unwrap(), 3);
    });
}

/// A clean close puts the events in memory into the overflow; the next start takes them (after
/// the overflow's own).
#[test]
fn a_clean_close_keeps_the_events_in_memory_in_the_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let lines = loghub_lines();
    let batch = |from: u64, n: u64| (from..from + n).map(|i| event(i, &lines)).collect::<Vec<_>>();
    actix_rt::System::new().block_on(async {
        let (ch, counters, _) = open(config(dir.path(), 4, Duration::ZERO, 1000)).await;
        ch.put.send(Put { events: batch(0, 4) }).await.unwrap().unwrap();
        ch.put.send(Put { events: batch(4, 3) }).await.unwrap().unwrap();
        assert_eq!((counters.memory_size.get(), counters.overflow_size.get()), (4, 3));
        ch.close.send(Close).await.unwrap();
    });
    actix_rt::System::new().block_on(async {
        let (ch, counters, _) = open(config(dir.path(), 4, Duration::ZERO, 1000)).await;
        // The overflow's count is learnt from the overflow itself, just after the start.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counters.overflow_size.get() != 7 {
            assert!(std::time::Instant::now() < deadline, "the overflow's 7 events are found");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let txn = ch.take(10, Duration::from_secs(5)).await.unwrap();
        let got: Vec<u64> = txn.events.iter().map(id_of).collect();
        assert_eq!(got, vec![4, 5, 6, 0, 1, 2, 3], "the overflow's events, then those that were in memory");
    });
}

// ---- through the binary ----

/// Points the symbolic link `link` at `target`, atomically (a new link renamed over the old).
fn point(link: &Path, target: &Path) {
    let new = link.with_extension("new");
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink(target, &new).expect("create a symbolic link");
    std::fs::rename(&new, link).expect("swap the symbolic link");
}

fn gauge(monitoring: SocketAddr, name: &str) -> Option<u64> {
    metric(monitoring, "CHANNEL.c1", name)
}

fn spillable_topology(
    tmp: &Path,
    port: u16,
    metrics_port: u16,
    memory_capacity: u64,
    sink: &str,
) -> std::path::PathBuf {
    let path = tmp.join(format!("spill-{port}.ron"));
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "spill",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               channels: ["c1"], batch_size: 100),
    }},
    channels: {{
        "c1": Spillable(
            memory_capacity: {memory_capacity},
            overflow_timeout: "200ms",
            overflow: RocksDb(dir: "data/c1", capacity: 1000000, sync: true, min_free_bytes: 0),
        ),
    }},
    sinks: {{ "k1": (kind: {sink}, channel: "c1", batch_size: 100) }},
)"#
        ),
    );
    path
}

/// Sends every line of `lines` to the Netcat source on `port` and waits for every `OK`.
fn send_all(flumen: &mut Flumen, port: u16, lines: Arc<Vec<String>>) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = AckedStream::open(flumen, addr, lines.clone(), 0);
    let acked = stream.read_until(Duration::from_secs(180), |n| n == lines.len());
    assert_eq!(acked, lines.len(), "every line acknowledged; log:\n{}", flumen.log_text());
    stream.finish();
}

#[test]
fn a_sink_that_falls_behind_makes_the_channel_spill_and_every_line_arrives_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    // The sink writes under a link that points at a plain file: it cannot deliver until mended.
    std::fs::create_dir_all(tmp.path().join("k1")).unwrap();
    write_file(&tmp.path().join("k1.blocker"), "not a directory\n");
    point(&tmp.path().join("k1.link"), &tmp.path().join("k1.blocker"));
    let sink = format!(r#"FileRoll(dir: "{}/k1.link/files", roll_interval: "1s")"#, tmp.path().display());
    const MEMORY: u64 = 500;
    let topology = spillable_topology(tmp.path(), port, metrics_port, MEMORY, &sink);
    let lines = Arc::new(loghub_lines());
    let n = lines.len() as u64;
    let mut flumen = Flumen::start(&["run", topology.to_str().unwrap()], &tmp.path().join("flumen.log"));
    send_all(&mut flumen, port, lines.clone());

    // Everything is held: memory full, the rest spilled to the overflow.
    wait_for(
        Duration::from_secs(30),
        || gauge(monitoring, "ChannelSize") == Some(n),
        || format!("ChannelSize {:?} of {n}", gauge(monitoring, "ChannelSize")),
    );
    let memory = gauge(monitoring, "ChannelMemorySize").unwrap();
    let overflow = gauge(monitoring, "ChannelOverflowSize").unwrap();
    assert!(memory <= MEMORY && memory > MEMORY - 100, "memory is full (to within a batch): {memory}");
    assert_eq!(memory + overflow, n, "the rest spilled");
    assert_eq!(metric(monitoring, "CHANNEL.c1.overflow", "EventPutSuccessCount"), Some(overflow));
    assert!(output_lines(&tmp.path().join("k1")).0.is_empty(), "nothing delivered while the sink is broken");

    point(&tmp.path().join("k1.link"), &tmp.path().join("k1"));
    wait_for_output_lines(&flumen, &tmp.path().join("k1"), lines.len(), Duration::from_secs(120));
    let (out, partial) = output_lines(&tmp.path().join("k1"));
    assert_eq!(partial, 0);
    assert_eq!(out.len(), lines.len(), "no line twice");
    if let Some(i) = out.iter().zip(lines.iter()).position(|(a, b)| a != b) {
        panic!("line {i} is out of order: {:?} where {:?} was put", out[i], lines[i]);
    }
    wait_for(
        Duration::from_secs(10),
        || gauge(monitoring, "ChannelOverflowSize") == Some(0) && gauge(monitoring, "ChannelMemorySize") == Some(0),
        || "the gauges come back to 0".into(),
    );
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));
}

/// Fills the channel (memory `memory_capacity`) with a sink that never delivers, SIGKILLs the
/// agent, restarts it with a working sink and answers (memory gauge at the kill, overflow gauge
/// at the kill, the lines delivered after the restart, the input lines).
fn kill_while_filled(memory_capacity: u64) -> (u64, u64, Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let n = loghub_lines().len();
    let lines = Arc::new(numbered_lines(n));
    // An Http sink posting where nothing listens: every batch is rolled back.
    let down =
        spillable_topology(tmp.path(), port, metrics_port, memory_capacity, r#"Http(url: "http://127.0.0.1:9/")"#);
    let mut flumen = Flumen::start(&["run", down.to_str().unwrap()], &tmp.path().join("flumen.log"));
    send_all(&mut flumen, port, lines.clone());
    wait_for(
        Duration::from_secs(30),
        || gauge(monitoring, "ChannelSize") == Some(n as u64),
        || format!("ChannelSize {:?} of {n}", gauge(monitoring, "ChannelSize")),
    );
    let memory = gauge(monitoring, "ChannelMemorySize").unwrap();
    let overflow = gauge(monitoring, "ChannelOverflowSize").unwrap();
    flumen.kill();

    // The overflow is a RocksDb channel's directory: the channel tools read it, by dir or by the
    // spillable channel's name in the topology.
    let inspect = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let report = String::from_utf8(out.stdout).unwrap();
        report
            .lines()
            .find_map(|l| l.strip_prefix("events:"))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no `events:` in the report:\n{report}"))
    };
    let dir = tmp.path().join("data/c1");
    assert_eq!(inspect(&["channel", "inspect", dir.to_str().unwrap()]), overflow, "inspect DIR counts the overflow");
    assert_eq!(
        inspect(&["channel", "inspect", "--topology", down.to_str().unwrap(), "--channel", "c1"]),
        overflow,
        "inspect --topology --channel finds the overflow's dir"
    );

    let (port2, metrics_port2) = (free_port(), free_port());
    let monitoring2: SocketAddr = format!("127.0.0.1:{metrics_port2}").parse().unwrap();
    let out = tmp.path().join("out");
    let up = spillable_topology(
        tmp.path(),
        port2,
        metrics_port2,
        memory_capacity,
        &format!(r#"FileRoll(dir: "{}", roll_interval: "0s")"#, out.display()),
    );
    let mut flumen = Flumen::start(&["run", up.to_str().unwrap()], &tmp.path().join("flumen2.log"));
    wait_for(
        Duration::from_secs(60),
        || gauge(monitoring2, "ChannelSize").is_some(),
        || format!("the restarted agent serves metrics; log:\n{}", flumen.log_text()),
    );
    // A marker put after the restart: once it arrived, whatever was recovered (taken first) has.
    let marker = "marker after the restart".to_string();
    flumen.send_acknowledged(
        format!("127.0.0.1:{port2}").parse().unwrap(),
        std::slice::from_ref(&marker),
        Duration::from_secs(60),
    );
    wait_for(
        Duration::from_secs(120),
        || output_lines(&out).0.contains(&marker),
        || format!("the marker arrives; log:\n{}", flumen.log_text()),
    );
    let (mut delivered, _) = output_lines(&out);
    assert_eq!(delivered.pop(), Some(marker), "the marker comes last");
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));
    (memory, overflow, delivered, Arc::try_unwrap(lines).unwrap())
}

#[test]
fn sigkill_while_spilled_keeps_what_the_overflow_held_and_loses_what_was_only_in_memory() {
    const MEMORY: u64 = 1000;
    let (memory, overflow, delivered, lines) = kill_while_filled(MEMORY);
    let n = lines.len() as u64;
    assert!(memory <= MEMORY && memory > MEMORY - 100, "memory full (to within a batch) at the kill: {memory}");
    assert_eq!(memory + overflow, n, "the rest spilled");
    // The overflow's events survive, once each, in put order.
    let index = line_index(&lines);
    let at: Vec<usize> = delivered.iter().map(|l| index[l.as_str()]).collect();
    assert_eq!(delivered.len() as u64, overflow, "every spilled line arrives, once");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in put order");
    // What was only in memory is lost (documented, as in Flume): as many lines as memory held,
    // among them the first lines put (memory fills first).
    let lost = n - delivered.len() as u64;
    assert_eq!(lost, memory, "the lines only in memory are lost");
    assert!(at.first().is_some_and(|&i| i as u64 >= memory - 100), "the first lines were in memory: {:?}", at.first());
}

#[test]
fn control_nothing_spilled_so_a_sigkill_loses_every_undelivered_line() {
    let (memory, overflow, delivered, lines) = kill_while_filled(100_000);
    assert_eq!((memory, overflow), (lines.len() as u64, 0), "everything was in memory at the kill");
    assert!(delivered.is_empty(), "{} lines survived that were only in memory", delivered.len());
}

#[test]
fn a_reload_resizes_memory_in_place_and_a_reopen_keeps_what_memory_held() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let sink = r#"Http(url: "http://127.0.0.1:9/")"#;
    let file = tmp.path().join("reload.ron");
    let render = |memory: u64| {
        std::fs::read_to_string(spillable_topology(tmp.path(), port, metrics_port, memory, sink)).unwrap()
    };
    write_file(&file, &render(100));
    let mut flumen = Flumen::start(&["run", file.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let lines = numbered_lines(200);
    let source: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    flumen.send_acknowledged(source, &lines[..150], Duration::from_secs(60));
    let (memory, overflow) =
        (gauge(monitoring, "ChannelMemorySize").unwrap(), gauge(monitoring, "ChannelOverflowSize").unwrap());
    assert_eq!(memory + overflow, 150);
    assert!(overflow > 0, "memory 100 of 150 lines: some spilled");

    // Only memory options: resized in place, nothing moves; the new room takes the next puts.
    write_file(&file, &render(200));
    flumen.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(30),
        || metric(monitoring, "AGENT", "ReloadSuccessCount") == Some(1),
        || flumen.log_text(),
    );
    assert!(flumen.log_text().contains("resized channels [c1]"), "{}", flumen.log_text());
    assert_eq!(gauge(monitoring, "ChannelOverflowSize"), Some(overflow));
    flumen.send_acknowledged(source, &lines[150..], Duration::from_secs(60));
    assert_eq!(gauge(monitoring, "ChannelMemorySize"), Some(memory + 50), "the raised memory_capacity holds them");

    // An overflow option: reopened; what memory held is put into the overflow first.
    write_file(&file, &render(200).replace("min_free_bytes: 0)", "min_free_bytes: 0, cache_events: 500)"));
    flumen.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(30),
        || metric(monitoring, "AGENT", "ReloadSuccessCount") == Some(2),
        || flumen.log_text(),
    );
    assert!(flumen.log_text().contains("reopened channels [c1]"), "{}", flumen.log_text());
    wait_for(
        Duration::from_secs(30),
        || gauge(monitoring, "ChannelOverflowSize") == Some(200),
        || format!("overflow {:?}; log:\n{}", gauge(monitoring, "ChannelOverflowSize"), flumen.log_text()),
    );
    assert_eq!(gauge(monitoring, "ChannelMemorySize"), Some(0));
    assert_eq!(gauge(monitoring, "ChannelSize"), Some(200));
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));
}

/// The README's example is a valid channel; an overflow `dir` shared with another channel is not.
#[test]
fn the_readme_example_validates_and_a_shared_overflow_dir_is_refused() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("#### Spillable").expect("a Spillable section")..];
    let block = &section[section.find("```ron\n").unwrap() + 7..];
    let example = block[..block.find("```").unwrap()].trim().trim_end_matches(',');
    let tmp = tempfile::tempdir().unwrap();
    let topology = |channels: &str| {
        format!(
            r#"Topology(
    agent: "a1",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{}"), channels: ["c1"]) }},
    channels: {{ {channels} }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out"), channel: "c1", batch_size: 100) }},
)"#,
            free_port()
        )
    };
    let validate = |text: &str| {
        let path = tmp.path().join("t.ron");
        write_file(&path, text);
        std::process::Command::new(env!("CARGO_BIN_EXE_flumen")).arg("validate").arg(&path).output().unwrap()
    };
    let out = validate(&topology(example));
    assert!(out.status.success(), "{example}\n{}", String::from_utf8_lossy(&out.stderr));

    let shared = format!(r#"{example}, "c2": RocksDb(dir: "data/c1-overflow")"#);
    let out = validate(&topology(&shared));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is already the dir of channel"), "{stderr}");

    let out = validate(&topology(
        r#""c1": Spillable(overflow_deactivation_threshold: 101, overflow: RocksDb(dir: "d", capacity: 10, transaction_capacity: 20))"#,
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("overflow_deactivation_threshold is a percentage"), "{stderr}");
    assert!(stderr.contains("transaction_capacity (20) exceeds the overflow's capacity (10)"), "{stderr}");
}

/// An overflow of another kind is named as such, with the kinds there are.
#[test]
fn an_unknown_overflow_kind_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.ron");
    write_file(
        &path,
        r#"Topology(
    agent: "a1",
    sources: { "r1": (kind: Netcat(bind: "127.0.0.1:44444"), channels: ["c1"]) },
    channels: { "c1": Spillable(overflow: Memory(capacity: 10)) },
    sinks: { "k1": (kind: FileRoll(dir: "out"), channel: "c1") },
)"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen")).arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("overflow kind") && stderr.contains("RocksDb"), "{stderr}");
    assert!(stderr.contains("t.ron:4:"), "the line of the channel: {stderr}");
}
