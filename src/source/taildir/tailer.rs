//! The synchronous core of `Taildir`: finds files by glob, follows them by inode through
//! renames, truncation and deletion, and reads their complete lines in batches.
//!
//! A file is the same file as long as its device, inode and fingerprint (a hash of its first
//! bytes, as Vector's checksum fingerprinting) stay the same: a file whose first bytes changed, or
//! that became shorter than its read position, was truncated (`copytruncate`) or replaced; its
//! copy, found by fingerprint in the same folder, is read to its end from where the file was, and
//! the file again from its start. A saved position is resumed only on the same file.
//!
//! A [`Tailer`] runs on a blocking thread (the source's loop moves it there for each batch and
//! back). It works in *passes*: a pass starts with a scan of the file groups (at most once per
//! `poll_interval`), then reads each file in turn, rotated and deleted files first, each at most
//! `per_file` lines, so that one busy file cannot starve the others. Positions move only through
//! [`Tailer::commit`], which the source calls after a put committed.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globset::GlobMatcher;

use super::position::{Fingerprint, Position, FINGERPRINT_BYTES};
use crate::event::Headers;
use crate::source::file_input::fill;
use crate::source::lines::{Line, LineBuffer};

/// A file's identity: device and inode numbers (a renamed file keeps it, a new file gets another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// The device number.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
}

impl FileKey {
    fn of(md: &Metadata) -> Self {
        FileKey { dev: md.dev(), ino: md.ino() }
    }
}

/// A named glob: files in `dir` whose name matches `matcher`.
#[derive(Debug, Clone)]
pub struct FileGroup {
    /// The group's name (the `filegroups` key).
    pub name: String,
    /// The folder the glob's files are in (absolute).
    pub dir: PathBuf,
    /// Matches file names in `dir`.
    pub matcher: GlobMatcher,
}

/// What a [`Tailer`] needs to know besides its file groups.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Start files found by the first scan that have no saved position at their end.
    pub skip_to_end: bool,
    /// Longest line body in bytes (longer lines are cut and flagged).
    pub max_line_length: usize,
    /// Most lines one file gives per pass.
    pub per_file: usize,
    /// Least time between scans; also how long a rotated or deleted file may still grow after
    /// it reached its end before its final unterminated line is taken and it is forgotten.
    pub poll_interval: Duration,
    /// A file that has not grown for this long has its descriptor closed (reopened when it grows).
    pub idle_timeout: Duration,
    /// Header holding the file's path, if any.
    pub file_header: Option<String>,
    /// Header holding the file group's name, if any.
    pub filegroup_header: Option<String>,
    /// Paths never tailed even when a glob matches them (the position file and its temporary).
    pub ignored: Vec<PathBuf>,
    /// `run --once`: the input is over, so a file's final line without a line ending is handed
    /// out once the file is read to its end, instead of waiting for its newline.
    pub once: bool,
    /// Whether symbolic links matched by a glob are followed; when not, they are refused
    /// (logged and counted once each).
    pub follow_symlinks: bool,
}

/// One batch of lines, from one or more files.
#[derive(Debug, Default)]
pub struct Batch {
    /// The lines, file after file.
    pub lines: Vec<Line>,
    /// Runs of consecutive lines sharing headers: `(line count, headers)`, covering `lines`.
    pub origins: Vec<(usize, Headers)>,
    /// The position each file read in this batch reaches once the batch is committed.
    pub acks: Vec<(FileKey, u64)>,
    /// Whether this batch ends a pass over every file.
    pub pass_done: bool,
    /// Whether the pass it ends read any line (meaningful with `pass_done`).
    pub pass_read: bool,
}

/// A tailed file.
#[derive(Debug)]
struct TailFile {
    key: FileKey,
    /// Its path as last seen (the new name after a rename, when found).
    path: PathBuf,
    group: usize,
    headers: Headers,
    /// Open descriptor; `None` while idle (closed) or after a read error.
    file: Option<File>,
    /// Bytes read and not yet handed out as lines; created on first read, dropped when idle.
    lb: Option<LineBuffer>,
    /// File offset of the first byte `lb` was given.
    start: u64,
    /// File offset of the next byte to read.
    read_pos: u64,
    /// File offset up to which lines are committed (what the position file says).
    committed: u64,
    /// Since when no file group matches it (renamed away or deleted).
    orphaned: Option<Instant>,
    /// Read to its end for good (orphaned): forgotten once committed.
    finished: bool,
    last_read: Instant,
    seq: u64,
    /// The fingerprint of its first bytes (lengthened as it grows to [`FINGERPRINT_BYTES`]).
    fp: Fingerprint,
    /// Set when it was found truncated or replaced: where it had been read to, and its
    /// fingerprint then (for finding its copy).
    displaced: Option<(u64, Fingerprint)>,
}

