//! Agents in tiers, each a real `flumen` process, over real sockets, files and RocksDB:
//!
//! - three edge agents tail three different Loghub logs (`Taildir` → `RocksDb` → `Http` sink, flumen's
//!   binary event codec) into one collector (`Http` source → `RocksDb` → `Hdfs` buckets per edge and
//!   hour); the collector is SIGKILLed mid-stream and started again on the same port and folders;
//! - an agent whose `Failover` group holds an `Http` sink posting to a second agent and a `FileRoll`
//!   backup: while the second agent is SIGKILLed the backup takes the stream, once it is back the
//!   `Http` sink takes over again.
//!
//! In both every line sent reaches the outputs at least once; duplicates are counted and bounded
//! by the batches that can be in flight when an agent dies.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

/// A bound for hangs, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(120);

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Writes the topology `text` to `dir/<name>.ron` and starts `flumen run` on it, its log in
/// `dir/<name>.log` (appended to across restarts).
fn start(dir: &Path, name: &str, text: &str) -> Flumen {
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")))
}

/// Starts an agent as [`start`] does and waits until `listen` accepts connections.
fn start_listening(dir: &Path, name: &str, text: &str, listen: SocketAddr) -> Flumen {
    let mut flumen = start(dir, name, text);
    drop(flumen.connect(listen, DEADLINE));
    flumen
}

/// The lines of one Loghub sample.
fn sample(name: &str) -> Vec<String> {
    lines_of(&std::fs::read(loghub_dir().join(name)).expect("read Loghub sample"))
}

/// How many complete lines (LF-terminated) the files under `dir` hold, recursively; cheaper than
/// [`output_lines`] for polling.
fn count_lines(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                n += bytes.iter().filter(|&&b| b == b'\n').count();
            }
        }
    }
    n
}

/// Polls `cond` every 100 ms (the outputs polled here are megabytes) until it holds; panics with
/// `what()` after [`DEADLINE`].
fn wait_slowly(mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?}: {}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// One edge agent's input: a Loghub sample copied into its folder, then appended to by a thread.
struct EdgeInput {
    /// The edge's name, also the value of its `edge` header and its bucket under the collector.
    name: String,
    /// Its folder (topology, tailed file, positions, channel).
    dir: PathBuf,
    /// Every line in the order written: the sample, then the appended lines.
    lines: Vec<String>,
    /// How many lines the file holds so far.
    written: Arc<AtomicUsize>,
}

