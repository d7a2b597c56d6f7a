//! Taildir under the real `logrotate` (Debian's package, installed by `make test`): a writer
//! appends numbered Loghub lines to `logs/app.log` at a steady pace while `logrotate -f` rotates
//! it with a generated configuration and state file, and the real `flumen` binary, tailing
//! `logs/app.log` into a `RocksDb(sync: true)` channel and a `FileRoll` sink, is killed with
//! SIGKILL in the middle of the run and started again. In the end every line the log files hold
//! (`app.log`, the plain `app.log.1` and the compressed older copies) has arrived; duplicates
//! (lines read again after the kill) are reported.
//!
//! With `copytruncate` the lines written after the last read and before the truncation exist only
//! in the copy: flumen finds the copy by fingerprint in the same folder and finishes it. The
//! negative control is the same run with logrotate's `olddir` putting the copies in another
//! folder, where flumen does not look: lines are then lost, as they are for every tailer that
//! does not finish the copy.
//!
//! Also: a file deleted and replaced by a new file that gets the same inode is read from its start.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// Rotations per run; the kill lands after half of them.
const CYCLES: usize = 8;
const DEADLINE: Duration = Duration::from_secs(90);

fn logrotate() -> PathBuf {
    for p in ["/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("logrotate is not installed: this test needs Debian's logrotate package (`make test` installs it)");
}

/// A folder with the tailed log, the logrotate configuration and state, and the agent's files.
struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    logs: PathBuf,
    /// Where rotated copies go (`logs/`, or another folder with `olddir`).
    copies: PathBuf,
    out: PathBuf,
    topology: PathBuf,
    conf: PathBuf,
}

impl Rig {
    fn new(method: &str, olddir: bool) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let copies = if olddir { root.join("old") } else { logs.clone() };
        std::fs::create_dir_all(&copies).unwrap();
        std::fs::write(logs.join("app.log"), b"").unwrap();
        let conf = root.join("logrotate.conf");
        let olddir_line = if olddir { format!("    olddir {}\n", copies.display()) } else { String::new() };
        std::fs::write(
            &conf,
            format!(
                "{} {{\n    {method}\n    rotate 1000\n    compress\n    delaycompress\n    missingok\n    nomail\n{olddir_line}}}\n",
                logs.join("app.log").display()
            ),
        )
        .unwrap();
        let topology = root.join("tail.ron");
        write_file(
            &topology,
            r#"Topology(
    agent: "logrotate",
    sources: { "r1": (
        kind: Taildir(filegroups: { "app": "logs/app.log" }, position_file: "state/positions.json",
                      poll_interval: "50ms", write_pos_interval: "200ms"),
        channels: ["c1"], batch_size: 500,
    ) },
    channels: { "c1": RocksDb(dir: "channel", sync: true) },
    sinks: { "k1": (kind: FileRoll(dir: "out", roll_interval: "1s"), channel: "c1", batch_size: 1000) },
)"#,
        );
        Rig { out: root.join("out"), root, logs, copies, topology, conf, _tmp: tmp }
    }

    fn start(&self, run: &str) -> Flumen {
        Flumen::start(&["run", "--quiet", self.topology.to_str().unwrap()], &self.root.join(format!("{run}.log")))
    }

    fn rotate(&self) {
        let out = Command::new(logrotate())
            .arg("-f")
            .arg("-s")
            .arg(self.root.join("logrotate.state"))
            .arg(&self.conf)
            .output()
            .expect("run logrotate");
        assert!(
            out.status.success(),
            "logrotate failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every line the log files hold: `app.log`, its plain copies and its compressed copies.
    fn file_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut paths: Vec<PathBuf> = [&self.logs, &self.copies]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("app.log"))
            .collect();
        paths.sort();
        paths.dedup();
        for p in paths {
            let mut bytes = std::fs::read(&p).unwrap();
            if p.extension().is_some_and(|e| e == "gz") {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut plain).unwrap();
                bytes = plain;
            }
            lines.extend(lines_of(&bytes));
        }
        lines
    }

    /// Every line delivered (complete lines of every output file).
    fn delivered(&self) -> Vec<String> {
        output_lines(&self.out).0
    }
}

