//! The `RocksDb` channel's storage: opening, the group-committing writer thread, and range reads.
//!
//! Every call here blocks, so none runs on an actor's event loop: opening and reads run on the
//! blocking thread pool, writes on the channel's own writer thread (with encryption, puts are
//! sealed on a thread of their own in front of it). Keys are big-endian `u64`
//! sequence numbers (so key order is queue order), values events in the binary event codec,
//! sealed with AES-256-GCM when the channel has `encryption` ([`crypt`]).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use super::budget;
use super::crypt::{self, Family, Keys, Sealing};
use super::index::{Index, INDEX_CF};
use super::queue::{QueueState, Seqs};
use super::salvage::{self, SalvageReport};
use crate::channel::{ChannelError, StorageErrorKind};
use crate::event::Event;

/// The most write requests one group commit gathers.
const MAX_GROUP: usize = 4096;

/// The column family holding dead letters: values that could not be read or decoded, keyed as
/// in the queue, each with its reason ([`DeadLetter`]).
pub(crate) const DEAD_LETTER_CF: &str = "dead_letter";

pub(crate) fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn storage<'a>(dir: &'a Path) -> impl FnOnce(rocksdb::Error) -> ChannelError + 'a {
    move |e| ChannelError::rocksdb(dir, &e)
}

/// A channel's own memory options for its database (from its `RocksDb` options): the size of
/// one memtable and how many there may be (the one written and those being flushed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Bytes of one memtable (RocksDB's `write_buffer_size`).
    pub write_buffer_bytes: u64,
    /// Most memtables (RocksDB's `max_write_buffer_number`), at least 2.
    pub write_buffers: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { write_buffer_bytes: 4 << 20, write_buffers: 2 }
    }
}

/// The options every channel database is opened with.
///
/// Damage is never tolerated silently: `paranoid_checks` makes RocksDB verify what it opens and
/// stop on a corrupt file; the WAL is replayed in `AbsoluteConsistency` mode, so a flipped byte or
/// a torn record anywhere in it fails the open (RocksDB's default, `PointInTime`, would drop every
/// record after the damage without a word); reads verify block checksums (the default of
/// `ReadOptions`). A failed open is then salvaged ([`salvage`]).
///
/// Memory: memtables of `tuning`'s size and number, all of them also bounded by the agent's
/// shared `WriteBufferManager`; table blocks, index and filter blocks in the agent's one block
/// cache ([`budget`]).
pub(crate) fn db_options(tuning: &Tuning) -> Options {
    let shared = budget::shared();
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    opts.set_wal_recovery_mode(DBRecoveryMode::AbsoluteConsistency);
    opts.set_compression_type(DBCompressionType::None);
    opts.set_write_buffer_size(tuning.write_buffer_bytes as usize);
    opts.set_max_write_buffer_number(tuning.write_buffers.max(2) as i32);
    opts.set_write_buffer_manager(&shared.write_buffers);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&shared.block_cache);
    table.set_cache_index_and_filter_blocks(true);
    opts.set_block_based_table_factory(&table);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(3);
    opts.set_writable_file_max_buffer_size(WRITABLE_FILE_BUFFER);
    opts
}

/// The most bytes RocksDB buffers for each file it writes (the WAL, a table being flushed, the
/// manifest), `writable_file_max_buffer_size`: 256 KiB instead of RocksDB's 1 MiB. A channel's
/// group commit of 1,000 Loghub lines is ~160 KB, so the WAL still takes it in one write; a
/// heap profile of the durable path had 3 MB in these buffers at 1 MiB.
const WRITABLE_FILE_BUFFER: u64 = 256 * 1024;

/// Opens `dir` with the channel's options and its three column families (the queue, dead
/// letters, the key index).
pub(crate) fn open_db(dir: &Path, tuning: &Tuning) -> Result<DB, ChannelError> {
    let small = Tuning { write_buffer_bytes: tuning.write_buffer_bytes.min(1 << 20), write_buffers: 2 };
    let cfs = [
        ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, db_options(tuning)),
        ColumnFamilyDescriptor::new(DEAD_LETTER_CF, db_options(&small)),
        ColumnFamilyDescriptor::new(INDEX_CF, db_options(&small)),
    ];
    DB::open_cf_descriptors(&db_options(tuning), dir, cfs).map_err(storage(dir))
}

/// An open database and the queue state read from it.
pub(super) struct Opened {
    /// The database, shared by the writer thread and reads.
    pub db: Arc<DB>,
    /// Every key in the database, available.
    pub queue: QueueState,
    /// The sequence number of the next put (one past the highest ever written).
    pub next_seq: u64,
    /// The key index, as the writer thread goes on keeping it.
    pub index: Index,
    /// What a salvage of a damaged directory did before this opening, if there was one.
    pub salvage: Option<SalvageReport>,
    /// The directory's size on disk when opened.
    pub disk_bytes: u64,
}

