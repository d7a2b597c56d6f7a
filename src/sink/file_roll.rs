//! `FileRoll`: appends each event's body and a newline to a file in a directory, starting a new
//! file every `roll_interval`, as Flume's `file_roll` sink.
//!
//! Files are named `<prefix><start time in ms>-<n><extension>` (Flume's naming). While a file is
//! written it carries `in_use_suffix` (default `.tmp`) and it gets its final name when it rolls or
//! the sink closes, so a reader of finished files never sees one being written. A batch is written
//! with one `write(2)` on a blocking thread and the take is committed only after it (and after an
//! fsync with `sync: true`). On start-up, in-use files a killed agent left behind are cut back to
//! their last newline (everything committed ends there) and renamed ([`super::recovery`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::recovery::{self, sync_dir};
use super::{Sink, SinkError};
use crate::blocking::blocking;
use crate::config::duration;
use crate::event::Event;
use crate::metrics::SinkCounters;

/// `FileRoll(dir: "out/all", roll_interval: "30s")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRollConfig {
    /// The output directory (Flume's `sink.directory`), created if missing; relative to the
    /// topology file's folder.
    pub dir: PathBuf,
    /// Start a new file after this long (Flume's `sink.rollInterval`); `"0s"` never rolls.
    /// Default `"30s"`.
    #[serde(default = "default_roll_interval", with = "duration")]
    pub roll_interval: Duration,
    /// Text before each file name. Default `""`.
    #[serde(default)]
    pub prefix: String,
    /// Text after each file name, e.g. `".log"` (Flume's `sink.pathManager.extension`). Default `""`.
    #[serde(default)]
    pub extension: String,
    /// Text after the name of the file being written, removed when it rolls or the sink closes
    /// (as the `Hdfs` sink's `in_use_suffix`). Default `".tmp"`. `""` writes under the final
    /// name at once, as Flume's `file_roll` does: a kill can then leave a partial last line in a
    /// file readers pick up, and such files are not recovered on restart.
    #[serde(default = "default_in_use_suffix")]
    pub in_use_suffix: String,
    /// fsync the file before a take is committed, and the directory after a file is created or
    /// renamed (survives power loss, costs a sync per batch). Default `false`: committed once
    /// written to the OS.
    #[serde(default)]
    pub sync: bool,
}

fn default_roll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_in_use_suffix() -> String {
    ".tmp".into()
}

impl FileRollConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if [&self.prefix, &self.extension, &self.in_use_suffix].iter().any(|s| s.contains('/')) {
            problems.push("prefix, extension and in_use_suffix may not contain '/'".into());
        }
        if self.dir.exists() && !self.dir.is_dir() {
            problems.push(format!("{} exists and is not a directory", self.dir.display()));
        }
        problems
    }

    /// Whether `name` is an in-use file of this sink: `<prefix><digits>-<digits><extension>`
    /// followed by the in-use suffix. Answers the final name.
    fn in_use_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        if self.in_use_suffix.is_empty() {
            return None;
        }
        let done = name.strip_suffix(self.in_use_suffix.as_str())?;
        let stem = done.strip_prefix(self.prefix.as_str())?.strip_suffix(self.extension.as_str())?;
        let (millis, n) = stem.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(millis) && digits(n)).then_some(done)
    }
}

/// The file being written.
struct OpenFile {
    file: File,
    /// Its name while written (with the in-use suffix).
    in_use: PathBuf,
    /// Its name once rolled.
    done: PathBuf,
    /// Bytes of whole batches written (a failed write may have left a part of one after it).
    len: u64,
}

impl OpenFile {
    /// Renames the file to its final name (after cutting a failed write's part with `cut`),
    /// fsyncing file and folder with `sync`.
    fn finish(self, sync: bool, cut: bool) -> std::io::Result<PathBuf> {
        if cut {
            self.file.set_len(self.len)?;
        }
        if sync {
            self.file.sync_all()?;
        }
        drop(self.file);
        recovery::rename_closed(&self.in_use, &self.done, sync)?;
        Ok(self.done)
    }
}

/// The file roll sink.
pub struct FileRollSink {
    config: FileRollConfig,
    counters: Arc<SinkCounters>,
    file: Option<OpenFile>,
    opened: Instant,
    index: u64,
    buf: Vec<u8>,
}

