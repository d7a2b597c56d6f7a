//! Salvaging a damaged `RocksDb` channel directory, and reading past unreadable blocks.
//!
//! A channel whose database fails to open with corruption (a torn or flipped WAL record under
//! `AbsoluteConsistency` recovery, a table block failing its checksum, a garbage MANIFEST, a
//! missing CURRENT) is never opened "as far as it goes". Instead [`salvage`]:
//!
//! 1. copies `DIR` to `DIR.salvage-work` and opens the copy as leniently as RocksDB allows
//!    (`SkipAnyCorruptedRecord` WAL recovery, no paranoid checks), after RocksDB's own repair
//!    (`DB::repair`, which rebuilds a MANIFEST from the table and WAL files) when even that fails;
//! 2. copies every readable event, in key order and under its key, into a fresh database at
//!    `DIR.salvaged`, reading with block checksums verified; a value that does not decode, and
//!    each span of keys in a block that cannot be read, goes to the dead-letter column family
//!    with its reason; the old dead letters come along; then the original WAL files are read
//!    with flumen's own reader ([`wal`]), which resynchronises after a damaged fragment, and the
//!    events of write batches after the damage that RocksDB dropped are added;
//!    with an `encryption` option, every value is opened and sealed again under the active key (a
//!    value that does not authenticate is dead-lettered, its sealed bytes kept, sealed again);
//! 3. renames `DIR` to `DIR.damaged-<UTC time>` (kept for the operator, untouched) and
//!    `DIR.salvaged` to `DIR`.
//!
//! A crash between the two renames leaves `DIR` missing and `DIR.salvaged` complete;
//! [`finish_interrupted`] completes the rename at the next open.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rocksdb::{DBRecoveryMode, Options, ReadOptions, WriteBatch, DB};

use super::crypt::{Family, Keys};
use super::store::{self, key, put_dead_letter, sibling, DEAD_LETTER_CF};
use crate::channel::{ChannelError, StorageErrorKind};
use crate::event::Event;

/// What a salvage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvageReport {
    /// The channel's directory, now holding the salvaged events.
    pub dir: PathBuf,
    /// Where the damaged original was moved, untouched (`DIR.damaged-20261201T101500Z`).
    pub damaged_copy: PathBuf,
    /// The error that showed the damage.
    pub cause: String,
    /// Events copied into the fresh channel.
    pub salvaged: u64,
    /// Values moved to the dead-letter column family (undecodable values, unreadable spans).
    pub dead_lettered: u64,
    /// The status of each span of keys that could not be read.
    pub unreadable: Vec<String>,
    /// Whether RocksDB's repair had to rebuild the copy's MANIFEST before it would open.
    pub repaired: bool,
    /// Of the events salvaged, those that only flumen's own WAL reader found (write batches
    /// after a damaged one, which RocksDB's recovery drops).
    pub from_wal: u64,
}

impl std::fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "salvaged {} events ({} of them read from the WAL past the damage) into {}; {} dead-lettered; {} unreadable spans; damaged original kept at {}{}",
            self.salvaged,
            self.from_wal,
            self.dir.display(),
            self.dead_lettered,
            self.unreadable.len(),
            self.damaged_copy.display(),
            if self.repaired { " (RocksDB repair rebuilt its MANIFEST)" } else { "" }
        )
    }
}

/// Completes a salvage that a crash interrupted between its two renames: `DIR` is missing and
/// `DIR.salvaged` holds the salvaged database.
///
/// # Errors
/// [`ChannelError::Storage`] when the rename fails.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<(), ChannelError> {
    let fresh = sibling(dir, ".salvaged");
    if !dir.exists() && fresh.is_dir() {
        tracing::warn!(dir = %dir.display(), "completing an interrupted salvage");
        std::fs::rename(&fresh, dir).map_err(|e| ChannelError::io(dir, &e))?;
    }
    Ok(())
}

