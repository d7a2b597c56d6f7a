//! Encryption at rest of the `RocksDb` channel, through the real binary: Loghub lines go over TCP
//! into a Netcat source (acknowledged per event) and a `RocksDb` channel with
//! `encryption: Some(Aes256Gcm(...))`, and every file of the channel's directory (WAL, tables,
//! MANIFEST, OPTIONS, ...) is scanned for the lines.
//!
//! Negative controls: the same run without `encryption` finds the lines in the WAL and in the
//! tables (and in a copy imported from an export); the SIGKILL run's control is a `Memory` channel, which loses acknowledged lines; the
//! tamper test's control is the same tampering without encryption, which goes unnoticed; the
//! key-error tests' control is the same directory opened with the right keys.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use support::*;

const WINDOW: usize = 32;
/// A header every event gets (Static interceptor): it must not be on disk either.
const SECRET_HEADER: &str = "tenant-7f3a9c1e-secret-header-value";

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Writes a random 32-byte key file readable by its owner only.
fn write_key(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    std::fs::write(path, key).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A sink that delivers into `out`, or one that cannot deliver (nothing listens on port 9).
fn sink(deliver: bool) -> &'static str {
    if deliver {
        r#"FileRoll(dir: "out", roll_interval: "0s", sync: true)"#
    } else {
        r#"Http(url: "http://127.0.0.1:9/")"#
    }
}

/// A topology `name.ron` in `tmp`: Netcat on `port` → Static header → `RocksDb` "c1" in
/// `data/c1` with `encryption` (RON, e.g. `None`) → `sink`; monitoring on `metrics`.
fn topology(tmp: &Path, name: &str, port: u16, metrics: u16, encryption: &str, sink: &str) -> PathBuf {
    let path = tmp.join(format!("{name}.ron"));
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "{name}",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               interceptors: [Static(key: "tenant", value: "{SECRET_HEADER}")],
               channels: ["c1"], batch_size: 500),
    }},
    channels: {{
        "c1": RocksDb(dir: "data/c1", capacity: 2000000, transaction_capacity: 1000, sync: true, min_free_bytes: 0,
            encryption: {encryption}),
    }},
    sinks: {{ "k1": (kind: {sink}, channel: "c1", batch_size: 500) }},
)"#
        ),
    );
    path
}

fn aes(keys: &[&str], active: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\": \"keys/{k}.key\"")).collect();
    format!("Some(Aes256Gcm(keys: {{{}}}, active: \"{active}\"))", keys.join(", "))
}

/// The byte windows to look for: the first and last 32 bytes of every Loghub line long enough,
/// and the secret header value.
fn needles(lines: &[String]) -> HashSet<Vec<u8>> {
    let mut set = HashSet::new();
    for l in lines {
        let b = l.as_bytes();
        if b.len() >= WINDOW {
            set.insert(b[..WINDOW].to_vec());
            set.insert(b[b.len() - WINDOW..].to_vec());
        }
    }
    set.insert(SECRET_HEADER.as_bytes()[..WINDOW].to_vec());
    set
}

/// Every file under `dir` with the number of windows of plaintext found in it.
fn scan(dir: &Path, needles: &HashSet<Vec<u8>>) -> Vec<(PathBuf, u64, usize)> {
    let files = files_under(dir);
    assert!(!files.is_empty(), "{} holds files", dir.display());
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            let hits = bytes.windows(WINDOW).filter(|w| needles.contains(*w)).count();
            (f, bytes.len() as u64, hits)
        })
        .collect()
}

fn hits_in(scan: &[(PathBuf, u64, usize)], ext: &str) -> usize {
    scan.iter().filter(|(f, _, _)| f.extension().is_some_and(|x| x == ext)).map(|(_, _, h)| h).sum()
}

fn bytes_in(scan: &[(PathBuf, u64, usize)], ext: &str) -> u64 {
    scan.iter().filter(|(f, _, _)| f.extension().is_some_and(|x| x == ext)).map(|(_, n, _)| n).sum()
}

