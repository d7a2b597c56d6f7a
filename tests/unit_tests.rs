//! `flumen test FILE.ron`: topology unit tests through the real binary. Passing files exit 0 with
//! one line per test; each wrong expectation is one line naming its own line:column and exit 1;
//! a malformed test file, or one naming what the topology does not have, exits 2 with positions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flumen::selector::SelectorConfig;

const BIN: &str = env!("CARGO_BIN_EXE_flumen");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn flumen_test(files: &[&Path]) -> Output {
    Command::new(BIN).arg("test").args(files).output().expect("run flumen test")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    (before.matches('\n').count() + 1, before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1)
}

/// Where the value right after the comment `/*MARK*/` starts: the markers below sit just before
/// each expectation, so that the test can say where each failure must point.
fn marked(text: &str, mark: &str) -> (usize, usize) {
    let needle = format!("/*{mark}*/");
    let at = text.find(&needle).unwrap_or_else(|| panic!("no marker {needle}"));
    assert_eq!(text.matches(&needle).count(), 1, "marker {needle} twice");
    position(text, at + needle.len())
}

/// The `(line, col)` of each line `FILE:LINE:COL: test "NAME": ...` of `out` for `file` and `test`.
fn positions(out: &str, file: &Path, test: &str) -> Vec<(usize, usize)> {
    let prefix = format!("{}:", file.display());
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| l.contains(&format!(": test {test:?}: ")))
        .map(|l| {
            let mut parts = l.splitn(3, ':');
            let line = parts.next().and_then(|p| p.parse().ok()).expect("a line number");
            let col = parts.next().and_then(|p| p.parse().ok()).expect("a column");
            (line, col)
        })
        .collect()
}

/// Real Loghub lines (topologies/data/loghub/).
const HDFS_WARN: &str = "081109 214043 2561 WARN dfs.DataNode$DataXceiver: 10.251.30.85:50010:Got exception while serving blk_-2918118818249673980 to /10.251.90.64:";
const HDFS_INFO: &str = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating";
const OPENSSH: &str = "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for ns.marryaldkfaczcz.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!";
const APACHE: &str = "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6";

/// A topology whose source filters sshd lines out, extracts the HDFS level, adds `dc`, and routes
/// WARN to "warnings", INFO to "rest", and nothing else anywhere (no default).
const TOPOLOGY: &str = r#"Topology(
    agent: "unit",
    sources: {
        "r1": (
            kind: SequenceGenerator(total: 1),
            channels: ["warnings", "rest"],
            batch_size: 10,
            interceptors: [
                RegexFilter(regex: "sshd", exclude_events: true),
                RegexExtractor(regex: r"^\d{6} \d{6} \d+ ([A-Z]+)", headers: ["level"]),
                Static(key: "dc", value: "eu-1"),
            ],
            selector: Multiplexing(header: "level", mapping: { "WARN": ["warnings"], "INFO": ["rest"] }),
        ),
        "r2": (kind: SequenceGenerator(total: 1), channels: ["other"], batch_size: 10),
    },
    channels: {
        "warnings": Memory(capacity: 10, transaction_capacity: 10),
        "rest": Memory(capacity: 10, transaction_capacity: 10),
        "other": Memory(capacity: 10, transaction_capacity: 10),
    },
    sinks: {
        "k-warnings": (kind: Null(), channel: "warnings", batch_size: 10),
        "k-rest": (kind: Null(), channel: "rest", batch_size: 10),
        "k-other": (kind: Null(), channel: "other", batch_size: 10),
    },
)"#;

/// The events of both tests below: WARN, INFO, an sshd line (filtered out), an Apache line
/// (no level: unrouted).
fn events() -> String {
    [HDFS_WARN, HDFS_INFO, OPENSSH, APACHE].iter().map(|b| format!("(body: {b:?}),\n")).collect()
}

