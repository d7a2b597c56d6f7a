//! Kafka `tls` and `sasl` of the real `flumen` binary, against what can run here: librdkafka's mock
//! cluster speaks neither TLS nor SASL (librdkafka 2.10's rdkafka_mock_handlers.c has no
//! SaslHandshake or SaslAuthenticate handler, and its brokers listen on plain TCP), so
//! - TLS: the `Kafka` sink's librdkafka (OpenSSL) completes a TLS handshake with
//!   `openssl s_server` whose certificate chains to `tls.ca` (its first Kafka request arrives
//!   decrypted), and refuses it (logging "certificate verify failed") when `ca` is another CA: the
//!   handshake itself, not a Kafka conversation;
//! - SASL: a sink with `sasl` against the mock cluster speaks SASL first (the mock does not
//!   answer it) and delivers nothing, while the same sink without `sasl` delivers every line: the
//!   option reaches librdkafka. Authentication itself is tested against a real broker only.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use support::pki::{Ca, Usage};
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent: Netcat (acknowledged) → Memory → Kafka sink with `security` (RON fields);
/// sends `lines`.
fn agent(dir: &Path, name: &str, brokers: &str, topic: &str, security: &str, lines: &[String]) -> Flumen {
    let port = free_port();
    let topology = dir.join(format!("{name}.ron"));
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "{name}",
    sources: {{ "in": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: true), channels: ["c"]) }},
    channels: {{ "c": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "out": (kind: Kafka(brokers: "{brokers}", topic: "{topic}", timeout: "3s", {security}), channel: "c", batch_size: 100) }},
)"#
        ),
    );
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    flumen.send_acknowledged(addr, lines, DEADLINE);
    flumen
}

#[test]
fn the_kafka_sink_handshakes_tls_with_the_right_ca_and_refuses_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = Ca::new("ca CA");
    let ca_pem = ca.write(&dir.join("ca.pem"));
    let other_pem = Ca::new("other CA").write(&dir.join("other.pem"));
    ca.issue_to(dir, "broker", "broker", &["localhost"], Usage::Server, false);
    let lines: Vec<String> = loghub_lines().into_iter().take(10).collect();

    for (name, ca, handshakes) in [("wrongca", &other_pem, false), ("rightca", &ca_pem, true)] {
        let port = free_port();
        let out = dir.join(format!("{name}.s_server"));
        let _server = Server(
            Command::new("openssl")
                .args(["s_server", "-brief", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
                .arg(dir.join("broker.pem"))
                .arg("-key")
                .arg(dir.join("broker.key"))
                .stdin(Stdio::piped())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(dir.join(format!("{name}.s_server.err"))).unwrap())
                .spawn()
                .expect("openssl runs (make test installs it)"),
        );
        wait_for(DEADLINE, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), || "s_server".into());
        let tls = format!("tls: Some(TlsClient(ca: Some({:?})))", ca.display().to_string());
        let flumen = agent(dir, name, &format!("localhost:{port}"), "t", &tls, &lines);
        let server_text = || {
            let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
            read(&out) + &read(&dir.join(format!("{name}.s_server.err")))
        };
        if handshakes {
            // The client's first Kafka request (ApiVersion, client id "rdkafka") arrives decrypted.
            wait_for(
                DEADLINE,
                || server_text().contains("Protocol version: TLSv1.3") && server_text().contains("librdkafka"),
                || format!("no handshake; s_server:\n{}\nflumen:\n{}", server_text(), flumen.log_text()),
            );
            assert!(!flumen.log_text().contains("certificate verify failed"), "{}", flumen.log_text());
        } else {
            wait_for(
                DEADLINE,
                || flumen.log_text().contains("certificate verify failed"),
                || format!("no refused handshake; flumen:\n{}\ns_server:\n{}", flumen.log_text(), server_text()),
            );
            assert!(!server_text().contains("librdkafka"), "no request got through: {}", server_text());
        }
    }
}

#[test]
fn a_sink_with_sasl_speaks_sasl_and_without_it_delivers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).expect("mock cluster");
    let topic = "sasl-test";
    mock.create_topic(topic, 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let all = loghub_lines();
    let (refused, lines) = (all[..100].to_vec(), all[100..200].to_vec());
    std::fs::write(dir.join("kafka.password"), "pw-31d9-marker\n").unwrap();

    let sasl = r#"sasl: Some(Sasl(mechanism: ScramSha256, username: "flumen", password: "file:kafka.password"))"#;
    let flumen = agent(dir, "sasl", &brokers, topic, sasl, &refused);
    // librdkafka's own words: it connected with SASL_PLAINTEXT and asked for a SCRAM handshake.
    wait_for(
        DEADLINE,
        || {
            let log = flumen.log_text();
            log.contains("sasl_plaintext://")
                && log.contains("SASL Handshake not supported by broker (required by mechanism SCRAM-SHA-256)")
        },
        || format!("no SASL failure in the log:\n{}", flumen.log_text()),
    );
    assert!(!flumen.log_text().contains("pw-31d9-marker"), "{}", flumen.log_text());
    drop(flumen);

    // The control: the same sink without sasl delivers every line to the mock cluster.
    let flumen = agent(dir, "plain", &brokers, topic, "", &lines);
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    use rdkafka::Message;
    consumer.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while got.len() < lines.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {}; log:\n{}",
            got.len(),
            lines.len(),
            flumen.log_text()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    // One partition: had the SASL run delivered, its lines would come first.
    assert_eq!(got, lines, "the SASL run delivered nothing, this one everything, in order");
}