fn flumen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flumen")).args(args).output().expect("run flumen")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Starts the agent on `topology`, sends `lines` (each acknowledged), and answers the running
/// agent.
fn fill(topology: &Path, log: &Path, port: u16, lines: &[String]) -> Flumen {
    let mut f = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], log);
    f.send_acknowledged(addr(port), lines, DEADLINE);
    f
}

fn wait_drained(f: &Flumen, metrics: u16) {
    wait_for(
        DEADLINE,
        || metric(addr(metrics), "CHANNEL.c1", "ChannelSize") == Some(0),
        || format!("the channel drains; log:\n{}", f.log_text()),
    );
}

const DEADLINE: Duration = Duration::from_secs(120);

/// What the plaintext scan found: during the run (data in the WAL only) and after a graceful
/// stop (memtables flushed to tables).
struct Scanned {
    running: Vec<(PathBuf, u64, usize)>,
    stopped: Vec<(PathBuf, u64, usize)>,
    exported: Vec<String>,
    /// The scan of a copy imported from the export with the topology's keys.
    imported: Vec<(PathBuf, u64, usize)>,
    backlog: Vec<String>,
    tmp: tempfile::TempDir,
}

/// Delivers 5,000 lines (a sink that works), then restarts with a sink that cannot deliver and
/// holds a backlog of 10,000 more; scans the directory while it runs and after it stopped.
fn scan_run(encryption: bool) -> Scanned {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let enc = if encryption { aes(&["2026-12"], "2026-12") } else { "None".into() };
    write_key(&tmp.path().join("keys/2026-12.key"));
    let lines = numbered_lines(15_000);
    let (delivered, backlog) = lines.split_at(5_000);
    let log = tmp.path().join("flumen.log");

    let t1 = topology(tmp.path(), "deliver", port, metrics, &enc, sink(true));
    let f = fill(&t1, &log, port, delivered);
    wait_drained(&f, metrics);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    let (out, _) = output_lines(&tmp.path().join("out"));
    assert_eq!(multiset(out), multiset(delivered.to_vec()), "the first lines were delivered");

    let t2 = topology(tmp.path(), "hold", port, metrics, &enc, sink(false));
    let f = fill(&t2, &log, port, backlog);
    let dir = tmp.path().join("data/c1");
    let needles = needles(&lines);
    let running = scan(&dir, &needles);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    let stopped = scan(&dir, &needles);

    let mut args = vec!["channel", "export", "--topology", t2.to_str().unwrap(), "--channel", "c1"];
    let o = flumen(&args);
    assert!(o.status.success(), "export: {}", text(&o));
    // The export imported into a copy with the channel's keys: sealed again.
    let copy = tmp.path().join("data/copy");
    let mut import = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["channel", "import", "--topology", t2.to_str().unwrap(), "--channel", "c1", copy.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut import.stdin.take().unwrap(), &o.stdout).unwrap();
    let imported_out = import.wait_with_output().unwrap();
    assert!(imported_out.status.success(), "import: {}", text(&imported_out));
    assert!(text(&imported_out).contains("imported 10000 events"), "{}", text(&imported_out));
    let imported = scan(&copy, &needles);
    let exported: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].as_str().unwrap().to_string())
        .collect();
    if encryption {
        // Without the keys, the tool refuses, naming the key id.
        let dir_arg = dir.to_str().unwrap().to_string();
        args = vec!["channel", "export", &dir_arg];
        let o = flumen(&args);
        assert!(!o.status.success());
        assert!(text(&o).contains("encryption key \"2026-12\" (no encryption configured)"), "{}", text(&o));
    }
    Scanned { running, stopped, exported, imported, backlog: backlog.to_vec(), tmp }
}

