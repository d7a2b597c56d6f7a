//! Sink groups in the real `flumen` binary: Loghub lines sent over TCP to a `Netcat` source, one
//! `Memory` channel drained by a group of `FileRoll` sinks under a `Failover` or `LoadBalance`
//! processor.
//!
//! A sink is broken for real: its `dir` lies under a symbolic link that the test swaps (atomically,
//! by rename) to point at a plain file, so opening or creating its output fails with "not a
//! directory"; swapping the link back to the directory mends it. Each sink rolls its file every
//! 200 ms, so a broken sink fails at its next open. In every case the outputs of all the sinks
//! together hold exactly the lines sent, as a multiset. A group also drains its channel on
//! SIGTERM, and (in process, over a `Memory` channel) a member that panics is penalised while the
//! group goes on.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use support::*;

/// A bound for hangs, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running agent with one `Netcat` source, fed over one connection.
struct Agent {
    tmp: tempfile::TempDir,
    flumen: Flumen,
    stream: TcpStream,
    monitoring: SocketAddr,
    supply: std::vec::IntoIter<String>,
    sent: Vec<String>,
}

impl Agent {
    /// Starts `flumen run` on a topology with a `Netcat` source and a channel `c1`; `sinks` and
    /// `groups` are the topology's `sinks` and `sink_groups` maps (without braces), where `{tmp}`
    /// stands for the temporary folder.
    fn start(sinks: &str, groups: &str, prepare: impl FnOnce(&Path)) -> Agent {
        let tmp = tempfile::tempdir().unwrap();
        prepare(tmp.path());
        let (port, metrics_port) = (free_port(), free_port());
        let topology = tmp.path().join("groups.ron");
        let text = format!(
            r#"Topology(
    agent: "groups",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false), channels: ["c1"]),
    }},
    channels: {{ "c1": Memory(capacity: 200000, transaction_capacity: 1000) }},
    sinks: {{ {sinks} }},
    sink_groups: {{ {groups} }},
)"#
        )
        .replace("{tmp}", tmp.path().to_str().unwrap());
        write_file(&topology, &text);
        let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("flumen.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let stream = flumen.connect(addr, DEADLINE);
        Agent {
            tmp,
            flumen,
            stream,
            monitoring: format!("127.0.0.1:{metrics_port}").parse().unwrap(),
            supply: numbered_lines(100_000).into_iter(),
            sent: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Sends the next `n` Loghub lines.
    fn send(&mut self, n: usize) {
        let lines: Vec<String> = self.supply.by_ref().take(n).collect();
        assert_eq!(lines.len(), n, "the supply of lines ran out");
        self.stream.write_all(&joined(&lines)).unwrap();
        self.sent.extend(lines);
    }

    /// The complete lines under each of `dirs` (relative to the temporary folder), concatenated.
    fn lines(&self, dirs: &[&str]) -> Vec<String> {
        dirs.iter().flat_map(|d| output_lines(&self.path(d)).0).collect()
    }

    /// Waits until the outputs under `dirs` hold as many lines as were sent.
    fn wait_delivered(&self, dirs: &[&str]) {
        wait_for(
            DEADLINE,
            || self.lines(dirs).len() >= self.sent.len(),
            || format!("{} of {} lines delivered; log:\n{}", self.lines(dirs).len(), self.sent.len(), self.log()),
        );
    }

    /// Sends `chunk` lines at a time, each time waiting until they are delivered, until `done()`.
    fn send_until(&mut self, chunk: usize, dirs: &[&str], what: &str, mut done: impl FnMut(&Agent) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", self.log());
            self.send(chunk);
            self.wait_delivered(dirs);
        }
    }

    /// A counter of sink `sink` from `GET /metrics`.
    fn counter(&self, sink: &str, name: &str) -> u64 {
        let mut s = TcpStream::connect(self.monitoring).expect("the metrics server accepts");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let body = response.split("\r\n\r\n").nth(1).expect("an HTTP body");
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON metrics");
        let value = &json[format!("SINK.{sink}")][name];
        value.as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("SINK.{sink} {name} in {json}"))
    }

    fn log(&self) -> String {
        self.flumen.log_text()
    }

    /// Checks that the outputs under `dirs` hold exactly the lines sent, then stops the agent.
    fn finish(self, dirs: &[&str]) {
        self.wait_delivered(dirs);
        let got = self.lines(dirs);
        assert_eq!(got.len(), self.sent.len(), "no line twice; log:\n{}", self.log());
        assert!(multiset(got) == multiset(self.sent.iter().cloned()), "outputs differ from input as a multiset");
        let Agent { flumen, stream, tmp, .. } = self;
        drop(stream);
        assert_eq!(flumen.terminate(DEADLINE), Some(0));
        for d in dirs {
            assert_eq!(output_lines(&tmp.path().join(d)).1, 0, "{d}: no cut line");
        }
    }
}