impl TailFile {
    /// The offset just after the last line handed out.
    fn end(&self) -> u64 {
        self.start + self.lb.as_ref().map_or(0, LineBuffer::consumed)
    }

    /// Drops the descriptor and the buffer; reading resumes after the last line handed out.
    fn close(&mut self) {
        let end = self.end();
        self.file = None;
        self.lb = None;
        self.start = end;
        self.read_pos = end;
    }

    /// Whether the file's first bytes still match its fingerprint; lengthens the fingerprint when
    /// the file grew.
    fn same_head(&mut self, file: &File) -> std::io::Result<bool> {
        let head = read_head(file)?;
        if !self.fp.matches(&head) {
            return Ok(false);
        }
        if head.len() as u64 > self.fp.len {
            self.fp = Fingerprint::of(&head);
        }
        Ok(true)
    }

    /// Hands out up to `max` complete lines into `out`. Returns whether the file is at its end.
    ///
    /// A final line without a line ending is held back (the file may still grow), except in an
    /// orphaned file that stayed at its end for `grace`, or with `once`: then it is handed out
    /// (and the orphaned file is finished). A file smaller than the read position, or whose first
    /// bytes changed, was truncated or replaced: reading starts again at 0, and `displaced` says
    /// where it was, so that its copy can be finished.
    fn read(
        &mut self,
        max: usize,
        out: &mut Vec<Line>,
        max_line: usize,
        grace: Duration,
        once: bool,
    ) -> std::io::Result<bool> {
        if self.finished {
            return Ok(true);
        }
        let Some(file) = self.file.take() else { return Ok(true) };
        let result = self.read_from(&file, max, out, max_line, grace, once);
        self.file = Some(file);
        result
    }

    fn read_from(
        &mut self,
        file: &File,
        max: usize,
        out: &mut Vec<Line>,
        max_line: usize,
        grace: Duration,
        once: bool,
    ) -> std::io::Result<bool> {
        let mut n = 0;
        let mut checked = false;
        loop {
            if n >= max {
                return Ok(false);
            }
            if let Some(line) = self.lb.as_mut().and_then(LineBuffer::next_line) {
                out.push(line);
                n += 1;
                continue;
            }
            let size = file.metadata()?.len();
            let shrunk = size < self.read_pos;
            let replaced = !shrunk && !checked && self.read_pos > 0 && !self.same_head(file)?;
            checked = true;
            if shrunk || replaced {
                if n > 0 {
                    return Ok(false);
                }
                tracing::warn!(
                    path = %self.path.display(),
                    position = self.read_pos,
                    size,
                    "file truncated (or its first bytes changed); reading it again from its start"
                );
                self.displaced = Some((self.end(), self.fp));
                self.lb = None;
                self.start = 0;
                self.read_pos = 0;
                self.committed = 0;
                self.fp = Fingerprint::of(&read_head(file)?);
                continue;
            }
            if size == self.read_pos {
                if self.orphaned.is_some_and(|since| since.elapsed() >= grace) {
                    if let Some(line) = self.lb.as_mut().and_then(LineBuffer::finish) {
                        out.push(line);
                    }
                    self.finished = true;
                } else if once {
                    if let Some(line) = self.lb.as_mut().and_then(LineBuffer::finish) {
                        out.push(line);
                    }
                }
                return Ok(true);
            }
            let lb = self.lb.get_or_insert_with(|| LineBuffer::new(max_line));
            let got = fill(lb, file, self.read_pos, size - self.read_pos)?;
            if got == 0 {
                return Ok(true);
            }
            self.read_pos += got as u64;
            self.last_read = Instant::now();
        }
    }
}

/// Follows the files of some file groups and reads their lines.
#[derive(Debug)]
pub struct Tailer {
    groups: Vec<FileGroup>,
    options: TailOptions,
    files: Vec<TailFile>,
    /// Positions loaded at start, used by the first scan.
    saved: HashMap<u64, Position>,
    /// Paths already reported as unreadable (reported once).
    unreadable: HashSet<PathBuf>,
    /// Symbolic links refused (reported and counted once each).
    refused: HashSet<PathBuf>,
    /// Refusals not yet handed to the source's counters.
    refused_new: u64,
    cursor: usize,
    taken: usize,
    in_pass: bool,
    pass_read: bool,
    last_scan: Option<Instant>,
    next_seq: u64,
    changed: bool,
}

