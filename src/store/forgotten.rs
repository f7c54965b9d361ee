//! What a shard forgot: the newest version of each key state it dropped, per key while there
//! is room, and past that as one floor.
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
//! - when replicating, a full bucket's oldest version goes to a group, still per key (the
//!   same fingerprint and whole version, 14 bytes, in buckets of eight slots with two to
//!   choose from, so a group fills to ~80 %: ~18 bytes a key). Exact, as a stamp rounded
//!   to save room was not: a write another node made a moment after a key's dropped state
//!   fell in its rounding and was refused, and the nodes disagreed for good;
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
        // Stamp 0 marks an empty slot: a state stamped 0 (only `E0` makes one) is kept
        // as the least version above it.
        let version = if version.stamp == 0 {
            Version {
                stamp: 1,
                node: NodeId(0),
            }
        } else {
            version
        };
        let t = self.table.get_or_insert_with(|| {
            Box::new(Table {
                prints: [[0; WAYS]; BUCKETS],
                stamps: [[0; WAYS]; BUCKETS],
                nodes: [[0; WAYS]; BUCKETS],
                floors: [Version::default(); BUCKETS],
            })
        });
        let (b, print) = place(hash);
        if let Some(w) = (0..WAYS).find(|&w| t.prints[b][w] == print && t.stamps[b][w] != 0) {
            let newest = t.at(b, w).max(version);
            t.set(b, w, newest);
            return;
        }
        if version <= t.floors[b] || version <= self.blurred.floor {
            // Covered already; but a group's slot for the key stays its newest, for the
            // delete `answer` tells.
            self.blurred.refresh(b, print, version);
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

    /// The version of a delete that answers `older`, a state of this key older than the
    /// newest one dropped for it: just below the dropped state, at its stamp under node id
    /// 0, which no replicating node has (so no write shares it, and every node's write at
    /// that stamp is above it; a stamp lower for a state of node 0 itself). When `older`
    /// shares the dropped state's stamp (two nodes' clocks in step, or a client's `E`),
    /// nothing lies between the two, so it is the dropped state's own version: a node that
    /// holds that state keeps it (equal, not newer), one that gets the delete first misses
    /// it, and nobody keeps `older`. None for a key known only to a floor (which stands for
    /// other keys too), for one unknown, or when `older` is not older.
    pub fn answer(&self, hash: u64, older: Version) -> Option<Version> {
        let dropped = self.own(hash).or_else(|| {
            let (b, print) = place(hash);
            self.blurred.version_of(b, print)
        })?;
        let below = Version {
            stamp: if dropped.node == NodeId(0) {
                dropped.stamp.saturating_sub(1)
            } else {
                dropped.stamp
            },
            node: NodeId(0),
        };
        [below, dropped].into_iter().find(|&v| v > older)
    }
}

/// Slots per bucket of a group.
const SLOTS: usize = 8;
/// What a bucket of a group takes: per slot a 32-bit fingerprint and a whole version.
pub const BUCKET_BYTES: usize = SLOTS * (4 + 8 + 2);

/// How a shard with `bytes` for groups cuts them: (groups, buckets per group). Groups of
/// a quarter of it, 1 to 8 KB (four of them from 4 KB, so that letting the oldest go
/// loses a quarter), at most 32 (each is looked at by a peer's write of a key not held that is
/// older than its newest); none under 1 KB.
pub fn group_shape(bytes: usize) -> (usize, usize) {
    let group = (bytes / 4).clamp(1 << 10, 8 << 10);
    match (bytes / group).min(32) {
        0 => (0, 0),
        groups => (groups, group / BUCKET_BYTES),
    }
}

/// Versions pushed out of the per-key table, still per key (the same fingerprint and
/// version), in groups of buckets with two to choose from, oldest group first; and the
/// newest version of the groups let go.
#[derive(Debug, Clone, Default)]
struct Blurred {
    groups: VecDeque<Group>,
    /// The most groups kept (0: none), and buckets per group.
    cap: usize,
    buckets: usize,
    floor: Version,
}

/// Slots in three arrays (a `Version` would pad to 16 bytes); stamp 0: empty.
#[derive(Debug, Clone)]
struct Group {
    prints: Vec<[u32; SLOTS]>,
    stamps: Vec<[u64; SLOTS]>,
    nodes: Vec<[u16; SLOTS]>,
    /// The newest version in the group: a write newer than it need not look.
    newest: Version,
}

