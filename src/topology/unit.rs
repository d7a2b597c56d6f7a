//! `flumen test`: unit tests of a topology's routing, in the manner of `vector test`.
//!
//! A test file (RON, [`TestFile`]) names a topology and holds tests; each test ([`TestCase`]) puts
//! events through one source's interceptor chain and channel selector, with the very code a running
//! agent uses ([`InterceptorChain::apply`], [`route_batch`]) but nothing started and nothing read
//! except the two files, and compares what each channel would receive with what the test expects.
//! A failed expectation names the line:column of the test file where it is written; a malformed
//! test file is reported as a malformed topology is (see [`super::load`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ron::extensions::Extensions;
use serde::Deserialize;

use super::locate::{self, Anchor, Node, NodeKind, Step};
use super::{load, validate, Topology, TopologyError, TopologyErrors};
use crate::event::{Event, Headers};
use crate::interceptor::InterceptorChain;
use crate::selector::{route_batch, SelectorConfig};
use crate::source::SourceConfig;

/// A test file: the topology under test and its tests.
///
/// ```ron
/// Tests(
///     topology: "../multiplexing.ron",
///     tests: [
///         (
///             name: "an HDFS WARN line goes to warnings",
///             source: "loghub",
///             events: [(body: "081109 213213 19 WARN dfs.DataNode$DataXceiver: ...")],
///             channels: { "warnings": [(headers: { "level": "WARN" })], "errors": [], "other": [] },
///         ),
///     ],
/// )
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename = "Tests")]
pub struct TestFile {
    /// The topology file, relative to the test file's folder (or absolute).
    pub topology: PathBuf,
    /// The tests, run in order; at least one, names unique.
    pub tests: Vec<TestCase>,
}

/// One test: events put by one source, and what its channels, sinks, interceptors and selector
/// must make of them.
///
/// Every event is put on its own (a batch of one), so that the outcome of each is known: it is
/// filtered out by an interceptor, or routed by the selector into channels, or unrouted (a
/// `Multiplexing` selector with no channel for it).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename = "Test")]
pub struct TestCase {
    /// The test's name, unique in its file; printed with its outcome.
    pub name: String,
    /// The source whose interceptors and selector the events go through.
    pub source: String,
    /// The input events, as the source would read them (at least one). Expectations refer to
    /// them by index, from 0.
    pub events: Vec<InputEvent>,
    /// Channel name to the events it receives, in order; `[]`: it receives nothing. Each channel
    /// is one of the source's; a channel not named is not checked. Default `{}`.
    #[serde(default)]
    pub channels: BTreeMap<String, Vec<Expected>>,
    /// As `channels`, by the name of a sink draining one of the source's channels (the events
    /// are those of the channel it drains). Default `{}`.
    #[serde(default)]
    pub sinks: BTreeMap<String, Vec<Expected>>,
    /// Indexes of the events the interceptors filter out; every other event must pass them.
    /// Default `[]`.
    #[serde(default)]
    pub filtered: Vec<usize>,
    /// Indexes of the events that pass the interceptors and go to no channel; every other event
    /// that passes them must reach a channel. Default `[]`.
    #[serde(default)]
    pub unrouted: Vec<usize>,
}

/// An input event: headers (as the source sets them, e.g. Taildir's `file`) and body.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename = "Event")]
pub struct InputEvent {
    /// Headers the event has before the interceptors. Default `{}`.
    #[serde(default)]
    pub headers: Headers,
    /// The body (a log line without its line ending).
    pub body: String,
}

/// What one event received by a channel must look like; every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename = "Expect")]
pub struct Expected {
    /// It is the input event of this index. Default: any.
    pub event: Option<usize>,
    /// The body is exactly this. Default: any.
    pub body: Option<String>,
    /// The body matches this regex (unanchored: `^...$` for all of it). Default: any.
    pub body_matches: Option<String>,
    /// These headers have these values (other headers may be there too). Default `{}`.
    pub headers: Headers,
    /// These headers are there and their values match these regexes. Default `{}`.
    pub headers_match: BTreeMap<String, String>,
    /// These headers are there, with any value. Default `[]`.
    pub present: Vec<String>,
    /// These headers are not there. Default `[]`.
    pub absent: Vec<String>,
}

