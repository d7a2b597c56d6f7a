//! `Hdfs`: Flume's HDFS sink on a local or mounted file system. Events go to bucket files whose
//! directory comes from a path template with escapes (`out/%{host}/%Y-%m-%d/%H`), rolled by
//! interval, size, count or idle time, as plain text, gzip or zstd.
//!
//! Each bucket (resolved directory) has one open file, named with the in-use suffix while it is
//! written and renamed without it when it rolls or the sink closes. A batch is written, and
//! flushed to the OS (compressed streams to a sync point), on a blocking thread before the take is
//! committed. An event whose header value could lead out of the base directory is counted in
//! `EventRejectedCount` and written to the `rejected` bucket, or fails the batch (`on_rejected`).

pub mod path;
pub mod roll;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use jiff::tz::TimeZone;
use jiff::Zoned;
use serde::Deserialize;

use self::path::{PathTemplate, Rejection, RoundUnit, Rounding};
use self::roll::{file_names, Format, InUseNames, OpenFile, RollPolicy};
use super::{Sink, SinkError};
use crate::config::duration;
use crate::event::Event;
use crate::metrics::SinkCounters;

/// `Hdfs(path: "out/%{host}/%Y-%m-%d/%H", roll_interval: "30s", roll_size: 1024, roll_count: 10)`.
///
/// Names follow Flume's `hdfs.*` properties in snake case; defaults are Flume's.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HdfsConfig {
    /// The directory template (Flume's `hdfs.path`), relative to the topology file's folder unless
    /// absolute. Escapes: `%Y` year, `%m` month, `%d` day, `%H` hour, `%M` minute, `%S` second
    /// (zero-padded), `%y` two-digit year, `%j` day of year, `%s` seconds since the epoch,
    /// `%{header}` a header's value (empty when absent), `%%` a `%`. Required.
    pub path: String,
    /// Text before each file name (Flume's `hdfs.filePrefix`), with the same escapes as `path`;
    /// events whose prefixes differ go to different files. Default `"FlumeData"`.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,
    /// Text after the counter in each file name, e.g. `".log"` (Flume's `hdfs.fileSuffix`);
    /// compressed formats add `.gz` / `.zst` after it. Default `""`.
    #[serde(default)]
    pub file_suffix: String,
    /// Text before the name of a file being written (Flume's `hdfs.inUsePrefix`). Default `""`.
    #[serde(default)]
    pub in_use_prefix: String,
    /// Text after the name of a file being written, removed when it closes (Flume's
    /// `hdfs.inUseSuffix`). Default `".tmp"`.
    #[serde(default = "default_in_use_suffix")]
    pub in_use_suffix: String,
    /// Close a file this long after it was opened (Flume's `hdfs.rollInterval`); `"0s"` turns it
    /// off. Default `"30s"`.
    #[serde(default = "default_roll_interval", with = "duration")]
    pub roll_interval: Duration,
    /// Close a file once it holds this many bytes (bodies plus newlines, before compression;
    /// Flume's `hdfs.rollSize`); 0 turns it off. Default 1024.
    #[serde(default = "default_roll_size")]
    pub roll_size: u64,
    /// Close a file once it holds this many events (Flume's `hdfs.rollCount`); 0 turns it off.
    /// Default 10.
    #[serde(default = "default_roll_count")]
    pub roll_count: u64,
    /// Close a file after this long without a write (Flume's `hdfs.idleTimeout`); `"0s"` turns
    /// it off. Default `"0s"`.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Round the event time down before the time escapes are filled in (Flume's `hdfs.round`).
    /// Default `false`.
    #[serde(default)]
    pub round: bool,
    /// Round down to a multiple of this many `round_unit`s (Flume's `hdfs.roundValue`): 1 to 60
    /// for `Second` and `Minute`, 1 to 24 for `Hour`. Default 1.
    #[serde(default = "default_round_value")]
    pub round_value: u8,
    /// `Second`, `Minute` or `Hour` (Flume's `hdfs.roundUnit`). Default `Second`.
    #[serde(default = "default_round_unit")]
    pub round_unit: RoundUnit,
    /// The IANA time zone of the time escapes, e.g. `"UTC"`, `"Europe/Berlin"` (Flume's
    /// `hdfs.timeZone`). Default: the system's local zone.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Use the local clock instead of the `timestamp` header for every event (Flume's
    /// `hdfs.useLocalTimeStamp`). Default `false`: the header (milliseconds since the epoch).
    #[serde(default)]
    pub use_local_time_stamp: bool,
    /// `DataStream` (text lines), `Gzip` or `Zstd`. Default `DataStream`.
    #[serde(default)]
    pub format: Format,
    /// Most files open at once (Flume's `hdfs.maxOpenFiles`); past it the least recently written
    /// is closed. Default 5000.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// fsync each file written before a take is committed, and before a file is renamed (survives
    /// power loss, costs a sync per file per batch). Default `false`: committed once written to
    /// the OS.
    #[serde(default)]
    pub sync: bool,
    /// What happens to an event whose path cannot be resolved (a header value holding `/` or NUL
    /// or being `..`, a time escape without a valid `timestamp` header). Default `Bucket`.
    #[serde(default)]
    pub on_rejected: OnRejected,
    /// The topology file's folder, which a relative `path` is resolved against (set on load).
    #[serde(skip)]
    pub base: PathBuf,
}

