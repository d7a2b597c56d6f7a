//! Syslog parsing throughput: every Loghub line wrapped as an RFC 5424 message (with structured
//! data) and as an RFC 3164 message, parsed into events; criterion reports events per second.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flumen::source::syslog::parse;

/// 2026-11-23T01:00:00Z in milliseconds.
const NOW_MS: i64 = 1_795_395_600_000;

fn loghub_lines() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/data/loghub");
    let mut lines = Vec::new();
    for f in ["Apache_2k.log", "HDFS_2k.log", "Linux_2k.log", "OpenSSH_2k.log", "Zookeeper_2k.log"] {
        let text = std::fs::read_to_string(dir.join(f)).expect("the Loghub samples are in the repository");
        lines.extend(text.lines().map(|l| l.trim_end_matches('\r').to_string()));
    }
    lines
}

fn parsing(c: &mut Criterion) {
    let lines = loghub_lines();
    let rfc5424: Vec<Bytes> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Bytes::from(format!(
                "<134>1 2026-11-23T01:19:51.{:06}+00:00 edge-{} loghub {} ID{} [origin@32473 software=\"loghub\" line=\"{i}\"] {l}",
                i % 1_000_000,
                i % 16,
                1000 + i % 50,
                i % 7
            ))
        })
        .collect();
    let rfc3164: Vec<Bytes> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            Bytes::from(format!("<134>Nov {:>2} 01:19:51 edge-{} loghub[{}]: {l}", 1 + i % 28, i % 16, i % 50))
        })
        .collect();
    let mut group = c.benchmark_group("syslog parse");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, messages) in [("rfc5424", &rfc5424), ("rfc3164", &rfc3164)] {
        group.throughput(Throughput::Elements(messages.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut valid = 0;
                for m in messages {
                    valid += usize::from(parse::to_event(m.clone(), NOW_MS).1);
                }
                assert_eq!(valid, messages.len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parsing);
criterion_main!(benches);