/// A test file in a folder of its own, beside the topology `TOPOLOGY`.
struct Files {
    _dir: tempfile::TempDir,
    tests: PathBuf,
}

fn write(tests: &str) -> Files {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("topology.ron"), TOPOLOGY).expect("write topology");
    let path = dir.path().join("unit.ron");
    std::fs::write(&path, tests).expect("write tests");
    Files { _dir: dir, tests: path }
}

/// One test with every kind of expectation, right.
fn right() -> String {
    format!(
        r#"(
            name: "right",
            source: "r1",
            events: [{events}],
            channels: {{
                "warnings": [(event: 0, body: {HDFS_WARN:?}, headers: {{ "level": "WARN", "dc": "eu-1" }})],
                "rest": [(event: 1, body_matches: "^081109 203615 ", headers_match: {{ "level": "^I" }}, present: ["dc"], absent: ["x"])],
            }},
            sinks: {{ "k-rest": [(event: 1)] }},
            filtered: [2],
            unrouted: [3],
        )"#,
        events = events()
    )
}

#[test]
fn every_example_with_interceptors_or_multiplexing_has_passing_tests() {
    let examples = repo().join("topologies");
    let mut wanted = Vec::new();
    let checkout = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(checkout.path().join("topologies")).expect("mkdir");
    std::fs::create_dir_all(checkout.path().join("var/spool-dir/spool")).expect("mkdir");
    for entry in std::fs::read_dir(&examples).expect("read topologies/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "ron") {
            continue;
        }
        // Loaded as if from a checkout whose var/spool-dir/spool exists (spool-dir.ron wants it).
        let text = std::fs::read_to_string(&path).expect("read example");
        let t = flumen::topology::load_str(&text, &path, &checkout.path().join("topologies"))
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        let routes = t
            .sources
            .values()
            .any(|s| !s.interceptors.is_empty() || matches!(s.selector, SelectorConfig::Multiplexing { .. }));
        if routes {
            wanted.push(path.file_name().expect("file name").to_owned());
        }
    }
    wanted.sort();
    let mut found: Vec<_> = std::fs::read_dir(examples.join("tests"))
        .expect("read topologies/tests/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .map(|p| p.file_name().expect("file name").to_owned())
        .collect();
    found.sort();
    assert!(wanted.len() >= 3, "interceptors.ron, multiplexing.ron and quickstart.ron at least: {wanted:?}");
    assert_eq!(found, wanted, "topologies/tests/NAME.ron for every example that has interceptors or Multiplexing");

    for name in &found {
        let file = Path::new("topologies/tests").join(name);
        let out = Command::new(BIN).arg("test").arg(&file).current_dir(repo()).output().expect("run flumen test");
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{}:\n{text}{}", file.display(), stderr(&out));
        let tests = flumen::topology::unit::run_file(&repo().join(&file)).expect("the file loads").len();
        let passed: Vec<&str> = text.lines().filter(|l| l.ends_with(": passed")).collect();
        assert!(tests >= 2, "{}: {tests} tests", file.display());
        assert_eq!(passed.len(), tests, "one line per test passed:\n{text}");
        assert_eq!(text.lines().count(), tests, "nothing but those lines:\n{text}");
        assert!(passed.iter().all(|l| l.starts_with(&format!("{}: test \"", file.display()))), "{text}");
    }
}

