//! Signals: SIGINT drains the channels and exits 0 with the run's summary; a second signal exits
//! at once (status 130) and the durable channel still holds what was not delivered, which a
//! restarted agent then delivers; a SIGTERM under load from many connections loses no line that
//! was answered `OK`, even with a `Memory` channel (and a SIGKILL, the negative control, does);
//! a sink that keeps failing keeps its restart backoff during the drain.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

fn topology(dir: &Path, port: u16, sink_batch: usize) -> std::path::PathBuf {
    let path = dir.join("shutdown.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "shutdown",
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               channels: ["c1"], batch_size: 1000),
    }},
    channels: {{ "c1": RocksDb(dir: "data/c1", capacity: 1000000, sync: true) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", sync: true), channel: "c1", batch_size: {sink_batch}) }},
)"#
        ),
    );
    path
}

#[test]
fn sigint_drains_and_exits_zero_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = topology(tmp.path(), port, 1000);
    let lines = loghub_lines();
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    flumen.send_acknowledged(format!("127.0.0.1:{port}").parse().unwrap(), &lines, Duration::from_secs(60));
    flumen.signal(libc::SIGINT);
    let output = flumen.child.wait_with_output_timeout(Duration::from_secs(60));
    assert_eq!(output.0, Some(0), "graceful stop exits 0");
    assert!(output.1.contains("SINK.k1"), "the summary names the sink: {}", output.1);
    let (got, _) = output_lines(&tmp.path().join("out"));
    assert!(multiset(got) == multiset(lines), "everything acknowledged was delivered before the exit");
}

#[test]
fn second_signal_exits_at_once_and_the_durable_channel_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // Slow sink: an fsync per 10 events, so most events are still in the channel at the signal.
    let path = topology(tmp.path(), port, 10);
    let lines = numbered_lines(20_000);
    let log = tmp.path().join("flumen.log");
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &log);
    flumen.send_acknowledged(format!("127.0.0.1:{port}").parse().unwrap(), &lines, Duration::from_secs(60));
    flumen.signal(libc::SIGTERM);
    wait_for(
        Duration::from_secs(30),
        || std::fs::read_to_string(&log).unwrap_or_default().contains("sinks drain their channels"),
        || "the agent did not start draining".into(),
    );
    flumen.signal(libc::SIGTERM);
    let (code, _) = flumen.child.wait_with_output_timeout(Duration::from_secs(30));
    assert_eq!(code, Some(130), "a second signal exits at once");
    let (delivered, _) = output_lines(&tmp.path().join("out"));
    eprintln!("{} of {} lines delivered before the second signal", delivered.len(), lines.len());
    assert!(delivered.len() < lines.len(), "the test needs undelivered events at the second signal");

    let again = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &log);
    wait_for(
        Duration::from_secs(120),
        || output_lines(&tmp.path().join("out")).0.len() >= lines.len(),
        || {
            format!(
                "{} of {} lines delivered after the restart",
                output_lines(&tmp.path().join("out")).0.len(),
                lines.len()
            )
        },
    );
    assert_eq!(again.terminate(Duration::from_secs(60)), Some(0));
    let (got, _) = output_lines(&tmp.path().join("out"));
    let got = multiset(got);
    assert!(lines.iter().all(|l| got.contains_key(l)), "every acknowledged line was delivered");
}

/// Waiting for a child with a deadline, collecting its stdout.
trait WaitWithTimeout {
    fn wait_with_output_timeout(&mut self, timeout: Duration) -> (Option<i32>, String);
}

impl WaitWithTimeout for std::process::Child {
    fn wait_with_output_timeout(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut status = None;
        wait_for(
            timeout,
            || {
                status = self.try_wait().expect("waitable child");
                status.is_some()
            },
            || format!("flumen did not exit within {timeout:?}"),
        );
        let mut out = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        (status.and_then(|s| s.code()), out)
    }
}

