//! `Taildir`: lines appended to files matching globs, as Flume's TAILDIR source.
//!
//! Files are found by glob (wildcards in the file name part) on every poll and followed by inode:
//! a file renamed away (rotated) or deleted is still read to its end through its open descriptor,
//! while the new file of that name is read from its start; a truncated file is read again from its
//! start. A final line without a line ending is held back until its newline arrives, as Flume does
//! (with `run --once` the input is over: it is an event once its file is read to its end).
//! Read positions are saved in a JSON position file in Flume's format, only after the lines before
//! them were committed, so a restarted agent neither reads a line again nor skips one (a crash can
//! repeat the lines of the last `write_pos_interval`).

pub mod position;
mod tailer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::Instrument;

pub use position::{Position, PositionFileError};
use tailer::{FileGroup, TailOptions, Tailer};

use super::file_input::{blocking, deliver, temporary_path, Delivery};
use super::lines::to_events;
use super::{SourceContext, SourceError};
use crate::config::duration;

/// `Taildir(filegroups: {"app": "/var/log/app/*.log"}, position_file: "state/taildir.json")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaildirConfig {
    /// File group name to a glob of the files to tail (Flume's `filegroups.<name>`), e.g.
    /// `"/var/log/app/*.log"`; relative globs resolve against the topology file's folder.
    /// Wildcards (`*`, `?`, `[...]`, `{a,b}`) only in the file name part. A file matched by two
    /// groups belongs to the first by name.
    pub filegroups: BTreeMap<String, String>,
    /// JSON file of read positions (Flume's `positionFile`), relative to the topology file's
    /// folder, created with its folder if missing. Written atomically, only after commits.
    pub position_file: PathBuf,
    /// Header holding the file's absolute path (Flume's `fileHeaderKey` with `fileHeader = true`).
    /// Default none.
    #[serde(default)]
    pub file_header: Option<String>,
    /// Header holding the file group's name. Default none.
    #[serde(default)]
    pub filegroup_header: Option<String>,
    /// Start files found at start-up that have no saved position at their end instead of their
    /// start (Flume's `skipToEnd`); files appearing later are always read from their start.
    /// Default `false`.
    #[serde(default)]
    pub skip_to_end: bool,
    /// How often, when idle, files are checked for new lines and the globs for new files
    /// (at most this often while busy). Also how long a rotated or deleted file may still grow
    /// after it was read to its end before it is forgotten. Default `"250ms"`.
    #[serde(default = "default_poll_interval", with = "duration")]
    pub poll_interval: Duration,
    /// Longest time between writes of the position file while lines are committed (Flume's
    /// `writePosInterval`); it is also written on stop. `"0s"` writes after every put.
    /// Default `"3s"`.
    #[serde(default = "default_write_pos_interval", with = "duration")]
    pub write_pos_interval: Duration,
    /// A file that has not grown for this long has its descriptor closed; it is reopened when it
    /// grows (Flume's `idleTimeout`). Default `"2m"`.
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// Longest body in bytes; longer lines are cut, flagged with header `truncated: "true"` and
    /// counted in `EventMalformedCount`. Default 65536.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Whether symbolic links matched by a glob are tailed (their targets read). Default
    /// `false`: a matched link is refused (logged once, counted in `FileRefusedCount`), so that
    /// whoever can create files in a watched folder cannot make the agent read a file elsewhere.
    #[serde(default)]
    pub follow_symlinks: bool,
}

fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_write_pos_interval() -> Duration {
    Duration::from_secs(3)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_line_length() -> usize {
    65536
}

/// Splits a file group's glob into its folder and the glob of its file names.
///
/// # Errors
/// Words saying what is wrong: wildcards in the folder part, no file name, a bad glob.
fn split_glob(glob: &str) -> Result<(PathBuf, globset::GlobMatcher), String> {
    let path = Path::new(glob);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("glob {glob:?} names no file"));
    };
    if dir.to_string_lossy().contains(['*', '?', '[', ']', '{', '}']) {
        return Err(format!("glob {glob:?}: wildcards are allowed only in the file name part"));
    }
    let name = name.to_string_lossy();
    let matcher = globset::Glob::new(&name).map_err(|e| format!("bad glob {glob:?}: {e}"))?.compile_matcher();
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    Ok((dir.to_path_buf(), matcher))
}

impl TaildirConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.filegroups.is_empty() {
            problems.push("filegroups is empty".into());
        }
        for (group, glob) in &self.filegroups {
            if let Err(e) = split_glob(glob) {
                problems.push(format!("filegroup {group:?}: {e}"));
            }
        }
        if self.position_file.file_name().is_none() {
            problems.push(format!("position_file {} names no file", self.position_file.display()));
        }
        if self.poll_interval.is_zero() {
            problems.push("poll_interval must be positive".into());
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
        self.position_file = crate::config::resolve(base, &self.position_file);
    }

    /// The file groups, with absolute folders.
    fn groups(&self) -> Result<Vec<FileGroup>, SourceError> {
        self.filegroups
            .iter()
            .map(|(name, glob)| {
                let (dir, matcher) =
                    split_glob(glob).map_err(|e| SourceError::Config(format!("filegroup {name:?}: {e}")))?;
                let dir = std::path::absolute(&dir).map_err(SourceError::io(format!("resolve {}", dir.display())))?;
                Ok(FileGroup { name: name.clone(), dir, matcher })
            })
            .collect()
    }
}

/// Tails the file groups until the agent stops.
///
/// Each batch is put, and only once it is committed do the positions of its files move; the
/// position file is written after commits at most every `write_pos_interval`, when the source
/// stops, and (best effort) when it fails. The source reports reaching its end (for
/// `flumen run --once`) whenever a pass over every file finds nothing new, and keeps polling.
///
/// # Errors
/// The position file cannot be read or written; a put failed for good.
pub async fn run(config: TaildirConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let span = tracing::info_span!("source", name = %ctx.name);
    follow(config, ctx).instrument(span).await
}