/// Sets the damaged directory `dir` aside and salvages what is readable into a fresh one at `dir`
/// (see the module documentation). `cause` is the error that showed the damage.
///
/// # Errors
/// [`ChannelError::Storage`]: `Corruption` when not even RocksDB's repair makes a copy of the
/// directory open (the directory is then left as it was), or the I/O error of a copy or rename.
pub fn salvage(dir: &Path, cause: &ChannelError, keys: &Keys) -> Result<SalvageReport, ChannelError> {
    let work = sibling(dir, ".salvage-work");
    let fresh = sibling(dir, ".salvaged");
    for stale in [&work, &fresh] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(|e| ChannelError::io(stale, &e))?;
        }
    }
    copy_dir(dir, &work)?;
    let result = salvage_copy(&work, &fresh, dir, cause, keys);
    let _ = std::fs::remove_dir_all(&work);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&fresh);
            return Err(e);
        }
    };
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut aside = sibling(dir, &format!(".damaged-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = sibling(dir, &format!(".damaged-{stamp}-{n}"));
    }
    std::fs::rename(dir, &aside).map_err(|e| ChannelError::io(dir, &e))?;
    std::fs::rename(&fresh, dir).map_err(|e| ChannelError::io(dir, &e))?;
    if let Some(parent) = dir.parent() {
        if let Ok(d) = std::fs::File::open(if parent.as_os_str().is_empty() { Path::new(".") } else { parent }) {
            let _ = d.sync_all();
        }
    }
    report.damaged_copy = aside;
    Ok(report)
}

/// Opens the working copy leniently (repairing it if needed) and copies what is readable into a
/// fresh database at `fresh`.
fn salvage_copy(
    work: &Path,
    fresh: &Path,
    dir: &Path,
    cause: &ChannelError,
    keys: &Keys,
) -> Result<SalvageReport, ChannelError> {
    let (src, repaired) = open_lenient(work)?;
    let dst = store::open_db(fresh, &store::Tuning::default())?;
    let mut report = SalvageReport {
        dir: dir.to_path_buf(),
        damaged_copy: PathBuf::new(),
        cause: cause.to_string(),
        salvaged: 0,
        dead_lettered: 0,
        unreadable: Vec::new(),
        repaired,
        from_wal: 0,
    };
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut batch = WriteBatch::default();
    let write_err = |e: rocksdb::Error| ChannelError::rocksdb(fresh, &e);
    scan(&src, None, &key(0), &key(u64::MAX), |entry| {
        match entry {
            Entry::Value(k, v) => {
                let problem = if k.len() != 8 {
                    Err(format!("key of {} bytes is not a sequence number", k.len()))
                } else {
                    open_event(keys, k, v)
                };
                seen.insert(k.to_vec());
                match problem {
                    Ok(plain) => {
                        batch.put(k, keys.seal(Family::Queue, k, &plain));
                        report.salvaged += 1;
                    }
                    Err(reason) => {
                        put_dead_letter(&dst, &mut batch, keys, k, &reason, v);
                        report.dead_lettered += 1;
                    }
                }
            }
            Entry::Unreadable { from, until, status } => {
                let reason = match until {
                    Some(u) => format!("unreadable: events {from}..{u} (those that existed): {status}"),
                    None => format!("unreadable: events from {from} on: {status}"),
                };
                put_dead_letter(&dst, &mut batch, keys, &key(from), &reason, &[]);
                report.dead_lettered += 1;
                report.unreadable.push(reason);
            }
        }
        if batch.len() >= 10_000 {
            dst.write(std::mem::take(&mut batch)).map_err(write_err)?;
        }
        Ok(())
    })?;
    // Write batches RocksDB's recovery dropped: after the damage in a WAL file of the original.
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ChannelError::io(dir, &e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut wal_keys = std::collections::BTreeMap::new();
    for log in &logs {
        let bytes = std::fs::read(log).map_err(|e| ChannelError::io(log, &e))?;
        let (batches, damaged) = wal::batches(&bytes);
        if damaged > 0 {
            report.unreadable.push(format!("{}: {damaged} damaged WAL fragments skipped", log.display()));
        }
        for b in &batches {
            wal::apply(b, &mut wal_keys);
        }
    }
    for (k, v) in wal_keys {
        let plain = if k.len() == 8 && !seen.contains(&k) { open_event(keys, &k, &v).ok() } else { None };
        if let Some(plain) = plain {
            batch.put(&k, keys.seal(Family::Queue, &k, &plain));
            report.salvaged += 1;
            report.from_wal += 1;
            if batch.len() >= 10_000 {
                dst.write(std::mem::take(&mut batch)).map_err(write_err)?;
            }
        }
    }
    if let Some(cf) = src.cf_handle(DEAD_LETTER_CF) {
        let mut it = src.raw_iterator_cf(cf);
        it.seek_to_first();
        let to = dst.cf_handle(DEAD_LETTER_CF).expect("a channel database has a dead-letter family");
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                // Sealed again under the active key when it opens; else kept as it was.
                match keys.open(Family::DeadLetter, k, v) {
                    Ok(record) => batch.put_cf(to, k, keys.seal(Family::DeadLetter, k, &record)),
                    Err(_) => batch.put_cf(to, k, v),
                }
            }
            it.next();
        }
        if let Err(e) = it.status() {
            report.unreadable.push(format!("old dead letters: {e}"));
        }
    }
    dst.write(batch).map_err(write_err)?;
    dst.flush_wal(true).map_err(write_err)?;
    Ok(report)
}

