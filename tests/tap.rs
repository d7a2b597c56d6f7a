//! `flumen tap` against a running agent, both real processes on real sockets: Netcat (with an
//! interceptor adding a header) → Memory → FileRoll, fed Loghub lines. A tap on the source shows
//! the events as the selector gets them (with the interceptor's header), a tap on the sink the
//! events it takes from its channel; bodies that are not UTF-8 come out in `body_base64`. A tap
//! that is connected and never read (its TCP window full) does not slow or lose anything: every
//! line reaches the FileRoll output while `TapDroppedCount` rises; with a tap that reads (the
//! negative control) it stays zero and the tap shows every event. The client exits 0 with a
//! message when the agent stops, 1 when it is killed or cannot be reached.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(120);
const HEADER: (&str, &str) = ("tapped-by", "static-interceptor");

/// An agent running Netcat `r1` (interceptor `Static` adding [`HEADER`]) → Memory `c1` → FileRoll
/// `k1` into `out/`, with its monitoring server.
struct Agent {
    flumen: Flumen,
    netcat: SocketAddr,
    monitoring: SocketAddr,
    out: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let (port, mport) = (free_port(), free_port());
        let path = dir.join("tap.ron");
        write_file(
            &path,
            &format!(
                r#"Topology(
    agent: "tap",
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false),
               channels: ["c1"], batch_size: 1000,
               interceptors: [Static(key: "{}", value: "{}", preserve_existing: false)]),
    }},
    channels: {{ "c1": Memory(capacity: 300000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", roll_interval: "1h"), channel: "c1", batch_size: 1000) }},
    monitoring: Some(Http(bind: "127.0.0.1:{mport}")),
)"#,
                HEADER.0, HEADER.1
            ),
        );
        let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &dir.join("agent.log"));
        let monitoring: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
        drop(flumen.connect(monitoring, DEADLINE));
        Agent { flumen, netcat: format!("127.0.0.1:{port}").parse().unwrap(), monitoring, out: dir.join("out") }
    }

    fn url(&self) -> String {
        format!("http://{}", self.monitoring)
    }

    /// Writes `payload` to the Netcat source on one connection and closes it.
    fn send(&mut self, payload: &[u8]) {
        let mut s = self.flumen.connect(self.netcat, DEADLINE);
        s.write_all(payload).expect("send lines");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
    }

    /// Waits until the FileRoll output holds `n` lines; answers them.
    fn delivered(&self, n: usize) -> Vec<String> {
        wait_for(
            DEADLINE,
            || output_lines(&self.out).0.len() >= n,
            || format!("the output holds {} of {n} lines", output_lines(&self.out).0.len()),
        );
        output_lines(&self.out).0
    }

    fn tap_dropped(&self, component: &str) -> u64 {
        metric(self.monitoring, component, "TapDroppedCount")
            .unwrap_or_else(|| panic!("{component} has no TapDroppedCount in GET /metrics"))
    }
}

