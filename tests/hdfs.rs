//! The `Hdfs` sink in the real `flumen` binary: Loghub lines sent over TCP to a `Netcat` source,
//! their `timestamp` and `host` headers taken from the line by a `RegexExtractor`, written to
//! bucket files under path escapes; each roll trigger, the in-use rename, gzip and zstd output,
//! and the rejection of header values that would leave the base directory.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A counter of `component` (`"SINK.k1"`) from the agent's `GET /metrics`.
fn counter(monitoring: SocketAddr, component: &str, name: &str) -> Option<u64> {
    metric(monitoring, component, name)
}

fn in_use(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".tmp")
}

/// The lines of the closed (renamed) files under `dir`.
fn closed_lines(dir: &Path) -> Vec<String> {
    files_under(dir).iter().filter(|p| !in_use(p)).flat_map(|p| lines_of(&std::fs::read(p).unwrap())).collect()
}

/// What a reader gets from a compressed file, complete or still being written (up to the last
/// sync point), and whether the stream was complete.
fn decompressed(path: &Path) -> (Vec<String>, bool) {
    let file = std::fs::File::open(path).unwrap();
    let name = path.to_string_lossy().replace(".tmp", "");
    let mut reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        assert!(name.ends_with(".zst"), "{name}");
        Box::new(zstd::stream::read::Decoder::new(file).unwrap())
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = loop {
        match reader.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (lines_of(&out), complete)
}

/// Milliseconds since the epoch of an HDFS_2k.log line (`yyMMdd HHmmss ...`, UTC).
fn hdfs_line_ms(line: &str) -> i64 {
    let d = line.as_bytes();
    let text = format!(
        "20{}-{}-{}T{}:{}:{}Z",
        &line[0..2],
        &line[2..4],
        &line[4..6],
        &line[7..9],
        &line[9..11],
        &line[11..13]
    );
    assert_eq!(d[6], b' ', "{line}");
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn start(tmp: &Path, topology: &str) -> Flumen {
    let file = tmp.join("hdfs.ron");
    write_file(&file, topology);
    Flumen::start(&["run", "--quiet", file.to_str().unwrap()], &tmp.join("flumen.log"))
}

fn send(flumen: &mut Flumen, port: u16, lines: &[String]) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = flumen.connect(addr, WAIT);
    stream.write_all(&joined(lines)).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
}

#[test]
fn escapes_and_rounding_bucket_lines_and_unsafe_hosts_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let hdfs = std::fs::read(loghub_dir().join("HDFS_2k.log")).unwrap();
    let mut input = Vec::new();
    let mut rejected = Vec::new();
    for (i, line) in lines_of(&hdfs).into_iter().enumerate() {
        let host = match i % 500 {
            7 => "../x".to_string(),
            8 => "a/b".to_string(),
            _ => format!("dn-{}", i % 3),
        };
        let framed = format!("{} {host} {line}", hdfs_line_ms(&line));
        if host.contains('/') {
            rejected.push(framed.clone());
        }
        input.push(framed);
    }
    let mut flumen = start(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "hdfs-escapes",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false),
            channels: ["c1"],
            interceptors: [RegexExtractor(regex: "^([0-9]+) (\\S+) ", headers: ["timestamp", "host"])],
            batch_size: 300,
        ),
    }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{
        "k1": (
            kind: Hdfs(
                path: "out/%{{host}}/%Y-%m-%d/%H%M",
                file_suffix: ".log",
                round: true,
                round_value: 10,
                round_unit: Minute,
                time_zone: Some("UTC"),
                roll_count: 100,
                roll_size: 0,
                roll_interval: "0s",
            ),
            channel: "c1",
            batch_size: 250,
        ),
    }},
)"#
        ),
    );
    send(&mut flumen, port, &input);
    let out = tmp.path().join("out");
    wait_for(
        WAIT,
        || output_lines(&out).0.len() >= input.len(),
        || format!("{} of {} lines; log:\n{}", output_lines(&out).0.len(), input.len(), flumen.log_text()),
    );
    assert!(files_under(&out).iter().any(|p| in_use(p)), "buckets with fewer than 100 lines are still open");
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    assert_eq!(counter(monitoring, "SINK.k1", "EventRejectedCount"), Some(rejected.len() as u64));
    assert_eq!(flumen.terminate(WAIT), Some(0));

    let all = files_under(&out);
    assert!(all.iter().all(|p| !in_use(p)), "every file renamed on shutdown: {all:?}");
    let mut seen = Vec::new();
    for file in &all {
        let lines = lines_of(&std::fs::read(file).unwrap());
        assert!(lines.len() <= 100, "{file:?} holds {} lines", lines.len());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("FlumeData.") && name.ends_with(".log"), "{name}");
        let bucket = file.parent().unwrap().strip_prefix(&out).unwrap().to_string_lossy().into_owned();
        for line in &lines {
            let mut parts = line.splitn(3, ' ');
            let (ms, host) = (parts.next().unwrap(), parts.next().unwrap());
            let want = if host.contains('/') {
                "rejected".to_string()
            } else {
                let t =
                    jiff::Timestamp::from_millisecond(ms.parse().unwrap()).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
                format!("{host}/{}/{:02}{:02}", t.strftime("%Y-%m-%d"), t.hour(), t.minute() / 10 * 10)
            };
            assert_eq!(bucket, want, "{line}");
        }
        seen.extend(lines);
    }
    assert!(multiset(seen) == multiset(input.iter().cloned()), "every line once");
    let in_rejected = closed_lines(&out.join("rejected"));
    assert_eq!(multiset(in_rejected), multiset(rejected));
    let top: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!tmp.path().join("x").exists() && !out.join("a").exists(), "nothing escaped: {top:?}");
}