impl Tailer {
    /// A tailer over `groups` that resumes files from the `saved` positions (by inode).
    ///
    /// Nothing is read until [`Tailer::next_batch`]; the first scan happens there.
    pub fn new(groups: Vec<FileGroup>, options: TailOptions, saved: HashMap<u64, Position>) -> Self {
        Tailer {
            groups,
            options,
            files: Vec::new(),
            saved,
            unreadable: HashSet::new(),
            refused: HashSet::new(),
            refused_new: 0,
            cursor: 0,
            taken: 0,
            in_pass: false,
            pass_read: false,
            last_scan: None,
            next_seq: 0,
            changed: false,
        }
    }

    /// Whether no file is followed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The committed position of every followed file, for the position file.
    pub fn positions(&self) -> Vec<Position> {
        self.files
            .iter()
            .map(|f| Position {
                inode: f.key.ino,
                pos: f.committed,
                file: f.path.clone(),
                dev: Some(f.key.dev),
                fingerprint: Some(f.fp),
            })
            .collect()
    }

    /// Whether the positions changed since they were last stored.
    pub fn positions_changed(&self) -> bool {
        self.changed
    }

    /// Notes that the current positions are stored.
    pub fn positions_stored(&mut self) {
        self.changed = false;
    }

    /// Reads the next batch of at most `max` lines, continuing the current pass (or starting one).
    pub fn next_batch(&mut self, max: usize) -> Batch {
        let mut batch = Batch::default();
        if !self.in_pass {
            self.begin_pass();
        }
        while batch.lines.len() < max {
            let Some(f) = self.files.get_mut(self.cursor) else {
                batch.pass_done = true;
                batch.pass_read = self.pass_read;
                self.in_pass = false;
                break;
            };
            let room = (max - batch.lines.len()).min(self.options.per_file.saturating_sub(self.taken).max(1));
            let before = batch.lines.len();
            let committed = f.committed;
            let result = f.read(
                room,
                &mut batch.lines,
                self.options.max_line_length,
                self.options.poll_interval,
                self.options.once,
            );
            let n = batch.lines.len() - before;
            let at_end = match result {
                Ok(at_end) => at_end,
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), error = %e, "reading failed; the file is reopened when it changes");
                    f.close();
                    true
                }
            };
            if f.committed != committed {
                self.changed = true;
            }
            let displaced = f.displaced.take().map(|(from, fp)| (from, fp, f.path.clone(), f.group, f.key));
            if n > 0 {
                batch.origins.push((n, f.headers.clone()));
                batch.acks.push((f.key, f.end()));
                self.pass_read = true;
            }
            self.taken += n;
            if at_end || self.taken >= self.options.per_file {
                self.cursor += 1;
                self.taken = 0;
            }
            if let Some((from, fp, path, group, key)) = displaced {
                self.finish_copy(&path, group, key, from, fp);
            }
        }
        batch
    }

    /// A file was truncated (or replaced) after being read up to `from`: finds its copy (as
    /// logrotate's `copytruncate` makes) in its folder by fingerprint and reads the copy from
    /// `from` to its end. Without a copy, lines written between the last read and the truncation
    /// are gone (logged).
    fn finish_copy(&mut self, path: &Path, group: usize, key: FileKey, from: u64, fp: Fingerprint) {
        let dir = path.parent().unwrap_or(Path::new("."));
        match self.find_copy(dir, fp, key) {
            Some((copy_key, copy, size))
                if size > from
                    && self.start_file(copy_key, &copy, group, from, Some(Instant::now()), Some(fp)).is_some() =>
            {
                tracing::info!(
                    path = %path.display(), copy = %copy.display(), position = from,
                    "truncated file's copy found by fingerprint; reading the copy to its end"
                );
            }
            Some(_) => {}
            None if fp.len > 0 => tracing::warn!(
                path = %path.display(), position = from,
                "no copy of the truncated file in its folder (a compressed copy cannot be read): lines written after the last read and before the truncation, if any, are lost"
            ),
            None => {}
        }
    }

    /// A regular file in `dir` that is not followed yet (nor `not`), whose first bytes match
    /// `fp`; the most recently modified when several do. Answers its key, path and size.
    fn find_copy(&mut self, dir: &Path, fp: Fingerprint, not: FileKey) -> Option<(FileKey, PathBuf, u64)> {
        let mut best: Option<(std::time::SystemTime, FileKey, PathBuf, u64)> = None;
        for (name, _) in self.list(dir) {
            let path = dir.join(&name);
            if self.options.ignored.contains(&path) {
                continue;
            }
            let Some(md) = self.stat(&path) else { continue };
            let key = FileKey::of(&md);
            if !md.is_file() || md.len() < fp.len || key == not || self.files.iter().any(|f| f.key == key) {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue };
            if !read_head(&file).is_ok_and(|head| fp.matches(&head)) {
                continue;
            }
            let modified = md.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|b| modified > b.0) {
                best = Some((modified, key, path, md.len()));
            }
        }
        best.map(|(_, key, path, size)| (key, path, size))
    }

    /// Symbolic links refused since the last call (for `FileRefusedCount`).
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused_new)
    }

    /// The metadata of `path` (following a link only with `follow_symlinks`); `None` for a
    /// refused symbolic link (logged and counted once) or a path that cannot be stat'ed.
    fn stat(&mut self, path: &Path) -> Option<std::fs::Metadata> {
        if !self.options.follow_symlinks {
            let md = std::fs::symlink_metadata(path).ok()?;
            if md.file_type().is_symlink() {
                if self.refused.insert(path.to_path_buf()) {
                    self.refused_new += 1;
                    tracing::error!(path = %path.display(), "a symbolic link matched by a file group (follow_symlinks is false); refused, not read");
                }
                return None;
            }
            return Some(md);
        }
        std::fs::metadata(path).ok()
    }

    /// Moves the committed positions to those of a committed batch.
    pub fn commit(&mut self, acks: &[(FileKey, u64)]) {
        for (key, pos) in acks {
            if let Some(f) = self.files.iter_mut().find(|f| f.key == *key) {
                f.committed = *pos;
                self.changed = true;
            }
        }
    }

    fn begin_pass(&mut self) {
        self.sweep();
        if self.last_scan.is_none_or(|t| t.elapsed() >= self.options.poll_interval) {
            self.scan();
        }
        self.close_idle();
        self.files.sort_by_key(|f| (f.orphaned.is_none(), f.seq));
        self.cursor = 0;
        self.taken = 0;
        self.pass_read = false;
        self.in_pass = true;
    }

    /// Forgets finished files whose lines are all committed.
    fn sweep(&mut self) {
        let before = self.files.len();
        self.files.retain(|f| {
            let done = f.finished && f.committed == f.end();
            if done {
                tracing::info!(path = %f.path.display(), position = f.committed, "rotated or deleted file read to its end; forgotten");
            }
            !done
        });
        if self.files.len() != before {
            self.changed = true;
        }
    }

    /// Closes the descriptors of files that have not grown for `idle_timeout`.
    fn close_idle(&mut self) {
        for f in &mut self.files {
            if f.file.is_some()
                && f.orphaned.is_none()
                && f.last_read.elapsed() >= self.options.idle_timeout
                && f.lb.as_ref().is_none_or(LineBuffer::is_empty)
                && f.committed == f.end()
            {
                tracing::debug!(path = %f.path.display(), "idle; descriptor closed until the file grows");
                f.close();
            }
        }
    }

    fn headers(&self, path: &Path, group: usize) -> Headers {
        let mut headers = Headers::new();
        if let Some(key) = &self.options.file_header {
            headers.insert(key.clone(), path.to_string_lossy().into_owned());
        }
        if let Some(key) = &self.options.filegroup_header {
            headers.insert(key.clone(), self.groups[group].name.clone());
        }
        headers
    }

    /// Lists `dir`: every entry's name and inode number (without a stat per entry).
    fn list(&mut self, dir: &Path) -> Vec<(OsString, u64)> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound && self.unreadable.insert(dir.to_path_buf()) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot list the folder of a file group");
                }
                return Vec::new();
            }
        };
        self.unreadable.remove(dir);
        let mut out: Vec<(OsString, u64)> = entries.filter_map(Result::ok).map(|e| (e.file_name(), e.ino())).collect();
        out.sort();
        out
    }

    /// Finds the files the groups match now; follows renames, notices rotated and deleted files,
    /// reopens idle files that grew, and starts new files.
    fn scan(&mut self) {
        let initial = self.last_scan.is_none();
        let now = Instant::now();
        self.last_scan = Some(now);

        let mut listings: HashMap<PathBuf, Vec<(OsString, u64)>> = HashMap::new();
        let mut found: Vec<(FileKey, PathBuf, usize, u64)> = Vec::new();
        let mut found_at: HashMap<FileKey, usize> = HashMap::new();
        for gi in 0..self.groups.len() {
            let dir = self.groups[gi].dir.clone();
            if !listings.contains_key(&dir) {
                let listing = self.list(&dir);
                listings.insert(dir.clone(), listing);
            }
            for (name, _) in &listings[&dir] {
                if !self.groups[gi].matcher.is_match(Path::new(name)) {
                    continue;
                }
                let path = dir.join(name);
                if self.options.ignored.contains(&path) {
                    continue;
                }
                let Some(md) = self.stat(&path) else { continue };
                if !md.is_file() {
                    continue;
                }
                let key = FileKey::of(&md);
                if let std::collections::hash_map::Entry::Vacant(e) = found_at.entry(key) {
                    e.insert(found.len());
                    found.push((key, path, gi, md.len()));
                }
            }
        }
        let by_ino = |listings: &HashMap<PathBuf, Vec<(OsString, u64)>>, key: FileKey| -> Option<PathBuf> {
            listings
                .iter()
                .flat_map(|(dir, l)| l.iter().filter(move |e| e.1 == key.ino).map(move |e| dir.join(&e.0)))
                .find(|p| std::fs::metadata(p).is_ok_and(|md| md.is_file() && FileKey::of(&md) == key))
        };

        let mut known = vec![false; found.len()];
        let mut displaced: Vec<Position> = Vec::new();
        for fi in 0..self.files.len() {
            let key = self.files[fi].key;
            if let Some(&i) = found_at.get(&key) {
                known[i] = true;
                let (_, path, group, size) = &found[i];
                if self.files[fi].path != *path || self.files[fi].group != *group {
                    let headers = self.headers(path, *group);
                    let f = &mut self.files[fi];
                    f.path = path.clone();
                    f.group = *group;
                    f.headers = headers;
                }
                let f = &mut self.files[fi];
                f.orphaned = None;
                f.finished = false;
                if f.file.is_none() && *size != f.read_pos {
                    match open_as(&f.path, key) {
                        Ok(file) => f.file = Some(file),
                        Err(e) => {
                            tracing::warn!(path = %f.path.display(), error = %e, "cannot reopen a file that changed")
                        }
                    }
                }
                continue;
            }
            let renamed = by_ino(&listings, key);
            let f = &mut self.files[fi];
            if f.orphaned.is_none() {
                f.orphaned = Some(now);
                match &renamed {
                    Some(to) => tracing::info!(
                        path = %f.path.display(), to = %to.display(),
                        "file renamed out of its group (rotated); reading it to its end"
                    ),
                    None => tracing::info!(path = %f.path.display(), "file deleted; reading it to its end"),
                }
                if f.file.is_none() {
                    f.finished = true;
                }
            }
            if let Some(to) = renamed {
                if to != f.path {
                    let group = f.group;
                    let headers = self.headers(&to, group);
                    let f = &mut self.files[fi];
                    f.path = to;
                    f.headers = headers;
                }
            }
        }

        for (i, (key, path, group, size)) in found.iter().enumerate() {
            if known[i] {
                continue;
            }
            let saved = if initial { self.saved.remove(&key.ino) } else { None };
            let start = match &saved {
                Some(p) if p.pos <= *size && same_file(p, path, *key) => p.pos,
                Some(p) if p.pos <= *size => {
                    tracing::warn!(path = %path.display(), position = p.pos, "not the file of the saved position (another device, or other first bytes: a reused inode or a truncated file); reading it from its start");
                    displaced.push(p.clone());
                    0
                }
                Some(p) => {
                    tracing::warn!(path = %path.display(), position = p.pos, size, "file shorter than its saved position (truncated); reading it from its start");
                    displaced.push(p.clone());
                    0
                }
                None if initial && self.options.skip_to_end => *size,
                None => 0,
            };
            if let Some(f) = self.start_file(*key, path, *group, start, None, None) {
                tracing::info!(path = %f.path.display(), position = start, "tailing");
            }
        }

        if initial {
            self.recover_orphans(&mut listings, now);
            self.saved.clear();
            for p in displaced {
                self.resume_copy(&p, now);
            }
        }
    }

    /// After a restart: the file of saved position `p` is not where it was (its inode holds
    /// another file, or it was truncated); resumes its copy, found by fingerprint in its folder.
    fn resume_copy(&mut self, p: &Position, now: Instant) {
        let Some(fp) = p.fingerprint else { return };
        let Some(dir) = p.file.parent() else { return };
        let group = self.groups.iter().position(|g| g.dir == dir).unwrap_or(0);
        let not = FileKey { dev: p.dev.unwrap_or(0), ino: p.inode };
        match self.find_copy(dir, fp, not) {
            Some((key, path, size)) if size >= p.pos => {
                if self.start_file(key, &path, group, p.pos, Some(now), Some(fp)).is_some() {
                    tracing::info!(
                        path = %path.display(), was = %p.file.display(), position = p.pos,
                        "resuming a copy of a file truncated while stopped, found by fingerprint; reading it to its end"
                    );
                }
            }
            _ => tracing::warn!(
                was = %p.file.display(), position = p.pos,
                "the file of a saved position is gone, and no copy with its first bytes is in its folder"
            ),
        }
    }

    /// Opens and follows a file from byte `start`; `None` (logged once) when it cannot be opened
    /// or is no longer the file `key` names.
    fn start_file(
        &mut self,
        key: FileKey,
        path: &Path,
        group: usize,
        start: u64,
        orphaned: Option<Instant>,
        fp: Option<Fingerprint>,
    ) -> Option<&TailFile> {
        let file = match open_as(path, key) {
            Ok(file) => file,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound && self.unreadable.insert(path.to_path_buf()) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot open a matching file");
                }
                return None;
            }
        };
        self.unreadable.remove(path);
        let fp = match fp {
            Some(fp) => fp,
            None => match read_head(&file) {
                Ok(head) => Fingerprint::of(&head),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read a matching file");
                    return None;
                }
            },
        };
        let headers = self.headers(path, group);
        self.next_seq += 1;
        self.changed = true;
        self.files.push(TailFile {
            key,
            path: path.to_path_buf(),
            group,
            headers,
            file: Some(file),
            lb: None,
            start,
            read_pos: start,
            committed: start,
            orphaned,
            finished: false,
            last_read: Instant::now(),
            seq: self.next_seq,
            fp,
            displaced: None,
        });
        self.files.last()
    }

    /// After a restart: files with a saved position that no group matches any more (rotated while
    /// the agent was down or before it had read them to their end) are found by inode (and
    /// fingerprint), in the groups' folders or their saved path's folder, and read to their end
    /// from that position; failing that, by fingerprint alone (a copy of a truncated file).
    fn recover_orphans(&mut self, listings: &mut HashMap<PathBuf, Vec<(OsString, u64)>>, now: Instant) {
        let saved: Vec<Position> = self.saved.drain().map(|(_, p)| p).collect();
        for p in saved {
            if let Some(dir) = p.file.parent() {
                if !listings.contains_key(dir) {
                    let listing = self.list(dir);
                    listings.insert(dir.to_path_buf(), listing);
                }
            }
            let inode = p.inode;
            let candidates: Vec<PathBuf> = listings
                .iter()
                .flat_map(|(dir, l)| l.iter().filter(move |e| e.1 == inode).map(move |e| dir.join(&e.0)))
                .collect();
            let mut resumed = false;
            for path in candidates {
                let Some(md) = self.stat(&path) else { continue };
                if !md.is_file() || md.ino() != p.inode || self.files.iter().any(|f| f.key == FileKey::of(&md)) {
                    continue;
                }
                if p.pos > md.len() || !same_file(&p, &path, FileKey::of(&md)) {
                    continue;
                }
                let group = self.groups.iter().position(|g| p.file.parent() == Some(g.dir.as_path())).unwrap_or(0);
                if self.start_file(FileKey::of(&md), &path, group, p.pos, Some(now), None).is_some() {
                    tracing::info!(
                        path = %path.display(), was = %p.file.display(), position = p.pos,
                        "resuming a file no group matches any more (rotated); reading it to its end"
                    );
                    resumed = true;
                }
                break;
            }
            if !resumed && p.pos > 0 {
                self.resume_copy(&p, now);
            }
        }
    }
}

