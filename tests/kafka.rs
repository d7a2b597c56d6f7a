//! The `Kafka` sink and source in the real `flumen` binary, against librdkafka's mock cluster
//! (real brokers on 127.0.0.1 sockets, speaking the Kafka protocol, inside this test process), or
//! against a real cluster when `KAFKA_BROKERS` is set (a fresh topic per test is created there).
//!
//! Loghub lines go over TCP into one agent, through its `Kafka` sink into a topic, and out of the
//! topic through a `Kafka` source in a second agent, which writes them with an `Hdfs` sink into
//! buckets named by the headers the source sets. The consuming agent is SIGKILLed mid-stream and
//! restarted: every line arrives. Another test takes every broker down under a producing sink: the
//! sink's batch fails its delivery reports and is rolled back, and once the brokers are back every
//! line is in the topic, as read by an independent librdkafka consumer.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;

use support::*;

/// A bound for hangs, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(120);

/// The brokers a test talks to, with its topic created.
struct Cluster {
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    brokers: String,
    topic: String,
}

impl Cluster {
    /// A cluster with a fresh topic of `partitions` partitions: the mock cluster (3 brokers,
    /// every partition replicated 3 times), or `KAFKA_BROKERS`'s cluster.
    fn with_topic(partitions: i32) -> Cluster {
        let topic = format!("loghub-{}", uuid::Uuid::new_v4().simple());
        match std::env::var("KAFKA_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => {
                create_topic(&brokers, &topic, partitions);
                Cluster { mock: None, brokers, topic }
            }
            _ => {
                let mock = MockCluster::new(3).expect("start the mock cluster");
                mock.create_topic(&topic, partitions, 3).expect("create topic");
                let brokers = mock.bootstrap_servers();
                Cluster { mock: Some(mock), brokers, topic }
            }
        }
    }

    /// A second fresh topic of `partitions` partitions on `cluster`'s brokers.
    fn topic_beside(cluster: &Cluster, partitions: i32) -> String {
        let topic = format!("relayed-{}", uuid::Uuid::new_v4().simple());
        match &cluster.mock {
            Some(mock) => mock.create_topic(&topic, partitions, 3).expect("create topic"),
            None => create_topic(&cluster.brokers, &topic, partitions),
        }
        topic
    }

    /// Every record of the topic, read from the start by an independent consumer until `n` were
    /// read: (value, headers, key).
    fn read_all(&self, n: usize) -> Vec<(String, BTreeMap<String, String>, Option<String>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4().simple()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        consumer.subscribe(&[&self.topic]).expect("subscribe");
        let mut records = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while records.len() < n {
            assert!(Instant::now() < deadline, "read {} of {n} records from {}", records.len(), self.topic);
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| {
                                    (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                    records.push((value, headers, key));
                }
                Some(Err(e)) => eprintln!("reader: {e}"),
                None => {}
            }
        }
        records
    }
}

/// Creates `topic` on a real cluster.
fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let result = runtime.block_on(admin.create_topics([&new], &AdminOptions::new())).expect("create topic");
    assert!(result.iter().all(Result::is_ok), "create topic {topic}: {result:?}");
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Starts `flumen run` on the topology `text`, written as `dir/<name>.ron`.
fn start(dir: &Path, name: &str, text: &str) -> Flumen {
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")))
}

/// The producing agent: Netcat (acknowledging every line) → Memory → `Kafka` sink, keyed by the
/// line's first digit, with a static `origin` header.
fn producer_topology(port: u16, monitoring: u16, cluster: &Cluster, timeout: &str) -> String {
    format!(
        r#"Topology(
    agent: "edge",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{
        "in": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536),
            channels: ["c"],
            interceptors: [Static(key: "origin", value: "edge-1"), RegexExtractor(regex: r"^(\d)", headers: ["lead"])],
        ),
    }},
    channels: {{ "c": Memory(capacity: 200000, transaction_capacity: 1000) }},
    sinks: {{
        "to-kafka": (
            kind: Kafka(brokers: "{brokers}", topic: "{topic}", key_header: Some("lead"), timeout: "{timeout}"),
            channel: "c",
            batch_size: 500,
        ),
    }},
)"#,
        brokers = cluster.brokers,
        topic = cluster.topic,
    )
}

