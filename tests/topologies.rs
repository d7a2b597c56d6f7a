//! Every example topology in `topologies/` validates, and runs on the real Loghub samples.
//!
//! Each test copies its example and the Loghub data into a temporary folder laid out as the
//! repository is (`topologies/<example>.ron`, `topologies/data/loghub/`, `var/`), runs the real
//! `flumen` binary there, and compares the output lines with the input lines. It also checks that
//! the run wrote nothing beside the example (every output goes under `var/<example>/`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flumen");

/// Every example in `topologies/`; each has a test below.
const EXAMPLES: [&str; 12] = [
    "durable-channel",
    "exec",
    "fan-out",
    "interceptors",
    "kafka",
    "multiplexing",
    "netcat",
    "quickstart",
    "spool-dir",
    "taildir",
    "tier-collector",
    "tier-edge",
];

/// The Loghub samples.
const LOGS: [&str; 5] = ["Apache_2k.log", "HDFS_2k.log", "Linux_2k.log", "OpenSSH_2k.log", "Zookeeper_2k.log"];

/// The level regex of multiplexing.ron and quickstart.ron.
const LEVEL_REGEX: &str = r"^(?:\d{6} \d{6} \d+ |\d{4}-\d\d-\d\d [\d:,]+ - |\[[^\]]*\] \[)([A-Za-z]+)";

/// How long a run may take before the test fails (a bound for hangs, not a timing assertion).
const DEADLINE: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary copy of the repository's layout holding some examples and the Loghub data.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(examples: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("topologies/data/loghub");
        std::fs::create_dir_all(&data).expect("create data dir");
        for log in LOGS {
            std::fs::copy(repo().join("topologies/data/loghub").join(log), data.join(log)).expect("copy a Loghub file");
        }
        for example in examples {
            let from = repo().join(format!("topologies/{example}.ron"));
            std::fs::copy(&from, dir.path().join(format!("topologies/{example}.ron")))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
        Sandbox { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The example's path relative to the sandbox's root, as a user at the repository's root
    /// would type it.
    fn example(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("topologies/{name}.ron"))
    }

    fn var(&self, rel: &str) -> PathBuf {
        self.root().join("var").join(rel)
    }

    /// Replaces `from` by `to` in the sandbox's copy of an example.
    fn edit(&self, name: &str, from: &str, to: &str) {
        let path = self.root().join(self.example(name));
        let text = std::fs::read_to_string(&path).expect("read example");
        assert!(text.contains(from), "{name}.ron does not contain {from:?}");
        std::fs::write(&path, text.replace(from, to)).expect("write example");
    }

    /// Copies the Loghub files into `var/spool-dir/spool`, as spool-dir.ron's comments say.
    fn fill_spool_dir(&self) {
        let spool = self.var("spool-dir/spool");
        std::fs::create_dir_all(&spool).expect("create spool dir");
        for log in LOGS {
            std::fs::copy(self.root().join("topologies/data/loghub").join(log), spool.join(log))
                .expect("copy to spool");
        }
    }

    fn validate(&self, name: &str) {
        let out = Command::new(BIN)
            .arg("validate")
            .arg(self.example(name))
            .current_dir(self.root())
            .output()
            .expect("run flumen validate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}.ron does not validate:\n{}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("is valid"), "{stdout}");
    }

    /// Starts `flumen run [args] <example>` with output going to files in the sandbox.
    fn start(&self, name: &str, args: &[&str]) -> Agent {
        let log = self.root().join(format!("{name}.stderr"));
        let child = Command::new(BIN)
            .arg("run")
            .args(args)
            .arg("--quiet")
            .arg(self.example(name))
            .current_dir(self.root())
            .env("FLUMEN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.root().join(format!("{name}.stdout"))).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("stderr file"))
            .spawn()
            .expect("start flumen run");
        Agent { child, log }
    }

    /// Validates `name`, runs it with `--once` until it exits, and checks that it exited 0 and
    /// wrote nothing outside `var/<name>/`. Answers its stderr.
    fn run_once(&self, name: &str) -> String {
        self.validate(name);
        let before = files_under(&self.root().join("topologies"));
        let mut agent = self.start(name, &["--once"]);
        let status = agent.wait(DEADLINE);
        let stderr = agent.stderr();
        assert!(status.success(), "flumen run --once {name}.ron exited with {status}:\n{stderr}");
        assert_eq!(files_under(&self.root().join("topologies")), before, "the run changed files beside the example");
        let written: Vec<String> = std::fs::read_dir(self.root().join("var"))
            .map(|d| d.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert_eq!(written, vec![name.to_string()], "outputs must all go under var/{name}/");
        stderr
    }
}

/// A running `flumen run`.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the agent to exit; kills it and fails when it is still running at the deadline.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("flumen did not exit within {limit:?}; its log:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: sending a signal to a child process this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it answers `Some`, failing with `what` and the last state at the deadline.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if Instant::now() >= deadline => panic!("timed out waiting for {what}: {state}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Path to size of every file under `dir`.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let entry = entry.expect("dir entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(entry.path(), meta.len());
            }
        }
    }
    out
}

