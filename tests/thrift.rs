//! Flume's Thrift RPC against an independent implementation: Apache Thrift's Python library, with
//! the code the Apache Thrift compiler (Debian's `thrift-compiler`) generates from
//! tests/peers/flume.thrift (Flume's `ThriftSourceProtocol`, wire-equal to Flume's IDL), as the
//! client of flumen's `Thrift` source and as the server of flumen's `Thrift` sink; flumen agents
//! in a tier over Thrift with the collector SIGKILLed; bad input on the wire.
//!
//! The compiler and the Python environment (`make pyenv`) are required: a test fails, never
//! skips, without them.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// A bound for hangs, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(120);

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Compiles tests/peers/flume.thrift for Python into `tmp/gen` with the Apache Thrift compiler.
fn generated(tmp: &Path) -> PathBuf {
    let out = tmp.join("gen");
    std::fs::create_dir_all(&out).unwrap();
    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/flume.thrift");
    let status =
        Command::new("thrift").args(["--gen", "py", "-out"]).arg(&out).arg(&idl).status().unwrap_or_else(|e| {
            panic!("the Apache Thrift compiler `thrift` cannot run ({e}): install thrift-compiler (make deps)")
        });
    assert!(status.success(), "thrift --gen py {} failed: {status}", idl.display());
    out
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/thrift_peer.py")
}

/// Starts `flumen run` on `text` written to `dir/name.ron`, its log in `dir/name.log`.
fn start(dir: &Path, name: &str, text: &str) -> Flumen {
    std::fs::create_dir_all(dir).unwrap();
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")))
}

fn counter(monitoring: SocketAddr, component: &str, name: &str) -> u64 {
    metric(monitoring, component, name).unwrap_or_else(|| panic!("{component} {name} is not served"))
}

/// What the Python client reports.
#[derive(Debug, serde::Deserialize)]
struct ClientSummary {
    ok: u64,
    failed: u64,
    ok_events: u64,
    failed_events: u64,
}

