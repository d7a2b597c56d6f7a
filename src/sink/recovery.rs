//! What the file sinks (`FileRoll`, `Hdfs`) do on start-up with files a killed agent left open:
//! every in-use file is cut back to its last complete line and given its final name, so a reader
//! of finished files never sees a partial line and misses no committed one.
//!
//! Both sinks write line-oriented output (each event's body and a newline) and commit a take only
//! after its batch was written, so every committed event ends before the file's last newline; a
//! line after it was cut by the kill and belongs to a batch that was never committed (its events
//! are taken again from the channel). Compressed files are decoded up to the last point their
//! stream can be read to, and their complete lines written into a fresh, properly ended stream.
//! Recovery happens once per output folder per process, and never touches a file another sink of
//! the same process is writing (two sinks may share a tree; a sink rebuilt after a failure finds
//! its predecessor's files closed, or being closed, by its `Drop`).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::blocking::sync_dir;

/// Output folders whose in-use files were already recovered by this process.
static RECOVERED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// In-use files some sink of this process is writing: never touched by recovery.
static OPEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Notes that a sink of this process writes `path` (before it creates it).
pub fn opening(path: &Path) {
    OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(path.to_path_buf());
}

/// Notes that no sink of this process writes `path` any more (after it was renamed).
pub fn closed(path: &Path) {
    OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(path);
}

/// Gives a closed file its final name: renames `in_use` to `done` (unless they are one name),
/// notes that no sink writes `in_use` any more, and with `sync` fsyncs the directory so that the
/// rename survives a power cut.
///
/// # Errors
/// When the rename fails.
pub fn rename_closed(in_use: &Path, done: &Path, sync: bool) -> std::io::Result<()> {
    if in_use != done {
        std::fs::rename(in_use, done)?;
        closed(in_use);
        if sync {
            sync_dir(done.parent().unwrap_or(Path::new(".")));
        }
    }
    Ok(())
}

/// Whether a sink of this process writes `path`.
pub fn is_open(path: &Path) -> bool {
    OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(path)
}

/// Whether `dir` has not been recovered by this process yet; marks it recovered.
pub fn first_time(dir: &Path) -> bool {
    RECOVERED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(dir.to_path_buf())
}

/// What recovering one file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes (of the decoded stream, for a compressed file) kept: complete lines.
    pub kept: u64,
    /// Bytes cut after the last newline.
    pub cut: u64,
}

/// Cuts the plain-text file `path` back to just after its last newline (empty when it has
/// none), fsyncing it with `sync`.
///
/// # Errors
/// When the file cannot be read or truncated.
pub fn truncate_to_last_newline(path: &Path, sync: bool) -> io::Result<Recovered> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let keep = last_newline_end(&file, len)?;
    if keep < len {
        file.set_len(keep)?;
    }
    if sync {
        file.sync_all()?;
    }
    Ok(Recovered { kept: keep, cut: len - keep })
}

/// The offset just after the last `\n` among the first `len` bytes of `file` (0 without one),
/// reading backwards in blocks.
fn last_newline_end(file: &File, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Reads the decoded stream `reader` until it ends or fails (a stream cut by a kill fails after
/// its last readable point) and writes its complete lines to `out`. Answers what was kept and cut.
///
/// # Errors
/// When writing to `out` fails (a failing `reader` only ends the input).
pub fn copy_complete_lines(reader: &mut dyn Read, out: &mut dyn Write) -> io::Result<Recovered> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut kept = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let chunk = &buf[..n];
        match memchr::memrchr(b'\n', chunk) {
            Some(i) => {
                out.write_all(&carry)?;
                out.write_all(&chunk[..=i])?;
                kept += (carry.len() + i + 1) as u64;
                carry.clear();
                carry.extend_from_slice(&chunk[i + 1..]);
            }
            None => carry.extend_from_slice(chunk),
        }
    }
    Ok(Recovered { kept, cut: carry.len() as u64 })
}

/// Every regular file under `root`, recursively (an unreadable folder is skipped).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_is_cut_after_its_last_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.tmp");
        std::fs::write(&path, b"one\ntwo\nthr").unwrap();
        assert_eq!(truncate_to_last_newline(&path, true).unwrap(), Recovered { kept: 8, cut: 3 });
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        std::fs::write(&path, vec![b'x'; 200_000]).unwrap();
        assert_eq!(truncate_to_last_newline(&path, false).unwrap(), Recovered { kept: 0, cut: 200_000 });
        assert!(std::fs::read(&path).unwrap().is_empty());
    }

    #[test]
    fn a_cut_gzip_stream_gives_its_complete_lines() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"one\ntwo\n").unwrap();
        enc.flush().unwrap();
        enc.write_all(b"three\nfo").unwrap();
        enc.flush().unwrap();
        let mut bytes = enc.get_ref().clone();
        bytes.truncate(bytes.len() - 2);
        let mut out = Vec::new();
        let r = copy_complete_lines(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out).unwrap();
        assert!(out.starts_with(b"one\ntwo\n") && out.ends_with(b"\n"), "{out:?}");
        assert_eq!(r.kept, out.len() as u64);
    }
}
