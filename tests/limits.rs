//! Bad input from a peer, against the real `flumen` binary over real sockets: a 10 MiB `Http` body
//! of empty lines (decoded and put a batch at a time, bounded by `max_events_per_request`); a
//! partial commit answered `503` with `X-Flumen-Committed`, which the `Http` sink of an edge agent
//! honours (every Loghub line once) and a client ignoring it does not (duplicates); 2,000
//! connections each holding one 512-byte event (memory follows the events, not read buffers);
//! 1,000 slowloris connections on `Netcat`, `SyslogTcp` and `Http` beside a well-behaved client;
//! `max_connections` refusals and `idle_timeout` closes.
//!
//! The memory checks read `/proc/<pid>/status` and fail when it cannot be read. The tests open
//! a few thousand sockets: they raise the process's soft file-descriptor limit to its hard limit
//! (setrlimit), and fail when that is below what they need.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const DEADLINE: Duration = Duration::from_secs(120);

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Raises the soft limit on open files to the hard one; panics when the hard one is below `need`.
fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0, "getrlimit");
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
    }
    assert!(lim.rlim_cur >= need, "this test needs {need} open files; the hard limit is {}", lim.rlim_cur);
}

/// The current resident set size (VmRSS) of `pid` in KiB; panics when it cannot be read.
fn rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path} has no readable VmRSS line:\n{status}"))
}

/// The sockets `pid` has open (entries of `/proc/<pid>/fd` that are sockets); panics when the
/// directory cannot be read.
fn open_sockets(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {dir}: {e}"));
    entries
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
        .count()
}

/// Starts `flumen run` on `text` written into `dir`; waits until `addr` accepts.
fn start(dir: &Path, name: &str, text: &str, addr: SocketAddr) -> Flumen {
    let topology = dir.join(format!("{name}.ron"));
    write_file(&topology, text);
    let mut flumen = Flumen::start(&["run", "--quiet", topology.to_str().unwrap()], &dir.join(format!("{name}.log")));
    drop(flumen.connect(addr, DEADLINE));
    flumen
}

fn counter(monitoring: SocketAddr, component: &str, name: &str) -> u64 {
    metric(monitoring, component, name).unwrap_or_else(|| panic!("{component} {name} is not served"))
}

/// An HTTP/1.1 `POST /` of `body` over a new connection; answers the status, the
/// `X-Flumen-Committed` header (if any) and the answer's body.
fn post(to: SocketAddr, content_type: &str, body: &[u8]) -> (u16, Option<usize>, String) {
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, text) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let committed = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-flumen-committed:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok());
    (status, committed, text.to_string())
}

// ---------------------------------------------------------------------------------------------
// Decode amplification.

/// One 10 MiB body of empty lines is refused (`413`, nothing committed) under the default
/// `max_events_per_request`; with the bound raised, four such bodies at once are committed whole
/// (every one of the 4 × 10,485,760 events counted by the source) while the agent's peak RSS
/// stays under 256 MiB (it was 2.3 GB when each request held all its decoded events).
#[test]
fn empty_line_bodies_are_bounded_and_put_a_batch_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let body = vec![b'\n'; 10 * 1024 * 1024];
    for (name, extra) in [("default", ""), ("raised", ", max_events_per_request: 20000000")] {
        let (port, mon) = (free_port(), free_port());
        let flumen = start(
            tmp.path(),
            name,
            &format!(
                r#"Topology(
    agent: "amp",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}", format: Lines{extra}), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Null(), channel: "c1") }},
)"#
            ),
            addr(port),
        );
        if extra.is_empty() {
            let (status, committed, text) = post(addr(port), "text/plain", &body);
            assert_eq!((status, committed), (413, Some(0)), "{text}");
            assert!(text.contains("more than 100000 events"), "{text}");
            assert_eq!(counter(addr(mon), "SOURCE.r1", "EventReceivedCount"), 0, "nothing of it was put");
            continue;
        }
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let body = body.clone();
                std::thread::spawn(move || post(addr(port), "text/plain", &body))
            })
            .collect();
        for c in clients {
            let (status, committed, text) = c.join().unwrap();
            assert_eq!((status, committed), (200, Some(10_485_760)), "{text}");
        }
        assert_eq!(counter(addr(mon), "SOURCE.r1", "EventAcceptedCount"), 4 * 10_485_760);
        let peak = flumen.peak_rss_kib();
        println!("4 concurrent 10 MiB empty-line bodies, all committed: peak RSS {} MiB", peak / 1024);
        assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    }
}