fn show(scan: &[(PathBuf, u64, usize)]) -> String {
    scan.iter()
        .map(|(f, n, h)| format!("{} ({n} bytes): {h} hits", f.file_name().unwrap().to_string_lossy()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_encrypted_channel_directory_holds_no_plaintext_of_any_event_in_its_wal_or_tables() {
    let s = scan_run(true);
    // The data is there (sealed): the WAL holds the backlog while running, tables after the stop.
    assert!(bytes_in(&s.running, "log") > 10_000 * 100, "the backlog is in the WAL:\n{}", show(&s.running));
    assert!(bytes_in(&s.stopped, "sst") > 10_000 * 100, "the backlog is in tables:\n{}", show(&s.stopped));
    assert!(bytes_in(&s.imported, "log") > 10_000 * 100, "the import is in the copy's WAL:\n{}", show(&s.imported));
    let found: usize = s.running.iter().chain(&s.stopped).chain(&s.imported).map(|(_, _, h)| h).sum();
    assert_eq!(found, 0, "plaintext found:\nrunning:\n{}\nstopped:\n{}", show(&s.running), show(&s.stopped));
    assert_eq!(s.exported, s.backlog, "the tools read the encrypted backlog back, in order");
    eprintln!("running:\n{}\nstopped:\n{}", show(&s.running), show(&s.stopped));
    drop(s.tmp);
}

#[test]
fn negative_control_without_encryption_the_lines_are_in_the_wal_and_the_tables() {
    let s = scan_run(false);
    assert!(hits_in(&s.running, "log") > 10_000, "WAL plaintext:\n{}", show(&s.running));
    assert!(hits_in(&s.stopped, "sst") > 10_000, "table plaintext:\n{}", show(&s.stopped));
    assert!(hits_in(&s.imported, "log") > 10_000, "imported plaintext:\n{}", show(&s.imported));
    assert_eq!(s.exported, s.backlog);
}

/// Streams `n` lines into an agent that is SIGKILLed `kills` times mid-stream and restarted; the
/// sender resends what was not acknowledged. Answers what was delivered.
fn sigkill_run(channel: &str, n: usize, kills: usize) -> (Delivery, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    write_key(&tmp.path().join("keys/a.key"));
    let path = tmp.path().join("kill.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "kill",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics}")),
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
                      channels: ["c1"], batch_size: 1000) }},
    channels: {{ "c1": {channel} }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", roll_interval: "2s", sync: true), channel: "c1", batch_size: 1000) }},
)"#
        ),
    );
    let lines = Arc::new(numbered_lines(n));
    let index = line_index(&lines);
    let log = tmp.path().join("flumen.log");
    let args = ["run", "--quiet", path.to_str().unwrap()];
    let mut acked = 0;
    for k in 0..kills {
        let point = n * (k + 1) / (kills + 2) + fastrand::usize(0..n / (kills + 2) / 2);
        let mut f = Flumen::start(&args, &log);
        let mut stream = AckedStream::open(&mut f, addr(port), lines.clone(), acked);
        let before = stream.read_until(DEADLINE, |a| a >= point);
        // Mid-stream: lines are still unacknowledged (sent, in the socket or in the agent) when
        // the kill lands. Whether the writer thread has handed its last bytes to the kernel yet
        // says nothing about that: socket buffers and the source's pipeline hold many batches.
        assert!(
            before >= point && before < n,
            "kill {k} lands mid-stream ({before} of {n} acknowledged); log:\n{}",
            f.log_text()
        );
        f.kill();
        acked = stream.finish().max(acked);
    }
    let mut f = Flumen::start(&args, &log);
    let mut stream = AckedStream::open(&mut f, addr(port), lines.clone(), acked);
    assert_eq!(stream.read_until(DEADLINE * 3, |a| a == n), n, "log:\n{}", f.log_text());
    stream.finish();
    wait_drained(&f, metrics);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    (Delivery::read(&tmp.path().join("out"), &lines, &index), n)
}