/// The complete lines under `dir` (in-use files included).
fn lines_under(dir: &Path) -> Vec<String> {
    output_lines(dir).0
}

/// How many lines of `expected` (a multiset) are missing from `got`, and how many extra lines
/// (duplicates) `got` holds.
fn compare(got: &[String], expected: &[String]) -> (usize, usize) {
    let mut want = multiset(expected.iter().cloned());
    let mut extra = 0;
    for line in got {
        match want.get_mut(line) {
            Some(n) if *n > 0 => *n -= 1,
            _ => extra += 1,
        }
    }
    (want.values().sum(), extra)
}

/// A consuming agent `name` of the group `collectors`: `Kafka` source → `RocksDb` (its durable
/// channel holds what it read before the offsets are committed) → `Hdfs` buckets named by the
/// headers the Kafka source sets, under `out/<name>`.
fn consumer_topology(name: &str, cluster: &Cluster) -> String {
    format!(
        r#"Topology(
    agent: "{name}",
    sources: {{
        "from-kafka": (
            kind: Kafka(
                brokers: "{brokers}",
                topics: ["{topic}"],
                group_id: "collectors",
                properties: {{ "session.timeout.ms": "6000", "heartbeat.interval.ms": "500" }},
            ),
            channels: ["disk"],
        ),
    }},
    channels: {{ "disk": RocksDb(dir: "{name}/channel", capacity: 1000000, sync: true) }},
    sinks: {{
        "buckets": (
            kind: Hdfs(path: "out/{name}/%{{topic}}/%{{origin}}/key-%{{key}}/p%{{partition}}", roll_count: 2000, roll_size: 0, roll_interval: "1s"),
            channel: "disk",
        ),
    }},
)"#,
        brokers = cluster.brokers,
        topic = cluster.topic,
    )
}

#[test]
fn loghub_lines_cross_kafka_between_agents_while_a_consumer_is_killed() {
    let cluster = Cluster::with_topic(3);
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let lines = numbered_lines(40_000);
    let (first, second) = lines.split_at(20_000);

    let mut edge = start(tmp.path(), "edge", &producer_topology(port, monitoring, &cluster, "30s"));
    // Two consuming agents share the topic's three partitions.
    let a = start(tmp.path(), "a", &consumer_topology("a", &cluster));
    let b = start(tmp.path(), "b", &consumer_topology("b", &cluster));
    edge.send_acknowledged(addr(port), first, DEADLINE);

    // Kill `a` once it wrote part of the stream: the group rebalances its partitions to `b`,
    // from their last committed offsets. The rest is sent while `a` is down; then `a` comes back
    // on the same channel directory and the group rebalances again.
    let (out, out_a, out_b) = (tmp.path().join("out"), tmp.path().join("out/a"), tmp.path().join("out/b"));
    wait_for(
        DEADLINE,
        || lines_under(&out_a).len() >= 3_000 && !lines_under(&out_b).is_empty(),
        || {
            format!(
                "a wrote {}, b {}; a's log:\n{}",
                lines_under(&out_a).len(),
                lines_under(&out_b).len(),
                a.log_text()
            )
        },
    );
    a.kill();
    let before_kill = lines_under(&out).len();
    edge.send_acknowledged(addr(port), second, DEADLINE);
    let b_before = lines_under(&out_b).len();
    wait_for(
        DEADLINE,
        || lines_under(&out_b).len() >= b_before + 3_000,
        || format!("b took nothing over after the kill; b's log:\n{}", b.log_text()),
    );
    let a = start(tmp.path(), "a", &consumer_topology("a", &cluster));
    wait_for(
        DEADLINE,
        || compare(&lines_under(&out), &lines).0 == 0,
        || {
            format!(
                "{} lines missing; edge log:\n{}\na's log:\n{}\nb's log:\n{}",
                compare(&lines_under(&out), &lines).0,
                edge.log_text(),
                a.log_text(),
                b.log_text()
            )
        },
    );
    assert_eq!(a.terminate(DEADLINE), Some(0));
    assert_eq!(b.terminate(DEADLINE), Some(0));
    assert_eq!(edge.terminate(DEADLINE), Some(0));

    let output = lines_under(&out);
    let (missing, duplicates) = compare(&output, &lines);
    eprintln!(
        "kafka: {} lines, {before_kill} arrived before the kill, {} by a and {} by b in all, {duplicates} duplicates",
        lines.len(),
        lines_under(&out_a).len(),
        lines_under(&out_b).len()
    );
    assert_eq!(missing, 0, "lines lost");

    // The buckets prove the headers: the topic, the Kafka header `origin` set on the other agent,
    // the record key (the line's first digit), and the partition (one per key: records with one
    // key go to one partition).
    let mut partitions_of_key: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for name in ["a", "b"] {
        let bucket_root = out.join(name).join(&cluster.topic).join("edge-1");
        for file in files_under(&out.join(name)) {
            let rel =
                file.strip_prefix(&bucket_root).unwrap_or_else(|_| panic!("{} outside its bucket", file.display()));
            let mut parts = rel.iter().map(|p| p.to_str().unwrap());
            let (key_dir, partition_dir) = (parts.next().unwrap(), parts.next().unwrap());
            let digit = key_dir.strip_prefix("key-").expect("key-<digit>");
            let partition = partition_dir.trim_start_matches('p').to_string();
            assert!(partition.parse::<i32>().is_ok_and(|p| (0..3).contains(&p)), "partition in {}", rel.display());
            partitions_of_key.entry(digit.to_string()).or_default().insert(partition);
            for line in lines_of(&std::fs::read(&file).unwrap()) {
                assert!(line.starts_with(digit), "{line:?} in the bucket of key {digit}");
            }
        }
    }
    assert_eq!(partitions_of_key.len(), 10, "keys 0-9: {partitions_of_key:?}");
    assert!(partitions_of_key.values().all(|p| p.len() == 1), "one partition per key: {partitions_of_key:?}");
}

