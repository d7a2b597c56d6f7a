//! The offline channel tools on real directories: `flumen channel inspect | verify | export |
//! import`. A real agent (Netcat → Timestamp and Static interceptors → `RocksDb` "c1", with an
//! `Http` sink posting where nothing listens, so nothing drains) fills a channel with acknowledged
//! Loghub lines, some of them with bytes that are not UTF-8; it is stopped; then the tools run on
//! the directory it left, and a second real agent drains an imported copy into `FileRoll`.
//!
//! The delivery check has a negative control: a copy imported from an export that was altered as
//! a lossy format would alter it (bodies as UTF-8 text with U+FFFD, one line dropped, one
//! repeated) is drained by the same agent, and the same check must find exactly those losses.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const BATCH: usize = 100;

/// The interceptors of the filling agent's source.
const INTERCEPTORS: &str = r#"[Timestamp(), Static(key: "tier", value: "edge")]"#;

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// The input: numbered Loghub lines; every 97th has bytes that are not UTF-8 appended (a Latin-1
/// "été" and 0xFF), as a line from a legacy application would.
fn input_lines(n: usize) -> Vec<Vec<u8>> {
    numbered_lines(n)
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut b = l.into_bytes();
            if i % 97 == 5 {
                b.extend_from_slice(b" \xe9t\xe9 \xff");
            }
            b
        })
        .collect()
}

/// Sends `lines` (raw bytes) to a Netcat source with `ack_every_event: true` and waits for one
/// `OK` per line.
fn send_acknowledged(agent: &mut Flumen, at: SocketAddr, lines: &[Vec<u8>]) {
    let mut stream = agent.connect(at, Duration::from_secs(60));
    let mut reader = stream.try_clone().unwrap();
    let mut payload = Vec::new();
    for l in lines {
        payload.extend_from_slice(l);
        payload.push(b'\n');
    }
    let sender = std::thread::spawn(move || stream.write_all(&payload));
    let (mut acks, mut buf) = (Acks::default(), [0u8; 8192]);
    reader.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    while acks.count < lines.len() {
        let n = reader.read(&mut buf).expect("acknowledgements arrive");
        assert!(n > 0, "the agent closed the connection after {} acknowledgements", acks.count);
        acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    }
    sender.join().unwrap().unwrap();
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Fills `tmp/data/c1` through a real agent with `lines`, every one acknowledged, and stops it
/// with SIGTERM (`kill`: SIGKILL, the events then in the WAL only). Answers the clock before and
/// after.
fn fill(tmp: &Path, lines: &[Vec<u8>], kill: bool) -> (i64, i64) {
    let port = free_port();
    let topology = fill_topology(tmp, port, INTERCEPTORS, BATCH);
    let args = ["run", "--quiet", "--drain-timeout", "1s", topology.to_str().unwrap()];
    let mut agent = Flumen::start(&args, &tmp.join("fill.log"));
    let before = now_ms();
    send_acknowledged(&mut agent, addr(port), lines);
    let after = now_ms();
    if kill {
        agent.kill();
    } else {
        assert_eq!(agent.terminate(Duration::from_secs(60)), Some(0), "the fill agent stops cleanly");
    }
    (before, after)
}

/// Runs `flumen ARGS` (with `stdin` as its standard input) to its end.
fn flumen(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(args)
        .env("FLUMEN_LOG", "warn")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input));
    }
    child.wait_with_output().unwrap()
}

