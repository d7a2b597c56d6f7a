//! Offline tools on a `RocksDb` channel directory, for an operator while no agent runs it:
//! `flumen channel inspect | verify | export | import` (and the printing of `salvage`,
//! `dead-letters` and `export-dead-letters`).
//!
//! `inspect`, `verify` and `export` open the database read-only and change nothing in it. They
//! first take a read lock (`fcntl(F_SETLK, F_RDLCK)`) on the directory's `LOCK` file, the file
//! RocksDB write-locks while it has the database open: a running agent makes them fail with a
//! [`StorageErrorKind::Lock`] error naming `LOCK`, and while they run an agent cannot open the
//! channel (it retries, as it does for any held lock). `import` opens the database for writing,
//! so RocksDB's own lock keeps it apart from a running agent.
//!
//! # The NDJSON shape of `export` and `import`
//! One event per line, in queue order (oldest first):
//!
//! ```text
//! {"seq":0,"headers":{"host":"edge-1","timestamp":"1764583200123"},"body":"081109 203615 148 INFO dfs.DataNode: ..."}
//! {"seq":1,"headers":{},"body_base64":"U3DpY2lhbCBsaW5l"}
//! ```
//!
//! `seq` is the event's sequence number in the exported channel; `headers` its headers (always
//! UTF-8 text); the body is `body` when it is UTF-8 text, else `body_base64` (standard base64
//! with padding, RFC 4648 section 4), so that any body bytes travel intact. A line with a UTF-8
//! `body` is also an event of the `Http` source's `Ndjson` format. `import` reads the same lines
//! (`seq` is ignored: imported events are appended after what the channel holds, in the order
//! of the lines).
//!
//! # Encrypted channels
//! A channel with `encryption` is read (and `import` seals) with its keys, given as the topology
//! that runs it: `flumen channel export --topology agent.ron --channel c1` (the channel's `dir`
//! comes from there too; a `DIR` given as well overrides it, e.g. for a copy). Without them, a
//! tool refuses an encrypted channel with an error naming the key id.
//!
//! `export --dead-letter` writes the dead letters instead, one per line:
//! `{"seq":500,"reason":"does not decode: ...","size":20,"value_base64":"..."}` (`seq` is `null`
//! and `key_base64` added when the key is not a sequence number). `import` refuses such lines.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use rocksdb::{ColumnFamilyDescriptor, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::crypt::{Family, Keys};
use super::salvage::{self, Entry};
use super::store::{self, key, DeadLetter, DEAD_LETTER_CF};
use crate::channel::{ChannelError, StorageErrorKind};
use crate::event::{Event, Headers};

/// The header whose value (milliseconds since the Unix epoch, as the `Timestamp` interceptor and
/// the syslog sources set it) `inspect` reports as an event's time: events carry no time of
/// their own.
pub const TIMESTAMP_HEADER: &str = "timestamp";

/// Why a channel tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The channel's storage: `Lock` when an agent holds the directory (the path is its `LOCK`
    /// file), `Corruption` when it is damaged (`import` into a damaged channel), `Io`, ...
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The directory is not a channel's: it holds no RocksDB database (no `CURRENT` file).
    #[error("{}: not a RocksDb channel directory (it has no CURRENT file)", .0.display())]
    NotAChannel(PathBuf),
    /// A line of `import`'s input is not an event (nothing was imported).
    #[error("input line {line}: {message}; nothing was imported")]
    Input {
        /// The line number, from 1.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// `--topology` does not load, or has no `RocksDb` channel `--channel`.
    #[error("{0}")]
    Topology(String),
    /// Reading the input or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// "writing the output", "reading the input".
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

fn output(source: std::io::Error) -> ToolError {
    ToolError::Io { what: "writing the output", source }
}

/// A read lock on a channel directory's `LOCK` file, held while the value lives.
///
/// RocksDB write-locks `LOCK` with `fcntl(F_SETLK, F_WRLCK)` over the whole file
/// (`env/fs_posix.cc`) for as long as a database is open for writing; a read lock conflicts with
/// it both ways. Locks of `fcntl` belong to the process: this process must not open the same
/// database for writing while it holds one.
#[derive(Debug)]
pub struct DirLock {
    _file: Option<File>,
}

/// Takes a read lock on `dir/LOCK` (see [`DirLock`]). A directory without a `LOCK` file was never
/// opened for writing, so no agent holds it: the lock is then empty.
///
/// # Errors
/// [`StorageErrorKind::Lock`], naming `dir/LOCK`, when another process (an agent running the
/// channel) holds it; the I/O error when `LOCK` cannot be opened.
pub fn lock(dir: &Path) -> Result<DirLock, ChannelError> {
    let path = dir.join("LOCK");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirLock { _file: None }),
        Err(e) => return Err(ChannelError::io(&path, &e)),
    };
    // SAFETY: a zeroed `flock` is a valid value; fcntl(2) reads it and the fd is open.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    if rc == -1 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => lock_held(&path, &e.to_string()),
            _ => ChannelError::io(&path, &e),
        });
    }
    Ok(DirLock { _file: Some(file) })
}