/// What the `Hdfs` sink does with an event whose path cannot be resolved. Either way it is
/// counted in `EventRejectedCount` and logged (once per batch).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum OnRejected {
    /// Write it to the bucket `rejected` under the path's leading escape-free directories
    /// (`out/%{host}/%H` -> `out/rejected`), with the usual file names and rolls.
    #[default]
    Bucket,
    /// Fail the batch: the take is rolled back and the sink restarted with backoff, so the
    /// channel keeps the event until the topology is changed.
    Fail,
}

fn default_file_prefix() -> String {
    "FlumeData".into()
}
fn default_in_use_suffix() -> String {
    ".tmp".into()
}
fn default_roll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_roll_size() -> u64 {
    1024
}
fn default_roll_count() -> u64 {
    10
}
fn default_idle_timeout() -> Duration {
    Duration::ZERO
}
fn default_round_value() -> u8 {
    1
}
fn default_round_unit() -> RoundUnit {
    RoundUnit::Second
}
fn default_max_open_files() -> usize {
    5000
}

impl HdfsConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = PathTemplate::parse(&self.path) {
            problems.push(e);
        }
        if let Err(e) = PathTemplate::parse(&self.file_prefix) {
            problems.push(format!("file_prefix: {e}"));
        }
        for (name, value) in [
            ("file_prefix", &self.file_prefix),
            ("file_suffix", &self.file_suffix),
            ("in_use_prefix", &self.in_use_prefix),
            ("in_use_suffix", &self.in_use_suffix),
        ] {
            if value.contains('/') || value.contains('\0') {
                problems.push(format!("{name} may not contain '/' or NUL"));
            }
        }
        if self.in_use_prefix.is_empty() && self.in_use_suffix.is_empty() {
            problems.push("in_use_prefix and in_use_suffix are both empty: open files could not be told apart".into());
        }
        let max = if self.round_unit == RoundUnit::Hour { 24 } else { 60 };
        if self.round_value == 0 || self.round_value > max {
            problems.push(format!("round_value must be from 1 to {max} for {:?}", self.round_unit));
        }
        if let Some(tz) = &self.time_zone {
            if let Err(e) = TimeZone::get(tz) {
                problems.push(format!("time_zone {tz:?}: {e}"));
            }
        }
        if self.max_open_files == 0 {
            problems.push("max_open_files must be positive".into());
        }
        problems
    }

    /// The base directory joined with `path` (escapes unresolved), for the run summary.
    pub fn output(&self) -> String {
        crate::config::normalize(&self.base.join(&self.path)).display().to_string()
    }
}

/// The HDFS-style sink.
pub struct HdfsSink {
    template: PathTemplate,
    base: PathBuf,
    rejected_dir: PathBuf,
    /// The bucket (`<dir>/<prefix>`) of rejected events.
    rejected_bucket: PathBuf,
    tz: TimeZone,
    round: Option<Rounding>,
    use_local_time_stamp: bool,
    on_rejected: OnRejected,
    counters: Arc<SinkCounters>,
    /// The last whole second an event time fell in, with what it resolved to.
    second_cache: RefCell<Option<SecondCache>>,
    /// The open files; away on a blocking thread while a batch is written.
    files: Option<Files>,
}

