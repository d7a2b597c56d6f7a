//! What the process-level tests share: Loghub input, the `flumen` binary, waiting with deadlines,
//! and reading rolled output files.
#![allow(dead_code)]

pub mod files;
pub mod pki;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shipped Loghub samples.
pub fn loghub_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/data/loghub")
}

/// Every line of every Loghub sample, as a line source sees them: split on LF, one trailing CR
/// removed, file by file in name order.
pub fn loghub_lines() -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(loghub_dir())
        .expect("the Loghub samples are in the repository")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files.iter().flat_map(|f| lines_of(&std::fs::read(f).expect("readable sample"))).collect()
}

/// Lines of `bytes`: split on LF, one trailing CR removed; a final line without LF counts.
pub fn lines_of(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines: Vec<String> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()).collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// `n` unique lines: `"<i> <Loghub line>"`, cycling through the samples.
pub fn numbered_lines(n: usize) -> Vec<String> {
    let base = loghub_lines();
    (0..n).map(|i| format!("{i} {}", base[i % base.len()])).collect()
}

/// A multiset of lines.
pub fn multiset<I: IntoIterator<Item = String>>(lines: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

/// The complete lines (ending in LF) of every file under `dir`, recursively, files in name order
/// (rolled files are named by creation time), and the number of
/// files whose last line has no LF (a write cut by a crash).
pub fn output_lines(dir: &Path) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut partial = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let complete = match bytes.iter().rposition(|&b| b == b'\n') {
                    Some(i) => &bytes[..=i],
                    None => &bytes[..0],
                };
                if complete.len() < bytes.len() {
                    partial += 1;
                }
                lines.extend(complete.split(|&b| b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()));
                lines.pop();
            }
        }
    }
    (lines, partial)
}

/// Every file under `dir`, recursively, in name order; none when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Polls `cond` every 20 ms until it holds; panics with `what()` after `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?}: {}", what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to `timeout`) until the files under `dir` hold at least `n` lines; panics with the
/// agent's log.
pub fn wait_for_output_lines(flumen: &Flumen, dir: &Path, n: usize, timeout: Duration) {
    wait_for(
        timeout,
        || output_lines(dir).0.len() >= n,
        || format!("the sink holds {} of {n} lines; log:\n{}", output_lines(dir).0.len(), flumen.log_text()),
    );
}

/// Waits (up to `timeout`) until the agent's log holds `what`.
pub fn wait_for_log_line(flumen: &Flumen, what: &str, timeout: Duration) {
    wait_for(
        timeout,
        || flumen.log_text().contains(what),
        || format!("no {what:?} in the log:\n{}", flumen.log_text()),
    );
}

/// Runs `curl` with `args`; answers the status code (0 when no answer came) and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out =
        Command::new("curl").args(["-sS", "-o", "-", "-w", "\n%{http_code}"]).args(args).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A port on 127.0.0.1 that was free a moment ago, and that no earlier call in this test process
/// answered (the kernel may hand the same ephemeral port out twice in a row once it was released,
/// and a topology given two equal ports is refused).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port =
            TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("bound").port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A running `flumen` process, killed when dropped.
pub struct Flumen {
    /// The process.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Flumen {
    /// Starts `flumen <args>` with its stderr in `log`.
    pub fn start(args: &[&str], log: &Path) -> Flumen {
        Flumen::start_under(&[], args, log)
    }

