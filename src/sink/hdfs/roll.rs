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
    pub fn create(in_use: PathBuf, done: PathBuf, format: Format) -> io::Result<OpenFile> {
        let file = OpenOptions::new().write(true).create_new(true).open(&in_use)?;
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

    /// Ends the stream (fsynced with `sync`) and renames the file to its final name.
    ///
    /// # Errors
    /// When the last write, the sync or the rename fails.
    pub fn close(self, sync: bool) -> io::Result<PathBuf> {
        self.writer.finish(sync)?;
        if self.in_use != self.done {
            std::fs::rename(&self.in_use, &self.done)?;
        }
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
