//! Flume's Avro RPC against an independent implementation: Apache Avro's Python library
//! (`avro.ipc` Requestor and Responder, `avro.protocol.parse` of Flume's `AvroSourceProtocol`)
//! over the Netty framing of tests/peers/avro_peer.py, with and without deflate.
//!
//! - The Python requestor sends every Loghub line in `appendBatch` calls to the `Avro` source
//!   (→ Memory → FileRoll): each line arrives exactly once.
//! - The `Avro` sink sends every Loghub line to the Python responder: each line arrives once; a
//!   batch the responder answers `FAILED` is sent again (control: a responder acknowledging a
//!   batch it did not write loses it).
//! - A full channel makes the source answer `FAILED`; the Python client sending such batches again
//!   loses nothing (control: a client not waiting for `OK` loses the refused batches).
//! - A tier edge (Netcat → RocksDb → Avro sink) → collector (Avro source → RocksDb(sync: true) →
//!   Avro sink → an archive started later): the collector is SIGKILLed mid-stream and restarted,
//!   every line arrives (duplicates counted; control: a Memory collector loses lines).
//! - Bad input (a truncated frame, a buffer count of 2^31, a 2 GiB buffer, a handshake for another
//!   protocol, a body declared 10 GB long, a malformed datum) closes each connection, counts it,
//!   puts nothing, and memory stays bounded; a good client is served after them.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

/// A bound for hangs, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(120);

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/avro_peer.py")
}

/// Starts `flumen run` on `text` written to `dir/name.ron`, its log in `dir/name.log`.
fn start(dir: &Path, name: &str, text: &str) -> Flumen {
    std::fs::create_dir_all(dir).unwrap();
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")))
}

