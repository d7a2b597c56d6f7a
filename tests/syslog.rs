//! Syslog and UDP sources of the real `flumen` binary, fed by the real `logger` client
//! (util-linux): Loghub lines as message text, over TCP (RFC 5424, octet-counted and LF-framed) and
//! UDP (RFC 3164). Bodies go through one channel to a `FileRoll` sink (checked line for line), the
//! headers through another to a `Logger` sink (checked in the agent's log). A datagram that is not
//! syslog is kept whole, flagged and counted in `EventMalformedCount`. A `NetcatUdp` source gets
//! Loghub lines as datagrams from a plain UDP socket.

mod support;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The lines of one Loghub sample (LF-split, CR removed).
fn sample(name: &str) -> Vec<String> {
    lines_of(&std::fs::read(loghub_dir().join(name)).expect("the Loghub samples are in the repository"))
}

/// A topology whose source `r1` is `kind`, replicating into a `FileRoll` sink (`out/bodies`) and
/// a `Logger` sink, with monitoring on `metrics_port`.
fn topology(dir: &Path, kind: &str, metrics_port: u16) -> String {
    let path = dir.join("syslog.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "syslog",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: {kind}, channels: ["bodies", "headers"], batch_size: 200),
    }},
    channels: {{
        "bodies": Memory(capacity: 20000, transaction_capacity: 1000),
        "headers": Memory(capacity: 20000, transaction_capacity: 1000),
    }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out/bodies", roll_interval: "0s"), channel: "bodies"),
        "k2": (kind: Logger(max_body_bytes: 0), channel: "headers"),
    }},
)"#
        ),
    );
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// A counter of `SOURCE.r1` from the agent's `GET /metrics`.
fn source_counter(monitoring: SocketAddr, name: &str) -> Option<u64> {
    metric(monitoring, "SOURCE.r1", name)
}

/// The headers (as the `Logger` sink shows them, `{"key": "value", ...}`) of every logged event.
fn logged_headers(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let start = l.find("Event: { headers:{")? + "Event: { headers:".len();
            let end = l.rfind("} body:")?;
            Some(l[start..=end].to_string())
        })
        .collect()
}

/// Runs `logger` with `args`, the message lines in a file; panics with its stderr on failure.
fn logger(args: &[&str], lines: &[String], dir: &Path) {
    let file = dir.join("messages.txt");
    std::fs::write(&file, joined(lines)).expect("write the messages");
    let out = Command::new("logger")
        .args(args)
        .args(["-f", file.to_str().expect("UTF-8 temp path")])
        .output()
        .expect("run logger (util-linux)");
    assert!(out.status.success(), "logger {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn wait_for_lines(flumen: &Flumen, dir: &Path, n: usize) {
    wait_for_output_lines(flumen, dir, n, WAIT);
}

/// Waits until the agent's log says `what`.
fn wait_for_log(flumen: &Flumen, what: &str) {
    wait_for_log_line(flumen, what, WAIT);
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

/// The value of `key` in headers shown as `{"key": "value", ...}`.
fn header<'a>(shown: &'a str, key: &str) -> Option<&'a str> {
    let at = shown.find(&format!("\"{key}\": \""))? + key.len() + 5;
    shown[at..].split('"').next()
}

