//! The mutation feed: how replication learns of every change.
//!
//! Every change (set, delete, touch, arithmetic, flush...) is published as the state it left
//! behind, a [`Record`], never as the command. Each store shard owns a [`Ring`] of its
//! records with its own sequence numbers, pushed under the shard lock the writer already
//! holds, so the write path takes no global lock; store-wide records (a flush) go to one
//! events ring, under a mutex of its own, as they are rare. A record is encoded once and
//! every reader (one per peer) shares its buffer.
//!
//! Memory is bounded by each ring's byte cap: the oldest records go first. A reader keeps a
//! [`FeedCursor`], the next sequence number per ring; when a ring has already dropped the
//! record it asks for, the read answers [`Read::Lost`] with exactly which sequence numbers
//! are gone, and the reader resynchronises that shard from a snapshot scan, then continues
//! from where the ring resumes. Nothing is recorded while nobody reads: the write path's only
//! cost then is [`Feed::is_on`], one relaxed load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::record::Record;
use super::version::NodeId;

/// A bounded queue of one shard's records, used under that shard's lock.
#[derive(Debug)]
pub struct Ring {
    recs: VecDeque<Record>,
    /// The sequence number the next record gets (the first is 1): written under the
    /// shard's lock, readable without it ([`Ring::head`]).
    head: Arc<AtomicU64>,
    /// Sum of the kept records' encoded sizes.
    bytes: usize,
    cap: usize,
}

/// How far a read got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Everything before this sequence number has been read; ask for it next.
    Upto(u64),
    /// Records `from..resume` were dropped: resynchronise, then read from `resume`.
    Lost { from: u64, resume: u64 },
}

impl Ring {
    /// A ring keeping at most `cap_bytes` of encoded records (but always the newest one).
    pub fn new(cap_bytes: usize) -> Ring {
        Ring {
            recs: VecDeque::new(),
            head: Arc::new(AtomicU64::new(1)),
            bytes: 0,
            cap: cap_bytes,
        }
    }

    /// Appends `rec` with the next sequence number, which it returns, and drops the oldest
    /// records while over the cap.
    pub fn push(&mut self, rec: Record) -> u64 {
        let seq = self.next_seq();
        self.head.store(seq + 1, Ordering::Release);
        self.bytes += rec.len();
        self.recs.push_back(rec.with_seq(seq));
        self.trim();
        seq
    }

    /// The sequence number the next record will get: where a new reader starts.
    pub fn next_seq(&self) -> u64 {
        // Only the lock holder writes it: a relaxed load sees the latest value.
        self.head.load(Ordering::Relaxed)
    }

    /// The next sequence number as a shared counter: a writer waiting for peers to hold
    /// its change reads every shard's without taking their locks.
    pub fn head(&self) -> Arc<AtomicU64> {
        self.head.clone()
    }

    /// Appends to `out` the records from `from` on, up to `max_bytes` of them but at least
    /// one if any is there. A `from` past the end is a caller's bug, answered as up to date.
    pub fn read(&self, from: u64, max_bytes: usize, out: &mut Vec<Record>) -> Read {
        let first = self.first_seq();
        if from < first {
            return Read::Lost {
                from,
                resume: first,
            };
        }
        let next = self.next_seq();
        if from >= next {
            return Read::Upto(next);
        }
        let mut seq = from;
        let mut used = 0;
        for rec in self.recs.range((from - first) as usize..) {
            if seq > from && used + rec.len() > max_bytes {
                break;
            }
            used += rec.len();
            out.push(rec.clone());
            seq += 1;
        }
        Read::Upto(seq)
    }

    /// Drops every record; sequence numbers carry on, so a reader behind sees `Lost`.
    pub fn clear(&mut self) {
        self.recs.clear();
        self.bytes = 0;
    }

    pub fn set_cap(&mut self, cap_bytes: usize) {
        self.cap = cap_bytes;
        self.trim();
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.recs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }

    /// The sequence number of the oldest record kept (`next` when empty).
    fn first_seq(&self) -> u64 {
        self.next_seq() - self.recs.len() as u64
    }