#[test]
fn a_batch_whose_deliveries_fail_is_rolled_back_and_produced_later() {
    let cluster = Cluster::with_topic(2);
    let Some(mock) = cluster.mock.as_ref() else {
        eprintln!("skipped against a real cluster: its brokers cannot be taken down from here");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitoring) = (free_port(), free_port());
    let lines = numbered_lines(6_000);
    let (first, second) = lines.split_at(3_000);
    let mut edge = start(tmp.path(), "edge", &producer_topology(port, monitoring, &cluster, "2s"));
    let drained = || metric(addr(monitoring), "SINK.to-kafka", "EventDrainSuccessCount").unwrap_or(0);
    edge.send_acknowledged(addr(port), first, DEADLINE);
    wait_for(DEADLINE, || drained() == 3_000, || format!("drained {}; log:\n{}", drained(), edge.log_text()));

    // Every broker down: delivery reports fail after the sink's 2 s timeout, the take is rolled
    // back (and retried, failing again) while the events stay in the channel.
    for broker in 1..=3 {
        mock.broker_down(broker).expect("broker down");
    }
    edge.send_acknowledged(addr(port), second, DEADLINE);
    let rollbacks = || metric(addr(monitoring), "SINK.to-kafka", "RollbackCount").unwrap_or(0);
    wait_for(DEADLINE, || rollbacks() >= 1, || format!("no rollback; log:\n{}", edge.log_text()));
    assert!(metric(addr(monitoring), "SINK.to-kafka", "ConnectionFailedCount").unwrap_or(0) >= 1);
    assert!(drained() < 6_000, "the batch was committed with its brokers down");
    for broker in 1..=3 {
        mock.broker_up(broker).expect("broker up");
    }
    wait_for(DEADLINE, || drained() == 6_000, || format!("drained {}; log:\n{}", drained(), edge.log_text()));
    assert_eq!(edge.terminate(DEADLINE), Some(0));

    // An independent consumer finds every line, with its key and headers.
    let records = cluster.read_all(lines.len());
    let values: Vec<String> = records.iter().map(|r| r.0.clone()).collect();
    let (missing, duplicates) = compare(&values, &lines);
    eprintln!("kafka sink: {} records, {duplicates} duplicates from rolled-back batches", records.len());
    assert_eq!(missing, 0, "lines lost");
    for (value, headers, key) in &records {
        assert_eq!(headers.get("origin").map(String::as_str), Some("edge-1"), "headers of {value:?}");
        assert_eq!(key.as_deref(), Some(&value[..1]), "key of {value:?}");
    }
}