#[test]
fn each_trigger_rolls_while_the_agent_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut flumen = start(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "hdfs-rolls",
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false),
            channels: ["count", "size", "interval", "idle"],
            interceptors: [Timestamp()],
            batch_size: 100,
        ),
    }},
    channels: {{
        "count": Memory(capacity: 10000, transaction_capacity: 1000),
        "size": Memory(capacity: 10000, transaction_capacity: 1000),
        "interval": Memory(capacity: 10000, transaction_capacity: 1000),
        "idle": Memory(capacity: 10000, transaction_capacity: 1000),
    }},
    sinks: {{
        "k-count": (kind: Hdfs(path: "out/count", roll_count: 50, roll_size: 0, roll_interval: "0s"), channel: "count"),
        "k-size": (kind: Hdfs(path: "out/size", roll_count: 0, roll_size: 8192, roll_interval: "0s"), channel: "size"),
        "k-interval": (
            kind: Hdfs(path: "out/interval/%Y", roll_count: 0, roll_size: 0, roll_interval: "1s"),
            channel: "interval",
        ),
        "k-idle": (
            kind: Hdfs(path: "out/idle", roll_count: 0, roll_size: 0, roll_interval: "0s", idle_timeout: "1s"),
            channel: "idle",
        ),
    }},
)"#
        ),
    );
    let input = numbered_lines(500);
    send(&mut flumen, port, &input);
    let out = tmp.path().join("out");
    let want = multiset(input.iter().cloned());

    // Count: ten files of 50 lines, each renamed as soon as it is full.
    let count = out.join("count");
    wait_for(
        WAIT,
        || closed_lines(&count).len() == input.len(),
        || format!("count: {:?}; log:\n{}", files_under(&count), flumen.log_text()),
    );
    let count_files = files_under(&count);
    assert_eq!(count_files.len(), 10, "{count_files:?}");
    assert!(count_files.iter().all(|p| lines_of(&std::fs::read(p).unwrap()).len() == 50));

    // Size: every renamed file reached 8192 bytes with its last line, not before.
    let size = out.join("size");
    wait_for(
        WAIT,
        || output_lines(&size).0.len() == input.len(),
        || format!("size: {:?}; log:\n{}", files_under(&size), flumen.log_text()),
    );
    let size_files = files_under(&size);
    assert!(size_files.iter().filter(|p| in_use(p)).count() <= 1, "{size_files:?}");
    let closed: Vec<&PathBuf> = size_files.iter().filter(|p| !in_use(p)).collect();
    assert!(closed.len() >= 3, "{size_files:?}");
    for p in closed {
        let bytes = std::fs::read(p).unwrap();
        let last = lines_of(&bytes).last().unwrap().len() as u64 + 1;
        let len = bytes.len() as u64;
        assert!(len >= 8192 && len - last < 8192, "{p:?}: {len} bytes, last line {last}");
    }

    // Interval and idle time: with count and size off, only time renames the files.
    for sink in ["interval", "idle"] {
        let dir = out.join(sink);
        wait_for(
            WAIT,
            || closed_lines(&dir).len() == input.len() && files_under(&dir).iter().all(|p| !in_use(p)),
            || format!("{sink}: {:?}; log:\n{}", files_under(&dir), flumen.log_text()),
        );
        assert!(multiset(closed_lines(&dir)) == want, "{sink}");
    }
    assert_eq!(flumen.terminate(WAIT), Some(0));
    for sink in ["count", "size", "interval", "idle"] {
        let dir = out.join(sink);
        assert!(files_under(&dir).iter().all(|p| !in_use(p)), "{sink}: {:?}", files_under(&dir));
        assert!(multiset(closed_lines(&dir)) == want, "{sink}: every line once");
    }
}