/// The plaintext of the event stored as `v` under `k`, when it opens and decodes; else why not.
fn open_event(keys: &Keys, k: &[u8], v: &[u8]) -> Result<Vec<u8>, String> {
    let plain = keys.open(Family::Queue, k, v).map_err(|e| format!("does not open: {e}"))?;
    Event::decode(&mut Bytes::copy_from_slice(&plain)).map_err(|e| format!("does not decode: {e}"))?;
    Ok(plain)
}

/// Opens a copy of a damaged database as leniently as RocksDB allows, repairing it first if it
/// will not open at all. Answers whether a repair was needed.
fn open_lenient(work: &Path) -> Result<(DB, bool), ChannelError> {
    let mut opts = Options::default();
    opts.create_if_missing(false);
    opts.set_paranoid_checks(false);
    opts.set_wal_recovery_mode(DBRecoveryMode::SkipAnyCorruptedRecord);
    let open = |opts: &Options| {
        let cfs = DB::list_cf(opts, work).unwrap_or_else(|_| vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string()]);
        DB::open_cf(opts, work, &cfs)
    };
    match open(&opts) {
        Ok(db) => Ok((db, false)),
        Err(first) => {
            tracing::warn!(dir = %work.display(), error = %first, "damaged copy does not open; repairing it");
            DB::repair(&opts, work).map_err(|e| {
                ChannelError::storage(
                    StorageErrorKind::Corruption,
                    work,
                    format!("beyond salvage: {first}; repair: {e}"),
                )
            })?;
            open(&opts).map(|db| (db, true)).map_err(|e| {
                ChannelError::storage(
                    StorageErrorKind::Corruption,
                    work,
                    format!("beyond salvage: {first}; after repair: {e}"),
                )
            })
        }
    }
}

/// Copies the files of `from` (and its subfolders) to a new folder `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<(), ChannelError> {
    std::fs::create_dir_all(to).map_err(|e| ChannelError::io(to, &e))?;
    for entry in std::fs::read_dir(from).map_err(|e| ChannelError::io(from, &e))? {
        let entry = entry.map_err(|e| ChannelError::io(from, &e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| ChannelError::io(&src, &e))?;
        }
    }
    Ok(())
}

/// What [`scan`] hands to its callback.
pub(crate) enum Entry<'a> {
    /// A readable key and its value.
    Value(&'a [u8], &'a [u8]),
    /// Keys from sequence number `from` up to `until` (the next readable key; `None`: the end)
    /// sit in blocks that cannot be read.
    Unreadable {
        /// The first sequence number that may be lost.
        from: u64,
        /// Where reading resumed.
        until: Option<u64>,
        /// RocksDB's status.
        status: String,
    },
}

fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(b)
}

/// Iterates the keys in `lower..upper` (8-byte sequence numbers) of column family `cf` (`None`:
/// the queue) with block checksums verified, handing each to `f`; a corrupt block does not end the
/// scan: the first readable key after it is found by seeking (doubling, then bisecting), and the
/// span between is handed to `f` as [`Entry::Unreadable`].
///
/// # Errors
/// `f`'s error, or a RocksDB error other than corruption.
pub(crate) fn scan(
    db: &DB,
    cf: Option<&str>,
    lower: &[u8; 8],
    upper: &[u8; 8],
    mut f: impl FnMut(Entry<'_>) -> Result<(), ChannelError>,
) -> Result<(), ChannelError> {
    let (lower, upper) = (u64::from_be_bytes(*lower), u64::from_be_bytes(*upper));
    let iter = |from: u64| {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(key(upper).to_vec());
        opts.fill_cache(false);
        opts.set_verify_checksums(true);
        let mut it = match cf.and_then(|c| db.cf_handle(c)) {
            Some(h) => db.raw_iterator_cf_opt(h, opts),
            None => db.raw_iterator_opt(opts),
        };
        it.seek(key(from));
        it
    };
    // Whether a seek to `at` reads without corruption.
    let readable = |at: u64| {
        let it = iter(at);
        match it.status() {
            Ok(()) => true,
            Err(e) => e.kind() != rocksdb::ErrorKind::Corruption,
        }
    };
    let mut pos = lower;
    loop {
        let mut it = iter(pos);
        let mut next = pos;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            next = seq_of(k).saturating_add(1);
            f(Entry::Value(k, v))?;
            it.next();
        }
        match it.status() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                let status = e.to_string();
                // Find a readable seek point after `next`: double the step until one reads,
                // then bisect down to the first.
                let (mut bad, mut good) = (next, None);
                let mut step = 1u64;
                while let Some(at) = next.checked_add(step).filter(|&at| at < upper) {
                    if readable(at) {
                        good = Some(at);
                        break;
                    }
                    bad = at;
                    step = step.saturating_mul(2);
                }
                let Some(mut good) = good else {
                    return f(Entry::Unreadable { from: next, until: None, status });
                };
                while good - bad > 1 {
                    let mid = bad + (good - bad) / 2;
                    if readable(mid) {
                        good = mid;
                    } else {
                        bad = mid;
                    }
                }
                // The first key at or after `good` is where reading resumes.
                let resume = {
                    let it = iter(good);
                    if it.valid() {
                        it.key().map(seq_of)
                    } else {
                        None
                    }
                };
                f(Entry::Unreadable { from: next, until: resume, status })?;
                match resume {
                    Some(r) => pos = r,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(ChannelError::rocksdb(Path::new(db.path()), &e)),
        }
    }
}

/// Reading RocksDB WAL files directly, past damage: every write batch whose fragments all pass
/// their checksums is recovered, also after a damaged one (RocksDB's own reader gives up on the
/// rest of a 32 KiB block, its repair on the rest of the file). Format: RocksDB's
/// `db/log_format.h` (32 KiB blocks of fragments: masked CRC32C, length, type) and
/// `db/write_batch.cc` (sequence, count, tagged records).
pub(crate) mod wal {
    use std::collections::BTreeMap;

    const BLOCK: usize = 32 * 1024;

    fn crc32c(data: &[u8]) -> u32 {
        static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
        let table = TABLE.get_or_init(|| {
            let mut t = [0u32; 256];
            for (i, e) in t.iter_mut().enumerate() {
                let mut c = i as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                }
                *e = c;
            }
            t
        });
        !data.iter().fold(!0u32, |c, &b| table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
    }