/// Opens (creating if missing) the database in `dir` and reads its key index; a damaged database
/// is set aside and salvaged first ([`salvage::salvage`]).
///
/// # Errors
/// [`ChannelError::Storage`] when the database cannot be opened: its kind says why (`Lock`: in use
/// by another process; `PermissionDenied`; `Corruption`: damaged beyond salvage; `Io`);
/// [`ChannelError::Key`] as [`open_checked`].
pub(super) fn open(dir: &Path, keys: &Keys, tuning: &Tuning) -> Result<Opened, ChannelError> {
    salvage::finish_interrupted(dir)?;
    match open_checked(dir, keys, tuning) {
        Err(e) if e.storage_kind() == Some(StorageErrorKind::Corruption) => {
            tracing::error!(dir = %dir.display(), error = %e, "RocksDb channel directory is damaged; salvaging it");
            let report = salvage::salvage(dir, &e, keys)?;
            let mut opened = open_checked(dir, keys, tuning)?;
            opened.salvage = Some(report);
            Ok(opened)
        }
        other => other,
    }
}

/// Whether `dir` holds RocksDB data files (tables, WALs, manifests) but no `CURRENT`: RocksDB
/// would then start an empty database beside them, silently losing every event.
pub(crate) fn missing_current(dir: &Path) -> bool {
    if dir.join("CURRENT").exists() {
        return false;
    }
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".sst") || name.ends_with(".log") || name.starts_with("MANIFEST-")
        })
    })
}

/// Opens `dir` and reads its queue from the key index ([`Index`]), without salvaging: no stored
/// event is read, apart from up to three values of each encryption key id in use, which are tried
/// so that a missing or wrong key fails the open (naming the key id and the channel) instead of
/// dead-lettering every value. A directory without a complete index (written by an older flumen,
/// or salvaged) is scanned once, key by key, and its index written.
///
/// # Errors
/// As [`open`]; `Corruption` for any damage found; [`ChannelError::Key`] when values are sealed
/// under a key id that `keys` lacks (`Unknown`; `NoEncryption` without `encryption`), or when none
/// of the values tried of a key id authenticates under it (`Authentication`: the wrong key file).
pub(crate) fn open_checked(dir: &Path, keys: &Keys, tuning: &Tuning) -> Result<Opened, ChannelError> {
    create_dir_durably(dir).map_err(|e| ChannelError::io(dir, &e))?;
    if missing_current(dir) {
        return Err(ChannelError::storage(
            StorageErrorKind::Corruption,
            &dir.join("CURRENT"),
            "CURRENT is missing beside data files",
        ));
    }
    let db = open_db(dir, tuning)?;
    let indexed = match Index::read(&db, dir)? {
        Some(index) if keys_from(&db, index.next()).map_err(storage(dir))? => {
            tracing::warn!(dir = %dir.display(), next = index.next(), "the key index is behind the stored keys; scanning the keys once");
            None
        }
        other => other,
    };
    let (index, census) = match indexed {
        Some(index) => {
            let census = census_of(&db, &index).map_err(storage(dir))?;
            (index, census)
        }
        None => {
            let (index, census) = scan_keys(&db, dir)?;
            let mut batch = WriteBatch::default();
            index.write_all(&db, &mut batch);
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(batch, &wo).map_err(storage(dir))?;
            (index, census)
        }
    };
    census.check(keys)?;
    Ok(Opened {
        db: Arc::new(db),
        queue: QueueState::from_ranges(index.ranges()),
        next_seq: index.next(),
        index,
        salvage: None,
        disk_bytes: dir_bytes(dir),
    })
}

/// Whether the queue holds any key at or past `next` (an index that is behind the keys).
fn keys_from(db: &DB, next: u64) -> Result<bool, rocksdb::Error> {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(key(next).to_vec());
    let mut it = db.raw_iterator_opt(ro);
    it.seek_to_first();
    it.status()?;
    Ok(it.valid())
}

/// The census of an indexed queue: the live values under each sealing key id, counted from the
/// index, with up to three of them read to try.
fn census_of(db: &DB, index: &Index) -> Result<Census, rocksdb::Error> {
    let mut census = Census::default();
    for r in index.ranges() {
        for (part, id) in index.sealed_parts(r) {
            let n = part.end - part.start;
            if id.is_empty() {
                census.plain += n;
                continue;
            }
            let entry = census.sealed.entry(id.to_string()).or_default();
            entry.0 += n;
            if entry.1.len() >= 3 {
                continue;
            }
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(key(part.end).to_vec());
            let mut it = db.raw_iterator_opt(ro);
            it.seek(key(part.start));
            while it.valid() && entry.1.len() < 3 {
                if let (Some(k), Some(v)) = (it.key(), it.value()) {
                    entry.1.push((k.to_vec(), v.to_vec()));
                }
                it.next();
            }
            it.status()?;
        }
    }
    Ok(census)
}