/// Three edges tail three Loghub logs and post to one collector writing `Hdfs` buckets; the
/// collector is SIGKILLed while the edges are still reading lines being appended, and started
/// again on the same port and folders. Every line of every edge ends up in its edge's buckets.
///
/// What counts as delivered: every file under the collector's base folder. After the final
/// graceful stop every file is closed (renamed without `.tmp`): the restarted collector recovered
/// the in-use files the SIGKILL cut off (cut to their last complete line and renamed), and closed
/// its own. A line cut by the kill belongs to a batch that was not committed and is delivered
/// again.
#[test]
fn three_edges_deliver_every_line_to_hdfs_buckets_across_a_collector_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let started_ms = now_ms();
    const APPENDED: usize = 10_000;

    // Each edge starts with one whole Loghub sample in its file; more lines, numbered copies of the
    // same sample, are appended while it runs.
    let edges: Vec<EdgeInput> = ["Apache_2k.log", "HDFS_2k.log", "Linux_2k.log"]
        .iter()
        .enumerate()
        .map(|(k, sample_name)| {
            let name = format!("edge-{}", k + 1);
            let dir = tmp.path().join(&name);
            let base = sample(sample_name);
            let mut lines = base.clone();
            lines.extend((0..APPENDED).map(|i| format!("{i} {}", base[i % base.len()])));
            std::fs::create_dir_all(dir.join("in")).unwrap();
            // Some samples end without a newline: the copy ends its last line, or the first line
            // appended would be glued to it.
            std::fs::write(dir.join("in/app.log"), joined(&base)).unwrap();
            EdgeInput { name, dir, lines, written: Arc::new(AtomicUsize::new(base.len())) }
        })
        .collect();
    let total: usize = edges.iter().map(|e| e.lines.len()).sum();

    let collector_dir = tmp.path().join("collector");
    let collector_topology = format!(
        r#"Topology(
    agent: "collector",
    sources: {{
        "from-edges": (
            kind: Http(bind: "127.0.0.1:{port}", path: "/events", format: Events),
            channels: ["disk"],
            batch_size: 1000,
        ),
    }},
    channels: {{ "disk": RocksDb(dir: "channel", capacity: 1000000, transaction_capacity: 1000, sync: true) }},
    sinks: {{
        "buckets": (
            kind: Hdfs(
                path: "out/%{{edge}}/%Y-%m-%d/%H",
                file_prefix: "events",
                file_suffix: ".log",
                roll_count: 2000,
                roll_size: 0,
                roll_interval: "2s",
                time_zone: Some("UTC"),
            ),
            channel: "disk",
            batch_size: 500,
        ),
    }},
)"#
    );
    let collector = start_listening(&collector_dir, "collector", &collector_topology, addr(port));
    let mut agents: Vec<Flumen> = edges
        .iter()
        .map(|e| {
            start(
                &e.dir,
                "edge",
                &format!(
                    r#"Topology(
    agent: "{name}",
    sources: {{
        "tail": (
            kind: Taildir(filegroups: {{ "app": "in/*.log" }}, position_file: "state/positions.json"),
            channels: ["outbox"],
            interceptors: [Static(key: "edge", value: "{name}"), Timestamp()],
            batch_size: 500,
        ),
    }},
    channels: {{ "outbox": RocksDb(dir: "state/channel", capacity: 1000000, transaction_capacity: 1000, sync: true) }},
    sinks: {{
        "forward": (
            kind: Http(url: "http://127.0.0.1:{port}/events", format: Events, timeout: "5s", max_backoff: "300ms"),
            channel: "outbox",
            batch_size: 500,
        ),
    }},
)"#,
                    name = e.name
                ),
            )
        })
        .collect();

    let out = collector_dir.join("out");
    let logs = |agents: &[Flumen], collector: &Flumen| {
        let mut text = format!("collector log:\n{}", collector.log_text());
        for a in agents {
            text.push_str(&format!("\nedge log:\n{}", a.log_text()));
        }
        text
    };
    // The stream flows: some of the samples arrived. Then the files start growing, 100 lines per
    // edge every 40 ms.
    wait_slowly(
        || count_lines(&out) >= 1000,
        || format!("{} lines arrived; {}", count_lines(&out), logs(&agents, &collector)),
    );
    let appenders: Vec<_> = edges
        .iter()
        .map(|e| {
            let (path, written, lines) = (e.dir.join("in/app.log"), e.written.clone(), e.lines.clone());
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                let mut next = written.load(Ordering::SeqCst);
                while next < lines.len() {
                    let end = (next + 100).min(lines.len());
                    file.write_all(&joined(&lines[next..end])).unwrap();
                    next = end;
                    written.store(next, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(40));
                }
            })
        })
        .collect();
    let written = || edges.iter().map(|e| e.written.load(Ordering::SeqCst)).sum::<usize>();

    // Mid-stream: appended lines are arriving, and the files are still growing.
    let first_half = edges.iter().map(|e| e.lines.len() - APPENDED).sum::<usize>() + 3000;
    wait_slowly(
        || count_lines(&out) >= first_half,
        || format!("{} lines arrived; {}", count_lines(&out), logs(&agents, &collector)),
    );
    collector.kill();
    let (arrived_before_kill, written_at_kill) = (count_lines(&out), written());
    assert!(arrived_before_kill < total, "the kill came after the whole stream arrived");
    assert!(written_at_kill < total, "the files were complete before the kill");

    // The edges keep reading the growing files into their outboxes and retry their posts.
    for a in &agents {
        wait_for(
            DEADLINE,
            || a.log_text().contains("post failed; retrying"),
            || format!("an edge never saw the collector down; its log:\n{}", a.log_text()),
        );
    }
    let more = (written_at_kill + 1500).min(total);
    wait_slowly(|| written() >= more, || format!("{} lines written", written()));
    let collector = start_listening(&collector_dir, "collector", &collector_topology, addr(port));
    for a in appenders {
        a.join().expect("appender");
    }

    // Every line of every edge, in its edge's buckets.
    let per_edge = |e: &EdgeInput| output_lines(&out.join(&e.name)).0;
    wait_slowly(
        || count_lines(&out) >= total && edges.iter().all(|e| compare(&per_edge(e), &e.lines, &e.name).0 == 0),
        || {
            let missing: Vec<usize> = edges.iter().map(|e| compare(&per_edge(e), &e.lines, &e.name).0).collect();
            format!("lines missing per edge: {missing:?}; {}", logs(&agents, &collector))
        },
    );
    for a in agents.drain(..) {
        assert_eq!(a.terminate(DEADLINE), Some(0), "an edge stops gracefully");
    }
    assert_eq!(collector.terminate(DEADLINE), Some(0), "the collector stops gracefully");

    // After the graceful stop no file is in use: the killed collector's were recovered on restart.
    let all = files_under(&out);
    let orphans: Vec<&PathBuf> = all.iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(orphans.is_empty(), "in-use files left after the graceful stop: {orphans:?}");

    // Buckets: out/<edge>/<yyyy-mm-dd>/<HH> of the time the edge read the line (UTC).
    let hours = |ms: u128| {
        let t = jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
        format!("{}/{:02}", t.strftime("%Y-%m-%d"), t.hour())
    };
    let (first_bucket, last_bucket) = (hours(started_ms), hours(now_ms()));
    for p in &all {
        let rel = p.parent().unwrap().strip_prefix(&out).unwrap().to_string_lossy().into_owned();
        let (edge, bucket) = rel.split_once('/').unwrap_or_else(|| panic!("{rel} is no edge bucket"));
        assert!(edges.iter().any(|e| e.name == edge), "{rel}");
        assert!(
            first_bucket.as_str() <= bucket && bucket <= last_bucket.as_str(),
            "{rel} is outside {first_bucket}..{last_bucket}"
        );
    }

    let mut duplicates = 0;
    for e in &edges {
        let (lines, _) = output_lines(&out.join(&e.name));
        let (missing, dup) = compare(&lines, &e.lines, &e.name);
        assert_eq!(missing, 0, "{}: lines lost", e.name);
        eprintln!("{}: {} lines sent, {} in its buckets, {dup} duplicates", e.name, e.lines.len(), lines.len());
        duplicates += dup;
    }
    let (_, cut) = output_lines(&out);
    eprintln!(
        "tiers: 3 edges, {total} lines, {arrived_before_kill} arrived and {written_at_kill} written before the \
         kill, {} files ({cut} with a cut last line), {duplicates} duplicates",
        all.len(),
    );
    // At most what was in flight when the collector died: one post of 500 per edge whose answer
    // was lost, and one batch of 500 the Hdfs sink wrote but had not committed.
    assert!(duplicates <= 3 * 500 + 500, "{duplicates} duplicates");
}