/// Runs the Python Thrift client: every line of `lines` in `appendBatch` calls of `batch` events
/// to `127.0.0.1:port` in `protocol`; `retry`: a call answered `FAILED` is sent again.
fn python_client(gen: &Path, port: u16, protocol: &str, batch: usize, lines: &[String], retry: bool) -> ClientSummary {
    let extra: &[&str] = if retry { &[] } else { &["--no-retry"] };
    let out = run_python_client(gen, port, protocol, batch, lines, extra);
    assert!(
        out.status.success(),
        "the Python Thrift client failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("client summary {text:?}: {e}"))
}

/// Runs the Python Thrift client with `extra` arguments (`--no-retry`, `--tls CA CERT KEY`).
fn run_python_client(
    gen: &Path,
    port: u16,
    protocol: &str,
    batch: usize,
    lines: &[String],
    extra: &[&str],
) -> std::process::Output {
    let file = gen.join(format!("lines-{port}.txt"));
    std::fs::write(&file, joined(lines)).unwrap();
    let mut cmd = Command::new(pyenv_python());
    cmd.arg(peer_script()).arg(gen).args(["client", "127.0.0.1", &port.to_string(), protocol, &batch.to_string()]);
    cmd.arg(&file).args(extra);
    cmd.output().expect("run the Python Thrift client")
}

/// A Python Thrift server (TThreadedServer, framed transport), killed when dropped.
struct PythonServer {
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

impl PythonServer {
    /// Serves on `port` in `protocol`, keeping bodies in `dir/<port>.out`; `mode`: `ok`,
    /// `fail-once` or `drop-once` (see tests/peers/thrift_peer.py).
    fn start(gen: &Path, dir: &Path, port: u16, protocol: &str, mode: &str) -> PythonServer {
        let out = dir.join(format!("server-{port}.out"));
        let log = dir.join(format!("server-{port}.log"));
        let child = Command::new(pyenv_python())
            .arg(peer_script())
            .arg(gen)
            .args(["server", &port.to_string(), protocol])
            .arg(&out)
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the Python Thrift server");
        let mut server = PythonServer { child, out, log };
        wait_for(
            DEADLINE,
            || {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("the Python Thrift server exited ({status}): {}", server.log_text());
                }
                TcpStream::connect(addr(port)).is_ok()
            },
            || format!("the Python Thrift server never listened on {port}"),
        );
        server
    }

    fn lines(&self) -> Vec<String> {
        lines_of(&std::fs::read(&self.out).unwrap_or_default())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The calls it logged: `(events, status)` in order.
    fn calls(&self) -> Vec<(usize, String)> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("call ")?;
                let mut words = rest.split_whitespace();
                let (_n, _method, events, _arrow, status) =
                    (words.next()?, words.next()?, words.next()?, words.next()?, words.next()?);
                Some((events.parse().ok()?, status.to_string()))
            })
            .collect()
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent: `Thrift` source in `protocol` on `port` → Memory → FileRoll `out`.
fn source_topology(port: u16, metrics: u16, protocol: &str, batch_size: usize, out: &Path) -> String {
    format!(
        r#"Topology(
    agent: "thrift-in",
    sources: {{ "r1": (kind: Thrift(bind: "127.0.0.1:{port}", protocol: {protocol}), channels: ["c1"], batch_size: {batch_size}) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "{}"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        p(out)
    )
}

#[test]
fn python_thrift_clients_deliver_every_loghub_line_to_the_thrift_source_in_both_protocols() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let lines = loghub_lines();
    // Binary with a source batch_size of 30: each call of 100 events is put in 4 batches.
    for (protocol, py, batch_size, puts_per_call) in [("Compact", "compact", 500, 1), ("Binary", "binary", 30, 4)] {
        let (port, metrics) = (free_port(), free_port());
        let dir = tmp.path().join(py);
        let out = dir.join("out");
        let mut flumen = start(&dir, "agent", &source_topology(port, metrics, protocol, batch_size, &out));
        drop(flumen.connect(addr(port), DEADLINE));
        let summary = python_client(&gen, port, py, 100, &lines, true);
        assert_eq!(summary.ok_events, lines.len() as u64, "{protocol}: {summary:?}");
        assert_eq!(summary.failed, 0, "{protocol}: a call was answered FAILED: {summary:?}");
        let monitoring = addr(metrics);
        assert_eq!(counter(monitoring, "SOURCE.r1", "EventAcceptedCount"), lines.len() as u64);
        assert_eq!(counter(monitoring, "SOURCE.r1", "AppendBatchAcceptedCount"), summary.ok * puts_per_call);
        assert_eq!(counter(monitoring, "SOURCE.r1", "EventMalformedCount"), 0);
        assert_eq!(flumen.terminate(DEADLINE), Some(0), "{protocol}: the agent stops cleanly");
        let (got, partial) = output_lines(&out);
        assert_eq!(partial, 0);
        let (missing, duplicates) = compare(&got, &lines, "the FileRoll output");
        println!(
            "{protocol}: {} Loghub lines in {} appendBatch calls, {missing} missing, {duplicates} duplicates",
            lines.len(),
            summary.ok
        );
        assert_eq!((missing, duplicates), (0, 0), "{protocol}: every line once");
    }
}

/// Single-event `append` calls (Python's generated client), counted in `AppendReceivedCount` and
/// `AppendAcceptedCount` as Flume's Thrift source counts them.
#[test]
fn single_event_append_calls_are_put_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let (port, metrics) = (free_port(), free_port());
    let out = tmp.path().join("out");
    let mut flumen = start(tmp.path(), "agent", &source_topology(port, metrics, "Compact", 100, &out));
    drop(flumen.connect(addr(port), DEADLINE));
    let lines = numbered_lines(300);
    let out_ok = run_python_client(&gen, port, "compact", 1, &lines, &["--append"]);
    assert!(out_ok.status.success(), "the append client failed: {}", String::from_utf8_lossy(&out_ok.stderr));
    let monitoring = addr(metrics);
    assert_eq!(counter(monitoring, "SOURCE.r1", "AppendReceivedCount"), 300);
    assert_eq!(counter(monitoring, "SOURCE.r1", "AppendAcceptedCount"), 300);
    assert_eq!(counter(monitoring, "SOURCE.r1", "EventAcceptedCount"), 300);
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let (got, _) = output_lines(&out);
    assert_eq!(compare(&got, &lines, "the FileRoll output"), (0, 0));
}

/// The Python client's calls to a source whose channel is full: a call is answered `OK` only
/// when its events were committed, `FAILED` when the channel stayed full for `put_timeout`. The
/// channel then holds exactly the events of the calls answered `OK`.
#[test]
fn a_full_channel_answers_failed_and_holds_exactly_the_calls_answered_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let (port, metrics, nowhere) = (free_port(), free_port(), free_port());
    // The sink sends to a port where nothing listens: nothing leaves the channel.
    let text = format!(
        r#"Topology(
    agent: "full",
    sources: {{ "r1": (kind: Thrift(bind: "127.0.0.1:{port}", put_timeout: "300ms"), channels: ["c1"], batch_size: 100) }},
    channels: {{ "c1": Memory(capacity: 250, transaction_capacity: 100) }},
    sinks: {{ "k1": (kind: Thrift(hostname: "127.0.0.1", port: {nowhere}, connect_timeout: "1s"), channel: "c1", batch_size: 100) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#
    );
    let mut flumen = start(tmp.path(), "agent", &text);
    drop(flumen.connect(addr(port), DEADLINE));
    let lines = numbered_lines(1000);
    let summary = python_client(&gen, port, "compact", 100, &lines, false);
    println!("full channel: {summary:?}");
    let monitoring = addr(metrics);
    let size = counter(monitoring, "CHANNEL.c1", "ChannelSize");
    assert_eq!(summary.ok_events, 200, "two calls of 100 fit in 250 events: {summary:?}");
    assert_eq!(summary.failed_events, 800, "the other calls are refused: {summary:?}");
    assert_eq!(size, summary.ok_events, "the channel holds exactly the events answered OK");
    assert_eq!(counter(monitoring, "SOURCE.r1", "EventAcceptedCount"), summary.ok_events);
    assert!(summary.failed >= 8);
}

/// The agent: Netcat on `port` → Memory → `sinks` (RON map body) with `groups`.
fn sink_topology(port: u16, metrics: u16, sinks: &str, groups: &str) -> String {
    format!(
        r#"Topology(
    agent: "thrift-out",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536), channels: ["c1"], batch_size: 100) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ {sinks} }},
    sink_groups: {{ {groups} }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#
    )
}

