//! The log of a real `flumen run` on Loghub input: with stderr in a file it holds no escape code
//! (on a terminal, made by `script`, it does: the negative control); `--log-format json`, given
//! before or after `run`, writes one JSON object per line, every line parsed, with the span of the
//! component that spoke; the run summary shows its output paths normalised.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

/// A topology in `dir/topologies/` reading one Loghub sample with `Exec` into `../var/out`.
fn topology(dir: &Path) -> std::path::PathBuf {
    let sample = loghub_dir().join("HDFS_2k.log");
    let path = dir.join("topologies/logging.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "logging",
    sources: {{
        "hdfs": (kind: Exec(command: "cat {}", shell: Some("/bin/sh -c"), restart: false), channels: ["c1"]),
    }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{
        "out": (kind: FileRoll(dir: "../var/./out", roll_interval: "0s"), channel: "c1"),
    }},
)"#,
            sample.display()
        ),
    );
    path
}

/// Runs `flumen ARGS` in `dir` to its end with stderr in a file; answers (status, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, Vec<u8>) {
    let log = dir.join("stderr.log");
    let err = std::fs::File::create(&log).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(args)
        .current_dir(dir)
        .env("FLUMEN_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stderr(err)
        .output()
        .expect("run flumen");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), std::fs::read(&log).unwrap())
}

#[test]
fn a_log_in_a_file_has_no_escape_codes_and_on_a_terminal_it_has_colours() {
    let tmp = tempfile::tempdir().unwrap();
    topology(tmp.path());
    let (code, _, log) = run(tmp.path(), &["run", "--once", "--quiet", "topologies/logging.ron"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&log));
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("agent started") && text.contains("INFO"), "the log was written: {text}");
    assert!(!log.contains(&0x1b), "an escape byte reached the file:\n{text}");

    // The negative control: `script` gives flumen a terminal, and then the log has colours.
    std::fs::remove_dir_all(tmp.path().join("var")).unwrap();
    let typescript = tmp.path().join("typescript");
    let command = format!("{} run --once --quiet topologies/logging.ron", env!("CARGO_BIN_EXE_flumen"));
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .current_dir(tmp.path())
        .env("FLUMEN_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("script runs (bsdutils; make test installs it)");
    assert!(status.success());
    let seen = std::fs::read(&typescript).unwrap();
    assert!(seen.windows(2).any(|w| w == b"\x1b["), "no colour on a terminal:\n{}", String::from_utf8_lossy(&seen));
}

#[test]
fn json_logs_are_one_object_per_line_before_or_after_run() {
    let tmp = tempfile::tempdir().unwrap();
    topology(tmp.path());
    for args in [
        &["--log-format", "json", "run", "--once", "topologies/logging.ron"][..],
        &["run", "--log-format", "json", "--once", "topologies/logging.ron"][..],
    ] {
        let _ = std::fs::remove_dir_all(tmp.path().join("var"));
        let (code, summary, log) = run(tmp.path(), args);
        let text = String::from_utf8(log).expect("the log is UTF-8");
        assert_eq!(code, 0, "{text}");
        assert!(summary.contains("SINK.out"), "the summary stays on stdout: {summary}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {l:?}")))
            .collect();
        assert!(lines.len() >= 3, "{text}");
        for l in &lines {
            assert!(l.is_object(), "{l}");
            assert!(l["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
            assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&l["level"].as_str().unwrap_or("")), "{l}");
            assert!(l["target"].as_str().is_some_and(|t| t.starts_with("flumen")), "{l}");
        }
        let started = lines.iter().find(|l| l["message"] == "agent started").unwrap_or_else(|| panic!("{text}"));
        assert_eq!(started["fields"]["agent"], "logging");
        assert_eq!(started["fields"]["sources"], 1, "numbers stay numbers");
        let ended = lines
            .iter()
            .find(|l| l["message"] == "reached the end of its input")
            .unwrap_or_else(|| panic!("no end of input logged: {text}"));
        assert_eq!(ended["spans"]["source"]["name"], "hdfs", "the source's span names it: {ended}");
    }
}

#[test]
fn the_summary_shows_output_paths_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let absolute = topology(tmp.path());
    let (code, summary, log) = run(tmp.path(), &["run", "--once", "--quiet", "topologies/logging.ron"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&log));
    let row = summary.lines().find(|l| l.starts_with("SINK.out")).unwrap_or_else(|| panic!("{summary}"));
    assert!(row.ends_with("  var/out"), "relative topology: {row:?}");
    assert_eq!(output_lines(&tmp.path().join("var/out")).0.len(), 2000, "the output is where the summary says");

    std::fs::remove_dir_all(tmp.path().join("var")).unwrap();
    let (code, summary, _) = run(tmp.path(), &["run", "--once", "--quiet", absolute.to_str().unwrap()]);
    assert_eq!(code, 0);
    let row = summary.lines().find(|l| l.starts_with("SINK.out")).unwrap();
    let want = format!("  {}", tmp.path().join("var/out").display());
    assert!(row.ends_with(&want), "absolute topology: {row:?}, want {want:?}");
    assert!(!summary.contains("/../") && !summary.contains("/./"), "{summary}");
}
