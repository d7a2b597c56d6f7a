//! Taildir on real files with real Loghub lines, through a whole agent: Taildir -> Memory ->
//! FileRoll. Rotation, truncation, restarts, new files and the position file.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flumen::agent::{self, AgentOptions, RunningAgent};
use support::files::{
    append, assert_same_lines, loghub_lines, output_lines, ron_path, text, wait_for_lines, wait_until,
};

/// A test's folders: `logs/` (tailed), `state/` (position file), `out*/` (FileRoll output).
struct Setup {
    _tmp: tempfile::TempDir,
    logs: PathBuf,
    position_file: PathBuf,
    root: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let logs = root.join("logs");
        std::fs::create_dir(&logs).unwrap();
        Setup { position_file: root.join("state/taildir.json"), logs, root, _tmp: tmp }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Starts an agent tailing `glob` (in `logs/`) into FileRoll folder `out`.
    async fn start(&self, glob: &str, out: &Path, extra: &str, batch_size: usize) -> RunningAgent {
        let ron = format!(
            r#"Topology(
                agent: "taildir-test",
                sources: {{
                    "r1": (
                        kind: Taildir(
                            filegroups: {{ "app": {glob} }},
                            position_file: {pos},
                            poll_interval: "20ms",
                            write_pos_interval: "100ms",
                            {extra}
                        ),
                        channels: ["c1"],
                        batch_size: {batch_size},
                    ),
                }},
                channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
                sinks: {{ "k1": (kind: FileRoll(dir: {out}, roll_interval: "0s"), channel: "c1") }},
            )"#,
            glob = ron_path(&self.logs.join(glob)),
            pos = ron_path(&self.position_file),
            out = ron_path(out),
        );
        let topology = flumen::topology::load_str(&ron, Path::new("taildir-test.ron"), &self.root)
            .unwrap_or_else(|e| panic!("{e}"));
        agent::start(topology, AgentOptions::default()).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The position file's entries by inode: `(pos, file)` (Flume's fields; `dev` and
    /// `fingerprint` are flumen's).
    fn positions(&self) -> HashMap<u64, (u64, String)> {
        let text = std::fs::read_to_string(&self.position_file).unwrap();
        let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        entries
            .into_iter()
            .map(|e| {
                let mut keys: Vec<&String> = e.as_object().unwrap().keys().collect();
                keys.sort();
                assert_eq!(
                    keys,
                    ["dev", "file", "fingerprint", "inode", "pos"],
                    "Flume's position entry and flumen's two: {e}"
                );
                (e["inode"].as_u64().unwrap(), (e["pos"].as_u64().unwrap(), e["file"].as_str().unwrap().to_string()))
            })
            .collect()
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[actix_rt::test]
async fn rotation_reads_the_old_file_to_its_end_then_the_new_file_from_its_start() {
    let s = Setup::new();
    let app = s.logs.join("app.log");
    let out = s.out("out");
    let lines = loghub_lines("Apache_2k.log");
    let (before, rest) = lines.split_at(700);
    let (late, after) = rest.split_at(600);

    append(&app, text(before).as_bytes());
    let agent = s.start("app.log", &out, "", 100).await;
    wait_for_lines(&out, before.len()).await;

    // Lines written just before the rename still belong to the old file; then a new app.log.
    append(&app, text(late).as_bytes());
    std::fs::rename(&app, s.logs.join("app.log.1")).unwrap();
    append(&app, text(after).as_bytes());

    let got = wait_for_lines(&out, lines.len()).await;
    agent.shutdown().await;
    assert_same_lines(&lines, &output_lines(&out));
    assert_eq!(got.len(), lines.len());

    let positions = s.positions();
    assert_eq!(positions[&inode(&app)], (size(&app), app.to_str().unwrap().to_string()));
}

#[actix_rt::test]
async fn a_truncated_file_is_read_again_from_its_start() {
    let s = Setup::new();
    let app = s.logs.join("app.log");
    let out = s.out("out");
    let lines = loghub_lines("Linux_2k.log");
    let (first, second) = (&lines[..1000], &lines[1000..1100]);

    append(&app, text(first).as_bytes());
    let agent = s.start("*.log", &out, "", 1000).await;
    wait_for_lines(&out, first.len()).await;

    // copytruncate-style: the file shrinks below the read position, then gets new lines.
    std::fs::write(&app, text(second)).unwrap();
    wait_for_lines(&out, first.len() + second.len()).await;
    agent.shutdown().await;

    let expected: Vec<String> = first.iter().chain(second).cloned().collect();
    assert_same_lines(&expected, &output_lines(&out));
    assert_eq!(s.positions()[&inode(&app)].0, size(&app));
}

#[actix_rt::test]
async fn a_restart_mid_file_reads_every_line_exactly_once() {
    let s = Setup::new();
    let app = s.logs.join("app.log");
    let lines = loghub_lines("OpenSSH_2k.log");
    let (first, second) = lines.split_at(1200);
    // The agent stops while the file ends in the first half of a line: it must resume before it.
    let (head, tail) = second[0].split_at(second[0].len() / 2);

    append(&app, text(first).as_bytes());
    append(&app, head.as_bytes());
    let out1 = s.out("out1");
    let agent = s.start("*.log", &out1, "", 50).await;
    wait_for_lines(&out1, first.len()).await;
    agent.shutdown().await;
    assert_eq!(s.positions()[&inode(&app)].0, size(&app) - head.len() as u64, "saved position");

    append(&app, tail.as_bytes());
    append(&app, b"\n");
    append(&app, text(&second[1..]).as_bytes());
    let out2 = s.out("out2");
    let agent = s.start("*.log", &out2, "", 50).await;
    wait_until("every line in out1 + out2", || {
        let n = output_lines(&out1).len() + output_lines(&out2).len();
        if n >= lines.len() {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    })
    .await;
    agent.shutdown().await;

    let mut got = output_lines(&out1);
    got.extend(output_lines(&out2));
    assert_same_lines(&lines, &got);
    assert_eq!(s.positions()[&inode(&app)].0, size(&app));
}

#[actix_rt::test]
async fn a_new_file_is_picked_up_and_an_unterminated_line_waits_for_its_newline() {
    let s = Setup::new();
    let (a, b) = (s.logs.join("a.log"), s.logs.join("b.log"));
    let out = s.out("out");
    let zk = loghub_lines("Zookeeper_2k.log");
    let hdfs = loghub_lines("HDFS_2k.log");

    append(&a, text(&zk[..500]).as_bytes());
    std::fs::write(s.logs.join("ignored.txt"), "not matched by *.log\n").unwrap();
    let agent = s.start("*.log", &out, r#"file_header: Some("file"), filegroup_header: Some("group"),"#, 100).await;
    wait_for_lines(&out, 500).await;

    // a.log gets a line without its newline first; then a new file appears. Every pass reads
    // a.log before b.log, so once b.log's lines are out, a.log's partial line was seen and held.
    append(&a, zk[500].as_bytes());
    append(&b, text(&hdfs[..300]).as_bytes());
    let got = wait_for_lines(&out, 800).await;
    assert!(!got.contains(&zk[500]), "a line without its newline was emitted");

    append(&a, b"\n");
    wait_for_lines(&out, 801).await;
    agent.shutdown().await;

    let expected: Vec<String> = zk[..501].iter().chain(&hdfs[..300]).cloned().collect();
    assert_same_lines(&expected, &output_lines(&out));
}

#[actix_rt::test]
async fn the_position_file_holds_each_files_inode_and_committed_offset() {
    let s = Setup::new();
    let (a, b) = (s.logs.join("a.log"), s.logs.join("b.log"));
    let out = s.out("out");
    let apache = loghub_lines("Apache_2k.log");
    let linux = loghub_lines("Linux_2k.log");
    append(&a, text(&apache[..300]).as_bytes());
    append(&b, text(&linux[..200]).as_bytes());
    // A final line without newline is not committed, so not counted in the position.
    append(&b, b"partial line");

    let agent = s.start("*.log", &out, "", 100).await;
    wait_for_lines(&out, 500).await;
    wait_until("the position file to hold both files' ends", || {
        let p = std::fs::read_to_string(&s.position_file).map_err(|e| e.to_string())?;
        let ends = [(inode(&a), size(&a)), (inode(&b), size(&b) - 12)];
        let all = ends.iter().all(|(ino, pos)| p.contains(&format!("\"inode\":{ino},\"pos\":{pos},")));
        if all {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    agent.shutdown().await;

    let positions = s.positions();
    assert_eq!(positions.len(), 2, "{positions:?}");
    assert_eq!(positions[&inode(&a)], (size(&a), a.to_str().unwrap().to_string()));
    assert_eq!(positions[&inode(&b)], (size(&b) - 12, b.to_str().unwrap().to_string()));
}

#[actix_rt::test]
async fn skip_to_end_starts_existing_files_at_their_end() {
    let s = Setup::new();
    let app = s.logs.join("app.log");
    let out = s.out("out");
    let lines = loghub_lines("HDFS_2k.log");
    append(&app, text(&lines[..1000]).as_bytes());

    let agent = s.start("*.log", &out, "skip_to_end: true,", 100).await;
    wait_until("the position file to record app.log at its end", || {
        let p = std::fs::read_to_string(&s.position_file).map_err(|e| e.to_string())?;
        if p.contains(&format!("\"pos\":{}", size(&app))) {
            Ok(())
        } else {
            Err(p)
        }
    })
    .await;
    append(&app, text(&lines[1000..1100]).as_bytes());
    wait_for_lines(&out, 100).await;
    agent.shutdown().await;
    assert_same_lines(&lines[1000..1100], &output_lines(&out));
}
