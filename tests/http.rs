//! The `Http` source and sink of the real `flumen` binary, driven by real clients: `curl` posting
//! Loghub lines as Flume JSON, NDJSON and plain text; refused requests (413, 400, 401); a flood
//! into a small channel whose sink is down (503s, then every line delivered); and two agents in
//! tiers (edge `Http` sink -> collector `Http` source) with the collector killed mid-stream; a
//! server (Python's `http.server`) answering redirects, which are never taken for a delivery.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(120);

/// Starts `flumen run` on the topology `text` written into `dir`, and waits until `addr` accepts.
fn start(dir: &Path, name: &str, text: &str, addr: SocketAddr) -> Flumen {
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")));
    drop(flumen.connect(addr, DEADLINE));
    flumen
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Waits until the complete lines under `dir` hold at least `n` lines.
fn wait_lines(dir: &Path, n: usize, flumen: &Flumen) {
    wait_for(
        DEADLINE,
        || output_lines(dir).0.len() >= n,
        || format!("{} holds {} of {n} lines; log:\n{}", dir.display(), output_lines(dir).0.len(), flumen.log_text()),
    );
}

/// A source counter from the agent's `GET /metrics`.
fn source_counter(monitoring: u16, source: &str, counter: &str) -> u64 {
    let (code, body) = curl(&[&format!("http://127.0.0.1:{monitoring}/metrics")]);
    assert_eq!(code, 200, "GET /metrics: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("metrics are JSON");
    // Flume's JSON reporting writes every value as a string.
    json[format!("SOURCE.{source}")][counter]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {counter} in {body}"))
}

/// The lines of one Loghub sample.
fn sample(name: &str) -> Vec<String> {
    lines_of(&std::fs::read(loghub_dir().join(name)).expect("read Loghub sample"))
}

#[test]
fn curl_posts_flume_json_ndjson_and_plain_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let flumen = start(
        tmp.path(),
        "http",
        &format!(
            r#"Topology(
    agent: "http",
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}", path: "/ingest"), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out"), channel: "c1") }},
)"#
        ),
        addr(port),
    );
    let url = format!("http://127.0.0.1:{port}/ingest");

    // Flume's JSONHandler format: a JSON array of {headers, body}.
    let apache = sample("Apache_2k.log");
    let json: Vec<serde_json::Value> =
        apache.iter().map(|l| serde_json::json!({"headers": {"sample": "apache"}, "body": l})).collect();
    let json_file = tmp.path().join("apache.json");
    std::fs::write(&json_file, serde_json::to_vec(&json).unwrap()).unwrap();
    let (code, answer) =
        curl(&["-H", "Content-Type: application/json", "--data-binary", &format!("@{}", json_file.display()), &url]);
    assert_eq!((code, answer.trim()), (200, r#"{"accepted":2000}"#));

    // NDJSON: one {headers, body} object per line.
    let ssh = sample("OpenSSH_2k.log");
    let mut ndjson = String::new();
    for l in &ssh {
        ndjson.push_str(&serde_json::json!({"body": l}).to_string());
        ndjson.push('\n');
    }
    let nd_file = tmp.path().join("ssh.ndjson");
    std::fs::write(&nd_file, ndjson).unwrap();
    let (code, answer) =
        curl(&["-H", "Content-Type: application/x-ndjson", "--data-binary", &format!("@{}", nd_file.display()), &url]);
    assert_eq!((code, answer.trim()), (200, r#"{"accepted":2000}"#));

    // Plain text, one event per line: the Loghub file as it is.
    let linux = loghub_dir().join("Linux_2k.log");
    let (code, answer) =
        curl(&["-H", "Content-Type: text/plain", "--data-binary", &format!("@{}", linux.display()), &url]);
    assert_eq!((code, answer.trim()), (200, r#"{"accepted":2000}"#));

    // Other paths are not served; other methods are not allowed.
    assert_eq!(curl(&["--data-binary", "x", &format!("http://127.0.0.1:{port}/other")]).0, 404);
    assert_eq!(curl(&[&url]).0, 405);

    let expected: Vec<String> = apache.into_iter().chain(ssh).chain(sample("Linux_2k.log")).collect();
    let out = tmp.path().join("out");
    wait_lines(&out, expected.len(), &flumen);
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let (lines, partial) = output_lines(&out);
    assert_eq!(partial, 0);
    assert!(multiset(lines) == multiset(expected), "the output differs from the posted lines");
}

#[test]
fn oversize_malformed_and_unauthorized_posts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let flumen = start(
        tmp.path(),
        "http",
        &format!(
            r#"Topology(
    agent: "guarded",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{
        "r1": (
            kind: Http(bind: "127.0.0.1:{port}", max_body_bytes: 65536, format: Lines, bearer_token: Some("s3cret")),
            channels: ["c1"],
        ),
    }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out"), channel: "c1") }},
)"#
        ),
        addr(port),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let token = "Authorization: Bearer s3cret";
    let hdfs = loghub_dir().join("HDFS_2k.log");
    let some = sample("Zookeeper_2k.log")[..50].join("\n");

    // No token, a wrong token: 401, whatever the body.
    assert_eq!(curl(&["--data-binary", &some, &url]).0, 401);
    assert_eq!(curl(&["-H", "Authorization: Bearer guess", "--data-binary", &some, &url]).0, 401);

    // A body over max_body_bytes (HDFS_2k.log is about 280 kB): 413.
    assert!(std::fs::metadata(&hdfs).unwrap().len() > 65536);
    let (code, answer) = curl(&["-H", token, "--data-binary", &format!("@{}", hdfs.display()), &url]);
    assert_eq!(code, 413, "{answer}");
    // The same without Content-Length (chunked): 413 once the limit is passed.
    let (code, _) = curl(&[
        "-H",
        token,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", hdfs.display()),
        &url,
    ]);
    assert_eq!(code, 413);

    // Malformed JSON: 400 with the parse error, counted.
    assert_eq!(source_counter(monitoring, "r1", "EventMalformedCount"), 0);
    let broken = r#"[{"headers": {"k": "v"}, "body": "2015-07-29 17:41:44,747 - INFO  [QuorumPeer]"#;
    let (code, answer) = curl(&["-H", token, "-H", "Content-Type: application/json", "--data-binary", broken, &url]);
    assert_eq!(code, 400);
    assert!(answer.starts_with("malformed body: JSON: EOF while parsing"), "{answer}");
    let (code, answer) = curl(&[
        "-H",
        token,
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        "{\"body\": \"a\"}\nnot json\n",
        &url,
    ]);
    assert_eq!(code, 400);
    assert!(answer.starts_with("malformed body: NDJSON line 2:"), "{answer}");
    assert_eq!(source_counter(monitoring, "r1", "EventMalformedCount"), 2);

    // With the token, a body within the limit and of the configured format (curl's default
    // Content-Type names none): 200. Only these lines are in the output.
    let (code, answer) = curl(&["-H", token, "--data-binary", &some, &url]);
    assert_eq!((code, answer.trim()), (200, r#"{"accepted":50}"#));
    let out = tmp.path().join("out");
    wait_lines(&out, 50, &flumen);
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    assert_eq!(output_lines(&out).0, sample("Zookeeper_2k.log")[..50].to_vec());
}

/// Posts `lines` in requests of `per_request` lines from `clients` concurrent connections,
/// retrying every 503 until it is accepted; counts the 503s in `unavailable`.
fn flood(url: String, lines: Arc<Vec<String>>, per_request: usize, clients: usize, unavailable: Arc<AtomicU64>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .use_preconfigured_tls(flumen::tls::client::no_tls_config())
            .build()
            .expect("a client");
        let requests: Vec<Vec<u8>> = lines.chunks(per_request).map(joined).collect();
        let requests = Arc::new(requests);
        let tasks = (0..clients).map(|c| {
            let (client, requests, url, unavailable) =
                (client.clone(), requests.clone(), url.clone(), unavailable.clone());
            async move {
                for body in requests.iter().skip(c).step_by(clients) {
                    loop {
                        let resp = client
                            .post(&url)
                            .header("Content-Type", "text/plain")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("the source answers");
                        match resp.status().as_u16() {
                            200 => break,
                            503 => {
                                assert!(resp.headers().contains_key("retry-after"), "503 without Retry-After");
                                unavailable.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            other => panic!("unexpected answer {other}: {:?}", resp.text().await),
                        }
                    }
                }
            }
        });
        futures_util::future::join_all(tasks).await;
    });
}

/// The lines of `lines` that are missing from `output`, and how many extra copies it holds.
fn compare(output: &[String], lines: &[String]) -> (usize, usize) {
    let got = multiset(output.iter().cloned());
    let want = multiset(lines.iter().cloned());
    let missing = want.keys().filter(|l| !got.contains_key(*l)).count();
    let unexpected = got.keys().filter(|l| !want.contains_key(*l)).count();
    assert_eq!(unexpected, 0, "the output holds lines that were never sent");
    let duplicates = got.iter().map(|(l, n)| n.saturating_sub(want.get(l).copied().unwrap_or(0))).sum();
    (missing, duplicates)
}

#[test]
fn a_flood_into_a_full_channel_gets_503s_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (front_port, back_port) = (free_port(), free_port());
    // About 100 MB of unique Loghub lines.
    let mut lines = Vec::new();
    let mut bytes = 0;
    let base = loghub_lines();
    while bytes < 100_000_000 {
        let line = format!("{} {}", lines.len(), base[lines.len() % base.len()]);
        bytes += line.len() + 1;
        lines.push(line);
    }
    let lines = Arc::new(lines);

    // The front agent: a small channel drained by an Http sink whose server is not up yet.
    let front = start(
        tmp.path(),
        "front",
        &format!(
            r#"Topology(
    agent: "front",
    sources: {{
        "in": (kind: Http(bind: "127.0.0.1:{front_port}", put_timeout: "200ms"), channels: ["small"], batch_size: 500),
    }},
    channels: {{ "small": Memory(capacity: 2000, transaction_capacity: 500, keep_alive: "100ms") }},
    sinks: {{
        "out": (
            kind: Http(url: "http://127.0.0.1:{back_port}/", format: Events, max_backoff: "500ms"),
            channel: "small",
            batch_size: 500,
        ),
    }},
)"#
        ),
        addr(front_port),
    );
    let unavailable = Arc::new(AtomicU64::new(0));
    let client = {
        let (url, lines, unavailable) = (format!("http://127.0.0.1:{front_port}/"), lines.clone(), unavailable.clone());
        std::thread::spawn(move || flood(url, lines, 500, 4, unavailable))
    };
    // The channel fills and stays full: posts are answered 503 until the back agent comes up.
    wait_for(DEADLINE, || unavailable.load(Ordering::Relaxed) >= 20, || format!("503s so far: {unavailable:?}"));
    let back = start(
        tmp.path(),
        "back",
        &format!(
            r#"Topology(
    agent: "back",
    sources: {{ "in": (kind: Http(bind: "127.0.0.1:{back_port}"), channels: ["c"]) }},
    channels: {{ "c": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "file": (kind: FileRoll(dir: "out", roll_interval: "0s"), channel: "c") }},
)"#
        ),
        addr(back_port),
    );
    client.join().expect("the flood client succeeded");
    let out = tmp.path().join("out");
    wait_lines(&out, lines.len(), &back);
    assert_eq!(front.terminate(DEADLINE), Some(0));
    assert_eq!(back.terminate(DEADLINE), Some(0));
    let (output, partial) = output_lines(&out);
    assert_eq!(partial, 0);
    let (missing, duplicates) = compare(&output, &lines);
    eprintln!(
        "flood: {} lines ({bytes} bytes), {} answers 503, {duplicates} duplicates delivered",
        lines.len(),
        unavailable.load(Ordering::Relaxed)
    );
    assert_eq!(missing, 0, "lines lost");
}

#[test]
fn tiers_deliver_every_line_when_the_collector_is_killed_mid_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let lines = numbered_lines(120_000);
    let (first, second) = lines.split_at(60_000);
    let input = tmp.path().join("in/app.log");
    write_file(&input, &String::from_utf8(joined(first)).unwrap());

    let collector_topology = format!(
        r#"Topology(
    agent: "collector",
    sources: {{ "from-edge": (kind: Http(bind: "127.0.0.1:{port}", path: "/events", format: Events), channels: ["disk"]) }},
    channels: {{ "disk": RocksDb(dir: "collector/channel", capacity: 1000000, sync: true) }},
    sinks: {{ "file": (kind: FileRoll(dir: "out"), channel: "disk") }},
)"#
    );
    let collector = start(tmp.path(), "collector", &collector_topology, addr(port));
    let edge_topology = tmp.path().join("edge.ron");
    write_file(
        &edge_topology,
        &format!(
            r#"Topology(
    agent: "edge",
    sources: {{
        "tail": (
            kind: Taildir(filegroups: {{ "app": "in/*.log" }}, position_file: "edge/positions.json"),
            channels: ["outbox"],
        ),
    }},
    channels: {{ "outbox": RocksDb(dir: "edge/channel", capacity: 1000000, sync: true) }},
    sinks: {{
        "forward": (
            kind: Http(url: "http://127.0.0.1:{port}/events", timeout: "5s", max_backoff: "300ms"),
            channel: "outbox",
            batch_size: 500,
        ),
    }},
)"#
        ),
    );
    let edge = Flumen::start(&["run", "--quiet", edge_topology.to_str().unwrap()], &tmp.path().join("edge.log"));

    // Kill the collector once part of the stream arrived; the rest of the file is written while
    // it is down, and it is started again on the same directories.
    let out = tmp.path().join("out");
    wait_lines(&out, 5_000, &collector);
    collector.kill();
    let arrived_before_kill = output_lines(&out).0.len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &joined(second)))
        .expect("append the second half");
    wait_for(
        DEADLINE,
        || edge.log_text().contains("post failed; retrying"),
        || format!("the edge never saw the collector down; its log:\n{}", edge.log_text()),
    );
    let collector = start(tmp.path(), "collector", &collector_topology, addr(port));

    wait_for(
        DEADLINE,
        || compare(&output_lines(&out).0, &lines).0 == 0,
        || {
            format!(
                "{} lines missing; edge log:\n{}\ncollector log:\n{}",
                compare(&output_lines(&out).0, &lines).0,
                edge.log_text(),
                collector.log_text()
            )
        },
    );
    assert_eq!(edge.terminate(DEADLINE), Some(0));
    assert_eq!(collector.terminate(DEADLINE), Some(0));
    let (output, partial) = output_lines(&out);
    let (missing, duplicates) = compare(&output, &lines);
    eprintln!(
        "tiers: {} lines, {arrived_before_kill} written before the kill, {duplicates} duplicates, \
         {partial} line cut by the kill",
        lines.len()
    );
    assert_eq!(missing, 0, "lines lost");
}

