//! The `RocksDb` channel's storage: opening, the group-committing writer thread, and range reads.
//!
//! Every call here blocks, so none runs on an actor's event loop: opening and reads run on the
//! blocking thread pool, writes on the channel's own writer thread. Keys are big-endian `u64`
//! sequence numbers (so key order is queue order), values events in the binary event codec.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use rocksdb::{DBCompressionType, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use super::queue::{QueueState, Seqs};
use crate::channel::ChannelError;
use crate::event::Event;

/// The most write requests one group commit gathers.
const MAX_GROUP: usize = 4096;

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn storage<'a>(what: &str, dir: &'a Path) -> impl FnOnce(rocksdb::Error) -> ChannelError + 'a {
    let what = what.to_string();
    move |e| ChannelError::Storage(format!("{what} {}: {e}", dir.display()))
}

/// An open database and the queue state read from it.
pub(super) struct Opened {
    /// The database, shared by the writer thread and reads.
    pub db: Arc<DB>,
    /// Every key in the database, available.
    pub queue: QueueState,
    /// The sequence number of the next put (one past the last key).
    pub next_seq: u64,
}

/// Opens (creating if missing) the database in `dir` and scans its keys once.
///
/// # Errors
/// [`ChannelError::Storage`] when RocksDB cannot open the directory (in use by another process,
/// unreadable, corrupt) or a key is not a sequence number.
pub(super) fn open(dir: &Path) -> Result<Opened, ChannelError> {
    create_dir_durably(dir).map_err(|e| ChannelError::Storage(format!("create {}: {e}", dir.display())))?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(64 << 20);
    opts.set_max_write_buffer_number(4);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(3);
    let db = DB::open(&opts, dir).map_err(storage("open", dir))?;
    let mut keys = Vec::new();
    {
        let mut it = db.raw_iterator();
        it.seek_to_first();
        while it.valid() {
            let k = it.key().expect("a valid iterator has a key");
            let seq: [u8; 8] = k.try_into().map_err(|_| {
                ChannelError::Storage(format!("{}: key of {} bytes is not a sequence number", dir.display(), k.len()))
            })?;
            keys.push(u64::from_be_bytes(seq));
            it.next();
        }
        it.status().map_err(storage("scan", dir))?;
    }
    let next_seq = keys.last().map_or(0, |k| k + 1);
    Ok(Opened { db: Arc::new(db), queue: QueueState::from_keys(keys), next_seq })
}

/// Creates `dir` and its missing parents, and fsyncs the directory holding each one it created:
/// RocksDB syncs the files and entries inside `dir`, but without this a power cut can take away a
/// new `dir` itself, and every event acknowledged in it.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Reads the events numbered `ranges`, in order, each range with one bounded iterator.
///
/// # Errors
/// [`ChannelError::Storage`] on a RocksDB error, a missing key or an undecodable value.
pub(super) fn read(db: &DB, ranges: &[Range<u64>]) -> Result<Vec<Event>, ChannelError> {
    let mut events = Vec::with_capacity(ranges.iter().map(|r| (r.end - r.start) as usize).sum());
    for r in ranges {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(key(r.start).to_vec());
        opts.set_iterate_upper_bound(key(r.end).to_vec());
        opts.fill_cache(false);
        let mut it = db.raw_iterator_opt(opts);
        it.seek(key(r.start));
        let mut expected = r.start;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if k != key(expected) {
                return Err(ChannelError::Storage(format!("event {expected} is missing from the queue")));
            }
            let mut value = Bytes::copy_from_slice(v);
            let event = Event::decode(&mut value)
                .map_err(|e| ChannelError::Storage(format!("event {expected} does not decode: {e}")))?;
            events.push(event);
            expected += 1;
            it.next();
        }
        it.status().map_err(|e| ChannelError::Storage(format!("read: {e}")))?;
        if expected != r.end {
            return Err(ChannelError::Storage(format!("events {expected}..{} are missing from the queue", r.end)));
        }
    }
    Ok(events)
}

/// Bytes used by the files under `dir` (the channel's size on disk).
pub(super) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// A request to the writer thread.
pub(super) enum WriteOp {
    /// Write `events` under keys `first`, `first + 1`, ...; answered by [`Written`].
    Put {
        /// The first event's sequence number.
        first: u64,
        /// The batch.
        events: Vec<Event>,
    },
    /// Delete committed events (not answered: a lost delete only brings events back).
    Delete(Seqs),
}