/// The `n`th line of connection `c`: `c<c>-<n> <a Loghub line>`.
fn line(loghub: &[String], c: usize, n: usize) -> String {
    format!("c{c}-{n} {}", loghub[(c * 7919 + n) % loghub.len()])
}

/// Most lines one connection writes (about 100 MB); the agent stops reading long before.
const MAX_PER_CONNECTION: usize = 1_000_000;

/// A client on one Netcat connection: a thread writes [`line`]s for as long as the agent reads
/// them (so the input never pauses, not even while the agent stops), another reads the answers,
/// each of which must be exactly `OK`.
struct Connection {
    acked: Arc<AtomicU64>,
    reader: std::thread::JoinHandle<Result<(), String>>,
}

fn open_connections(addr: SocketAddr, connections: usize) -> Vec<Connection> {
    let loghub = Arc::new(loghub_lines());
    (0..connections)
        .map(|c| {
            let stream = TcpStream::connect(addr).expect("connect to the Netcat source");
            let mut writer = stream.try_clone().expect("clone the connection");
            let lines = loghub.clone();
            std::thread::spawn(move || {
                for start in (0..MAX_PER_CONNECTION).step_by(1000) {
                    let chunk: Vec<String> = (start..start + 1000).map(|n| line(&lines, c, n)).collect();
                    // The agent stops reading at the signal: the write fails then.
                    if writer.write_all(&joined(&chunk)).is_err() {
                        return;
                    }
                }
            });
            let acked = Arc::new(AtomicU64::new(0));
            let counted = acked.clone();
            let reader = std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut answer = String::new();
                loop {
                    answer.clear();
                    match reader.read_line(&mut answer) {
                        Ok(0) | Err(_) => return Ok(()),
                        Ok(_) if answer == "OK\n" => {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        // A partial answer at a reset is no acknowledgement; anything else is wrong.
                        Ok(_) if !answer.ends_with('\n') && "OK\n".starts_with(answer.as_str()) => return Ok(()),
                        Ok(_) => return Err(format!("unexpected answer {answer:?}")),
                    }
                }
            });
            Connection { acked, reader }
        })
        .collect()
}

fn netcat_memory_topology(dir: &Path, port: u16, monitoring: u16) -> std::path::PathBuf {
    let path = dir.join("load.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "load",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 200000, transaction_capacity: 10000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", sync: true), channel: "c1", batch_size: 100) }},
)"#
        ),
    );
    path
}

