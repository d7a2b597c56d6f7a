//! Blocking file work off the actors' event loops, and the file-system helpers it uses.

use std::fs::File;
use std::path::Path;

/// Runs blocking file work on tokio's blocking pool, off the actor's event loop, inside the
/// caller's tracing span (so its logs name the component).
///
/// # Errors
/// `f`'s error, or an error saying the blocking task panicked or was cancelled.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await.map_err(std::io::Error::other)?
}

/// fsyncs a folder so that renames and removals in it survive a crash (best effort: errors are
/// ignored, as some file systems refuse to sync folders).
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
