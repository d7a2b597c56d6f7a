//! Failing syscalls: the real `flumen` binary runs under libfiu's POSIX preloader (`fiu-run -x`,
//! Debian's fiu-utils) with its `RocksDb(sync: true)` channel on [`lazyfs`], the power-cut file
//! system. Once the agent is up, `fiu-ctrl` makes a random share of `fdatasync`, `fsync`
//! (`posix/io/sync/*`, failing with EIO) and of `write`, `pread` (`posix/io/rw/write`,
//! `posix/io/rw/pread`, failing with EAGAIN) fail, while numbered Loghub lines stream in over
//! Netcat with one `OK` per committed line; the sender reconnects whenever a failed put ends its
//! connection. A second flow (Netcat → `Memory` channel → four syncing `FileRoll` sinks) runs
//! beside it, so that sink writes and fsyncs fail too while the RocksDb channel waits out its
//! restart backoff. Injection goes on until flumen has reported 1,000 failures. Then it stops, every line is sent until acknowledged, flumen is killed
//! with SIGKILL, the file system cut (everything not fsynced is gone), and a clean agent drains
//! the channel.
//!
//! Proven: the agent keeps running through the failures (its channel restarts); no put whose
//! write or fsync failed was acknowledged — such a put's data was never fsynced, so after the
//! cut an acknowledged line would be missing — and every acknowledged line of both flows is
//! delivered (a sink batch whose write or fsync failed was rolled back and delivered again).
//!
//! The injected failures are counted from flumen's own reports: the channel's `RestartCount`
//! (one per failed RocksDB write or reopen) and the sink failures its log gives with the injected
//! errno. Failures that flumen absorbs without a report (an EAGAIN on a socket or on the
//! runtime's eventfd, which tokio retries, or on the log itself) are not counted.
//!
//! Why not `posix/io/rw/*` as a whole: it includes `posix/io/rw/write/reduce` (short writes),
//! and a short write to tokio's eventfd waker fails with EINVAL, on which tokio panics ("failed
//! to wake I/O driver"): a failure no kernel produces. For the same reason writes fail with
//! EAGAIN, which mio's waker retries, rather than with EIO.
//!
//! The negative control is the same run with `sync: false`: its acknowledged lines were never
//! fsynced, and the cut must lose some.

mod support;

#[path = "support/lazyfs.rs"]
mod lazyfs;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const LINES: usize = 300_000;
/// Most lines the second flow sends.
const SECOND_FLOW_LINES: usize = 3_000_000;
/// Failures flumen must have reported before the injection stops.
const TARGET_FAILURES: usize = 1000;
/// The last lines, sent only once the failures ended and the second flow drained, and followed
/// at once by the kill and the cut: the channel still holds some of them then, which is what an
/// unsynced channel loses (the negative control) and a synced one must keep.
const TAIL: usize = 20_000;
/// Longest injection.
const MOST_INJECTING: Duration = Duration::from_secs(240);

