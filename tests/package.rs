//! The service protocol and the Debian package.
//!
//! * `flumen run` with `NOTIFY_SOCKET` (a real unix datagram socket the test listens on, as
//!   systemd's): `READY=1` once the agent started (its monitoring answers at once), `STOPPING=1`
//!   on SIGTERM, `RELOADING=1` then `READY=1` again around a SIGHUP reload. Negative control: an agent whose start fails (its monitoring address is taken)
//!   sends no `READY=1`. A `NOTIFY_SOCKET` nobody listens on is logged and changes nothing else.
//! * The package: `cargo deb --no-build` packs the release binary these tests run, `dpkg -i`
//!   installs it on this machine, `systemd-analyze verify` checks its unit (negative control: a
//!   misspelt key is reported) and `systemd-analyze security --offline` its sandbox (negative
//!   control: the unit without its sandbox lines exceeds the threshold), the postinst created the
//!   system user `flumen`; the unit's own `ExecStart` runs, as its `User=` in its
//!   `WorkingDirectory=` with `NOTIFY_SOCKET` set (what systemd would do; no systemd runs as PID 1
//!   on the test machines), the shipped example topology with its ports and state directory moved
//!   to the test's, and delivers real Loghub lines; `dpkg --purge` removes it, binary and unit.
//!
//! The package test needs root, dpkg, systemd-analyze, setpriv and cargo-deb (`make test`
//! installs them) and fails, never skips, without them. It installs and purges the package
//! `flumen` system-wide, so it refuses to run where that package is installed already.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The listening end of a `NOTIFY_SOCKET`, as systemd's.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every datagram received so far, in order.
    got: Vec<String>,
}

impl NotifySocket {
    /// Binds `path`, writable by any user (the agent may run as another one).
    fn bind(path: &Path) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        NotifySocket { sock, path: path.to_path_buf(), got: Vec::new() }
    }

    fn read_pending(&mut self) {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    /// Every `KEY=VALUE` line received, in order.
    fn lines(&self) -> Vec<&str> {
        self.got.iter().flat_map(|d| d.lines()).collect()
    }

    /// Reads until a datagram holding the line `want` arrived; panics when `agent` exits first or
    /// after `timeout`.
    fn wait_for(&mut self, want: &str, timeout: Duration, agent: &mut Flumen) {
        let deadline = Instant::now() + timeout;
        loop {
            self.read_pending();
            if self.lines().contains(&want) {
                return;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                self.read_pending();
                if self.lines().contains(&want) {
                    return;
                }
                panic!("flumen exited ({status}) before {want}; received {:?}; log:\n{}", self.got, agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no {want} within {timeout:?}; received {:?}; log:\n{}",
                self.got,
                agent.log_text()
            );
        }
    }
}

/// A Netcat → Memory → FileRoll topology with monitoring.
fn topology(tmp: &Path, port: u16, monitoring: u16) -> PathBuf {
    let path = tmp.join("notify.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "notify",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "{}", roll_interval: "0s"), channel: "c1") }},
    monitoring: Some(Http(bind: "127.0.0.1:{monitoring}")),
)"#,
            tmp.join("out").display()
        ),
    );
    path
}

