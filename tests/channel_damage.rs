//! Damage tests: a real `flumen` agent with two flows — Netcat → `RocksDb` "c1" → FileRoll, and
//! Netcat → Memory "c2" → FileRoll — started on a channel directory that a real agent filled with
//! Loghub lines (killed with SIGKILL: the events are in the WAL; or stopped with SIGTERM, which
//! flushes them into a table file) and that the test then damaged: a torn WAL tail, flipped bytes
//! in the WAL and in a table file, a missing CURRENT, a garbage MANIFEST, the LOCK held by a second
//! real agent, a directory that cannot be opened.
//!
//! Each case ends in a report naming the channel, its directory and what was salvaged or set aside
//! (log and metrics); the agent never panics, the channel is not restarted in a loop, and the
//! second flow delivers while the first one is broken. Each salvage case has a negative control:
//! the same damaged directory opened as flumen opened it before (RocksDB's default `PointInTime`
//! WAL recovery, reading until the first error) yields fewer events than were acknowledged, or
//! fails: the damage really loses data without the salvage.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

const BATCH: usize = 100;

/// The interceptors of the filling agent's source.
const INTERCEPTORS: &str = r#"[]"#;

/// Ports of one test agent.
struct Ports {
    r1: u16,
    r2: u16,
    monitoring: u16,
}

impl Ports {
    fn new() -> Self {
        Ports { r1: free_port(), r2: free_port(), monitoring: free_port() }
    }
    fn addr(port: u16) -> SocketAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }
}

/// The two-flow topology the damaged channel is run in.
fn run_topology(tmp: &Path, p: &Ports) -> PathBuf {
    let path = tmp.join("run.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "damage",
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{}", max_line_length: 65536, ack_every_event: true), channels: ["c1"], batch_size: {BATCH}),
        "r2": (kind: Netcat(bind: "127.0.0.1:{}", max_line_length: 65536, ack_every_event: true), channels: ["c2"], batch_size: {BATCH}),
    }},
    channels: {{
        "c1": RocksDb(dir: "data/c1", capacity: 1000000, sync: true, min_free_bytes: 0, keep_alive: "200ms"),
        "c2": Memory(capacity: 100000),
    }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out1", roll_interval: "1s"), channel: "c1"),
        "k2": (kind: FileRoll(dir: "out2", roll_interval: "1s"), channel: "c2"),
    }},
    monitoring: Some(Http(bind: "127.0.0.1:{}")),
)"#,
            p.r1, p.r2, p.monitoring
        ),
    );
    path
}

/// Fills "c1" with `n` numbered Loghub lines through a real agent, every one acknowledged, then
/// stops it with SIGKILL (`kill`: the events are in the WAL only) or SIGTERM (flushed to a table
/// file). Answers the lines.
fn fill(tmp: &Path, tag: &str, n: usize, kill: bool) -> Vec<String> {
    let port = free_port();
    let topology = fill_topology(tmp, port, INTERCEPTORS, BATCH);
    let lines: Vec<String> = numbered_lines(n).into_iter().map(|l| format!("{tag} {l}")).collect();
    let mut agent = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.join("fill.log"));
    agent.send_acknowledged(Ports::addr(port), &lines, Duration::from_secs(60));
    if kill {
        agent.kill();
    } else {
        assert_eq!(agent.terminate(Duration::from_secs(60)), Some(0));
    }
    lines
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn largest(paths: Vec<PathBuf>) -> PathBuf {
    paths.into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).expect("a file to damage")
}

