//! SpoolDir on real Loghub files: through a whole agent (SpoolDir -> Memory -> FileRoll), and
//! through the real `flumen` binary killed with SIGKILL mid-file (SpoolDir -> RocksDb -> FileRoll).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flumen::agent::{self, AgentOptions, RunningAgent};
use support::files::{
    self, assert_same_lines, differences, drop_in, lines_of, loghub, loghub_lines, output_lines, ron_path,
    wait_blocking, wait_for_lines, wait_until,
};

const LOGHUB: [&str; 5] = ["Apache_2k.log", "HDFS_2k.log", "Linux_2k.log", "OpenSSH_2k.log", "Zookeeper_2k.log"];

/// A test's folders: `spool/` (the spool directory) and `out/` (FileRoll output).
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    spool: PathBuf,
    out: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let spool = root.join("spool");
        std::fs::create_dir(&spool).unwrap();
        Setup { spool, out: root.join("out"), root, _tmp: tmp }
    }

    async fn start(&self, options: &str) -> RunningAgent {
        let ron = format!(
            r#"Topology(
                agent: "spool-test",
                sources: {{
                    "r1": (
                        kind: SpoolDir(dir: {spool}, poll_interval: "20ms", {options}),
                        channels: ["c1"],
                        batch_size: 500,
                    ),
                }},
                channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
                sinks: {{ "k1": (kind: FileRoll(dir: {out}, roll_interval: "0s"), channel: "c1") }},
            )"#,
            spool = ron_path(&self.spool),
            out = ron_path(&self.out),
        );
        let topology =
            flumen::topology::load_str(&ron, Path::new("spool-test.ron"), &self.root).unwrap_or_else(|e| panic!("{e}"));
        agent::start(topology, AgentOptions::default()).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The names in the spool directory (the tracker folder aside).
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.spool)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".flumenspool")
            .collect();
        names.sort();
        names
    }
}

