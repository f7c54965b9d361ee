//! What a shard forgot: the newest version of each key state it dropped, per key while there
//! is room, then per key in less room, and past that as one floor.
//!
//! A cache may forget a key (evict it, expire it, drop its delete marker) but must never
//! bring back an older state of it: were a peer to send a write this node had already seen
//! deleted or overwritten, storing it would resurrect the key. So whenever a shard drops a
//! key's newest state it remembers the state's version, and a remote write for a key the
//! shard does not hold is refused unless it is newer. Whole versions, node id included: two
//! nodes can stamp one key alike (the same millisecond, the same shard), and by stamps alone
//! the node that dropped its state would refuse the other's, which wins everywhere else.
//!
//! Nothing dropped is ever forgotten, only blurred, in three steps:
//! - per key, a 32-bit fingerprint and the whole version, in buckets of four keys: 1024
//!   keys per shard in 18 KB, taken when the shard first drops something;
//! - when replicating, a full bucket's oldest version goes to a group: per key again, a
//!   16-bit fingerprint and the stamp to a 64th of a millisecond, rounded up, in 8 bytes
//!   (two buckets to choose from, so a group fills to ~80 %: ~10 bytes a key). A key not
//!   dropped is refused only when its fingerprint is taken by a key dropped at a newer
//!   stamp (about one in 5,000 per group it is checked against);
//! - groups beyond a shard's share of memory (a 64th of `-m`, set aside from the segments)
//!   go oldest first to one floor, their newest version, that covers every key.
//!   Unreplicated (no group), a bucket's oldest version goes to that bucket's floor.
//!
//! A floor stands for many keys, so it refuses writes of keys never dropped: a single mark
//! per group of keys, as this once was, let one key expiring refuse another key's write
//! made during a partition (a PHP session gone from one node); per-bucket floors did the
//! same once a partition saw a few thousand states dropped per shard (sessions expiring,
//! deletes of keys not cached); a group's newest version standing for all its keys refused
//! a key's write that followed its own delete in a peer's late backlog. Under steady
//! eviction the floor trails by about what the shard's groups hold, and writes newer than
//! that always get through.

use std::collections::VecDeque;

use super::version::{NodeId, Version};

const WAYS: usize = 4;
const BUCKETS: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct Forgotten {
    table: Option<Box<Table>>,
    blurred: Blurred,
}

#[derive(Debug, Clone)]
struct Table {
    /// Key fingerprints (never 0) and the newest version dropped for each, in two arrays
    /// (a `Version` would pad to 16 bytes); stamp 0: empty.
    prints: [[u32; WAYS]; BUCKETS],
    stamps: [[u64; WAYS]; BUCKETS],
    nodes: [[u16; WAYS]; BUCKETS],
    /// The newest version a bucket let go of: it covers every key of the bucket.
    floors: [Version; BUCKETS],
}

impl Table {
    fn at(&self, b: usize, w: usize) -> Version {
        Version {
            stamp: self.stamps[b][w],
            node: NodeId(self.nodes[b][w]),
        }
    }

    fn set(&mut self, b: usize, w: usize, v: Version) {
        self.stamps[b][w] = v.stamp;
        self.nodes[b][w] = v.node.0;
    }
}

/// The bucket and fingerprint of a key hash, from bits the shard choice (the lowest ten at
/// most) leaves alone, and none the bucket's: 32 bits that tell the keys of one bucket of
/// one shard apart, so a dropped key's own stamp is taken for another's about once in
/// 2^32 (it may then delete that key on every node: see `Store::tell_forgotten`).
fn place(hash: u64) -> (usize, u32) {
    let print = ((hash >> 40) as u32) << 8 | ((hash >> 10) as u32 & 0xff);
    ((hash >> 32) as usize % BUCKETS, print.max(1))
}