/// Runs `kcat` with `args`, feeding it `input`; answers its standard output. Fails when it exits
/// with an error or runs past `DEADLINE` (through coreutils' `timeout`).
fn kcat(args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("timeout")
        .arg(DEADLINE.as_secs().to_string())
        .arg("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kcat (installed by `make test`)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("kcat runs");
    writer.join().expect("writer").expect("kcat read its input");
    assert!(out.status.success(), "kcat {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("kcat prints UTF-8 here")
}

#[test]
fn kcat_records_relayed_by_an_agent_keep_their_keys_headers_and_order() {
    let cluster = Cluster::with_topic(3);
    let outbound = Cluster::topic_beside(&cluster, 3);
    let tmp = tempfile::tempdir().unwrap();
    // Every Loghub sample, each line keyed by its file's name, produced by the real kcat client
    // with a record header.
    let mut input = Vec::new();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in ["Apache_2k.log", "HDFS_2k.log", "Linux_2k.log", "OpenSSH_2k.log", "Zookeeper_2k.log"] {
        for line in lines_of(&std::fs::read(loghub_dir().join(file)).unwrap()) {
            input.extend_from_slice(format!("{file}\t{line}\n").as_bytes());
            expected.entry(file.to_string()).or_default().push(line);
        }
    }
    let total: usize = expected.values().map(Vec::len).sum();
    kcat(&["-P", "-b", &cluster.brokers, "-t", &cluster.topic, "-K", "\t", "-H", "origin=kcat"], &input);

    // The agent relays the topic into another one: Kafka source → Memory → Kafka sink, the
    // record key carried in the source's `key` header.
    let relay = start(
        tmp.path(),
        "relay",
        &format!(
            r#"Topology(
    agent: "relay",
    sources: {{ "in": (kind: Kafka(brokers: "{brokers}", topics: ["{from}"], group_id: "relay"), channels: ["c"]) }},
    channels: {{ "c": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "out": (kind: Kafka(brokers: "{brokers}", topic: "{to}", key_header: Some("key")), channel: "c") }},
)"#,
            brokers = cluster.brokers,
            from = cluster.topic,
            to = outbound,
        ),
    );
    // kcat reads the outbound topic back: key, headers, value.
    let out = kcat(
        &[
            "-C",
            "-b",
            &cluster.brokers,
            "-t",
            &outbound,
            "-o",
            "beginning",
            "-c",
            &total.to_string(),
            "-f",
            "%k\t%h\t%s\n",
        ],
        b"",
    );
    assert_eq!(relay.terminate(DEADLINE), Some(0));

    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in out.lines() {
        let mut fields = record.splitn(3, '\t');
        let (key, headers, value) = (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap_or(""));
        let headers: BTreeMap<&str, &str> = headers.split(',').filter_map(|h| h.split_once('=')).collect();
        assert_eq!(headers.get("origin"), Some(&"kcat"), "the producer's header, in {record:?}");
        assert_eq!(headers.get("topic"), Some(&cluster.topic.as_str()), "where it was read, in {record:?}");
        assert_eq!(headers.get("key"), Some(&key), "{record:?}");
        assert!(headers.get("offset").is_some_and(|o| o.parse::<u64>().is_ok()), "{record:?}");
        assert!(headers.get("partition").is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p < 3)), "{record:?}");
        got.entry(key.to_string()).or_default().push(value.to_string());
    }
    // Every line once, and in its file's order: one key, one partition, in order at every hop.
    assert_eq!(got, expected);
}
