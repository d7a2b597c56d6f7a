//! The `Http` sink of the real `flumen` binary posting Loghub lines over `https` to a TLS server
//! that is not flumen's code: Python's `http.server` wrapped with the `ssl` module (OpenSSL),
//! tests/peers/https_server.py. Certificates are made here with rcgen: a CA, a server certificate
//! for 127.0.0.1, one for another host name, an expired one, a client certificate, another CA.
//!
//! Every refusal is the negative control of a delivery: the same lines, the same server, one
//! setting changed, and nothing arrives while the sink logs its retries.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::pki::{Ca, Pem, Usage};
use support::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// A CA of the test and the PEM file of its certificate.
struct TestCa {
    ca: Ca,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> TestCa {
    let ca = Ca::new(&format!("{name} test CA"));
    let pem = ca.write(&dir.join(format!("{name}.pem")));
    TestCa { ca, pem }
}

/// A certificate for `names` signed by `ca`, in `dir/<name>.pem` and `.key`; `expired` makes it
/// valid only in 2020.
fn leaf(dir: &Path, name: &str, ca: &TestCa, names: &[&str], client: bool, expired: bool) -> Pem {
    ca.ca.issue_to(dir, name, name, names, if client { Usage::Client } else { Usage::Server }, expired)
}

/// The Python HTTPS server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    out: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts the server with `cert`, requiring a client certificate from `client_ca` when set,
    /// and basic auth `user:password` when set; waits until it accepts.
    fn start(dir: &Path, name: &str, cert: &Pem, client_ca: Option<&Path>, basic: Option<&str>) -> Server {
        let port = free_port();
        let out = dir.join(format!("{name}.received"));
        let log = dir.join(format!("{name}.server.log"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/https_server.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&cert.cert)
            .arg(&cert.key)
            .arg(client_ca.map_or("-".into(), |p| p.display().to_string()))
            .arg(basic.unwrap_or("-"))
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 runs (make test installs it)");
        let server = Server { child, port, out, log };
        wait_for(
            DEADLINE,
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            || format!("the HTTPS server does not listen; its log:\n{}", server.log_text()),
        );
        server
    }

    fn received(&self) -> Vec<String> {
        lines_of(&std::fs::read(&self.out).unwrap_or_default())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines sent through: the first 2,000 Loghub lines.
fn lines() -> Vec<String> {
    loghub_lines().into_iter().take(2000).collect()
}

/// Starts an agent (Netcat with acknowledgements → Memory → `Http` sink at `url` with `tls`,
/// RON) and sends it `lines` acknowledged; answers the agent and its monitoring address.
fn agent(dir: &Path, name: &str, url: &str, tls: &str, lines: &[String]) -> (Flumen, SocketAddr) {
    let port = free_port();
    let monitoring: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let topology = dir.join(format!("{name}.ron"));
    write_file(
        &topology,
        &format!(
            r#"Topology(
    agent: "{name}",
    monitoring: Some(Http(bind: "{monitoring}")),
    sources: {{ "in": (kind: Netcat(bind: "127.0.0.1:{port}", ack_every_event: true), channels: ["c"]) }},
    channels: {{ "c": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "out": (kind: Http(url: "{url}", format: Lines, timeout: "5s", max_backoff: "500ms", tls: {tls}), channel: "c", batch_size: 500) }},
)"#
        ),
    );
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    flumen.send_acknowledged(addr, lines, DEADLINE);
    (flumen, monitoring)
}

/// Waits until the server received every line of `lines`, and checks that nothing is missing or
/// doubled.
fn delivered_all(server: &Server, flumen: &Flumen, lines: &[String]) {
    wait_for(
        DEADLINE,
        || server.received().len() >= lines.len(),
        || {
            format!(
                "the server received {} of {} lines; flumen's log:\n{}\nserver's log:\n{}",
                server.received().len(),
                lines.len(),
                flumen.log_text(),
                server.log_text()
            )
        },
    );
    assert_eq!(multiset(server.received()), multiset(lines.to_vec()), "every line once");
}

/// Waits until the sink has failed `n` posts (its `ConnectionFailedCount`) and logged `why`, and
/// checks that the server received nothing.
fn refused(server: &Server, flumen: &Flumen, monitoring: SocketAddr, why: &str) {
    wait_for(
        DEADLINE,
        || {
            metric(monitoring, "SINK.out", "ConnectionFailedCount").is_some_and(|n| n >= 3)
                && flumen.log_text().contains(why)
        },
        || format!("no 3 failed posts logging {why:?}; flumen's log:\n{}", flumen.log_text()),
    );
    assert!(flumen.log_text().contains("post failed; retrying"), "{}", flumen.log_text());
    assert_eq!(server.received().len(), 0, "nothing was delivered");
}

fn tls(ca: &Path, client: Option<&Pem>, server_name: Option<&str>) -> String {
    let client = client.map_or("cert: None, key: None".into(), |p| {
        format!("cert: Some({:?}), key: Some({:?})", p.cert.display().to_string(), p.key.display().to_string())
    });
    let name = server_name.map_or("None".into(), |n| format!("Some({n:?})"));
    format!("Some(TlsClient(ca: Some({:?}), {client}, server_name: {name}))", ca.display().to_string())
}

#[test]
fn mutual_tls_delivers_every_line_and_without_a_client_certificate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ca(dir, "ca");
    let server_cert = leaf(dir, "server", &ca, &["127.0.0.1", "localhost"], false, false);
    let client = leaf(dir, "client", &ca, &["edge-1"], true, false);
    let server = Server::start(dir, "mtls", &server_cert, Some(&ca.pem), None);
    let url = format!("https://127.0.0.1:{}/", server.port);
    let lines = lines();

    // Negative control: the server requires a client certificate the sink does not have.
    let (flumen, monitoring) = agent(dir, "nocert", &url, &tls(&ca.pem, None, None), &lines);
    refused(&server, &flumen, monitoring, "post failed; retrying");
    drop(flumen);
    assert!(server.log_text().contains("handshake failed"), "the server refused the handshakes: {}", server.log_text());

    let (flumen, _) = agent(dir, "withcert", &url, &tls(&ca.pem, Some(&client), None), &lines);
    delivered_all(&server, &flumen, &lines);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ca(dir, "ca");
    let other = ca_other(dir);
    let server_cert = leaf(dir, "server", &ca, &["127.0.0.1"], false, false);
    let server = Server::start(dir, "ca", &server_cert, None, None);
    let url = format!("https://127.0.0.1:{}/", server.port);
    let lines = lines();
    let (flumen, monitoring) = agent(dir, "wrongca", &url, &tls(&other, None, None), &lines);
    refused(&server, &flumen, monitoring, "UnknownIssuer");
    drop(flumen);
    // The control: the right CA delivers.
    let (flumen, _) = agent(dir, "rightca", &url, &tls(&ca.pem, None, None), &lines);
    delivered_all(&server, &flumen, &lines);
}

fn ca_other(dir: &Path) -> PathBuf {
    ca(dir, "other").pem
}

#[test]
fn a_certificate_for_another_host_is_refused_unless_server_name_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ca(dir, "ca");
    let server_cert = leaf(dir, "collector", &ca, &["collector.example"], false, false);
    let server = Server::start(dir, "name", &server_cert, None, None);
    let url = format!("https://127.0.0.1:{}/", server.port);
    let lines = lines();
    let (flumen, monitoring) = agent(dir, "noname", &url, &tls(&ca.pem, None, None), &lines);
    refused(&server, &flumen, monitoring, "certificate not valid for name");
    drop(flumen);
    let (flumen, _) = agent(dir, "named", &url, &tls(&ca.pem, None, Some("collector.example")), &lines);
    delivered_all(&server, &flumen, &lines);
}

