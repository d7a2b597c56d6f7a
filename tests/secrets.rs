//! Secrets of the real `flumen` binary: bearer tokens from a file and from an environment
//! variable are used (an `Http` sink authenticates to an `Http` source with them) and never shown:
//! not in the agent's log, not by `flumen validate`, not in `/metrics` or `/metrics/prometheus`,
//! not in the run summary. A reference that does not resolve is a topology error at the option,
//! naming the variable or the file.
//!
//! The negative control of every "never shown": a canary line posted through the same agent
//! reaches the `Logger` sink and so the log, and the same grep finds it there.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const DEADLINE: Duration = Duration::from_secs(60);
const FILE_TOKEN: &str = "tok-file-5b0e2d41-marker";
const ENV_TOKEN: &str = "tok-env-c8a1f9e3-marker";
const ENV_NAME: &str = "FLUMEN_TEST_HOP_TOKEN";

/// The topology: `front` (Http, token from a file) → c1 → `hop` (Http sink, token from the
/// environment) → `back` (Http, the same environment token) → c2 → `log` (Logger).
fn topology(front: u16, back: u16, monitoring: u16, front_token: &str) -> String {
    format!(
        r#"Topology(
    agent: "secrets",
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
    sources: {{
        "front": (kind: Http(bind: "127.0.0.1:{front}", format: Lines, bearer_token: Some("{front_token}")), channels: ["c1"]),
        "back": (kind: Http(bind: "127.0.0.1:{back}", bearer_token: Some("env:{ENV_NAME}")), channels: ["c2"]),
    }},
    channels: {{
        "c1": Memory(capacity: 1000, transaction_capacity: 1000),
        "c2": Memory(capacity: 1000, transaction_capacity: 1000),
    }},
    sinks: {{
        "hop": (kind: Http(url: "http://127.0.0.1:{back}/", bearer_token: Some("env:{ENV_NAME}"), max_backoff: "200ms"), channel: "c1", batch_size: 100),
        "log": (kind: Logger(max_body_bytes: 200), channel: "c2", batch_size: 100),
    }},
)"#
    )
}

fn validate(topology: &Path, env: Option<&str>) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flumen"));
    c.args(["validate", topology.to_str().unwrap()]);
    match env {
        Some(v) => c.env(ENV_NAME, v),
        None => c.env_remove(ENV_NAME),
    };
    let out = c.output().expect("run flumen validate");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Line and column (1-based) of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the topology"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

#[test]
fn tokens_from_a_file_and_the_environment_work_and_are_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("front.token"), format!("{FILE_TOKEN}\n")).unwrap();
    let (front, back, monitoring) = (free_port(), free_port(), free_port());
    let text = topology(front, back, monitoring, "file:front.token");
    let path = dir.join("secrets.ron");
    write_file(&path, &text);

    let (ok, shown) = validate(&path, Some(ENV_TOKEN));
    assert!(ok, "{shown}");
    assert!(!shown.contains(FILE_TOKEN) && !shown.contains(ENV_TOKEN), "validate shows no secret: {shown}");

    let log = dir.join("agent.log");
    let err = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["run", path.to_str().unwrap()])
        .env("FLUMEN_LOG", "debug")
        .env(ENV_NAME, ENV_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let front_url = format!("http://127.0.0.1:{front}/");
    wait_for(DEADLINE, || std::net::TcpStream::connect(("127.0.0.1", front)).is_ok(), log_text);

    // Without the token, or with the environment's token in place of the file's: refused.
    let (code, _) = curl(&["--data-binary", "refused line\n", &front_url]);
    assert_eq!(code, 401);
    let (code, _) = curl(&["-H", &format!("Authorization: Bearer {ENV_TOKEN}"), "--data-binary", "x\n", &front_url]);
    assert_eq!(code, 401);

    // With the file's token the lines go in, and the hop authenticates to `back` with the
    // environment's token: the canary reaches the Logger sink, in the log.
    let canary = "canary-line-0d9b7c55";
    let lines: Vec<String> = loghub_lines().into_iter().take(50).chain([canary.to_string()]).collect();
    let (code, body) = curl(&[
        "-H",
        &format!("Authorization: Bearer {FILE_TOKEN}"),
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        &format!("{}\n", lines.join("\n")),
        &front_url,
    ]);
    assert_eq!(code, 200, "{body}");
    wait_for(DEADLINE, || log_text().contains(canary), || format!("the canary did not reach the log:\n{}", log_text()));

    let monitoring_addr: SocketAddr = format!("127.0.0.1:{monitoring}").parse().unwrap();
    assert_eq!(metric(monitoring_addr, "SINK.log", "EventDrainSuccessCount"), Some(lines.len() as u64));
    for endpoint in ["metrics", "metrics/prometheus"] {
        let (code, body) = curl(&[&format!("http://127.0.0.1:{monitoring}/{endpoint}")]);
        assert_eq!(code, 200);
        assert!(body.contains("hop"), "/{endpoint} shows the sink: {body}");
        assert!(!body.contains(FILE_TOKEN) && !body.contains(ENV_TOKEN), "/{endpoint}: {body}");
    }

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("hop"), "the summary lists the sinks: {summary}");
    assert!(!summary.contains(FILE_TOKEN) && !summary.contains(ENV_TOKEN), "{summary}");
    let log = log_text();
    assert!(log.contains(canary), "the grep sees what the agent logs");
    assert!(!log.contains(FILE_TOKEN), "the file's token is never logged:\n{log}");
    assert!(!log.contains(ENV_TOKEN), "the environment's token is never logged:\n{log}");
}

#[test]
fn a_reference_that_does_not_resolve_is_an_error_at_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = topology(free_port(), free_port(), free_port(), "file:missing.token");
    let path = dir.join("bad.ron");
    write_file(&path, &text);
    let (ok, shown) = validate(&path, None);
    assert!(!ok, "{shown}");
    let (line, col) = position(&text, "Some(\"file:missing.token\")");
    let expected = format!(
        "{}:{line}:{col}: source \"front\": bearer_token: cannot read secret file {}",
        path.display(),
        dir.join("missing.token").display()
    );
    assert!(shown.contains(&expected), "{expected}\nin:\n{shown}");
    let (line, col) = position(&text, &format!("Some(\"env:{ENV_NAME}\")"));
    let expected = format!(
        "{}:{line}:{col}: source \"back\": bearer_token: environment variable {ENV_NAME} is not set",
        path.display()
    );
    assert!(shown.contains(&expected), "{expected}\nin:\n{shown}");
    assert!(
        shown.contains(&format!("sink \"hop\": bearer_token: environment variable {ENV_NAME} is not set")),
        "{shown}"
    );

    // The same file with the file and the variable present is valid (the errors came from them).
    std::fs::write(dir.join("missing.token"), "t0ken\n").unwrap();
    let (ok, shown) = validate(&path, Some("set"));
    assert!(ok, "{shown}");
}
