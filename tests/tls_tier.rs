//! The edge → collector tier over `https` with mutual TLS, through the real `flumen` binary.
//!
//! The edge (Netcat → RocksDb → Http sink with `TlsClient`) posts to the collector (Http source
//! with `TlsServer` and `client_ca` → channel → FileRoll). Certificates are made here with rcgen:
//! a CA, the collector's certificate for `localhost`, the edge's client certificate, and a client
//! certificate of another CA.
//!
//! To make the collector's crash matter, it forwards to a third agent, the archive (plain Http
//! source → Memory → FileRoll), which is down while the first half of the lines is sent: the
//! collector answers those posts 200 after committing them to its channel, but cannot pass them
//! on. It is then SIGKILLed mid-stream (the edge goes on accepting the second half), the archive
//! is started, and the collector is started again.
//!
//! - With the collector's channel a synced `RocksDb`, every line arrives.
//! - Negative control: the same run with a `Memory` channel in the collector loses the lines it
//!   had acknowledged before the kill.
//! - Negative control for the mutual TLS: an edge presenting a certificate of another CA (and one
//!   presenting none) delivers nothing, and the collector logs the refused handshakes.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::pki::{Ca, Usage};
use support::*;

/// A bound for hangs, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(120);

/// PEM files of the test's certificates.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_cert: PathBuf,
    other_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let root = Ca::new("flumen test CA");
    let other = Ca::new("another CA");
    let server = root.issue_to(dir, "collector", "collector", &["localhost"], Usage::Server, false);
    let client = root.issue_to(dir, "edge", "edge-1", &[], Usage::Client, false);
    let intruder = other.issue_to(dir, "intruder", "intruder", &[], Usage::Client, false);
    Pki {
        ca: root.write(&dir.join("ca.pem")),
        server_cert: server.cert,
        server_key: server.key,
        client_cert: client.cert,
        client_key: client.key,
        other_cert: intruder.cert,
        other_key: intruder.key,
    }
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The collector's topology: Http source with mutual TLS on `port` → `channel` → `sink`.
fn collector_topology(pki: &Pki, port: u16, metrics: u16, channel: &str, sink: &str) -> String {
    format!(
        r#"Topology(
    agent: "collector",
    sources: {{
        "from-edges": (
            kind: Http(
                bind: "127.0.0.1:{port}",
                path: "/events",
                format: Events,
                tls: Some(TlsServer(cert: "{}", key: "{}", client_ca: Some("{}"))),
            ),
            channels: ["c1"],
            batch_size: 500,
        ),
    }},
    channels: {{ "c1": {channel} }},
    sinks: {{ "out": (kind: {sink}, channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        p(&pki.server_cert),
        p(&pki.server_key),
        p(&pki.ca),
    )
}

/// A FileRoll sink writing into `out`.
fn file_roll(out: &Path) -> String {
    format!(r#"FileRoll(dir: "{}")"#, p(out))
}

/// The archive's topology: plain Http source on `port` → Memory → FileRoll `out`.
fn archive_topology(port: u16, metrics: u16, out: &Path) -> String {
    format!(
        r#"Topology(
    agent: "archive",
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}", path: "/events", format: Events), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "out": (kind: {}, channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        file_roll(out)
    )
}

/// The edge's topology: Netcat on `port` → synced RocksDb in `dir` → Http sink posting to the
/// collector at `https://localhost:{collector}` with the client certificate `cert`/`key`.
fn edge_topology(pki: &Pki, dir: &Path, port: u16, collector: u16, client: Option<(&Path, &Path)>) -> String {
    let identity = match client {
        Some((cert, key)) => format!(r#"cert: Some("{}"), key: Some("{}"), "#, p(cert), p(key)),
        None => String::new(),
    };
    format!(
        r#"Topology(
    agent: "edge",
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
            channels: ["c1"],
            batch_size: 500,
        ),
    }},
    channels: {{ "c1": RocksDb(dir: "{}", capacity: 1000000, sync: true, min_free_bytes: 0) }},
    sinks: {{
        "k1": (
            kind: Http(
                url: "https://localhost:{collector}/events",
                format: Events,
                timeout: "5s",
                max_backoff: "500ms",
                tls: Some(TlsClient(ca: Some("{}"), {identity})),
            ),
            channel: "c1",
            batch_size: 500,
        ),
    }},
)"#,
        p(&dir.join("channel")),
        p(&pki.ca),
    )
}