#[test]
fn gzip_and_zstd_files_decompress_to_exactly_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let mut flumen = start(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "hdfs-compressed",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false),
            channels: ["gz", "zst"],
            batch_size: 500,
        ),
    }},
    channels: {{
        "gz": Memory(capacity: 20000, transaction_capacity: 1000),
        "zst": Memory(capacity: 20000, transaction_capacity: 1000),
    }},
    sinks: {{
        "k-gz": (
            kind: Hdfs(path: "out/gz", format: Gzip, file_suffix: ".log", roll_count: 3000, roll_size: 0, roll_interval: "0s"),
            channel: "gz",
        ),
        "k-zst": (
            kind: Hdfs(path: "out/zst", format: Zstd, roll_count: 3000, roll_size: 0, roll_interval: "0s"),
            channel: "zst",
        ),
    }},
)"#
        ),
    );
    let input = loghub_lines();
    send(&mut flumen, port, &input);
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let want = multiset(input.iter().cloned());
    for (sink, dir) in [("SINK.k-gz", "gz"), ("SINK.k-zst", "zst")] {
        wait_for(
            WAIT,
            || counter(monitoring, sink, "EventDrainSuccessCount") == Some(input.len() as u64),
            || {
                format!(
                    "{sink}: {:?}; log:\n{}",
                    counter(monitoring, sink, "EventDrainSuccessCount"),
                    flumen.log_text()
                )
            },
        );
        // Committed means readable: the open file decompresses up to its last sync point.
        let dir = tmp.path().join("out").join(dir);
        let all = files_under(&dir);
        assert!(all.iter().any(|p| in_use(p)), "{all:?}");
        let lines: Vec<String> = all.iter().flat_map(|p| decompressed(p).0).collect();
        assert!(multiset(lines) == want, "{sink}: committed lines readable before the roll");
    }
    assert_eq!(flumen.terminate(WAIT), Some(0));
    for (dir, ext) in [("gz", ".log.gz"), ("zst", ".zst")] {
        let all = files_under(&tmp.path().join("out").join(dir));
        assert_eq!(all.len(), input.len().div_ceil(3000), "{all:?}");
        let mut lines = Vec::new();
        for p in &all {
            assert!(p.to_string_lossy().ends_with(ext), "{p:?}");
            let (l, complete) = decompressed(p);
            assert!(complete, "{p:?} is a complete stream");
            lines.extend(l);
        }
        assert!(multiset(lines) == want, "{dir}: exactly the input lines");
    }
}