fn flip(path: &Path, at: u64, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[at as usize..at as usize + n] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

/// The negative control: opens a copy of `dir` as flumen did before (RocksDB's default options:
/// `PointInTime` WAL recovery, which drops every record after a damaged one without a word) and
/// counts the events readable until the first error. `Err` when it does not open at all.
fn old_open_count(dir: &Path, scratch: &Path) -> Result<u64, String> {
    let copy = scratch.join(format!("control-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(dir).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
        }
    }
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let cfs = rocksdb::DB::list_cf(&opts, &copy).unwrap_or_else(|_| vec!["default".into()]);
    let db = rocksdb::DB::open_cf(&opts, &copy, &cfs).map_err(|e| e.to_string())?;
    let mut it = db.raw_iterator();
    it.seek_to_first();
    let mut n = 0;
    while it.valid() {
        n += 1;
        it.next();
    }
    Ok(n)
}

/// The running two-flow agent and what the test checks on it.
struct Run {
    agent: Flumen,
    tmp: PathBuf,
    ports: Ports,
    sent2: usize,
}

impl Run {
    fn start(tmp: &Path, extra: &[&str]) -> Run {
        let ports = Ports::new();
        let topology = run_topology(tmp, &ports);
        let mut args = vec!["run", "--quiet"];
        args.extend_from_slice(extra);
        args.push(topology.to_str().unwrap());
        let agent = Flumen::start(&args, &tmp.join("run.log"));
        let mut run = Run { agent, tmp: tmp.to_path_buf(), ports, sent2: 0 };
        // Wait for the monitoring to answer.
        let mon = Ports::addr(run.ports.monitoring);
        let agent = &mut run.agent;
        wait_for(
            Duration::from_secs(60),
            || metric(mon, "CHANNEL.c2", "ChannelCapacity").is_some() || agent.child.try_wait().unwrap().is_some(),
            || "the agent's monitoring answers".into(),
        );
        run
    }

    fn metric(&self, name: &str) -> u64 {
        metric(Ports::addr(self.ports.monitoring), "CHANNEL.c1", name)
            .unwrap_or_else(|| panic!("CHANNEL.c1 {name} is served; log:\n{}", self.agent.log_text()))
    }

    /// Sends 50 lines through the second flow and waits until they are delivered.
    fn second_flow_delivers(&mut self) {
        let lines: Vec<String> = loghub_lines()[..50].iter().map(|l| format!("flow2 {} {l}", self.sent2)).collect();
        self.sent2 += 1;
        let addr = Ports::addr(self.ports.r2);
        self.agent.send_acknowledged(addr, &lines, Duration::from_secs(30));
        let out = self.tmp.join("out2");
        wait_for(
            Duration::from_secs(30),
            || {
                let got: BTreeSet<String> = output_lines(&out).0.into_iter().collect();
                lines.iter().all(|l| got.contains(l))
            },
            || "the second flow delivers".into(),
        );
    }

    /// The lines delivered by the first flow.
    fn delivered1(&self) -> Vec<String> {
        output_lines(&self.tmp.join("out1")).0
    }

    fn log(&self) -> String {
        plain(&self.agent.log_text())
    }
}

/// `text` without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The damaged copy the salvage set aside.
fn damaged_copies(tmp: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(tmp.join("data"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("c1.damaged-"))
        .collect();
    v.sort();
    v
}

/// Runs the two-flow agent on the damaged "c1" and checks the salvage: reported in the log
/// (channel, directory, damaged copy, count) and the metrics, the damaged original kept byte for
/// byte, the salvaged events delivered, the second flow delivering, no panic, no restarts.
/// Answers the number of events salvaged; the indices of the written lines not delivered are
/// left in `LOST`.
fn salvage_run(tmp: &Path, written: &[String], damaged_files: &[(String, Vec<u8>)]) -> u64 {
    let mut run = Run::start(tmp, &[]);
    run.second_flow_delivers();
    let mon = Ports::addr(run.ports.monitoring);
    wait_for(
        Duration::from_secs(60),
        || metric(mon, "CHANNEL.c1", "ChannelDamagedCount") == Some(1),
        || format!("the damage is reported; log:\n{}", run.log()),
    );
    let salvaged = run.metric("ChannelSalvagedCount");
    let copies = damaged_copies(tmp);
    assert_eq!(copies.len(), 1, "one damaged copy set aside: {copies:?}");
    let copy = &copies[0];
    let name = copy.file_name().unwrap().to_string_lossy().to_string();
    let stamp = name.trim_start_matches("c1.damaged-");
    assert!(stamp.len() == 16 && stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T', "UTC time in the name: {name}");
    for (file, bytes) in damaged_files {
        assert_eq!(&std::fs::read(copy.join(file)).unwrap(), bytes, "the damaged {file} is kept untouched");
    }
    let log = run.log();
    let report = log
        .lines()
        .find(|l| l.contains("RocksDb channel was damaged"))
        .unwrap_or_else(|| panic!("a damage report in the log:\n{log}"));
    for needle in ["channel=c1", &format!("salvaged={salvaged}"), &name, "data/c1"] {
        assert!(report.contains(needle), "the report names {needle}: {report}");
    }
    // The salvaged events are delivered, each one a line that was written.
    let written_set: BTreeSet<&str> = written.iter().map(String::as_str).collect();
    wait_for(
        Duration::from_secs(60),
        || run.delivered1().len() as u64 >= salvaged,
        || format!("{} of {salvaged} salvaged events delivered", run.delivered1().len()),
    );
    let delivered = run.delivered1();
    assert!(delivered.iter().all(|l| written_set.contains(l.as_str())), "only written lines come out");
    assert_eq!(delivered.iter().collect::<BTreeSet<_>>().len() as u64, salvaged, "each salvaged event once");
    let got: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    LOST.with(|l| {
        *l.borrow_mut() =
            written.iter().enumerate().filter(|(_, w)| !got.contains(w.as_str())).map(|(i, _)| i).collect()
    });
    run.second_flow_delivers();
    assert_eq!(run.metric("RestartCount"), 0, "no restarts");
    assert_eq!(run.metric("ChannelFailed"), 0);
    assert!(!log.contains("panicked"), "no panic:\n{log}");
    eprintln!("report: {report}");
    for l in log.lines().filter(|l| l.contains("repairing")) {
        eprintln!("{l}");
    }
    let exit = run.agent.terminate(Duration::from_secs(60));
    assert_eq!(exit, Some(0));
    salvaged
}

thread_local! {
    static LOST: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether the lost lines are one contiguous run (what one damaged write batch held).
fn lost_is_one_run() -> (usize, bool) {
    LOST.with(|l| {
        let l = l.borrow();
        (l.len(), l.is_empty() || l[l.len() - 1] - l[0] + 1 == l.len())
    })
}

fn snapshot(dir: &Path, names: &[&Path]) -> Vec<(String, Vec<u8>)> {
    names
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name.clone(), std::fs::read(dir.join(&name)).unwrap())
        })
        .collect()
}

#[test]
fn a_torn_wal_tail_is_detected_and_every_complete_record_salvaged() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "torn", 3000, true);
    let dir = tmp.path().join("data/c1");
    let wal = largest(files(&dir, ".log"));
    assert!(files(&dir, ".sst").is_empty(), "SIGKILL left the events in the WAL only");
    let len = std::fs::metadata(&wal).unwrap().len();
    // Cut the last record in the middle.
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len - 1500).unwrap();
    let control = old_open_count(&dir, tmp.path()).expect("the old open accepts a torn tail");
    eprintln!("torn tail: {} written, the old open silently finds {control}", written.len());
    assert!(control < written.len() as u64, "negative control: the torn tail loses events silently");
    let damaged = snapshot(&dir, &[&wal]);
    let salvaged = salvage_run(tmp.path(), &written, &damaged);
    eprintln!("torn tail: {} written, {salvaged} salvaged (every complete record)", written.len());
    assert_eq!(salvaged, control, "every complete record is salvaged");
}