#[test]
fn logger_rfc5424_over_tcp_octet_counted_and_lf_framed() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let kind = format!("SyslogTcp(bind: \"127.0.0.1:{port}\", max_message_length: 4096)");
    let topology = topology(tmp.path(), &kind, metrics_port);
    let mut flumen = Flumen::start(&["run", "--quiet", &topology], &tmp.path().join("flumen.log"));
    drop(flumen.connect(format!("127.0.0.1:{port}").parse().unwrap(), WAIT));

    let (counted, framed) = (sample("OpenSSH_2k.log"), sample("Linux_2k.log"));
    let port = port.to_string();
    let common = [
        "--tcp",
        "--rfc5424",
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-t",
        "flumen-test",
        "--id=4242",
        "-p",
        "local0.info",
        "--msgid",
        "ID7",
        "--sd-id",
        "origin@32473",
        "--sd-param",
        "software=\"loghub\"",
    ];
    let before = now_ms();
    logger(&[&common[..], &["--octet-count"]].concat(), &counted, tmp.path());
    let bodies = tmp.path().join("out/bodies");
    wait_for_lines(&flumen, &bodies, counted.len());
    logger(&common, &framed, tmp.path());
    let all = counted.len() + framed.len();
    wait_for_lines(&flumen, &bodies, all);
    let after = now_ms();

    let (lines, _) = output_lines(&bodies);
    assert!(multiset(lines) == multiset(counted.iter().chain(&framed).cloned()), "the bodies are the messages");

    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    wait_for(
        WAIT,
        || logged_headers(&flumen.log_text()).len() >= all,
        || format!("the Logger sink showed {} of {all} events", logged_headers(&flumen.log_text()).len()),
    );
    for shown in logged_headers(&flumen.log_text()) {
        for (key, value) in
            [("facility", "16"), ("severity", "6"), ("app_name", "flumen-test"), ("proc_id", "4242"), ("msg_id", "ID7")]
        {
            assert_eq!(header(&shown, key), Some(value), "{key} in {shown}");
        }
        assert!(shown.contains(r#"[origin@32473 software=\"loghub\"]"#), "structured data in {shown}");
        assert!(header(&shown, "hostname").is_some_and(|h| !h.is_empty()), "hostname in {shown}");
        let ts: i64 = header(&shown, "timestamp").and_then(|t| t.parse().ok()).expect("a numeric timestamp");
        assert!((before - 1000..=after + 1000).contains(&ts), "timestamp {ts} is when logger sent it");
        assert!(header(&shown, "syslog_invalid").is_none(), "{shown}");
    }
    assert_eq!(source_counter(monitoring, "EventAcceptedCount"), Some(all as u64));
    assert_eq!(source_counter(monitoring, "EventMalformedCount"), Some(0));
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn logger_rfc3164_over_udp_and_a_datagram_that_is_not_syslog_is_kept_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let topology = topology(tmp.path(), &format!("SyslogUdp(bind: \"127.0.0.1:{port}\")"), metrics_port);
    let flumen = Flumen::start(&["run", "--quiet", &topology], &tmp.path().join("flumen.log"));
    wait_for_log(&flumen, "receiving datagrams");

    // UDP has no flow control: send in chunks small enough for the socket's receive buffer, each
    // once the previous one arrived.
    let input = sample("Apache_2k.log");
    let bodies = tmp.path().join("out/bodies");
    let port = port.to_string();
    for (i, chunk) in input.chunks(100).enumerate() {
        logger(
            &["--udp", "--rfc3164", "-n", "127.0.0.1", "-P", &port, "-t", "apache", "--id=80", "-p", "daemon.err"],
            chunk,
            tmp.path(),
        );
        wait_for_lines(&flumen, &bodies, (i * 100 + chunk.len()).min(input.len()));
    }
    let junk = format!("no PRI here: {}", sample("HDFS_2k.log")[0]);
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(junk.as_bytes(), format!("127.0.0.1:{port}")).unwrap();
    wait_for_lines(&flumen, &bodies, input.len() + 1);

    let (lines, _) = output_lines(&bodies);
    let mut want = input.clone();
    want.push(junk.clone());
    assert!(multiset(lines) == multiset(want), "the bodies are the messages, and the junk datagram whole");

    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    wait_for(
        WAIT,
        || source_counter(monitoring, "EventMalformedCount") == Some(1),
        || format!("EventMalformedCount is {:?}, not 1", source_counter(monitoring, "EventMalformedCount")),
    );
    wait_for(
        WAIT,
        || logged_headers(&flumen.log_text()).len() > input.len(),
        || format!("the Logger sink showed {} events", logged_headers(&flumen.log_text()).len()),
    );
    let shown = logged_headers(&flumen.log_text());
    let (invalid, valid): (Vec<_>, Vec<_>) = shown.iter().partition(|h| header(h, "syslog_invalid").is_some());
    assert_eq!(invalid, [r#"{"syslog_invalid": "true"}"#]);
    for h in valid {
        for (key, value) in [("facility", "3"), ("severity", "3"), ("app_name", "apache"), ("proc_id", "80")] {
            assert_eq!(header(h, key), Some(value), "{key} in {h}");
        }
        assert!(header(h, "hostname").is_some() && header(h, "timestamp").is_some(), "{h}");
    }
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn netcat_udp_makes_one_event_per_datagram() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let topology = topology(tmp.path(), &format!("NetcatUdp(bind: \"127.0.0.1:{port}\")"), metrics_port);
    let flumen = Flumen::start(&["run", "--quiet", &topology], &tmp.path().join("flumen.log"));
    wait_for_log(&flumen, "receiving datagrams");

    let input = sample("Zookeeper_2k.log");
    let bodies = tmp.path().join("out/bodies");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, chunk) in input.chunks(100).enumerate() {
        for (j, line) in chunk.iter().enumerate() {
            // Line endings are optional: none, LF or CRLF.
            let ending = ["", "\n", "\r\n"][j % 3];
            socket.send_to(format!("{line}{ending}").as_bytes(), format!("127.0.0.1:{port}")).unwrap();
        }
        wait_for_lines(&flumen, &bodies, i * 100 + chunk.len());
    }
    let (lines, _) = output_lines(&bodies);
    assert!(multiset(lines) == multiset(input.iter().cloned()), "one event per datagram, line endings removed");
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    assert_eq!(source_counter(monitoring, "EventMalformedCount"), Some(0));
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn over_tcp_unparsable_and_over_long_messages_are_kept_flagged_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let kind = format!("SyslogTcp(bind: \"127.0.0.1:{port}\", max_message_length: 300)");
    let topology = topology(tmp.path(), &kind, metrics_port);
    let mut flumen = Flumen::start(&["run", "--quiet", &topology], &tmp.path().join("flumen.log"));
    let mut stream = flumen.connect(format!("127.0.0.1:{port}").parse().unwrap(), WAIT);

    let hdfs = sample("HDFS_2k.log");
    let long = hdfs.iter().find(|l| l.len() > 400).expect("HDFS has lines over 400 bytes");
    let short = &hdfs[0];
    let octets = |m: String| format!("{} {m}", m.len());
    let head = "<29>1 2008-11-09T20:35:18.000Z dn-1 datanode 148 - -";
    let mut wire = String::new();
    wire += &octets(format!("{head} {short}"));
    wire += &format!("not syslog: {short}\n");
    wire += &octets(format!("{head} {long}"));
    wire += &format!("{head} {short}\n");
    stream.write_all(wire.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();

    let bodies = tmp.path().join("out/bodies");
    wait_for_lines(&flumen, &bodies, 4);
    let (lines, _) = output_lines(&bodies);
    let cut = &format!("{head} {long}")[head.len() + 1..300];
    let want = [short.clone(), format!("not syslog: {short}"), cut.to_string(), short.clone()];
    assert!(multiset(lines.clone()) == multiset(want), "bodies: {lines:#?}");

    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    wait_for(
        WAIT,
        || source_counter(monitoring, "EventMalformedCount") == Some(2),
        || format!("EventMalformedCount is {:?}, not 2", source_counter(monitoring, "EventMalformedCount")),
    );
    wait_for(
        WAIT,
        || logged_headers(&flumen.log_text()).len() >= 4,
        || format!("the Logger sink showed {} of 4 events", logged_headers(&flumen.log_text()).len()),
    );
    let shown = logged_headers(&flumen.log_text());
    assert_eq!(shown.iter().filter(|h| h.as_str() == r#"{"syslog_invalid": "true"}"#).count(), 1, "{shown:#?}");
    let truncated: Vec<_> = shown.iter().filter(|h| header(h, "truncated") == Some("true")).collect();
    assert_eq!(truncated.len(), 1, "{shown:#?}");
    assert_eq!(header(truncated[0], "app_name"), Some("datanode"), "a cut message keeps its parsed header");
    let parsed = shown.iter().filter(|h| header(h, "timestamp") == Some("1226262918000")).count();
    assert_eq!(parsed, 3, "{shown:#?}");
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn keep_fields_makes_the_whole_message_the_body() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let kind = format!(
        "SyslogUdp(bind: \"127.0.0.1:{port}\", keep_fields: true, receive_buffer_bytes: Some(1048576), max_message_length: 1000)"
    );
    let topology = topology(tmp.path(), &kind, metrics_port);
    let flumen = Flumen::start(&["run", "--quiet", &topology], &tmp.path().join("flumen.log"));
    wait_for_log(&flumen, "receiving datagrams");

    let messages: Vec<String> = sample("OpenSSH_2k.log")[..50]
        .iter()
        .enumerate()
        .map(|(i, l)| format!("<38>1 2026-11-23T01:00:{:02}.5Z combo sshd {i} - - {l}", i % 60))
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for m in &messages {
        socket.send_to(m.as_bytes(), format!("127.0.0.1:{port}")).unwrap();
    }
    let bodies = tmp.path().join("out/bodies");
    wait_for_lines(&flumen, &bodies, messages.len());
    let (lines, _) = output_lines(&bodies);
    assert!(multiset(lines) == multiset(messages.iter().cloned()), "the bodies are the whole messages");
    wait_for(
        WAIT,
        || logged_headers(&flumen.log_text()).len() >= messages.len(),
        || format!("the Logger sink showed {} events", logged_headers(&flumen.log_text()).len()),
    );
    for h in logged_headers(&flumen.log_text()) {
        assert_eq!(header(&h, "app_name"), Some("sshd"), "{h}");
        assert!(header(&h, "timestamp").is_some_and(|t| t.ends_with("500")), "{h}");
    }
    assert_eq!(flumen.terminate(WAIT), Some(0));
}
