//! Signals: SIGINT drains the channels and exits 0 with the run's summary; a second signal exits
//! at once (status 130) and the durable channel still holds what was not delivered, which a
//! restarted agent then delivers.

mod support;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use support::*;

fn topology(dir: &Path, port: u16, sink_batch: usize) -> std::path::PathBuf {
    let path = dir.join("shutdown.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "shutdown",
    sources: {{
        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
               channels: ["c1"], batch_size: 1000),
    }},
    channels: {{ "c1": RocksDb(dir: "data/c1", capacity: 1000000, sync: true) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "out", sync: true), channel: "c1", batch_size: {sink_batch}) }},
)"#
        ),
    );
    path
}

#[test]
fn sigint_drains_and_exits_zero_with_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = topology(tmp.path(), port, 1000);
    let lines = loghub_lines();
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    flumen.send_acknowledged(format!("127.0.0.1:{port}").parse().unwrap(), &lines, Duration::from_secs(60));
    flumen.signal(libc::SIGINT);
    let output = flumen.child.wait_with_output_timeout(Duration::from_secs(60));
    assert_eq!(output.0, Some(0), "graceful stop exits 0");
    assert!(output.1.contains("SINK.k1"), "the summary names the sink: {}", output.1);
    let (got, _) = output_lines(&tmp.path().join("out"));
    assert!(multiset(got) == multiset(lines), "everything acknowledged was delivered before the exit");
}

#[test]
fn second_signal_exits_at_once_and_the_durable_channel_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // Slow sink: an fsync per 10 events, so most events are still in the channel at the signal.
    let path = topology(tmp.path(), port, 10);
    let lines = numbered_lines(20_000);
    let log = tmp.path().join("flumen.log");
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &log);
    flumen.send_acknowledged(format!("127.0.0.1:{port}").parse().unwrap(), &lines, Duration::from_secs(60));
    flumen.signal(libc::SIGTERM);
    wait_for(
        Duration::from_secs(30),
        || std::fs::read_to_string(&log).unwrap_or_default().contains("sinks drain their channels"),
        || "the agent did not start draining".into(),
    );
    flumen.signal(libc::SIGTERM);
    let (code, _) = flumen.child.wait_with_output_timeout(Duration::from_secs(30));
    assert_eq!(code, Some(130), "a second signal exits at once");
    let (delivered, _) = output_lines(&tmp.path().join("out"));
    eprintln!("{} of {} lines delivered before the second signal", delivered.len(), lines.len());
    assert!(delivered.len() < lines.len(), "the test needs undelivered events at the second signal");

    let again = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &log);
    wait_for(
        Duration::from_secs(120),
        || output_lines(&tmp.path().join("out")).0.len() >= lines.len(),
        || {
            format!(
                "{} of {} lines delivered after the restart",
                output_lines(&tmp.path().join("out")).0.len(),
                lines.len()
            )
        },
    );
    assert_eq!(again.terminate(Duration::from_secs(60)), Some(0));
    let (got, _) = output_lines(&tmp.path().join("out"));
    let got = multiset(got);
    assert!(lines.iter().all(|l| got.contains_key(l)), "every acknowledged line was delivered");
}

/// Waiting for a child with a deadline, collecting its stdout.
trait WaitWithTimeout {
    fn wait_with_output_timeout(&mut self, timeout: Duration) -> (Option<i32>, String);
}

impl WaitWithTimeout for std::process::Child {
    fn wait_with_output_timeout(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let mut status = None;
        wait_for(
            timeout,
            || {
                status = self.try_wait().expect("waitable child");
                status.is_some()
            },
            || format!("flumen did not exit within {timeout:?}"),
        );
        let mut out = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        (status.and_then(|s| s.code()), out)
    }
}