#[test]
fn sigkill_mid_stream_with_encryption_loses_no_acknowledged_line() {
    let channel =
        format!(r#"RocksDb(dir: "data/c1", capacity: 1000000, sync: true, encryption: {})"#, aes(&["a"], "a"));
    let (d, n) = sigkill_run(&channel, 200_000, 3);
    assert_eq!(d.lost(n), Vec::<usize>::new(), "no acknowledged line is lost");
    assert!(d.torn.is_empty(), "no torn or garbled line: {:?}", &d.torn[..d.torn.len().min(5)]);
    eprintln!("encrypted SIGKILL run: {n} lines, 0 lost, {} duplicates", d.duplicates());
}

#[test]
fn negative_control_sigkill_mid_stream_with_a_memory_channel_loses_acknowledged_lines() {
    let (d, n) = sigkill_run("Memory(capacity: 1000000, transaction_capacity: 1000)", 200_000, 3);
    assert!(!d.lost(n).is_empty(), "a Memory channel loses what it held at the kills");
}

/// Reloads (SIGHUP) `path` rewritten as `text`; waits until applied.
fn reload(f: &Flumen, path: &Path, text: &str, metrics: u16, nth: u64) {
    let tmp = path.with_extension("ron.tmp");
    write_file(&tmp, text);
    std::fs::rename(&tmp, path).unwrap();
    f.signal(libc::SIGHUP);
    wait_for(
        DEADLINE,
        || metric(addr(metrics), "AGENT", "ReloadSuccessCount") == Some(nth),
        || format!("reload {nth} applied; log:\n{}", f.log_text()),
    );
}

fn inspect(t: &Path) -> String {
    let o = flumen(&["channel", "inspect", "--topology", t.to_str().unwrap(), "--channel", "c1"]);
    assert!(o.status.success(), "inspect: {}", text(&o));
    text(&o)
}

#[test]
fn rotation_by_reload_and_restart_reads_old_values_and_seals_new_ones_under_the_active_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    write_key(&tmp.path().join("keys/a.key"));
    write_key(&tmp.path().join("keys/b.key"));
    let lines = numbered_lines(3_000);
    let log = tmp.path().join("flumen.log");
    let hold_a = topology(tmp.path(), "t", port, metrics, &aes(&["a"], "a"), sink(false));
    let text_a = std::fs::read_to_string(&hold_a).unwrap();
    let f = fill(&hold_a, &log, port, &lines[..1000]);

    // Reload: key b added and made active; the channel is reopened on the same directory.
    let text_b = text_a.replace(&aes(&["a"], "a"), &aes(&["a", "b"], "b"));
    reload(&f, &hold_a, &text_b, metrics, 1);
    let mut f = f;
    f.send_acknowledged(addr(port), &lines[1000..2000], DEADLINE);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    let shown = inspect(&hold_a);
    assert!(shown.contains("sealed: 1000 under key \"a\", 1000 under key \"b\"; 0 values in plaintext"), "{shown}");

    // Restart with a sink that delivers; more lines under b; everything arrives.
    let deliver = topology(tmp.path(), "t", port, metrics, &aes(&["a", "b"], "b"), sink(true));
    let mut f = Flumen::start(&["run", "--quiet", deliver.to_str().unwrap()], &log);
    f.send_acknowledged(addr(port), &lines[2000..], DEADLINE);
    wait_drained(&f, metrics);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    let (out, _) = output_lines(&tmp.path().join("out"));
    assert_eq!(multiset(out.clone()), multiset(lines.clone()), "every line under either key is delivered");

    // Drained: no value is under a any more, so a can go.
    let only_b = topology(tmp.path(), "t", port, metrics, &aes(&["b"], "b"), sink(true));
    assert!(inspect(&only_b).contains("encryption:   none (0 values in plaintext)"));
    let mut f = Flumen::start(&["run", "--quiet", only_b.to_str().unwrap()], &log);
    f.send_acknowledged(addr(port), &lines[..10], DEADLINE);
    wait_drained(&f, metrics);
    assert_eq!(f.terminate(DEADLINE), Some(0));
}

/// A stopped channel holding 1,000 lines sealed under key "a": (tmp, lines, port, metrics).
fn filled_under_a(encryption: bool) -> (tempfile::TempDir, Vec<String>, u16, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    write_key(&tmp.path().join("keys/a.key"));
    write_key(&tmp.path().join("keys/b.key"));
    let enc = if encryption { aes(&["a"], "a") } else { "None".into() };
    let t = topology(tmp.path(), "fill", port, metrics, &enc, sink(false));
    let lines = numbered_lines(1000);
    let f = fill(&t, &tmp.path().join("fill.log"), port, &lines);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    (tmp, lines, port, metrics)
}