#[test]
fn a_refused_batch_goes_to_the_dead_letter_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (front_port, back_port, monitoring) = (free_port(), free_port(), free_port());
    // The back agent wants a token the front's sink does not send: every post is answered 401.
    let back = start(
        tmp.path(),
        "back",
        &format!(
            r#"Topology(
    agent: "back",
    sources: {{ "in": (kind: Http(bind: "127.0.0.1:{back_port}", bearer_token: Some("s3cret")), channels: ["c"]) }},
    channels: {{ "c": Memory() }},
    sinks: {{ "file": (kind: FileRoll(dir: "back-out"), channel: "c") }},
)"#
        ),
        addr(back_port),
    );
    let front = start(
        tmp.path(),
        "front",
        &format!(
            r#"Topology(
    agent: "front",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{ "in": (kind: Http(bind: "127.0.0.1:{front_port}", format: Lines), channels: ["c"]) }},
    channels: {{ "c": Memory() }},
    sinks: {{
        "out": (
            kind: Http(
                url: "http://127.0.0.1:{back_port}/",
                format: Ndjson,
                on_client_error: DeadLetter(dir: "dead"),
                headers: {{ "X-Tier": "front" }},
            ),
            channel: "c",
        ),
    }},
)"#
        ),
        addr(front_port),
    );
    let hdfs = loghub_dir().join("HDFS_2k.log");
    let (code, _) =
        curl(&["--data-binary", &format!("@{}", hdfs.display()), &format!("http://127.0.0.1:{front_port}/")]);
    assert_eq!(code, 200);

    let dead = tmp.path().join("dead");
    let dead_bodies = || -> Vec<String> {
        output_lines(&dead)
            .0
            .iter()
            .map(|l| {
                let event: serde_json::Value = serde_json::from_str(l).expect("a dead letter holds NDJSON events");
                event["body"].as_str().expect("a text body").to_string()
            })
            .collect()
    };
    wait_for(
        DEADLINE,
        || dead_bodies().len() >= 2000,
        || format!("{} dead letters; log:\n{}", dead_bodies().len(), front.log_text()),
    );
    assert!(multiset(dead_bodies()) == multiset(sample("HDFS_2k.log")), "the dead letters hold other lines");
    let names: Vec<String> =
        std::fs::read_dir(&dead).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.ends_with("-401.ndjson")), "{names:?}");
    // The refusals are counted, and the batches committed (the channel is empty).
    let (code, body) = curl(&[&format!("http://127.0.0.1:{monitoring}/metrics")]);
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let counter = |component: &str, name: &str| json[component][name].as_str().unwrap_or("?").to_string();
    assert_eq!(counter("SINK.out", "ConnectionFailedCount"), names.len().to_string());
    assert_eq!(counter("SINK.out", "EventDrainSuccessCount"), "2000");
    assert_eq!(front.terminate(DEADLINE), Some(0));
    assert_eq!(back.terminate(DEADLINE), Some(0));
    assert!(output_lines(&tmp.path().join("back-out")).0.is_empty(), "the back agent accepted a refused post");
}