fn lock_held(lock_file: &Path, status: &str) -> ChannelError {
    ChannelError::storage(
        StorageErrorKind::Lock,
        lock_file,
        format!("another process holds the channel (an agent running it?): stop it first ({status})"),
    )
}

/// A channel database opened read-only under a [`DirLock`].
struct ReadOnly {
    db: DB,
    _lock: DirLock,
}

/// Opens `dir` read-only with the channel's own options (paranoid checks, `AbsoluteConsistency`
/// WAL replay: damage fails the open) after taking its lock.
fn open_read_only(dir: &Path) -> Result<ReadOnly, ToolError> {
    if !dir.is_dir() {
        return Err(ChannelError::storage(StorageErrorKind::Io, dir, "not a directory").into());
    }
    if store::missing_current(dir) {
        return Err(ChannelError::storage(
            StorageErrorKind::Corruption,
            &dir.join("CURRENT"),
            "CURRENT is missing beside data files",
        )
        .into());
    }
    if !dir.join("CURRENT").exists() {
        return Err(ToolError::NotAChannel(dir.to_path_buf()));
    }
    let lock = lock(dir)?;
    let opts = store::db_options(&store::Tuning::default());
    let names = DB::list_cf(&opts, dir).map_err(|e| ChannelError::rocksdb(dir, &e))?;
    let cfs = names.iter().map(|n| ColumnFamilyDescriptor::new(n, store::db_options(&store::Tuning::default())));
    let db = DB::open_cf_descriptors_read_only(&opts, dir, cfs, false).map_err(|e| ChannelError::rocksdb(dir, &e))?;
    Ok(ReadOnly { db, _lock: lock })
}

/// Which channel a tool works on: its directory, and the keys of an encrypted one.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The channel's `dir` (default: the `dir` of `--channel` in `--topology`).
    #[arg(required_unless_present = "topology")]
    pub dir: Option<PathBuf>,
    /// The topology and channel whose `encryption` keys (and `dir`) to use.
    #[command(flatten)]
    pub keys: KeysArgs,
}

/// The topology holding a channel's `encryption` keys.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeysArgs {
    /// A topology file holding the channel: its `dir` and its `encryption` keys are used.
    #[arg(long, requires = "channel")]
    pub topology: Option<PathBuf>,
    /// The channel's name in `--topology`.
    #[arg(long, requires = "topology")]
    pub channel: Option<String>,
}

impl KeysArgs {
    /// The channel's `dir` and keys from the topology; `None` without `--topology`.
    ///
    /// # Errors
    /// [`ToolError::Topology`] when the topology does not load or has no such `RocksDb` channel
    /// (or `Spillable` channel, whose overflow's `dir` and keys are used);
    /// [`ToolError::Channel`] when a key file cannot be read.
    pub fn load(&self) -> Result<Option<(PathBuf, Keys)>, ToolError> {
        let (Some(path), Some(name)) = (&self.topology, &self.channel) else { return Ok(None) };
        let t = crate::topology::load(path).map_err(|e| ToolError::Topology(e.to_string()))?;
        match t.channels.get(name) {
            Some(crate::topology::ChannelConfig::RocksDb(c)) => {
                Ok(Some((c.dir.clone(), Keys::load(name, c.encryption.as_ref())?)))
            }
            // A Spillable channel's overflow is a RocksDb channel's directory.
            Some(crate::topology::ChannelConfig::Spillable(s)) => {
                let c = s.rocksdb();
                Ok(Some((c.dir.clone(), Keys::load(name, c.encryption.as_ref())?)))
            }
            _ => Err(ToolError::Topology(format!("{}: no RocksDb or Spillable channel \"{name}\"", path.display()))),
        }
    }

    /// The keys of the channel in `dir`: from the topology, else plaintext storage.
    ///
    /// # Errors
    /// As [`KeysArgs::load`].
    pub fn keys_for(&self, dir: &Path) -> Result<Keys, ToolError> {
        Ok(self.load()?.map_or_else(|| Keys::plain(&dir.display().to_string()), |(_, keys)| keys))
    }
}

