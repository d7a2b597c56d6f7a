//! The synchronous core of `SpoolDir`: choosing the next file, reading it in batches of lines,
//! keeping its progress, and completing it.
//!
//! Runs on blocking threads (the source's loop moves the state there for each step and back).
//! The progress of the file being read is the tracker folder's `progress.json`,
//! `{"file": "app.log", "inode": 1234, "pos": 5678}`: the byte offset up to which its events are
//! committed, replaced atomically after every committed put and removed once the file is completed.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{DeletePolicy, SpoolDirConfig};
use crate::blocking::sync_dir;
use crate::source::file_input::{fill, write_atomically};
use crate::source::lines::{Line, LineBuffer, READ_CHUNK};

/// The progress file's name inside the tracker folder.
pub const PROGRESS_FILE: &str = "progress.json";

/// Why the spool directory could not be worked on.
#[derive(Debug, thiserror::Error)]
pub enum SpoolDirError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The completed name of a file is taken: a file of the same name was ingested before.
    /// As Flume, the file is not renamed over it.
    #[error(
        "cannot complete {file}: {completed} already exists (a file of the same name was ingested before); \
         rename or remove one of them"
    )]
    CompletedExists {
        /// The file read.
        file: PathBuf,
        /// Its completed name, already taken.
        completed: PathBuf,
    },
    /// The file changed size while it was read; spool files must be complete when dropped in.
    #[error(
        "{path} changed while it was read ({read} bytes read, now {size} bytes): files must be complete \
         and unchanging once in the spool directory (write them elsewhere, then move them in)"
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// Bytes read.
        read: u64,
        /// Its size now.
        size: u64,
    },
    /// A regex option does not compile (validated at load, so only for configs built in code).
    #[error("{what}: {source}")]
    Pattern {
        /// `include_pattern` or `ignore_pattern`.
        what: &'static str,
        /// The regex error.
        source: regex::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolDirError {
    let path = path.to_path_buf();
    move |source| SpoolDirError::Io { what, path, source }
}

/// Whether `name` is a plain file name: one path component, not `.` or `..`, no `/` (a progress
/// entry naming anything else points outside the spool directory).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The progress of the file being read, as stored in the tracker folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The file's name in the spool directory.
    pub file: String,
    /// Its inode number (a different file of the same name is not resumed).
    pub inode: u64,
    /// Bytes of it whose events are committed.
    pub pos: u64,
}

/// The spool directory and its rules.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    tracker: PathBuf,
    completed_suffix: String,
    delete_policy: DeletePolicy,
    include: Regex,
    ignore: Regex,
    max_line_length: usize,
    /// Files whose completed name is taken (reported once each).
    refused: HashSet<String>,
    /// Whether symbolic links are read.
    follow_symlinks: bool,
    /// Symbolic links and progress entries refused (reported and counted once each).
    refused_links: HashSet<String>,
    /// Refusals not yet handed to the source's counters.
    refused_new: u64,
}

/// A spool file being read.
#[derive(Debug)]
pub struct SpoolFile {
    /// Its name in the spool directory.
    pub name: String,
    /// Its absolute path.
    pub path: PathBuf,
    inode: u64,
    file: File,
    lb: LineBuffer,
    start: u64,
    read_pos: u64,
    /// Bytes of it whose events are committed.
    pub committed: u64,
    eof: bool,
    /// Events read from it by this run.
    pub events: u64,
}

impl SpoolFile {
    /// Reads up to `max` lines; at the end of the file its final line is one even without a line
    /// ending. Returns no lines once the file is read to its end.
    ///
    /// # Errors
    /// [`SpoolDirError::Io`] when reading fails.
    pub fn read_batch(&mut self, max: usize) -> Result<Vec<Line>, SpoolDirError> {
        let mut lines = Vec::with_capacity(max.min(4096));
        while lines.len() < max {
            if let Some(line) = self.lb.next_line() {
                lines.push(line);
                continue;
            }
            if self.eof {
                break;
            }
            let got =
                fill(&mut self.lb, &self.file, self.read_pos, READ_CHUNK as u64).map_err(io("read", &self.path))?;
            if got == 0 {
                lines.extend(self.lb.finish());
                self.eof = true;
                break;
            }
            self.read_pos += got as u64;
        }
        self.events += lines.len() as u64;
        Ok(lines)
    }

    /// The offset just after the last line handed out: what to commit once they are put.
    pub fn end(&self) -> u64 {
        self.start + self.lb.consumed()
    }

    /// Whether every line was handed out.
    pub fn is_read(&self) -> bool {
        self.eof && self.lb.is_empty()
    }
}