fn addr(port: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Starts `program args` with `NOTIFY_SOCKET=notify` (when given), stderr in `log`.
fn spawn(
    program: &str,
    args: &[&str],
    notify: Option<&Path>,
    dir: Option<&Path>,
    env: &[(String, String)],
    log: &Path,
) -> Flumen {
    let err = std::fs::File::create(log).unwrap();
    let mut c = Command::new(program);
    c.args(args).env("FLUMEN_LOG", "info").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(n) = notify {
        c.env("NOTIFY_SOCKET", n);
    } else {
        c.env_remove("NOTIFY_SOCKET");
    }
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let child = c.spawn().unwrap_or_else(|e| panic!("start {program}: {e}"));
    Flumen { child, log: log.to_path_buf() }
}

/// Waits up to `timeout` for the process to exit; answers its code.
fn exit_code(agent: &mut Flumen, timeout: Duration) -> Option<i32> {
    let mut status = None;
    let log = agent.log.clone();
    wait_for(
        timeout,
        || {
            status = agent.child.try_wait().unwrap();
            status.is_some()
        },
        || format!("flumen did not exit; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
    );
    status.and_then(|s| s.code())
}

/// Runs the agent (`program prefix... run TOPOLOGY`, or the command `argv`) under
/// `NOTIFY_SOCKET`, checks `READY=1` (monitoring answering at once), delivers `lines` through its
/// Netcat source into `out`, stops it with SIGTERM and checks `STOPPING=1`. Answers the datagrams.
#[allow(clippy::too_many_arguments)]
fn notified_run(
    argv: &[&str],
    dir: Option<&Path>,
    env: &[(String, String)],
    notify: &mut NotifySocket,
    port: u16,
    monitoring: u16,
    out: &Path,
    lines: &[String],
    log: &Path,
) -> Flumen {
    let mut agent = spawn(argv[0], &argv[1..], Some(&notify.path.clone()), dir, env, log);
    notify.wait_for("READY=1", Duration::from_secs(60), &mut agent);
    // READY=1 follows the start: the monitoring server answers at once, without a retry.
    assert!(
        metric(addr(monitoring), "CHANNEL.c1", "ChannelCapacity").is_some()
            || metric(addr(monitoring), "CHANNEL.durable", "ChannelCapacity").is_some(),
        "the monitoring answers once READY=1 arrived; log:\n{}",
        agent.log_text()
    );
    assert!(!notify.lines().contains(&"STOPPING=1"), "no STOPPING=1 before the stop: {:?}", notify.got);
    agent.send_acknowledged(addr(port), lines, Duration::from_secs(60));
    wait_for(
        Duration::from_secs(60),
        || output_lines(out).0.len() >= lines.len(),
        || format!("{} lines in {}: {}", lines.len(), out.display(), output_lines(out).0.len()),
    );
    // A reload (what `systemctl reload` sends): RELOADING=1, then READY=1 again once applied.
    agent.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(60), &mut agent);
    wait_for(
        Duration::from_secs(60),
        || {
            notify.read_pending();
            notify.lines().iter().filter(|x| **x == "READY=1").count() == 2
        },
        || "no second READY=1 after the reload".to_string(),
    );
    agent.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(60), &mut agent);
    assert_eq!(exit_code(&mut agent, Duration::from_secs(60)), Some(0), "log:\n{}", agent.log_text());
    notify.read_pending();
    let l = notify.lines();
    let ready: Vec<usize> = l.iter().enumerate().filter(|(_, x)| **x == "READY=1").map(|(i, _)| i).collect();
    let stopping = l.iter().position(|x| *x == "STOPPING=1").unwrap();
    let reloading = l.iter().position(|x| *x == "RELOADING=1").unwrap();
    assert_eq!(ready.len(), 2, "READY=1 at the start and after the reload: {l:?}");
    assert!(
        ready[0] < reloading && reloading < ready[1] && ready[1] < stopping,
        "READY, RELOADING, READY, STOPPING: {l:?}"
    );
    assert!(l.contains(&"STATUS=running") && l.contains(&"STATUS=stopping"), "{l:?}");
    let delivered = multiset(output_lines(out).0);
    assert!(delivered == multiset(lines.to_vec()), "every line delivered once");
    agent
}

#[test]
fn the_agent_tells_its_notify_socket_ready_once_started_and_stopping_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_flumen");
    let lines: Vec<String> = numbered_lines(500);
    let (port, monitoring) = (free_port(), free_port());
    let topo = topology(tmp.path(), port, monitoring);
    let mut notify = NotifySocket::bind(&tmp.path().join("notify.sock"));
    let t = topo.to_str().unwrap();
    notified_run(
        &[bin, "run", "--quiet", t],
        None,
        &[],
        &mut notify,
        port,
        monitoring,
        &tmp.path().join("out"),
        &lines,
        &tmp.path().join("run.log"),
    );
    eprintln!("datagrams: {:?}", notify.got);

    // Negative control: a start that fails (the monitoring address is taken) sends no READY=1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let failing = topology(tmp.path(), free_port(), taken_port);
    let mut control = NotifySocket::bind(&tmp.path().join("control.sock"));
    let log = tmp.path().join("control.log");
    let mut agent =
        spawn(bin, &["run", "--quiet", failing.to_str().unwrap()], Some(&control.path.clone()), None, &[], &log);
    assert_eq!(exit_code(&mut agent, Duration::from_secs(60)), Some(1), "the start fails: {}", agent.log_text());
    control.read_pending();
    assert!(!control.lines().contains(&"READY=1"), "no READY=1 from a failed start: {:?}", control.got);
    drop(taken);

    // A NOTIFY_SOCKET nobody listens on: logged, and the agent runs as without one.
    let (port, monitoring) = (free_port(), free_port());
    let topo = topology(tmp.path(), port, monitoring);
    std::fs::remove_dir_all(tmp.path().join("out")).unwrap();
    let log = tmp.path().join("nobody.log");
    let mut agent =
        spawn(bin, &["run", "--quiet", topo.to_str().unwrap()], Some(&tmp.path().join("nobody.sock")), None, &[], &log);
    agent.send_acknowledged(addr(port), &lines[..10], Duration::from_secs(60));
    assert_eq!(agent.terminate(Duration::from_secs(60)), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cannot tell the service manager READY=1"), "{text}");
    assert_eq!(output_lines(&tmp.path().join("out")).0.len(), 10);
}

