//! The monitoring server of a running `flumen run`, asked with curl: `GET /health` answers 200
//! while the agent runs; `GET /ready` answers 503 naming a `RocksDb` channel whose directory is a
//! file (and the JSON shows it `failed`) and 200 once the channel opened; a sink that cannot open
//! its output is `restarting` and then `running`; a stopping agent is not ready and its components
//! are `draining`. `GET /metrics/prometheus` passes a strict check of the text format and the
//! Prometheus Python client's parser (Debian's `python3-prometheus-client`), and agrees with the
//! JSON; both checks reject a text with a split family and a counter without `_total` (their
//! negative control).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// `GET url` with curl: the status (0 when nothing answered) and the body.
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs (make test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The agent's `GET /metrics` JSON (`Null` while nothing answers).
fn json(monitoring: u16) -> serde_json::Value {
    let (code, body) = get(&format!("http://127.0.0.1:{monitoring}/metrics"));
    if code != 200 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /metrics is not JSON ({e}): {body}"))
}

fn state(monitoring: u16, component: &str) -> String {
    json(monitoring)[component]["State"].as_str().unwrap_or("?").to_string()
}

/// Waits until `GET url` answers `code` with a body for which `body` holds; answers the body.
fn wait_answer(flumen: &mut Flumen, url: &str, code: u16, body: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = flumen.child.try_wait() {
            panic!("flumen exited ({status}); its log:\n{}", flumen.log_text());
        }
        let last = get(url);
        if last.0 == code && body(&last.1) {
            return last.1;
        }
        if std::time::Instant::now() > deadline {
            panic!("{url} never answered {code} as expected; last {last:?}; log:\n{}", flumen.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_topology(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("monitoring.ron");
    write_file(&path, text);
    path
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[test]
fn ready_answers_503_while_a_rocksdb_channel_cannot_open_and_200_once_it_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let path = write_topology(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "ready",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: true), channels: ["c1"]) }},
    channels: {{ "c1": RocksDb(dir: "data/c1", capacity: 100000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out"), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
)"#
        ),
    );
    // The channel's directory is a file: RocksDB cannot open it.
    write_file(&tmp.path().join("data/c1"), "not a directory\n");
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let base = format!("http://127.0.0.1:{monitoring}");
    wait_answer(&mut flumen, &format!("{base}/health"), 200, |b| b == "ok\n");
    let reasons = wait_answer(&mut flumen, &format!("{base}/ready"), 503, |b| b.contains("CHANNEL.c1: failed:"));
    assert!(reasons.contains("data/c1"), "the reason names the channel's directory: {reasons}");
    assert!(!reasons.contains("SOURCE.r1") && !reasons.contains("SINK.k1"), "only the channel is a reason: {reasons}");
    let metrics = json(monitoring);
    assert_eq!(metrics["CHANNEL.c1"]["State"], "failed", "{metrics}");
    assert_eq!(metrics["CHANNEL.c1"]["ChannelFailed"], "1");
    assert_eq!(metrics["SOURCE.r1"]["State"], "running", "{metrics}");
    assert_eq!(metrics["SINK.k1"]["State"], "running", "{metrics}");
    assert_eq!(get(&format!("{base}/health")).0, 200, "a failed channel does not make the agent dead");

    std::fs::remove_file(tmp.path().join("data/c1")).unwrap();
    assert_eq!(wait_answer(&mut flumen, &format!("{base}/ready"), 200, |_| true), "ready\n");
    let metrics = json(monitoring);
    assert_eq!(metrics["CHANNEL.c1"]["State"], "running", "{metrics}");
    assert_eq!(metrics["CHANNEL.c1"]["ChannelFailed"], "0");
    assert!(metrics["CHANNEL.c1"]["ChannelOpenFailureCount"].as_str().unwrap().parse::<u64>().unwrap() >= 1);

    // And the flow works: every acknowledged line reaches the output.
    let lines = loghub_lines();
    flumen.send_acknowledged(addr(port), &lines, DEADLINE);
    wait_for(DEADLINE, || output_lines(&tmp.path().join("out")).0.len() >= lines.len(), || "lines missing".into());
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
}

#[test]
fn a_sink_that_cannot_open_its_output_is_restarting_then_running() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let path = write_topology(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "restarting",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: true), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "blocked/out"), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
)"#
        ),
    );
    // The parent of the sink's directory is a file: FileRoll cannot make its directory.
    write_file(&tmp.path().join("blocked"), "not a directory\n");
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let lines = loghub_lines();
    flumen.send_acknowledged(addr(port), &lines, DEADLINE);
    wait_for(
        DEADLINE,
        || {
            state(monitoring, "SINK.k1") == "restarting"
                && metric(addr(monitoring), "SINK.k1", "RestartCount") >= Some(1)
        },
        || format!("the sink is not restarting: {}", json(monitoring)),
    );
    assert_eq!(state(monitoring, "SOURCE.r1"), "running");
    assert_eq!(state(monitoring, "CHANNEL.c1"), "running");
    // A restarting sink has started and no channel failed: ready (`GET /ready` is about taking
    // traffic; the channel holds the events meanwhile).
    assert_eq!(get(&format!("http://127.0.0.1:{monitoring}/ready")), (200, "ready\n".into()));

    std::fs::remove_file(tmp.path().join("blocked")).unwrap();
    wait_for(
        DEADLINE,
        || output_lines(&tmp.path().join("blocked/out")).0.len() >= lines.len(),
        || format!("the sink did not deliver once its directory could be made: {}", json(monitoring)),
    );
    assert_eq!(state(monitoring, "SINK.k1"), "running");
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
}