impl Spool {
    /// The spool of `config.dir` (made absolute); creates the tracker folder.
    ///
    /// # Errors
    /// The folder cannot be resolved, or the tracker folder cannot be created; a bad regex.
    pub fn open(config: &SpoolDirConfig) -> Result<Self, SpoolDirError> {
        let dir = std::fs::canonicalize(&config.dir).map_err(io("open spool directory", &config.dir))?;
        let tracker = dir.join(&config.tracker_dir);
        std::fs::create_dir_all(&tracker).map_err(io("create tracker folder", &tracker))?;
        let pattern = |what, re: &str| Regex::new(re).map_err(|source| SpoolDirError::Pattern { what, source });
        Ok(Spool {
            dir,
            tracker,
            completed_suffix: config.completed_suffix.clone(),
            delete_policy: config.delete_policy,
            include: pattern("include_pattern", &config.include_pattern)?,
            ignore: pattern("ignore_pattern", &config.ignore_pattern)?,
            max_line_length: config.max_line_length,
            refused: HashSet::new(),
            follow_symlinks: config.follow_symlinks,
            refused_links: HashSet::new(),
            refused_new: 0,
        })
    }

    /// Files refused since the last call (for `FileRefusedCount`).
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused_new)
    }

    /// Logs and counts a refused file once per name.
    fn refuse(&mut self, name: &str, why: &str) {
        if self.refused_links.insert(name.to_string()) {
            self.refused_new += 1;
            tracing::error!(dir = %self.dir.display(), file = %name, "{why}; refused, left untouched");
        }
    }

    /// The spool directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn progress_path(&self) -> PathBuf {
        self.tracker.join(PROGRESS_FILE)
    }

    fn completed_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{}", self.completed_suffix))
    }

    /// The file to read next: the one the progress file names (resumed at its committed offset),
    /// else the oldest eligible file (by modification time, then name), else none.
    ///
    /// # Errors
    /// [`SpoolDirError::Io`] when the folder cannot be listed or the progress file handled.
    pub fn next_file(&mut self) -> Result<Option<SpoolFile>, SpoolDirError> {
        if let Some(file) = self.resume()? {
            return Ok(Some(file));
        }
        for name in self.candidates()? {
            let completed = self.completed_path(&name);
            if self.delete_policy == DeletePolicy::Never && completed.exists() {
                if self.refused.insert(name.clone()) {
                    let e = SpoolDirError::CompletedExists { file: self.dir.join(&name), completed };
                    tracing::error!(error = %e, "file refused");
                }
                continue;
            }
            self.refused.remove(&name);
            match self.open_file(&name, 0) {
                Ok(file) => return Ok(Some(file)),
                Err(SpoolDirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The file named by the progress file, if it is still there (same inode); a stale or
    /// unreadable progress file is removed (logged).
    fn resume(&mut self) -> Result<Option<SpoolFile>, SpoolDirError> {
        let path = self.progress_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SpoolDirError::Io { what: "read progress file", path, source: e }),
        };
        let progress: Progress = match serde_json::from_slice(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "progress file unusable; removed (the file it named is read again from its start)");
                self.clear_progress()?;
                return Ok(None);
            }
        };
        if !is_plain_name(&progress.file) {
            self.refuse(&progress.file, "the progress file names a file outside the spool directory");
            self.clear_progress()?;
            return Ok(None);
        }
        let file_path = self.dir.join(&progress.file);
        if !self.follow_symlinks && std::fs::symlink_metadata(&file_path).is_ok_and(|m| m.file_type().is_symlink()) {
            self.refuse(&progress.file, "a symbolic link (follow_symlinks is false)");
            self.clear_progress()?;
            return Ok(None);
        }
        match std::fs::metadata(&file_path) {
            Ok(md) if md.ino() == progress.inode => {
                let completed = self.completed_path(&progress.file);
                let taken = self.delete_policy == DeletePolicy::Never
                    && std::fs::metadata(&completed).is_ok_and(|c| c.ino() != progress.inode);
                if taken {
                    // Refused below as a candidate too; its progress cannot be kept meanwhile.
                    self.refused.insert(progress.file.clone());
                    let e = SpoolDirError::CompletedExists { file: file_path, completed };
                    tracing::error!(error = %e, "file refused; its progress is removed");
                    self.clear_progress()?;
                    return Ok(None);
                }
                let start = if progress.pos <= md.len() {
                    progress.pos
                } else {
                    tracing::warn!(path = %file_path.display(), position = progress.pos, size = md.len(), "file shorter than its progress; reading it from its start");
                    0
                };
                let file = self.open_file(&progress.file, start)?;
                tracing::info!(path = %file_path.display(), position = start, "resuming");
                Ok(Some(file))
            }
            Ok(_) => {
                tracing::warn!(path = %file_path.display(), "progress names a file since replaced by another of that name; progress removed");
                self.clear_progress()?;
                Ok(None)
            }
            Err(_) => {
                tracing::info!(path = %file_path.display(), "the file in progress is already completed; progress removed");
                self.clear_progress()?;
                Ok(None)
            }
        }
    }

    /// Eligible file names, oldest first: regular files matching `include_pattern` and not
    /// `ignore_pattern`, not hidden, not already completed.
    fn candidates(&mut self) -> Result<Vec<String>, SpoolDirError> {
        let entries = std::fs::read_dir(&self.dir).map_err(io("list spool directory", &self.dir))?;
        let mut found: Vec<(SystemTime, String)> = Vec::new();
        let progress = self.progress_path();
        for entry in entries.filter_map(Result::ok) {
            if entry.path() == progress {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with('.')
                || (!self.completed_suffix.is_empty() && name.ends_with(&self.completed_suffix))
                || !self.include.is_match(&name)
                || self.ignore.is_match(&name)
            {
                continue;
            }
            if !self.follow_symlinks && entry.file_type().is_ok_and(|t| t.is_symlink()) {
                self.refuse(&name, "a symbolic link (follow_symlinks is false)");
                continue;
            }
            let Ok(md) = std::fs::metadata(entry.path()) else { continue };
            if md.is_file() {
                found.push((md.modified().unwrap_or(SystemTime::UNIX_EPOCH), name));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    fn open_file(&self, name: &str, start: u64) -> Result<SpoolFile, SpoolDirError> {
        let path = self.dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        if !self.follow_symlinks {
            // A link put in place after the listing is not followed either.
            std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        }
        let file = options.open(&path).map_err(io("open", &path))?;
        let md = file.metadata().map_err(io("stat", &path))?;
        Ok(SpoolFile {
            name: name.to_string(),
            path,
            inode: md.ino(),
            file,
            lb: LineBuffer::new(self.max_line_length),
            start,
            read_pos: start,
            committed: start,
            eof: false,
            events: 0,
        })
    }

    /// Records that `file`'s events up to byte `pos` are committed.
    ///
    /// # Errors
    /// [`SpoolDirError::Io`] when the progress file cannot be written.
    pub fn save_progress(&self, file: &mut SpoolFile, pos: u64) -> Result<(), SpoolDirError> {
        let progress = Progress { file: file.name.clone(), inode: file.inode, pos };
        let json = serde_json::to_vec(&progress).expect("progress always serializes");
        let path = self.progress_path();
        write_atomically(&path, &json).map_err(io("write progress file", &path))?;
        file.committed = pos;
        Ok(())
    }

    fn clear_progress(&self) -> Result<(), SpoolDirError> {
        let path = self.progress_path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.tracker);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SpoolDirError::Io { what: "remove progress file", path, source: e }),
        }
    }

    /// Completes a file read to its end with all its events committed: renames it with the
    /// completed suffix (never over an existing file) or deletes it, then removes the progress.
    ///
    /// # Errors
    /// [`SpoolDirError::Changed`] when the file's size is not what was read;
    /// [`SpoolDirError::CompletedExists`] when its completed name is taken;
    /// [`SpoolDirError::Io`] when renaming or deleting fails.
    pub fn complete(&self, file: SpoolFile) -> Result<(), SpoolDirError> {
        let size = file.file.metadata().map_err(io("stat", &file.path))?.len();
        if size != file.read_pos {
            return Err(SpoolDirError::Changed { path: file.path, read: file.read_pos, size });
        }
        drop(file.file);
        match self.delete_policy {
            DeletePolicy::Immediate => std::fs::remove_file(&file.path).map_err(io("delete", &file.path))?,
            DeletePolicy::Never => rename_no_replace(&file.path, &self.completed_path(&file.name), file.inode)?,
        }
        sync_dir(&self.dir);
        self.clear_progress()
    }
}