/// Scans every key and value of the queue once: its live ranges, where the sealing key id
/// changes, and the census of its values (for a directory without a complete index).
fn scan_keys(db: &DB, dir: &Path) -> Result<(Index, Census), ChannelError> {
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
    let mut sealing = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    let mut census = Census::default();
    let mut it = db.raw_iterator();
    it.seek_to_first();
    while it.valid() {
        let k = it.key().expect("a valid iterator has a key");
        let seq: [u8; 8] = k.try_into().map_err(|_| {
            ChannelError::storage(
                StorageErrorKind::Corruption,
                dir,
                format!("key of {} bytes is not a sequence number", k.len()),
            )
        })?;
        let seq = u64::from_be_bytes(seq);
        match ranges.last_mut() {
            Some(r) if r.end == seq => r.end += 1,
            _ => ranges.push(seq..seq + 1),
        }
        let v = it.value().unwrap_or_default();
        let id = match crypt::sealing(v) {
            Sealing::Plain => Some(String::new()),
            Sealing::Sealed(id) => Some(id.to_string()),
            Sealing::Malformed => None,
        };
        if let Some(id) = id.filter(|id| current.as_ref() != Some(id)) {
            sealing.insert(seq, id.clone());
            current = Some(id);
        }
        census.add(k, v);
        it.next();
    }
    it.status().map_err(storage(dir))?;
    let next = ranges.last().map_or(0, |r| r.end);
    Ok((Index::new(ranges, sealing, next), census))
}

/// `(key, value)` pairs as stored.
pub(crate) type Stored = Vec<(Vec<u8>, Vec<u8>)>;

/// Under which keys the values of a queue are sealed, with a few values of each to try.
#[derive(Debug, Default)]
pub(crate) struct Census {
    /// Values in plaintext.
    pub plain: u64,
    /// Values whose sealed header is cut (dead-lettered when taken).
    pub malformed: u64,
    /// Key id → values sealed under it, and up to three `(key, value)` to try.
    pub sealed: std::collections::BTreeMap<String, (u64, Stored)>,
}

impl Census {
    /// Counts the value `v` stored under `k`.
    pub fn add(&mut self, k: &[u8], v: &[u8]) {
        match crypt::sealing(v) {
            Sealing::Plain => self.plain += 1,
            Sealing::Malformed => self.malformed += 1,
            Sealing::Sealed(id) => {
                let entry = self.sealed.entry(id.to_string()).or_default();
                entry.0 += 1;
                if entry.1.len() < 3 {
                    entry.1.push((k.to_vec(), v.to_vec()));
                }
            }
        }
    }

    /// Whether `keys` can read what was counted (see [`open_checked`]).
    ///
    /// # Errors
    /// [`ChannelError::Key`] naming the key id and the channel.
    pub fn check(&self, keys: &Keys) -> Result<(), ChannelError> {
        let key_error = |id: &str, problem, detail: String| ChannelError::Key {
            channel: keys.channel.clone(),
            key_id: id.into(),
            problem,
            detail,
        };
        for (id, (n, tries)) in &self.sealed {
            let Some(cipher) = &keys.cipher else {
                return Err(key_error(
                    id,
                    crate::channel::KeyProblem::NoEncryption,
                    format!("{n} stored values are sealed under it, but the channel has no `encryption` option: give it with this key"),
                ));
            };
            if !cipher.knows(id) {
                return Err(key_error(
                    id,
                    crate::channel::KeyProblem::Unknown,
                    format!("{n} stored values are sealed under it, but it is not among the channel's `keys` (removed while values under it remain?): add it back"),
                ));
            }
            if !tries.iter().any(|(k, v)| cipher.open(Family::Queue, k, v).is_ok()) {
                return Err(key_error(
                    id,
                    crate::channel::KeyProblem::Authentication,
                    format!("none of the {} stored values tried of the {n} sealed under it authenticates: its key file is not the key they were sealed with", tries.len()),
                ));
            }
        }
        if keys.cipher.is_some() && self.plain > 0 {
            tracing::warn!(channel = %keys.channel, plaintext_values = self.plain, "the channel holds values written before encryption was turned on: they are read as they are, new values are sealed");
        }
        Ok(())
    }
}