#[test]
fn a_stopping_agent_is_not_ready_and_its_components_drain() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    // An HTTP server that never answers: the sink's delivery hangs, so the drain lasts until the
    // drain timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let path = write_topology(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "draining",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: true), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Http(url: "http://127.0.0.1:{silent_port}/", timeout: "60s"), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
)"#
        ),
    );
    let args = ["run", "--quiet", "--drain-timeout", "3s", path.to_str().unwrap()];
    let mut flumen = Flumen::start(&args, &tmp.path().join("flumen.log"));
    let base = format!("http://127.0.0.1:{monitoring}");
    flumen.send_acknowledged(addr(port), &loghub_lines()[..100], DEADLINE);
    wait_answer(&mut flumen, &format!("{base}/ready"), 200, |b| b == "ready\n");
    flumen.signal(libc::SIGTERM);
    let reasons = wait_answer(&mut flumen, &format!("{base}/ready"), 503, |_| true);
    assert!(reasons.contains("the agent is stopping"), "{reasons}");
    wait_for(
        DEADLINE,
        || {
            let m = json(monitoring);
            m["SOURCE.r1"]["State"] == "stopped"
                && m["SINK.k1"]["State"] == "draining"
                && m["CHANNEL.c1"]["State"] == "draining"
        },
        || format!("not draining as expected: {}", json(monitoring)),
    );
    assert_eq!(get(&format!("{base}/health")).0, 200, "a draining agent is alive");
    let mut status = None;
    wait_for(
        DEADLINE,
        || {
            status = flumen.child.try_wait().unwrap();
            status.is_some()
        },
        || "no exit".into(),
    );
    drop(silent);
}