/// Starts `flumen run` on `text` written to `dir/name.ron`, its log in `dir/name.log`.
fn start(dir: &Path, name: &str, text: &str) -> Flumen {
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")))
}

/// Every Loghub sample line, each made unique by a numbered prefix.
fn numbered_loghub(n: usize) -> Vec<String> {
    let lines = loghub_lines();
    (0..n).map(|i| format!("{i:06} {}", lines[i % lines.len()])).collect()
}

struct Outcome {
    sent: usize,
    accepted_before_kill: u64,
    missing: usize,
    duplicates: usize,
}

/// The run described in the module's doc, with the collector's channel `channel`.
fn kill_the_collector_mid_stream(tmp: &Path, channel: &str) -> Outcome {
    let pki = pki(&tmp.join("pki"));
    let (edge_port, collector_port, archive_port) = (free_port(), free_port(), free_port());
    let (collector_metrics, edge_metrics, archive_metrics) = (free_port(), free_port(), free_port());
    let out = tmp.join("out");
    let forward =
        format!(r#"Http(url: "http://127.0.0.1:{archive_port}/events", format: Events, max_backoff: "500ms")"#);
    let collector_text = collector_topology(&pki, collector_port, collector_metrics, channel, &forward);
    let mut collector = start(tmp, "collector", &collector_text);
    drop(collector.connect(addr(collector_port), DEADLINE));
    let edge_dir = tmp.join("edge");
    let edge_text =
        edge_topology(&pki, &edge_dir, edge_port, collector_port, Some((&pki.client_cert, &pki.client_key)))
            .replace("\n)", &format!("\n    monitoring: Some(Http(bind: \"127.0.0.1:{edge_metrics}\")),\n)"));
    let mut edge = start(tmp, "edge", &edge_text);

    let lines = numbered_loghub(20_000);
    let (first, second) = lines.split_at(lines.len() / 2);
    edge.send_acknowledged(addr(edge_port), first, DEADLINE);
    // Every line of the first half crossed the TLS hop and was committed to the collector's
    // channel (an `OK` of the edge only says it is in the edge's channel).
    let monitoring = addr(collector_metrics);
    let accepted = || metric(monitoring, "SOURCE.from-edges", "EventAcceptedCount").unwrap_or(0);
    wait_for(
        DEADLINE,
        || accepted() >= first.len() as u64,
        || {
            format!(
                "the collector accepted {} of {} lines; its log:\n{}",
                accepted(),
                first.len(),
                collector.log_text()
            )
        },
    );
    let accepted_before_kill = accepted();
    collector.kill();

    // Mid-stream: the edge goes on acknowledging lines while the collector is down.
    edge.send_acknowledged(addr(edge_port), second, DEADLINE);
    let archive = start(tmp, "archive", &archive_topology(archive_port, archive_metrics, &out));
    let collector = start(tmp, "collector", &collector_text);
    // Settled: each agent's channel is empty, and the restarted collector took something (the
    // second half at least) from the edge.
    let size = |monitoring: SocketAddr| metric(monitoring, "CHANNEL.c1", "ChannelSize");
    let settled = [addr(edge_metrics), monitoring, addr(archive_metrics)];
    wait_for(
        DEADLINE,
        || accepted() >= second.len() as u64 && settled.iter().all(|m| size(*m) == Some(0)),
        || {
            format!(
                "the tier never settled (channels {:?}); the collector's log:\n{}",
                settled.map(size),
                collector.log_text()
            )
        },
    );
    assert_eq!(edge.terminate(DEADLINE), Some(0), "the edge stops cleanly");
    assert_eq!(collector.terminate(DEADLINE), Some(0), "the collector stops cleanly");
    assert_eq!(archive.terminate(DEADLINE), Some(0), "the archive stops cleanly");
    let (got, _) = output_lines(&out);
    let got = multiset(got);
    let want = multiset(lines.iter().cloned());
    assert!(got.keys().all(|l| want.contains_key(l)), "the output holds a line never sent");
    let missing = want.keys().filter(|l| !got.contains_key(*l)).count();
    let duplicates = got.values().map(|n| n - 1).sum();
    Outcome { sent: lines.len(), accepted_before_kill, missing, duplicates }
}

#[test]
fn every_line_crosses_a_mutual_tls_tier_across_a_collector_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let durable = kill_the_collector_mid_stream(
        tmp.path(),
        "RocksDb(dir: \"collector-channel\", capacity: 1000000, sync: true, min_free_bytes: 0)",
    );
    println!(
        "mTLS tier, RocksDb collector: {} lines, {} committed by the collector before its kill, {} lost, {} duplicates",
        durable.sent, durable.accepted_before_kill, durable.missing, durable.duplicates
    );
    assert_eq!(durable.missing, 0, "lines were lost across the collector's kill");

    let tmp = tempfile::tempdir().unwrap();
    let memory = kill_the_collector_mid_stream(tmp.path(), "Memory(capacity: 1000000, transaction_capacity: 1000)");
    println!(
        "control, Memory collector: {} lines, {} committed by the collector before its kill, {} lost",
        memory.sent, memory.accepted_before_kill, memory.missing
    );
    assert!(
        memory.missing > 0,
        "the Memory control lost nothing: the kill did not hit acknowledged lines held by the collector"
    );
}

