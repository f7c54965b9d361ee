//! Counters the store keeps per shard (under the shard lock, so plain integers) and their
//! sum for `stats`. Counters about requests (hits, misses) live in the server, which knows
//! what the client asked; these are the ones only the store can see.

use std::ops::AddAssign;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    /// Live items (tombstones excluded), `curr_items`.
    pub curr_items: u64,
    /// Items ever stored, `total_items`.
    pub total_items: u64,
    /// Bytes live items take in their segments, `bytes`; the segments themselves are what
    /// `-m` limits.
    pub bytes: u64,
    /// Live items removed to make room, `evictions`.
    pub evictions: u64,
    /// Items removed by TTL or flush, `reclaimed`.
    pub reclaimed: u64,
    /// Expired items that had never been fetched, `expired_unfetched`.
    pub expired_unfetched: u64,
    /// Evicted items that had never been fetched, `evicted_unfetched`.
    pub evicted_unfetched: u64,
    /// Items a client's command found expired or flushed (and dropped), `get_expired` and
    /// `get_flushed`: whatever the command, as memcached's item lookup counts them.
    pub get_expired: u64,
    pub get_flushed: u64,
    /// Delete markers held for replication, and the bytes they take (which count against
    /// `-m` like items).
    pub tombstones: u64,
    pub tombstone_bytes: u64,
    /// Bytes of segments that items already gone (expired, deleted, replaced) still take
    /// until their segment is compacted, `store_dead_bytes`; a gauge, filled in by
    /// [`crate::store::Store::stats`], not counted here.
    pub dead_bytes: u64,
    /// Slots of the shards' hash indexes and the bytes they take (`hash_power_level`,
    /// `hash_bytes`); gauges filled in like `dead_bytes`.
    pub hash_slots: u64,
    pub hash_bytes: u64,
}

impl AddAssign for ShardStats {
    fn add_assign(&mut self, o: Self) {
        self.curr_items += o.curr_items;
        self.total_items += o.total_items;
        self.bytes += o.bytes;
        self.evictions += o.evictions;
        self.reclaimed += o.reclaimed;
        self.expired_unfetched += o.expired_unfetched;
        self.evicted_unfetched += o.evicted_unfetched;
        self.get_expired += o.get_expired;
        self.get_flushed += o.get_flushed;
        self.tombstones += o.tombstones;
        self.tombstone_bytes += o.tombstone_bytes;
        self.dead_bytes += o.dead_bytes;
        self.hash_slots += o.hash_slots;
        self.hash_bytes += o.hash_bytes;
    }
}

/// Resets the counters `stats reset` clears; gauges (items, bytes) stay.
impl ShardStats {
    pub fn reset_counters(&mut self) {
        self.total_items = 0;
        self.evictions = 0;
        self.reclaimed = 0;
        self.expired_unfetched = 0;
        self.evicted_unfetched = 0;
        self.get_expired = 0;
        self.get_flushed = 0;
    }
}