#[test]
fn prometheus_output_is_typed_parses_and_agrees_with_the_json() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let path = write_topology(
        tmp.path(),
        &format!(
            r#"Topology(
    agent: "prom \"edge\"",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: true), channels: ["mem", "disk"]) }},
    channels: {{
        "mem": Memory(capacity: 100000, transaction_capacity: 1000),
        "disk": RocksDb(dir: "data/disk", capacity: 100000),
    }},
    sinks: {{
        "k-mem": (kind: FileRoll(dir: "out-mem"), channel: "mem"),
        "k-disk": (kind: FileRoll(dir: "out-disk"), channel: "disk"),
    }},
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
)"#
        ),
    );
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let lines = loghub_lines();
    let n = lines.len() as u64;
    flumen.send_acknowledged(addr(port), &lines, DEADLINE);
    let m = addr(monitoring);
    wait_for(
        DEADLINE,
        || {
            metric(m, "SINK.k-mem", "EventDrainSuccessCount") == Some(n)
                && metric(m, "SINK.k-disk", "EventDrainSuccessCount") == Some(n)
        },
        || format!("not delivered: {}", json(monitoring)),
    );
    // Sinks keep polling (EventTakeAttemptCount, BatchEmptyCount grow): the Prometheus values
    // lie between those of the JSON fetched just before and just after.
    let before = json(monitoring);
    let (code, text) = get(&format!("http://127.0.0.1:{monitoring}/metrics/prometheus"));
    let after = json(monitoring);
    assert_eq!(code, 200);
    let families = strict_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let parsed = python_parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.len(), families.len(), "the Python parser sees the same families");
    for (name, kind) in &parsed {
        let ours = &families[&python_family_name(name, kind, &families)];
        assert_eq!(&ours.kind, kind, "{name}");
    }

    // Names: counters end in `_total`, gauges do not.
    for name in [
        "flumen_event_received_total",
        "flumen_event_put_success_total",
        "flumen_event_drain_success_total",
        "flumen_channel_write_fail_total",
    ] {
        assert_eq!(families[name].kind, "counter", "{name}");
    }
    for name in [
        "flumen_channel_size",
        "flumen_channel_capacity",
        "flumen_channel_fill_percentage",
        "flumen_disk_bytes",
        "flumen_component_state",
    ] {
        assert_eq!(families[name].kind, "gauge", "{name}");
    }
    let sample = |family: &str, name: &str| -> f64 {
        families[family]
            .samples
            .iter()
            .find(|s| s.labels.get("name").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{family} of {name}"))
            .value
    };
    assert_eq!(sample("flumen_event_received_total", "r1"), n as f64);
    assert_eq!(sample("flumen_event_drain_success_total", "k-disk"), n as f64);
    assert!(sample("flumen_disk_bytes", "disk") > 0.0, "the RocksDb channel reports its size on disk");
    for s in &families["flumen_component_state"].samples {
        assert_eq!(s.value, 1.0, "every component is running (1): {s:?}");
        assert_eq!(s.labels["agent"], "prom \"edge\"", "the agent label is escaped and read back");
    }

    // Every JSON counter of every component has its Prometheus sample with the same value, and
    // nothing the JSON lacks.
    let mut json_series = 0;
    for (key, counters) in after.as_object().unwrap() {
        // "AGENT" (the agent's own counters) has no name: its samples are labelled type="agent".
        let (kind, name) = key.split_once('.').unwrap_or((key.as_str(), ""));
        for (counter, value) in counters.as_object().unwrap() {
            if counter == "Type" || counter == "State" {
                continue;
            }
            let family = families
                .values()
                .find(|f| prometheus_of(counter, &f.kind) == f.name)
                .unwrap_or_else(|| panic!("no Prometheus metric for {counter}"));
            let s = family
                .samples
                .iter()
                .find(|s| {
                    s.labels.get("name").map_or("", String::as_str) == name && s.labels["type"] == kind.to_lowercase()
                })
                .unwrap_or_else(|| panic!("{} has no sample of {key}", family.name));
            let value: f64 = value.as_str().unwrap().parse().unwrap();
            let earlier: f64 = before[key][counter].as_str().unwrap().parse().unwrap();
            let (lo, hi) = (value.min(earlier), value.max(earlier));
            assert!(
                s.value >= lo - 0.05 && s.value <= hi + 0.05,
                "{key} {counter}: JSON {earlier} then {value}, Prometheus {}",
                s.value
            );
            json_series += 1;
        }
    }
    let state_series = families["flumen_component_state"].samples.len();
    let samples: usize = families.values().map(|f| f.samples.len()).sum();
    assert_eq!(samples, json_series + state_series, "Prometheus has a sample for every JSON value and the states");
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
}

/// The negative control of both format checks: a text whose family is split by another, and one
/// whose counter does not end in `_total`, fail them; the same text put right passes.
#[test]
fn the_format_checks_reject_split_families_and_counters_without_total() {
    let good = "# HELP flumen_a_total A.\n# TYPE flumen_a_total counter\nflumen_a_total{name=\"r1\"} 1\nflumen_a_total{name=\"r2\"} 2\n# HELP flumen_b B.\n# TYPE flumen_b gauge\nflumen_b{name=\"r1\"} 3\n";
    assert!(strict_check(good).is_ok());
    assert!(python_parse(good).is_ok());
    let split = "# HELP flumen_a_total A.\n# TYPE flumen_a_total counter\nflumen_a_total{name=\"r1\"} 1\n# HELP flumen_b B.\n# TYPE flumen_b gauge\nflumen_b{name=\"r1\"} 3\nflumen_a_total{name=\"r2\"} 2\n";
    assert!(strict_check(split).is_err());
    assert!(python_parse(split).is_err(), "the Python parser sees an untyped family");
    let untotalled = "# HELP flumen_a A.\n# TYPE flumen_a counter\nflumen_a{name=\"r1\"} 1\n";
    assert!(strict_check(untotalled).is_err());
    let bad_label = "# TYPE flumen_b gauge\nflumen_b{name=\"r\"1\"} 3\n";
    assert!(strict_check(bad_label).is_err());
    assert!(python_parse(bad_label).is_err());
}