impl Forgotten {
    /// Notes that a state at `version` of a key hashing to `hash` was dropped.
    pub fn raise(&mut self, hash: u64, version: Version) {
        let t = self.table.get_or_insert_with(|| {
            Box::new(Table {
                prints: [[0; WAYS]; BUCKETS],
                stamps: [[0; WAYS]; BUCKETS],
                nodes: [[0; WAYS]; BUCKETS],
                floors: [Version::default(); BUCKETS],
            })
        });
        let (b, print) = place(hash);
        if version <= t.floors[b] || version <= self.blurred.floor {
            return;
        }
        if let Some(w) = (0..WAYS).find(|&w| t.prints[b][w] == print && t.stamps[b][w] != 0) {
            let newest = t.at(b, w).max(version);
            t.set(b, w, newest);
            return;
        }
        // An empty way, else the oldest version goes to a group or the bucket's floor (or
        // this one, if older).
        let w = (0..WAYS).min_by_key(|&w| t.at(b, w)).unwrap_or(0);
        if t.stamps[b][w] != 0 {
            // Decided by which goes, not by comparing versions: two keys may be dropped
            // at one version, and each must be kept somewhere.
            let incoming_goes = version < t.at(b, w);
            let (gone, gone_print) = if incoming_goes {
                (version, print)
            } else {
                (t.at(b, w), t.prints[b][w])
            };
            if !self.blurred.keep(b, gone_print, gone) {
                t.floors[b] = t.floors[b].max(gone);
            }
            if incoming_goes {
                return;
            }
        }
        t.prints[b][w] = print;
        t.set(b, w, version);
    }

    /// Keeps up to `groups` groups of `buckets` buckets each (0 groups: full buckets raise
    /// their floors); see [`group_shape`]. Set before anything is raised.
    pub fn set_groups(&mut self, (groups, buckets): (usize, usize)) {
        self.blurred.cap = if buckets == 0 { 0 } else { groups };
        self.blurred.buckets = buckets;
    }

    /// True if a state at `version` may be older than one dropped (or is that one): it must
    /// be refused for a key the shard does not hold.
    pub fn covers(&self, hash: u64, version: Version) -> bool {
        let Some(t) = &self.table else {
            return false;
        };
        let (b, print) = place(hash);
        version <= t.floors[b]
            || self.own(hash).is_some_and(|own| version <= own)
            || self.blurred.covers(b, print, version)
    }

    /// The newest version dropped for this key itself, if still kept apart from its
    /// bucket's floor (which may stand for other keys).
    pub fn own(&self, hash: u64) -> Option<Version> {
        let t = self.table.as_ref()?;
        let (b, print) = place(hash);
        (0..WAYS)
            .find(|&w| t.prints[b][w] == print && t.stamps[b][w] != 0)
            .map(|w| t.at(b, w))
    }
}

/// Slots per bucket of a group: a bucket is one cache line.
const SLOTS: usize = 8;
/// The bytes of one slot.
const SLOT_BYTES: usize = 8;
/// A slot's stamp is kept to this many units, rounded up (a shard's consecutive stamps are
/// further apart: see `Hlc`), in the 48 bits a 16-bit fingerprint leaves.
const STAMP_UNIT: u64 = 1 << 10;

/// What a bucket of a group takes.
pub const BUCKET_BYTES: usize = SLOTS * SLOT_BYTES;

/// How a shard with `bytes` for groups cuts them: (groups, buckets per group). Groups of
/// a quarter of it, 1 to 8 KB (four at least, so that letting the oldest go loses a
/// quarter), at most 32 (each is looked at by a peer's write of a key not held that is
/// older than its newest); none under 1 KB.
pub fn group_shape(bytes: usize) -> (usize, usize) {
    let group = (bytes / 4).clamp(1 << 10, 8 << 10);
    let group = 1 << group.ilog2();
    match (bytes / group).min(32) {
        0 => (0, 0),
        groups => (groups, group / BUCKET_BYTES),
    }
}

/// Versions pushed out of the per-key table, kept per key in groups of slots, each a
/// 16-bit fingerprint and the stamp (rounded up), oldest group first; and the newest
/// version of the groups let go.
#[derive(Debug, Clone, Default)]
struct Blurred {
    groups: VecDeque<Group>,
    /// The most groups kept (0: none), and buckets per group.
    cap: usize,
    buckets: usize,
    floor: Version,
}

#[derive(Debug, Clone)]
struct Group {
    slots: Vec<[u64; SLOTS]>,
    /// The newest version in the group: a write newer than it need not look.
    newest: Version,
}