/// A key's two buckets in a group, from the 40 bits of its hash the per-key table knows
/// (its bucket and fingerprint there), mixed so that both draw on all of them.
fn group_place(b: usize, print: u32, buckets: usize) -> (usize, usize) {
    let x = ((u64::from(print) << 8) | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> 24) as usize % buckets, (x >> 44) as usize % buckets)
}

/// The buckets of a place, one once when both choices are the same.
fn choices((i, j): (usize, usize)) -> impl Iterator<Item = usize> {
    [Some(i), (i != j).then_some(j)].into_iter().flatten()
}

impl Group {
    fn new(buckets: usize) -> Group {
        Group {
            prints: vec![[0; SLOTS]; buckets],
            stamps: vec![[0; SLOTS]; buckets],
            nodes: vec![[0; SLOTS]; buckets],
            newest: Version::default(),
        }
    }

    fn at(&self, bk: usize, s: usize) -> Version {
        Version {
            stamp: self.stamps[bk][s],
            node: NodeId(self.nodes[bk][s]),
        }
    }

    /// The buckets and slots of fingerprint `print`. Keys of other per-key buckets may
    /// share it, and one of them may sit in this key's other bucket: all count.
    fn find(&self, at: (usize, usize), print: u32) -> impl Iterator<Item = (usize, usize)> + '_ {
        choices(at).flat_map(move |bk| {
            (0..SLOTS)
                .filter(move |&s| self.prints[bk][s] == print && self.stamps[bk][s] != 0)
                .map(move |s| (bk, s))
        })
    }

    /// The newest version kept under fingerprint `print` in these buckets.
    fn version_of(&self, at: (usize, usize), print: u32) -> Option<Version> {
        self.find(at, print).map(|(bk, s)| self.at(bk, s)).max()
    }

    /// Keeps `version` for `print` in the emptier of its buckets, or raises the version
    /// it has there already; false if both buckets are full.
    fn add(&mut self, (i, j): (usize, usize), print: u32, version: Version) -> bool {
        let (bk, s) = match self.find((i, j), print).next() {
            Some((bk, s)) => (bk, s),
            None => {
                let free = |bk: usize| self.stamps[bk].iter().filter(|&&x| x == 0).count();
                let bk = if free(i) >= free(j) { i } else { j };
                match (0..SLOTS).find(|&s| self.stamps[bk][s] == 0) {
                    Some(s) => (bk, s),
                    None => return false,
                }
            }
        };
        let v = self.at(bk, s).max(version);
        self.prints[bk][s] = print;
        self.stamps[bk][s] = v.stamp;
        self.nodes[bk][s] = v.node.0;
        self.newest = self.newest.max(version);
        true
    }
}

impl Blurred {
    /// Takes a version pushed out of the per-key table; false if groups are off.
    fn keep(&mut self, b: usize, print: u32, version: Version) -> bool {
        if self.cap == 0 {
            return false;
        }
        let at = group_place(b, print, self.buckets);
        if let Some(g) = self.groups.back_mut() {
            if g.add(at, print, version) {
                return true;
            }
        }
        // The newest group is full: a new one, the oldest let go to the floor if need be.
        while self.groups.len() >= self.cap {
            let old = self.groups.pop_front().expect("cap is at least 1");
            self.floor = self.floor.max(old.newest);
        }
        let mut g = Group::new(self.buckets);
        g.add(at, print, version);
        self.groups.push_back(g);
        true
    }

    /// Raises the slots a group has for this key (none added).
    fn refresh(&mut self, b: usize, print: u32, version: Version) {
        if self.groups.is_empty() {
            return;
        }
        let at = group_place(b, print, self.buckets);
        for g in &mut self.groups {
            for bk in choices(at) {
                for s in 0..SLOTS {
                    let held = g.prints[bk][s] == print && g.stamps[bk][s] != 0;
                    if held && g.at(bk, s) < version {
                        g.stamps[bk][s] = version.stamp;
                        g.nodes[bk][s] = version.node.0;
                        g.newest = g.newest.max(version);
                    }
                }
            }
        }
    }

    /// The newest version a group keeps for this key.
    fn version_of(&self, b: usize, print: u32) -> Option<Version> {
        if self.groups.is_empty() {
            return None;
        }
        let at = group_place(b, print, self.buckets);
        self.groups
            .iter()
            .filter_map(|g| g.version_of(at, print))
            .max()
    }