/// The lines of input files as a line source makes events of them: split on LF, a CR before the
/// LF dropped. A file's final line without a line ending is kept apart in `finals`.
#[derive(Clone)]
struct Input {
    lines: Vec<Vec<u8>>,
    finals: Vec<Vec<u8>>,
}

fn input(names: &[&str]) -> Input {
    let mut input = Input { lines: Vec::new(), finals: Vec::new() };
    for name in names {
        let bytes = std::fs::read(repo().join("topologies/data/loghub").join(name)).expect("read Loghub file");
        let strip = |l: &[u8]| l.strip_suffix(b"\r").unwrap_or(l).to_vec();
        let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let last = parts.pop().expect("split yields at least one part");
        input.lines.extend(parts.into_iter().map(strip));
        if !last.is_empty() {
            input.finals.push(strip(last));
        }
    }
    input
}

impl Input {
    /// Every line, final unterminated ones included.
    fn all(&self) -> Vec<Vec<u8>> {
        self.lines.iter().chain(&self.finals).cloned().collect()
    }

    /// The lines `keep` answers true for.
    fn filter(&self, keep: impl Fn(&[u8]) -> bool) -> Input {
        let f = |v: &Vec<Vec<u8>>| v.iter().filter(|l| keep(l)).cloned().collect();
        Input { lines: f(&self.lines), finals: f(&self.finals) }
    }
}

/// Every line FileRoll wrote into `dir` (each file ends with a line ending).
fn output(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.expect("dir entry").path()).collect();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("read output");
        if bytes.is_empty() {
            continue;
        }
        assert_eq!(bytes.last(), Some(&b'\n'), "{} ends in the middle of a line", file.display());
        lines.extend(bytes[..bytes.len() - 1].split(|b| *b == b'\n').map(<[u8]>::to_vec));
    }
    lines
}

fn multiset(lines: &[Vec<u8>]) -> BTreeMap<&[u8], usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_slice()).or_insert(0) += 1;
    }
    m
}

/// Fails unless `actual` holds exactly the lines `expected` holds, as many times each (in any
/// order), showing a few that differ.
fn assert_same_lines(what: &str, actual: &[Vec<u8>], expected: &[Vec<u8>]) {
    let (a, e) = (multiset(actual), multiset(expected));
    if a == e {
        return;
    }
    let show = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
    let missing: Vec<String> =
        e.iter().filter(|(l, n)| a.get(*l).copied().unwrap_or(0) < **n).take(3).map(|(l, _)| show(l)).collect();
    let extra: Vec<String> =
        a.iter().filter(|(l, n)| e.get(*l).copied().unwrap_or(0) < **n).take(3).map(|(l, _)| show(l)).collect();
    panic!(
        "{what}: {} lines written, {} expected\n  missing e.g. {missing:?}\n  unexpected e.g. {extra:?}",
        actual.len(),
        expected.len()
    );
}

/// As [`assert_same_lines`], for a source that may hold back a file's final line while it has no
/// line ending (as Flume's TAILDIR does, waiting for the writer to finish it): each of
/// `input.finals` may be missing.
fn assert_lines_but_unfinished(what: &str, actual: &[Vec<u8>], input: &Input) {
    let present: Vec<Vec<u8>> = input.finals.iter().filter(|f| actual.contains(f)).cloned().collect();
    let expected: Vec<Vec<u8>> = input.lines.iter().chain(&present).cloned().collect();
    assert_same_lines(what, actual, &expected);
}

/// The level `LEVEL_REGEX` finds in a line, if any.
fn level(line: &[u8]) -> Option<String> {
    static RE: LazyLock<regex::bytes::Regex> =
        LazyLock::new(|| regex::bytes::Regex::new(LEVEL_REGEX).expect("level regex"));
    RE.captures(line).map(|c| String::from_utf8_lossy(&c[1]).into_owned())
}

/// This machine's host name, as the Host interceptor reads it.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    assert_eq!(unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) }, 0, "gethostname");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn is_problem(line: &[u8]) -> bool {
    matches!(level(line).as_deref(), Some("ERROR" | "error" | "WARN"))
}