#[test]
fn flipped_bytes_in_the_wal_are_detected_and_the_records_after_them_salvaged() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "walflip", 3000, true);
    let dir = tmp.path().join("data/c1");
    let wal = largest(files(&dir, ".log"));
    let len = std::fs::metadata(&wal).unwrap().len();
    flip(&wal, len / 3, 8);
    let control = old_open_count(&dir, tmp.path()).expect("the old open accepts it");
    eprintln!("WAL flip: {} written, the old open silently finds {control}", written.len());
    assert!(
        control < written.len() as u64 / 2,
        "negative control: PointInTime recovery drops everything after the damage"
    );
    let damaged = snapshot(&dir, &[&wal]);
    let salvaged = salvage_run(tmp.path(), &written, &damaged);
    eprintln!("WAL flip: {} written, {salvaged} salvaged", written.len());
    // RocksDB's WAL reader drops the rest of a 32 KiB block after a bad checksum, and its repair
    // the rest of a WAL file after a batch it cannot parse: a few batches around the damage are
    // lost, the records after it are not.
    assert!(salvaged > control, "more than the old open finds");
    assert!(salvaged >= written.len() as u64 * 2 / 3, "the records after the damage are salvaged: {salvaged}");
    let (lost, one_run) = lost_is_one_run();
    eprintln!("WAL flip: {lost} events lost, one contiguous run: {one_run}");
    assert!(one_run, "only the damaged write batch is lost");
    let last_lost = LOST.with(|l| l.borrow().last().copied());
    assert!(last_lost.is_some_and(|i| i + 1 < written.len()), "the batches after the damage are salvaged");
}