/// `flumen run --strict` on `t`: answers its exit code and output, stopping it once it runs.
fn strict_start(t: &Path, log: &Path, metrics: u16) -> (Option<i32>, String) {
    let mut f = Flumen::start(&["run", "--strict", "--quiet", t.to_str().unwrap()], log);
    let mut code = None;
    let log_path = log.to_path_buf();
    wait_for(
        DEADLINE,
        || {
            code = f.child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
            code.is_some() || metric(addr(metrics), "CHANNEL.c1", "ChannelSize").is_some()
        },
        || std::fs::read_to_string(&log_path).unwrap_or_default(),
    );
    let log_text = f.log_text();
    if code.is_none() {
        f.kill();
    }
    (code, log_text)
}

#[test]
fn removing_a_key_that_values_remain_under_or_a_wrong_key_file_is_a_clear_error() {
    let (tmp, lines, port, metrics) = filled_under_a(true);
    let log = tmp.path().join("run.log");
    let only_b = topology(tmp.path(), "only-b", port, metrics, &aes(&["b"], "b"), sink(true));
    let (code, log_text) = strict_start(&only_b, &log, metrics);
    assert_eq!(code, Some(1), "{log_text}");
    assert!(
        log_text.contains("channel \"c1\": encryption key \"a\" (unknown key): 1000 stored values are sealed under it"),
        "{log_text}"
    );
    // Without --strict the agent runs, the channel fails and retries, saying why.
    let mut f = Flumen::start(&["run", "--quiet", only_b.to_str().unwrap()], &log);
    f.connect(addr(port), DEADLINE);
    wait_for(DEADLINE, || metric(addr(metrics), "CHANNEL.c1", "ChannelFailed") == Some(1), || f.log_text());
    let logged = f.log_text();
    assert!(
        logged.contains(r#"encryption key \"a\" (unknown key)"#)
            || logged.contains(r#"encryption key "a" (unknown key)"#),
        "{logged}"
    );
    f.kill();

    // The wrong key file content under the right id.
    let key_a = tmp.path().join("keys/a.key");
    let right = std::fs::read(&key_a).unwrap();
    write_key(&key_a);
    let with_a = topology(tmp.path(), "with-a", port, metrics, &aes(&["a", "b"], "b"), sink(true));
    let (code, log_text) = strict_start(&with_a, &log, metrics);
    assert_eq!(code, Some(1), "{log_text}");
    assert!(log_text.contains("channel \"c1\": encryption key \"a\" (authentication failed)"), "{log_text}");

    // Negative control: the right key opens the same directory and every line is delivered.
    std::fs::write(&key_a, right).unwrap();
    let f = Flumen::start(&["run", "--strict", "--quiet", with_a.to_str().unwrap()], &log);
    wait_drained(&f, metrics);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    let (out, _) = output_lines(&tmp.path().join("out"));
    assert_eq!(multiset(out), multiset(lines));
}

/// Tampers with the stopped channel in `dir` through RocksDB itself (so RocksDB's checksums
/// pass): flips a bit in the value of sequence 500, and swaps the values of 10 and 11.
fn tamper(dir: &Path) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    let db = rocksdb::DB::open_cf(&opts, dir, ["default", "dead_letter", "index"]).unwrap();
    let key = |s: u64| s.to_be_bytes();
    let mut v500 = db.get(key(500)).unwrap().unwrap();
    let at = v500.len() - 20;
    v500[at] ^= 0x01;
    db.put(key(500), v500).unwrap();
    let (v10, v11) = (db.get(key(10)).unwrap().unwrap(), db.get(key(11)).unwrap().unwrap());
    db.put(key(10), v11).unwrap();
    db.put(key(11), v10).unwrap();
    db.flush().unwrap();
}

/// Tampers, verifies with the tools, drains with an agent: (verify output, delivered lines,
/// dead letters output, tmp).
fn tamper_run(encryption: bool) -> (Output, Vec<String>, String, Vec<String>, tempfile::TempDir) {
    let (tmp, lines, port, metrics) = filled_under_a(encryption);
    let dir = tmp.path().join("data/c1");
    tamper(&dir);
    let enc = if encryption { aes(&["a"], "a") } else { "None".into() };
    let t = topology(tmp.path(), "drain", port, metrics, &enc, sink(true));
    let (ts, ds) = (t.to_str().unwrap(), dir.to_str().unwrap());
    let verify = flumen(&["channel", "verify", "--topology", ts, "--channel", "c1"]);
    let f = Flumen::start(&["run", "--quiet", ts], &tmp.path().join("drain.log"));
    wait_drained(&f, metrics);
    assert_eq!(f.terminate(DEADLINE), Some(0));
    let (out, _) = output_lines(&tmp.path().join("out"));
    let dead = flumen(&["channel", "dead-letters", ds, "--topology", ts, "--channel", "c1"]);
    assert!(dead.status.success(), "{}", text(&dead));
    (verify, out, text(&dead), lines, tmp)
}

#[test]
fn a_tampered_or_swapped_value_is_detected_as_corruption_and_dead_lettered() {
    let (verify, out, dead, lines, tmp) = tamper_run(true);
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify));
    let v = text(&verify);
    for seq in [10, 11, 500] {
        assert!(v.contains(&format!("event {seq} (")) && v.contains("authentication failed"), "{v}");
    }
    let want: Vec<String> =
        lines.iter().enumerate().filter(|(i, _)| ![10, 11, 500].contains(i)).map(|(_, l)| l.clone()).collect();
    assert_eq!(multiset(out), multiset(want), "every other line is delivered, none altered");
    assert!(dead.contains("3 dead letters") && dead.matches("authentication failed").count() == 3, "{dead}");
    // The dead letters are sealed too.
    let found: usize = scan(&tmp.path().join("data/c1"), &needles(&lines)).iter().map(|(_, _, h)| h).sum();
    assert_eq!(found, 0, "no plaintext, dead letters included");
}

