//! The key index of a `RocksDb` queue: which sequence numbers are live, as ranges, kept in a
//! column family of its own so that opening a channel reads a few index records instead of every
//! stored event.
//!
//! The index column family ([`INDEX_CF`]) holds:
//! - `r` + start (8 bytes, big-endian) → end: a live range `start..end` of the queue;
//! - `s` + first → key id: from sequence number `first` on (until the next such record), values
//!   were written sealed under this key id (`""`: in plaintext), so that opening can check the
//!   keys against the values without reading them all;
//! - `n` → next: one past the highest sequence number ever written (sequence numbers are never
//!   reused, so the sealing records stay true);
//! - `v` → 1: the index is complete. A directory without it (written before the index existed, a
//!   salvaged copy) or whose data holds keys past `next` is scanned once and indexed.
//!
//! Every change to the queue's keys goes through one `WriteBatch` that also carries the index's
//! change (the writer thread's puts and range deletions, `flumen channel import`), so the index
//! and the keys are always the same after a crash, whatever the WAL kept. The one exception is
//! moving a value to the dead-letter family on a read: the index still lists it until the writer
//! removes it, and a read finding it gone but dead-lettered passes over it.

use std::collections::BTreeMap;
use std::ops::Range;

use rocksdb::{WriteBatch, DB};

use crate::channel::ChannelError;

/// The column family holding the key index.
pub(crate) const INDEX_CF: &str = "index";

const COMPLETE: &[u8] = b"v";
const NEXT: &[u8] = b"n";
const RANGE: u8 = b'r';
const SEALING: u8 = b's';

fn record(tag: u8, seq: u64) -> [u8; 9] {
    let mut k = [tag; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?))
}

/// The key index of one queue, as read at open and as the writer thread keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    /// Live ranges, start → end (half-open, ascending, not touching).
    ranges: BTreeMap<u64, u64>,
    /// Sealing intervals: first sequence number → key id (`""`: plaintext).
    sealing: BTreeMap<u64, String>,
    /// One past the highest sequence number ever written.
    next: u64,
}

impl Index {
    /// An index of the live `ranges` (ascending), with `sealing` intervals and `next`.
    pub fn new(ranges: impl IntoIterator<Item = Range<u64>>, sealing: BTreeMap<u64, String>, next: u64) -> Self {
        let mut index = Index { ranges: BTreeMap::new(), sealing, next };
        for r in ranges {
            index.insert(r);
        }
        index.next = index.next.max(index.ranges.last_key_value().map_or(0, |(_, e)| *e));
        index
    }