/// Appends numbered Loghub lines to `app.log` (reopened by path for every write, never created:
/// the way an application writing through a fresh descriptor does) until told to stop.
fn start_writer(path: PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    let base = loghub_lines();
    std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let chunk: Vec<String> = (i..i + 20).map(|n| format!("{n} {}", base[n % base.len()])).collect();
            let bytes = joined(&chunk);
            loop {
                match std::fs::OpenOptions::new().append(true).open(&path) {
                    Ok(mut f) => {
                        f.write_all(&bytes).unwrap();
                        break;
                    }
                    // Between logrotate's rename and its `create`.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => panic!("append to {}: {e}", path.display()),
                }
            }
            i += 20;
            written.store(i, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// What a run saw: lines the files hold, lines missing from the output, duplicates.
struct Outcome {
    in_files: usize,
    written: usize,
    missing: Vec<String>,
    duplicates: usize,
    cycles: usize,
}

/// Runs the writer, `CYCLES` rotations 600 ms apart and a SIGKILL of flumen after half of them;
/// then waits (up to `DEADLINE`) until every line the files hold arrived, or, with
/// `expect_loss`, until the output stopped growing.
fn run(rig: &Rig, expect_loss: bool) -> Outcome {
    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut flumen = rig.start("first");
    let writer = start_writer(rig.logs.join("app.log"), stop.clone(), written.clone());
    let mut cycles = 0;
    for cycle in 0..CYCLES {
        std::thread::sleep(Duration::from_millis(600));
        rig.rotate();
        cycles += 1;
        if cycle == CYCLES / 2 - 1 {
            // Mid-run: let some lines pile up after the rotation, then kill and restart at once.
            std::thread::sleep(Duration::from_millis(fastrand::u64(50..250)));
            flumen.kill();
            flumen = rig.start("second");
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let in_files = rig.file_lines();
    let missing = |delivered: &[String]| -> Vec<String> {
        let have: HashSet<&str> = delivered.iter().map(String::as_str).collect();
        in_files.iter().filter(|l| !have.contains(l.as_str())).cloned().collect()
    };
    let mut last = (usize::MAX, std::time::Instant::now());
    wait_for(
        DEADLINE,
        || {
            let delivered = rig.delivered();
            let n = missing(&delivered).len();
            if n == 0 {
                return true;
            }
            if n != last.0 {
                last = (n, std::time::Instant::now());
            }
            expect_loss && last.1.elapsed() > Duration::from_secs(3)
        },
        || {
            format!(
                "{} lines the files hold never arrived; log:\n{}",
                missing(&rig.delivered()).len(),
                flumen.log_text()
            )
        },
    );
    assert_eq!(flumen.terminate(DEADLINE), Some(0), "flumen stops gracefully");
    let delivered = rig.delivered();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &delivered {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let duplicates = counts.values().map(|n| n - 1).sum();
    Outcome {
        in_files: in_files.len(),
        written: written.load(Ordering::SeqCst),
        missing: missing(&delivered),
        duplicates,
        cycles,
    }
}

fn report(what: &str, o: &Outcome) {
    eprintln!(
        "{what}: {} logrotate cycles, 1 SIGKILL; {} lines written, {} in the log files, {} of them never arrived, {} duplicates",
        o.cycles,
        o.written,
        o.in_files,
        o.missing.len(),
        o.duplicates
    );
}

#[test]
fn create_rotation_with_a_sigkill_loses_nothing() {
    let rig = Rig::new("create", false);
    let o = run(&rig, false);
    report("create", &o);
    assert!(o.in_files > 5_000, "the files hold {} lines", o.in_files);
    assert!(o.missing.is_empty(), "lines lost, e.g. {:?}", &o.missing[..o.missing.len().min(3)]);
}

#[test]
fn copytruncate_rotation_with_a_sigkill_loses_nothing() {
    let rig = Rig::new("copytruncate", false);
    let o = run(&rig, false);
    report("copytruncate", &o);
    assert!(o.in_files > 5_000, "the files hold {} lines", o.in_files);
    assert!(o.missing.is_empty(), "lines lost, e.g. {:?}", &o.missing[..o.missing.len().min(3)]);
}

/// Negative control: the same `copytruncate` run with the copies out of the tailed folder
/// (logrotate's `olddir`), where no copy can be found to finish: lines are lost.
#[test]
fn copytruncate_with_the_copies_in_another_folder_loses_lines() {
    let rig = Rig::new("copytruncate", true);
    let o = run(&rig, true);
    report("copytruncate with olddir (negative control)", &o);
    assert!(!o.missing.is_empty(), "negative control: no line was lost without the copy in the folder");
}

#[test]
fn a_new_file_on_a_reused_inode_is_read_from_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let base = loghub_lines();
    let old: Vec<String> = (0..300).map(|i| format!("old {i} {}", base[i])).collect();
    std::fs::write(&app, joined(&old)).unwrap();
    let topology = root.join("tail.ron");
    write_file(
        &topology,
        r#"Topology(
    agent: "inode",
    sources: { "r1": (kind: Taildir(filegroups: { "app": "logs/app.log" }, position_file: "state/positions.json",
                                     poll_interval: "50ms"), channels: ["c1"]) },
    channels: { "c1": RocksDb(dir: "channel", sync: true) },
    sinks: { "k1": (kind: FileRoll(dir: "out", roll_interval: "0s"), channel: "c1") },
)"#,
    );
    let out = root.join("out");
    let start =
        |run: &str| Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &root.join(format!("{run}.log")));
    let flumen = start("first");
    wait_for(DEADLINE, || output_lines(&out).0.len() >= old.len(), || "the old file's lines".into());
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let saved = std::fs::read_to_string(root.join("state/positions.json")).unwrap();
    let ino = std::fs::metadata(&app).unwrap().ino();
    let old_size = std::fs::metadata(&app).unwrap().len();
    assert!(saved.contains(&format!("\"inode\":{ino}")) && saved.contains(&format!("\"pos\":{old_size}")), "{saved}");

    // Delete it; make new files until one gets its inode (bounded), and name that one app.log.
    std::fs::remove_file(&app).unwrap();
    let new: Vec<String> = (0..600).map(|i| format!("new {i} {}", base[1000 + i])).collect();
    let mut tries = 0;
    let candidate = logs.join("candidate");
    loop {
        tries += 1;
        assert!(tries <= 1000, "no new file got inode {ino} in 1000 tries");
        std::fs::File::create(&candidate).unwrap();
        if std::fs::metadata(&candidate).unwrap().ino() == ino {
            std::fs::write(&candidate, joined(&new)).unwrap();
            std::fs::rename(&candidate, &app).unwrap();
            break;
        }
        // Keep this one (so its inode is not handed out again) and try another name.
        std::fs::rename(&candidate, logs.join(format!("kept-{tries}"))).unwrap();
    }
    assert!(std::fs::metadata(&app).unwrap().len() > old_size, "the new file is longer than the saved position");
    eprintln!("inode {ino} reused after {tries} tries");

    let flumen = start("second");
    let want: HashSet<&str> = new.iter().map(String::as_str).collect();
    let arrived = || output_lines(&out).0.iter().filter(|l| want.contains(l.as_str())).count();
    wait_for(
        DEADLINE,
        || arrived() == new.len(),
        || format!("{} of the new file's {} lines arrived; log:\n{}", arrived(), new.len(), flumen.log_text()),
    );
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
    let got = output_lines(&out).0;
    assert_eq!(got.len(), old.len() + new.len(), "every line once");
}
