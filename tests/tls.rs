//! TLS and mutual TLS on the sources of the real `flumen` binary, against real TLS peers:
//! `curl` against `Http`, `openssl s_client` against `Netcat`, rsyslog (`omfwd` with the gtls and
//! the ossl network stream driver) and syslog-ng (`syslog(... transport("tls"))`) sending RFC 5425
//! into `SyslogTcp`. Certificates are made here with rcgen: a CA, a server certificate for
//! 127.0.0.1 and localhost, a client certificate, one from another CA, an expired one and one for
//! another host name. Certificate reload: on SIGHUP and on a change of the files, with a
//! connection open across it.
//!
//! Every peer is needed: a test whose tool is missing fails (`make test` installs rsyslog,
//! rsyslog-gnutls, rsyslog-openssl, openssl and curl; syslog-ng is unpacked by
//! tests/peers/syslog-ng.sh, which the test runs).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::pki::{Ca, Usage};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// The PEM files of a test, in its folder: `ca.pem`; `server.pem`/`.key` (CN "flumen server one",
/// for 127.0.0.1 and localhost); `client.pem`/`.key` (CN "edge-1"); `other-client.pem`/`.key`
/// (CN "intruder", from another CA); `expired.pem`/`.key`; `wronghost.pem`/`.key` (for
/// wrong.example only).
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca = Ca::new("flumen test CA");
        let other = Ca::new("another CA");
        let pki = Pki { dir: dir.to_path_buf(), ca };
        pki.ca.write(&dir.join("ca.pem"));
        pki.write("server", &pki.ca.issue("flumen server one", SERVER_NAMES, Usage::Server, false));
        pki.write("client", &pki.ca.issue("edge-1", &[], Usage::Client, false));
        pki.write("other-client", &other.issue("intruder", &[], Usage::Client, false));
        pki.write("expired", &pki.ca.issue("flumen server expired", SERVER_NAMES, Usage::Server, true));
        pki.write("wronghost", &pki.ca.issue("wrong host", &["wrong.example"], Usage::Server, false));
        pki
    }

    fn write(&self, name: &str, (cert, key): &(String, String)) {
        write_file(&self.dir.join(format!("{name}.pem")), cert);
        write_file(&self.dir.join(format!("{name}.key")), key);
    }

    /// Replaces file `name` by renaming a new one over it (as deployment tools do).
    fn replace(&self, name: &str, text: &str) {
        let tmp = self.dir.join(format!(".{name}.new"));
        write_file(&tmp, text);
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().expect("UTF-8 temp path").to_string()
    }
}

/// A topology in `dir` with `sources` (RON map entries) putting into channels "bodies" (to a
/// `FileRoll` sink in `out/bodies`) and "headers" (to a `Logger` sink), monitoring on
/// `metrics_port`.
fn topology(dir: &Path, sources: &str, metrics_port: u16) -> PathBuf {
    let path = dir.join("tls.ron");
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "tls",
    monitoring: Some(Http(bind: "127.0.0.1:{metrics_port}")),
    sources: {{
{sources}
    }},
    channels: {{
        "bodies": Memory(capacity: 50000, transaction_capacity: 1000),
        "headers": Memory(capacity: 50000, transaction_capacity: 1000),
    }},
    sinks: {{
        "k1": (kind: FileRoll(dir: "out/bodies", roll_interval: "0s"), channel: "bodies"),
        "k2": (kind: Logger(max_body_bytes: 0), channel: "headers"),
    }},
)"#
        ),
    );
    path
}

fn start(topology: &Path, dir: &Path) -> Flumen {
    Flumen::start(&["run", topology.to_str().unwrap()], &dir.join("flumen.log"))
}

/// The headers of every event the `Logger` sink showed, as `{"key": "value", ...}`.
fn logged_headers(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let start = l.find("Event: { headers:{")? + "Event: { headers:".len();
            let end = l.rfind("} body:")?;
            Some(l[start..=end].to_string())
        })
        .collect()
}