/// The Prometheus name of a JSON counter of type `kind`, as the README documents it.
fn prometheus_of(flume: &str, kind: &str) -> String {
    let mut snake = String::new();
    for (i, c) in flume.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    match kind {
        "counter" => format!("flumen_{}_total", snake.strip_suffix("_count").unwrap_or(&snake)),
        _ => format!("flumen_{snake}"),
    }
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Checks `text` against the Prometheus text format 0.0.4 strictly: every line a `# HELP`, a
/// `# TYPE` (`counter` or `gauge`) or a sample; per metric one HELP and one TYPE before its
/// samples, all its samples together and none twice; names and label values well formed; values
/// numbers; counters named `..._total`, gauges not; a final line feed. Answers the families.
fn strict_check(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let name_re = regex::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").unwrap();
    let sample_re = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^"\\\n])*",?)*)\} (\S+)$"#,
    )
    .unwrap();
    let label_re = regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\[\\"n]|[^"\\\n])*)""#).unwrap();
    if !text.ends_with('\n') {
        return Err("no final line feed".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or_else(|| format!("{}: HELP without text", at()))?;
            if !name_re.is_match(name) || !helped.insert(name.to_string()) || families.contains_key(name) {
                return Err(format!("{}: a bad, repeated or late HELP", at()));
            }
            if help.trim().is_empty() || help.replace("\\\\", "").replace("\\n", "").contains('\\') {
                return Err(format!("{}: empty or badly escaped HELP", at()));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| format!("{}: TYPE without type", at()))?;
            if !name_re.is_match(name) || families.contains_key(name) {
                return Err(format!("{}: a bad or repeated TYPE", at()));
            }
            match kind {
                "counter" if !name.ends_with("_total") => return Err(format!("{}: a counter not named _total", at())),
                "gauge" if name.ends_with("_total") => return Err(format!("{}: a gauge named _total", at())),
                "counter" | "gauge" => {}
                _ => return Err(format!("{}: type {kind} is not counter or gauge", at())),
            }
            families.insert(name.into(), Family { name: name.into(), kind: kind.into(), samples: Vec::new() });
            current = Some(name.into());
        } else if line.starts_with('#') {
            return Err(format!("{}: a comment that is neither HELP nor TYPE", at()));
        } else {
            let caps = sample_re.captures(line).ok_or_else(|| format!("{}: not a sample", at()))?;
            let name = &caps[1];
            if current.as_deref() != Some(name) {
                return Err(format!("{}: a sample outside its family's TYPE block", at()));
            }
            let value: f64 = caps[3].parse().map_err(|_| format!("{}: the value is not a number", at()))?;
            let mut labels = BTreeMap::new();
            for l in label_re.captures_iter(&caps[2]) {
                let v = l[2].replace("\\\"", "\"").replace("\\n", "\n").replace("\\\\", "\\");
                if labels.insert(l[1].to_string(), v).is_some() {
                    return Err(format!("{}: a label twice", at()));
                }
            }
            let family = families.get_mut(name).expect("current is typed");
            if family.samples.iter().any(|s| s.labels == labels) {
                return Err(format!("{}: a sample twice", at()));
            }
            family.samples.push(Sample { labels, value });
        }
    }
    if let Some(f) = families.values().find(|f| f.samples.is_empty()) {
        return Err(format!("{} has no sample", f.name));
    }
    Ok(families)
}

/// Parses `text` with `tests/peers/prometheus_parse.py` (the Prometheus Python client's parser,
/// Debian's `python3-prometheus-client`, run by Debian's `/usr/bin/python3` where apt installs
/// it). Answers family name to type; an error when it does not parse, when a family is untyped
/// (a sample outside its family), a name repeats, or a counter's samples are not `<name>_total`.
fn python_parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/prometheus_parse.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (make test installs python3 and python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "python3-prometheus-client is missing (make test installs it): {stderr}"
    );
    if !out.status.success() {
        return Err(format!("the Python parser failed: {stderr}"));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut families = BTreeMap::new();
    for f in parsed["families"].as_array().unwrap() {
        let (name, kind) = (f["name"].as_str().unwrap(), f["type"].as_str().unwrap());
        if kind != "counter" && kind != "gauge" {
            // The parser names a sample outside its family's block `untyped` (`unknown` since 0.16).
            return Err(format!("{name} is {kind}: a sample outside its family"));
        }
        if families.insert(name.to_string(), kind.to_string()).is_some() {
            return Err(format!("{name} appears twice"));
        }
        for s in f["samples"].as_array().unwrap() {
            let want = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
            if s["name"] != want.as_str() {
                return Err(format!("{name}: sample {} is not {want}", s["name"]));
            }
        }
    }
    Ok(families)
}

/// Our family name for a family the Python parser names `name` (it drops a counter's `_total`).
fn python_family_name(name: &str, kind: &str, families: &BTreeMap<String, Family>) -> String {
    let ours = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
    assert!(families.contains_key(&ours), "the Python parser found {name} ({kind}), which the strict check did not");
    ours
}
