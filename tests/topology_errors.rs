//! `flumen validate` on malformed topologies: each problem is one line
//! `FILE:LINE:COL: COMPONENT: MESSAGE` pointing at what is wrong, every problem is reported at
//! once, and the exit status is non-zero.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flumen");

/// A topology written to a file in its own temporary folder.
struct Written {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(text: &str) -> Written {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("topology.ron");
    std::fs::write(&path, text).expect("write topology");
    Written { dir, path }
}

fn validate(path: &Path) -> Output {
    Command::new(BIN).arg("validate").arg(path).output().expect("run flumen validate")
}

/// Validates `text`; expects a failure with a line `FILE:LINE:COL: COMPONENT: ...FRAGMENT...`
/// (no `COMPONENT: ` when `component` is `None`). Answers stderr.
#[track_caller]
fn expect_error(text: &str, (line, col): (usize, usize), component: Option<&str>, fragment: &str) -> String {
    let w = write(text);
    let out = validate(&w.path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "validation passed; expected {fragment:?}");
    assert_eq!(out.status.code(), Some(2), "exit status\n{stderr}");
    let prefix = match component {
        Some(c) => format!("{}:{line}:{col}: {c}: ", w.path.display()),
        None => format!("{}:{line}:{col}: ", w.path.display()),
    };
    assert!(
        stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(fragment)),
        "expected a line starting {prefix:?} containing {fragment:?}; stderr:\n{stderr}"
    );
    drop(w.dir);
    stderr
}

/// The problem lines of `stderr` (continuation lines of long messages left out).
fn problems(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.starts_with("    ")).collect()
}

#[test]
fn a_valid_topology_validates() {
    let w = write(
        r#"// A comment.
Topology(
    agent: "edge-1",
    monitoring: Some(Http(bind: "127.0.0.1:41414")),
    sources: {
        "r1": (kind: SequenceGenerator(total: 100), channels: ["c1"], batch_size: 10, linger: "250ms"),
        "r2": (kind: Netcat(bind: "localhost:44444"), channels: ["c1"], batch_size: 100),
    },
    channels: { "c1": Memory(capacity: 1000, transaction_capacity: 100) },
    sinks: {
        "k1": (kind: Null(), channel: "c1", batch_size: 100),
        "k2": (kind: Logger(), channel: "c1", batch_size: 100),
    },
    sink_groups: {
        "g1": (sinks: ["k1", "k2"], processor: Failover(priority: { "k1": 10, "k2": 5 }, max_penalty: "30s")),
    },
)
"#,
    );
    let out = validate(&w.path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("agent \"edge-1\" is valid (2 sources, 1 channels, 2 sinks)"), "{stdout}");
}

#[test]
fn syntax_error() {
    // A comma is missing after `kind: ...`.
    let stderr = expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: SequenceGenerator() channels: ["c1"]),
    },
)
"#,
        (4, 42),
        Some("source \"r1\""),
        "expected comma",
    );
    assert_eq!(problems(&stderr).len(), 1, "{stderr}");
}

#[test]
fn syntax_error_at_the_top_level_names_no_component() {
    expect_error(
        r#"Topology(
    agent: "a"
    sources: {},
)
"#,
        (3, 5),
        None,
        "expected comma",
    );
}

#[test]
fn unknown_field() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory(capacity: 100, transaction_capcity: 10) },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (4, 45),
        Some("channel \"c1\""),
        "unknown field `transaction_capcity`, expected one of `capacity`, `transaction_capacity`, `keep_alive`, `byte_capacity`",
    );
}

#[test]
fn unknown_field_at_the_top_level() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
    sinkgroups: {},
)
"#,
        (6, 5),
        None,
        "unknown field `sinkgroups`",
    );
}

#[test]
fn unknown_channel() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (
            kind: SequenceGenerator(),
            channels: ["c1", "c9"],
        ),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (6, 30),
        Some("source \"r1\""),
        "channel \"c9\" does not exist",
    );
}

#[test]
fn sink_of_an_unknown_channel() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: {
        "k1": (kind: Null(), channel: "c1"),
        "k2": (kind: Null(), channel: "c2"),
    },
)
"#,
        (7, 39),
        Some("sink \"k2\""),
        "channel \"c2\" does not exist",
    );
}

#[test]
fn channel_no_source_puts_into() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: {
        "c1": Memory(),
        "c2": Memory(),
    },
    sinks: {
        "k1": (kind: Null(), channel: "c1"),
        "k2": (kind: Null(), channel: "c2"),
    },
)
"#,
        (6, 15),
        Some("channel \"c2\""),
        "no source puts into this channel",
    );
}