/// The value of `key` in headers shown as `{"key": "value", ...}`.
fn header<'a>(shown: &'a str, key: &str) -> Option<&'a str> {
    let at = shown.find(&format!("\"{key}\": \""))? + key.len() + 5;
    shown[at..].split('"').next()
}

fn wait_for_lines(flumen: &Flumen, dir: &Path, n: usize) {
    wait_for_output_lines(flumen, dir, n, WAIT);
}

/// Waits until the agent's log says `what`.
fn wait_for_log(flumen: &Flumen, what: &str) {
    wait_for_log_line(flumen, what, WAIT);
}

fn wait_for_metric(flumen: &Flumen, monitoring: SocketAddr, name: &str, at_least: u64) {
    wait_for(
        WAIT,
        || metric(monitoring, "SOURCE.r1", name).is_some_and(|v| v >= at_least),
        || {
            format!(
                "{name} is {:?}, not {at_least}; log:\n{}",
                metric(monitoring, "SOURCE.r1", name),
                flumen.log_text()
            )
        },
    );
}

/// The lines of one Loghub sample, CR removed.
fn sample(name: &str) -> Vec<String> {
    lines_of(&std::fs::read(loghub_dir().join(name)).expect("the Loghub samples are in the repository"))
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "30"]).args(args).output().expect("run curl (apt package curl)")
}

fn tls_option(pki: &Pki, cert: &str, client_ca: bool) -> String {
    tls_option_timeout(pki, cert, client_ca, "5s")
}

