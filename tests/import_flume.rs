//! `flumen import-flume` through the real binary: every agent example of Flume's user guide
//! (tests/flume/*.properties) converts and the output passes `flumen validate`; the properties not
//! carried over are listed exactly; kinds without counterpart exit 2; malformed files give
//! FILE:LINE errors; an imported spooldir → file → file_roll agent runs on the Loghub samples.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_flumen");

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flume")
}

/// Every fixture, by name (without `.properties`), in name order.
fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/flume")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "properties"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 50, "the user guide's examples are in tests/flume ({} found)", names.len());
    names
}

/// Fixtures with a component kind flumen has not: they exit 2.
const NO_COUNTERPART: &[&str] = &[
    "custom-channel",
    "custom-channel-selector",
    "http-source",
    "irc-sink",
    "jms-source",
    "kafka-channel",
    "load-balancing-channel-selector",
    "search-and-replace-interceptor",
];

/// The result of one import: exit code, the RON, stderr's lines.
struct Imported {
    code: i32,
    ron: String,
    stderr: Vec<String>,
}

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN).args(args).current_dir(cwd).env("FLUMEN_LOG", "warn").output().expect("run flumen")
}

/// Imports `tests/flume/<name>.properties` (named so on the command line, from the fixtures'
/// folder) into `dir/<name>.ron`.
fn import(name: &str, dir: &Path) -> Imported {
    let out = dir.join(format!("{name}.ron"));
    let file = format!("{name}.properties");
    let o = run(&["import-flume", &file, "-o", out.to_str().unwrap()], &fixtures_dir());
    let stderr = String::from_utf8_lossy(&o.stderr).lines().map(str::to_string).collect();
    let ron = std::fs::read_to_string(&out).unwrap_or_default();
    Imported { code: o.status.code().unwrap_or(-1), ron, stderr }
}

/// The `FILE:LINE: key: why` lines (without the summary line).
fn notes(i: &Imported) -> Vec<String> {
    i.stderr.iter().filter(|l| !l.contains(" properties carried over, ")).cloned().collect()
}

/// (carried, not carried) from the summary line.
fn counts(i: &Imported) -> (usize, usize) {
    let line = i.stderr.iter().find(|l| l.contains(" properties carried over, ")).expect("a summary line");
    let tail = line.split("\": ").nth(1).expect("summary");
    let mut nums =
        tail.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<usize>().unwrap());
    (nums.next().unwrap(), nums.next().unwrap())
}

/// `flumen validate` on `ron` (a fixture whose spool directory is Flume's absolute path gets a
/// directory of the test instead, since validation checks that it exists).
fn validate(i: &Imported, dir: &Path) -> Result<(), String> {
    let mut text = i.ron.clone();
    if text.contains("/var/log/apache/flumeSpool") {
        let spool = dir.join("flumeSpool");
        std::fs::create_dir_all(&spool).unwrap();
        text = text.replace("/var/log/apache/flumeSpool", spool.to_str().unwrap());
    }
    let path = dir.join("validate.ron");
    std::fs::write(&path, text).unwrap();
    let o = run(&["validate", path.to_str().unwrap()], dir);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    }
}