impl HdfsSink {
    /// A sink for a validated `config`.
    ///
    /// # Errors
    /// When the path template or time zone is invalid (caught by validation before).
    pub fn new(config: HdfsConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        // One template for the directory and the file prefix: a bucket is `<dir>/<prefix>`.
        // A file is named `<in_use_prefix><prefix>.<counter><suffix><ext><in_use_suffix>`: what
        // a header may put into the prefix leaves room for the rest (the counter has 20 digits
        // at most).
        let reserve = config.in_use_prefix.len()
            + 1
            + 20
            + config.file_suffix.len()
            + config.format.extension().len()
            + config.in_use_suffix.len();
        let template = PathTemplate::parse(&format!("{}/{}", config.path, config.file_prefix))
            .map_err(SinkError::Other)?
            .with_file_name_reserve(reserve);
        let dir_template = PathTemplate::parse(&config.path).map_err(SinkError::Other)?;
        let literal_prefix = PathTemplate::parse(&config.file_prefix).map_err(SinkError::Other)?;
        let tz = match &config.time_zone {
            Some(name) => TimeZone::get(name).map_err(|e| SinkError::Other(format!("time_zone {name:?}: {e}")))?,
            None => TimeZone::system(),
        };
        let rejected_dir = config.base.join(dir_template.static_prefix()).join("rejected");
        let rejected_prefix = if literal_prefix.uses_time() || literal_prefix.uses_headers() {
            default_file_prefix()
        } else {
            literal_prefix.resolve(&Default::default(), None).map_err(|e| SinkError::Other(e.to_string()))?
        };
        let rejected_bucket = PathBuf::from(format!("{}/{rejected_prefix}", rejected_dir.display()));
        // In-use files a killed agent left (once per output tree and process: a sink rebuilt
        // after a failure finds its predecessor's files closed by its `Drop`).
        let root = config.base.join(dir_template.static_prefix());
        if crate::sink::recovery::first_time(&root) && root.is_dir() {
            let names = InUseNames {
                suffix: format!("{}{}", config.file_suffix, config.format.extension()),
                in_use_prefix: config.in_use_prefix.clone(),
                in_use_suffix: config.in_use_suffix.clone(),
            };
            roll::recover(&root, &names, config.format, config.sync)
                .map_err(SinkError::io(format!("recover the in-use files under {}", root.display())))?;
        }
        let first = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        let files = Files {
            open: HashMap::new(),
            naming: Naming {
                suffix: format!("{}{}", config.file_suffix, config.format.extension()),
                in_use_prefix: config.in_use_prefix.clone(),
                in_use_suffix: config.in_use_suffix.clone(),
            },
            policy: RollPolicy {
                interval: config.roll_interval,
                size: config.roll_size,
                count: config.roll_count,
                idle: config.idle_timeout,
            },
            format: config.format,
            max_open: config.max_open_files,
            sync: config.sync,
            seq: 0,
            next: first,
            counters: counters.clone(),
        };
        Ok(HdfsSink {
            template,
            base: config.base.clone(),
            rejected_dir,
            rejected_bucket,
            tz,
            round: config.round.then_some(Rounding { value: config.round_value, unit: config.round_unit }),
            use_local_time_stamp: config.use_local_time_stamp,
            on_rejected: config.on_rejected,
            counters,
            second_cache: RefCell::new(None),
            files: Some(files),
        })
    }

    /// The directory of one event, relative to `base`.
    fn resolve(&self, event: &Event) -> Result<String, Rejection> {
        if !self.template.uses_time() {
            return self.template.resolve(&event.headers, None);
        }
        // Every time escape depends only on the whole second; consecutive events mostly share
        // one, and so their zoned time and, without header escapes, their whole path.
        let ts = path::event_timestamp(&event.headers, self.use_local_time_stamp)?;
        let second = ts.as_millisecond().div_euclid(1000);
        let mut cache = self.second_cache.borrow_mut();
        if !matches!(&*cache, Some(c) if c.second == second) {
            let zoned = path::zoned(ts, &self.tz, self.round);
            let path = if self.template.uses_headers() {
                None
            } else {
                Some(self.template.resolve(&event.headers, Some(&zoned))?)
            };
            *cache = Some(SecondCache { second, zoned, path });
        }
        let c = cache.as_ref().expect("filled just above");
        match &c.path {
            Some(path) => Ok(path.clone()),
            None => self.template.resolve(&event.headers, Some(&c.zoned)),
        }
    }

