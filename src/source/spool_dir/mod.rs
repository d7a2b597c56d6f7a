//! `SpoolDir`: ingests complete files dropped into a directory, as Flume's spooling directory source.
//!
//! Files are read one at a time, oldest first, one event per line (a final line without a line
//! ending is an event too). The byte offset up to which a file's events are committed is kept in
//! the tracker folder after every committed put, so after a crash the file is resumed there: no
//! event is lost, and at most the last uncommitted batch comes twice. A file whose events are all
//! committed is renamed with the completed suffix (never over an existing file) or deleted.

mod spool;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tracing::Instrument;

pub use spool::{Progress, SpoolDirError, PROGRESS_FILE};
use spool::{Spool, SpoolFile};

use super::file_input::{blocking_with, deliver, Delivery};
use super::lines::to_events;
use super::{SourceContext, SourceError};
use crate::config::duration;

/// `SpoolDir(dir: "/var/spool/flumen", completed_suffix: ".COMPLETED", delete_policy: Never)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolDirConfig {
    /// The spool directory (Flume's `spoolDir`); relative to the topology file's folder. Must
    /// exist. Files must be complete and unchanging once they appear in it: write them elsewhere
    /// on the same file system, then move them in. Hidden files (name starting with `.`) are
    /// never read.
    pub dir: PathBuf,
    /// Suffix appended to a file's name once all its events are committed (Flume's `fileSuffix`);
    /// files whose name ends with it are never read. A file whose completed name already exists
    /// is refused (logged as an error) rather than renamed over it. Default `".COMPLETED"`.
    #[serde(default = "default_completed_suffix")]
    pub completed_suffix: String,
    /// What to do with a completed file (Flume's `deletePolicy`). Default `Never` (rename it).
    #[serde(default)]
    pub delete_policy: DeletePolicy,
    /// Header holding the file's absolute path (Flume's `fileHeaderKey` with `fileHeader`).
    /// Default none.
    #[serde(default)]
    pub file_header: Option<String>,
    /// Header holding the file's name without its folder (Flume's `basenameHeaderKey` with
    /// `basenameHeader = true`). Default none.
    #[serde(default)]
    pub basename_header: Option<String>,
    /// Only files whose name (without folder) matches this regex are read (Flume's
    /// `includePattern`). Default `"^.*$"`.
    #[serde(default = "default_include")]
    pub include_pattern: String,
    /// Files whose name (without folder) matches this regex are never read (Flume's
    /// `ignorePattern`). Default `"^$"`.
    #[serde(default = "default_ignore")]
    pub ignore_pattern: String,
    /// Folder holding the progress of the file being read (`progress.json`), relative to `dir`
    /// (Flume's `trackerDir`); created if missing. Default `".flumenspool"`.
    #[serde(default = "default_tracker_dir")]
    pub tracker_dir: PathBuf,
    /// How often the directory is listed for new files when no file is left to read.
    /// Default `"500ms"`.
    #[serde(default = "default_poll_interval", with = "duration")]
    pub poll_interval: Duration,
    /// Longest body in bytes; longer lines are cut, flagged with header `truncated: "true"` and
    /// counted in `EventMalformedCount` (Flume's `deserializer.maxLineLength`). Default 65536.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Whether symbolic links in the directory are read (and, once completed, the link renamed
    /// or deleted; never its target). Default `false`: a link is refused (logged once, counted in
    /// `FileRefusedCount`) and left alone, so that whoever can write into the directory cannot
    /// make the agent read a file elsewhere.
    #[serde(default)]
    pub follow_symlinks: bool,
}

/// What happens to a spool file once all its events are committed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum DeletePolicy {
    /// Rename it with `completed_suffix`.
    #[default]
    Never,
    /// Delete it.
    Immediate,
}