// ---------------------------------------------------------------------------------------------
// Partial commits.

/// A collector whose channel fills mid-request (its sink's next hop is down) answers `503` with
/// `X-Flumen-Committed: 5000` and says so in the text; after the next hop comes up, every one of
/// the 20,000 Loghub lines an edge agent's `Http` sink posted as one batch arrives exactly once.
/// Negative control: a client that resends the whole body on `503` (as `curl --retry` would)
/// duplicates the 5,000 committed lines.
#[test]
fn a_partial_commit_is_announced_and_the_http_sink_resends_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = numbered_lines(20_000);
    let body = joined(&lines);

    // The answer itself.
    let (collector, final_port) = (free_port(), free_port());
    let (agent, _mon, out) = collector_with_down_next_hop(tmp.path(), "answer", collector, final_port);
    let (status, committed, text) = post(addr(collector), "text/plain", &body);
    assert_eq!((status, committed), (503, Some(5000)), "{text}");
    assert!(text.contains("the first 5000 of the 20000 events were committed"), "{text}");
    // Negative control: resending the whole body until it is taken duplicates the first 5,000.
    let last = start_last_hop(tmp.path(), "answer-last", final_port, &out);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, _, text) = post(addr(collector), "text/plain", &body);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{text}");
        assert!(Instant::now() < deadline, "never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let counts = multiset(wait_for_output(&out, 25_000));
    assert_eq!(counts.len(), 20_000);
    let again = counts.values().filter(|&&n| n >= 2).count();
    assert!(again >= 5000, "the control duplicates what was committed: {again} lines more than once");
    drop((agent, last));

    // The edge agent's Http sink posts the 20,000 lines as one batch and honours the header.
    let (collector, final_port, edge_port, edge_mon) = (free_port(), free_port(), free_port(), free_port());
    let (agent, mon, out) = collector_with_down_next_hop(tmp.path(), "tier", collector, final_port);
    let mut edge = start(
        tmp.path(),
        "edge",
        &format!(
            r#"Topology(
    agent: "edge",
    monitoring: Some(Http(bind: "127.0.0.1:{edge_mon}")),
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{edge_port}", max_line_length: 65536), channels: ["c1"], batch_size: 20000, linger: "1s") }},
    channels: {{ "c1": Memory(capacity: 40000, transaction_capacity: 20000) }},
    sinks: {{ "k1": (kind: Http(url: "http://127.0.0.1:{collector}/", format: Events, max_backoff: "500ms"), channel: "c1", batch_size: 20000) }},
)"#
        ),
        addr(edge_port),
    );
    edge.send_acknowledged(addr(edge_port), &lines, DEADLINE);
    // The collector took 5,000 and refuses the rest while its next hop is down.
    wait_for(DEADLINE, || metric(mon, "CHANNEL.c1", "ChannelSize") == Some(5000), || "collector channel full".into());
    wait_for(
        DEADLINE,
        || metric(addr(edge_mon), "SINK.k1", "ConnectionFailedCount").is_some_and(|n| n >= 1),
        || "the edge's sink was answered 503".into(),
    );
    // One take of all 20,000 was posted, so the 5,000 committed are part of it: a partial commit.
    assert_eq!(counter(addr(edge_mon), "SINK.k1", "BatchCompleteCount"), 1);
    assert_eq!(counter(addr(edge_mon), "SINK.k1", "EventDrainAttemptCount"), 20_000);
    let last = start_last_hop(tmp.path(), "tier-last", final_port, &out);
    // The edge commits its take after the last 200: from then on the collector gets nothing more.
    wait_for(
        DEADLINE,
        || metric(addr(edge_mon), "SINK.k1", "EventDrainSuccessCount") == Some(20_000),
        || "the edge delivered its batch".into(),
    );
    assert_eq!(counter(mon, "SOURCE.r1", "EventAcceptedCount"), 20_000, "the collector committed each event once");
    let counts = multiset(wait_for_output(&out, 20_000));
    assert_eq!(counts.len(), 20_000, "every line arrived");
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).take(3).collect();
    assert!(twice.is_empty(), "duplicated: {twice:?}");
    drop((agent, edge, last));
}