impl Target {
    /// The directory and keys.
    ///
    /// # Errors
    /// As [`KeysArgs::load`].
    pub fn resolve(&self) -> Result<(PathBuf, Keys), ToolError> {
        match (self.keys.load()?, &self.dir) {
            (Some((_, keys)), Some(dir)) => Ok((dir.clone(), keys)),
            (Some((dir, keys)), None) => Ok((dir, keys)),
            (None, Some(dir)) => Ok((dir.clone(), Keys::plain(&dir.display().to_string()))),
            (None, None) => Err(ToolError::Topology("give the channel's DIR or --topology and --channel".into())),
        }
    }
}

/// Counts under which keys the queue's values are sealed and checks that `keys` read them (as
/// the channel does when it opens).
fn census(db: &DB, keys: &Keys) -> Result<store::Census, ToolError> {
    let mut census = store::Census::default();
    let mut it = db.raw_iterator();
    it.seek_to_first();
    while it.valid() {
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            census.add(k, v);
        }
        it.next();
    }
    census.check(keys)?;
    Ok(census)
}

/// What one pass over a channel's queue found.
#[derive(Debug, Default)]
struct Pass {
    events: u64,
    damage: Vec<String>,
    /// Whether some damage is more than events that do not decode (which an agent moves to the
    /// dead letters when it takes them): unreadable blocks, keys that are no sequence numbers.
    unreadable: bool,
}