fn default_completed_suffix() -> String {
    ".COMPLETED".into()
}
fn default_include() -> String {
    "^.*$".into()
}
fn default_ignore() -> String {
    "^$".into()
}
fn default_tracker_dir() -> PathBuf {
    PathBuf::from(".flumenspool")
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_max_line_length() -> usize {
    65536
}

impl SpoolDirConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.dir.is_dir() {
            problems.push(format!("spool directory {} does not exist", self.dir.display()));
        }
        for (what, re) in [("include_pattern", &self.include_pattern), ("ignore_pattern", &self.ignore_pattern)] {
            if let Err(e) = regex::Regex::new(re) {
                problems.push(format!("{what}: {e}"));
            }
        }
        if self.completed_suffix.is_empty() && self.delete_policy == DeletePolicy::Never {
            problems.push("completed_suffix is empty: completed files could not be told apart".into());
        }
        if self.poll_interval.is_zero() {
            problems.push("poll_interval must be positive".into());
        }
        if self.max_line_length == 0 {
            problems.push("max_line_length must be positive".into());
        }
        problems
    }

    /// Resolves `dir` against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.dir = crate::config::resolve(base, &self.dir);
    }
}

/// Reads the spool directory's files one by one until the agent stops.
///
/// Each batch is put; only once it is committed is the file's progress written. A file read to
/// its end with every event committed is completed (renamed or deleted) and its progress removed.
/// When no eligible file is left the source reports reaching its end (for `flumen run --once`)
/// and keeps polling every `poll_interval`.
///
/// # Errors
/// The directory cannot be listed, a file read, its progress written or it completed (a taken
/// completed name, a file changed while read); a put failed for good. The source is then
/// restarted and resumes from the last committed progress.
pub async fn run(config: SpoolDirConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let span = tracing::info_span!("source", name = %ctx.name);
    ingest(config, ctx).instrument(span).await
}

async fn ingest(config: SpoolDirConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let (_, opened) = step(config.clone(), |c| Spool::open(c)).await?;
    let mut spool = opened?;
    tracing::info!(dir = %spool.dir().display(), "watching spool directory");
    let max = ctx.batch_size.max(1);
    let mut current: Option<SpoolFile> = None;
    loop {
        if ctx.is_stopping() {
            return Ok(());
        }
        let Some(file) = current.take() else {
            let (back, next) = step(spool, Spool::next_file).await?;
            spool = back;
            let refused = spool.take_refused();
            if refused > 0 {
                ctx.counters.file_refused.add(refused);
            }
            match next? {
                Some(file) => {
                    tracing::info!(path = %file.path.display(), position = file.committed, "reading");
                    current = Some(file);
                }
                None => {
                    ctx.reached_end();
                    tokio::select! {
                        _ = actix_rt::time::sleep(config.poll_interval) => {}
                        _ = ctx.stopping() => {}
                    }
                }
            }
            continue;
        };
        let (mut file, lines) = step(file, move |f| f.read_batch(max)).await?;
        let lines = lines?;
        if !lines.is_empty() {
            let mut events = to_events(lines, &ctx);
            if config.file_header.is_some() || config.basename_header.is_some() {
                let path = file.path.to_string_lossy().into_owned();
                for event in &mut events {
                    if let Some(key) = &config.file_header {
                        event.headers.insert(key.clone(), path.clone());
                    }
                    if let Some(key) = &config.basename_header {
                        event.headers.insert(key.clone(), file.name.clone());
                    }
                }
            }
            match deliver(&ctx, events).await? {
                Delivery::Committed => {}
                Delivery::Abandoned => return Ok(()),
            }
            let pos = file.end();
            let ((back, f), saved) = step((spool, file), move |(s, f)| s.save_progress(f, pos)).await?;
            saved?;
            (spool, file) = (back, f);
        }
        if file.is_read() {
            let (path, events) = (file.path.clone(), file.events);
            let (back, completed) = step(spool, move |s| s.complete(file)).await?;
            spool = back;
            completed?;
            tracing::info!(path = %path.display(), events, policy = ?config.delete_policy, "file completed");
        } else {
            current = Some(file);
        }
    }
}

/// One blocking step on `state` (see [`blocking_with`]).
async fn step<S: Send + 'static, T: Send + 'static>(
    state: S,
    f: impl FnOnce(&mut S) -> T + Send + 'static,
) -> Result<(S, T), SourceError> {
    blocking_with(state, f).await.map_err(SourceError::io("spool directory work"))
}