    fn masked(crc: u32) -> u32 {
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    /// The write batches of one WAL file whose fragments all pass their checksums, in order, and
    /// the number of fragments dropped as damaged.
    pub fn batches(file: &[u8]) -> (Vec<Vec<u8>>, u64) {
        let (mut out, mut damaged) = (Vec::new(), 0u64);
        let mut partial: Option<Vec<u8>> = None;
        for block in file.chunks(BLOCK) {
            let mut pos = 0;
            let mut resyncing = false;
            while pos + 7 <= block.len() {
                let h = &block[pos..];
                let len = u16::from_le_bytes([h[4], h[5]]) as usize;
                let kind = h[6];
                let header = if (5..=8).contains(&kind) { 11 } else { 7 };
                if kind == 0 && len == 0 && !resyncing {
                    break; // padding (or preallocated zeros): the rest of the block is empty
                }
                let valid = pos + header + len <= block.len() && (1..=10).contains(&kind) && {
                    let stored = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                    let mut checked = vec![kind];
                    checked.extend_from_slice(&h[7..header + len]);
                    masked(crc32c(&checked)) == stored
                };
                if !valid {
                    // Damaged (its length may be too): look for the next fragment that passes its
                    // checksum, byte by byte, as RocksDB's reader does not.
                    if !resyncing {
                        damaged += 1;
                        partial = None;
                        resyncing = true;
                    }
                    pos += 1;
                    continue;
                }
                resyncing = false;
                let payload = &h[header..header + len];
                match kind {
                    1 | 5 => {
                        partial = None;
                        out.push(payload.to_vec());
                    }
                    2 | 6 => partial = Some(payload.to_vec()),
                    3 | 7 => {
                        if let Some(p) = &mut partial {
                            p.extend_from_slice(payload);
                        }
                    }
                    4 | 8 => {
                        if let Some(mut p) = partial.take() {
                            p.extend_from_slice(payload);
                            out.push(p);
                        }
                    }
                    _ => {} // metadata records (compression, timestamp sizes, ...)
                }
                pos += header + len;
            }
        }
        (out, damaged)
    }

    fn varint(b: &[u8], pos: &mut usize) -> Option<u32> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = *b.get(*pos)?;
            *pos += 1;
            v |= ((byte & 0x7f) as u32) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn slice<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
        let n = varint(b, pos)? as usize;
        let s = b.get(*pos..*pos + n)?;
        *pos += n;
        Some(s)
    }

    /// Applies the default column family's puts, deletes and range deletes of `batch` to `keys`.
    /// Answers `false` when the batch does not parse (it is then applied as far as it parsed).
    pub fn apply(batch: &[u8], keys: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
        let mut pos = 12;
        while pos < batch.len() {
            let tag = batch[pos];
            pos += 1;
            let cf = if matches!(tag, 0x4 | 0x5 | 0x6 | 0x8 | 0xE | 0x10) {
                match varint(batch, &mut pos) {
                    Some(cf) => cf,
                    None => return false,
                }
            } else {
                0
            };
            let ok = match tag {
                0x1 | 0x5 | 0x2 | 0x6 | 0x10 | 0x11 => match (slice(batch, &mut pos), slice(batch, &mut pos)) {
                    (Some(k), Some(v)) => {
                        if cf == 0 && matches!(tag, 0x1 | 0x5) {
                            keys.insert(k.to_vec(), v.to_vec());
                        }
                        true
                    }
                    _ => false,
                },
                0x0 | 0x4 | 0x7 | 0x8 => match slice(batch, &mut pos) {
                    Some(k) => {
                        if cf == 0 {
                            keys.remove(k);
                        }
                        true
                    }
                    None => false,
                },
                0xE | 0xF => match (slice(batch, &mut pos), slice(batch, &mut pos)) {
                    (Some(from), Some(to)) => {
                        if cf == 0 {
                            let doomed: Vec<Vec<u8>> =
                                keys.range(from.to_vec()..to.to_vec()).map(|(k, _)| k.clone()).collect();
                            for k in doomed {
                                keys.remove(&k);
                            }
                        }
                        true
                    }
                    _ => false,
                },
                0x3 => slice(batch, &mut pos).is_some(),
                0x9..=0xD => true,
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn crc32c_matches_the_standard_check_value() {
            assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        }
    }
}