#[test]
fn every_example_validates_and_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("topologies"))
        .expect("read topologies/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .map(|p| p.file_stem().expect("file name").to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, EXAMPLES, "every example in topologies/ needs a test here");
    let sandbox = Sandbox::new(&EXAMPLES);
    sandbox.fill_spool_dir();
    for example in EXAMPLES {
        sandbox.validate(example);
    }
}

#[test]
fn exec_writes_every_line_of_the_command() {
    let sandbox = Sandbox::new(&["exec"]);
    sandbox.run_once("exec");
    assert_same_lines("exec", &output(&sandbox.var("exec/out")), &input(&["Linux_2k.log"]).all());
}

#[test]
fn fan_out_writes_every_line_to_both_sinks() {
    let sandbox = Sandbox::new(&["fan-out"]);
    sandbox.run_once("fan-out");
    let expected = input(&["OpenSSH_2k.log"]).all();
    assert_same_lines("fan-out main", &output(&sandbox.var("fan-out/main")), &expected);
    // The optional channel has room for the whole file, so it misses nothing either.
    assert_same_lines("fan-out mirror", &output(&sandbox.var("fan-out/mirror")), &expected);
}

#[test]
fn multiplexing_routes_each_line_by_its_level() {
    let text = std::fs::read_to_string(repo().join("topologies/multiplexing.ron")).expect("read example");
    assert!(text.contains(LEVEL_REGEX), "multiplexing.ron's regex and this test's differ");
    let sandbox = Sandbox::new(&["multiplexing"]);
    sandbox.run_once("multiplexing");
    let all = input(&LOGS);
    let route = |line: &[u8]| match level(line).as_deref() {
        Some("ERROR" | "error") => "errors",
        Some("WARN") => "warnings",
        _ => "other",
    };
    let mut counts = BTreeMap::new();
    for sink in ["errors", "warnings", "other"] {
        let expected = all.filter(|l| route(l) == sink).all();
        let actual = output(&sandbox.var(&format!("multiplexing/{sink}")));
        assert_same_lines(&format!("multiplexing {sink}"), &actual, &expected);
        counts.insert(sink, actual.len());
    }
    // The Loghub samples hold 595 Apache [error] and 13 ZooKeeper ERROR lines, 80 HDFS and 1318
    // ZooKeeper WARN lines.
    assert_eq!(counts, BTreeMap::from([("errors", 608), ("warnings", 1398), ("other", 10_000 - 608 - 1398)]));
}