#[test]
fn flipped_bytes_in_a_table_file_lose_only_the_damaged_block() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "sstflip", 3000, false);
    let dir = tmp.path().join("data/c1");
    let sst = largest(files(&dir, ".sst"));
    let len = std::fs::metadata(&sst).unwrap().len();
    flip(&sst, len / 3, 8);
    let control = old_open_count(&dir, tmp.path());
    eprintln!("table flip: {} written, the old open reads {control:?} until the first error", written.len());
    assert!(control.is_ok_and(|n| n < written.len() as u64 / 2), "negative control: reading stops at the damage");
    // The open reads the key index, not the events, so the damage is met when its block is
    // taken: the block's events are dead-lettered with the reason, every other event delivered.
    let mut run = Run::start(tmp.path(), &[]);
    run.second_flow_delivers();
    let total = written.len() as u64;
    wait_for(
        Duration::from_secs(60),
        || run.delivered1().len() as u64 + run.metric("EventDeadLetterCount") >= total,
        || {
            format!(
                "{} of {total} events delivered or dead-lettered; log:
{}",
                run.delivered1().len(),
                run.log()
            )
        },
    );
    let dead = run.metric("EventDeadLetterCount");
    let delivered = run.delivered1();
    eprintln!("table flip: {total} written, {} delivered, {dead} dead-lettered", delivered.len());
    assert!(dead > 0 && dead <= 100, "the events of the damaged block: {dead}");
    let written_set: BTreeSet<&str> = written.iter().map(String::as_str).collect();
    assert!(delivered.iter().all(|l| written_set.contains(l.as_str())), "only written lines come out");
    assert_eq!(delivered.iter().collect::<BTreeSet<_>>().len() as u64 + dead, total, "every other event once");
    assert_eq!(run.metric("ChannelDamagedCount"), 0, "no salvage: the open met no damage");
    assert_eq!(run.metric("RestartCount"), 0, "the channel goes on");
    run.second_flow_delivers();
    assert_eq!(run.agent.terminate(Duration::from_secs(60)), Some(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["channel", "dead-letters", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("{dead} dead letters")) && listing.contains("unreadable"), "{listing}");
}

#[test]
fn a_missing_current_is_detected_and_everything_salvaged() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "current", 2000, false);
    let dir = tmp.path().join("data/c1");
    std::fs::remove_file(dir.join("CURRENT")).unwrap();
    let control = old_open_count(&dir, tmp.path());
    eprintln!("missing CURRENT: {} written, the old open finds {control:?}", written.len());
    assert!(control.as_ref().map_or(true, |&n| n < written.len() as u64), "negative control: the old open loses them");
    let manifest = files(&dir, "").into_iter().find(|p| p.to_string_lossy().contains("MANIFEST-")).unwrap();
    let damaged = snapshot(&dir, &[&manifest]);
    let salvaged = salvage_run(tmp.path(), &written, &damaged);
    assert_eq!(salvaged, written.len() as u64, "RocksDB's repair finds every event");
}

#[test]
fn a_garbage_manifest_is_repaired_and_everything_salvaged() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "manifest", 2000, false);
    let dir = tmp.path().join("data/c1");
    let manifest = files(&dir, "").into_iter().find(|p| p.to_string_lossy().contains("MANIFEST-")).unwrap();
    let len = std::fs::metadata(&manifest).unwrap().len() as usize;
    std::fs::write(&manifest, (0..len).map(|_| fastrand::u8(..)).collect::<Vec<u8>>()).unwrap();
    let control = old_open_count(&dir, tmp.path());
    eprintln!("garbage MANIFEST: {} written, the old open: {control:?}", written.len());
    assert!(control.is_err(), "negative control: the old open fails and stops the whole agent");
    let damaged = snapshot(&dir, &[&manifest]);
    let salvaged = salvage_run(tmp.path(), &written, &damaged);
    assert_eq!(salvaged, written.len() as u64, "RocksDB's repair finds every event");
}

/// Sends one line to the first flow; answers the connection (its `OK` may come later).
fn send_one(port: u16, line: &str) -> TcpStream {
    let mut s = TcpStream::connect(Ports::addr(port)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    s
}

/// Whether `OK\n` arrives on `s` within `within`.
fn acked(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got == b"OK\n" {
                    return true;
                }
            }
            Err(_) => break,
        }
    }
    assert!(got.is_empty() || got == b"OK\n", "unexpected answer {got:?}");
    false
}