/// Hands every event of the queue of `db`, in sequence order, to `f` with its sequence number
/// and stored size; values that cannot be read or decoded are listed in the answer instead.
fn each_event(
    db: &DB,
    keys: &Keys,
    mut f: impl FnMut(u64, Event, usize) -> Result<(), ToolError>,
) -> Result<Pass, ToolError> {
    let mut pass = Pass::default();
    let mut failed: Option<ToolError> = None;
    let scanned = salvage::scan(db, None, &key(0), &key(u64::MAX), |entry| {
        match entry {
            Entry::Value(k, v) => {
                let Ok(seq) = <[u8; 8]>::try_from(k) else {
                    pass.unreadable = true;
                    pass.damage.push(format!("a key of {} bytes is not a sequence number", k.len()));
                    return Ok(());
                };
                let seq = u64::from_be_bytes(seq);
                let plain = match keys.open(Family::Queue, k, v) {
                    Ok(plain) => plain,
                    Err(e) => {
                        pass.damage.push(format!("event {seq} ({} bytes) does not open: {e}", v.len()));
                        return Ok(());
                    }
                };
                match Event::decode(&mut Bytes::from(plain)) {
                    Ok(event) => {
                        pass.events += 1;
                        if let Err(e) = f(seq, event, v.len()) {
                            failed = Some(e);
                            return Err(ChannelError::Closed);
                        }
                    }
                    Err(e) => pass.damage.push(format!("event {seq} ({} bytes) does not decode: {e}", v.len())),
                }
            }
            Entry::Unreadable { from, until, status } => {
                pass.unreadable = true;
                pass.damage.push(match until {
                    Some(u) => format!("events {from}..{u} (those that existed) are unreadable: {status}"),
                    None => format!("events from {from} on are unreadable: {status}"),
                });
            }
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    scanned?;
    Ok(pass)
}

/// The dead letters of an open database, and what could not be read of them.
fn each_dead_letter(
    db: &DB,
    keys: &Keys,
    mut f: impl FnMut(DeadLetter) -> Result<(), ToolError>,
) -> Result<Pass, ToolError> {
    let mut pass = Pass::default();
    if db.cf_handle(DEAD_LETTER_CF).is_none() {
        return Ok(pass);
    }
    let mut failed: Option<ToolError> = None;
    let scanned = salvage::scan(db, Some(DEAD_LETTER_CF), &key(0), &key(u64::MAX), |entry| {
        match entry {
            Entry::Value(k, v) => {
                pass.events += 1;
                if let Err(e) = f(DeadLetter::open(keys, k, v)) {
                    failed = Some(e);
                    return Err(ChannelError::Closed);
                }
            }
            Entry::Unreadable { from, status, .. } => {
                pass.unreadable = true;
                pass.damage.push(format!("dead letters from {from} on are unreadable: {status}"));
            }
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    scanned?;
    Ok(pass)
}

/// What `inspect` reports of a channel directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The directory.
    pub dir: PathBuf,
    /// Events in the queue (offline every one is available: none is in flight).
    pub events: u64,
    /// The first and last sequence number held, if any.
    pub seqs: Option<(u64, u64)>,
    /// The events' body bytes.
    pub body_bytes: u64,
    /// The events' stored bytes: headers and bodies in flumen's event codec
    /// ([`Event::encoded_len`]).
    pub stored_bytes: u64,
    /// The directory's files' bytes on disk (tables, WAL, manifest; `ChannelDiskBytes`).
    pub disk_bytes: u64,
    /// The oldest and newest [`TIMESTAMP_HEADER`] (milliseconds since the Unix epoch) among the
    /// events that have one.
    pub time_range: Option<(i64, i64)>,
    /// Events without a [`TIMESTAMP_HEADER`] in epoch milliseconds.
    pub without_time: u64,
    /// Dead letters held beside the queue.
    pub dead_letters: u64,
    /// Values stored in plaintext (all of them for a channel without `encryption`).
    pub plaintext_values: u64,
    /// Key id → values sealed under it (a key may be removed from `keys` once it has none).
    pub sealed_values: std::collections::BTreeMap<String, u64>,
    /// What could not be read or decoded (empty for a healthy channel).
    pub damage: Vec<String>,
}

fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis).map_or_else(|_| format!("{millis} ms"), |t| t.to_string())
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "channel:      {}", self.dir.display())?;
        match self.seqs {
            Some((a, b)) => writeln!(f, "events:       {} (sequence numbers {a}..={b})", self.events)?,
            None => writeln!(f, "events:       0")?,
        }
        writeln!(f, "body bytes:   {}", self.body_bytes)?;
        writeln!(f, "stored bytes: {} (headers and bodies, as stored)", self.stored_bytes)?;
        writeln!(f, "disk bytes:   {} (the directory's files)", self.disk_bytes)?;
        let source = format!("from the `{TIMESTAMP_HEADER}` header; events carry no time of their own");
        match self.time_range {
            Some((old, new)) => {
                let missing = match self.without_time {
                    0 => String::new(),
                    n => format!("; {n} events have none"),
                };
                writeln!(f, "oldest event: {} ({source}{missing})", rfc3339(old))?;
                writeln!(f, "newest event: {} ({source}{missing})", rfc3339(new))?;
            }
            None if self.events == 0 => {
                writeln!(f, "oldest event: none")?;
                writeln!(f, "newest event: none")?;
            }
            None => {
                let why = format!("no event has a `{TIMESTAMP_HEADER}` header (the Timestamp interceptor sets one); events carry no time of their own");
                writeln!(f, "oldest event: unknown: {why}")?;
                writeln!(f, "newest event: unknown: {why}")?;
            }
        }
        writeln!(f, "in flight:    none (no agent holds the channel; a take not committed before it stopped is available again)")?;
        writeln!(f, "dead letters: {}", self.dead_letters)?;
        if self.sealed_values.is_empty() {
            writeln!(f, "encryption:   none ({} values in plaintext)", self.plaintext_values)?;
        } else {
            let sealed: Vec<String> =
                self.sealed_values.iter().map(|(id, n)| format!("{n} under key \"{id}\"")).collect();
            writeln!(f, "encryption:   sealed: {}; {} values in plaintext", sealed.join(", "), self.plaintext_values)?;
        }
        for d in &self.damage {
            writeln!(f, "damaged:      {d}")?;
        }
        Ok(())
    }
}

/// Counts the events of the channel directory `dir` and their bytes and times; changes nothing.
///
/// # Errors
/// [`ToolError`]: `Lock` (naming `LOCK`) while an agent runs the channel, `Corruption` when it
/// does not open, [`ToolError::NotAChannel`].
pub fn inspect(dir: &Path, keys: &Keys) -> Result<Inspection, ToolError> {
    let ro = open_read_only(dir)?;
    let census = census(&ro.db, keys)?;
    let mut out = Inspection {
        dir: dir.to_path_buf(),
        events: 0,
        seqs: None,
        body_bytes: 0,
        stored_bytes: 0,
        disk_bytes: store::dir_bytes(dir),
        time_range: None,
        without_time: 0,
        dead_letters: 0,
        plaintext_values: census.plain,
        sealed_values: census.sealed.iter().map(|(id, (n, _))| (id.clone(), *n)).collect(),
        damage: Vec::new(),
    };
    let pass = each_event(&ro.db, keys, |seq, event, stored| {
        out.seqs = Some(out.seqs.map_or((seq, seq), |(a, _)| (a, seq)));
        out.body_bytes += event.body.len() as u64;
        out.stored_bytes += stored as u64;
        match event.headers.get(TIMESTAMP_HEADER).and_then(|t| t.trim().parse::<i64>().ok()) {
            Some(t) => {
                out.time_range = Some(out.time_range.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
            }
            None => out.without_time += 1,
        }
        Ok(())
    })?;
    out.events = pass.events;
    out.damage = pass.damage;
    let dead = each_dead_letter(&ro.db, keys, |_| Ok(()))?;
    out.dead_letters = dead.events;
    out.damage.extend(dead.damage);
    Ok(out)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The directory.
    pub dir: PathBuf,
    /// Events that were read and decode.
    pub events: u64,
    /// Dead letters held beside the queue (set aside earlier; not damage).
    pub dead_letters: u64,
    /// Each problem: the open's corruption status, a span of unreadable events, an event that
    /// does not decode. Empty: the channel is healthy.
    pub damage: Vec<String>,
    /// Whether the damage needs `flumen channel salvage`: the database does not open, or blocks
    /// cannot be read. Events that merely do not decode are moved to the dead letters by the
    /// agent when it takes them.
    pub needs_salvage: bool,
}

impl Verification {
    /// Whether nothing is damaged.
    pub fn healthy(&self) -> bool {
        self.damage.is_empty()
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.damage {
            writeln!(f, "damaged: {d}")?;
        }
        if self.healthy() {
            writeln!(
                f,
                "{}: healthy: {} events, every one decodes; {} dead letters",
                self.dir.display(),
                self.events,
                self.dead_letters
            )
        } else {
            let remedy = if self.needs_salvage {
                format!(
                    "`flumen channel salvage {}` sets the damaged directory aside and keeps what is readable",
                    self.dir.display()
                )
            } else {
                "an agent moves each event that does not decode to the dead letters when it takes it, and goes on"
                    .into()
            };
            writeln!(
                f,
                "{}: damaged: {} problem{}; {} events decode; {remedy}",
                self.dir.display(),
                self.damage.len(),
                if self.damage.len() == 1 { "" } else { "s" },
                self.events,
            )
        }
    }
}

/// Reads every value of the channel directory `dir` (block checksums verified) and decodes every
/// event; changes nothing. Damage is in the answer, not an error: a directory that does not open
/// for corruption (a damaged WAL record, a missing `CURRENT`, a garbage `MANIFEST`) is one
/// problem, each unreadable span of events and each event that does not decode another.
///
/// # Errors
/// [`ToolError`]: `Lock` (naming `LOCK`) while an agent runs the channel; other failures to open
/// than corruption; [`ToolError::NotAChannel`].
/// A sealed value that does not authenticate is damage; values under a key id that `keys` lacks,
/// or a wrong key, are an error ([`ChannelError::Key`]), as when the channel opens.
pub fn verify(dir: &Path, keys: &Keys) -> Result<Verification, ToolError> {
    let mut out =
        Verification { dir: dir.to_path_buf(), events: 0, dead_letters: 0, damage: Vec::new(), needs_salvage: false };
    let ro = match open_read_only(dir) {
        Ok(ro) => ro,
        Err(ToolError::Channel(e)) if e.storage_kind() == Some(StorageErrorKind::Corruption) => {
            out.damage.push(format!("the database does not open: {e}"));
            out.needs_salvage = true;
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    census(&ro.db, keys)?;
    let pass = each_event(&ro.db, keys, |_, _, _| Ok(()))?;
    out.events = pass.events;
    out.damage = pass.damage;
    let dead = each_dead_letter(&ro.db, keys, |_| Ok(()))?;
    out.dead_letters = dead.events;
    out.damage.extend(dead.damage);
    out.needs_salvage = pass.unreadable || dead.unreadable;
    Ok(out)
}

/// One exported event (see the module documentation).
#[derive(Serialize)]
struct ExportedEvent<'a> {
    seq: u64,
    headers: &'a Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

/// One exported dead letter (see the module documentation).
#[derive(Serialize)]
struct ExportedDeadLetter<'a> {
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    reason: &'a str,
    size: usize,
    value_base64: String,
}

/// What `export` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Lines written: events (or dead letters).
    pub written: u64,
    /// What could not be read or decoded, and so is not in the output (empty for a healthy
    /// channel).
    pub damage: Vec<String>,
}

/// Writes the events (with `dead_letter`, the dead letters) of the channel directory `dir` to
/// `out` as NDJSON, in sequence order (see the module documentation); removes nothing.
///
/// # Errors
/// [`ToolError`]: `Lock` (naming `LOCK`) while an agent runs the channel, `Corruption` when it
/// does not open, [`ToolError::Io`] when writing fails.
pub fn export(dir: &Path, keys: &Keys, dead_letter: bool, out: &mut impl Write) -> Result<ExportReport, ToolError> {
    let ro = open_read_only(dir)?;
    census(&ro.db, keys)?;
    let mut line = Vec::with_capacity(4096);
    let mut emit = |out: &mut dyn Write, value: &dyn erased::Json| -> Result<(), ToolError> {
        line.clear();
        value.write(&mut line);
        line.push(b'\n');
        out.write_all(&line).map_err(output)
    };
    let pass = if dead_letter {
        each_dead_letter(&ro.db, keys, |l| {
            let seq = l.seq();
            let exported = ExportedDeadLetter {
                seq,
                key_base64: seq.is_none().then(|| BASE64.encode(&l.key)),
                reason: &l.reason,
                size: l.value.len(),
                value_base64: BASE64.encode(&l.value),
            };
            emit(out, &exported)
        })?
    } else {
        each_event(&ro.db, keys, |seq, event, _| {
            let (body, body_base64) = crate::codec::text::to_fields(&event.body);
            let exported = ExportedEvent { seq, headers: &event.headers, body, body_base64 };
            emit(out, &exported)
        })?
    };
    out.flush().map_err(output)?;
    Ok(ExportReport { written: pass.events, damage: pass.damage })
}

/// Serializing either exported shape through one closure.
mod erased {
    /// A value written as one JSON text.
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            serde_json::to_writer(out, self).expect("string maps, strings and numbers always serialize");
        }
    }
}