    /// The live ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(s, e)| *s..*e)
    }

    /// One past the highest sequence number ever written: the next put's first.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Live sequence numbers.
    #[cfg(test)]
    pub fn held(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.ranges.remove(&s);
            }
        }
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    /// Makes `r` live (a written put) and records the change in `batch`; puts sealed under
    /// `sealing` (`""`: plaintext) get a sealing record when the last one differs.
    pub fn append(&mut self, db: &DB, batch: &mut WriteBatch, r: Range<u64>, sealing: &str) {
        let Some(cf) = db.cf_handle(INDEX_CF) else { return };
        if r.is_empty() {
            return;
        }
        if self.sealing.last_key_value().is_none_or(|(_, id)| id != sealing) {
            self.sealing.insert(r.start, sealing.to_string());
            batch.put_cf(cf, record(SEALING, r.start), sealing.as_bytes());
        }
        // Usually the put extends the last range: one record rewritten.
        let before: Vec<u64> =
            self.ranges.range(..=r.end).rev().take_while(|(_, &e)| e >= r.start).map(|(&s, _)| s).collect();
        for s in &before {
            batch.delete_cf(cf, record(RANGE, *s));
        }
        self.insert(r.clone());
        let (&s, &e) = self.ranges.range(..=r.start).next_back().expect("just inserted");
        batch.put_cf(cf, record(RANGE, s), e.to_be_bytes());
        if r.end > self.next {
            self.next = r.end;
            batch.put_cf(cf, NEXT, self.next.to_be_bytes());
        }
    }

    /// Removes `r` (committed or dead-lettered numbers) and records the change in `batch`.
    pub fn remove(&mut self, db: &DB, batch: &mut WriteBatch, r: Range<u64>) {
        let Some(cf) = db.cf_handle(INDEX_CF) else { return };
        if r.is_empty() {
            return;
        }
        let touched: Vec<(u64, u64)> =
            self.ranges.range(..r.end).rev().take_while(|(_, &e)| e > r.start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in touched {
            self.ranges.remove(&s);
            batch.delete_cf(cf, record(RANGE, s));
            if s < r.start {
                self.ranges.insert(s, r.start);
                batch.put_cf(cf, record(RANGE, s), r.start.to_be_bytes());
            }
            if r.end < e {
                self.ranges.insert(r.end, e);
                batch.put_cf(cf, record(RANGE, r.end), e.to_be_bytes());
            }
        }
    }

    /// Writes the whole index into `batch`, replacing whatever the index family held, and marks
    /// it complete.
    pub fn write_all(&self, db: &DB, batch: &mut WriteBatch) {
        let Some(cf) = db.cf_handle(INDEX_CF) else { return };
        batch.delete_range_cf(cf, [0u8].as_slice(), [0xffu8; 10].as_slice());
        for (s, e) in &self.ranges {
            batch.put_cf(cf, record(RANGE, *s), e.to_be_bytes());
        }
        for (s, id) in &self.sealing {
            batch.put_cf(cf, record(SEALING, *s), id.as_bytes());
        }
        batch.put_cf(cf, NEXT, self.next.to_be_bytes());
        batch.put_cf(cf, COMPLETE, [1u8]);
    }

    /// Marks the index incomplete in `batch`: the next open scans the keys.
    #[cfg(test)]
    pub fn invalidate(db: &DB, batch: &mut WriteBatch) {
        if let Some(cf) = db.cf_handle(INDEX_CF) {
            batch.delete_cf(cf, COMPLETE);
        }
    }

    /// Reads the index of `db`; `None` when it is not complete (or `db` has no index family).
    ///
    /// # Errors
    /// [`ChannelError::Storage`] (`Corruption`) when a record is malformed, or on a read error.
    pub fn read(db: &DB, dir: &std::path::Path) -> Result<Option<Index>, ChannelError> {
        let Some(cf) = db.cf_handle(INDEX_CF) else { return Ok(None) };
        let corrupt = |what: String| {
            ChannelError::storage(crate::channel::StorageErrorKind::Corruption, &dir.join("(index)"), what)
        };
        if db.get_cf(cf, COMPLETE).map_err(|e| ChannelError::rocksdb(dir, &e))?.is_none() {
            return Ok(None);
        }
        let mut index = Index::default();
        let mut it = db.raw_iterator_cf(cf);
        it.seek_to_first();
        while it.valid() {
            let (k, v) = (it.key().unwrap_or_default(), it.value().unwrap_or_default());
            match k.first() {
                Some(&RANGE) => {
                    let (Some(s), Ok(e)) = (seq_of(k), <[u8; 8]>::try_from(v)) else {
                        return Err(corrupt(format!("malformed range record {k:?}")));
                    };
                    let e = u64::from_be_bytes(e);
                    if e <= s {
                        return Err(corrupt(format!("empty range record {s}..{e}")));
                    }
                    index.ranges.insert(s, e);
                }
                Some(&SEALING) => {
                    let (Some(s), Ok(id)) = (seq_of(k), std::str::from_utf8(v)) else {
                        return Err(corrupt(format!("malformed sealing record {k:?}")));
                    };
                    index.sealing.insert(s, id.to_string());
                }
                _ if k == NEXT => {
                    let n = <[u8; 8]>::try_from(v).map_err(|_| corrupt("malformed next record".into()))?;
                    index.next = u64::from_be_bytes(n);
                }
                _ => {}
            }
            it.next();
        }
        it.status().map_err(|e| ChannelError::rocksdb(dir, &e))?;
        let last_end = index.ranges.last_key_value().map_or(0, |(_, e)| *e);
        if last_end > index.next {
            return Err(corrupt(format!(
                "a live range ends at {last_end}, past the next sequence number {}",
                index.next
            )));
        }
        Ok(Some(index))
    }

    /// The sealing key id of the values in `r` (each part of `r` under one id), as
    /// `(part, key id)`; the part before the first sealing record, if any, under `""`.
    pub fn sealed_parts(&self, r: Range<u64>) -> Vec<(Range<u64>, &str)> {
        let mut out = Vec::new();
        let mut at = r.start;
        while at < r.end {
            let id = self.sealing.range(..=at).next_back().map_or("", |(_, id)| id.as_str());
            let until = self.sealing.range(at + 1..).next().map_or(r.end, |(s, _)| (*s).min(r.end));
            out.push((at..until, id));
            at = until;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, DB) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, dir.path(), [INDEX_CF]).unwrap();
        (dir, db)
    }

    fn persisted(index: &Index, db: &DB, dir: &std::path::Path) {
        let read = Index::read(db, dir).unwrap().expect("complete");
        assert_eq!(&read, index, "the records say what the writer holds");
    }

    #[test]
    fn appends_and_removals_keep_the_records_in_step() {
        let (dir, db) = db();
        let mut index = Index::default();
        let mut b = WriteBatch::default();
        index.write_all(&db, &mut b);
        db.write(b).unwrap();
        let step = |index: &mut Index, f: &dyn Fn(&mut Index, &mut WriteBatch)| {
            let mut b = WriteBatch::default();
            f(index, &mut b);
            db.write(b).unwrap();
            persisted(index, &db, dir.path());
        };
        step(&mut index, &|i, b| i.append(&db, b, 0..100, ""));
        step(&mut index, &|i, b| i.append(&db, b, 100..250, ""));
        assert_eq!(index.ranges().collect::<Vec<_>>(), vec![0..250]);
        step(&mut index, &|i, b| i.remove(&db, b, 100..150));
        step(&mut index, &|i, b| i.remove(&db, b, 0..100));
        step(&mut index, &|i, b| i.append(&db, b, 250..300, "k1"));
        step(&mut index, &|i, b| i.remove(&db, b, 200..260));
        assert_eq!(index.ranges().collect::<Vec<_>>(), vec![150..200, 260..300]);
        assert_eq!((index.held(), index.next()), (90, 300));
        step(&mut index, &|i, b| i.remove(&db, b, 0..1000));
        assert_eq!((index.held(), index.next()), (0, 300), "next never goes back");
        assert_eq!(index.sealed_parts(240..260), vec![(240..250, ""), (250..260, "k1")]);
    }

    #[test]
    fn an_index_without_its_completion_mark_is_not_used() {
        let (dir, db) = db();
        assert_eq!(Index::read(&db, dir.path()).unwrap(), None);
        let index = Index::new(std::iter::once(5..10), BTreeMap::new(), 10);
        let mut b = WriteBatch::default();
        index.write_all(&db, &mut b);
        db.write(b).unwrap();
        assert_eq!(Index::read(&db, dir.path()).unwrap(), Some(index));
        let mut b = WriteBatch::default();
        Index::invalidate(&db, &mut b);
        db.write(b).unwrap();
        assert_eq!(Index::read(&db, dir.path()).unwrap(), None);
    }
}
