//! Power cuts: the real `flumen` binary keeps its `RocksDb` channel on [`lazyfs`], a FUSE file
//! system that holds every write and directory change since the last fsync in memory and drops
//! them at a cut. Numbered Loghub lines stream in over TCP (Netcat, one `OK` per line after its
//! put committed); at a random point flumen is killed with SIGKILL, the file system cut, and the
//! agent started again on what survived; the sender resends what was not acknowledged. The
//! `FileRoll` output (fsynced per batch) is on the ordinary disk. After the last cut the agent
//! drains its channel and the output is compared with the acknowledged lines.
//!
//! - `sync: true`: no acknowledged line is lost, at any of the cut points.
//! - `sync: false` (the negative control): acknowledged lines are lost at some cut points — lines
//!   acknowledged since the agent last started and not yet delivered (RocksDB writes the WAL
//!   without fsync and syncs it only when it switches WAL files or closes; each start makes what
//!   it recovered durable) — but none acknowledged before a graceful stop, which syncs the WAL.
//!
//! One of the runs ends with a graceful stop (SIGTERM) instead of a kill, and is cut after.
//!
//! Needs root and `/dev/fuse` (the FUSE kernel module); fails saying so when it cannot mount.
//! `CUTS` (default 200) sets the number of cuts.

mod support;

#[path = "support/lazyfs.rs"]
mod lazyfs;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// How many cuts a run makes: `CUTS` from the environment, 200 by default.
fn cuts() -> usize {
    std::env::var("CUTS").ok().map_or(200, |v| v.parse().expect("CUTS is a number"))
}

/// Mounts a [`lazyfs::LazyFs`] on `dir`, or fails the test saying why it cannot.
fn mount(dir: &Path) -> lazyfs::Mounted {
    std::fs::create_dir_all(dir).unwrap();
    if !Path::new("/dev/fuse").exists() {
        panic!("the power-cut test needs /dev/fuse (the FUSE kernel module); it is missing, so the test fails");
    }
    let mounted = lazyfs::LazyFs::mount(dir).unwrap_or_else(|e| {
        panic!(
            "cannot mount the power-cut test file system on {}: {e} (it needs root or fusermount3 from \
             the fuse3 package, and /dev/fuse); the test fails",
            dir.display()
        )
    });
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(1) == dir.to_str() && l.contains("fuse")),
        "{} is not a FUSE mount after mounting:\n{mounts}",
        dir.display()
    );
    mounted
}

struct Outcome {
    /// `[from, to)` of the lines acknowledged by each run that ended with a cut.
    runs: Vec<(usize, usize)>,
    /// `[from, to)` of the lines acknowledged by the run that ended with a graceful stop.
    graceful: (usize, usize),
    acked: usize,
    delivery: Delivery,
    stats: lazyfs::Stats,
}

impl Outcome {
    /// Acknowledged lines lost, per run.
    fn lost_per_run(&self) -> Vec<usize> {
        let lost = self.delivery.lost(self.acked);
        self.runs.iter().map(|&(a, b)| lost.iter().filter(|&&i| a <= i && i < b).count()).collect()
    }
}