/// One expectation that did not hold: where it is written and what happened instead.
///
/// Shown as `FILE:LINE:COL: test "NAME": expected ..., got ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The test file.
    pub file: PathBuf,
    /// 1-based line of the expectation.
    pub line: usize,
    /// 1-based column (in characters) of the expectation.
    pub col: usize,
    /// The test's name.
    pub test: String,
    /// `expected ..., got ...`.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: test {:?}: {}", self.file.display(), self.line, self.col, self.test, self.message)
    }
}

/// The outcome of one test: passed when it has no failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// Its failed expectations, in the order of the file.
    pub failures: Vec<Failure>,
}

/// Reads the test file at `path` and the topology it names, checks them, and runs every test.
///
/// # Errors
/// Every problem of a malformed test file (syntax, unknown fields, a source, channel or sink the
/// topology does not have, an event index out of range, a regex that does not compile), each
/// naming the test file, line:column and test; or the problems of the topology, naming the
/// topology file.
pub fn run_file(path: &Path) -> Result<Vec<TestOutcome>, TopologyErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TopologyErrors(vec![error_at(path, (0, 0), None, format!("cannot read the test file: {e}"))]))?;
    let suite = Suite::load(path, &text)?;
    Ok(suite.run())
}

/// `flumen test FILE...`: runs every file; prints `FILE: test "NAME": passed` for each test that
/// passed and every failure on stdout, every problem of a malformed file on stderr.
///
/// Answers exit status 0 when every test passed, 1 when one failed, 2 when a file is malformed.
pub fn run(files: &[PathBuf]) -> ExitCode {
    let mut status = 0;
    for file in files {
        match run_file(file) {
            Ok(outcomes) => {
                for outcome in outcomes {
                    if outcome.failures.is_empty() {
                        println!("{}: test {:?}: passed", file.display(), outcome.name);
                    } else {
                        status = status.max(1);
                        outcome.failures.iter().for_each(|f| println!("{f}"));
                    }
                }
            }
            Err(errors) => {
                status = 2;
                eprintln!("{errors}");
            }
        }
    }
    ExitCode::from(status)
}

fn error_at(file: &Path, (line, col): (usize, usize), test: Option<&str>, message: String) -> TopologyError {
    TopologyError { file: file.to_path_buf(), line, col, component: test.map(|t| format!("test {t:?}")), message }
}

fn options() -> ron::Options {
    load::options().with_default_extension(Extensions::IMPLICIT_SOME)
}

/// A loaded and checked test file.
struct Suite<'a> {
    file: &'a Path,
    text: &'a str,
    root: Node,
    tests: Vec<TestCase>,
    topology: Topology,
    /// The compiled regexes of every expectation, by the text of the pattern.
    regexes: BTreeMap<String, regex::Regex>,
}

impl<'a> Suite<'a> {
    fn load(file: &'a Path, text: &'a str) -> Result<Self, TopologyErrors> {
        let root = locate::parse(text);
        let parsed: TestFile = options().from_str(text).map_err(|e| {
            let offset = locate::offset_of(text, (e.position.line, e.position.col));
            // A wrong struct name (a topology given as a test file) is shown at the name's start.
            let anchor = match &e.code {
                ron::Error::ExpectedDifferentStructName { .. } => Some(Anchor::VariantName),
                code => load::anchor_of(code),
            };
            let offset = anchor.map_or(offset, |what| root.anchor(offset, what));
            let test = test_around(&root, offset);
            let at = locate::position_of(text, offset);
            TopologyErrors(vec![error_at(file, at, test.as_deref(), load::describe(&e.code))])
        })?;
        let folder = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let topology_path = validate::lexically_normal(&folder.join(&parsed.topology));
        let topology_text = std::fs::read_to_string(&topology_path).map_err(|e| {
            let at = locate::position_of(text, root.find(&[Step::Field("topology")]));
            let message = format!("cannot read the topology file {}: {e}", topology_path.display());
            TopologyErrors(vec![error_at(file, at, None, message)])
        })?;
        let topology_folder = topology_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let topology = super::load_str(&topology_text, &topology_path, topology_folder)?;
        let mut suite = Suite { file, text, root, tests: parsed.tests, topology, regexes: BTreeMap::new() };
        let errors = suite.check();
        if errors.is_empty() {
            Ok(suite)
        } else {
            Err(TopologyErrors(errors))
        }
    }