/// A running `flumen tap`, its stdout read line by line by a thread.
struct Tap {
    flumen: Flumen,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Tap {
    /// Starts `flumen tap --url URL <args>` and waits until it says it is tapping (from then on
    /// every event is tapped).
    fn start(url: &str, args: &[&str], log: &Path) -> Tap {
        let mut all = vec!["tap", "--url", url];
        all.extend_from_slice(args);
        let mut flumen = Flumen::start(&all, log);
        let stdout = flumen.child.stdout.take().expect("piped stdout");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        wait_for(
            DEADLINE,
            || flumen.log_text().contains("flumen tap: tapping"),
            || format!("flumen tap did not connect; its stderr:\n{}", flumen.log_text()),
        );
        Tap { flumen, lines, reader: Some(reader) }
    }

    /// Waits for the exit (stdout read to its end); answers the exit code, stdout lines, stderr.
    fn wait(mut self) -> (Option<i32>, Vec<String>, String) {
        let mut status = None;
        let child = &mut self.flumen.child;
        wait_for(
            DEADLINE,
            || {
                status = child.try_wait().expect("waitable child");
                status.is_some()
            },
            || "flumen tap did not exit".into(),
        );
        self.reader.take().unwrap().join().expect("stdout reader");
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        (status.and_then(|s| s.code()), lines, self.flumen.log_text())
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

/// A tapped event line, parsed.
fn parse(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"))
}

/// `(component, point, the interceptor's header, body)` of an event line with a UTF-8 body.
fn fields(line: &str) -> (String, String, Option<String>, String) {
    let v = parse(line);
    let s = |x: &serde_json::Value| x.as_str().map(String::from);
    (
        s(&v["component"]).unwrap_or_else(|| panic!("no component: {line}")),
        s(&v["point"]).unwrap_or_else(|| panic!("no point: {line}")),
        s(&v["headers"][HEADER.0]),
        s(&v["body"]).unwrap_or_else(|| panic!("no UTF-8 body: {line}")),
    )
}

#[test]
fn a_source_tap_shows_the_events_the_selector_gets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(tmp.path());
    let lines = numbered_lines(100);
    let tap = Tap::start(&agent.url(), &["--limit", "100", "--component", "r1"], &tmp.path().join("tap.log"));
    agent.send(&joined(&lines));
    let (code, out, err) = tap.wait();
    assert_eq!(code, Some(0), "--limit 100 exits 0 after 100 events; stderr:\n{err}");
    assert_eq!(out.len(), 100, "exactly 100 NDJSON lines");
    let mut bodies = Vec::new();
    for line in &out {
        let (component, point, header, body) = fields(line);
        assert_eq!((component.as_str(), point.as_str()), ("r1", "leaving_source"), "{line}");
        assert_eq!(header.as_deref(), Some(HEADER.1), "the interceptor's header is on the tapped event: {line}");
        bodies.push(body);
    }
    assert!(multiset(bodies) == multiset(lines.clone()), "the bodies are the lines sent");
    // The lines as sent carry no header: the tap shows them after the interceptor.
    assert!(!lines.iter().any(|l| l.contains(HEADER.1)));
    assert_eq!(agent.delivered(100).len(), 100);
}

#[test]
fn a_sink_tap_shows_the_events_the_sink_takes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(tmp.path());
    let lines = numbered_lines(100);
    let tap = Tap::start(&agent.url(), &["--limit", "100", "--component", "k1"], &tmp.path().join("tap.log"));
    agent.send(&joined(&lines));
    let (code, out, err) = tap.wait();
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert_eq!(out.len(), 100);
    let mut bodies = Vec::new();
    for line in &out {
        let (component, point, header, body) = fields(line);
        assert_eq!((component.as_str(), point.as_str()), ("k1", "entering_sink"), "only the sink asked for: {line}");
        assert_eq!(header.as_deref(), Some(HEADER.1), "{line}");
        bodies.push(body);
    }
    assert!(multiset(bodies) == multiset(lines.clone()), "the bodies are the lines sent");
    assert!(multiset(agent.delivered(100)) == multiset(lines), "and the sink delivered them");
}

#[test]
fn an_unfiltered_tap_sees_every_source_and_sink_and_every_body_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(tmp.path());
    let lines = numbered_lines(99);
    let mut payload = joined(&lines);
    let binary: &[u8] = b"\xff\xfe not UTF-8 \xc3\x28 081109 203615 148 INFO dfs.DataNode";
    payload.extend_from_slice(binary);
    payload.push(b'\n');
    let tap = Tap::start(&agent.url(), &["--limit", "200"], &tmp.path().join("tap.log"));
    agent.send(&payload);
    let (code, out, err) = tap.wait();
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert_eq!(out.len(), 200, "100 events leaving r1 and the same 100 entering k1");
    for (component, point) in [("r1", "leaving_source"), ("k1", "entering_sink")] {
        let mine: Vec<serde_json::Value> =
            out.iter().map(|l| parse(l)).filter(|v| v["component"] == component).collect();
        assert_eq!(mine.len(), 100, "{component}");
        let mut bodies = Vec::new();
        let mut binaries = Vec::new();
        for v in &mine {
            assert_eq!(v["point"], point);
            match (v["body"].as_str(), v["body_base64"].as_str()) {
                (Some(body), None) => bodies.push(body.to_string()),
                (None, Some(b64)) => binaries.push(base64_decode(b64)),
                _ => panic!("one of body and body_base64: {v}"),
            }
        }
        assert!(multiset(bodies) == multiset(lines.clone()), "{component}: the UTF-8 bodies are the lines sent");
        assert_eq!(binaries, vec![binary.to_vec()], "{component}: the other body, byte for byte, in body_base64");
    }
    let delivered = agent.delivered(100);
    assert_eq!(delivered.len(), 100);
}