/// Runs `tests/peers/http_redirector.py` (Python's own HTTP server) on `port`: it answers the
/// first `redirects` posts with 301/302/303/307/308 to `/landing`, then 200, keeping the bodies
/// it accepted in `out`.
fn redirector(port: u16, redirects: usize, out: &Path) -> Redirector {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/http_redirector.py");
    let child = Command::new("python3")
        .arg(script)
        .args([&port.to_string(), &redirects.to_string(), out.to_str().unwrap()])
        .spawn()
        .expect("python3 runs (make test installs it)");
    let child = Redirector(child);
    wait_for(DEADLINE, || std::net::TcpStream::connect(addr(port)).is_ok(), || "the redirector never listened".into());
    child
}

/// The redirector's process, killed when dropped (also when a test fails).
struct Redirector(std::process::Child);

impl Drop for Redirector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The redirector's `redirected=R landing=L accepted=A` counts.
fn redirector_stats(port: u16) -> BTreeMap<String, u64> {
    let (code, body) = curl(&[&format!("http://127.0.0.1:{port}/stats")]);
    assert_eq!(code, 200, "{body}");
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a count")))
        .collect()
}

#[test]
fn a_redirect_is_never_a_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let (front_port, server_port, monitoring) = (free_port(), free_port(), free_port());
    let received = tmp.path().join("received.txt");

    // Negative control: a client that follows the redirect, as reqwest does by default, is told
    // 200 by the landing page while the server never keeps the body.
    let control = redirector(server_port, 1, &received);
    let (code, _) = curl(&["-L", "--data-binary", "one line\n", &format!("http://127.0.0.1:{server_port}/")]);
    assert_eq!(code, 200, "curl -L reaches the landing page");
    assert!(!received.exists(), "the redirected post was kept after all");
    assert_eq!(redirector_stats(server_port)["landing"], 1);
    drop(control);

    // The sink: ten redirects (two of each kind) are ten failed posts, retried; then the batch
    // goes through to the post that answers 200, whole.
    let server = redirector(server_port, 10, &received);
    let front = start(
        tmp.path(),
        "front",
        &format!(
            r#"Topology(
    agent: "front",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{ "in": (kind: Http(bind: "127.0.0.1:{front_port}", format: Lines), channels: ["c"]) }},
    channels: {{ "c": Memory() }},
    sinks: {{
        "out": (kind: Http(url: "http://127.0.0.1:{server_port}/", format: Lines, max_backoff: "100ms"), channel: "c", batch_size: 1000),
    }},
)"#
        ),
        addr(front_port),
    );
    let hdfs = loghub_dir().join("HDFS_2k.log");
    let (code, _) =
        curl(&["--data-binary", &format!("@{}", hdfs.display()), &format!("http://127.0.0.1:{front_port}/")]);
    assert_eq!(code, 200);
    let got = || std::fs::read(&received).map(|b| lines_of(&b)).unwrap_or_default();
    wait_for(DEADLINE, || got().len() >= 2000, || format!("{} lines arrived; log:\n{}", got().len(), front.log_text()));
    let stats = redirector_stats(server_port);
    assert_eq!(stats["redirected"], 10, "{stats:?}");
    assert_eq!(stats["landing"], 0, "a redirect was followed: {stats:?}");
    assert!(multiset(got()) == multiset(sample("HDFS_2k.log")), "the server got other lines than were posted");
    let failed = metric(addr(monitoring), "SINK.out", "ConnectionFailedCount").expect("metrics answer");
    assert_eq!(failed, 10, "each redirect counts as a failed post");
    let log = front.log_text();
    for status in ["301", "302", "303", "307", "308"] {
        assert!(log.contains(status), "status {status} not logged:\n{log}");
    }
    assert!(log.contains(&format!("http://127.0.0.1:{server_port}/landing")), "Location not logged:\n{log}");
    assert_eq!(front.terminate(DEADLINE), Some(0));
    drop(server);
}
