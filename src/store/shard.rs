//! One shard: items packed into segments, a compact index over them, and segment eviction.
//!
//! Eviction is S3-FIFO (Yang et al., SOSP '23) by whole segments. Segments belong to one of
//! two queues: probation (a twentieth of the bytes written) takes new items; main holds
//! items read while on probation and keys stored again soon after probation evicted them
//! (a table of ghosts remembers those, see [`super::ghost`]). When memory is full:
//! - a segment at least an eighth dead (deleted, replaced, expired items) is compacted in
//!   place first, evicting nothing;
//! - else, with probation at its share, its oldest segment is drained: items read since
//!   they were stored move to main's active segment, the rest are evicted, and it takes new
//!   items again; main makes room for them by compacting its oldest segment in place
//!   (items read since its last pass stay with their read bit cleared, a second chance as
//!   in CLOCK; the rest go);
//! - with probation under its share, main's oldest segment is drained the same way and
//!   joins probation.
//!
//! Most items of a web cache are stored once and never read again; here they leave after
//! about a twentieth of the cache's turnover instead of all of it, and a scan of new keys only
//! churns probation. Eviction needs no per-item list links and no per-hit bookkeeping
//! beyond one bit.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::deleted::DeletedKeys;
use super::feed::Ring;
use super::flush::Flushes;
use super::forgotten::Forgotten;
use super::ghost::Ghosts;
use super::index::Index;
use super::item::{self, bits, Base, Item, Meta};
use super::record::Record;
use super::segment::{Geometry, SegBuf, Segment};
use super::stats::ShardStats;
use super::version::{Hlc, Version};

/// Hash of a key; the same function picks the shard and the bucket.
pub fn hash_key(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    // A fixed seed: placement is deterministic across runs, which tests and benches like.
    foldhash::fast::FixedState::with_seed(0x5eed_cafe).hash_one(key)
}

/// Asks the CPU to start loading the cache line at `p`; a hint that never faults.
#[inline]
pub(super) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it reads nothing architecturally and cannot fault, whatever
    // the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A segment stops taking new items after this many seconds, so the last-access ages and
/// CAS deltas of its items stay within their short forms.
const ACTIVE_SECS: u32 = 4 * 3600;
/// Last-access ages kept exact across a compaction; older ones are reported as this.
const AGE_KEPT_SECS: u32 = 9 * 3600;

/// Probation's share of the bytes written to a shard's regular segments, in percent, two
/// segments at least (see [`Shard::probation_full`]): with 32 segments, the two decide
/// (a sixteenth). S3-FIFO's small queue is a tenth of the cache; by segments, a tenth had
/// up to 1 % fewer hits on Zipf workloads than this at `-m` 16 and 64, the same at 256,
/// and about the same on a scan.
const SMALL_PERCENT: usize = 5;

/// The two queues of segments: probation for new items, main for those that proved useful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Absent,
    Expired,
    Flushed,
}

/// The shared memory budget a shard draws segments from.
pub struct Budget<'a> {
    pub used: &'a Arc<AtomicUsize>,
    pub limit: usize,
    /// May live items be evicted to make room (`-M` says no).
    pub evict: bool,
    /// Bytes already charged for this operation (room made in other shards), spent by the
    /// first segment it opens, so no concurrent writer can take that room in between.
    pub prepaid: Cell<usize>,
}

impl<'a> Budget<'a> {
    pub fn new(used: &'a Arc<AtomicUsize>, limit: usize, evict: bool) -> Budget<'a> {
        Budget {
            used,
            limit,
            evict,
            prepaid: Cell::new(0),
        }
    }

    /// Charges `n` bytes if they fit the limit now.
    pub fn try_charge(&self, n: usize) -> bool {
        let pre = self.prepaid.get();
        if pre >= n {
            self.prepaid.set(pre - n);
            return true;
        }
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before + n > self.limit {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Gives back whatever of the prepaid room was not spent.
    pub fn refund(&self) {
        self.release(self.prepaid.take());
    }

    /// More is allocated than allowed: the limit was lowered at run time.
    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// No room could be made in this shard; memory may still be freed in others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// Where a snapshot walk is in a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkPos {
    /// Segments created from here on are left out: their items were all written during the
    /// walk, and a walk must end even while writes go on.
    end: u64,
    seq: u64,
    gen: u32,
    off: usize,
}

/// What a walk's visitor did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    Took,
    Skip,
    /// Stop before this item; the walk goes on from it next time.
    Stop,
}

/// Where the background reclaim walk goes on. The offset is only good while the segment is
/// the same one (creation number) in the same state (generation): compaction moves items and
/// a freed id can be reused, and an offset into either would land mid-item.
#[derive(Debug, Clone, Copy, Default)]
struct ReclaimAt {
    id: usize,
    seq: u64,
    gen: u32,
    off: usize,
}

/// What happens to an item when its segment is compacted or freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Dead by TTL or flush (a tombstone past its window included).
    Expire,
    Evict,
}

pub struct Shard {
    geo: Geometry,
    index: Index,
    segs: Vec<Option<Segment>>,
    free_ids: Vec<u32>,
    /// The probation segment new items are appended to.
    active: Option<usize>,
    /// The main segment that items leaving probation, and ghosts come back, are appended to.
    active_main: Option<usize>,
    /// Keys recently evicted from probation.
    pub ghosts: Ghosts,
    /// Snapshot walks in progress over the store (see `Shard::drain`).
    pub walks: Arc<AtomicUsize>,
    next_seq: u64,
    reclaim_at: ReclaimAt,
    pub hlc: Hlc,
    /// The last stamp [`crate::store::Store`] handed a local write was a client's own (`E`):
    /// its change goes out marked (see `Store::local_origin`).
    pub took_client_stamp: bool,
    /// This shard's place in the store.
    pub id: usize,
    /// This shard's changes, for the mutation feed's readers.
    pub ring: Ring,
    /// The flushes this shard has heard of.
    pub flushes: Flushes,
    /// Stamps of the key states this shard dropped, so older ones are not taken back.
    pub forgotten: Forgotten,
    /// The keys of delete markers this shard let go, for peers that missed the deletes.
    pub deleted: DeletedKeys,
    pub stats: ShardStats,
    /// Who hears of each eviction (see [`EvictionWatch`]); every shard holds a clone.
    pub evictions: EvictionWatch,
    /// Bumped whenever an item is marked dead or rewritten in place, or a flush comes in:
    /// what can make a segment's items all dead but the clock.
    changes: u64,
    /// Without eviction, the (second, changes) at which no segment here could be given
    /// back: until one of them moves none can, so a full `-M` store refuses
    /// each write without walking every shard's segments again (that walk cost 80 us a
    /// refused write; memcached refuses in 1).
    barren: Option<(u32, u64)>,
}

/// What an eviction is told to: nothing until the server installs a listener (memcached's
/// `watch evictions`), then each evicted item, while its shard's lock is held.
pub type EvictionWatch = Arc<std::sync::OnceLock<Box<dyn Fn(&Item<'_>) + Send + Sync>>>;

fn key_at(segs: &[Option<Segment>], geo: Geometry, loc: u32) -> &[u8] {
    let (id, off) = geo.split(loc);
    match &segs[id] {
        Some(seg) => seg.key(off),
        None => &[],
    }
}

/// Starts loading the start of the item at `loc`: its header and (most of) its key.
fn warm_item(segs: &[Option<Segment>], geo: Geometry, loc: u32) {
    let (id, off) = geo.split(loc);
    if let Some(Some(seg)) = segs.get(id) {
        let p = seg.buf.as_ptr().wrapping_add(off);
        prefetch_line(p);
        prefetch_line(p.wrapping_add(32));
    }
}

impl Shard {
    pub fn new(geo: Geometry) -> Shard {
        Shard {
            geo,
            index: Index::default(),
            segs: Vec::new(),
            free_ids: Vec::new(),
            active: None,
            active_main: None,
            ghosts: Ghosts::default(),
            walks: Arc::default(),
            next_seq: 1,
            reclaim_at: ReclaimAt::default(),
            hlc: Hlc::default(),
            took_client_stamp: false,
            id: 0,
            ring: Ring::new(0),
            flushes: Flushes::default(),
            forgotten: Forgotten::default(),
            deleted: DeletedKeys::default(),
            evictions: EvictionWatch::default(),
            stats: ShardStats::default(),
            changes: 0,
            barren: None,
        }
    }

    /// The hash index's slots and bytes.
    pub fn index_size(&self) -> (usize, usize) {
        (self.index.slots(), self.index.footprint())
    }

    /// Bytes written to this shard's segments by items no longer there (expired and
    /// reclaimed, deleted, replaced): room that comes back when the segment is compacted.
    pub fn dead_bytes(&self) -> usize {
        self.segs
            .iter()
            .flatten()
            .map(|seg| seg.len.saturating_sub(seg.live_bytes))
            .sum()
    }

    fn seg(&self, id: usize) -> &Segment {
        self.segs[id]
            .as_ref()
            .expect("locations point at open segments")
    }

    fn seg_mut(&mut self, id: usize) -> &mut Segment {
        self.segs[id]
            .as_mut()
            .expect("locations point at open segments")
    }

    /// Location of `key`, live or not.
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let (segs, geo) = (&self.segs, self.geo);
        self.index
            .find(hash, |l| key_at(segs, geo, l) == key)
            .map(|b| self.index.get(b))
    }

    /// Starts loading the memory a lookup of `hash` will touch, one step further each
    /// call (`step` 0: the index, 1: the item), without comparing keys: a multi-key read
    /// issues these for all its keys first, so their cache misses overlap instead of
    /// queueing one after another.
    pub fn prefetch(&self, hash: u64, step: u8) {
        if step == 0 {
            if let Some((ctrl, locs)) = self.index.home_lines(hash) {
                prefetch_line(ctrl);
                prefetch_line(locs);
            }
            return;
        }
        if let Some(loc) = self.index.candidates(hash).next() {
            let (id, off) = self.geo.split(loc);
            if let Some(Some(seg)) = self.segs.get(id) {
                // The header, key and the start of the value: what a reply reads first.
                let p = seg.buf.as_ptr().wrapping_add(off);
                let len = (seg.len - off.min(seg.len)).min(192);
                for at in (0..len).step_by(64) {
                    prefetch_line(p.wrapping_add(at));
                }
            }
        }
    }

    pub fn item(&self, loc: u32) -> Item<'_> {
        let (id, off) = self.geo.split(loc);
        self.seg(id).item(off)
    }

    /// The buffer of the segment that holds `loc` (see [`SegBuf::share`]).
    pub fn buf(&self, loc: u32) -> &SegBuf {
        &self.seg(self.geo.split(loc).0).buf
    }

    pub fn is_flushed(&self, it: &Item<'_>, now: u32) -> bool {
        self.flushes.covers(it.cas, now)
    }