#[test]
fn channel_no_sink_drains() {
    let stderr = expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1", "c2"]) },
    channels: {
        "c1": Memory(),
        "c2": Memory(),
    },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (6, 15),
        Some("channel \"c2\""),
        "no sink drains this channel",
    );
    assert_eq!(problems(&stderr).len(), 1, "{stderr}");
}

#[test]
fn multiplexing_default_outside_the_sources_channels() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (
            kind: SequenceGenerator(),
            channels: ["c1", "c2"],
            selector: Multiplexing(
                header: "level",
                mapping: { "ERROR": ["c2"] },
                default: ["c1", "c3"],
            ),
        ),
    },
    channels: { "c1": Memory(), "c2": Memory(), "c3": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1"), "k2": (kind: Null(), channel: "c2"), "k3": (kind: Null(), channel: "c3") },
)
"#,
        (10, 33),
        Some("source \"r1\""),
        "selector default channel \"c3\" is not among the source's channels",
    );
}

#[test]
fn multiplexing_mapping_outside_the_sources_channels() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (
            kind: SequenceGenerator(),
            channels: ["c1"],
            selector: Multiplexing(header: "level", mapping: { "WARN": ["c1"], "ERROR": ["c2"] }, default: ["c1"]),
        ),
    },
    channels: { "c1": Memory(), "c2": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1"), "k2": (kind: Null(), channel: "c2") },
)
"#,
        (7, 90),
        Some("source \"r1\""),
        "selector mapping \"ERROR\" channel \"c2\" is not among the source's channels",
    );
}

#[test]
fn two_rocksdb_channels_sharing_a_dir() {
    // "data/q" and "./x/../data/q" are the same folder once resolved against the file's folder.
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1", "c2"]) },
    channels: {
        "c1": RocksDb(dir: "data/q"),
        "c2": RocksDb(dir: "./x/../data/q", sync: false),
    },
    sinks: { "k1": (kind: Null(), channel: "c1"), "k2": (kind: Null(), channel: "c2") },
)
"#,
        (6, 28),
        Some("channel \"c2\""),
        "is already the dir of channel \"c1\"",
    );
}

#[test]
fn bad_duration() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: SequenceGenerator(), channels: ["c1"], linger: "5 parsecs"),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (4, 69),
        Some("source \"r1\""),
        "bad duration \"5 parsecs\"",
    );
}

#[test]
fn bad_address() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: Netcat(bind: "127.0.0.1:444444"), channels: ["c1"]),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (4, 35),
        Some("source \"r1\""),
        "bind address \"127.0.0.1:444444\" is not host:port",
    );
}

#[test]
fn bad_monitoring_address() {
    expect_error(
        r#"Topology(
    agent: "a",
    monitoring: Some(Http(bind: "41414")),
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (3, 33),
        Some("monitoring"),
        "bind address \"41414\" is not host:port",
    );
}

#[test]
fn zero_capacity() {
    let stderr = expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"], batch_size: 1) },
    channels: { "c1": Memory(capacity: 0, transaction_capacity: 1) },
    sinks: { "k1": (kind: Null(), channel: "c1", batch_size: 1) },
)
"#,
        (4, 40),
        Some("channel \"c1\""),
        "capacity must be positive",
    );
    // Not also "transaction_capacity exceeds capacity": one mistake, one message.
    assert_eq!(problems(&stderr).len(), 1, "{stderr}");
}

#[test]
fn transaction_capacity_over_capacity() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"], batch_size: 10) },
    channels: {
        "c1": RocksDb(dir: "q", capacity: 100, transaction_capacity: 1000),
    },
    sinks: { "k1": (kind: Null(), channel: "c1", batch_size: 10) },
)
"#,
        (5, 70),
        Some("channel \"c1\""),
        "transaction_capacity (1000) exceeds capacity (100)",
    );
}

#[test]
fn sink_in_two_sink_groups() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: {
        "k1": (kind: Null(), channel: "c1"),
        "k2": (kind: Null(), channel: "c1"),
        "k3": (kind: Null(), channel: "c1"),
    },
    sink_groups: {
        "g1": (sinks: ["k1", "k2"], processor: Failover()),
        "g2": (sinks: ["k3", "k1"], processor: LoadBalance(selector: RoundRobin, backoff: true)),
    },
)
"#,
        (12, 30),
        Some("sink group \"g2\""),
        "sink \"k1\" already belongs to sink group \"g1\"",
    );
}

