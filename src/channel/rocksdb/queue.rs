//! The in-memory state of a `RocksDb` queue: which sequence numbers are available, which are taken,
//! and a bounded cache of recently put events.
//!
//! Nothing here touches the disk. The state is rebuilt from one scan of the keys when the channel
//! opens, so a take never iterates over deleted keys (tombstones): it pops sequence numbers from
//! [`QueueState`] and reads them from the [`Cache`] or, on a miss, from a bounded range of keys.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;

use crate::channel::memory::event_bytes;
use crate::channel::TxnId;
use crate::event::Event;

/// Sequence numbers as ascending, non-overlapping half-open ranges.
pub(super) type Seqs = Vec<Range<u64>>;

/// Available and in-flight sequence numbers of one queue.
///
/// Available numbers are taken from the front, oldest first; a rolled back take goes back to the
/// front, so the queue is FIFO apart from rollbacks.
#[derive(Debug, Default)]
pub(super) struct QueueState {
    available: VecDeque<Range<u64>>,
    available_len: u64,
    in_flight: HashMap<TxnId, Seqs>,
    in_flight_len: u64,
}

fn len(r: &Range<u64>) -> u64 {
    r.end - r.start
}

impl QueueState {
    /// The state of a queue holding exactly `keys` (ascending), none of them taken.
    #[cfg(test)]
    pub fn from_keys(keys: impl IntoIterator<Item = u64>) -> Self {
        let mut state = QueueState::default();
        for k in keys {
            state.append(k..k + 1);
        }
        state
    }

    /// The state of a queue holding exactly `ranges` (ascending, not overlapping), none taken.
    pub fn from_ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut state = QueueState::default();
        for r in ranges {
            state.append(r);
        }
        state
    }

    /// Makes `seqs` available at the back (a committed put).
    pub fn append(&mut self, seqs: Range<u64>) {
        if seqs.is_empty() {
            return;
        }
        self.available_len += len(&seqs);
        match self.available.back_mut() {
            Some(last) if last.end == seqs.start => last.end = seqs.end,
            _ => self.available.push_back(seqs),
        }
    }

    /// Takes up to `max` available numbers from the front into transaction `id`.
    pub fn take(&mut self, id: TxnId, max: u64) -> Seqs {
        let mut taken = Seqs::new();
        let mut want = max;
        while want > 0 {
            let Some(front) = self.available.front_mut() else { break };
            if len(front) <= want {
                want -= len(front);
                taken.push(self.available.pop_front().expect("front exists"));
            } else {
                taken.push(front.start..front.start + want);
                front.start += want;
                want = 0;
            }
        }
        let n = max - want;
        if n > 0 {
            self.available_len -= n;
            self.in_flight_len += n;
            self.in_flight.insert(id, taken.clone());
        }
        taken
    }

    /// Forgets transaction `id`; answers its numbers (to delete), or `None` if unknown.
    pub fn commit(&mut self, id: TxnId) -> Option<Seqs> {
        let seqs = self.in_flight.remove(&id)?;
        self.in_flight_len -= seqs.iter().map(len).sum::<u64>();
        Some(seqs)
    }

    /// Returns transaction `id`'s numbers to the front; answers how many, or `None` if unknown.
    pub fn rollback(&mut self, id: TxnId) -> Option<u64> {
        let seqs = self.in_flight.remove(&id)?;
        let n: u64 = seqs.iter().map(len).sum();
        self.in_flight_len -= n;
        self.available_len += n;
        for r in seqs.into_iter().rev() {
            match self.available.front_mut() {
                Some(first) if first.start == r.end => first.start = r.start,
                _ => self.available.push_front(r),
            }
        }
        Some(n)
    }

    /// Removes `seqs` from transaction `id` (they left the queue, dead-lettered); answers how
    /// many of them the transaction held.
    pub fn forget(&mut self, id: TxnId, seqs: &[u64]) -> u64 {
        let Some(ranges) = self.in_flight.get_mut(&id) else { return 0 };
        let mut removed = 0;
        for &seq in seqs {
            let Some(i) = ranges.iter().position(|r| r.contains(&seq)) else { continue };
            let r = ranges.remove(i);
            let (before, after) = (r.start..seq, seq + 1..r.end);
            if !after.is_empty() {
                ranges.insert(i, after);
            }
            if !before.is_empty() {
                ranges.insert(i, before);
            }
            removed += 1;
        }
        self.in_flight_len -= removed;
        removed
    }

    /// Events available to take.
    pub fn available(&self) -> u64 {
        self.available_len
    }

    /// Events held: available plus taken and not yet committed.
    pub fn held(&self) -> u64 {
        self.available_len + self.in_flight_len
    }
}