/// Sends a libfiu remote control `command` to the process `pid` (run under `fiu-run`).
fn fiu_ctrl(pid: u32, commands: &[String]) {
    let mut c = Command::new("fiu-ctrl");
    for command in commands {
        c.arg("-c").arg(command);
    }
    let out = c.arg(pid.to_string()).output().unwrap_or_else(|e| {
        panic!("cannot run fiu-ctrl ({e}): the failing-syscalls test needs Debian's fiu-utils (make deps installs it)")
    });
    assert!(out.status.success(), "fiu-ctrl {commands:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The failure points, with their probability and errno.
fn failure_points(sync_p: f64, rw_p: f64) -> Vec<(String, f64, i32)> {
    vec![
        ("posix/io/sync/fdatasync".into(), sync_p, libc::EIO),
        ("posix/io/sync/fsync".into(), sync_p, libc::EIO),
        ("posix/io/rw/write".into(), rw_p, libc::EAGAIN),
        ("posix/io/rw/pread".into(), rw_p, libc::EAGAIN),
    ]
}

fn mount(dir: &Path) -> lazyfs::Mounted {
    std::fs::create_dir_all(dir).unwrap();
    assert!(Path::new("/dev/fuse").exists(), "the failing-syscalls test needs /dev/fuse; it is missing, so it fails");
    lazyfs::LazyFs::mount(dir).unwrap_or_else(|e| {
        panic!("cannot mount the test file system on {} ({e}): needs root and /dev/fuse; the test fails", dir.display())
    })
}

struct Outcome {
    acked: usize,
    delivery: Delivery,
    /// Lines of the second flow acknowledged, and its output.
    acked2: usize,
    delivery2: Delivery,
    channel_restarts: u64,
    sink_sync_failures: usize,
    sink_write_failures: usize,
    connections: usize,
}

fn run(name: &str, sync: bool) -> Outcome {
    assert!(
        Command::new("fiu-run").arg("-h").output().is_ok(),
        "fiu-run is not installed: the failing-syscalls test needs Debian's fiu-utils (make deps installs it)"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let mounted = mount(&mnt);
    let (port, port2, metrics_port) = (free_port(), free_port(), free_port());
    let topology = tmp.path().join(format!("{name}.ron"));
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "{name}",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               channels: ["c1"], batch_size: 500),
        "r2": (kind: Netcat(bind: "127.0.0.1:{port2}", max_line_length: 65536, ack_every_event: true),
               channels: ["c2"], batch_size: 100),
    }},
    channels: {{
        "c1": RocksDb(dir: "{}", capacity: 1000000, transaction_capacity: 1000, sync: {sync}),
        "c2": Memory(capacity: 100000, transaction_capacity: 1000),
    }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out/k1", roll_interval: "1s", sync: true), channel: "c1", batch_size: 50),
        "k2": (kind: FileRoll(dir: "out/k2", roll_interval: "1s", sync: true), channel: "c1", batch_size: 50),
        "m1": (kind: FileRoll(dir: "out2/m1", roll_interval: "1s", sync: true), channel: "c2", batch_size: 20),
        "m2": (kind: FileRoll(dir: "out2/m2", roll_interval: "1s", sync: true), channel: "c2", batch_size: 20),
        "m3": (kind: FileRoll(dir: "out2/m3", roll_interval: "1s", sync: true), channel: "c2", batch_size: 20),
        "m4": (kind: FileRoll(dir: "out2/m4", roll_interval: "1s", sync: true), channel: "c2", batch_size: 20),
    }},
)"#,
            mnt.join("c1").display()
        ),
    );
    let lines = Arc::new(numbered_lines(LINES));
    let index = line_index(&lines);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let log = tmp.path().join("flumen.log");
    let args = ["run", "--quiet", topology.to_str().unwrap()];

    let mut flumen = Flumen::start_under(&["fiu-run", "-x"], &args, &log);
    let pid = flumen.child.id();
    let mut acked = 0;
    let mut connections = 0;
    // Up, and its channel open: some lines go through before the failures begin.
    let mut stream = AckedStream::open(&mut flumen, addr, lines.clone(), 0);
    acked = stream.read_until(Duration::from_secs(60), |a| a >= 1000).max(acked);
    acked = stream.finish().max(acked);
    assert!(acked >= 1000, "{name}: the agent acknowledges lines before injection; log:\n{}", flumen.log_text());
    let points = failure_points(0.02, 0.002);
    fiu_ctrl(
        pid,
        &points
            .iter()
            .map(|(n, p, errno)| format!("enable_random name={n},probability={p},failinfo={errno}"))
            .collect::<Vec<_>>(),
    );
    let injecting_since = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The second flow (Memory channel, four syncing sinks) streams until the injection ends.
    let addr2: SocketAddr = format!("127.0.0.1:{port2}").parse().unwrap();
    let lines2 =
        Arc::new((0..SECOND_FLOW_LINES).map(|i| format!("second {i} {}", lines[i % LINES])).collect::<Vec<_>>());
    let second = {
        let (lines2, stop) = (lines2.clone(), stop.clone());
        std::thread::spawn(move || {
            let stopped = || stop.load(std::sync::atomic::Ordering::SeqCst);
            let mut acked = 0;
            while !stopped() && acked < lines2.len() {
                let Ok(conn) = std::net::TcpStream::connect(addr2) else { break };
                let mut stream = AckedStream::over(conn, lines2.clone(), acked);
                stream.read_until(MOST_INJECTING, |a| stopped() || a >= lines2.len());
                acked = stream.finish().max(acked);
            }
            acked
        })
    };
    // Injection goes on until flumen reported TARGET_FAILURES failures (checked every second).
    let mut checked = Instant::now();
    let mut enough = || {
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            let (restarts, syncs, writes) = reported(&log, monitoring);
            if restarts as usize + syncs + writes >= TARGET_FAILURES {
                return true;
            }
        }
        injecting_since.elapsed() >= MOST_INJECTING
    };
    let mut injecting = true;
    while injecting && acked < LINES - TAIL {
        let mut stream = AckedStream::open(&mut flumen, addr, lines.clone(), acked);
        connections += 1;
        stream.read_until(MOST_INJECTING, |a| {
            injecting = !enough();
            !injecting || a >= LINES - TAIL
        });
        acked = stream.finish().max(acked);
        assert!(
            flumen.child.try_wait().unwrap().is_none(),
            "{name}: flumen keeps running while syscalls fail; log:\n{}",
            tail(&flumen.log_text())
        );
    }
    // All lines of the first flow may be in before enough failures are: the second flow goes on.
    while injecting && !enough() {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let injected_for = injecting_since.elapsed();
    let acked2 = second.join().expect("the second flow's sender");
    fiu_ctrl(pid, &points.iter().map(|(n, _, _)| format!("disable name={n}")).collect::<Vec<_>>());
    let acked_while_injecting = acked;
    let channel_restarts = metric(monitoring, "CHANNEL.c1", "RestartCount").expect("the monitoring answers");

    // Without failures, everything is sent until acknowledged (the channel may first wait out
    // its restart backoff).
    let deadline = Instant::now() + Duration::from_secs(300);
    let send_up_to = |flumen: &mut Flumen, acked: &mut usize, connections: &mut usize, upto: usize| {
        while *acked < upto {
            assert!(
                Instant::now() < deadline,
                "{name}: {acked} of {upto} acknowledged; log:\n{}",
                tail(&flumen.log_text())
            );
            let mut stream = AckedStream::open(flumen, addr, lines.clone(), *acked);
            *connections += 1;
            stream.read_until(deadline.saturating_duration_since(Instant::now()), |a| a >= upto);
            *acked = stream.finish().max(*acked);
        }
    };
    send_up_to(&mut flumen, &mut acked, &mut connections, LINES - TAIL);
    assert!(flumen.child.try_wait().unwrap().is_none(), "{name}: flumen is still running after the failures");
    // The second flow drains before the kill: its channel holds events in memory only.
    wait_for(
        Duration::from_secs(300),
        || metric(monitoring, "CHANNEL.c2", "ChannelSize") == Some(0),
        || format!("the second channel drains; it holds {:?}", metric(monitoring, "CHANNEL.c2", "ChannelSize")),
    );
    let index2 = line_index(&lines2);
    let delivery2 = Delivery::read(&tmp.path().join("out2"), &lines2, &index2);
    send_up_to(&mut flumen, &mut acked, &mut connections, LINES);
    let backlog = metric(monitoring, "CHANNEL.c1", "ChannelSize");
    let text = flumen.log_text();
    flumen.kill();
    eprintln!("{name}: the channel held {backlog:?} events at the kill");
    mounted.fs.cut();

    let flumen = Flumen::start(&args, &log);
    wait_for(
        Duration::from_secs(300),
        || metric(monitoring, "CHANNEL.c1", "ChannelSize") == Some(0),
        || format!("the channel drains; it holds {:?}", metric(monitoring, "CHANNEL.c1", "ChannelSize")),
    );
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0), "a graceful stop exits 0");
    let delivery = Delivery::read(&tmp.path().join("out"), &lines, &index);
    let o = Outcome {
        acked,
        delivery,
        acked2,
        delivery2,
        channel_restarts,
        sink_sync_failures: sink_failures(&text, libc::EIO),
        sink_write_failures: sink_failures(&text, libc::EAGAIN),
        connections,
    };
    let lost = o.delivery.lost(acked);
    eprintln!(
        "{name}: {:?}: {acked} lines acknowledged ({acked_while_injecting} by the end of {injected_for:?} of \
         injection), {} connections; reported injected failures: {} channel restarts (failed RocksDB \
         writes, syncs or reopens), {} sink fsync failures, {} sink write failures; after the cut: {} \
         lost {}, {} duplicates, {} torn lines; second flow: {} lines acknowledged, {} lost, {} duplicates, \
         {} torn lines",
        started.elapsed(),
        o.connections,
        o.channel_restarts,
        o.sink_sync_failures,
        o.sink_write_failures,
        lost.len(),
        ranges(lost.iter().copied(), 20),
        o.delivery.duplicates(),
        o.delivery.torn.len(),
        o.acked2,
        o.delivery2.lost(o.acked2).len(),
        o.delivery2.duplicates(),
        o.delivery2.torn.len()
    );
    o
}

