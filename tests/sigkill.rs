//! SIGKILL battery: 1,000,000 numbered Loghub lines stream over TCP into the real `flumen` binary
//! (Netcat with per-event acknowledgements → channel → `FileRoll`), which is killed with SIGKILL
//! at random points while the lines stream and started again on the same data dir; after each
//! kill the sender reconnects and resends every line not yet acknowledged.
//!
//! With `RocksDb(sync: true)`: no acknowledged line is lost and no output line is torn (every
//! complete output line is an input line); the duplicates the kills cause are printed. The
//! negative control is the same run with a `Memory` channel, which must lose acknowledged lines.
//!
//! `KILLS` (default 10) sets the number of kills: `make soak` runs 100.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const LINES: usize = 1_000_000;

/// How many kills a run makes: `KILLS` from the environment, 10 by default.
fn kills() -> usize {
    std::env::var("KILLS").ok().map_or(10, |v| v.parse().expect("KILLS is a number"))
}

/// What one run saw.
struct Outcome {
    kills: usize,
    acked: usize,
    delivery: Delivery,
}

/// `kills` acknowledged-line counts at which to kill: one uniformly random point in the middle
/// 80 % of each of `kills` equal slices of 5 %..90 % of the input, so every kill lands
/// mid-stream with progress between kills.
fn kill_points(kills: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (lo, hi) = (LINES / 20, LINES * 9 / 10);
    let slice = (hi - lo) / kills;
    (0..kills).map(|k| lo + k * slice + slice / 10 + rng.usize(0..slice * 8 / 10)).collect()
}

fn run(name: &str, channel: &str) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let topology = tmp.path().join(format!("{name}.ron"));
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "{name}",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               channels: ["c1"], batch_size: 1000),
    }},
    channels: {{ "c1": {channel} }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out", roll_interval: "2s", sync: true), channel: "c1", batch_size: 1000),
    }},
)"#
        ),
    );
    let lines = Arc::new(numbered_lines(LINES));
    let index = line_index(&lines);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let log = tmp.path().join("flumen.log");
    let args = ["run", "--quiet", topology.to_str().unwrap()];
    let seed = fastrand::u64(..);
    let points = kill_points(kills(), seed);
    eprintln!("{name}: seed {seed}, kill points {points:?}");

    let mut acked = 0;
    for (k, &point) in points.iter().enumerate() {
        let mut flumen = Flumen::start(&args, &log);
        let mut stream = AckedStream::open(&mut flumen, addr, lines.clone(), acked);
        let before = stream.read_until(Duration::from_secs(300), |a| a >= point);
        assert!(
            before >= point,
            "kill {k}: the connection ended after {before} acknowledged lines, before {point}; log:\n{}",
            flumen.log_text()
        );
        flumen.kill();
        assert!(before > 0 && before < LINES, "kill {k} lands mid-stream: {before} of {LINES} acknowledged");
        acked = stream.finish().max(acked);
        eprintln!("{name}: kill {k} after {acked} acknowledged lines");
    }

    // The last start: everything not yet acknowledged is sent and acknowledged, then the channel
    // drains into the output.
    let mut flumen = Flumen::start(&args, &log);
    let mut stream = AckedStream::open(&mut flumen, addr, lines.clone(), acked);
    let all = stream.read_until(Duration::from_secs(600), |a| a == LINES);
    assert_eq!(all, LINES, "every line is acknowledged in the end; log:\n{}", flumen.log_text());
    stream.finish();
    wait_for(
        Duration::from_secs(600),
        || metric(monitoring, "CHANNEL.c1", "ChannelSize") == Some(0),
        || format!("the channel drains; it holds {:?}", metric(monitoring, "CHANNEL.c1", "ChannelSize")),
    );
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0), "a graceful stop exits 0");
    let delivery = Delivery::read(&tmp.path().join("out"), &lines, &index);
    report(name, &delivery, &tmp.path().join("out"));
    Outcome { kills: points.len(), acked: all, delivery }
}

fn report(name: &str, d: &Delivery, out: &Path) {
    let lost = d.lost(LINES);
    eprintln!(
        "{name}: {LINES} lines sent and acknowledged, {} lost {}, {} duplicates {}, {} torn lines, \
         {} output files ending in a partial line, {} output files",
        lost.len(),
        ranges(lost.iter().copied(), 20),
        d.duplicates(),
        d.duplicate_ranges(50),
        d.torn.len(),
        d.partial_files,
        files_under(out).len()
    );
    for t in d.torn.iter().take(10) {
        eprintln!("{name}: torn line {t:?}");
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_line_with_a_synced_rocksdb_channel() {
    let started = Instant::now();
    let o = run(
        "sigkill-rocksdb",
        r#"RocksDb(dir: "data/c1", capacity: 2000000, transaction_capacity: 10000, sync: true)"#,
    );
    eprintln!("sigkill-rocksdb: {} kills in {:?}", o.kills, started.elapsed());
    assert_eq!(o.acked, LINES);
    assert_eq!(o.delivery.lost(o.acked), Vec::<usize>::new(), "no acknowledged line is lost");
    assert!(o.delivery.torn.is_empty(), "no torn line: {:?}", &o.delivery.torn[..o.delivery.torn.len().min(10)]);
    // FileRoll writes under an in-use name and cuts what a kill left back to its last line on
    // restart: no output file ends in a partial line.
    assert_eq!(o.delivery.partial_files, 0, "output files ending in a partial line");
}

/// The negative control: a `Memory` channel holds acknowledged lines only in the process, so the
/// kills must lose some; were the battery unable to see loss, this test fails.
#[test]
fn sigkill_mid_stream_loses_acknowledged_lines_with_a_memory_channel() {
    let started = Instant::now();
    let o = run("sigkill-memory", "Memory(capacity: 200000, transaction_capacity: 10000)");
    eprintln!("sigkill-memory: {} kills in {:?}", o.kills, started.elapsed());
    assert_eq!(o.acked, LINES);
    assert!(!o.delivery.lost(o.acked).is_empty(), "the kills lose acknowledged lines held only in memory");
}
