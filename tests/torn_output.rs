//! Torn output: the real `flumen` binary streams numbered Loghub lines from a `SpoolDir` through
//! `RocksDb(sync: true)` channels into a `FileRoll` sink, an `Hdfs` sink (plain and `Gzip`) and a
//! `FileRoll` sink configured as Flume's `file_roll` (`in_use_suffix: ""`, files written under
//! their final name), and is killed with SIGKILL mid-stream again and again, then run to the end with
//! `--once`.
//!
//! What a reader picks up is every file without the in-use suffix. For the first two sinks no such
//! file may ever hold a partial line, and every line the source acknowledged (all of the input, in
//! the end) must be there; duplicates are reported. The negative controls: the in-use files as the
//! kills left them (read raw, before the restart recovers them) do hold partial lines, and so do
//! the Flume-style sink's files, which readers would pick up. Every other kill is aimed at a
//! write in progress (the moment a file being written ends mid-line), the others land at random.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const LINES: usize = 600_000;
const MIN_KILLS: usize = 10;
const MAX_KILLS: usize = 40;
/// Output bytes (of the `FileRoll` sink) each run writes before its kill point.
const STEP_BYTES: u64 = 500_000;
const DEADLINE: Duration = Duration::from_secs(120);

fn read_log(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn in_use(p: &Path) -> bool {
    p.to_string_lossy().ends_with(".tmp")
}

/// Whether the newest file of one of `dirs` ends mid-line at this instant (a write in progress).
fn writing(dirs: &[&Path]) -> bool {
    use std::os::unix::fs::FileExt;
    dirs.iter().any(|d| {
        let Some(newest) =
            files_under(d).into_iter().max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        else {
            return false;
        };
        let Ok(f) = std::fs::File::open(&newest) else { return false };
        let len = f.metadata().map_or(0, |m| m.len());
        let mut last = [0u8];
        len > 0 && f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n'
    })
}

fn bytes_under(dir: &Path) -> u64 {
    files_under(dir).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// Files under `dir` (those `pick` selects) whose last line has no LF.
fn torn_files(dir: &Path, pick: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| pick(p))
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.last().is_some_and(|&c| c != b'\n')))
        .collect()
}

/// What a reader of `dir`'s finished files gets: every line, and those that are not input lines
/// (a torn line, or a torn line with the next write glued to it).
fn reader_view(dir: &Path, input: &HashSet<&str>) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    for p in files_under(dir).iter().filter(|p| !in_use(p)) {
        lines.extend(lines_of(&std::fs::read(p).unwrap()));
    }
    let foreign = lines.iter().filter(|l| !input.contains(l.as_str())).cloned().collect();
    (lines, foreign)
}