fn thrift_sink(server: u16, protocol: &str) -> String {
    format!(
        r#"(kind: Thrift(hostname: "127.0.0.1", port: {server}, protocol: {protocol}, request_timeout: "5s"), channel: "c1", batch_size: 100)"#
    )
}

/// Sends `lines` to the agent's Netcat source and waits until `server` kept `expect` lines (or
/// the agent's channel is empty and the sink settled, when `expect` is `None`).
fn send_through(flumen: &mut Flumen, port: u16, metrics: u16, lines: &[String], settled: impl Fn() -> bool) {
    flumen.send_acknowledged(addr(port), lines, DEADLINE);
    let size = || metric(addr(metrics), "CHANNEL.c1", "ChannelSize");
    wait_for(
        DEADLINE,
        || size() == Some(0) && settled(),
        || format!("the channel never emptied ({:?}); the agent's log:\n{}", size(), flumen.log_text()),
    );
}

#[test]
fn the_thrift_sink_delivers_every_loghub_line_to_a_python_thrift_server_in_both_protocols() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let lines = loghub_lines();
    for (protocol, py) in [("Compact", "compact"), ("Binary", "binary")] {
        let (port, metrics, server_port) = (free_port(), free_port(), free_port());
        let dir = tmp.path().join(py);
        std::fs::create_dir_all(&dir).unwrap();
        let server = PythonServer::start(&gen, &dir, server_port, py, "ok");
        let text = sink_topology(port, metrics, &format!(r#""k1": {}"#, thrift_sink(server_port, protocol)), "");
        let mut flumen = start(&dir, "agent", &text);
        send_through(&mut flumen, port, metrics, &lines, || server.lines().len() >= lines.len());
        let monitoring = addr(metrics);
        assert_eq!(counter(monitoring, "SINK.k1", "EventDrainSuccessCount"), lines.len() as u64);
        assert_eq!(counter(monitoring, "SINK.k1", "RollbackCount"), 0);
        assert!(counter(monitoring, "SINK.k1", "ConnectionCreatedCount") >= 1);
        assert_eq!(flumen.terminate(DEADLINE), Some(0));
        let (missing, duplicates) = compare(&server.lines(), &lines, "the Python server's output");
        println!(
            "{protocol}: {} Loghub lines in {} appendBatch calls to Python, {missing} missing, {duplicates} duplicates",
            lines.len(),
            server.calls().len()
        );
        assert_eq!((missing, duplicates), (0, 0), "{protocol}: every line once");
    }
}

/// A server that answers `FAILED` once gets the batch again (nothing lost, nothing doubled);
/// the control, a server that answers `OK` once without keeping the batch, loses exactly that
/// batch: the comparison sees loss when there is some.
#[test]
fn a_batch_answered_failed_is_sent_again_and_a_batch_dropped_after_ok_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let lines = numbered_lines(2000);
    let mut outcome = Vec::new();
    for mode in ["fail-once", "drop-once"] {
        let (port, metrics, server_port) = (free_port(), free_port(), free_port());
        let dir = tmp.path().join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        let server = PythonServer::start(&gen, &dir, server_port, "compact", mode);
        let text = sink_topology(port, metrics, &format!(r#""k1": {}"#, thrift_sink(server_port, "Compact")), "");
        let mut flumen = start(&dir, "agent", &text);
        send_through(&mut flumen, port, metrics, &lines, || {
            let calls = server.calls();
            calls.iter().filter(|(_, s)| s == "OK").map(|(n, _)| n).sum::<usize>() >= lines.len()
        });
        let rollbacks = counter(addr(metrics), "SINK.k1", "RollbackCount");
        assert_eq!(flumen.terminate(DEADLINE), Some(0));
        let calls = server.calls();
        let (missing, duplicates) = compare(&server.lines(), &lines, "the Python server's output");
        println!(
            "{mode}: first call {:?}, {} calls, {rollbacks} rollbacks, {missing} missing, {duplicates} duplicates",
            calls[0],
            calls.len()
        );
        outcome.push((calls[0].clone(), rollbacks, missing, duplicates));
    }
    let ((first, first_status), rollbacks, missing, duplicates) = outcome[0].clone();
    assert_eq!(first_status, "FAILED");
    assert!(first > 0 && rollbacks >= 1, "the FAILED batch was rolled back");
    assert_eq!((missing, duplicates), (0, 0), "the batch answered FAILED was sent again, once");
    let ((dropped, dropped_status), rollbacks, missing, _) = outcome[1].clone();
    assert_eq!(dropped_status, "OK");
    assert_eq!(rollbacks, 0);
    assert_eq!(missing, dropped, "control: the batch acknowledged and not kept is lost, and the comparison sees it");
}

/// `Failover`: the preferred Thrift sink sends to a port where nothing listens; every batch goes
/// to the other Thrift sink (the Python server). `LoadBalance` over two Python servers: each gets
/// a share, together every line once.
#[test]
fn thrift_sinks_work_in_failover_and_load_balance_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let lines = numbered_lines(3000);

    let (port, metrics, dead, live) = (free_port(), free_port(), free_port(), free_port());
    let dir = tmp.path().join("failover");
    std::fs::create_dir_all(&dir).unwrap();
    let server = PythonServer::start(&gen, &dir, live, "compact", "ok");
    let sinks = format!(r#""dead": {}, "live": {}"#, thrift_sink(dead, "Compact"), thrift_sink(live, "Compact"));
    let groups = r#""g1": (sinks: ["dead", "live"], processor: Failover(priority: { "dead": 10, "live": 5 }, max_penalty: "1s"))"#;
    let mut flumen = start(&dir, "agent", &sink_topology(port, metrics, &sinks, groups));
    send_through(&mut flumen, port, metrics, &lines, || server.lines().len() >= lines.len());
    let failed = counter(addr(metrics), "SINK.dead", "ConnectionFailedCount");
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let (missing, duplicates) = compare(&server.lines(), &lines, "the live server's output");
    println!("failover: {failed} failed connections of the dead sink, {missing} missing, {duplicates} duplicates");
    assert!(failed >= 1, "the preferred sink was tried");
    assert_eq!((missing, duplicates), (0, 0));

    let (port, metrics, a, b) = (free_port(), free_port(), free_port(), free_port());
    let dir = tmp.path().join("balance");
    std::fs::create_dir_all(&dir).unwrap();
    let (sa, sb) =
        (PythonServer::start(&gen, &dir, a, "binary", "ok"), PythonServer::start(&gen, &dir, b, "binary", "ok"));
    let sinks = format!(r#""a": {}, "b": {}"#, thrift_sink(a, "Binary"), thrift_sink(b, "Binary"));
    let groups = r#""g1": (sinks: ["a", "b"], processor: LoadBalance(selector: RoundRobin))"#;
    let mut flumen = start(&dir, "agent", &sink_topology(port, metrics, &sinks, groups));
    send_through(&mut flumen, port, metrics, &lines, || sa.lines().len() + sb.lines().len() >= lines.len());
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let (la, lb) = (sa.lines(), sb.lines());
    let both: Vec<String> = la.iter().chain(&lb).cloned().collect();
    let (missing, duplicates) = compare(&both, &lines, "the two servers' outputs");
    println!("load balance: {} and {} lines, {missing} missing, {duplicates} duplicates", la.len(), lb.len());
    assert!(!la.is_empty() && !lb.is_empty(), "both servers got batches");
    assert_eq!((missing, duplicates), (0, 0));
}

struct TierOutcome {
    sent: usize,
    accepted_before_kill: u64,
    missing: usize,
    duplicates: usize,
}

/// Edge (Netcat → RocksDb → Thrift sink, compact) → collector (Thrift source → `channel` →
/// Thrift sink, binary) → archive (Thrift source, binary → Memory → FileRoll). The archive is
/// not running while the lines stream in, so the collector holds what it committed in its channel
/// when it is SIGKILLed mid-stream (the edge still holding lines to send, a call possibly in
/// flight); the edge goes on acknowledging lines while the collector is down; then the archive
/// and the collector start again.
fn thrift_tier_with_a_collector_kill(tmp: &Path, channel: &str) -> TierOutcome {
    let (edge_port, collector_port, archive_port) = (free_port(), free_port(), free_port());
    let (edge_metrics, collector_metrics, archive_metrics) = (free_port(), free_port(), free_port());
    let out = tmp.join("out");
    let edge_text = format!(
        r#"Topology(
    agent: "edge",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{edge_port}", max_line_length: 65536), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": RocksDb(dir: "{}", capacity: 1000000, sync: true, min_free_bytes: 0) }},
    sinks: {{ "k1": (kind: Thrift(hostname: "127.0.0.1", port: {collector_port}, connect_timeout: "2s", request_timeout: "5s"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{edge_metrics}")),
)"#,
        p(&tmp.join("edge-channel"))
    );
    let collector_text = format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "from-edges": (kind: Thrift(bind: "127.0.0.1:{collector_port}"), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": {channel} }},
    sinks: {{ "k1": (kind: Thrift(hostname: "127.0.0.1", port: {archive_port}, protocol: Binary, connect_timeout: "2s", request_timeout: "5s"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{collector_metrics}")),
)"#
    );
    let archive_text = format!(
        r#"Topology(
    agent: "archive",
    sources: {{ "r1": (kind: Thrift(bind: "127.0.0.1:{archive_port}", protocol: Binary), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": Memory(capacity: 1000000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "{}"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{archive_metrics}")),
)"#,
        p(&out)
    );
    let mut collector = start(&tmp.join("collector"), "collector", &collector_text);
    drop(collector.connect(addr(collector_port), DEADLINE));
    let mut edge = start(&tmp.join("edge"), "edge", &edge_text);

    // One connection streams every line to the edge while the edge forwards them; the collector
    // is killed once it committed a quarter of them, while the edge still holds lines to send.
    let lines = Arc::new(numbered_lines(40_000));
    let mut stream = AckedStream::open(&mut edge, addr(edge_port), lines.clone(), 0);
    let monitoring = addr(collector_metrics);
    let accepted = || metric(monitoring, "SOURCE.from-edges", "EventAcceptedCount").unwrap_or(0);
    let kill_at = lines.len() as u64 / 4;
    let deadline = Instant::now() + DEADLINE;
    while accepted() < kill_at {
        assert!(
            Instant::now() < deadline,
            "the collector accepted {} of {kill_at} lines; its log:\n{}",
            accepted(),
            collector.log_text()
        );
        stream.read_until(Duration::from_millis(50), |_| false);
    }
    let edge_held = metric(addr(edge_metrics), "CHANNEL.c1", "ChannelSize").unwrap_or(0);
    let client_acked = stream.acked();
    let accepted_before_kill = accepted();
    collector.kill();
    // Mid-stream: the edge holds lines to send, or its client has lines it did not get an `OK`
    // for yet (the edge forwards as fast as it receives, so its channel may be empty a moment).
    assert!(
        edge_held > 0 || client_acked < lines.len(),
        "the kill came after the edge had sent everything: not mid-stream"
    );
    let acked = stream.read_until(DEADLINE, |acked| acked == lines.len());
    assert_eq!(acked, lines.len(), "the edge acknowledged every line");
    stream.finish();

    let archive = start(&tmp.join("archive"), "archive", &archive_text);
    let collector = start(&tmp.join("collector"), "collector", &collector_text);
    let size = |m: SocketAddr| metric(m, "CHANNEL.c1", "ChannelSize");
    let settled = [addr(edge_metrics), monitoring, addr(archive_metrics)];
    wait_for(
        DEADLINE,
        || accepted() > 0 && settled.iter().all(|m| size(*m) == Some(0)),
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
    let (missing, duplicates) = compare(&got, &lines, "the archive's output");
    TierOutcome { sent: lines.len(), accepted_before_kill, missing, duplicates }
}

#[test]
fn every_line_crosses_a_thrift_tier_across_a_collector_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let durable = thrift_tier_with_a_collector_kill(
        tmp.path(),
        r#"RocksDb(dir: "collector-channel", capacity: 1000000, sync: true, min_free_bytes: 0)"#,
    );
    println!(
        "Thrift tier, RocksDb collector: {} lines, {} committed by the collector before its kill, {} lost, {} duplicates",
        durable.sent, durable.accepted_before_kill, durable.missing, durable.duplicates
    );
    assert_eq!(durable.missing, 0, "lines were lost across the collector's kill");

    let tmp = tempfile::tempdir().unwrap();
    let memory = thrift_tier_with_a_collector_kill(tmp.path(), "Memory(capacity: 1000000, transaction_capacity: 1000)");
    println!(
        "control, Memory collector: {} lines, {} committed by the collector before its kill, {} lost",
        memory.sent, memory.accepted_before_kill, memory.missing
    );
    assert!(memory.missing > 0, "the Memory control lost nothing: the kill did not hit lines the collector held");
}

/// A compact-protocol `appendBatch` message with `events` bodies (no headers), as bytes.
fn compact_batch(seqid: u8, bodies: &[&[u8]]) -> Vec<u8> {
    assert!(seqid < 128 && bodies.len() < 15);
    let mut m = vec![0x82, 0x21, seqid, 11];
    m.extend_from_slice(b"appendBatch");
    m.push(0x19); // field 1, list
    m.push(((bodies.len() as u8) << 4) | 0x0c); // count, element type struct
    for body in bodies {
        m.extend_from_slice(&[0x1b, 0x00]); // field 1, map; empty
        m.push(0x18); // field 2, binary
        assert!(body.len() < 128);
        m.push(body.len() as u8);
        m.extend_from_slice(body);
        m.push(0x00); // end of the event
    }
    m.push(0x00); // end of the arguments
    m
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut f = (message.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(message);
    f
}

/// Sends `bytes` on a new connection and waits until the source closes it; answers what it sent
/// back before closing.
fn closed_after(port: u16, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the source did not close the connection: {e}"),
    }
    answer
}

/// Truncated frames, a frame length of 2^31, a declared list of 2^31 events, a malformed event,
/// another protocol: each connection is closed, logged and counted, and nothing is put; an
/// unknown method is answered with an exception carrying the call's name and sequence number.
/// A good call afterwards is put (the check for puts sees them). Memory: connections declaring
/// the largest frame and sending nothing hold no memory for it; the control, connections that
/// send most of such a frame, raise the peak RSS by what they sent.
#[test]
fn bad_thrift_input_closes_the_connection_puts_nothing_and_keeps_memory_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let text = format!(
        r#"Topology(
    agent: "bad-input",
    sources: {{ "r1": (kind: Thrift(bind: "127.0.0.1:{port}", max_frame_bytes: 16000000, idle_timeout: "2m"), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Null(), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#
    );
    let mut flumen = start(tmp.path(), "agent", &text);
    drop(flumen.connect(addr(port), DEADLINE));
    let monitoring = addr(metrics);
    let malformed = || counter(monitoring, "SOURCE.r1", "EventMalformedCount");
    let received = || counter(monitoring, "SOURCE.r1", "EventReceivedCount");

    let good = compact_batch(1, &[b"one", b"two"]);
    let mut missing_body = vec![0x82, 0x21, 0x05, 11];
    missing_body.extend_from_slice(b"appendBatch");
    missing_body.extend_from_slice(&[0x19, 0x1c, 0x1b, 0x00, 0x00, 0x00]);
    let mut huge_list = vec![0x82, 0x21, 0x06, 11];
    huge_list.extend_from_slice(b"appendBatch");
    huge_list.extend_from_slice(&[0x19, 0xfc, 0x80, 0x80, 0x80, 0x80, 0x08]); // 2^31
    let mut binary = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 11];
    binary.extend_from_slice(b"appendBatch");
    binary.extend_from_slice(&[0, 0, 0, 7, 0x0f, 0, 1, 0x0c, 0, 0, 0, 1, 0x00, 0x00]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a frame cut inside its length", vec![0, 0], true),
        ("a frame cut inside its bytes", framed(&good)[..10].to_vec(), true),
        ("a frame length of 2^31", vec![0x80, 0, 0, 0], false),
        ("a declared list of 2^31 events", framed(&huge_list), false),
        ("an event without its body", framed(&missing_body), false),
        ("a binary-protocol call to a compact source", framed(&binary), false),
        ("a good call followed by garbage in its frame", framed(&[good.as_slice(), b"\x00\x00"].concat()), false),
    ];
    for (n, (what, bytes, half_close)) in cases.iter().enumerate() {
        let answer = closed_after(port, bytes, *half_close);
        assert!(answer.is_empty(), "{what}: the source answered {answer:?}");
        wait_for(
            DEADLINE,
            || malformed() == n as u64 + 1,
            || format!("{what}: EventMalformedCount is {} after {} bad inputs", malformed(), n + 1),
        );
        assert_eq!(received(), 0, "{what}: something was put");
    }
    let log = flumen.log_text();
    assert!(
        log.matches("bad Thrift input: connection closed").count() >= cases.len(),
        "every bad input is logged:\n{log}"
    );

    // An unknown method: an exception echoing its name and sequence number; the connection goes
    // on and takes a good call, which is put.
    let mut unknown = vec![0x82, 0x21, 0x2a, 4];
    unknown.extend_from_slice(b"nope");
    unknown.push(0x00);
    let mut s = TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&framed(&unknown)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    // Compact: protocol id, version 1 with type exception (3), seqid 42, name "nope".
    assert_eq!(&reply[..8], &[0x82, 0x61, 0x2a, 4, b'n', b'o', b'p', b'e'], "{reply:?}");
    s.write_all(&framed(&good)).unwrap();
    s.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    // A reply (type 2) to seqid 1 of appendBatch: field 0 (long form: type i32 = 5, id 0), value
    // zigzag 0 = OK, end of the struct.
    let mut ok = vec![0x82, 0x41, 0x01, 11];
    ok.extend_from_slice(b"appendBatch");
    ok.extend_from_slice(&[0x05, 0x00, 0x00, 0x00]);
    assert_eq!(reply, ok);
    wait_for(DEADLINE, || received() == 2, || format!("the good call was not put: {}", received()));
    drop(s);

    // Memory: 200 connections each declare a frame of 15999999 bytes and send one byte of it.
    let before = flumen.peak_rss_kib();
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(addr(port)).unwrap();
            s.write_all(&[0x00, 0xf4, 0x23, 0xff, 0x82]).unwrap();
            s
        })
        .collect();
    wait_for(
        DEADLINE,
        || counter(monitoring, "SOURCE.r1", "OpenConnectionCount") >= 200,
        || "the 200 connections were not all open".into(),
    );
    let declared = flumen.peak_rss_kib();
    // Control: 6 connections send 12 MB of such a frame each (the source must hold what arrives).
    let chunk = vec![0u8; 1 << 20];
    for s in idle.iter_mut().take(6) {
        for _ in 0..12 {
            s.write_all(&chunk).unwrap();
        }
    }
    wait_for(
        DEADLINE,
        || flumen.peak_rss_kib() > declared + 60 * 1024,
        || format!("control: 72 MB sent but the peak RSS rose from {declared} to {} KiB", flumen.peak_rss_kib()),
    );
    let sent = flumen.peak_rss_kib();
    drop(idle);
    println!(
        "peak RSS: {before} KiB before, {declared} KiB with 200 connections declaring 16 MB frames (3.2 GB declared), {sent} KiB once 72 MB of them arrived"
    );
    assert!(
        declared < before + 32 * 1024,
        "200 declared 16 MB frames raised the peak RSS from {before} to {declared} KiB"
    );
    assert_eq!(received(), 2, "nothing of the bad input was put");
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
}

/// Mutual TLS: Apache Thrift's Python `TSSLSocket` with a client certificate and a flumen edge's
/// `Thrift` sink with `tls` deliver every line to a `Thrift` source with `client_ca`; the
/// controls, the Python client without a client certificate and with one from another CA,
/// deliver nothing and are counted as failed handshakes.
#[test]
fn thrift_over_mutual_tls_from_python_and_from_a_flumen_edge() {
    use support::pki::{Ca, Usage};
    let tmp = tempfile::tempdir().unwrap();
    let gen = generated(tmp.path());
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let root = Ca::new("flumen test CA");
    let other = Ca::new("another CA");
    let server = root.issue_to(&pki, "collector", "collector", &["localhost", "127.0.0.1"], Usage::Server, false);
    let client = root.issue_to(&pki, "edge", "edge-1", &[], Usage::Client, false);
    let intruder = other.issue_to(&pki, "intruder", "intruder", &[], Usage::Client, false);
    let ca = root.write(&pki.join("ca.pem"));

    let (port, metrics) = (free_port(), free_port());
    let out = tmp.path().join("out");
    let collector = format!(
        r#"Topology(
    agent: "collector",
    sources: {{
        "r1": (
            kind: Thrift(bind: "127.0.0.1:{port}", tls: Some(TlsServer(cert: "{}", key: "{}", client_ca: Some("{}"), handshake_timeout: "5s"))),
            channels: ["c1"],
        ),
    }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "{}"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        p(&server.cert),
        p(&server.key),
        p(&ca),
        p(&out)
    );
    let mut flumen = start(&tmp.path().join("collector"), "collector", &collector);
    drop(flumen.connect(addr(port), DEADLINE));
    let monitoring = addr(metrics);
    let lines = numbered_lines(4000);
    let (from_python, from_edge) = lines.split_at(2000);

    let (ca_s, cert_s, key_s) = (p(&ca), p(&client.cert), p(&client.key));
    let out_ok = run_python_client(&gen, port, "compact", 100, from_python, &["--tls", &ca_s, &cert_s, &key_s]);
    assert!(out_ok.status.success(), "the TLS client failed: {}", String::from_utf8_lossy(&out_ok.stderr));
    wait_for(
        DEADLINE,
        || counter(monitoring, "SOURCE.r1", "EventAcceptedCount") == 2000,
        || "the TLS client's lines were not all accepted".into(),
    );

    // Controls: no client certificate; a certificate from another CA.
    let (other_cert, other_key) = (p(&intruder.cert), p(&intruder.key));
    let controls: [Vec<&str>; 2] = [vec!["--tls", &ca_s], vec!["--tls", &ca_s, &other_cert, &other_key]];
    for (n, args) in controls.iter().enumerate() {
        let refused = run_python_client(&gen, port, "compact", 100, &numbered_lines(100), args);
        assert!(!refused.status.success(), "control {n}: the client without the right certificate got through");
        wait_for(
            DEADLINE,
            || counter(monitoring, "SOURCE.r1", "TlsHandshakeFailureCount") > n as u64,
            || format!("control {n}: the refused handshake was not counted"),
        );
    }
    assert_eq!(counter(monitoring, "SOURCE.r1", "EventAcceptedCount"), 2000, "the controls delivered nothing");

    let (edge_port, edge_metrics) = (free_port(), free_port());
    let edge = format!(
        r#"Topology(
    agent: "edge",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{edge_port}", max_line_length: 65536), channels: ["c1"], batch_size: 100) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{
        "k1": (
            kind: Thrift(hostname: "localhost", port: {port}, tls: Some(TlsClient(ca: Some("{}"), cert: Some("{}"), key: Some("{}")))),
            channel: "c1",
            batch_size: 100,
        ),
    }},
    monitoring: Some(Http(bind: "127.0.0.1:{edge_metrics}")),
)"#,
        p(&ca),
        p(&client.cert),
        p(&client.key)
    );
    let mut edge = start(&tmp.path().join("edge"), "edge", &edge);
    send_through(&mut edge, edge_port, edge_metrics, from_edge, || {
        counter(monitoring, "SOURCE.r1", "EventAcceptedCount") == 4000
    });
    assert_eq!(edge.terminate(DEADLINE), Some(0));
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let (got, _) = output_lines(&out);
    let (missing, duplicates) = compare(&got, &lines, "the collector's output");
    println!("mutual TLS: 2000 lines from Python's TSSLSocket, 2000 from a flumen edge; {missing} missing, {duplicates} duplicates; 2 refused handshakes");
    assert_eq!((missing, duplicates), (0, 0));
}

/// A connection the source closed for its `idle_timeout` between two batches: the sink sends the
/// next batch on a new connection at once, without a rollback or a restart; every line once.
#[test]
fn the_sink_reconnects_at_once_when_the_source_closed_its_idle_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics, edge_port, edge_metrics) = (free_port(), free_port(), free_port(), free_port());
    let out = tmp.path().join("out");
    let collector = format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "r1": (kind: Thrift(bind: "127.0.0.1:{port}", idle_timeout: "1s"), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "{}"), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        p(&out)
    );
    let mut collector = start(&tmp.path().join("collector"), "collector", &collector);
    drop(collector.connect(addr(port), DEADLINE));
    let edge = sink_topology(edge_port, edge_metrics, &format!(r#""k1": {}"#, thrift_sink(port, "Compact")), "");
    let mut edge = start(&tmp.path().join("edge"), "edge", &edge);
    let lines = numbered_lines(1000);
    let (first, second) = lines.split_at(500);
    let monitoring = addr(metrics);
    let accepted = || counter(monitoring, "SOURCE.r1", "EventAcceptedCount");
    send_through(&mut edge, edge_port, edge_metrics, first, || accepted() == 500);
    wait_for(
        DEADLINE,
        || counter(monitoring, "SOURCE.r1", "ConnectionIdleClosedCount") >= 1,
        || "the source never closed the idle connection".into(),
    );
    send_through(&mut edge, edge_port, edge_metrics, second, || accepted() == 1000);
    let sink = |name| counter(addr(edge_metrics), "SINK.k1", name);
    let (created, rollbacks, restarts) = (sink("ConnectionCreatedCount"), sink("RollbackCount"), sink("RestartCount"));
    println!("idle close: {created} connections made, {rollbacks} rollbacks, {restarts} restarts");
    assert_eq!((rollbacks, restarts), (0, 0), "the closed connection cost a rollback");
    assert_eq!(created, 2, "a second connection after the idle close");
    assert_eq!(edge.terminate(DEADLINE), Some(0));
    assert_eq!(collector.terminate(DEADLINE), Some(0));
    let (got, _) = output_lines(&out);
    assert_eq!(compare(&got, &lines, "the collector's output"), (0, 0));
}
