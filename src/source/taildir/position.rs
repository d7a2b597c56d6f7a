//! The Taildir position file, in Flume's format: a JSON array with one object per tailed file,
//! `[{"inode": 2496001, "pos": 1234, "file": "/var/log/app/app.log"}]`, where `pos` is the byte
//! offset up to which the file's lines are committed, plus two fields of flumen's own that tell a
//! file from another that got the same inode later (Vector's checksum fingerprinting):
//! `"dev"`, the device number, and `"fingerprint"`, `"fnv1a64:<n>:<16 hex digits>"`, the 64-bit
//! FNV-1a hash of the file's first `n` bytes (`n` at most [`FINGERPRINT_BYTES`]). Both are
//! optional when read, so a position file written by Flume is resumed by inode alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::source::file_input::write_atomically;

/// How many leading bytes of a file its fingerprint covers at most (Vector's default for its
/// `checksum` fingerprint's `bytes`).
pub const FINGERPRINT_BYTES: u64 = 256;

/// A fingerprint of a file's first bytes: the 64-bit FNV-1a hash of its first `len` bytes.
///
/// A file shorter than [`FINGERPRINT_BYTES`] has a fingerprint of all its bytes, lengthened as it
/// grows. Two files whose first `len` bytes differ have different fingerprints (but for a 2^-64
/// chance), so a new file that got a deleted file's inode is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Bytes covered.
    pub len: u64,
    /// FNV-1a (64 bit) of those bytes.
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use std::hash::Hasher;
        let mut h = fnv::FnvHasher::default();
        h.write(bytes);
        Fingerprint { len: bytes.len() as u64, hash: h.finish() }
    }

    /// Whether `head` (a file's first bytes, at least `len` of them) starts with the
    /// fingerprinted bytes.
    pub fn matches(&self, head: &[u8]) -> bool {
        head.len() as u64 >= self.len && Fingerprint::of(&head[..self.len as usize]) == *self
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fnv1a64:{}:{:016x}", self.len, self.hash)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("fingerprint {s:?} is not \"fnv1a64:<bytes>:<16 hex digits>\"");
        let rest = s.strip_prefix("fnv1a64:").ok_or_else(bad)?;
        let (len, hash) = rest.split_once(':').ok_or_else(bad)?;
        let len: u64 = len.parse().map_err(|_| bad())?;
        if hash.len() != 16 || len > FINGERPRINT_BYTES {
            return Err(bad());
        }
        Ok(Fingerprint { len, hash: u64::from_str_radix(hash, 16).map_err(|_| bad())? })
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One tailed file's committed position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The file's inode number.
    pub inode: u64,
    /// Bytes of the file whose lines are committed (the next line starts here).
    pub pos: u64,
    /// The file's path when the position was written.
    pub file: PathBuf,
    /// The file's device number (flumen's; absent in Flume's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// The fingerprint of the file's first bytes (flumen's; absent in Flume's files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
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
    #[error("position file {path} is not a JSON array of {{\"inode\", \"pos\", \"file\", ...}}: {source}")]
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
    parse(&text, path)
}

/// Reads the positions of a position file's contents `text`, by inode; `path` names the file in
/// errors. Empty or all-whitespace contents mean no positions (as a missing file).
///
/// # Errors
/// [`PositionFileError::Format`] when `text` is not a position array.
pub fn parse(text: &[u8], path: &Path) -> Result<HashMap<u64, Position>, PositionFileError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(HashMap::new());
    }
    let positions: Vec<Position> =
        serde_json::from_slice(text).map_err(|source| PositionFileError::Format { path: path.into(), source })?;
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
        let p =
            Position { inode: 2496001, pos: 1234, file: "/var/log/app/app.log".into(), dev: None, fingerprint: None };
        store(&path, std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"[{"inode":2496001,"pos":1234,"file":"/var/log/app/app.log"}]"#
        );
        assert_eq!(load(&path).unwrap()[&2496001], p);
        let fp = Fingerprint::of(b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok");
        let p = Position { dev: Some(64769), fingerprint: Some(fp), ..p };
        store(&path, std::slice::from_ref(&p)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!(
                r#"[{{"inode":2496001,"pos":1234,"file":"/var/log/app/app.log","dev":64769,"fingerprint":"fnv1a64:55:{:016x}"}}]"#,
                fp.hash
            )
        );
        assert_eq!(load(&path).unwrap()[&2496001], p);
    }

    #[test]
    fn parses_contents_without_a_file() {
        let path = Path::new("/var/lib/flumen/taildir.json");
        assert!(parse(b" \n\t", path).unwrap().is_empty(), "blank contents hold no positions");
        let positions = parse(br#"[{"inode": 7, "pos": 12, "file": "/var/log/a.log"}]"#, path).unwrap();
        assert_eq!(positions[&7].pos, 12);
        let e = parse(br#"[{"inode": 7}]"#, path).unwrap_err();
        assert!(matches!(e, PositionFileError::Format { .. }), "{e}");
        assert!(e.to_string().contains("/var/lib/flumen/taildir.json"), "{e}");
    }

    #[test]
    fn fingerprints_cover_the_first_bytes() {
        let a = Fingerprint::of(b"first line\n");
        assert!(a.matches(b"first line\nsecond line\n"));
        assert!(!a.matches(b"first lin"), "a shorter file is another file");
        assert!(!a.matches(b"other line\n"));
        assert_eq!(a.to_string().parse::<Fingerprint>().unwrap(), a);
        assert!(Fingerprint::of(b"").matches(b"anything"));
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
        std::fs::write(&path, r#"[{"inode":7,"pos":42,"file":"/tmp/a.log","fingerprint":"md5:x"}]"#).unwrap();
        assert!(load(&path).is_err(), "a bad fingerprint is refused");
        std::fs::write(&path, "{not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("taildir_position.json"), "{err}");
    }
}