    /// Runs `work` on the open files on a blocking thread and takes them back.
    async fn with_files(
        &mut self,
        work: impl FnOnce(&mut Files) -> Result<(), SinkError> + Send + 'static,
    ) -> Result<(), SinkError> {
        let mut files = self.files.take().ok_or_else(|| SinkError::Other("an earlier write panicked".into()))?;
        let (files, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut files);
            (files, result)
        })
        .await
        .map_err(|e| SinkError::Panic(e.to_string()))?;
        self.files = Some(files);
        result
    }
}

/// What one whole second of event time resolves to.
struct SecondCache {
    /// `floor(ms / 1000)` of the event time.
    second: i64,
    /// The event time in the sink's zone, rounded.
    zoned: Zoned,
    /// The resolved path, when the template has no header escapes.
    path: Option<String>,
}

/// How files are named.
struct Naming {
    /// `file_suffix` plus the format's extension.
    suffix: String,
    in_use_prefix: String,
    in_use_suffix: String,
}

/// The open files by directory, and how they roll. Used on blocking threads only.
struct Files {
    open: HashMap<PathBuf, OpenFile>,
    naming: Naming,
    policy: RollPolicy,
    format: Format,
    max_open: usize,
    sync: bool,
    /// Counts appends, to order files by their last write.
    seq: u64,
    /// The counter of the next file: the sink's start time in ms, plus one per file (Flume's).
    next: u64,
    counters: Arc<SinkCounters>,
}

impl Files {
    /// Appends `bodies` (directory index, body) in order, rolling files that fill up, then
    /// flushes every file written to the OS.
    fn write(&mut self, dirs: &[PathBuf], bodies: &[(usize, Bytes)]) -> Result<(), SinkError> {
        self.roll_due(Instant::now())?;
        let mut touched = vec![false; dirs.len()];
        // Runs of events for one directory look their file up once.
        let mut k = 0;
        while k < bodies.len() {
            let i = bodies[k].0;
            let dir = &dirs[i];
            if !self.open.contains_key(dir) {
                self.open_in(dir)?;
            }
            let file = self.open.get_mut(dir).expect("opened just above");
            let mut full = false;
            while k < bodies.len() && bodies[k].0 == i && !full {
                if let Err(e) = file.append(&bodies[k].1) {
                    self.counters.connection_failed.inc();
                    return Err(SinkError::Io { what: format!("write to {}", file.in_use.display()), source: e });
                }
                self.seq += 1;
                file.written_seq = self.seq;
                full = file.full(&self.policy);
                k += 1;
            }
            touched[i] = true;
            if full {
                self.close(dir)?;
            }
        }
        for (dir, _) in dirs.iter().zip(touched).filter(|(_, t)| *t) {
            if let Some(file) = self.open.get_mut(dir) {
                if let Err(e) = file.flush(self.sync) {
                    self.counters.connection_failed.inc();
                    return Err(SinkError::Io { what: format!("write to {}", file.in_use.display()), source: e });
                }
            }
        }
        Ok(())
    }

    /// Opens a new file for `bucket` (`<dir>/<prefix>`; the directory is created if missing),
    /// closing the least recently written file first when `max_open` files are open.
    fn open_in(&mut self, bucket: &Path) -> Result<(), SinkError> {
        if self.open.len() >= self.max_open {
            let oldest = self.open.iter().min_by_key(|(_, f)| f.written_seq).map(|(d, _)| d.clone());
            if let Some(oldest) = oldest {
                self.close(&oldest)?;
            }
        }
        // Split at the last '/' of the bytes: the prefix may be empty, which `Path` would hide.
        let bytes = bucket.as_os_str().as_bytes();
        let cut = bytes.iter().rposition(|&b| b == b'/').expect("a bucket is <dir>/<prefix>");
        let dir = Path::new(std::ffi::OsStr::from_bytes(&bytes[..cut]));
        let prefix = String::from_utf8_lossy(&bytes[cut + 1..]);
        std::fs::create_dir_all(dir).map_err(SinkError::io(format!("create {}", dir.display())))?;
        loop {
            let n = &self.naming;
            let (in_use, done) = file_names(dir, &prefix, self.next, &n.suffix, "", &n.in_use_prefix, &n.in_use_suffix);
            self.next += 1;
            if done.exists() {
                continue;
            }
            match OpenFile::create(in_use.clone(), done, self.format, self.sync) {
                Ok(file) => {
                    self.counters.connection_created.inc();
                    self.open.insert(bucket.to_path_buf(), file);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    self.counters.connection_failed.inc();
                    return Err(SinkError::Io { what: format!("create {}", in_use.display()), source: e });
                }
            }
        }
    }

