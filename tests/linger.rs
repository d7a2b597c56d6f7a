//! A source's `linger` is a deadline counted from a batch's first event: a client trickling one
//! line every millisecond into a TCP source (`batch_size: 1000`, `linger: "200ms"`) sees its first
//! lines in the sink's file while it has sent far fewer than `batch_size` lines. (Read as an idle
//! time between reads, as it once was, `linger` never expired under such a trickle: nothing
//! reached the channel before 1000 lines were sent.) With the default `linger` of zero the first
//! line is in the file after a few were sent. The controls show that the observation can see the
//! opposite: with a `linger` far longer than the run, the file stays empty until exactly
//! `batch_size` lines were sent.

mod support;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use support::*;

/// A `Netcat` source on `{port}`.
const NETCAT: &str = r#"Netcat(bind: "127.0.0.1:{port}", ack_every_event: false)"#;
/// A `SyslogTcp` source on `{port}` (LF-framed messages).
const SYSLOG_TCP: &str = r#"SyslogTcp(bind: "127.0.0.1:{port}")"#;

/// The line sent for `body`: itself for `Netcat`, an RFC 5424 message with it as MSG for `SyslogTcp`.
fn framed(kind: &str, body: &str) -> String {
    if kind == SYSLOG_TCP {
        format!("<14>1 2026-12-01T21:00:00.000Z web01 app 42 - - {body}")
    } else {
        body.to_string()
    }
}

/// The source kind's name (`Netcat`, `SyslogTcp`).
fn name(kind: &str) -> &str {
    kind.split('(').next().unwrap_or(kind)
}

/// Starts an agent whose source `r1` is `kind` (`{port}` replaced) with `batch_size` and `linger`
/// (`""`: the default),
/// into a `Memory` channel and a `FileRoll` sink writing under `dir/out`; sends `total` numbered
/// Loghub lines over one connection, one every millisecond (the client's pace), until the files
/// under `dir/out` hold a line. Answers how many lines had been sent when they first did (`None`:
/// all `total` were sent first), having checked that what arrived by then is the first lines,
/// and, after sending the rest at once, that every line arrived exactly once, in order.
fn sent_at_first_output(kind: &str, batch_size: usize, linger: &str, total: usize) -> Option<usize> {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let topology = tmp.path().join("linger.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "linger",
    sources: {{ "r1": (kind: {source}, channels: ["c1"], batch_size: {batch_size}{linger}) }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", roll_interval: "0s"), channel: "c1", batch_size: 1000) }},
)"#,
            source = kind.replace("{port}", &port.to_string()),
            linger = if linger.is_empty() { String::new() } else { format!(r#", linger: "{linger}""#) },
        ),
    );
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = flumen.connect(addr, Duration::from_secs(60));
    let bodies = numbered_lines(total);
    let wire: Vec<Vec<u8>> = bodies.iter().map(|b| format!("{}\n", framed(kind, b)).into_bytes()).collect();
    let out = tmp.path().join("out");
    let mut first = None;
    for (sent, line) in wire.iter().enumerate() {
        let (got, _) = output_lines(&out);
        if !got.is_empty() {
            assert!(got.len() <= sent, "{} lines arrived of {sent} sent", got.len());
            assert_eq!(got[..], bodies[..got.len()], "the first lines arrive first, whole and in order");
            first = Some(sent);
            break;
        }
        stream.write_all(line).expect("the agent reads");
        std::thread::sleep(Duration::from_millis(1));
    }
    let rest: Vec<u8> = wire[first.unwrap_or(total)..].concat();
    stream.write_all(&rest).expect("the agent reads");
    stream.shutdown(Shutdown::Write).unwrap();
    wait_for_output_lines(&flumen, &out, total, Duration::from_secs(60));
    assert_eq!(output_lines(&out).0, bodies, "every line arrived once, in order");
    let log = flumen.log.clone();
    let code = flumen.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "a clean stop; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    first
}

/// One line a millisecond, `batch_size: 1000`, `linger: "200ms"`: the first lines are in the file
/// after about 200 lines, long before the batch could fill.
fn trickle_is_put_within_linger(kind: &str) {
    let sent = sent_at_first_output(kind, 1000, "200ms", 1500);
    println!("{}: the first lines were in the file after {sent:?} lines sent", name(kind));
    let sent = sent.expect("lines arrived before all 1500 were sent");
    assert!(sent < 1000, "the first lines arrived only after {sent} lines were sent (batch_size 1000)");
}

/// Control: `linger: "1h"`, `batch_size: 100`: nothing is in the file before the 100th line was
/// sent, and the batch is put as soon as it is full.
fn long_linger_waits_for_a_full_batch(kind: &str) {
    let sent = sent_at_first_output(kind, 100, "1h", 1000);
    println!("{}, linger 1h: the first lines were in the file after {sent:?} lines sent", name(kind));
    let sent = sent.expect("a full batch is put without waiting for linger");
    assert!(sent >= 100, "lines arrived after only {sent} lines were sent (batch_size 100, linger 1h)");
}

/// The default `linger` (`"0s"`), `batch_size: 1000`: nothing waits for more lines while the
/// source has nothing else to put, so the first line is in the file after a few were sent.
fn default_linger_puts_a_trickle_at_once(kind: &str) {
    let sent = sent_at_first_output(kind, 1000, "", 1500);
    println!("{}, default linger: the first lines were in the file after {sent:?} lines sent", name(kind));
    let sent = sent.expect("lines arrived before all 1500 were sent");
    assert!(sent < 20, "the first line arrived only after {sent} lines were sent (default linger)");
}

#[test]
fn netcat_with_the_default_linger_puts_a_trickle_at_once() {
    default_linger_puts_a_trickle_at_once(NETCAT);
}

#[test]
fn syslog_tcp_with_the_default_linger_puts_a_trickle_at_once() {
    default_linger_puts_a_trickle_at_once(SYSLOG_TCP);
}

#[test]
fn netcat_puts_a_trickle_within_linger_of_its_first_line() {
    trickle_is_put_within_linger(NETCAT);
}

#[test]
fn netcat_with_a_long_linger_puts_only_full_batches() {
    long_linger_waits_for_a_full_batch(NETCAT);
}

#[test]
fn syslog_tcp_puts_a_trickle_within_linger_of_its_first_message() {
    trickle_is_put_within_linger(SYSLOG_TCP);
}

#[test]
fn syslog_tcp_with_a_long_linger_puts_only_full_batches() {
    long_linger_waits_for_a_full_batch(SYSLOG_TCP);
}
