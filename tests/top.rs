//! `flumen top` in a real terminal: a tmux pane 200 columns by 50 lines runs a shell, the shell
//! runs `flumen top` against an agent with two Netcat → Memory → FileRoll flows fed Loghub lines
//! at two rates. The test reads the screen with `capture-pane` until every component has a row with
//! non-zero rates, presses `i` and sees the fast flow's rows move to the top (and `n` bring the
//! name order back), presses `q` and sees top exit 0 with the terminal as it was (the alternate
//! screen left, the shell's `stty` settings unchanged). A server that is not there is shown as
//! unreachable, and top picks the agent up once it runs. tmux is required: the tests fail
//! without it (`make test` installs it).

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// A tmux server of its own (`tmux -L NAME`), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a detached 200×50 session running a plain bash.
    fn start(name: &str) -> Tmux {
        let tmux = Tmux { socket: format!("flumen-top-{name}-{}", std::process::id()) };
        let status = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "-s", "top"])
            .args(["env", "PS1=shell$ ", "bash", "--norc", "--noprofile", "-i"])
            .env_remove("TMUX")
            .status()
            .expect("tmux is required for the terminal tests of flumen top (make test installs it)");
        assert!(status.success(), "tmux could not start a session");
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux runs");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` into the pane (`Enter` and the like as tmux names them).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// The screen as text.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Polls the screen until `cond` holds; panics with the screen after the deadline.
    fn wait_screen(&self, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if cond(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A pane variable (`#{alternate_on}`, `#{pane_current_command}`).
    fn pane(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", "top", format]).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// A table row of top's screen.
#[derive(Debug)]
struct Shown {
    component: String,
    in_rate: f64,
    out_rate: f64,
}

/// The component rows on `screen`, top to bottom.
fn shown(screen: &str) -> Vec<Shown> {
    screen
        .lines()
        .filter(|l| l.starts_with("SOURCE.") || l.starts_with("CHANNEL.") || l.starts_with("SINK."))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some(Shown {
                component: cols[0].to_string(),
                in_rate: cols.get(2)?.parse().ok()?,
                out_rate: cols.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// Writes Loghub lines to a Netcat source at `lines_per_second` until `stop`.
fn feed(port: u16, lines_per_second: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let lines = loghub_lines();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the agent listens");
        let started = Instant::now();
        let mut sent = 0usize;
        while !stop.load(Ordering::SeqCst) {
            // Pace by the clock: as many lines as the rate allows by now, then a short nap.
            let due = (started.elapsed().as_secs_f64() * lines_per_second as f64) as usize;
            let mut chunk = Vec::new();
            while sent < due {
                chunk.extend_from_slice(lines[sent % lines.len()].as_bytes());
                chunk.push(b'\n');
                sent += 1;
            }
            if stream.write_all(&chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn topology(dir: &Path, slow: u16, fast: u16, monitoring: u16) -> std::path::PathBuf {
    let path = dir.join("top.ron");
    let flow = |name: &str, port: u16| {
        (
            format!(
                r#""{name}": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: false), channels: ["{name}"], batch_size: 100),"#
            ),
            format!(r#""{name}": Memory(capacity: 100000, transaction_capacity: 1000),"#),
            format!(r#""{name}": (kind: FileRoll(dir: "out-{name}"), channel: "{name}", batch_size: 100),"#),
        )
    };
    let (a, b) = (flow("a-slow", slow), flow("b-fast", fast));
    write_file(
        &path,
        &format!(
            "Topology(\n    agent: \"top\",\n    sources: {{ {} {} }},\n    channels: {{ {} {} }},\n    sinks: {{ {} {} }},\n    monitoring: Some(Http(bind: \"127.0.0.1:{monitoring}\")),\n)",
            a.0, b.0, a.1, b.1, a.2, b.2
        ),
    );
    path
}

/// The shell line that runs top and then says how it ended: its exit status and whether the
/// terminal's settings are those from before.
fn top_command(monitoring: u16) -> String {
    format!(
        r#"S=$(stty -g); {} top --url http://127.0.0.1:{monitoring}; echo "top exited $? tty-restored=$([ "$(stty -g)" = "$S" ] && echo yes || echo no)""#,
        env!("CARGO_BIN_EXE_flumen")
    )
}

const COMPONENTS: [&str; 6] =
    ["SOURCE.a-slow", "CHANNEL.a-slow", "SINK.a-slow", "SOURCE.b-fast", "CHANNEL.b-fast", "SINK.b-fast"];

#[test]
fn top_shows_every_component_live_sorts_on_keys_and_quits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (slow, fast, monitoring) = (free_port(), free_port(), free_port());
    let path = topology(tmp.path(), slow, fast, monitoring);
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    drop(flumen.connect(format!("127.0.0.1:{fast}").parse().unwrap(), DEADLINE));
    let stop = Arc::new(AtomicBool::new(false));
    let feeders = [feed(slow, 200, stop.clone()), feed(fast, 4000, stop.clone())];

    let tmux = Tmux::start("live");
    tmux.wait_screen("the shell's prompt", |s| s.contains("shell$"));
    tmux.send(&[&top_command(monitoring), "Enter"]);
    let screen = tmux.wait_screen("a row with non-zero rates for every component", |s| {
        let rows = shown(s);
        rows.len() == COMPONENTS.len()
            && COMPONENTS.iter().all(|c| rows.iter().any(|r| r.component == *c && r.in_rate > 0.0 && r.out_rate > 0.0))
    });
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "top draws on the alternate screen");
    assert!(screen.contains("[q] quit") && screen.contains("[i] in/s") && screen.contains("[n] name"), "{screen}");
    let order = |s: &str| shown(s).into_iter().map(|r| r.component).collect::<Vec<_>>();
    let by_name = ["SOURCE.a-slow", "CHANNEL.a-slow", "SINK.a-slow", "SOURCE.b-fast", "CHANNEL.b-fast", "SINK.b-fast"];
    assert_eq!(order(&screen), by_name, "sorted by name at first:\n{screen}");

    // `i`: by events per second in, highest first: the fast flow's three rows come first.
    tmux.send(&["i"]);
    let screen = tmux.wait_screen("the fast flow on top", |s| {
        let rows = shown(s);
        rows.len() == 6 && rows[..3].iter().all(|r| r.component.ends_with(".b-fast"))
    });
    let rates: Vec<f64> = shown(&screen).iter().map(|r| r.in_rate).collect();
    assert!(rates.windows(2).all(|w| w[0] >= w[1]), "in/s does not decrease down the table: {rates:?}\n{screen}");
    assert_ne!(order(&screen), by_name);

    // `n`: back to names.
    tmux.send(&["n"]);
    tmux.wait_screen("the name order again", |s| order(s) == by_name);

    tmux.send(&["q"]);
    let screen = tmux.wait_screen("top to exit", |s| s.lines().any(|l| l.starts_with("top exited ")));
    assert!(
        screen.lines().any(|l| l == "top exited 0 tty-restored=yes"),
        "top exited badly or left the terminal changed:\n{screen}"
    );
    assert_eq!(tmux.pane("#{alternate_on}"), "0", "the alternate screen was left");
    assert_eq!(tmux.pane("#{pane_current_command}"), "bash", "no top process is left in the pane");
    assert!(!screen.contains("COMPONENT"), "the table is gone from the screen:\n{screen}");

    stop.store(true, Ordering::SeqCst);
    for f in feeders {
        f.join().unwrap();
    }
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
}

#[test]
fn top_shows_an_unreachable_server_and_picks_the_agent_up_once_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (slow, fast, monitoring) = (free_port(), free_port(), free_port());
    let tmux = Tmux::start("unreachable");
    tmux.wait_screen("the shell's prompt", |s| s.contains("shell$"));
    tmux.send(&[&top_command(monitoring), "Enter"]);
    let screen = tmux.wait_screen("the server shown unreachable", |s| s.contains("UNREACHABLE"));
    assert!(screen.contains("Connection refused"), "the reason is shown:\n{screen}");
    assert!(shown(&screen).is_empty());
    assert_eq!(tmux.pane("#{alternate_on}"), "1", "top keeps running");

    let path = topology(tmp.path(), slow, fast, monitoring);
    let mut flumen = Flumen::start(&["run", "--quiet", path.to_str().unwrap()], &tmp.path().join("flumen.log"));
    drop(flumen.connect(format!("127.0.0.1:{fast}").parse().unwrap(), DEADLINE));
    let screen = tmux.wait_screen("the agent's rows", |s| !s.contains("UNREACHABLE") && shown(s).len() == 6);
    assert!(screen.contains("6 components"), "{screen}");

    tmux.send(&["q"]);
    let screen = tmux.wait_screen("top to exit", |s| s.lines().any(|l| l.starts_with("top exited ")));
    assert!(screen.lines().any(|l| l == "top exited 0 tty-restored=yes"), "{screen}");
    assert_eq!(flumen.terminate(DEADLINE), Some(0));
}

/// The negative control of the restore checks: a program that leaves the terminal raw and on the
/// alternate screen is caught by them.
#[test]
fn the_restore_checks_catch_a_program_that_leaves_the_terminal_changed() {
    let tmux = Tmux::start("control");
    tmux.wait_screen("the shell's prompt", |s| s.contains("shell$"));
    let careless = r#"S=$(stty -g); stty raw -echo; printf '\033[?1049h'; echo "top exited $? tty-restored=$([ "$(stty -g)" = "$S" ] && echo yes || echo no)""#;
    tmux.send(&[careless, "Enter"]);
    let screen = tmux.wait_screen("the careless program to end", |s| s.lines().any(|l| l.starts_with("top exited ")));
    assert!(screen.lines().any(|l| l.trim() == "top exited 0 tty-restored=no"), "{screen}");
    assert_eq!(tmux.pane("#{alternate_on}"), "1");
}

#[test]
fn top_refuses_to_run_without_a_terminal() {
    let out = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["top", "--url", "http://127.0.0.1:9"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run flumen");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not one"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.contains(&0x1b), "nothing is drawn on a pipe");
}