/// Streams from 8 connections into a `Memory` channel without a pause, sends `signal` once
/// 40,000 lines are acknowledged and the channel holds 2,000 of them (the clients go on
/// writing), and answers (acknowledged,
/// acknowledged and missing from the output).
fn stop_under_load(signal: i32) -> (u64, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let path = netcat_memory_topology(tmp.path(), port, monitoring);
    let mut flumen = Flumen::start(
        &["run", "--quiet", "--drain-timeout", "60s", path.to_str().unwrap()],
        &tmp.path().join("flumen.log"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    drop(flumen.connect(addr, Duration::from_secs(60)));
    let conns = open_connections(addr, 8);
    let acked = || conns.iter().map(|c| c.acked.load(Ordering::SeqCst)).sum::<u64>();
    wait_for(Duration::from_secs(120), || acked() >= 40_000, || format!("{} lines acknowledged", acked()));
    // The sink (an fsync per 100 events) lags behind: the channel holds acknowledged events.
    let held = || metric(format!("127.0.0.1:{monitoring}").parse().unwrap(), "CHANNEL.c1", "ChannelSize").unwrap_or(0);
    wait_for(Duration::from_secs(120), || held() >= 2_000, || format!("the channel holds {} events", held()));
    assert!(acked() < (8 * MAX_PER_CONNECTION) as u64 / 2, "the signal must land while the lines stream");
    flumen.signal(signal);
    let (code, _) = flumen.child.wait_with_output_timeout(Duration::from_secs(60));
    if signal == libc::SIGTERM {
        assert_eq!(code, Some(0), "graceful stop exits 0; log:\n{}", flumen.log_text());
    }
    let loghub = loghub_lines();
    let mut acknowledged = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        c.reader.join().expect("reader thread").expect("only OK answers");
        let n = c.acked.load(Ordering::SeqCst) as usize;
        acknowledged.extend((0..n).map(|k| line(&loghub, i, k)));
    }
    let (got, _) = output_lines(&tmp.path().join("out"));
    let got = multiset(got);
    let missing = acknowledged.iter().filter(|l| !got.contains_key(*l)).count() as u64;
    eprintln!(
        "signal {signal}: {} lines acknowledged, {} delivered, {missing} acknowledged lines missing",
        acknowledged.len(),
        got.values().sum::<usize>()
    );
    (acknowledged.len() as u64, missing)
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_line() {
    let (acknowledged, missing) = stop_under_load(libc::SIGTERM);
    assert!(acknowledged >= 40_000);
    assert_eq!(missing, 0, "acknowledged lines lost in a graceful stop");
}

#[test]
fn negative_control_sigkill_loses_acknowledged_lines_of_a_memory_channel() {
    let (acknowledged, missing) = stop_under_load(libc::SIGKILL);
    assert!(acknowledged >= 40_000);
    assert!(
        missing > 0,
        "a SIGKILL of a Memory channel under load must lose acknowledged lines, or the check above proves nothing"
    );
}

#[test]
fn a_failing_sink_keeps_its_backoff_while_the_agent_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, back_port) = (free_port(), free_port());
    // The next hop wants a token the sink does not send: every post is answered 401, so every
    // delivery fails and the sink restarts (`on_client_error: Rollback`).
    let back_path = tmp.path().join("back.ron");
    write_file(
        &back_path,
        &format!(
            r#"Topology(
    agent: "back",
    sources: {{ "in": (kind: Http(bind: "127.0.0.1:{back_port}", bearer_token: Some("s3cret")), channels: ["c"]) }},
    channels: {{ "c": Memory() }},
    sinks: {{ "k": (kind: Null(), channel: "c") }},
)"#
        ),
    );
    let mut back = Flumen::start(&["run", "--quiet", back_path.to_str().unwrap()], &tmp.path().join("back.log"));
    drop(back.connect(format!("127.0.0.1:{back_port}").parse().unwrap(), Duration::from_secs(60)));
    let path = tmp.path().join("failing.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "failing",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}"), channels: ["c1"]) }},
    channels: {{ "c1": Memory() }},
    sinks: {{ "k1": (kind: Http(url: "http://127.0.0.1:{back_port}/"), channel: "c1") }},
)"#
        ),
    );
    let log = tmp.path().join("flumen.log");
    let mut flumen = Flumen::start(&["run", "--quiet", "--drain-timeout", "3s", path.to_str().unwrap()], &log);
    let lines = numbered_lines(10);
    flumen.send_acknowledged(format!("127.0.0.1:{port}").parse().unwrap(), &lines, Duration::from_secs(60));
    flumen.signal(libc::SIGTERM);
    let (code, summary) = flumen.child.wait_with_output_timeout(Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let restarts: u64 = summary
        .lines()
        .find(|l| l.starts_with("SINK.k1"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no restart count for SINK.k1 in the summary:\n{summary}"));
    drop(back);
    let text = std::fs::read_to_string(&log).unwrap();
    let failure_lines = text.lines().filter(|l| l.contains("sink failed")).count();
    eprintln!("restarts: {restarts}; log lines about the failure: {failure_lines}; log bytes: {}", text.len());
    // Backoff from 100 ms doubling: a few restarts in the run and the 3 s drain, not thousands.
    assert!((2..=20).contains(&restarts), "{restarts} restarts:\n{summary}");
    // The same error again is logged at 2, 4, 8, ... repeats, not at each.
    assert!(
        failure_lines < restarts as usize || restarts <= 2,
        "{failure_lines} failure lines for {restarts} restarts"
    );
    assert!(failure_lines <= 8, "{failure_lines} log lines for one repeated error");
}