/// A collector (`Http` source, batch 1000, `put_timeout` 1 s, a `Memory` channel of 5,000) whose
/// `Http` sink posts to `final_port`, where nothing listens yet. Answers the agent, its
/// monitoring address and the last hop's output directory.
fn collector_with_down_next_hop(
    dir: &Path,
    name: &str,
    port: u16,
    final_port: u16,
) -> (Flumen, SocketAddr, std::path::PathBuf) {
    let mon = free_port();
    let agent = start(
        dir,
        name,
        &format!(
            r#"Topology(
    agent: "collector",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}", format: Lines, put_timeout: "1s"), channels: ["c1"], batch_size: 1000) }},
    channels: {{ "c1": Memory(capacity: 5000, transaction_capacity: 1000, keep_alive: "100ms") }},
    sinks: {{ "k1": (kind: Http(url: "http://127.0.0.1:{final_port}/", format: Events, max_backoff: "200ms"), channel: "c1", batch_size: 1000) }},
)"#
        ),
        addr(port),
    );
    (agent, addr(mon), dir.join(format!("{name}-out")))
}

/// The last hop: an `Http` source on `port` writing into `out`.
fn start_last_hop(dir: &Path, name: &str, port: u16, out: &Path) -> Flumen {
    start(
        dir,
        name,
        &format!(
            r#"Topology(
    agent: "last",
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}"), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: {}, roll_interval: "0s"), channel: "c1", batch_size: 1000) }},
)"#,
            files::ron_path(out)
        ),
        addr(port),
    )
}

fn wait_for_output(out: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_for(
        DEADLINE,
        || {
            got = output_lines(out).0;
            got.len() >= n
        },
        || format!("{} of {n} lines in {}", output_lines(out).0.len(), out.display()),
    );
    got
}

// ---------------------------------------------------------------------------------------------
// Pinned buffers.

/// 2,000 connections each send one 512-byte Loghub line (acknowledged: it is in the channel,
/// whose sink cannot deliver, so every event stays) and stay open: the agent's memory grows by
/// at most 64 KiB per connection (each event used to pin a read buffer: 285 MB in all).
#[test]
fn two_thousand_connections_holding_one_event_each_cost_what_the_events_cost() {
    raise_fd_limit(4500);
    let tmp = tempfile::tempdir().unwrap();
    let (port, mon) = (free_port(), free_port());
    let flumen = start(
        tmp.path(),
        "pinned",
        &format!(
            r#"Topology(
    agent: "pinned",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 1024, max_connections: 4000), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Http(url: "http://127.0.0.1:9/"), channel: "c1") }},
)"#
        ),
        addr(port),
    );
    let before = rss_kib(flumen.child.id());
    let base = loghub_lines();
    let mut conns = Vec::new();
    for i in 0..2000 {
        let mut line = format!("{i} {}", base[i % base.len()]);
        while line.len() < 512 {
            line.push_str(" .");
        }
        line.truncate(511);
        let mut s = TcpStream::connect(addr(port)).expect("connect");
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut ok = [0u8; 3];
        s.read_exact(&mut ok).expect("acknowledged");
        assert_eq!(&ok, b"OK\n");
    }
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelSize"), 2000);
    assert_eq!(counter(addr(mon), "SOURCE.r1", "OpenConnectionCount"), 2000);
    let after = rss_kib(flumen.child.id());
    let per_connection = after.saturating_sub(before) * 1024 / 2000;
    println!("2,000 connections with one 512-byte event each: RSS {before} KiB -> {after} KiB, {per_connection} bytes per connection");
    assert!(per_connection <= 64 * 1024, "{per_connection} bytes per connection");
    drop(conns);
}