/// A channel that cannot open: reported (log with the channel, its directory and the error's
/// kind; metrics), its source back-pressured (a line sent is not acknowledged), its retries
/// bounded by the backoff, the second flow delivering; once the cause is gone the channel opens
/// by itself and the waiting line is acknowledged and delivered.
fn failed_channel(tmp: &Path, kind: &str, clear: impl FnOnce()) {
    let mut run = Run::start(tmp, &[]);
    let mon = Ports::addr(run.ports.monitoring);
    wait_for(
        Duration::from_secs(30),
        || metric(mon, "CHANNEL.c1", "ChannelFailed") == Some(1),
        || format!("the failure is reported; log:\n{}", run.log()),
    );
    let since = Instant::now();
    let mut waiting = send_one(run.ports.r1, "waiting line 081109 203615 148 INFO dfs.DataNode: held back");
    run.second_flow_delivers();
    assert!(!acked(&mut waiting, Duration::from_secs(3)), "nothing is acknowledged while the channel is failed");
    run.second_flow_delivers();
    let log = run.log();
    let report = log
        .lines()
        .find(|l| l.contains("RocksDb channel cannot open"))
        .unwrap_or_else(|| panic!("a failure report in the log:\n{log}"));
    for needle in ["channel=c1", "data/c1", &format!("kind={kind}")] {
        assert!(report.contains(needle), "the report names {needle}: {report}");
    }
    let failures = run.metric("ChannelOpenFailureCount");
    let secs = since.elapsed().as_secs_f64() + 5.0;
    // Backoff 0.1 s doubling: within t seconds at most log2(t / 0.1) + 2 attempts.
    let bound = (secs / 0.1).log2().ceil() as u64 + 2;
    eprintln!("{kind}: {failures} failed opens in about {secs:.1} s (bound {bound})");
    assert!(failures >= 2 && failures <= bound, "retried with backoff, no storm: {failures} in {secs:.1} s");
    assert_eq!(run.metric("RestartCount"), 0);

    clear();
    let cleared = Instant::now();
    assert!(acked(&mut waiting, Duration::from_secs(60)), "acknowledged once the channel opens; log:\n{}", run.log());
    eprintln!("{kind}: the channel opened {:.1} s after the cause was removed", cleared.elapsed().as_secs_f64());
    assert_eq!(run.metric("ChannelFailed"), 0);
    wait_for(
        Duration::from_secs(30),
        || run.delivered1().iter().any(|l| l.starts_with("waiting line")),
        || "the waiting line is delivered".into(),
    );
    run.second_flow_delivers();
    let log = run.log();
    assert!(!log.contains("panicked"), "no panic:\n{log}");
    assert_eq!(run.agent.terminate(Duration::from_secs(60)), Some(0));
}

#[test]
fn a_lock_held_by_another_agent_fails_only_its_channel_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    // The honest peer: a second real agent holding the directory open.
    let port = free_port();
    let topology = fill_topology(tmp.path(), port, INTERCEPTORS, BATCH);
    let mut holder = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("holder.log"));
    holder.connect(Ports::addr(port), Duration::from_secs(60));

    // Negative control: with --strict the agent stops as a whole, naming the channel.
    let ports = Ports::new();
    let strict_topology = run_topology(tmp.path(), &ports);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["run", "--quiet", "--strict", strict_topology.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--strict fails fast");
    assert!(stderr.contains("channel \"c1\"") && stderr.contains("lock held"), "names the channel: {stderr}");

    failed_channel(tmp.path(), "lock held", move || holder.kill());
}

#[test]
fn an_unopenable_directory_fails_only_its_channel_until_mended() {
    let tmp = tempfile::tempdir().unwrap();
    // Root ignores permission bits, so the directory is made unopenable for root too: its path is
    // a regular file.
    std::fs::create_dir_all(tmp.path().join("data")).unwrap();
    let dir = tmp.path().join("data/c1");
    std::fs::write(&dir, b"not a directory").unwrap();
    let cleared = dir.clone();
    failed_channel(tmp.path(), "I/O", move || std::fs::remove_file(&cleared).unwrap());
}

