//! What a shard forgot: the newest version of each key state it dropped, per key while there
//! is room, per group of keys beyond.
//!
//! A cache may forget a key (evict it, expire it, drop its delete marker) but must never
//! bring back an older state of it: were a peer to send a write this node had already seen
//! deleted or overwritten, storing it would resurrect the key. So whenever a shard drops a
//! key's newest state it remembers the state's version, and a remote write for a key the
//! shard does not hold is refused unless it is newer. Whole versions, node id included: two
//! nodes can stamp one key alike (the same millisecond, the same shard), and by stamps alone
//! the node that dropped its state would refuse the other's, which wins everywhere else.
//!
//! The versions are kept per key (a 32-bit fingerprint) in small buckets of a few keys each.
//! A bucket that is full gives up its oldest version to the bucket's floor, which then covers
//! every key of the bucket: nothing dropped is ever forgotten, only blurred. A single mark per
//! group of keys, as this once was, let one key expiring refuse another key's write made
//! during a partition, a write the peer had acknowledged (a PHP session gone from one node).
//! Floors rise only with the oldest stamps a bucket lets go, so under eviction they trail by
//! about the cache's turnover, and writes newer than that always get through.
//! 1024 keys per shard in 18 KB, taken when the shard first drops something.

use super::version::{NodeId, Version};

const WAYS: usize = 4;
const BUCKETS: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct Forgotten {
    table: Option<Box<Table>>,
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
        if version <= t.floors[b] {
            return;
        }
        if let Some(w) = (0..WAYS).find(|&w| t.prints[b][w] == print && t.stamps[b][w] != 0) {
            let newest = t.at(b, w).max(version);
            t.set(b, w, newest);
            return;
        }
        // An empty way, else the oldest version goes to the floor (or this one, if older).
        let w = (0..WAYS).min_by_key(|&w| t.at(b, w)).unwrap_or(0);
        if t.stamps[b][w] != 0 {
            let gone = t.at(b, w).min(version);
            t.floors[b] = t.floors[b].max(gone);
            if gone == version {
                return;
            }
        }
        t.prints[b][w] = print;
        t.set(b, w, version);
    }

    /// True if a state at `version` may be older than one dropped (or is that one): it must
    /// be refused for a key the shard does not hold.
    pub fn covers(&self, hash: u64, version: Version) -> bool {
        let Some(t) = &self.table else {
            return false;
        };
        version <= t.floors[place(hash).0] || self.own(hash).is_some_and(|own| version <= own)
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

    proptest::proptest! {
        /// Whatever was raised stays covered, however the buckets overflow (few buckets
        /// and keys, so they do, and keys come back).
        #[test]
        fn nothing_raised_is_ever_uncovered(
            raised in proptest::collection::vec((0u64..3, 0u64..40, 1u64..1_000_000, 0u16..3), 1..3000),
        ) {
            let mut f = Forgotten::default();
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