#[test]
fn sink_group_over_two_channels() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1", "c2"]) },
    channels: { "c1": Memory(), "c2": Memory() },
    sinks: {
        "k1": (kind: Null(), channel: "c1"),
        "k2": (kind: Null(), channel: "c2"),
    },
    sink_groups: {
        "g1": (sinks: ["k1", "k2"], processor: Failover(priority: { "k1": 10, "k2": 5 })),
    },
)
"#,
        (10, 30),
        Some("sink group \"g1\""),
        "sink \"k2\" drains channel \"c2\" but sink \"k1\" drains \"c1\": the sinks of a group drain one channel",
    );
}

#[test]
fn sink_group_without_penalty() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1"), "k2": (kind: Null(), channel: "c1") },
    sink_groups: { "g1": (sinks: ["k1", "k2"], processor: Failover(max_penalty: "0s")) },
)
"#,
        (6, 81),
        Some("sink group \"g1\""),
        "max_penalty must be positive",
    );
}

#[test]
fn missing_topology_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nowhere.ron");
    let out = validate(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!("{}:0:0: cannot read the topology file: ", path.display());
    assert!(stderr.starts_with(&expected), "expected {expected:?}; stderr:\n{stderr}");
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

#[test]
fn missing_spool_dir() {
    let stderr = expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "spool": (
            kind: SpoolDir(dir: "incoming"),
            channels: ["c1"],
        ),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (5, 19),
        Some("source \"spool\""),
        "does not exist",
    );
    // The message names the folder resolved against the topology file's folder.
    assert!(stderr.contains("/incoming"), "{stderr}");
}

#[test]
fn bad_regex_in_an_interceptor() {
    let stderr = expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (
            kind: SequenceGenerator(),
            channels: ["c1"],
            interceptors: [Timestamp(), RegexFilter(regex: "ERROR (", exclude_events: true)],
        ),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (7, 60),
        Some("source \"r1\""),
        "RegexFilter regex: regex parse error",
    );
    // The regex error's own lines follow, indented, so each problem still starts a line.
    assert!(stderr.lines().any(|l| l.starts_with("    ") && l.contains("unclosed group")), "{stderr}");
    assert_eq!(problems(&stderr).len(), 1, "{stderr}");
}

#[test]
fn regex_extractor_with_too_few_groups() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (
            kind: SequenceGenerator(),
            channels: ["c1"],
            interceptors: [
                RegexExtractor(regex: "(INFO|WARN)", headers: ["level", "thread"]),
            ],
        ),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (8, 39),
        Some("source \"r1\""),
        "has 1 capture groups but 2 headers are named",
    );
}

#[test]
fn batch_size_over_the_channels_transaction_capacity() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"], batch_size: 100) },
    channels: { "c1": Memory(capacity: 1000, transaction_capacity: 100) },
    sinks: {
        "k1": (kind: Null(), channel: "c1", batch_size: 500),
    },
)
"#,
        (6, 57),
        Some("sink \"k1\""),
        "batch_size (500) exceeds the transaction_capacity (100) of channel \"c1\"",
    );
}

#[test]
fn default_batch_size_over_the_channels_transaction_capacity() {
    // batch_size is left to its default (1000): the problem points at the source.
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: SequenceGenerator(), channels: ["c1"]),
    },
    channels: { "c1": Memory(capacity: 1000, transaction_capacity: 100) },
    sinks: { "k1": (kind: Null(), channel: "c1", batch_size: 100) },
)
"#,
        (4, 15),
        Some("source \"r1\""),
        "batch_size (1000) exceeds the transaction_capacity (100) of channel \"c1\"",
    );
}

#[test]
fn unknown_source_kind() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: Jms(destination_name: "orders"), channels: ["c1"]),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (4, 22),
        Some("source \"r1\""),
        "unknown source kind `Jms`, expected one of `Netcat`, `SequenceGenerator`, `Exec`, `SpoolDir`, `Taildir`, `SyslogTcp`, `SyslogUdp`, `NetcatUdp`, `Http`, `Kafka`",
    );
}

#[test]
fn unknown_channel_kind() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: {
        "c1": File(data_dirs: ["data"]),
    },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (5, 15),
        Some("channel \"c1\""),
        "unknown channel kind `File`, expected one of `Memory`, `RocksDb`",
    );
}

#[test]
fn unknown_interceptor() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: SequenceGenerator(), channels: ["c1"], interceptors: [Host(), Geoip()]),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (4, 84),
        Some("source \"r1\""),
        "unknown interceptor `Geoip`",
    );
}

#[test]
fn missing_required_field() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: {
        "k1": (kind: FileRoll(roll_interval: "30s"), channel: "c1"),
    },
)
"#,
        (6, 22),
        Some("sink \"k1\""),
        "missing field `dir`",
    );
}