/// Runs `flumen ARGS` and asserts it exits 0; answers its stdout.
fn ok(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = flumen(args, stdin);
    assert!(
        out.status.success(),
        "flumen {args:?} exited {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The number after `name:` on `name`'s line of an `inspect` report.
fn field(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}:` number in the report:\n{report}"))
}

/// One exported event.
#[derive(Debug, Clone, PartialEq)]
struct Exported {
    seq: u64,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn parse_export(ndjson: &[u8]) -> Vec<Exported> {
    use base64::Engine as _;
    let text = std::str::from_utf8(ndjson).expect("the export is UTF-8 text");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let body = match (&v["body"], &v["body_base64"]) {
                (serde_json::Value::String(s), serde_json::Value::Null) => s.clone().into_bytes(),
                (serde_json::Value::Null, serde_json::Value::String(b)) => {
                    base64::engine::general_purpose::STANDARD.decode(b).unwrap()
                }
                _ => panic!("exactly one of body and body_base64: {l}"),
            };
            Exported {
                seq: v["seq"].as_u64().unwrap(),
                headers: serde_json::from_value(v["headers"].clone()).unwrap(),
                body,
            }
        })
        .collect()
}

/// The lines (without their LF) of every file under `dir`, files in name order, as bytes.
fn raw_output(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "{} ends in a complete line", f.display());
        out.extend(bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec));
        out.pop();
    }
    out
}

fn newlines_under(dir: &Path) -> usize {
    files_under(dir).iter().map(|f| std::fs::read(f).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())).sum()
}

/// How the output differs from the expected lines: lines missing (index), lines more than once
/// (index), lines that are no input line, and whether the order differs.
#[derive(Debug, Default, PartialEq)]
struct Check {
    missing: Vec<usize>,
    repeated: Vec<usize>,
    foreign: usize,
    out_of_order: bool,
}

fn check(expected: &[Vec<u8>], got: &[Vec<u8>]) -> Check {
    let index: std::collections::HashMap<&[u8], usize> =
        expected.iter().enumerate().map(|(i, l)| (l.as_slice(), i)).collect();
    assert_eq!(index.len(), expected.len(), "input lines are unique");
    let mut seen = vec![0u32; expected.len()];
    let mut c = Check::default();
    let mut last = None;
    for l in got {
        match index.get(l.as_slice()) {
            Some(&i) => {
                seen[i] += 1;
                if last.is_some_and(|p| p >= i) && seen[i] == 1 {
                    c.out_of_order = true;
                }
                last = Some(i);
            }
            None => c.foreign += 1,
        }
    }
    c.missing = (0..expected.len()).filter(|&i| seen[i] == 0).collect();
    c.repeated = (0..expected.len()).filter(|&i| seen[i] > 1).collect();
    c
}

/// Drains the channel directories `dirs` (each into its own `FileRoll`, `outN`) with a real agent
/// until `want[i]` lines arrived in each, then stops it; answers the output directories.
fn drain(tmp: &Path, dirs: &[&Path], want: &[usize]) -> Vec<PathBuf> {
    let port = free_port();
    let mut channels = String::new();
    let mut sinks = String::new();
    let mut names = Vec::new();
    let mut outs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        channels.push_str(&format!("\"c{i}\": RocksDb(dir: \"{}\", sync: true, min_free_bytes: 0),\n", d.display()));
        let out = tmp.join(format!("out{i}"));
        sinks.push_str(&format!(
            "\"k{i}\": (kind: FileRoll(dir: \"{}\", roll_interval: \"0s\"), channel: \"c{i}\", batch_size: {BATCH}),\n",
            out.display()
        ));
        names.push(format!("\"c{i}\""));
        outs.push(out);
    }
    let topology = tmp.join("drain.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "drain",
    sources: {{ "idle": (kind: Netcat(bind: "127.0.0.1:{port}"), channels: [{}]) }},
    channels: {{ {channels} }},
    sinks: {{ {sinks} }},
)"#,
            names.join(", ")
        ),
    );
    let mut agent = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.join("drain.log"));
    agent.connect(addr(port), Duration::from_secs(60));
    for (out, &n) in outs.iter().zip(want) {
        wait_for(
            Duration::from_secs(120),
            || newlines_under(out) >= n,
            || format!("{n} lines in {}: {}; log:\n{}", out.display(), newlines_under(out), agent.log_text()),
        );
    }
    assert_eq!(agent.terminate(Duration::from_secs(60)), Some(0), "the drain agent stops cleanly");
    outs
}

#[test]
fn inspect_export_import_and_a_real_drain_deliver_every_line_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = input_lines(5000);
    let non_utf8 = lines.iter().filter(|l| std::str::from_utf8(l).is_err()).count();
    assert!(non_utf8 > 40, "some bodies are not UTF-8");
    let (before, after) = fill(tmp.path(), &lines, false);
    let dir = tmp.path().join("data/c1");
    let d = dir.to_str().unwrap();

    // inspect: the count and bytes of what the agent acknowledged.
    let report = String::from_utf8(ok(&["channel", "inspect", d], None)).unwrap();
    eprintln!("{report}");
    assert_eq!(field(&report, "events"), lines.len() as u64, "{report}");
    let body_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    assert_eq!(field(&report, "body bytes"), body_bytes, "{report}");
    assert!(report.contains("in flight:    none"), "{report}");
    assert_eq!(field(&report, "dead letters"), 0);

    // export: every line in order, headers and body bytes intact; twice the same, nothing removed.
    let ndjson = ok(&["channel", "export", d], None);
    let exported = parse_export(&ndjson);
    let bodies: Vec<Vec<u8>> = exported.iter().map(|e| e.body.clone()).collect();
    assert!(bodies == lines, "the export holds every line in order: {:?}", check(&lines, &bodies));
    assert!(exported.windows(2).all(|w| w[0].seq < w[1].seq), "ascending sequence numbers");
    assert!(exported.iter().all(|e| e.headers.get("tier").map(String::as_str) == Some("edge")));
    let stamps: Vec<i64> = exported.iter().map(|e| e.headers["timestamp"].parse().unwrap()).collect();
    let (oldest, newest) = (*stamps.iter().min().unwrap(), *stamps.iter().max().unwrap());
    assert!(before <= oldest && oldest <= newest && newest <= after, "{before} {oldest} {newest} {after}");
    let stored: u64 = exported
        .iter()
        .map(|e| 8 + e.body.len() as u64 + e.headers.iter().map(|(k, v)| 8 + (k.len() + v.len()) as u64).sum::<u64>())
        .sum();
    assert_eq!(field(&report, "stored bytes"), stored, "{report}");
    let time = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    assert!(report.contains(&format!("oldest event: {} (from the `timestamp` header", time(oldest))), "{report}");
    assert!(report.contains(&format!("newest event: {} (from the `timestamp` header", time(newest))), "{report}");
    let base64_lines = String::from_utf8_lossy(&ndjson).matches("\"body_base64\"").count();
    assert_eq!(base64_lines, non_utf8, "exactly the non-UTF-8 bodies travel as base64");
    assert_eq!(ok(&["channel", "export", d], None), ndjson, "a second export finds the same");
    let again = String::from_utf8(ok(&["channel", "inspect", d], None)).unwrap();
    assert_eq!(field(&again, "events"), lines.len() as u64, "export removed nothing");

    // import into a fresh directory, in two parts: the second is appended after the first.
    let text = String::from_utf8(ndjson.clone()).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let half = 2000;
    let first = format!("{}\n", all[..half].join("\n"));
    let second = format!("{}\n", all[half..].join("\n"));
    let moved = tmp.path().join("moved/c1");
    let m = moved.to_str().unwrap();
    let out = String::from_utf8(ok(&["channel", "import", m], Some(first.as_bytes()))).unwrap();
    assert!(out.contains(&format!("imported {half} events (sequence numbers 0..{half})")), "{out}");
    let out = String::from_utf8(ok(&["channel", "import", m], Some(second.as_bytes()))).unwrap();
    assert!(out.contains(&format!("the channel holds {} events", lines.len())), "{out}");
    let reexported = parse_export(&ok(&["channel", "export", m], None));
    let strip = |v: &[Exported]| v.iter().map(|e| (e.headers.clone(), e.body.clone())).collect::<Vec<_>>();
    assert!(strip(&reexported) == strip(&exported), "import then export gives the same headers and bodies, in order");
    let verify = String::from_utf8(ok(&["channel", "verify", m], None)).unwrap();
    assert!(verify.contains(&format!("healthy: {} events", lines.len())), "{verify}");

    // The negative control: the export altered as a lossy format would (bodies as UTF-8 text,
    // invalid bytes as U+FFFD), one line left out, one repeated.
    let (dropped, repeated) = (10, 20);
    let mut lossy = String::new();
    for (i, l) in all.iter().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        if let Some(obj) = v.as_object_mut() {
            if obj.contains_key("body_base64") {
                obj.remove("body_base64");
                obj.insert("body".into(), String::from_utf8_lossy(&exported[i].body).into_owned().into());
            }
        }
        if i != dropped {
            lossy.push_str(&format!("{v}\n"));
        }
        if i == repeated {
            lossy.push_str(&format!("{v}\n"));
        }
    }
    let control = tmp.path().join("control/c1");
    ok(&["channel", "import", control.to_str().unwrap()], Some(lossy.as_bytes()));

    // A real agent drains both into FileRoll.
    let outs = drain(tmp.path(), &[&moved, &control], &[lines.len(), lines.len()]);
    let delivered = raw_output(&outs[0]);
    let c = check(&lines, &delivered);
    eprintln!("imported copy: {} lines delivered: {c:?}", delivered.len());
    assert_eq!(c, Check::default(), "every line delivered once, in order");
    assert_eq!(delivered.len(), lines.len());
    let control_out = check(&lines, &raw_output(&outs[1]));
    eprintln!(
        "negative control: {} missing, {} repeated, {} foreign",
        control_out.missing.len(),
        control_out.repeated.len(),
        control_out.foreign
    );
    let mut want_missing: Vec<usize> =
        (0..lines.len()).filter(|&i| std::str::from_utf8(&lines[i]).is_err()).chain([dropped]).collect();
    want_missing.sort();
    assert_eq!(
        control_out.missing, want_missing,
        "negative control: the check sees the lossy bodies and the dropped line"
    );
    assert_eq!(control_out.repeated, vec![repeated], "negative control: the check sees the repeated line");
    assert_eq!(control_out.foreign, non_utf8, "negative control: the lossy bodies arrive changed");

    // Drained: the channel is empty now (the counts come from the disk, not from the input).
    let drained = String::from_utf8(ok(&["channel", "inspect", m], None)).unwrap();
    assert_eq!(field(&drained, "events"), 0, "{drained}");
    assert!(drained.contains("oldest event: none"), "{drained}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

fn largest(dir: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("a {suffix} file in {}", dir.display()))
}

fn flip(path: &Path, at: u64, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[at as usize..at as usize + n] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_passes_a_real_channel_and_lists_flipped_bytes_in_a_table_file() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = input_lines(3000);
    fill(tmp.path(), &lines, false);
    let dir = tmp.path().join("data/c1");
    let out = String::from_utf8(ok(&["channel", "verify", dir.to_str().unwrap()], None)).unwrap();
    eprintln!("{out}");
    assert!(out.contains(&format!("healthy: {} events, every one decodes", lines.len())), "{out}");

    // Flipped bytes in the table file the agent's shutdown flushed the events into.
    let copy = tmp.path().join("flipped/c1");
    copy_dir(&dir, &copy);
    let sst = largest(&copy, ".sst");
    let len = std::fs::metadata(&sst).unwrap().len();
    flip(&sst, len / 3, 8);
    let c = copy.to_str().unwrap();
    let v = flumen(&["channel", "verify", c], None);
    let report = String::from_utf8_lossy(&v.stdout);
    eprintln!("{report}");
    assert_eq!(v.status.code(), Some(1), "damage exits 1: {report}{}", String::from_utf8_lossy(&v.stderr));
    let damaged: Vec<&str> = report.lines().filter(|l| l.starts_with("damaged: ")).collect();
    assert!(!damaged.is_empty() && damaged[0].contains("unreadable"), "{report}");
    assert!(report.contains(sst.file_name().unwrap().to_str().unwrap()), "names the table file: {report}");
    let decoded: u64 = report
        .lines()
        .find_map(|l| l.split("; ").nth(1).filter(|_| l.contains(": damaged: ")))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {report}"));
    assert!(decoded > 0 && decoded < lines.len() as u64, "only one block is lost: {decoded}");
    // export of the damaged copy writes what is readable and exits 1, naming the damage.
    let e = flumen(&["channel", "export", c], None);
    assert_eq!(e.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("damaged, not exported"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    assert_eq!(parse_export(&e.stdout).len() as u64, decoded);
    // The original is untouched by all of this.
    ok(&["channel", "verify", dir.to_str().unwrap()], None);
}

#[test]
fn verify_lists_a_flipped_wal_and_a_poison_value_and_export_dead_letter_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = input_lines(2000);
    // SIGKILL: the events are in the WAL only.
    fill(tmp.path(), &lines, true);
    let dir = tmp.path().join("data/c1");
    let out = String::from_utf8(ok(&["channel", "verify", dir.to_str().unwrap()], None)).unwrap();
    assert!(out.contains(&format!("healthy: {} events", lines.len())), "the WAL replays: {out}");

    let wal_copy = tmp.path().join("wal/c1");
    copy_dir(&dir, &wal_copy);
    let wal = largest(&wal_copy, ".log");
    let len = std::fs::metadata(&wal).unwrap().len();
    flip(&wal, len / 2, 8);
    let v = flumen(&["channel", "verify", wal_copy.to_str().unwrap()], None);
    let report = String::from_utf8_lossy(&v.stdout);
    eprintln!("{report}");
    assert_eq!(v.status.code(), Some(1), "{report}");
    assert!(report.contains("damaged: the database does not open") && report.contains("orruption"), "{report}");

    // A poison value (as a bug or a bit flip in memory could have written one).
    let poison_copy = tmp.path().join("poison/c1");
    copy_dir(&dir, &poison_copy);
    let poison = b"\xff\xff\xff\x7f not an event".to_vec();
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &poison_copy).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &poison_copy, &cfs).unwrap();
        db.put(700u64.to_be_bytes(), &poison).unwrap();
        db.flush().unwrap();
    }
    let p = poison_copy.to_str().unwrap();
    let v = flumen(&["channel", "verify", p], None);
    let report = String::from_utf8_lossy(&v.stdout);
    eprintln!("{report}");
    assert_eq!(v.status.code(), Some(1), "{report}");
    let row = format!("damaged: event 700 ({} bytes) does not decode", poison.len());
    assert!(report.contains(&row), "{report}");

    assert!(report.contains("an agent moves each event that does not decode to the dead letters"), "{report}");

    // A real agent drains it, moving the poison to the dead letters; then the channel verifies
    // and export --dead-letter gives the stored bytes back.
    let outs = drain(tmp.path(), &[&poison_copy], &[lines.len() - 1]);
    let delivered = raw_output(&outs[0]);
    let c = check(&lines, &delivered);
    assert_eq!(c.missing, vec![700], "only the poisoned event is missing: {c:?}");
    assert!(c.repeated.is_empty() && c.foreign == 0, "{c:?}");
    let healthy = String::from_utf8(ok(&["channel", "verify", p], None)).unwrap();
    assert!(healthy.contains("healthy: 0 events") && healthy.contains("1 dead letters"), "{healthy}");
    let letters = String::from_utf8(ok(&["channel", "export", "--dead-letter", p], None)).unwrap();
    let rows: Vec<serde_json::Value> = letters.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{letters}");
    assert_eq!(rows[0]["seq"], 700);
    assert!(rows[0]["reason"].as_str().unwrap().starts_with("does not decode"), "{letters}");
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD.decode(rows[0]["value_base64"].as_str().unwrap()).unwrap();
    assert_eq!(value, poison, "the stored bytes, kept");
    // A dead letter is not an event: import refuses the line and imports nothing.
    let refused = flumen(&["channel", "import", p], Some(letters.as_bytes()));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("input line 1"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let after = String::from_utf8(ok(&["channel", "inspect", p], None)).unwrap();
    assert_eq!(field(&after, "events"), 0, "nothing imported: {after}");
    assert_eq!(field(&after, "dead letters"), 1, "{after}");
}

#[test]
fn the_tools_refuse_a_directory_a_running_agent_holds_naming_its_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let topology = fill_topology(tmp.path(), port, INTERCEPTORS, BATCH);
    let mut agent = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("agent.log"));
    let lines = input_lines(10);
    send_acknowledged(&mut agent, addr(port), &lines);
    let dir = tmp.path().join("data/c1");
    let d = dir.to_str().unwrap();
    let lock = dir.join("LOCK");
    let ndjson = b"{\"headers\":{},\"body\":\"081109 203615 148 INFO dfs.DataNode: imported\"}\n".to_vec();
    for args in [
        vec!["channel", "inspect", d],
        vec!["channel", "verify", d],
        vec!["channel", "export", d],
        vec!["channel", "export", "--dead-letter", d],
        vec!["channel", "import", d],
    ] {
        let out = flumen(&args, Some(&ndjson));
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{args:?} refuses: {stderr}");
        assert!(
            stderr.contains(lock.to_str().unwrap()) && stderr.contains("lock held"),
            "{args:?} names the LOCK: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} wrote nothing: {}", String::from_utf8_lossy(&out.stdout));
    }
    // The agent did not notice: it still acknowledges.
    send_acknowledged(&mut agent, addr(port), &input_lines(12)[10..]);
    assert_eq!(agent.terminate(Duration::from_secs(60)), Some(0));
    // Once it stopped, the same commands work (the lock was the reason), and the import above
    // wrote nothing.
    let report = String::from_utf8(ok(&["channel", "inspect", d], None)).unwrap();
    assert_eq!(field(&report, "events"), 12, "{report}");
    ok(&["channel", "import", d], Some(&ndjson));
    let report = String::from_utf8(ok(&["channel", "inspect", d], None)).unwrap();
    assert_eq!(field(&report, "events"), 13, "{report}");
}