#[test]
fn interceptors_filter_and_set_headers() {
    let sandbox = Sandbox::new(&["interceptors"]);
    let stderr = sandbox.run_once("interceptors");
    let kept = regex::bytes::Regex::new(" - (WARN|ERROR) ").expect("regex");
    let expected = input(&["Zookeeper_2k.log"]).filter(|l| kept.is_match(l)).all();
    assert_eq!(expected.len(), 1331);
    assert_same_lines("interceptors", &output(&sandbox.var("interceptors/out")), &expected);

    // The Logger sink shows each kept event with its headers.
    let shown: Vec<&str> = stderr.lines().filter(|l| l.contains("Event: { headers:")).collect();
    assert_eq!(shown.len(), 1331, "events logged by the Logger sink");
    let host = hostname();
    let uuid = regex::Regex::new(r#""id": "zk-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}""#)
        .expect("regex");
    let timestamp = regex::Regex::new(r#""timestamp": "\d{13}""#).expect("regex");
    let mut ids = std::collections::BTreeSet::new();
    for line in &shown {
        assert!(line.contains(r#""dc": "eu-1""#), "Static: {line}");
        assert!(line.contains(&format!(r#""host": "{host}""#)), "Host: {line}");
        assert!(timestamp.is_match(line), "Timestamp: {line}");
        assert!(line.contains(r#""level": "WARN""#) || line.contains(r#""level": "ERROR""#), "RegexExtractor: {line}");
        assert!(!line.contains("x-thread"), "RemoveHeader: {line}");
        let id = uuid.find(line).unwrap_or_else(|| panic!("Uuid: {line}"));
        ids.insert(id.as_str().to_string());
    }
    assert_eq!(ids.len(), 1331, "every event has its own id");
}

#[test]
fn netcat_writes_the_lines_received_over_tcp() {
    let sandbox = Sandbox::new(&["netcat"]);
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let bind = format!("127.0.0.1:{port}");
    sandbox.edit("netcat", "127.0.0.1:44444", &bind);
    sandbox.validate("netcat");
    let mut agent = sandbox.start("netcat", &[]);
    let mut stream = wait_for("the Netcat source to listen", DEADLINE, || {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("flumen exited with {status}:\n{}", agent.stderr());
        }
        TcpStream::connect(&bind).map_err(|e| e.to_string())
    });
    let log = std::fs::read(repo().join("topologies/data/loghub/OpenSSH_2k.log")).expect("read Loghub file");
    stream.write_all(&log).expect("send the lines");
    stream.shutdown(Shutdown::Write).expect("end of input");
    let mut acks = String::new();
    stream.read_to_string(&mut acks).expect("read the acknowledgements");
    assert_eq!(acks.lines().filter(|l| *l == "OK").count(), 2000, "one OK per line committed");
    assert_eq!(acks.len(), 2000 * 3);

    let out = sandbox.var("netcat/out");
    wait_for("the FileRoll sink to write 2000 lines", DEADLINE, || {
        let n = output(&out).len();
        if n >= 2000 {
            Ok(())
        } else {
            Err(format!("{n} lines written"))
        }
    });
    agent.terminate();
    let status = agent.wait(DEADLINE);
    assert!(status.success(), "flumen exited with {status} on SIGTERM:\n{}", agent.stderr());
    assert_same_lines("netcat", &output(&out), &input(&["OpenSSH_2k.log"]).all());
}

#[test]
fn spool_dir_reads_every_file_and_marks_it_completed() {
    let sandbox = Sandbox::new(&["spool-dir"]);
    sandbox.fill_spool_dir();
    sandbox.run_once("spool-dir");
    assert_same_lines("spool-dir", &output(&sandbox.var("spool-dir/out")), &input(&LOGS).all());
    for log in LOGS {
        let spool = sandbox.var("spool-dir/spool");
        assert!(spool.join(format!("{log}.COMPLETED")).is_file(), "{log} was not renamed with .COMPLETED");
        assert!(!spool.join(log).exists(), "{log} is still in the spool directory");
    }
}

#[test]
fn taildir_reads_both_file_groups() {
    let sandbox = Sandbox::new(&["taildir"]);
    sandbox.run_once("taildir");
    let actual = output(&sandbox.var("taildir/out"));
    // With --once the input is over: a final line without LF is an event too.
    assert_same_lines("taildir", &actual, &input(&["HDFS_2k.log", "OpenSSH_2k.log"]).all());
    assert!(sandbox.var("taildir/positions.json").is_file(), "no position file");
}

#[test]
fn durable_channel_delivers_every_line() {
    let sandbox = Sandbox::new(&["durable-channel"]);
    sandbox.run_once("durable-channel");
    assert_same_lines("durable-channel", &output(&sandbox.var("durable-channel/out")), &input(&LOGS).all());
    assert!(sandbox.var("durable-channel/channel").is_dir(), "the RocksDb channel has no directory");
}

#[test]
fn quickstart_archives_everything_and_sorts_by_level() {
    let text = std::fs::read_to_string(repo().join("topologies/quickstart.ron")).expect("read example");
    assert!(text.contains(LEVEL_REGEX), "quickstart.ron's regex and this test's differ");
    let sandbox = Sandbox::new(&["quickstart"]);
    sandbox.run_once("quickstart");
    let all = input(&LOGS);
    assert_eq!(all.all().len(), 10_000, "the five samples hold 2,000 lines each");
    assert_eq!(all.finals.len(), 4, "four samples end without a line ending");
    let out = |sink: &str| output(&sandbox.var(&format!("quickstart/{sink}")));
    // With --once the input is over: the four final lines without LF are events too.
    assert_eq!(out("archive").len(), 10_000, "the archive holds every sample line");
    assert_same_lines("quickstart archive", &out("archive"), &all.all());
    assert_same_lines("quickstart live", &out("live"), &all.all());
    assert_same_lines("quickstart problems", &out("problems"), &all.filter(is_problem).all());
    assert_same_lines("quickstart routine", &out("routine"), &all.filter(|l| !is_problem(l)).all());
    assert!(out("problems").len() >= 2000, "ERROR, error and WARN lines: {}", out("problems").len());
    for positions in ["archive-positions.json", "by-level-positions.json"] {
        assert!(sandbox.var(&format!("quickstart/{positions}")).is_file(), "no {positions}");
    }
    // A second run resumes from the saved positions: nothing is read or written twice.
    let before: Vec<usize> = ["archive", "live", "problems", "routine"].iter().map(|s| out(s).len()).collect();
    sandbox.run_once("quickstart");
    let after: Vec<usize> = ["archive", "live", "problems", "routine"].iter().map(|s| out(s).len()).collect();
    assert_eq!(after, before, "a second run duplicates nothing");
}

#[test]
fn tier_edge_forwards_every_line_to_the_collector() {
    let sandbox = Sandbox::new(&["tier-collector", "tier-edge"]);
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let bind = format!("127.0.0.1:{port}");
    sandbox.edit("tier-collector", "127.0.0.1:41480", &bind);
    sandbox.edit("tier-edge", "127.0.0.1:41480", &bind);
    sandbox.validate("tier-collector");
    sandbox.validate("tier-edge");
    let before = files_under(&sandbox.root().join("topologies"));
    let mut collector = sandbox.start("tier-collector", &[]);
    wait_for("the collector's Http source to listen", DEADLINE, || {
        if let Ok(Some(status)) = collector.child.try_wait() {
            panic!("the collector exited with {status}:\n{}", collector.stderr());
        }
        TcpStream::connect(&bind).map_err(|e| e.to_string())
    });
    // The edge ends once every file was read and the collector acknowledged every line.
    let mut edge = sandbox.start("tier-edge", &["--once"]);
    let status = edge.wait(DEADLINE);
    assert!(status.success(), "the edge exited with {status}:\n{}", edge.stderr());

    let all = input(&LOGS);
    let out = sandbox.var("tier-collector/out");
    wait_for("the collector to write every line", DEADLINE, || {
        let n = output(&out).len();
        if n >= all.lines.len() {
            Ok(())
        } else {
            Err(format!("{n} of {} lines written", all.lines.len()))
        }
    });
    collector.terminate();
    let status = collector.wait(DEADLINE);
    assert!(status.success(), "the collector exited with {status} on SIGTERM:\n{}", collector.stderr());
    assert_lines_but_unfinished("tier-collector", &output(&out), &all);
    assert_eq!(files_under(&sandbox.root().join("topologies")), before, "the run changed files beside the examples");
    let mut written: Vec<String> = std::fs::read_dir(sandbox.root().join("var"))
        .expect("read var/")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["tier-collector", "tier-edge"], "outputs must go under var/tier-*/");
}

#[test]
fn kafka_carries_every_line_through_a_topic_and_back() {
    // librdkafka's mock cluster: three brokers on 127.0.0.1 sockets, inside this test process.
    let cluster = rdkafka::mocking::MockCluster::new(3).expect("start the mock cluster");
    cluster.create_topic("loghub", 3, 3).expect("create the topic");
    let sandbox = Sandbox::new(&["kafka"]);
    sandbox.edit("kafka", "127.0.0.1:9092", &cluster.bootstrap_servers());
    sandbox.validate("kafka");
    let before = files_under(&sandbox.root().join("topologies"));
    let mut agent = sandbox.start("kafka", &[]);

    let all = input(&LOGS);
    let buckets = sandbox.var("kafka/buckets/loghub");
    let read = || (0..3).flat_map(|p| output(&buckets.join(p.to_string()))).collect::<Vec<_>>();
    // In-use files count too: the buckets roll every 30 s.
    let in_use = || {
        (0..3)
            .flat_map(|p| std::fs::read_dir(buckets.join(p.to_string())).into_iter().flatten().flatten())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .sum::<usize>()
    };
    wait_for("the buckets to hold every line", DEADLINE, || {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("the agent exited with {status}:\n{}", agent.stderr());
        }
        let n = in_use();
        if n >= all.lines.len() {
            Ok(())
        } else {
            Err(format!("{n} of {} lines written; the agent's log:\n{}", all.lines.len(), agent.stderr()))
        }
    });
    agent.terminate();
    let status = agent.wait(DEADLINE);
    assert!(status.success(), "the agent exited with {status} on SIGTERM:\n{}", agent.stderr());
    assert_lines_but_unfinished("kafka", &read(), &all);
    // One key per file: each file's lines are in one partition, in their order.
    for log in LOGS {
        let lines = input(&[log]).lines;
        let holders: Vec<usize> = (0..3).filter(|p| output(&buckets.join(p.to_string())).contains(&lines[0])).collect();
        assert_eq!(holders.len(), 1, "{log} is in partitions {holders:?}");
        let part = output(&buckets.join(holders[0].to_string()));
        let mine: Vec<&Vec<u8>> = part.iter().filter(|l| lines.contains(l)).collect();
        assert!(mine.iter().copied().eq(lines.iter()), "{log}'s lines are out of order in partition {}", holders[0]);
    }
    assert_eq!(files_under(&sandbox.root().join("topologies")), before, "the run changed files beside the example");
}