    fn trim(&mut self) {
        while self.bytes > self.cap && self.recs.len() > 1 {
            if let Some(old) = self.recs.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

/// Called when records wait for a reader that may be asleep.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// At most this many readers at once (one per peer: a mesh of 8 nodes needs 7).
pub const MAX_READERS: usize = 32;

/// One reader's wake-up: its own flags, so a slow reader never holds back another's.
#[derive(Default)]
struct Slot {
    taken: AtomicBool,
    /// Which rings got records since the reader last looked ([`Feed::bit`]): the reader
    /// reads only those, and a writer wakes it only when the mask was empty.
    dirty: AtomicU64,
    waker: Mutex<Option<Waker>>,
    /// The peer this reader sends to ([`NO_PEER`] until said).
    peer: AtomicU32,
}

/// No peer (a reader that has not said whom it reads for, or readers for several).
const NO_PEER: u32 = u32::MAX;

/// The dirty bit of the events ring; shard `i`'s is bit `i % 63`.
pub const EVENTS_BIT: u64 = 1 << 63;

/// The store-wide part of the feed, shared by all shards.
pub struct Feed {
    readers: AtomicUsize,
    slots: Box<[Slot]>,
    /// The one peer every reader sends to, if they all do (else [`NO_PEER`]): a change
    /// that came from it need not be recorded at all, as it would never be sent back.
    sole: AtomicU32,
    /// Held while [`Feed::sole`] is worked out and stored: readers may come and go on
    /// several threads, and a value worked out from an older view of the slots must not
    /// be stored over a newer one.
    finding_sole: Mutex<()>,
    events: Mutex<Ring>,
}

impl Feed {
    /// A feed whose events ring keeps up to `events_cap` bytes.
    pub fn new(events_cap: usize) -> Feed {
        Feed {
            readers: AtomicUsize::new(0),
            slots: (0..MAX_READERS)
                .map(|_| Slot {
                    peer: AtomicU32::new(NO_PEER),
                    ..Slot::default()
                })
                .collect(),
            sole: AtomicU32::new(NO_PEER),
            finding_sole: Mutex::new(()),
            events: Mutex::new(Ring::new(events_cap)),
        }
    }

    /// Whether anyone reads, so writers record their changes.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.readers.load(Ordering::Relaxed) != 0
    }

    /// Takes a reader slot; None when [`MAX_READERS`] read already.
    pub fn attach(&self) -> Option<usize> {
        let slot = self.slots.iter().position(|s| {
            s.taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        self.readers.fetch_add(1, Ordering::Relaxed);
        self.slots[slot].peer.store(NO_PEER, Ordering::Relaxed);
        self.find_sole();
        Some(slot)
    }

    /// Says which peer the reader in `slot` sends to.
    pub fn set_peer(&self, slot: usize, peer: NodeId) {
        self.slots[slot]
            .peer
            .store(u32::from(peer.0), Ordering::Relaxed);
        self.find_sole();
    }

    /// Whether a change from `origin` (None: a client of this node) is to be recorded:
    /// when anyone reads, unless every reader sends to that very peer.
    #[inline]
    pub fn wants(&self, origin: Option<NodeId>) -> bool {
        self.is_on() && origin.is_none_or(|o| self.sole.load(Ordering::Relaxed) != u32::from(o.0))
    }

    /// Recomputes [`Feed::sole`] after a reader came, went or named its peer (rare). A
    /// writer that read the old value skips a record only a reader that attached since
    /// could want; a new reader starts after it (and with a full copy).
    fn find_sole(&self) {
        let _one_at_a_time = self.finding_sole.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers = self
            .slots
            .iter()
            .filter(|s| s.taken.load(Ordering::Acquire))
            .map(|s| s.peer.load(Ordering::Relaxed));
        let sole = match peers.next() {
            Some(first) if peers.all(|p| p == first) => first,
            _ => NO_PEER,
        };
        self.sole.store(sole, Ordering::Relaxed);
    }

    pub fn detach(&self, slot: usize) {
        let s = &self.slots[slot];
        *s.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
        s.dirty.store(0, Ordering::Relaxed);
        // The next reader of this slot must not look, even for a moment, as if it sent
        // to this one's peer.
        s.peer.store(NO_PEER, Ordering::Relaxed);
        s.taken.store(false, Ordering::Release);
        self.readers.fetch_sub(1, Ordering::Relaxed);
        self.find_sole();
    }

    pub fn set_waker(&self, slot: usize, f: Waker) {
        *self.slots[slot]
            .waker
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// The dirty bit of shard `i`'s ring.
    #[inline]
    pub fn bit(shard: usize) -> u64 {
        1 << (shard % 63)
    }

    /// Called by a writer after pushing records into the ring(s) of `bit` and unlocking:
    /// marks them for each reader, and wakes a reader only if it had nothing marked (once
    /// per batch, not per record). A writer that finds its bit set needs no wake-up: the
    /// reader has not taken the mask yet, and after taking it reads those rings under
    /// their lock, which the writer has released.
    pub fn notify(&self, bit: u64) {
        for s in self.slots.iter() {
            if !s.taken.load(Ordering::Relaxed)
                || s.dirty.load(Ordering::Relaxed) & bit != 0
                || s.dirty.fetch_or(bit, Ordering::AcqRel) != 0
            {
                continue;
            }
            let waker = s.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(wake) = waker {
                wake();
            }
        }
    }

    /// Called by the reader before it reads: takes (and clears) the mask of rings written
    /// since it last looked, so the next write wakes it again.
    pub fn take_dirty(&self, slot: usize) -> u64 {
        self.slots[slot].dirty.swap(0, Ordering::AcqRel)
    }

    /// Records a store-wide change (a flush); returns its sequence number.
    pub fn push_event(&self, rec: Record) -> u64 {
        self.events().push(rec)
    }

    pub fn read_events(&self, from: u64, max_bytes: usize, out: &mut Vec<Record>) -> Read {
        self.events().read(from, max_bytes, out)
    }

    /// The sequence number the next event will get.
    pub fn events_next_seq(&self) -> u64 {
        self.events().next_seq()
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a reader is: the next sequence number of each shard's ring and of the events ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor {
    shards: Vec<u64>,
    events: u64,
}

impl FeedCursor {
    pub fn new(shards: Vec<u64>, events: u64) -> FeedCursor {
        FeedCursor { shards, events }
    }

    pub fn shard(&self, i: usize) -> u64 {
        self.shards[i]
    }

    pub fn set_shard(&mut self, i: usize, seq: u64) {
        self.shards[i] = seq;
    }

    pub fn shards(&self) -> &[u64] {
        &self.shards
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn set_events(&mut self, seq: u64) {
        self.events = seq;
    }

    /// Whether a reader here has passed everything before `other`: it is at or past it on
    /// every ring.
    pub fn covers(&self, other: &FeedCursor) -> bool {
        self.events >= other.events
            && self.shards.len() == other.shards.len()
            && self.shards.iter().zip(&other.shards).all(|(a, b)| a >= b)
    }

    /// Sum of every position: compared with [`super::Store::feed_total`], how far behind.
    pub fn total(&self) -> u64 {
        self.shards.iter().sum::<u64>() + self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::version::Version;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU32;

    /// A record of exactly `len` encoded bytes (at least the header).
    fn rec(len: usize) -> Record {
        let r = Record::deleted(b"k", Version::default(), None);
        let value = vec![b'v'; len.saturating_sub(r.len())];
        Record::live(b"k", &value, 0, 0, Version::default(), None)
    }

    fn seqs(out: &[Record]) -> Vec<u64> {
        out.iter().map(Record::seq).collect()
    }

    #[test]
    fn sequence_numbers_start_at_one_and_count_pushes() {
        let mut ring = Ring::new(1 << 20);
        assert_eq!(ring.next_seq(), 1);
        assert_eq!(ring.push(rec(40)), 1);
        assert_eq!(ring.push(rec(40)), 2);
        assert_eq!((ring.next_seq(), ring.len(), ring.bytes()), (3, 2, 80));
        ring.clear();
        assert!(ring.is_empty() && ring.bytes() == 0);
        assert_eq!(ring.push(rec(40)), 3);
    }

    #[test]
    fn the_cap_drops_the_oldest_but_keeps_the_newest() {
        let mut ring = Ring::new(100);
        for _ in 0..3 {
            ring.push(rec(40));
        }
        assert_eq!((ring.len(), ring.bytes()), (2, 80));
        ring.push(rec(500));
        assert_eq!((ring.len(), ring.bytes()), (1, 500));
        let mut out = Vec::new();
        assert_eq!(ring.read(4, 10, &mut out), Read::Upto(5));
        assert_eq!(seqs(&out), [4]);
        ring.push(rec(40));
        assert_eq!((ring.len(), ring.bytes()), (1, 40));
        ring.push(rec(40));
        ring.set_cap(50);
        assert_eq!((ring.len(), ring.bytes()), (1, 40));
    }

    #[test]
    fn reads_from_anywhere_kept() {
        let mut ring = Ring::new(1 << 20);
        for _ in 0..5 {
            ring.push(rec(40));
        }
        let mut out = Vec::new();
        assert_eq!(ring.read(1, usize::MAX, &mut out), Read::Upto(6));
        assert_eq!(seqs(&out), [1, 2, 3, 4, 5]);
        out.clear();
        assert_eq!(ring.read(3, 80, &mut out), Read::Upto(5));
        assert_eq!(seqs(&out), [3, 4]);
        out.clear();
        assert_eq!(ring.read(2, 1, &mut out), Read::Upto(3));
        assert_eq!(seqs(&out), [2]);
        out.clear();
        assert_eq!(ring.read(6, 100, &mut out), Read::Upto(6));
        assert_eq!(ring.read(60, 100, &mut out), Read::Upto(6));
        assert!(out.is_empty());
    }

    #[test]
    fn overflow_reports_exactly_what_was_lost() {
        let mut ring = Ring::new(120);
        for _ in 0..10 {
            ring.push(rec(40));
        }
        let mut out = Vec::new();
        assert_eq!(
            ring.read(2, 1000, &mut out),
            Read::Lost { from: 2, resume: 8 }
        );
        assert!(out.is_empty());
        assert_eq!(ring.read(8, 1000, &mut out), Read::Upto(11));
        assert_eq!(seqs(&out), [8, 9, 10]);
        ring.clear();
        assert_eq!(ring.read(11, 1000, &mut out), Read::Upto(11));
        assert_eq!(
            ring.read(9, 1000, &mut out),
            Read::Lost {
                from: 9,
                resume: 11
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Read(u64, usize),
        Clear,
        SetCap(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (32usize..100).prop_map(Op::Push),
            4 => (0u64..40, 0usize..300).prop_map(|(f, m)| Op::Read(f, m)),
            1 => Just(Op::Clear),
            1 => (0usize..400).prop_map(Op::SetCap),
        ]
    }

    proptest! {
        #[test]
        fn ring_matches_a_model_of_every_record(cap in 0usize..400, ops in prop::collection::vec(op(), 0..60)) {
            let mut ring = Ring::new(cap);
            let mut cap = cap;
            // Every record ever pushed (seq i + 1 at i), and how many of the oldest are gone.
            let mut all: Vec<Record> = Vec::new();
            let mut gone = 0;
            let trim = |all: &[Record], gone: &mut usize, cap: usize| {
                while all.len() - *gone > 1 && all[*gone..].iter().map(Record::len).sum::<usize>() > cap {
                    *gone += 1;
                }
            };
            for op in ops {
                match op {
                    Op::Push(len) => {
                        let r = rec(len);
                        all.push(r.clone().with_seq(all.len() as u64 + 1));
                        prop_assert_eq!(ring.push(r), all.len() as u64);
                        trim(&all, &mut gone, cap);
                    }
                    Op::Clear => {
                        ring.clear();
                        gone = all.len();
                    }
                    Op::SetCap(c) => {
                        ring.set_cap(c);
                        cap = c;
                        trim(&all, &mut gone, cap);
                    }
                    Op::Read(from, max) => {
                        let mut out = vec![rec(0)];
                        let got = ring.read(from, max, &mut out);
                        let next = all.len() as u64 + 1;
                        let (want, read): (&[Record], Read) = if from <= gone as u64 {
                            (&[], Read::Lost { from, resume: gone as u64 + 1 })
                        } else if from >= next {
                            (&[], Read::Upto(next))
                        } else {
                            let rest = &all[from as usize - 1..];
                            let mut n = 1;
                            let mut used = rest[0].len();
                            while n < rest.len() && used + rest[n].len() <= max {
                                used += rest[n].len();
                                n += 1;
                            }
                            (&rest[..n], Read::Upto(from + n as u64))
                        };
                        prop_assert_eq!(got, read);
                        prop_assert_eq!(&out[1..], want);
                    }
                }
                let kept = &all[gone..];
                prop_assert_eq!(ring.len(), kept.len());
                prop_assert_eq!(ring.bytes(), kept.iter().map(Record::len).sum::<usize>());
                prop_assert_eq!(ring.next_seq(), all.len() as u64 + 1);
            }
        }
    }

    #[test]
    fn notify_wakes_once_per_take() {
        let feed = Feed::new(1024);
        let woken = Arc::new(AtomicU32::new(0));
        let w = woken.clone();
        let a = feed.attach().unwrap();
        let b = feed.attach().unwrap();
        feed.notify(1);
        assert_eq!(feed.take_dirty(a), 1, "marked even with no waker");
        feed.set_waker(
            a,
            Arc::new(move || {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        );
        feed.notify(2);
        feed.notify(EVENTS_BIT);
        assert_eq!(woken.load(Ordering::Relaxed), 1, "one wake-up per batch");
        assert_eq!(feed.take_dirty(a), 2 | EVENTS_BIT);
        assert_eq!(feed.take_dirty(a), 0);
        feed.notify(Feed::bit(65));
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        assert_eq!(feed.take_dirty(a), 4, "shard 65 shares shard 2's bit");
        // b's mask is its own: everything since the first write, whatever a did.
        assert_eq!(feed.take_dirty(b), 1 | 2 | 4 | EVENTS_BIT);
    }

    #[test]
    fn is_on_follows_readers() {
        fn shared<T: Send + Sync>(_: &T) {}
        let feed = Feed::new(1024);
        shared(&feed);
        assert!(!feed.is_on());
        let a = feed.attach().unwrap();
        let b = feed.attach().unwrap();
        assert_ne!(a, b);
        feed.detach(a);
        assert!(feed.is_on());
        feed.detach(b);
        assert!(!feed.is_on());
        let all: Vec<_> = (0..MAX_READERS).map(|_| feed.attach()).collect();
        assert!(all.iter().all(Option::is_some));
        assert_eq!(feed.attach(), None, "full");
    }

    #[test]
    fn events_ring_keeps_flushes() {
        let feed = Feed::new(1024);
        let flush = Record::flush(Version::default(), 77, 0, None);
        assert_eq!(feed.events_next_seq(), 1);
        assert_eq!(feed.push_event(flush.clone()), 1);
        let mut out = Vec::new();
        assert_eq!(feed.read_events(1, 0, &mut out), Read::Upto(2));
        assert_eq!(out, [flush.with_seq(1)]);
        assert_eq!(feed.read_events(2, 0, &mut out), Read::Upto(2));

        let mut cur = FeedCursor::new(vec![1; 4], feed.events_next_seq());
        cur.set_shard(2, 9);
        cur.set_events(3);
        assert_eq!(
            (cur.shard(2), cur.events(), cur.shards()),
            (9, 3, &[1, 1, 9, 1][..])
        );
    }
}

#[cfg(test)]
mod sole_tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Readers come and go on several threads: the feed must never skip a peer's changes
    /// while a reader for another peer is attached.
    #[test]
    fn readers_coming_and_going_on_other_threads_never_leave_a_stale_sole_peer() {
        let feed = Arc::new(Feed::new(1 << 10));
        let for_2 = feed.attach().unwrap();
        feed.set_peer(for_2, NodeId(2));
        let stop = Arc::new(AtomicBool::new(false));
        let churn: Vec<_> = (0..2)
            .map(|_| {
                let (feed, stop) = (feed.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let s = feed.attach().unwrap();
                        feed.set_peer(s, NodeId(2));
                        feed.detach(s);
                    }
                })
            })
            .collect();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut stale = 0;
        while std::time::Instant::now() < until && stale == 0 {
            let for_3 = feed.attach().unwrap();
            feed.set_peer(for_3, NodeId(3));
            for _ in 0..200 {
                if !feed.wants(Some(NodeId(2))) {
                    stale += 1;
                }
            }
            feed.detach(for_3);
        }
        stop.store(true, Ordering::Relaxed);
        for t in churn {
            t.join().unwrap();
        }
        assert_eq!(
            stale, 0,
            "node 2's changes skipped while node 3's reader was attached"
        );
    }
}