async fn follow(config: TaildirConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let position_file = std::path::absolute(&config.position_file)
        .map_err(SourceError::io(format!("resolve {}", config.position_file.display())))?;
    let saved = {
        let path = position_file.clone();
        blocking(move || Ok(load_positions(&path))).await.map_err(SourceError::io("load the position file"))??
    };
    let options = TailOptions {
        skip_to_end: config.skip_to_end,
        max_line_length: config.max_line_length,
        per_file: ctx.batch_size.max(1),
        poll_interval: config.poll_interval,
        idle_timeout: config.idle_timeout,
        file_header: config.file_header.clone(),
        filegroup_header: config.filegroup_header.clone(),
        ignored: vec![position_file.clone(), temporary_path(&position_file)],
        once: ctx.once(),
        follow_symlinks: config.follow_symlinks,
    };
    tracing::info!(
        groups = config.filegroups.len(),
        saved_positions = saved.len(),
        position_file = %position_file.display(),
        "tailing file groups"
    );
    let mut tailer = Some(Tailer::new(config.groups()?, options, saved));
    let result = tail(&config, &ctx, &mut tailer, &position_file).await;
    let stored = match &mut tailer {
        Some(t) if t.positions_changed() => store_positions(t, &position_file).await,
        _ => Ok(()),
    };
    if let Err(e) = &stored {
        tracing::error!(error = %e, "could not write the position file on the way out");
    }
    result.and(stored)
}

/// The read / put / commit loop; `slot` holds the tailer between blocking reads.
async fn tail(
    config: &TaildirConfig,
    ctx: &SourceContext,
    slot: &mut Option<Tailer>,
    position_file: &Path,
) -> Result<(), SourceError> {
    let mut last_store = Instant::now();
    loop {
        if ctx.is_stopping() {
            return Ok(());
        }
        let mut tailer = slot.take().expect("the tailer is back after every read");
        let max = ctx.batch_size.max(1);
        let (back, batch) = blocking(move || {
            let batch = tailer.next_batch(max);
            Ok((tailer, batch))
        })
        .await
        .map_err(SourceError::io("read tailed files"))?;
        let tailer = slot.insert(back);
        let refused = tailer.take_refused();
        if refused > 0 {
            ctx.counters.file_refused.add(refused);
        }
        let (pass_done, pass_read) = (batch.pass_done, batch.pass_read);
        if !batch.lines.is_empty() {
            let n = batch.lines.len();
            let mut events = to_events(batch.lines, ctx);
            let mut rest = events.iter_mut();
            for (count, headers) in batch.origins {
                for event in rest.by_ref().take(count) {
                    event.headers.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            match deliver(ctx, events).await? {
                Delivery::Committed => tailer.commit(&batch.acks),
                Delivery::Abandoned => return Ok(()),
            }
            tracing::trace!(events = n, "batch committed");
        }
        if tailer.positions_changed() && last_store.elapsed() >= config.write_pos_interval {
            store_positions(tailer, position_file).await?;
            last_store = Instant::now();
        }
        if pass_done && !pass_read {
            ctx.reached_end();
            tokio::select! {
                _ = actix_rt::time::sleep(config.poll_interval) => {}
                _ = ctx.stopping() => {}
            }
        }
    }
}

/// Loads the saved positions. An unreadable file is an error; a file that is not a position
/// array is set aside as `<name>.corrupt` (logged), and tailing starts without positions.
fn load_positions(path: &Path) -> Result<std::collections::HashMap<u64, Position>, SourceError> {
    match position::load(path) {
        Ok(saved) => Ok(saved),
        Err(e @ PositionFileError::Format { .. }) => {
            let aside = path.with_extension("corrupt");
            tracing::error!(error = %e, moved_to = %aside.display(), "position file unusable; starting without positions");
            std::fs::rename(path, &aside).map_err(SourceError::io(format!("move {} aside", path.display())))?;
            Ok(Default::default())
        }
        Err(PositionFileError::Io { path, source }) => {
            Err(SourceError::Io { what: format!("read position file {}", path.display()), source })
        }
    }
}

/// Writes the tailer's committed positions to the position file (atomically, off the event loop).
async fn store_positions(tailer: &mut Tailer, path: &Path) -> Result<(), SourceError> {
    let positions = tailer.positions();
    let target = path.to_path_buf();
    blocking(move || Ok(position::store(&target, &positions)))
        .await
        .map_err(SourceError::io("write the position file"))?
        .map_err(SourceError::from)?;
    tailer.positions_stored();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_into_folder_and_file_name_pattern() {
        let (dir, m) = split_glob("/var/log/app/*.log").unwrap();
        assert_eq!(dir, Path::new("/var/log/app"));
        assert!(m.is_match("access.log") && !m.is_match("access.log.1"));
        assert!(split_glob("/var/log/*/app.log").unwrap_err().contains("only in the file name part"));
        assert!(split_glob("/var/log/[.log").is_err());
    }

    #[test]
    fn options_default_as_documented() {
        let c: TaildirConfig =
            ron::from_str(r#"(filegroups: {"app": "/var/log/app/*.log"}, position_file: "/tmp/p.json")"#).unwrap();
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        assert_eq!(c.write_pos_interval, Duration::from_secs(3));
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.max_line_length, 65536);
        assert!(!c.skip_to_end && c.file_header.is_none() && c.filegroup_header.is_none());
        assert!(c.validate().is_empty());
    }
}
