//! The Taildir position file, in Flume's format: a JSON array with one object per tailed file,
//! `[{"inode": 2496001, "pos": 1234, "file": "/var/log/app/app.log"}]`, where `pos` is the byte
//! offset up to which the file's lines are committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::file_input::write_atomically;

/// One tailed file's committed position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's inode number.
    pub inode: u64,
    /// Bytes of the file whose lines are committed (the next line starts here).
    pub pos: u64,
    /// The file's path when the position was written.
    pub file: PathBuf,
}

/// Why the position file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PositionFileError {
    /// Reading or writing it failed.
    #[error("position file {path}: {source}")]
    Io {
        /// The position file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Its contents are not Flume's JSON position array.
    #[error("position file {path} is not a JSON array of {{\"inode\", \"pos\", \"file\"}}: {source}")]
    Format {
        /// The position file.
        path: PathBuf,
        /// The parse error, with line and column.
        source: serde_json::Error,
    },
}

/// Reads the positions saved in `path`, by inode. A missing file means no positions.
///
/// # Errors
/// [`PositionFileError`] when the file cannot be read or is not a position array.
pub fn load(path: &Path) -> Result<HashMap<u64, Position>, PositionFileError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => return Err(PositionFileError::Io { path: path.into(), source }),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(HashMap::new());
    }
    let positions: Vec<Position> =
        serde_json::from_slice(&text).map_err(|source| PositionFileError::Format { path: path.into(), source })?;
    Ok(positions.into_iter().map(|p| (p.inode, p)).collect())
}

/// Replaces `path` with `positions` atomically (temporary file, fsync, rename), creating its
/// folder if needed.
///
/// # Errors
/// [`PositionFileError::Io`] when a step fails.
pub fn store(path: &Path, positions: &[Position]) -> Result<(), PositionFileError> {
    let io = |source| PositionFileError::Io { path: path.into(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let json = serde_json::to_vec(positions).expect("positions always serialize");
    write_atomically(path, &json).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_flumes_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/taildir.json");
        assert!(load(&path).unwrap().is_empty());
        let p = Position { inode: 2496001, pos: 1234, file: "/var/log/app/app.log".into() };
        store(&path, std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"[{"inode":2496001,"pos":1234,"file":"/var/log/app/app.log"}]"#
        );
        assert_eq!(load(&path).unwrap()[&2496001], p);
    }

    #[test]
    fn reads_a_file_written_by_flume_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taildir_position.json");
        std::fs::write(
            &path,
            "[{\"inode\":7,\"pos\":42,\"file\":\"/tmp/a.log\"},\n {\"inode\":8,\"pos\":0,\"file\":\"/tmp/b.log\"}]\n",
        )
        .unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!((loaded[&7].pos, loaded[&8].pos), (42, 0));
        std::fs::write(&path, "{not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("taildir_position.json"), "{err}");
    }
}