/// Unmounts a test mount when dropped (also when the test fails).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str]) {
    let out = std::process::Command::new("mount").args(args).output().expect("run mount(8)");
    assert!(
        out.status.success(),
        "this test needs root and mount(8) (CI runs as root): mount {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_read_only_file_system_fails_only_its_channel_until_remounted() {
    let tmp = tempfile::tempdir().unwrap();
    // Root ignores permission bits, not a read-only mount: the channel's folder is on a tmpfs
    // mounted read-only (EROFS, a permission failure), remounted read-write to mend it.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data_arg = data.to_str().unwrap().to_string();
    mount(&["-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", &data_arg]);
    let _mounted = Mount(data.clone());
    failed_channel(tmp.path(), "permission denied", move || mount(&["-o", "remount,rw", &data_arg]));
}

#[test]
fn salvage_offline_reports_the_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "offline", 2000, true);
    let dir = tmp.path().join("data/c1");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wal = largest(files(&dir, ".log"));
    let len = std::fs::metadata(&wal).unwrap().len();
    flip(&wal, len / 2, 8);
    let control = old_open_count(&dir, tmp.path()).unwrap();
    let report = run(&["channel", "salvage", dir.to_str().unwrap()]);
    eprintln!("{report}");
    let salvaged: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("salvaged: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {report}"));
    assert!(salvaged > control && salvaged >= written.len() as u64 / 2, "{salvaged} of {}", written.len());
    assert_eq!(damaged_copies(tmp.path()).len(), 1);
    assert!(report.contains(damaged_copies(tmp.path())[0].to_str().unwrap()), "{report}");
    let again = run(&["channel", "salvage", dir.to_str().unwrap()]);
    assert!(again.contains("no damage found"), "the salvaged directory is healthy: {again}");
}

#[test]
fn a_poison_value_is_dead_lettered_and_the_events_behind_it_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let written = fill(tmp.path(), "poison", 1000, false);
    let dir = tmp.path().join("data/c1");
    // Poison one stored value: a header count the value cannot hold.
    let poison = b"\xff\xff\xff\x7f not an event".to_vec();
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &dir).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &dir, &cfs).unwrap();
        let key = 500u64.to_be_bytes();
        let original = db.get(key).unwrap().expect("event 500 is stored");
        assert!(flumen::event::Event::decode(&mut bytes::Bytes::from(original)).is_ok());
        // Negative control: the poison really does not decode.
        assert!(flumen::event::Event::decode(&mut bytes::Bytes::from(poison.clone())).is_err());
        db.put(key, &poison).unwrap();
        db.flush().unwrap();
    }
    let mut run = Run::start(tmp.path(), &[]);
    run.second_flow_delivers();
    wait_for(
        Duration::from_secs(60),
        || run.delivered1().len() >= 999,
        || format!("{} of 999 events delivered; log:\n{}", run.delivered1().len(), run.log()),
    );
    let delivered: BTreeSet<String> = run.delivered1().into_iter().collect();
    let lost: Vec<&String> = written.iter().filter(|l| !delivered.contains(*l)).collect();
    assert_eq!(lost.len(), 1, "only the poisoned event is missing: {lost:?}");
    assert!(lost[0].starts_with("poison 500 "), "{lost:?}");
    assert_eq!(run.metric("EventDeadLetterCount"), 1);
    assert_eq!(run.metric("RestartCount"), 0, "the channel goes on");
    let log = run.log();
    assert!(log.lines().any(|l| l.contains("dead-letter store") && l.contains("seq=500")), "logged:\n{log}");
    assert_eq!(run.agent.terminate(Duration::from_secs(60)), Some(0));

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flumen")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = cli(&["channel", "dead-letters", dir.to_str().unwrap()]);
    eprintln!("{listing}");
    let row = listing.lines().find(|l| l.trim_start().starts_with("500 ")).unwrap_or_else(|| panic!("{listing}"));
    assert!(row.contains(&poison.len().to_string()) && row.contains("does not decode"), "{row}");
    assert!(listing.contains("1 dead letters"), "{listing}");
    let out = tmp.path().join("dead.jsonl");
    cli(&["channel", "export-dead-letters", dir.to_str().unwrap(), out.to_str().unwrap()]);
    let exported: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["seq"], 500);
    let hex: String = poison.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(exported[0]["value_hex"], hex.as_str(), "the stored bytes, kept");
}