fn tls_option_timeout(pki: &Pki, cert: &str, client_ca: bool, timeout: &str) -> String {
    let ca = if client_ca {
        format!(r#"client_ca: Some("{}"), client_subject_header: Some("tls_subject"), "#, pki.path("ca.pem"))
    } else {
        String::new()
    };
    format!(
        r#"tls: Some(TlsServer(cert: "{}", key: "{}", {ca}handshake_timeout: "{timeout}"))"#,
        pki.path(&format!("{cert}.pem")),
        pki.path(&format!("{cert}.key"))
    )
}

#[test]
fn curl_with_mutual_tls_against_http() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (port, wrong_port, metrics_port) = (free_port(), free_port(), free_port());
    let sources = format!(
        r#"        "r1": (kind: Http(bind: "127.0.0.1:{port}", {}), channels: ["bodies", "headers"]),
        "r2": (kind: Http(bind: "127.0.0.1:{wrong_port}", {}), channels: ["bodies"]),"#,
        tls_option(&pki, "server", true),
        tls_option(&pki, "wronghost", false),
    );
    let topology = topology(tmp.path(), &sources, metrics_port);
    let flumen = start(&topology, tmp.path());
    wait_for_log(&flumen, "listening for HTTP posts");

    let lines = sample("Apache_2k.log");
    let body = tmp.path().join("lines.txt");
    std::fs::write(&body, joined(&lines)).unwrap();
    let url = format!("https://127.0.0.1:{port}/");
    let (ca, data) = (pki.path("ca.pem"), format!("@{}", body.display()));
    let post = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-H", "Content-Type: text/plain", "--data-binary", &data, &url]);
        curl(&args)
    };
    let (client, client_key) = (pki.path("client.pem"), pki.path("client.key"));
    let (other, other_key) = (pki.path("other-client.pem"), pki.path("other-client.key"));

    // Accepted: the client certificate chains to client_ca.
    let ok = post(&["--fail", "--cert", &client, "--key", &client_key]);
    assert!(ok.status.success(), "curl with the client certificate: {}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), format!("{{\"accepted\":{}}}", lines.len()));
    // Refused: no client certificate, and one from another CA.
    let none = post(&[]);
    assert!(!none.status.success(), "a request without a client certificate was answered");
    let foreign = post(&["--cert", &other, "--key", &other_key]);
    assert!(!foreign.status.success(), "a request with a certificate from another CA was answered");
    let monitoring = addr(metrics_port);
    wait_for_metric(&flumen, monitoring, "TlsHandshakeFailureCount", 1);

    // A forged subject header in the body is replaced by the certificate's.
    let forged = tmp.path().join("forged.json");
    std::fs::write(&forged, r#"[{"headers": {"tls_subject": "CN=forged"}, "body": "forged subject"}]"#).unwrap();
    let json = curl(&[
        "--fail",
        "--cacert",
        &pki.path("ca.pem"),
        "--cert",
        &client,
        "--key",
        &client_key,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", forged.display()),
        &url,
    ]);
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));

    // curl refuses a server certificate for another host name (exit 60: peer certificate not
    // OK); the same certificate is accepted under its own name (--resolve), so the name is why.
    let wrong = curl(&[
        "--cacert",
        &pki.path("ca.pem"),
        "--data-binary",
        "wrong host",
        &format!("https://127.0.0.1:{wrong_port}/"),
    ]);
    assert_eq!(wrong.status.code(), Some(60), "curl accepted a certificate for another host name: {wrong:?}");
    let resolve = format!("wrong.example:{wrong_port}:127.0.0.1");
    let right = curl(&[
        "--fail",
        "--cacert",
        &pki.path("ca.pem"),
        "--resolve",
        &resolve,
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        "control: the certificate's own host name",
        &format!("https://wrong.example:{wrong_port}/"),
    ]);
    assert!(right.status.success(), "the wrong-host certificate under its own name: {right:?}");

    let bodies = tmp.path().join("out/bodies");
    let all = lines.len() + 2;
    wait_for_lines(&flumen, &bodies, all);
    let mut want = lines.clone();
    want.push("forged subject".into());
    want.push("control: the certificate's own host name".into());
    assert!(multiset(output_lines(&bodies).0) == multiset(want), "the bodies are the posted lines, once each");

    let shown_all = lines.len() + 1;
    wait_for(
        WAIT,
        || logged_headers(&flumen.log_text()).len() >= shown_all,
        || format!("the Logger sink showed {} of {shown_all} events", logged_headers(&flumen.log_text()).len()),
    );
    for shown in logged_headers(&flumen.log_text()) {
        let subject = header(&shown, "tls_subject").unwrap_or_else(|| panic!("no tls_subject in {shown}"));
        assert!(subject.contains("CN=edge-1") && !subject.contains("forged"), "tls_subject {subject:?} in {shown}");
    }
    assert_eq!(metric(monitoring, "SOURCE.r1", "EventAcceptedCount"), Some(shown_all as u64));
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn an_expired_certificate_is_a_topology_error_at_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let sources = format!(
        r#"        "r1": (kind: Netcat(bind: "127.0.0.1:{}", {}), channels: ["bodies", "headers"]),"#,
        free_port(),
        tls_option(&pki, "expired", false)
    );
    let topology = topology(tmp.path(), &sources, free_port());
    let text = std::fs::read_to_string(&topology).unwrap();
    let (line, col) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            let tls = l.find("tls: ")?;
            l[tls..].find("cert: ").map(|c| (i + 1, tls + c + 1 + "cert: ".len()))
        })
        .expect("the tls option's cert is in the topology");
    let out = Command::new(env!("CARGO_BIN_EXE_flumen")).arg("validate").arg(&topology).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an expired certificate validated:\n{stderr}");
    // At the `cert` of the `tls` option.
    let at = format!("{}:{line}:{col}: ", topology.display());
    assert!(
        stderr.lines().any(|l| l.starts_with(&at) && l.contains("expired on") && l.contains("expired.pem")),
        "no line starting {at:?} naming expired.pem; stderr:\n{stderr}"
    );
    // Control: the same topology with the valid certificate validates.
    std::fs::write(&topology, text.replace("expired.", "server.")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flumen")).arg("validate").arg(&topology).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `openssl s_client` connected to 127.0.0.1:`port`, its stdin and stdout piped.
fn s_client(port: u16, pki: &Pki, cert: Option<&str>) -> Child {
    let mut command = Command::new("openssl");
    command.args(["s_client", "-quiet", "-verify_return_error", "-CAfile", &pki.path("ca.pem")]);
    command.args(["-connect", &format!("127.0.0.1:{port}"), "-verify_ip", "127.0.0.1"]);
    if let Some(name) = cert {
        command.args(["-cert", &pki.path(&format!("{name}.pem")), "-key", &pki.path(&format!("{name}.key"))]);
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.spawn().expect("run openssl s_client (apt package openssl)")
}

#[test]
fn openssl_s_client_against_netcat_with_tls_gets_ok_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (port, metrics_port) = (free_port(), free_port());
    let sources = format!(
        r#"        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, {}), channels: ["bodies", "headers"]),"#,
        tls_option(&pki, "server", true)
    );
    let topology = topology(tmp.path(), &sources, metrics_port);
    let flumen = start(&topology, tmp.path());
    // Not a probe connection: it would count as a failed handshake.
    wait_for_log(&flumen, &format!("bind=127.0.0.1:{port}"));
    let monitoring = addr(metrics_port);

    // Control: without a client certificate nothing is accepted.
    let mut refused = s_client(port, &pki, None);
    refused.stdin.take().unwrap().write_all(b"refused line\n").ok();
    let out = refused.wait_with_output().unwrap();
    assert!(out.stdout.is_empty(), "answered without a client certificate: {:?}", String::from_utf8_lossy(&out.stdout));
    wait_for_metric(&flumen, monitoring, "TlsHandshakeFailureCount", 1);

    let lines: Vec<String> =
        ["HDFS_2k.log", "Zookeeper_2k.log", "OpenSSH_2k.log"].iter().flat_map(|f| sample(f)).collect();
    let mut peer = s_client(port, &pki, Some("client"));
    let mut stdin = peer.stdin.take().unwrap();
    let payload = joined(&lines);
    // Keep stdin open: s_client -quiet goes on reading the answers after its input ended.
    let writer = std::thread::spawn(move || {
        stdin.write_all(&payload).unwrap();
        stdin
    });
    let mut stdout = peer.stdout.take().unwrap();
    let (mut acks, mut buf) = (Acks::default(), [0u8; 8192]);
    while acks.count < lines.len() {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "s_client ended after {} of {} OKs; log:\n{}", acks.count, lines.len(), flumen.log_text());
        acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
    }
    let _stdin = writer.join().unwrap();
    let _ = peer.kill();
    let _ = peer.wait();

    let bodies = tmp.path().join("out/bodies");
    wait_for_lines(&flumen, &bodies, lines.len());
    assert!(multiset(output_lines(&bodies).0) == multiset(lines.clone()), "every line once, and no refused one");
    assert_eq!(metric(monitoring, "SOURCE.r1", "EventAcceptedCount"), Some(lines.len() as u64));
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

/// A peer process started by the test, killed (by its pid) when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The LF-only file of `lines` a syslog peer reads, and the lines.
fn peer_input(dir: &Path) -> (PathBuf, Vec<String>) {
    let lines: Vec<String> = ["OpenSSH_2k.log", "Apache_2k.log"].iter().flat_map(|f| sample(f)).collect();
    let path = dir.join("input.log");
    std::fs::write(&path, joined(&lines)).unwrap();
    (path, lines)
}

/// A `SyslogTcp` source with TLS and mutual TLS on `port`.
fn syslog_tls_topology(dir: &Path, pki: &Pki, port: u16, metrics_port: u16) -> PathBuf {
    let sources = format!(
        r#"        "r1": (kind: SyslogTcp(bind: "127.0.0.1:{port}", max_message_length: 65536, {}), channels: ["bodies", "headers"]),"#,
        tls_option(pki, "server", true)
    );
    topology(dir, &sources, metrics_port)
}

/// rsyslogd reading `input` (imfile) and forwarding each line with omfwd over TLS with
/// `driver` (`gtls` or `ossl`), RFC 5424 octet-counted, presenting client certificate `client`.
fn rsyslog(dir: &Path, pki: &Pki, driver: &str, client: &str, input: &Path, port: u16) -> Peer {
    let work = dir.join(format!("rsyslog-{driver}-{client}"));
    std::fs::create_dir_all(&work).unwrap();
    let conf = work.join("rsyslog.conf");
    write_file(
        &conf,
        &format!(
            r#"global(
    workDirectory="{work}"
    maxMessageSize="64k"
    parser.escapeControlCharactersOnReceive="off"
    DefaultNetstreamDriverCAFile="{ca}"
    DefaultNetstreamDriverCertFile="{cert}"
    DefaultNetstreamDriverKeyFile="{key}"
)
module(load="imfile")
template(name="rfc5424" type="string"
         string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% loghub - - - %msg%")
ruleset(name="forward") {{
    action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" template="rfc5424"
           TCP_Framing="octet-counted" StreamDriver="{driver}" StreamDriverMode="1"
           StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost"
           queue.type="LinkedList" action.resumeRetryCount="-1" action.resumeInterval="1")
}}
input(type="imfile" file="{input}" tag="loghub" ruleset="forward" addMetadata="off")
"#,
            work = work.display(),
            ca = pki.path("ca.pem"),
            cert = pki.path(&format!("{client}.pem")),
            key = pki.path(&format!("{client}.key")),
            input = input.display(),
        ),
    );
    let log = std::fs::File::create(work.join("rsyslogd.log")).unwrap();
    let child = Command::new("rsyslogd")
        .args(["-n", "-f", conf.to_str().unwrap(), "-i", work.join("rsyslogd.pid").to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("run rsyslogd (apt packages rsyslog, rsyslog-gnutls, rsyslog-openssl)");
    Peer(child)
}

fn rsyslog_delivers_every_line(driver: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (port, metrics_port) = (free_port(), free_port());
    let topology = syslog_tls_topology(tmp.path(), &pki, port, metrics_port);
    let flumen = start(&topology, tmp.path());
    // Not a probe connection: it would count as a failed handshake.
    wait_for_log(&flumen, &format!("bind=127.0.0.1:{port}"));
    let monitoring = addr(metrics_port);
    let (input, lines) = peer_input(tmp.path());
    let bodies = tmp.path().join("out/bodies");

    // Control: with a certificate from another CA, rsyslog's handshakes are refused and nothing
    // arrives.
    let intruder = rsyslog(tmp.path(), &pki, driver, "other-client", &input, port);
    wait_for_metric(&flumen, monitoring, "TlsHandshakeFailureCount", 1);
    drop(intruder);
    assert_eq!(output_lines(&bodies).0.len(), 0, "lines arrived over a refused handshake");

    let _peer = rsyslog(tmp.path(), &pki, driver, "client", &input, port);
    wait_for_lines(&flumen, &bodies, lines.len());
    assert!(multiset(output_lines(&bodies).0) == multiset(lines.clone()), "every line once");
    wait_for(
        WAIT,
        || logged_headers(&flumen.log_text()).len() >= lines.len(),
        || format!("the Logger sink showed {} events", logged_headers(&flumen.log_text()).len()),
    );
    for shown in logged_headers(&flumen.log_text()).iter().take(10) {
        assert_eq!(header(shown, "app_name"), Some("loghub"), "{shown}");
        assert!(header(shown, "tls_subject").is_some_and(|s| s.contains("CN=edge-1")), "{shown}");
    }
    assert_eq!(metric(monitoring, "SOURCE.r1", "EventMalformedCount"), Some(0));
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn rsyslog_gtls_sends_rfc5425_into_syslog_tcp_with_tls() {
    rsyslog_delivers_every_line("gtls");
}

#[test]
fn rsyslog_ossl_sends_rfc5425_into_syslog_tcp_with_tls() {
    rsyslog_delivers_every_line("ossl");
}

/// syslog-ng, unpacked by tests/peers/syslog-ng.sh under the target dir.
fn syslog_ng_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/syslog-ng.sh");
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target dir").join("peers/syslog-ng");
    let out = Command::new("sh").arg(&script).arg(&prefix).output().expect("run tests/peers/syslog-ng.sh");
    assert!(
        out.status.success(),
        "tests/peers/syslog-ng.sh could not provide syslog-ng (it needs apt-get and root):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn syslog_ng_sends_rfc5425_into_syslog_tcp_with_tls() {
    let syslog_ng = syslog_ng_binary();
    let version = Command::new(&syslog_ng).arg("--version").output().expect("run syslog-ng");
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.lines().next().and_then(|l| l.split(['(', ')']).nth(1)).expect("syslog-ng 3 (3.x.y)");
    let version: String = version.split('.').take(2).collect::<Vec<_>>().join(".");

    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (port, metrics_port) = (free_port(), free_port());
    let topology = syslog_tls_topology(tmp.path(), &pki, port, metrics_port);
    let flumen = start(&topology, tmp.path());
    // Not a probe connection: it would count as a failed handshake.
    wait_for_log(&flumen, &format!("bind=127.0.0.1:{port}"));
    let (input, lines) = peer_input(tmp.path());

    let work = tmp.path().join("syslog-ng");
    std::fs::create_dir_all(&work).unwrap();
    let conf = work.join("syslog-ng.conf");
    write_file(
        &conf,
        &format!(
            r#"@version: {version}
options {{ use-dns(no); keep-hostname(yes); stats-freq(0); log-msg-size(65536); }};
source s_input {{ file("{input}" flags(no-parse) follow-freq(1) log-msg-size(65536)); }};
destination d_flumen {{
    syslog("localhost" port({port}) ip-protocol(4) transport("tls")
           tls(ca-file("{ca}") cert-file("{cert}") key-file("{key}") peer-verify(required-trusted)));
}};
log {{ source(s_input); destination(d_flumen); flags(flow-control); }};
"#,
            input = input.display(),
            ca = pki.path("ca.pem"),
            cert = pki.path("client.pem"),
            key = pki.path("client.key"),
        ),
    );
    let log = std::fs::File::create(work.join("syslog-ng.log")).unwrap();
    let w = |name: &str| work.join(name).to_str().unwrap().to_string();
    let _peer = Peer(
        Command::new(&syslog_ng)
            .args(["-F", "--stderr", "--no-caps", "-f", &w("syslog-ng.conf")])
            .arg(format!("--persist-file={}", w("syslog-ng.persist")))
            .arg(format!("--pidfile={}", w("syslog-ng.pid")))
            .arg(format!("--control={}", w("syslog-ng.ctl")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run syslog-ng"),
    );
    let bodies = tmp.path().join("out/bodies");
    wait_for(
        WAIT,
        || output_lines(&bodies).0.len() >= lines.len(),
        || {
            format!(
                "the sink holds {} of {} lines; syslog-ng's log:\n{}\nflumen's log:\n{}",
                output_lines(&bodies).0.len(),
                lines.len(),
                std::fs::read_to_string(work.join("syslog-ng.log")).unwrap_or_default(),
                flumen.log_text()
            )
        },
    );
    assert_same_lines(output_lines(&bodies).0, &lines);
    let shown = logged_headers(&flumen.log_text());
    assert!(shown.first().and_then(|s| header(s, "tls_subject")).is_some_and(|s| s.contains("CN=edge-1")), "{shown:?}");
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

/// Asserts that `got` holds each of `want` once and nothing else; shows some differences if not.
fn assert_same_lines(got: Vec<String>, want: &[String]) {
    let (got, want) = (multiset(got), multiset(want.iter().cloned()));
    if got != want {
        let extra: Vec<_> = got.iter().filter(|(l, n)| want.get(*l) != Some(n)).take(3).collect();
        let missing: Vec<_> = want.iter().filter(|(l, n)| got.get(*l) != Some(n)).take(3).collect();
        panic!("the lines differ: got {extra:?} ..., wanted {missing:?} ...");
    }
}

/// A TLS client connection made in the test (rustls), trusting the test CA.
struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    acks: Acks,
}

impl TlsClient {
    fn connect(flumen: &mut Flumen, port: u16, pki: &Pki) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = flumen.connect(addr(port), WAIT);
        tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        TlsClient { stream: rustls::StreamOwned::new(connection, tcp), acks: Acks::default() }
    }

    /// Sends `lines` and reads their `OK`s; `Err` when the connection ended first.
    fn send(&mut self, lines: &[String]) -> Result<(), String> {
        self.stream.write_all(&joined(lines)).map_err(|e| e.to_string())?;
        let want = self.acks.count + lines.len();
        let deadline = std::time::Instant::now() + WAIT;
        let mut buf = [0u8; 8192];
        while self.acks.count < want {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(format!("closed after {} OKs", self.acks.count)),
                Ok(n) => self.acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}")),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("{e} after {} OKs", self.acks.count)),
            }
            assert!(std::time::Instant::now() < deadline, "no OKs within {WAIT:?}");
        }
        Ok(())
    }

    /// Whether the agent closed the connection within `WAIT`.
    fn closed_by_agent(&mut self) -> bool {
        let deadline = std::time::Instant::now() + WAIT;
        let mut buf = [0u8; 64];
        while std::time::Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// The subject of the certificate a new handshake on `port` gets, as `openssl s_client
/// -showcerts` prints it.
fn served_subject(port: u16, pki: &Pki) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-showcerts", "-connect", &format!("127.0.0.1:{port}"), "-CAfile", &pki.path("ca.pem")])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "s_client did not verify the server:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no subject:\n{text}"))
}

/// A `Netcat` source with TLS (no client certificates) on `port`.
fn netcat_tls_topology(dir: &Path, pki: &Pki, port: u16, metrics_port: u16) -> PathBuf {
    let sources = format!(
        r#"        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, {}), channels: ["bodies", "headers"]),"#,
        tls_option(pki, "server", false)
    );
    topology(dir, &sources, metrics_port)
}

/// The certificate reload test: `signal` says whether a SIGHUP follows each replacement (else the
/// change of the files alone must do it).
fn reload_keeps_connections_and_changes_new_handshakes(signal: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (port, metrics_port) = (free_port(), free_port());
    let topology = netcat_tls_topology(tmp.path(), &pki, port, metrics_port);
    let mut flumen = start(&topology, tmp.path());
    let lines = numbered_lines(4000);
    let mut open = TlsClient::connect(&mut flumen, port, &pki);
    open.send(&lines[..1000]).unwrap();
    assert!(served_subject(port, &pki).contains("flumen server one"));

    // A good replacement: new handshakes get it, the open connection goes on.
    let (cert, key) = pki.ca.issue("flumen server two", SERVER_NAMES, Usage::Server, false);
    pki.replace("server.key", &key);
    pki.replace("server.pem", &cert);
    if signal {
        flumen.signal(libc::SIGHUP);
    }
    wait_for(
        WAIT,
        || served_subject(port, &pki).contains("flumen server two"),
        || format!("new handshakes still get {:?}; log:\n{}", served_subject(port, &pki), flumen.log_text()),
    );
    let why = if signal { "(SIGHUP)" } else { "(a certificate file changed)" };
    assert!(flumen.log_text().contains(&format!("re-read the TLS certificate {why}")), "{}", flumen.log_text());
    open.send(&lines[1000..2000]).expect("the connection made before the reload goes on");

    // A bad replacement (a certificate whose key is not the key file's): the old one stays.
    let (mismatched, _) = pki.ca.issue("flumen server three", SERVER_NAMES, Usage::Server, false);
    pki.replace("server.pem", &mismatched);
    if signal {
        flumen.signal(libc::SIGHUP);
    }
    wait_for_metric(&flumen, addr(metrics_port), "TlsReloadFailureCount", 1);
    assert!(flumen.log_text().contains("does not belong to the certificate in"), "{}", flumen.log_text());
    assert!(flumen.log_text().contains(&pki.path("server.pem")), "the warning names the file");
    assert!(served_subject(port, &pki).contains("flumen server two"), "the bad certificate was taken");
    open.send(&lines[2000..3000]).expect("the connection goes on after a failed re-read");

    let bodies = tmp.path().join("out/bodies");
    wait_for_lines(&flumen, &bodies, 3000);
    assert!(multiset(output_lines(&bodies).0) == multiset(lines[..3000].to_vec()), "every line once");

    // Negative control: a reload that restarts the source (a new bind) does drop the connection.
    // (With the mismatched pair in place the new topology would not validate: put the good
    // certificate back first.)
    pki.replace("server.pem", &cert);
    let new_port = free_port();
    let text = std::fs::read_to_string(&topology).unwrap();
    std::fs::write(&topology, text.replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{new_port}\"")))
        .unwrap();
    flumen.signal(libc::SIGHUP);
    assert!(open.closed_by_agent(), "the connection survived its source's restart");
    assert!(open.send(&lines[3000..]).is_err(), "the dropped connection still delivers");
    let mut again = TlsClient::connect(&mut flumen, new_port, &pki);
    again.send(&lines[3000..]).unwrap();
    wait_for_lines(&flumen, &bodies, 4000);
    assert_eq!(flumen.terminate(WAIT), Some(0));
}

#[test]
fn sighup_rereads_the_certificate_and_open_connections_go_on() {
    reload_keeps_connections_and_changes_new_handshakes(true);
}

#[test]
fn a_changed_certificate_file_is_reread_without_a_signal() {
    reload_keeps_connections_and_changes_new_handshakes(false);
}

#[test]
fn a_client_that_does_not_finish_its_handshake_is_disconnected_after_handshake_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let (port, metrics_port) = (free_port(), free_port());
    let sources = format!(
        r#"        "r1": (kind: Netcat(bind: "127.0.0.1:{port}", {}), channels: ["bodies", "headers"]),"#,
        tls_option_timeout(&pki, "server", false, "1s")
    );
    let topology = topology(tmp.path(), &sources, metrics_port);
    let mut flumen = start(&topology, tmp.path());
    let lines = numbered_lines(20);
    // Control: a client that completed its handshake stays connected past the timeout.
    let mut good = TlsClient::connect(&mut flumen, port, &pki);
    good.send(&lines[..10]).unwrap();
    // A client that connects and never says hello.
    let mut silent = flumen.connect(addr(port), WAIT);
    silent.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 16];
    let mut closed = false;
    wait_for(
        WAIT,
        || {
            closed = match silent.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            };
            closed
        },
        || "the silent connection is still open".into(),
    );
    wait_for_metric(&flumen, addr(metrics_port), "TlsHandshakeFailureCount", 1);
    assert!(flumen.log_text().contains("not done within 1s (handshake_timeout)"), "{}", flumen.log_text());
    good.send(&lines[10..]).expect("the connection with a completed handshake goes on");
    let bodies = tmp.path().join("out/bodies");
    wait_for_lines(&flumen, &bodies, lines.len());
    assert_same_lines(output_lines(&bodies).0, &lines);
    assert_eq!(metric(addr(metrics_port), "SOURCE.r1", "TlsHandshakeFailureCount"), Some(1));
    assert_eq!(flumen.terminate(WAIT), Some(0));
}