#[test]
fn a_stalled_tap_drops_copies_never_events() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(tmp.path());
    // A client that asks for every component and then never reads: once its socket's buffers are
    // full, the agent cannot write to it.
    let mut stalled = TcpStream::connect(agent.monitoring).unwrap();
    stalled.write_all(b"GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1];
    while !head.ends_with(b"\"notice\":\"tapping\"") {
        assert_eq!(
            stalled.read(&mut buf).unwrap(),
            1,
            "the tap stream ended early: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(buf[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let lines = numbered_lines(200_000);
    assert_eq!(agent.tap_dropped("SOURCE.r1"), 0);
    agent.send(&joined(&lines));
    let delivered = agent.delivered(lines.len());
    let (source, sink) = (agent.tap_dropped("SOURCE.r1"), agent.tap_dropped("SINK.k1"));
    eprintln!("stalled tap: {source} copies dropped at r1, {sink} at k1, of {} each", lines.len());
    assert!(multiset(delivered) == multiset(lines.clone()), "every line reached the FileRoll output");
    assert!(source > 0 && sink > 0, "the stalled tap's buffer overflowed at both tap points");
    assert!(source < lines.len() as u64, "what fit in the buffer and the socket was not dropped");
    // The stalled tap cannot take its end line; it must not hold the agent's stop (the monitoring
    // server's default graceful timeout would keep the agent 30 s).
    assert_eq!(agent.flumen.terminate(Duration::from_secs(15)), Some(0), "the stop is not held by the tap");
    drop(stalled);
}

#[test]
fn a_reading_tap_drops_nothing_and_ends_when_the_agent_stops() {
    // The negative control of the stalled tap: the same agent and counter with a tap that reads.
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(tmp.path());
    let lines = numbered_lines(2000);
    let tap = Tap::start(&agent.url(), &[], &tmp.path().join("tap.log"));
    agent.send(&joined(&lines));
    assert_eq!(agent.delivered(lines.len()).len(), lines.len());
    wait_for(DEADLINE, || tap.count() >= 2 * lines.len(), || format!("the tap showed {} events", tap.count()));
    assert_eq!(agent.tap_dropped("SOURCE.r1"), 0);
    assert_eq!(agent.tap_dropped("SINK.k1"), 0);
    assert_eq!(agent.flumen.terminate(DEADLINE), Some(0));
    let (code, out, err) = tap.wait();
    assert_eq!(code, Some(0), "the agent's stop ends the tap with status 0; stderr:\n{err}");
    assert!(err.contains("flumen tap: the agent stopped (4000 events shown, 0 not shown"), "stderr:\n{err}");
    let bodies = |component: &str| -> Vec<String> {
        out.iter().map(|l| fields(l)).filter(|f| f.0 == component).map(|f| f.3).collect()
    };
    assert!(multiset(bodies("r1")) == multiset(lines.clone()));
    assert!(multiset(bodies("k1")) == multiset(lines));
}

#[test]
fn the_tap_says_so_when_the_agent_is_killed_or_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(tmp.path());
    let url = agent.url();
    let tap = Tap::start(&url, &["--component", "r1", "--component", "c1"], &tmp.path().join("tap.log"));
    agent.flumen.kill();
    let (code, out, err) = tap.wait();
    assert_eq!(code, Some(1), "stderr:\n{err}");
    assert!(out.is_empty());
    assert!(err.contains("flumen tap: tapping r1, c1"), "stderr:\n{err}");
    assert!(err.contains("\"c1\" is no source or sink of this agent (channels are not tapped)"), "stderr:\n{err}");
    assert!(err.contains("flumen tap: lost the connection to the agent"), "stderr:\n{err}");

    // Nothing listens there any more.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["tap", "--url", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{err}");
    assert!(err.contains("flumen tap: cannot reach the agent's monitoring server"), "stderr:\n{err}");
}

/// Standard base64 with padding (what `body_base64` holds), decoded here without the crate the
/// agent uses.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {text}"),
    };
    let mut out = Vec::new();
    for quad in text.as_bytes().chunks(4) {
        let n = quad.iter().take_while(|&&c| c != b'=').count();
        let bits = quad[..n].iter().fold(0u32, |acc, &c| (acc << 6) | u32::from(value(c))) << (6 * (4 - n));
        out.extend_from_slice(&bits.to_be_bytes()[1..n]);
    }
    out
}