/// Runs a command to its end.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("this test needs {program} (make test installs it): {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} exited {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", "flumen"]).stdout.starts_with(b"install ok installed")
}

/// The `[Service]` settings of a unit file (the last value of each key).
fn service_settings(unit: &str) -> BTreeMap<String, String> {
    let mut section = "";
    let mut out = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    out
}

/// Purges the package when dropped, also when the test fails.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let _ = run("dpkg", &["--purge", "flumen"]);
        }
    }
}

#[test]
fn the_package_installs_its_unit_and_user_runs_the_example_and_purges() {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test installs a Debian package: it needs root (CI runs as root)");
    assert!(
        !installed(),
        "the package flumen is installed on this machine; this test installs and purges it: remove it first"
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A user `flumen` left by an earlier run (a purge keeps it): removed, so that this run sees
    // the postinst create it.
    if run("getent", &["passwd", "flumen"]).status.success() {
        run_ok("userdel", &["flumen"]);
    }
    let _ = run("groupdel", &["flumen"]);

    // Build the package from the release binary these tests run.
    let bin = Path::new(env!("CARGO_BIN_EXE_flumen"));
    let target = bin.parent().and_then(Path::parent).expect("the binary is in <target>/release/");
    let debs = tmp.path().join("debs");
    let built = Command::new("cargo")
        .args(["deb", "--no-build", "--strip", "--output"])
        .arg(&debs)
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "cargo deb (make test installs cargo-deb) failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = std::fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    eprintln!("{}: {} bytes", deb.display(), std::fs::metadata(&deb).unwrap().len());

    let _purge = Purge;
    let out = run_ok("dpkg", &["-i", deb.to_str().unwrap()]);
    eprintln!("{out}");
    assert!(!out.to_lowercase().contains("warning"), "dpkg -i without warnings:\n{out}");
    assert!(installed());
    for f in ["/usr/bin/flumen", "/lib/systemd/system/flumen@.service", "/etc/flumen/example.ron"] {
        assert!(Path::new(f).is_file(), "{f} installed");
    }
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", "flumen"]);
    assert!(conffiles.contains("/etc/flumen/example.ron"), "the example is a conffile: {conffiles}");

    // The system user.
    let passwd = run_ok("getent", &["passwd", "flumen"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/flumen", "{passwd}");
    assert!(fields[6].ends_with("nologin"), "no login shell: {passwd}");
    let gid: u32 = run_ok("getent", &["group", "flumen"]).trim().split(':').nth(2).unwrap().parse().unwrap();

    // The unit: systemd's own checks, each with a negative control.
    let unit_path = Path::new("/lib/systemd/system/flumen@.service");
    let verify = run("systemd-analyze", &["verify", "flumen@example.service"]);
    let said = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify is silent:\n{said}");
    let unit = std::fs::read_to_string(unit_path).unwrap();
    let broken_dir = tmp.path().join("broken");
    std::fs::create_dir_all(&broken_dir).unwrap();
    let broken = broken_dir.join("flumen@.service");
    std::fs::write(&broken, unit.replace("ProtectSystem=strict", "ProtectSystm=strict")).unwrap();
    let control = run("systemd-analyze", &["verify", broken.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&control.stderr).contains("Unknown key 'ProtectSystm'"),
        "negative control: verify reports a misspelt key: {control:?}"
    );
    let security =
        run("systemd-analyze", &["security", "--offline=true", "--threshold=20", unit_path.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("").to_string();
    eprintln!("{exposure}");
    assert!(security.status.success(), "the sandbox keeps the exposure at 2.0 or less: {exposure}\n{report}");
    let unsandboxed = unit.split("# Sandbox").next().unwrap();
    std::fs::write(&broken, unsandboxed).unwrap();
    let control = run("systemd-analyze", &["security", "--offline=true", "--threshold=20", broken.to_str().unwrap()]);
    assert!(!control.status.success(), "negative control: without its sandbox the unit exceeds the threshold");

    // The unit's own command, as its user, in its state directory, on the shipped example with
    // the test's ports and an instance of its own.
    let settings = service_settings(&unit);
    assert_eq!(settings.get("Type").map(String::as_str), Some("notify"));
    assert_eq!(settings.get("ExecReload").map(String::as_str), Some("/bin/kill -HUP $MAINPID"));
    let instance = format!("pkgtest{}", std::process::id());
    let expand = |s: &str| s.replace("%i", &instance);
    let state = Path::new("/var/lib").join(expand(&settings["StateDirectory"]));
    assert_eq!(expand(&settings["WorkingDirectory"]), state.to_str().unwrap());
    let example = std::fs::read_to_string("/etc/flumen/example.ron").unwrap();
    let (port, monitoring) = (free_port(), free_port());
    for needle in ["127.0.0.1:44444", "127.0.0.1:41414", "/var/lib/flumen/example/"] {
        assert!(example.contains(needle), "the example uses {needle}");
    }
    let topology = example
        .replace("127.0.0.1:44444", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:41414", &format!("127.0.0.1:{monitoring}"))
        .replace("/var/lib/flumen/example/", &format!("{}/", state.display()));
    let config = PathBuf::from(format!("/etc/flumen/{instance}.ron"));
    std::fs::write(&config, topology).unwrap();
    run_ok("/usr/bin/flumen", &["validate", "/etc/flumen/example.ron"]);
    // As systemd's StateDirectory= does: the directory, owned by the unit's user.
    let lib_existed = Path::new("/var/lib/flumen").exists();
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    let user = settings["User"].clone();
    let group = settings["Group"].clone();
    assert_eq!((user.as_str(), group.as_str()), ("flumen", "flumen"));
    let exec = expand(&settings["ExecStart"]);
    let mut argv = vec![
        "setpriv".to_string(),
        format!("--reuid={user}"),
        format!("--regid={group}"),
        "--init-groups".into(),
        "--".into(),
    ];
    argv.extend(exec.split_whitespace().map(String::from));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let env: Vec<(String, String)> = settings
        .get("Environment")
        .map(|e| e.split_whitespace().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect())
        .unwrap_or_default();
    let mut notify = NotifySocket::bind(&tmp.path().join("notify.sock"));
    let lines = numbered_lines(2000);
    let agent = notified_run(
        &argv,
        Some(&state),
        &env,
        &mut notify,
        port,
        monitoring,
        &state.join("archive"),
        &lines,
        &tmp.path().join("service.log"),
    );
    eprintln!("datagrams: {:?}", notify.got);
    let log = agent.log_text();
    assert!(log.contains("agent started"), "{log}");
    // It ran as `flumen`: what it wrote belongs to the user.
    use std::os::unix::fs::MetadataExt;
    for f in files_under(&state) {
        assert_eq!(std::fs::metadata(&f).unwrap().uid(), uid, "{} written by flumen", f.display());
    }
    assert!(!files_under(&state.join("durable")).is_empty(), "the RocksDb channel is in the state directory");
    std::fs::remove_file(&config).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
    if !lib_existed {
        let _ = std::fs::remove_dir("/var/lib/flumen");
    }

    // Purge: binary, unit and conffile go; the user stays (a purge keeps what owns the state).
    run_ok("dpkg", &["--purge", "flumen"]);
    assert!(!installed());
    for f in ["/usr/bin/flumen", "/lib/systemd/system/flumen@.service", "/etc/flumen/example.ron"] {
        assert!(!Path::new(f).exists(), "{f} removed by the purge");
    }
    assert!(run("getent", &["passwd", "flumen"]).status.success(), "the user flumen is kept");
}