    /// The live item for `key`, removing it if it has expired or been flushed: counted as
    /// memcached's lookup counts it (`get_expired`, `get_flushed`; `reclaimed` and
    /// `expired_unfetched` are for items the reclaimer or eviction finds dead).
    pub fn lookup(&mut self, hash: u64, key: &[u8], now: u32, b: &Budget) -> Result<u32, Miss> {
        self.lookup_as(hash, key, now, b, false)
    }

    /// As [`Shard::lookup`], for a storage command about to put a new item in the key's
    /// place: a dead item found is also `reclaimed`, as memcached's allocation for the new
    /// item counts the dead one it takes the memory of (in a small cache, the one replaced;
    /// memcached's `t/issue_183`).
    pub fn lookup_to_replace(
        &mut self,
        hash: u64,
        key: &[u8],
        now: u32,
        b: &Budget,
    ) -> Result<u32, Miss> {
        self.lookup_as(hash, key, now, b, true)
    }

    #[inline(always)]
    fn lookup_as(
        &mut self,
        hash: u64,
        key: &[u8],
        now: u32,
        b: &Budget,
        replacing: bool,
    ) -> Result<u32, Miss> {
        let loc = self.find(hash, key).ok_or(Miss::Absent)?;
        let it = self.item(loc);
        let bits = it.bits;
        if it.is_tombstone() {
            if it.is_expired(now) || self.is_flushed(&it, now) {
                self.forget(hash, loc, b);
            }
            return Err(Miss::Absent);
        }
        let why = if it.is_expired(now) {
            self.stats.get_expired += 1;
            Miss::Expired
        } else if self.is_flushed(&it, now) {
            self.stats.get_flushed += 1;
            Miss::Flushed
        } else {
            return Ok(loc);
        };
        if replacing {
            self.count_gone(bits, Fate::Expire);
        }
        self.forget(hash, loc, b);
        Err(why)
    }

    /// The version `key` holds, live, deleted or dead but not yet dropped.
    pub fn held_stamp(&self, hash: u64, key: &[u8]) -> Option<u64> {
        self.find(hash, key).map(|loc| self.item(loc).cas)
    }

    /// Drops the item at `loc`, the newest state of its key, remembering its version (see
    /// [`Forgotten`]) and, for a delete marker, its key (see [`DeletedKeys`]).
    pub fn forget(&mut self, hash: u64, loc: u32, b: &Budget) {
        let (id, off) = self.geo.split(loc);
        let seg = self.segs[id]
            .as_ref()
            .expect("locations point at open segments");
        let it = seg.item(off);
        self.forgotten.raise(hash, it.version());
        if it.is_tombstone() {
            self.deleted.push(it.key(), it.version());
        }
        self.remove(hash, loc, b);
    }

    /// A delete of `key` at `version` that leaves no marker (none could be written, or
    /// none is kept): whatever the shard holds of the key goes, and the delete is
    /// remembered: its version, so no older write comes back, and its key, for peers.
    pub fn forget_delete(&mut self, hash: u64, key: &[u8], version: Version, b: &Budget) {
        self.forgotten.raise(hash, version);
        self.deleted.push(key, version);
        self.remove_key(hash, key, b);
    }

    /// Counts an item leaving by expiry or eviction, as memcached does.
    fn count_gone(&mut self, item_bits: u8, fate: Fate) {
        if item_bits & bits::TOMBSTONE != 0 {
            return;
        }
        let fetched = item_bits & bits::FETCHED != 0;
        match fate {
            Fate::Expire => {
                self.stats.reclaimed += 1;
                if !fetched {
                    self.stats.expired_unfetched += 1;
                }
            }
            Fate::Evict => {
                self.stats.evictions += 1;
                if !fetched {
                    self.stats.evicted_unfetched += 1;
                }
            }
            Fate::Keep => {}
        }
    }

    /// Counts an item found dead by TTL or flush by something other than a client's
    /// command (a peer's change), as the reclaimer would.
    pub fn count_expired(&mut self, item_bits: u8) {
        self.count_gone(item_bits, Fate::Expire);
    }

    fn fate(&self, it: &Item<'_>, now: u32, evict: bool) -> Fate {
        if it.is_expired(now) || self.is_flushed(it, now) {
            Fate::Expire
        } else if evict && !it.has(bits::REFERENCED) {
            Fate::Evict
        } else {
            Fate::Keep
        }
    }

    fn count_in(&mut self, tombstone: bool, len: usize) {
        if tombstone {
            self.stats.tombstones += 1;
            self.stats.tombstone_bytes += len as u64;
        } else {
            self.stats.curr_items += 1;
            self.stats.total_items += 1;
            self.stats.bytes += len as u64;
        }
    }

    fn count_out(&mut self, tombstone: bool, len: usize) {
        if tombstone {
            self.stats.tombstones -= 1;
            self.stats.tombstone_bytes -= len as u64;
        } else {
            self.stats.curr_items -= 1;
            self.stats.bytes -= len as u64;
        }
    }

    /// Removes the item at `loc` from the index and marks it dead.
    pub fn remove(&mut self, hash: u64, loc: u32, b: &Budget) {
        if let Some(bk) = self.index.find(hash, |l| l == loc) {
            self.index.remove(bk);
        }
        self.kill(loc, b);
    }

    /// Removes whatever version `key` has now: for after a failed [`Shard::put`], which may
    /// have moved or evicted items while making room, so an earlier location is stale.
    pub fn remove_key(&mut self, hash: u64, key: &[u8], b: &Budget) {
        if let Some(loc) = self.find(hash, key) {
            self.remove(hash, loc, b);
        }
    }

    /// Marks the item at `loc` dead and uncounts it; frees its segment if that empties it.
    fn kill(&mut self, loc: u32, b: &Budget) {
        let (id, off) = self.geo.split(loc);
        let active = self.is_active(id);
        let seg = self.seg_mut(id);
        let (it, f) = item::decode(&seg.buf[off..], seg.base);
        let (tomb, len) = (it.is_tombstone(), f.total());
        // A large segment holds only this item and goes with it, unwritten: a reply may
        // still hold its buffer, and marking it would copy the whole value.
        if !seg.large {
            item::mark_dead(&mut seg.buf[off..]);
        }
        seg.live_items -= 1;
        seg.live_bytes -= len;
        let empty = seg.live_items == 0 && !active;
        self.changes += 1;
        self.count_out(tomb, len);
        if empty {
            self.drop_segment(id, b);
        }
    }

    /// Stores a new item for `key` (replacing any version under it) with the value made of
    /// `parts`. The parts must not point into this shard: making room may move items.
    pub fn put(
        &mut self,
        hash: u64,
        key: &[u8],
        parts: &[&[u8]],
        meta: &Meta,
        now: u32,
        b: &Budget,
    ) -> Result<u32, NoRoom> {
        let vlen = parts.iter().map(|p| p.len()).sum();
        // A key evicted from probation lately that is stored again skips probation (a delete
        // marker leaves its ghost for the next store).
        let queue = if b.evict && !meta.has(bits::TOMBSTONE) && self.ghosts.take(hash) {
            Queue::Main
        } else {
            Queue::Small
        };
        let id = self.reserve((hash, key), vlen, meta, now, b, queue)?;
        let seg = self.seg_mut(id);
        let off = seg.len;
        seg.populate_to(off + item::encoded_len(meta, key.len(), vlen, seg.base));
        let len = item::encode(&mut seg.buf[off..], meta, key, parts, seg.base);
        seg.len += len;
        seg.live_items += 1;
        seg.live_bytes += len;
        let loc = self.geo.loc(id as u32, off);
        self.count_in(meta.has(bits::TOMBSTONE), len);
        let (segs, geo) = (&self.segs, self.geo);
        match self.index.find(hash, |l| key_at(segs, geo, l) == key) {
            Some(bk) => {
                let old = self.index.get(bk);
                self.index.set(bk, loc);
                self.kill(old, b);
            }
            None => self.index.insert(
                hash,
                loc,
                |l| hash_key(key_at(segs, geo, l)),
                |l| warm_item(segs, geo, l),
            ),
        }
        Ok(loc)
    }

    /// As [`Shard::put`], for a changed copy of the same version (new expiry, a rare bit):
    /// not counted as a new item.
    pub fn rewrite(
        &mut self,
        hash: u64,
        key: &[u8],
        value: &[u8],
        meta: &Meta,
        now: u32,
        b: &Budget,
    ) -> Result<u32, NoRoom> {
        let loc = self.put(hash, key, &[value], meta, now, b)?;
        if !meta.has(bits::TOMBSTONE) {
            self.stats.total_items -= 1;
        }
        Ok(loc)
    }

    /// Bytes a new segment for this item takes from the budget: its own size if it is large,
    /// else a regular segment. When [`Shard::put`] says [`NoRoom`] with eviction on, the
    /// shard holds no segment it could reuse, and this much free budget is what it lacks.
    pub fn room_for(&self, klen: usize, vlen: usize, meta: &Meta) -> usize {
        let own = Self::own_len(klen, vlen, meta);
        if own > self.geo.large_min {
            own
        } else {
            self.geo.seg_size
        }
    }

    /// The item's encoded length in a segment of its own.
    fn own_len(klen: usize, vlen: usize, meta: &Meta) -> usize {
        let alone = Base {
            stamp: meta.cas,
            time: meta.atime,
        };
        item::encoded_len(meta, klen, vlen, alone)
    }

    /// Finds a segment of queue `q` with room for an item: its active one, a new one, one
    /// mostly dead compacted, or one made by eviction ([`Shard::evict_for`]). Returns its id.
    fn reserve(
        &mut self,
        (hash, key): (u64, &[u8]),
        vlen: usize,
        meta: &Meta,
        now: u32,
        b: &Budget,
        q: Queue,
    ) -> Result<usize, NoRoom> {
        let klen = key.len();
        let alone = Base {
            stamp: meta.cas,
            time: meta.atime,
        };
        let own = item::encoded_len(meta, klen, vlen, alone);
        if own > self.geo.large_min {
            // The key's current item may be the large segment to go first: an append
            // growing it must not evict it (its write may run again after room is made
            // elsewhere, and would find it gone).
            let keep = self.find(hash, key);
            return self.open_large(own, alone, now, b, keep);
        }
        let fits = |s: &Shard, id: usize| s.fits(id, meta, klen, vlen, now);
        if let Some(a) = self.active_of(q) {
            if fits(self, a) {
                return Ok(a);
            }
        }
        if !b.over() {
            if let Some(id) = self.open_regular(q, now, b) {
                return Ok(id);
            }
            // Room held by items already gone (expired, deleted, replaced) comes back first:
            // a segment of the queue an eighth dead or more is compacted without evicting
            // anything and takes the writes.
            if let Some(id) = self.reuse_dead(q, now) {
                if fits(self, id) {
                    return Ok(id);
                }
            }
            if b.evict {
                if let Some(id) = self.evict_for(q, (meta, klen, vlen), now, b) {
                    return Ok(id);
                }
            }
        }
        // Without eviction (or over a lowered limit): whatever segment compaction or freeing
        // gives room in, oldest first.
        let victims = self.by_age();
        let passes = if b.evict { 2 } else { 1 };
        for _ in 0..passes {
            for &id in &victims {
                if let Some(id) = self.open_regular(q, now, b) {
                    return Ok(id);
                }
                let Some(seg) = &self.segs[id] else { continue };
                // Over a lowered limit, old segments are given back, not reused.
                if seg.large || b.over() {
                    self.try_free(id, now, b);
                    continue;
                }
                if !b.evict && seg.len - seg.live_bytes < own {
                    continue; // compaction would free too little to matter
                }
                self.compact(id, now, b.evict);
                self.set_active(id);
                if fits(self, id) {
                    return Ok(id);
                }
            }
        }
        self.open_regular(q, now, b).ok_or(NoRoom)
    }