impl FileRollSink {
    /// A sink writing into `config.dir` (created if missing). The first sink of a directory in a
    /// process recovers the in-use files found there (cut to their last newline, renamed).
    ///
    /// # Errors
    /// When the directory cannot be created, or an in-use file left there cannot be recovered.
    pub fn new(config: FileRollConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&config.dir).map_err(SinkError::io(format!("create {}", config.dir.display())))?;
        if !config.in_use_suffix.is_empty() && recovery::first_time(&config.dir) {
            recover(&config)?;
        }
        Ok(FileRollSink { config, counters, file: None, opened: Instant::now(), index: 0, buf: Vec::new() })
    }

    fn roll_due(&self) -> bool {
        self.file.is_some()
            && !self.config.roll_interval.is_zero()
            && self.opened.elapsed() >= self.config.roll_interval
    }

    /// The next file's final name and in-use name.
    fn next_paths(&mut self) -> (PathBuf, PathBuf) {
        self.index += 1;
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let name = format!("{}{millis}-{}{}", self.config.prefix, self.index, self.config.extension);
        let done = self.config.dir.join(&name);
        (done, self.config.dir.join(format!("{name}{}", self.config.in_use_suffix)))
    }

    /// Closes the current file (fsynced with `sync`) and gives it its final name; the next batch
    /// opens a new one.
    async fn roll(&mut self) -> Result<(), SinkError> {
        if let Some(file) = self.file.take() {
            let sync = self.config.sync;
            let in_use = file.in_use.clone();
            blocking(move || file.finish(sync, false))
                .await
                .map_err(SinkError::io(format!("close rolled file {}", in_use.display())))?;
            self.counters.connection_closed.inc();
        }
        Ok(())
    }

    async fn open(&mut self) -> Result<OpenFile, SinkError> {
        let (done, in_use) = self.next_paths();
        let sync = self.config.sync;
        let opened = blocking({
            let in_use = in_use.clone();
            move || {
                recovery::opening(&in_use);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&in_use)
                    .inspect_err(|_| recovery::closed(&in_use))?;
                if sync {
                    sync_dir(in_use.parent().unwrap_or(Path::new(".")));
                }
                Ok(file)
            }
        })
        .await;
        match opened {
            Ok(file) => {
                self.counters.connection_created.inc();
                self.opened = Instant::now();
                Ok(OpenFile { file, in_use, done, len: 0 })
            }
            Err(e) => {
                self.counters.connection_failed.inc();
                Err(SinkError::Io { what: format!("open {}", in_use.display()), source: e })
            }
        }
    }
}

/// Cuts every in-use file of the sink's directory to its last newline and renames it.
fn recover(config: &FileRollConfig) -> Result<(), SinkError> {
    let entries = std::fs::read_dir(&config.dir).map_err(SinkError::io(format!("list {}", config.dir.display())))?;
    let mut renamed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(done) = name.to_str().and_then(|n| config.in_use_name(n)) else { continue };
        let (path, done) = (entry.path(), config.dir.join(done));
        if recovery::is_open(&path) {
            continue;
        }
        if done.exists() {
            tracing::warn!(file = %path.display(), "in-use file left by a crash whose final name exists; left as it is");
            continue;
        }
        let r = recovery::truncate_to_last_newline(&path, config.sync)
            .map_err(SinkError::io(format!("recover {}", path.display())))?;
        std::fs::rename(&path, &done).map_err(SinkError::io(format!("rename {}", path.display())))?;
        renamed = true;
        tracing::info!(
            file = %done.display(), kept_bytes = r.kept, cut_bytes = r.cut,
            "in-use file left by a crash recovered: cut to its last complete line and closed"
        );
    }
    if renamed && config.sync {
        sync_dir(&config.dir);
    }
    Ok(())
}

impl Sink for FileRollSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if self.roll_due() {
                self.roll().await?;
            }
            let file = match self.file.take() {
                Some(f) => f,
                None => self.open().await?,
            };
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            for e in events {
                buf.extend_from_slice(&e.body);
                buf.push(b'\n');
            }
            let sync = self.config.sync;
            let (file, buf, result) = blocking(move || {
                let mut file = file;
                let result = file.file.write_all(&buf).and_then(|()| if sync { file.file.sync_data() } else { Ok(()) });
                if result.is_ok() {
                    file.len += buf.len() as u64;
                }
                Ok((file, buf, result))
            })
            .await
            .map_err(SinkError::io(format!("write to {}", self.config.dir.display())))?;
            let what = format!("write to {}", file.in_use.display());
            self.file = Some(file);
            self.buf = buf;
            result.inspect_err(|_| self.counters.connection_failed.inc()).map_err(SinkError::io(what))
        })
    }

    fn idle(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            if self.roll_due() {
                self.roll().await?;
            }
            Ok(())
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.roll())
    }
}

/// A sink dropped without `close` (a write failed and the runner rebuilds it) closes its file
/// anyway: cut after its last whole batch and renamed, best effort.
impl Drop for FileRollSink {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let in_use = file.in_use.clone();
            if let Err(e) = file.finish(self.config.sync, true) {
                tracing::warn!(file = %in_use.display(), error = %e, "closing the file of a failed sink");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> FileRollConfig {
        let mut c: FileRollConfig = ron::from_str(r#"(dir: "x")"#).unwrap();
        c.dir = dir.to_path_buf();
        c
    }

    #[test]
    fn defaults_and_in_use_names() {
        let c = config(Path::new("/tmp/out"));
        assert_eq!((c.in_use_suffix.as_str(), c.sync, c.roll_interval), (".tmp", false, Duration::from_secs(30)));
        assert_eq!(c.in_use_name("1733000000000-1.tmp"), Some("1733000000000-1"));
        assert_eq!(c.in_use_name("1733000000000-1"), None);
        assert_eq!(c.in_use_name(".positions.json.tmp"), None);
        let c = FileRollConfig { prefix: "app-".into(), extension: ".log".into(), ..c };
        assert_eq!(c.in_use_name("app-17-2.log.tmp"), Some("app-17-2.log"));
        assert_eq!(c.in_use_name("17-2.log.tmp"), None);
    }

    #[test]
    fn in_use_files_left_by_a_crash_are_cut_to_their_last_line_and_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        std::fs::write(dir.path().join("1733000000000-1.tmp"), b"one\ntwo\nthr").unwrap();
        std::fs::write(dir.path().join("notes.tmp"), b"not ours").unwrap();
        recover(&c).unwrap();
        assert_eq!(std::fs::read(dir.path().join("1733000000000-1")).unwrap(), b"one\ntwo\n");
        assert!(!dir.path().join("1733000000000-1.tmp").exists());
        assert_eq!(std::fs::read(dir.path().join("notes.tmp")).unwrap(), b"not ours");
    }
}