/// What a read found: the events that decoded, and the sequence numbers moved to the dead-letter
/// column family (with their reasons) because they could not be read or decoded.
#[derive(Debug, Default)]
pub(super) struct ReadOutcome {
    /// The events read, in sequence order, with their sequence numbers.
    pub events: Vec<(u64, Event)>,
    /// Sequence numbers dead-lettered by this read, with the reason.
    pub dead: Vec<(u64, String)>,
    /// Sequence numbers the key index listed that were dead-lettered before (by a read whose
    /// index update a crash then lost): passed over.
    pub gone: Vec<u64>,
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
/// A value that does not decode, or that sits in a block failing its checksum, is moved to the
/// dead-letter column family with its reason and reported in [`ReadOutcome::dead`]: one poison
/// value never blocks the queue behind it.
///
/// A sealed value that does not open (it fails authentication, or names an unknown key id) is
/// corruption and is dead-lettered the same way, its sealed bytes kept. A missing value that the
/// dead-letter family holds is passed over ([`ReadOutcome::gone`]).
///
/// # Errors
/// [`ChannelError::Storage`] on a RocksDB error other than corruption, or a missing key.
pub(super) fn read(db: &DB, dir: &Path, ranges: &[Range<u64>], keys: &Keys) -> Result<ReadOutcome, ChannelError> {
    let mut out = ReadOutcome::default();
    out.events.reserve(ranges.iter().map(|r| (r.end - r.start) as usize).sum());
    let mut dead = WriteBatch::default();
    for r in ranges {
        let mut expected = r.start;
        salvage::scan(db, None, &key(r.start), &key(r.end), |entry| {
            match entry {
                salvage::Entry::Value(k, v) => {
                    if k != key(expected) {
                        let found = <[u8; 8]>::try_from(k).map_or(r.end, u64::from_be_bytes).min(r.end);
                        pass_over_gone(db, dir, expected..found, &mut out.gone)?;
                        expected = found;
                    }
                    let decoded =
                        keys.open(Family::Queue, k, v).map_err(|e| format!("does not open: {e}")).and_then(|plain| {
                            Event::decode(&mut Bytes::from(plain)).map_err(|e| format!("does not decode: {e}"))
                        });
                    match decoded {
                        Ok(event) => out.events.push((expected, event)),
                        Err(reason) => {
                            put_dead_letter(db, &mut dead, keys, &key(expected), &reason, v);
                            out.dead.push((expected, reason));
                        }
                    }
                    expected += 1;
                }
                salvage::Entry::Unreadable { until, status, .. } => {
                    // Every sequence number of the range up to where reading resumes was in the
                    // unreadable block(s).
                    let end = until.map_or(r.end, |u| u.min(r.end));
                    let reason = format!("unreadable: {status}");
                    while expected < end {
                        put_dead_letter(db, &mut dead, keys, &key(expected), &reason, &[]);
                        out.dead.push((expected, reason.clone()));
                        expected += 1;
                    }
                }
            }
            Ok(())
        })?;
        pass_over_gone(db, dir, expected..r.end, &mut out.gone)?;
    }
    if !out.dead.is_empty() {
        for (seq, _) in &out.dead {
            dead.delete(key(*seq));
        }
        db.write(dead).map_err(storage(dir))?;
    }
    Ok(out)
}

/// Notes the missing `seqs` in `gone` when each of them is a dead letter already.
///
/// # Errors
/// `Corruption` naming the first that is not: an event lost from the queue.
fn pass_over_gone(db: &DB, dir: &Path, seqs: Range<u64>, gone: &mut Vec<u64>) -> Result<(), ChannelError> {
    let cf = db.cf_handle(DEAD_LETTER_CF);
    for seq in seqs {
        let dead = match cf {
            Some(cf) => db.get_pinned_cf(cf, key(seq)).map_err(storage(dir))?.is_some(),
            None => false,
        };
        if !dead {
            return Err(ChannelError::storage(
                StorageErrorKind::Corruption,
                dir,
                format!("event {seq} is missing from the queue"),
            ));
        }
        gone.push(seq);
    }
    Ok(())
}

/// Adds a dead letter for `key` to `batch`, sealed (reason and value) when `keys` has a cipher.
pub(crate) fn put_dead_letter(db: &DB, batch: &mut WriteBatch, keys: &Keys, key: &[u8], reason: &str, value: &[u8]) {
    if let Some(cf) = db.cf_handle(DEAD_LETTER_CF) {
        batch.put_cf(cf, key, keys.seal(Family::DeadLetter, key, &DeadLetter::encode_value(reason, value)));
    }
}

/// One dead letter: a stored value that could not be read or decoded, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The value's key in the queue: its sequence number, as 8 big-endian bytes (other keys are
    /// kept as they were).
    pub key: Vec<u8>,
    /// Why it was set aside ("does not decode: ...", "unreadable: Corruption: block checksum
    /// mismatch ...").
    pub reason: String,
    /// The stored bytes (empty when the block holding them could not be read).
    pub value: Vec<u8>,
}

impl DeadLetter {
    /// The sequence number, when the key is one.
    pub fn seq(&self) -> Option<u64> {
        <[u8; 8]>::try_from(self.key.as_slice()).ok().map(u64::from_be_bytes)
    }

    /// The stored layout: reason length (`u32` big-endian), reason (UTF-8), value.
    fn encode_value(reason: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + reason.len() + value.len());
        out.extend_from_slice(&(reason.len() as u32).to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(value);
        out
    }