/// Renames `from` to `to` unless `to` exists (a hard link then an unlink, so the check and the
/// rename are one step). A `to` that is already `from` (a crash between link and unlink) is fine.
fn rename_no_replace(from: &Path, to: &Path, inode: u64) -> Result<(), SpoolDirError> {
    let exists = || SpoolDirError::CompletedExists { file: from.into(), completed: to.into() };
    match std::fs::hard_link(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if !std::fs::metadata(to).is_ok_and(|md| md.ino() == inode) {
                return Err(exists());
            }
        }
        Err(_) => {
            if to.exists() {
                return Err(exists());
            }
            return std::fs::rename(from, to).map_err(io("rename", from));
        }
    }
    std::fs::remove_file(from).map_err(io("remove after linking its completed name", from))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(dir: &Path, policy: DeletePolicy) -> SpoolDirConfig {
        let text = format!("(dir: {:?}, delete_policy: {policy:?}, ignore_pattern: \"^skip\")", dir.to_str().unwrap());
        ron::from_str(&text).unwrap()
    }

    fn read_all(f: &mut SpoolFile) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let lines = f.read_batch(2).unwrap();
            if lines.is_empty() {
                return out;
            }
            out.extend(lines.iter().map(|l| String::from_utf8(l.body.to_vec()).unwrap()));
        }
    }

    fn set_mtime(path: &Path, secs: u64) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
    }

    #[test]
    fn picks_the_oldest_eligible_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, secs) in [("b.log", 100), ("a.log", 200), ("skip.log", 1), (".hidden", 1), ("c.log.COMPLETED", 1)] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
            set_mtime(&dir.path().join(name), secs);
        }
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        assert_eq!(spool.candidates().unwrap(), ["b.log", "a.log"]);
        assert_eq!(spool.next_file().unwrap().unwrap().name, "b.log");
    }

    #[test]
    fn final_line_without_newline_is_an_event_and_completion_renames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "one\r\ntwo\nthree").unwrap();
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        let mut f = spool.next_file().unwrap().unwrap();
        assert_eq!(read_all(&mut f), ["one", "two", "three"]);
        assert!(f.is_read());
        let end = f.end();
        assert_eq!(end, 14);
        spool.save_progress(&mut f, end).unwrap();
        spool.complete(f).unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read(dir.path().join("app.log.COMPLETED")).unwrap(), b"one\r\ntwo\nthree");
        assert!(!dir.path().join(".flumenspool").join(PROGRESS_FILE).exists());
        assert!(spool.next_file().unwrap().is_none());
    }

    #[test]
    fn resumes_from_progress() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), "one\ntwo\nthree\n").unwrap();
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Immediate)).unwrap();
        let mut f = spool.next_file().unwrap().unwrap();
        assert_eq!(f.read_batch(1).unwrap().len(), 1);
        let end = f.end();
        spool.save_progress(&mut f, end).unwrap();
        drop(f);
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Immediate)).unwrap();
        let mut f = spool.next_file().unwrap().unwrap();
        assert_eq!(read_all(&mut f), ["two", "three"]);
        let end = f.end();
        spool.save_progress(&mut f, end).unwrap();
        spool.complete(f).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the tracker folder is left");
    }

    #[test]
    fn a_taken_completed_name_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), "new\n").unwrap();
        std::fs::write(dir.path().join("app.log.COMPLETED"), "old\n").unwrap();
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        assert!(spool.next_file().unwrap().is_none());
        let f = spool.open_file("app.log", 0).unwrap();
        let err = spool.complete(f).unwrap_err();
        assert!(matches!(err, SpoolDirError::Changed { .. }), "nothing was read yet: {err}");
        let mut f = spool.open_file("app.log", 0).unwrap();
        read_all(&mut f);
        let err = spool.complete(f).unwrap_err();
        assert!(matches!(err, SpoolDirError::CompletedExists { .. }), "{err}");
        assert!(err.to_string().contains("app.log.COMPLETED already exists"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("app.log.COMPLETED")).unwrap(), b"old\n");
    }

    #[test]
    fn a_crash_between_link_and_unlink_completes_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "one\n").unwrap();
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        let mut f = spool.next_file().unwrap().unwrap();
        read_all(&mut f);
        spool.save_progress(&mut f, 4).unwrap();
        std::fs::hard_link(&path, dir.path().join("app.log.COMPLETED")).unwrap();
        drop(f);

        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        let mut f = spool.next_file().unwrap().unwrap();
        assert!(read_all(&mut f).is_empty());
        spool.complete(f).unwrap();
        assert!(!path.exists() && dir.path().join("app.log.COMPLETED").exists());
        assert!(spool.next_file().unwrap().is_none());
    }

    #[test]
    fn a_file_in_progress_whose_completed_name_got_taken_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), "one\ntwo\n").unwrap();
        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        let mut f = spool.next_file().unwrap().unwrap();
        f.read_batch(1).unwrap();
        spool.save_progress(&mut f, 4).unwrap();
        drop(f);
        std::fs::write(dir.path().join("app.log.COMPLETED"), "other\n").unwrap();

        let mut spool = Spool::open(&config(dir.path(), DeletePolicy::Never)).unwrap();
        assert!(spool.next_file().unwrap().is_none());
        assert!(!spool.progress_path().exists());
    }
}