#[test]
fn negative_control_without_encryption_the_tampering_goes_unnoticed() {
    let (verify, out, dead, lines, _tmp) = tamper_run(false);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(dead.contains("0 dead letters"), "{dead}");
    let input = multiset(lines);
    assert_eq!(out.len(), 1000, "everything delivered, the altered line too");
    assert_eq!(out.iter().filter(|l| !input.contains_key(*l)).count(), 1, "one altered line passes unnoticed");
}

/// The line and column (1-based) of byte `at` of `text`.
fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    (before.matches('\n').count() + 1, at - before.rfind('\n').map_or(0, |n| n + 1) + 1)
}

#[test]
fn key_file_problems_are_topology_errors_at_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    write_key(&tmp.path().join("keys/a.key"));
    let (port, metrics) = (free_port(), free_port());
    let good = topology(tmp.path(), "good", port, metrics, &aes(&["a"], "a"), sink(true));
    let o = flumen(&["validate", good.to_str().unwrap()]);
    assert!(o.status.success(), "negative control: a good key validates: {}", text(&o));

    let cases: [(&str, String, &str, &str); 4] = [
        ("missing", aes(&["a", "gone"], "a"), "\"keys/gone.key\"", "No such file"),
        ("inactive", aes(&["a"], "zz"), "\"zz\"", "active key \"zz\" is not among keys"),
        ("short", aes(&["a", "short"], "a"), "\"keys/short.key\"", "31 bytes"),
        ("open", aes(&["a", "open"], "a"), "\"keys/open.key\"", "chmod 600"),
    ];
    std::fs::write(tmp.path().join("keys/short.key"), [7u8; 31]).unwrap();
    std::fs::set_permissions(tmp.path().join("keys/short.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    write_key(&tmp.path().join("keys/open.key"));
    std::fs::set_permissions(tmp.path().join("keys/open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    for (name, enc, at, why) in cases {
        let t = topology(tmp.path(), name, port, metrics, &enc, sink(true));
        let o = flumen(&["validate", t.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        let content = std::fs::read_to_string(&t).unwrap();
        // The value under the key id, or `active`'s value: the last occurrence in the text.
        let (line, col) = position(&content, content.rfind(at).unwrap());
        let want = format!("{}:{line}:{col}: channel \"c1\":", t.display());
        eprintln!("{name}: {}", text(&o).trim());
        assert!(text(&o).contains(&want) && text(&o).contains(why), "{name}: want {want} … {why} in\n{}", text(&o));
    }
}