    /// Where `path` (inside test `i`) is written.
    fn at(&self, i: usize, path: &[Step]) -> (usize, usize) {
        let full = [&[Step::Field("tests"), Step::Index(i)][..], path].concat();
        locate::position_of(self.text, self.root.find(&full))
    }

    /// The node of test `i`, if it is written where expected.
    fn test_node(&self, i: usize) -> Option<&Node> {
        match &self.root.field_value("tests")?.kind {
            NodeKind::List(items) => items.get(i),
            _ => None,
        }
    }

    /// The problems that make the file malformed, in the order of the file; compiles the regexes.
    fn check(&mut self) -> Vec<TopologyError> {
        let mut errors = Vec::new();
        if self.tests.is_empty() {
            let at = locate::position_of(self.text, self.root.find(&[Step::Field("tests")]));
            errors.push(error_at(self.file, at, None, "the file has no test".into()));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut regexes = BTreeMap::new();
        for (i, test) in self.tests.iter().enumerate() {
            let mut push = |path: &[Step], message: String| {
                errors.push(error_at(self.file, self.at(i, path), Some(&test.name), message));
            };
            if let Some(first) = names.insert(&test.name, i) {
                let (line, col) = self.at(first, &[Step::Field("name")]);
                push(
                    &[Step::Field("name")],
                    format!("a test of this name is already at line {line}, column {col}; names must be unique"),
                );
            }
            if test.events.is_empty() {
                push(&[Step::Field("events")], "events is empty: a test needs at least one event".into());
            }
            let n = test.events.len();
            let index = |what: &str, e: usize| match n {
                0 => format!("{what} {e} does not exist: the test has no event"),
                1 => format!("{what} {e} does not exist: the test has 1 event (0)"),
                n => format!("{what} {e} does not exist: the test has {n} events (0 to {})", n - 1),
            };
            for (field, list) in [("filtered", &test.filtered), ("unrouted", &test.unrouted)] {
                for (j, &e) in list.iter().enumerate().filter(|(_, &e)| e >= n) {
                    push(&[Step::Field(field), Step::Index(j)], index("event", e));
                }
            }
            if let Some(node) = self.test_node(i) {
                for (field, kind) in [("channels", "channel"), ("sinks", "sink")] {
                    for (key, at) in duplicate_keys(node.field_value(field)) {
                        let (line, col) = locate::position_of(self.text, at);
                        push(
                            &[Step::Field(field), Step::KeyOf(key.clone())],
                            format!("{kind} {key:?} is given twice (also at line {line}, column {col})"),
                        );
                    }
                }
            }
            for (field, map) in [("channels", &test.channels), ("sinks", &test.sinks)] {
                for (key, expected) in map {
                    for (j, x) in expected.iter().enumerate() {
                        let here = |rest: &[Step]| {
                            [&[Step::Field(field), Step::Key(key.clone()), Step::Index(j)], rest].concat()
                        };
                        if let Some(e) = x.event.filter(|&e| e >= n) {
                            push(&here(&[Step::Field("event")]), index("event", e));
                        }
                        let patterns = x.body_matches.iter().map(|p| (here(&[Step::Field("body_matches")]), p));
                        let patterns = patterns.chain(
                            x.headers_match
                                .iter()
                                .map(|(h, p)| (here(&[Step::Field("headers_match"), Step::Key(h.clone())]), p)),
                        );
                        for (path, pattern) in patterns {
                            match regex::Regex::new(pattern) {
                                Ok(re) => {
                                    regexes.insert(pattern.clone(), re);
                                }
                                Err(e) => push(&path, format!("the regex {pattern:?} does not compile: {e}")),
                            }
                        }
                    }
                }
            }
            let Some(source) = self.topology.sources.get(&test.source) else {
                let known = self.topology.sources.keys().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
                push(
                    &[Step::Field("source")],
                    format!(
                        "source {:?} does not exist in {} (its sources: {known})",
                        test.source,
                        self.topology.file.display()
                    ),
                );
                continue;
            };
            let of_source = || source.channels.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
            for channel in test.channels.keys() {
                if source.channels.contains(channel) {
                    continue;
                }
                let why = if self.topology.channels.contains_key(channel) {
                    format!("channel {channel:?} is not one of source {:?}'s channels ({})", test.source, of_source())
                } else {
                    format!("channel {channel:?} does not exist in {}", self.topology.file.display())
                };
                push(&[Step::Field("channels"), Step::KeyOf(channel.clone())], why);
            }
            for sink in test.sinks.keys() {
                let why = match self.topology.sinks.get(sink) {
                    Some(s) if source.channels.contains(&s.channel) => continue,
                    Some(s) => format!(
                        "sink {sink:?} drains channel {:?}, which is not one of source {:?}'s channels ({})",
                        s.channel,
                        test.source,
                        of_source()
                    ),
                    None => format!("sink {sink:?} does not exist in {}", self.topology.file.display()),
                };
                push(&[Step::Field("sinks"), Step::KeyOf(sink.clone())], why);
            }
        }
        self.regexes = regexes;
        errors.sort_by_key(|e| (e.line, e.col));
        errors
    }

    fn run(&self) -> Vec<TestOutcome> {
        self.tests.iter().enumerate().map(|(i, test)| self.run_test(i, test)).collect()
    }

    fn run_test(&self, i: usize, test: &TestCase) -> TestOutcome {
        let source = &self.topology.sources[&test.source];
        let outcome = put(source, test);
        let mut check = Check { suite: self, i, test, failures: Vec::new() };
        for (channel, expected) in &test.channels {
            check.channel("channels", channel, channel, &format!("channel {channel:?}"), expected, &outcome);
        }
        for (sink, expected) in &test.sinks {
            let channel = &self.topology.sinks[sink].channel;
            let label = format!("sink {sink:?}, channel {channel:?}");
            check.channel("sinks", sink, channel, &label, expected, &outcome);
        }
        check.fates(&outcome, source);
        let mut failures = check.failures;
        failures.sort_by_key(|f| (f.line, f.col));
        TestOutcome { name: test.name.clone(), failures }
    }
}

/// The test that byte `offset` sits in, by name, when the name can be read.
fn test_around(root: &Node, offset: usize) -> Option<String> {
    let NodeKind::List(tests) = &root.field_value("tests")?.kind else { return None };
    let test = tests.iter().find(|t| t.start <= offset && offset < t.end)?;
    test.field_value("name")?.as_str().map(str::to_string)
}

/// The keys of `map` written more than once: each later key, with where the first one starts.
fn duplicate_keys(map: Option<&Node>) -> Vec<(String, usize)> {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut twice = Vec::new();
    for (key, _) in map.map_or(&[][..], Node::entries) {
        let Some(name) = key.as_str() else { continue };
        match first.get(name) {
            Some(&at) => twice.push((name.to_string(), at)),
            None => {
                first.insert(name, key.start);
            }
        }
    }
    twice
}

/// What became of each input event of a test.
#[derive(Debug, Default)]
struct Outcome {
    /// Per channel of the source: the events it received, with the index of the input event.
    received: BTreeMap<String, Vec<(usize, Event)>>,
    /// Inputs filtered out by the interceptors.
    filtered: BTreeSet<usize>,
    /// Inputs that passed the interceptors and went to no channel, as they were then.
    unrouted: BTreeMap<usize, Event>,
}

/// Puts every input event of `test` through `source`'s interceptors and selector, one at a time.
fn put(source: &SourceConfig, test: &TestCase) -> Outcome {
    let chain = InterceptorChain::build(&source.interceptors)
        .expect("the topology loaded, so every interceptor of its sources builds");
    let mut outcome =
        Outcome { received: source.channels.iter().map(|c| (c.clone(), Vec::new())).collect(), ..Outcome::default() };
    let channels: BTreeSet<&str> = source.channels.iter().map(String::as_str).collect();
    for (i, input) in test.events.iter().enumerate() {
        let mut batch = vec![Event { headers: input.headers.clone(), body: input.body.clone().into() }];
        chain.apply(&mut batch);
        if batch.is_empty() {
            outcome.filtered.insert(i);
            continue;
        }
        let (shares, unrouted) = route_batch(&source.selector, channels.iter().copied(), batch);
        for event in unrouted {
            outcome.unrouted.insert(i, event);
        }
        for share in shares {
            let received =
                outcome.received.get_mut(share.channel).expect("the selector routes to the source's channels");
            received.extend(share.events.into_iter().map(|e| (i, e)));
        }
    }
    outcome
}

/// Compares one test's outcome with its expectations.
struct Check<'s, 'a> {
    suite: &'s Suite<'a>,
    i: usize,
    test: &'s TestCase,
    failures: Vec<Failure>,
}

impl Check<'_, '_> {
    fn fail(&mut self, path: &[Step], message: String) {
        let (line, col) = self.suite.at(self.i, path);
        self.failures.push(Failure {
            file: self.suite.file.to_path_buf(),
            line,
            col,
            test: self.test.name.clone(),
            message,
        });
    }

