//! One bucket's open file of the `Hdfs` sink: its format writer, what it holds, and when it rolls
//! (Flume's `BucketWriter`).
//!
//! A file is written as `<in_use_prefix><prefix>.<counter><suffix><ext><in_use_suffix>` and renamed
//! without the in-use prefix and suffix when it is closed. Everything here blocks: it runs on the
//! blocking thread pool, never on an actor's event loop.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::sink::recovery::{self, sync_dir, Recovered};

/// What the files hold (Flume's `hdfs.fileType`, with `CompressedStream`'s codec as its own variant).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum Format {
    /// Each event's body and a newline (Flume's `DataStream` with the `text` serializer).
    #[default]
    DataStream,
    /// As `DataStream`, gzip-compressed (RFC 1952); the file name gets `.gz` after the suffix.
    Gzip,
    /// As `DataStream`, zstd-compressed (RFC 8878); the file name gets `.zst` after the suffix.
    Zstd,
}

impl Format {
    /// The extension the format adds after `file_suffix` (Flume adds the codec's extension).
    pub fn extension(self) -> &'static str {
        match self {
            Format::DataStream => "",
            Format::Gzip => ".gz",
            Format::Zstd => ".zst",
        }
    }
}

/// When a bucket's file is closed and renamed (Flume's `hdfs.roll*` and `hdfs.idleTimeout`).
/// A zero turns its trigger off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollPolicy {
    /// Age of the file since it was opened.
    pub interval: Duration,
    /// Bytes written (bodies plus newlines, before compression).
    pub size: u64,
    /// Events written.
    pub count: u64,
    /// Time since the last write.
    pub idle: Duration,
}

/// The format's stream over the file.
enum Writer {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl Writer {
    fn new(format: Format, file: File) -> io::Result<Writer> {
        let buffered = BufWriter::with_capacity(64 * 1024, file);
        Ok(match format {
            Format::DataStream => Writer::Plain(buffered),
            Format::Gzip => Writer::Gzip(flate2::write::GzEncoder::new(buffered, flate2::Compression::default())),
            Format::Zstd => Writer::Zstd(zstd::stream::write::Encoder::new(buffered, 3)?),
        })
    }

    fn inner(&mut self) -> &mut dyn Write {
        match self {
            Writer::Plain(w) => w,
            Writer::Gzip(w) => w,
            Writer::Zstd(w) => w,
        }
    }

    /// Writes everything so far to the OS. A compressed stream ends at a sync point (gzip:
    /// `Z_SYNC_FLUSH`, zstd: `ZSTD_e_flush`), so a reader can decompress all of it even though the
    /// stream has no end yet.
    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }

    /// The file under the format's stream.
    fn file(&self) -> &File {
        match self {
            Writer::Plain(w) => w.get_ref(),
            Writer::Gzip(w) => w.get_ref().get_ref(),
            Writer::Zstd(w) => w.get_ref().get_ref(),
        }
    }

    /// Ends the stream (gzip trailer, zstd end of frame) and writes it all to the OS.
    fn finish(self, sync: bool) -> io::Result<()> {
        let mut buffered = match self {
            Writer::Plain(w) => w,
            Writer::Gzip(w) => w.finish()?,
            Writer::Zstd(w) => w.finish()?,
        };
        buffered.flush()?;
        if sync {
            buffered.get_ref().sync_all()?;
        }
        Ok(())
    }
}

/// The file a bucket is writing.
pub struct OpenFile {
    writer: Writer,
    /// Where it is written (with the in-use prefix and suffix).
    pub in_use: PathBuf,
    /// Its name once closed.
    pub done: PathBuf,
    opened: Instant,
    last_write: Instant,
    bytes: u64,
    events: u64,
    /// Orders files by their last write (a sequence number the owner sets; ties cannot happen).
    pub written_seq: u64,
}

impl OpenFile {
    /// Creates `in_use` (which must not exist) and starts the format's stream in it.
    ///
    /// # Errors
    /// When the file exists or cannot be created.
    /// With `sync` the directory is fsynced after the file is created.
    pub fn create(in_use: PathBuf, done: PathBuf, format: Format, sync: bool) -> io::Result<OpenFile> {
        recovery::opening(&in_use);
        let file =
            OpenOptions::new().write(true).create_new(true).open(&in_use).inspect_err(|_| recovery::closed(&in_use))?;
        if sync {
            sync_dir(in_use.parent().unwrap_or(Path::new(".")));
        }
        let now = Instant::now();
        Ok(OpenFile {
            writer: Writer::new(format, file)?,
            in_use,
            done,
            opened: now,
            last_write: now,
            bytes: 0,
            events: 0,
            written_seq: 0,
        })
    }