// ---------------------------------------------------------------------------------------------
// Slowloris and connection limits.

/// 1,000 connections: half send nothing, half a byte (no line end) every 2 s, until dropped.
struct Slowloris {
    stop: Arc<AtomicBool>,
    dripper: Option<std::thread::JoinHandle<Vec<TcpStream>>>,
}

impl Slowloris {
    /// Opens `n` connections to `to`, each first sending `opening` (e.g. half an HTTP header).
    fn open(to: SocketAddr, n: usize, opening: &'static [u8]) -> Slowloris {
        let mut conns: Vec<TcpStream> = (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(to).expect("connect a slowloris");
                s.write_all(opening).unwrap();
                s
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dripper = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                for s in conns.iter_mut().skip(n / 2) {
                    let _ = s.write_all(b"x");
                }
                for _ in 0..20 {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            conns
        });
        Slowloris { stop, dripper: Some(dripper) }
    }

    /// Stops dripping; answers how many connections the agent closed (a read gives EOF or an
    /// error rather than nothing).
    fn closed_by_peer(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let conns = self.dripper.take().unwrap().join().unwrap();
        let closed = |s: &TcpStream| {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let mut s = s;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        };
        let (silent, dripping) = conns.split_at(conns.len() / 2);
        (silent.iter().filter(|s| closed(s)).count(), dripping.iter().filter(|s| closed(s)).count())
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The TCP sources' topology: `Netcat` on `nc` and `SyslogTcp` on `sys` with `limits` (RON
/// fields, e.g. `", max_connections: 500"`), into a `Memory` channel drained by a `Null` sink.
fn tcp_sources(dir: &Path, name: &str, nc: u16, sys: u16, mon: u16, limits: &str) -> Flumen {
    let flumen = start(
        dir,
        name,
        &format!(
            r#"Topology(
    agent: "slow",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{
        "nc": (kind: Netcat(bind: "127.0.0.1:{nc}", max_line_length: 65536{limits}), channels: ["c1"]),
        "sys": (kind: SyslogTcp(bind: "127.0.0.1:{sys}"{limits}), channels: ["c1"]),
    }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Null(), channel: "c1") }},
)"#
        ),
        addr(nc),
    );
    drop(TcpStream::connect(addr(sys)).expect("syslog listening"));
    flumen
}