    /// The dead letter stored as `stored` under `key`, opened with `keys`; one that does not open
    /// is answered with the reason why and its stored bytes.
    pub(crate) fn open(keys: &Keys, key: &[u8], stored: &[u8]) -> DeadLetter {
        match keys.open(Family::DeadLetter, key, stored) {
            Ok(record) => DeadLetter::decode(key, &record),
            Err(e) => DeadLetter {
                key: key.to_vec(),
                reason: format!("(the dead letter does not open: {e})"),
                value: stored.to_vec(),
            },
        }
    }

    pub(crate) fn decode(key: &[u8], stored: &[u8]) -> DeadLetter {
        let n = stored.get(..4).map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
        let (reason, value) = match stored.get(4..4 + n) {
            Some(r) => (String::from_utf8_lossy(r).into_owned(), stored[4 + n..].to_vec()),
            None => ("(dead letter record is cut)".into(), stored.to_vec()),
        };
        DeadLetter { key: key.to_vec(), reason, value }
    }
}

/// The dead letters of the channel directory `dir`, in key order, read without taking its lock
/// (so also while an agent runs the channel), opened with `keys` (sealed ones that do not open
/// say so in their reason).
///
/// # Errors
/// [`ChannelError::Storage`] when the directory cannot be opened read-only.
pub fn dead_letters(dir: &Path, keys: &Keys) -> Result<Vec<DeadLetter>, ChannelError> {
    let opts = Options::default();
    let cfs = DB::list_cf(&opts, dir).map_err(storage(dir))?;
    if !cfs.iter().any(|c| c == DEAD_LETTER_CF) {
        return Ok(Vec::new());
    }
    let db = DB::open_cf_for_read_only(&opts, dir, &cfs, false).map_err(storage(dir))?;
    let cf = db.cf_handle(DEAD_LETTER_CF).expect("listed");
    let mut out = Vec::new();
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
        out.push(DeadLetter::open(keys, k, v));
        it.next();
    }
    it.status().map_err(storage(dir))?;
    Ok(out)
}

/// A path beside `dir`: `dir` with `suffix` appended to its last component.
pub(crate) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Bytes used by the files under `dir` (the channel's size on disk).
pub(super) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}

/// Bytes free for unprivileged users on the file system holding `dir` (`statvfs`: `f_bavail`
/// times `f_frsize`); `None` when it cannot be asked.
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct; `path` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
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
    /// A put whose values the sealing thread has encoded and sealed already: `values` holds them
    /// one after another, value *i* ending at `ends[i]`.
    Sealed {
        /// The first event's sequence number.
        first: u64,
        /// The batch (for the answer and the cache).
        events: Vec<Event>,
        /// The sealed values, back to back.
        values: Vec<u8>,
        /// Where each value ends in `values`.
        ends: Vec<usize>,
    },
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
    pub result: Result<(), ChannelError>,
}

/// The writer thread of one open database.
pub(super) struct Writer {
    ops: mpsc::Sender<WriteOp>,
    thread: JoinHandle<()>,
    /// With encryption: the thread sealing puts before the writer gets them.
    sealer: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread for `db`; it answers puts to `notify`, tagged with `epoch`.
    /// Values are sealed with `keys`; `index` is the database's key index, which the thread
    /// keeps from now on.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: &str,
        db: Arc<DB>,
        dir: PathBuf,
        sync: bool,
        notify: Recipient<Written>,
        epoch: u64,
        keys: Keys,
        index: Index,
    ) -> Self {
        let sealing = keys.cipher.as_ref().map_or_else(String::new, |c| c.active().to_string());
        let (ops, rx) = mpsc::channel();
        // With a cipher, a second thread encodes and seals each put while the writer writes (and
        // fsyncs) the group before it: sealing stays off the writer's path.
        let (rx, sealer) = match keys.cipher.clone() {
            Some(cipher) => {
                let (to_writer, writer_rx) = mpsc::channel();
                let sealer = std::thread::Builder::new()
                    .name(format!("rocksdb-seal-{name}"))
                    .spawn(move || seal_loop(&rx, &to_writer, &cipher))
                    .expect("the OS can start a thread");
                (writer_rx, Some(sealer))
            }
            None => (rx, None),
        };
        let thread = std::thread::Builder::new()
            .name(format!("rocksdb-{name}"))
            .spawn(move || write_loop(&db, &dir, &rx, sync, &notify, epoch, index, &sealing))
            .expect("the OS can start a thread");
        Writer { ops, thread, sealer }
    }

    /// Queues a request; `false` if the thread is gone.
    pub fn send(&self, op: WriteOp) -> bool {
        self.ops.send(op).is_ok()
    }

    /// Lets the thread finish what is queued, then waits for it (blocking).
    pub fn finish(self) {
        drop(self.ops);
        if let Some(sealer) = self.sealer {
            let _ = sealer.join();
        }
        let _ = self.thread.join();
    }
}

