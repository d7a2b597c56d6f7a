//! What the file sources (`Taildir`, `SpoolDir`) share: reading a file at an offset into a
//! [`LineBuffer`], replacing a small state file atomically, and committing a batch while the agent
//! may be stopping.
//!
//! Both sources acknowledge their input by writing a state file (positions, progress) only after a
//! put committed; the state file is replaced with write-to-temporary + fsync + rename, so a crash
//! leaves either the old or the new state, never a torn one.

use crate::blocking::sync_dir;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lines::{LineBuffer, READ_CHUNK};
use super::{SourceContext, SourceError};
use crate::event::Event;

/// How long a put still in flight when the agent stops may take before it is abandoned.
///
/// An abandoned put is not acknowledged: if its channel committed it anyway, its events come
/// again after a restart (a duplicate, never a loss).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What became of a batch handed to [`deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every required channel committed it: the source may acknowledge it.
    Committed,
    /// The agent stopped and the put did not finish within [`STOP_GRACE`]: do not acknowledge.
    Abandoned,
}

/// Puts `events` through `ctx`; if the agent stops meanwhile, waits at most [`STOP_GRACE`] more.
///
/// # Errors
/// The put's own error ([`SourceError::Put`]) when a required channel refused for good.
pub async fn deliver(ctx: &SourceContext, events: Vec<Event>) -> Result<Delivery, SourceError> {
    let put = ctx.put(events);
    tokio::pin!(put);
    tokio::select! {
        result = &mut put => return result.map(|()| Delivery::Committed),
        _ = ctx.stopping() => {}
    }
    match tokio::time::timeout(STOP_GRACE, put).await {
        Ok(result) => result.map(|()| Delivery::Committed),
        Err(_) => {
            tracing::warn!("agent stopping: abandoned a put that did not finish in time");
            Ok(Delivery::Abandoned)
        }
    }
}

pub use crate::blocking::blocking;

/// Runs `f` on `state` on tokio's blocking pool and hands both back: how a source's synchronous
/// file state goes to a blocking thread for one step and returns.
///
/// # Errors
/// An error saying the blocking task panicked or was cancelled (the state is then lost).
pub async fn blocking_with<S, T>(state: S, f: impl FnOnce(&mut S) -> T + Send + 'static) -> std::io::Result<(S, T)>
where
    S: Send + 'static,
    T: Send + 'static,
{
    blocking(move || {
        let mut state = state;
        let out = f(&mut state);
        Ok((state, out))
    })
    .await
}

/// Reads up to `want` bytes (at most [`READ_CHUNK`]) of `file` at byte `offset` into `lb`.
///
/// Returns the number of bytes read; 0 at the end of the file.
///
/// # Errors
/// The read's I/O error (the buffer is then unchanged).
pub fn fill(lb: &mut LineBuffer, file: &File, offset: u64, want: u64) -> std::io::Result<usize> {
    let want = want.min(READ_CHUNK as u64) as usize;
    if want == 0 {
        return Ok(0);
    }
    let buf = lb.buffer_mut();
    let len = buf.len();
    buf.resize(len + want, 0);
    let read = loop {
        match file.read_at(&mut buf[len..], offset) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match read {
        Ok(n) => {
            buf.truncate(len + n);
            Ok(n)
        }
        Err(e) => {
            buf.truncate(len);
            Err(e)
        }
    }
}

/// The temporary file [`write_atomically`] writes next to `path` (`.<name>.tmp`).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `contents`: writes a temporary file beside it, fsyncs it, renames it over
/// `path`, then fsyncs the folder (best effort), so a crash leaves the old or the new contents.
///
/// # Errors
/// The first failing step's I/O error.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_reads_at_an_offset_and_lines_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"skip\nfirst\nsecond\nthi").unwrap();
        let file = File::open(&path).unwrap();
        let mut lb = LineBuffer::new(100);
        assert_eq!(fill(&mut lb, &file, 5, 100).unwrap(), 16);
        assert_eq!(lb.next_line().unwrap().body, &b"first"[..]);
        assert_eq!(lb.next_line().unwrap().body, &b"second"[..]);
        assert_eq!(lb.next_line(), None);
        assert_eq!(lb.consumed(), 13);
        assert_eq!(fill(&mut lb, &file, 21, 100).unwrap(), 0);
    }

    #[test]
    fn write_atomically_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"[1]").unwrap();
        write_atomically(&path, b"[2]").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"[2]");
        assert!(!temporary_path(&path).exists());
    }
}