#[test]
fn an_expired_server_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ca(dir, "ca");
    let expired = leaf(dir, "expired", &ca, &["127.0.0.1"], false, true);
    let server = Server::start(dir, "expired", &expired, None, None);
    let url = format!("https://127.0.0.1:{}/", server.port);
    let (flumen, monitoring) = agent(dir, "expired", &url, &tls(&ca.pem, None, None), &lines());
    refused(&server, &flumen, monitoring, "certificate expired");
    // The positive side (a valid certificate from the same CA, same sink) is every other test.
}

#[test]
fn url_credentials_are_sent_as_basic_auth_and_shown_as_stars() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ca(dir, "ca");
    let server_cert = leaf(dir, "server", &ca, &["127.0.0.1"], false, false);
    let marker = "pw-9f3c1e77-marker";
    let server = Server::start(dir, "basic", &server_cert, None, Some(&format!("edge:{marker}")));
    let lines = lines();

    // Negative control: a wrong password is refused with 401 (logged with the URL, starred).
    let url = format!("https://edge:wrong-{marker}@127.0.0.1:{}/", server.port);
    let (flumen, _) = agent(dir, "wrongpw", &url, &tls(&ca.pem, None, None), &lines);
    wait_for(
        DEADLINE,
        || flumen.log_text().contains("batch refused"),
        || format!("no refused batch; log:\n{}", flumen.log_text()),
    );
    let log = flumen.log_text();
    assert!(log.contains(&format!("https://edge:***@127.0.0.1:{}/", server.port)), "the URL is logged: {log}");
    assert!(log.contains("401"), "{log}");
    assert!(!log.contains(marker), "the password is never logged: {log}");
    assert_eq!(server.received().len(), 0);
    drop(flumen);

    let url = format!("https://edge:{marker}@127.0.0.1:{}/", server.port);
    let (flumen, _) = agent(dir, "rightpw", &url, &tls(&ca.pem, None, None), &lines);
    delivered_all(&server, &flumen, &lines);
    let log_path = flumen.log.clone();
    let mut child_out = String::new();
    {
        let mut flumen = flumen;
        let stdout = flumen.child.stdout.take();
        assert_eq!(flumen.terminate(DEADLINE), Some(0));
        if let Some(mut s) = stdout {
            use std::io::Read;
            s.read_to_string(&mut child_out).unwrap();
        }
    }
    assert!(child_out.contains("https://edge:***@127.0.0.1"), "the summary names the sink's URL: {child_out}");
    assert!(!child_out.contains(marker), "the summary does not show the password: {child_out}");
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(!log.contains(marker), "{log}");

    let validate = Command::new(env!("CARGO_BIN_EXE_flumen"))
        .args(["validate", dir.join("rightpw.ron").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(validate.status.success(), "{validate:?}");
    let shown = format!("{}{}", String::from_utf8_lossy(&validate.stdout), String::from_utf8_lossy(&validate.stderr));
    assert!(!shown.contains(marker), "{shown}");
}

/// A client certificate renewed on disk is used without a restart: the sink starts with a
/// certificate of another CA, which the server refuses (the control: nothing is delivered while
/// it is in place); then the files are replaced, as a renewal tool does (a new file renamed over
/// each), by a certificate of the server's CA, and every line arrives, once, with the sink never
/// restarted.
#[test]
fn a_renewed_client_certificate_is_used_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ca(dir, "ca");
    let other = self::ca(dir, "other");
    let server_cert = leaf(dir, "server", &ca, &["127.0.0.1", "localhost"], false, false);
    let renewed = leaf(dir, "renewed", &ca, &["edge-1"], true, false);
    let client = leaf(dir, "client", &other, &["edge-1"], true, false);
    let server = Server::start(dir, "renew", &server_cert, Some(&ca.pem), None);
    let url = format!("https://127.0.0.1:{}/", server.port);
    let lines = lines();

    let (flumen, monitoring) = agent(dir, "renew", &url, &tls(&ca.pem, Some(&client), None), &lines);
    refused(&server, &flumen, monitoring, "post failed; retrying");
    std::fs::rename(&renewed.key, &client.key).unwrap();
    std::fs::rename(&renewed.cert, &client.cert).unwrap();
    delivered_all(&server, &flumen, &lines);
    assert!(flumen.log_text().contains("tls files changed: re-read"), "{}", flumen.log_text());
    assert_eq!(metric(monitoring, "SINK.out", "RestartCount"), Some(0), "the sink was not restarted");
}
