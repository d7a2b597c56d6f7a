//! Incremental reload under continuous load, through the real binary: `flumen run --watch`
//! reloads its topology file 20 times (sinks, channels, interceptors and sources added, changed and
//! removed, one invalid file) while one connection streams acknowledged Loghub lines into an
//! unchanged `Netcat` source and a `RocksDb` channel. The connection must never drop, no
//! acknowledged line may be lost, none of that path duplicated.
//!
//! Negative controls: the same checks around a Flume-style restart of the process see the
//! connection drop; a reload that replaces a loaded `Memory` channel with `--drain-timeout 0s`
//! (documented to lose what the old channel still holds) sees acknowledged lines lost.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use support::{free_port, line_index, metric, numbered_lines, wait_for, write_file, Acks, Delivery, Flumen};

/// One connection writing `lines` in chunks of 500 with a pause between (continuous load rather
/// than one burst), until told to stop; a thread counts the `OK`s.
struct PacedStream {
    writer: Option<JoinHandle<usize>>,
    reader: Option<JoinHandle<(usize, bool)>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
}

impl PacedStream {
    fn open(stream: TcpStream, lines: Arc<Vec<String>>) -> PacedStream {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let writing_done = Arc::new(AtomicBool::new(false));
        let mut reader_stream = stream.try_clone().expect("clone the connection");
        let (stop_w, done_w) = (stop.clone(), writing_done.clone());
        let writer = std::thread::spawn(move || {
            let mut stream = stream;
            let mut sent = 0;
            for chunk in lines.chunks(500) {
                if stop_w.load(Ordering::SeqCst) {
                    break;
                }
                if stream.write_all(&support::joined(chunk)).is_err() {
                    return sent;
                }
                sent += chunk.len();
                std::thread::sleep(Duration::from_millis(10));
            }
            done_w.store(true, Ordering::SeqCst);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            sent
        });
        let count = acked.clone();
        let reader = std::thread::spawn(move || {
            let (mut acks, mut buf) = (Acks::default(), vec![0u8; 64 * 1024]);
            loop {
                match reader_stream.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
                        count.store(acks.count, Ordering::SeqCst);
                    }
                    // The agent closed the connection (or it broke): a drop unless we had finished.
                    _ => return (acks.count, !writing_done.load(Ordering::SeqCst)),
                }
            }
        });
        PacedStream { writer: Some(writer), reader: Some(reader), stop, acked }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops writing and waits for the last acknowledgement: (sent, acknowledged, dropped).
    fn finish(mut self) -> (usize, usize, bool) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self.writer.take().expect("writer").join().expect("writer thread");
        let (acked, dropped) = self.reader.take().expect("reader").join().expect("reader thread");
        (sent, acked, dropped)
    }
}

/// The knobs the reloads turn.
#[derive(Clone)]
struct Shape {
    edge: u16,
    side_a: u16,
    side_b: Option<u16>,
    monitoring: u16,
    extra: bool,
    out_batch: usize,
    static_value: String,
    mem_capacity: u64,
    disk_capacity: u64,
    /// The edge path's channel: `RocksDb` (the test) or `Memory` (the loss control).
    edge_channel: String,
    side_a_max_line: usize,
}