/// The well-behaved clients: 1,000 Loghub lines to `Netcat` (each acknowledged) and 1,000 as
/// syslog messages to `SyslogTcp` (counted accepted); answers the two latencies, from the
/// connect to the last line committed. Panics at the deadline.
fn well_behaved(nc: u16, sys: u16, mon: u16) -> (Duration, Duration) {
    let lines: Vec<String> = numbered_lines(1000);
    let t = Instant::now();
    let mut s = TcpStream::connect(addr(nc)).expect("connect the well-behaved client");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&joined(&lines)).unwrap();
    let mut acks = Acks::default();
    let mut buf = [0u8; 8192];
    while acks.count < lines.len() {
        let n = s.read(&mut buf).expect("acknowledgements within 30 s");
        assert!(n > 0, "closed after {} acknowledgements", acks.count);
        acks.feed(&buf[..n]).unwrap();
    }
    let netcat = t.elapsed();
    let before = counter(addr(mon), "SOURCE.sys", "EventAcceptedCount");
    let t = Instant::now();
    let mut s = TcpStream::connect(addr(sys)).expect("connect the syslog client");
    let messages: Vec<String> = lines.iter().map(|l| format!("<13>Dec  1 16:00:00 web-1 app: {l}")).collect();
    s.write_all(&joined(&messages)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(addr(mon), "SOURCE.sys", "EventAcceptedCount") < before + 1000 {
        assert!(Instant::now() < deadline, "syslog messages not committed within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    (netcat, t.elapsed())
}

/// 1,000 slowloris connections on each of `Netcat` and `SyslogTcp` (held open: the agent has
/// them all, none refused, none closed) leave a well-behaved client's lines committed, and the
/// agent under 256 MiB. Negative controls: with `max_connections: 500` the well-behaved client's
/// connection is refused (closed without an acknowledgement) and the refusals are counted; with
/// `idle_timeout: "15s"` the silent half is closed and counted, the dripping half (a byte every
/// 2 s) is not. (The timeout is far above the drip period: opening 1,000 connections one after
/// the other takes seconds on a loaded machine, and the dripping ones send their first byte only
/// once all are open.)
#[test]
fn slowloris_connections_on_tcp_sources_leave_a_client_committed() {
    raise_fd_limit(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let (nc, sys, mon) = (free_port(), free_port(), free_port());
    let flumen = tcp_sources(tmp.path(), "slow", nc, sys, mon, "");
    let a = Slowloris::open(addr(nc), 1000, b"");
    let b = Slowloris::open(addr(sys), 1000, b"<13>");
    wait_for(
        DEADLINE,
        || {
            metric(addr(mon), "SOURCE.nc", "OpenConnectionCount") == Some(1000)
                && metric(addr(mon), "SOURCE.sys", "OpenConnectionCount") == Some(1000)
        },
        || "1,000 slowloris connections open on each source".into(),
    );
    let (netcat, syslog) = well_behaved(nc, sys, mon);
    println!("with 2 x 1,000 slowloris: Netcat lines acknowledged in {netcat:?}, syslog committed in {syslog:?}");
    let rss = rss_kib(flumen.child.id());
    println!(
        "agent RSS with 2,000 slowloris connections: {} MiB (peak {} MiB)",
        rss / 1024,
        flumen.peak_rss_kib() / 1024
    );
    assert!(rss < 256 * 1024, "RSS {rss} KiB");
    assert_eq!(counter(addr(mon), "SOURCE.nc", "ConnectionRefusedCount"), 0);
    assert_eq!(a.closed_by_peer(), (0, 0), "the agent held every slowloris connection");
    assert_eq!(b.closed_by_peer(), (0, 0), "the agent held every slowloris connection");
    drop(flumen);

    // Control: max_connections below the slowloris count refuses the well-behaved client.
    let (nc, sys, mon) = (free_port(), free_port(), free_port());
    let flumen = tcp_sources(tmp.path(), "refusing", nc, sys, mon, ", max_connections: 500");
    let a = Slowloris::open(addr(nc), 1000, b"");
    wait_for(
        DEADLINE,
        || metric(addr(mon), "SOURCE.nc", "ConnectionRefusedCount") == Some(500),
        || format!("refusals: {:?}", metric(addr(mon), "SOURCE.nc", "ConnectionRefusedCount")),
    );
    let mut s = TcpStream::connect(addr(nc)).expect("the kernel accepts");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating\n");
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "refused: closed without an acknowledgement");
    assert_eq!(counter(addr(mon), "SOURCE.nc", "ConnectionRefusedCount"), 501);
    assert_eq!(counter(addr(mon), "SOURCE.nc", "OpenConnectionCount"), 500);
    assert_eq!(counter(addr(mon), "SOURCE.nc", "EventReceivedCount"), 0);
    let (silent, dripping) = a.closed_by_peer();
    assert_eq!(silent + dripping, 500, "the 500 over the limit were closed");
    drop(flumen);

    // Control: idle_timeout closes the silent half only.
    let (nc, sys, mon) = (free_port(), free_port(), free_port());
    let flumen = tcp_sources(tmp.path(), "idle", nc, sys, mon, ", idle_timeout: \"15s\"");
    let a = Slowloris::open(addr(nc), 1000, b"");
    wait_for(
        DEADLINE,
        || metric(addr(mon), "SOURCE.nc", "ConnectionIdleClosedCount") == Some(500),
        || format!("idle closes: {:?}", metric(addr(mon), "SOURCE.nc", "ConnectionIdleClosedCount")),
    );
    assert_eq!(a.closed_by_peer(), (500, 0), "the silent ones are closed, the dripping ones are not");
    assert_eq!(counter(addr(mon), "SOURCE.nc", "ConnectionIdleClosedCount"), 500);
    drop(flumen);
}

/// The `Http` source's topology on `port` with `options` (RON fields).
fn http_source(dir: &Path, name: &str, port: u16, mon: u16, options: &str) -> Flumen {
    start(
        dir,
        name,
        &format!(
            r#"Topology(
    agent: "slow-http",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}", format: Lines{options}), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Null(), channel: "c1") }},
)"#
        ),
        addr(port),
    )
}