/// Points the symbolic link `link` at `target`, atomically (a new link renamed over the old).
fn point(link: &Path, target: &Path) {
    let new = link.with_extension("new");
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink(target, &new).expect("create a symbolic link");
    std::fs::rename(&new, link).expect("swap the symbolic link");
}

/// Makes `<tmp>/<name>` a directory, `<tmp>/<name>.blocker` a plain file, and `<tmp>/<name>.link`
/// a link to the directory: a sink writing under the link works until the link is swapped to the
/// plain file.
fn breakable(tmp: &Path, name: &str) {
    std::fs::create_dir_all(tmp.join(name)).unwrap();
    write_file(&tmp.join(format!("{name}.blocker")), "not a directory\n");
    point(&tmp.join(format!("{name}.link")), &tmp.join(name));
}

fn break_sink(agent: &Agent, name: &str) {
    point(&agent.path(&format!("{name}.link")), &agent.path(&format!("{name}.blocker")));
}

fn mend_sink(agent: &Agent, name: &str) {
    point(&agent.path(&format!("{name}.link")), &agent.path(name));
}

#[test]
fn failover_moves_to_the_backup_and_back_to_the_primary_losing_nothing() {
    let mut agent = Agent::start(
        r#""primary": (kind: FileRoll(dir: "{tmp}/primary.link/files", roll_interval: "200ms"), channel: "c1", batch_size: 100),
           "backup": (kind: FileRoll(dir: "{tmp}/backup", roll_interval: "200ms"), channel: "c1", batch_size: 100)"#,
        r#""g1": (sinks: ["backup", "primary"], processor: Failover(priority: { "primary": 10, "backup": 5 }, max_penalty: "2s"))"#,
        |tmp| breakable(tmp, "primary"),
    );
    let all = ["primary", "backup"];

    // While the primary works, it gets every batch.
    agent.send(2000);
    agent.wait_delivered(&all);
    assert_eq!(agent.lines(&["primary"]).len(), 2000, "the primary takes everything");
    assert!(agent.lines(&["backup"]).is_empty());

    // The primary's output becomes a plain file: its next file fails to open, and the backup
    // takes over.
    break_sink(&agent, "primary");
    agent.send_until(20, &all, "the backup to take over", |a| !a.lines(&["backup"]).is_empty());
    agent.send(2000);
    agent.wait_delivered(&all);
    // Once its penalty is over the primary is rebuilt, fails again (its directory cannot be
    // created), and the backup goes on.
    wait_for(
        DEADLINE,
        || agent.counter("primary", "RestartCount") >= 2,
        || format!("the primary was not tried again; log:\n{}", agent.log()),
    );
    agent.send(1000);
    agent.wait_delivered(&all);

    // Mended, the primary takes over again once its penalty is over, and keeps every batch.
    mend_sink(&agent, "primary");
    let primary_before = agent.lines(&["primary"]).len();
    agent.send_until(20, &all, "the primary to take over again", |a| a.lines(&["primary"]).len() > primary_before);
    let backup_at_switch = agent.lines(&["backup"]).len();
    agent.send(2000);
    agent.wait_delivered(&all);
    assert_eq!(agent.lines(&["backup"]).len(), backup_at_switch, "the primary takes everything again");

    // Each sink counts what it delivered.
    for sink in all {
        let delivered = agent.lines(&[sink]).len() as u64;
        assert_eq!(agent.counter(sink, "EventDrainSuccessCount"), delivered, "{sink}");
    }
    assert!(agent.counter("primary", "RollbackCount") >= 1, "the failed batch was rolled back");
    assert!(agent.log().contains("sink failed; the group goes on with its other sinks"), "{}", agent.log());
    agent.finish(&all);
}