#[test]
fn a_wrong_expectation_in_an_example_fails_at_its_line_and_column() {
    let original = std::fs::read_to_string(repo().join("topologies/tests/multiplexing.ron")).expect("read example");
    let topology = repo().join("topologies/multiplexing.ron");
    let original = original.replace("\"../multiplexing.ron\"", &format!("{:?}", topology.display().to_string()));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("multiplexing.ron");

    // The control: the example as it is passes.
    std::fs::write(&path, &original).expect("write tests");
    let out = flumen_test(&[&path]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

    let right = r#""warnings": [(event: 0, headers: { "level": "WARN" })],"#;
    assert_eq!(original.matches(right).count(), 1, "the example changed: {right} is not in it once");
    let wrong = original.replace(right, r#""warnings": [(event: 0, headers: { "level": "ERROR" })],"#);
    std::fs::write(&path, &wrong).expect("write tests");
    let out = flumen_test(&[&path]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let failures: Vec<&str> = text.lines().filter(|l| !l.ends_with(": passed")).collect();
    assert_eq!(
        failures,
        [format!(
            "{}:16:61: test \"an HDFS WARN line goes to warnings only\": expected header \"level\" = \"ERROR\", \
             got \"WARN\" (channel \"warnings\", event 0 at line 13)",
            path.display()
        )]
    );
    // 16:61 is where "ERROR" is written.
    let at = wrong.find(r#""level": "ERROR" })],"#).expect("the change") + r#""level": "#.len();
    assert_eq!(position(&wrong, at), (16, 61));
    assert_eq!(text.lines().filter(|l| l.ends_with(": passed")).count(), 3, "the other tests pass:\n{text}");
}

#[test]
fn every_kind_of_wrong_expectation_names_its_position() {
    let wrong = format!(
        r#"(
            name: "wrong",
            source: "r1",
            events: [{events}],
            channels: {{
                "warnings": [(
                    event: /*event*/1,
                    body: /*body*/"081109 214043 2561 INFO",
                    headers: {{ "level": /*header*/"INFO", "dc": "eu-1" }},
                    present: [/*present*/"host"],
                    absent: ["x", /*absent*/"dc"],
                )],
                /*count*/"rest": [],
            }},
            sinks: {{
                "k-rest": [(body_matches: /*matches*/"WARN", headers_match: {{ "level": /*header-match*/"^W" }})],
            }},
            filtered: [/*filtered*/3, 2],
            unrouted: /*unrouted*/[],
        )"#,
        events = events()
    );
    let text = format!("Tests(\n    topology: \"topology.ron\",\n    tests: [\n{},\n{wrong},\n    ],\n)\n", right());
    let files = write(&text);
    let out = flumen_test(&[&files.tests]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}{}", stderr(&out));
    assert_eq!(report.lines().next(), Some(format!("{}: test \"right\": passed", files.tests.display()).as_str()));

    let marks =
        ["event", "body", "header", "present", "absent", "count", "matches", "header-match", "filtered", "unrouted"];
    let mut want: Vec<_> = marks.iter().map(|m| marked(&text, m)).collect();
    want.sort();
    assert_eq!(positions(&report, &files.tests, "wrong"), want, "one failure per wrong expectation:\n{report}");
    assert_eq!(report.lines().count(), 1 + marks.len(), "{report}");

    // Each says what was expected and what came instead; events by index and line.
    let from = text.find("name: \"wrong\"").expect("the wrong test");
    let line = |body: &str| position(&text, from + text[from..].find(&format!("(body: {body:?})")).expect("event")).0;
    let (warn, info, apache) = (line(HDFS_WARN), line(HDFS_INFO), line(APACHE));
    for fragment in [
        &format!("expected event 1 (line {info}) here, got event 0 (line {warn}) \"081109 214043 2561 WARN"),
        &format!("expected body \"081109 214043 2561 INFO\", got {HDFS_WARN:?} (channel \"warnings\", event 0 at line {warn})"),
        "expected header \"level\" = \"INFO\", got \"WARN\"",
        "expected header \"host\", got none (headers: {\"dc\": \"eu-1\", \"level\": \"WARN\"})",
        "expected no header \"dc\", got \"dc\" = \"eu-1\"",
        &format!("expected no event in channel \"rest\", got 1: event 1 (line {info}) \"081109 203615 148 INFO"),
        "expected a body matching \"WARN\", got",
        &format!("(sink \"k-rest\", channel \"rest\", event 1 at line {info})"),
        "expected header \"level\" matching \"^W\", got \"INFO\"",
        &format!("expected event 3 (line {apache}) filtered out, got it unrouted (header \"level\": no header \"level\", no mapping, no default)"),
        &format!("expected event 3 (line {apache}) to reach a channel (`unrouted` does not list it), got it unrouted"),
    ] {
        assert!(report.lines().any(|l| l.contains(": test \"wrong\": ") && l.contains(fragment)), "no {fragment:?} in:\n{report}");
    }
}

#[test]
fn unlisted_filtered_and_unrouted_events_point_at_the_event() {
    // No `filtered` and no `unrouted` written: every event must pass the interceptors and reach a
    // channel, and the failures point at the events that did not.
    let events = [HDFS_WARN, OPENSSH, APACHE];
    let text = format!(
        "Tests(topology: \"topology.ron\", tests: [(name: \"implicit\", source: \"r1\", events: [\n{}])])\n",
        events.iter().enumerate().map(|(i, b)| format!("/*e{i}*/(body: {b:?}),\n")).collect::<String>()
    );
    let files = write(&text);
    let out = flumen_test(&[&files.tests]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}{}", stderr(&out));
    assert_eq!(positions(&report, &files.tests, "implicit"), [marked(&text, "e1"), marked(&text, "e2")], "{report}");
    assert!(report.contains(
        "expected event 1 (line 3) to pass the interceptors (`filtered` does not list it), got it filtered out"
    ));
    assert!(
        report.contains("expected event 2 (line 4) to reach a channel (`unrouted` does not list it), got it unrouted")
    );
}

#[test]
fn a_malformed_test_file_exits_2_with_its_position() {
    // A syntax error: a missing comma, inside the second test.
    let text = format!(
        "Tests(\n    topology: \"topology.ron\",\n    tests: [\n{},\n(name: \"broken\", source: \"r1\" /*here*/events: [])\n    ],\n)\n",
        right()
    );
    let files = write(&text);
    let out = flumen_test(&[&files.tests]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "", "no test runs from a malformed file");
    let (line, col) = marked(&text, "here");
    assert_eq!(
        stderr(&out).trim_end(),
        format!("{}:{line}:{col}: test \"broken\": expected comma", files.tests.display())
    );

    // An unknown field.
    let text = "Tests(topology: \"topology.ron\", tests: [(name: \"t\", source: \"r1\", events: [(body: \"x\", /*here*/headrs: {})])])";
    let files = write(text);
    let out = flumen_test(&[&files.tests]);
    assert_eq!(out.status.code(), Some(2));
    let (line, col) = marked(text, "here");
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "{}:{line}:{col}: test \"t\": unknown field `headrs`, expected one of `headers`, `body`",
            files.tests.display()
        )
    );

    // A topology given where a test file is expected.
    let files = write(TOPOLOGY);
    let out = flumen_test(&[&files.tests]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .starts_with(&format!("{}:1:1: expected struct `Tests` but found `Topology`", files.tests.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn names_the_topology_does_not_have_are_errors_with_positions() {
    let text = r#"Tests(
    topology: "topology.ron",
    tests: [
        (
            name: "names",
            source: "r1",
            events: [(body: "x")],
            channels: { /*no-channel*/"nowhere": [], /*not-its-channel*/"other": [], "rest": [(event: /*no-event*/4, body_matches: /*bad-regex*/"(")] },
            sinks: { /*no-sink*/"k9": [], /*not-its-sink*/"k-other": [] },
            filtered: [/*no-filtered*/1],
        ),
        (name: "source", source: /*no-source*/"r9", events: [(body: "x")]),
        (name: /*twice*/"names", source: "r1", events: [(body: "x")]),
    ],
)
"#;
    let files = write(text);
    let out = flumen_test(&[&files.tests]);
    let report = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{report}", stdout(&out));
    assert_eq!(stdout(&out), "", "no test runs from a malformed file");
    let topology = files.tests.with_file_name("topology.ron");
    let expected = [
        ("no-channel", "names", format!("channel \"nowhere\" does not exist in {}", topology.display())),
        ("not-its-channel", "names", "channel \"other\" is not one of source \"r1\"'s channels (\"warnings\", \"rest\")".into()),
        ("no-event", "names", "event 4 does not exist: the test has 1 event (0)".into()),
        ("bad-regex", "names", "the regex \"(\" does not compile: regex parse error:".into()),
        ("no-sink", "names", format!("sink \"k9\" does not exist in {}", topology.display())),
        (
            "not-its-sink",
            "names",
            "sink \"k-other\" drains channel \"other\", which is not one of source \"r1\"'s channels (\"warnings\", \"rest\")".into(),
        ),
        ("no-filtered", "names", "event 1 does not exist: the test has 1 event (0)".into()),
        ("no-source", "source", format!("source \"r9\" does not exist in {} (its sources: \"r1\", \"r2\")", topology.display())),
        ("twice", "names", "a test of this name is already at line 5, column 19; names must be unique".into()),
    ];
    let lines: Vec<&str> = report.lines().filter(|l| !l.starts_with("    ")).collect();
    assert_eq!(lines.len(), expected.len(), "{report}");
    for ((mark, test, message), line) in expected.iter().zip(&lines) {
        let (l, c) = marked(text, mark);
        let want = format!("{}:{l}:{c}: test {test:?}: {message}", files.tests.display());
        assert!(line.starts_with(&want), "expected {want:?}, got {line:?}");
    }
}

#[test]
fn a_bad_topology_or_a_missing_one_exits_2() {
    // The topology's own problems, with the topology's positions.
    let files = write(&format!("Tests(topology: \"topology.ron\", tests: [{}])", right()));
    let topology = files.tests.with_file_name("topology.ron");
    let bad = TOPOLOGY.replacen("\"warnings\": Memory(capacity: 10,", "\"warnings\": Memory(capacity: 0,", 1);
    assert_ne!(bad, TOPOLOGY);
    std::fs::write(&topology, &bad).expect("write topology");
    let out = flumen_test(&[&files.tests]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (line, col) = position(&bad, bad.find("capacity: 0").expect("the change") + "capacity: ".len());
    assert_eq!(
        stderr(&out).trim_end(),
        format!("{}:{line}:{col}: channel \"warnings\": capacity must be positive", topology.display())
    );

    // A topology that is not there: the position of `topology`.
    let text = "Tests(\n    topology: \"../nowhere/topology.ron\",\n    tests: [],\n)";
    let files = write(text);
    let out = flumen_test(&[&files.tests]);
    assert_eq!(out.status.code(), Some(2));
    let missing = files.tests.parent().unwrap().parent().unwrap().join("nowhere/topology.ron");
    assert!(
        stderr(&out).starts_with(&format!(
            "{}:2:15: cannot read the topology file {}: ",
            files.tests.display(),
            missing.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn several_files_exit_with_the_worst_status() {
    let good = write(&format!("Tests(topology: \"topology.ron\", tests: [{}])", right()));
    let failing = write(&format!(
        "Tests(topology: \"topology.ron\", tests: [{}])",
        right().replace("name: \"right\"", "name: \"fails\"").replace("filtered: [2]", "filtered: []")
    ));
    let malformed = write("Tests(topology: \"topology.ron\")");
    let out = flumen_test(&[&good.tests, &failing.tests]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with(&format!("{}: test \"right\": passed\n", good.tests.display())),
        "{}",
        stdout(&out)
    );
    assert_eq!(positions(&stdout(&out), &failing.tests, "fails").len(), 1, "{}", stdout(&out));
    let out = flumen_test(&[&malformed.tests, &good.tests, &failing.tests]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing field `tests`"), "{}", stderr(&out));
    assert!(stdout(&out).contains("test \"right\": passed"), "the other files still run: {}", stdout(&out));
}