    /// Whether the item fits segment `id` now (a segment takes new items for a few hours
    /// only, so its items' short relative fields stay in range).
    fn fits(&self, id: usize, meta: &Meta, klen: usize, vlen: usize, now: u32) -> bool {
        let seg = self.seg(id);
        now.saturating_sub(seg.opened) < ACTIVE_SECS
            && item::encoded_len(meta, klen, vlen, seg.base) <= seg.room()
    }

    fn active_of(&self, q: Queue) -> Option<usize> {
        match q {
            Queue::Small => self.active,
            Queue::Main => self.active_main,
        }
    }

    fn is_active(&self, id: usize) -> bool {
        self.active == Some(id) || self.active_main == Some(id)
    }

    /// Makes segment `id` the active one of its queue.
    fn set_active(&mut self, id: usize) {
        let main = self.seg(id).main;
        let (this, other) = if main {
            (&mut self.active_main, &mut self.active)
        } else {
            (&mut self.active, &mut self.active_main)
        };
        *this = Some(id);
        if *other == Some(id) {
            *other = None;
        }
    }

    /// Ids of the open segments `key` picks, in the order of their keys.
    fn ordered<K: Ord>(&self, key: impl Fn(&Segment) -> Option<K>) -> Vec<usize> {
        let mut ids: Vec<(K, usize)> = self
            .segs
            .iter()
            .enumerate()
            .filter_map(|(id, s)| Some((key(s.as_ref()?)?, id)))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Regular segments of one queue, oldest first.
    fn queue_by_age(&self, q: Queue) -> Vec<usize> {
        let main = q == Queue::Main;
        self.ordered(|s| (!s.large && s.main == main).then_some(s.age))
    }

    /// The large segment counted oldest, other than `except`.
    fn oldest_large(&self, except: Option<usize>) -> Option<usize> {
        self.ordered(|s| s.large.then_some(s.age))
            .into_iter()
            .find(|&id| Some(id) != except)
    }

    /// Evicts to make room in queue `q`, S3-FIFO's way, by whole segments. For a new item:
    /// - probation holding at least its share of the bytes written to segments (a twentieth),
    ///   or no main segment: probation's oldest segment is drained (`Shard::drain`):
    ///   items read since they were stored move to the main queue, the rest are evicted,
    ///   and it takes new items again. While main is under its share it grows instead of
    ///   evicting: when its active segment is full, the drained segment joins it with the
    ///   read items kept in place;
    /// - probation under its share: the main queue's oldest segment is drained the same way
    ///   (items read since its last pass move to main's active segment with their read bit
    ///   cleared: CLOCK's second chance; the rest are evicted) and joins probation.
    ///
    /// For an item that skips probation: with probation at its share, probation's oldest
    /// segment is drained and joins main (main grows); under it, main makes room
    /// ([`Shard::main_room`]).
    ///
    /// So an item stored once and never read again leaves after about a twentieth of the
    /// cache's turnover instead of all of it, a scan of new keys only churns probation, and
    /// when few items are read again main shrinks and probation grows into its room.
    /// Returns a segment of `q` (rarely of the other queue) with room for the item.
    fn evict_for(
        &mut self,
        q: Queue,
        (meta, klen, vlen): (&Meta, usize, usize),
        now: u32,
        b: &Budget,
    ) -> Option<usize> {
        self.ghosts.fit(self.stats.curr_items as usize);
        if let Some(id) = self.evict_large(now, b, q) {
            return Some(id);
        }
        if q == Queue::Main {
            // Main evicts only at its share; under it, it grows by a probation segment.
            let small = self.queue_by_age(Queue::Small);
            if !self.probation_full() || small.is_empty() {
                return self.main_room(meta, klen, vlen, now, b, true);
            }
            let id = small[0];
            self.drain(id, now, b, false);
            self.seg_mut(id).main = true;
            self.set_active(id);
            if self.fits(id, meta, klen, vlen, now) {
                return Some(id);
            }
            return self.main_room(meta, klen, vlen, now, b, true);
        }
        for _ in 0..=2 * self.segs.len() {
            if let Some(id) = self.evict_large(now, b, q) {
                return Some(id);
            }
            let full = self.probation_full();
            let main = self.queue_by_age(Queue::Main);
            let id = if full || main.is_empty() {
                let &id = self.queue_by_age(Queue::Small).first()?;
                if !self.drain(id, now, b, !full) {
                    self.seg_mut(id).main = true;
                    self.set_active(id);
                    continue;
                }
                id
            } else {
                let id = main[0];
                if !self.drain(id, now, b, true) {
                    self.set_active(id);
                    continue;
                }
                self.seg_mut(id).main = false;
                id
            };
            self.set_active(id);
            if self.fits(id, meta, klen, vlen, now) {
                return Some(id);
            }
        }
        None
    }

    /// A large segment whose item was read since it was stored or last passed: spends the
    /// read bit and makes the segment count as new. False if the item was not read.
    fn second_chance(&mut self, id: usize) -> bool {
        let seq = self.bump_seq();
        let seg = self.seg_mut(id);
        let base = seg.base;
        let Some((_, it, _)) = seg.next_live(0) else {
            return false;
        };
        if !it.has(bits::REFERENCED) {
            return false;
        }
        let (kept, atime) = (it.bits & !bits::REFERENCED, it.atime);
        item::set_bits_and_atime(&mut seg.buf, kept, atime, base);
        seg.age = seq;
        true
    }

    /// Large items (a segment each) wait as probation's do: while the oldest large segment
    /// is older than every probation segment, it is freed if its item was not read since
    /// it was stored or last passed, else its read bit is spent and it counts as new (a
    /// second chance). Returns a new segment of queue `q` opened in the room freed.
    fn evict_large(&mut self, now: u32, b: &Budget, q: Queue) -> Option<usize> {
        let oldest_small = self
            .queue_by_age(Queue::Small)
            .first()
            .map_or(u64::MAX, |&id| self.seg(id).age);
        loop {
            let id = self.oldest_large(None)?;
            if self.seg(id).age > oldest_small {
                return None;
            }
            if self.second_chance(id) {
                continue;
            }
            self.try_free(id, now, b);
            if let Some(id) = self.open_regular(q, now, b) {
                return Some(id);
            }
        }
    }

    /// Whether probation holds at least its share of the bytes written to the shard's
    /// regular segments, in two segments at least: the one taking new items and one on its
    /// way out, so every item gets at least a segment's worth of writes to be read again.
    fn probation_full(&self) -> bool {
        let (mut small, mut all, mut n, mut regular) = (0, 0, 0, 0usize);
        for seg in self.segs.iter().flatten().filter(|s| !s.large) {
            all += seg.len;
            regular += 1;
            if !seg.main {
                small += seg.len;
                n += 1;
            }
        }
        // A shard of very few segments leaves one to main.
        small * 100 >= all * SMALL_PERCENT && n >= 2.min(regular.saturating_sub(1))
    }

    /// Empties segment `id` (of either queue): items read since they were stored, or since
    /// its last pass, move to the main queue's active segment, the others are evicted (and
    /// remembered as ghosts if they were on probation). The only place an item changes
    /// segment. True when the segment emptied and was made ready for new items; false when
    /// main had no room left (it may evict for room only if `main_may_evict`), and those
    /// left were compacted in place instead.
    fn drain(&mut self, id: usize, now: u32, b: &Budget, main_may_evict: bool) -> bool {
        let Some(mut seg) = self.segs[id].take() else {
            return false;
        };
        // Out of the table while it empties: no longer anyone's active segment.
        self.deactivate(id);
        let mut off = 0;
        while let Some((o, it, f)) = seg.next_live(off) {
            off = o + f.total();
            let fate = self.fate(&it, now, true);
            let loc = self.geo.loc(id as u32, o);
            let tomb = it.is_tombstone();
            if fate == Fate::Keep {
                let mut meta = it.meta();
                meta.clear(bits::REFERENCED);
                let Some(dst) = self.main_room(&meta, f.klen, f.vlen, now, b, main_may_evict)
                else {
                    break;
                };
                let d = self.seg_mut(dst);
                let at = d.len;
                d.populate_to(at + item::encoded_len(&meta, f.klen, f.vlen, d.base));
                let len = item::encode(&mut d.buf[at..], &meta, it.key(), &[it.value()], d.base);
                d.len += len;
                d.live_items += 1;
                d.live_bytes += len;
                let hash = hash_key(it.key());
                let moved = self.geo.loc(dst as u32, at);
                if let Some(bk) = self.index.find(hash, |l| l == loc) {
                    self.index.set(bk, moved);
                }
                // A snapshot walk sees an item once if it stays in its segment; one moved
                // to another segment (behind the walk, or one opened after it began) may be
                // missed, so while a walk runs its state goes to the feed, which the walk's
                // reader receives after the snapshot.
                if self.walks.load(Ordering::Relaxed) > 0 {
                    let rec = Record::of_item(&self.item(moved), None);
                    self.ring.push(rec);
                }
                self.count_in(tomb, len);
                self.count_out(tomb, f.total());
                if !tomb {
                    self.stats.total_items -= 1;
                }
            } else {
                self.let_go(&it, loc, f.total(), fate, !seg.main);
            }
            item::mark_dead(&mut seg.buf[o..]);
            seg.live_items -= 1;
            seg.live_bytes -= f.total();
            self.changes += 1;
        }
        let emptied = seg.live_items == 0;
        self.segs[id] = Some(seg);
        // Emptied, this only resets it for new items.
        self.compact(id, now, true);
        emptied
    }

    /// A main segment with room for an item: the active one, a new one, one mostly dead
    /// compacted, or, if `may_evict`, the oldest main segment compacted (evicting its items
    /// not read since its last pass); None if none has room.
    fn main_room(
        &mut self,
        meta: &Meta,
        klen: usize,
        vlen: usize,
        now: u32,
        b: &Budget,
        may_evict: bool,
    ) -> Option<usize> {
        if let Some(a) = self.active_main {
            if self.fits(a, meta, klen, vlen, now) {
                return Some(a);
            }
        }
        if let Some(id) = self.open_regular(Queue::Main, now, b) {
            return Some(id);
        }
        if let Some(id) = self.reuse_dead(Queue::Main, now) {
            if self.fits(id, meta, klen, vlen, now) {
                return Some(id);
            }
        }
        if !may_evict {
            return None;
        }
        for id in self.queue_by_age(Queue::Main) {
            self.compact(id, now, true);
            self.set_active(id);
            if self.fits(id, meta, klen, vlen, now) {
                return Some(id);
            }
        }
        None
    }

    /// Compacts queue `q`'s segment most dead ([`Shard::mostly_dead`]) without evicting
    /// anything and makes it the queue's active one; its id.
    fn reuse_dead(&mut self, q: Queue, now: u32) -> Option<usize> {
        let id = self.mostly_dead(q)?;
        self.compact(id, now, false);
        self.set_active(id);
        Some(id)
    }

    /// The regular segment of queue `q`, other than an active one, holding the most room of
    /// items already gone, if that is at least an eighth of a segment (compacting it moves
    /// at most seven bytes for each one it gives back).
    fn mostly_dead(&self, q: Queue) -> Option<usize> {
        let eighth = self.geo.seg_size / 8;
        let main = q == Queue::Main;
        self.segs
            .iter()
            .enumerate()
            .filter(|&(id, _)| !self.is_active(id))
            .filter_map(|(id, seg)| {
                let seg = seg.as_ref().filter(|seg| !seg.large && seg.main == main)?;
                let dead = seg.len.saturating_sub(seg.live_bytes);
                (dead >= eighth).then_some((dead, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    fn can_open(&self) -> bool {
        !self.free_ids.is_empty() || self.segs.len() < self.geo.max_segments()
    }

    fn open_regular(&mut self, q: Queue, now: u32, b: &Budget) -> Option<usize> {
        if !(self.can_open() && b.try_charge(self.geo.seg_size)) {
            return None;
        }
        let mut base = Base {
            stamp: self.hlc.last(),
            time: now,
        };
        if q == Queue::Main {
            // Items come here from probation: counting from its oldest segment's base keeps
            // their CAS in the short form and their last access exact.
            for seg in self.segs.iter().flatten().filter(|s| !s.main && !s.large) {
                base.stamp = base.stamp.min(seg.base.stamp);
                base.time = base.time.min(seg.base.time);
            }
            base.time = base.time.max(now.saturating_sub(AGE_KEPT_SECS));
        }
        let mut seg = Segment::new(self.geo.seg_size, self.bump_seq(), base, now);
        seg.main = q == Queue::Main;
        let id = self.install(seg);
        self.set_active(id);
        Some(id)
    }

    fn open_large(
        &mut self,
        size: usize,
        base: Base,
        now: u32,
        b: &Budget,
        keep: Option<u32>,
    ) -> Result<usize, NoRoom> {
        for _ in 0..=3 * self.segs.len() + 1 {
            if self.can_open() && b.try_charge(size) {
                let seg = Segment::large(size, self.bump_seq(), base, now, b.used.clone());
                return Ok(self.install(seg));
            }
            if !self.free_for_large(now, b, keep) {
                break;
            }
        }
        Err(NoRoom)
    }

    /// Frees room for a large item: large items compete among themselves first (the oldest
    /// goes unless read since it was stored or last passed: then its read bit is spent and
    /// it counts as new), then probation's oldest segment, then main's, each drained first
    /// so their read items move on. Without eviction, or over a lowered limit, segments go
    /// whole, oldest first, probation before main. False when nothing more can go.
    fn free_for_large(&mut self, now: u32, b: &Budget, keep: Option<u32>) -> bool {
        if !b.evict || b.over() {
            return self.release_oldest(now, b, keep);
        }
        let kept = keep.map(|loc| self.geo.split(loc).0);
        if let Some(id) = self.oldest_large(kept) {
            return self.second_chance(id) || self.try_free(id, now, b);
        }
        let full = self.probation_full();
        let (id, main_may_evict) = match self.queue_by_age(Queue::Small).first() {
            Some(&id) => (id, !full),
            None => match self.queue_by_age(Queue::Main).first() {
                Some(&id) => (id, true),
                None => return false,
            },
        };
        if self.drain(id, now, b, main_may_evict) {
            self.drop_segment(id, b);
        } else {
            self.seg_mut(id).main = true;
        }
        true
    }

    fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn install(&mut self, seg: Segment) -> usize {
        match self.free_ids.pop() {
            Some(id) => {
                self.segs[id as usize] = Some(seg);
                id as usize
            }
            None => {
                self.segs.push(Some(seg));
                self.segs.len() - 1
            }
        }
    }

    /// Open segments, oldest first.
    fn by_age(&self) -> Vec<usize> {
        self.ordered(|s| Some(s.age))
    }

    fn drop_segment(&mut self, id: usize, b: &Budget) {
        if let Some(seg) = self.segs[id].take() {
            // A large segment's buffer gives its room back itself, once no reply holds it.
            if !seg.large {
                b.release(seg.buf.len());
            }
            self.free_ids.push(id as u32);
        }
        self.deactivate(id);
    }

    /// Segment `id` is no longer either queue's active one.
    fn deactivate(&mut self, id: usize) {
        if self.active == Some(id) {
            self.active = None;
        }
        if self.active_main == Some(id) {
            self.active_main = None;
        }
    }

    /// Frees a whole segment, evicting its items; without eviction only if none is live.
    fn try_free(&mut self, id: usize, now: u32, b: &Budget) -> bool {
        let Some(seg) = self.segs[id].take() else {
            return false;
        };
        let mut off = 0;
        if !b.evict {
            while let Some((o, it, f)) = seg.next_live(off) {
                if self.fate(&it, now, false) == Fate::Keep {
                    self.segs[id] = Some(seg);
                    return false;
                }
                off = o + f.total();
            }
            off = 0;
        }
        while let Some((o, it, f)) = seg.next_live(off) {
            let fate = match self.fate(&it, now, true) {
                Fate::Keep => Fate::Evict,
                other => other,
            };
            self.let_go(&it, self.geo.loc(id as u32, o), f.total(), fate, false);
            off = o + f.total();
        }
        self.segs[id] = Some(seg);
        self.drop_segment(id, b);
        true
    }

    /// Takes a live or deleted item (`len` bytes at `loc`) out of the shard while its
    /// segment is emptied or compacted: out of the index, its stamp remembered (see
    /// [`Forgotten`]) and a marker's key too (see [`DeletedKeys`]), counted as gone by
    /// `fate`, and, evicted from probation, remembered as a ghost.
    fn let_go(&mut self, it: &Item<'_>, loc: u32, len: usize, fate: Fate, probation: bool) {
        let hash = hash_key(it.key());
        let tomb = it.is_tombstone();
        if fate == Fate::Evict && probation && !tomb {
            self.ghosts.insert(hash);
        }
        if fate == Fate::Evict && !tomb {
            if let Some(tell) = self.evictions.get() {
                tell(it);
            }
        }
        self.count_gone(it.bits, fate);
        self.count_out(tomb, len);
        self.forgotten.raise(hash, it.version());
        if tomb {
            self.deleted.push(it.key(), it.version());
        }
        if let Some(bk) = self.index.find(hash, |l| l == loc) {
            self.index.remove(bk);
        }
    }

    /// Compacts segment `id` in place: dead and expired items go, so do unread ones when
    /// `evict`; the rest slide down and are re-indexed, and when `evict` lose their read bit
    /// (their second chance spent). The segment then counts as the newest.
    fn compact(&mut self, id: usize, now: u32, evict: bool) {
        let Some(mut seg) = self.segs[id].take() else {
            return;
        };
        // First pass: the new base is the oldest survivor's, so no header grows.
        let (mut min_cas, mut min_atime, mut any) = (u64::MAX, u32::MAX, false);
        let mut off = 0;
        while let Some((o, it, f)) = seg.next_live(off) {
            if self.fate(&it, now, evict) == Fate::Keep {
                min_cas = min_cas.min(it.cas);
                min_atime = min_atime.min(it.atime);
                any = true;
            }
            off = o + f.total();
        }
        let old = seg.base;
        let base = if any {
            Base {
                stamp: old.stamp.max(min_cas),
                time: min_atime.max(now.saturating_sub(AGE_KEPT_SECS)),
            }
        } else {
            Base {
                stamp: self.hlc.last(),
                time: now,
            }
        };
        let (mut rd, mut wr) = (0, 0);
        let (mut items, mut bytes) = (0, 0);
        while let Some((o, it, f)) = seg.next_live(rd) {
            let fate = self.fate(&it, now, evict);
            let old_loc = self.geo.loc(id as u32, o);
            rd = o + f.total();
            if fate != Fate::Keep {
                self.let_go(&it, old_loc, f.total(), fate, !seg.main);
                continue;
            }
            let mut meta = it.meta();
            if evict {
                meta.clear(bits::REFERENCED);
            }
            let hash = hash_key(it.key());
            let tomb = it.is_tombstone();
            let len = item::encoded_len(&meta, f.klen, f.vlen, base);
            let header = len - f.klen - f.vlen;
            seg.buf
                .copy_within(o + f.key_at..o + f.total(), wr + header);
            item::rewrite_at(&mut seg.buf[wr..], &meta, f.klen, f.vlen, base);
            let new_loc = self.geo.loc(id as u32, wr);
            if new_loc != old_loc {
                if let Some(bk) = self.index.find(hash, |l| l == old_loc) {
                    self.index.set(bk, new_loc);
                }
            }
            self.count_out(tomb, f.total());
            self.count_in(tomb, len);
            if !tomb {
                self.stats.total_items -= 1;
            }
            wr += len;
            items += 1;
            bytes += len;
        }
        seg.len = wr;
        seg.live_items = items;
        seg.live_bytes = bytes;
        seg.base = base;
        seg.age = self.bump_seq();
        seg.gen = seg.gen.wrapping_add(1);
        seg.opened = now;
        self.segs[id] = Some(seg);
    }

    /// Frees a segment for a write in another shard (or a retried write in this one),
    /// probation's oldest first, then large ones and main's, oldest first, never the one
    /// holding `keep` (the item the write changes: an append retried after room was made
    /// must still find it); false if none can go.
    pub fn release_oldest(&mut self, now: u32, b: &Budget, keep: Option<u32>) -> bool {
        let state = (now, self.changes);
        if !b.evict && self.barren == Some(state) {
            return false;
        }
        let kept = keep.map(|loc| self.geo.split(loc).0);
        let freed = self
            .victims()
            .into_iter()
            .filter(|&id| Some(id) != kept)
            .any(|id| self.try_free(id, now, b));
        if !freed && !b.evict && kept.is_none() {
            self.barren = Some(state);
        }
        freed
    }

    /// A flush came in: items it covers may fill whole segments now.
    pub fn note_flush(&mut self) {
        self.changes += 1;
    }

    /// Segments to free whole, in order: probation's and large ones, oldest first, then
    /// main's, so the items that proved useful go last.
    fn victims(&self) -> Vec<usize> {
        self.ordered(|s| Some((s.main, s.age)))
    }

    /// Sets the client bits and last access of the item at `loc` (a read); false if the
    /// item has no room for the bits and must be written anew.
    pub fn mark_read(&mut self, loc: u32, bits: u8, atime: u32) -> bool {
        let (id, off) = self.geo.split(loc);
        let seg = self.seg_mut(id);
        if seg.buf.is_held() {
            // A large value a reply is still sending keeps its read bits and access time
            // for now: writing them would copy the whole value.
            return true;
        }
        let base = seg.base;
        item::set_bits_and_atime(&mut seg.buf[off..], bits, atime, base)
    }

    /// Rewrites the item's fields in place; false if they need a different layout, and the
    /// item must be written anew with [`Shard::put`].
    pub fn update(&mut self, loc: u32, meta: &Meta) -> bool {
        let (id, off) = self.geo.split(loc);
        if self.seg_mut(id).buf.is_held() {
            // A reply still sends the value: written anew (see `overwrite`).
            return false;
        }
        self.changes += 1;
        let seg = self.seg_mut(id);
        let base = seg.base;
        item::rewrite_header(&mut seg.buf[off..], meta, base)
    }

    /// A new version with a value of the same length written over the old one, when the
    /// layout allows: no new space, no index change. Counts as a new item, as memcached does.
    pub fn overwrite(&mut self, loc: u32, value: &[u8], meta: &Meta) -> bool {
        let (id, off) = self.geo.split(loc);
        if self.seg_mut(id).buf.is_held() {
            // A reply still sends the old value: written anew, the old buffer stays the
            // reply's and counted, where an overwrite would copy it first.
            return false;
        }
        self.changes += 1;
        let seg = self.seg_mut(id);
        let base = seg.base;
        if !item::overwrite(&mut seg.buf[off..], meta, value, base) {
            return false;
        }
        self.stats.total_items += 1;
        true
    }

    /// The value bytes of the item at `loc`, to change in place (incr, overwrite).
    pub fn value_mut(&mut self, loc: u32) -> &mut [u8] {
        let (id, off) = self.geo.split(loc);
        let seg = self.seg_mut(id);
        let f = item::fields(&seg.buf[off..]);
        &mut seg.buf[off + f.value_at()..off + f.total()]
    }

    /// Folds the delayed flushes due by `now` into the flushed floor and orders this shard's
    /// later stamps after them. A peer's delayed flush may come due here a little before
    /// this node's wall clock reaches its stamp (the two nodes' seconds start apart): a
    /// write made after it took effect must not be stamped below it and vanish as flushed.
    pub fn settle_flushes(&mut self, now: u32) {
        self.flushes.settle(now);
        self.hlc.observe(self.flushes.below());
    }

    /// Walks up to `budget` items from where the last walk stopped and drops dead ones, so
    /// expired data does not hold memory until someone asks for it. Returns items dropped.
    pub fn reclaim(&mut self, budget: usize, now: u32, b: &Budget) -> usize {
        self.settle_flushes(now);
        let mut dropped = 0;
        let mut visited = 0;
        let at = self.reclaim_at;
        let (mut id, mut off) = (at.id, 0);
        if let Some(Some(seg)) = self.segs.get(id) {
            if (seg.seq, seg.gen) == (at.seq, at.gen) {
                off = at.off;
            }
        }
        let mut segs_seen = 0;
        while visited < budget && segs_seen <= self.segs.len() {
            if id >= self.segs.len() {
                (id, off) = (0, 0);
                segs_seen += 1;
                continue;
            }
            let next = self.segs[id].as_ref().and_then(|s| {
                let (o, it, f) = s.next_live(off)?;
                let fate = self.fate(&it, now, false);
                Some((o, o + f.total(), fate, it.bits, hash_key(it.key())))
            });
            let Some((o, end, fate, item_bits, hash)) = next else {
                (id, off) = (id + 1, 0);
                segs_seen += 1;
                continue;
            };
            visited += 1;
            off = end;
            if fate == Fate::Expire {
                let loc = self.geo.loc(id as u32, o);
                self.count_gone(item_bits, Fate::Expire);
                self.forget(hash, loc, b);
                dropped += 1;
            }
        }
        let (seq, gen) = match self.segs.get(id) {
            Some(Some(seg)) => (seg.seq, seg.gen),
            _ => (0, 0),
        };
        self.reclaim_at = ReclaimAt { id, seq, gen, off };
        dropped
    }

    /// Hands `f` the items (live or deleted) from walk position `from` on, until it says
    /// stop; returns where to go on, or None at the end. Segments are visited in creation
    /// order. Compaction moves items only within their segment and bumps its generation,
    /// and a walk that finds the generation of its segment changed reads it again from the
    /// start, so an item present for the whole walk is seen at least once.
    pub fn visit(
        &self,
        from: WalkPos,
        mut f: impl FnMut(&Shard, &Item<'_>) -> Walk,
    ) -> Option<WalkPos> {
        let mut pos = from;
        if pos.end == 0 {
            pos.end = self.next_seq + 1;
        }
        loop {
            let next = self
                .segs
                .iter()
                .flatten()
                .filter(|s| s.seq >= pos.seq && s.seq < pos.end)
                .min_by_key(|s| s.seq)?;
            if (next.seq, next.gen) != (pos.seq, pos.gen) {
                (pos.seq, pos.gen, pos.off) = (next.seq, next.gen, 0);
            }
            while let Some((o, it, fl)) = next.next_live(pos.off) {
                if f(self, &it) == Walk::Stop {
                    pos.off = o;
                    return Some(pos);
                }
                pos.off = o + fl.total();
            }
            (pos.seq, pos.off) = (pos.seq + 1, 0);
        }
    }

    /// When the items of the next segment to evict were last read, at the earliest.
    pub fn eviction_front_time(&self) -> Option<u32> {
        let seg = self.segs.iter().flatten().min_by_key(|s| s.age)?;
        Some(seg.base.time)
    }

    /// Segments open now.
    pub fn segment_count(&self) -> usize {
        self.segs.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn budget(used: &Arc<AtomicUsize>, limit: usize) -> Budget<'_> {
        Budget::new(used, limit, true)
    }

    pub(super) fn put(s: &mut Shard, key: &[u8], value: &[u8], b: &Budget) -> u32 {
        let meta = Meta::new(0, 0, 2);
        s.put(hash_key(key), key, &[value], &meta, 2, b).unwrap()
    }

    pub(super) fn small() -> Shard {
        Shard::new(Geometry::for_shard_budget(16 << 10))
    }

    #[test]
    fn put_find_remove_keeps_accounting() {
        let used = Arc::<AtomicUsize>::default();
        let b = budget(&used, 1 << 20);
        let mut s = small();
        let a = put(&mut s, b"a", b"1", &b);
        put(&mut s, b"b", b"2", &b);
        assert_eq!(s.stats.curr_items, 2);
        assert_eq!(s.find(hash_key(b"a"), b"a"), Some(a));
        let a2 = put(&mut s, b"a", b"3", &b);
        assert_ne!(a, a2, "a new version is appended");
        assert_eq!(s.item(a2).value(), b"3");
        assert_eq!(s.stats.curr_items, 2);
        s.remove(hash_key(b"a"), a2, &b);
        assert_eq!(s.find(hash_key(b"a"), b"a"), None);
        assert_eq!(s.stats.curr_items, 1);
        s.remove(hash_key(b"b"), s.find(hash_key(b"b"), b"b").unwrap(), &b);
        assert_eq!(s.stats.bytes, 0);
        assert_eq!(
            used.load(Ordering::Relaxed),
            4096,
            "the active segment stays"
        );
    }

    #[test]
    fn full_shard_evicts_unread_items_and_keeps_read_ones() {
        let used = Arc::<AtomicUsize>::default();
        let b = budget(&used, 2 * 4096);
        let mut s = small();
        let value = [b'x'; 100];
        for i in 0..60u32 {
            put(&mut s, format!("k{i}").as_bytes(), &value, &b);
        }
        // k0 is read, so it survives the first pass over its segment.
        let k0 = s.find(hash_key(b"k0"), b"k0").unwrap();
        assert!(s.mark_read(k0, bits::REFERENCED | bits::FETCHED, 3));
        for i in 60..120u32 {
            put(&mut s, format!("k{i}").as_bytes(), &value, &b);
            assert!(used.load(Ordering::Relaxed) <= 2 * 4096);
        }
        assert!(s.stats.evictions > 0);
        assert!(s.find(hash_key(b"k0"), b"k0").is_some(), "read item kept");
        assert!(
            s.find(hash_key(b"k1"), b"k1").is_none(),
            "unread old item evicted"
        );
        assert!(s.find(hash_key(b"k119"), b"k119").is_some());
        let it = s.item(s.find(hash_key(b"k0"), b"k0").unwrap());
        assert_eq!((it.value(), it.atime), (&value[..], 3));
        assert!(!it.has(bits::REFERENCED), "the read bit is spent");
        assert_eq!(s.stats.curr_items + s.stats.evictions, 120);
    }

    /// A shard of sixteen 4 KiB segments: probation keeps two.
    pub(super) fn sixteen(used: &Arc<AtomicUsize>) -> (Shard, Budget<'_>) {
        (small(), budget(used, 16 * 4096))
    }

    pub(super) fn present(s: &Shard, key: &str) -> bool {
        s.find(hash_key(key.as_bytes()), key.as_bytes()).is_some()
    }

    #[test]
    fn a_scan_does_not_push_out_items_read_since_they_were_stored() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        let value = [b'x'; 100];
        for i in 0..100u32 {
            let loc = put(&mut s, format!("hot{i}").as_bytes(), &value, &b);
            assert!(s.mark_read(loc, bits::REFERENCED | bits::FETCHED, 3));
        }
        // Ten times the memory in new keys nobody reads: FIFO with a second chance would
        // have evicted the hot keys on its second pass.
        for i in 0..6000u32 {
            put(&mut s, format!("scan{i}").as_bytes(), &value, &b);
            assert!(used.load(Ordering::Relaxed) <= 16 * 4096);
        }
        for i in 0..100u32 {
            assert!(
                present(&s, &format!("hot{i}")),
                "hot{i} evicted by the scan"
            );
        }
        assert!(!present(&s, "scan0") && present(&s, "scan5999"));
        assert!(s.stats.evictions > 5000);
        assert_eq!(s.stats.curr_items + s.stats.evictions, 6100);
    }

    #[test]
    fn a_key_stored_again_soon_after_its_eviction_skips_probation() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        let value = [b'x'; 100];
        put(&mut s, b"back", &value, &b);
        for i in 0..600u32 {
            put(&mut s, format!("a{i}").as_bytes(), &value, &b);
        }
        assert!(!present(&s, "back"), "evicted unread");
        // Stored again while its ghost is remembered: main queue. A new key: probation.
        put(&mut s, b"back", &value, &b);
        put(&mut s, b"new", &value, &b);
        for i in 0..6000u32 {
            put(&mut s, format!("b{i}").as_bytes(), &value, &b);
        }
        assert!(
            present(&s, "back"),
            "a returning key stays through the scan"
        );
        assert!(!present(&s, "new"), "a new unread key leaves with the scan");
    }

    #[test]
    fn a_delete_marker_leaves_the_ghost_to_the_next_store() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        let value = [b'x'; 100];
        put(&mut s, b"back", &value, &b);
        for i in 0..600u32 {
            put(&mut s, format!("a{i}").as_bytes(), &value, &b);
        }
        assert!(!present(&s, "back"), "evicted unread");
        let mut marker = Meta::new(0, 0, 2);
        marker.set(bits::TOMBSTONE);
        let h = hash_key(b"back");
        let at = s.put(h, b"back", &[], &marker, 2, &b).unwrap();
        assert!(
            !s.seg(s.geo.split(at).0).main,
            "the marker waits on probation"
        );
        let at = put(&mut s, b"back", &value, &b);
        assert!(
            s.seg(s.geo.split(at).0).main,
            "the store after it skips probation"
        );
    }

    #[test]
    fn items_eviction_moves_during_a_walk_are_seen_by_it_or_published() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        s.ring.set_cap(1 << 20);
        let value = [b'x'; 100];
        let read = |s: &mut Shard, key: &str| {
            let loc = s.find(hash_key(key.as_bytes()), key.as_bytes()).unwrap();
            assert!(s.mark_read(loc, bits::REFERENCED, 3));
        };
        // Keys read as soon as they are stored leave probation by moving to a main segment,
        // which may be one the walk has passed.
        let mut n = 0u32;
        let mut churn = |s: &mut Shard| {
            for _ in 0..20 {
                let key = format!("k{n}");
                put(s, key.as_bytes(), &value, &b);
                if n.is_multiple_of(2) {
                    read(s, &key);
                }
                n += 1;
            }
        };
        // Full, and evicting, before the walk starts; then keys still on probation when
        // it starts, read throughout so they stay.
        for _ in 0..100 {
            churn(&mut s);
        }
        let hot: Vec<String> = (0..60).map(|i| format!("hot{i}")).collect();
        for k in &hot {
            put(&mut s, k.as_bytes(), &value, &b);
            read(&mut s, k);
        }
        s.walks.fetch_add(1, Ordering::Relaxed);
        let mut seen = std::collections::HashSet::new();
        let mut cur = Some(WalkPos::default());
        while let Some(c) = cur {
            let mut taken = 0;
            cur = s.visit(c, |_, it| {
                if taken == 40 {
                    return Walk::Stop;
                }
                taken += 1;
                seen.insert(it.key().to_vec());
                Walk::Took
            });
            churn(&mut s);
            for k in &hot {
                read(&mut s, k);
            }
        }
        s.walks.fetch_sub(1, Ordering::Relaxed);
        let mut published = Vec::new();
        s.ring.read(1, usize::MAX, &mut published);
        assert!(!published.is_empty(), "items moved during the walk");
        for r in &published {
            seen.insert(r.key().to_vec());
        }
        for k in &hot {
            assert!(present(&s, k), "{k} read throughout, evicted");
            assert!(
                seen.contains(k.as_bytes()),
                "{k} held throughout, never seen"
            );
        }
    }

    #[test]
    fn without_eviction_a_full_shard_says_no_room() {
        let used = Arc::<AtomicUsize>::default();
        let b = Budget::new(&used, 4096, false);
        let mut s = small();
        let meta = Meta::new(0, 0, 2);
        let mut stored = 0;
        for i in 0..100u32 {
            let key = format!("k{i}");
            match s.put(
                hash_key(key.as_bytes()),
                key.as_bytes(),
                &[&[b'x'; 100]],
                &meta,
                2,
                &b,
            ) {
                Ok(_) => stored += 1,
                Err(NoRoom) => break,
            }
        }
        assert!(stored > 10 && stored < 100);
        assert_eq!(s.stats.evictions, 0);
        // Deleting makes room again: compaction takes back the dead bytes.
        for i in 0..5u32 {
            let key = format!("k{i}");
            let h = hash_key(key.as_bytes());
            s.remove(h, s.find(h, key.as_bytes()).unwrap(), &b);
        }
        assert!(s
            .put(hash_key(b"new"), b"new", &[&[b'x'; 100]], &meta, 2, &b)
            .is_ok());
    }

    #[test]
    fn large_items_get_their_own_segment_and_free_it() {
        let used = Arc::<AtomicUsize>::default();
        let b = budget(&used, 1 << 20);
        let mut s = small();
        let big = vec![b'b'; 50_000];
        let loc = put(&mut s, b"big", &big, &b);
        assert_eq!(s.item(loc).value(), &big[..]);
        assert!(used.load(Ordering::Relaxed) >= 50_000);
        s.remove(hash_key(b"big"), loc, &b);
        assert_eq!(used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lookup_drops_expired_items() {
        let used = Arc::<AtomicUsize>::default();
        let b = budget(&used, 1 << 20);
        let mut s = small();
        let meta = Meta::new(0, 5, 2);
        s.put(hash_key(b"k"), b"k", &[b"v"], &meta, 2, &b).unwrap();
        assert!(s.lookup(hash_key(b"k"), b"k", 4, &b).is_ok());
        assert_eq!(s.lookup(hash_key(b"k"), b"k", 5, &b), Err(Miss::Expired));
        assert_eq!(s.stats.curr_items, 0);
        assert_eq!(s.stats.bytes, 0);
    }

    #[test]
    fn reclaim_walks_and_frees() {
        let used = Arc::<AtomicUsize>::default();
        let b = budget(&used, 1 << 20);
        let mut s = small();
        let meta = Meta::new(0, 3, 2);
        for i in 0..10u8 {
            s.put(hash_key(&[i]), &[i], &[b"v"], &meta, 2, &b).unwrap();
        }
        assert_eq!(s.reclaim(100, 10, &b), 10);
        assert_eq!(s.stats.reclaimed, 10);
        assert_eq!(s.stats.bytes, 0);
    }

    #[test]
    fn a_walk_sees_items_that_compaction_moves() {
        let used = Arc::<AtomicUsize>::default();
        let b = budget(&used, 2 * 4096);
        let mut s = small();
        for i in 0..20u32 {
            put(&mut s, format!("k{i}").as_bytes(), &[b'x'; 100], &b);
        }
        for i in 0..20u32 {
            let key = format!("k{i}");
            let loc = s.find(hash_key(key.as_bytes()), key.as_bytes()).unwrap();
            assert!(s.mark_read(loc, bits::REFERENCED, 2));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cur = Some(WalkPos::default());
        let mut n = 0u32;
        while let Some(c) = cur {
            let mut taken = 0;
            cur = s.visit(c, |_, it| {
                if taken == 10 {
                    return Walk::Stop;
                }
                taken += 1;
                seen.insert(it.key().to_vec());
                Walk::Took
            });
            // Writes in between force compactions that move the read items.
            for _ in 0..2 {
                put(&mut s, format!("new{n}").as_bytes(), &[b'y'; 100], &b);
                n += 1;
            }
        }
        for i in 0..20u32 {
            let key = format!("k{i}");
            if s.find(hash_key(key.as_bytes()), key.as_bytes()).is_some() {
                assert!(
                    seen.contains(key.as_bytes()),
                    "{key} still there but not seen"
                );
            }
        }
    }
}

#[cfg(test)]
mod eviction_tests {
    use super::tests::{budget, present, put, sixteen, small};
    use super::*;

    /// Fills all sixteen segments of `s` for the first time, reading every tenth item;
    /// returns the items written.
    fn first_fill(s: &mut Shard, b: &Budget) -> u32 {
        let mut i = 0u32;
        while s.stats.evictions == 0 {
            let key = format!("k{i}");
            let loc = put(s, key.as_bytes(), &[b'x'; 100], b);
            if i.is_multiple_of(10) {
                assert!(s.mark_read(loc, bits::REFERENCED | bits::FETCHED, 3));
            }
            i += 1;
        }
        i
    }

    /// Memory fills for the first time (every segment on probation) with one item read
    /// in each segment. Each write after that should evict about what it needs (a
    /// segment's worth at a time), not a whole segment per write.
    #[test]
    fn first_fill_does_not_evict_a_segment_per_write() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        let value = [b'x'; 100];
        let per_seg = first_fill(&mut s, &b) as u64 / 16;
        let before = s.stats.evictions;
        // Ten more writes: room for them is one segment's worth of eviction at most.
        for j in 0..10u32 {
            put(&mut s, format!("n{j}").as_bytes(), &value, &b);
        }
        let evicted = s.stats.evictions - before;
        assert!(
            evicted <= 2 * per_seg,
            "10 writes evicted {evicted} items ({per_seg} per segment); segments: {}",
            s.segment_count()
        );
    }

    /// Same fill as above: a new key nobody asked for again (no ghost) belongs on
    /// probation, not in a segment of the main queue.
    #[test]
    fn a_new_key_is_written_to_probation_after_the_first_fill() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        let value = [b'x'; 100];
        first_fill(&mut s, &b);
        let mut in_main = 0;
        for j in 0..10u32 {
            let loc = put(&mut s, format!("n{j}").as_bytes(), &value, &b);
            if s.seg(s.geo.split(loc).0).main {
                in_main += 1;
            }
        }
        assert_eq!(in_main, 0, "{in_main} of 10 new keys skipped probation");
    }

    /// A cache that fills while a tenth of its items are read, then sees new keys almost
    /// never read (a workload shift): it keeps evicting them after probation's two
    /// segments while the main queue's fourteen segments stand nearly empty. Memory should
    /// stay mostly used by items (S3-FIFO in bytes lets probation grow while main is not
    /// full; by segment counts it cannot).
    #[test]
    fn memory_stays_used_when_few_items_are_read() {
        let used = Arc::<AtomicUsize>::default();
        let (mut s, b) = sixteen(&used);
        let value = [b'x'; 100];
        for i in 0..20_000u32 {
            let key = format!("k{i}");
            let loc = put(&mut s, key.as_bytes(), &value, &b);
            if (i < 600 && i % 10 == 0) || i % 1000 == 0 {
                assert!(s.mark_read(loc, bits::REFERENCED | bits::FETCHED, 3));
            }
        }
        let held = used.load(Ordering::Relaxed) as u64;
        let main = s.segs.iter().flatten().filter(|g| g.main).count();
        let main_bytes: usize = s
            .segs
            .iter()
            .flatten()
            .filter(|g| g.main)
            .map(|g| g.live_bytes)
            .sum();
        assert!(
            s.stats.bytes * 2 >= held,
            "items hold {} of {held} bytes; {main} main segments hold {main_bytes} bytes",
            s.stats.bytes
        );
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Everything the shard's bookkeeping claims, recounted from its segments.
    fn check(s: &Shard, used: usize, ctx: &str) {
        let (mut items, mut bytes, mut tombs, mut tomb_bytes, mut live_total) =
            (0u64, 0u64, 0u64, 0u64, 0usize);
        let mut held = 0usize;
        for (id, seg) in s.segs.iter().enumerate() {
            let Some(seg) = seg else {
                assert!(
                    s.active != Some(id) && s.active_main != Some(id),
                    "{ctx}: freed segment {id} active"
                );
                continue;
            };
            held += seg.buf.len();
            let (mut n, mut b) = (0, 0);
            let mut off = 0;
            while let Some((o, it, f)) = seg.next_live(off) {
                n += 1;
                b += f.total();
                if it.is_tombstone() {
                    tombs += 1;
                    tomb_bytes += f.total() as u64;
                } else {
                    items += 1;
                    bytes += f.total() as u64;
                }
                let loc = s.geo.loc(id as u32, o);
                let hash = hash_key(it.key());
                assert!(
                    s.index.find(hash, |l| l == loc).is_some(),
                    "{ctx}: live item not indexed"
                );
                assert_eq!(
                    s.find(hash, it.key()),
                    Some(loc),
                    "{ctx}: key found elsewhere"
                );
                off = o + f.total();
            }
            assert_eq!(
                (seg.live_items, seg.live_bytes),
                (n, b),
                "{ctx}: segment {id} counts"
            );
            live_total += n;
        }
        assert_eq!(
            s.index.len(),
            live_total,
            "{ctx}: index holds stale entries"
        );
        assert_eq!(
            (s.stats.curr_items, s.stats.bytes),
            (items, bytes),
            "{ctx}: item stats"
        );
        assert_eq!(
            (s.stats.tombstones, s.stats.tombstone_bytes),
            (tombs, tomb_bytes),
            "{ctx}: tombstone stats"
        );
        assert_eq!(held, used, "{ctx}: budget used vs segments held");
        if let (Some(a), Some(m)) = (s.active, s.active_main) {
            assert_ne!(a, m, "{ctx}: active for both queues");
        }
        if let Some(a) = s.active {
            assert!(
                !s.seg(a).main && !s.seg(a).large,
                "{ctx}: probation active is main/large"
            );
        }
        if let Some(a) = s.active_main {
            assert!(
                s.seg(a).main && !s.seg(a).large,
                "{ctx}: main active is not main"
            );
        }
    }

    fn stress(seed: u64, evict: bool) {
        stress_with(seed, evict, &[16 * 4096, 12 * 4096, 6 * 4096, 20 * 4096]);
    }

    fn stress_with(seed: u64, evict: bool, limits: &[usize]) {
        let mut r = Rng(seed);
        let used = Arc::<AtomicUsize>::default();
        let mut limit = limits[0];
        let mut s = small();
        s.ring.set_cap(1 << 16);
        let mut now = 2u32;
        let mut stamp = 1u64 << 40;
        let mut walking = false;
        for step in 0..8_000u32 {
            let b = Budget::new(&used, limit, evict);
            let k = r.below(400);
            let key = format!("key{k}");
            let hash = hash_key(key.as_bytes());
            let ctx = format!("seed {seed} step {step}");
            match r.below(100) {
                0..=49 => {
                    let vlen = match r.below(50) {
                        0 => 1100 + r.below(3000) as usize,
                        _ => r.below(300) as usize,
                    };
                    let exptime = if r.below(10) == 0 {
                        now + 1 + r.below(3) as u32
                    } else {
                        0
                    };
                    let mut meta = Meta::new(0, exptime, now);
                    stamp += 1 + r.below(1 << 20);
                    meta.cas = if r.below(8) == 0 {
                        r.below(1 << 30)
                    } else {
                        stamp
                    };
                    s.hlc.observe(stamp);
                    if r.below(15) == 0 {
                        meta.set(bits::TOMBSTONE);
                    }
                    let value = vec![b'v'; vlen];
                    let res = s.put(hash, key.as_bytes(), &[&value], &meta, now, &b);
                    if res.is_err() {
                        s.remove_key(hash, key.as_bytes(), &b);
                        if evict && !b.over() && vlen < 1000 {
                            panic!(
                                "{ctx}: no room with eviction on (used {} limit {limit})",
                                used.load(Ordering::Relaxed)
                            );
                        }
                    }
                }
                50..=79 => {
                    if let Some(loc) = s.find(hash, key.as_bytes()) {
                        let it = s.item(loc);
                        let bits = it.bits | bits::REFERENCED | bits::FETCHED;
                        s.mark_read(loc, bits, now);
                    }
                }
                80..=87 => {
                    if let Some(loc) = s.find(hash, key.as_bytes()) {
                        s.forget(hash, loc, &b);
                    }
                }
                88..=90 => {
                    let _ = s.lookup(hash, key.as_bytes(), now, &b);
                }
                91..=93 => now += 1,
                94 => {
                    s.reclaim(50, now, &b);
                }
                95 => {
                    walking = !walking;
                    s.walks.store(walking as usize, Ordering::Relaxed);
                }
                96 => {
                    limit = limits[r.below(limits.len() as u64) as usize];
                }
                _ => {
                    let mut cur = Some(WalkPos::default());
                    while let Some(c) = cur {
                        cur = s.visit(c, |_, _| Walk::Took);
                    }
                }
            }
            check(&s, used.load(Ordering::Relaxed), &ctx);
        }
    }

    #[test]
    fn stress_bookkeeping_with_eviction() {
        for seed in 1..=12u64 {
            stress(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), true);
        }
    }

    #[test]
    fn stress_tiny_shards() {
        for seed in 1..=6u64 {
            let seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
            stress_with(seed, true, &[4096, 2 * 4096, 3 * 4096]);
            stress_with(seed, true, &[2 * 4096]);
            stress_with(seed, true, &[3 * 4096]);
        }
    }

    #[test]
    fn stress_bookkeeping_without_eviction() {
        for seed in 1..=6u64 {
            stress(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), false);
        }
    }

    /// Policy scenarios (large items, read bits, a client storing on misses) and randomized
    /// stress of bookkeeping and the walk contract under client-like mixes.
    mod client_mix {
        use super::*;

        fn get(s: &mut Shard, key: &str, now: u32) -> bool {
            match s.find(hash_key(key.as_bytes()), key.as_bytes()) {
                Some(loc) => {
                    let bits = s.item(loc).bits | bits::REFERENCED | bits::FETCHED;
                    s.mark_read(loc, bits, now);
                    true
                }
                None => false,
            }
        }

        fn queues(s: &Shard) -> (usize, usize, usize, usize, usize) {
            let (mut small, mut main, mut large, mut sb, mut mb) = (0, 0, 0, 0, 0);
            for g in s.segs.iter().flatten() {
                if g.large {
                    large += 1;
                } else if g.main {
                    main += 1;
                    mb += g.len;
                } else {
                    small += 1;
                    sb += g.len;
                }
            }
            (small, main, large, sb, mb)
        }

        /// A hot set read by clients that store on a miss survives a long scan of new keys.
        #[test]
        fn hot_set_read_by_a_cache_client_survives_a_scan() {
            let used = Arc::<AtomicUsize>::default();
            let (mut s, b) = sixteen(&used);
            let value = [b'x'; 100];
            let mut hits = 0u32;
            let mut reads = 0u32;
            for i in 0..60_000u32 {
                put(&mut s, format!("scan{i}").as_bytes(), &value, &b);
                let hot = format!("hot{}", i % 150);
                if i >= 20_000 {
                    reads += 1;
                }
                if get(&mut s, &hot, 3) {
                    if i >= 20_000 {
                        hits += 1;
                    }
                } else {
                    put(&mut s, hot.as_bytes(), &value, &b);
                }
            }
            let q = queues(&s);
            assert!(
                hits * 100 >= reads * 97,
                "hot hit ratio {hits}/{reads}; queues {q:?}"
            );
        }

        /// Items read twice outlive one-hit wonders written at the same time.
        #[test]
        fn one_hit_wonders_leave_before_items_read_twice() {
            let used = Arc::<AtomicUsize>::default();
            let (mut s, b) = sixteen(&used);
            let value = [b'x'; 100];
            // Steady state first.
            for i in 0..5000u32 {
                put(&mut s, format!("w{i}").as_bytes(), &value, &b);
            }
            for i in 0..200u32 {
                put(&mut s, format!("once{i}").as_bytes(), &value, &b);
                put(&mut s, format!("twice{i}").as_bytes(), &value, &b);
                get(&mut s, &format!("twice{i}"), 3);
            }
            for i in 0..200u32 {
                get(&mut s, &format!("twice{i}"), 4);
            }
            for i in 0..1000u32 {
                put(&mut s, format!("x{i}").as_bytes(), &value, &b);
            }
            let once = (0..200)
                .filter(|i| present(&s, &format!("once{i}")))
                .count();
            let twice = (0..200)
                .filter(|i| present(&s, &format!("twice{i}")))
                .count();
            assert!(
                once < 20 && twice > 180,
                "once {once} twice {twice}; queues {:?}",
                queues(&s)
            );
        }

        /// Large items stored once and never read, while small ones churn: memory held by
        /// the large ones never comes back, regular writes evict only regular segments.
        #[test]
        fn unread_large_items_do_not_hold_memory_forever() {
            let used = Arc::<AtomicUsize>::default();
            let (mut s, b) = sixteen(&used);
            let big = [b'L'; 3000];
            for i in 0..8u32 {
                put(&mut s, format!("large{i}").as_bytes(), &big, &b);
            }
            let value = [b'x'; 100];
            for i in 0..50_000u32 {
                put(&mut s, format!("k{i}").as_bytes(), &value, &b);
            }
            let left = (0..8).filter(|i| present(&s, &format!("large{i}"))).count();
            let q = queues(&s);
            assert_eq!(
                left,
                0,
                "{left} unread large items kept through 50k writes; queues {q:?}, used {}",
                used.load(Ordering::Relaxed)
            );
        }

        /// Same, worse: items read all the time are evicted while unread large ones stay.
        #[test]
        fn read_items_are_not_evicted_while_unread_large_ones_stay() {
            let used = Arc::<AtomicUsize>::default();
            let (mut s, b) = sixteen(&used);
            let big = [b'L'; 3000];
            for i in 0..12u32 {
                put(&mut s, format!("large{i}").as_bytes(), &big, &b);
            }
            let value = [b'x'; 100];
            let mut misses = 0;
            for i in 0..20_000u32 {
                put(&mut s, format!("k{i}").as_bytes(), &value, &b);
                let hot = format!("hot{}", i % 240);
                if !get(&mut s, &hot, 3) {
                    if i > 5000 {
                        misses += 1;
                    }
                    put(&mut s, hot.as_bytes(), &value, &b);
                }
            }
            let left = (0..12)
                .filter(|i| present(&s, &format!("large{i}")))
                .count();
            assert!(
                misses == 0 || left == 0,
                "{misses} misses on a 240-key hot set while {left} unread large items stay; queues {:?}",
                queues(&s)
            );
        }

        /// A stream of large items never read: each frees the oldest segment of any
        /// queue, main's included, evicting items read all the time (by_age in open_large).
        #[test]
        fn large_writes_do_not_evict_a_hot_set_in_main() {
            let used = Arc::<AtomicUsize>::default();
            let (mut s, b) = sixteen(&used);
            let value = [b'x'; 100];
            let big = [b'L'; 3000];
            let mut misses = 0;
            for i in 0..6000u32 {
                if i % 4 == 0 {
                    put(&mut s, format!("large{i}").as_bytes(), &big, &b);
                } else {
                    put(&mut s, format!("k{i}").as_bytes(), &value, &b);
                }
                let hot = format!("hot{}", i % 100);
                if !get(&mut s, &hot, 3) {
                    if i > 2000 {
                        misses += 1;
                    }
                    put(&mut s, hot.as_bytes(), &value, &b);
                }
            }
            assert_eq!(
                misses,
                0,
                "hot set misses with large writes; queues {:?}",
                queues(&s)
            );
        }

        struct Mix {
            keys: u64,
            steps: u32,
            large_per_100: u64,
            ttl_per_10: u64,
            limits: &'static [usize],
            evict: bool,
            walk: bool,
        }

        /// Random ops as a cache client does them: a read that misses stores the key (a
        /// ghost return when it was evicted lately), plus deletes, expiry, reclaim, walks
        /// and limit changes; every step recounted by `check`.
        fn stress_mix(seed: u64, m: &Mix) {
            let mut r = Rng(seed);
            let used = Arc::<AtomicUsize>::default();
            let mut limit = m.limits[0];
            let mut s = small();
            s.ring.set_cap(1 << 16);
            let mut now = 2u32;
            let mut stamp = 1u64 << 40;
            let mut walking = false;
            for step in 0..m.steps {
                let b = Budget::new(&used, limit, m.evict);
                // Skewed keys: half the ops on a small hot set.
                let k = if r.below(2) == 0 {
                    r.below(m.keys / 20 + 1)
                } else {
                    r.below(m.keys)
                };
                let key = format!("key{k}");
                let hash = hash_key(key.as_bytes());
                let ctx = format!("seed {seed} step {step}");
                let op = r.below(100);
                let mut store = op < 30;
                if (30..75).contains(&op) {
                    match s.lookup(hash, key.as_bytes(), now, &b) {
                        Ok(loc) => {
                            let it = s.item(loc);
                            let bits = it.bits | bits::REFERENCED | bits::FETCHED;
                            s.mark_read(loc, bits, now);
                        }
                        Err(_) => store = true,
                    }
                }
                if store {
                    let vlen = if r.below(100) < m.large_per_100 {
                        1100 + r.below(3000) as usize
                    } else {
                        r.below(400) as usize
                    };
                    let exptime = if r.below(10) < m.ttl_per_10 {
                        now + 1 + r.below(5) as u32
                    } else {
                        0
                    };
                    let mut meta = Meta::new(0, exptime, now);
                    stamp += 1 + r.below(1 << 20);
                    meta.cas = stamp;
                    s.hlc.observe(stamp);
                    if r.below(30) == 0 {
                        meta.set(bits::TOMBSTONE);
                    }
                    let value = vec![b'v'; vlen];
                    let res = s.put(hash, key.as_bytes(), &[&value], &meta, now, &b);
                    if res.is_err() {
                        s.remove_key(hash, key.as_bytes(), &b);
                        if m.evict && !b.over() && vlen < 1000 {
                            panic!(
                                "{ctx}: no room with eviction on (used {} limit {limit}) queues {:?}",
                                used.load(Ordering::Relaxed), queues(&s)
                            );
                        }
                    }
                } else if (75..85).contains(&op) {
                    if let Some(loc) = s.find(hash, key.as_bytes()) {
                        s.forget(hash, loc, &b);
                    }
                } else if (85..90).contains(&op) {
                    now += 1;
                } else if op == 90 {
                    s.reclaim(50, now, &b);
                } else if op == 91 && m.walk {
                    walking = !walking;
                    s.walks.store(walking as usize, Ordering::Relaxed);
                } else if op == 92 && r.below(10) == 0 {
                    limit = m.limits[r.below(m.limits.len() as u64) as usize];
                } else if op == 93 && m.walk && r.below(10) == 0 {
                    let mut cur = Some(WalkPos::default());
                    while let Some(c) = cur {
                        cur = s.visit(c, |_, _| Walk::Took);
                    }
                }
                check(&s, used.load(Ordering::Relaxed), &ctx);
            }
        }

        #[test]
        fn stress_client_mix_with_ghost_returns() {
            let m = Mix {
                keys: 3000,
                steps: 30_000,
                large_per_100: 0,
                ttl_per_10: 0,
                limits: &[16 * 4096],
                evict: true,
                walk: true,
            };
            for seed in 1..=4u64 {
                stress_mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), &m);
            }
        }

        #[test]
        fn stress_client_mix_large_ttl_limits() {
            let m = Mix {
                keys: 2000,
                steps: 30_000,
                large_per_100: 5,
                ttl_per_10: 3,
                limits: &[16 * 4096, 8 * 4096, 3 * 4096, 24 * 4096],
                evict: true,
                walk: true,
            };
            for seed in 1..=4u64 {
                stress_mix(seed.wrapping_mul(0x2545_f491_4f6c_dd1d), &m);
            }
        }

        #[test]
        fn stress_client_mix_no_evict() {
            let m = Mix {
                keys: 2000,
                steps: 20_000,
                large_per_100: 3,
                ttl_per_10: 5,
                limits: &[16 * 4096, 8 * 4096, 24 * 4096],
                evict: false,
                walk: true,
            };
            for seed in 1..=4u64 {
                stress_mix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), &m);
            }
        }

