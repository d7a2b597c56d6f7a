//! `SpoolDir` and `Taildir` of the real `flumen` binary (`run --once`, into `FileRoll`) against
//! symbolic links to files outside their directory and a forged `SpoolDir` progress entry: by
//! default such a file is neither read nor renamed nor deleted. The negative controls: with
//! `follow_symlinks: true` the link's target is read, and a plain progress entry is resumed.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Runs `flumen run --once` on `topology` (written to `dir/name.ron`); answers its log.
fn run_once(dir: &Path, name: &str, topology: &str) -> String {
    let path = dir.join(format!("{name}.ron"));
    write_file(&path, topology);
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["run", "--once", "--quiet", path.to_str().unwrap()])
        .env("FLUMEN_LOG", "info")
        .output()
        .expect("run flumen");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "flumen run --once failed:\n{log}");
    log
}

fn topology(kind: &str, out: &Path) -> String {
    format!(
        r#"Topology(
    agent: "links",
    sources: {{ "r1": (kind: {kind}, channels: ["c1"], batch_size: 500) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: {out:?}, roll_interval: "0s"), channel: "c1") }},
)"#,
        out = out.display().to_string()
    )
}

/// Two Loghub-line sets: what the directory holds, what the file outside it holds.
fn inside_and_outside() -> (Vec<String>, Vec<String>) {
    let lines = loghub_lines();
    (lines[..300].to_vec(), lines[300..500].to_vec())
}

fn spool_dir(spool: &Path, follow: bool) -> String {
    format!("SpoolDir(dir: {:?}, poll_interval: \"20ms\", follow_symlinks: {follow})", spool.display().to_string())
}

#[test]
fn a_symlink_in_the_spool_directory_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (inside, outside) = inside_and_outside();
    let (spool, elsewhere) = (root.join("spool"), root.join("elsewhere"));
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let victim = elsewhere.join("victim.log");
    std::fs::write(&victim, joined(&outside)).unwrap();
    std::fs::write(spool.join("app.log"), joined(&inside)).unwrap();
    std::os::unix::fs::symlink(&victim, spool.join("link.log")).unwrap();

    let log = run_once(root, "nofollow", &topology(&spool_dir(&spool, false), &root.join("out1")));
    assert_eq!(multiset(output_lines(&root.join("out1")).0), multiset(inside.clone()), "only the regular file's lines");
    assert!(log.contains("a symbolic link (follow_symlinks is false); refused, left untouched"), "{log}");
    assert!(std::fs::symlink_metadata(spool.join("link.log")).unwrap().file_type().is_symlink(), "link not renamed");
    assert_eq!(std::fs::read(&victim).unwrap(), joined(&outside), "the victim untouched");
    assert!(spool.join("app.log.COMPLETED").exists());

    // Negative control: following links, the target is read (and the link, not the target,
    // renamed).
    let log = run_once(root, "follow", &topology(&spool_dir(&spool, true), &root.join("out2")));
    assert_eq!(
        multiset(output_lines(&root.join("out2")).0),
        multiset(outside.clone()),
        "the link's target was read: {log}"
    );
    assert!(spool.join("link.log.COMPLETED").exists());
    assert_eq!(std::fs::read(&victim).unwrap(), joined(&outside));
}

#[test]
fn a_forged_progress_entry_outside_the_directory_leaves_the_victim_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (inside, outside) = inside_and_outside();
    let spool = root.join("spool");
    let tracker = spool.join(".flumenspool");
    std::fs::create_dir_all(&tracker).unwrap();
    let victim = root.join("victim.log");
    std::fs::write(&victim, joined(&outside)).unwrap();
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&victim).unwrap().ino();
    std::fs::write(tracker.join("progress.json"), format!(r#"{{"file":"../victim.log","inode":{inode},"pos":0}}"#))
        .unwrap();

    let log = run_once(root, "forged", &topology(&spool_dir(&spool, false), &root.join("out1")));
    assert!(log.contains("the progress file names a file outside the spool directory"), "{log}");
    assert!(output_lines(&root.join("out1")).0.is_empty(), "nothing of the victim read");
    assert_eq!(std::fs::read(&victim).unwrap(), joined(&outside), "the victim untouched");
    assert!(!root.join("victim.log.COMPLETED").exists(), "the victim not renamed");
    assert!(!tracker.join("progress.json").exists(), "the forged entry was removed");

    // Negative control: a progress entry with a plain name is resumed at its position (so the
    // entry above was read, and refused for its name only).
    let app = spool.join("app.log");
    std::fs::write(&app, joined(&inside)).unwrap();
    let inode = std::fs::metadata(&app).unwrap().ino();
    let skip = joined(&inside[..100]).len();
    std::fs::write(tracker.join("progress.json"), format!(r#"{{"file":"app.log","inode":{inode},"pos":{skip}}}"#))
        .unwrap();
    let log = run_once(root, "plain", &topology(&spool_dir(&spool, false), &root.join("out2")));
    assert!(log.contains("resuming"), "{log}");
    assert_eq!(multiset(output_lines(&root.join("out2")).0), multiset(inside[100..].to_vec()));
    assert!(spool.join("app.log.COMPLETED").exists());
}

#[test]
fn taildir_refuses_a_matched_symlink_unless_following_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (inside, outside) = inside_and_outside();
    let (logs, elsewhere) = (root.join("logs"), root.join("elsewhere"));
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let secret = elsewhere.join("secret.txt");
    std::fs::write(&secret, joined(&outside)).unwrap();
    std::fs::write(logs.join("app.log"), joined(&inside)).unwrap();
    std::os::unix::fs::symlink(&secret, logs.join("evil.log")).unwrap();
    let taildir = |follow: bool, n: u32| {
        format!(
            "Taildir(filegroups: {{\"g\": {:?}}}, position_file: {:?}, poll_interval: \"20ms\", follow_symlinks: {follow})",
            format!("{}/*.log", logs.display()),
            root.join(format!("positions{n}.json")).display().to_string()
        )
    };

    let log = run_once(root, "nofollow", &topology(&taildir(false, 1), &root.join("out1")));
    assert_eq!(multiset(output_lines(&root.join("out1")).0), multiset(inside.clone()), "{log}");
    assert!(log.contains("a symbolic link matched by a file group"), "{log}");

    // Negative control: following links, the secret is read.
    let log = run_once(root, "follow", &topology(&taildir(true, 2), &root.join("out2")));
    let mut both = inside.clone();
    both.extend(outside.clone());
    assert_eq!(multiset(output_lines(&root.join("out2")).0), multiset(both), "{log}");
}