/// Runs the Python client: every line of `lines` in `appendBatch` calls of `batch` events to
/// `port`; answers (events sent with `OK`, `FAILED` answers).
fn python_client(
    dir: &Path,
    port: u16,
    compression: &str,
    lines: &[String],
    batch: usize,
    extra: &[&str],
) -> (usize, usize) {
    let file = dir.join("client-lines.txt");
    std::fs::write(&file, joined(lines)).unwrap();
    let out = Command::new(pyenv_python())
        .arg(peer_script())
        .args(["client", "127.0.0.1", &port.to_string(), compression, file.to_str().unwrap(), &batch.to_string()])
        .args(extra)
        .output()
        .expect("run the Python Avro client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let words: Vec<&str> = stdout.split_whitespace().collect();
    match words.as_slice() {
        ["sent", sent, "failed", failed] => (sent.parse().unwrap(), failed.parse().unwrap()),
        _ => panic!("unexpected client output {stdout:?}"),
    }
}

/// The Python responder on `port`, writing each body it takes as a line to `out`; killed when
/// dropped.
struct Responder {
    child: Child,
    out: PathBuf,
}

impl Responder {
    fn start(port: u16, compression: &str, out: &Path, extra: &[&str]) -> Responder {
        let mut child = Command::new(pyenv_python())
            .arg(peer_script())
            .args(["server", &port.to_string(), compression, out.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python Avro responder");
        let mut line = [0u8; 10];
        child.stdout.as_mut().unwrap().read_exact(&mut line).expect("the responder says it listens");
        assert_eq!(&line, b"listening\n");
        Responder { child, out: out.to_path_buf() }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read(&self.out).map(|b| lines_of(&b)).unwrap_or_default()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Avro source (`compression`) → Memory → FileRoll `out`, with monitoring on `metrics`.
fn collector_to_file(port: u16, metrics: u16, compression: &str, out: &Path) -> String {
    format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "avro": (kind: Avro(bind: "127.0.0.1:{port}", compression_type: {compression}), channels: ["c1"], batch_size: 1000) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "out": (kind: FileRoll(dir: "{}", roll_interval: "0s"), channel: "c1", batch_size: 1000) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        out.display()
    )
}

#[test]
fn a_python_requestor_sends_every_loghub_line_to_the_avro_source() {
    let lines = loghub_lines();
    for (compression, peer) in [("None", "none"), ("Deflate", "deflate")] {
        let tmp = tempfile::tempdir().unwrap();
        let (port, metrics) = (free_port(), free_port());
        let out = tmp.path().join("out");
        let mut agent = start(tmp.path(), "collector", &collector_to_file(port, metrics, compression, &out));
        drop(agent.connect(addr(port), DEADLINE));
        let (sent, failed) = python_client(tmp.path(), port, peer, &lines, 100, &[]);
        assert_eq!((sent, failed), (lines.len(), 0));
        // Every batch was answered OK: committed to the channel; the sink writes them out.
        wait_for(
            DEADLINE,
            || output_lines(&out).0.len() >= lines.len(),
            || format!("{} of {} lines written; log:\n{}", output_lines(&out).0.len(), lines.len(), agent.log_text()),
        );
        let m = addr(metrics);
        assert_eq!(metric(m, "SOURCE.avro", "EventAcceptedCount"), Some(lines.len() as u64));
        assert_eq!(metric(m, "SOURCE.avro", "ProtocolErrorCount"), Some(0));
        assert_eq!(agent.terminate(DEADLINE), Some(0));
        let (missing, extra) = compare(&output_lines(&out).0, &lines, "the FileRoll output");
        println!("{compression}: {} lines from the Python requestor, {missing} missing, {extra} extra", lines.len());
        assert_eq!((missing, extra), (0, 0), "{compression}: each line exactly once");
    }
}

/// Netcat `port` → Memory → Avro sink to `avro` (`compression`), monitoring on `metrics`.
fn edge_to_avro(port: u16, avro: u16, metrics: u16, compression: &str, channel: &str) -> String {
    format!(
        r#"Topology(
    agent: "edge",
    sources: {{ "in": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": {channel} }},
    sinks: {{ "avro": (kind: Avro(hostname: "127.0.0.1", port: {avro}, compression_type: {compression}, request_timeout: "10s"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#
    )
}

const MEMORY: &str = "Memory(capacity: 100000, transaction_capacity: 1000)";

#[test]
fn the_avro_sink_sends_every_loghub_line_to_a_python_responder() {
    let lines = loghub_lines();
    for (compression, peer) in [("None", "none"), ("Deflate", "deflate")] {
        let tmp = tempfile::tempdir().unwrap();
        let (port, avro, metrics) = (free_port(), free_port(), free_port());
        let responder = Responder::start(avro, peer, &tmp.path().join("got.txt"), &[]);
        let mut edge = start(tmp.path(), "edge", &edge_to_avro(port, avro, metrics, compression, MEMORY));
        edge.send_acknowledged(addr(port), &lines, DEADLINE);
        wait_for(
            DEADLINE,
            || responder.lines().len() >= lines.len(),
            || {
                format!(
                    "the responder got {} of {} lines; log:\n{}",
                    responder.lines().len(),
                    lines.len(),
                    edge.log_text()
                )
            },
        );
        let m = addr(metrics);
        wait_for(DEADLINE, || metric(m, "CHANNEL.c1", "ChannelSize") == Some(0), || edge.log_text());
        assert_eq!(metric(m, "SINK.avro", "EventDrainSuccessCount"), Some(lines.len() as u64));
        assert_eq!(metric(m, "SINK.avro", "ConnectionCreatedCount"), Some(1), "one connection, kept");
        assert_eq!(edge.terminate(DEADLINE), Some(0));
        let (missing, extra) = compare(&responder.lines(), &lines, "the responder's output");
        println!("{compression}: {} lines to the Python responder, {missing} missing, {extra} extra", lines.len());
        assert_eq!((missing, extra), (0, 0), "{compression}: each line exactly once");
    }
}

/// The sink against a responder that answers batch 3 `FAILED` (`--fail-batch 3`) or answers it
/// `OK` without writing it (`--drop-batch 3`): (missing, extra, rollbacks).
fn against_a_responder(extra: &[&str]) -> (usize, usize, u64) {
    let lines = numbered_lines(5_000);
    let tmp = tempfile::tempdir().unwrap();
    let (port, avro, metrics) = (free_port(), free_port(), free_port());
    let responder = Responder::start(avro, "none", &tmp.path().join("got.txt"), extra);
    let mut edge = start(tmp.path(), "edge", &edge_to_avro(port, avro, metrics, "None", MEMORY));
    edge.send_acknowledged(addr(port), &lines, DEADLINE);
    let m = addr(metrics);
    wait_for(
        DEADLINE,
        || {
            metric(m, "CHANNEL.c1", "ChannelSize") == Some(0)
                && metric(m, "SOURCE.in", "EventAcceptedCount") == Some(5_000)
        },
        || edge.log_text(),
    );
    let rollbacks = metric(m, "SINK.avro", "RollbackCount").unwrap();
    assert_eq!(edge.terminate(DEADLINE), Some(0));
    let (missing, dup) = compare(&responder.lines(), &lines, "the responder's output");
    (missing, dup, rollbacks)
}

#[test]
fn a_batch_answered_failed_is_sent_again_and_an_ok_without_write_loses_it() {
    let (missing, extra, rollbacks) = against_a_responder(&["--fail-batch", "3"]);
    println!("responder answering batch 3 FAILED: {missing} missing, {extra} extra, {rollbacks} rollbacks");
    assert!(rollbacks >= 1, "the FAILED answer did not roll the batch back");
    assert_eq!((missing, extra), (0, 0), "the refused batch was not sent again exactly once");

    let (missing, _, rollbacks) = against_a_responder(&["--drop-batch", "3"]);
    println!("control, responder acknowledging batch 3 unwritten: {missing} missing, {rollbacks} rollbacks");
    assert_eq!(missing, 500, "the control lost no batch: the check cannot see a lost batch");
}

/// Avro source (`put_timeout: "300ms"`) → a small Memory channel → Avro sink to a responder that
/// stalls 4 s on its first batch: the channel fills and the source answers `FAILED`. The Python
/// client sends `lines` with `extra` options; answers (missing, extra copies, FAILED answers seen).
fn through_a_full_channel(extra: &[&str]) -> (usize, usize, usize) {
    let lines = numbered_lines(6_000);
    let tmp = tempfile::tempdir().unwrap();
    let (port, archive, metrics) = (free_port(), free_port(), free_port());
    let responder = Responder::start(archive, "none", &tmp.path().join("got.txt"), &["--stall-first", "4"]);
    let text = format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "avro": (kind: Avro(bind: "127.0.0.1:{port}", put_timeout: "300ms"), channels: ["c1"], batch_size: 100) }},
    channels: {{ "c1": Memory(capacity: 1000, transaction_capacity: 500, keep_alive: "50ms") }},
    sinks: {{ "next": (kind: Avro(hostname: "127.0.0.1", port: {archive}), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#
    );
    let mut agent = start(tmp.path(), "collector", &text);
    drop(agent.connect(addr(port), DEADLINE));
    let (sent, failed) = python_client(tmp.path(), port, "none", &lines, 100, extra);
    let m = addr(metrics);
    wait_for(
        DEADLINE,
        || metric(m, "CHANNEL.c1", "ChannelSize") == Some(0) && responder.lines().len() >= sent,
        || format!("the responder got {}; log:\n{}", responder.lines().len(), agent.log_text()),
    );
    assert_eq!(agent.terminate(DEADLINE), Some(0));
    let (missing, dup) = compare(&responder.lines(), &lines, "the responder's output");
    (missing, dup, failed)
}

#[test]
fn a_full_channel_answers_failed_and_a_client_sending_again_loses_nothing() {
    let (missing, extra, failed) = through_a_full_channel(&[]);
    println!("client sending FAILED batches again: {failed} FAILED answers, {missing} missing, {extra} extra");
    assert!(failed > 0, "the channel never filled: no FAILED answer");
    assert_eq!((missing, extra), (0, 0), "each line exactly once");

    let (missing, _, failed) = through_a_full_channel(&["--ignore-failed"]);
    println!("control, client not waiting for OK: {failed} FAILED answers, {missing} missing");
    assert!(failed > 0, "the channel never filled in the control");
    assert_eq!(missing, failed * 100, "the refused batches were not what went missing");
}

struct TierOutcome {
    sent: usize,
    accepted_before_kill: u64,
    missing: usize,
    duplicates: usize,
}

/// Edge: Netcat → RocksDb(sync) → Avro sink → collector: Avro source → `channel` → Avro sink →
/// archive (the Python responder, started only after the collector's kill, so that the collector's
/// channel holds what it acknowledged). `tls`: the hop between edge and collector speaks TLS.
fn avro_tier_across_a_collector_kill(tmp: &Path, channel: &str, tls: bool) -> TierOutcome {
    let (edge_port, collector_port, archive_port) = (free_port(), free_port(), free_port());
    let (edge_metrics, collector_metrics) = (free_port(), free_port());
    let (server_tls, client_tls) = if tls {
        use support::pki::{Ca, Usage};
        let dir = tmp.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let root = Ca::new("flumen test CA");
        let server = root.issue_to(&dir, "collector", "collector", &["localhost"], Usage::Server, false);
        let ca = root.write(&dir.join("ca.pem"));
        (
            format!(r#", tls: Some(TlsServer(cert: "{}", key: "{}"))"#, server.cert.display(), server.key.display()),
            format!(r#", hostname: "localhost", tls: Some(TlsClient(ca: Some("{}")))"#, ca.display()),
        )
    } else {
        (String::new(), r#", hostname: "127.0.0.1""#.to_string())
    };
    let collector_text = format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "from-edges": (kind: Avro(bind: "127.0.0.1:{collector_port}"{server_tls}), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": {channel} }},
    sinks: {{ "archive": (kind: Avro(port: {archive_port}, hostname: "127.0.0.1", connect_timeout: "1s"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{collector_metrics}")),
)"#
    );
    let collector_dir = tmp.join("collector");
    let mut collector = start(&collector_dir, "collector", &collector_text);
    drop(collector.connect(addr(collector_port), DEADLINE));
    let edge_text = format!(
        r#"Topology(
    agent: "edge",
    sources: {{ "in": (kind: Netcat(bind: "127.0.0.1:{edge_port}", max_line_length: 65536), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": RocksDb(dir: "channel", capacity: 1000000, sync: true, min_free_bytes: 0) }},
    sinks: {{ "k1": (kind: Avro(port: {collector_port}{client_tls}, request_timeout: "5s", connect_timeout: "1s"), channel: "c1", batch_size: 500) }},
    monitoring: Some(Http(bind: "127.0.0.1:{edge_metrics}")),
)"#
    );
    let mut edge = start(&tmp.join("edge"), "edge", &edge_text);
    let lines = numbered_lines(20_000);
    // The edge takes the lines 200 at a time, every 5 ms (a paced producer, acknowledged line by
    // line), so that the collector is killed while the stream is flowing.
    let stream = edge.connect(addr(edge_port), DEADLINE);
    let mut acks = stream.try_clone().unwrap();
    let payload: Vec<Vec<u8>> = lines.chunks(200).map(joined).collect();
    let producer = std::thread::spawn(move || {
        let mut stream = stream;
        for chunk in payload {
            stream.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let acked = std::thread::spawn(move || {
        let (mut n, mut buf) = (0usize, [0u8; 8192]);
        while n < 3 * 20_000 {
            let got = acks.read(&mut buf).expect("acknowledgements arrive");
            assert!(got > 0, "the edge closed the connection");
            n += got;
        }
    });
    let monitoring = addr(collector_metrics);
    let accepted = || metric(monitoring, "SOURCE.from-edges", "EventAcceptedCount").unwrap_or(0);
    wait_for(
        DEADLINE,
        || accepted() >= 3_000,
        || format!("the collector accepted {}; its log:\n{}", accepted(), collector.log_text()),
    );
    let accepted_before_kill = accepted();
    collector.kill();
    assert!(accepted_before_kill < lines.len() as u64 / 2, "the kill came after half the stream arrived");
    // The edge goes on taking (and acknowledging) lines while the collector is down.
    producer.join().unwrap();
    acked.join().unwrap();
    let responder = Responder::start(archive_port, "none", &tmp.join("archive.txt"), &[]);
    let collector = start(&collector_dir, "collector", &collector_text);
    let size = |m: SocketAddr| metric(m, "CHANNEL.c1", "ChannelSize");
    wait_for(
        DEADLINE,
        || accepted() > 0 && [addr(edge_metrics), monitoring].iter().all(|m| size(*m) == Some(0)),
        || {
            format!(
                "the tier never settled; the collector's log:\n{}\nthe edge's log:\n{}",
                collector.log_text(),
                edge.log_text()
            )
        },
    );
    assert!(
        metric(addr(edge_metrics), "SINK.k1", "ConnectionFailedCount").unwrap_or(0) >= 1,
        "the edge never saw the collector down"
    );
    assert_eq!(edge.terminate(DEADLINE), Some(0), "the edge stops cleanly");
    assert_eq!(collector.terminate(DEADLINE), Some(0), "the collector stops cleanly");
    let got = responder.lines();
    let (missing, duplicates) = compare(&got, &lines, "the archive");
    TierOutcome { sent: lines.len(), accepted_before_kill, missing, duplicates }
}

#[test]
fn every_line_crosses_an_avro_tier_across_a_collector_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let durable = avro_tier_across_a_collector_kill(
        tmp.path(),
        "RocksDb(dir: \"channel\", capacity: 1000000, sync: true, min_free_bytes: 0)",
        false,
    );
    println!(
        "Avro tier, RocksDb collector: {} lines, {} committed by the collector before its kill, {} lost, {} duplicates",
        durable.sent, durable.accepted_before_kill, durable.missing, durable.duplicates
    );
    assert_eq!(durable.missing, 0, "lines were lost across the collector's kill");

    let tmp = tempfile::tempdir().unwrap();
    let memory =
        avro_tier_across_a_collector_kill(tmp.path(), "Memory(capacity: 1000000, transaction_capacity: 1000)", false);
    println!(
        "control, Memory collector: {} lines, {} committed before its kill, {} lost",
        memory.sent, memory.accepted_before_kill, memory.missing
    );
    assert!(memory.missing > 0, "the Memory control lost nothing: the kill did not hit acknowledged lines");
}

#[test]
fn every_line_crosses_a_tls_avro_tier_across_a_collector_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let durable = avro_tier_across_a_collector_kill(
        tmp.path(),
        "RocksDb(dir: \"channel\", capacity: 1000000, sync: true, min_free_bytes: 0)",
        true,
    );
    println!(
        "TLS Avro tier, RocksDb collector: {} lines, {} committed before its kill, {} lost, {} duplicates",
        durable.sent, durable.accepted_before_kill, durable.missing, durable.duplicates
    );
    assert_eq!(durable.missing, 0, "lines were lost across the collector's kill");
}

/// Sends `bytes` on a new connection to `port`, then waits until the server closes it; panics if
/// it answers anything or keeps it open past the deadline.
fn send_and_see_closed(port: u16, bytes: &[u8], shutdown_write: bool) {
    let mut s = TcpStream::connect(addr(port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may close before everything is written (a refused frame): that is fine.
    let _ = s.write_all(bytes);
    if shutdown_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("the source answered bad input with {n} bytes: {:?}", &buf[..n]),
        Err(e) => panic!("the source did not close the connection: {e}"),
    }
}

fn frame_header(serial: i32, count: i32) -> Vec<u8> {
    let mut v = serial.to_be_bytes().to_vec();
    v.extend_from_slice(&count.to_be_bytes());
    v
}

/// An Avro long, zigzag varint.
fn avro_long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

/// A frame holding a valid first-call handshake (flumen's protocol hash, no protocol text),
/// empty call metadata, the message name `appendBatch`, then `params` as they are.
fn append_batch_frame(params: &[u8]) -> Vec<u8> {
    use flumen::codec::avro::{protocol_hash, HandshakeRequest};
    let mut payload = Vec::new();
    HandshakeRequest { client_hash: protocol_hash(), client_protocol: None, server_hash: protocol_hash(), meta: None }
        .encode(&mut payload);
    payload.push(0); // empty metadata map
    payload.extend(avro_long(11));
    payload.extend_from_slice(b"appendBatch");
    payload.extend_from_slice(params);
    let mut frame = frame_header(1, 1);
    frame.extend_from_slice(&(payload.len() as i32).to_be_bytes());
    frame.extend(payload);
    frame
}

#[test]
fn bad_input_closes_the_connection_puts_nothing_and_memory_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let out = tmp.path().join("out");
    let mut agent = start(tmp.path(), "collector", &collector_to_file(port, metrics, "None", &out));
    drop(agent.connect(addr(port), DEADLINE));
    let m = addr(metrics);
    let errors = || metric(m, "SOURCE.avro", "ProtocolErrorCount").unwrap_or(0);

    let mut truncated = frame_header(1, 1);
    truncated.extend_from_slice(&100i32.to_be_bytes());
    truncated.extend_from_slice(&[7u8; 50]);
    let mut huge_buffer = frame_header(1, 1);
    huge_buffer.extend_from_slice(&i32::MAX.to_be_bytes());
    huge_buffer.extend(std::iter::repeat_n(0u8, 1 << 20));
    // One event whose body declares 10 GB, with a few bytes behind it.
    let mut ten_gb = avro_long(1);
    ten_gb.push(0); // no headers
    ten_gb.extend(avro_long(10_000_000_000));
    ten_gb.extend_from_slice(b"not ten gigabytes");
    ten_gb.push(0);
    // An event whose header map declares a block of a billion entries.
    let mut many_headers = avro_long(1);
    many_headers.extend(avro_long(1_000_000_000));
    many_headers.extend_from_slice(&[3, b'k']);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a truncated frame", truncated, true),
        ("a buffer count of 2^31", frame_header(1, i32::MIN), false),
        ("a buffer count of 2^31 - 1", frame_header(1, i32::MAX), false),
        ("a 2 GiB buffer", huge_buffer, false),
        ("a body declared 10 GB long", append_batch_frame(&ten_gb), false),
        ("a billion headers", append_batch_frame(&many_headers), false),
        ("a malformed datum", append_batch_frame(&[0x0b, 0xff, 0xff, 0xff]), false),
        (
            "garbage instead of a handshake",
            [frame_header(1, 1), 8i32.to_be_bytes().to_vec(), vec![0xff; 8]].concat(),
            false,
        ),
    ];
    for (k, (what, bytes, shutdown)) in cases.iter().enumerate() {
        send_and_see_closed(port, bytes, *shutdown);
        wait_for(
            DEADLINE,
            || errors() > k as u64,
            || format!("{what}: ProtocolErrorCount is {}; log:\n{}", errors(), agent.log_text()),
        );
    }
    // A handshake for another protocol, from Python's Requestor.
    let foreign = Command::new(pyenv_python())
        .arg(peer_script())
        .args(["foreign", "127.0.0.1", &port.to_string()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&foreign.stdout);
    assert!(
        said.starts_with("refused"),
        "another protocol was not refused: {said}{}",
        String::from_utf8_lossy(&foreign.stderr)
    );
    wait_for(DEADLINE, || errors() > cases.len() as u64, || agent.log_text());
    // Four connections at once each declare a 60 MiB buffer (within max_frame_bytes) and send
    // 1 MiB of it: a frame's bytes are held as they arrive, not as declared.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr(port)).unwrap();
        let mut bytes = frame_header(1, 1);
        bytes.extend_from_slice(&(60i32 << 20).to_be_bytes());
        bytes.extend(std::iter::repeat_n(b'x', 1 << 20));
        s.write_all(&bytes).unwrap();
        held.push(s);
    }
    wait_for(DEADLINE, || metric(m, "SOURCE.avro", "OpenConnectionCount") == Some(4), || agent.log_text());
    for s in &held {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let before_good = cases.len() as u64 + 5;
    wait_for(DEADLINE, || errors() >= before_good, || agent.log_text());
    assert!(agent.log_text().contains("another protocol"), "no log line names the other protocol");
    assert_eq!(metric(m, "SOURCE.avro", "EventReceivedCount"), Some(0), "bad input put events");
    let peak = agent.peak_rss_kib();
    println!("bad input: {} connections refused, peak RSS {peak} KiB", errors());
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB: bad input made the source allocate");

    // Control: the same source takes a good client's batches after all that.
    let lines: Vec<String> = loghub_lines().into_iter().take(500).collect();
    let (sent, _) = python_client(tmp.path(), port, "none", &lines, 100, &[]);
    assert_eq!(sent, lines.len());
    wait_for(DEADLINE, || output_lines(&out).0.len() >= lines.len(), || agent.log_text());
    assert_eq!(errors(), before_good, "the good client was counted as bad input");
    // Control: a good call of one 40 MiB event raises the peak, so the bound above can fail.
    let big = vec!["x".repeat(40 << 20)];
    assert_eq!(python_client(tmp.path(), port, "none", &big, 1, &[]).0, 1);
    let control = agent.peak_rss_kib();
    println!("control, one 40 MiB event: peak RSS {control} KiB");
    assert!(control > peak + 40 * 1024, "a 40 MiB call did not show in the peak RSS ({peak} -> {control} KiB)");
    assert_eq!(agent.terminate(DEADLINE), Some(0));
}

/// Netcat → Memory → the Avro sinks `sinks` (name, port) in a group under `processor`; sends
/// `lines` and waits until the channel is empty. Answers the group's counters of `sinks[0]`
/// (`ConnectionFailedCount`).
fn through_a_group(tmp: &Path, sinks: &[(&str, u16)], processor: &str, lines: &[String]) -> u64 {
    let (port, metrics) = (free_port(), free_port());
    let defs: Vec<String> = sinks
        .iter()
        .map(|(name, p)| {
            format!(
                r#""{name}": (kind: Avro(hostname: "127.0.0.1", port: {p}, connect_timeout: "1s"), channel: "c1", batch_size: 500)"#
            )
        })
        .collect();
    let names: Vec<String> = sinks.iter().map(|(n, _)| format!("{n:?}")).collect();
    let text = format!(
        r#"Topology(
    agent: "edge",
    sources: {{ "in": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536), channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": {MEMORY} }},
    sinks: {{ {} }},
    sink_groups: {{ "g1": (sinks: [{}], processor: {processor}) }},
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
)"#,
        defs.join(", "),
        names.join(", ")
    );
    let mut edge = start(tmp, "edge", &text);
    edge.send_acknowledged(addr(port), lines, DEADLINE);
    let m = addr(metrics);
    wait_for(DEADLINE, || metric(m, "CHANNEL.c1", "ChannelSize") == Some(0), || edge.log_text());
    let failed = metric(m, &format!("SINK.{}", sinks[0].0), "ConnectionFailedCount").unwrap();
    assert_eq!(edge.terminate(DEADLINE), Some(0));
    failed
}

#[test]
fn avro_sinks_work_in_failover_and_load_balance_groups() {
    let lines = numbered_lines(10_000);
    // Failover: the primary's collector is down, the backup takes every batch.
    let tmp = tempfile::tempdir().unwrap();
    let (dead, live) = (free_port(), free_port());
    let backup = Responder::start(live, "none", &tmp.path().join("backup.txt"), &[]);
    let failover = r#"Failover(priority: { "primary": 10, "backup": 5 })"#;
    let failed = through_a_group(tmp.path(), &[("primary", dead), ("backup", live)], failover, &lines);
    let (missing, extra) = compare(&backup.lines(), &lines, "the backup");
    println!("Failover: primary failed {failed} times; backup got all but {missing}, {extra} extra");
    assert!(failed >= 1, "the primary never failed");
    assert_eq!((missing, extra), (0, 0));

    // LoadBalance over two live collectors and a dead one: every line once, over both.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, dead) = (free_port(), free_port(), free_port());
    let ra = Responder::start(a, "none", &tmp.path().join("a.txt"), &[]);
    let rb = Responder::start(b, "none", &tmp.path().join("b.txt"), &[]);
    let balance = "LoadBalance(selector: RoundRobin, backoff: true)";
    through_a_group(tmp.path(), &[("dead", dead), ("a", a), ("b", b)], balance, &lines);
    let (got_a, got_b) = (ra.lines(), rb.lines());
    let (missing, extra) = compare(&[got_a.clone(), got_b.clone()].concat(), &lines, "the collectors");
    println!("LoadBalance: {} and {} lines, {missing} missing, {extra} extra", got_a.len(), got_b.len());
    assert!(!got_a.is_empty() && !got_b.is_empty(), "the batches were not spread");
    assert_eq!((missing, extra), (0, 0));

    // Control: a backup acknowledging its second batch without writing it loses that batch.
    let tmp = tempfile::tempdir().unwrap();
    let (dead, live) = (free_port(), free_port());
    let backup = Responder::start(live, "none", &tmp.path().join("backup.txt"), &["--drop-batch", "2"]);
    through_a_group(tmp.path(), &[("primary", dead), ("backup", live)], failover, &lines);
    let (missing, _) = compare(&backup.lines(), &lines, "the backup");
    println!("control, backup dropping a batch: {missing} missing");
    assert!(missing > 0, "the control lost nothing");
}

#[test]
fn a_connection_the_source_closed_when_idle_is_replaced_without_a_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let (edge_port, collector_port, edge_metrics, collector_metrics) =
        (free_port(), free_port(), free_port(), free_port());
    let out = tmp.path().join("out");
    let collector_text = format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "avro": (kind: Avro(bind: "127.0.0.1:{collector_port}", idle_timeout: "300ms"), channels: ["c1"]) }},
    channels: {{ "c1": {MEMORY} }},
    sinks: {{ "out": (kind: FileRoll(dir: "{}", roll_interval: "0s"), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{collector_metrics}")),
)"#,
        out.display()
    );
    let mut collector = start(&tmp.path().join("collector"), "collector", &collector_text);
    drop(collector.connect(addr(collector_port), DEADLINE));
    let mut edge =
        start(&tmp.path().join("edge"), "edge", &edge_to_avro(edge_port, collector_port, edge_metrics, "None", MEMORY));
    let lines = numbered_lines(200);
    edge.send_acknowledged(addr(edge_port), &lines[..100], DEADLINE);
    wait_for(DEADLINE, || output_lines(&out).0.len() >= 100, || collector.log_text());
    let idle_closed = || metric(addr(collector_metrics), "SOURCE.avro", "ConnectionIdleClosedCount").unwrap_or(0);
    wait_for(DEADLINE, || idle_closed() >= 1, || collector.log_text());
    edge.send_acknowledged(addr(edge_port), &lines[100..], DEADLINE);
    wait_for(DEADLINE, || output_lines(&out).0.len() >= 200, || edge.log_text());
    let m = addr(edge_metrics);
    let created = metric(m, "SINK.avro", "ConnectionCreatedCount").unwrap();
    let rollbacks = metric(m, "SINK.avro", "RollbackCount").unwrap();
    println!("after an idle close: {created} connections made, {rollbacks} rollbacks");
    assert_eq!(created, 2, "the sink did not connect anew after the idle close");
    assert_eq!(rollbacks, 0, "the idle close cost a rollback");
    let (missing, extra) = compare(&output_lines(&out).0, &lines, "the collector's output");
    assert_eq!((missing, extra), (0, 0));
}