/// Posts `events` (header maps and bodies) to an `Http` source as Flume JSON with real `curl`.
fn post_flume_json(dir: &Path, port: u16, events: &[(String, String)]) {
    let json: Vec<serde_json::Value> =
        events.iter().map(|(host, body)| serde_json::json!({"headers": {"host": host}, "body": body})).collect();
    let file = dir.join("post.json");
    std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--retry", "20", "--retry-connrefused"])
        .args(["--retry-delay", "1", "--data-binary", &format!("@{}", file.display())])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every HDFS_2k line with host `dn-<i % 3>`, but three poison events: a host of 300 bytes (over
/// a file name's 255) and hosts holding `\n` and `\r`.
fn poisoned_events() -> (Vec<(String, String)>, Vec<String>) {
    let mut poison = Vec::new();
    let events = lines_of(&std::fs::read(loghub_dir().join("HDFS_2k.log")).unwrap())
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let host = match i {
                100 => "h".repeat(300),
                900 => "dn-1\nx".to_string(),
                1500 => "dn-2\rx".to_string(),
                _ => format!("dn-{}", i % 3),
            };
            if !host.starts_with("dn-") || host.len() > 4 {
                poison.push(line.clone());
            }
            (host, line)
        })
        .collect();
    (events, poison)
}

fn poison_topology(port: u16, monitoring: u16, on_rejected: &str) -> String {
    format!(
        r#"Topology(
    agent: "hdfs-poison",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}"), channels: ["c1"]) }},
    channels: {{ "c1": Memory() }},
    sinks: {{ "k1": (kind: Hdfs(path: "out/%{{host}}", roll_interval: "1s", on_rejected: {on_rejected}), channel: "c1", batch_size: 100) }},
)"#
    )
}

#[test]
fn a_poison_header_is_a_rejected_event_not_a_stuck_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let (events, poison) = poisoned_events();
    let flumen = start(tmp.path(), &poison_topology(port, monitoring, "Bucket"));
    post_flume_json(tmp.path(), port, &events);
    let out = tmp.path().join("out");
    wait_for(
        WAIT,
        || closed_lines(&out).len() >= events.len(),
        || {
            format!(
                "{} of {} lines in closed files; log:\n{}",
                closed_lines(&out).len(),
                events.len(),
                flumen.log_text()
            )
        },
    );
    let all: Vec<String> = events.iter().map(|(_, b)| b.clone()).collect();
    assert!(multiset(closed_lines(&out)) == multiset(all), "the output holds other lines than were posted");
    assert!(multiset(closed_lines(&out.join("rejected"))) == multiset(poison.clone()), "the rejected bucket");
    let m = addr_of(monitoring);
    assert_eq!(counter(m, "SINK.k1", "EventRejectedCount"), Some(3));
    assert_eq!(counter(m, "SINK.k1", "RestartCount"), Some(0), "a rejected event does not restart the sink");
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

/// The negative control: the same events with `on_rejected: Fail` block the sink at the first
/// poison event (its batch fails again and again), so the lines behind it never arrive.
#[test]
fn negative_control_a_poison_event_that_fails_its_batch_blocks_the_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let (events, _) = poisoned_events();
    let flumen = start(tmp.path(), &poison_topology(port, monitoring, "Fail"));
    post_flume_json(tmp.path(), port, &events);
    let m = addr_of(monitoring);
    wait_for(
        WAIT,
        || counter(m, "SINK.k1", "RestartCount").unwrap_or(0) >= 3,
        || format!("the sink did not keep failing; log:\n{}", flumen.log_text()),
    );
    let delivered = counter(m, "SINK.k1", "EventDrainSuccessCount").unwrap_or(0);
    assert_eq!(delivered, 100, "only the batch before the first poison event gets through");
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

fn addr_of(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}