#[test]
fn an_edge_without_the_right_client_certificate_delivers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(&tmp.path().join("pki"));
    let (collector_port, metrics_port) = (free_port(), free_port());
    let out = tmp.path().join("out");
    let channel = "Memory(capacity: 10000, transaction_capacity: 1000)";
    let text = collector_topology(&pki, collector_port, metrics_port, channel, &file_roll(&out));
    let mut collector = start(tmp.path(), "collector", &text);
    drop(collector.connect(addr(collector_port), DEADLINE));
    let lines = numbered_loghub(1_000);
    let cases: [(&str, Option<(&Path, &Path)>); 3] = [
        ("intruder", Some((&pki.other_cert, &pki.other_key))),
        ("anonymous", None),
        ("edge", Some((&pki.client_cert, &pki.client_key))),
    ];
    let mut edges = Vec::new();
    for (name, identity) in cases {
        let dir = tmp.path().join(name);
        let (port, metrics) = (free_port(), free_port());
        let text = edge_topology(&pki, &dir, port, collector_port, identity)
            .replace("\n)", &format!("\n    monitoring: Some(Http(bind: \"127.0.0.1:{metrics}\")),\n)"));
        let mut edge = start(tmp.path(), name, &text);
        let mine: Vec<String> = lines.iter().map(|l| format!("{name} {l}")).collect();
        edge.send_acknowledged(addr(port), &mine, DEADLINE);
        edges.push((name, edge, mine, addr(metrics)));
    }
    let (_, _, good, _) = &edges[2];
    wait_for(
        DEADLINE,
        || {
            let (got, _) = output_lines(&out);
            good.iter().all(|l| got.contains(l))
        },
        || format!("the edge with the right certificate did not deliver; collector log:\n{}", collector.log_text()),
    );
    // The two others tried and were refused (rolled back, retried): their lines are still in
    // their channels, neither delivered nor lost.
    for (name, edge, mine, monitoring) in &edges[..2] {
        let failed = || metric(*monitoring, "SINK.k1", "ConnectionFailedCount").unwrap_or(0);
        wait_for(
            DEADLINE,
            || failed() >= 2,
            || format!("the {name} edge's sink never failed a post; its log:\n{}", edge.log_text()),
        );
        assert_eq!(metric(*monitoring, "SINK.k1", "EventDrainSuccessCount"), Some(0), "the {name} edge delivered");
        assert_eq!(
            metric(*monitoring, "CHANNEL.c1", "ChannelSize"),
            Some(mine.len() as u64),
            "the {name} edge's channel no longer holds its lines"
        );
    }
    let refused = metric(addr(metrics_port), "SOURCE.from-edges", "TlsHandshakeFailureCount").unwrap_or(0);
    assert!(refused >= 2, "the collector counted {refused} refused handshakes");
    let (got, _) = output_lines(&out);
    for (name, _, mine, _) in &edges[..2] {
        let through = mine.iter().filter(|l| got.contains(*l)).count();
        assert_eq!(through, 0, "{through} lines of the {name} edge went through");
    }
}