#[test]
fn every_user_guide_example_converts_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let (mut carried, mut not_carried) = (0, 0);
    for name in fixtures() {
        let i = import(&name, tmp.path());
        let expected = if NO_COUNTERPART.contains(&name.as_str()) { 2 } else { 0 };
        if i.code != expected {
            failures.push(format!("{name}: exit {} (expected {expected}); stderr:\n{}", i.code, i.stderr.join("\n")));
            continue;
        }
        let (c, n) = counts(&i);
        assert_eq!(n, notes(&i).len(), "{name}: the summary counts the listed properties");
        for note in notes(&i) {
            assert!(note.starts_with(&format!("{name}.properties:")), "{name}: FILE:LINE: key: why, not {note:?}");
        }
        carried += c;
        not_carried += n;
        if let Err(e) = validate(&i, tmp.path()) {
            failures.push(format!("{name}: the output does not validate:\n{e}\n{}", i.ron));
        }
    }
    println!(
        "import-flume over {} fixtures: {carried} properties carried over, {not_carried} listed as not carried",
        fixtures().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every option of the Avro and Thrift sources and sinks and of the spillable channel carries over
/// and validates.
#[test]
fn rpc_and_spillable_options_carry_over() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    // Every option of the Avro and Thrift sources and sinks and of the spillable channel.
    let d = tmp.path();
    let (code, _, err) = import_text(d, "rpc.properties", RPC, &["-o", "rpc.ron"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.lines().next().unwrap(),
        "rpc.properties:8: a1.sources.av.threads: flumen does it differently: each connection is a task; max_connections (default 1024) bounds them"
    );
    let ron = std::fs::read_to_string(d.join("rpc.ron")).unwrap();
    for part in [
        "compression_type: Deflate",
        "protocol: Binary",
        "overflow_deactivation_threshold: 10",
        "transaction_capacity: 500",
        r#"connect_timeout: "5s""#,
        r#"request_timeout: "30s""#,
        "compression_level: 9",
        "batch_size: 200",
    ] {
        assert!(ron.contains(part), "{part} in\n{ron}");
    }
    let o = run(&["validate", "rpc.ron"], d);
    if !o.status.success() {
        failures.push(format!("rpc.properties: {}", String::from_utf8_lossy(&o.stderr)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const RPC: &str = "a1.sources = av th
a1.channels = c1 c2
a1.sinks = k1 k2
a1.sources.av.type = avro
a1.sources.av.bind = 127.0.0.1
a1.sources.av.port = 4141
a1.sources.av.compression-type = deflate
a1.sources.av.threads = 8
a1.sources.av.channels = c1
a1.sources.th.type = thrift
a1.sources.th.bind = 127.0.0.1
a1.sources.th.port = 4142
a1.sources.th.protocol = binary
a1.sources.th.channels = c2
a1.channels.c1.type = spillablememory
a1.channels.c1.memoryCapacity = 1000
a1.channels.c1.overflowDeactivationThreshold = 10
a1.channels.c1.transactionCapacity = 500
a1.channels.c1.dataDirs = data/c1
a1.channels.c2.type = memory
a1.sinks.k1.type = avro
a1.sinks.k1.channel = c1
a1.sinks.k1.hostname = collector
a1.sinks.k1.port = 4545
a1.sinks.k1.batch-size = 200
a1.sinks.k1.connect-timeout = 5000
a1.sinks.k1.request-timeout = 30000
a1.sinks.k1.compression-type = deflate
a1.sinks.k1.compression-level = 9
a1.sinks.k2.type = thrift
a1.sinks.k2.channel = c2
a1.sinks.k2.hostname = collector
a1.sinks.k2.port = 4546
a1.sinks.k2.protocol = compact
a1.sinks.k2.connect-timeout = 5000
";

#[test]
fn what_is_not_carried_is_listed_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let i = import("a-simple-example", tmp.path());
    assert_eq!(i.code, 0);
    assert_eq!(notes(&i), Vec::<String>::new());
    assert_eq!(counts(&i), (12, 0));

    let i = import("taildir-source", tmp.path());
    let differently = "flumen does it differently: `filegroup_header` puts the file group's name in a header; a Static interceptor adds a fixed header";
    assert_eq!(
        notes(&i),
        vec![
            format!("taildir-source.properties:9: a1.sources.r1.headers.f1.headerKey1: {differently}"),
            format!("taildir-source.properties:11: a1.sources.r1.headers.f2.headerKey1: {differently}"),
            format!("taildir-source.properties:12: a1.sources.r1.headers.f2.headerKey2: {differently}"),
            "taildir-source.properties:14: a1.sources.ri.maxBatchCount: source ri is not in a1.sources: ignored, as Flume does".to_string(),
        ]
    );
    assert!(
        i.ron.contains(r#"filegroups: { "f1": "/var/log/test1/example?log", "f2": "/var/log/test2/*log*" }"#),
        "{}",
        i.ron
    );

    let i = import("kafka-sink", tmp.path());
    assert_eq!(
        notes(&i),
        vec!["kafka-sink.properties:7: a1.sinks.k1.kafka.producer.acks: flumen does it differently: the producer is always idempotent with acks=all"]
    );
    for part in [
        r#"topic: "mytopic""#,
        r#"key_header: Some("key")"#,
        r#"topic_header: Some("topic")"#,
        r#"properties: { "linger.ms": "1" }"#,
        "batch_size: 20",
    ] {
        assert!(i.ron.contains(part), "kafka-sink: {part} in\n{}", i.ron);
    }

    let i = import("file-channel-encryption", tmp.path());
    let n = notes(&i);
    assert_eq!(n.len(), 8, "{n:#?}");
    assert_eq!(n[0], "file-channel-encryption.properties:4: a1.channels.c1.checkpointDir: not needed: RocksDB keeps its own state in dir, there is no checkpoint");
    assert!(n[1..].iter().all(|l| l.contains(": a1.channels.c1.encryption") && l.contains("Aes256Gcm")), "{n:#?}");
    assert!(i.ron.contains(r#"dir: "/mnt/flume/data""#), "{}", i.ron);

    // Flume's defaults where they differ from flumen's are written out.
    let i = import("host-interceptor", tmp.path());
    assert!(i.ron.contains("use_ip: true"), "{}", i.ron);
    assert!(i.ron.contains("capacity: 100, // Flume's default capacity"), "{}", i.ron);
    let i = import("hdfs-sink", tmp.path());
    for part in [
        r#"path: "/flume/events/%Y-%m-%d/%H%M/%S""#,
        r#"file_prefix: "events-""#,
        "round: true",
        "round_value: 10",
        "round_unit: Minute",
        "format: DataStream",
    ] {
        assert!(i.ron.contains(part), "hdfs-sink: {part} in\n{}", i.ron);
    }
    let i = import("failover-sink-processor", tmp.path());
    assert!(
        i.ron.contains(r#"priority: { "k1": 5, "k2": 10 }"#) && i.ron.contains(r#"max_penalty: "10s""#),
        "{}",
        i.ron
    );
    let i = import("fan-out-flow-optional", tmp.path());
    assert_eq!(
        notes(&i),
        vec!["fan-out-flow-optional.properties:18: agent_foo.sources.avro-AppSrv-source1.selector.mapping.AZ: given again on line 21, whose value counts (as in Flume)"]
    );
    assert!(i.ron.contains(r#"optional: { "CA": ["mem-channel-1", "file-channel-2"] }"#), "{}", i.ron);
    let i = import("multiport-syslog-tcp-source", tmp.path());
    for port in [10001, 10002, 10003] {
        assert!(
            i.ron.contains(&format!(r#""r1-{port}": ("#)) && i.ron.contains(&format!(r#"bind: "0.0.0.0:{port}""#)),
            "{}",
            i.ron
        );
        assert!(i.ron.contains(&format!(r#"value: "{port}""#)), "portHeader as a Static interceptor: {}", i.ron);
    }
}

#[test]
fn kinds_without_counterpart_exit_2_and_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let i = import("jms-source", tmp.path());
    assert_eq!(i.code, 2);
    let n = notes(&i);
    assert_eq!(n[0], "jms-source.properties:4: a1.sources.r1.type: no counterpart: flumen has no jms source; a SequenceGenerator that makes no event stands in");
    assert_eq!(n.len(), 6, "type + its five properties: {n:#?}");
    assert!(n[1..].iter().all(|l| l.ends_with("no counterpart: belongs to a source kind flumen has not")), "{n:#?}");
    assert!(i.stderr.last().unwrap().contains("1 component kinds have no counterpart"), "{:?}", i.stderr);
    validate(&i, tmp.path()).expect("the stand-in validates");

    let i = import("kafka-channel", tmp.path());
    assert_eq!(i.code, 2);
    assert!(i.ron.contains("flumen does it with a Kafka sink"), "{}", i.ron);
    assert!(i.ron.contains(r#""channel1": RocksDb("#) && i.ron.contains(r#""channel1-to-kafka": ("#), "{}", i.ron);
    assert!(
        notes(&i)[0].starts_with("kafka-channel.properties:2: a1.channels.channel1.type: no counterpart"),
        "{:?}",
        notes(&i)
    );

    let i = import("irc-sink", tmp.path());
    assert_eq!(i.code, 2);
    assert!(i.ron.contains(r#"dir: "unconverted/k1""#), "nothing is discarded: {}", i.ron);
}

/// Writes `text` to `dir/name` and imports it (named `name` in the messages).
fn import_text(dir: &Path, name: &str, text: &str, extra: &[&str]) -> (i32, String, String) {
    std::fs::write(dir.join(name), text).unwrap();
    let mut args = vec!["import-flume", name];
    args.extend_from_slice(extra);
    let o = run(&args, dir);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const GOOD: &str = "a1.sources = r1\na1.channels = c1\na1.sinks = k1\na1.sources.r1.type = seq\na1.sources.r1.channels = c1\na1.channels.c1.type = memory\na1.sinks.k1.type = logger\na1.sinks.k1.channel = c1\n";

#[test]
fn malformed_properties_give_file_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The control: the same file without the mistake imports.
    let (code, out, _) = import_text(d, "good.properties", GOOD, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("Topology("));

    let no_channel = GOOD.replace("a1.sinks.k1.channel = c1\n", "");
    let (code, out, err) = import_text(d, "no-channel.properties", &no_channel, &[]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("no-channel.properties:7: a1.sinks.k1.channel: sink k1 has no channel"), "{err}");

    let unknown = GOOD.replace("a1.sinks.k1.channel = c1", "a1.sinks.k1.channel = c9");
    let (code, _, err) = import_text(d, "unknown.properties", &unknown, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown.properties:8: a1.sinks.k1.channel: unknown channel c9 (not in the agent's channels)"),
        "{err}"
    );

    let bad_number = format!("{GOOD}a1.channels.c1.capacity = 10k\n");
    let (code, _, err) = import_text(d, "number.properties", &bad_number, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("number.properties:9: a1.channels.c1.capacity: not a number: \"10k\""), "{err}");

    let bad_escape = format!("{GOOD}a1.sinks.k1.maxBytesToLog = \\u12\n");
    let (code, _, err) = import_text(d, "escape.properties", &bad_escape, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("escape.properties:9: malformed \\uXXXX escape"), "{err}");
}

#[test]
fn several_agents_need_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let two = format!("{GOOD}{}", GOOD.replace("a1.", "edge."));
    let (code, _, err) = import_text(tmp.path(), "two.properties", &two, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("the file holds several agents (a1, edge); choose one with --agent"), "{err}");
    let (code, out, err) = import_text(tmp.path(), "two.properties", &two, &["--agent", "edge"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("agent: \"edge\""), "{out}");
    assert!(err.contains("agent \"edge\": 8 properties carried over, 0 not carried"), "{err}");
    let (code, _, err) = import_text(tmp.path(), "two.properties", &two, &["--agent", "a2"]);
    assert_eq!(code, 1);
    assert!(err.contains("no agent \"a2\" (the file holds: a1, edge)"), "{err}");
}

/// A Flume agent (spooldir → file channel → file_roll with timestamp and static interceptors and
/// a regex filter) imported and run with `flumen run --once` on the Loghub samples: every line is
/// delivered once. `exclude` is the regex filter's pattern (`^$`, matching no Loghub line, for the
/// real run).
fn round_trip(exclude: &str) -> (Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spool = root.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    for e in std::fs::read_dir(support::loghub_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            std::fs::copy(&p, spool.join(p.file_name().unwrap())).unwrap();
        }
    }
    let conf = format!(
        "agent.sources = spool\n\
         agent.channels = disk buckets\n\
         agent.sinks = files hdfs\n\
         agent.sources.spool.type = spooldir\n\
         agent.sources.spool.spoolDir = {spool}\n\
         agent.sources.spool.channels = disk buckets\n\
         agent.sources.spool.deserializer.maxLineLength = 65536\n\
         agent.sources.spool.interceptors = ts dc keep\n\
         agent.sources.spool.interceptors.ts.type = timestamp\n\
         agent.sources.spool.interceptors.dc.type = static\n\
         agent.sources.spool.interceptors.dc.key = datacenter\n\
         agent.sources.spool.interceptors.dc.value = NEW_YORK\n\
         agent.sources.spool.interceptors.keep.type = regex_filter\n\
         agent.sources.spool.interceptors.keep.regex = {exclude}\n\
         agent.sources.spool.interceptors.keep.excludeEvents = true\n\
         agent.channels.disk.type = file\n\
         agent.channels.disk.checkpointDir = {root}/checkpoint\n\
         agent.channels.disk.dataDirs = {root}/data\n\
         agent.channels.buckets.type = file\n\
         agent.channels.buckets.dataDirs = {root}/data-buckets\n\
         agent.sinks.files.type = file_roll\n\
         agent.sinks.files.channel = disk\n\
         agent.sinks.files.sink.directory = {root}/out\n\
         agent.sinks.files.sink.rollInterval = 0\n\
         agent.sinks.hdfs.type = hdfs\n\
         agent.sinks.hdfs.channel = buckets\n\
         agent.sinks.hdfs.hdfs.path = {root}/buckets/%{{datacenter}}/%Y\n\
         agent.sinks.hdfs.hdfs.fileType = DataStream\n\
         agent.sinks.hdfs.hdfs.timeZone = UTC\n\
         agent.sinks.hdfs.hdfs.rollCount = 0\n\
         agent.sinks.hdfs.hdfs.rollSize = 0\n",
        spool = spool.display(),
        root = root.display(),
    );
    std::fs::write(root.join("flume.conf"), conf).unwrap();
    let o = run(&["import-flume", "flume.conf", "-o", "imported.ron"], root);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines().filter(|l| !l.contains("carried over")).collect::<Vec<_>>(),
        vec!["flume.conf:17: agent.channels.disk.checkpointDir: not needed: RocksDB keeps its own state in dir, there is no checkpoint"]
    );
    let log = root.join("run.log");
    let mut flumen =
        support::Flumen::start(&["run", "--once", "--quiet", root.join("imported.ron").to_str().unwrap()], &log);
    let mut status = None;
    support::wait_for(
        Duration::from_secs(120),
        || {
            status = flumen.child.try_wait().unwrap();
            status.is_some()
        },
        || format!("flumen run --once did not end; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
    );
    assert!(status.unwrap().success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let (lines, partial) = support::output_lines(&root.join("out"));
    assert_eq!(partial, 0);
    // The Hdfs sink's buckets come from the headers the Static and Timestamp interceptors set:
    // every event is under buckets/NEW_YORK/<year>, none rejected.
    let ny = root.join("buckets/NEW_YORK");
    let years: Vec<String> = std::fs::read_dir(&ny)
        .unwrap_or_else(|e| panic!("{}: {e}; buckets: {:?}", ny.display(), support::files_under(&root.join("buckets"))))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(years.len() == 1 && years[0].len() == 4 && years[0].starts_with("20"), "{years:?}");
    let (bucketed, partial) = support::output_lines(&root.join("buckets"));
    assert_eq!(partial, 0);
    assert_eq!(
        support::multiset(bucketed),
        support::multiset(lines.clone()),
        "the Hdfs buckets hold what the FileRoll sink got"
    );
    (support::loghub_lines(), lines)
}

#[test]
fn an_imported_agent_runs_on_the_loghub_samples() {
    let (sent, got) = round_trip("^$");
    assert!(sent.len() >= 10_000, "the samples: {} lines", sent.len());
    assert_eq!(support::multiset(got), support::multiset(sent), "every line delivered once");
}

/// Negative control: the imported regex filter drops the lines with "ERROR" and the same check
/// sees exactly those missing.
#[test]
fn the_round_trip_sees_lines_a_filter_dropped() {
    let (sent, got) = round_trip("ERROR");
    let dropped = sent.iter().filter(|l| l.contains("ERROR")).count();
    assert!(dropped > 0, "the samples hold ERROR lines");
    assert_ne!(support::multiset(got.clone()), support::multiset(sent.clone()));
    assert_eq!(got.len(), sent.len() - dropped);
}