/// Encodes and seals every put under a fresh random nonce (one `getrandom` call per put) and
/// hands it on to the writer, in order; deletes pass through.
fn seal_loop(rx: &mpsc::Receiver<WriteOp>, to_writer: &mpsc::Sender<WriteOp>, cipher: &crypt::Cipher) {
    let mut value = BytesMut::with_capacity(64 * 1024);
    let mut nonces = Vec::new();
    while let Ok(op) = rx.recv() {
        let op = match op {
            WriteOp::Put { first, events } => {
                crypt::fill_nonces(&mut nonces, events.len());
                let mut values = Vec::with_capacity(events.iter().map(|e| e.encoded_len() + 64).sum());
                let mut ends = Vec::with_capacity(events.len());
                for (i, (e, nonce)) in events.iter().zip(nonces.chunks_exact(12)).enumerate() {
                    value.clear();
                    e.encode(&mut value);
                    let k = key(first + i as u64);
                    cipher.seal_append(Family::Queue, &k, &value, nonce.try_into().expect("12 bytes"), &mut values);
                    ends.push(values.len());
                }
                WriteOp::Sealed { first, events, values, ends }
            }
            other => other,
        };
        if to_writer.send(op).is_err() {
            return;
        }
    }
}

/// Gathers every queued request into one `WriteBatch` and writes it with one fsync (`sync`):
/// concurrent puts share the fsync (group commit). Committed ranges become range deletions.
/// Sealed puts come from [`seal_loop`]. The same batch carries the key index's change, so the
/// index is always what was written; puts are recorded as sealed under `sealing`.
#[allow(clippy::too_many_arguments)]
fn write_loop(
    db: &DB,
    dir: &Path,
    rx: &mpsc::Receiver<WriteOp>,
    sync: bool,
    notify: &Recipient<Written>,
    epoch: u64,
    mut index: Index,
    sealing: &str,
) {
    let mut value = BytesMut::with_capacity(64 * 1024);
    let mut failing = 0u64;
    while let Ok(op) = rx.recv() {
        let mut batch = WriteBatch::default();
        let mut puts = Vec::new();
        let mut deletes = Seqs::new();
        let mut next = Some(op);
        let mut gathered = 0;
        // The index after this group, kept only if the group is written.
        let mut after = index.clone();
        while let Some(op) = next {
            match op {
                WriteOp::Put { first, events } => {
                    for (i, e) in events.iter().enumerate() {
                        value.clear();
                        e.encode(&mut value);
                        batch.put(key(first + i as u64), &value);
                    }
                    after.append(db, &mut batch, first..first + events.len() as u64, sealing);
                    puts.push((first, events));
                }
                WriteOp::Sealed { first, events, values, ends } => {
                    let mut start = 0;
                    for (i, end) in ends.into_iter().enumerate() {
                        batch.put(key(first + i as u64), &values[start..end]);
                        start = end;
                    }
                    after.append(db, &mut batch, first..first + events.len() as u64, sealing);
                    puts.push((first, events));
                }
                WriteOp::Delete(seqs) => deletes.extend(seqs),
            }
            gathered += 1;
            next = if gathered < MAX_GROUP { rx.try_recv().ok() } else { None };
        }
        for r in coalesce(deletes) {
            batch.delete_range(key(r.start), key(r.end));
            after.remove(db, &mut batch, r);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync && !puts.is_empty());
        let result = db.write_opt(batch, &wo).map_err(|e| ChannelError::rocksdb(dir, &e));
        if result.is_ok() {
            index = after;
        }
        // One line when writes start failing, one when they work again (with the count between).
        match &result {
            Err(e) if failing == 0 => {
                failing = 1;
                tracing::error!(error = %e, "RocksDB write failed; further failures are counted until one succeeds");
            }
            Err(_) => failing += 1,
            Ok(()) if failing > 0 => {
                tracing::info!(failed_writes = failing, dir = %dir.display(), "RocksDB writes succeed again");
                failing = 0;
            }
            Ok(()) => {}
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
        let opened = open(dir.path(), &Keys::plain("c1"), &Tuning::default()).unwrap();
        assert_eq!((opened.next_seq, opened.queue.held()), (0, 0));
        let mut batch = WriteBatch::default();
        let line = |i: u64| Event::new(format!("Jun 14 15:16:01 combo sshd(pam_unix)[{i}]: check pass; user unknown"));
        for i in 0..10u64 {
            batch.put(key(i), line(i).to_bytes());
        }
        batch.delete_range(key(2), key(5));
        opened.db.write(batch).unwrap();
        drop(opened);
        let opened = open(dir.path(), &Keys::plain("c1"), &Tuning::default()).unwrap();
        assert_eq!((opened.next_seq, opened.queue.held()), (10, 7));
        let read_back = read(&opened.db, dir.path(), &[0..2, 6..8], &Keys::plain("c1")).unwrap();
        assert_eq!(read_back.events, vec![(0, line(0)), (1, line(1)), (6, line(6)), (7, line(7))]);
        assert!(read(&opened.db, dir.path(), &[1..4], &Keys::plain("c1")).is_err(), "2..5 were deleted");
    }

    /// Flips 8 bytes a third into the queue's (default column family's) table file.
    fn damage_the_queue_table(dir: &Path) {
        let db = open_db(dir, &Tuning::default()).unwrap();
        let files = db.live_files().unwrap();
        drop(db);
        let sst = files.iter().find(|f| f.column_family_name == "default").expect("the queue was flushed");
        let path = dir.join(sst.name.trim_start_matches('/'));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 3;
        for b in &mut bytes[at..at + 8] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn an_indexed_open_reads_no_event_and_an_unindexed_one_reads_them_all() {
        // The channel in a directory of its own: the salvage below keeps the damaged original
        // aside next to it, inside the temporary directory.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        let (keys, tuning) = (Keys::plain("c1"), Tuning::default());
        let line = |i: u64| {
            Event::new(format!("081109 203615 148 INFO dfs.DataNode$PacketResponder: block blk_{i} terminating"))
        };
        let n = 30_000u64;
        {
            let opened = open(&dir, &keys, &tuning).unwrap();
            let mut index = opened.index.clone();
            let mut batch = WriteBatch::default();
            for i in 0..n {
                batch.put(key(i), line(i).to_bytes());
            }
            index.append(&opened.db, &mut batch, 0..n, "");
            batch.delete_range(key(0), key(1000));
            index.remove(&opened.db, &mut batch, 0..1000);
            opened.db.write(batch).unwrap();
            opened.db.flush().unwrap();
        }
        damage_the_queue_table(&dir);
        let opened = open(&dir, &keys, &tuning).unwrap();
        assert!(opened.salvage.is_none(), "the open read none of the damaged values");
        assert_eq!((opened.queue.held(), opened.next_seq), (n - 1000, n));
        let first = read(&opened.db, &dir, &[1000..n], &keys).unwrap();
        assert!(!first.dead.is_empty() && first.dead.len() < 200, "taking finds the damage: {}", first.dead.len());
        assert_eq!(first.events.len() + first.dead.len(), (n - 1000) as usize);
        drop(opened);

        // Control: without a complete index the open reads every value, and meets the damaged
        // block (still in the table file: the dead letters only shadow its values).
        {
            let db = open_db(&dir, &tuning).unwrap();
            let mut b = WriteBatch::default();
            Index::invalidate(&db, &mut b);
            db.write(b).unwrap();
        }
        let opened = open(&dir, &keys, &tuning).unwrap();
        assert!(opened.salvage.is_some(), "a scan of every value meets the damage");
    }

    /// A write of events `0..n` (Loghub lines) whose value `bad` does not decode.
    fn with_one_undecodable(n: u64, bad: u64) -> WriteBatch {
        let line = |i: u64| Event::new(format!("2015-10-18 18:01:47,978 INFO [main] MRAppMaster: attempt {i}"));
        let mut batch = WriteBatch::default();
        for i in 0..n {
            if i == bad {
                batch.put(key(i), b"\xff\xff\xff\x7f not an event");
            } else {
                batch.put(key(i), line(i).to_bytes());
            }
        }
        batch
    }

    #[test]
    fn a_value_dead_lettered_before_a_crash_that_lost_the_index_update_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, tuning) = (Keys::plain("c1"), Tuning::default());
        let opened = open(dir.path(), &keys, &tuning).unwrap();
        let mut index = opened.index.clone();
        let mut batch = with_one_undecodable(10, 4);
        index.append(&opened.db, &mut batch, 0..10, "");
        opened.db.write(batch).unwrap();
        let first = read(&opened.db, dir.path(), &[0..10], &keys).unwrap();
        assert_eq!((first.dead.len(), first.gone.len(), first.events.len()), (1, 0, 9));
        drop(opened);
        // The writer never removed 4 from the index (as after a crash).
        let opened = open(dir.path(), &keys, &tuning).unwrap();
        assert_eq!(opened.queue.held(), 10);
        let again = read(&opened.db, dir.path(), &[0..10], &keys).unwrap();
        assert_eq!((again.gone, again.dead.len(), again.events.len()), (vec![4], 0, 9));
        // Control: a value missing without a dead letter is a lost event, not passed over.
        opened.db.delete(key(7)).unwrap();
        let lost = read(&opened.db, dir.path(), &[0..10], &keys).unwrap_err();
        assert!(lost.to_string().contains("event 7 is missing"), "{lost}");
    }

    #[test]
    fn a_block_failing_its_checksum_is_dead_lettered_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let line = |i: u64| Event::new(format!("Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened {i}"));
        let n = 3000u64;
        {
            let opened = open(dir.path(), &Keys::plain("c1"), &Tuning::default()).unwrap();
            let mut batch = WriteBatch::default();
            for i in 0..n {
                batch.put(key(i), line(i).to_bytes());
            }
            opened.db.write(batch).unwrap();
            opened.db.flush().unwrap();
        }
        let sst = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sst"))
            .unwrap();
        let mut bytes = std::fs::read(&sst).unwrap();
        let at = bytes.len() / 3;
        for b in &mut bytes[at..at + 8] {
            *b ^= 0x5a;
        }
        std::fs::write(&sst, bytes).unwrap();
        // Opened without the scan, as a running channel holds it when the damage appears.
        let db = open_db(dir.path(), &Tuning::default()).unwrap();
        let outcome = read(&db, dir.path(), &[0..n], &Keys::plain("c1")).unwrap();
        let dead: Vec<u64> = outcome.dead.iter().map(|(s, _)| *s).collect();
        assert!(!dead.is_empty() && dead.len() < 100, "one block's events: {dead:?}");
        assert!(outcome.dead.iter().all(|(_, r)| r.contains("unreadable")), "{:?}", outcome.dead[0]);
        assert_eq!(outcome.events.len() + dead.len(), n as usize, "every event read or dead-lettered");
        assert_eq!(outcome.events.last().map(|(s, _)| *s), Some(n - 1), "reading went on past the block");
        assert!(outcome.events.iter().all(|(s, e)| *e == line(*s)));
    }

    #[test]
    fn a_salvage_of_an_encrypted_channel_seals_every_value_it_copies_under_the_active_key() {
        // A directory of its own: the salvage keeps the damaged original aside next to it.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        let line = |i: u64| {
            Event::new(format!("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost={i}"))
        };
        let old = crypt::cipher_of("c1", &[("a", [1; 32])], "a");
        {
            let db = open_db(&dir, &Tuning::default()).unwrap();
            let mut batch = WriteBatch::default();
            for i in 0..100u64 {
                let plain = line(i).to_bytes();
                match i {
                    // Written before encryption was turned on.
                    0..10 => batch.put(key(i), &plain),
                    // Tampered with: does not authenticate.
                    50 => {
                        let mut v = old.seal(Family::Queue, &key(i), &plain);
                        let at = v.len() - 20;
                        v[at] ^= 1;
                        batch.put(key(i), v)
                    }
                    _ => batch.put(key(i), old.seal(Family::Queue, &key(i), &plain)),
                }
            }
            db.write(batch).unwrap();
            db.flush().unwrap();
        }
        std::fs::remove_file(dir.join("CURRENT")).unwrap();
        let rotated = crypt::cipher_of("c1", &[("a", [1; 32]), ("b", [2; 32])], "b");
        let keys = Keys { channel: "c1".into(), cipher: Some(rotated) };
        let opened = open(&dir, &keys, &Tuning::default()).unwrap();
        let report = opened.salvage.clone().expect("salvaged");
        assert_eq!((report.salvaged, report.dead_lettered), (99, 1), "{report}");
        let mut census = Census::default();
        {
            let mut it = opened.db.raw_iterator();
            it.seek_to_first();
            while it.valid() {
                census.add(it.key().unwrap(), it.value().unwrap());
                it.next();
            }
        }
        assert_eq!(
            (census.plain, census.sealed.keys().map(String::as_str).collect::<Vec<_>>()),
            (0, vec!["b"]),
            "all sealed under b"
        );
        assert_eq!(census.sealed["b"].0, 99);
        let outcome = read(&opened.db, &dir, &[0..50, 51..100], &keys).unwrap();
        assert!(outcome.events.iter().all(|(s, e)| *e == line(*s)) && outcome.events.len() == 99);
        drop(opened);
        let letters = dead_letters(&dir, &keys).unwrap();
        assert_eq!(letters.len(), 1);
        assert!(letters[0].reason.contains("authentication failed"), "{}", letters[0].reason);
        assert!(dead_letters(&dir, &Keys::plain("c1")).unwrap()[0].reason.contains("does not open"), "sealed");
        let needle = b"authentication failure; rhost=";
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext in {}", f.path().display());
        }
    }

    #[test]
    fn an_undecodable_value_is_dead_lettered_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let opened = open(dir.path(), &Keys::plain("c1"), &Tuning::default()).unwrap();
        let batch = with_one_undecodable(5, 2);
        opened.db.write(batch).unwrap();
        let outcome = read(&opened.db, dir.path(), &[0..5], &Keys::plain("c1")).unwrap();
        assert_eq!(outcome.events.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 1, 3, 4]);
        assert_eq!(outcome.dead.len(), 1);
        assert_eq!(outcome.dead[0].0, 2);
        assert!(opened.db.get(key(2)).unwrap().is_none(), "moved out of the queue");
        drop(opened);
        let letters = dead_letters(dir.path(), &Keys::plain("c1")).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].seq(), Some(2));
        assert!(letters[0].reason.starts_with("does not decode"), "{}", letters[0].reason);
        assert_eq!(letters[0].value, b"\xff\xff\xff\x7f not an event");
    }
}