fn render(dir: &Path, s: &Shape) -> String {
    let d = |p: &str| support::files::ron_path(&dir.join(p));
    let extra_ch = if s.extra { r#", "extra_ch""# } else { "" };
    let side_b = s.side_b.map_or(String::new(), |p| {
        format!(r#""side_b": (kind: Netcat(bind: "127.0.0.1:{p}", max_line_length: 65536), channels: ["mem"]),"#)
    });
    let extra = if s.extra {
        r#""extra_ch": Memory(capacity: 100000, transaction_capacity: 1000),"#.to_string()
    } else {
        String::new()
    };
    let extra_sink = if s.extra {
        format!(r#""extra": (kind: FileRoll(dir: {}, roll_interval: "0s"), channel: "extra_ch"),"#, d("extra"))
    } else {
        String::new()
    };
    let edge_channel = s.edge_channel.replace("CAPACITY", &s.disk_capacity.to_string()).replace("DIR", &d("disk"));
    format!(
        r#"(
    agent: "reloaded",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{
        "edge": (
            kind: Netcat(bind: "127.0.0.1:{edge}", max_line_length: 65536),
            channels: ["disk"{extra_ch}],
            interceptors: [Static(key: "version", value: "{value}")],
            batch_size: 500,
        ),
        "side_a": (kind: Netcat(bind: "127.0.0.1:{side_a}", max_line_length: {side_a_max}), channels: ["mem"]),
        {side_b}
    }},
    channels: {{
        "disk": {edge_channel},
        "mem": Memory(capacity: {mem}, transaction_capacity: 1000),
        {extra}
    }},
    sinks: {{
        "out": (kind: FileRoll(dir: {out}, roll_interval: "0s"), channel: "disk", batch_size: {batch}),
        "side_out": (kind: FileRoll(dir: {side_out}, roll_interval: "0s"), channel: "mem"),
        {extra_sink}
    }},
)
"#,
        mon = s.monitoring,
        edge = s.edge,
        side_a = s.side_a,
        side_a_max = s.side_a_max_line,
        value = s.static_value,
        mem = s.mem_capacity,
        batch = s.out_batch,
        out = d("out"),
        side_out = d("side_out"),
    )
}

/// Replaces the topology file the way editors do: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("ron.tmp");
    write_file(&tmp, text);
    std::fs::rename(&tmp, path).expect("rename the new topology into place");
}

fn reloads_seen(monitoring: SocketAddr) -> u64 {
    metric(monitoring, "AGENT", "ReloadSuccessCount").unwrap_or(0)
        + metric(monitoring, "AGENT", "ReloadFailureCount").unwrap_or(0)
}

const ROCKSDB: &str = r#"RocksDb(dir: DIR, capacity: CAPACITY, transaction_capacity: 1000)"#;

fn base_shape(edge_channel: &str) -> Shape {
    Shape {
        edge: free_port(),
        side_a: free_port(),
        side_b: Some(free_port()),
        monitoring: free_port(),
        extra: false,
        out_batch: 100,
        static_value: "v0".into(),
        mem_capacity: 10_000,
        disk_capacity: 1_000_000,
        edge_channel: edge_channel.into(),
        side_a_max_line: 65536,
    }
}

/// The 20 reloads: each a change of the previous shape, or `None` for an invalid file.
fn steps(base: &Shape) -> Vec<Option<Shape>> {
    let side_b = base.side_b;
    let mut s = base.clone();
    let mut out = Vec::new();
    let mut step = |f: &dyn Fn(&mut Shape)| {
        f(&mut s);
        out.push(Some(s.clone()));
    };
    step(&|s| s.extra = true); // add a sink and its channel
    step(&|s| s.out_batch = 250); // change a sink's option
    step(&|s| s.static_value = "v1".into()); // change an interceptor
    step(&|s| s.side_b = None); // remove a source
    step(&|s| s.side_b = side_b); // add a source
    step(&|s| s.mem_capacity = 20_000); // change a channel's capacity
    step(&|_| {}); // placeholder for the invalid file, replaced below
    step(&|s| s.disk_capacity = 2_000_000); // the RocksDb channel's capacity: reopened on its dir
    step(&|s| s.extra = false);
    step(&|s| s.out_batch = 100);
    step(&|s| s.static_value = "v2".into());
    step(&|s| s.side_b = None);
    step(&|s| s.side_b = side_b);
    step(&|s| s.mem_capacity = 5_000);
    step(&|s| s.extra = true);
    step(&|s| s.disk_capacity = 1_000_000);
    step(&|s| s.static_value = "v3".into());
    step(&|s| s.out_batch = 500);
    step(&|s| s.mem_capacity = 10_000);
    step(&|s| s.extra = false);
    out[6] = None; // an invalid file: nothing changes
    out
}