#[test]
fn round_robin_spreads_batches_over_every_sink() {
    let mut agent = Agent::start(
        r#""k1": (kind: FileRoll(dir: "{tmp}/k1"), channel: "c1", batch_size: 100),
           "k2": (kind: FileRoll(dir: "{tmp}/k2"), channel: "c1", batch_size: 100),
           "k3": (kind: FileRoll(dir: "{tmp}/k3"), channel: "c1", batch_size: 100)"#,
        r#""g1": (sinks: ["k1", "k2", "k3"], processor: LoadBalance(selector: RoundRobin))"#,
        |_| {},
    );
    let all = ["k1", "k2", "k3"];
    let n = loghub_lines().len();
    agent.send(n);
    agent.wait_delivered(&all);
    // In turn: the numbers of batches the sinks delivered differ by at most one.
    let batches: Vec<u64> =
        all.iter().map(|k| agent.counter(k, "BatchCompleteCount") + agent.counter(k, "BatchUnderflowCount")).collect();
    let (min, max) = (batches.iter().min().unwrap(), batches.iter().max().unwrap());
    assert!(*min >= 1 && max - min <= 1, "batches per sink: {batches:?}");
    for k in all {
        assert!(!agent.lines(&[k]).is_empty(), "{k} got lines");
        assert_eq!(agent.counter(k, "EventDrainSuccessCount"), agent.lines(&[k]).len() as u64, "{k}");
    }
    agent.finish(&all);
}

#[test]
fn random_load_balance_reaches_every_sink() {
    let mut agent = Agent::start(
        r#""k1": (kind: FileRoll(dir: "{tmp}/k1"), channel: "c1", batch_size: 50),
           "k2": (kind: FileRoll(dir: "{tmp}/k2"), channel: "c1", batch_size: 50),
           "k3": (kind: FileRoll(dir: "{tmp}/k3"), channel: "c1", batch_size: 50)"#,
        r#""g1": (sinks: ["k1", "k2", "k3"], processor: LoadBalance(selector: Random))"#,
        |_| {},
    );
    let all = ["k1", "k2", "k3"];
    // At least 60 batches: a sink left out of all of them by chance has odds below 1e-10.
    agent.send_until(1000, &all, "60 batches", |a| {
        all.iter().map(|k| a.counter(k, "BatchCompleteCount") + a.counter(k, "BatchUnderflowCount")).sum::<u64>() >= 60
    });
    for k in all {
        assert!(!agent.lines(&[k]).is_empty(), "{k} got lines");
    }
    agent.finish(&all);
}

#[test]
fn load_balance_backs_off_a_failing_sink_and_loses_nothing() {
    let mut agent = Agent::start(
        r#""k1": (kind: FileRoll(dir: "{tmp}/k1"), channel: "c1", batch_size: 100),
           "k2": (kind: FileRoll(dir: "{tmp}/k2"), channel: "c1", batch_size: 100),
           "k3": (kind: FileRoll(dir: "{tmp}/k3.link/files", roll_interval: "200ms"), channel: "c1", batch_size: 100)"#,
        r#""g1": (sinks: ["k1", "k2", "k3"], processor: LoadBalance(selector: RoundRobin, backoff: true, max_backoff: "2s"))"#,
        |tmp| breakable(tmp, "k3"),
    );
    let all = ["k1", "k2", "k3"];
    agent.send(3000);
    agent.wait_delivered(&all);
    assert!(!agent.lines(&["k3"]).is_empty(), "k3 takes its turn while it works");

    // k3 breaks: a batch taken for it fails, is rolled back and goes to k1 or k2.
    break_sink(&agent, "k3");
    agent.send_until(20, &all, "k3 to fail a batch", |a| a.counter("k3", "RollbackCount") >= 1);
    let k3_broken = agent.lines(&["k3"]).len();
    agent.send(3000);
    agent.wait_delivered(&all);
    assert_eq!(agent.lines(&["k3"]).len(), k3_broken, "a broken k3 delivers nothing");

    // Mended, k3 is back in turn once its back-off is over.
    mend_sink(&agent, "k3");
    agent.send_until(20, &all, "k3 to deliver again", |a| a.lines(&["k3"]).len() > k3_broken);
    for sink in all {
        assert_eq!(agent.counter(sink, "EventDrainSuccessCount"), agent.lines(&[sink]).len() as u64, "{sink}");
    }
    agent.finish(&all);
}

