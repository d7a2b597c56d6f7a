//! `FileRoll`: appends each event's body and a newline to a file in a directory, starting a new
//! file every `roll_interval`, as Flume's `file_roll` sink.
//!
//! Files are named `<prefix><start time in ms>-<n><extension>` (Flume's naming). A batch is written
//! with one `write(2)` on a blocking thread and the take is committed only after it (and after an
//! fsync with `sync: true`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::blocking::blocking;
use crate::event::Event;
use crate::metrics::SinkCounters;
use crate::topology::duration;

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
    /// fsync the file before a take is committed (survives power loss, costs a sync per batch).
    /// Default `false`: committed once written to the OS.
    #[serde(default)]
    pub sync: bool,
}

fn default_roll_interval() -> Duration {
    Duration::from_secs(30)
}

impl FileRollConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.prefix.contains('/') || self.extension.contains('/') {
            problems.push("prefix and extension may not contain '/'".into());
        }
        if self.dir.exists() && !self.dir.is_dir() {
            problems.push(format!("{} exists and is not a directory", self.dir.display()));
        }
        problems
    }
}

/// The file roll sink.
pub struct FileRollSink {
    config: FileRollConfig,
    counters: Arc<SinkCounters>,
    file: Option<File>,
    opened: Instant,
    index: u64,
    buf: Vec<u8>,
}

impl FileRollSink {
    /// A sink writing into `config.dir` (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(config: FileRollConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&config.dir).map_err(SinkError::io(format!("create {}", config.dir.display())))?;
        Ok(FileRollSink { config, counters, file: None, opened: Instant::now(), index: 0, buf: Vec::new() })
    }

    fn roll_due(&self) -> bool {
        self.file.is_some()
            && !self.config.roll_interval.is_zero()
            && self.opened.elapsed() >= self.config.roll_interval
    }

    fn next_path(&mut self) -> PathBuf {
        self.index += 1;
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.config.dir.join(format!("{}{millis}-{}{}", self.config.prefix, self.index, self.config.extension))
    }

    /// Closes the current file (fsynced with `sync`); the next batch opens a new one.
    async fn roll(&mut self) -> Result<(), SinkError> {
        if let Some(file) = self.file.take() {
            let sync = self.config.sync;
            blocking(move || if sync { file.sync_all() } else { Ok(()) })
                .await
                .map_err(SinkError::io("close rolled file"))?;
            self.counters.connection_closed.inc();
        }
        Ok(())
    }
}

impl Sink for FileRollSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if self.roll_due() {
                self.roll().await?;
            }
            let file = match self.file.take() {
                Some(f) => f,
                None => {
                    let path = self.next_path();
                    let opened = blocking({
                        let path = path.clone();
                        move || OpenOptions::new().create(true).append(true).open(path)
                    })
                    .await;
                    match opened {
                        Ok(f) => {
                            self.counters.connection_created.inc();
                            self.opened = Instant::now();
                            f
                        }
                        Err(e) => {
                            self.counters.connection_failed.inc();
                            return Err(SinkError::Io { what: format!("open {}", path.display()), source: e });
                        }
                    }
                }
            };
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            for e in events {
                buf.extend_from_slice(&e.body);
                buf.push(b'\n');
            }
            let sync = self.config.sync;
            let (file, buf) = blocking(move || {
                let mut file = file;
                file.write_all(&buf)?;
                if sync {
                    file.sync_data()?;
                }
                Ok((file, buf))
            })
            .await
            .inspect_err(|_| self.counters.connection_failed.inc())
            .map_err(SinkError::io(format!("write to {}", self.config.dir.display())))?;
            self.file = Some(file);
            self.buf = buf;
            Ok(())
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