#[test]
fn component_defined_twice() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: {
        "k1": (kind: Null(), channel: "c1"),
        "k1": (kind: Logger(), channel: "c1"),
    },
)
"#,
        (7, 9),
        Some("sink \"k1\""),
        "defined twice (first at line 6, column 9)",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let w = write(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: Netcat(bind: "nowhere"), channels: ["c1", "c9"]),
        "r2": (kind: SequenceGenerator(), channels: ["c1"], lingr: "5ms"),
    },
    channels: {
        "c1": Memory(capacity: 0),
        "c2": Memory(capacity: "big"),
        "c3": Memory(),
    },
    sinks: {
        "k1": (kind: Null(), channel: "c1", batch_size: 0),
        "k2": (kind: Null(), channel: "c2"),
    },
    sink_groups: {
        "g1": (sinks: ["k1", "k5"], processor: Failover()),
    },
)
"#,
    );
    let out = validate(&w.path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = w.path.display().to_string();
    let expected = [
        "4:35: source \"r1\": bind address \"nowhere\" is not host:port",
        "4:64: source \"r1\": channel \"c9\" does not exist",
        "5:61: source \"r2\": unknown field `lingr`",
        "8:32: channel \"c1\": capacity must be positive",
        "9:32: channel \"c2\": expected integer",
        "10:15: channel \"c3\": no sink drains this channel",
        "13:57: sink \"k1\": batch_size must be positive",
        "17:30: sink group \"g1\": sink \"k5\" does not exist",
    ];
    let lines = problems(&stderr);
    for (line, want) in lines.iter().zip(&expected) {
        assert!(line.starts_with(&format!("{file}:{want}")), "expected {want:?}, got {line:?}\n{stderr}");
    }
    assert_eq!(lines.len(), expected.len(), "{stderr}");
}

#[test]
fn relative_paths_resolve_against_the_topology_files_folder() {
    let w = write(
        r#"Topology(
    agent: "a",
    sources: { "spool": (kind: SpoolDir(dir: "incoming"), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
    );
    std::fs::create_dir(w.dir.path().join("incoming")).expect("create spool dir");
    // Validated from another folder: "incoming" is found beside the topology, not in the cwd.
    let out = Command::new(BIN).arg("validate").arg(&w.path).current_dir("/").output().expect("run flumen validate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn kafka_sink_acks_cannot_be_weakened() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: { "r1": (kind: SequenceGenerator(), channels: ["c1"]) },
    channels: { "c1": Memory() },
    sinks: {
        "k1": (kind: Kafka(brokers: "127.0.0.1:9092", topic: "logs", properties: { "acks": "1" }), channel: "c1"),
    },
)
"#,
        (6, 82),
        Some("sink \"k1\""),
        "properties: \"acks\" is set by flumen for its delivery guarantee",
    );
}

#[test]
fn kafka_source_properties_librdkafka_does_not_know() {
    expect_error(
        r#"Topology(
    agent: "a",
    sources: {
        "r1": (kind: Kafka(brokers: "127.0.0.1:9092", topics: ["logs"], properties: { "sesion.timeout.ms": "6000" }), channels: ["c1"]),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#,
        (4, 85),
        Some("source \"r1\""),
        "properties: \"sesion.timeout.ms\" = \"6000\": No such configuration property: \"sesion.timeout.ms\"",
    );
}

#[test]
fn two_sources_on_one_port_and_a_source_on_the_monitoring_port() {
    let text = r#"(
    agent: "a1",
    monitoring: Some(Http(bind: "127.0.0.1:41414")),
    sources: {
        "r1": (kind: Netcat(bind: "127.0.0.1:44444"), channels: ["c1"]),
        "r2": (kind: SyslogTcp(bind: "127.0.0.1:44444"), channels: ["c1"]),
        "r3": (kind: Http(bind: "127.0.0.1:41414"), channels: ["c1"]),
        "r4": (kind: SyslogUdp(bind: "127.0.0.1:44444"), channels: ["c1"]),
    },
    channels: { "c1": Memory() },
    sinks: { "k1": (kind: Null(), channel: "c1") },
)
"#;
    let stderr =
        expect_error(text, (6, 38), Some("source \"r2\""), "tcp 127.0.0.1:44444 is already held by source \"r1\"");
    assert!(
        stderr.contains(":7:33: source \"r3\": tcp 127.0.0.1:41414 is already held by the monitoring server"),
        "{stderr}"
    );
    assert!(!stderr.contains("source \"r4\""), "UDP and TCP ports are different resources:\n{stderr}");
}