#[test]
fn a_group_drains_its_channel_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let topology = tmp.path().join("drain.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "drain",
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true), channels: ["c1"]),
    }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out/k1", sync: true), channel: "c1", batch_size: 20),
        "k2": (kind: FileRoll(dir: "out/k2", sync: true), channel: "c1", batch_size: 20),
    }},
    sink_groups: {{ "g1": (sinks: ["k1", "k2"], processor: LoadBalance(selector: RoundRobin)) }},
)"#
        ),
    );
    let lines = loghub_lines();
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &tmp.path().join("flumen.log"));
    // Every line acknowledged: each is then in the channel (or already delivered).
    flumen.send_acknowledged(format!("127.0.0.1:{port}").parse().unwrap(), &lines, DEADLINE);
    assert_eq!(flumen.terminate(DEADLINE), Some(0), "graceful stop exits 0");
    let (got, partial) = output_lines(&tmp.path().join("out"));
    assert_eq!(partial, 0);
    assert!(multiset(got) == multiset(lines), "everything acknowledged was delivered before the exit");
    for k in ["k1", "k2"] {
        assert!(!output_lines(&tmp.path().join("out").join(k)).0.is_empty(), "{k} took its turn");
    }
}

/// A sink that panics on every delivery, as it is called.
struct Panicking;

impl flumen::sink::Sink for Panicking {
    fn deliver<'a>(
        &'a mut self,
        events: &'a [flumen::event::Event],
    ) -> futures_util::future::LocalBoxFuture<'a, Result<(), flumen::sink::SinkError>> {
        panic!("injected panic on a delivery of {} events", events.len());
    }
}

#[test]
fn a_panicking_sink_is_penalised_and_the_group_goes_on() {
    use actix::{Actor, Supervisor};
    use flumen::channel::memory::{MemoryChannel, MemoryConfig};
    use flumen::channel::{ChannelHandle, Put};
    use flumen::metrics::Metrics;
    use flumen::sink::file_roll::{FileRollConfig, FileRollSink};
    use flumen::sink::group::Member;
    use flumen::sink::group::SinkProcessorConfig;
    use flumen::sink::{Sink, SinkFactory, SinkRunner};

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_path_buf();
    actix_rt::System::new().block_on(async move {
        let metrics = Metrics::new();
        let config = MemoryConfig {
            capacity: 20_000,
            transaction_capacity: 1000,
            keep_alive: Duration::from_secs(3),
            ..MemoryConfig::default()
        };
        let channel = ChannelHandle::new("c1", MemoryChannel::new(config, metrics.channel("c1")).start());
        let file_roll = |name: &str| FileRollConfig {
            dir: out.join(name),
            roll_interval: Duration::ZERO,
            prefix: String::new(),
            extension: String::new(),
            in_use_suffix: ".tmp".into(),
            sync: false,
        };
        let (primary, backup) = (metrics.sink("primary"), metrics.sink("backup"));
        let (stop_tx, stop) = tokio::sync::watch::channel(None);
        let runner = {
            let (channel, primary, backup) = (channel.clone(), primary.clone(), backup.clone());
            let backup_dir = file_roll("backup");
            Supervisor::start(move |_| {
                let panicky: SinkFactory = Rc::new(|| Ok(Box::new(Panicking) as Box<dyn Sink>));
                let plain: SinkFactory = {
                    let counters = backup.clone();
                    Rc::new(move || {
                        Ok(Box::new(FileRollSink::new(backup_dir.clone(), counters.clone())?) as Box<dyn Sink>)
                    })
                };
                let members = vec![
                    Member { name: "primary".into(), batch_size: 100, factory: panicky, counters: primary.clone() },
                    Member { name: "backup".into(), batch_size: 100, factory: plain, counters: backup.clone() },
                ];
                let processor = SinkProcessorConfig::Failover {
                    priority: [("primary".to_string(), 10), ("backup".to_string(), 5)].into(),
                    max_penalty: Duration::from_secs(30),
                };
                SinkRunner::group("g1", channel, members, processor, stop)
            })
        };
        let input = loghub_lines();
        for chunk in input.chunks(250) {
            let events = chunk.iter().map(|l| flumen::event::Event::new(l.clone())).collect();
            channel.put.send(Put { events }).await.unwrap().unwrap();
        }
        let deadline = Instant::now() + DEADLINE;
        while output_lines(&out).0.len() < input.len() {
            assert!(Instant::now() < deadline, "{} of {} lines delivered", output_lines(&out).0.len(), input.len());
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // Each panicked batch went back to the channel and on to the backup, in order.
        assert!(output_lines(&out.join("backup")).0 == input, "the backup holds every line once, in order");
        assert!(primary.restarts.get() >= 1, "the panicking sink was rebuilt");
        assert_eq!(primary.rollbacks.get(), primary.restarts.get(), "a rollback per panic");
        assert_eq!(backup.restarts.get(), 0, "the group itself was not restarted");
        assert_eq!(backup.drain_success.get(), input.len() as u64);
        let _ = stop_tx.send(Some(Instant::now() + Duration::from_secs(5)));
        drop(runner);
    });
}