/// Writes `text` as the topology `file` and starts `flumen run --quiet FLAGS... FILE` on it, its
/// log beside the file.
fn launch(file: &Path, text: &str, flags: &[&str]) -> Flumen {
    write_file(file, text);
    let file_arg = file.to_str().expect("a UTF-8 path");
    let args: Vec<&str> = ["run", "--quiet"].iter().copied().chain(flags.iter().copied()).chain([file_arg]).collect();
    Flumen::start(&args, &file.with_file_name("flumen.log"))
}

/// `127.0.0.1:port`.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends `n` acknowledged lines to a side source on a connection of their own.
fn side_burst(flumen: &mut Flumen, port: u16, lines: &[String]) {
    flumen.send_acknowledged(local(port), lines, Duration::from_secs(60));
}

#[test]
fn twenty_reloads_under_load_keep_the_connection_and_every_acknowledged_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.ron");
    let base = base_shape(ROCKSDB);
    let mut flumen = launch(&file, &render(dir.path(), &base), &["--watch"]);
    let monitoring = local(base.monitoring);
    let edge = local(base.edge);
    let lines = Arc::new(numbered_lines(2_500_000));
    let stream = PacedStream::open(flumen.connect(edge, Duration::from_secs(60)), lines.clone());
    let side_lines: Vec<String> = numbered_lines(10_000).into_iter().map(|l| format!("side {l}")).collect();
    let mut side_sent = 0;

    for (i, step) in steps(&base).into_iter().enumerate() {
        let before = stream.acked();
        match &step {
            Some(shape) => replace_file(&file, &render(dir.path(), shape)),
            None => replace_file(
                &file,
                "(\n    agent: \"reloaded\",\n    sources: {\n        \"edge\": (kind: Netcat(bind: 7)\n",
            ),
        }
        wait_for(
            Duration::from_secs(60),
            || reloads_seen(monitoring) == i as u64 + 1,
            || format!("reload {} was not applied; log:\n{}", i + 1, flumen.log_text()),
        );
        // The unchanged path goes on: acknowledgements keep arriving after each reload.
        wait_for(
            Duration::from_secs(60),
            || stream.acked() > before + 1000,
            || format!("no acknowledgement after reload {}; log:\n{}", i + 1, flumen.log_text()),
        );
        let shape = step.clone().unwrap_or_else(|| base.clone());
        let burst = &side_lines[side_sent..side_sent + 200];
        side_burst(&mut flumen, shape.side_a, burst);
        side_sent += 200;
        if let Some(port) = step.as_ref().and_then(|s| s.side_b) {
            let burst = &side_lines[side_sent..side_sent + 200];
            side_burst(&mut flumen, port, burst);
            side_sent += 200;
        }
    }
    assert_eq!(metric(monitoring, "AGENT", "ReloadSuccessCount"), Some(19));
    assert_eq!(metric(monitoring, "AGENT", "ReloadFailureCount"), Some(1));
    let (sent, acked, dropped) = stream.finish();
    let log = flumen.log_text();
    assert!(!dropped, "the connection to the unchanged source dropped after {acked} of {sent} lines; log:\n{log}");
    assert_eq!(acked, sent, "every line sent was acknowledged");
    let located = regex::Regex::new(r"agent\.ron:\d+:\d+: ").unwrap();
    assert!(
        located.is_match(&log) && log.contains("reload refused"),
        "the invalid file's problem is logged with its line:col:\n{log}"
    );
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));

    let index = line_index(&lines);
    let delivery = Delivery::read(&dir.path().join("out"), &lines, &index);
    let lost = delivery.lost(acked);
    assert!(
        lost.is_empty(),
        "{} of {acked} acknowledged lines lost (first {:?})",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(delivery.duplicates(), 0, "duplicated on the unchanged path: {}", delivery.duplicate_ranges(5));
    assert!(
        delivery.torn.is_empty(),
        "foreign lines in the output: {:?}",
        &delivery.torn[..delivery.torn.len().min(3)]
    );
    let side_index = line_index(&side_lines[..side_sent]);
    let side = Delivery::read(&dir.path().join("side_out"), &side_lines[..side_sent], &side_index);
    assert!(side.lost(side_sent).is_empty(), "side lines lost: {:?}", side.lost(side_sent).len());
    assert!(acked > 20_000, "the load ran throughout the reloads ({acked} lines)");
    eprintln!("{acked} lines acknowledged on the unchanged path across 20 reloads: 0 lost, 0 duplicated");
}