    /// Starts `<wrapper...> flumen <args>` (e.g. `fiu-run -x ...`) with its stderr in `log`; with
    /// an empty `wrapper`, as [`Flumen::start`]. The wrapper must `exec` flumen, so that the
    /// process signalled and waited for is flumen's.
    pub fn start_under(wrapper: &[&str], args: &[&str], log: &Path) -> Flumen {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let bin = env!("CARGO_BIN_EXE_flumen");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(args)
            .env("FLUMEN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {wrapper:?} flumen: {e}"));
        Flumen { child, log: log.to_path_buf() }
    }

    /// Connects to the agent's `addr`, retrying while it starts; panics with its log if it exits
    /// or nothing accepts within `timeout`.
    pub fn connect(&mut self, addr: SocketAddr, timeout: Duration) -> TcpStream {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = TcpStream::connect(addr) {
                return s;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("flumen exited ({status}) before accepting on {addr}; its log:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!("nothing accepts connections on {addr} after {timeout:?}; flumen's log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `lines` to the agent's Netcat source at `addr` (with `ack_every_event: true`) and
    /// waits for one `OK` per line: every line is then committed to the channels.
    pub fn send_acknowledged(&mut self, addr: SocketAddr, lines: &[String], timeout: Duration) {
        use std::io::Read;
        let mut stream = self.connect(addr, timeout);
        let mut reader = stream.try_clone().expect("clone the connection");
        let payload = joined(lines);
        let sender = std::thread::spawn(move || stream.write_all(&payload));
        let (mut acks, mut buf) = (Acks::default(), [0u8; 8192]);
        while acks.count < lines.len() {
            let n = reader.read(&mut buf).expect("acknowledgements arrive");
            assert!(n > 0, "the agent closed the connection after {} acknowledgements", acks.count);
            acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}"));
        }
        sender.join().expect("sender thread").expect("every line sent");
    }

    /// Sends `signal` (libc::SIGKILL, SIGTERM, ...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit; answers the exit code.
    pub fn terminate(mut self, timeout: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let mut status = None;
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(
            timeout,
            || {
                status = child.try_wait().expect("waitable child");
                status.is_some()
            },
            || {
                format!(
                    "flumen did not exit after SIGTERM; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        );
        status.and_then(|s| s.code())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// The process's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's peak resident set size (VmHWM) in KiB; panics when `/proc/<pid>/status` cannot
    /// be read or holds no `VmHWM` (a memory check must not pass on a value it could not measure).
    pub fn peak_rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{path} has no readable VmHWM line:\n{status}"))
    }
}

impl Drop for Flumen {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A counter of `component` (`"SOURCE.r1"`, `"CHANNEL.c1"`, `"SINK.k1"`) read from the agent's
/// `GET /metrics` (Flume's JSON format, values as strings); `None` while nothing answers.
pub fn metric(monitoring: SocketAddr, component: &str, name: &str) -> Option<u64> {
    use std::io::Read;
    let mut s = TcpStream::connect(monitoring).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let body = response.split("\r\n\r\n").nth(1)?;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json[component][name].as_str()?.parse().ok()
}

/// A topology in `tmp` whose only sink cannot deliver (an `Http` sink posting to a port where
/// nothing listens), so that every event acknowledged by its Netcat source on `port` (with
/// `interceptors`, RON, e.g. `"[]"`, and `batch_size`) stays in the `RocksDb` channel "c1"
/// (`data/c1`, synced).
pub fn fill_topology(tmp: &Path, port: u16, interceptors: &str, batch_size: usize) -> PathBuf {
    let path = tmp.join(format!("fill-{port}.ron"));
    write_file(
        &path,
        &format!(
            r#"Topology(
    agent: "fill",
    sources: {{
        "r1": (
            kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: true),
            interceptors: {interceptors},
            channels: ["c1"],
            batch_size: {batch_size},
        ),
    }},
    channels: {{ "c1": RocksDb(dir: "data/c1", capacity: 1000000, sync: true, min_free_bytes: 0) }},
    sinks: {{ "k1": (kind: Http(url: "http://127.0.0.1:9/"), channel: "c1") }},
)"#
        ),
    );
    path
}

/// Writes `text` to `path`, creating parent directories.
pub fn write_file(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dir");
    }
    std::fs::File::create(path).and_then(|mut f| f.write_all(text.as_bytes())).expect("write file");
}

/// `lines` joined with LF, with a final LF.
pub fn joined(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Counts a Netcat source's acknowledgements as they arrive: every line must be exactly `OK\n`;
/// anything else (an error text, a stray byte, a line cut by a closed connection) is an error.
#[derive(Debug, Default)]
pub struct Acks {
    /// Complete `OK\n` lines seen.
    pub count: usize,
    /// The bytes of the line being received.
    pending: Vec<u8>,
}

impl Acks {
    /// Takes the next `bytes` read from the connection.
    ///
    /// # Errors
    /// A description of the first line that is not `OK`, with the count before it.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        for &b in bytes {
            self.pending.push(b);
            if b == b'\n' {
                if self.pending != b"OK\n" {
                    return Err(self.unexpected());
                }
                self.count += 1;
                self.pending.clear();
            } else if self.pending.len() >= 3 || !b"OK".starts_with(&self.pending) {
                return Err(self.unexpected());
            }
        }
        Ok(())
    }

    /// Whether a line was begun and not finished (a connection must not end there).
    pub fn is_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    fn unexpected(&self) -> String {
        format!(
            "after {} acknowledgements the agent answered {:?}, not \"OK\\n\"",
            self.count,
            String::from_utf8_lossy(&self.pending)
        )
    }
}

/// One connection streaming `lines[from..]` to a Netcat source with `ack_every_event: true`,
/// written by a thread while the acknowledgements are read here. Lines `[from, acked())` are
/// acknowledged (each `OK` answers one line, in order, after its put committed).
pub struct AckedStream {
    reader: TcpStream,
    acks: Acks,
    writer: Option<JoinHandle<()>>,
    sent_all: Arc<AtomicBool>,
    /// The index of the first line this connection sends.
    pub from: usize,
    ended: bool,
}

impl AckedStream {
    /// Connects to the agent's Netcat source at `addr` (retrying while it starts) and starts
    /// sending `lines[from..]`.
    pub fn open(flumen: &mut Flumen, addr: SocketAddr, lines: Arc<Vec<String>>, from: usize) -> AckedStream {
        AckedStream::over(flumen.connect(addr, Duration::from_secs(120)), lines, from)
    }

    /// As [`AckedStream::open`], over a connection already made.
    pub fn over(stream: TcpStream, lines: Arc<Vec<String>>, from: usize) -> AckedStream {
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("set a read timeout");
        let reader = stream.try_clone().expect("clone the connection");
        let sent_all = Arc::new(AtomicBool::new(false));
        let done = sent_all.clone();
        let writer = std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = Vec::with_capacity(1 << 20);
            for chunk in lines[from..].chunks(4096) {
                buf.clear();
                for l in chunk {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                }
                if stream.write_all(&buf).is_err() {
                    return;
                }
            }
            if stream.shutdown(std::net::Shutdown::Write).is_ok() {
                done.store(true, Ordering::SeqCst);
            }
        });
        AckedStream { reader, acks: Acks::default(), writer: Some(writer), sent_all, from, ended: false }
    }

    /// One past the last acknowledged line.
    pub fn acked(&self) -> usize {
        self.from + self.acks.count
    }

    /// Whether the writer is still writing (it has not handed every line to the socket).
    pub fn still_sending(&self) -> bool {
        !self.sent_all.load(Ordering::SeqCst)
    }

    /// Whether the agent closed the connection (or it failed).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads acknowledgements until `stop(acked())` holds, the connection ends or `timeout`
    /// passes; answers `acked()`. Panics on an answer other than `OK\n`.
    pub fn read_until(&mut self, timeout: Duration, mut stop: impl FnMut(usize) -> bool) -> usize {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 64 * 1024];
        while !self.ended && !stop(self.acked()) && Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => self.ended = true,
                Ok(n) => self.acks.feed(&buf[..n]).unwrap_or_else(|e| panic!("{e}")),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => self.ended = true,
            }
        }
        self.acked()
    }

    /// Waits for the writer thread (it ends when every line is written or the connection broke).
    pub fn finish(mut self) -> usize {
        let _ = self.reader.shutdown(std::net::Shutdown::Both);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.acked()
    }
}