fn run(name: &str, sync: bool) -> Outcome {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let mounted = mount(&mnt);
    let (port, metrics_port) = (free_port(), free_port());
    let topology = tmp.path().join(format!("{name}.ron"));
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "{name}",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               channels: ["c1"], batch_size: 200),
    }},
    channels: {{ "c1": RocksDb(dir: "{}", capacity: 1000000, transaction_capacity: 1000, sync: {sync}) }},
    sinks: {{
        // Slower than the source: a backlog builds up in the channel.
        "k1": (kind: FileRoll(dir: "out", roll_interval: "1s", sync: true), channel: "c1", batch_size: 100),
    }},
)"#,
            mnt.join("c1").display()
        ),
    );
    let cuts = cuts();
    let lines = Arc::new(numbered_lines(cuts * 3000 + 10_000));
    let index = line_index(&lines);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let monitoring: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let log = tmp.path().join("flumen.log");
    let args = ["run", "--quiet", topology.to_str().unwrap()];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("{name}: seed {seed}, {cuts} cuts");

    let mut acked = 0;
    let mut runs = Vec::new();
    let mut graceful = (0, 0);
    for cut in 0..cuts {
        let mut flumen = Flumen::start(&args, &log);
        let target = acked + rng.usize(50..2000);
        // The run that ends with a graceful stop sends only up to its target.
        let input = if cut == cuts / 2 { Arc::new(lines[..target].to_vec()) } else { lines.clone() };
        let mut stream = AckedStream::open(&mut flumen, addr, input, acked);
        let got = stream.read_until(Duration::from_secs(120), |a| a >= target);
        assert!(
            got >= target,
            "{name}, cut {cut}: the connection ended after {got} acknowledged lines, before {target}; log:\n{}",
            flumen.log_text()
        );
        let got = if cut == cuts / 2 {
            // One graceful stop among the cuts: what it acknowledged must survive the next cut.
            let stopping = std::thread::spawn(move || flumen.terminate(Duration::from_secs(60)));
            // The remaining acknowledgements arrive until the agent closes the connection.
            stream.read_until(Duration::from_secs(60), |_| false);
            assert_eq!(stopping.join().unwrap(), Some(0), "{name}: a graceful stop exits 0");
            let got = stream.finish();
            graceful = (acked, got);
            got
        } else {
            flumen.kill();
            stream.finish()
        };
        mounted.fs.cut();
        runs.push((acked, got));
        acked = got;
    }

    // The last start, with no new input: the channel drains into the output.
    let flumen = Flumen::start(&args, &log);
    wait_for(
        Duration::from_secs(300),
        || metric(monitoring, "CHANNEL.c1", "ChannelSize") == Some(0),
        || {
            format!(
                "the channel drains; it holds {:?}; log:\n{}",
                metric(monitoring, "CHANNEL.c1", "ChannelSize"),
                flumen.log_text()
            )
        },
    );
    assert_eq!(flumen.terminate(Duration::from_secs(60)), Some(0), "a graceful stop exits 0");
    let delivery = Delivery::read(&tmp.path().join("out"), &lines, &index);
    let stats = mounted.fs.stats();
    let o = Outcome { runs, graceful, acked, delivery, stats };
    let lost = o.delivery.lost(acked);
    let per_run = o.lost_per_run();
    let cuts_with_loss = per_run.iter().filter(|&&n| n > 0).count();
    eprintln!(
        "{name}: {} cuts in {:?} (one after a graceful stop that acknowledged {} lines): {acked} lines acknowledged, {} lost {} at {cuts_with_loss} cut points \
         (at most {} at one cut), {} duplicates {}, {} torn lines; file system: {} file syncs, \
         {} directory syncs, {} unsynced bytes and {} unsynced entries dropped",
        o.runs.len(),
        started.elapsed(),
        o.graceful.1 - o.graceful.0,
        lost.len(),
        ranges(lost.iter().copied(), 20),
        per_run.iter().max().unwrap_or(&0),
        o.delivery.duplicates(),
        o.delivery.duplicate_ranges(20),
        o.delivery.torn.len(),
        stats.file_syncs,
        stats.dir_syncs,
        stats.dropped_bytes,
        stats.dropped_entries,
    );
    o
}

#[test]
fn power_cuts_lose_no_acknowledged_line_with_a_synced_rocksdb_channel() {
    let o = run("powercut-sync", true);
    assert_eq!(o.runs.len(), cuts());
    assert!(o.stats.dropped_bytes > 0, "the cuts dropped unsynced data (the file system does cut)");
    assert_eq!(o.delivery.lost(o.acked), Vec::<usize>::new(), "no acknowledged line is lost");
    assert!(o.delivery.torn.is_empty(), "no torn line: {:?}", &o.delivery.torn[..o.delivery.torn.len().min(10)]);
}

/// The negative control: without fsync, acknowledged lines are lost at some cut points, and
/// only lines of the run the cut ended.
#[test]
fn power_cuts_lose_acknowledged_lines_with_an_unsynced_rocksdb_channel() {
    let o = run("powercut-nosync", false);
    assert_eq!(o.runs.len(), cuts());
    let per_run = o.lost_per_run();
    assert!(per_run.iter().any(|&n| n > 0), "without fsync some cut loses acknowledged lines");
    let (a, b) = o.graceful;
    assert!(b > a, "the graceful stop's run acknowledged lines");
    let lost_after_stop: Vec<usize> = o.delivery.lost(o.acked).into_iter().filter(|&i| a <= i && i < b).collect();
    assert_eq!(
        lost_after_stop,
        Vec::<usize>::new(),
        "a graceful stop syncs what it acknowledged: the cut after it loses none"
    );
    assert!(o.delivery.torn.is_empty(), "no torn line: {:?}", &o.delivery.torn[..o.delivery.torn.len().min(10)]);
}