#[test]
fn control_a_restart_drops_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.ron");
    let base = base_shape(ROCKSDB);
    let mut flumen = launch(&file, &render(dir.path(), &base), &[]);
    let edge = local(base.edge);
    let lines = Arc::new(numbered_lines(300_000));
    let stream = PacedStream::open(flumen.connect(edge, Duration::from_secs(60)), lines);
    wait_for(Duration::from_secs(60), || stream.acked() > 1000, || "no acknowledgement".into());
    // Flume's way to change a topology: stop the agent, start it again on the new file.
    let mut shape = base.clone();
    shape.out_batch = 250;
    write_file(&file, &render(dir.path(), &shape));
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));
    let _again = launch(&file, &render(dir.path(), &shape), &[]);
    let (sent, acked, dropped) = stream.finish();
    assert!(dropped, "a restart must drop the connection ({acked} of {sent} acknowledged)");
}

#[test]
fn control_replacing_a_loaded_memory_channel_without_drain_loses_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.ron");
    // A slow sink (a fsync per 10-event batch) behind a Memory channel: it always holds a backlog.
    let mut base = base_shape("Memory(capacity: 200000, transaction_capacity: 1000)");
    base.out_batch = 10;
    let slow = |text: String| {
        text.replace(r#"roll_interval: "0s"), channel: "disk""#, r#"roll_interval: "0s", sync: true), channel: "disk""#)
    };
    let mut flumen = launch(&file, &slow(render(dir.path(), &base)), &["--watch", "--drain-timeout", "0s"]);
    let monitoring = local(base.monitoring);
    let edge = local(base.edge);
    let lines = Arc::new(numbered_lines(300_000));
    let stream = PacedStream::open(flumen.connect(edge, Duration::from_secs(60)), lines.clone());
    wait_for(
        Duration::from_secs(60),
        || metric(monitoring, "CHANNEL.disk", "ChannelSize").unwrap_or(0) > 1000,
        || "the Memory channel never held a backlog".into(),
    );
    let mut shape = base.clone();
    shape.edge_channel = ROCKSDB.into(); // another kind: a new channel under the old name
    replace_file(&file, &slow(render(dir.path(), &shape)));
    wait_for(Duration::from_secs(60), || reloads_seen(monitoring) == 1, || flumen.log_text());
    let (_, acked, dropped) = stream.finish();
    assert!(!dropped);
    // What reached the new channel is delivered before the stop: only the old channel's backlog can be missing.
    wait_for(
        Duration::from_secs(120),
        || metric(monitoring, "CHANNEL.disk", "ChannelSize") == Some(0),
        || "the new channel was not drained".into(),
    );
    assert_eq!(flumen.terminate(Duration::from_secs(120)), Some(0));
    let index = line_index(&lines);
    let delivery = Delivery::read(&dir.path().join("out"), &lines, &index);
    assert!(!delivery.lost(acked).is_empty(), "the control must see acknowledged lines lost");
}