#[test]
fn no_reader_visible_file_holds_a_torn_line_after_sigkills() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let input = numbered_lines(LINES);
    let spool = root.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(spool.join("big.log"), joined(&input)).unwrap();
    let topology = root.join("torn.ron");
    let channel = |name: &str| {
        format!(
            r#""{name}": RocksDb(dir: "channels/{name}", capacity: 2000000, transaction_capacity: 20000, sync: true)"#
        )
    };
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "torn",
    sources: {{ "r1": (kind: SpoolDir(dir: "spool"), channels: ["c1", "c2", "c3", "c4"], batch_size: 2000) }},
    channels: {{ {}, {}, {}, {} }},
    sinks: {{
        "fileroll": (kind: FileRoll(dir: "out/fileroll", roll_interval: "1s"), channel: "c1", batch_size: 20000),
        "hdfs": (kind: Hdfs(path: "out/hdfs", roll_interval: "1s", roll_size: 0, roll_count: 0), channel: "c2", batch_size: 20000),
        "flume-style": (kind: FileRoll(dir: "out/flume-style", roll_interval: "1s", in_use_suffix: ""), channel: "c3", batch_size: 20000),
        "hdfs-gz": (kind: Hdfs(path: "out/hdfs-gz", format: Gzip, roll_interval: "1s", roll_size: 0, roll_count: 0), channel: "c4", batch_size: 20000),
    }},
)"#,
            channel("c1"),
            channel("c2"),
            channel("c3"),
            channel("c4"),
        ),
    );
    let topo = topology.to_str().unwrap();
    let (fileroll, hdfs, flume_style) =
        (root.join("out/fileroll"), root.join("out/hdfs"), root.join("out/flume-style"));
    let total_bytes = joined(&input).len() as u64;

    let (mut kills, mut raw_torn_fileroll, mut raw_torn_hdfs) = (0, 0, 0);
    let mut visible_torn_after_restart = 0;
    while kills < MAX_KILLS {
        let before = bytes_under(&fileroll);
        if before >= total_bytes {
            break;
        }
        let log = root.join(format!("run-{kills}.log"));
        let mut flumen = Flumen::start(&["run", "--quiet", topo], &log);
        let target = before + STEP_BYTES;
        let mut ended = false;
        wait_for(
            DEADLINE,
            || {
                if let Ok(Some(_)) = flumen.child.try_wait() {
                    ended = true;
                    return true;
                }
                bytes_under(&fileroll) >= target.min(total_bytes)
            },
            || format!("output stuck at {} bytes; log:\n{}", bytes_under(&fileroll), read_log(&log)),
        );
        assert!(!ended, "flumen exited by itself:\n{}", flumen.log_text());
        // Every restart recovered what the previous kill left: no finished file is torn.
        visible_torn_after_restart +=
            torn_files(&fileroll, |p| !in_use(p)).len() + torn_files(&hdfs, |p| !in_use(p)).len();
        if kills % 2 == 0 {
            std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
        } else {
            // Aim at a write in progress: kill as soon as a file being written ends mid-line
            // (for at most 500 ms; then anyway), aiming first at the sinks no kill caught mid-line
            // yet (the negative controls need one of each).
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            let flume_caught = torn_files(&flume_style, |_| true).len();
            let targets: &[&Path] = if raw_torn_hdfs == 0 {
                &[&hdfs]
            } else if raw_torn_fileroll + flume_caught == 0 {
                &[&fileroll, &flume_style]
            } else {
                &[&fileroll, &hdfs, &flume_style]
            };
            while std::time::Instant::now() < deadline && !writing(targets) {
                std::hint::spin_loop();
            }
        }
        flumen.kill();
        kills += 1;
        let (f, h) = (torn_files(&fileroll, in_use).len(), torn_files(&hdfs, in_use).len());
        raw_torn_fileroll += f;
        raw_torn_hdfs += h;
        eprintln!(
            "kill {kills}: {} of {total_bytes} bytes out; in-use files with a partial last line: FileRoll {f}, Hdfs {h}",
            bytes_under(&fileroll)
        );
        let flume_torn = torn_files(&flume_style, |_| true).len();
        if kills >= MIN_KILLS && raw_torn_hdfs > 0 && raw_torn_fileroll + flume_torn > 0 {
            break;
        }
    }

    // The rest, to the end.
    let log = root.join("final.log");
    let mut flumen = Flumen::start(&["run", "--quiet", "--once", topo], &log);
    let mut status = None;
    wait_for(
        Duration::from_secs(300),
        || {
            status = flumen.child.try_wait().unwrap();
            status.is_some()
        },
        || format!("the --once run did not end; log:\n{}", read_log(&log)),
    );
    assert!(status.unwrap().success(), "the --once run failed:\n{}", flumen.log_text());

    let set: HashSet<&str> = input.iter().map(String::as_str).collect();
    let want = multiset(input.iter().cloned());
    let mut report = BTreeMap::new();
    for (name, dir) in [("FileRoll", &fileroll), ("Hdfs", &hdfs)] {
        let left: Vec<PathBuf> = files_under(dir).into_iter().filter(|p| in_use(p)).collect();
        assert!(left.is_empty(), "{name}: in-use files left after the final run: {left:?}");
        let torn = torn_files(dir, |_| true);
        let (lines, foreign) = reader_view(dir, &set);
        let got = multiset(lines.iter().cloned());
        let lost = want.iter().filter(|(l, _)| !got.contains_key(*l)).count();
        let duplicates: usize = got.values().map(|n| n - 1).sum();
        eprintln!(
            "{name}: {} lines written, {} read back, {lost} lost, {duplicates} duplicated, {} torn files, {} foreign lines",
            input.len(),
            lines.len(),
            torn.len(),
            foreign.len()
        );
        assert!(torn.is_empty(), "{name}: finished files end in a partial line: {torn:?}");
        assert!(
            foreign.is_empty(),
            "{name}: lines that are not input lines, e.g. {:?}",
            &foreign[..foreign.len().min(3)]
        );
        assert_eq!(lost, 0, "{name}: acknowledged lines missing");
        report.insert(name, duplicates);
    }
    // Gzip: every finished file is a whole stream (trailer included) of complete input lines.
    let mut gz_lines = Vec::new();
    for p in files_under(&root.join("out/hdfs-gz")) {
        assert!(!in_use(&p), "Hdfs(Gzip): in-use file left after the final run: {p:?}");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap())
            .read_to_end(&mut plain)
            .unwrap_or_else(|e| panic!("{p:?} is not a complete gzip stream: {e}"));
        assert!(plain.is_empty() || plain.ends_with(b"\n"), "{p:?} ends in a partial line");
        gz_lines.extend(lines_of(&plain));
    }
    let foreign = gz_lines.iter().filter(|l| !set.contains(l.as_str())).count();
    let got = multiset(gz_lines.iter().cloned());
    let lost = want.iter().filter(|(l, _)| !got.contains_key(*l)).count();
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!(
        "Hdfs(Gzip): {} lines read back, {lost} lost, {duplicates} duplicated, {foreign} foreign lines",
        gz_lines.len()
    );
    assert_eq!((lost, foreign), (0, 0), "Hdfs(Gzip): lines lost or foreign");
    report.insert("Hdfs(Gzip)", duplicates);
    let flume_torn = torn_files(&flume_style, |_| true);
    let (flume_lines, flume_foreign) = reader_view(&flume_style, &set);
    eprintln!(
        "{kills} kills; partial last lines in in-use files at the kills (negative control, read raw): FileRoll \
         {raw_torn_fileroll}, Hdfs {raw_torn_hdfs}; Flume-style FileRoll: {} files with a partial last line, {} \
         foreign lines among {}; duplicates {report:?}",
        flume_torn.len(),
        flume_foreign.len(),
        flume_lines.len()
    );
    assert_eq!(visible_torn_after_restart, 0, "a restart left a finished file torn");
    assert!(kills >= MIN_KILLS, "only {kills} kills landed before the input was delivered");
    // The negative control: the kills did leave partial lines, which a reader of the raw in-use
    // files (or of a FileRoll without an in-use name) would have picked up. Which sink a kill
    // catches mid-write is timing; at least one of them must have been caught.
    assert!(
        raw_torn_hdfs + raw_torn_fileroll + flume_torn.len() > 0,
        "negative control: no kill left a partial line in any file being written"
    );
}
