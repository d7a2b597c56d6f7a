//! The pause a reload causes on an unchanged path: acknowledgement latency of one `Netcat`
//! connection (a line sent, its `OK` awaited, the next line) into a `RocksDb` channel (`sync: true`, then `sync: false`), for 10 s
//! without reloads and 10 s with a SIGHUP reload every 250 ms that changes other components (a
//! second source's options, a `Memory` channel's capacity, a sink's batch size, in turn).
//!
//! `cargo bench --bench reload_pause` (after `cargo build --release`); prints p50, p99, p99.9 and
//! the maximum of both phases, measured in the same run.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn topology(dir: &std::path::Path, edge: u16, side: u16, turn: usize, sync: bool) -> String {
    let side_max = [512, 1024, 512, 512][turn % 4];
    let mem = [10_000, 10_000, 20_000, 10_000][turn % 4];
    let batch = [100, 100, 100, 200][turn % 4];
    format!(
        r#"(
    agent: "pause",
    sources: {{
        "edge": (kind: Netcat(bind: "127.0.0.1:{edge}", max_line_length: 65536), channels: ["disk"], linger: "0s"),
        "side": (kind: Netcat(bind: "127.0.0.1:{side}", max_line_length: {side_max}), channels: ["mem"]),
    }},
    channels: {{
        "disk": RocksDb(dir: "{d}/disk", sync: {sync}),
        "mem": Memory(capacity: {mem}),
    }},
    sinks: {{
        "out": (kind: Null(), channel: "disk"),
        "side_out": (kind: Null(), channel: "mem", batch_size: {batch}),
    }},
)"#,
        d = dir.display()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn phase(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    lines: &[String],
    length: Duration,
    mut tick: impl FnMut(),
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut next_tick = Instant::now() + Duration::from_millis(250);
    let mut answer = String::new();
    let mut i = 0;
    while start.elapsed() < length {
        let sent = Instant::now();
        stream.write_all(lines[i % lines.len()].as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
        answer.clear();
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, "OK\n", "the connection must stay up");
        latencies.push(sent.elapsed());
        i += 1;
        if Instant::now() >= next_tick {
            tick();
            next_tick += Duration::from_millis(250);
        }
    }
    latencies.sort();
    latencies
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for sync in [true, false] {
        measure(sync);
    }
}

fn measure(sync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pause.ron");
    let (edge, side) = (free_port(), free_port());
    std::fs::write(&file, topology(dir.path(), edge, side, 0, sync)).unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["run", "--quiet", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", edge)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the agent does not accept: {e}"),
        }
    };
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let lines: Vec<String> =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/data/loghub/HDFS_2k.log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    let pid = child.id() as i32;
    let quiet = phase(&mut stream, &mut reader, &lines, Duration::from_secs(10), || {});
    let mut turn = 0;
    let reloading = phase(&mut stream, &mut reader, &lines, Duration::from_secs(10), || {
        turn += 1;
        std::fs::write(&file, topology(dir.path(), edge, side, turn, sync)).unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    });
    let _ = child.kill();
    let _ = child.wait();
    let reloads = std::fs::read_to_string(dir.path().join("log")).unwrap().matches("reloaded:").count();
    println!("reload pause on an unchanged Netcat -> RocksDb (sync: {sync}) path, acknowledgement latency per line:");
    for (name, l) in [("no reloads", &quiet), ("reload every 250 ms", &reloading)] {
        println!(
            "  {name:<20} {:>7} lines  p50 {:>9.3?}  p99 {:>9.3?}  p99.9 {:>9.3?}  max {:>9.3?}",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999),
            l[l.len() - 1]
        );
    }
    println!("  reloads applied: {reloads} (the second phase sent {turn} SIGHUPs)");
}
