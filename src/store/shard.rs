//! One shard: a hash index over a vector of item slots, with CLOCK eviction.
//!
//! Items live in `slots`, and the hash table holds only 4-byte slot numbers, so the index
//! costs ~5 bytes an item and a slot number is a stable cursor for snapshots. CLOCK needs
//! one bit per item and no list surgery on a hit, which keeps gets cheap under the lock.

use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashTable;

use super::item::{bits, Item};
use super::stats::ShardStats;
use super::version::{Hlc, NodeId};

/// Hash of a key; the same function picks the shard and the bucket.
pub fn hash_key(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    // A fixed seed: placement is deterministic across runs, which tests and benches like.
    foldhash::fast::FixedState::with_seed(0x5eed_cafe).hash_one(key)
}

/// Asks the CPU to start loading the cache line at `p`; a hint that never faults.
#[inline]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it reads nothing architecturally and cannot fault, whatever
    // the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An item's fields besides key and value, for [`Shard::overwrite`].
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub cas: u64,
    pub exptime: u32,
    pub atime: u32,
    pub flags: u32,
    pub node: NodeId,
    pub bits: u8,
}

/// Why a lookup found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Absent,
    Expired,
    Flushed,
}

/// What [`Shard::reap`] found in a slot.
enum Slot<'a> {
    Empty,
    Reaped,
    Live(&'a Item),
}

#[derive(Default)]
pub struct Shard {
    table: HashTable<u32>,
    slots: Vec<Option<Item>>,
    free: Vec<u32>,
    hand: usize,
    reclaim_cursor: usize,
    pub hlc: Hlc,
    /// Items with a stamp below this are flushed, once `flush_at` has come.
    pub flush_before: u64,
    pub flush_at: u32,
    pub stats: ShardStats,
}

impl Shard {
    fn slot_hash(slots: &[Option<Item>], idx: u32) -> u64 {
        match &slots[idx as usize] {
            Some(it) => hash_key(it.key()),
            None => 0,
        }
    }