/// `curl` posting 1,000 Loghub lines; answers its status code (0: no answer within `max_time`)
/// and how long it took.
fn curl_post(port: u16, max_time: u64) -> (u16, Duration) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), joined(&numbered_lines(1000))).unwrap();
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", &max_time.to_string()])
        .args(["-H", "Content-Type: text/plain", "--data-binary"])
        .arg(format!("@{}", tmp.path().display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("run curl");
    (String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0), t.elapsed())
}

/// 1,000 connections holding half a request header (half of them adding a byte every 2 s) on an
/// `Http` source leave `curl`'s post committed and the agent under 256 MiB. Negative controls:
/// with `max_connections: 500` the post gets no answer (the server does not accept it); with
/// `request_header_timeout: "2s"` the slowloris connections are closed.
#[test]
fn slowloris_connections_on_http_leave_a_client_committed() {
    raise_fd_limit(10_000);
    let tmp = tempfile::tempdir().unwrap();
    const HALF: &[u8] = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nX-Slow: ";
    let (port, mon) = (free_port(), free_port());
    let flumen = http_source(tmp.path(), "http-slow", port, mon, ", request_header_timeout: \"10m\"");
    let a = Slowloris::open(addr(port), 1000, HALF);
    let pid = flumen.child.id();
    // 1,000 accepted connections and the two listening sockets (the source's, the monitoring's).
    wait_for(DEADLINE, || open_sockets(pid) >= 1002, || format!("the agent has {} sockets", open_sockets(pid)));
    let (status, took) = curl_post(port, 30);
    assert_eq!(status, 200);
    assert_eq!(counter(addr(mon), "SOURCE.r1", "EventAcceptedCount"), 1000);
    println!("with 1,000 slowloris on Http: curl's 1,000 lines committed in {took:?}");
    let rss = rss_kib(pid);
    println!("agent RSS with 1,000 slowloris connections on Http: {} MiB", rss / 1024);
    assert!(rss < 256 * 1024, "RSS {rss} KiB");
    assert!(open_sockets(pid) >= 1002, "still held");
    assert_eq!(a.closed_by_peer(), (0, 0), "the agent held every slowloris connection");
    drop(flumen);

    // Control: under max_connections 500 the slowloris take every place; curl gets no answer.
    let (port, mon) = (free_port(), free_port());
    let _flumen =
        http_source(tmp.path(), "http-full", port, mon, ", request_header_timeout: \"10m\", max_connections: 500");
    let a = Slowloris::open(addr(port), 1000, HALF);
    let (status, _) = curl_post(port, 5);
    assert_eq!(status, 0, "no answer while the slowloris hold every connection");
    assert_eq!(counter(addr(mon), "SOURCE.r1", "EventReceivedCount"), 0);
    drop(a);

    // Control: request_header_timeout closes them.
    let (port, mon) = (free_port(), free_port());
    let flumen = http_source(tmp.path(), "http-timeout", port, mon, ", request_header_timeout: \"2s\"");
    let pid = flumen.child.id();
    let a = Slowloris::open(addr(port), 1000, HALF);
    wait_for(DEADLINE, || open_sockets(pid) < 100, || format!("the agent still has {} sockets", open_sockets(pid)));
    let (silent, dripping) = a.closed_by_peer();
    assert_eq!((silent, dripping), (500, 500), "every half-sent header timed out");
}

