//! `Exec` with `log_stderr` on a real child process (`sh`): its standard error holds invalid
//! UTF-8, a line far over `max_line_length` and lines after both; every stderr line is logged
//! (lossy), the long one cut and flagged, and every stdout line still becomes an event.

mod support;

use std::process::Command;

use support::*;

#[test]
fn stderr_lines_are_cut_flagged_and_lossy_and_logging_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lines: Vec<String> = loghub_lines().into_iter().take(1000).collect();
    std::fs::write(dir.join("input.log"), joined(&lines)).unwrap();
    // Invalid UTF-8 (0xff 0xfe), then a 5,000-byte line, a 999-byte line (under the limit: the
    // control, logged whole), and a last line without a newline.
    std::fs::write(
        dir.join("child.sh"),
        "printf 'bad \\377\\376 bytes\\n' >&2\n\
         head -c 5000 /dev/zero | tr '\\0' y >&2; printf '\\n' >&2\n\
         head -c 999 /dev/zero | tr '\\0' x >&2; printf '\\n' >&2\n\
         cat input.log\n\
         printf 'the last stderr line' >&2\n",
    )
    .unwrap();
    let topology = dir.join("exec.ron");
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "exec",
    sources: {{ "r1": (kind: Exec(command: "sh child.sh", log_stderr: true, max_line_length: 1000), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: {:?}, roll_interval: "0s"), channel: "c1") }},
)"#,
            dir.join("out").display().to_string()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["run", "--once", "--quiet", topology.to_str().unwrap()])
        .env("FLUMEN_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert_eq!(multiset(output_lines(&dir.join("out")).0), multiset(lines), "every stdout line is an event");

    assert!(log.contains("bad \u{fffd}\u{fffd} bytes"), "invalid UTF-8 replaced:\n{log}");
    let cut = log.lines().find(|l| l.contains(&"y".repeat(100))).unwrap_or_else(|| panic!("no long line:\n{log}"));
    assert!(cut.contains(&"y".repeat(1000)) && !cut.contains(&"y".repeat(1001)), "cut at 1000 bytes: {cut}");
    assert!(cut.contains("truncated=true") && cut.contains("bytes=5000"), "flagged: {cut}");
    // The control: a line under the limit is logged whole and not flagged.
    let whole =
        log.lines().find(|l| l.contains(&"x".repeat(100))).unwrap_or_else(|| panic!("no 999-byte line:\n{log}"));
    assert!(whole.contains(&"x".repeat(999)) && !whole.contains("truncated"), "{whole}");
    assert!(log.contains("the last stderr line"), "logging went on to the end:\n{log}");
}