/// One line of `import`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportedEvent {
    /// The sequence number in the exported channel: ignored.
    #[serde(default, rename = "seq")]
    _seq: Option<u64>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
}

/// What `import` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The directory.
    pub dir: PathBuf,
    /// Events imported.
    pub imported: u64,
    /// The sequence numbers they were given.
    pub seqs: std::ops::Range<u64>,
    /// Events the channel holds now.
    pub held: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: imported {} events (sequence numbers {}..{}); the channel holds {} events",
            self.dir.display(),
            self.imported,
            self.seqs.start,
            self.seqs.end,
            self.held
        )
    }
}

/// Parses one input line into an event.
fn parse_line(line: &[u8]) -> Result<Event, String> {
    let parsed: ImportedEvent = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let body =
        crate::codec::text::from_fields(parsed.body, parsed.body_base64.as_deref()).map_err(|e| e.to_string())?;
    Ok(Event { headers: parsed.headers, body })
}

/// Appends the events of `input` (NDJSON, see the module documentation; empty lines are skipped)
/// to the channel directory `dir` (created when missing), after the events it holds, in input
/// order. The whole input is one RocksDB write batch, fsynced: every event is imported or none
/// (also when the import is killed); the batch is held in memory meanwhile (about the size of the
/// input). With a cipher in `keys`, every event is sealed under the active key.
///
/// # Errors
/// [`ToolError::Input`] for the first line that is not an event (nothing is imported);
/// [`ToolError::Channel`]: `Lock` while an agent runs the channel, `Corruption` when the channel
/// is damaged (salvage it first), `NoSpace`, ...
pub fn import(dir: &Path, keys: &Keys, input: impl BufRead) -> Result<ImportReport, ToolError> {
    let opened = match store::open_checked(dir, keys, &store::Tuning::default()) {
        Err(ChannelError::Storage { kind: StorageErrorKind::Lock, status, .. }) => {
            return Err(lock_held(&dir.join("LOCK"), &status).into())
        }
        other => other?,
    };
    let first = opened.next_seq;
    let mut batch = WriteBatch::default();
    let mut value = bytes::BytesMut::with_capacity(64 * 1024);
    let mut n = 0u64;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|source| ToolError::Io { what: "reading the input", source })?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event = parse_line(line).map_err(|message| ToolError::Input { line: i as u64 + 1, message })?;
        value.clear();
        event.encode(&mut value);
        let k = key(first + n);
        batch.put(k, keys.seal(Family::Queue, &k, &value));
        n += 1;
    }
    if n > 0 {
        // The key index in the same batch: the next open reads no event either.
        let sealing = keys.cipher.as_ref().map_or("", |c| c.active());
        opened.index.clone().append(&opened.db, &mut batch, first..first + n, sealing);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        opened.db.write_opt(batch, &wo).map_err(|e| ChannelError::rocksdb(dir, &e))?;
    }
    Ok(ImportReport { dir: dir.to_path_buf(), imported: n, seqs: first..first + n, held: opened.queue.held() + n })
}