    /// Appends one event: its body and a newline.
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&mut self, body: &[u8]) -> io::Result<()> {
        let w = self.writer.inner();
        w.write_all(body)?;
        w.write_all(b"\n")?;
        self.bytes += body.len() as u64 + 1;
        self.events += 1;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Hands what was appended to the OS (compressed streams up to a sync point), and with
    /// `sync` to the disk (`fdatasync`).
    ///
    /// # Errors
    /// When the write or the sync fails.
    pub fn flush(&mut self, sync: bool) -> io::Result<()> {
        self.writer.flush()?;
        if sync {
            self.writer.file().sync_data()?;
        }
        Ok(())
    }

    /// Whether the count or size trigger is reached: checked after each event, so a file holds at
    /// most `count` events, and the event that reaches `size` bytes is the file's last.
    pub fn full(&self, policy: &RollPolicy) -> bool {
        (policy.count > 0 && self.events >= policy.count) || (policy.size > 0 && self.bytes >= policy.size)
    }

    /// Whether the interval or idle trigger is due at `now`.
    pub fn due(&self, policy: &RollPolicy, now: Instant) -> bool {
        (!policy.interval.is_zero() && now.duration_since(self.opened) >= policy.interval)
            || (!policy.idle.is_zero() && now.duration_since(self.last_write) >= policy.idle)
    }

    /// Ends the stream (fsynced with `sync`) and renames the file to its final name (then, with
    /// `sync`, fsyncs the directory).
    ///
    /// # Errors
    /// When the last write, the sync or the rename fails.
    pub fn close(self, sync: bool) -> io::Result<PathBuf> {
        self.writer.finish(sync)?;
        recovery::rename_closed(&self.in_use, &self.done, sync)?;
        Ok(self.done)
    }
}

/// `<prefix>.<counter><suffix><ext>` in `dir`, and the same with the in-use prefix and suffix.
pub fn file_names(
    dir: &Path,
    prefix: &str,
    counter: u64,
    suffix: &str,
    ext: &str,
    in_use_prefix: &str,
    in_use_suffix: &str,
) -> (PathBuf, PathBuf) {
    let name = format!("{prefix}.{counter}{suffix}{ext}");
    (dir.join(format!("{in_use_prefix}{name}{in_use_suffix}")), dir.join(name))
}

/// How the files of one sink are named: what tells an in-use file from a closed one.
#[derive(Debug, Clone)]
pub struct InUseNames {
    /// `file_suffix` plus the format's extension.
    pub suffix: String,
    /// `in_use_prefix`.
    pub in_use_prefix: String,
    /// `in_use_suffix`.
    pub in_use_suffix: String,
}

impl InUseNames {
    /// The final name of in-use file `name` (`<in_use_prefix><prefix>.<counter><suffix>
    /// <in_use_suffix>` with a decimal counter), or `None` when `name` is not one.
    pub fn done_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        let inner = name.strip_prefix(self.in_use_prefix.as_str())?.strip_suffix(self.in_use_suffix.as_str())?;
        if inner.len() == name.len() {
            return None;
        }
        let stem = inner.strip_suffix(self.suffix.as_str())?;
        let (_, counter) = stem.rsplit_once('.')?;
        (!counter.is_empty() && counter.bytes().all(|b| b.is_ascii_digit())).then_some(inner)
    }

    /// The temporary name recovery writes a compressed file's new stream under (still in use).
    fn recovering(&self, done: &str) -> String {
        format!("{}{done}.recovering{}", self.in_use_prefix, self.in_use_suffix)
    }
}