// ---------------------------------------------------------------------------------------------
// Memory byte_capacity.

/// The `Netcat` → `Memory` topology with a sink that cannot deliver (every acknowledged event
/// stays in the channel), with `channel_options` (RON fields).
fn byte_bound_topology(port: u16, mon: u16, channel_options: &str) -> String {
    format!(
        r#"Topology(
    agent: "bytes",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 1024), channels: ["c1"], batch_size: 100) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000, keep_alive: "100ms"{channel_options}) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "/proc/no/such/dir"), channel: "c1") }},
)"#
    )
}

/// 2,000 Loghub lines of 500 bytes into a `Memory` channel with `byte_capacity: 100000`: 200 are
/// acknowledged (100,000 bytes held, `ChannelSizeBytes`), the source waits and the client is
/// slowed, nothing more is acknowledged while the channel is at its bound; a reload raising
/// `byte_capacity` lets the rest in. Negative control: with the default `byte_capacity` the same
/// 2,000 lines are all acknowledged at once (the sink that cannot deliver is not what stops them).
#[test]
fn byte_capacity_slows_the_source_and_a_reload_raises_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = loghub_lines();
    let lines: Arc<Vec<String>> = Arc::new(
        (0..2000)
            .map(|i| {
                let mut l = format!("{i} {}", base[i % base.len()]);
                while l.len() < 500 {
                    l.push_str(" .");
                }
                l.truncate(500);
                l
            })
            .collect(),
    );

    // Control: the default bound (16 MiB) takes them all.
    let (port, mon) = (free_port(), free_port());
    let mut flumen = start(tmp.path(), "bytes-default", &byte_bound_topology(port, mon, ""), addr(port));
    let mut stream = AckedStream::open(&mut flumen, addr(port), lines.clone(), 0);
    assert_eq!(stream.read_until(DEADLINE, |n| n == 2000), 2000);
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelSizeBytes"), 2000 * 500);
    drop(stream);
    drop(flumen);

    let (port, mon) = (free_port(), free_port());
    let topology = tmp.path().join("bytes.ron");
    let mut flumen = start(tmp.path(), "bytes", &byte_bound_topology(port, mon, ", byte_capacity: 100000"), addr(port));
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelByteCapacity"), 100_000);
    let mut stream = AckedStream::open(&mut flumen, addr(port), lines.clone(), 0);
    assert_eq!(stream.read_until(DEADLINE, |n| n == 200), 200);
    // Held at the bound: nothing more within two seconds (an observation window, not a wait).
    assert_eq!(stream.read_until(Duration::from_secs(2), |n| n > 200), 200, "the bound holds");
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelSizeBytes"), 100_000);
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelSize"), 200);
    assert!(stream.still_sending() || counter(addr(mon), "SOURCE.r1", "EventReceivedCount") < 2000);

    write_file(&topology, &byte_bound_topology(port, mon, ", byte_capacity: 10000000"));
    flumen.signal(libc::SIGHUP);
    assert_eq!(stream.read_until(DEADLINE, |n| n == 2000), 2000, "raised by the reload: the rest gets in");
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelByteCapacity"), 10_000_000);
    assert_eq!(counter(addr(mon), "CHANNEL.c1", "ChannelSizeBytes"), 2000 * 500);
    drop(stream);
}

