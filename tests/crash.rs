//! Crash test: the real `flumen` binary with a `RocksDb(sync: true)` channel and a slow sink is
//! sent 100,000 numbered Loghub lines over TCP with per-event acknowledgements, killed with
//! SIGKILL mid-stream several times and started again on the same data dir. In the end every line
//! the source acknowledged was delivered at least once, intact; the duplicates are reported.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const LINES: usize = 100_000;
const KILLS: usize = 3;

#[test]
fn acknowledged_lines_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let out = tmp.path().join("out");
    let topology = tmp.path().join("crash.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "crash",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
            channels: ["c1"],
            batch_size: 500,
        ),
    }},
    channels: {{ "c1": RocksDb(dir: "data/c1", capacity: 200000, sync: true) }},
    sinks: {{
        // Slow: an fsync for every 50 events.
        "k1": (kind: FileRoll(dir: "out", roll_interval: "1s", sync: true), channel: "c1", batch_size: 50),
    }},
)"#
        ),
    );
    let lines = numbered_lines(LINES);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = tmp.path().join("flumen.log");
    let topology_arg = topology.to_str().unwrap();

    // Lines [0, acked) were acknowledged: each "OK" answers one line, in order, after its put.
    let mut acked = 0;
    let mut round = 0;
    let flumen = loop {
        let mut flumen = Flumen::start(&["run", "--quiet", topology_arg], &log);
        let stream = flumen.connect(addr, Duration::from_secs(60));
        let mut reader = stream.try_clone().unwrap();
        let payload = joined(&lines[acked..]);
        let mut writer = stream;
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(&payload);
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let kill_at = (round < KILLS).then(|| acked + LINES / (KILLS + 2));
        let mut buf = vec![0u8; 64 * 1024];
        let mut acks = Acks::default();
        loop {
            if kill_at.is_some_and(|k| acked + acks.count >= k) || acked + acks.count == LINES {
                break;
            }
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}")),
            }
        }
        acked += acks.count;
        if acked == LINES {
            let _ = sender.join();
            break flumen;
        }
        assert!(kill_at.is_some(), "the connection ended after {acked} acknowledgements; log:\n{}", flumen.log_text());
        eprintln!("round {round}: SIGKILL after {acked} acknowledged lines");
        flumen.kill();
        let _ = sender.join();
        round += 1;
    };
    assert_eq!(round, KILLS);

    let expected: BTreeMap<&str, usize> = lines.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    // How often each line was delivered so far.
    let count = || {
        let mut seen = vec![0usize; LINES];
        for l in output_lines(&out).0 {
            let i = *expected.get(l.as_str()).unwrap_or_else(|| panic!("unexpected output line {l:?}"));
            seen[i] += 1;
        }
        seen
    };
    let delivered = std::cell::Cell::new(0);
    wait_for(
        Duration::from_secs(180),
        || {
            let seen = count();
            delivered.set(seen.iter().filter(|&&c| c > 0).count());
            delivered.get() == LINES
        },
        || format!("{} of {LINES} lines delivered", delivered.get()),
    );
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0), "a graceful stop exits 0");
    let (got, partial) = output_lines(&out);
    let seen = count();
    let duplicates: usize = seen.iter().map(|&c| c.saturating_sub(1)).sum();
    eprintln!(
        "{LINES} lines acknowledged, {} lines written, {duplicates} duplicates, {partial} files cut mid-line by SIGKILL",
        got.len()
    );

    // The graceful stop wrote every commit's delete: started again on the same data dir, the
    // channel holds nothing, so nothing delivered comes back a second time.
    // An empty take of the sink is answered only once the channel was opened and had nothing.
    let again = Flumen::start(&["run", "--quiet", topology_arg], &log);
    wait_for(
        Duration::from_secs(60),
        || metric(monitoring, "SINK.k1", "BatchEmptyCount").is_some_and(|n| n > 0),
        || format!("the restarted agent's sink finds its channel empty; log:\n{}", again.log_text()),
    );
    let taken = metric(monitoring, "CHANNEL.c1", "EventTakeSuccessCount");
    assert_eq!(taken, Some(0), "after a graceful stop no delivered event is taken again");
    assert_eq!(output_lines(&out).0.len(), got.len(), "nothing more is written");
    assert_eq!(again.terminate(Duration::from_secs(60)), Some(0));
}
