//! `SpoolDir`: ingests complete files dropped into a directory, as Flume's spooling directory source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{SourceContext, SourceError};
use crate::topology::duration;

/// `SpoolDir(dir: "/var/spool/flumen", completed_suffix: ".COMPLETED", delete_policy: Never)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolDirConfig {
    /// The spool directory (Flume's `spoolDir`); relative to the topology file's folder. Must exist.
    pub dir: PathBuf,
    /// Suffix appended to a file once all its events are committed (Flume's `fileSuffix`).
    /// Default `".COMPLETED"`.
    #[serde(default = "default_completed_suffix")]
    pub completed_suffix: String,
    /// What to do with a completed file (Flume's `deletePolicy`). Default `Never` (rename it).
    #[serde(default)]
    pub delete_policy: DeletePolicy,
    /// Header holding the file's absolute path (Flume's `fileHeaderKey` with `fileHeader`).
    /// Default none.
    #[serde(default)]
    pub file_header: Option<String>,
    /// Only file names matching this regex are read (Flume's `includePattern`). Default `"^.*$"`.
    #[serde(default = "default_include")]
    pub include_pattern: String,
    /// File names matching this regex are ignored (Flume's `ignorePattern`). Default `"^$"`.
    #[serde(default = "default_ignore")]
    pub ignore_pattern: String,
    /// Where read progress is kept, relative to `dir` (Flume's `trackerDir`). Default `".flumenspool"`.
    #[serde(default = "default_tracker_dir")]
    pub tracker_dir: PathBuf,
    /// How often the directory is scanned for new files when idle. Default `"500ms"`.
    #[serde(default = "default_poll_interval", with = "duration")]
    pub poll_interval: Duration,
    /// Longest body in bytes; longer lines are cut, flagged and counted. Default 65536.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
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
        if self.max_line_length == 0 {
            problems.push("max_line_length must be positive".into());
        }
        problems
    }

    /// Resolves `dir` against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.dir = crate::topology::resolve(base, &self.dir);
    }
}

/// Reads the spool directory's files one by one.
///
/// # Errors
/// I/O errors on the directory or its files; put failures.
pub async fn run(_config: SpoolDirConfig, _ctx: SourceContext) -> Result<(), SourceError> {
    Err(SourceError::Other("SpoolDir is being built".into()))
}