/// `flumen channel inspect DIR`: prints [`inspect`]; exit 1 when damage was found.
///
/// # Errors
/// As [`inspect`].
pub fn inspect_cli(target: &Target) -> Result<ExitCode, ToolError> {
    let (dir, keys) = target.resolve()?;
    let inspection = inspect(&dir, &keys)?;
    print!("{inspection}");
    Ok(if inspection.damage.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `flumen channel verify DIR`: prints [`verify`]; exit 0 when healthy, 1 listing the damage.
///
/// # Errors
/// As [`verify`].
pub fn verify_cli(target: &Target) -> Result<ExitCode, ToolError> {
    let (dir, keys) = target.resolve()?;
    let v = verify(&dir, &keys)?;
    print!("{v}");
    Ok(if v.healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `flumen channel export DIR [--dead-letter]`: NDJSON on stdout, a summary on stderr; exit 1
/// (after writing what is readable) when damage kept events out of the output.
///
/// # Errors
/// As [`export`].
pub fn export_cli(target: &Target, dead_letter: bool) -> Result<ExitCode, ToolError> {
    let (dir, keys) = target.resolve()?;
    let dir = dir.as_path();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let report = export(dir, &keys, dead_letter, &mut out)?;
    drop(out);
    let what = if dead_letter { "dead letters" } else { "events" };
    eprintln!("{}: exported {} {what}", dir.display(), report.written);
    for d in &report.damage {
        eprintln!("damaged, not exported: {d}");
    }
    if report.damage.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("`flumen channel verify {}` lists the damage, `salvage` sets it aside", dir.display());
        Ok(ExitCode::FAILURE)
    }
}

/// `flumen channel import DIR < events.ndjson`: prints the [`ImportReport`].
///
/// # Errors
/// As [`import`].
pub fn import_cli(target: &Target) -> Result<ExitCode, ToolError> {
    let (dir, keys) = target.resolve()?;
    let report = import(&dir, &keys, std::io::stdin().lock())?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// `flumen channel salvage DIR`: runs [`super::salvage_dir`] and prints its counts.
///
/// # Errors
/// As [`super::salvage_dir`].
pub fn salvage_cli(target: &Target) -> Result<ExitCode, ToolError> {
    let (dir, keys) = target.resolve()?;
    let dir = dir.as_path();
    match super::salvage_dir(dir, &keys)? {
        None => println!("{}: no damage found; nothing changed", dir.display()),
        Some((report, held)) => {
            println!("{}: damaged ({})", dir.display(), report.cause);
            println!("salvaged: {} events (the channel now holds {held})", report.salvaged);
            println!("dead-lettered: {}", report.dead_lettered);
            for span in &report.unreadable {
                println!("unreadable: {span}");
            }
            println!("damaged original kept at: {}", report.damaged_copy.display());
            if report.repaired {
                println!("RocksDB repair rebuilt the copy's MANIFEST before reading it");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `flumen channel dead-letters DIR`: one row per dead letter (sequence, size, reason).
///
/// # Errors
/// As [`store::dead_letters`].
pub fn dead_letters_cli(dir: &Path, keys: &KeysArgs) -> Result<ExitCode, ToolError> {
    let letters = store::dead_letters(dir, &keys.keys_for(dir)?)?;
    println!("{:>20} {:>10}  reason", "seq", "bytes");
    for l in &letters {
        let seq = l.seq().map_or_else(|| format!("0x{}", hex(&l.key)), |s| s.to_string());
        println!("{seq:>20} {:>10}  {}", l.value.len(), l.reason);
    }
    println!("{} dead letters", letters.len());
    Ok(ExitCode::SUCCESS)
}

/// `flumen channel export-dead-letters DIR OUT`: the dead letters as JSON Lines
/// `{"seq", "key_hex", "reason", "size", "value_hex"}` in the file `out`.
///
/// # Errors
/// As [`store::dead_letters`]; [`ToolError::Io`] when `out` cannot be written.
pub fn export_dead_letters_cli(dir: &Path, out: &Path, keys: &KeysArgs) -> Result<ExitCode, ToolError> {
    let letters = store::dead_letters(dir, &keys.keys_for(dir)?)?;
    let file = File::create(out).map_err(output)?;
    let mut file = std::io::BufWriter::new(file);
    for l in &letters {
        let line = serde_json::json!({
            "seq": l.seq(),
            "key_hex": hex(&l.key),
            "reason": l.reason,
            "size": l.value.len(),
            "value_hex": hex(&l.value),
        });
        writeln!(file, "{line}").map_err(output)?;
    }
    file.flush().map_err(output)?;
    println!("{} dead letters written to {}", letters.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    const LINE: &str = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating";

    fn events() -> Vec<Event> {
        vec![
            Event::new(LINE).with_header("host", "edge-1").with_header("timestamp", "1764583200123"),
            Event::new(b"Jun 14 15:16:01 combo \xe9t\xe9 sshd(pam_unix)[19939]\x00\xff".to_vec()),
            Event::new(""),
        ]
    }

    #[test]
    fn export_and_import_round_trip_headers_and_any_body_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let mut ndjson = Vec::new();
        for e in events() {
            let text = std::str::from_utf8(&e.body).ok();
            let line = ExportedEvent {
                seq: 7,
                headers: &e.headers,
                body: text,
                body_base64: text.is_none().then(|| BASE64.encode(&e.body)),
            };
            serde_json::to_writer(&mut ndjson, &line).unwrap();
            ndjson.push(b'\n');
        }
        let report = import(&a, &Keys::default(), &ndjson[..]).unwrap();
        assert_eq!((report.imported, report.seqs.clone(), report.held), (3, 0..3, 3));
        let report = import(&a, &Keys::default(), &ndjson[..]).unwrap();
        assert_eq!((report.seqs.clone(), report.held), (3..6, 6), "appended after what it holds");
        let mut exported = Vec::new();
        assert_eq!(
            export(&a, &Keys::default(), false, &mut exported).unwrap(),
            ExportReport { written: 6, damage: vec![] }
        );
        let text = String::from_utf8(exported.clone()).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("\"body_base64\""), "{text}");
        assert!(text.lines().next().unwrap().starts_with("{\"seq\":0,\"headers\":{\"host\""), "{text}");
        import(&b, &Keys::default(), &exported[..]).unwrap();
        let mut again = Vec::new();
        export(&b, &Keys::default(), false, &mut again).unwrap();
        assert_eq!(again, exported, "export, import, export: the same lines");
        let db = store::open_checked(&b, &Keys::default(), &store::Tuning::default()).unwrap();
        let read = store::read(&db.db, &b, &[0..6], &Keys::default()).unwrap();
        let want: Vec<Event> = events().into_iter().chain(events()).collect();
        assert_eq!(read.events.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), want);
    }

    #[test]
    fn a_bad_line_imports_nothing_and_says_where() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let input =
            format!("{{\"headers\":{{}},\"body\":\"{LINE}\"}}\n\n{{\"body\":\"x\",\"body_base64\":\"eA==\"}}\n");
        let e = import(&dir, &Keys::default(), input.as_bytes()).unwrap_err();
        assert!(matches!(e, ToolError::Input { line: 3, .. }), "{e}");
        for bad in
            ["{\"seq\":1,\"reason\":\"r\",\"size\":1,\"value_base64\":\"eA==\"}", "{\"body_base64\":\"%%\"}", "[1]"]
        {
            assert!(
                matches!(import(&dir, &Keys::default(), bad.as_bytes()), Err(ToolError::Input { line: 1, .. })),
                "{bad}"
            );
        }
        assert_eq!(inspect(&dir, &Keys::default()).unwrap().events, 0, "nothing imported");
    }

    #[test]
    fn inspect_counts_bytes_and_times() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let input: Vec<u8> = events()
            .iter()
            .map(|e| {
                let line = serde_json::json!({"headers": e.headers, "body_base64": BASE64.encode(&e.body)});
                format!("{line}\n")
            })
            .collect::<String>()
            .into_bytes();
        import(&dir, &Keys::default(), &input[..]).unwrap();
        let i = inspect(&dir, &Keys::default()).unwrap();
        assert_eq!(i.events, 3);
        assert_eq!(i.seqs, Some((0, 2)));
        assert_eq!(i.body_bytes, events().iter().map(|e| e.body.len() as u64).sum::<u64>());
        assert_eq!(i.stored_bytes, events().iter().map(|e| e.encoded_len() as u64).sum::<u64>());
        assert_eq!(i.time_range, Some((1764583200123, 1764583200123)));
        assert_eq!(i.without_time, 2);
        let shown = i.to_string();
        assert!(shown.contains("oldest event: 2025-12-01T10:00:00.123Z"), "{shown}");
        assert!(shown.contains("in flight:    none"), "{shown}");

        // (A lock held by another process is tested with a real agent: fcntl locks belong to a
        // process, so one held by this test's own RocksDB would not conflict.)
        assert!(verify(&dir, &Keys::default()).unwrap().healthy());
    }
}