/// A key's two buckets in a group and its fingerprint (never 0), from the 40 bits of its
/// hash the per-key table knows (its bucket and fingerprint there), mixed so that the
/// group's fields draw on all of them.
fn group_place(b: usize, print: u32, buckets: usize) -> (usize, usize, u64) {
    let x = ((u64::from(print) << 8) | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let fp = (x >> 48).max(1);
    let i = (x >> 21) as usize % buckets;
    let j = (x >> 32) as usize % buckets;
    (i, j, fp)
}

/// A slot: fingerprint above, the stamp in units below, rounded up so that it never
/// reads older than it was.
fn slot(fp: u64, v: Version) -> u64 {
    fp << 48 | v.stamp.div_ceil(STAMP_UNIT).min((1 << 48) - 1)
}

impl Group {
    fn new(buckets: usize) -> Group {
        Group {
            slots: vec![[0; SLOTS]; buckets],
            newest: Version::default(),
        }
    }

    /// The stamp kept for fingerprint `fp` (in units), if any.
    fn find(&self, i: usize, j: usize, fp: u64) -> Option<u64> {
        [i, j]
            .iter()
            .flat_map(|&b| self.slots[b].iter())
            .find(|&&s| s >> 48 == fp)
            .map(|&s| s & ((1 << 48) - 1))
    }

    /// Adds a slot to the emptier of its buckets, or raises the slot its fingerprint has
    /// there already; false if both buckets are full.
    fn add(&mut self, i: usize, j: usize, new: u64) -> bool {
        let fp = new >> 48;
        for b in [i, j] {
            if let Some(s) = self.slots[b].iter_mut().find(|s| **s >> 48 == fp) {
                *s = (*s).max(new);
                return true;
            }
        }
        let free = |s: &[u64; SLOTS]| s.iter().filter(|&&x| x == 0).count();
        let into = if free(&self.slots[i]) >= free(&self.slots[j]) {
            i
        } else {
            j
        };
        match self.slots[into].iter_mut().find(|s| **s == 0) {
            Some(s) => {
                *s = new;
                true
            }
            None => false,
        }
    }
}

impl Blurred {
    /// Takes a version pushed out of the per-key table; false if groups are off.
    fn keep(&mut self, b: usize, print: u32, version: Version) -> bool {
        if self.cap == 0 {
            return false;
        }
        let (i, j, fp) = group_place(b, print, self.buckets);
        let new = slot(fp, version);
        if let Some(g) = self.groups.back_mut() {
            if g.add(i, j, new) {
                g.newest = g.newest.max(version);
                return true;
            }
        }
        // The newest group is full: a new one, the oldest let go to the floor if need be.
        while self.groups.len() >= self.cap {
            let old = self.groups.pop_front().expect("cap is at least 1");
            self.floor = self.floor.max(old.newest);
        }
        let mut g = Group::new(self.buckets);
        g.add(i, j, new);
        g.newest = version;
        self.groups.push_back(g);
        true
    }

    fn covers(&self, b: usize, print: u32, version: Version) -> bool {
        if version <= self.floor {
            return true;
        }
        if self.groups.is_empty() {
            return false;
        }
        let (i, j, fp) = group_place(b, print, self.buckets);
        self.groups.iter().any(|g| {
            version <= g.newest
                && g.find(i, j, fp)
                    .is_some_and(|units| version.stamp <= units * STAMP_UNIT)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version of node 1 at `stamp`.
    fn v(stamp: u64) -> Version {
        Version {
            stamp,
            node: NodeId(1),
        }
    }

    /// A hash in bucket `bucket` whose fingerprint is `key`'s alone.
    fn h(bucket: u64, key: u64) -> u64 {
        (bucket << 32) | (key << 40)
    }

    /// Keys of one shard and bucket whose fingerprints were once the same (only 23 bits
    /// told them apart) are told apart now.
    #[test]
    fn fingerprints_use_32_bits_of_their_own() {
        use crate::store::shard::hash_key;
        let mut seen = std::collections::HashMap::new();
        let (x, y) = (0u64..)
            .find_map(|i| {
                let h = hash_key(format!("user:{i}").as_bytes());
                seen.insert((h >> 9) & ((1 << 31) - 1), h)
                    .map(|other| (other, h))
            })
            .unwrap();
        assert_eq!(place(x).0, place(y).0, "the same bucket");
        assert_ne!(place(x).1, place(y).1);
        let mut f = Forgotten::default();
        f.raise(x, v(10));
        assert_eq!(f.own(y), None);
        assert!(!f.covers(y, v(5)));
    }

    #[test]
    fn a_stamp_covers_its_own_key_only() {
        let mut f = Forgotten::default();
        assert!(!f.covers(h(1, 1), v(1)));
        f.raise(h(1, 1), v(10));
        f.raise(h(1, 1), v(5));
        assert!(f.covers(h(1, 1), v(10)) && !f.covers(h(1, 1), v(11)));
        assert!(
            !f.covers(h(1, 2), v(1)),
            "another key of the bucket is unaffected"
        );
        assert!(!f.covers(h(2, 1), v(1)), "another bucket is unaffected");
        assert_eq!(f.own(h(1, 1)), Some(v(10)));
        assert_eq!(f.own(h(1, 2)), None);
    }

    /// Two nodes may stamp one key alike: the node id decides, as it does for the states a
    /// shard holds, for a key's own version and for a bucket's floor.
    #[test]
    fn equal_stamps_are_ordered_by_node() {
        let at = |stamp, node| Version {
            stamp,
            node: NodeId(node),
        };
        let mut f = Forgotten::default();
        f.raise(h(1, 1), at(10, 5));
        assert!(f.covers(h(1, 1), at(10, 5)) && f.covers(h(1, 1), at(10, 4)));
        assert!(
            !f.covers(h(1, 1), at(10, 6)),
            "a higher node's write at that stamp wins"
        );
        f.raise(h(1, 1), at(10, 7));
        assert_eq!(f.own(h(1, 1)), Some(at(10, 7)));
        for k in 2..=WAYS as u64 + 1 {
            f.raise(h(1, k), at(20, 9));
        }
        // The oldest, key 1's (10, 7), went to the floor.
        assert!(f.covers(h(1, 99), at(10, 7)) && !f.covers(h(1, 99), at(10, 8)));
    }

    #[test]
    fn a_full_bucket_blurs_its_oldest_stamp_over_the_bucket() {
        let mut f = Forgotten::default();
        for k in 1..=WAYS as u64 {
            f.raise(h(3, k), v(100 + k));
        }
        assert!(!f.covers(h(3, 99), v(2)));
        // One more key: the oldest stamp (101) becomes the bucket's floor.
        f.raise(h(3, 99), v(200));
        assert!(f.covers(h(3, 1), v(101)), "the key let go is still covered");
        assert!(f.covers(h(3, 50), v(101)) && !f.covers(h(3, 50), v(102)));
        assert!(f.covers(h(3, 99), v(200)) && f.covers(h(3, 4), v(104)));
        // Older than everything held: straight to the floor.
        f.raise(h(3, 77), v(150));
        assert!(f.covers(h(3, 77), v(150)) && !f.covers(h(3, 78), v(151)));
    }

    /// A version of node 1 at millisecond `ms` (stamps carry the millisecond above 16
    /// bits, as the clock makes them).
    fn ms(ms: u64) -> Version {
        v(ms << 16)
    }

    /// Replicating: a full bucket's oldest version goes to a group, where it covers its own
    /// key up to its own version, and no other key of the bucket.
    #[test]
    fn a_full_bucket_gives_its_oldest_version_to_a_group_not_to_the_bucket() {
        let mut f = Forgotten::default();
        f.set_groups((2, 16));
        for k in 1..=WAYS as u64 + 1 {
            f.raise(h(3, k), ms(100 + k));
        }
        assert_eq!(f.own(h(3, 1)), None, "pushed out of the bucket");
        assert!(f.covers(h(3, 1), ms(101)) && f.covers(h(3, 1), ms(50)));
        assert!(
            !f.covers(h(3, 1), v((101 << 16) + 1024)),
            "a stamp newer gets through"
        );
        assert!(
            !f.covers(h(3, 50), ms(101)),
            "another key of the bucket gets through"
        );
        f.raise(h(3, 77), ms(90));
        assert!(f.covers(h(3, 77), ms(90)) && f.covers(h(3, 1), ms(101)));
        assert!(!f.covers(h(3, 78), ms(60)));
    }

    /// A peer's backlog arrives late: a delete of a key this node never held, then a write
    /// of it, both older than everything the bucket keeps. The delete goes straight to a
    /// group, and the write, newer, still gets through (a group's newest version once
    /// stood for all its keys, and refused it).
    #[test]
    fn a_late_delete_then_write_of_one_key_gets_the_write_through() {
        let mut f = Forgotten::default();
        f.set_groups((2, 16));
        for k in 1..=WAYS as u64 {
            f.raise(h(3, k), ms(500 + k));
        }
        f.raise(h(3, 9), v(100 << 16 | 7 << 10));
        assert_eq!(f.own(h(3, 9)), None);
        assert!(f.covers(h(3, 9), v(100 << 16 | 7 << 10)));
        assert!(!f.covers(h(3, 9), v(100 << 16 | 8 << 10)));
    }

    /// Two keys dropped at one version, the bucket full: both stay covered (the second
    /// was once neither kept nor sent to a group).
    #[test]
    fn two_keys_dropped_at_one_version_both_stay_covered() {
        for groups in [(0, 0), (1, 16)] {
            let mut f = Forgotten::default();
            f.set_groups(groups);
            for k in 1..=WAYS as u64 {
                f.raise(h(3, k), ms(100 + k));
            }
            f.raise(h(3, 9), ms(101));
            assert!(f.covers(h(3, 9), ms(101)), "{groups:?}");
            assert!(f.covers(h(3, 1), ms(101)), "{groups:?}");
        }
    }

    /// Groups fill up and the oldest goes to one floor over every key; until then a key
    /// never dropped is refused only when its 16-bit fingerprint is taken, by a key whose
    /// version is newer.
    #[test]
    fn groups_refuse_few_other_keys_and_overflow_into_one_floor() {
        let mut f = Forgotten::default();
        f.set_groups((2, 128));
        let key = |i: u64| crate::store::shard::hash_key(format!("dropped{i}").as_bytes());
        let mut n = 0;
        while f.blurred.floor.stamp == 0 {
            n += 1;
            f.raise(key(n) & !0x3ff, ms(1000 + n));
        }
        let per_group = (n - 1024) / 2;
        assert!(
            per_group > 700,
            "a group holds ~80 % of its 1024 slots: {per_group}"
        );
        // The first group went to the floor: everything up to its newest version is refused;
        // the second group's and the buckets' versions are newer.
        let floor = f.blurred.floor;
        assert!(floor > ms(1000 + per_group) && floor < ms(1000 + n - per_group / 2));
        let other = |i: u64| crate::store::shard::hash_key(format!("kept{i}").as_bytes()) & !0x3ff;
        assert!(f.covers(other(1), floor) && !f.covers(other(1), v(floor.stamp + 1)));
        for i in 1..n {
            assert!(
                f.covers(key(i) & !0x3ff, ms(1000 + i)),
                "dropped{i} uncovered"
            );
        }
        let refused = (0..100_000u64)
            .filter(|&i| f.covers(other(i), v(floor.stamp + 1)))
            .count();
        assert!(
            refused < 100,
            "{refused} of 100,000 keys never dropped refused"
        );
    }

    #[test]
    fn groups_take_a_shard_share_without_exceeding_it() {
        assert_eq!(group_shape(0), (0, 0));
        assert_eq!(group_shape(1023).0, 0);
        for bytes in [1 << 10, 4 << 10, 8 << 10, 16 << 10, 1 << 20, 64 << 20] {
            let (groups, buckets) = group_shape(bytes);
            assert!((1..=32).contains(&groups) && buckets >= 16, "{bytes}");
            assert!(groups * buckets * BUCKET_BYTES <= bytes, "{bytes}");
        }
    }

    proptest::proptest! {
        /// Whatever was raised stays covered, however the buckets overflow (few buckets
        /// and keys, so they do, and keys come back).
        #[test]
        fn nothing_raised_is_ever_uncovered(
            raised in proptest::collection::vec((0u64..3, 0u64..40, 1u64..1_000_000, 0u16..3), 1..3000),
            groups in 0usize..3,
            buckets in 1usize..3,
            few_stamps in proptest::bool::ANY,
        ) {
            let mut f = Forgotten::default();
            // Groups of 8 or 16 slots, so that they fill and go to the floor; and stamps
            // from a few dozen at times, so that keys share versions.
            f.set_groups((groups, buckets));
            let raised: Vec<_> = raised
                .into_iter()
                .map(|(b, k, stamp, node)| (b, k, if few_stamps { stamp % 40 + 1 } else { stamp }, node))
                .collect();
            let at = |stamp, node| Version { stamp, node: NodeId(node) };
            for &(bucket, key, stamp, node) in &raised {
                f.raise(h(bucket, key), at(stamp, node));
            }
            for &(bucket, key, stamp, node) in &raised {
                proptest::prop_assert!(f.covers(h(bucket, key), at(stamp, node)), "{bucket}/{key} at {stamp}/{node} uncovered");
            }
        }
    }
}