    fn covers(&self, b: usize, print: u32, version: Version) -> bool {
        if version <= self.floor {
            return true;
        }
        if self.groups.is_empty() {
            return false;
        }
        let at = group_place(b, print, self.buckets);
        self.groups.iter().any(|g| {
            version <= g.newest && g.version_of(at, print).is_some_and(|kept| version <= kept)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version of node 1 at `stamp`.
    fn v(stamp: u64) -> Version {
        at(stamp, 1)
    }

    /// A version of `node` at `stamp`.
    fn at(stamp: u64, node: u16) -> Version {
        Version {
            stamp,
            node: NodeId(node),
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
            !f.covers(h(3, 1), v((101 << 16) + 1)),
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

    /// In a group a key keeps its whole version: another node's write a moment later, or
    /// at the same stamp from a higher node id, gets through (a stamp kept rounded up to a
    /// 64th of a millisecond once refused them), and the version told back is just below.
    #[test]
    fn a_group_keeps_whole_versions() {
        let mut f = Forgotten::default();
        f.set_groups((2, 16));
        for k in 1..=WAYS as u64 {
            f.raise(h(3, k), ms(500 + k));
        }
        let s = 100 << 16;
        f.raise(h(3, 9), at(s + 1, 2));
        assert_eq!(f.own(h(3, 9)), None);
        assert!(!f.covers(h(3, 9), at(s + 2, 1)));
        assert!(!f.covers(h(3, 9), at(s + 1, 3)));
        assert!(f.covers(h(3, 9), at(s + 1, 2)) && f.covers(h(3, 9), at(s + 1, 1)));
        assert_eq!(f.answer(h(3, 9), at(s, 1)), Some(at(s + 1, 0)));
        assert_eq!(
            f.answer(h(3, 9), at(s + 1, 1)),
            Some(at(s + 1, 2)),
            "a tie of stamps"
        );
        assert_eq!(f.answer(h(3, 9), at(s + 1, 2)), None, "not older");
        assert_eq!(
            f.answer(h(3, 1), at(0, 1)),
            Some(at(501 << 16, 0)),
            "from the bucket"
        );
        assert_eq!(f.answer(h(3, 50), at(0, 1)), None);
    }

    /// A state stamped 0 stays covered (0 marks an empty slot).
    #[test]
    fn a_state_stamped_zero_stays_covered() {
        let mut f = Forgotten::default();
        f.raise(h(3, 1), at(0, 2));
        assert!(f.covers(h(3, 1), at(0, 2)));
        assert!(f.covers(h(3, 1), at(0, 1)));
    }

    /// A key's kept version rises with a newer drop even when a floor covers that drop
    /// already, so the delete `answer` tells is just below the newest one.
    #[test]
    fn a_kept_version_rises_under_a_floor() {
        let mut f = Forgotten::default();
        f.set_groups((1, 1));
        f.raise(h(3, 1), v(10));
        for k in 1..=20 {
            f.raise(h(4, k), v(1000 + k));
        }
        assert!(f.blurred.floor > v(500), "the group went to the floor");
        f.raise(h(3, 1), v(500));
        assert_eq!(f.answer(h(3, 1), v(10)), Some(at(500, 0)));
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
    /// never dropped gets through.
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
        let slots = 128 * SLOTS as u64;
        assert!(
            per_group > slots * 7 / 10,
            "a group holds ~80 % of its {slots} slots: {per_group}"
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
            refused == 0,
            "{refused} of 100,000 keys never dropped refused"
        );
    }

    #[test]
    fn groups_take_a_shard_share_without_exceeding_it() {
        assert_eq!(group_shape(0), (0, 0));
        assert_eq!(group_shape(1023).0, 0);
        for bytes in [1 << 10, 4 << 10, 8 << 10, 16 << 10, 1 << 20, 64 << 20] {
            let (groups, buckets) = group_shape(bytes);
            assert!((1..=32).contains(&groups) && buckets >= 9, "{bytes}");
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
            for &(bucket, key, stamp, node) in &raised {
                f.raise(h(bucket, key), at(stamp, node));
            }
            for &(bucket, key, stamp, node) in &raised {
                proptest::prop_assert!(f.covers(h(bucket, key), at(stamp, node)), "{bucket}/{key} at {stamp}/{node} uncovered");
            }
        }
    }
}