        #[test]
        fn stress_original_more_seeds() {
            for seed in 100..=115u64 {
                stress(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), true);
            }
            for seed in 100..=108u64 {
                let seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
                stress_with(seed, true, &[4096, 2 * 4096, 3 * 4096]);
                stress_with(seed, true, &[2 * 4096]);
                stress_with(seed, false, &[3 * 4096, 5 * 4096]);
            }
        }

        /// Writes a hot set into main, a steady scan, then key `p` read once while on
        /// probation; with `dead`, keys deleted soon after they are stored leave `p`'s
        /// segment mostly dead. Then a scan of new keys: `p` should have moved to main.
        fn read_once_on_probation_then_scan(dead: bool) -> bool {
            let used = Arc::<AtomicUsize>::default();
            let (mut s, b) = sixteen(&used);
            let value = [b'x'; 100];
            for i in 0..100u32 {
                let loc = put(&mut s, format!("hot{i}").as_bytes(), &value, &b);
                assert!(s.mark_read(loc, bits::REFERENCED | bits::FETCHED, 3));
            }
            for i in 0..3000u32 {
                put(&mut s, format!("scan{i}").as_bytes(), &value, &b);
            }
            put(&mut s, b"p", &value, &b);
            assert!(get(&mut s, "p", 3));
            for i in 0..2000u32 {
                let dead = dead && i < 100;
                let key = format!("f{i}");
                put(&mut s, key.as_bytes(), &value, &b);
                if dead && i % 3 != 0 {
                    let h = hash_key(key.as_bytes());
                    let loc = s.find(h, key.as_bytes()).unwrap();
                    s.forget(h, loc, &b);
                }
            }
            present(&s, "p")
        }

        #[test]
        fn an_item_read_on_probation_moves_to_main_control() {
            assert!(read_once_on_probation_then_scan(false));
        }

        /// Compacting a mostly-dead probation segment (no eviction) clears the read bits of
        /// the items it keeps, so those read since they were stored are evicted, not moved
        /// to main, when the segment is drained.
        #[test]
        fn compacting_a_mostly_dead_probation_segment_keeps_read_bits() {
            assert!(
                read_once_on_probation_then_scan(true),
                "read once, evicted from probation"
            );
        }

        /// Randomized walk contract: every key present at every step of a walk is seen by
        /// `visit` or published to the ring while the walk runs.
        fn walk_contract(seed: u64, large: bool) {
            let mut r = Rng(seed);
            let used = Arc::<AtomicUsize>::default();
            let mut s = small();
            s.ring.set_cap(1 << 24);
            let mut now = 2u32;
            let b = budget(&used, 16 * 4096);
            let op = |s: &mut Shard, r: &mut Rng, now: &mut u32| {
                let k = if r.below(2) == 0 {
                    r.below(60)
                } else {
                    r.below(3000)
                };
                let key = format!("key{k}");
                let hash = hash_key(key.as_bytes());
                match r.below(100) {
                    0..=39 => {
                        if s.lookup(hash, key.as_bytes(), *now, &b).is_err() {
                            let vlen = if large && r.below(40) == 0 {
                                1500
                            } else {
                                r.below(300) as usize
                            };
                            let exptime = if r.below(10) == 0 { *now + 2 } else { 0 };
                            let mut meta = Meta::new(0, exptime, *now);
                            let stamp = s.hlc.last() + 1 + r.below(1000);
                            s.hlc.observe(stamp);
                            meta.cas = stamp;
                            let _ =
                                s.put(hash, key.as_bytes(), &[&vec![b'v'; vlen]], &meta, *now, &b);
                        }
                    }
                    40..=89 => {
                        get(s, &key, *now);
                    }
                    90..=95 => {
                        if let Some(loc) = s.find(hash, key.as_bytes()) {
                            s.forget(hash, loc, &b);
                        }
                    }
                    96 => *now += 1,
                    _ => {
                        s.reclaim(20, *now, &b);
                    }
                }
            };
            for _ in 0..5000 {
                op(&mut s, &mut r, &mut now);
            }
            let keys_now = |s: &Shard| -> std::collections::HashSet<Vec<u8>> {
                let mut set = std::collections::HashSet::new();
                let mut cur = Some(WalkPos::default());
                while let Some(c) = cur {
                    cur = s.visit(c, |_, it| {
                        set.insert(it.key().to_vec());
                        Walk::Took
                    });
                }
                set
            };
            let mut required: Vec<(Vec<u8>, u64)> = keys_now(&s)
                .into_iter()
                .map(|k| {
                    let st = s.held_stamp(hash_key(&k), &k).unwrap();
                    (k, st)
                })
                .collect();
            let from = s.ring.next_seq();
            s.walks.fetch_add(1, Ordering::Relaxed);
            let mut seen = std::collections::HashSet::new();
            let mut cur = Some(WalkPos::default());
            while let Some(c) = cur {
                let mut taken = 0;
                cur = s.visit(c, |_, it| {
                    if taken == 7 {
                        return Walk::Stop;
                    }
                    taken += 1;
                    seen.insert(it.key().to_vec());
                    Walk::Took
                });
                for _ in 0..r.below(30) {
                    op(&mut s, &mut r, &mut now);
                    required.retain(|(k, st)| s.held_stamp(hash_key(k), k) == Some(*st));
                }
            }
            s.walks.fetch_sub(1, Ordering::Relaxed);
            let mut published = Vec::new();
            s.ring.read(from, usize::MAX, &mut published);
            for rec in &published {
                seen.insert(rec.key().to_vec());
            }
            for (k, _) in &required {
                assert!(
                    seen.contains(k),
                    "seed {seed}: {} present throughout, never seen",
                    String::from_utf8_lossy(k)
                );
            }
        }

        #[test]
        fn walk_contract_randomized() {
            for seed in 1..=40u64 {
                walk_contract(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), seed % 2 == 0);
            }
        }
    }
}