#[actix_rt::test]
async fn loghub_files_are_ingested_and_each_renamed_completed() {
    let s = Setup::new();
    let mut expected = Vec::new();
    for name in LOGHUB {
        drop_in(&s.spool, name, &loghub(name));
        // Four of the five samples end without a newline: their final line is an event too.
        expected.extend(loghub_lines(name));
    }
    assert_eq!(expected.len(), 10_000);
    let agent = s.start("").await;
    wait_until("every file completed", || {
        let names = s.names();
        if names.iter().all(|n| n.ends_with(".COMPLETED")) && names.len() == LOGHUB.len() {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    wait_for_lines(&s.out, expected.len()).await;
    let summary = agent.shutdown().await;

    assert_same_lines(&expected, &output_lines(&s.out));
    assert_eq!(summary.get("SOURCE.r1", "EventAcceptedCount"), 10_000);
    for name in LOGHUB {
        assert_eq!(std::fs::read(s.spool.join(format!("{name}.COMPLETED"))).unwrap(), loghub(name), "{name}");
    }
    assert!(!s.spool.join(".flumenspool/progress.json").exists(), "progress is removed once a file completes");
}

#[actix_rt::test]
async fn delete_policy_immediate_deletes_completed_files() {
    let s = Setup::new();
    drop_in(&s.spool, "ssh.log", &loghub("OpenSSH_2k.log"));
    drop_in(&s.spool, "zk.log", &loghub("Zookeeper_2k.log"));
    let expected: Vec<String> =
        loghub_lines("OpenSSH_2k.log").into_iter().chain(loghub_lines("Zookeeper_2k.log")).collect();

    let agent = s.start(r#"delete_policy: Immediate, file_header: Some("file")"#).await;
    wait_until("the spool directory to empty", || {
        if s.names().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", s.names()))
        }
    })
    .await;
    wait_for_lines(&s.out, expected.len()).await;
    agent.shutdown().await;
    assert_same_lines(&expected, &output_lines(&s.out));
}

#[actix_rt::test]
async fn a_final_line_without_newline_is_an_event() {
    let s = Setup::new();
    let linux = loghub_lines("Linux_2k.log");
    let body = format!("{}\r\n{}\n{}", linux[0], linux[1], linux[2]);
    drop_in(&s.spool, "three.log", body.as_bytes());
    let agent = s.start("").await;
    wait_until("three.log completed", || {
        if s.names() == ["three.log.COMPLETED"] {
            Ok(())
        } else {
            Err(format!("{:?}", s.names()))
        }
    })
    .await;
    wait_for_lines(&s.out, 3).await;
    agent.shutdown().await;
    assert_same_lines(&linux[..3], &output_lines(&s.out));
}

#[actix_rt::test]
async fn a_file_whose_completed_name_is_taken_is_refused_not_overwritten() {
    let s = Setup::new();
    std::fs::write(s.spool.join("app.log.COMPLETED"), "ingested before\n").unwrap();
    drop_in(&s.spool, "app.log", b"same name, new contents\n");
    let apache = loghub_lines("Apache_2k.log");
    drop_in(&s.spool, "other.log", &loghub("Apache_2k.log"));

    let agent = s.start("").await;
    wait_until("other.log completed", || {
        if s.names().contains(&"other.log.COMPLETED".to_string()) {
            Ok(())
        } else {
            Err(format!("{:?}", s.names()))
        }
    })
    .await;
    wait_for_lines(&s.out, apache.len()).await;
    agent.shutdown().await;

    assert_same_lines(&apache, &output_lines(&s.out));
    assert_eq!(s.names(), ["app.log", "app.log.COMPLETED", "other.log.COMPLETED"]);
    assert_eq!(std::fs::read(s.spool.join("app.log.COMPLETED")).unwrap(), b"ingested before\n");
}

/// The real binary, its output captured in files under `root`.
fn spawn_flumen(root: &Path, topology: &Path, once: bool, run: &str) -> Child {
    let mut args = vec!["run", "--quiet"];
    if once {
        args.push("--once");
    }
    let log = |what: &str| std::fs::File::create(root.join(format!("{run}.{what}"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(args)
        .arg(topology)
        .env("FLUMEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .expect("spawn flumen")
}

fn stderr_of(root: &Path, run: &str) -> String {
    std::fs::read_to_string(root.join(format!("{run}.stderr"))).unwrap_or_default()
}

/// Where the SpoolDir source stood when it was killed: `progress.json`'s file and offset.
fn progress_at_kill(spool: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(spool.join(".flumenspool/progress.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((json["file"].as_str()?.to_string(), json["pos"].as_u64()?))
}

#[test]
fn a_crash_mid_file_resumes_from_the_last_committed_offset() {
    // One big file (every sample ten times over) and a small one.
    let mut big = Vec::new();
    for _ in 0..10 {
        for name in LOGHUB {
            big.extend_from_slice(&loghub(name));
            if big.last() != Some(&b'\n') {
                big.push(b'\n');
            }
        }
    }
    let small = loghub("OpenSSH_2k.log");
    let mut expected = lines_of(&big, true);
    expected.extend(lines_of(&small, true));
    let total = expected.len();

    // The kill must land mid-file: the progress then names big.log at an offset strictly inside
    // it, and the output holds some but not all lines. A kill that missed (nothing committed yet,
    // or big.log already done) is tried again on fresh folders with another kill point.
    let mut threshold = 2_000;
    for attempt in 1..=6 {
        let s = Setup::new();
        drop_in(&s.spool, "big.log", &big);
        drop_in(&s.spool, "small.log", &small);
        let topology = s.root.join("crash.ron");
        std::fs::write(
            &topology,
            format!(
                r#"Topology(
                    agent: "spool-crash",
                    sources: {{ "r1": (kind: SpoolDir(dir: {spool}), channels: ["c1"], batch_size: 100) }},
                    channels: {{ "c1": RocksDb(dir: {db}, capacity: 100000, sync: true) }},
                    sinks: {{ "k1": (kind: FileRoll(dir: {out}, roll_interval: "0s"), channel: "c1", batch_size: 100) }},
                )"#,
                spool = ron_path(&s.spool),
                db = ron_path(&s.root.join("channel")),
                out = ron_path(&s.out),
            ),
        )
        .unwrap();

        let mut first = spawn_flumen(&s.root, &topology, false, "first");
        wait_blocking("output before the kill", files::DEADLINE, || {
            if let Ok(Some(status)) = first.try_wait() {
                panic!("flumen exited early ({status}):\n{}", stderr_of(&s.root, "first"));
            }
            let n = output_lines(&s.out).len();
            if n >= threshold {
                Ok(n)
            } else {
                Err(format!("{n} lines"))
            }
        });
        // SAFETY: kill(2) on the pid of a child this test spawned and has not yet reaped.
        let killed = unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(killed, 0, "kill -9 flumen");
        first.wait().unwrap();
        let seen = output_lines(&s.out).len();
        let progress = progress_at_kill(&s.spool);
        let mid_file = matches!(&progress, Some((file, pos)) if file == "big.log" && *pos > 0 && *pos < big.len() as u64)
            && !s.spool.join("big.log.COMPLETED").exists()
            && seen > 0
            && seen < total;
        eprintln!("attempt {attempt}: killed with {seen} of {total} lines out; progress then: {progress:?}");
        if !mid_file {
            // Too late: kill sooner; too early (nothing committed): later.
            threshold = if seen >= total / 2 || progress.is_some_and(|(f, _)| f != "big.log") {
                threshold / 2
            } else {
                threshold * 2
            };
            continue;
        }

        let mut second = spawn_flumen(&s.root, &topology, true, "second");
        let status = wait_blocking("the second run to end (--once)", Duration::from_secs(300), || {
            second.try_wait().unwrap().ok_or_else(|| format!("{} lines so far", output_lines(&s.out).len()))
        });
        assert!(status.success(), "second run failed ({status}):\n{}", stderr_of(&s.root, "second"));

        let got = output_lines(&s.out);
        let (missing, extra) = differences(&expected, &got);
        let duplicates: usize = extra.values().sum();
        eprintln!("{total} input lines, {} output lines, {duplicates} duplicates", got.len());
        let lost: usize = missing.values().sum();
        assert_eq!(lost, 0, "lines lost across kill -9, e.g. {:?}", missing.iter().take(3).collect::<Vec<_>>());
        let mut names = s.names();
        names.sort();
        assert_eq!(names, ["big.log.COMPLETED", "small.log.COMPLETED"]);
        assert!(!s.spool.join(".flumenspool/progress.json").exists());
        return;
    }
    panic!("no kill landed in the middle of big.log in 6 attempts");
}