/// The most recently put events, by sequence number, at most `max` of them and at most
/// `max_bytes` of their bodies and headers ([`event_bytes`]).
///
/// Puts append at the back; takes remove from (near) the front; when the cache is over either
/// bound, its oldest events are dropped, and a take reads them from the disk instead.
#[derive(Debug)]
pub(super) struct Cache {
    base: u64,
    slots: VecDeque<Option<Event>>,
    held: usize,
    held_bytes: u64,
    max: usize,
    max_bytes: u64,
}

impl Cache {
    /// An empty cache of at most `max` events and `max_bytes` bytes.
    pub fn new(max: usize, max_bytes: u64) -> Self {
        Cache { base: 0, slots: VecDeque::new(), held: 0, held_bytes: 0, max, max_bytes }
    }

    /// Bytes of the events cached.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Caches `events`, numbered from `first` on.
    pub fn insert(&mut self, first: u64, events: Vec<Event>) {
        if self.base + self.slots.len() as u64 != first {
            // Not contiguous with what is cached (only after a failed write): start afresh.
            self.slots.clear();
            self.held = 0;
            self.held_bytes = 0;
            self.base = first;
        }
        self.held += events.len();
        self.held_bytes += events.iter().map(event_bytes).sum::<u64>();
        self.slots.extend(events.into_iter().map(Some));
        while self.held > self.max || self.held_bytes > self.max_bytes {
            if let Some(Some(e)) = self.slots.pop_front() {
                self.held -= 1;
                self.held_bytes -= event_bytes(&e);
            }
            self.base += 1;
        }
        self.trim();
    }

    /// Removes and answers event `seq`, if cached.
    pub fn take(&mut self, seq: u64) -> Option<Event> {
        let index = seq.checked_sub(self.base)?;
        let event = self.slots.get_mut(usize::try_from(index).ok()?)?.take();
        if let Some(e) = &event {
            self.held -= 1;
            self.held_bytes -= event_bytes(e);
            self.trim();
        }
        event
    }

    /// Events cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held
    }

    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() {
            self.held = 0;
            self.held_bytes = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn take_splits_ranges_and_rollback_restores_the_front() {
        let mut q = QueueState::from_keys([3, 4, 5, 9, 10]);
        assert_eq!((q.available(), q.held()), (5, 5));
        assert_eq!(q.take(1, 4), vec![3..6, 9..10]);
        assert_eq!(q.take(2, 4), vec![10..11]);
        assert_eq!((q.available(), q.held()), (0, 5));
        assert_eq!(q.rollback(1), Some(4));
        assert_eq!(q.commit(2), Some(vec![10..11]));
        assert_eq!(q.commit(2), None);
        q.append(11..13);
        assert_eq!(q.take(3, 100), vec![3..6, 9..10, 11..13]);
        assert_eq!(q.held(), 6);
    }

    #[test]
    fn forgotten_numbers_leave_the_transaction() {
        let mut q = QueueState::from_keys(0..10);
        q.take(1, 6);
        assert_eq!(q.forget(1, &[2, 5, 8]), 2, "8 was not taken");
        assert_eq!(q.held(), 8);
        assert_eq!(q.rollback(1), Some(4));
        assert_eq!(q.take(2, 100), vec![0..2, 3..5, 6..10]);
    }

    #[test]
    fn cache_evicts_oldest_and_serves_takes() {
        let event = |i: u64| Event::new(format!("081109 203615 148 INFO dfs.DataNode: block blk_{i}"));
        let mut c = Cache::new(3, u64::MAX);
        c.insert(10, (10..12).map(event).collect());
        assert_eq!(c.take(10), Some(event(10)));
        c.insert(12, (12..15).map(event).collect());
        assert_eq!(c.len(), 3);
        assert_eq!(c.take(11), None, "evicted");
        assert_eq!(c.take(13), Some(event(13)));
        assert_eq!(c.take(13), None);
        assert_eq!(c.take(12), Some(event(12)));
        assert_eq!(c.take(14), Some(event(14)));
        assert_eq!(c.len(), 0);
        c.insert(20, vec![event(20)]);
        assert_eq!(c.take(20), Some(event(20)));
    }

    #[test]
    fn cache_is_bounded_in_bytes_too() {
        let event =
            |i: u64| Event::new(format!("{i:03} 081109 203615 148 INFO dfs.DataNode: ok")).with_header("h", "v");
        let each = event_bytes(&event(0));
        let mut c = Cache::new(100, 3 * each);
        c.insert(0, (0..5).map(event).collect());
        assert_eq!((c.len(), c.bytes()), (3, 3 * each), "the two oldest left");
        assert_eq!(c.take(1), None);
        assert_eq!(c.take(2), Some(event(2)));
        assert_eq!(c.bytes(), 2 * each);
        c.insert(5, vec![event(5)]);
        assert_eq!((c.len(), c.bytes()), (3, 3 * each));
    }
}