// ---------------------------------------------------------------------------------------------
// A TCP source's read budget (max_in_flight_bytes).

/// 200 connections each flood 2,000 Loghub lines of 500 bytes (200 MB in all) into a `Netcat`
/// source whose channel is full (capacity 1,000, a sink that cannot deliver): with
/// `max_in_flight_bytes: 1048576` the source stops reading at about 1 MiB held by puts waiting
/// for room (the senders wait in TCP flow control) and the agent's memory stays near where it
/// was. Negative control: with a budget of 1 GB the flood is read on (half of it, 100 MB, at
/// least), every connection's batches waiting in puts, and the agent holds it.
#[test]
fn connections_flooding_a_full_channel_hold_at_most_max_in_flight_bytes() {
    let bounded = flood_a_full_channel(1 << 20);
    let control = flood_a_full_channel(1_000_000_000);
    println!("read budget 1 MiB: {bounded:?}; 1 GB: {control:?}");
    let (events, grown_kib) = bounded;
    // 1 MiB of 500-byte lines is 2,097 lines; a read past the limit may land per connection.
    assert!(events < 20_000, "with a 1 MiB budget the source read {events} of 400,000 lines");
    assert!(grown_kib < 64 * 1024, "with a 1 MiB budget the agent grew by {grown_kib} KiB");
    // The control waited until half the flood (100 MB) was read.
    let (_, grown_kib) = control;
    assert!(grown_kib > 75 * 1024, "without the bound the agent holds the flood: grew by {grown_kib} KiB");
}

/// Runs the flood with `max_in_flight_bytes: budget`; answers the events the source read
/// (`EventReceivedCount`: puts begun, waiting for room) and how much the agent's RSS grew (KiB).
fn flood_a_full_channel(budget: usize) -> (u64, u64) {
    const CONNS: usize = 200;
    const LINES: usize = 2000;
    raise_fd_limit(1000);
    let tmp = tempfile::tempdir().unwrap();
    let (port, mon) = (free_port(), free_port());
    let topology = format!(
        r#"Topology(
    agent: "budget",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 1024, ack_every_event: false,
                                    max_in_flight_bytes: {budget}), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 1000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "/proc/no/such/dir"), channel: "c1") }},
)"#
    );
    let flumen = start(tmp.path(), "budget", &topology, addr(port));
    let before = rss_kib(flumen.child.id());
    let base = loghub_lines();
    let payload = |c: usize| {
        let mut out = Vec::with_capacity(LINES * 500);
        for i in 0..LINES {
            let mut l = format!("{c}-{i} {}", base[(c * LINES + i) % base.len()]);
            while l.len() < 499 {
                l.push_str(" .");
            }
            l.truncate(499);
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        out
    };
    let conns: Vec<TcpStream> = (0..CONNS).map(|_| TcpStream::connect(addr(port)).expect("connect")).collect();
    let senders: Vec<_> = conns
        .iter()
        .enumerate()
        .map(|(c, s)| {
            let (mut s, data) = (s.try_clone().unwrap(), payload(c));
            // Blocks in TCP flow control while the agent does not read; ends when the test
            // drops the connections (the write then fails).
            std::thread::spawn(move || s.write_all(&data).is_ok())
        })
        .collect();
    let received = || counter(addr(mon), "SOURCE.r1", "EventReceivedCount");
    if budget >= CONNS * LINES * 500 {
        wait_for(DEADLINE, || received() >= (CONNS * LINES / 2) as u64, || format!("{} lines read", received()));
    } else {
        wait_for(DEADLINE, || received() * 500 >= budget as u64, || format!("{} lines read", received()));
        // Held at the budget: an observation window for reads that should not come.
        std::thread::sleep(Duration::from_secs(2));
    }
    let (events, after) = (received(), rss_kib(flumen.child.id()));
    drop(conns);
    drop(flumen);
    for s in senders {
        let _ = s.join();
    }
    (events, after.saturating_sub(before))
}
