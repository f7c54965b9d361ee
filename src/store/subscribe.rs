//! Reading the mutation feed ([`super::feed`]): a subscriber's cursor over every shard's
//! ring and the events ring, and the writers' side that fills them.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use super::feed::{Feed, FeedCursor, Read, Waker, EVENTS_BIT};
use super::record::Record;
use super::shard::Shard;
use super::version::{Hlc, NodeId, Version};
use super::Store;

/// Records a reader could not get: the ring had already dropped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// The shard whose changes were lost (resync it with [`super::Cursor::of_shard`]); None
    /// for the events ring (flushes).
    pub shard: Option<usize>,
    pub from: u64,
    pub resume: u64,
}

/// What one read of the feed brought.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    pub lost: Vec<Lost>,
}

/// One subscriber's position in the feed. Records are kept for it from the moment it
/// subscribes; dropping it stops that once no reader is left.
pub struct FeedReader {
    store: Store,
    slot: usize,
    cursor: FeedCursor,
    /// Where it started: the feed is continuous from here on (it was on all along).
    base: FeedCursor,
    /// Rings marked written and not yet drained (see [`super::feed::Feed::bit`]).
    todo: u64,
    /// The shard the next read starts at, so a busy shard cannot starve the others.
    start: usize,
}

impl Store {
    /// A reader of every change made from now on (see [`super::feed`]); None when
    /// [`super::feed::MAX_READERS`] read already.
    pub fn subscribe(&self) -> Option<FeedReader> {
        let slot = self.inner.feed.attach()?;
        let cursor = self.feed_head();
        Some(FeedReader {
            store: self.clone(),
            slot,
            base: cursor.clone(),
            cursor,
            // Everything, the first time: writes may have come before the first look.
            todo: u64::MAX,
            start: 0,
        })
    }

    /// Where a reader starting now would start: every change made so far lies before it.
    /// An acknowledged write waits until its peers' readers are past this.
    pub fn feed_head(&self) -> FeedCursor {
        // Unlocked: a change whose writer has returned is in its ring, and its counter was
        // raised before the shard's lock was released.
        FeedCursor::new(
            self.shard_heads().collect(),
            self.inner.feed.events_next_seq(),
        )
    }

    /// Each shard ring's next sequence number.
    fn shard_heads(&self) -> impl Iterator<Item = u64> + '_ {
        self.inner.heads.iter().map(|h| h.load(Ordering::Acquire))
    }

    /// A stamp below every change this node will write from now on: each shard's clock is
    /// read under its lock (a write stamps and records its change under that lock), and a
    /// stamp is at least the wall time it was taken at. A reader that has read all the feed
    /// took after this call has read every change this node wrote stamped below it.
    pub fn stamp_floor(&self) -> u64 {
        let ms = self.inner.clock.unix_ms();
        (0..self.inner.shards.len())
            .map(|i| self.lock(i).hlc.floor(ms))
            .min()
            .unwrap_or(Hlc::stamp_of_ms(ms))
    }

    /// How many records the feed has taken so far, all rings together: a reader whose
    /// [`FeedCursor::total`] is this far behind has that many left to read.
    pub fn feed_total(&self) -> u64 {
        // As `feed_head().total()`, without building the cursor: a link's sender asks
        // after every batch.
        self.shard_heads().sum::<u64>() + self.inner.feed.events_next_seq()
    }

    /// Pushes the item at `loc` into its shard's ring as the state it is now, then unlocks
    /// and wakes the readers. `origin`: the peer the change came from, None for a client.
    pub(super) fn publish_loc(&self, mut shard: MutexGuard<'_, Shard>, loc: u32) {
        let origin = self.local_origin(&mut shard);
        self.publish_from(shard, loc, origin);
    }

    /// Pushes a local delete of `key` at `version` (when anyone reads the feed), then
    /// unlocks and wakes the readers.
    pub(super) fn publish_delete(
        &self,
        mut shard: MutexGuard<'_, Shard>,
        key: &[u8],
        version: Version,
    ) {
        if self.inner.feed.is_on() {
            let origin = self.local_origin(&mut shard);
            self.publish(shard, Record::deleted(key, version, origin));
        }
    }

    /// The origin a local write's record carries: none, or this node itself when a client
    /// chose its stamp (`E`). Such a stamp may be below what this node has told its peers
    /// it has sent of its own writes (`Frame::Covered`), so a peer asked to fill a gap would
    /// not look for it: marked, it is forwarded by every peer, as a change that came
    /// through a third node is (see the replication module's `relay`).
    pub(super) fn local_origin(&self, shard: &mut Shard) -> Option<NodeId> {
        std::mem::take(&mut shard.took_client_stamp).then_some(self.inner.cfg.node)
    }

    pub(super) fn publish_from(
        &self,
        shard: MutexGuard<'_, Shard>,
        loc: u32,
        origin: Option<NodeId>,
    ) {
        if !self.inner.feed.wants(origin) {
            return;
        }
        let rec = Record::of_item(&shard.item(loc), origin);
        self.publish(shard, rec);
    }

    /// Pushes a record built by the caller (a delete that left no marker), unlocks, wakes.
    pub(super) fn publish(&self, mut shard: MutexGuard<'_, Shard>, rec: Record) {
        if self.inner.feed.wants(rec.origin()) {
            shard.ring.push(rec);
            let bit = Feed::bit(shard.id);
            drop(shard);
            self.inner.feed.notify(bit);
        }
    }

    /// Pushes a store-wide record (a flush).
    pub(super) fn publish_event(&self, rec: Record) {
        if self.inner.feed.wants(rec.origin()) {
            self.inner.feed.push_event(rec);
            self.inner.feed.notify(EVENTS_BIT);
        }
    }
}