/// Recovers every in-use file under `root` (recursively) that a killed agent left: cut back to
/// its last complete line and renamed to its final name, so readers of closed files get every
/// committed line and never a partial one. A plain file is truncated in place; a compressed file
/// is decoded up to where its stream can be read (its last sync point) and its complete lines
/// written to a new, properly ended stream that replaces it. Answers how many files were
/// recovered.
///
/// # Errors
/// When an in-use file cannot be read, cut, written or renamed.
pub fn recover(root: &Path, names: &InUseNames, format: Format, sync: bool) -> io::Result<usize> {
    let mut recovered = 0;
    for path in recovery::files_under(root) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        if let Some(done) = name
            .strip_prefix(names.in_use_prefix.as_str())
            .and_then(|n| n.strip_suffix(names.in_use_suffix.as_str()).and_then(|n| n.strip_suffix(".recovering")))
        {
            if names.done_name(&format!("{}{done}{}", names.in_use_prefix, names.in_use_suffix)).is_some()
                && !recovery::is_open(&path)
            {
                // A recovery cut short: the original in-use file is still there; start again.
                std::fs::remove_file(&path)?;
                continue;
            }
        }
        let Some(done) = names.done_name(name) else { continue };
        if recovery::is_open(&path) {
            continue;
        }
        let done_path = dir.join(done);
        if done_path.exists() {
            tracing::warn!(file = %path.display(), "in-use file left by a crash whose final name exists; left as it is");
            continue;
        }
        let r = match format {
            Format::DataStream => {
                let r = recovery::truncate_to_last_newline(&path, sync)?;
                std::fs::rename(&path, &done_path)?;
                r
            }
            Format::Gzip | Format::Zstd => {
                let tmp = dir.join(names.recovering(done));
                let r = reencode(&path, &tmp, format, sync)?;
                std::fs::rename(&tmp, &done_path)?;
                std::fs::remove_file(&path)?;
                r
            }
        };
        if sync {
            sync_dir(&dir);
        }
        recovered += 1;
        tracing::info!(
            file = %done_path.display(), kept_bytes = r.kept, cut_bytes = r.cut,
            "in-use file left by a crash recovered: cut to its last complete line and closed"
        );
    }
    Ok(recovered)
}

/// Writes the complete lines readable from compressed file `from` into a new stream in `to`.
fn reencode(from: &Path, to: &Path, format: Format, sync: bool) -> io::Result<Recovered> {
    let input = io::BufReader::new(File::open(from)?);
    let mut reader: Box<dyn io::Read> = match format {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        Format::DataStream => Box::new(input),
    };
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(to)?;
    let mut writer = Writer::new(format, file)?;
    let r = recovery::copy_complete_lines(&mut reader, writer.inner())?;
    writer.finish(sync)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn names() -> InUseNames {
        InUseNames { suffix: ".log.gz".into(), in_use_prefix: "".into(), in_use_suffix: ".tmp".into() }
    }

    #[test]
    fn in_use_names_are_told_from_others() {
        let n = names();
        assert_eq!(n.done_name("events.1733000000000.log.gz.tmp"), Some("events.1733000000000.log.gz"));
        assert_eq!(n.done_name("events.1733000000000.log.gz"), None);
        assert_eq!(n.done_name(".positions.json.tmp"), None);
        assert_eq!(n.done_name("events.x.log.gz.tmp"), None);
    }

    #[test]
    fn a_gzip_file_cut_by_a_kill_is_closed_with_its_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let in_use = dir.path().join("a/events.17.log.gz.tmp");
        std::fs::create_dir_all(in_use.parent().unwrap()).unwrap();
        let mut f =
            OpenFile::create(in_use.clone(), dir.path().join("a/events.17.log.gz"), Format::Gzip, false).unwrap();
        f.append(b"one").unwrap();
        f.append(b"two").unwrap();
        f.flush(false).unwrap();
        f.append(b"three").unwrap();
        f.flush(false).unwrap();
        // A kill: the stream never ends, and its last bytes are cut; the file is another
        // process's (this one is not writing it any more).
        drop(f);
        recovery::closed(&in_use);
        let len = std::fs::metadata(&in_use).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&in_use).unwrap().set_len(len - 3).unwrap();
        assert_eq!(recover(dir.path(), &names(), Format::Gzip, true).unwrap(), 1);
        assert!(!in_use.exists());
        let mut text = String::new();
        let done = std::fs::File::open(dir.path().join("a/events.17.log.gz")).unwrap();
        flate2::read::GzDecoder::new(done).read_to_string(&mut text).unwrap();
        assert!(text == "one\ntwo\n" || text == "one\ntwo\nthree\n", "{text:?}");
        assert_eq!(recover(dir.path(), &names(), Format::Gzip, true).unwrap(), 0, "nothing left to recover");
    }
}
