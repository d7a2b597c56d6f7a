//! What the in-process file source tests (`Taildir`, `SpoolDir` run as a library agent) use: one
//! Loghub sample at a time, flat FileRoll output folders, line differences, and waiting inside the
//! agent's runtime.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a test waits for a condition before it fails saying what it saw.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A shipped Loghub sample, e.g. `loghub("Apache_2k.log")`.
pub fn loghub(name: &str) -> Vec<u8> {
    let path = super::loghub_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of a Loghub sample (a final line without newline included).
pub fn loghub_lines(name: &str) -> Vec<String> {
    lines_of(&loghub(name), true)
}

/// Splits `bytes` into lines as flumen does: LF or CRLF ends a line and is not part of it; a
/// final piece without newline is a line only when `final_line` is true.
pub fn lines_of(bytes: &[u8], final_line: bool) -> Vec<String> {
    let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = pieces.pop().unwrap_or_default();
    let mut lines: Vec<String> =
        pieces.into_iter().map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned()).collect();
    if final_line && !last.is_empty() {
        lines.push(String::from_utf8_lossy(last.strip_suffix(b"\r").unwrap_or(last)).into_owned());
    }
    lines
}

/// `lines`, each followed by a newline.
pub fn text(lines: &[String]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Appends `data` to `path` (created if missing).
pub fn append(path: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(data).unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Writes `data` beside `dir` then moves it in as `dir/name`, so that it appears complete.
pub fn drop_in(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let staging = dir.parent().expect("a spool folder has a parent").join(format!(".staging-{name}"));
    std::fs::write(&staging, data).unwrap_or_else(|e| panic!("write {}: {e}", staging.display()));
    let target = dir.join(name);
    std::fs::rename(&staging, &target).unwrap_or_else(|e| panic!("move into {}: {e}", target.display()));
    target
}

/// Every complete line in the files of a FileRoll output folder (none if it does not exist).
pub fn output_lines(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    let mut lines = Vec::new();
    for p in paths {
        if let Ok(bytes) = std::fs::read(&p) {
            lines.extend(lines_of(&bytes, false));
        }
    }
    lines
}

/// Counts of each line.
pub fn multiset<S: AsRef<str>>(lines: &[S]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_ref().to_string()).or_insert(0) += 1;
    }
    m
}

/// Lines `got` lacks compared with `expected` (with how many are missing), and lines it has too
/// often (with how many too many).
pub fn differences(expected: &[String], got: &[String]) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let (want, have) = (multiset(expected), multiset(got));
    let mut missing = BTreeMap::new();
    let mut extra = BTreeMap::new();
    for (line, n) in &want {
        let h = have.get(line).copied().unwrap_or(0);
        if h < *n {
            missing.insert(line.clone(), n - h);
        }
    }
    for (line, h) in &have {
        let n = want.get(line).copied().unwrap_or(0);
        if *h > n {
            extra.insert(line.clone(), h - n);
        }
    }
    (missing, extra)
}

fn summary(what: &str, m: &BTreeMap<String, usize>) -> String {
    let total: usize = m.values().sum();
    let first: Vec<String> = m.iter().take(3).map(|(l, n)| format!("  {n} x {l:?}")).collect();
    format!("{total} lines {what}, e.g.\n{}", first.join("\n"))
}

/// Fails unless `got` holds exactly the lines of `expected`, each as often (order aside).
pub fn assert_same_lines(expected: &[String], got: &[String]) {
    let (missing, extra) = differences(expected, got);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "expected {} lines, got {}\n{}\n{}",
        expected.len(),
        got.len(),
        summary("missing", &missing),
        summary("too many", &extra)
    );
}

/// Waits (async, letting the agent run) until `dir` holds at least `n` output lines; returns them.
pub async fn wait_for_lines(dir: &Path, n: usize) -> Vec<String> {
    wait_until(&format!("{n} lines in {}", dir.display()), || {
        let lines = output_lines(dir);
        (lines.len() >= n).then_some(lines).ok_or_else(|| format!("{} lines", output_lines(dir).len()))
    })
    .await
}

/// Waits (async) until `check` answers `Ok`; fails after [`DEADLINE`] with its last `Err`.
pub async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => panic!("gave up waiting for {what}; saw {seen}"),
            Err(_) => actix_rt::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Waits (blocking the thread) until `check` answers `Ok`; fails after `timeout` with its last `Err`.
pub fn wait_blocking<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => panic!("gave up waiting for {what}; saw {seen}"),
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// A path as a RON string literal.
pub fn ron_path(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("test paths are UTF-8"))
}