    /// `event 3 (line 12)`: an input event, by index and where it is written.
    fn input(&self, e: usize) -> String {
        let (line, _) = self.suite.at(self.i, &[Step::Field("events"), Step::Index(e)]);
        format!("event {e} (line {line})")
    }

    /// A list of received events, for a message: `event 0 (line 7) "081109 ..."`, ...
    fn listing(&self, events: &[(usize, Event)]) -> String {
        if events.is_empty() {
            return "none".into();
        }
        let items: Vec<String> =
            events.iter().map(|(e, event)| format!("{} {}", self.input(*e), short(&body_text(event)))).collect();
        format!("{}: {}", events.len(), items.join(", "))
    }

    /// The expectations of one channel (written under `field` → `key`, about `channel`).
    fn channel(
        &mut self,
        field: &'static str,
        key: &str,
        channel: &str,
        label: &str,
        expected: &[Expected],
        outcome: &Outcome,
    ) {
        let got = &outcome.received[channel];
        if got.len() != expected.len() {
            let wanted = match expected.len() {
                0 => format!("no event in {label}"),
                1 => format!("1 event in {label}"),
                n => format!("{n} events in {label}"),
            };
            self.fail(
                &[Step::Field(field), Step::KeyOf(key.to_string())],
                format!("expected {wanted}, got {}", self.listing(got)),
            );
            return;
        }
        for (j, (x, (e, event))) in expected.iter().zip(got).enumerate() {
            let here =
                |rest: &[Step]| [&[Step::Field(field), Step::Key(key.to_string()), Step::Index(j)], rest].concat();
            let (line, _) = self.suite.at(self.i, &[Step::Field("events"), Step::Index(*e)]);
            let context = format!(" ({label}, event {e} at line {line})");
            let body = body_text(event);
            if let Some(want) = x.event.filter(|want| want != e) {
                let message =
                    format!("expected {} here, got {} {} ({label})", self.input(want), self.input(*e), short(&body));
                self.fail(&here(&[Step::Field("event")]), message);
            }
            if let Some(want) = x.body.as_ref().filter(|want| **want != body) {
                self.fail(&here(&[Step::Field("body")]), format!("expected body {want:?}, got {body:?}{context}"));
            }
            if let Some(pattern) = &x.body_matches {
                if !self.suite.regexes[pattern].is_match(&body) {
                    let message = format!("expected a body matching {pattern:?}, got {body:?}{context}");
                    self.fail(&here(&[Step::Field("body_matches")]), message);
                }
            }
            for (h, want) in &x.headers {
                let got = event.headers.get(h);
                if got != Some(want) {
                    let message = format!("expected header {h:?} = {want:?}, got {}{context}", header_text(event, h));
                    self.fail(&here(&[Step::Field("headers"), Step::Key(h.clone())]), message);
                }
            }
            for (h, pattern) in &x.headers_match {
                let matches = event.headers.get(h).is_some_and(|v| self.suite.regexes[pattern].is_match(v));
                if !matches {
                    let message =
                        format!("expected header {h:?} matching {pattern:?}, got {}{context}", header_text(event, h));
                    self.fail(&here(&[Step::Field("headers_match"), Step::Key(h.clone())]), message);
                }
            }
            for (k, h) in x.present.iter().enumerate() {
                if !event.headers.contains_key(h) {
                    let message = format!("expected header {h:?}, got none (headers: {:?}){context}", event.headers);
                    self.fail(&here(&[Step::Field("present"), Step::Index(k)]), message);
                }
            }
            for (k, h) in x.absent.iter().enumerate() {
                if let Some(v) = event.headers.get(h) {
                    let message = format!("expected no header {h:?}, got {h:?} = {v:?}{context}");
                    self.fail(&here(&[Step::Field("absent"), Step::Index(k)]), message);
                }
            }
        }
    }