    /// Slot of `key`, live or not.
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(
                hash,
                |&i| matches!(&slots[i as usize], Some(it) if it.key() == key),
            )
            .copied()
    }

    /// Starts loading the memory a lookup of `hash` will touch, one step further each
    /// call (`step` 0: the slot, 1: the key and value), without comparing keys: a multi-key
    /// read issues these for all its keys first, so their cache misses overlap instead of
    /// queueing one after another.
    pub fn prefetch(&self, hash: u64, step: u8) {
        let Some(&idx) = self.table.find(hash, |_| true) else {
            return;
        };
        match step {
            0 => prefetch_line(self.slots.as_ptr().wrapping_add(idx as usize) as *const u8),
            _ => {
                if let Some(Some(it)) = self.slots.get(idx as usize) {
                    // The key and the start of the value: what a reply reads first.
                    let (p, len) = it.data_span();
                    for off in (0..len.min(192)).step_by(64) {
                        prefetch_line(p.wrapping_add(off));
                    }
                }
            }
        }
    }

    pub fn item(&self, idx: u32) -> &Item {
        self.slots[idx as usize]
            .as_ref()
            .expect("slot numbers come from the index, which only holds occupied slots")
    }

    pub fn item_mut(&mut self, idx: u32) -> &mut Item {
        self.slots[idx as usize]
            .as_mut()
            .expect("slot numbers come from the index, which only holds occupied slots")
    }

    pub fn is_flushed(&self, it: &Item, now: u32) -> bool {
        self.flush_before != 0 && now >= self.flush_at && it.cas < self.flush_before
    }

    /// The live item for `key`, removing it if it has expired or been flushed.
    pub fn lookup(
        &mut self,
        hash: u64,
        key: &[u8],
        now: u32,
        used: &AtomicUsize,
    ) -> Result<u32, Miss> {
        let idx = self.find(hash, key).ok_or(Miss::Absent)?;
        let it = self.item(idx);
        if it.is_tombstone() {
            if it.is_expired(now) {
                self.remove(hash, idx, used);
            }
            return Err(Miss::Absent);
        }
        let why = if it.is_expired(now) {
            Miss::Expired
        } else if self.is_flushed(it, now) {
            Miss::Flushed
        } else {
            return Ok(idx);
        };
        self.unlink_dead(hash, idx, used);
        Err(why)
    }

    /// Drops an item found dead by TTL or flush, counting it as memcached does.
    fn unlink_dead(&mut self, hash: u64, idx: u32, used: &AtomicUsize) {
        if !self.item(idx).has(bits::FETCHED) {
            self.stats.expired_unfetched += 1;
        }
        self.stats.reclaimed += 1;
        self.remove(hash, idx, used);
    }

    /// Stores `item` under its key, replacing whatever was there. Returns its slot.
    pub fn insert(&mut self, hash: u64, item: Item, used: &AtomicUsize) -> u32 {
        let existing = self.find(hash, item.key());
        self.insert_at(hash, existing, item, used)
    }

    /// As [`Shard::insert`], when the caller already knows the key's slot (`existing`).
    pub fn insert_at(
        &mut self,
        hash: u64,
        existing: Option<u32>,
        item: Item,
        used: &AtomicUsize,
    ) -> u32 {
        let charge = item.charge() as isize;
        self.count(&item, 1);
        if let Some(idx) = existing {
            let old = self.slots[idx as usize]
                .replace(item)
                .expect("an existing slot is occupied");
            self.count(&old, -1);
            self.charge(used, charge - old.charge() as isize);
            return idx;
        }
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(item);
                i
            }
            None => {
                self.slots.push(Some(item));
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.table
            .insert_unique(hash, idx, |&i| Self::slot_hash(slots, i));
        self.charge(used, charge);
        idx
    }

    /// Applies a change in charged bytes. The global counter is shared by all shards, so it
    /// is touched only when the total really changes (same-size overwrites skip it).
    fn charge(&mut self, used: &AtomicUsize, delta: isize) {
        if delta > 0 {
            used.fetch_add(delta as usize, Ordering::Relaxed);
        } else if delta < 0 {
            used.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        self.stats.bytes = (self.stats.bytes as i64 + delta as i64) as u64;
    }

    /// Counts an item in (+1) or out (-1) of the item gauges.
    fn count(&mut self, it: &Item, sign: i64) {
        if it.is_tombstone() {
            self.stats.tombstones = (self.stats.tombstones as i64 + sign) as u64;
        } else {
            self.stats.curr_items = (self.stats.curr_items as i64 + sign) as u64;
            if sign > 0 {
                self.stats.total_items += 1;
            }
        }
    }

    /// Removes the item in `idx` and returns it.
    pub fn remove(&mut self, hash: u64, idx: u32, used: &AtomicUsize) -> Item {
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        let old = self.slots[idx as usize]
            .take()
            .expect("remove is only called on occupied slots");
        self.count(&old, -1);
        self.charge(used, -(old.charge() as isize));
        self.free.push(idx);
        old
    }

    /// A new version of the item in `idx` whose value has the same length as the old one:
    /// written over the old bytes, so an overwrite costs no allocation and no free. The
    /// item's other fields start afresh, as for a newly built item.
    pub fn overwrite(&mut self, idx: u32, value: &[u8], fresh: Header) {
        self.stats.total_items += 1;
        let it = self.item_mut(idx);
        debug_assert_eq!(it.value().len(), value.len());
        it.value_mut().copy_from_slice(value);
        it.cas = fresh.cas;
        it.exptime = fresh.exptime;
        it.atime = fresh.atime;
        it.flags = fresh.flags;
        it.node = fresh.node;
        it.bits = fresh.bits;
    }

    /// Replaces an item in place (incr/decr growing the number): the charge follows.
    pub fn replace_in_place(&mut self, idx: u32, item: Item, used: &AtomicUsize) {
        let new_charge = item.charge() as isize;
        let old = self.slots[idx as usize]
            .replace(item)
            .expect("replace_in_place is only called on occupied slots");
        self.charge(used, new_charge - old.charge() as isize);
    }

    /// Evicts one item by CLOCK, never the one in `protect`. Expired items found on the way
    /// are reclaimed first, since they cost nobody anything. Returns false if nothing is left.
    pub fn evict_one(&mut self, now: u32, protect: Option<u32>, used: &AtomicUsize) -> bool {
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        for _ in 0..2 * n + 1 {
            self.hand = (self.hand + 1) % n;
            let idx = self.hand as u32;
            if Some(idx) == protect {
                continue;
            }
            let (referenced, fetched, tomb) = match self.reap(idx, now, used) {
                Slot::Empty => continue,
                Slot::Reaped => return true,
                Slot::Live(it) => (
                    it.has(bits::REFERENCED),
                    it.has(bits::FETCHED),
                    it.is_tombstone(),
                ),
            };
            if referenced {
                self.item_mut(idx).clear(bits::REFERENCED);
                continue;
            }
            if !tomb {
                self.stats.evictions += 1;
                if !fetched {
                    self.stats.evicted_unfetched += 1;
                }
            }
            let hash = hash_key(self.item(idx).key());
            self.remove(hash, idx, used);
            return true;
        }
        false
    }

    /// Drops the item in `idx` if it is expired or flushed (a tombstone past its window
    /// included), counting it as memcached does.
    fn reap(&mut self, idx: u32, now: u32, used: &AtomicUsize) -> Slot<'_> {
        let (hash, tomb) = match &self.slots[idx as usize] {
            None => return Slot::Empty,
            Some(it) if it.is_expired(now) || self.is_flushed(it, now) => {
                (hash_key(it.key()), it.is_tombstone())
            }
            Some(_) => return Slot::Live(self.item(idx)),
        };
        if tomb {
            self.remove(hash, idx, used);
        } else {
            self.unlink_dead(hash, idx, used);
        }
        Slot::Reaped
    }

    /// Walks up to `budget` slots from where the last walk stopped and drops dead items, so
    /// expired data does not hold memory until someone asks for it. Returns items dropped.
    pub fn reclaim(&mut self, budget: usize, now: u32, used: &AtomicUsize) -> usize {
        let n = self.slots.len();
        let mut dropped = 0;
        for _ in 0..budget.min(n) {
            self.reclaim_cursor = (self.reclaim_cursor + 1) % n;
            if let Slot::Reaped = self.reap(self.reclaim_cursor as u32, now, used) {
                dropped += 1;
            }
        }
        dropped
    }

    /// Hands `f` the items from slot `from` on until it has taken `max`, for a cursor walk;
    /// returns the next slot, or None at the end. `f` says whether it took the item.
    pub fn visit(
        &self,
        from: usize,
        max: usize,
        mut f: impl FnMut(&Shard, &Item) -> bool,
    ) -> Option<usize> {
        let mut taken = 0;
        for i in from..self.slots.len() {
            if taken >= max {
                return Some(i);
            }
            if let Some(it) = &self.slots[i] {
                taken += f(self, it) as usize;
            }
        }
        None
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut Shard, key: &[u8], used: &AtomicUsize) -> u32 {
        s.insert(hash_key(key), Item::new(key, &[b"v"], 0, 0, 2), used)
    }

    #[test]
    fn insert_find_remove_keeps_accounting() {
        let used = AtomicUsize::new(0);
        let mut s = Shard::default();
        let a = put(&mut s, b"a", &used);
        put(&mut s, b"b", &used);
        assert_eq!(s.stats.curr_items, 2);
        assert_eq!(s.find(hash_key(b"a"), b"a"), Some(a));
        // Replacing keeps one item and the same slot.
        assert_eq!(put(&mut s, b"a", &used), a);
        assert_eq!(s.stats.curr_items, 2);
        s.remove(hash_key(b"a"), a, &used);
        assert_eq!(s.find(hash_key(b"a"), b"a"), None);
        assert_eq!(used.load(Ordering::Relaxed) as u64, s.stats.bytes);
        // The freed slot is reused.
        assert_eq!(put(&mut s, b"c", &used), a);
    }

    #[test]
    fn clock_spares_referenced_and_protected_items() {
        let used = AtomicUsize::new(0);
        let mut s = Shard::default();
        let a = put(&mut s, b"a", &used);
        let b = put(&mut s, b"b", &used);
        s.item_mut(a).set(bits::REFERENCED);
        assert!(s.evict_one(2, None, &used));
        assert!(
            s.find(hash_key(b"b"), b"b").is_none(),
            "unreferenced b goes first"
        );
        assert!(s.find(hash_key(b"a"), b"a").is_some());
        let _ = b;
        // Only the protected item is left: nothing to evict.
        let c = put(&mut s, b"c", &used);
        s.remove(hash_key(b"a"), a, &used);
        assert!(!s.evict_one(2, Some(c), &used));
        assert_eq!(s.stats.evictions, 1);
    }

    #[test]
    fn lookup_drops_expired_items() {
        let used = AtomicUsize::new(0);
        let mut s = Shard::default();
        s.insert(hash_key(b"k"), Item::new(b"k", &[b"v"], 0, 5, 2), &used);
        assert!(s.lookup(hash_key(b"k"), b"k", 4, &used).is_ok());
        assert_eq!(s.lookup(hash_key(b"k"), b"k", 5, &used), Err(Miss::Expired));
        assert_eq!(s.stats.curr_items, 0);
        assert_eq!(used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn reclaim_walks_and_frees() {
        let used = AtomicUsize::new(0);
        let mut s = Shard::default();
        for i in 0..10u8 {
            s.insert(hash_key(&[i]), Item::new(&[i], &[b"v"], 0, 3, 2), &used);
        }
        assert_eq!(s.reclaim(100, 10, &used), 10);
        assert_eq!(s.stats.reclaimed, 10);
        assert_eq!(used.load(Ordering::Relaxed), 0);
    }
}