/// The first bytes of `file`, at most [`FINGERPRINT_BYTES`].
fn read_head(file: &File) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; FINGERPRINT_BYTES as usize];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Whether the file at `path` (with `key`) is the file of saved position `p`: same device (when
/// saved) and inode, and first bytes matching the saved fingerprint (when saved).
fn same_file(p: &Position, path: &Path, key: FileKey) -> bool {
    if p.inode != key.ino || p.dev.is_some_and(|dev| dev != key.dev) {
        return false;
    }
    match p.fingerprint {
        None => true,
        Some(fp) => File::open(path).and_then(|f| read_head(&f)).is_ok_and(|head| fp.matches(&head)),
    }
}

/// Opens `path` and checks it is still the file `key` names.
fn open_as(path: &Path, key: FileKey) -> std::io::Result<File> {
    let file = File::open(path)?;
    if FileKey::of(&file.metadata()?) != key {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "replaced by another file meanwhile"));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tailer(dir: &Path, pattern: &str, saved: HashMap<u64, Position>, skip_to_end: bool) -> Tailer {
        let group = FileGroup {
            name: "app".into(),
            dir: dir.to_path_buf(),
            matcher: globset::Glob::new(pattern).unwrap().compile_matcher(),
        };
        let options = TailOptions {
            skip_to_end,
            max_line_length: 1000,
            per_file: 100,
            poll_interval: Duration::ZERO,
            idle_timeout: Duration::from_secs(120),
            file_header: Some("file".into()),
            filegroup_header: Some("group".into()),
            ignored: Vec::new(),
            once: false,
            follow_symlinks: false,
        };
        Tailer::new(vec![group], options, saved)
    }

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    /// Reads batches until a pass reads nothing, committing each; returns the bodies.
    fn drain(t: &mut Tailer) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let b = t.next_batch(10);
            out.extend(b.lines.iter().map(|l| String::from_utf8(l.body.to_vec()).unwrap()));
            t.commit(&b.acks);
            if b.pass_done && !b.pass_read {
                return out;
            }
        }
    }

    #[test]
    fn holds_a_final_line_until_its_newline_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\r\npartial");
        let mut t = tailer(dir.path(), "*.log", HashMap::new(), false);
        assert_eq!(drain(&mut t), ["[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok"]);
        assert_eq!(t.positions()[0].pos, 57);
        append(&path, " line\n");
        assert_eq!(drain(&mut t), ["partial line"]);
        assert_eq!(t.positions()[0].pos, 57 + 13);
    }

    #[test]
    fn with_once_a_final_line_without_newline_is_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "one\ntwo");
        let mut t = tailer(dir.path(), "*.log", HashMap::new(), false);
        t.options.once = true;
        assert_eq!(drain(&mut t), ["one", "two"]);
        assert_eq!(t.positions()[0].pos, 7);
        assert!(drain(&mut t).is_empty(), "nothing comes twice");
    }

    #[test]
    fn headers_name_the_file_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "a\nb\n");
        let mut t = tailer(dir.path(), "*.log", HashMap::new(), false);
        let b = t.next_batch(10);
        assert_eq!(b.lines.len(), 2);
        assert_eq!(b.origins.len(), 1);
        assert_eq!(b.origins[0].0, 2);
        assert_eq!(b.origins[0].1["file"], path.to_string_lossy());
        assert_eq!(b.origins[0].1["group"], "app");
    }

    #[test]
    fn a_renamed_file_is_read_to_its_end_then_the_new_one_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "one\n");
        let mut t = tailer(dir.path(), "app.log", HashMap::new(), false);
        assert_eq!(drain(&mut t), ["one"]);
        append(&path, "two\nthree");
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&path, "four\n");
        assert_eq!(drain(&mut t), ["two", "three", "four"]);
        let positions = t.positions();
        assert_eq!(positions.len(), 1);
        assert_eq!((positions[0].file.clone(), positions[0].pos), (path, 5));
    }

    #[test]
    fn a_truncated_file_is_read_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "first line\nsecond line\n");
        let mut t = tailer(dir.path(), "*.log", HashMap::new(), false);
        assert_eq!(drain(&mut t).len(), 2);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(drain(&mut t), ["new"]);
        assert_eq!(t.positions()[0].pos, 4);
    }

    #[test]
    fn resumes_from_saved_positions_and_skips_to_end_only_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, "a1\na2\n");
        append(&b, "b1\n");
        let ino = std::fs::metadata(&a).unwrap().ino();
        let saved =
            HashMap::from([(ino, Position { inode: ino, pos: 3, file: a.clone(), dev: None, fingerprint: None })]);
        let mut t = tailer(dir.path(), "*.log", saved, true);
        assert_eq!(drain(&mut t), ["a2"]);
        append(&b, "b2\n");
        let c = dir.path().join("c.log");
        append(&c, "c1\n");
        let mut got = drain(&mut t);
        got.sort();
        assert_eq!(got, ["b2", "c1"]);
    }

    #[test]
    fn a_file_rotated_while_stopped_is_found_by_inode_and_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "one\ntwo\nthree\n");
        let ino = std::fs::metadata(&path).unwrap().ino();
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(&path, "four\n");
        let saved =
            HashMap::from([(ino, Position { inode: ino, pos: 4, file: path.clone(), dev: None, fingerprint: None })]);
        let mut t = tailer(dir.path(), "app.log", saved, false);
        assert_eq!(drain(&mut t), ["two", "three", "four"]);
    }

    /// logrotate's `copytruncate`: copy, then truncate in place.
    fn copytruncate(path: &Path, to: &str) {
        std::fs::copy(path, path.with_file_name(to)).unwrap();
        std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(0).unwrap();
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn a_copytruncated_file_has_its_copy_finished_from_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "one\ntwo\n");
        let mut t = tailer(dir.path(), "app.log", HashMap::new(), false);
        assert_eq!(drain(&mut t), ["one", "two"]);
        // Written after the last read: in the copy only once the file is truncated.
        append(&path, "three\nfour\n");
        copytruncate(&path, "app.log.1");
        append(&path, "five\n");
        assert_eq!(sorted(drain(&mut t)), ["five", "four", "three"]);
        // Again, with the new contents past the old read position before the tailer looks.
        append(&path, "six\n");
        assert_eq!(drain(&mut t), ["six"]);
        append(&path, "seven\n");
        copytruncate(&path, "app.log.1");
        append(&path, "eight, a line longer than everything read so far\n");
        assert_eq!(sorted(drain(&mut t)), ["eight, a line longer than everything read so far", "seven"]);
        assert_eq!(t.positions().len(), 1, "the copies are forgotten once read");
    }

    #[test]
    fn a_file_copytruncated_while_stopped_has_its_copy_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "one\ntwo\nthree\n");
        let md = std::fs::metadata(&path).unwrap();
        let fp = Fingerprint::of(b"one\n");
        let saved = HashMap::from([(
            md.ino(),
            Position { inode: md.ino(), pos: 4, file: path.clone(), dev: Some(md.dev()), fingerprint: Some(fp) },
        )]);
        copytruncate(&path, "app.log.1");
        append(&path, "four, now longer than the saved position\n");
        let mut t = tailer(dir.path(), "app.log", saved, false);
        assert_eq!(sorted(drain(&mut t)), ["four, now longer than the saved position", "three", "two"]);
    }

    #[test]
    fn a_new_file_on_a_saved_inode_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "new one\nnew two\n");
        let md = std::fs::metadata(&path).unwrap();
        // The saved position of a deleted file that had this inode, and other first bytes.
        let old = Position {
            inode: md.ino(),
            pos: 8,
            file: path.clone(),
            dev: Some(md.dev()),
            fingerprint: Some(Fingerprint::of(b"old one\n")),
        };
        let mut t = tailer(dir.path(), "app.log", HashMap::from([(md.ino(), old.clone())]), false);
        assert_eq!(drain(&mut t), ["new one", "new two"]);
        // Another device: not the same file either.
        let other =
            Position { dev: Some(md.dev() + 1), fingerprint: Some(Fingerprint::of(b"new one\n")), ..old.clone() };
        let mut t = tailer(dir.path(), "app.log", HashMap::from([(md.ino(), other)]), false);
        assert_eq!(drain(&mut t), ["new one", "new two"]);
        // The same file: resumed.
        let same = Position { fingerprint: Some(Fingerprint::of(b"new one\n")), ..old };
        let mut t = tailer(dir.path(), "app.log", HashMap::from([(md.ino(), same)]), false);
        assert_eq!(drain(&mut t), ["new two"]);
        let p = &t.positions()[0];
        assert_eq!((p.dev, p.fingerprint), (Some(md.dev()), Some(Fingerprint::of(b"new one\nnew two\n"))));
    }

    #[test]
    fn a_deleted_file_is_finished_with_its_unterminated_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "one\n");
        let mut t = tailer(dir.path(), "*.log", HashMap::new(), false);
        assert_eq!(drain(&mut t), ["one"]);
        append(&path, "two\nlast");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(drain(&mut t), ["two", "last"]);
        t.next_batch(10);
        assert!(t.is_empty());
    }

    #[test]
    fn one_busy_file_does_not_starve_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, &"a\n".repeat(1000));
        append(&b, "b\n");
        let mut t = tailer(dir.path(), "*.log", HashMap::new(), false);
        let mut seen_b_after = None;
        for i in 0.. {
            let batch = t.next_batch(10);
            t.commit(&batch.acks);
            if batch.lines.iter().any(|l| l.body == "b") {
                seen_b_after = Some(i);
                break;
            }
        }
        assert!(seen_b_after.unwrap() < 15, "{seen_b_after:?}");
    }
}