    /// Where an input went, for a message: `into "errors", "other"`, `filtered out`, `unrouted ...`.
    fn fate(&self, e: usize, outcome: &Outcome, selector: &SelectorConfig) -> String {
        if outcome.filtered.contains(&e) {
            return "it filtered out".into();
        }
        if let Some(event) = outcome.unrouted.get(&e) {
            return match selector {
                SelectorConfig::Multiplexing { header, .. } => {
                    format!("it unrouted (header {header:?}: {}, no mapping, no default)", header_text(event, header))
                }
                SelectorConfig::Replicating { .. } => "it unrouted".into(),
            };
        }
        let into: Vec<String> = outcome
            .received
            .iter()
            .filter(|(_, got)| got.iter().any(|(i, _)| *i == e))
            .map(|(c, _)| format!("{c:?}"))
            .collect();
        format!("it routed into {}", into.join(", "))
    }

    /// The `filtered` and `unrouted` expectations: listed inputs had that fate, and no other did.
    fn fates(&mut self, outcome: &Outcome, source: &SourceConfig) {
        let test = self.test;
        let unrouted: BTreeSet<usize> = outcome.unrouted.keys().copied().collect();
        let lists = [
            ("filtered", &test.filtered, &outcome.filtered, "filtered out", "to pass the interceptors"),
            ("unrouted", &test.unrouted, &unrouted, "unrouted", "to reach a channel"),
        ];
        for (field, listed, actual, what, otherwise) in lists {
            for (j, e) in listed.iter().enumerate().filter(|(_, e)| !actual.contains(e)) {
                let got = self.fate(*e, outcome, &source.selector);
                self.fail(
                    &[Step::Field(field), Step::Index(j)],
                    format!("expected {} {what}, got {got}", self.input(*e)),
                );
            }
            for e in actual.iter().filter(|e| !listed.contains(e)) {
                let written = self.suite.test_node(self.i).and_then(|n| n.field_value(field)).is_some();
                let path =
                    if written { vec![Step::Field(field)] } else { vec![Step::Field("events"), Step::Index(*e)] };
                let got = self.fate(*e, outcome, &source.selector);
                let message =
                    format!("expected {} {otherwise} (`{field}` does not list it), got {got}", self.input(*e));
                self.fail(&path, message);
            }
        }
    }
}

fn body_text(event: &Event) -> String {
    String::from_utf8_lossy(&event.body).into_owned()
}

/// `"value"` or `no header "h"`, for a message.
fn header_text(event: &Event, h: &str) -> String {
    event.headers.get(h).map_or_else(|| format!("no header {h:?}"), |v| format!("{v:?}"))
}

/// A body quoted for a list, cut after 60 characters.
fn short(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    out.extend(chars.by_ref().take(60));
    if chars.next().is_some() {
        out.push('…');
    }
    format!("{out:?}")
}