    /// Closes the file of `dir` and renames it to its final name.
    fn close(&mut self, dir: &Path) -> Result<(), SinkError> {
        let Some(file) = self.open.remove(dir) else { return Ok(()) };
        let in_use = file.in_use.clone();
        match file.close(self.sync) {
            Ok(done) => {
                self.counters.connection_closed.inc();
                tracing::debug!(file = %done.display(), "rolled");
                Ok(())
            }
            Err(e) => {
                self.counters.connection_failed.inc();
                Err(SinkError::Io { what: format!("close {}", in_use.display()), source: e })
            }
        }
    }

    /// Closes the files whose interval or idle time is up.
    fn roll_due(&mut self, now: Instant) -> Result<(), SinkError> {
        let due: Vec<PathBuf> =
            self.open.iter().filter(|(_, f)| f.due(&self.policy, now)).map(|(d, _)| d.clone()).collect();
        for dir in due {
            self.close(&dir)?;
        }
        Ok(())
    }

    fn any_due(&self, now: Instant) -> bool {
        self.open.values().any(|f| f.due(&self.policy, now))
    }

    /// Closes every file; answers the first failure after trying them all.
    fn close_all(&mut self) -> Result<(), SinkError> {
        let dirs: Vec<PathBuf> = self.open.keys().cloned().collect();
        let mut first = Ok(());
        for dir in dirs {
            let r = self.close(&dir);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Sink for HdfsSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut dirs: Vec<PathBuf> = Vec::new();
            // Resolved paths (relative to `base`) to their index in `dirs`; consecutive events
            // mostly share one, which is then not looked up again.
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut last: Option<(String, usize)> = None;
            let mut bodies = Vec::with_capacity(events.len());
            let mut rejected = 0u64;
            let mut first_rejection = None;
            for event in events {
                let i = match self.resolve(event) {
                    Ok(resolved) => match &last {
                        Some((path, i)) if *path == resolved => *i,
                        _ => {
                            let i = *index.entry(resolved.clone()).or_insert_with(|| {
                                dirs.push(self.base.join(&resolved));
                                dirs.len() - 1
                            });
                            last = Some((resolved, i));
                            i
                        }
                    },
                    Err(why) => {
                        rejected += 1;
                        first_rejection.get_or_insert(why);
                        match dirs.iter().position(|d| *d == self.rejected_bucket) {
                            Some(i) => i,
                            None => {
                                dirs.push(self.rejected_bucket.clone());
                                dirs.len() - 1
                            }
                        }
                    }
                };
                bodies.push((i, event.body.clone()));
            }
            if let Some(why) = first_rejection {
                self.counters.event_rejected.add(rejected);
                if self.on_rejected == OnRejected::Fail {
                    tracing::error!(rejected, first = %why, "events with unusable paths; failing the batch");
                    return Err(SinkError::Other(format!("{rejected} events rejected; the first: {why}")));
                }
                tracing::warn!(
                    rejected,
                    first = %why,
                    dir = %self.rejected_dir.display(),
                    "events with unusable paths go to the rejected bucket"
                );
            }
            self.with_files(move |files| files.write(&dirs, &bodies)).await
        })
    }

    fn idle(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let due = self.files.as_ref().is_some_and(|f| f.any_due(Instant::now()));
            if due {
                self.with_files(|files| files.roll_due(Instant::now())).await?;
            }
            Ok(())
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { self.with_files(Files::close_all).await })
    }
}

/// A sink dropped without `close` (its delivery failed and the runner restarts it) still closes
/// and renames its files, on a blocking thread when a runtime is there, best effort.
impl Drop for HdfsSink {
    fn drop(&mut self) {
        let Some(files) = self.files.take().filter(|f| !f.open.is_empty()) else { return };
        let close = move || {
            let mut files = files;
            if let Err(e) = files.close_all() {
                tracing::warn!(error = %e, "closing the files of a failed sink");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(close)),
            Err(_) => close(),
        }
    }
}

#[cfg(test)]
mod tests;
