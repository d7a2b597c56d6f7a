//! `Taildir`: lines appended to files matching globs, as Flume's TAILDIR source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{SourceContext, SourceError};
use crate::topology::duration;

/// `Taildir(filegroups: {"app": "/var/log/app/*.log"}, position_file: "state/taildir.json")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaildirConfig {
    /// File group name to a glob of the files to tail (Flume's `filegroups.<name>`); relative
    /// globs resolve against the topology file's folder. Wildcards only in the file name part.
    pub filegroups: BTreeMap<String, String>,
    /// JSON file of read positions (Flume's `positionFile`), written only after commits.
    pub position_file: PathBuf,
    /// Header holding the file's path (Flume's `fileHeaderKey` with `fileHeader = true`).
    /// Default none.
    #[serde(default)]
    pub file_header: Option<String>,
    /// Header holding the file group's name. Default none.
    #[serde(default)]
    pub filegroup_header: Option<String>,
    /// Start new files (with no saved position) at their end instead of their start (Flume's
    /// `skipToEnd`). Default `false`.
    #[serde(default)]
    pub skip_to_end: bool,
    /// How often files are checked for new lines and new files when idle. Default `"250ms"`.
    #[serde(default = "default_poll_interval", with = "duration")]
    pub poll_interval: Duration,
    /// Longest time between writes of the position file (Flume's `writePosInterval`). Default `"3s"`.
    #[serde(default = "default_write_pos_interval", with = "duration")]
    pub write_pos_interval: Duration,
    /// Longest body in bytes; longer lines are cut, flagged and counted. Default 65536.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_write_pos_interval() -> Duration {
    Duration::from_secs(3)
}
fn default_max_line_length() -> usize {
    65536
}

impl TaildirConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.filegroups.is_empty() {
            problems.push("filegroups is empty".into());
        }
        for (group, glob) in &self.filegroups {
            if let Err(e) = globset::Glob::new(glob) {
                problems.push(format!("filegroup {group:?}: bad glob {glob:?}: {e}"));
            }
        }
        if self.max_line_length == 0 {
            problems.push("max_line_length must be positive".into());
        }
        problems
    }

    /// Resolves globs and the position file against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for glob in self.filegroups.values_mut() {
            if !Path::new(glob.as_str()).is_absolute() {
                *glob = base.join(glob.as_str()).to_string_lossy().into_owned();
            }
        }
        self.position_file = crate::topology::resolve(base, &self.position_file);
    }
}

/// Tails the file groups until the agent stops.
///
/// # Errors
/// I/O errors on the position file; put failures.
pub async fn run(_config: TaildirConfig, _ctx: SourceContext) -> Result<(), SourceError> {
    Err(SourceError::Other("Taildir is being built".into()))
}