#[test]
fn sighup_reloads_and_an_invalid_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.ron");
    let base = base_shape(ROCKSDB);
    let mut flumen = launch(&file, &render(dir.path(), &base), &[]);
    let monitoring = local(base.monitoring);
    let side_a = local(base.side_a);
    let lines = numbered_lines(1000);
    flumen.send_acknowledged(side_a, &lines[..500], Duration::from_secs(60));
    // Invalid: the running agent goes on, the problem is logged with file:line:col and component.
    write_file(&file, &render(dir.path(), &base).replace("capacity: 10000,", "capacity: 0,"));
    flumen.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(30),
        || metric(monitoring, "AGENT", "ReloadFailureCount") == Some(1),
        || flumen.log_text(),
    );
    assert!(flumen.log_text().contains("channel \"mem\": capacity must be positive"), "{}", flumen.log_text());
    flumen.send_acknowledged(side_a, &lines[500..600], Duration::from_secs(60));
    // Valid: side_b removed (its port closes), side_a untouched.
    let mut shape = base.clone();
    shape.side_b = None;
    write_file(&file, &render(dir.path(), &shape));
    flumen.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(30),
        || metric(monitoring, "AGENT", "ReloadSuccessCount") == Some(1),
        || flumen.log_text(),
    );
    assert!(metric(monitoring, "AGENT", "LastReloadTime").unwrap_or(0) > 1_700_000_000_000);
    let side_b = local(base.side_b.unwrap());
    wait_for(Duration::from_secs(30), || TcpStream::connect(side_b).is_err(), || "side_b still accepts".into());
    assert_eq!(metric(monitoring, "SOURCE.side_b", "EventReceivedCount"), None, "a removed source's counters go");
    flumen.send_acknowledged(side_a, &lines[600..], Duration::from_secs(60));
    assert!(flumen.log_text().contains("stopped sources [side_b]"), "{}", flumen.log_text());
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));
    let index = line_index(&lines);
    let delivery = Delivery::read(&dir.path().join("side_out"), &lines, &index);
    assert!(delivery.lost(1000).is_empty() && delivery.duplicates() == 0);
}

/// The inode of the socket listening on 127.0.0.1:`port` (from `/proc/net/tcp`, which must be
/// readable: a missing file fails the test rather than passing it).
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp is readable");
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")).then(|| f[9].parse().expect("an inode"))
    })
}

#[test]
fn a_restarted_netcat_on_the_same_address_keeps_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.ron");
    let base = base_shape(ROCKSDB);
    let mut flumen = launch(&file, &render(dir.path(), &base), &[]);
    let monitoring = local(base.monitoring);
    let side_a = local(base.side_a);
    let lines = numbered_lines(600);
    flumen.send_acknowledged(side_a, &lines[..200], Duration::from_secs(60));
    let before = listening_inode(base.side_a).expect("side_a listens");
    let reload = |flumen: &Flumen, shape: &Shape, n: u64| {
        write_file(&file, &render(dir.path(), shape));
        flumen.signal(libc::SIGHUP);
        wait_for(
            Duration::from_secs(30),
            || metric(monitoring, "AGENT", "ReloadSuccessCount") == Some(n),
            || flumen.log_text(),
        );
    };
    // An option other than the address: the source restarts on the socket it had.
    let mut shape = base.clone();
    shape.side_a_max_line = 32768;
    reload(&flumen, &shape, 1);
    assert!(flumen.log_text().contains("restarted sources [side_a]"), "{}", flumen.log_text());
    assert_eq!(listening_inode(base.side_a), Some(before), "the restarted source did not rebind");
    flumen.send_acknowledged(side_a, &lines[200..400], Duration::from_secs(60));
    // Control: moving it away and back binds a new socket, which the check tells apart.
    let elsewhere = free_port();
    let mut moved = shape.clone();
    moved.side_a = elsewhere;
    reload(&flumen, &moved, 2);
    reload(&flumen, &shape, 3);
    let again = listening_inode(base.side_a).expect("side_a listens again");
    assert_ne!(again, before, "a new bind is a new socket");
    flumen.send_acknowledged(side_a, &lines[400..], Duration::from_secs(60));
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0));
    let index = line_index(&lines);
    let delivery = Delivery::read(&dir.path().join("side_out"), &lines, &index);
    assert!(delivery.lost(600).is_empty() && delivery.duplicates() == 0);
}