/// Streams numbered Loghub lines into a `Netcat` source, 100 every 20 ms, until stopped; keeps
/// what it sent.
struct Streamer {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Streamer {
    fn start(flumen: &mut Flumen, listen: SocketAddr) -> Streamer {
        let mut stream = flumen.connect(listen, DEADLINE);
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let supply = numbered_lines(1_000_000);
                for chunk in supply.chunks(100) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    stream.write_all(&joined(chunk)).expect("the agent reads");
                    sent.lock().unwrap().extend_from_slice(chunk);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Streamer { stop, sent, thread }
    }

    fn sent(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("streamer");
        Arc::try_unwrap(self.sent).unwrap().into_inner().unwrap()
    }
}

/// The highest line number (`"<i> <Loghub line>"`) among the complete lines under `dir`.
fn highest(dir: &Path) -> Option<usize> {
    output_lines(dir).0.iter().filter_map(|l| l.split(' ').next()?.parse().ok()).max()
}

/// A `Failover` group of an `Http` sink (posting to a second agent, the endpoint) and a `FileRoll`
/// backup: while the endpoint is SIGKILLed the backup takes the stream; once the endpoint is
/// started again the `Http` sink takes over after its penalty (at most `max_penalty`). The outputs
/// together hold every line sent.
#[test]
fn failover_goes_to_the_backup_while_the_http_endpoint_is_down_and_back_once_it_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (endpoint_port, front_port) = (free_port(), free_port());
    let endpoint_dir = tmp.path().join("endpoint");
    let endpoint_topology = format!(
        r#"Topology(
    agent: "endpoint",
    sources: {{ "in": (kind: Http(bind: "127.0.0.1:{endpoint_port}", format: Events), channels: ["disk"]) }},
    channels: {{ "disk": RocksDb(dir: "channel", capacity: 1000000, transaction_capacity: 1000, sync: true) }},
    sinks: {{ "file": (kind: FileRoll(dir: "out", roll_interval: "0s"), channel: "disk", batch_size: 1000) }},
)"#
    );
    let endpoint = start_listening(&endpoint_dir, "endpoint", &endpoint_topology, addr(endpoint_port));
    let front_dir = tmp.path().join("front");
    let mut front = start(
        &front_dir,
        "front",
        &format!(
            r#"Topology(
    agent: "front",
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{front_port}", max_line_length: 65536, ack_every_event: false), channels: ["c1"]),
    }},
    channels: {{ "c1": Memory(capacity: 200000, transaction_capacity: 1000) }},
    sinks: {{
        "primary": (
            kind: Http(url: "http://127.0.0.1:{endpoint_port}/", format: Events, timeout: "5s", max_backoff: "300ms"),
            channel: "c1",
            batch_size: 200,
        ),
        "backup": (kind: FileRoll(dir: "backup", roll_interval: "0s"), channel: "c1", batch_size: 200),
    }},
    sink_groups: {{
        "g1": (sinks: ["primary", "backup"], processor: Failover(priority: {{ "primary": 10, "backup": 5 }}, max_penalty: "2s")),
    }},
)"#
        ),
    );
    let (primary_out, backup_out) = (endpoint_dir.join("out"), front_dir.join("backup"));
    let streamer = Streamer::start(&mut front, addr(front_port));
    let logs = |front: &Flumen, endpoint: &Flumen| {
        format!("front log:\n{}\nendpoint log:\n{}", front.log_text(), endpoint.log_text())
    };

    // While the endpoint is up, every batch goes to it.
    wait_slowly(|| count_lines(&primary_out) >= 3000, || logs(&front, &endpoint));
    assert_eq!(count_lines(&backup_out), 0, "the backup got lines while the primary worked");

    // The endpoint dies: the backup takes the stream.
    endpoint.kill();
    let killed_at = streamer.sent();
    let primary_at_kill = count_lines(&primary_out);
    wait_slowly(
        || count_lines(&backup_out) >= 3000,
        || format!("the backup holds {} lines; front log:\n{}", count_lines(&backup_out), front.log_text()),
    );
    assert!(
        highest(&backup_out).is_some_and(|h| h >= killed_at),
        "the backup holds lines sent after the endpoint died"
    );
    assert_eq!(count_lines(&primary_out), primary_at_kill, "nothing reaches a dead endpoint");

    // The endpoint is back: once its penalty is over the Http sink takes the stream again.
    let endpoint = start_listening(&endpoint_dir, "endpoint", &endpoint_topology, addr(endpoint_port));
    let (restarted_at, restarted) = (streamer.sent(), Instant::now());
    wait_slowly(
        || highest(&primary_out).is_some_and(|h| h >= restarted_at),
        || format!("no line sent after the restart reached the endpoint; {}", logs(&front, &endpoint)),
    );
    let back_after = restarted.elapsed();
    let backup_at_switch = count_lines(&backup_out);
    let switched_at = streamer.sent();
    wait_slowly(
        || highest(&primary_out).is_some_and(|h| h >= switched_at + 2000),
        || format!("the endpoint stopped getting lines; {}", logs(&front, &endpoint)),
    );
    assert_eq!(count_lines(&backup_out), backup_at_switch, "the primary takes everything again");

    let sent = streamer.finish();
    let union = || {
        let mut lines = output_lines(&primary_out).0;
        lines.extend(output_lines(&backup_out).0);
        lines
    };
    wait_slowly(
        || compare(&union(), &sent, "the outputs").0 == 0,
        || format!("{} lines missing; {}", compare(&union(), &sent, "the outputs").0, logs(&front, &endpoint)),
    );
    assert_eq!(front.terminate(DEADLINE), Some(0));
    assert_eq!(endpoint.terminate(DEADLINE), Some(0));
    let (missing, duplicates) = compare(&union(), &sent, "the outputs");
    assert_eq!(missing, 0, "lines lost");
    eprintln!(
        "failover: {} lines sent, {} to the endpoint, {} to the backup, {duplicates} duplicates; the endpoint \
         got new lines {back_after:?} after its restart",
        sent.len(),
        count_lines(&primary_out),
        count_lines(&backup_out)
    );
    // At most the batch in flight when the endpoint died (posted again to the backup) and the
    // batch its FileRoll sink wrote but had not committed (written again after its restart).
    assert!(duplicates <= 200 + 1000, "{duplicates} duplicates");
}