/// A line index of `lines` (each line unique), for checking output against input.
pub fn line_index(lines: &[String]) -> std::collections::HashMap<&str, usize> {
    let index: std::collections::HashMap<&str, usize> =
        lines.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    assert_eq!(index.len(), lines.len(), "input lines are unique");
    index
}

/// What the output holds compared with the input lines.
#[derive(Debug, Default)]
pub struct Delivery {
    /// How often each input line is in the output.
    pub seen: Vec<u32>,
    /// Complete output lines that are no input line (torn or foreign).
    pub torn: Vec<String>,
    /// Files whose last line has no LF (a write cut by a kill).
    pub partial_files: usize,
}

impl Delivery {
    /// Reads every output file under `dir` and counts each line of `lines` (indexed by `index`).
    pub fn read(dir: &Path, lines: &[String], index: &std::collections::HashMap<&str, usize>) -> Delivery {
        let (out, partial_files) = output_lines(dir);
        let mut seen = vec![0u32; lines.len()];
        let mut torn = Vec::new();
        for l in out {
            match index.get(l.as_str()) {
                Some(&i) => seen[i] += 1,
                None => torn.push(l),
            }
        }
        Delivery { seen, torn, partial_files }
    }

    /// Indexes below `acked` that never arrived.
    pub fn lost(&self, acked: usize) -> Vec<usize> {
        (0..acked).filter(|&i| self.seen[i] == 0).collect()
    }

