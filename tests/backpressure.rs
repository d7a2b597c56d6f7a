//! Back-pressure: a capacity-100 channel in front of a slow sink (an fsync per 100 events). The
//! sender floods 64 MB of Loghub lines over TCP: its writes block while the agent is behind, the
//! channel never holds more than its capacity, the agent's memory stays bounded, and in the end
//! every line arrives.

mod support;

use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const BYTES: usize = 64 << 20;
/// The channel's capacity in events.
const CAPACITY: u64 = 100;

/// `ChannelSize` of `channel`, read from the agent's `GET /metrics`.
fn channel_size(monitoring: SocketAddr, channel: &str) -> Option<u64> {
    metric(monitoring, &format!("CHANNEL.{channel}"), "ChannelSize")
}

#[test]
fn full_channel_slows_the_sender_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let topology = tmp.path().join("backpressure.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "backpressure",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false),
               channels: ["c1"], batch_size: 100),
    }},
    channels: {{ "c1": Memory(capacity: {CAPACITY}, transaction_capacity: 100) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", sync: true), channel: "c1", batch_size: 100) }},
)"#
        ),
    );
    let base = numbered_lines(10_000);
    let mut input = Vec::new();
    let mut bytes = 0;
    while bytes < BYTES {
        let line = format!("{} {}", input.len(), base[input.len() % base.len()]);
        bytes += line.len() + 1;
        input.push(line);
    }
    let payload = joined(&input);
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("flumen.log"));
    let mut stream = flumen.connect(format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(60));
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    stream.set_nonblocking(true).unwrap();

    // `blocked`: writes that found the socket full; `sampled`: of those, the ones at which the
    // monitoring answered; `full`: of those, the ones at which the channel held its capacity, so
    // the agent was not reading because its channel was full.
    let (mut sent, mut blocked, mut sampled, mut full, mut max_size) = (0usize, 0usize, 0usize, 0usize, 0u64);
    let out = tmp.path().join("out");
    while sent < payload.len() {
        match stream.write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked += 1;
                if let Some(size) = channel_size(monitoring, "c1") {
                    sampled += 1;
                    max_size = max_size.max(size);
                    if size >= CAPACITY {
                        full += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("send failed after {sent} bytes: {e}; log:\n{}", flumen.log_text()),
        }
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let delivered_when_sent = output_lines(&out).0.len();
    wait_for(
        Duration::from_secs(300),
        || output_lines(&out).0.len() >= input.len(),
        || format!("{} of {} lines delivered", output_lines(&out).0.len(), input.len()),
    );
    let peak_kib = flumen.peak_rss_kib();
    eprintln!(
        "{} lines, {} MB: sender blocked {blocked} times, {full} of {sampled} sampled blocks with the \
         channel at its capacity, channel size at most {max_size}, {delivered_when_sent} lines out when \
         the sender finished, flumen peak RSS {} MiB",
        input.len(),
        BYTES >> 20,
        peak_kib / 1024
    );
    assert_eq!(flumen.terminate(Duration::from_secs(30)), Some(0));
    assert!(sampled > 0, "the monitoring answered while the sender was blocked ({blocked} blocks)");
    assert!(
        full > 0,
        "the sender was blocked while the channel was full: {full} of {sampled} sampled blocks \
         (channel size at most {max_size})"
    );
    assert!(max_size <= CAPACITY, "the channel never holds more than its capacity ({max_size})");
    assert!(peak_kib < 48 * 1024, "memory stays bounded: peak RSS {peak_kib} KiB for {} MiB sent", BYTES >> 20);
    let (lines, _) = output_lines(&out);
    assert!(multiset(lines) == multiset(input), "every line arrives exactly once");
}
