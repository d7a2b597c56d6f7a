//! Every line of every Loghub sample, sent over TCP to a `Netcat` source of the real `flumen`
//! binary, replicated through a `RocksDb` channel and two `Memory` channels to three `FileRoll`
//! sinks: each output holds exactly the input lines, as a multiset.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

#[test]
fn every_sink_gets_every_line_once() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let topology = tmp.path().join("fan-out.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "replication",
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false),
            channels: ["durable", "fast", "spare"],
            selector: Replicating(optional: []),
            batch_size: 500,
        ),
    }},
    channels: {{
        "durable": RocksDb(dir: "data/durable", capacity: 100000, sync: true),
        "fast": Memory(capacity: 10000, transaction_capacity: 1000),
        "spare": Memory(capacity: 5000, transaction_capacity: 500),
    }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out/k1"), channel: "durable"),
        "k2": (kind: FileRoll(dir: "out/k2", roll_interval: "0s"), channel: "fast", batch_size: 300),
        "k3": (kind: FileRoll(dir: "out/k3"), channel: "spare", batch_size: 500),
    }},
)"#
        ),
    );
    let input = loghub_lines();
    assert!(input.len() > 9_000, "all five samples are read");
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = flumen.connect(addr, Duration::from_secs(60));
    stream.write_all(&joined(&input)).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();

    let want = multiset(input.iter().cloned());
    for sink in ["k1", "k2", "k3"] {
        let dir = tmp.path().join("out").join(sink);
        wait_for(
            Duration::from_secs(60),
            || output_lines(&dir).0.len() >= input.len(),
            || {
                format!(
                    "{sink} holds {} of {} lines; log:\n{}",
                    output_lines(&dir).0.len(),
                    input.len(),
                    flumen.log_text()
                )
            },
        );
    }
    assert_eq!(flumen.terminate(Duration::from_secs(30)), Some(0));
    for sink in ["k1", "k2", "k3"] {
        let (lines, partial) = output_lines(&tmp.path().join("out").join(sink));
        assert_eq!(partial, 0, "{sink}: no cut line");
        assert!(multiset(lines) == want, "{sink}: output differs from input as a multiset");
    }
}