/// The writer thread's answer to the puts of one group commit, in sequence order.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Written {
    /// Which opening of the database the puts were made to (answers to older ones are ignored).
    pub epoch: u64,
    /// `(first sequence number, events)` of each put, in the order they were sent.
    pub puts: Vec<(u64, Vec<Event>)>,
    /// Whether the group's write (and fsync) succeeded.
    pub result: Result<(), String>,
}

/// The writer thread of one open database.
pub(super) struct Writer {
    ops: mpsc::Sender<WriteOp>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer thread for `db`; it answers puts to `notify`, tagged with `epoch`.
    pub fn start(name: &str, db: Arc<DB>, sync: bool, notify: Recipient<Written>, epoch: u64) -> Self {
        let (ops, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("rocksdb-{name}"))
            .spawn(move || write_loop(&db, &rx, sync, &notify, epoch))
            .expect("the OS can start a thread");
        Writer { ops, thread }
    }

    /// Queues a request; `false` if the thread is gone.
    pub fn send(&self, op: WriteOp) -> bool {
        self.ops.send(op).is_ok()
    }

    /// Lets the thread finish what is queued, then waits for it (blocking).
    pub fn finish(self) {
        drop(self.ops);
        let _ = self.thread.join();
    }
}

/// Gathers every queued request into one `WriteBatch` and writes it with one fsync (`sync`):
/// concurrent puts share the fsync (group commit). Committed ranges become range deletions.
fn write_loop(db: &DB, rx: &mpsc::Receiver<WriteOp>, sync: bool, notify: &Recipient<Written>, epoch: u64) {
    let mut value = BytesMut::with_capacity(64 * 1024);
    while let Ok(op) = rx.recv() {
        let mut batch = WriteBatch::default();
        let mut puts = Vec::new();
        let mut deletes = Seqs::new();
        let mut next = Some(op);
        let mut gathered = 0;
        while let Some(op) = next {
            match op {
                WriteOp::Put { first, events } => {
                    for (i, e) in events.iter().enumerate() {
                        value.clear();
                        e.encode(&mut value);
                        batch.put(key(first + i as u64), &value);
                    }
                    puts.push((first, events));
                }
                WriteOp::Delete(seqs) => deletes.extend(seqs),
            }
            gathered += 1;
            next = if gathered < MAX_GROUP { rx.try_recv().ok() } else { None };
        }
        for r in coalesce(deletes) {
            batch.delete_range(key(r.start), key(r.end));
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync && !puts.is_empty());
        let result = db.write_opt(batch, &wo).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "RocksDB write failed");
        }
        if !puts.is_empty() {
            notify.do_send(Written { epoch, puts, result });
        }
    }
}

/// Sorts ranges and merges the adjacent or overlapping ones.
fn coalesce(mut ranges: Seqs) -> Seqs {
    ranges.sort_by_key(|r| r.start);
    let mut out: Seqs = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn ranges_coalesce() {
        assert_eq!(coalesce(vec![5..7, 0..2, 2..4, 7..9, 11..12]), vec![0..4, 5..9, 11..12]);
    }

    #[test]
    fn reopening_finds_the_keys_and_reads_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path()).unwrap();
        assert_eq!((opened.next_seq, opened.queue.held()), (0, 0));
        let mut batch = WriteBatch::default();
        let line = |i: u64| Event::new(format!("Jun 14 15:16:01 combo sshd(pam_unix)[{i}]: check pass; user unknown"));
        for i in 0..10u64 {
            batch.put(key(i), line(i).to_bytes());
        }
        batch.delete_range(key(2), key(5));
        opened.db.write(batch).unwrap();
        drop(opened);
        let opened = open(dir.path()).unwrap();
        assert_eq!((opened.next_seq, opened.queue.held()), (10, 7));
        assert_eq!(read(&opened.db, &[0..2, 6..8]).unwrap(), vec![line(0), line(1), line(6), line(7)]);
        assert!(read(&opened.db, &[1..4]).is_err(), "2..5 were deleted");
    }
}