impl FeedReader {
    /// Reads the records written since the last read, up to about `max_bytes` of them (at
    /// least one if any), shard by shard; lost ranges are reported, and skipped.
    pub fn read(&mut self, max_bytes: usize) -> Batch {
        let mut batch = Batch::default();
        let feed = &self.store.inner.feed;
        self.todo |= feed.take_dirty(self.slot);
        let mut used = 0;
        if self.todo & EVENTS_BIT != 0 {
            let mut from = self.cursor.events();
            let next = read_ring(
                &mut batch,
                None,
                &mut from,
                &mut used,
                max_bytes,
                |f, m, o| feed.read_events(f, m, o),
            );
            self.cursor.set_events(next);
            if next == feed.events_next_seq() {
                self.todo &= !EVENTS_BIT;
            }
        }
        // Only the rings marked since the last read: a write costs its reader one ring's
        // lock, not a visit to every shard.
        let n = self.cursor.shards().len();
        let (mask, mut undrained) = (self.todo & !EVENTS_BIT, 0);
        for step in 0..n {
            let i = (self.start + step) % n;
            let bit = Feed::bit(i);
            if mask & bit == 0 {
                continue;
            }
            if used >= max_bytes && !batch.records.is_empty() {
                self.start = i;
                return batch;
            }
            let mut from = self.cursor.shard(i);
            let shard = self.store.lock(i);
            let next = read_ring(
                &mut batch,
                Some(i),
                &mut from,
                &mut used,
                max_bytes,
                |f, m, o| shard.ring.read(f, m, o),
            );
            let drained = next == shard.ring.next_seq();
            drop(shard);
            self.cursor.set_shard(i, next);
            if !drained {
                // Stopped by the batch's size: the marks stay for the next read.
                undrained |= bit;
            }
        }
        // A bit covers every 63rd shard: it stays while any of them has records left.
        self.todo = (self.todo & !mask) | undrained;
        self.start = (self.start + 1) % n;
        batch
    }

    /// Called (from a writer's thread) when records arrive after [`FeedReader::read`]:
    /// once per batch, not per record.
    pub fn set_waker(&self, f: Waker) {
        self.store.inner.feed.set_waker(self.slot, f);
    }

    /// Says which peer this reader sends to: changes that came from it are then not
    /// recorded while every reader sends to it alone.
    pub fn set_peer(&self, peer: NodeId) {
        self.store.inner.feed.set_peer(self.slot, peer);
    }

    pub fn cursor(&self) -> &FeedCursor {
        &self.cursor
    }

    /// Moves the reader back to `to` (what a peer says it applied), so that what followed is
    /// read again; the rings report what they no longer hold as lost. Refused (false, the
    /// reader unmoved) unless `to` lies between where this reader started and where it is.
    pub fn rewind(&mut self, to: &FeedCursor) -> bool {
        let within = |at: u64, lo: u64, hi: u64| lo <= at && at <= hi;
        let n = self.cursor.shards().len();
        let fits = to.shards().len() == n
            && within(to.events(), self.base.events(), self.cursor.events())
            && (0..n).all(|i| within(to.shard(i), self.base.shard(i), self.cursor.shard(i)));
        if fits {
            self.cursor = to.clone();
            self.todo = u64::MAX;
        }
        fits
    }
}

/// Reads one ring from `from` into `batch` within what is left of `max_bytes`; a lost
/// range is noted and reading goes on from where the ring resumes. Returns the next seq.
fn read_ring(
    batch: &mut Batch,
    shard: Option<usize>,
    from: &mut u64,
    used: &mut usize,
    max_bytes: usize,
    read: impl Fn(u64, usize, &mut Vec<Record>) -> Read,
) -> u64 {
    loop {
        let before = batch.records.len();
        let left = max_bytes.saturating_sub(*used);
        match read(*from, left, &mut batch.records) {
            Read::Upto(next) => {
                *used += batch.records[before..]
                    .iter()
                    .map(Record::len)
                    .sum::<usize>();
                return next;
            }
            Read::Lost { from: lost, resume } => {
                batch.lost.push(Lost {
                    shard,
                    from: lost,
                    resume,
                });
                *from = resume;
            }
        }
    }
}

impl Drop for FeedReader {
    fn drop(&mut self) {
        let feed = &self.store.inner.feed;
        feed.detach(self.slot);
        if !feed.is_on() {
            // Nobody reads: give the records' memory back.
            for i in 0..self.store.inner.shards.len() {
                self.store.lock(i).ring.clear();
            }
        }
    }
}