    /// Extra copies in all.
    pub fn duplicates(&self) -> usize {
        self.seen.iter().map(|&c| c.saturating_sub(1) as usize).sum()
    }

    /// Line numbers delivered more than once, as coalesced ranges `a..b` (at most `max` shown).
    pub fn duplicate_ranges(&self, max: usize) -> String {
        ranges(self.seen.iter().enumerate().filter(|(_, &c)| c > 1).map(|(i, _)| i), max)
    }
}

/// `indexes` (ascending) as coalesced ranges `a..b`, at most `max` of them shown.
pub fn ranges(indexes: impl IntoIterator<Item = usize>, max: usize) -> String {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in indexes {
        match out.last_mut() {
            Some((_, end)) if *end == i => *end = i + 1,
            _ => out.push((i, i + 1)),
        }
    }
    let shown: Vec<String> = out.iter().take(max).map(|(a, b)| format!("{a}..{b}")).collect();
    let more = out.len().saturating_sub(max);
    format!("[{}]{}", shown.join(", "), if more > 0 { format!(" and {more} more ranges") } else { String::new() })
}

/// Compares the lines `got` with the lines `sent`, both as multisets: (lines of `sent` missing
/// from `got`, extra copies in `got`). Panics, naming `what`, on a line never sent.
pub fn compare(got: &[String], sent: &[String], what: &str) -> (usize, usize) {
    let got = multiset(got.iter().cloned());
    let want = multiset(sent.iter().cloned());
    if let Some(stray) = got.keys().find(|l| !want.contains_key(*l)) {
        panic!("{what} holds a line that was never sent: {stray:?}");
    }
    let missing = want.iter().map(|(l, n)| n.saturating_sub(got.get(l).copied().unwrap_or(0))).sum();
    let duplicates = got.iter().map(|(l, n)| n.saturating_sub(want.get(l).copied().unwrap_or(0))).sum();
    (missing, duplicates)
}

/// The Python of the virtual environment holding the Python peers (Apache Avro's and Apache
/// Thrift's libraries), made by `make pyenv`: `$FLUMEN_PYENV/bin/python`, else under
/// `$CARGO_TARGET_DIR/pyenv`, else `~/.cache/flumen-target/pyenv`.
///
/// Panics (the test fails, it never skips) when the environment or one of its libraries is missing.
pub fn pyenv_python() -> PathBuf {
    let dir = std::env::var_os("FLUMEN_PYENV").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
        match target.map(|t| t.join("pyenv")).filter(|p| p.join("bin/python").exists()) {
            Some(p) => p,
            None => PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/flumen-target/pyenv"),
        }
    });
    let python = dir.join("bin/python");
    let ok = Command::new(&python).args(["-c", "import avro.ipc, thrift"]).status().is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} lacks Apache Avro's or Thrift's Python library: run `make pyenv` (make test does)",
        python.display()
    );
    python
}