/// Sink failures flumen's `log` text reports with the injected `errno`.
fn sink_failures(log: &str, errno: i32) -> usize {
    let errno = format!("(os error {errno})");
    log.lines().filter(|l| l.contains("failed; restarting") && l.contains(&errno)).count()
}

/// The injected failures flumen reported so far: the channel's restarts (from its metrics), the
/// sinks' failed fsyncs and failed writes (from its `log`).
fn reported(log: &Path, monitoring: SocketAddr) -> (u64, usize, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let restarts = metric(monitoring, "CHANNEL.c1", "RestartCount").unwrap_or(0);
    (restarts, sink_failures(&text, libc::EIO), sink_failures(&text, libc::EAGAIN))
}

/// The last lines of a log.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn failing_writes_and_syncs_never_acknowledge_a_line_that_is_not_durable() {
    let o = run("fiu-sync", true);
    assert_eq!(o.acked, LINES);
    assert!(o.channel_restarts > 0, "failed RocksDB writes or syncs restarted the channel");
    let reported = o.channel_restarts as usize + o.sink_sync_failures + o.sink_write_failures;
    assert!(reported >= TARGET_FAILURES, "at least {TARGET_FAILURES} injected failures were reported ({reported})");
    assert_eq!(o.delivery.lost(o.acked), Vec::<usize>::new(), "every acknowledged line is delivered");
    assert!(o.acked2 > 0, "the second flow acknowledged lines");
    assert_eq!(o.delivery2.lost(o.acked2), Vec::<usize>::new(), "every line of the second flow is delivered");
    assert!(o.delivery2.torn.is_empty(), "no torn line in the second flow");
    assert!(o.delivery.torn.is_empty(), "no torn line: {:?}", &o.delivery.torn[..o.delivery.torn.len().min(10)]);
}

/// The negative control: the same failures with `sync: false`; nothing acknowledged was fsynced,
/// so the cut loses acknowledged lines.
#[test]
fn failing_writes_and_syncs_with_an_unsynced_channel_lose_acknowledged_lines_at_a_cut() {
    let o = run("fiu-nosync", false);
    assert_eq!(o.acked, LINES);
    let reported = o.channel_restarts as usize + o.sink_sync_failures + o.sink_write_failures;
    assert!(reported >= TARGET_FAILURES, "at least {TARGET_FAILURES} injected failures were reported ({reported})");
    assert!(!o.delivery.lost(o.acked).is_empty(), "without fsync the cut loses acknowledged lines");
}
